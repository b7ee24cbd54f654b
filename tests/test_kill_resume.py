"""Kill-and-resume trials: SIGKILL each tap at random moments, resume, and nothing is lost or extra.

For each tap, ``TRIALS`` seeded trials. Each starts the tap as a real process against its own sandbox
(several windows and several partitions), SIGKILLs it at a point drawn from a reference run (after
any line of its output, right after one of its STATE lines, after a random delay, or near its end),
then runs it normally from the last STATE the killed run printed (none printed: from no state). The
union of the records both runs delivered must equal the truth key by key, with the true value (a
later delivery of a key replaces an earlier one, as a target's upsert does); the resumed run must end
with the bookmarks of an uninterrupted run; and no secret may appear (``run_tap`` checks the resumed
run, ``run_killed`` the killed one).

A failing trial is reported with its seed and kill point, so that it can be replayed alone. The
figures (trials, kills that landed, where they landed, mean and max fraction re-read) are printed at
the end of the pytest output and written to ``build/reliability/kill_resume.json``.
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from billing_sandbox.luminai import HOSTS
from billing_sandbox.server import SandboxServer
from tests.reliability import (
    RecordKey,
    evo_facts,
    kore_facts,
    lumin_facts,
    record_key,
    record_value,
    summary,
    update_figures,
    values,
)
from tests.support import (
    EVO_END,
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

#: Trials per tap. At least 50 must be real kills (the process still running when SIGKILL landed).
TRIALS = 56
MIN_KILLS = 50
#: Two trials at a time, each with its own sandbox: the machine has two cores.
WORKERS = 2
#: How a trial chooses its kill point, in turn (trial number modulo 4).
STRATEGIES = ("any-line", "after-state", "timed", "near-end")
EVO_ACCOUNTS = ("acct-alpha", "acct-bravo")


# -- the three taps, each on a dataset of several windows and partitions ----------------------------


def lumin_truth(server: SandboxServer) -> dict[RecordKey, t.Any]:
    """Every event of the configured types in ``[START, END)``, all four hosts."""
    return values(lumin_facts(server))


def kore_truth(server: SandboxServer) -> dict[RecordKey, t.Any]:
    """Every billing session of the configured bots in ``[KORE_START, KORE_END)``."""
    return values(kore_facts(server))


def evo_truth(server: SandboxServer) -> dict[RecordKey, t.Any]:
    """Minutes per (account, day) and per (account, customer, day) of the configured accounts."""
    return values(evo_facts(server, first=EVO_START, end=EVO_END, accounts=EVO_ACCOUNTS))


@dataclass(frozen=True)
class TapCase:
    module: str
    shape: str
    start_sandbox: t.Callable[[], SandboxServer]
    configure: t.Callable[[SandboxServer], dict[str, t.Any]]
    truth: t.Callable[[SandboxServer], dict[RecordKey, t.Any]]


CASES = {
    "luminai": TapCase(
        module="tap_luminai",
        shape="1500 events, 2 event types (keyed bookmarks) x 4 host partitions x 7 windows of 14 days, pages of 20",
        start_sandbox=lambda: lumin_sandbox(events=1500, page_size=20),
        configure=lambda server: lumin_config(server, hosts=list(HOSTS)),
        truth=lumin_truth,
    ),
    "kore": TapCase(
        module="tap_kore_billing",
        shape="800 conversations, 2 bot partitions x 12 windows of 30 days, pages of 20",
        start_sandbox=lambda: kore_sandbox(conversations=800, page_cap=20),
        configure=lambda server: kore_config(server, window_size_days=30, page_size=20),
        truth=kore_truth,
    ),
    "evovoice": TapCase(
        module="tap_evovoice",
        shape="2 streams x 2 account partitions x 86 daily periods",
        start_sandbox=evo_sandbox,
        configure=lambda server: evo_config(server, account_ids=list(EVO_ACCOUNTS)),
        truth=evo_truth,
    ),
}


# -- kill points -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run: what kill points are drawn from, and the bookmarks to end with."""

    lines: int
    #: For each STATE line, how many lines were printed up to and including it.
    state_ends: tuple[int, ...]
    wall_seconds: float
    bookmarks: t.Any


@dataclass(frozen=True)
class KillPoint:
    strategy: str
    after_lines: int | None = None
    after_seconds: float | None = None

    def __str__(self) -> str:
        if self.after_seconds is not None:
            return f"{self.strategy}: SIGKILL {self.after_seconds:.3f} s after start"
        return f"{self.strategy}: SIGKILL after {self.after_lines} stdout line(s)"


