"""``python -m bench``: measure the taps and write docs/benchmarks.{json,md,png}.

    python -m bench                                  # 10k, 100k, 1M records; 3 runs each
    python -m bench --sizes 10000 --repeats 1 --taps tap-luminai --out /tmp/bench
    python -m bench --repeats 3 --repeats-at 1000000=1

Run it on a quiet machine: the figures are only as good as the machine is idle.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import typing as t
from pathlib import Path

from bench.datasets import BUILDERS
from bench.report import machine_facts, now_text, write_all
from bench.runner import (
    EXPERIMENTS,
    ROOT,
    VARIANTS,
    as_dicts,
    bench_tap,
    log,
    summarise,
    summarise_startup,
)

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        msg = "sizes are positive whole numbers, e.g. 10000,100000"
        raise argparse.ArgumentTypeError(msg)
    return sizes


def _names(known: t.Sequence[str]) -> t.Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            msg = f"unknown {', '.join(unknown) or 'empty list'}; known: {', '.join(known)}"
            raise argparse.ArgumentTypeError(msg)
        return names

    return parse


def _repeats_at(text: str) -> tuple[int, int]:
    size, _, count = text.partition("=")
    try:
        return int(size.replace("_", "")), int(count)
    except ValueError:
        msg = f"expected SIZE=RUNS, e.g. 1000000=1, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="records per run, comma-separated (default 10000,100000,1000000)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per size and variant; the median is reported (default 3)",
    )
    p.add_argument(
        "--repeats-at",
        type=_repeats_at,
        action="append",
        default=[],
        metavar="SIZE=RUNS",
        help="fewer (or more) runs at one size, e.g. 1000000=1; repeatable",
    )
    p.add_argument(
        "--startup-repeats",
        type=int,
        default=None,
        help="start-up runs per tap (default: --repeats; 0 skips them)",
    )
    p.add_argument(
        "--taps",
        type=_names(list(BUILDERS)),
        default=list(BUILDERS),
        help="comma-separated (default: all three)",
    )
    p.add_argument(
        "--variants",
        type=_names((*VARIANTS, *EXPERIMENTS)),
        default=list(VARIANTS),
        help="comma-separated (default: bare-loop,sdk-default,tap; also: writer-path, the "
        "single-record-path trial of issue 15)",
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="output directory (default docs/)"
    )
    p.add_argument(
        "--label", default="", help="a note printed at the top of the report, e.g. 'noisy trial'"
    )
    p.add_argument(
        "--timeout", type=float, default=3600, help="seconds one run may take (default 3600)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(args_list)
    overrides = dict(args.repeats_at)
    startup_repeats = args.repeats if args.startup_repeats is None else args.startup_repeats
    machine = machine_facts()
    runs, startup, same, shipped, shapes, warmups = [], [], {}, {}, {}, []
    for tap in args.taps:
        result = bench_tap(
            tap,
            args.sizes,
            repeats_for=lambda size: overrides.get(size, args.repeats),
            startup_repeats=startup_repeats,
            variants=args.variants,
            timeout=args.timeout,
        )
        runs += result.runs
        startup += result.startup
        same[tap] = result.same_requests
        shipped[tap] = result.shipped
        shapes[tap] = result.shapes
        warmups += [{"tap": tap, **w} for w in result.warmups]
    results = {
        "generated_at": now_text(),
        "command": "python -m bench " + shlex.join(args_list) if args_list else "python -m bench",
        "bench_args": os.environ.get("BENCH_ARGS", ""),
        "label": args.label,
        "machine": machine,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "sizes": args.sizes,
            "repeats": args.repeats,
            "repeats_at": {str(k): v for k, v in overrides.items()},
            "startup_repeats": startup_repeats,
            "variants": args.variants,
        },
        "datasets": shapes,
        "warmups": warmups,
        "shipped": shipped,
        "same_requests": same,
        "summary": summarise(runs),
        "startup_summary": summarise_startup(startup),
        "runs": as_dicts(runs),
        "startup_runs": startup,
    }
    for path in write_all(results, args.out):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
