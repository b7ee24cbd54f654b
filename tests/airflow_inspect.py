"""Run with the Airflow virtualenv's Python: print what the DAG file builds, as JSON.

Reads a JSON object from stdin: ``{"plan": ..., "declaration": ..., "env": {...}}``, each optional
(the project's own files and environment by default). Prints ``{"dags": {...}}`` or, when the DAG
file refuses the input, ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parent.parent / "orchestrate" / "dags"


def describe(dag) -> dict:  # type: ignore[no-untyped-def]
    return {
        "schedule": str(dag.schedule),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "tasks": {
            task.task_id: {
                "command": task.bash_command,
                "pool": task.pool,
                "env": task.env,
                "upstream": sorted(task.upstream_task_ids),
                "retries": task.retries,
                "operator": f"{type(task).__module__}.{type(task).__name__}",
            }
            for task in dag.tasks
        },
    }


def main() -> None:
    request = json.loads(sys.stdin.read() or "{}")
    os.environ.update(request.get("env") or {})
    sys.path.insert(0, str(DAGS))
    try:
        import meltano_schedules  # (after the environment is set; importing builds the DAGs)

        dags = meltano_schedules.build_dags(request.get("plan"), request.get("declaration"))
        pools = meltano_schedules.pools(request.get("declaration"))
    except ValueError as exc:
        print(json.dumps({"error": str(exc)}))
        return
    print(json.dumps({"dags": {k: describe(v) for k, v in dags.items()}, "pools": pools}))


if __name__ == "__main__":
    main()
