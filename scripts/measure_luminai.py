"""Measure one full tap-luminai run against the sandbox: records, requests, wall time, records/s.

    .venv/bin/python scripts/measure_luminai.py --events 100000 --page-size 500

The sandbox runs in this process; the tap runs as its own process writing to a temporary file,
as it would under Meltano. The figure includes the SDK's default writer and logging.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from measured_run import run_tap

from billing_sandbox.faults import FaultPlan
from billing_sandbox.luminai import EVENT_TYPES, LuminAPI, LuminSettings, generate_events
from billing_sandbox.server import SandboxServer
from billing_toolkit.windows import plan_windows

UTC = dt.timezone.utc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--window-days", type=float, default=7)
    args = parser.parse_args()
    start, end = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 7, 1, tzinfo=UTC)
    events = generate_events(seed=3, count=args.events, start=start, end=end)
    api = LuminAPI(events, LuminSettings(token="measure-token-123", page_size=args.page_size))
    with SandboxServer(api, faults=FaultPlan(), keep_log=False) as server:
        run = run_tap(
            "tap_luminai",
            {
                "api_url": server.base_url + api.settings.path,
                "token": "measure-token-123",
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "event_types": [kind for kind, _ in EVENT_TYPES],
                "window_size_days": args.window_days,
            },
        )
    records, states, wall = run.records, run.state_messages, run.wall_seconds
    windows = plan_windows(start, end, dt.timedelta(days=args.window_days))
    per_window = [sum(1 for e in events if w.start <= e.timestamp < w.end) for w in windows]
    minimum_requests = sum(max(1, -(-n // args.page_size)) for n in per_window)
    print(
        json.dumps(
            {
                "events_in_sandbox": args.events,
                "records_emitted": records,
                "exact": records == args.events,
                "requests": server.requests,
                "minimum_requests": minimum_requests,
                "windows": len(windows),
                "state_messages": states,
                "wall_seconds": round(wall, 2),
                "records_per_second": round(records / wall),
                "concurrency_violations": server.concurrency_violations,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
