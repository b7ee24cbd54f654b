"""Helpers the tests share: sandboxes on loopback and running the tap as a real process."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from billing_sandbox.evovoice import EvoAPI, EvoSettings, generate_usage
from billing_sandbox.faults import FaultPlan, FaultRule
from billing_sandbox.kore import KoreAPI, KoreSettings, generate_sessions
from billing_sandbox.luminai import LuminAPI, LuminSettings, generate_events
from billing_sandbox.server import SandboxServer

#: The project's root directory.
ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
START = dt.datetime(2024, 1, 1, tzinfo=UTC)
END = dt.datetime(2024, 4, 1, tzinfo=UTC)
#: Every secret any test uses: none may appear in any output (see the conftest's checks).
LUMIN_TOKEN = "lumin-test-token-5e2b7c91d4"
KORE_CLIENT_ID = "cs-test-client-6a1f"
KORE_CLIENT_SECRET = "kore-test-client-secret-93be07"
#: The header every HS256 JWT starts with: no minted or ready token may be printed either.
JWT_HEADER_PREFIX = "eyJhbGciOiAiSFMyNTYi"
EVO_USERNAME = "evo-test-admin"
EVO_PASSWORD = "evo-test-password-c81d2f"
#: The HTTP Basic credential derived from them (base64 of "user:password").
EVO_BASIC = __import__("base64").b64encode(f"{EVO_USERNAME}:{EVO_PASSWORD}".encode()).decode()
SECRETS = (LUMIN_TOKEN, KORE_CLIENT_SECRET, JWT_HEADER_PREFIX, EVO_PASSWORD, EVO_BASIC)


#: Short timeouts and backoff so that fault tests finish quickly (every test config starts from it).
FAST_RETRIES: dict[str, object] = {
    "read_timeout_seconds": 1,
    "connect_timeout_seconds": 2,
    "retry_initial_delay_seconds": 0.2,
    "retry_max_wait_seconds": 20,
}


def lumin_sandbox(
    *,
    events: int = 1500,
    seed: int = 7,
    start: dt.datetime = START,
    end: dt.datetime = END,
    faults: list[FaultRule] | None = None,
    retry_after: int = 1,
    stall_seconds: float = 10.0,
    serve: bool = True,
    **settings: object,
) -> SandboxServer:
    """A started Lumin.ai sandbox; stop it with ``.stop()`` (fixtures do). ``serve=False``: bound to
    its port, not yet serving (``.start()`` it)."""
    data = generate_events(seed=seed, count=events, start=start, end=end)
    api = LuminAPI(data, LuminSettings(token=LUMIN_TOKEN, **settings))  # type: ignore[arg-type]
    plan = FaultPlan(faults or [], retry_after_seconds=retry_after, stall_seconds=stall_seconds)
    server = SandboxServer(api, faults=plan)
    return server.start() if serve else server


def lumin_config(server: SandboxServer, **overrides: object) -> dict[str, object]:
    api: LuminAPI = server.api  # type: ignore[assignment]
    config: dict[str, object] = {
        "api_url": server.base_url + api.settings.path,
        "token": LUMIN_TOKEN,
        "start_date": START.isoformat(),
        "end_date": END.isoformat(),
        "event_types": ["billing.scheduled", "billing.rescheduled"],
        "window_size_days": 14,
        "lookback_minutes": 60,
        **FAST_RETRIES,
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


KORE_START = dt.datetime(2024, 1, 1, tzinfo=UTC)
KORE_END = dt.datetime(
    2024, 12, 1, tzinfo=UTC
)  # 335 days: several 89-day windows, both DST changes
KORE_BOTS = ("st-1a2b3c4d-0001", "st-1a2b3c4d-0002")


def kore_sandbox(
    *,
    conversations: int = 1200,
    seed: int = 11,
    start: dt.datetime = KORE_START,
    end: dt.datetime = KORE_END,
    faults: list[FaultRule] | None = None,
    stall_seconds: float = 10.0,
    serve: bool = True,
    **settings: object,
) -> SandboxServer:
    """A started (or, with ``serve=False``, bound) Kore.ai sandbox (rate limits out of the way unless a test sets them)."""
    data = generate_sessions(seed=seed, conversations=conversations, start=start, end=end)
    settings.setdefault("rate_limits", [(10_000, 1.0)])
    kore_settings = KoreSettings(
        client_id=KORE_CLIENT_ID, client_secret=KORE_CLIENT_SECRET, **settings
    )  # type: ignore[arg-type]
    plan = FaultPlan(faults or [], stall_seconds=stall_seconds)
    server = SandboxServer(KoreAPI(data, kore_settings), faults=plan)
    return server.start() if serve else server


def kore_config(server: SandboxServer, **overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "api_url": server.base_url,
        "client_id": KORE_CLIENT_ID,
        "client_secret": KORE_CLIENT_SECRET,
        "bot_ids": list(KORE_BOTS),
        "start_date": KORE_START.isoformat(),
        "end_date": KORE_END.isoformat(),
        "timezone": server.api.settings.timezone,  # type: ignore[attr-defined]
        "page_size": 50,
        "max_requests_per_minute": 60,
        "summary_poll_milliseconds": 20,
        **FAST_RETRIES,
        "retry_max_wait_seconds": 30,  # rate-limit tests wait out a rolling window
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


EVO_START = dt.date(2024, 1, 15)
EVO_END = dt.date(2024, 4, 10)


def evo_sandbox(
    *,
    seed: int = 5,
    faults: list[FaultRule] | None = None,
    stall_seconds: float = 10.0,
    idle_share: float = 0.1,
    serve: bool = True,
    **settings: object,
) -> SandboxServer:
    """A started Evo Voice sandbox; some days have no usage at all, some accounts none on a day
    (``idle_share``), so that answers without a list occur."""
    rows = generate_usage(
        seed=seed, start=dt.date(2023, 12, 1), end=dt.date(2024, 5, 1), idle_share=idle_share
    )
    api = track_evo(
        EvoAPI(rows, EvoSettings(username=EVO_USERNAME, password=EVO_PASSWORD, **settings))  # type: ignore[arg-type]
    )
    server = SandboxServer(api, faults=FaultPlan(faults or [], stall_seconds=stall_seconds))
    return server.start() if serve else server


def expected_periods(
    granularity: str, start: dt.date = EVO_START, end: dt.date = EVO_END
) -> list[tuple[dt.date, dt.date]]:
    """(first, last) day of each period inside [start, end)."""
    periods, cursor = [], start
    while cursor < end:
        if granularity == "month":
            following = (cursor.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        else:
            following = cursor + dt.timedelta(days=1)
        periods.append((cursor, min(following, end) - dt.timedelta(days=1)))
        cursor = following
    return periods


def evo_config(server: SandboxServer, **overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "api_url": server.base_url,
        "username": EVO_USERNAME,
        "password": EVO_PASSWORD,
        "start_date": EVO_START.isoformat(),
        "end_date": EVO_END.isoformat(),
        **FAST_RETRIES,
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


LUMIN_TYPES = {"billing.scheduled", "billing.rescheduled"}


def lumin_truth_ids(server: SandboxServer) -> set[str]:
    """Ids of the events ``lumin_config`` asks for (its two event types, [START, END))."""
    return {e.id for e in server.api.truth(types=LUMIN_TYPES, start=START, end=END)}  # type: ignore[attr-defined]


@dataclass
class TapRun:
    returncode: int
    stdout: str
    stderr: str
    messages: list[dict] = field(default_factory=list)

    @property
    def records(self) -> list[dict]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def last_state(self) -> dict | None:
        return self.states[-1] if self.states else None


def parse_messages(stdout: str) -> list[dict]:
    messages = []
    for raw in stdout.splitlines():
        line = raw.strip()
        if line:
            try:
                messages.append(json.loads(line))
            except ValueError:
                break  # a line cut by SIGKILL: the target would not have received it either
    return messages


def _write_json(directory: Path, name: str, value: object) -> Path:
    path = directory / name
    path.write_text(json.dumps(value))
    return path


#: Each tap's catalog from ``--discover`` (its schemas do not depend on the config), read once.
_CATALOGS: dict[str, dict] = {}


def catalog_selecting(
    module: str, config: dict, streams: t.Collection[str], directory: Path
) -> Path:
    """A catalog file in ``directory`` in which exactly ``streams`` are selected."""
    if module not in _CATALOGS:
        result = subprocess.run(
            tap_command(module, config, None, directory, "--discover"),
            capture_output=True,
            text=True,
            check=True,
            env=_env(),
        )
        _CATALOGS[module] = json.loads(result.stdout)
    catalog = select_streams(copy.deepcopy(_CATALOGS[module]), streams)
    return _write_json(directory, "catalog.json", catalog)


def select_streams(catalog: dict, streams: t.Collection[str]) -> dict:
    """``catalog`` (changed in place) with exactly ``streams`` selected."""
    unknown = set(streams) - {s["tap_stream_id"] for s in catalog["streams"]}
    assert not unknown, f"no such stream(s): {unknown}"
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in streams
    return catalog


def tap_command(
    module: str,
    config: dict,
    state: dict | None,
    directory: Path,
    *extra: str,
    select: t.Collection[str] | None = None,
) -> list[str]:
    """The command line of one tap run; ``select``: the streams a catalog selects (else the tap's
    defaults, without a catalog)."""
    if select is not None:
        extra = ("--catalog", str(catalog_selecting(module, config, select, directory)), *extra)
    command = [
        sys.executable,
        "-m",
        module,
        "--config",
        str(_write_json(directory, "config.json", config)),
    ]
    if state is not None:
        command += ["--state", str(_write_json(directory, "state.json", state))]
    return command + list(extra)


def run_tap(
    config: dict,
    state: dict | None = None,
    *extra: str,
    module: str = "tap_luminai",
    timeout: float = 120,
    env: dict[str, str] | None = None,
    select: t.Collection[str] | None = None,
) -> TapRun:
    """Run the tap as its own process, as Meltano would, and parse what it printed.

    ``env``: variables to set (over this process's environment) for this run only. ``select``: the
    streams to select in a catalog (default: the tap's own defaults).
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            tap_command(module, config, state, Path(tmp), *extra, select=select),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**_env(), **(env or {})},
            check=False,
        )
    run = TapRun(result.returncode, result.stdout, result.stderr, parse_messages(result.stdout))
    assert_no_secrets(run.stdout, run.stderr)
    return run


