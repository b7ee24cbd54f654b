"""Bad config gets one clear line naming the setting, a non-zero exit, and no request."""

from __future__ import annotations

import pytest

from tests.support import LUMIN_TOKEN, lumin_config, run_tap

CASES = {
    "missing token": ({"token": None}, "token"),
    "missing start_date": ({"start_date": None}, "start_date"),
    "start_date not a date": ({"start_date": "last tuesday"}, "start_date"),
    "start_date out of range": ({"start_date": "1970-01-01"}, "start_date"),
    "end before start": ({"start_date": "2024-03-01", "end_date": "2024-02-01"}, "end_date"),
    "end equals start": ({"start_date": "2024-03-01", "end_date": "2024-03-01"}, "end_date"),
    "zero window": ({"window_size_days": 0}, "window_size_days"),
    "negative lookback": ({"lookback_minutes": -5}, "lookback_minutes"),
    "window of wrong type": ({"window_size_days": "seven"}, "window_size_days"),
    "event types not a list": ({"event_types": "billing.scheduled"}, "event_types"),
    "event types comma-joined": (
        {"event_types": ["billing.scheduled,billing.delete"]},
        "event_types",
    ),
    "a wildcard event type": ({"event_types": ["*"]}, "event_types"),
    "empty host": ({"hosts": [""]}, "hosts"),
    "plain http to a remote host": ({"api_url": "http://billing.example.com/api"}, "api_url"),
    "not a URL": ({"api_url": "billing-api"}, "api_url"),
    "ftp URL": ({"api_url": "ftp://127.0.0.1/x"}, "api_url"),
    "zero timeout": ({"read_timeout_seconds": 0}, "read_timeout_seconds"),
    "zero tries": ({"retry_max_tries": 0}, "retry_max_tries"),
    "short token": ({"token": "abc"}, "token"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_config_is_refused_before_any_request(lumin, case):
    overrides, setting = CASES[case]
    server = lumin()
    run = run_tap(lumin_config(server, **overrides))
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert any(setting in line for line in errors), run.stderr
    assert "Traceback" not in run.stderr
    assert server.requests == 0
    assert run.records == []


def test_the_token_is_not_quoted_in_validation_errors(lumin):
    server = lumin()
    run = run_tap(lumin_config(server, token=LUMIN_TOKEN + " "))
    assert run.returncode != 0
    assert "token" in run.stderr  # names the setting; run_tap checked the value is absent


def test_plain_http_to_loopback_is_allowed(lumin):
    server = lumin()
    run = run_tap(lumin_config(server, end_date="2024-01-03"))
    assert run.returncode == 0, run.stderr


MORE_CASES = {
    "tiny window": ({"window_size_days": 1e-12}, "window_size_days"),
    "huge window": ({"window_size_days": 5_000_000}, "window_size_days"),
    "huge lookback": ({"lookback_minutes": 10_000_000_000_000}, "lookback_minutes"),
    "end date beyond range": ({"end_date": "9999-12-31T23:00:00-05:00"}, "end_date"),
    "broken IPv6 URL": ({"api_url": "http://[::1/x"}, "api_url"),
    "port out of range": ({"api_url": "https://127.0.0.1:99999/x"}, "api_url"),
    "token with a newline": ({"token": "lumin-test-token\nmore"}, "token"),
    "token not a string": ({"token": ["lumin-test-token-5e2b7c91d4"]}, "token"),
    "numeric token": ({"token": 123456789}, "token"),
}


@pytest.mark.parametrize("case", MORE_CASES, ids=list(MORE_CASES))
def test_out_of_range_and_malformed_values_get_a_clear_line_not_a_traceback(lumin, case):
    overrides, setting = MORE_CASES[case]
    server = lumin()
    run = run_tap(lumin_config(server, **overrides))
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert any(setting in line for line in run.stderr.splitlines() if "| ERROR" in line)
    assert "123456789" not in run.stderr
    assert server.requests == 0


@pytest.mark.parametrize(
    ("hosts", "problem"), [(["store-001 "], "white space"), (["a1", "a1"], "twice")]
)
def test_host_lists_are_exact(lumin, hosts, problem):
    server = lumin()
    run = run_tap(lumin_config(server, hosts=hosts))
    assert run.returncode != 0
    assert problem in run.stderr
