"""The Meltano Hub definitions (hub/extractors/<tap>/<variant>.yml) are what the code generates,
declare every capability and setting the tap has, and each settings group is one way to
authenticate that the tap accepts. The README tells users how to add a tap from them."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import typing as t
from pathlib import Path

import pytest
import yaml
from singer_sdk.exceptions import ConfigValidationError

from tests.meltano_settings import (
    HUB_DIR,
    MELTANO_YML,
    ROOT,
    TAPS,
    hub_path,
    render_hub,
    repository_url,
)
from tests.support import (
    END,
    EVO_PASSWORD,
    EVO_USERNAME,
    KORE_CLIENT_ID,
    KORE_CLIENT_SECRET,
    LUMIN_TOKEN,
    LUMIN_TYPES,
    MELTANO,
    START,
    lumin_config,
    lumin_truth_ids,
    parse_messages,
    run_meltano,
)

TAP_IDS = [tap.name for tap in TAPS]
#: Keys a definition here may have (all accepted by the Hub's JSON schemas for extractor
#: definitions, schemas/plugin_definitions/ in the Hub's repository), and the kinds and
#: capabilities those schemas accept (less the deprecated kinds oauth and hidden).
HUB_KEYS = {
    "name", "namespace", "variant", "label", "description", "keywords", "maintenance_status",
    "domain_url", "logo_url", "repo", "pip_url", "executable", "capabilities", "settings",
    "settings_group_validation",
}  # fmt: skip
SETTING_KEYS = {"name", "label", "description", "kind", "value", "options", "sensitive"}
KINDS = {
    "string", "integer", "decimal", "boolean", "date_iso8601", "password", "options", "array",
    "object", "email", "file",
}  # fmt: skip
CAPABILITIES = {
    "properties", "catalog", "discover", "state", "about", "stream-maps", "schema-flattening",
    "activate-version", "batch", "test", "log-based", "structured-logging",
}  # fmt: skip
#: A value of the right form for every setting a settings group names.
GROUP_VALUES = {
    "api_url": "https://billing.example.com/api",
    "token": LUMIN_TOKEN,
    "start_date": "2024-01-01",
    "client_id": KORE_CLIENT_ID,
    "client_secret": KORE_CLIENT_SECRET,
    "jwt": "hub-groups-test-ready-jwt-4c9e1a",
    "username": EVO_USERNAME,
    "password": EVO_PASSWORD,
}


def committed(tap_name: str) -> dict:
    return yaml.safe_load(hub_path(tap_name).read_text())


def declared_schema(tap: type) -> dict:
    """The tap's settings with the SDK's own (stream maps, flattening), from the class itself."""
    schema = dict(tap.config_jsonschema)
    tap.append_builtin_config(schema)
    return schema


@pytest.mark.parametrize("tap", TAPS, ids=TAP_IDS)
def test_hub_definition_is_what_the_code_generates(tap):
    assert hub_path(tap.name).read_text() == render_hub(tap.name), "run `make hub-definitions`"


def test_hub_folder_holds_one_definition_per_tap_and_nothing_else():
    assert sorted(HUB_DIR.rglob("*.yml")) == sorted(hub_path(tap.name) for tap in TAPS)


@pytest.mark.parametrize("tap", TAPS, ids=TAP_IDS)
def test_capabilities_are_the_ones_the_tap_declares(tap):
    declared = sorted(str(capability) for capability in tap.capabilities)
    assert "structured-logging" in declared
    assert committed(tap.name)["capabilities"] == declared
    extractors = {
        e["name"]: e for e in yaml.safe_load(MELTANO_YML.read_text())["plugins"]["extractors"]
    }
    assert extractors[tap.name]["capabilities"] == declared


@pytest.mark.parametrize("tap", TAPS, ids=TAP_IDS)
def test_every_setting_is_declared_with_its_kind_default_and_secrecy(tap):
    definition = {s["name"]: s for s in committed(tap.name)["settings"]}
    properties = declared_schema(tap)["properties"]
    for name, schema in properties.items():
        nested = {n: s for n, s in definition.items() if n.startswith(f"{name}.")}
        assert name in definition or nested, f"{tap.name}: {name} missing"
        if name not in definition:  # an object of fixed keys: one setting per key
            assert set(nested) == {f"{name}.{key}" for key in schema["properties"]}
            continue
        entry = definition[name]
        secret = bool(schema.get("secret"))
        assert entry.get("sensitive", False) == secret, name
        assert (entry["kind"] == "password") == secret, name
        assert entry.get("value") == schema.get("default"), name
        if "enum" in schema:
            assert entry["kind"] == "options"
            assert [o["value"] for o in entry["options"]] == schema["enum"]
        assert entry["label"] and entry["description"], name
    for name in ("stream_maps", "stream_map_config", "flattening_enabled", "flattening_max_depth"):
        assert name in definition
    assert {"faker_config.seed", "faker_config.locale"} <= set(definition)


@pytest.mark.parametrize("tap", TAPS, ids=TAP_IDS)
def test_hub_definition_has_the_hub_form(tap):
    definition = committed(tap.name)
    assert set(definition) <= HUB_KEYS
    assert {"name", "namespace", "variant", "label", "description", "pip_url", "executable"} <= set(
        definition
    )
    assert definition["name"] == definition["executable"] == tap.name
    assert definition["namespace"] == tap.name.replace("-", "_")
    assert definition["variant"] == hub_path(tap.name).stem
    assert definition["repo"] == repository_url()
    assert definition["pip_url"] == f"git+{repository_url()}.git"
    assert list(definition) == sorted(definition)
    assert set(definition["capabilities"]) <= CAPABILITIES
    names = [s["name"] for s in definition["settings"]]
    assert names == sorted(names) and len(names) == len(set(names))
    for entry in definition["settings"]:
        assert set(entry) <= SETTING_KEYS and entry["kind"] in KINDS, entry["name"]
        assert list(entry) == sorted(entry)
    for group in definition["settings_group_validation"]:
        assert group == sorted(group) and set(group) <= set(names)


#: One group per way to authenticate, as the issue names them.
AUTH_GROUPS = {
    "tap-luminai": [["api_url", "token", "start_date"]],
    "tap-kore-billing": [["client_id", "client_secret", "start_date"], ["jwt", "start_date"]],
    "tap-evovoice": [["username", "password", "start_date"]],
}


@pytest.mark.parametrize("tap", TAPS, ids=TAP_IDS)
def test_each_settings_group_is_one_way_to_authenticate_that_the_tap_accepts(tap):
    groups = committed(tap.name)["settings_group_validation"]
    assert groups == [sorted(group) for group in AUTH_GROUPS[tap.name]]
    for group in groups:
        assert set(declared_schema(tap).get("required", [])) <= set(group)
        tap(config={name: GROUP_VALUES[name] for name in group}, validate_config=True)
        for missing in group:
            config = {name: GROUP_VALUES[name] for name in group if name != missing}
            with pytest.raises(ConfigValidationError):
                tap(config=config, validate_config=True)


# -- the README's "Use one tap in your own Meltano project" ----------------------------------------

README_SECTION = "## Use one tap in your own Meltano project"


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    assert README_SECTION in text
    return text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]


def add_command(tap_name: str) -> str:
    """The README's `meltano add` line for this tap."""
    pattern = rf"^meltano add .*\b{tap_name} --from-ref \S+$"
    lines = re.findall(pattern, readme_section(), re.MULTILINE)
    assert len(lines) == 1, f"one `meltano add` line for {tap_name}"
    return lines[0]


