"""What the reliability tests (kill-and-resume trials, soak) share: measured tap runs, record keys,
figures written as JSON under ``build/reliability/`` and printed in pytest's terminal summary.

The figures are the point of those tests (how much a resume re-reads, how much memory a 1,000,000
record backfill takes), so they go where they can be quoted: a JSON file per test family, and a
section at the end of the pytest output that shows with or without ``-s``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest

from billing_sandbox.server import SandboxServer
from billing_toolkit.timestamps import format_timestamp
from tap_evovoice.streams import AIAccountUsageStream, AICustomerUsageStream
from tap_kore_billing.streams import BillingSessionsStream
from tap_luminai.streams import BillingEventsStream
from tests.support import (
    END,
    KORE_BOTS,
    KORE_END,
    KORE_START,
    LUMIN_TYPES,
    ROOT,
    START,
    _env,
)

#: Where the figures go (``build/`` is ignored by git).
FIGURES_DIR = Path(__file__).resolve().parents[1] / "build" / "reliability"

#: The primary key of every stream of the three taps, read from the streams themselves: the key a
#: target upserts on, hence the key that decides whether a record was lost or counted twice.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    stream.name: tuple(stream.primary_keys or ())
    for stream in (
        BillingEventsStream,
        BillingSessionsStream,
        AIAccountUsageStream,
        AICustomerUsageStream,
    )
}

#: The field compared with the truth besides the key: the one that places a record in its window
#: (Lumin.ai, Kore.ai), or the billed figure itself (Evo Voice, whose key is its period).
VALUE_FIELDS: dict[str, str] = {
    "billing_events": "timestamp",
    "billing_sessions": "billingSessionStartDateTime",
    "ai_account_usage": "aiMinutes",
    "ai_customer_usage": "aiMinutes",
}

RecordKey = tuple[t.Any, ...]


def record_key(message: dict[str, t.Any]) -> RecordKey:
    """``(stream, *primary key values)`` of a RECORD message."""
    stream = message["stream"]
    record = message["record"]
    return (stream, *(record[k] for k in PRIMARY_KEYS[stream]))


def record_value(message: dict[str, t.Any]) -> t.Any:
    """The field of a RECORD message that is compared with the truth (see ``VALUE_FIELDS``)."""
    return message["record"][VALUE_FIELDS[message["stream"]]]


@dataclass(frozen=True)
class Fact:
    """One record of a sandbox's truth: its compared value, and where its bookmark lives."""

    value: t.Any
    #: The state partition (or keyed bookmark) whose bookmark covers this record.
    partition: str
    #: Canonical UTC text of the time that places the record in a window.
    moment: str


def lumin_facts(
    server: SandboxServer,
    *,
    types: t.Collection[str] = LUMIN_TYPES,
    start: dt.datetime = START,
    end: dt.datetime = END,
) -> dict[RecordKey, Fact]:
    """Every Lumin.ai event of ``types`` in ``[start, end)``; its bookmark is its type's."""
    events = server.api.truth(types=set(types), start=start, end=end)  # type: ignore[attr-defined]
    return {
        ("billing_events", e.id): Fact(e.timestamp_text, e.type, e.timestamp_text) for e in events
    }


def kore_facts(
    server: SandboxServer,
    *,
    bots: t.Collection[str] = KORE_BOTS,
    start: dt.datetime = KORE_START,
    end: dt.datetime = KORE_END,
) -> dict[RecordKey, Fact]:
    """Every Kore.ai billing session of ``bots`` starting in ``[start, end)``; bookmark per bot."""
    facts = {}
    for s in server.api.truth(bots=set(bots), start=start, end=end):  # type: ignore[attr-defined]
        moment = format_timestamp(s.billingStart)
        facts[("billing_sessions", s.billingSessionId)] = Fact(moment, s.botId, moment)
    return facts


