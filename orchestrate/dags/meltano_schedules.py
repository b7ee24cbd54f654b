"""Airflow 3 DAGs from the Meltano project's schedules: one DAG per schedule, one task per tap.

Each task runs ``meltano run <tap> <target>`` for one extractor of the schedule's job, so each tap
keeps its own Meltano state id and can fail, retry and be re-run on its own.

Where the project is and which Meltano environment to use come from Airflow variables
(``meltano_project_root``, ``meltano_environment``, ``meltano_executable``) or, failing those, from the
environment variables ``MELTANO_PROJECT_ROOT``, ``MELTANO_ENVIRONMENT`` and ``MELTANO_EXECUTABLE``;
by default the project is the folder two levels above this file and the environment is ``prod``.
The values are read when a task runs (Jinja templates), never while the scheduler parses this file.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import yaml
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

DEFAULT_ROOT = os.environ.get("MELTANO_PROJECT_ROOT", str(Path(__file__).resolve().parents[2]))
PROJECT_ROOT = f"{{{{ var.value.get('meltano_project_root', '{DEFAULT_ROOT}') }}}}"
ENVIRONMENT = (
    "{{ var.value.get('meltano_environment', '"
    + os.environ.get("MELTANO_ENVIRONMENT", "prod")
    + "') }}"
)
EXECUTABLE = (
    "{{ var.value.get('meltano_executable', '"
    + os.environ.get("MELTANO_EXECUTABLE", ".venv-meltano/bin/meltano")
    + "') }}"
)
DEFAULT_ARGS = {
    "owner": "billing",
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=5),
    "retry_exponential_backoff": True,
}


def _project() -> dict:
    with open(Path(DEFAULT_ROOT) / "meltano.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _blocks(job: dict) -> list[tuple[str, str]]:
    """(tap, target) pairs of a job's tasks, in order."""
    pairs: list[tuple[str, str]] = []
    for task in job.get("tasks", []):
        words = task.split() if isinstance(task, str) else list(task)
        pairs += [(words[i], words[i + 1]) for i in range(0, len(words) - 1, 2)]
    return pairs


def build_dags() -> dict[str, DAG]:
    project = _project()
    jobs = {job["name"]: job for job in project.get("jobs", [])}
    dags: dict[str, DAG] = {}
    for schedule in project.get("schedules", []):
        job = jobs.get(schedule.get("job", ""))
        if job is None:
            continue
        dag_id = f"meltano_{schedule['name']}"
        with DAG(
            dag_id=dag_id,
            description=f"Meltano schedule {schedule['name']} (job {job['name']})",
            schedule=schedule.get("interval", "@daily"),
            start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
            catchup=False,
            max_active_runs=1,
            default_args=DEFAULT_ARGS,
            tags=["meltano", "billing"],
        ) as dag:
            for tap, target in _blocks(job):
                BashOperator(
                    task_id=tap.replace("-", "_"),
                    bash_command=(
                        f"cd {PROJECT_ROOT} && {EXECUTABLE} --environment={ENVIRONMENT} "
                        f"run {tap} {target}"
                    ),
                    append_env=True,
                )
        dags[dag_id] = dag
    return dags


globals().update(build_dags())
