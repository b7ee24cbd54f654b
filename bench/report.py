"""Write the results: ``benchmarks.json`` (everything), ``benchmarks.md`` (tables), ``benchmarks.png``."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import typing as t
from pathlib import Path

from bench.runner import EXPERIMENTS, ROOT, VARIANTS

GOALS = {
    "ratio_vs_bare_loop": 0.6,
    "ratio_vs_sdk_default": 2.0,
    "rss_growth": 1.25,
    "startup_seconds": 2.0,
}


def machine_facts() -> dict[str, t.Any]:
    """What the figures depend on: CPUs, Python, singer-sdk, and how busy the machine was."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "singer_sdk": importlib.metadata.version("singer-sdk"),
        "requests": importlib.metadata.version("requests"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "commit": commit,
    }


def write_all(results: dict[str, t.Any], out: Path) -> list[Path]:
    """Write the three files into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "benchmarks.json", out / "benchmarks.md", out / "benchmarks.png"]
    paths[0].write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    paths[1].write_text(markdown(results))
    plot(results, paths[2])
    return paths


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def _requests_check(row: dict[str, t.Any]) -> str:
    """``= minimum``, ``+k (<= W windows)`` or ``OVER``: the goal allows one extra per window."""
    extra = max(row["requests"]) - row["minimum_requests"]
    if min(row["requests"]) < row["minimum_requests"]:
        return "BELOW minimum?"
    if extra == 0:
        return "= minimum"
    return f"+{extra} ({'ok' if row['requests_within_goal'] else 'OVER'}, {row['windows']} windows)"


def _exact(row: dict[str, t.Any]) -> str:
    """Whether the tap emitted exactly the records of the dataset (the bare loop is not checked:
    it keeps every item of every page, the boundary second before each window included)."""
    if row["variant"] == "bare-loop":
        return "-"
    if row["exact"]:
        return "yes"
    return f"NO: {'/'.join(map(str, row['records']))} of {row['expected_records']}"


def markdown(results: dict[str, t.Any]) -> str:
    """The tables of benchmarks.md (and of the README)."""
    machine = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated {results['generated_at']} by `{results['command']}`.",
    ]
    if results.get("label"):
        lines += ["", f"**{results['label']}**"]
    lines += [
        "",
        f"Machine: {machine['cpu_count']} CPU ({machine['cpu_model'] or 'unknown model'}), "
        f"Python {machine['python']}, singer-sdk {machine['singer_sdk']}, "
        f"load average before/after {machine['load_average']} / "
        f"{results.get('load_average_after', '?')}, commit {machine['commit'] or '?'}.",
        "",
        "Each figure is the median of the runs shown. Variants: **bare-loop** = requests + json "
        "writing RECORD lines over the same pages; **sdk-default** = the tap with singer-sdk's "
        "default writer and type conformance; **tap** = the tap as shipped; **writer-path** (when "
        "measured) = the tap with every record through the SDK's own record path and a buffering "
        "MsgSpecWriter (issue 15's single-record-path trial). The sandbox serves "
        "pre-built pages in the harness process; each variant writes to a pipe the harness drains.",
        "",
        "| tap | records | variant | runs | records/s | vs bare loop | vs SDK default "
        "| peak RSS MB | RSS vs smallest size | requests | minimum pages | requests check | exact |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in results["summary"]:
        requests = "/".join(str(n) for n in row["requests"])
        records = "/".join(f"{n:,}" for n in row["records"])
        lines.append(
            f"| {row['tap']} | {records} | {row['variant']} | {row['runs']} "
            f"| {row['records_per_second']:,.0f} | {_fmt(row['ratio_vs_bare_loop'])} "
            f"| {_fmt(row['ratio_vs_sdk_default'])} | {row['peak_rss_mb']:.0f} "
            f"| {_fmt(row['rss_vs_smallest_size'])} "
            f"| {requests} | {row['minimum_requests']} | {_requests_check(row)} "
            f"| {_exact(row)} |"
        )
    lines += [
        "",
        "Goals (issue 7): tap >= 0.6x bare loop and >= 2x SDK default for tap-luminai and "
        "tap-kore-billing (tap-evovoice is request-bound: reported only); peak RSS at the largest "
        "size <= 1.25x the smallest; requests = the pages the data needs + at most one per window.",
        "",
        "## Start-up: a run with nothing new to read",
        "",
        "The tap as shipped, started with the state its full run ended with (it re-reads only its "
        "lookback). Goal: well under 2 s.",
        "",
        "| tap | runs | wall s | requests | records | peak RSS MB |",
        "| --- | ---: | ---: | --- | --- | ---: |",
    ]
    for row in results["startup_summary"]:
        lines.append(
            f"| {row['tap']} | {row['runs']} | {row['wall_seconds']:.2f} "
            f"| {'/'.join(map(str, row['requests']))} | {'/'.join(map(str, row['records']))} "
            f"| {row['peak_rss_mb']:.0f} |"
        )
    mismatched = [
        f"{tap} {size}: {variant}"
        for tap, sizes in results["same_requests"].items()
        for size, by_variant in sizes.items()
        for variant, same in by_variant.items()
        if not same
    ]
    lines += [
        "",
        "## Checks",
        "",
        "- Every variant asked exactly the requests the bare loop asked: "
        + ("yes" if not mismatched else "NO: " + ", ".join(mismatched)),
        "- Page-cache misses during measured runs (0 = the server only copied bytes): "
        + str(max((r["cache_misses"] for r in results["summary"]), default=0)),
        "- Concurrent requests refused by the sandbox: "
        + str(max((r["concurrency_violations"] for r in results["summary"]), default=0)),
    ]
    for tap, shipped in sorted(results.get("shipped", {}).items()):
        if shipped:
            lines.append(
                f"- {tap} as shipped: writer {shipped.get('shipped_writer')}, type conformance "
                + ", ".join(
                    f"{name} {info['type_conformance']}"
                    + (
                        f" (own {', '.join(info['record_path_overridden'])})"
                        if info.get("record_path_overridden")
                        else ""
                    )
                    for name, info in sorted(shipped.get("streams", {}).items())
                )
            )
    lines += [
        "",
        "## Regenerate",
        "",
        "```",
        "make bench"
        + (f" BENCH_ARGS='{results['bench_args']}'" if results.get("bench_args") else ""),
        "```",
        "",
        f"(runs `{results['command']}`; raw runs, datasets and machine facts are in "
        "`benchmarks.json`, the plot in `benchmarks.png`.)",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict[str, t.Any], path: Path) -> None:
    """Records/s by size and variant per tap (top row) and peak RSS (bottom row), log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taps = sorted({row["tap"] for row in results["summary"]})
    figure, axes = plt.subplots(
        2, max(1, len(taps)), figsize=(5 * max(1, len(taps)), 8), squeeze=False
    )
    for column, tap in enumerate(taps):
        for variant in (*VARIANTS, *EXPERIMENTS):
            rows = sorted(
                (r for r in results["summary"] if r["tap"] == tap and r["variant"] == variant),
                key=lambda r: r["size"],
            )
            if not rows:
                continue
            sizes = [r["size"] for r in rows]
            axes[0][column].plot(
                sizes, [r["records_per_second"] for r in rows], marker="o", label=variant
            )
            axes[1][column].plot(sizes, [r["peak_rss_mb"] for r in rows], marker="o", label=variant)
        axes[0][column].set_title(tap)
        axes[0][column].set_ylabel("records/s (median)")
        axes[1][column].set_ylabel("peak RSS MB (median)")
        for row in (0, 1):
            axis = axes[row][column]
            axis.set_xscale("log")
            axis.set_ylim(bottom=0)
            axis.set_xlabel("records")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
    title = "Tap benchmarks against pre-built sandbox pages"
    if results.get("label"):
        title += f" ({results['label']})"
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
