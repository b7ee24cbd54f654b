"""The dbt invoice layer (transform/), run by Meltano after the taps, in DuckDB and PostgreSQL.

``invoice_lines`` must equal the sandbox's truth aggregated by invoice month, key by key, in the
invoice time zone (UTC, and zones that move events across a month boundary), after reruns,
lookback re-reads and a killed-and-resumed run. A closed month keeps its issued lines; later data
for it shows in ``invoice_adjustments`` as the exact difference.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import re
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest

from billing_sandbox.evovoice import DailyUsage
from billing_sandbox.kore import generate_sessions
from billing_sandbox.luminai import LuminEvent, generate_events
from tests.meltano_support import (
    DUCKDB_PYTHON,
    MELTANO,
    ROOT,
    kill_mid_run_then_restart,
    landed,
    sandbox_env,
    with_postgres,
)
from tests.reliability import summary, update_figures
from tests.support import (
    END,
    EVO_END,
    EVO_START,
    KORE_BOTS,
    KORE_END,
    KORE_START,
    LUMIN_TYPES,
    START,
    assert_no_secrets,
    run_meltano,
)

pytestmark = [
    pytest.mark.xdist_group("meltano-project"),  # Meltano in the project folder (test_meltano_e2e)
    pytest.mark.slow,
    pytest.mark.skipif(not MELTANO.exists(), reason="run `make meltano` first (make test does)"),
]
UTC = dt.timezone.utc
ELT = (
    "tap-luminai",
    "target-duckdb",
    "tap-kore-billing",
    "target-duckdb",
    "tap-evovoice",
    "target-duckdb",
    "dbt-duckdb:build",
)
LINES = (
    "select vendor, account_id, customer_id, unit, cast(invoice_month as varchar), quantity "
    "from {schema}.invoice_lines"
)
Key = tuple[str, str, str | None, str, str]


def month_of(moment: dt.datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).date().replace(day=1).isoformat()


def expected_lines(servers: dict, zone: str) -> dict[Key, int]:
    """The sandbox's truth as invoice lines: events by month in ``zone``, Evo Voice by UTC month."""
    lines: collections.Counter[Key] = collections.Counter()
    for event in servers["lumin"].api.truth(types=LUMIN_TYPES, start=START, end=END):
        lines["luminai", event.host_id, None, event.type, month_of(event.timestamp, zone)] += 1
    kore = servers["kore"].api.truth(bots=set(KORE_BOTS), start=KORE_START, end=KORE_END)
    for session in kore:
        key = ("kore", session.botId, session.channel, "billing_session")
        lines[(*key, month_of(session.billingStart, zone))] += 1
    cursor = EVO_START
    while cursor < EVO_END:  # the tap reads Evo Voice by month (sandbox_env)
        following = min((cursor.replace(day=1) + dt.timedelta(days=32)).replace(day=1), EVO_END)
        customers = servers["evo"].api.totals(cursor, following - dt.timedelta(days=1))[1]
        for (account, customer), minutes in customers.items():
            lines[
                "evovoice", account, customer, "ai_minute", cursor.replace(day=1).isoformat()
            ] += minutes
        cursor = following
    return dict(lines)


def expected_reconciliation(servers: dict) -> dict[tuple[str, str], tuple[int, int, int]]:
    """Per (bot, UTC day) of the Kore.ai range: (sessions landed, the vendor's count, difference)."""
    api = servers["kore"].api
    landed_per_day = collections.Counter(
        (s.botId, s.billingStart.date().isoformat())
        for s in api.truth(bots=set(KORE_BOTS), start=KORE_START, end=KORE_END)
    )
    offsets = api.settings.summary.session_offsets
    expected = {}
    day = KORE_START
    while day < KORE_END:
        for bot in KORE_BOTS:
            key = (bot, day.date().isoformat())
            # The sandbox's vendor counts the billing sessions, plus any discrepancy it was given.
            vendor = landed_per_day[key] + offsets.get(key, 0)
            expected[key] = (landed_per_day[key], vendor, landed_per_day[key] - vendor)
        day += dt.timedelta(days=1)
    return expected


