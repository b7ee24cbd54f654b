"""``orchestrate/meltano-plan.json``: the schedules, jobs and plugin types as Meltano resolves them.

The Airflow DAG file reads this instead of ``meltano.yml``, so that ``include_paths`` and schedule
``env`` count, and no Meltano command runs each time the scheduler parses the file.
``python -m tests.airflow_plan --write`` (or ``make airflow-plan``) writes it with the project's
Meltano; ``tests/test_airflow_dag.py`` fails when it differs from what Meltano says now.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "orchestrate" / "meltano-plan.json"
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"


def _meltano_json(*arguments: str) -> object:
    env = {
        **os.environ,
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
    }
    env.pop("MELTANO_ENVIRONMENT", None)
    result = subprocess.run(
        [str(MELTANO), *arguments, "--format=json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(result.stdout)


def plan() -> dict:
    """What the DAG file needs: schedules with their resolved jobs, and each plugin's type."""
    plugins = _meltano_json("plugin", "list")
    schedules = _meltano_json("schedule", "list")
    assert isinstance(plugins, list) and isinstance(schedules, dict)
    return {
        "generated_by": "make airflow-plan (meltano schedule list / plugin list --format=json)",
        "schedules": schedules["schedules"],
        "plugins": sorted(
            ({"name": p["name"], "type": p["type"]} for p in plugins),
            key=lambda p: (p["type"], p["name"]),
        ),
    }


def render(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__" and "--write" in sys.argv:
    PLAN.write_text(render(plan()), encoding="utf-8")
