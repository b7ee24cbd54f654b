"""What the tests that run Meltano share: the environment that points the project's ``sandbox``
environment at a test's own sandboxes and files, runs of ``meltano run``, reading the DuckDB file,
an interrupted run, and the PostgreSQL settings of the loaders."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from billing_sandbox.registry import TAPS
from tests.support import (
    EVO_END,
    EVO_START,
    KORE_CLIENT_SECRET,
    LUMIN_TOKEN,
    MELTANO,
    evo_config,
    kore_config,
    lumin_config,
    run_meltano,
)

ROOT = Path(__file__).resolve().parent.parent
DUCKDB_PYTHON = ROOT / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"


#: Meltano 4.4.1 turns decimal settings given as environment variables into Decimal and then
#: cannot write them to the tap's config: leave those at their meltano.yml or default values.
def _number_settings() -> frozenset[str]:
    """Settings of JSON type number: Meltano 4.4.1 cannot take them from the environment (a
    Decimal it cannot serialise), so the tests leave them to meltano.yml and the defaults."""
    names = set()
    for tap in TAPS:
        for name, spec in tap.load().config_jsonschema["properties"].items():
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


def slow_down(server, seconds: float = 0.25) -> None:
    """Answer each request late, so that a run lasts long enough to be killed in the middle."""
    answer = server.api.handle

    def late(request):
        time.sleep(seconds)
        return answer(request)

    server.api.handle = late


#: The killed run is stopped once the sandbox has answered this many of its requests.
KILL_AFTER_REQUESTS = 3


def kill_mid_run_then_restart(env: dict[str, str], server, target: str) -> None:
    """SIGKILL `meltano run tap-luminai <target>` in the middle, then run it again to the end.

    The kill waits for the sandbox's word (it has answered ``KILL_AFTER_REQUESTS`` requests of the
    run), not for a fixed time, so it lands in the middle however slowly Meltano starts; the run
    needs more requests than that (asserted from the restart, which reads the rest)."""
    slow_down(server)
    baseline = server.requests
    process = subprocess.Popen(
        [str(MELTANO), "run", "tap-luminai", target],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while server.requests - baseline < KILL_AFTER_REQUESTS and process.poll() is None:
        assert time.monotonic() < deadline, "the run made no request in 120 s"
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it was killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    requests_before_kill = server.requests
    assert requests_before_kill - baseline >= KILL_AFTER_REQUESTS
    # The killed run's job stays marked as running until it is stale: a restart says --force.
    assert meltano_run(env, "--force", "tap-luminai", target).returncode == 0
    restart_requests = server.requests - requests_before_kill
    assert restart_requests > KILL_AFTER_REQUESTS, "the first run was not cut short in the middle"


def with_postgres(env: dict[str, str], server, schema: str) -> dict[str, str]:
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
