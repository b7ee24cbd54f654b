"""Incremental runs, kill-and-resume, and config changes that must not hide history."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from billing_sandbox.luminai import generate_events
from tests.support import (
    END,
    START,
    lumin_config,
    parse_messages,
    run_tap,
    run_tap_interrupted,
    run_tap_killed_after_states,
    tap_command,
)

UTC = dt.timezone.utc
TYPES = {"billing.scheduled", "billing.rescheduled"}


def test_final_state_bookmarks_the_end_of_the_range(lumin):
    server = lumin()
    run = run_tap(lumin_config(server))
    bookmark = run.last_state["bookmarks"]["billing_events"]
    assert bookmark["replication_key"] == "timestamp"
    assert bookmark["replication_key_value"] == END.isoformat(timespec="microseconds")
    assert "progress_markers" not in bookmark
    assert len(run.ids) == len(set(run.ids))


def test_state_is_written_after_every_window(lumin):
    server = lumin()
    run = run_tap(lumin_config(server, window_size_days=7))
    values = [s["bookmarks"]["billing_events"].get("replication_key_value") for s in run.states]
    windows = 13  # 91 days in 7-day windows
    assert len({v for v in values if v}) == windows
    assert [v for v in values if v] == sorted(v for v in values if v)


def test_second_run_reads_only_new_events_and_the_lookback(lumin):
    first_end = dt.datetime(2024, 3, 1, tzinfo=UTC)  # "now" at the first run
    server = lumin(end=first_end)
    first = run_tap(lumin_config(server, end_date=first_end.isoformat()))
    assert first.returncode == 0
    # New events arrive after the first run: later ones, and late ones timed inside the lookback
    # (the 30 minutes before the first run's end), which only the lookback re-reads.
    late = generate_events(
        seed=99, count=300, start=dt.datetime(2024, 2, 29, 23, 30, tzinfo=UTC), end=END
    ) + generate_events(
        seed=98, count=20, start=dt.datetime(2024, 2, 29, 23, 30, tzinfo=UTC), end=first_end
    )
    inside_lookback = {e.id for e in late if e.timestamp < first_end and e.type in TYPES}
    assert len(inside_lookback) >= 5
    server.api.add_events(late)
    second = run_tap(lumin_config(server, end_date=END.isoformat()), first.last_state)
    assert second.returncode == 0
    all_ids = set(first.ids) | set(second.ids)
    assert all_ids == {e.id for e in server.api.truth(types=TYPES, start=START, end=END)}
    bookmark = dt.datetime.fromisoformat(
        first.last_state["bookmarks"]["billing_events"]["replication_key_value"]
    )
    oldest = min(dt.datetime.fromisoformat(r["timestamp"]) for r in second.records)
    assert oldest >= bookmark - dt.timedelta(minutes=60), "re-read more than the lookback"
    late_ids = {e.id for e in late if e.type in TYPES}
    assert late_ids <= set(second.ids)
    assert inside_lookback <= set(second.ids) - set(first.ids)


def test_nothing_new_means_no_records_but_a_valid_state(lumin):
    server = lumin()
    first = run_tap(lumin_config(server))
    second = run_tap(lumin_config(server, lookback_minutes=0), first.last_state)
    assert second.returncode == 0
    assert second.records == []
    assert second.last_state == first.last_state


def test_an_event_type_added_later_gets_its_full_history(lumin):
    server = lumin()
    first = run_tap(lumin_config(server, event_types=["billing.scheduled"]))
    requests_before = len(server.api_log())
    second = run_tap(
        lumin_config(server, event_types=["billing.scheduled", "billing.delete"]), first.last_state
    )
    assert second.returncode == 0
    deletes = {e.id for e in server.api.truth(types={"billing.delete"}, start=START, end=END)}
    assert deletes <= set(second.ids)
    # The catch-up reads the new type alone; the old type only re-reads its lookback.
    scheduled_again = [r for r in second.records if r["type"] == "billing.scheduled"]
    assert all(r["timestamp"] >= "2024-03-31T23:00:00" for r in scheduled_again)
    catch_up = [r.body for r in server.api_log()[requests_before:]]
    assert any(b'"type":"billing.delete"' in b.replace(b" ", b"") for b in catch_up)
    by_key = second.last_state["bookmarks"]["billing_events"]["bookmarks_by_key"]
    assert set(by_key) == {"billing.scheduled", "billing.delete"}


def test_a_host_added_later_gets_its_full_history(lumin):
    server = lumin()
    first = run_tap(lumin_config(server, hosts=["store-001"]))
    second = run_tap(lumin_config(server, hosts=["store-001", "store-002"]), first.last_state)
    store2 = {
        e.id for e in server.api.truth(types=TYPES, hosts={"store-002"}, start=START, end=END)
    }
    assert store2 <= set(second.ids)
    store1_again = [r for r in second.records if r["host_id"] == "store-001"]
    assert all(r["timestamp"] >= "2024-03-31T23:00:00" for r in store1_again)


@pytest.mark.parametrize("states_before_kill", [1, 2, 4, 7])
def test_sigkill_then_resume_from_last_state_loses_nothing(lumin, states_before_kill):
    server = lumin(events=2500, page_size=20)
    config = lumin_config(server, window_size_days=10)
    killed = run_tap_killed_after_states(config, None, states_before_kill)
    assert killed.returncode != 0
    resumed = run_tap(config, killed.last_state)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    truth = {e.id for e in server.api.truth(types=TYPES, start=START, end=END)}
    assert set(killed.ids) | set(resumed.ids) == truth
    # At most about one window (10 days of ~2500*0.75/91 per day) plus the lookback is re-read.
    reread = set(killed.ids) & set(resumed.ids)
    assert len(reread) <= 10 * 2500 * 0.75 / 91 * 1.5
    assert server.concurrency_violations == 0


def test_a_plain_sdk_bookmark_applies_to_every_configured_type(lumin):
    # A state written by hand (or by `meltano state set`) has no per-type bookmarks.
    server = lumin()
    bookmark = "2024-03-20T00:00:00+00:00"
    state = {
        "bookmarks": {
            "billing_events": {"replication_key": "timestamp", "replication_key_value": bookmark}
        }
    }
    run = run_tap(lumin_config(server, lookback_minutes=0), state)
    assert run.returncode == 0
    expected = {
        e.id
        for e in server.api.truth(types=TYPES, start=dt.datetime(2024, 3, 20, tzinfo=UTC), end=END)
    }
    assert set(run.ids) == expected
    by_key = run.last_state["bookmarks"]["billing_events"]["bookmarks_by_key"]
    assert by_key == dict.fromkeys(sorted(TYPES), END.isoformat(timespec="microseconds"))


def test_sigterm_writes_a_state_that_resumes_without_loss(lumin):
    server = lumin(events=2500, page_size=20)
    config = lumin_config(server, window_size_days=10)
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen(
            tap_command("tap_luminai", config, None, Path(tmp)),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if len(lines) == 700:  # mid-window: records of the third window are flowing
                os.kill(process.pid, signal.SIGTERM)
                break
        lines += process.stdout.readlines()
        assert process.wait(timeout=30) == 128 + signal.SIGTERM, (
            "an interrupted run must not look finished"
        )
    messages = parse_messages("".join(lines))
    delivered = {m["record"]["id"] for m in messages if m["type"] == "RECORD"}
    last_state = [m["value"] for m in messages if m["type"] == "STATE"][-1]
    resumed = run_tap(config, last_state)
    truth = {e.id for e in server.api.truth(types=TYPES, start=START, end=END)}
    assert delivered | set(resumed.ids) == truth


def test_sigterm_while_a_large_page_is_being_written_cuts_no_line_and_keeps_state_behind(lumin):
    # One page of 6,000 events: its RECORD lines leave in 64 KiB writes. After the page's first
    # lines the reader stops reading for a moment, so the tap fills the pipe and blocks in the
    # middle of a write; the signal lands there. The run must finish the write it is in (no line
    # cut, unlike SIGKILL), exit 143, and print no STATE that claims the window it was writing.
    # Where the signal lands within the write varies: five trials (a handler that does not wait
    # for the write cut a line in 2 of 6 trials here).
    server = lumin(events=6000, page_size=6000)
    config = lumin_config(server, window_size_days=91)
    truth = len(server.api.truth(types=TYPES, start=START, end=END))
    for _ in range(5):
        run = run_tap_interrupted(
            config, after_lines=3, signum=signal.SIGTERM, pause_before_signal=0.5
        )
        assert run.returncode == 128 + signal.SIGTERM, run.stderr[-2000:]
        lines = run.stdout.splitlines()
        assert len(lines) > 3, "nothing was written after the signal: it did not land mid-write"
        assert len(parse_messages(run.stdout)) == len(lines), "a line was cut"
        assert len([m for m in run.messages if m["type"] == "RECORD"]) < truth
        for state in (m["value"] for m in run.messages if m["type"] == "STATE"):
            bookmark = state.get("bookmarks", {}).get("billing_events", {})
            assert not bookmark.get("replication_key_value"), "a STATE claimed the window"


def test_a_future_end_date_never_bookmarks_past_the_present(lumin):
    server = lumin()
    run = run_tap(lumin_config(server, end_date="2099-01-01"))
    assert run.returncode == 0
    bookmark = run.last_state["bookmarks"]["billing_events"]["replication_key_value"]
    assert bookmark <= dt.datetime.now(UTC).isoformat()


def test_a_catalog_naming_another_replication_key_does_not_change_the_windows(lumin):
    server = lumin()
    config = lumin_config(server)
    catalog = __import__("json").loads(
        subprocess.run(
            [*tap_command("tap_luminai", config, None, Path(tempfile.mkdtemp())), "--discover"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    stream = catalog["streams"][0]
    stream["replication_key"] = "conversation_id"
    for entry in stream["metadata"]:
        if entry["breadcrumb"] == []:
            entry["metadata"]["replication-key"] = "conversation_id"
            entry["metadata"]["selected"] = True
    path = Path(tempfile.mkdtemp()) / "catalog.json"
    path.write_text(__import__("json").dumps(catalog))
    run = run_tap(config, None, "--catalog", str(path))
    assert run.returncode == 0
    assert sorted(run.ids) == sorted(
        e.id for e in server.api.truth(types=TYPES, start=START, end=END)
    )


def test_a_bookmark_that_is_not_a_timestamp_is_refused_clearly(lumin):
    server = lumin()
    state = {
        "bookmarks": {
            "billing_events": {"replication_key": "timestamp", "replication_key_value": "yesterday"}
        }
    }
    run = run_tap(lumin_config(server), state)
    assert run.returncode != 0
    assert "bookmark 'yesterday' is not an ISO 8601 timestamp" in run.stderr
    assert "Traceback" not in run.stderr
    assert server.requests == 0


def test_a_rerun_ending_inside_the_lookback_never_moves_a_bookmark_back(lumin):
    # The first run reads to END; a rerun whose end_date lies inside the lookback before END (a day
    # before it, with two days of lookback) reads that day again, but every bookmark (each event
    # type's and the shared one) stays at END: a bookmark moving back would make the next run read
    # what it had already finished.
    server = lumin()
    first = run_tap(lumin_config(server))
    assert first.returncode == 0
    end = END.isoformat(timespec="microseconds")
    earlier = (END - dt.timedelta(days=1)).isoformat()
    again = run_tap(
        lumin_config(server, end_date=earlier, lookback_minutes=2 * 1440), first.last_state
    )
    assert again.returncode == 0
    assert again.records, "the rerun read its lookback again"
    state = again.last_state["bookmarks"]["billing_events"]
    assert state["replication_key_value"] == end
    assert state["bookmarks_by_key"] == dict.fromkeys(sorted(TYPES), end)
