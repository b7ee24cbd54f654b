"""Retriable faults are survived exactly; fatal ones fail clearly without advancing state."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from billing_sandbox.faults import FaultRule
from billing_sandbox.server import Response
from tap_luminai.streams import BOUNDARY_GUARD
from tests.support import END, START, lumin_config, run_tap

TYPES = {"billing.scheduled", "billing.rescheduled"}


def truth(server) -> list[str]:
    return sorted(e.id for e in server.api.truth(types=TYPES, start=START, end=END))


@pytest.mark.parametrize(
    "kind", ["429", "429-date", "500", "502", "503", "stall", "drop", "truncate"]
)
def test_retriable_fault_is_survived_exactly(lumin, kind):
    # Requests 1 (first page of the first window), 4 (a middle page) and 9 (later window).
    server = lumin(faults=[FaultRule(kind, at=(1, 4, 9))], stall_seconds=5)
    run = run_tap(lumin_config(server, read_timeout_seconds=0.5))
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(run.ids) == truth(server)
    assert server.faults.injected == {kind: 3}
    assert server.concurrency_violations == 0
    assert "retrying in" in run.stderr


def _gap_after(server, number: int) -> float:
    """Seconds between request ``number`` and the next one, as the sandbox saw them arrive."""
    log = {record.number: record for record in server.api_log()}
    return log[number + 1].arrived - log[number].arrived


def test_retry_after_in_seconds_is_honoured(lumin):
    # Backoff alone would wait about 0.01 s; the 429's Retry-After: 2 makes the retry wait 2 s.
    server = lumin(faults=[FaultRule("429", at=(2,))], retry_after=2)
    run = run_tap(lumin_config(server, retry_initial_delay_seconds=0.01))
    assert run.returncode == 0
    assert sorted(run.ids) == truth(server)
    assert 2.0 <= _gap_after(server, 2) < 4.0


def test_retry_after_as_an_http_date_is_honoured(lumin):
    # Retry-After as an HTTP-date two seconds ahead (whole seconds, so the wait is 1 to 2 s).
    server = lumin(faults=[FaultRule("429-date", at=(2,))], retry_after=2)
    run = run_tap(lumin_config(server, retry_initial_delay_seconds=0.01))
    assert run.returncode == 0
    assert sorted(run.ids) == truth(server)
    assert server.faults.injected == {"429-date": 1}
    assert 0.9 <= _gap_after(server, 2) < 3.0


def _window_bookmark(run) -> str | None:
    state = run.last_state or {}
    return state.get("bookmarks", {}).get("billing_events", {}).get("replication_key_value")


@pytest.mark.parametrize("kind", ["401", "not-ok"])
def test_fatal_fault_fails_clearly_without_advancing_state(lumin, kind):
    # Request 5 is inside the second window: the first window completes, the second must not.
    server = lumin(faults=[FaultRule(kind, at=(5,))])
    run = run_tap(lumin_config(server))
    assert run.returncode != 0
    assert server.api_log()[-1].number == 5, "a fatal answer must not be retried"
    error = run.stderr
    assert "POST " + server.base_url in error
    assert 'Request payload: {"type": "billing.rescheduled,billing.scheduled"' in error
    assert (
        ("HTTP 401" in error) if kind == "401" else ("ok=false" in error and '"ok":false' in error)
    )
    failed_payload = json.loads(server.api_log()[-1].body)
    failed_window_start = dt.datetime.fromisoformat(failed_payload["start"]) + BOUNDARY_GUARD
    bookmark = _window_bookmark(run)
    assert bookmark is not None, "the windows completed before the failure keep their state"
    assert dt.datetime.fromisoformat(bookmark) <= failed_window_start
    # Every event before the bookmark was delivered: state did not run ahead of the data.
    expected = {
        e.id for e in server.api.truth(types=TYPES, start=START) if e.timestamp_text < bookmark
    }
    assert expected <= set(run.ids)


def test_retries_give_up_within_the_budget_and_say_why(lumin):
    server = lumin(faults=[FaultRule("503", at=(3,), repeat=100)])
    run = run_tap(lumin_config(server, retry_max_tries=3, retry_initial_delay_seconds=0.05))
    assert run.returncode != 0
    assert len(server.api_log()) == 5  # 2 good requests, then 3 attempts at the third
    assert "Giving up after retries" in run.stderr
    assert "HTTP 503" in run.stderr


def test_a_429_storm_longer_than_one_backoff_is_waited_out(lumin):
    server = lumin(faults=[FaultRule("429", at=(2,), repeat=4)], retry_after=1)
    run = run_tap(lumin_config(server))
    assert run.returncode == 0
    assert sorted(run.ids) == truth(server)
    assert server.faults.injected == {"429": 4}


def test_a_success_without_items_is_asked_again_not_taken_as_empty(lumin):
    server = lumin()
    real = server.api.handle
    calls = {"n": 0}

    def degraded_once(request):
        calls["n"] += 1
        if calls["n"] == 3:
            return Response.json(200, {"ok": True})
        return real(request)

    server.api.handle = degraded_once
    run = run_tap(lumin_config(server))
    assert run.returncode == 0
    assert sorted(run.ids) == truth(server)
    assert "no 'items' list" not in run.stdout
