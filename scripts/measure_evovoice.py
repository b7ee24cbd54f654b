"""Measure tap-evovoice: requests for a year by day for 10 accounts, with and without partitions;
and a month by day with days without usage (answered ``{}``, as ServiceStack does), under each login.

.venv/bin/python scripts/measure_evovoice.py [--only-login] [--tap-checkout DIR]

``--tap-checkout DIR`` runs the tap of another checkout against this sandbox, e.g. the commit
before the ServiceStack fixes: ``git worktree add /tmp/before 9fe1080``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

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


def logins(checkout: Path | None) -> None:
    rows = generate_usage(
        seed=1, start=dt.date(2024, 1, 1), end=dt.date(2024, 2, 1), idle_share=0.1
    )
    for method in ("basic", "credentials"):
        api = EvoAPI(rows, EvoSettings())
        config = {
            "api_url": "",
            "username": api.settings.username,
            "password": api.settings.password,
            "auth_method": method,
            "start_date": "2024-01-01",
            "end_date": "2024-02-01",
            "retry_max_tries": 3,
            "retry_initial_delay_seconds": 0.1,
        }
        with SandboxServer(api, faults=FaultPlan(), keep_log=False) as server:
            config["api_url"] = server.base_url
            try:
                run = run_tap("tap_evovoice", config, checkout)
                outcome = {"exit": 0, "records": run.records}
            except subprocess.CalledProcessError as failed:
                last = (failed.stderr or "").strip().splitlines()[-1:]
                outcome = {"exit": failed.returncode, "error": last[0][-160:] if last else ""}
        days_without_usage = 31 - len({row.day for row in rows})
        print(
            f"a month by day ({days_without_usage} days without usage), {method} login:",
            json.dumps({**outcome, "requests": server.requests}),
        )


def main() -> None:
    checkout = None
    if "--tap-checkout" in sys.argv:
        checkout = Path(sys.argv[sys.argv.index("--tap-checkout") + 1]).resolve()
    logins(checkout)
    if "--only-login" in sys.argv:
        return
    print(
        "a year by day, 10 accounts as partitions:",
        json.dumps(run({"account_ids": list(ACCOUNTS)})),
    )
    print("a year by day, all accounts in one query:", json.dumps(run({})))
    print("a year by month, all accounts in one query:", json.dumps(run({"granularity": "month"})))


if __name__ == "__main__":
    main()
