"""The SDK seams: every private singer-sdk name the taps use is in ``billing_toolkit/sdk_seams.py``,
and the SDK still has the shape and the behaviour each one relies on.

An SDK release that renames one of these names, changes its signature, or stops calling it where
the seam expects fails here, before it silently changes what a tap emits (a bookmark moved per
record, a record path bypassed, a signal that exits 0).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import signal
import typing as t
from pathlib import Path

import pytest
from singer_sdk import RESTStream, Stream, Tap
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.plugin_base import PluginBase

from billing_toolkit import output, sdk_seams
from billing_toolkit.sdk_seams import StreamSeams, TapSeams
from tap_luminai.tap import TapLuminai
from tests.support import lumin_config

ROOT = Path(__file__).resolve().parent.parent
SEAMS_MODULE = ROOT / "billing_toolkit" / "sdk_seams.py"
PRODUCTION = ["billing_toolkit", "tap_luminai", "tap_kore_billing", "tap_evovoice"]

#: Each private SDK name a seam overrides or calls, the SDK class that defines it, and the
#: parameters (name, kind) the seam relies on.
PINNED: dict[str, tuple[type, list[tuple[str, str]]]] = {
    "_increment_stream_state": (
        Stream,
        [
            ("self", "POSITIONAL_OR_KEYWORD"),
            ("latest_record", "POSITIONAL_OR_KEYWORD"),
            ("context", "KEYWORD_ONLY"),
        ],
    ),
    "_process_record": (
        Stream,
        [
            ("self", "POSITIONAL_OR_KEYWORD"),
            ("record", "POSITIONAL_OR_KEYWORD"),
            ("child_context", "POSITIONAL_OR_KEYWORD"),
            ("partition_context", "POSITIONAL_OR_KEYWORD"),
        ],
    ),
    "_write_record_message": (
        Stream,
        [("self", "POSITIONAL_OR_KEYWORD"), ("record", "POSITIONAL_OR_KEYWORD")],
    ),
    "_write_state_message": (Stream, [("self", "POSITIONAL_OR_KEYWORD")]),
    "_request": (
        RESTStream,
        [
            ("self", "POSITIONAL_OR_KEYWORD"),
            ("prepared_request", "POSITIONAL_OR_KEYWORD"),
            ("context", "POSITIONAL_OR_KEYWORD"),
        ],
    ),
    "_validate_config": (
        PluginBase,
        [("self", "POSITIONAL_OR_KEYWORD"), ("raise_errors", "KEYWORD_ONLY")],
    ),
    "_handle_termination": (
        Tap,
        [
            ("self", "POSITIONAL_OR_KEYWORD"),
            ("signum", "POSITIONAL_OR_KEYWORD"),
            ("frame", "POSITIONAL_OR_KEYWORD"),
        ],
    ),
}
#: Private SDK attributes (not methods) the seams read or set.
PINNED_ATTRIBUTES = {"_requests_session", "_config"}


def _sdk_private_names() -> set[str]:
    names: set[str] = set()
    for cls in (RESTStream, Stream, Tap, PluginBase):
        names |= {n for n in dir(cls) if n.startswith("_") and not n.startswith("__")}
    return names | PINNED_ATTRIBUTES


def _private_names_used(path: Path) -> set[str]:
    """Private attribute names a module defines or reads on ``self``/``super()``/``cls``."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            base = node.value
            on_self = isinstance(base, ast.Name) and base.id in {"self", "cls"}
            on_super = isinstance(base, ast.Call) and getattr(base.func, "id", "") == "super"
            if on_self or on_super:
                used.add(node.attr)
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
            used.add(node.name)
    return {n for n in used if not n.startswith("__")}


def test_no_module_but_the_seams_uses_a_private_sdk_name():
    sdk = _sdk_private_names()
    offenders = {}
    for package in PRODUCTION:
        for path in sorted((ROOT / package).glob("*.py")):
            if path == SEAMS_MODULE:
                continue
            found = _private_names_used(path) & sdk
            if found:
                offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}, (
        f"private singer-sdk names outside billing_toolkit/sdk_seams.py: {offenders}"
    )