def draw_kill(rng: random.Random, reference: Reference, strategy: str) -> KillPoint:
    """A kill point anywhere in the run: any line (0 = at once), right after a STATE line, at a
    random time (start-up included), or in the last tenth of the output."""
    if strategy == "any-line":
        return KillPoint(strategy, after_lines=rng.randrange(reference.lines))
    if strategy == "after-state":
        # Not the final STATE: after it the run is over, there is nothing left to kill.
        return KillPoint(strategy, after_lines=rng.choice(reference.state_ends[:-1]))
    if strategy == "timed":
        return KillPoint(strategy, after_seconds=rng.uniform(0, reference.wall_seconds))
    low = int(reference.lines * 0.9)
    return KillPoint(strategy, after_lines=rng.randrange(low, reference.lines))


# -- one trial ----------------------------------------------------------------------------------------


def normalized_bookmarks(state: dict[str, t.Any] | None) -> dict[str, t.Any]:
    """The bookmarks of a state, partitions in a fixed order (their order carries no meaning)."""
    bookmarks = (state or {}).get("bookmarks") or {}
    result: dict[str, t.Any] = {}
    for stream, value in bookmarks.items():
        partitions = value.get("partitions") if isinstance(value, dict) else None
        if isinstance(partitions, list):
            ordered = sorted(json.dumps(p, sort_keys=True) for p in partitions)
            result[stream] = {**value, "partitions": ordered}
        else:
            result[stream] = value
    return result


def delivered(run: TapRun) -> tuple[dict[RecordKey, t.Any], int]:
    """Key -> value of the last delivery of each key, and how many deliveries repeated a key."""
    values: dict[RecordKey, t.Any] = {}
    repeats = 0
    for message in run.messages:
        if message["type"] == "RECORD":
            key = record_key(message)
            repeats += key in values
            values[key] = record_value(message)
    return values, repeats


def landing(run: TapRun, reference: Reference) -> str:
    """Where the kill landed, read from what the killed run printed."""
    kinds = [m["type"] for m in run.messages]
    if "STATE" not in kinds:
        return "before the first STATE"
    if len(run.stdout.splitlines()) >= 0.9 * reference.lines:
        return "near the end"
    if kinds[-1] == "STATE":
        return "right after a STATE"
    return "mid-window"


@dataclass
class Trial:
    seed: int
    kill: KillPoint
    killed: bool = False
    landed: str = ""
    lines_before_kill: int = 0
    resumed_returncode: int | None = None
    missing: list[RecordKey] = field(default_factory=list)
    unexpected: list[RecordKey] = field(default_factory=list)
    wrong_values: list[RecordKey] = field(default_factory=list)
    repeats_within_a_run: int = 0
    bookmarks_match: bool = False
    reread: int = 0
    truth_size: int = 0
    resumed_stderr_tail: str = ""

    @property
    def reread_fraction(self) -> float:
        return self.reread / self.truth_size if self.truth_size else 0.0

    def problems(self) -> list[str]:
        found = []
        if self.resumed_returncode != 0:
            found.append(
                f"resumed run exited {self.resumed_returncode}: {self.resumed_stderr_tail}"
            )
        if self.missing:
            found.append(f"{len(self.missing)} key(s) missing, e.g. {self.missing[:5]}")
        if self.unexpected:
            found.append(f"{len(self.unexpected)} key(s) outside the truth: {self.unexpected[:5]}")
        if self.wrong_values:
            found.append(f"{len(self.wrong_values)} wrong value(s), e.g. {self.wrong_values[:5]}")
        if self.repeats_within_a_run:
            found.append(f"{self.repeats_within_a_run} key(s) delivered twice within one run")
        if not self.bookmarks_match:
            found.append("final bookmarks differ from an uninterrupted run's")
        return found

    def describe(self) -> str:
        return (
            f"seed {self.seed}, {self.kill} (landed {self.landed or '-'}, "
            f"{self.lines_before_kill} line(s) printed, killed={self.killed}): "
            + "; ".join(self.problems())
        )


