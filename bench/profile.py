"""Where a tap spends its time per record: one profiled run against pre-built pages.

    python -m bench.profile tap-luminai --size 100000 [--variant tap|sdk-default] [--out DIR]

The same sandbox as ``python -m bench`` (warmed up by the bare loop), then one run of the variant
under py-spy (sampling, ``--idle`` so that waits on the server show too; ``pip install py-spy``,
not a project dependency), or cProfile when py-spy is missing. Prints the top frames by own time
and by inclusive time, as a share of the samples and as microseconds per record (share x wall
time / records), and the share by package (singer_sdk, billing_toolkit, the tap, requests, ...).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.datasets import BUILDERS
from bench.runner import command_for, log, run_child
from billing_sandbox.prebuilt import PrebuiltPages
from billing_sandbox.registry import TAPS
from billing_sandbox.server import SandboxServer

PACKAGES = (
    "singer_sdk",
    "billing_toolkit",
    *(tap.package for tap in TAPS),
    "requests",
    "urllib3",
    "jsonschema",
    "simplejson",
    "msgspec",
    "pendulum",
    "backoff",
    "http/client",
    "json",
    "logging",
    "zoneinfo",
)


def _frame(text: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (to/file.py)``: lines merged, path shortened."""
    name, _, where = text.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def _package(text: str) -> str:
    for package in PACKAGES:
        if f"/{package}/" in text or f"/{package}.py" in text or f"({package}/" in text:
            return package
    return "other (stdlib, interpreter)"


def summarise_collapsed(path: Path, *, wall: float, records: int, top: int = 25) -> str:
    """Top frames of a py-spy ``--format raw`` (collapsed stacks) file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        own[_frame(leaf)] += count
        packages[_package(leaf)] += count
        for name in {_frame(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return "no samples"
    per_record = wall / max(1, records) * 1e6

    def rows(counter: collections.Counter[str]) -> list[str]:
        return [
            f"  {100 * n / total:5.1f}%  {per_record * n / total:7.2f} us/record  {name}"
            for name, n in counter.most_common(top)
        ]

    return "\n".join(
        [
            f"{total} samples over {wall:.2f} s, {records:,} records: {per_record:.2f} us/record in all",
            "",
            "By package (own time of the innermost frame):",
            *rows(packages),
            "",
            f"Top {top} frames by own time:",
            *rows(own),
            "",
            f"Top {top} frames by inclusive time:",
            *rows(inclusive),
        ]
    )


def summarise_cprofile(path: Path, *, top: int = 25) -> str:
    import io
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.splitlines()[0]
    )
    parser.add_argument("tap", choices=sorted(BUILDERS))
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--variant", choices=("tap", "sdk-default", "bare-loop"), default="tap")
    parser.add_argument("--tool", choices=("auto", "py-spy", "cprofile"), default="auto")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None, help="keep the raw profile here")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    tool = args.tool
    if tool == "auto":
        tool = "py-spy" if Path(py_spy).exists() else "cprofile"
    workload = BUILDERS[args.tap](args.size)
    pages = PrebuiltPages(workload.api)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(pages, keep_log=False) as server:
        config = Path(tmp, "config.json")
        config.write_text(json.dumps(workload.config_for(server.base_url)))
        run_child(command_for("bare-loop", workload, config), timeout=3600)  # warm-up
        command = command_for(args.variant, workload, config)
        raw = (
            out_dir
            / f"{args.tap}-{args.size}-{args.variant}.{'collapsed' if tool == 'py-spy' else 'pstats'}"
        )
        if tool == "py-spy":
            wrapped: list[str] = [
                py_spy, "record", "--idle", "--rate", str(args.rate), "--format", "raw",
                "--output", str(raw), "--", *command,
            ]  # fmt: skip
        else:
            wrapped = [command[0], "-m", "cProfile", "-o", str(raw), *command[1:]]
        server.reset_counters()
        run = run_child(wrapped, timeout=3600)
    if run.returncode != 0 or run.secret_seen:
        log(f"profiled run failed: exit {run.returncode}\n{run.stderr_tail}")
        return 1
    log(f"raw profile: {raw}")
    print(
        f"{args.tap} {args.variant}, {args.size:,} records asked, {run.records:,} emitted, "
        f"{server.requests} requests, {run.wall_seconds:.2f} s under {tool} "
        f"(profiler overhead included)\n"
    )
    if tool == "py-spy":
        print(summarise_collapsed(raw, wall=run.wall_seconds, records=run.records, top=args.top))
    else:
        print(summarise_cprofile(raw, top=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