def run_tap_killed_after_states(
    config: dict,
    state: dict | None,
    states_before_kill: int,
    *,
    module: str = "tap_luminai",
) -> TapRun:
    """Run the tap and SIGKILL it as soon as it has printed ``states_before_kill`` STATE lines."""
    return run_tap_interrupted(config, state, module=module, after_states=states_before_kill)


def run_tap_interrupted(
    config: dict,
    state: dict | None = None,
    *,
    module: str = "tap_luminai",
    after_lines: int | None = None,
    after_states: int | None = None,
    after_seconds: float | None = None,
    signum: int = signal.SIGKILL,
    select: t.Collection[str] | None = None,
    pause_before_signal: float = 0.0,
) -> TapRun:
    """Run the tap and send it ``signum`` after it printed ``after_lines`` lines (0: at once) or
    ``after_states`` STATE lines, or ``after_seconds`` after its start, whichever comes first.

    ``pause_before_signal``: stop reading its output that long first, so that a tap with more to
    print fills the pipe and is caught blocked in the middle of a write.

    Everything it wrote before it ended is kept (a target reading the pipe would have received it);
    a line cut short by SIGKILL is dropped by ``parse_messages``. A run still going 120 s after the
    signal was due is killed.
    """
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        stderr_path = directory / "stderr.log"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                tap_command(module, config, state, directory, select=select),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=_env(),
            )
        assert process.stdout is not None
        lock = threading.Lock()

        def interrupt() -> None:
            with lock:
                if process.returncode is None:
                    process.send_signal(signum)

        timer = threading.Timer(after_seconds or 0.0, interrupt)
        if after_seconds is not None:
            timer.start()
        watchdog = threading.Timer(120 + (after_seconds or 0.0), process.kill)
        watchdog.start()
        lines: list[str] = []
        states = 0
        if after_lines == 0:
            interrupt()
        else:
            for line in process.stdout:
                lines.append(line)
                states += '"type":"STATE"' in line.replace(" ", "")
                if (after_lines is not None and len(lines) >= after_lines) or (
                    after_states is not None and states >= after_states
                ):
                    time.sleep(pause_before_signal)
                    interrupt()
                    break
        rest = process.stdout.read()
        for each in (timer, watchdog):
            each.cancel()
            if each.is_alive():
                each.join()
        with lock:
            process.wait()
        stdout = "".join(lines) + rest
        stderr_text = stderr_path.read_text(errors="replace")
    assert_no_secrets(stdout, stderr_text)
    return TapRun(process.returncode, stdout, stderr_text, parse_messages(stdout))


