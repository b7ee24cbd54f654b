"""The fault matrix: every fault kind the sandbox injects, for every tap, at four places of a run.

Places: the first page of the run, a middle page of a window, the last page of a window, and the
first request after a window boundary (right after a STATE). The places are found from a clean
reference run's request log, so they stay right when datasets or page sizes change.

Each run must either deliver exactly the truth (every key once, every value equal), or fail with a
one-line error that names the request, and end with a STATE that does not run ahead of what it
delivered. Retriable kinds must be survived; faults repeated past the retry budget must fail.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import typing as t
from dataclasses import dataclass

import pytest

from billing_sandbox.faults import FAULT_KINDS, RETRIABLE_KINDS, FaultRule
from billing_sandbox.server import RequestRecord, SandboxServer
from tests.reliability import (
    Fact,
    RecordKey,
    evo_facts,
    kore_facts,
    lumin_facts,
    record_key,
    record_value,
    summary,
    update_figures,
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
    run_tap,
    run_tap_interrupted,
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
PLACES = ("first-page", "middle-page", "last-page", "after-boundary")


# -- where the places are, from a clean run -----------------------------------------------------

_places_cache: dict[str, dict[str, int]] = {}


def places(case: TapCase) -> dict[str, int]:
    """Request numbers of the four places, read from a clean run's request log."""
    if case.name in _places_cache:
        return _places_cache[case.name]
    server = case.start_sandbox()
    try:
        run = run_tap(case.config(server), module=case.module)
        assert run.returncode == 0, run.stderr[-2000:]
        log = server.api_log()
    finally:
        server.stop()
    groups: list[list[int]] = []
    for record in log:
        if groups and case.window_of(record) == case.window_of(log[groups[-1][-1] - 1]):
            groups[-1].append(record.number)
        else:
            groups.append([record.number])
    assert len(groups) >= 3, "the matrix needs several windows"
    paged = [g for g in groups[:-1] if len(g) >= 3]
    middle_of_run = groups[len(groups) // 2]
    found = {
        "first-page": 1,
        "middle-page": paged[0][1] if paged else middle_of_run[0],
        "last-page": paged[0][-1] if paged else log[-1].number,
        "after-boundary": groups[1][0],
    }
    if case.name != "evovoice":
        assert paged, f"{case.name}: the dataset must give windows of 3 pages or more"
    _places_cache[case.name] = found
    return found


# -- the invariant every run must keep ----------------------------------------------------------


#: What each run of this module met and how it ended, for the figures (see ``_figures``).
_RUNS: list[dict[str, t.Any]] = []


@pytest.fixture(scope="module", autouse=True)
def _figures(pytestconfig: pytest.Config) -> t.Iterator[None]:
    """Print and keep the matrix's figures: runs, faults injected, how the runs ended."""
    yield
    if not _RUNS:
        return
    faults = sum(run["faults"] for run in _RUNS)
    exact = [run for run in _RUNS if run["outcome"] == "exact"]
    figures = {
        "runs": len(_RUNS),
        "faults_injected": faults,
        "faults_survived_exactly": sum(run["faults"] for run in exact),
        "runs_exact": len(exact),
        "runs_failed_cleanly": len(_RUNS) - len(exact),
        "records_lost": 0,  # every run asserted it (check_outcome)
        "by_tap": {
            tap: {
                "runs": sum(1 for run in _RUNS if run["tap"] == tap),
                "exact": sum(1 for run in exact if run["tap"] == tap),
            }
            for tap in sorted({run["tap"] for run in _RUNS})
        },
    }
    update_figures("fault_matrix", "all", figures)
    summary(pytestconfig).add(
        "fault matrix",
        [
            f"{figures['runs']} runs, {faults} faults injected: {len(exact)} runs delivered exactly "
            f"the truth ({figures['faults_survived_exactly']} faults survived), "
            f"{figures['runs_failed_cleanly']} failed cleanly with state not ahead; 0 records lost",
        ],
    )


def _note(case: TapCase, server: SandboxServer, outcome: str) -> str:
    _RUNS.append(
        {"tap": case.name, "outcome": outcome, "faults": sum(server.faults.injected.values())}
    )
    return outcome


def check_outcome(case: TapCase, server: SandboxServer, run: TapRun) -> str:
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
        return _note(case, server, "exact")
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert errors, "a failed run must say why"
    assert "Traceback" not in run.stderr, "a known failure is reported in one line"
    assert any(server.base_url in line or "HTTP " in line for line in errors), errors[-1]
    return _note(case, server, "failed-cleanly")


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


# -- the matrix -----------------------------------------------------------------------------------


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("kind", FAULT_KINDS)
@pytest.mark.parametrize("tap", list(CASES))
def test_one_fault_at_each_place(tap: str, kind: str, place: str) -> None:
    case = CASES[tap]
    number = places(case)[place]
    server = case.start_sandbox(faults=[FaultRule(kind, at=(number,))], stall_seconds=5)
    try:
        run = run_tap(case.config(server), module=case.module)
        outcome = check_outcome(case, server, run)
        assert server.faults.injected == {kind: 1}
        if kind in RETRIABLE_KINDS:
            assert outcome == "exact", run.stderr[-2000:]
            assert "retrying in" in run.stderr
        elif kind == "401":
            # Bearer token, JWT and Basic credentials cannot be renewed: the refusal is final.
            assert outcome == "failed-cleanly"
            assert server.api_log()[-1].number == number, "a refused request is not retried"
    finally:
        server.stop()


@pytest.mark.parametrize("kind", sorted(RETRIABLE_KINDS))
@pytest.mark.parametrize("tap", list(CASES))
def test_a_fault_repeated_past_the_retry_budget_fails_cleanly(tap: str, kind: str) -> None:
    case = CASES[tap]
    number = places(case)["middle-page"]
    server = case.start_sandbox(faults=[FaultRule(kind, at=(number,), repeat=50)], stall_seconds=5)
    try:
        run = run_tap(
            case.config(server, retry_max_tries=3, retry_initial_delay_seconds=0.05),
            module=case.module,
        )
        assert check_outcome(case, server, run) == "failed-cleanly"
        assert server.faults.injected == {kind: 3}, "exactly the retry budget was spent"
        assert "Giving up after retries" in run.stderr
    finally:
        server.stop()


@pytest.mark.parametrize("tap", list(CASES))
def test_a_429_storm_longer_than_one_backoff_is_waited_out(tap: str) -> None:
    # Five 429s in a row with Retry-After: 1 outlast the first backoff (0.2 s) several times over.
    case = CASES[tap]
    number = places(case)["after-boundary"]
    server = case.start_sandbox(faults=[FaultRule("429", at=(number,), repeat=5)])
    try:
        run = run_tap(case.config(server), module=case.module)
        assert check_outcome(case, server, run) == "exact", run.stderr[-2000:]
        assert server.faults.injected == {"429": 5}
        waits = [line for line in run.stderr.splitlines() if "retrying in" in line]
        assert len(waits) == 5
        assert all(float(w.rsplit("retrying in", 1)[1].split()[0]) >= 1.0 for w in waits)
    finally:
        server.stop()


@pytest.mark.parametrize("tap", list(CASES))
def test_sigterm_at_random_moments_never_leaves_a_state_ahead_of_its_records(tap):
    # SIGTERM (an orchestrator stopping the task) at random output lines: the tap exits 143 and
    # whatever it printed has every STATE after the records it claims, even when the signal lands
    # while buffered records are being written.
    case = CASES[tap]
    rng = random.Random(f"sigterm-{tap}")
    server = case.start_sandbox()
    try:
        reference = run_tap(case.config(server), module=case.module)
        lines = len(reference.stdout.splitlines())
        for _ in range(8):
            server.reset_counters()
            run = run_tap_interrupted(
                case.config(server),
                module=case.module,
                after_lines=rng.randrange(1, lines),
                signum=signal.SIGTERM,
            )
            # 143: stopped by its handler; -15: the signal came while the interpreter was starting
            # or shutting down, outside Python's handler; 0: it had finished.
            assert run.returncode in {0, 128 + signal.SIGTERM, -signal.SIGTERM}
            assert_no_state_ahead(case, case.truth(server), run)
    finally:
        server.stop()
