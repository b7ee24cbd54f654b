"""What `make demo` prints and draws after the EL+T run: rows read and landed per stream, the invoice
lines per vendor and month, the Kore.ai reconciliation, and ``output/billing-summary.png``
(quantities per vendor and month).

It reads what the dbt project exported (``export_invoice_csv``: invoice-lines.csv, landed-rows.csv,
kore-reconciliation.csv) and the Meltano run's log; it needs only the standard library and
matplotlib.

    python scripts/demo_summary.py output --log output/meltano-run.log [--before landed-rows.csv]
    python scripts/demo_summary.py output --reconciliation-only
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import re
from decimal import Decimal
from pathlib import Path

STREAMS = (
    "billing_events",
    "billing_sessions",
    "ai_account_usage",
    "ai_customer_usage",
    "billing_usage_summary",
    "llm_usage_logs",
    "billing_customers",
)
VENDORS = {
    "luminai": "Lumin.ai events",
    "kore": "Kore.ai billing sessions",
    "evovoice": "Evo Voice AI minutes",
}


def records_read(log: Path) -> dict[str, int]:
    """Records each stream emitted in the run, from the taps' record_count metrics in the log."""
    totals: dict[str, int] = collections.Counter()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"metric":"record_count"' not in line.replace(" ", ""):
            continue
        match = re.search(r'\{"type":\s*"counter".*\}', line)
        if match:
            metric = json.loads(match.group(0))
            totals[metric.get("tags", {}).get("stream")] += int(metric.get("value", 0))
    return dict(totals)


def landed_rows(path: Path) -> dict[str, int]:
    if not path.exists():
        return dict.fromkeys(STREAMS, 0)
    with path.open(newline="") as handle:
        return {row["stream"]: int(row["landed_rows"]) for row in csv.DictReader(handle)}


def invoice_lines(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def by_vendor_month(lines: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, object]]:
    totals: dict[tuple[str, str], dict[str, object]] = {}
    for line in lines:
        key = (line["vendor"], line["invoice_month"][:7])
        entry = totals.setdefault(
            key, {"lines": 0, "quantity": 0, "amount": Decimal(0), "unpriced": 0, "currency": set()}
        )
        entry["lines"] += 1  # type: ignore[operator]
        entry["quantity"] += int(line["quantity"])  # type: ignore[operator]
        if line["priced"].lower() == "true":
            entry["amount"] += Decimal(line["amount"])  # type: ignore[operator]
            entry["currency"].add(line["currency"])  # type: ignore[union-attr]
        else:
            entry["unpriced"] += 1  # type: ignore[operator]
    return dict(sorted(totals.items()))


def print_reconciliation(path: Path) -> None:
    """The Kore.ai reconciliation: bot-days compared, and each day whose counts differ."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    differing = [r for r in rows if int(r["difference"]) != 0]
    landed = sum(int(r["landed_sessions"]) for r in rows)
    vendor = sum(int(r["vendor_sessions"]) for r in rows)
    print(
        f"\nKore.ai reconciliation (dbt model kore_reconciliation): {len(rows)} bot-days, "
        f"{landed:,} sessions landed, {vendor:,} counted by Kore.ai, "
        f"{len(differing)} day(s) with a difference"
    )
    if differing:
        print(f"{'bot':<20} {'day':<10} {'landed':>7} {'vendor':>7} {'difference':>11}")
    for row in differing[:10]:
        print(
            f"{row['bot_id']:<20} {row['day'][:10]:<10} {int(row['landed_sessions']):>7} "
            f"{int(row['vendor_sessions']):>7} {int(row['difference']):>11}"
        )


def draw(totals: dict[tuple[str, str], dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vendors = [v for v in VENDORS if any(key[0] == v for key in totals)]
    figure, axes = plt.subplots(1, len(vendors), figsize=(4.5 * len(vendors), 3.6), squeeze=False)
    for axis, vendor in zip(axes[0], vendors, strict=True):
        months = [month for v, month in totals if v == vendor]
        quantities = [int(totals[(vendor, month)]["quantity"]) for month in months]  # type: ignore[call-overload]
        axis.bar(months, quantities, color="#4472c4")
        axis.set_title(VENDORS[vendor], fontsize=10)
        axis.tick_params(axis="x", labelrotation=45, labelsize=8)
        for x, value in enumerate(quantities):
            axis.annotate(f"{value:,}", (x, value), ha="center", va="bottom", fontsize=7)
    figure.suptitle("Invoice quantities per vendor and month (invoice_lines)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path, help="folder holding the exported CSV files")
    parser.add_argument("--log", type=Path, help="the meltano run log")
    parser.add_argument("--before", type=Path, help="landed-rows.csv of the previous run")
    parser.add_argument(
        "--reconciliation-only", action="store_true", help="print the Kore.ai reconciliation only"
    )
    args = parser.parse_args()
    if args.reconciliation_only:
        print_reconciliation(args.output / "kore-reconciliation.csv")
        return
    read = records_read(args.log) if args.log else {}
    before = landed_rows(args.before) if args.before else dict.fromkeys(STREAMS, 0)
    after = landed_rows(args.output / "landed-rows.csv")
    print(
        f"{'stream':<20} {'read this run':>14} {'rows before':>12} {'rows after':>11} {'new rows':>9}"
    )
    for stream in STREAMS:
        old, new = before.get(stream, 0), after.get(stream, 0)
        print(f"{stream:<20} {read.get(stream, 0):>14} {old:>12} {new:>11} {new - old:>9}")
    totals = by_vendor_month(invoice_lines(args.output / "invoice-lines.csv"))
    print("\nInvoice lines (dbt model invoice_lines, priced by the rate card seed)")
    print(
        f"{'vendor':<9} {'month':<8} {'lines':>6} {'quantity':>10} {'amount':>12} {'unpriced lines':>15}"
    )
    for (vendor, month), entry in totals.items():
        currency = "/".join(sorted(entry["currency"])) or "-"  # type: ignore[arg-type]
        amount = f"{entry['amount']:,.2f} {currency}"
        print(
            f"{vendor:<9} {month:<8} {entry['lines']:>6} {entry['quantity']:>10,} {amount:>12} {entry['unpriced']:>15}"
        )
    print_reconciliation(args.output / "kore-reconciliation.csv")
    picture = args.output / "billing-summary.png"
    draw(totals, picture)
    print(f"\nPicture: {picture}")


if __name__ == "__main__":
    main()
