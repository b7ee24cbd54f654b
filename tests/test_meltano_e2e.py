"""End to end: `meltano run` of each tap into DuckDB lands exactly the sandbox's records, once per key.

Meltano runs from its own virtualenv (`make meltano`), against sandboxes on loopback, with a state
database and a warehouse file of the test's own.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pytest

from billing_sandbox.evovoice import DailyUsage
from billing_sandbox.luminai import generate_events
from tests.meltano_support import (
    ROOT,
    kill_mid_run_then_restart,
    landed,
    meltano_run,
    sandbox_env,
    usage_truth,
    with_postgres,
)
from tests.support import (
    END,
    EVO_END,
    KORE_BOTS,
    KORE_END,
    KORE_START,
    LUMIN_TYPES,
    MELTANO,
    assert_no_secrets,
    lumin_truth_ids,
)

#: Runs Meltano in the project folder (its .meltano/run files are shared): with ``pytest -n``
#: every test of the group runs in one process, one after another.
pytestmark = [
    pytest.mark.xdist_group("meltano-project"),
    pytest.mark.skipif(not MELTANO.exists(), reason="run `make meltano` first (make test does)"),
]
UTC = dt.timezone.utc


@pytest.fixture
def project(tmp_path, lumin, kore, evo):
    """Sandboxes for the three taps and an environment pointing `meltano run` at them."""
    servers = {
        "lumin": lumin(events=600, page_size=25),
        "kore": kore(conversations=300),
        "evo": evo(),
    }
    return servers, sandbox_env(dict(os.environ), servers, tmp_path), tmp_path


def test_meltano_run_lands_every_record_of_each_tap_once(project):
    servers, env, tmp_path = project
    result = meltano_run(
        env,
        "tap-luminai",
        "target-duckdb",
        "tap-kore-billing",
        "target-duckdb",
        "tap-evovoice",
        "target-duckdb",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = landed(tmp_path, "select id from billing.billing_events")
    truth = lumin_truth_ids(servers["lumin"])
    assert len(events) == len(truth)
    assert {row[0] for row in events} == truth
    sessions = landed(tmp_path, "select billingsessionid from billing.billing_sessions")
    kore_truth = {
        s.billingSessionId
        for s in servers["kore"].api.truth(bots=set(KORE_BOTS), start=KORE_START, end=KORE_END)
    }
    assert len(sessions) == len(kore_truth)
    assert {row[0] for row in sessions} == kore_truth
    minutes = landed(
        tmp_path,
        "select accountid, cast(startdate as varchar), aiminutes from billing.ai_account_usage",
    )
    assert len({(a, s) for a, s, _ in minutes}) == len(minutes)
    assert {(a, s): m for a, s, m in minutes} == usage_truth(servers["evo"].api)


def test_second_meltano_run_lands_exactly_the_new_rows(project):
    servers, env, tmp_path = project
    assert meltano_run(env, "tap-luminai", "target-duckdb").returncode == 0
    before = {row[0] for row in landed(tmp_path, "select id from billing.billing_events")}
    fresh = generate_events(seed=404, count=50, start=END - dt.timedelta(minutes=30), end=END)
    servers["lumin"].api.add_events(fresh)
    assert meltano_run(env, "tap-luminai", "target-duckdb").returncode == 0
    after = [row[0] for row in landed(tmp_path, "select id from billing.billing_events")]
    assert len(after) == len(set(after)), "a key landed twice"
    new = {e.id for e in fresh if e.type in LUMIN_TYPES}
    assert set(after) - before == new


def test_refreshed_usage_figure_replaces_the_old_one(project):
    servers, env, tmp_path = project
    assert meltano_run(env, "tap-evovoice", "target-duckdb").returncode == 0
    servers["evo"].api.add_rows(
        [DailyUsage(EVO_END - dt.timedelta(days=2), "acct-alpha", "acct-alpha-cust-01", 1000)]
    )
    assert meltano_run(env, "tap-evovoice", "target-duckdb").returncode == 0
    rows = landed(
        tmp_path,
        "select accountid, cast(startdate as varchar), aiminutes from billing.ai_account_usage",
    )
    assert len({(a, s) for a, s, _ in rows}) == len(rows)
    april = [m for a, s, m in rows if a == "acct-alpha" and s.startswith("2024-04")]
    expected = servers["evo"].api.totals(dt.date(2024, 4, 1), EVO_END - dt.timedelta(days=1))[0][
        "acct-alpha"
    ]
    assert april == [expected]


def test_interrupted_run_restarted_lands_everything_once(project):
    servers, env, tmp_path = project
    kill_mid_run_then_restart(env, servers["lumin"], "target-duckdb")
    ids = [row[0] for row in landed(tmp_path, "select id from billing.billing_events")]
    truth = lumin_truth_ids(servers["lumin"])
    assert len(ids) == len(set(ids))
    assert set(ids) == truth


@pytest.mark.parametrize("tap", ["tap-luminai", "tap-kore-billing", "tap-evovoice"])
def test_meltano_config_test_passes_and_fails_clearly(project, tap):
    _servers, env, _tmp = project
    good = subprocess.run(
        [str(MELTANO), "config", "test", tap],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr[-2000:]
    bad_env = dict(env)
    key = {
        "tap-luminai": "TAP_LUMINAI_TOKEN",
        "tap-kore-billing": "TAP_KORE_BILLING_CLIENT_SECRET",
        "tap-evovoice": "TAP_EVOVOICE_PASSWORD",
    }[tap]
    bad_env[key] = "wrong-credential-value"
    bad = subprocess.run(
        [str(MELTANO), "config", "test", tap],
        cwd=ROOT,
        env=bad_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "wrong-credential-value" not in bad.stdout + bad.stderr
    assert_no_secrets(good.stdout, good.stderr, bad.stdout, bad.stderr)


# -- PostgreSQL ------------------------------------------------------------------------------


def test_meltano_run_into_postgres_lands_every_record_once(project, postgres):
    servers, env, _tmp = project
    env = with_postgres(env, postgres, "e2e_all")
    result = meltano_run(
        env,
        "tap-luminai",
        "target-postgres",
        "tap-kore-billing",
        "target-postgres",
        "tap-evovoice",
        "target-postgres",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = postgres.psql("select id from e2e_all.billing_events")
    truth = lumin_truth_ids(servers["lumin"])
    assert len(events) == len(truth)
    assert set(events) == truth
    sessions = postgres.psql('select "billingSessionId" from e2e_all.billing_sessions')
    kore_truth = {
        s.billingSessionId
        for s in servers["kore"].api.truth(bots=set(KORE_BOTS), start=KORE_START, end=KORE_END)
    }
    assert sorted(sessions) == sorted(kore_truth)
    minutes = postgres.psql(
        'select "accountId", "startDate"::text, "aiMinutes" from e2e_all.ai_account_usage'
    )
    landed_minutes = {(a, d): int(m) for a, d, m in (row.split("|") for row in minutes)}
    assert len(landed_minutes) == len(minutes)
    assert landed_minutes == usage_truth(servers["evo"].api)


def test_second_run_into_postgres_lands_exactly_the_new_rows(project, postgres):
    servers, env, _tmp = project
    env = with_postgres(env, postgres, "e2e_incremental")
    assert meltano_run(env, "tap-luminai", "target-postgres").returncode == 0
    before = set(postgres.psql("select id from e2e_incremental.billing_events"))
    fresh = generate_events(seed=405, count=40, start=END - dt.timedelta(minutes=20), end=END)
    servers["lumin"].api.add_events(fresh)
    assert meltano_run(env, "tap-luminai", "target-postgres").returncode == 0
    after = postgres.psql("select id from e2e_incremental.billing_events")
    assert len(after) == len(set(after))
    assert set(after) - before == {e.id for e in fresh if e.type in LUMIN_TYPES}


def test_interrupted_run_into_postgres_restarted_lands_everything_once(project, postgres):
    servers, env, _tmp = project
    env = with_postgres(env, postgres, "e2e_interrupted")
    kill_mid_run_then_restart(env, servers["lumin"], "target-postgres")
    ids = postgres.psql("select id from e2e_interrupted.billing_events")
    truth = lumin_truth_ids(servers["lumin"])
    assert len(ids) == len(set(ids))
    assert set(ids) == truth
