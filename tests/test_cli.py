"""The command line: --test, --about, --version, --discover."""

from __future__ import annotations

import json
import subprocess
import sys

from billing_sandbox.faults import FaultRule
from tests.support import lumin_config, run_tap


def test_connection_test_makes_one_request_and_passes(lumin):
    server = lumin()
    run = run_tap(lumin_config(server), None, "--test")
    assert run.returncode == 0, run.stderr
    assert "Connection test passed" in run.stderr
    assert server.requests == 1
    assert run.records == []


def test_connection_test_explains_a_refused_token(lumin):
    server = lumin()
    run = run_tap(lumin_config(server, token="not-the-right-token"), None, "--test")
    assert run.returncode == 1
    assert "refused the token: check the `token` setting" in run.stderr
    assert "HTTP 401" in run.stderr
    assert "Traceback" not in run.stderr


def test_connection_test_explains_an_unreachable_url(lumin):
    server = lumin()
    config = lumin_config(server, retry_max_tries=1)
    server.stop()
    run = run_tap(config, None, "--test")
    assert run.returncode == 1
    assert "could not reach" in run.stderr


def test_connection_test_explains_a_wrong_path(lumin):
    server = lumin()
    run = run_tap(lumin_config(server, api_url=server.base_url + "/wrong"), None, "--test")
    assert run.returncode == 1
    assert "check the `api_url` setting" in run.stderr


def test_connection_test_survives_a_transient_fault(lumin):
    server = lumin(faults=[FaultRule("503", at=(1,))])
    run = run_tap(lumin_config(server), None, "--test")
    assert run.returncode == 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tap_luminai", *args], capture_output=True, text=True, check=False
    )


def test_version_and_about_name_the_distribution():
    assert "tap-luminai v0.1.0" in _cli("--version").stdout
    about = json.loads(_cli("--about", "--format=json").stdout)
    assert about["name"] == "tap-luminai"
    assert about["settings"]["properties"]["token"]["secret"] is True
    assert "batch" not in about["capabilities"]


def test_discovery_declares_key_and_replication_key_without_config():
    catalog = json.loads(_cli("--discover").stdout)
    (stream,) = catalog["streams"]
    assert stream["tap_stream_id"] == "billing_events"
    assert stream["key_properties"] == ["id"]
    assert stream["replication_key"] == "timestamp"
    assert stream["replication_method"] == "INCREMENTAL"