@pytest.mark.parametrize("tap", TAPS, ids=TAP_IDS)
def test_readme_adds_each_tap_from_its_definition(tap):
    relative = hub_path(tap.name).relative_to(ROOT).as_posix()
    assert add_command(tap.name).endswith(f"/{relative}")
    section = readme_section()
    assert f"git clone {repository_url()}.git" in section
    assert f"pip_url: git+{repository_url()}.git" in section


@pytest.mark.parametrize("tap", TAPS, ids=TAP_IDS)
def test_readme_names_the_settings_to_set_and_the_secrets_environment_variables(tap):
    rows = readme_section().splitlines()
    row = next(line for line in rows if line.startswith(f"| `{tap.name}` |"))
    secrets = {s["name"] for s in committed(tap.name)["settings"] if s.get("sensitive")}
    prefix = tap.name.upper().replace("-", "_")
    for group in AUTH_GROUPS[tap.name]:
        for name in group:
            assert f"`{name}`" in row, (tap.name, name)
            if name in secrets:
                assert f"`{prefix}_{name.upper()}`" in row, (tap.name, name)


# -- a fresh Meltano project, as a user would start one ----------------------------------------------


def checkout_pip_url() -> str:
    """This checkout as a pip_url: ``git+file://`` (its committed HEAD, as the published
    ``git+https://`` would be), or its path when it is not a git checkout of its own."""
    toplevel = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"git+file://{ROOT}" if toplevel and Path(toplevel).resolve() == ROOT else str(ROOT)


