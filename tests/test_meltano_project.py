"""meltano.yml agrees with the taps' settings, and every production value is documented."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
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


#: The Meltano Hub's target-postgres, variant meltanolabs: its capabilities there.
POSTGRES_HUB_CAPABILITIES = [
    "about",
    "activate-version",
    "hard-delete",
    "schema-flattening",
    "stream-maps",
    "structured-logging",
]
TARGET_POSTGRES = (
    ROOT / ".meltano" / "loaders" / "target-postgres" / "venv" / "bin" / "target-postgres"
)


def postgres_loader() -> dict:
    return next(p for p in project()["plugins"]["loaders"] if p["name"] == "target-postgres")


def test_target_postgres_is_the_meltanolabs_variant_pinned_and_upserting():
    loader = postgres_loader()
    assert (loader["namespace"], loader["variant"]) == ("target_postgres", "meltanolabs")
    assert loader["pip_url"] == "meltanolabs-target-postgres==0.8.1"
    assert loader["capabilities"] == POSTGRES_HUB_CAPABILITIES
    assert loader["config"]["load_method"] == "upsert"
    (setting,) = [s for s in loader["settings"] if s["name"] == "load_method"]
    assert [o["value"] for o in setting["options"]] == ["append-only", "upsert", "overwrite"]


@pytest.mark.skipif(
    not TARGET_POSTGRES.exists(), reason="run `make meltano` first (make test does)"
)
def test_installed_target_postgres_declares_what_meltano_yml_says():
    about = json.loads(
        subprocess.run(
            [str(TARGET_POSTGRES), "--about", "--format=json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert about["version"] == postgres_loader()["pip_url"].split("==")[1]
    assert set(POSTGRES_HUB_CAPABILITIES) <= set(about["capabilities"])
    assert about["settings"]["properties"]["load_method"]["enum"] == [
        "append-only",
        "upsert",
        "overwrite",
    ]
    declared = {s["name"] for s in postgres_loader()["settings"]}
    assert declared <= set(about["settings"]["properties"])
