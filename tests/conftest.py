from __future__ import annotations

import json
import sys
import typing as t

import pytest

from billing_sandbox.server import SandboxServer
from tests import postgres_server
from tests.reliability import WORKER_SECTIONS
from tests.support import (
    ROOT,
    assert_no_secrets,
    evo_sandbox,
    find_secrets,
    kore_sandbox,
    lumin_sandbox,
)


def _sandboxes(
    factory: t.Callable[..., SandboxServer],
) -> t.Iterator[t.Callable[..., SandboxServer]]:
    started: list[SandboxServer] = []

    def start(**kwargs: t.Any) -> SandboxServer:
        server = factory(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def lumin() -> t.Iterator[t.Callable[..., SandboxServer]]:
    """Start Lumin.ai sandboxes for one test; all are stopped after it."""
    yield from _sandboxes(lumin_sandbox)


@pytest.fixture
def kore() -> t.Iterator[t.Callable[..., SandboxServer]]:
    """Start Kore.ai sandboxes for one test; all are stopped after it."""
    yield from _sandboxes(kore_sandbox)


@pytest.fixture
def evo() -> t.Iterator[t.Callable[..., SandboxServer]]:
    """Start Evo Voice sandboxes for one test; all are stopped after it."""
    yield from _sandboxes(evo_sandbox)


@pytest.fixture(scope="session")
def postgres() -> t.Iterator[postgres_server.PostgresServer]:
    """The suite's own PostgreSQL server (initdb in a temporary folder), for every test that needs
    one; stopped and removed at the end of the session."""
    reason = postgres_server.unavailable()
    if reason:
        pytest.skip(reason)
    server = postgres_server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_secret_in_output(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> t.Iterator[None]:
    """Whatever a test logs or prints (its own file descriptors included) is checked for every
    test secret. Tap processes are checked where they are run (``run_tap`` and friends)."""
    yield
    out, err = capfd.readouterr()
    sys.stdout.write(out)  # handed back to pytest's capture, shown if the test failed
    sys.stderr.write(err)
    assert_no_secrets(caplog.text, out, err)


#: Files that hold secrets by design: the configs and environments the tests give the taps.
_SECRET_BY_DESIGN = ("config.json", ".env", "sandbox.env")
#: Where runs leave logs, state and output inside the project (Meltano's logs and system database).
_PROJECT_OUTPUTS = (".meltano/logs", ".meltano/run", ".meltano/meltano.db", "output", "build")


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_files(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[None]:
    """At the end of the session, every file the tests left (state, logs, captured output, the
    warehouses, Meltano's system database) is searched for every test secret."""
    yield
    roots = [tmp_path_factory.getbasetemp(), *(ROOT / p for p in _PROJECT_OUTPUTS)]
    leaks = []
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*")) if root.exists() else []
        for path in files:
            if not path.is_file() or path.name.endswith(_SECRET_BY_DESIGN):
                continue
            found = find_secrets(path.read_bytes().decode("utf-8", "replace"))
            if found:
                leaks.append(f"{path}: {found}")
    assert not leaks, "secret(s) found in files the tests left:\n" + "\n".join(leaks)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controlling process (or no xdist)
        WORKER_SECTIONS.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: t.Any, config: pytest.Config) -> None:
    """Under ``pytest -n``: the figures the workers' tests added (tests/reliability.py)."""
    if hasattr(config, "workerinput") or not WORKER_SECTIONS.exists():
        return
    for line in WORKER_SECTIONS.read_text().splitlines():
        section = json.loads(line)
        terminalreporter.write_sep("-", section["title"])
        for text in section["lines"]:
            terminalreporter.write_line(text)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` every ``xdist_group`` test must carry its group in its node id
    (that is how pytest-xdist keeps a group on one worker); pytest 9.2 silently stopped that
    (pytest-xdist#1386), and tests running Meltano in the project folder at once then break each
    other. Refuse to run rather than run them side by side."""
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        msg = (
            f"pytest-xdist did not group {len(lost)} test(s), e.g. {lost[0]}: see pytest-xdist#1386"
        )
        raise pytest.UsageError(msg)
