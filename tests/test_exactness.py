"""tap-luminai emits exactly the events the API holds for the configured types, hosts and range."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from billing_sandbox.luminai import LuminAPI
from tests.support import END, START, lumin_config, run_tap

TYPES = {"billing.scheduled", "billing.rescheduled"}


def truth_ids(server, *, types=TYPES, hosts=None, start=START, end=END) -> set[str]:
    api: LuminAPI = server.api
    return {e.id for e in api.truth(types=types, hosts=hosts, start=start, end=end)}


@pytest.mark.parametrize("naming", ["timestamp", "datetime", "mixed"])
def test_ids_equal_truth_in_every_field_naming(lumin, naming):
    server = lumin(naming=naming)
    run = run_tap(lumin_config(server))
    assert run.returncode == 0, run.stderr
    assert sorted(run.ids) == sorted(truth_ids(server))
    assert server.concurrency_violations == 0


def test_records_carry_the_seed_fields_with_utc_timestamps(lumin):
    server = lumin(naming="datetime")
    run = run_tap(lumin_config(server))
    by_id = {e.id: e for e in server.api.events}
    for record in run.records:
        event = by_id[record["id"]]
        assert record["timestamp"] == event.timestamp.isoformat(timespec="microseconds")
        assert record["timestamp"].endswith("+00:00")
        assert record["type"] == event.type
        assert (record["host_id"], record["host_did"], record["user_did"]) == (
            event.host_id,
            event.host_did,
            event.user_did,
        )
        assert record["conversation_id"] == event.conversation_id
        assert record["fake"] == "real"
        assert "datetime" not in record
        assert "event_type" not in record


def test_pages_are_unsorted_yet_nothing_is_lost(lumin):
    server = lumin(page_size=25)
    run = run_tap(lumin_config(server, window_size_days=45))
    stamps = [r["timestamp"] for r in run.records]
    assert stamps != sorted(stamps), "the sandbox should serve items out of time order"
    assert sorted(run.ids) == sorted(truth_ids(server))


@pytest.mark.parametrize(
    ("start_inclusive", "end_inclusive"),
    [(True, False), (False, False), (True, True), (False, True)],
)
def test_exact_whatever_the_api_range_semantics(lumin, start_inclusive, end_inclusive):
    # 2% of sandbox events sit exactly on whole hours, so on window boundaries too.
    server = lumin(start_inclusive=start_inclusive, end_inclusive=end_inclusive)
    run = run_tap(lumin_config(server, window_size_days=1))
    assert run.returncode == 0, run.stderr
    assert len(run.ids) == len(set(run.ids)), "an event on a window boundary was emitted twice"
    assert set(run.ids) == truth_ids(server)


def test_every_end_of_paging_signal_is_understood(lumin):
    server = lumin(page_size=10, empty_last_page=True)
    run = run_tap(lumin_config(server, window_size_days=3))
    assert sorted(run.ids) == sorted(truth_ids(server))
    bodies = [r.body for r in server.api_log()]
    assert len(bodies) > 30  # enough queries that absent, null and empty tokens all occurred


def test_hosts_are_partitions_and_filter_on_host_id(lumin):
    server = lumin()
    hosts = ["store-001", "store-003"]
    run = run_tap(lumin_config(server, hosts=hosts))
    assert run.returncode == 0, run.stderr
    assert sorted(run.ids) == sorted(truth_ids(server, hosts=set(hosts)))
    partitions = run.last_state["bookmarks"]["billing_events"]["partitions"]
    assert sorted(p["context"]["host_id"] for p in partitions) == hosts


def test_all_types_of_a_window_travel_in_one_request(lumin):
    server = lumin()
    run = run_tap(
        lumin_config(
            server, event_types=["billing.rescheduled", "billing.scheduled", "billing.delete"]
        )
    )
    assert run.returncode == 0
    first = server.api_log()[0].body
    assert b'"type": "billing.delete,billing.rescheduled,billing.scheduled"' in first or (
        b'"type":"billing.delete,billing.rescheduled,billing.scheduled"' in first
    )


def test_range_is_half_open_and_end_date_exclusive(lumin):
    server = lumin()
    end = dt.datetime(2024, 2, 10, 12, tzinfo=dt.timezone.utc)
    run = run_tap(lumin_config(server, end_date=end.isoformat()))
    assert set(run.ids) == truth_ids(server, end=end)
    assert all(r["timestamp"] < end.isoformat(timespec="microseconds") for r in run.records)


def test_unknown_item_fields_keep_the_record_and_warn(lumin):
    server = lumin(extra_fields={"billing_region": "eu"})
    run = run_tap(lumin_config(server))
    assert sorted(run.ids) == sorted(truth_ids(server))
    assert "billing_region" in run.stderr  # the SDK names the field it does not know
    assert all("billing_region" not in r for r in run.records)


def test_an_empty_event_types_list_reads_every_type_sent_as_an_empty_type(lumin):
    server = lumin()
    run = run_tap(lumin_config(server, event_types=[]))
    assert run.returncode == 0, run.stderr[-2000:]
    truth = {e.id for e in server.api.truth(start=START, end=END)}
    assert len({e.type for e in server.api.truth(start=START, end=END)}) == 5
    assert len(run.ids) == len(set(run.ids)) and set(run.ids) == truth
    assert {json.loads(r.body)["type"] for r in server.api_log()} == {""}
    state = run.last_state["bookmarks"]["billing_events"]
    assert state["bookmarks_by_key"] == {"*": END.isoformat(timespec="microseconds")}
    assert state["replication_key_value"] == END.isoformat(timespec="microseconds")


def test_switching_to_every_type_reads_it_from_start_date_with_its_own_bookmark(lumin):
    server = lumin()
    first = run_tap(lumin_config(server, event_types=["billing.scheduled"]))
    second = run_tap(lumin_config(server, event_types=[]), first.last_state)
    assert second.returncode == 0
    assert set(second.ids) == {e.id for e in server.api.truth(start=START, end=END)}
    by_key = second.last_state["bookmarks"]["billing_events"]["bookmarks_by_key"]
    assert by_key["*"] == END.isoformat(timespec="microseconds")
