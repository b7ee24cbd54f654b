"""Every place the taps lean on a private name of singer-sdk, in one module.

The rest of the toolkit and the taps use the SDK's public API only. Each override here is marked
``@override`` and carries the reason it exists; ``tests/test_sdk_seams.py`` pins the SDK signature
and the SDK behaviour each one relies on, so an SDK release that changes them fails that test
before it changes what a tap emits.

Stream seams (:class:`StreamSeams`):

- ``_increment_stream_state``: a no-op, since completed windows move the bookmark, never a record;
- ``_process_record``: the SDK's per-record step without the child-stream machinery;
- ``_write_record_message``: RECORD lines written directly when the SDK's path would not change
  them (see :mod:`billing_toolkit.output`);
- ``_requests_session`` (read and set by ``requests_session``): the session that sends requests
  to the API's origin only;
- ``state_manager`` and ``_write_state_message``: a STATE written the moment a window is complete;
- ``_request``: the SDK's send-and-validate step, wrapped by ``request_decorator``.

Tap seams (:class:`TapSeams`):

- ``_validate_config``: settings checked with errors that name the setting and never a secret;
- ``_handle_termination``: on SIGTERM/SIGINT the state is written and the exit is non-zero, once
  (a second signal during the shutdown is ignored, as singer-sdk 0.55 does; Meltano forwards a
  Ctrl+C as a SIGTERM while the SIGINT also reaches the tap);
- ``cb_test`` and ``cb_config``: the CLI's ``--test`` and ``--config`` callbacks.
"""

from __future__ import annotations

import datetime as dt
import sys
import typing as t

import click
from singer_sdk import RESTStream, Tap
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.plugin_base import JSONSchemaValidator
from singer_sdk.tap_base import CliTestOptionValue
from typing_extensions import override

from billing_toolkit import settings
from billing_toolkit.output import RecordLineWriter, defer_if_busy
from billing_toolkit.secrets import mask
from billing_toolkit.transport import SecureSession, secure_session

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context, Record, RequestFunc


class StreamSeams(RESTStream[t.Any]):
    """The stream's uses of SDK private names."""

    #: Write RECORD lines directly when the SDK's record path would not change them (see
    #: billing_toolkit.output). False gives the SDK's own path (the benchmarks' baseline).
    fast_records: t.ClassVar[bool] = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._line_writer: RecordLineWriter | bool | None = False  # False: not decided yet

    @override
    def _increment_stream_state(
        self, latest_record: Record, *, context: Context | None = None
    ) -> None:
        """Records never move the bookmark: completed windows do (``complete_window``)."""

    @override
    def _process_record(
        self,
        record: Record,
        child_context: Context | None = None,
        partition_context: Context | None = None,
    ) -> None:
        """The SDK's per-record step, without its child-stream machinery when there are none."""
        if self.child_streams:
            super()._process_record(record, child_context, partition_context)
            return
        for key, value in (partition_context or {}).items():
            if key not in record:  # the partition's keys go into its records, as the SDK does
                record[key] = value

    @override
    def _write_record_message(self, record: Record) -> None:
        writer = self._line_writer
        if writer is False:
            writer = self._line_writer = self._direct_writer()
        if writer is None:
            super()._write_record_message(record)
            return
        assert isinstance(writer, RecordLineWriter)
        writer.write(record)
        self.state_manager.is_flushed = False

    def _direct_writer(self) -> RecordLineWriter | None:
        """A direct RECORD writer, if the SDK's record path would emit records unchanged: one
        identity stream map under the stream's own name, no flattening, every field selected."""
        maps = self.stream_maps
        identity = (
            len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and maps[0].stream_alias == self.name
            and not maps[0].flattening_enabled
        )
        everything_selected = all(
            self.mask.get(("properties", name), True) for name in self.schema["properties"]
        )
        if not (self.fast_records and identity and everything_selected):
            return None
        writer = RecordLineWriter(self.name)
        writer.set_time_extracted(_now_text())
        return writer

    def page_extracted_now(self) -> None:
        """A page was received: the RECORD lines written from now on carry this time."""
        if isinstance(self._line_writer, RecordLineWriter):
            self._line_writer.set_time_extracted(_now_text())

    def write_state_now(self) -> None:
        """Write a STATE message with the stream's state as it is (after a completed window)."""
        self.state_manager.is_flushed = False
        self._write_state_message()

    def sender(self) -> RequestFunc:
        """The SDK's send-and-validate step, with this stream's throttle and retries around it."""
        return self.request_decorator(self._request)

    @property
    @override
    def requests_session(self) -> requests.Session:
        """Requests, and so credentials, go to the API's origin only, over verified TLS
        (``ca_bundle_path`` added): see billing_toolkit.transport for the rules."""
        if not isinstance(self._requests_session, SecureSession):
            self._requests_session = secure_session(self.url_base, self.config)
        return self._requests_session


