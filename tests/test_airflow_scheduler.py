"""The DAGs on a real Airflow 3: scheduler, dag-processor and api-server, ``LocalExecutor``, metadata
and Meltano's state in the suite's PostgreSQL, the taps against the sandbox.

One run of every DAG of the project: the production fan-out (one task per Kore.ai bot, Evo Voice
account and Lumin.ai host, into PostgreSQL) and the DuckDB schedule. A Kore.ai partition task is
killed in the middle of its run; Airflow retries it. Airflow's own task records say what ran when.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from billing_sandbox.evovoice import ACCOUNTS
from billing_sandbox.kore import BOTS
from billing_sandbox.luminai import HOSTS
from tests.airflow_stack import AIRFLOW_BIN, DAGS, AirflowStack, most_at_once, parse_time
from tests.meltano_support import MELTANO, landed, sandbox_env, usage_truth, with_postgres
from tests.reliability import summary, update_figures
from tests.support import KORE_END, KORE_START, assert_no_secrets, lumin_truth_ids

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.xdist_group("meltano-project"),  # Meltano in the project folder (test_meltano_e2e)
    pytest.mark.slow,
    pytest.mark.skipif(
        not (AIRFLOW_BIN / "airflow").exists() or not MELTANO.exists(),
        reason="run `make airflow meltano` first (make test does)",
    ),
]
FANOUT = {
    "meltano_kore-billing-by-bot": "tap-kore-billing",
    "meltano_evovoice-by-account": "tap-evovoice",
    "meltano_luminai-by-host": "tap-luminai",
}
DUCKDB_DAG = "meltano_billing-all-daily"
KILLED_BOT = BOTS[1]  # the fan-out reads every bot of airflow.yml: the sandbox's three
KILLED_TASK = f"bot_ids-{KILLED_BOT}"
SCHEMA = "airflow_fanout"


def slow_bot(server, bot: str, seconds: float) -> None:
    """Answer one bot's requests late, so that its task can be killed in the middle."""
    answer = server.api.handle

    def late(request):
        if bot in request.path:
            time.sleep(seconds)
        return answer(request)

    server.api.handle = late


