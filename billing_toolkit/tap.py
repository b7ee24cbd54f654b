"""The base of every billing tap: semantic config validation, secret masking, a plain --test."""

from __future__ import annotations

import logging
import os
import sys
import typing as t

import click
from singer_sdk import Tap
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities, TapCapabilities
from singer_sdk.plugin_base import JSONSchemaValidator
from singer_sdk.tap_base import CliTestOptionValue

from billing_toolkit import settings
from billing_toolkit.output import OrderedWriter, defer_if_busy
from billing_toolkit.secrets import install_log_masking, mask, register_secret
from billing_toolkit.stream import BOOKMARKS_BY_KEY
from billing_toolkit.timestamps import normalize_timestamp


class ConnectionCheckError(Exception):
    """The connection test failed; the message says what to fix."""


def explain_connection_failure(
    error: Exception,
    url: str,
    *,
    refused: str,
    missing: str,
    hints: t.Sequence[tuple[str, str]] = (),
) -> str:
    """Say in plain words what a failed connection test means, then quote the error.

    ``hints`` are (text found in the error, explanation) pairs checked first; then ``refused`` for
    401/403, ``missing`` for 404/405 and a network hint for connection failures and timeouts.
    """
    text = str(error)
    for marker, explanation in hints:
        if marker in text:
            return f"{explanation}. {text}"
    if "HTTP 401" in text or "HTTP 403" in text:
        return f"{refused}. {text}"
    if "HTTP 404" in text or "HTTP 405" in text or "not JSON" in text:
        return f"{missing}. {text}"
    if "ConnectionError" in text or "Timeout" in text:
        return f"could not reach {url}: check api_url and the network. {text}"
    return text or type(error).__name__


class BillingTap(Tap):
    """A Singer tap whose secrets never reach any output and whose bad config fails up front."""

    #: No BATCH: a batch file is delivered after the STATE of its windows, so state could run
    #: ahead of the data a target has received.
    #: Pending RECORD lines are written before every other message (see billing_toolkit.output).
    message_writer_class = OrderedWriter

    capabilities: t.ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        install_log_masking()
        # Secrets are registered before the SDK validates the config, since its messages may
        # quote the offending values.
        self._register_secrets(kwargs.get("config"), parse_env=bool(kwargs.get("parse_env_config")))
        if kwargs.get("parse_env_config"):
            self._check_environment()
        super().__init__(*args, **kwargs)
        self._register_secrets(dict(self.config), parse_env=False)
        logging.getLogger("urllib3").setLevel(logging.WARNING)
        self._install_failure_hook()

    def _install_failure_hook(self) -> None:
        """A known API failure ends the run with its one-line explanation, not a traceback.

        The SDK logs every uncaught exception with its traceback. For a FatalAPIError (a refused
        request, retries given up, a response of the wrong shape) the message already says what
        failed and where; the traceback only buries it. Anything else is a bug: traceback kept.
        The exit code is 1 either way.
        """
        if getattr(sys.excepthook, "_billing_failure_hook", False):
            return
        previous = sys.excepthook
        logger = self.logger

        def hook(exc_type: type[BaseException], exc: BaseException, tb: t.Any) -> None:
            if issubclass(exc_type, FatalAPIError):
                logger.error("Run failed: %s", mask(str(exc)))
                return
            previous(exc_type, exc, tb)

        hook._billing_failure_hook = True  # type: ignore[attr-defined]
        sys.excepthook = hook

    @classmethod
    def _check_environment(cls) -> None:
        """Refuse environment settings the SDK cannot convert, naming them (it would raise a bare ValueError)."""
        schema = cls.config_jsonschema
        cls.append_builtin_config(schema)
        prefix = cls.name.upper().replace("-", "_") + "_"
        errors = settings.environment_errors(schema, prefix, os.environ)
        if errors:
            raise ConfigValidationError("Config validation failed", errors=errors)

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's JSON-schema check, unknown settings, then :meth:`semantic_config_errors`.

        Unlike the SDK's messages these name the setting first, never quote a secret, and refuse
        keys the schema does not declare (a misspelt optional setting would silently fall back to
        its default). ``null`` for an optional setting means "not set", as when Meltano leaves it out.
        The semantic checks run here, not after the SDK's constructor, because that constructor
        already discovers the streams, which would fail on, say, a timeout too large for a float.
        """
        schema = self.config_jsonschema
        self.append_builtin_config(schema)
        errors = settings.unknown_setting_errors(self._config, schema.get("properties", {}))
        self._config = settings.without_optional_nulls(self._config, schema.get("required", []))
        secrets = set(self.secret_setting_names())
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

    def _handle_termination(self, signum: int, frame: t.Any) -> None:
        """On SIGTERM/SIGINT: write the state (completed windows only) and exit non-zero.

        The SDK exits 0 here, which makes an interrupted backfill look finished to an orchestrator.
        A signal that arrives while records and a STATE are being written waits for them to finish.
        """
        if defer_if_busy(lambda: self._handle_termination(signum, frame)):
            return
        try:
            self.state_writer.write_state(self.state)
        finally:
            self.logger.error(
                "Interrupted by signal %d: state saved up to the last completed window", signum
            )
            sys.exit(128 + signum)

    def load_state(self, state: dict[str, t.Any]) -> None:
        """Load the state, refusing bookmarks that are not timestamps (one line each, no traceback)."""
        errors = []
        for stream, stream_state in (state.get("bookmarks") or {}).items():
            parts = [stream_state, *(stream_state.get("partitions") or [])]
            for part in parts:
                where = f"state bookmarks.{stream}" + (
                    f" {part['context']}" if "context" in part else ""
                )
                values = [part.get("replication_key_value")]
                by_key = part.get(BOOKMARKS_BY_KEY)
                values += list(by_key.values()) if isinstance(by_key, dict) else []
                for value in values:
                    if value is None:
                        continue
                    try:
                        normalize_timestamp(str(value))
                    except (ValueError, OverflowError):
                        errors.append(f"{where}: bookmark {value!r} is not an ISO 8601 timestamp")
        if errors:
            raise ConfigValidationError("State validation failed", errors=errors)
        super().load_state(state)

    def semantic_config_errors(self) -> list[str]:
        """What JSON Schema cannot say about the config: one line per problem, naming the setting."""
        return []

    def check_connection(self) -> str:
        """Make one cheap request; return what was checked, or raise ConnectionCheckError."""
        raise NotImplementedError

    @classmethod
    def secret_setting_names(cls) -> list[str]:
        return [
            name
            for name, schema in cls.config_jsonschema.get("properties", {}).items()
            if schema.get("secret") or schema.get("writeOnly")
        ]

    @classmethod
    def _register_secrets(cls, config: object, *, parse_env: bool) -> None:
        names = cls.secret_setting_names()
        if isinstance(config, dict):
            for name in names:
                register_secret(config.get(name))
        if parse_env:
            prefix = cls.name.upper().replace("-", "_") + "_"
            for name in names:
                register_secret(os.environ.get(prefix + name.upper()))

    @classmethod
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
        except (ConnectionCheckError, FatalAPIError) as exc:
            cls.logger.error("Connection test failed: %s", mask(str(exc)))
            ctx.exit(1)
        cls.logger.info("Connection test passed: %s", checked)
        ctx.exit()