class TapSeams(Tap):
    """The tap's uses of SDK private names (and of its CLI callbacks)."""

    _terminating = False

    def semantic_config_errors(self) -> list[str]:
        """What JSON Schema cannot say about the config: one line per problem, naming the setting."""
        return []

    def check_connection(self) -> str:
        """Make one cheap request; return what was checked, or raise an error saying what failed."""
        raise NotImplementedError

    @classmethod
    def secret_setting_names(cls) -> list[str]:
        return [
            name
            for name, schema in cls.config_jsonschema.get("properties", {}).items()
            if schema.get("secret") or schema.get("writeOnly")
        ]

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's JSON-schema check, unknown settings, then :meth:`semantic_config_errors`.

        Unlike the SDK's messages these name the setting first, never quote a secret, and refuse
        keys the schema does not declare (a misspelt optional setting would silently fall back to
        its default). ``null`` for an optional setting means "not set", as when Meltano leaves it
        out. The semantic checks run here, not after the SDK's constructor, because that
        constructor already discovers the streams, which would fail on, say, a timeout too large
        for a float.
        """
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        errors = settings.unknown_setting_errors(self._config, schema.get("properties", {}))
        self._config = settings.without_optional_nulls(self._config, schema.get("required", []))
        secrets = set(self.secret_setting_names())
        declared = schema.get("properties", {})
        errors += settings.non_finite_errors(
            {k: v for k, v in self._config.items() if k in declared}
        )
        if not errors:  # a schema's bounds cannot judge NaN (a Decimal NaN makes them raise)
            errors += [
                settings.schema_error_message(error, secrets=secrets)
                for error in JSONSchemaValidator(schema).iter_errors(self._config)
            ]
        if not errors:  # the semantic checks may assume the JSON types are right
            errors = self.semantic_config_errors()
        errors = [mask(error) for error in dict.fromkeys(errors)]
        if errors and raise_errors:
            raise ConfigValidationError("Config validation failed", errors=errors, schema=schema)
        if errors:
            self.logger.warning("Config validation failed")
        return errors

    @override
    def _handle_termination(self, signum: int, frame: t.Any) -> None:
        """On SIGTERM/SIGINT: write the state (completed windows only) and exit ``128 + signum``.

        The SDK exits 0 here, which makes an interrupted backfill look finished to an orchestrator.
        A signal that arrives while records and a STATE are being written waits for them to finish;
        a second signal while the first is being handled is ignored (one STATE, one exit).
        """
        if self._terminating:
            self.logger.debug("Signal %d while already shutting down: ignored", signum)
            return
        self._terminating = True
        if defer_if_busy(lambda: self._shut_down(signum)):
            return
        self._shut_down(signum)

    def _shut_down(self, signum: int) -> t.NoReturn:
        try:
            self.state_writer.write_state(self.state)
        finally:
            self.logger.error(
                "Interrupted by signal %d: state saved up to the last completed window", signum
            )
            sys.exit(128 + signum)

    @classmethod
    @override
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> t.Any:
        """Read ``--config`` files; an unreadable one gets one line per problem, not a traceback.

        The SDK reads the files while parsing the command line, before its own handler of config
        errors is in place, so a missing file or a NaN in the JSON would end in a traceback.
        """
        try:
            return super().cb_config(ctx, param, value)
        except Exception as exc:
            errors = [
                e for path in value if path != "ENV" for e in settings.config_file_errors(path)
            ]
            for error in errors or [f"config cannot be read: {type(exc).__name__}"]:
                cls.logger.error(mask(error))
            cls.logger.error("Config validation failed")
            ctx.exit(1)

    @classmethod
    @override
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """``--test``: one cheap request that says plainly what failed (``--test=schema`` as usual)."""
        if value in {CliTestOptionValue.Disabled.value, CliTestOptionValue.Schema.value}:
            super().cb_test(ctx, param, value)
            return
        config = ctx.params.get("config")
        try:
            tap = cls(
                config=getattr(config, "config", None),
                parse_env_config=bool(getattr(config, "parse_env", False)),
                validate_config=True,
            )
        except ConfigValidationError as exc:
            for error in exc.errors:
                cls.logger.error(error)
            cls.logger.error("Config validation failed")
            ctx.exit(1)
        try:
            checked = tap.check_connection()
        except FatalAPIError as exc:  # ConnectionCheckError included
            cls.logger.error("Connection test failed: %s", mask(str(exc)))
            ctx.exit(1)
        cls.logger.info("Connection test passed: %s", checked)
        ctx.exit()


def _now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