def meltano(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = run_meltano(*args, cwd=project, env=env, timeout=300)
    assert result.returncode == 0, f"meltano {' '.join(args[:2])}:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture
def fresh_project(tmp_path: Path) -> t.Iterator[tuple[Path, dict[str, str]]]:
    """A new Meltano project of its own (``meltano init``), and an environment for Meltano with
    nothing of this project's own runs in it. The installed tap is removed afterwards."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MELTANO_", "TAP_", "TARGET_"))
    }
    env.update(MELTANO_SEND_ANONYMOUS_USAGE_STATS="false", MELTANO_CLI_DISABLE_VERSION_CHECK="true")
    meltano(tmp_path, env, "init", "project", "--no-usage-stats")
    yield tmp_path / "project", env
    shutil.rmtree(tmp_path / "project" / ".meltano" / "extractors", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not MELTANO.exists(), reason="run `make meltano` first (make test does)")
def test_a_fresh_project_adds_tap_luminai_from_its_definition_and_extracts_every_event(
    fresh_project, lumin, tmp_path
):
    project, env = fresh_project
    server = lumin()
    config = lumin_config(server)
    definition = committed("tap-luminai")
    ref = tmp_path / "tap-luminai.yml"
    ref.write_text(yaml.safe_dump({**definition, "pip_url": checkout_pip_url()}, sort_keys=False))

    # The README's command, pointed at the copy.
    command = shlex.split(add_command("tap-luminai"))
    meltano(project, env, *command[1:-1], str(ref))
    plugins = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]
    assert list(plugins) == ["extractors"], "one extractor, nothing else"
    (added,) = plugins["extractors"]
    assert (added["name"], added["variant"]) == ("tap-luminai", definition["variant"])
    assert added["capabilities"] == definition["capabilities"]

    # Settings in meltano.yml, the secret only in the environment.
    for name in ("api_url", "start_date", "end_date", "event_types"):
        value = config[name]
        text = json.dumps(value) if isinstance(value, list) else str(value)
        meltano(project, env, "config", "set", "tap-luminai", name, text)
    run = meltano(project, {**env, "TAP_LUMINAI_TOKEN": LUMIN_TOKEN}, "invoke", "tap-luminai")
    assert LUMIN_TOKEN not in (project / "meltano.yml").read_text()

    records = [m["record"] for m in parse_messages(run.stdout) if m["type"] == "RECORD"]
    truth = server.api.truth(types=LUMIN_TYPES, start=START, end=END)  # type: ignore[attr-defined]
    assert {r["id"] for r in records} == lumin_truth_ids(server)
    assert len(records) == len(truth), "an event emitted twice"
    expected = {e.id: {**dataclasses.asdict(e), "timestamp": e.timestamp_text} for e in truth}
    assert {r["id"]: r for r in records} == expected