def killed_then_resumed(
    config: dict, *, module: str, select: t.Collection[str], after_states: int = 1
) -> tuple[TapRun, TapRun]:
    """SIGKILL a run once it printed ``after_states`` STATE lines (asserting it was cut short),
    then run again from the last STATE it printed (asserting that run succeeds)."""
    killed = run_tap_interrupted(config, module=module, after_states=after_states, select=select)
    assert killed.returncode != 0, "the run ended before it was killed"
    resumed = run_tap(config, killed.last_state, module=module, select=select, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return killed, resumed


#: Meltano, in its own virtualenv (``make meltano``).
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"


def run_meltano(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``meltano ARGS`` and check all it printed for every test secret."""
    result = subprocess.run(
        [str(MELTANO), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert_no_secrets(result.stdout, result.stderr)
    return result


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SINGER_SDK_LOG_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: The Evo Voice sandboxes of this test session: the session cookies they issue are secrets too.
_EVO_APIS: weakref.WeakSet[EvoAPI] = weakref.WeakSet()
_issued: set[str] = set()


def track_evo(api: EvoAPI) -> EvoAPI:
    """Count the session ids this Evo Voice sandbox issues among the test secrets."""
    _EVO_APIS.add(api)
    return api


def secret_values() -> tuple[str, ...]:
    """Every secret the tests use: the fixed credentials, and every session id a sandbox issued."""
    for api in list(_EVO_APIS):
        _issued.update(api.issued_sessions)
    return (*SECRETS, *sorted(_issued))


def find_secrets(text: str) -> list[str]:
    """Which test secrets occur in ``text`` (masked in the answer: first 4 characters)."""
    return [secret[:4] + "..." for secret in secret_values() if secret in text]


def assert_no_secrets(*outputs: str) -> None:
    for output in outputs:
        found = find_secrets(output)
        assert not found, f"secret(s) {found} appeared in the output"
