"""tap-evovoice, stream billing_customers: GetBilling's international costs and call-recording flag,
per account, customer and period, exactly as the sandbox's truth."""

from __future__ import annotations

import datetime as dt

import pytest

from billing_sandbox.evovoice import ACCOUNTS, DailyUsage
from billing_sandbox.faults import FaultRule
from tests.support import (
    EVO_END,
    EVO_START,
    evo_config,
    expected_periods,
    killed_then_resumed,
    run_tap,
)

MODULE = "tap_evovoice"
STREAM = "billing_customers"
USAGE = ("ai_account_usage", "ai_customer_usage")


def billing(run) -> dict[tuple[str, str, str], tuple[str, float, bool]]:
    found = {}
    for m in run.messages:
        if m["type"] == "RECORD" and m["stream"] == STREAM:
            r = m["record"]
            key = (r["accountId"], r["customerId"], r["startDate"])
            assert key not in found, f"{key} emitted twice in one run"
            found[key] = (r["endDate"], r["internationalCosts"], r["hasCallRecording"])
    return found


def truth(server, granularity, accounts, start=EVO_START, end=EVO_END):
    expected = {}
    for first, last in expected_periods(granularity, start, end):
        for account in accounts:
            for customer, (cost, recording) in server.api.billing_totals(
                first, last, account
            ).items():
                expected[(account, customer, first.isoformat())] = (
                    last.isoformat(),
                    cost,
                    recording,
                )
    return expected


@pytest.mark.parametrize("granularity", ["day", "month"])
def test_costs_per_customer_and_period_equal_getbillings(evo, granularity):
    server = evo()
    accounts = ["acct-alpha", "acct-charlie"]
    run = run_tap(
        evo_config(server, account_ids=accounts, granularity=granularity),
        module=MODULE,
        select=[STREAM],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = truth(server, granularity, accounts)
    assert billing(run) == expected
    assert any(cost > 0 for _, cost, _ in expected.values())
    # One request per account and period, the days as GetBilling counts them (both in full).
    periods = expected_periods(granularity)
    assert server.requests == len(accounts) * len(periods)
    first = server.api_log()[0].path
    assert first == "/billing"


def test_without_account_ids_the_accounts_of_the_usage_answers_are_read(evo):
    server = evo()
    run = run_tap(evo_config(server, granularity="month"), module=MODULE, select=[*USAGE, STREAM])
    assert run.returncode == 0, run.stderr[-3000:]
    assert billing(run) == truth(server, "month", ACCOUNTS)
    usage_accounts = {
        m["record"]["accountId"]
        for m in run.messages
        if m["type"] == "RECORD" and m["stream"] in USAGE
    }
    assert usage_accounts == set(ACCOUNTS)


def test_without_account_ids_or_usage_streams_the_run_fails_naming_the_setting(evo):
    server = evo()
    run = run_tap(evo_config(server), module=MODULE, select=[STREAM])
    assert run.returncode == 1
    assert (
        "billing_customers needs accounts (GetBilling requires AccountId): set account_ids"
        in run.stderr
    )
    assert "Traceback" not in run.stderr
    assert server.requests == 0


def test_customer_filter_applies_to_billing_too(evo):
    server = evo()
    run = run_tap(
        evo_config(
            server,
            account_ids=["acct-alpha"],
            customer_ids=["acct-alpha-cust-03"],
            granularity="month",
        ),
        module=MODULE,
        select=[STREAM],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {
        k: v
        for k, v in truth(server, "month", ["acct-alpha"]).items()
        if k[1] == "acct-alpha-cust-03"
    }
    assert billing(run) == expected != {}


@pytest.mark.parametrize("kind", ["500", "drop", "truncate", "stall"])
def test_transport_faults_on_getbilling_are_survived_exactly(evo, kind):
    server = evo(faults=[FaultRule(kind, at=(2,))], stall_seconds=5)
    run = run_tap(
        evo_config(server, account_ids=["acct-bravo"], granularity="month"),
        module=MODULE,
        select=[STREAM],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert billing(run) == truth(server, "month", ["acct-bravo"])


def test_a_rerun_refreshes_the_recent_periods_under_the_same_keys(evo):
    server = evo()
    config = evo_config(server, account_ids=["acct-alpha"])
    first = run_tap(config, module=MODULE, select=[STREAM])
    assert first.returncode == 0, first.stderr[-3000:]
    # A late call abroad on the last day changes that day's costs.
    last_day = EVO_END - dt.timedelta(days=1)
    server.api.add_rows([DailyUsage(last_day, "acct-alpha", "acct-alpha-cust-02", 120)])
    server.reset_counters()
    second = run_tap(config, first.last_state, module=MODULE, select=[STREAM])
    assert second.returncode == 0, second.stderr[-3000:]
    # The lookback (3 days) re-reads the last three days, and only those.
    assert server.requests == 3
    recent = {k: v for k, v in truth(server, "day", ["acct-alpha"]).items() if k[2] >= "2024-04-07"}
    assert billing(second) == recent
    union = {**billing(first), **billing(second)}
    assert union == truth(server, "day", ["acct-alpha"])


def test_killed_after_a_period_the_resumed_run_completes_every_figure(evo):
    server = evo()
    config = evo_config(server, account_ids=["acct-alpha", "acct-bravo"], granularity="month")
    killed, resumed = killed_then_resumed(config, module=MODULE, select=[STREAM], after_states=2)
    assert {**billing(killed), **billing(resumed)} == truth(
        server, "month", ["acct-alpha", "acct-bravo"]
    )


def test_an_answer_without_customers_is_no_rows(evo):
    server = evo()
    original = server.api.handle

    def without_list(request):
        response = original(request)
        if request.path == "/billing" and response.body == b'{"customers":[]}':
            response.body = b"{}"
        return response

    server.api.handle = without_list
    start, end = dt.date(2024, 1, 15), dt.date(2024, 1, 20)
    server.api._rows = [r for r in server.api._rows if not start <= r.day < end]  # no usage at all
    run = run_tap(
        evo_config(server, account_ids=["acct-alpha"], end_date=end.isoformat()),
        module=MODULE,
        select=[STREAM],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert billing(run) == {}
    assert server.requests == 5
