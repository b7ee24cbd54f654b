"""meltano.yml agrees with the taps' settings, and every production value is documented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.meltano_settings import MELTANO_YML, TAPS, current, render

ROOT = Path(__file__).resolve().parent.parent


def project() -> dict:
    return yaml.safe_load(MELTANO_YML.read_text())


def test_extractor_settings_are_generated_from_config_jsonschema():
    assert current() == render(), "run `make meltano-yml`"


def test_every_tap_setting_is_declared_and_secrets_are_sensitive():
    extractors = {e["name"]: e for e in project()["plugins"]["extractors"]}
    for tap in TAPS:
        declared = {s["name"]: s for s in extractors[tap.name]["settings"]}
        for name, schema in tap.config_jsonschema["properties"].items():
            if name.startswith(("stream_map", "faker", "flattening")):
                continue
            assert name in declared, f"{tap.name}: {name} missing from meltano.yml"
            assert declared[name].get("sensitive", False) == bool(schema.get("secret")), name
            assert (
                declared[name]["label"] and declared[name]["description"] and declared[name]["kind"]
            )
        assert extractors[tap.name]["pip_url"] == "-e ."
        assert {"state", "catalog", "discover", "about", "stream-maps", "schema-flattening"} <= set(
            extractors[tap.name]["capabilities"]
        )


def test_production_values_come_from_documented_environment_variables():
    text = MELTANO_YML.read_text()
    prod = next(e for e in project()["environments"] if e["name"] == "prod")
    used = set(re.findall(r"\$\{(\w+)\}", yaml.safe_dump(prod))) | set(
        re.findall(r"\$\{(PG_\w+)\}", text)
    )
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert used <= documented, f"undocumented: {sorted(used - documented)}"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_usage_stats_and_version_check_are_off():
    config = project()
    assert config["send_anonymous_usage_stats"] is False
    assert config["cli"]["disable_version_check"] is True
