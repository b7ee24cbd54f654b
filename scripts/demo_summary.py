"""Summarise the demo warehouse: what this run read and landed, and a month-by-vendor report.

Runs with the Python of target-duckdb's virtualenv (it has duckdb).
"""

from __future__ import annotations

import argparse
import json
import os
import re

import duckdb

TABLES = ("billing_events", "billing_sessions", "ai_account_usage", "ai_customer_usage")
REPORTS = {
    "Lumin.ai billable events by type": (
        "select strftime(cast(timestamp as timestamp), '%Y-%m') as month, type, count(*) as events "
        "from billing.billing_events group by all order by all"
    ),
    "Kore.ai billing sessions by type": (
        "select strftime(cast(billingsessionstartdatetime as timestamp), '%Y-%m') as month, "
        "billingsessiontype, count(*) as sessions from billing.billing_sessions group by all order by all"
    ),
    "Evo Voice AI minutes by account": (
        "select strftime(cast(startdate as date), '%Y-%m') as month, accountid, sum(aiminutes) as ai_minutes "
        "from billing.ai_account_usage group by all order by all"
    ),
}


def counts(path: str) -> dict[str, int]:
    if not os.path.exists(path):
        return dict.fromkeys(TABLES, 0)
    con = duckdb.connect(path, read_only=True)
    found = {}
    for table in TABLES:
        try:
            found[table] = con.execute(f"select count(*) from billing.{table}").fetchone()[0]  # noqa: S608
        except duckdb.Error:
            found[table] = 0
    return found


def records_read(log: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    with open(log, encoding="utf-8", errors="replace") as lines:
        text = lines.read().splitlines()
    for line in text:
        if '"metric":"record_count"' not in line.replace(" ", ""):
            continue
        match = re.search(r'\{"type":\s*"counter".*\}', line)
        if not match:
            continue
        metric = json.loads(match.group(0))
        stream = metric.get("tags", {}).get("stream")
        totals[stream] = totals.get(stream, 0) + int(metric.get("value", 0))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("--counts", action="store_true")
    parser.add_argument("--before")
    parser.add_argument("--log")
    args = parser.parse_args()
    if args.counts:
        print(json.dumps(counts(args.database)))
        return
    before = json.loads(args.before) if args.before else dict.fromkeys(TABLES, 0)
    after = counts(args.database)
    read = records_read(args.log) if args.log else {}
    print(
        f"{'stream':<20} {'read this run':>14} {'rows before':>12} {'rows after':>11} {'new rows':>9}"
    )
    for table in TABLES:
        print(
            f"{table:<20} {read.get(table, 0):>14} {before[table]:>12} {after[table]:>11} {after[table] - before[table]:>9}"
        )
    con = duckdb.connect(args.database, read_only=True)
    for title, sql in REPORTS.items():
        print(f"\n{title}")
        rows = con.execute(sql).fetchall()
        for row in rows:
            print("  " + "  ".join(f"{value!s:<24}" for value in row))


if __name__ == "__main__":
    main()