def reconciliation(rows) -> dict[tuple[str, str], tuple[int, int, int]]:
    found = {}
    for bot, day, landed_sessions, vendor_sessions, difference in rows:
        key = (bot, str(day)[:10])
        assert key not in found, f"reconciliation row {key} twice"
        found[key] = (int(landed_sessions), int(vendor_sessions), int(difference))
    return found


RECONCILIATION = (
    "select bot_id, cast(day as varchar), landed_sessions, vendor_sessions, difference "
    "from {schema}.kore_reconciliation"
)


def as_lines(rows) -> dict[Key, int]:
    """Rows of invoice_lines as key -> quantity, failing on a key seen twice."""
    lines: dict[Key, int] = {}
    for vendor, account, customer, unit, month, quantity in rows:
        key = (vendor, account, customer or None, unit, str(month)[:10])
        assert key not in lines, f"invoice line {key} twice"
        lines[key] = int(quantity)
    return lines


def record_build_time(pytestconfig, warehouse: str, output: str, rows: int) -> None:
    """Keep dbt build's own time (its "Finished running ... (N s)" line) among the figures."""
    found = re.findall(r"Finished running .* \(([0-9.]+)s\)", output)
    assert found, "dbt build printed no run time"
    figures = {"dbt_build_seconds": float(found[-1]), "invoice_lines": rows}
    update_figures("invoice_layer", warehouse, figures)
    summary(pytestconfig).add(
        f"invoice layer: dbt build on {warehouse}",
        [
            f"{figures['dbt_build_seconds']} s for {rows} invoice lines (tests/test_invoice_layer.py)"
        ],
    )


def duckdb_lines(tmp_path, schema: str = "analytics") -> dict[Key, int]:
    return as_lines(landed(tmp_path, LINES.format(schema=schema)))


