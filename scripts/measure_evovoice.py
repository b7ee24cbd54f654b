"""Measure tap-evovoice: requests for a year by day for 10 accounts, with and without partitions.

.venv/bin/python scripts/measure_evovoice.py
"""

from __future__ import annotations

import datetime as dt
import json

from measured_run import run_tap

from billing_sandbox.evovoice import EvoAPI, EvoSettings, generate_usage
from billing_sandbox.faults import FaultPlan
from billing_sandbox.server import SandboxServer

ACCOUNTS = tuple(f"acct-{n:02d}" for n in range(1, 11))
START, END = dt.date(2023, 1, 1), dt.date(2024, 1, 1)


def run(extra: dict) -> dict:
    rows = generate_usage(seed=4, start=START, end=END, accounts=ACCOUNTS, customers_per_account=5)
    api = EvoAPI(rows, EvoSettings())
    with SandboxServer(api, faults=FaultPlan(), keep_log=False) as server:
        run = run_tap(
            "tap_evovoice",
            {
                "api_url": server.base_url,
                "username": api.settings.username,
                "password": api.settings.password,
                "start_date": START.isoformat(),
                "end_date": END.isoformat(),
                **extra,
            },
        )
    streams, wall = run.records_by_stream, run.wall_seconds
    return {"requests": server.requests, "records": streams, "wall_seconds": round(wall, 2)}


def main() -> None:
    print(
        "a year by day, 10 accounts as partitions:",
        json.dumps(run({"account_ids": list(ACCOUNTS)})),
    )
    print("a year by day, all accounts in one query:", json.dumps(run({})))
    print("a year by month, all accounts in one query:", json.dumps(run({"granularity": "month"})))


if __name__ == "__main__":
    main()
