from __future__ import annotations

import typing as t

import pytest

from billing_sandbox.server import SandboxServer
from tests.support import assert_no_secrets, evo_sandbox, kore_sandbox, lumin_sandbox


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


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> t.Iterator[None]:
    """Whatever a test logs in-process is checked for every test secret."""
    yield
    assert_no_secrets(caplog.text)