def test_the_pins_are_exactly_the_private_sdk_names_the_seams_use():
    """A seam added without its pin (or a pin left after its seam went) fails here."""
    used = _private_names_used(SEAMS_MODULE) & _sdk_private_names()
    assert used == set(PINNED) | PINNED_ATTRIBUTES


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_sdk_still_defines_each_pinned_name_with_the_signature_the_seam_relies_on(name):
    owner, expected = PINNED[name]
    function = inspect.getattr_static(owner, name)
    function = getattr(function, "__func__", function)  # classmethod / staticmethod
    parameters = [(p.name, p.kind.name) for p in inspect.signature(function).parameters.values()]
    assert parameters == expected, f"singer_sdk {owner.__name__}.{name}{parameters}"


def _marked(value: object) -> bool:
    function = value.fget if isinstance(value, property) else value
    return bool(getattr(getattr(function, "__func__", function), "__override__", False))


def test_every_override_in_the_seams_is_marked_and_overrides_an_sdk_name():
    marked = set()
    for cls, base in ((StreamSeams, RESTStream), (TapSeams, Tap)):
        for name, value in vars(cls).items():
            if _marked(value):
                assert hasattr(base, name), f"{cls.__name__}.{name} overrides nothing in the SDK"
                marked.add(name)
            elif (
                (
                    isinstance(value, (property, classmethod, staticmethod))
                    or inspect.isfunction(value)
                )
                and not name.startswith("__")
                and hasattr(base, name)
            ):
                pytest.fail(f"{cls.__name__}.{name} overrides the SDK without @override")
    assert {
        "_increment_stream_state",
        "_process_record",
        "_write_record_message",
        "_validate_config",
        "_handle_termination",
        "requests_session",
    } <= marked


# -- the behaviours the seams rely on ---------------------------------------------------------


class _SpyStream(Stream):
    """A plain SDK stream with three records in one partition, counting the SDK's calls."""

    name = "spy"
    schema: t.ClassVar[dict] = {"properties": {"id": {"type": "string"}, "p": {"type": "string"}}}
    primary_keys: t.ClassVar[list[str]] = ["id"]
    calls: t.ClassVar[dict[str, list]] = {}

    @property
    def partitions(self) -> list[dict]:
        return [{"p": "one"}]

    def get_records(self, context):
        yield from ({"id": str(i)} for i in range(3))

    def _increment_stream_state(self, latest_record, *, context=None):
        self.calls.setdefault("increment", []).append(dict(latest_record))

    def _process_record(self, record, child_context=None, partition_context=None):
        self.calls.setdefault("process", []).append(partition_context)
        super()._process_record(record, child_context, partition_context)

    def _write_record_message(self, record):
        self.calls.setdefault("write", []).append(dict(record))


class _SpyTap(Tap):
    name = "tap-spy"
    config_jsonschema: t.ClassVar[dict] = {"type": "object", "properties": {}}

    def discover_streams(self):
        return [_SpyStream(self)]


def test_the_sdk_sync_calls_the_record_seams_once_per_record_with_the_partition():
    _SpyStream.calls = {}
    with contextlib.redirect_stdout(io.StringIO()):
        _SpyTap(config={}).sync_all()
    calls = _SpyStream.calls
    assert len(calls["increment"]) == len(calls["write"]) == len(calls["process"]) == 3
    assert calls["process"] == [{"p": "one"}] * 3
    # The SDK adds the partition's keys before the record reaches _write_record_message.
    assert [r["p"] for r in calls["write"]] == ["one"] * 3


def test_writing_state_through_the_sdk_emits_a_state_message_when_not_flushed():
    tap = _SpyTap(config={})
    stream = tap.streams["spy"]
    stream.get_context_state({"p": "one"})["replication_key_value"] = "x"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        stream.state_manager.is_flushed = False
        stream._write_state_message()
    states = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["type"] for m in states] == ["STATE"]
    assert stream.state_manager.is_flushed is True