def run_trial(case: TapCase, reference: Reference, seed: int) -> Trial:
    """Kill at a seeded point, resume from the last STATE printed, compare with the truth."""
    rng = random.Random(seed)
    kill = draw_kill(rng, reference, STRATEGIES[seed % len(STRATEGIES)])
    trial = Trial(seed=seed, kill=kill)
    server = case.start_sandbox()
    try:
        config = case.configure(server)
        killed = run_tap_interrupted(
            config,
            module=case.module,
            after_lines=kill.after_lines,
            after_seconds=kill.after_seconds,
        )
        resumed = run_tap(config, killed.last_state, module=case.module)
        truth = case.truth(server)
    finally:
        server.stop()
    trial.killed = killed.returncode == -signal.SIGKILL
    trial.landed = landing(killed, reference)
    trial.lines_before_kill = len(killed.stdout.splitlines())
    trial.resumed_returncode = resumed.returncode
    trial.resumed_stderr_tail = resumed.stderr[-1500:]
    before, repeats_before = delivered(killed)
    after, repeats_after = delivered(resumed)
    union = {**before, **after}  # a later delivery replaces an earlier one, as an upsert does
    trial.missing = sorted(truth.keys() - union.keys())
    trial.unexpected = sorted(union.keys() - truth.keys())
    trial.wrong_values = sorted(k for k in truth.keys() & union.keys() if union[k] != truth[k])
    trial.repeats_within_a_run = repeats_before + repeats_after
    final = resumed.last_state or killed.last_state
    trial.bookmarks_match = normalized_bookmarks(final) == reference.bookmarks
    trial.reread = len(before.keys() & after.keys())
    trial.truth_size = len(truth)
    return trial


def reference_run(case: TapCase) -> Reference:
    """One uninterrupted run, checked against the truth: the baseline every trial must match."""
    server = case.start_sandbox()
    try:
        started = time.monotonic()
        run = run_tap(case.configure(server), module=case.module)
        wall = time.monotonic() - started
        truth = case.truth(server)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    values, repeats = delivered(run)
    assert values == truth and repeats == 0, "the uninterrupted run itself is not exact"
    lines = run.stdout.splitlines()
    state_ends = tuple(
        number for number, line in enumerate(lines, 1) if '"type":"STATE"' in line.replace(" ", "")
    )
    assert len(state_ends) >= 4, "the dataset must span several windows"
    return Reference(len(lines), state_ends, wall, normalized_bookmarks(run.last_state))


# -- the test -----------------------------------------------------------------------------------------


def figures_of(tap: str, case: TapCase, reference: Reference, trials: list[Trial]) -> dict:
    kills = [x for x in trials if x.killed]
    fractions = [x.reread_fraction for x in kills]
    landed: dict[str, int] = {}
    for trial in kills:
        landed[trial.landed] = landed.get(trial.landed, 0) + 1
    return {
        "tap": tap,
        "dataset": case.shape,
        "trials": len(trials),
        "kills_landed": len(kills),
        "completed_before_the_kill": len(trials) - len(kills),
        "landed": landed,
        "truth_records": trials[0].truth_size if trials else 0,
        "reference_stdout_lines": reference.lines,
        "reference_states": len(reference.state_ends),
        "reread_fraction_mean": round(statistics.fmean(fractions), 4) if fractions else None,
        "reread_fraction_max": round(max(fractions), 4) if fractions else None,
        "failed_trials": sum(1 for x in trials if x.problems()),
        "seeds": f"{trials[0].seed}..{trials[-1].seed}" if trials else "",
    }


@pytest.mark.slow
@pytest.mark.parametrize("tap", list(CASES))
def test_sigkill_at_random_moments_then_resume_is_exact(tap, pytestconfig):
    case = CASES[tap]
    reference = reference_run(case)
    base = 1000 * (list(CASES).index(tap) + 1)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        trials = list(
            pool.map(lambda seed: run_trial(case, reference, seed), range(base, base + TRIALS))
        )
    figures = figures_of(tap, case, reference, trials)
    update_figures("kill_resume", tap, figures)
    summary(pytestconfig).add(
        f"kill-and-resume: {tap}",
        [
            f"{figures['trials']} trials, {figures['kills_landed']} SIGKILLs landed mid-run "
            f"({figures['landed']}), {figures['failed_trials']} failed",
            f"re-read fraction (records of the killed run delivered again / truth of "
            f"{figures['truth_records']}): mean {figures['reread_fraction_mean']}, "
            f"max {figures['reread_fraction_max']}",
            f"dataset: {case.shape}; seeds {figures['seeds']}",
        ],
    )
    failures = [trial.describe() for trial in trials if trial.problems()]
    assert not failures, f"{len(failures)} trial(s) failed:\n" + "\n".join(failures[:10])
    assert figures["kills_landed"] >= MIN_KILLS, figures
    landed = set(figures["landed"])
    assert {"before the first STATE", "mid-window", "right after a STATE"} <= landed, landed