def evo_facts(
    server: SandboxServer,
    *,
    first: dt.date,
    end: dt.date,
    accounts: t.Collection[str] | None = None,
) -> dict[RecordKey, Fact]:
    """Evo Voice figures by day in ``[first, end)``; one bookmark per stream."""
    by_account, by_customer = server.api.daily_figures(first, end, accounts)  # type: ignore[attr-defined]
    facts: dict[RecordKey, Fact] = {}
    for (account, day), minutes in by_account.items():
        moment = f"{day.isoformat()}T00:00:00.000000+00:00"
        facts[("ai_account_usage", account, day.isoformat())] = Fact(
            minutes, "ai_account_usage", moment
        )
    for (account, customer, day), minutes in by_customer.items():
        moment = f"{day.isoformat()}T00:00:00.000000+00:00"
        facts[("ai_customer_usage", account, customer, day.isoformat())] = Fact(
            minutes, "ai_customer_usage", moment
        )
    return facts


def values(facts: dict[RecordKey, Fact]) -> dict[RecordKey, t.Any]:
    """The truth as key -> compared value."""
    return {key: fact.value for key, fact in facts.items()}


def write_figures(name: str, figures: dict[str, t.Any]) -> Path:
    """Write ``build/reliability/<name>.json`` (pretty, key-sorted) and return its path."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return path


def update_figures(name: str, key: str, figures: dict[str, t.Any]) -> Path:
    """Set ``key`` in ``build/reliability/<name>.json``, keeping the other keys (other taps).

    The file is locked while it is read and written: under ``pytest -n`` the tests of one family
    may run in two worker processes at once.
    """
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.json"
    with (FIGURES_DIR / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError):
            existing = {}
        if not isinstance(existing, dict):
            existing = {}
        existing[key] = {**figures, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        return write_figures(name, existing)


#: Under ``pytest -n`` the figures a worker adds go here (one JSON line a section), for the
#: controlling process to print after the test results (conftest.py).
WORKER_SECTIONS = FIGURES_DIR / "terminal-summary.jsonl"


class Summary:
    """A pytest plugin that prints the figures the tests added, after the test results."""

    name = "billing-reliability-summary"

    def __init__(self) -> None:
        self.sections: dict[str, list[str]] = {}

    def add(self, title: str, lines: t.Iterable[str]) -> None:
        self.sections[title] = list(lines)
        if os.environ.get("PYTEST_XDIST_WORKER"):
            FIGURES_DIR.mkdir(parents=True, exist_ok=True)
            with WORKER_SECTIONS.open("a") as sink:
                fcntl.flock(sink, fcntl.LOCK_EX)
                sink.write(json.dumps({"title": title, "lines": self.sections[title]}) + "\n")

    def pytest_terminal_summary(self, terminalreporter: t.Any) -> None:
        for title, lines in self.sections.items():
            terminalreporter.write_sep("-", title)
            for line in lines:
                terminalreporter.write_line(line)


def summary(config: pytest.Config) -> Summary:
    """The session's figure printer, registered as a plugin on first use."""
    plugin = config.pluginmanager.get_plugin(Summary.name)
    if plugin is None:
        plugin = Summary()
        config.pluginmanager.register(plugin, Summary.name)
    assert isinstance(plugin, Summary)
    return plugin


@dataclass
class MeasuredRun:
    """A tap process run to its end with its output in files, and what it cost."""

    returncode: int
    wall_seconds: float
    #: The tap process's own peak resident set size (``ru_maxrss``, KiB on Linux).
    peak_rss_kib: int
    stdout_path: Path
    stderr_path: Path
    timed_out: bool


def run_measured(command: list[str], directory: Path, *, timeout: float) -> MeasuredRun:
    """Run ``command`` with stdout and stderr in files (a 1M-record output never sits in memory),
    through ``bench.spawn`` so that its own peak RSS is known, not the test process's (a child
    started straight from the test process reports at least the test process's peak, and the test
    process holds the sandbox's dataset).

    After ``timeout`` seconds the whole process group is killed: a hung run fails the test instead
    of hanging it.
    """
    stdout_path, stderr_path = directory / "stdout.jsonl", directory / "stderr.log"
    report_path = directory / "spawn.json"
    timed_out = False
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.spawn", str(report_path), *command],
            cwd=ROOT,
            stdout=out,
            stderr=err,
            env=_env(),
            start_new_session=True,
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        wall = time.monotonic() - started
    peak = json.loads(report_path.read_text())["peak_rss_kb"] if report_path.exists() else 0
    return MeasuredRun(
        returncode=process.returncode,
        wall_seconds=wall,
        peak_rss_kib=peak,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        timed_out=timed_out,
    )
