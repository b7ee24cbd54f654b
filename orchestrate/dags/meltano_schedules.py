"""Airflow 3 DAGs for the Meltano project: its schedules, and the production fan-out by partition.

What is read when the scheduler parses this file (no Meltano run at parse time):

* ``orchestrate/meltano-plan.json``: the schedules, their jobs and the plugin types, as Meltano
  resolves them (``include_paths`` and schedule ``env`` included); ``make airflow-plan`` writes it
  from ``meltano schedule list --format=json`` and ``meltano plugin list --format=json``, and a test
  fails when it drifts from ``meltano.yml``.
* ``orchestrate/airflow.yml``: the DuckDB files and their writers, the pools of extractors whose
  vendor limits span tasks, and the fan-out declarations.

DAGs:

* ``meltano_<schedule>``: one task per step of the schedule's job, each running the whole step
  (``meltano run <step>``: extractors, mappers, loaders and utilities such as ``dbt-duckdb:build``),
  chained in the job's order. A step that writes a DuckDB file holds that file's lock while it runs
  (one writer per file, whichever DAG); a step that runs an extractor of ``extractor_pools`` takes
  that pool.
* ``meltano_<fanout>``: one task per partition value (a Kore.ai bot, an Evo Voice account, a Lumin.ai
  host), each ``meltano run --state-id-suffix=<setting>-<value> <extractor> <loader>`` with the
  setting set to ``[value]``, so each has its own state id; a pool per vendor limit.

Two DAG tasks never share a Meltano state id: a duplicate fails the import of this file, naming it.
Each task runs Meltano through ``orchestrate/meltano-task``, in a Meltano system folder of its own:
Meltano 4.4.1 keeps one catalog and one state file per extractor in ``.meltano/run``, which two
runs of one extractor at once would overwrite (meltano/meltano#8763).
A retried task adds ``--force``: the try Airflow gave up on (killed, timed out) leaves its Meltano
job marked as running, and only one task per state id ever runs (the rule above, one active run per
DAG), so the new try may take it over. The taps resume from the last state the target confirmed.

Where the project is and which Meltano environment to use come from Airflow variables
(``meltano_project_root``, ``meltano_environment``, ``meltano_executable``) or, failing those, from
the environment variables ``MELTANO_PROJECT_ROOT``, ``MELTANO_ENVIRONMENT`` and ``MELTANO_EXECUTABLE``;
by default the project is the folder two levels above this file and the environment is ``prod``.
Secrets stay in the workers' environment (see ``.env.example``).

``python meltano_schedules.py pools`` prints the pools for ``airflow pools import``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

DEFAULT_ROOT = Path(os.environ.get("MELTANO_PROJECT_ROOT", Path(__file__).resolve().parents[2]))
PLAN = DEFAULT_ROOT / "orchestrate" / "meltano-plan.json"
DECLARATION = DEFAULT_ROOT / "orchestrate" / "airflow.yml"

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
#: A try after the first takes over the Meltano job its killed predecessor left marked as running.
FORCE_ON_RETRY = "{{ '--force' if ti.try_number > 1 else '' }}"
DEFAULT_ARGS = {
    "owner": "billing",
    "retries": int(os.environ.get("BILLING_DAG_RETRIES", "3")),
    "retry_delay": dt.timedelta(seconds=float(os.environ.get("BILLING_DAG_RETRY_SECONDS", "300"))),
    "retry_exponential_backoff": True,
}
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def load_plan(path: Path = PLAN) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def load_declaration(path: Path = DECLARATION) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def step_words(step: str | list[str]) -> list[str]:
    return step.split() if isinstance(step, str) else [str(word) for word in step]


def plugin_name(word: str) -> str:
    """``dbt-duckdb:build`` -> ``dbt-duckdb``."""
    return word.split(":", 1)[0]


def state_ids(
    words: list[str], types: dict[str, str], environment: str, suffix: str = ""
) -> list[str]:
    """Meltano's state id of each extract-load block of a step: ``env:extractor-to-loader[:suffix]``."""
    ids, extractor = [], None
    for word in words:
        kind = types.get(plugin_name(word))
        if kind == "extractor":
            extractor = word
        elif kind == "loader" and extractor:
            ids.append(f"{environment}:{extractor}-to-{word}" + (f":{suffix}" if suffix else ""))
            extractor = None
    return ids


def task_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", ".", text).strip(".")


#: Where the project is, its Meltano and environment, for every task: through the task's
#: environment (templated by Airflow), never pasted into the shell command.
RUNTIME_ENV = {
    "MELTANO_PROJECT_ROOT": PROJECT_ROOT,
    "MELTANO_EXECUTABLE": EXECUTABLE,
    "BILLING_MELTANO_ENVIRONMENT": ENVIRONMENT,
}


def meltano_run(arguments: str) -> str:
    """The command of a task: ``meltano run`` through ``orchestrate/meltano-task``, which gives the
    run a Meltano system folder of its own (concurrent runs of one extractor on one machine would
    otherwise share its catalog and state files)."""
    return (
        'exec bash "$MELTANO_PROJECT_ROOT/orchestrate/meltano-task" '
        f'--environment="$BILLING_MELTANO_ENVIRONMENT" run {FORCE_ON_RETRY} {arguments}'
    )


def writer_locks(declaration: dict) -> dict[str, str]:
    """Plugin name -> the lock file of the DuckDB file it writes (relative to the project)."""
    return {
        writer: f"{entry['file']}.lock"
        for entry in declaration.get("duckdb_files") or []
        for writer in entry.get("writers") or []
    }


def _one(values: set[str], what: str, where: str) -> str | None:
    if len(values) > 1:
        msg = f"{where} needs several {what} ({sorted(values)}): split the step"
        raise ValueError(msg)
    return next(iter(values), None)


