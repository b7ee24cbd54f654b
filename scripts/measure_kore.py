"""Measure tap-kore-billing against the sandbox.

    .venv/bin/python scripts/measure_kore.py

1. Requests per 10,000 billing sessions (one bot, one year, default window and page size).
2. The plan the tap logs for a 2-year backfill of 5 bots at the default throttle, and that run.
3. Sessions delivered out of those in the sandbox under each reading of the undocumented ``total``
   (the sessions on the page, as the documented samples read, or every match), 2 bots, 90 days.

4. The reconciliation streams (``billing_usage_summary`` by day, ``llm_usage_logs``) for a 2-year
   backfill of 5 bots: requests per stream and route, at the default throttle.

``--only-total`` runs the third part alone, ``--only-reconciliation`` the fourth; ``--tap-checkout DIR`` runs the tap of another checkout
against this sandbox, e.g. the commit before the paging fix:
``git worktree add /tmp/before 9fe1080 && python scripts/measure_kore.py --only-total --tap-checkout /tmp/before``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from measured_run import run_tap

from billing_sandbox.faults import FaultPlan
from billing_sandbox.kore import KoreAPI, KoreSettings, generate_sessions
from billing_sandbox.server import SandboxServer

UTC = dt.timezone.utc
SETTINGS = KoreSettings(rate_limits=[(60, 60.0), (1800, 3600.0)])


def run(
    sessions: list,
    config: dict,
    settings: KoreSettings = SETTINGS,
    checkout: Path | None = None,
    select: list[str] | None = None,
) -> dict:
    api = KoreAPI(sessions, settings)
    with SandboxServer(api, faults=FaultPlan(), keep_log=select is not None) as server:
        run = run_tap(
            "tap_kore_billing",
            {
                "api_url": server.base_url,
                "client_id": SETTINGS.client_id,
                "client_secret": SETTINGS.client_secret,
                **config,
            },
            checkout,
            select,
        )
    plan = [line.split("| ", 3)[-1] for line in run.stderr.splitlines() if " plan (" in line]
    records, wall = run.records, run.wall_seconds
    return {
        "records": records,
        "sessions_in_sandbox": len(sessions),
        "requests": server.requests,
        "rate_limited_answers": api.rate_limited,
        "wall_seconds": round(wall, 2),
        "plan": plan[0] if plan else None,
        **({"records_by_stream": run.records_by_stream} if select else {}),
        **({"requests_by_route": _routes(server)} if select else {}),
    }


def _routes(server: SandboxServer) -> dict[str, int]:
    routes: dict[str, int] = {}
    for record in server.api_log():
        route = f"{record.method} {record.path.rsplit('/', 2 if record.path.endswith('/status') else 1)[-1]}"
        routes[route] = routes.get(route, 0) + 1
    return routes


def reconciliation_streams() -> None:
    """A 2-year backfill of 5 bots, the vendor's daily figures and the LLM calls (each job answers
    IN_PROGRESS twice before its figures, the sandbox's default)."""
    bots = tuple(f"st-measure-{n:04d}" for n in range(1, 6))
    start, end = dt.datetime(2022, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 1, tzinfo=UTC)
    sessions = generate_sessions(seed=2, conversations=2000, start=start, end=end, bots=bots)
    config = {
        "bot_ids": list(bots),
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "summary_poll_milliseconds": 200,
    }
    result = run(sessions, config, select=["billing_usage_summary", "llm_usage_logs"])
    print("2-year backfill, 5 bots, reconciliation streams:", json.dumps(result, indent=2))


def total_readings(checkout: Path | None = None) -> None:
    start, end = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 3, 31, tzinfo=UTC)
    bots = ("st-measure-0001", "st-measure-0002")
    sessions = generate_sessions(seed=3, conversations=1900, start=start, end=end, bots=bots)
    for reading in ("page", "matches"):
        settings = KoreSettings(total_counts=reading, rate_limits=[(10_000, 1.0)])
        result = run(
            sessions,
            {
                "bot_ids": list(bots),
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "max_requests_per_minute": 60,
            },
            settings,
            checkout,
        )
        del result["plan"]
        print(f"total counts {reading}:", json.dumps(result))


def main() -> None:
    checkout = None
    if "--tap-checkout" in sys.argv:
        checkout = Path(sys.argv[sys.argv.index("--tap-checkout") + 1]).resolve()
    if "--only-total" in sys.argv:
        total_readings(checkout)
        return
    if "--only-reconciliation" in sys.argv:
        reconciliation_streams()
        return
    start, end = dt.datetime(2023, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 1, tzinfo=UTC)
    bot = ("st-measure-0001",)
    sessions = generate_sessions(seed=1, conversations=8200, start=start, end=end, bots=bot)[
        :10_000
    ]
    print(
        "10,000 sessions, 1 bot, 1 year:",
        json.dumps(
            run(
                sessions,
                {
                    "bot_ids": list(bot),
                    "start_date": start.isoformat(),
                    "end_date": end.isoformat(),
                },
            ),
            indent=2,
        ),
    )
    bots = tuple(f"st-measure-{n:04d}" for n in range(1, 6))
    start = dt.datetime(2022, 1, 1, tzinfo=UTC)
    sessions = generate_sessions(seed=2, conversations=2000, start=start, end=end, bots=bots)
    print(
        "2-year backfill, 5 bots, default throttle:",
        json.dumps(
            run(
                sessions,
                {
                    "bot_ids": list(bots),
                    "start_date": start.isoformat(),
                    "end_date": end.isoformat(),
                },
            ),
            indent=2,
        ),
    )
    total_readings()
    reconciliation_streams()


if __name__ == "__main__":
    main()
