"""The fault matrix: every fault kind the sandbox injects, for every tap, at four places of a run.

Places: the first page of the run, a middle page of a window, the last page of a window, and the
first request after a window boundary (right after a STATE). The places are found from a clean
reference run's request log, so they stay right when datasets or page sizes change.

Each run must either deliver exactly the truth (every key once, every value equal), or fail with a
one-line error that names the request, and end with a STATE that does not run ahead of what it
delivered. Retriable kinds must be survived; faults repeated past the retry budget must fail.
"""

from __future__ import annotations

import random
import signal
import typing as t

import pytest

from billing_sandbox.faults import FAULT_KINDS, RETRIABLE_KINDS, FaultRule
from billing_sandbox.server import SandboxServer
from tests.fault_cases import CASES, TapCase, assert_no_state_ahead, outcome_of
from tests.reliability import (
    summary,
    update_figures,
)
from tests.support import (
    TapRun,
    run_tap,
    run_tap_interrupted,
)

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
    """:func:`tests.fault_cases.check_outcome`, counted among the matrix's figures."""
    return _note(case, server, outcome_of(case, server, run))


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
        cut_short = 0
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
            # Really cut short: stopped by the signal before it had printed all a full run prints.
            cut_short += run.returncode != 0 and len(run.stdout.splitlines()) < lines
        # The trials that prove something: at least 6 of 8 stopped in the middle of the run.
        assert cut_short >= 6, f"only {cut_short} of 8 SIGTERM trials landed mid-run"
    finally:
        server.stop()
