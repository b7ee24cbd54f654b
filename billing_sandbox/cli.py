"""``billing-sandbox``: run a sandboxed vendor API on loopback until interrupted.

Example::

    billing-sandbox luminai --port 8801 --events 5000 --start 2024-01-01 --end 2024-07-01

It prints one JSON line with the URL and token to use, then serves.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import signal
import sys
import typing as t

from billing_sandbox.evovoice import EvoAPI, EvoSettings, generate_usage
from billing_sandbox.faults import FAULT_KINDS, FaultPlan, FaultRule
from billing_sandbox.kore import KoreAPI, KoreSettings, generate_sessions
from billing_sandbox.live import live_events, live_sessions, live_usage
from billing_sandbox.luminai import LuminAPI, LuminSettings, generate_events
from billing_sandbox.server import SandboxAPI, SandboxServer


def _date(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing-sandbox", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="api", required=True)
    lumin = sub.add_parser("luminai", help="the Lumin.ai Billing API")
    lumin.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    lumin.add_argument("--seed", type=int, default=1, help="dataset seed")
    lumin.add_argument("--events", type=int, default=2000, help="number of events")
    lumin.add_argument("--start", type=_date, default=_date("2024-01-01"), help="first event time")
    lumin.add_argument(
        "--end", type=_date, default=_date("2024-04-01"), help="end of events (exclusive)"
    )
    lumin.add_argument("--token", default=LuminSettings.token, help="bearer token to accept")
    lumin.add_argument("--page-size", type=int, default=LuminSettings.page_size)
    lumin.add_argument("--naming", choices=["timestamp", "datetime", "mixed"], default="timestamp")
    lumin.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="RULE",
        help=f"KIND[@N[,N]][xREPEAT][~RATE]; kinds: {', '.join(FAULT_KINDS)}",
    )
    lumin.add_argument("--fault-seed", type=int, default=0)
    lumin.add_argument(
        "--live-days", type=int, default=0, help="live data: the last N days up to now, growing"
    )
    kore = sub.add_parser("kore", help="the Kore.ai Billing Sessions API")
    kore.add_argument("--port", type=int, default=0)
    kore.add_argument("--seed", type=int, default=1)
    kore.add_argument("--conversations", type=int, default=2000)
    kore.add_argument("--start", type=_date, default=_date("2024-01-01"))
    kore.add_argument("--end", type=_date, default=_date("2024-07-01"))
    kore.add_argument("--timezone", default="UTC", help="zone the timestamps are rendered in")
    kore.add_argument("--no-paging", action="store_true", help="play the older API without paging")
    kore.add_argument("--page-cap", type=int, default=100, help="largest limit the API honours")
    kore.add_argument(
        "--llm-page-cap", type=int, default=100, help="largest limit the LLM usage logs honour"
    )
    kore.add_argument(
        "--total-counts",
        choices=["page", "matches"],
        default="page",
        help="what total counts: the sessions on the page (as the documented samples) or all matches",
    )
    kore.add_argument(
        "--summary-offset",
        action="append",
        default=[],
        metavar="BOT:YYYY-MM-DD:N",
        help="add N to the Billing Usage Summary's sessions of that bot and UTC day (a discrepancy)",
    )
    kore.add_argument("--fault", action="append", default=[], metavar="RULE")
    kore.add_argument("--fault-seed", type=int, default=0)
    kore.add_argument(
        "--live-days", type=int, default=0, help="live data: the last N days up to now, growing"
    )
    evo = sub.add_parser("evovoice", help="Evo Voice GetAIUsage")
    evo.add_argument("--port", type=int, default=0)
    evo.add_argument("--seed", type=int, default=1)
    evo.add_argument("--start", type=_date, default=_date("2024-01-01"))
    evo.add_argument("--end", type=_date, default=_date("2024-07-01"))
    evo.add_argument("--exclusive-end", action="store_true", help="endDate is exclusive")
    evo.add_argument("--fault", action="append", default=[], metavar="RULE")
    evo.add_argument("--fault-seed", type=int, default=0)
    evo.add_argument(
        "--live-days", type=int, default=0, help="live data: the last N days up to now, growing"
    )
    return parser


def _api(args: argparse.Namespace) -> tuple[SandboxAPI, str, dict[str, str]]:
    now = dt.datetime.now(dt.timezone.utc)
    if args.api == "evovoice":
        rows = (
            live_usage(seed=args.seed, days=args.live_days, now=now)
            if args.live_days
            else generate_usage(seed=args.seed, start=args.start.date(), end=args.end.date())
        )
        evo = EvoSettings(end_inclusive=not args.exclusive_end)
        return EvoAPI(rows, evo), "", {"username": evo.username, "password": evo.password}
    if args.api == "kore":
        sessions = (
            live_sessions(
                seed=args.seed,
                days=args.live_days,
                per_day=max(1, args.conversations // 30),
                now=now,
            )
            if args.live_days
            else generate_sessions(
                seed=args.seed, conversations=args.conversations, start=args.start, end=args.end
            )
        )
        kore = KoreSettings(
            timezone=args.timezone,
            paging=not args.no_paging,
            page_cap=args.page_cap,
            total_counts=args.total_counts,
            llm_page_cap=args.llm_page_cap,
        )
        kore.summary.session_offsets.update(_offsets(args.summary_offset))
        credentials = {"client_id": kore.client_id, "client_secret": kore.client_secret}
        return KoreAPI(sessions, kore), "", credentials
    events = (
        live_events(seed=args.seed, days=args.live_days, per_day=max(1, args.events // 30), now=now)
        if args.live_days
        else generate_events(seed=args.seed, count=args.events, start=args.start, end=args.end)
    )
    settings = LuminSettings(token=args.token, page_size=args.page_size, naming=args.naming)
    return LuminAPI(events, settings), settings.path, {"token": settings.token}


def _offsets(texts: t.Sequence[str]) -> dict[tuple[str, str], int]:
    offsets = {}
    for text in texts:
        bot, day, number = text.rsplit(":", 2)
        dt.date.fromisoformat(day)  # a day, or a clear error
        offsets[(bot, day)] = int(number)
    return offsets


def main(argv: t.Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    api, path, credentials = _api(args)
    plan = FaultPlan([FaultRule.parse(r) for r in args.fault], seed=args.fault_seed)
    server = SandboxServer(api, faults=plan, port=args.port, keep_log=False)
    # The one line a caller reads to find the server (sandbox credentials, not customer secrets).
    print(json.dumps({"api": api.name, "url": server.base_url + path, **credentials}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
