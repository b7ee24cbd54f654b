"""The Airflow 3 DAG file, tested with the real apache-airflow (its own virtualenv) and `airflow dags
test` running the Meltano schedules against the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import (
    KORE_BOTS,
    KORE_END,
    KORE_START,
    assert_no_secrets,
    lumin_truth_ids,
)
from tests.test_meltano_e2e import MELTANO, landed, sandbox_env

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
DAGS = ROOT / "orchestrate" / "dags"
pytestmark = pytest.mark.skipif(
    not (AIRFLOW_BIN / "airflow").exists() or not MELTANO.exists(),
    reason="run `make airflow meltano` first (make test does)",
)
INSPECT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import meltano_schedules as module
from airflow.sdk import DAG
out = {}
for name, dag in vars(module).items():
    if isinstance(dag, DAG):
        out[dag.dag_id] = {
            "schedule": str(dag.schedule), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
            "tasks": sorted(t.task_id for t in dag.tasks),
            "retries": sorted({t.retries for t in dag.tasks}),
            "operators": sorted({type(t).__module__ + "." + type(t).__name__ for t in dag.tasks}),
            "commands": sorted(t.bash_command for t in dag.tasks),
        }
print(json.dumps(out))
"""


@pytest.fixture
def airflow_env(tmp_path):
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="false",
        MELTANO_PROJECT_ROOT=str(ROOT),
    )
    subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        check=True,
        timeout=300,
    )
    return env


def test_each_schedule_is_a_dag_with_one_task_per_tap(airflow_env):
    result = subprocess.run(
        [str(AIRFLOW_BIN / "python"), "-c", INSPECT, str(DAGS)],
        env=airflow_env,
        capture_output=True,
        text=True,
        check=True,
    )
    dags = json.loads(result.stdout)
    assert set(dags) == {
        "meltano_luminai-daily",
        "meltano_kore-billing-daily",
        "meltano_evovoice-daily",
        "meltano_billing-all-daily",
    }
    everything = dags["meltano_billing-all-daily"]
    assert everything["tasks"] == ["tap_evovoice", "tap_kore_billing", "tap_luminai"]
    for dag in dags.values():
        assert dag["schedule"] == "@daily"
        assert dag["catchup"] is False
        assert dag["max_active_runs"] == 1
        assert dag["retries"] == [3]
        assert dag["operators"] == ["airflow.providers.standard.operators.bash.BashOperator"]
        assert all(
            "run tap-" in command and "--environment=" in command for command in dag["commands"]
        )


def test_airflow_dags_test_runs_the_schedule_against_the_sandbox(
    airflow_env, tmp_path, lumin, kore, evo
):
    servers = {"lumin": lumin(events=400), "kore": kore(conversations=200), "evo": evo()}
    env = sandbox_env(airflow_env, servers, tmp_path)
    result = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), "dags", "test", "meltano_billing-all-daily"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert_no_secrets(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "state=success" in result.stdout + result.stderr
    events = {row[0] for row in landed(tmp_path, "select id from billing.billing_events")}
    assert events == lumin_truth_ids(servers["lumin"])
    sessions = {
        row[0] for row in landed(tmp_path, "select billingsessionid from billing.billing_sessions")
    }
    assert sessions == {
        s.billingSessionId
        for s in servers["kore"].api.truth(bots=set(KORE_BOTS), start=KORE_START, end=KORE_END)
    }
    assert landed(tmp_path, "select count(*) from billing.ai_account_usage")[0][0] > 0
