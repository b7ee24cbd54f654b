"""A real Airflow 3 for the tests: metadata in the suite's PostgreSQL, ``LocalExecutor``, and the
``api-server``, ``scheduler`` and ``dag-processor`` processes started and stopped by the test.

Task records are read from the metadata database with SQL (each Airflow CLI call costs seconds).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
DAGS = ROOT / "orchestrate" / "dags"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Interval:
    """One try of one task, as Airflow recorded it."""

    dag_id: str
    task_id: str
    try_number: int
    state: str
    start: dt.datetime
    end: dt.datetime


def most_at_once(intervals: list[Interval]) -> int:
    """The largest number of the intervals that were running at one instant."""
    events = sorted(
        [(i.start, 1) for i in intervals] + [(i.end, -1) for i in intervals],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


@dataclass
class AirflowStack:
    home: Path
    postgres: PostgresServer
    extra_env: dict[str, str]
    database: str = "airflow"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        port = self.extra_env.get("AIRFLOW__API__PORT") or str(free_port())
        self.extra_env["AIRFLOW__API__PORT"] = port
        self.extra_env.setdefault("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", str(free_port()))
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://postgres@127.0.0.1:{self.postgres.port}/{self.database}"
            ),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-jwt-secret-for-the-local-stack",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            **self.extra_env,
        }

    def airflow(self, *arguments: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [str(AIRFLOW_BIN / "airflow"), *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            msg = f"airflow {' '.join(arguments)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            raise RuntimeError(msg)
        return result.stdout

    def start(self, pools_file: Path) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.postgres.psql(f"create database {self.database}", database="postgres")
        self.airflow("db", "migrate")
        self.airflow("pools", "import", str(pools_file))
        env = self.env
        for name in ("api-server", "scheduler", "dag-processor"):
            log = (self.home / f"{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(
                [str(AIRFLOW_BIN / "airflow"), name],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:]
            for path in sorted(self.home.glob("*.log"))
        )

    def sql(self, query: str) -> list[list[str]]:
        return [line.split("|") for line in self.postgres.psql(query, database=self.database)]

    def wait_for_runs(self, dag_ids: list[str], timeout: float) -> dict[str, str]:
        """Wait until each DAG has a finished run; the state of each, by DAG id."""
        deadline = time.monotonic() + timeout
        quoted = ",".join(f"'{d}'" for d in dag_ids)
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    msg = f"airflow {name} exited with {process.returncode}\n{self.logs()}"
                    raise RuntimeError(msg)
            rows = self.sql(f"select dag_id, state from dag_run where dag_id in ({quoted})")
            states = {dag_id: state for dag_id, state in rows}
            if len(states) == len(dag_ids) and all(
                s in {"success", "failed"} for s in states.values()
            ):
                return states
            time.sleep(2)
        msg = f"runs not finished after {timeout} s: {states}\n{self.logs()}"
        raise TimeoutError(msg)

    def tries(self, dag_id: str) -> list[Interval]:
        """Every try of every task of ``dag_id``: the latest from task_instance, the earlier ones
        from task_instance_history."""
        columns = "dag_id, task_id, try_number, state, start_date, end_date"
        rows = self.sql(
            f"select {columns} from task_instance where dag_id = '{dag_id}' "
            f"union all select {columns} from task_instance_history where dag_id = '{dag_id}'"
        )
        return [
            Interval(d, t, int(n), s, parse_time(start), parse_time(end))
            for d, t, n, s, start, end in rows
            if start and end
        ]


def parse_time(text: str) -> dt.datetime:
    """A timestamp as PostgreSQL prints it."""
    return dt.datetime.fromisoformat(text.replace(" ", "T"))
