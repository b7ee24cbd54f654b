"""The Airflow 3 DAG file, read by the real apache-airflow (its own virtualenv): whole job steps in
the job's order, one writer per DuckDB file, no state id run by two tasks, the fan-out by partition.
The real scheduler runs it in ``tests/test_airflow_scheduler.py``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import airflow_plan

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_PYTHON = ROOT / ".venv-airflow" / "bin" / "python"
pytestmark = [
    pytest.mark.xdist_group("meltano-project"),  # Meltano in the project folder (test_meltano_e2e)
    pytest.mark.skipif(
        not AIRFLOW_PYTHON.exists() or not airflow_plan.MELTANO.exists(),
        reason="run `make airflow meltano` first (make test does)",
    ),
]
PLAN = json.loads(airflow_plan.PLAN.read_text())
TYPES = [
    {"name": "tap-luminai", "type": "extractor"},
    {"name": "tap-kore-billing", "type": "extractor"},
    {"name": "target-duckdb", "type": "loader"},
    {"name": "target-postgres", "type": "loader"},
    {"name": "hide-dids", "type": "mapper"},
    {"name": "dbt-duckdb", "type": "utility"},
]
DECLARATION = {
    "duckdb_files": [{"file": "out/w.duckdb", "writers": ["target-duckdb", "dbt-duckdb"]}],
    "extractor_pools": {"tap-luminai": "luminai_token"},
}


def inspect(**request: object) -> dict:
    """What the DAG file builds; the sandbox environment unless ``env`` says otherwise."""
    request["env"] = {"MELTANO_ENVIRONMENT": "sandbox", **(request.get("env") or {})}  # type: ignore[dict-item]
    result = subprocess.run(
        [str(AIRFLOW_PYTHON), str(ROOT / "tests" / "airflow_inspect.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(result.stdout.splitlines()[-1])


def schedule(name: str, *steps: str, env: dict | None = None) -> dict:
    return {
        "name": name,
        "interval": "@daily",
        "env": env or {},
        "job": {"name": name, "tasks": list(steps)},
    }


def plan_of(*schedules: dict) -> dict:
    return {"plugins": TYPES, "schedules": {"job": list(schedules), "elt": []}}


def test_the_plan_is_what_meltano_resolves_from_the_project_now():
    # The DAG file reads the schedules and plugin types from this file; `make airflow-plan`.
    assert airflow_plan.plan() == PLAN


def test_each_step_of_a_job_is_one_task_running_the_whole_step_in_the_jobs_order():
    steps = (
        "tap-luminai hide-dids target-duckdb dbt-duckdb:build",
        "tap-kore-billing target-duckdb",
        "dbt-duckdb:test",
    )
    out = inspect(plan=plan_of(schedule("nightly", *steps, env={"X_FLAG": "1"})), declaration={})
    dag = out["dags"]["meltano_nightly"]
    tasks = dag["tasks"]
    names = sorted(tasks)
    assert len(names) == 3
    for name, step in zip(names, steps, strict=True):
        assert (
            f"run {{{{ '--force' if ti.try_number > 1 else '' }}}} {step}" in tasks[name]["command"]
        )
        assert tasks[name]["env"]["X_FLAG"] == "1"
        assert "$MELTANO_PROJECT_ROOT" in tasks[name]["command"], "paths come from the env"
    assert [tasks[n]["upstream"] for n in names] == [[], [names[0]], [names[1]]]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1


def test_every_writer_of_a_duckdb_file_holds_its_lock_and_a_vendor_pool_is_taken():
    out = inspect(
        plan=plan_of(
            schedule("a", "tap-luminai hide-dids target-duckdb", "dbt-duckdb:build"),
            schedule("b", "tap-kore-billing target-postgres"),
        ),
        declaration=DECLARATION,
    )
    tasks = {
        (dag, name): task for dag in out["dags"] for name, task in out["dags"][dag]["tasks"].items()
    }
    locks = {key: task["env"].get("MELTANO_TASK_LOCK") for key, task in tasks.items()}
    pools = {key: task["pool"] for key, task in tasks.items()}
    a1, a2 = sorted(k for k in tasks if k[0] == "meltano_a")
    (b1,) = [k for k in tasks if k[0] == "meltano_b"]
    assert locks == {a1: "out/w.duckdb.lock", a2: "out/w.duckdb.lock", b1: None}
    assert pools == {a1: "luminai_token", a2: "default_pool", b1: "default_pool"}
    assert out["pools"]["luminai_token"]["slots"] == 1


def test_a_step_that_needs_two_pools_or_writes_two_duckdb_files_is_refused():
    declaration = {**DECLARATION, "extractor_pools": {"tap-luminai": "x", "tap-kore-billing": "y"}}
    out = inspect(
        plan=plan_of(schedule("a", "tap-luminai target-postgres tap-kore-billing target-postgres")),
        declaration=declaration,
    )
    assert "several pools" in out["error"] and "split the step" in out["error"]


def test_two_schedules_of_one_extractor_and_loader_are_refused():
    out = inspect(
        plan=plan_of(
            schedule("luminai-daily", "tap-luminai target-duckdb"),
            schedule("everything", "tap-luminai target-duckdb", "tap-kore-billing target-duckdb"),
        ),
        declaration={},
    )
    assert "tap-luminai-to-target-duckdb" in out["error"]
    assert "meltano_luminai-daily" in out["error"] and "meltano_everything" in out["error"]


def test_the_project_dags_one_per_schedule_and_one_per_fanout():
    out = inspect()
    assert set(out["dags"]) == {
        "meltano_billing-all-daily",
        "meltano_kore-billing-by-bot",
        "meltano_evovoice-by-account",
        "meltano_luminai-by-host",
    }
    for dag in out["dags"].values():
        assert dag["schedule"] == "@daily"
        assert all(
            t["operator"] == "airflow.providers.standard.operators.bash.BashOperator"
            for t in dag["tasks"].values()
        )
        assert all(t["retries"] == 3 for t in dag["tasks"].values())


def test_the_fanout_is_one_task_per_partition_with_its_own_state_id_and_pool():
    bots = ["st-a", "st-b", "st-c", "st-d"]
    out = inspect(env={"BILLING_FANOUT_KORE_BOT_IDS": json.dumps(bots)})
    tasks = out["dags"]["meltano_kore-billing-by-bot"]["tasks"]
    assert sorted(tasks) == [f"bot_ids-{b}" for b in bots]
    for bot in bots:
        task = tasks[f"bot_ids-{bot}"]
        assert task["env"]["TAP_KORE_BILLING_BOT_IDS"] == json.dumps([bot])
        assert (
            f"--state-id-suffix=bot_ids-{bot} tap-kore-billing target-postgres" in task["command"]
        )
        assert task["pool"] == f"kore_bot_{bot}" and task["upstream"] == []
    hosts = out["dags"]["meltano_luminai-by-host"]["tasks"]
    assert {t["pool"] for t in hosts.values()} == {"luminai_token"}
    assert out["pools"]["luminai_token"]["slots"] == 1
    assert {f"kore_bot_{b}" for b in bots} <= set(out["pools"])
    accounts = out["dags"]["meltano_evovoice-by-account"]["tasks"]
    assert {t["pool"] for t in accounts.values()} == {"default_pool"}


def test_outside_the_sandbox_the_fanout_needs_its_partitions_from_the_environment():
    # The file's own values are the sandbox's ids: production tasks would read nothing with them.
    missing = inspect(env={"MELTANO_ENVIRONMENT": "prod"})
    assert "BILLING_FANOUT_KORE_BOT_IDS" in missing["error"]
    assert "not read here" in missing["error"]
    garbled = inspect(env={"BILLING_FANOUT_KORE_BOT_IDS": "st-1,st-2"})
    assert "BILLING_FANOUT_KORE_BOT_IDS must be a JSON list" in garbled["error"]