def test_the_constructor_validates_the_config_through_the_seam(lumin):
    server = lumin(events=10)
    bad = {**lumin_config(server), "window_size_days": "fourteen"}
    with pytest.raises(ConfigValidationError) as raised:
        TapLuminai(config=bad)
    assert any(e.startswith("window_size_days") for e in raised.value.errors), raised.value.errors
    tap = TapLuminai(config=bad, validate_config=False)  # warned, not raised
    assert tap.config["window_size_days"] == "fourteen"


def test_the_sdk_installs_the_seam_as_the_sigterm_and_sigint_handler(lumin):
    server = lumin(events=10)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        tap = TapLuminai(config=lumin_config(server))
        for each in (signal.SIGTERM, signal.SIGINT):
            assert signal.getsignal(each) == tap._handle_termination
    finally:
        for each, handler in saved.items():
            signal.signal(each, handler)


def test_the_secure_session_replaces_the_sdk_session(lumin):
    server = lumin(events=10)
    tap = TapLuminai(config=lumin_config(server))
    stream = tap.streams["billing_events"]
    assert hasattr(stream, "_requests_session")  # the SDK keeps its session here
    session = stream.requests_session
    assert isinstance(session, sdk_seams.SecureSession)
    assert stream._requests_session is session


def _in_process_run(tap: Tap) -> list[dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tap.sync_all()
        output.RECORDS.flush()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _count_direct_writes(monkeypatch) -> list[int]:
    written = [0]
    original = output.RecordLineWriter.write

    def counting(self, record):
        written[0] += 1
        original(self, record)

    monkeypatch.setattr(output.RecordLineWriter, "write", counting)
    return written


def test_records_take_the_direct_path_only_when_the_sdk_path_would_not_change_them(
    lumin, monkeypatch
):
    server = lumin(events=60)
    config = lumin_config(server)
    written = _count_direct_writes(monkeypatch)
    plain = [m for m in _in_process_run(TapLuminai(config=config)) if m["type"] == "RECORD"]
    assert plain and written[0] == len(plain)
    assert all("user_did" in m["record"] for m in plain)

    # A stream map changes records: the SDK's path, and the map applied.
    written[0] = 0
    mapped_config = {**config, "stream_maps": {"billing_events": {"user_did": "__NULL__"}}}
    mapped = [m for m in _in_process_run(TapLuminai(config=mapped_config)) if m["type"] == "RECORD"]
    assert written[0] == 0
    assert len(mapped) == len(plain)
    assert all("user_did" not in m["record"] for m in mapped)

    # A deselected field: the SDK's path, and the field left out.
    written[0] = 0
    tap = TapLuminai(config=config)
    catalog = tap.catalog_dict
    for entry in catalog["streams"][0]["metadata"]:
        if entry["breadcrumb"] == ["properties", "host_did"]:
            entry["metadata"]["selected"] = False
    narrowed = [
        m
        for m in _in_process_run(TapLuminai(config=config, catalog=catalog))
        if m["type"] == "RECORD"
    ]
    assert written[0] == 0
    assert len(narrowed) == len(plain)
    assert all("host_did" not in m["record"] for m in narrowed)


class _Recorder:
    def __init__(self) -> None:
        self.states = 0


def test_a_second_signal_during_the_shutdown_is_ignored(lumin, monkeypatch, caplog):
    """Meltano forwards a Ctrl+C as SIGTERM while the SIGINT reaches the tap too: one STATE, one
    exit with the first signal's code."""
    server = lumin(events=10)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        tap = TapLuminai(config=lumin_config(server))
        recorder = _Recorder()
        original = tap.state_writer.write_state

        def write_state(state):
            recorder.states += 1
            tap._handle_termination(signal.SIGINT, None)  # the second signal, mid-shutdown
            original(state)

        monkeypatch.setattr(tap.state_writer, "write_state", write_state)
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exited:
            tap._handle_termination(signal.SIGTERM, None)
    finally:
        for each, handler in saved.items():
            signal.signal(each, handler)
    assert exited.value.code == 128 + signal.SIGTERM
    assert recorder.states == 1
    said = [r.getMessage() for r in caplog.records if "Interrupted by signal" in r.getMessage()]
    assert said == [
        f"Interrupted by signal {int(signal.SIGTERM)}: state saved up to the last completed window"
    ]