def fanout_values(entry: dict) -> list[str]:
    """The partition values: the JSON list in the variable ``values_env`` names. The file's own
    values (the sandbox's ids) serve only when MELTANO_ENVIRONMENT is ``sandbox``: elsewhere a
    missing list would make the tasks read the sandbox's ids, i.e. nothing, without failing."""
    name = entry.get("values_env") or ""
    raw = os.environ.get(name, "").strip() if name else ""
    if raw:
        try:
            values = json.loads(raw)
        except json.JSONDecodeError as exc:
            msg = f"fan-out {entry['name']}: {name} must be a JSON list of strings ({exc}), got {raw!r}"
            raise ValueError(msg) from None
    elif name and os.environ.get("MELTANO_ENVIRONMENT", "prod") != "sandbox":
        msg = (
            f"fan-out {entry['name']}: set {name} (a JSON list) in the environment of the Airflow "
            "scheduler, dag-processor and workers (the project's .env is not read here)"
        )
        raise ValueError(msg)
    else:
        values = entry.get("values") or []
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        msg = f"fan-out {entry['name']}: {name or 'values'} must be a list of non-empty strings, got {values!r}"
        raise ValueError(msg)
    return list(dict.fromkeys(values))


def pools(declaration: dict | None = None) -> dict[str, dict]:
    """Every pool the DAGs use, as ``airflow pools import`` reads them."""
    declaration = load_declaration() if declaration is None else declaration
    found = {
        pool: {
            "slots": 1,
            "description": f"{extractor}: the vendor's limit across tasks",
            "include_deferred": False,
        }
        for extractor, pool in (declaration.get("extractor_pools") or {}).items()
    }
    for entry in declaration.get("fanout") or []:
        if not entry.get("pool"):
            continue
        for value in fanout_values(entry):
            found[entry["pool"].format(value=value)] = {
                "slots": int(entry.get("pool_slots", 1)),
                "description": f"{entry['extractor']}: the vendor's limit across tasks",
                "include_deferred": False,
            }
    return found


def _dag(dag_id: str, description: str, interval: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=interval,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["meltano", "billing"],
    )


def build_dags(plan: dict | None = None, declaration: dict | None = None) -> dict[str, DAG]:
    plan = load_plan() if plan is None else plan
    declaration = load_declaration() if declaration is None else declaration
    types = {plugin["name"]: plugin["type"] for plugin in plan.get("plugins", [])}
    lock_of = writer_locks(declaration)
    pool_of = declaration.get("extractor_pools") or {}
    owners: dict[str, str] = {}  # state id -> the DAG task that runs it
    environment = "{environment}"  # the same for every task: the check needs only the rest

    def claim(ids: list[str], where: str) -> None:
        for state_id in ids:
            if state_id in owners:
                msg = f"{where} and {owners[state_id]} would both run Meltano state id {state_id}"
                raise ValueError(msg)
            owners[state_id] = where

    dags: dict[str, DAG] = {}
    for schedule in plan.get("schedules", {}).get("job", []):
        job = schedule["job"]
        dag_id = f"meltano_{schedule['name']}"
        with _dag(
            dag_id,
            f"Meltano schedule {schedule['name']} (job {job['name']})",
            schedule.get("interval") or "@daily",
        ) as dag:
            previous = None
            for number, step in enumerate(job.get("tasks") or [], start=1):
                words = step_words(step)
                name = task_id(f"{number:02d}_" + "_".join(words))
                claim(state_ids(words, types, environment), f"{dag_id}.{name}")
                plugins = {plugin_name(word) for word in words}
                where = f"{dag_id}.{name}"
                lock = _one({lock_of[p] for p in plugins if p in lock_of}, "DuckDB files", where)
                pool = _one({pool_of[p] for p in plugins if p in pool_of}, "pools", where)
                env = {k: str(v) for k, v in (schedule.get("env") or {}).items()}
                task = BashOperator(
                    task_id=name,
                    bash_command=meltano_run(" ".join(shlex.quote(w) for w in words)),
                    env={**RUNTIME_ENV, **env, **({"MELTANO_TASK_LOCK": lock} if lock else {})},
                    append_env=True,
                    **({"pool": pool} if pool else {}),
                )
                if previous is not None:
                    previous >> task
                previous = task
        dags[dag_id] = dag
    for entry in declaration.get("fanout") or []:
        dag_id = f"meltano_{entry['name']}"
        prefix = entry["extractor"].upper().replace("-", "_")
        with _dag(
            dag_id,
            f"{entry['extractor']} to {entry['loader']}, one task per {entry['setting']} value",
            entry.get("interval") or "@daily",
        ) as dag:
            for value in fanout_values(entry):
                suffix = task_id(f"{entry['setting']}-{value}")
                claim(
                    state_ids([entry["extractor"], entry["loader"]], types, environment, suffix),
                    f"{dag_id}.{suffix}",
                )
                pool = entry.get("pool")
                BashOperator(
                    task_id=suffix,
                    bash_command=meltano_run(
                        f"--state-id-suffix={shlex.quote(suffix)} "
                        f"{shlex.quote(entry['extractor'])} {shlex.quote(entry['loader'])}"
                    ),
                    env={
                        **RUNTIME_ENV,
                        f"{prefix}_{entry['setting'].upper()}": json.dumps([value]),
                    },
                    append_env=True,
                    **({"pool": pool.format(value=value)} if pool else {}),
                )
        dags[dag_id] = dag
    return dags


if __name__ == "__main__" and sys.argv[1:] == ["pools"]:
    print(json.dumps(pools(), indent=2, sort_keys=True))
else:
    globals().update(build_dags())
