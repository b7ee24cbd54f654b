"""tap-evovoice: every AI-minutes figure equals the sandbox's truth, by day and by month."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from billing_sandbox.evovoice import DailyUsage
from billing_sandbox.faults import FaultRule
from tests.support import (
    EVO_END,
    EVO_PASSWORD,
    EVO_USERNAME,
    evo_config,
    expected_periods,
    run_tap,
    run_tap_killed_after_states,
)

MODULE = "tap_evovoice"


def evo_run(config, state=None, *extra):
    return run_tap(config, state, *extra, module=MODULE)


def by_stream(run, name):
    return [m["record"] for m in run.messages if m["type"] == "RECORD" and m["stream"] == name]


def assert_figures_exact(run, server, granularity, *, accounts=None, customers=None):
    assert run.returncode == 0, run.stderr[-3000:]
    api = server.api
    want_accounts, want_customers = {}, {}
    for first, last in expected_periods(granularity):
        by_account, by_customer = api.totals(first, last)
        for account, minutes in by_account.items():
            if accounts is None or account in accounts:
                want_accounts[(account, first.isoformat())] = (minutes, last.isoformat())
        for (account, customer), minutes in by_customer.items():
            if (accounts is None or account in accounts) and (
                customers is None or customer in customers
            ):
                want_customers[(account, customer, first.isoformat())] = (minutes, last.isoformat())
    got_accounts = {
        (r["accountId"], r["startDate"]): (r["aiMinutes"], r["endDate"])
        for r in by_stream(run, "ai_account_usage")
    }
    got_customers = {
        (r["accountId"], r["customerId"], r["startDate"]): (r["aiMinutes"], r["endDate"])
        for r in by_stream(run, "ai_customer_usage")
    }
    assert got_accounts == want_accounts
    assert got_customers == want_customers
    assert len(by_stream(run, "ai_account_usage")) == len(got_accounts), (
        "a figure was emitted twice"
    )
    assert server.concurrency_violations == 0


@pytest.mark.parametrize("granularity", ["day", "month"])
@pytest.mark.parametrize("method", ["basic", "credentials"])
def test_figures_equal_truth_by_day_and_by_month(evo, granularity, method):
    server = evo()
    run = evo_run(evo_config(server, granularity=granularity, auth_method=method))
    assert_figures_exact(run, server, granularity)
    periods = len(expected_periods(granularity))
    assert server.requests == periods, "one request per period serves both streams"


def _capture_answers(server):
    """Record each usage answer's JSON keys and each request's cookie names, as the tap sent them."""
    seen = {"answers": [], "cookies": []}
    real = server.api.handle

    def handle(request):
        response = real(request)
        if server.api.is_api_request(request):
            cookies = request.headers.get("Cookie", "")
            seen["cookies"].append(
                {part.split("=", 1)[0].strip() for part in cookies.split(";") if "=" in part}
            )
            if response.status == 200:
                seen["answers"].append(set(json.loads(response.body)))
        return response

    server.api.handle = handle
    return seen


@pytest.mark.parametrize("omit_empty_lists", [True, False])
@pytest.mark.parametrize("account_ids", [None, ["acct-alpha", "acct-bravo"]])
def test_a_period_without_usage_is_no_rows_whether_its_lists_are_absent_or_empty(
    evo, omit_empty_lists, account_ids
):
    # ServiceStack leaves null lists out: a day without usage answers {} (the sandbox's default);
    # the other reading answers empty lists. Either way: no rows for that day, no retry, exact.
    server = evo(omit_empty_lists=omit_empty_lists)
    seen = _capture_answers(server)
    run = evo_run(evo_config(server, account_ids=account_ids))
    assert_figures_exact(run, server, "day", accounts=set(account_ids) if account_ids else None)
    partitions = len(account_ids or [None])
    assert server.requests == partitions * len(expected_periods("day")), "nothing asked twice"
    if omit_empty_lists:
        assert set() in seen["answers"], "some answers were {}"
    else:
        assert {"accountUsage", "customerUsage"} == set.union(*seen["answers"])
    assert "retrying" not in run.stderr


def test_credentials_login_sends_back_every_cookie_the_login_set(evo):
    # A rememberMe login stores the session under ss-pid and sets ss-opt=perm; ServiceStack looks
    # the session up under ss-pid only when ss-opt says perm. ss-id and ss-pid alone answer 401.
    server = evo()
    seen = _capture_answers(server)
    run = evo_run(evo_config(server, auth_method="credentials", end_date="2024-01-20"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert seen["cookies"], "requests were made"
    assert all({"ss-id", "ss-pid", "ss-opt", "X-UAId"} <= names for names in seen["cookies"])
    assert server.api.logins == 1
    for value in server.api.issued_sessions:  # ss-id and ss-pid values: masked everywhere
        assert value not in run.stdout + run.stderr


def test_the_sandbox_refuses_a_session_sent_without_its_options_cookie(evo):
    # What the tap did before: ss-id and ss-pid only. ServiceStack then looks the session up under
    # ss-id, where a rememberMe login did not store it.
    import requests

    server = evo()
    login = requests.post(
        server.base_url + "/auth/credentials",
        json={
            "provider": "credentials",
            "userName": EVO_USERNAME,
            "password": EVO_PASSWORD,
            "rememberMe": True,
        },
        timeout=5,
    )
    jar = login.cookies
    params = {"startDate": "2024-01-20", "endDate": "2024-01-20"}
    url = server.base_url + "/ai/usage"
    headers = {"Accept": "application/json"}
    partial = {k: jar[k] for k in ("ss-id", "ss-pid")}
    assert (
        requests.get(url, params=params, headers=headers, cookies=partial, timeout=5).status_code
        == 401
    )
    full = jar.get_dict()
    assert (
        requests.get(url, params=params, headers=headers, cookies=full, timeout=5).status_code
        == 200
    )


def test_a_host_without_get_ai_usage_is_named_by_the_connection_test(evo):
    server = evo(serves_usage=False)
    probe = evo_run(evo_config(server), None, "--test")
    assert probe.returncode == 1
    failed = next(line for line in probe.stderr.splitlines() if "Connection test failed" in line)
    assert "may not be deployed" in failed and "https://team.evovoice.io" in failed
    run = evo_run(evo_config(server))
    assert run.returncode == 1
    assert "https://team.evovoice.io" in run.stderr.splitlines()[-1]


def test_partial_first_and_last_months_carry_their_true_days(evo):
    server = evo()
    run = evo_run(evo_config(server, granularity="month"))
    months = sorted({(r["startDate"], r["endDate"]) for r in by_stream(run, "ai_account_usage")})
    assert months == [
        ("2024-01-15", "2024-01-31"),
        ("2024-02-01", "2024-02-29"),
        ("2024-03-01", "2024-03-31"),
        ("2024-04-01", "2024-04-09"),
    ]


def test_exclusive_end_date_mode(evo):
    server = evo(end_inclusive=False)
    run = evo_run(evo_config(server, granularity="month", end_date_inclusive=False))
    assert_figures_exact(run, server, "month")


def test_account_partitions_and_customer_filter(evo):
    server = evo()
    accounts, customers = (
        ["acct-alpha", "acct-charlie"],
        ["acct-alpha-cust-02", "acct-charlie-cust-01"],
    )
    run = evo_run(
        evo_config(server, account_ids=accounts, customer_ids=customers, granularity="month")
    )
    assert_figures_exact(run, server, "month", accounts=set(accounts), customers=set(customers))
    assert server.requests == 2 * len(expected_periods("month"))


def test_only_one_stream_selected_still_reads_it_alone(evo):
    server = evo()
    config = evo_config(server, granularity="month")
    run = run_tap(config, module=MODULE, select=["ai_customer_usage"])
    assert run.returncode == 0
    assert by_stream(run, "ai_account_usage") == []
    assert len(by_stream(run, "ai_customer_usage")) > 0
    assert server.requests == len(expected_periods("month"))


def test_session_expiring_mid_run_logs_in_again(evo):
    server = evo(session_requests=10)
    run = evo_run(evo_config(server, auth_method="credentials"))
    assert_figures_exact(run, server, "day")
    assert server.api.logins >= 8
    for session in list(server.api._sessions):
        assert session not in run.stdout + run.stderr


def test_wrong_password_fails_clearly(evo):
    server = evo()
    for method in ("basic", "credentials"):
        run = evo_run(evo_config(server, auth_method=method, password="not-the-password"))
        assert run.returncode != 0
        assert "HTTP 401" in run.stderr
        assert "not-the-password" not in run.stderr


def test_missing_role_is_explained(evo):
    server = evo()
    config = evo_config(server, username="sandbox-viewer", password="viewer-password-1")
    run = evo_run(config)
    assert run.returncode != 0
    assert "SystemAdministrator" in run.stderr
    probe = evo_run(config, None, "--test")
    assert probe.returncode == 1
    assert "lacks the SystemAdministrator role" in probe.stderr


@pytest.mark.parametrize(
    "kind", ["429", "429-date", "500", "502", "503", "stall", "drop", "truncate"]
)
def test_retriable_faults_are_survived_exactly(evo, kind):
    server = evo(faults=[FaultRule(kind, at=(1, 7, 20))], stall_seconds=5)
    run = evo_run(evo_config(server, read_timeout_seconds=0.5))
    assert_figures_exact(run, server, "day")


def test_rerun_refreshes_late_figures_under_the_same_key(evo):
    server = evo()
    first = evo_run(evo_config(server))
    late_day = EVO_END - dt.timedelta(days=2)
    server.api.add_rows([DailyUsage(late_day, "acct-alpha", "acct-alpha-cust-01", 77)])
    second = evo_run(evo_config(server), first.last_state)
    refreshed = {
        (r["accountId"], r["startDate"]): r["aiMinutes"]
        for r in by_stream(second, "ai_account_usage")
    }
    before = {
        (r["accountId"], r["startDate"]): r["aiMinutes"]
        for r in by_stream(first, "ai_account_usage")
    }
    key = ("acct-alpha", late_day.isoformat())
    assert refreshed[key] == before[key] + 77
    assert min(start for _, start in refreshed) >= (EVO_END - dt.timedelta(days=3)).isoformat()


@pytest.mark.parametrize("states_before_kill", [2, 9, 30])
def test_sigkill_then_resume_loses_no_period(evo, states_before_kill):
    server = evo()
    config = evo_config(server)
    killed = run_tap_killed_after_states(config, None, states_before_kill, module=MODULE)
    resumed = evo_run(config, killed.last_state)
    assert resumed.returncode == 0
    union = {
        (r["accountId"], r["startDate"])
        for r in by_stream(killed, "ai_account_usage") + by_stream(resumed, "ai_account_usage")
    }
    truth = {
        (account, first.isoformat())
        for first, last in expected_periods("day")
        for account in server.api.totals(first, last)[0]
    }
    assert union == truth


def test_current_unfinished_period_is_included(evo):
    server = evo()
    today = dt.datetime.now(dt.timezone.utc).date()
    server.api.add_rows([DailyUsage(today, "acct-alpha", "acct-alpha-cust-01", 5)])
    run = evo_run(
        evo_config(server, start_date=(today - dt.timedelta(days=2)).isoformat(), end_date=None)
    )
    assert run.returncode == 0
    todays = [r for r in by_stream(run, "ai_account_usage") if r["startDate"] == today.isoformat()]
    assert todays and todays[0]["endDate"] == today.isoformat()


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"granularity": "week"}, "granularity"),
        ({"auth_method": "token"}, "auth_method"),
        ({"start_date": "2024-01-15T10:00:00Z"}, "start_date"),
        ({"password": None}, "password"),
        ({"username": ""}, "username"),
        ({"username": "", "auth_method": "credentials"}, "username"),
    ],
)
def test_bad_config_is_refused_before_any_request(evo, overrides, setting):
    server = evo()
    run = evo_run(evo_config(server, **overrides))
    assert run.returncode != 0
    assert setting in run.stderr
    assert "Traceback" not in run.stderr
    assert server.requests == 0