def kill_mid_run(server, *, after_requests: int, timeout: float) -> int:
    """SIGKILL the process group of the killed bot's ``meltano run`` once its sandbox has answered
    ``after_requests`` of its requests; the number of requests answered by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served = sum(1 for r in server.api_log() if KILLED_BOT in r.path)
        pids = subprocess.run(
            ["pgrep", "-f", f"state-id-suffix={KILLED_TASK} "],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if pids and served >= after_requests:
            os.killpg(os.getpgid(int(pids[0])), signal.SIGKILL)
            return served
        time.sleep(0.2)
    msg = f"the task of {KILLED_BOT} never reached {after_requests} requests"
    raise TimeoutError(msg)


@pytest.fixture
def stack(tmp_path, postgres):
    stacks: list[AirflowStack] = []

    def start(env: dict[str, str]) -> AirflowStack:
        pools = tmp_path / "pools.json"
        pools.write_text(
            subprocess.run(
                [str(AIRFLOW_BIN / "python"), str(DAGS / "meltano_schedules.py"), "pools"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        airflow = AirflowStack(tmp_path / "airflow", postgres, env)
        stacks.append(airflow)
        airflow.start(pools)
        return airflow

    yield start
    for airflow in stacks:
        airflow.stop()
        assert_no_secrets(airflow.logs())


@pytest.fixture
def servers(lumin, kore, evo):
    """The three sandboxes; one Kore.ai bot answers late, so that its task can be killed mid-run."""
    started = {"lumin": lumin(events=600), "kore": kore(conversations=600), "evo": evo()}
    slow_bot(started["kore"], KILLED_BOT, 1.0)
    return started


def test_fanout_and_duckdb_dags_on_a_real_scheduler(
    stack, servers, postgres, tmp_path, pytestconfig
):
    postgres.psql("create database meltano_state", database="postgres")
    env = with_postgres(sandbox_env(dict(os.environ), servers, tmp_path), postgres, SCHEMA)
    env.update(
        MELTANO_ENVIRONMENT="prod",
        MELTANO_PROJECT_ROOT=str(ROOT),
        MELTANO_EXECUTABLE=str(MELTANO),
        # Meltano's state in PostgreSQL: its system database, where `meltano state` reads it.
        MELTANO_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/meltano_state",
        BILLING_DAG_RETRIES="2",
        BILLING_DAG_RETRY_SECONDS="2",
        # The partitions: the sandbox's bots, accounts and hosts (prod reads them from here).
        BILLING_FANOUT_KORE_BOT_IDS=json.dumps(list(BOTS)),
        BILLING_FANOUT_EVOVOICE_ACCOUNT_IDS=json.dumps(list(ACCOUNTS)),
        BILLING_FANOUT_LUMINAI_HOSTS=json.dumps(list(HOSTS)),
    )
    subprocess.run(
        [str(MELTANO), "upgrade", "database"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    airflow = stack({k: v for k, v in env.items() if k not in os.environ or os.environ[k] != v})
    served = kill_mid_run(servers["kore"], after_requests=2, timeout=240)
    states = airflow.wait_for_runs([*FANOUT, DUCKDB_DAG], timeout=480)
    assert states == dict.fromkeys([*FANOUT, DUCKDB_DAG], "success"), airflow.logs()

    # At least three partition tasks at the same time.
    partitions = [i for dag in FANOUT for i in airflow.tries(dag)]
    at_once = most_at_once(partitions)
    assert at_once >= 3, [(i.task_id, i.start, i.end) for i in partitions]

    # The killed task failed its first try and succeeded on the second.
    killed = sorted(
        (i for i in airflow.tries("meltano_kore-billing-by-bot") if i.task_id == KILLED_TASK),
        key=lambda i: i.try_number,
    )
    assert [(i.try_number, i.state) for i in killed] == [(1, "failed"), (2, "success")]
    assert served < sum(1 for r in servers["kore"].api_log() if KILLED_BOT in r.path)

    # The DuckDB DAG's steps (writers of one file: three taps, then dbt) ran in the job's order, one
    # at a time (the chain does it here; the file lock across DAGs is tested in test_meltano_task).
    writers = sorted(airflow.tries(DUCKDB_DAG), key=lambda i: i.start)
    assert len(writers) == 4 and most_at_once(writers) == 1
    assert [i.task_id[:2] for i in writers] == ["01", "02", "03", "04"]
    assert writers[-1].task_id == "04_dbt-duckdb.build"

    # Every task that ran tap-luminai (four hosts, and the DuckDB DAG's first step) took turns in
    # the token's pool: the sandbox, which refuses a request while another is in flight as the
    # Lumin.ai document asks, saw none.
    luminai = [*airflow.tries("meltano_luminai-by-host"), writers[0]]
    assert most_at_once(luminai) == 1
    assert servers["lumin"].concurrency_violations == 0

    # Every row in PostgreSQL once, equal to the sandbox truth key by key.
    events = postgres.psql(f"select id from {SCHEMA}.billing_events")
    assert len(events) == len(set(events))
    assert set(events) == lumin_truth_ids(servers["lumin"])
    sessions = postgres.psql(f'select "billingSessionId" from {SCHEMA}.billing_sessions')
    assert len(sessions) == len(set(sessions))
    assert set(sessions) == {
        s.billingSessionId
        for s in servers["kore"].api.truth(bots=set(BOTS), start=KORE_START, end=KORE_END)
    }
    minutes = postgres.psql(
        f'select "accountId", "startDate"::text, "aiMinutes" from {SCHEMA}.ai_account_usage'
    )
    got = {(a, d): int(m) for a, d, m in (row.split("|") for row in minutes)}
    assert len(got) == len(minutes)
    assert got == usage_truth(servers["evo"].api)
    duck = [row[0] for row in landed(tmp_path, "select id from billing.billing_events")]
    assert sorted(duck) == sorted(lumin_truth_ids(servers["lumin"]))

    # One state id per partition task, in Meltano's system database in PostgreSQL.
    state_ids = set(postgres.psql("select state_id from state", database="meltano_state"))
    expected = {
        f"prod:{tap}-to-target-postgres:{task.task_id}"
        for dag, tap in FANOUT.items()
        for task in airflow.tries(dag)
    } | {f"prod:{tap}-to-target-duckdb" for tap in FANOUT.values()}
    assert expected <= state_ids

    dag_ids = ",".join(f"'{d}'" for d in [*FANOUT, DUCKDB_DAG])
    runs = {
        dag_id: (start, end)
        for dag_id, start, end in airflow.sql(
            f"select dag_id, start_date, end_date from dag_run where dag_id in ({dag_ids})"
        )
    }
    figures = {
        "partition_tasks": len({(i.dag_id, i.task_id) for i in partitions}),
        "partition_tasks_at_once": at_once,
        "duckdb_writers_at_once": most_at_once(writers),
        "killed_task_tries": [f"{i.try_number}:{i.state}" for i in killed],
        "rows": {
            "billing_events": len(events),
            "billing_sessions": len(sessions),
            "ai_account_usage": len(minutes),
        },
        "dag_run_seconds": {d: _seconds(*runs[d]) for d in runs},
        "state_ids": sorted(s for s in state_ids if s.startswith("prod:")),
    }
    update_figures("airflow_scheduler", "last", figures)
    summary(pytestconfig).add(
        "airflow scheduler (LocalExecutor, PostgreSQL metadata and state)",
        [
            f"{figures['partition_tasks']} partition tasks, at most {at_once} at once; DuckDB "
            f"writers at once: {figures['duckdb_writers_at_once']}; killed task tries: "
            f"{figures['killed_task_tries']}",
            f"rows in PostgreSQL: {json.dumps(figures['rows'])}",
            "DAG run seconds: " + json.dumps(figures["dag_run_seconds"]),
            f"state ids ({len(figures['state_ids'])}): " + ", ".join(figures["state_ids"]),
        ],
    )


def _seconds(start: str, end: str) -> float:
    return round((parse_time(end) - parse_time(start)).total_seconds(), 1)
