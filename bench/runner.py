"""Run the three variants of each tap against pre-built pages and collect raw figures.

How one run is measured (the same for every variant, so that ratios compare like with like):

- The sandbox runs in this process, in a thread, behind :class:`PrebuiltPages`; one unmeasured
  warm-up pass (the bare loop) fills the page cache first, so measured runs only copy bytes.
- The variant runs as its own process (``python -m ...``, started from the repository root) with
  stdout on a pipe (widened to 1 MiB) that this process drains in 1 MiB reads, counting RECORD
  lines (and keeping the last STATE line, for the start-up run); stderr goes to a temporary file.
  Nothing is written to disk, and no variant pays for a slower sink than another.
- Each variant is started by ``bench.spawn``, a small process that forks it, reaps it with
  ``os.wait4`` and reports its wall time (fork to exit: interpreter start-up and imports included)
  and its own peak RSS (``ru_maxrss``; started straight from the harness, a child would report at
  least the harness's own memory, dataset and page cache included). Requests are the API requests
  the sandbox counted during the run; cache misses are reported too (0 after warm-up).
- Variants are interleaved (bare, sdk-default, tap, bare, ...) so that a burst of load on the
  machine spreads over all three rather than landing on one.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import typing as t
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.datasets import BUILDERS, Workload
from bench.sdk_default import MARKER
from billing_sandbox.credentials import SECRETS
from billing_sandbox.prebuilt import PrebuiltPages
from billing_sandbox.server import SandboxServer

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("bare-loop", "sdk-default", "tap")
#: Variants measured only when asked for (``--variants``): issue 15's single-record-path trial.
EXPERIMENTS = ("writer-path",)
RECORD_PREFIX = b'\n{"type":"RECORD"'
STATE_PREFIX = b'\n{"type":"STATE"'
READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20


@dataclass
class ChildRun:
    """What one child process did, seen from outside."""

    returncode: int
    wall_seconds: float
    peak_rss_kb: int
    records: int
    stdout_bytes: int
    last_state: dict | None
    secret_seen: bool
    stderr_tail: str
    stderr: str = field(repr=False, default="")


@dataclass
class RunFigures:
    """One measured run, as it goes into benchmarks.json."""

    tap: str
    size: int
    variant: str
    repeat: int
    wall_seconds: float
    records: int
    expected_records: int
    records_per_second: float
    peak_rss_mb: float
    requests: int
    minimum_requests: int
    windows: int
    cache_misses: int
    concurrency_violations: int


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SINGER_SDK_LOG_CONFIG", None)
    env.pop("PYTHONUNBUFFERED", None)  # the variants choose their own buffering
    return env


def command_for(variant: str, workload: Workload, config_path: Path) -> list[str]:
    """The command line of one variant."""
    if variant == "bare-loop":
        return [
            sys.executable,
            "-m",
            "bench.bare_loop",
            workload.bare_api,
            "--config",
            str(config_path),
        ]
    if variant == "sdk-default":
        return [
            sys.executable,
            "-m",
            "bench.sdk_default",
            workload.tap_class,
            "--config",
            str(config_path),
        ]
    if variant == "tap":
        return [sys.executable, "-m", workload.module, "--config", str(config_path)]
    if variant == "writer-path":
        return [
            sys.executable,
            "-m",
            "bench.writer_path",
            workload.tap_class,
            "--config",
            str(config_path),
        ]
    msg = f"unknown variant {variant!r}; known: {', '.join(VARIANTS + EXPERIMENTS)}"
    raise ValueError(msg)


def _drain(fd: int, secrets: tuple[bytes, ...]) -> tuple[int, int, bytes | None, bool]:
    """Read a pipe to its end: RECORD lines, bytes, the last STATE line, whether a secret showed.

    Each chunk is cut at its last newline and the newline kept at the head of the rest, so every
    complete line in a buffer is preceded by a newline: counting ``\\n{"type":"RECORD"`` counts
    lines that start a RECORD message (a record's own text cannot contain that unescaped).
    """
    records = total = 0
    last_state: bytes | None = None
    seen = False
    tail = b"\n"
    while True:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            break
        total += len(chunk)
        data = tail + chunk
        cut = data.rfind(b"\n")
        complete, tail = data[:cut], data[cut:]
        records += complete.count(RECORD_PREFIX)
        state_at = complete.rfind(STATE_PREFIX)
        if state_at >= 0:
            end = complete.find(b"\n", state_at + 1)
            last_state = complete[state_at + 1 : end if end >= 0 else None]
        seen = seen or any(s in complete for s in secrets)
    records += tail.count(RECORD_PREFIX)
    state_at = tail.rfind(STATE_PREFIX)
    if state_at >= 0:
        last_state = tail[state_at + 1 :].rstrip(b"\n")
    seen = seen or any(s in tail for s in secrets)
    return records, total, last_state, seen


def run_child(
    command: list[str], *, timeout: float, secrets: t.Sequence[str] = SECRETS
) -> ChildRun:
    """Start ``command`` through ``bench.spawn``, drain its stdout, and collect its figures.

    Wall time and peak RSS come from the spawner (see its docstring for why the harness cannot
    take ``ru_maxrss`` of its own children); the whole process group is killed on ``timeout``.
    """
    secret_bytes = tuple(s.encode() for s in secrets)
    with tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "spawn.json")
        process = subprocess.Popen(
            [sys.executable, "-S", "-m", "bench.spawn", str(report), *command],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env=_env(),
            start_new_session=True,
        )
        assert process.stdout is not None
        _widen_pipe(process.stdout.fileno())
        watchdog = threading.Timer(timeout, _kill_group, (process.pid,))
        watchdog.daemon = True
        watchdog.start()
        try:
            records, total, state_line, seen = _drain(process.stdout.fileno(), secret_bytes)
            returncode = process.wait()
        finally:
            watchdog.cancel()
            process.stdout.close()
        figures = json.loads(report.read_text()) if report.exists() else {}
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    seen = seen or any(s in stderr for s in secrets)
    state = None
    if state_line:
        try:
            state = json.loads(state_line).get("value")
        except ValueError:
            state = None
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    if seen:
        tail = "(not shown: a benchmark secret appeared in the output)"
        stderr = ""
    return ChildRun(
        returncode=returncode if figures else -1,
        wall_seconds=float(figures.get("wall_seconds", 0.0)),
        peak_rss_kb=int(figures.get("peak_rss_kb", 0)),  # KiB on Linux
        records=records,
        stdout_bytes=total,
        last_state=state,
        secret_seen=seen,
        stderr_tail=tail,
        stderr=stderr,
    )


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe (Linux; 64 KiB by default), so that a writer flushing every line seldom
    waits for this process to be scheduled and read: the drain should never be what is measured."""
    size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, size, PIPE_SIZE)


def _kill_group(pid: int) -> None:
    """Kill the spawner and the command it started (they share a new session's process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class BenchFailure(RuntimeError):
    """A variant failed, timed out or showed a secret: its figures would mean nothing."""


def _check(run: ChildRun, what: str) -> None:
    if run.secret_seen:
        raise BenchFailure(f"{what}: a benchmark secret appeared in the output")
    if run.returncode != 0:
        raise BenchFailure(f"{what}: exit code {run.returncode}\n{run.stderr_tail}")


@dataclass
class TapResults:
    """Everything measured for one tap: raw runs, request comparison, start-up runs."""

    runs: list[RunFigures] = field(default_factory=list)
    same_requests: dict[str, dict[str, bool]] = field(default_factory=dict)
    startup: list[dict[str, t.Any]] = field(default_factory=list)
    shipped: dict[str, t.Any] | None = None
    shapes: dict[str, dict[str, t.Any]] = field(default_factory=dict)
    warmups: list[dict[str, t.Any]] = field(default_factory=list)


def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


def bench_tap(
    tap: str,
    sizes: t.Sequence[int],
    *,
    repeats_for: t.Callable[[int], int],
    startup_repeats: int,
    variants: t.Sequence[str] = VARIANTS,
    timeout: float = 3600,
) -> TapResults:
    """Measure one tap at each size; the start-up run uses the smallest size's dataset."""
    results = TapResults()
    for index, size in enumerate(sizes):
        log(f"{tap} {size:,}: building the dataset")
        workload = BUILDERS[tap](size)
        results.shapes[str(size)] = workload.shape
        pages = PrebuiltPages(workload.api, record_keys=True)
        with tempfile.TemporaryDirectory() as tmp, SandboxServer(pages, keep_log=False) as server:
            bench = SizeBench(
                tap,
                size,
                workload=workload,
                server=server,
                pages=pages,
                directory=Path(tmp),
                timeout=timeout,
            )
            results.warmups.append(bench.warm_up())
            for repeat in range(repeats_for(size)):
                for variant in variants:
                    results.runs.append(bench.measure(variant, repeat))
            results.same_requests[str(size)] = bench.same_requests()
            results.shipped = results.shipped or bench.shipped
            if index == 0 and startup_repeats and "tap" in variants:
                results.startup = bench.startup(startup_repeats)
        del workload, pages, bench
    return results


class SizeBench:
    """One tap at one size: its sandbox (pre-built pages), its config file, its runs."""

    def __init__(
        self,
        tap: str,
        size: int,
        *,
        workload: Workload,
        server: SandboxServer,
        pages: PrebuiltPages,
        directory: Path,
        timeout: float,
    ) -> None:
        self.tap, self.size, self.workload = tap, size, workload
        self.server, self.pages, self.directory, self.timeout = server, pages, directory, timeout
        self.config_path = directory / "config.json"
        self.config_path.write_text(json.dumps(workload.config_for(server.base_url)))
        #: The requests each variant asked in its first run, and the bare loop's in the warm-up.
        self.asked: dict[str, collections.Counter] = {}
        self.reference: collections.Counter | None = None
        self.last_state: dict | None = None
        self.shipped: dict[str, t.Any] | None = None

    def _run(self, command: list[str], what: str) -> ChildRun:
        self.server.reset_counters()
        self.pages.reset_counters()
        run = run_child(command, timeout=self.timeout)
        _check(run, f"{self.tap} {self.size} {what}")
        return run

    def warm_up(self) -> dict[str, t.Any]:
        """One unmeasured bare-loop pass, so that every page the variants ask is already built."""
        run = self._run(command_for("bare-loop", self.workload, self.config_path), "warm-up")
        self.reference = collections.Counter(self.pages.asked())
        log(
            f"{self.tap} {self.size:,} warm-up: {self.pages.pages} pages built in "
            f"{run.wall_seconds:.1f} s ({self.pages.cached_bytes / 1e6:.0f} MB)"
        )
        return {
            "size": self.size,
            "wall_seconds": round(run.wall_seconds, 3),
            "pages": self.pages.pages,
            "megabytes": round(self.pages.cached_bytes / 1e6, 1),
        }

    def measure(self, variant: str, repeat: int) -> RunFigures:
        """One measured run of one variant."""
        run = self._run(command_for(variant, self.workload, self.config_path), variant)
        if variant == "sdk-default" and self.shipped is None:
            self.shipped = _shipped(run.stderr)
        if variant == "tap":
            self.last_state = run.last_state
        if variant not in self.asked:
            self.asked[variant] = collections.Counter(self.pages.asked())
        workload, server = self.workload, self.server
        figures = RunFigures(
            tap=self.tap,
            size=self.size,
            variant=variant,
            repeat=repeat,
            wall_seconds=round(run.wall_seconds, 4),
            records=run.records,
            expected_records=workload.expected_records,
            records_per_second=round(run.records / run.wall_seconds, 1),
            peak_rss_mb=round(run.peak_rss_kb / 1024, 1),
            requests=server.requests,
            minimum_requests=workload.minimum_requests,
            windows=workload.windows,
            cache_misses=self.pages.misses,
            concurrency_violations=server.concurrency_violations,
        )
        log(
            f"{self.tap} {self.size:,} {variant} #{repeat + 1}: {figures.records:,} records in "
            f"{figures.wall_seconds:.2f} s = {figures.records_per_second:,.0f}/s, "
            f"RSS {figures.peak_rss_mb:.0f} MB, {figures.requests} requests "
            f"(minimum {figures.minimum_requests}), {figures.cache_misses} misses"
        )
        return figures

    def same_requests(self) -> dict[str, bool]:
        """Whether each variant asked exactly what the bare loop asked in the warm-up."""
        return {
            v: self.reference is not None and c == self.reference for v, c in self.asked.items()
        }

    def startup(self, repeats: int) -> list[dict[str, t.Any]]:
        """The tap as shipped, started with the state its own full run ended with.

        Nothing new is there to read: the run plans from the bookmarks (less the tap's lookback,
        which it reads again as it would in production), so its time is mostly start-up.
        """
        if self.last_state is None:
            raise BenchFailure(f"{self.tap}: the full run printed no STATE to start from")
        state_path = self.directory / "state.json"
        state_path.write_text(json.dumps(self.last_state))
        command = [
            *command_for("tap", self.workload, self.config_path),
            "--state",
            str(state_path),
        ]
        out = []
        for repeat in range(repeats):
            run = self._run(command, "start-up")
            out.append(
                {
                    "tap": self.tap,
                    "size": self.size,
                    "repeat": repeat,
                    "wall_seconds": round(run.wall_seconds, 4),
                    "records": run.records,
                    "requests": self.server.requests,
                    "peak_rss_mb": round(run.peak_rss_kb / 1024, 1),
                }
            )
            log(
                f"{self.tap} start-up #{repeat + 1}: {run.wall_seconds:.2f} s, {run.records} "
                f"records (lookback), {self.server.requests} requests"
            )
        return out


def _shipped(stderr: str) -> dict[str, t.Any] | None:
    """The configuration the tap ships with, from the SDK-default launcher's last marker line."""
    found = None
    for line in stderr.splitlines():
        if MARKER in line:
            try:
                found = json.loads(line.split(MARKER, 1)[1])
            except ValueError:
                continue
    return found


# -- summaries ----------------------------------------------------------------------------


def summarise(runs: t.Sequence[RunFigures]) -> list[dict[str, t.Any]]:
    """Medians per (tap, size, variant), with ratios against the bare loop and the SDK default."""
    groups: dict[tuple[str, int, str], list[RunFigures]] = collections.defaultdict(list)
    for run in runs:
        groups[(run.tap, run.size, run.variant)].append(run)
    medians: dict[tuple[str, int, str], dict[str, t.Any]] = {}
    for (tap, size, variant), group in groups.items():
        requests = sorted({r.requests for r in group})
        first = group[0]
        medians[(tap, size, variant)] = {
            "tap": tap,
            "size": size,
            "variant": variant,
            "runs": len(group),
            "wall_seconds": round(statistics.median(r.wall_seconds for r in group), 4),
            "records_per_second": round(statistics.median(r.records_per_second for r in group), 1),
            "peak_rss_mb": round(statistics.median(r.peak_rss_mb for r in group), 1),
            "records": sorted({r.records for r in group}),
            "expected_records": first.expected_records,
            "exact": all(r.records == r.expected_records for r in group),
            "requests": requests,
            "minimum_requests": first.minimum_requests,
            "windows": first.windows,
            "requests_within_goal": all(
                first.minimum_requests <= n <= first.minimum_requests + first.windows
                for n in requests
            ),
            "cache_misses": max(r.cache_misses for r in group),
            "concurrency_violations": max(r.concurrency_violations for r in group),
        }
    for (tap, size, _variant), row in medians.items():
        bare = medians.get((tap, size, "bare-loop"))
        sdk = medians.get((tap, size, "sdk-default"))
        row["ratio_vs_bare_loop"] = _ratio(row, bare)
        row["ratio_vs_sdk_default"] = _ratio(row, sdk)
    smallest: dict[tuple[str, str], int] = {}
    for tap, size, variant in medians:
        smallest[(tap, variant)] = min(size, smallest.get((tap, variant), size))
    for (tap, _size, variant), row in medians.items():
        base = medians[(tap, smallest[(tap, variant)], variant)]
        row["rss_vs_smallest_size"] = (
            round(row["peak_rss_mb"] / base["peak_rss_mb"], 3) if base["peak_rss_mb"] else None
        )
    order = {v: i for i, v in enumerate((*VARIANTS, *EXPERIMENTS))}
    return sorted(medians.values(), key=lambda r: (r["tap"], r["size"], order.get(r["variant"], 9)))


def _ratio(row: dict[str, t.Any], base: dict[str, t.Any] | None) -> float | None:
    if not base or not base["records_per_second"]:
        return None
    return round(row["records_per_second"] / base["records_per_second"], 3)


def summarise_startup(runs: t.Sequence[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    groups: dict[str, list[dict[str, t.Any]]] = collections.defaultdict(list)
    for run in runs:
        groups[run["tap"]].append(run)
    return [
        {
            "tap": tap,
            "runs": len(group),
            "wall_seconds": round(statistics.median(r["wall_seconds"] for r in group), 3),
            "requests": sorted({r["requests"] for r in group}),
            "records": sorted({r["records"] for r in group}),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in group), 1),
        }
        for tap, group in sorted(groups.items())
    ]


def as_dicts(runs: t.Sequence[RunFigures]) -> list[dict[str, t.Any]]:
    return [asdict(r) for r in runs]
