"""End to end: `meltano run` of each tap into DuckDB lands exactly the sandbox's records, once per key.

Meltano runs from its own virtualenv (`make meltano`), against sandboxes on loopback, with a state
database and a warehouse file of the test's own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from billing_sandbox.evovoice import DailyUsage
from billing_sandbox.luminai import generate_events
from tap_evovoice.tap import TapEvoVoice
from tap_kore_billing.tap import TapKoreBilling
from tap_luminai.tap import TapLuminai
from tests.support import (
    END,
    EVO_END,
    EVO_START,
    KORE_BOTS,
    KORE_CLIENT_SECRET,
    KORE_END,
    KORE_START,
    LUMIN_TOKEN,
    LUMIN_TYPES,
    MELTANO,
    assert_no_secrets,
    evo_config,
    kore_config,
    lumin_config,
    lumin_truth_ids,
    run_meltano,
)

ROOT = Path(__file__).resolve().parent.parent
DUCKDB_PYTHON = ROOT / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"
#: Runs Meltano in the project folder (its .meltano/run files are shared): with ``pytest -n``
#: every test of the group runs in one process, one after another.
pytestmark = [
    pytest.mark.xdist_group("meltano-project"),
    pytest.mark.skipif(not MELTANO.exists(), reason="run `make meltano` first (make test does)"),
]
UTC = dt.timezone.utc


#: Meltano 4.4.1 turns decimal settings given as environment variables into Decimal and then
#: cannot write them to the tap's config: leave those at their meltano.yml or default values.
def _number_settings() -> frozenset[str]:
    """Settings of JSON type number: Meltano 4.4.1 cannot take them from the environment (a
    Decimal it cannot serialise), so the tests leave them to meltano.yml and the defaults."""
    names = set()
    for tap in (TapLuminai, TapKoreBilling, TapEvoVoice):
        for name, spec in tap.config_jsonschema["properties"].items():
            kinds = spec.get("type")
            if "number" in ([kinds] if isinstance(kinds, str) else kinds or []):
                names.add(name)
    return frozenset(names)


DECIMAL_SETTINGS = _number_settings()


def _env_for(prefix: str, config: dict) -> dict[str, str]:
    return {
        f"{prefix}_{key.upper()}": json.dumps(value)
        if isinstance(value, (list, dict))
        else str(value)
        for key, value in config.items()
        if key not in DECIMAL_SETTINGS
    }


def sandbox_env(base: dict[str, str], servers: dict, tmp_path: Path) -> dict[str, str]:
    """``base`` plus what points Meltano's sandbox environment at these servers and files."""
    env = dict(base)
    env.update(
        MELTANO_ENVIRONMENT="sandbox",
        MELTANO_DATABASE_URI=f"sqlite:///{tmp_path / 'meltano.db'}",
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_CLI_DISABLE_VERSION_CHECK="true",
        TARGET_DUCKDB_FILEPATH=str(tmp_path / "warehouse.duckdb"),
        DEMO_START_DATE="2024-01-01",
    )
    env.update(_env_for("TAP_LUMINAI", lumin_config(servers["lumin"])))
    env.update(_env_for("TAP_KORE_BILLING", kore_config(servers["kore"])))
    env.update(_env_for("TAP_EVOVOICE", evo_config(servers["evo"], granularity="month")))
    return env


@pytest.fixture
def project(tmp_path, lumin, kore, evo):
    """Sandboxes for the three taps and an environment pointing `meltano run` at them."""
    servers = {
        "lumin": lumin(events=600, page_size=25),
        "kore": kore(conversations=300),
        "evo": evo(),
    }
    return servers, sandbox_env(dict(os.environ), servers, tmp_path), tmp_path


def usage_truth(api) -> dict[tuple[str, str], int]:
    """Minutes per (account, first day) of each month inside the Evo test range."""
    truth, cursor = {}, EVO_START
    while cursor < EVO_END:
        following = min((cursor.replace(day=1) + dt.timedelta(days=32)).replace(day=1), EVO_END)
        for account, minutes in api.totals(cursor, following - dt.timedelta(days=1))[0].items():
            truth[(account, cursor.isoformat())] = minutes
        cursor = following
    return truth


def meltano_run(env: dict[str, str], *blocks: str) -> subprocess.CompletedProcess[str]:
    result = run_meltano("run", *blocks, cwd=ROOT, env=env)
    for secret in (LUMIN_TOKEN, KORE_CLIENT_SECRET):
        assert secret not in result.stderr
    return result


def landed(tmp_path: Path, sql: str) -> list[tuple]:
    query = (
        "import duckdb, json, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
        "print(json.dumps(con.execute(sys.argv[2]).fetchall(), default=str))"
    )
    out = subprocess.run(
        [str(DUCKDB_PYTHON), "-c", query, str(tmp_path / "warehouse.duckdb"), sql],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(row) for row in json.loads(out)]


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


def slow_down(server, seconds: float = 0.25) -> None:
    """Answer each request late, so that a run lasts long enough to be killed in the middle."""
    answer = server.api.handle

    def late(request):
        time.sleep(seconds)
        return answer(request)

    server.api.handle = late


def kill_mid_run_then_restart(env: dict[str, str], server, target: str) -> None:
    """SIGKILL `meltano run tap-luminai <target>` in the middle, then run it again to the end."""
    slow_down(server)
    process = subprocess.Popen(
        [str(MELTANO), "run", "tap-luminai", target],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    requests_before_kill = server.requests
    # The killed run's job stays marked as running until it is stale: a restart says --force.
    assert meltano_run(env, "--force", "tap-luminai", target).returncode == 0
    assert requests_before_kill < server.requests - 1, "the first run was not cut short"


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


def _with_postgres(env: dict[str, str], server, schema: str) -> dict[str, str]:
    env = dict(env)
    env.update(
        PG_HOST="127.0.0.1",
        PG_PORT=str(server.port),
        PG_USER="postgres",
        PG_PASSWORD="unused-trust-auth",
        PG_DATABASE="billing",
        TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA=schema,
    )
    return env


def test_meltano_run_into_postgres_lands_every_record_once(project, postgres):
    servers, env, _tmp = project
    env = _with_postgres(env, postgres, "e2e_all")
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
    env = _with_postgres(env, postgres, "e2e_incremental")
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
    env = _with_postgres(env, postgres, "e2e_interrupted")
    kill_mid_run_then_restart(env, servers["lumin"], "target-postgres")
    ids = postgres.psql("select id from e2e_interrupted.billing_events")
    truth = lumin_truth_ids(servers["lumin"])
    assert len(ids) == len(set(ids))
    assert set(ids) == truth
