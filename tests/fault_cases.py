"""The three taps as cases of the fault tests (the fault matrix, the hostile answers): a sandbox,
a config, the truth, where a bookmark is, what a window is; and the invariant every faulted run
keeps (exact delivery, or a clear failure whose state does not run ahead)."""

from __future__ import annotations

import datetime as dt
import json
import typing as t
from dataclasses import dataclass

from billing_sandbox.server import RequestRecord, SandboxServer
from tests.reliability import (
    Fact,
    RecordKey,
    evo_facts,
    kore_facts,
    lumin_facts,
    record_key,
    record_value,
)
from tests.support import (
    EVO_START,
    TapRun,
    evo_config,
    evo_sandbox,
    kore_config,
    kore_sandbox,
    lumin_config,
    lumin_sandbox,
)


@dataclass(frozen=True)
class TapCase:
    name: str
    module: str
    start_sandbox: t.Callable[..., SandboxServer]
    config: t.Callable[..., dict[str, t.Any]]
    truth: t.Callable[[SandboxServer], dict[RecordKey, Fact]]
    #: The bookmark a final state holds for a partition (None: nothing claimed delivered).
    bookmark: t.Callable[[dict[str, t.Any], str], str | None]
    #: Which requests read the same window (requests of one group are its pages, in order).
    window_of: t.Callable[[RequestRecord], t.Hashable]


# -- Lumin.ai: one stream, one bookmark per event type --------------------------------------


def _lumin_bookmark(state: dict[str, t.Any], partition: str) -> str | None:
    stream = state.get("bookmarks", {}).get("billing_events", {})
    by_key = stream.get("bookmarks_by_key") or {}
    return by_key.get(partition) or stream.get("replication_key_value")


def _body_window(record: RequestRecord) -> t.Hashable:
    body = json.loads(record.body or b"{}")
    return (record.path, body.get("type"), body.get("start"), body.get("end"))


LUMIN_END = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
LUMIN = TapCase(
    name="luminai",
    module="tap_luminai",
    start_sandbox=lambda **kw: lumin_sandbox(
        **{"events": 800, "end": LUMIN_END, "page_size": 40, **kw}
    ),
    config=lambda server, **kw: lumin_config(server, end_date=LUMIN_END.isoformat(), **kw),
    truth=lambda server: lumin_facts(server, end=LUMIN_END),
    bookmark=_lumin_bookmark,
    window_of=_body_window,
)


# -- Kore.ai: one partition (and bookmark) per bot --------------------------------------------


def _kore_bookmark(state: dict[str, t.Any], partition: str) -> str | None:
    stream = state.get("bookmarks", {}).get("billing_sessions", {})
    for part in stream.get("partitions") or []:
        if part.get("context", {}).get("botId") == partition:
            return part.get("replication_key_value")
    return None


def _kore_window(record: RequestRecord) -> t.Hashable:
    body = json.loads(record.body or b"{}")
    return (record.path, body.get("fromDate"), body.get("toDate"))


KORE = TapCase(
    name="kore",
    module="tap_kore_billing",
    start_sandbox=lambda **kw: kore_sandbox(conversations=700, **kw),
    config=lambda server, **kw: kore_config(server, **{"page_size": 40, **kw}),
    truth=kore_facts,
    bookmark=_kore_bookmark,
    window_of=_kore_window,
)


# -- Evo Voice: two streams from one request per day; a bookmark per stream -------------------

EVO_DAYS = 8
EVO_FIRST = dt.date(2024, 3, 6)  # the range crosses no DST change: dates are UTC days anyway


def _evo_bookmark(state: dict[str, t.Any], partition: str) -> str | None:
    return state.get("bookmarks", {}).get(partition, {}).get("replication_key_value")


EVO = TapCase(
    name="evovoice",
    module="tap_evovoice",
    start_sandbox=evo_sandbox,
    config=lambda server, **kw: evo_config(
        server,
        start_date=EVO_FIRST.isoformat(),
        end_date=(EVO_FIRST + dt.timedelta(days=EVO_DAYS)).isoformat(),
        granularity="day",
        **kw,
    ),
    truth=lambda server: evo_facts(
        server, first=EVO_FIRST, end=EVO_FIRST + dt.timedelta(days=EVO_DAYS)
    ),
    bookmark=_evo_bookmark,
    window_of=lambda record: record.number,  # one request per day: every request is a window
)
assert EVO_START < EVO_FIRST

CASES = {case.name: case for case in (LUMIN, KORE, EVO)}


def outcome_of(case: TapCase, server: SandboxServer, run: TapRun) -> str:
    """Assert exact delivery, or a clear failure whose state does not run ahead. Return which."""
    truth = case.truth(server)
    delivered = [(record_key(m), record_value(m)) for m in run.messages if m["type"] == "RECORD"]
    keys = [key for key, _ in delivered]
    assert set(keys) <= set(truth), "a record outside the truth was delivered"
    for key, value in delivered:
        assert value == truth[key].value, f"{key}: delivered {value!r}, truth {truth[key].value!r}"
    assert_no_state_ahead(case, truth, run)
    if run.returncode == 0:
        assert len(keys) == len(set(keys)), "a record was delivered twice in one run"
        assert set(keys) == set(truth), f"{len(set(truth) - set(keys))} record(s) lost"
        assert server.concurrency_violations == 0
        return "exact"
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert errors, "a failed run must say why"
    assert "Traceback" not in run.stderr, "a known failure is reported in one line"
    assert any(server.base_url in line or "HTTP " in line for line in errors), errors[-1]
    return "failed-cleanly"


def assert_no_state_ahead(case: TapCase, truth: dict[RecordKey, Fact], run: TapRun) -> None:
    """Every STATE line comes after the records it claims: each record of the truth placed before a
    bookmark of that STATE was printed on an earlier line (as a target reads them, in order)."""
    seen: set[RecordKey] = set()
    for message in run.messages:
        if message["type"] == "RECORD":
            seen.add(record_key(message))
        elif message["type"] == "STATE":
            for key, fact in truth.items():
                bookmark = case.bookmark(message["value"], fact.partition)
                if bookmark is not None and fact.moment < bookmark:
                    assert key in seen, (
                        f"a STATE claims {key} (at {fact.moment}) before it was delivered"
                    )