def meltano(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    result = run_meltano(*arguments, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def near(boundary: dt.datetime, hours: int, seed: int) -> list[LuminEvent]:
    return generate_events(
        seed=seed,
        count=40,
        start=boundary - dt.timedelta(hours=hours),
        end=boundary + dt.timedelta(hours=hours),
    )


@pytest.fixture
def servers(lumin, kore, evo):
    """Sandboxes whose events crowd the month boundaries, so that the invoice time zone matters."""
    started = {
        "lumin": lumin(events=600, page_size=25),
        "kore": kore(conversations=300),
        "evo": evo(),
    }
    for number, boundary in enumerate([dt.datetime(2024, m, 1, tzinfo=UTC) for m in (2, 3)]):
        started["lumin"].api.add_events(near(boundary, 10, seed=500 + number))
        started["kore"].api.add_sessions(
            generate_sessions(
                seed=600 + number,
                conversations=40,
                start=boundary - dt.timedelta(hours=10),
                end=boundary + dt.timedelta(hours=10),
            )
        )
    return started


@pytest.fixture
def env(servers, tmp_path):
    return sandbox_env(dict(os.environ), servers, tmp_path)


def test_invoice_lines_equal_the_truth_by_month_in_each_invoice_time_zone_duckdb(
    servers, env, tmp_path, pytestconfig
):
    # A Lumin.ai run killed in the middle and resumed, then the EL+T run as the README gives it,
    # then a rerun (each rerun reads its lookback again). The killed run's Meltano job stays marked
    # as running for 5 minutes: runs before then say --force.
    kill_mid_run_then_restart(env, servers["lumin"], "target-duckdb")
    meltano(env, "run", "--force", *ELT)
    # Kore.ai reconciliation: the vendor's count of every bot and day equals what landed.
    found = reconciliation(landed(tmp_path, RECONCILIATION.format(schema="analytics")))
    assert found == expected_reconciliation(servers)
    assert len(found) == 2 * 335 and not [k for k, v in found.items() if v[2]]
    # The vendor counts three more sessions on the last day: the rerun (its lookback re-reads that
    # day) shows the difference, and dbt build warns.
    servers["kore"].api.settings.summary.session_offsets[(KORE_BOTS[0], "2024-11-30")] = 3
    rerun = meltano(env, "run", "--force", *ELT)
    found = reconciliation(landed(tmp_path, RECONCILIATION.format(schema="analytics")))
    assert found == expected_reconciliation(servers)
    assert {k: v[2] for k, v in found.items() if v[2]} == {(KORE_BOTS[0], "2024-11-30"): -3}
    assert "kore_reconciliation_differences" in rerun.stdout + rerun.stderr
    zones = ["UTC", "America/Los_Angeles", "Asia/Kolkata"]
    truths = {zone: expected_lines(servers, zone) for zone in zones}
    assert truths["UTC"] != truths["America/Los_Angeles"] != truths["Asia/Kolkata"]
    for zone in zones:
        built = meltano({**env, "BILLING_INVOICE_TIMEZONE": zone}, "invoke", "dbt-duckdb:build")
        assert duckdb_lines(tmp_path) == truths[zone], zone
    record_build_time(pytestconfig, "DuckDB", built.stdout + built.stderr, len(truths[zone]))
    # Source freshness warns on data older than two days (the sandbox's is from 2024).
    fresh = meltano(env, "invoke", "dbt-duckdb:freshness")
    assert "WARN" in fresh.stdout + fresh.stderr
    # What `make demo` shows: the exported lines, summed per vendor and month, and the picture.
    meltano(
        env,
        "invoke",
        "dbt-duckdb",
        "run-operation",
        "export_invoice_csv",
        "--args",
        f"{{directory: '{tmp_path}'}}",
    )
    summary = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_summary.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    per_month = collections.Counter()
    for (vendor, _, _, _, month), quantity in truths[zones[-1]].items():
        per_month[vendor, month[:7]] += quantity
    for (vendor, month), quantity in per_month.items():
        assert re.search(rf"^{vendor} +{month} +\d+ +{quantity:,} ", summary, re.M), (vendor, month)
    assert (tmp_path / "billing-summary.png").stat().st_size > 10_000


def test_invoice_lines_equal_the_truth_in_postgres(servers, env, postgres, pytestconfig):
    servers["kore"].api.settings.summary.session_offsets[(KORE_BOTS[1], "2024-03-01")] = -2
    schema = "invoice_pg"
    env = with_postgres(env, postgres, schema)
    env.update(
        BILLING_RAW_SCHEMA=schema,
        DBT_POSTGRES_SCHEMA=f"{schema}_models",
        BILLING_INVOICE_TIMEZONE="Asia/Kolkata",
    )
    kill_mid_run_then_restart(env, servers["lumin"], "target-postgres")
    elt = [p if p != "target-duckdb" else "target-postgres" for p in ELT[:-1]]
    built = meltano(env, "run", "--force", *elt, "dbt-postgres:build")
    rows = [
        row.split("|")
        for row in postgres.psql(
            LINES.format(schema=f"{schema}_models").replace("as varchar", "as text")
        )
    ]
    assert as_lines(rows) == expected_lines(servers, "Asia/Kolkata")
    record_build_time(pytestconfig, "PostgreSQL", built.stdout + built.stderr, len(rows))
    # Kore.ai reconciliation in PostgreSQL, with one discrepancy the sandbox was told to play.
    found = reconciliation(
        row.split("|")
        for row in postgres.psql(
            RECONCILIATION.format(schema=f"{schema}_models").replace("as varchar", "as text")
        )
    )
    assert found == expected_reconciliation(servers)
    assert {k: v[2] for k, v in found.items() if v[2]} == {(KORE_BOTS[1], "2024-03-01"): 2}


def adjustments(tmp_path) -> dict[Key, tuple[int, int, int, str]]:
    rows = landed(
        tmp_path,
        "select vendor, account_id, customer_id, unit, cast(invoice_month as varchar), "
        "quantity_issued, quantity_now, quantity_difference, cast(bill_month as varchar) "
        "from analytics.invoice_adjustments",
    )
    return {
        (v, a, c or None, u, m): (int(issued), int(now), int(diff), bill)
        for v, a, c, u, m, issued, now, diff, bill in rows
    }


def change_rate_card(tmp_path, sql: str) -> None:
    """Change the built rate card in place (what a new seed would do at the next build)."""
    subprocess.run(
        [
            str(DUCKDB_PYTHON),
            "-c",
            "import duckdb, sys; duckdb.connect(sys.argv[1]).execute(sys.argv[2])",
            str(tmp_path / "warehouse.duckdb"),
            sql,
        ],
        check=True,
    )


def close_month(env: dict[str, str], month: str) -> None:
    result = subprocess.run(
        ["make", "-s", "close-month", f"MONTH={month}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert_no_secrets(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_closed_month_keeps_its_issued_lines_and_later_data_becomes_adjustments(
    servers, env, tmp_path
):
    meltano(env, "run", *ELT)
    close_month(env, "2024-03")
    ledger = "select * from analytics_ledger.invoice_issues order by 1, 2, 3, 4, 5, 7"
    issued = landed(tmp_path, ledger)
    march = {k: q for k, q in duckdb_lines(tmp_path).items() if k[4] == "2024-03-01"}
    assert march and {k[0] for k in march} == {"luminai", "kore", "evovoice"}

    # Late events for March: inside the lookback of the next run, after the month was issued.
    late = [
        LuminEvent(
            id=f"late-march-{n}",
            conversation_id="late",
            timestamp=dt.datetime(2024, 3, 31, 23, 30, n, tzinfo=UTC),
            type="billing.scheduled",
            host_id="default",
            host_did="15550000000",
            user_did="",
            fake="real",
        )
        for n in range(5)
    ]
    servers["lumin"].api.add_events(late)
    meltano(env, "run", *ELT)
    key = ("luminai", "default", None, "billing.scheduled", "2024-03-01")
    assert adjustments(tmp_path) == {key: (march[key], march[key] + 5, 5, "2024-04-01")}
    now = duckdb_lines(tmp_path)
    assert {k: q for k, q in now.items() if k[4] == "2024-03-01"} == march, "issued lines changed"
    assert landed(tmp_path, ledger) == issued, "the ledger of issued lines changed"
    assert expected_lines(servers, "UTC")[key] == march[key] + 5

    # Closing April bills March's adjustment with it; a refreshed Evo Voice figure for April then
    # shows as April's adjustment, to bill in May.
    close_month(env, "2024-04")
    assert adjustments(tmp_path) == {}
    servers["evo"].api.add_rows(
        [DailyUsage(dt.date(2024, 4, 8), "acct-alpha", "acct-alpha-cust-01", 77)]
    )
    meltano(env, "run", *ELT)
    april = ("evovoice", "acct-alpha", "acct-alpha-cust-01", "ai_minute", "2024-04-01")
    issued_april = duckdb_lines(tmp_path)[april]
    assert adjustments(tmp_path) == {april: (issued_april, issued_april + 77, 77, "2024-05-01")}
    billed = landed(
        tmp_path,
        "select kind, cast(invoice_month as varchar), cast(billed_in_month as varchar), quantity "
        "from analytics_ledger.invoice_issues where kind = 'adjustment'",
    )
    assert billed == [("adjustment", "2024-03-01", "2024-04-01", 5)]

    # Priced: the billed adjustment at the price it was billed at, April's at the rate card's
    # (seed: billing.scheduled 2.50, ai_minute 0.05).
    amounts = landed(
        tmp_path,
        "select vendor, cast(invoice_month as varchar), cast(bill_month as varchar), status, "
        "quantity_difference, cast(amount as double) from analytics.invoice_adjustment_amounts",
    )
    assert sorted(amounts) == [
        ("evovoice", "2024-04-01", "2024-05-01", "pending", 77, 3.85),
        ("luminai", "2024-03-01", "2024-04-01", "billed", 5, 12.5),
    ]
    # A later rate card does not reprice what was issued: issued lines keep their price, open
    # lines take the new one.
    change_rate_card(
        tmp_path, "update analytics.rate_card set unit_price = 9 where vendor = 'luminai'"
    )
    prices = landed(
        tmp_path,
        "select status, cast(invoice_month as varchar), cast(unit_price as double) "
        "from analytics.invoice_amounts "
        "where vendor = 'luminai' and unit = 'billing.scheduled' and account_id = 'default'",
    )
    assert sorted(prices) == [
        ("issued", "2024-03-01", 2.5),
        ("open", "2024-01-01", 9.0),
        ("open", "2024-02-01", 9.0),
    ]
