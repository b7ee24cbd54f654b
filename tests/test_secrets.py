"""Secrets never appear in logs, errors or tracebacks (every run_tap call also checks its output)."""

from __future__ import annotations

import logging

import requests

from billing_toolkit.http import describe_response_failure
from billing_toolkit.secrets import MASK, register_secret
from tests.support import LUMIN_TOKEN, lumin_config, run_tap


def test_log_lines_arguments_and_tracebacks_are_masked(caplog):
    register_secret(LUMIN_TOKEN)
    logger = logging.getLogger("tap-luminai.test")
    with caplog.at_level(logging.INFO):
        logger.info("calling with Bearer %s", LUMIN_TOKEN)
        try:
            raise ValueError(f"bad token {LUMIN_TOKEN}")
        except ValueError:
            logger.exception("failed")
    assert LUMIN_TOKEN not in caplog.text
    assert f"Bearer {MASK}" in caplog.text
    assert f"bad token {MASK}" in caplog.text


def test_an_error_body_echoing_the_token_is_masked():
    register_secret(LUMIN_TOKEN)
    response = requests.Response()
    response.status_code = 401
    response.reason = "Unauthorized"
    response.url = "https://billing.example.com/api"
    response._content = f'{{"error": "token {LUMIN_TOKEN} unknown"}}'.encode()
    text = describe_response_failure(response, "request refused")
    assert LUMIN_TOKEN not in text
    assert "HTTP 401" in text
    assert "https://billing.example.com/api" in text


def test_debug_logging_of_a_full_run_leaks_nothing(lumin, monkeypatch):
    monkeypatch.setenv("TAP_LUMINAI_LOGLEVEL", "DEBUG")
    server = lumin()
    run = run_tap(lumin_config(server, end_date="2024-01-10"))
    assert run.returncode == 0
    assert "DEBUG" in run.stderr  # run_tap asserted the token is absent from all of it


def test_token_given_through_the_environment_is_masked_too(lumin, monkeypatch):
    server = lumin()
    monkeypatch.setenv("TAP_LUMINAI_TOKEN", "x")  # too short: refused, and not echoed
    config = lumin_config(server)
    config.pop("token")
    run = run_tap(config, None, "--config", "ENV")
    assert run.returncode != 0
