"""``orchestrate/meltano-task``, through which every Airflow task runs Meltano: each run has a
Meltano system folder of its own (Meltano keeps one catalog and state file per extractor there), and
runs that name one lock file never run at the same time (one writer per DuckDB file)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "orchestrate" / "meltano-task"

#: A stand-in for meltano: records when it ran and which system folder it was given.
FAKE_MELTANO = """#!/usr/bin/env bash
start=$(date +%s.%N)
sleep 1
printf '{"start": %s, "end": %s, "sys_dir": "%s", "db": "%s", "args": "%s", "links": "%s"}\\n' \\
  "$start" "$(date +%s.%N)" "$MELTANO_SYS_DIR_ROOT" "$MELTANO_DATABASE_URI" "$*" \\
  "$(readlink "$MELTANO_SYS_DIR_ROOT/extractors")" >> "$RECORD"
"""


def run_tasks(tmp_path: Path, count: int, lock: str | None) -> list[dict]:
    project = tmp_path / "project"
    (project / ".meltano" / "extractors").mkdir(parents=True, exist_ok=True)
    fake = tmp_path / "meltano"
    fake.write_text(FAKE_MELTANO)
    fake.chmod(0o755)
    record = tmp_path / "record.jsonl"
    env = {
        **os.environ,
        "MELTANO_PROJECT_ROOT": str(project),
        "MELTANO_EXECUTABLE": str(fake),
        "RECORD": str(record),
    }
    env.pop("MELTANO_DATABASE_URI", None)
    if lock:
        env["MELTANO_TASK_LOCK"] = lock
    processes = [
        subprocess.Popen(["bash", str(TASK), "run", f"tap-{n}", "target-duckdb"], env=env)
        for n in range(count)
    ]
    assert [p.wait(timeout=60) for p in processes] == [0] * count
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_runs_holding_one_lock_file_never_overlap(tmp_path):
    runs = sorted(run_tasks(tmp_path, 3, "output/warehouse.duckdb.lock"), key=lambda r: r["start"])
    assert len(runs) == 3
    assert all(earlier["end"] <= later["start"] for earlier, later in itertools.pairwise(runs))


def test_runs_without_a_lock_run_at_once_each_in_a_system_folder_of_its_own(tmp_path):
    runs = run_tasks(tmp_path, 3, None)
    assert max(r["start"] for r in runs) < min(r["end"] for r in runs), "they overlapped"
    assert len({r["sys_dir"] for r in runs}) == 3
    project = tmp_path / "project"
    assert {r["links"] for r in runs} == {str(project / ".meltano" / "extractors")}
    assert {r["db"] for r in runs} == {f"sqlite:///{project}/.meltano/meltano.db"}
    assert not any(Path(r["sys_dir"]).exists() for r in runs), "removed after the run"


def test_a_folder_left_by_a_killed_run_is_removed_by_the_next_run(tmp_path):
    tasks = tmp_path / "project" / ".meltano" / "tasks"
    dead = subprocess.run(["bash", "-c", "echo $$"], capture_output=True, text=True, check=True)
    host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    left = tasks / f"{host}.{dead.stdout.strip()}.abc123" / "run"
    left.mkdir(parents=True)
    (left / "tap.secret.config.json").write_text("{}")
    alive = tasks / f"{host}.{os.getpid()}.def456"  # a run still going: kept
    alive.mkdir()
    run_tasks(tmp_path, 1, None)
    assert not left.parent.exists()
    assert alive.exists()


def test_the_database_uri_in_the_projects_env_file_is_kept(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text("MELTANO_DATABASE_URI=postgresql+psycopg://state-db/meltano\n")
    runs = run_tasks(tmp_path, 1, None)
    assert runs[0]["db"] == "", "left for Meltano to read from .env"
