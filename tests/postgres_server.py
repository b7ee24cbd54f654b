"""A private PostgreSQL server for the end-to-end tests: initdb in a temporary folder, on a free
loopback port, as the ``postgres`` system user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class PostgresServer:
    directory: Path
    port: int

    def psql(self, sql: str, database: str = "billing") -> list[str]:
        result = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-AtXc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return [line for line in result.stdout.splitlines() if line]

    def stop(self) -> None:
        _as_postgres(
            [str(BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate", "stop"],
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    if not (BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {BIN}"
    if os.geteuid() != 0 and not os.access(BIN / "initdb", os.X_OK):
        return "initdb is not executable"
    return None


def start() -> PostgresServer:
    directory = Path(tempfile.mkdtemp(prefix="billing-pg-"))
    os.chmod(directory, 0o777)  # noqa: S103 - a private test cluster, removed after the session
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = directory / "data"
    _as_postgres(
        [str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
    )
    _as_postgres(
        [
            str(BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(directory / "log"),
            "-w",
            "-o",
            f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ]
    )
    server = PostgresServer(directory, port)
    for _ in range(50):
        try:
            server.psql("select 1", database="postgres")
            break
        except subprocess.CalledProcessError:
            time.sleep(0.2)
    server.psql("create database billing", database="postgres")
    # Not UTC, as many servers: timestamps must still land and be read as UTC.
    server.psql("alter database billing set timezone to 'America/Los_Angeles'", database="postgres")
    return server


def _as_postgres(command: list[str], *, check: bool = True) -> None:
    if os.geteuid() == 0:
        command = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_quote(c) for c in command)]
    subprocess.run(command, check=check, capture_output=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
