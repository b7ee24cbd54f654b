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
from singer_sdk.tap_base import CliTestOptionValue

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
        super().__init__(*args, **kwargs)
        self._register_secrets(dict(self.config), parse_env=False)
        if kwargs.get("validate_config", True):
            errors = self.semantic_config_errors()
            if errors:
                raise ConfigValidationError("Config validation failed", errors=errors)
        logging.getLogger("urllib3").setLevel(logging.WARNING)

    def _handle_termination(self, signum: int, frame: t.Any) -> None:
        """On SIGTERM/SIGINT: write the state (completed windows only) and exit non-zero.

        The SDK exits 0 here, which makes an interrupted backfill look finished to an orchestrator.
        """
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
