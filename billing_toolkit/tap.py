"""The base of every billing tap: semantic config validation, secret masking, a plain --test."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import typing as t
from dataclasses import dataclass

from singer_sdk.exceptions import ConfigValidationError, FatalAPIError
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities, TapCapabilities

from billing_toolkit import settings
from billing_toolkit.output import OrderedWriter
from billing_toolkit.sdk_seams import TapSeams
from billing_toolkit.secrets import install_log_masking, mask, register_secret
from billing_toolkit.stream import BOOKMARKS_BY_KEY, WindowedRESTStream
from billing_toolkit.timestamps import normalize_timestamp
from billing_toolkit.windows import DateWindow, period_start


class ConnectionCheckError(FatalAPIError):
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


@dataclass(frozen=True)
class ConnectionProbe:
    """A tap's one cheap request for ``--test``, as data: the first page of one stream for one
    short window at the end of the range, and what each failure means."""

    #: The stream whose first page is read (its first partition, all its query keys).
    stream: str
    #: What a 401/403 means, and what a 404/405 or an answer that is not JSON means (``{url}`` is
    #: the route asked, ``{base}`` the API root).
    refused: str
    missing: str
    #: What a success says after the route, e.g. "accepted the token and answered a page".
    passed: str
    #: The window: the last ``span`` of the range, or with ``period`` (``day``) the UTC period
    #: holding the range's last moment.
    span: dt.timedelta = dt.timedelta(days=1)
    period: str | None = None
    #: (text found in the error, explanation) pairs checked before the status codes.
    hints: tuple[tuple[str, str], ...] = ()

    def window(self, end: dt.datetime) -> DateWindow:
        if self.period:
            return DateWindow(period_start(end - dt.timedelta(microseconds=1), self.period), end)
        return DateWindow(end - self.span, end)


class BillingTap(TapSeams):
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

    def connection_probe(self) -> ConnectionProbe:
        """The tap's one cheap request (see :class:`ConnectionProbe`)."""
        raise NotImplementedError

    def check_connection(self) -> str:
        """Read the probe's page; say what was checked, or raise ConnectionCheckError saying, in
        plain words, what the failure means."""
        probe = self.connection_probe()
        stream = self.streams[probe.stream]
        assert isinstance(stream, WindowedRESTStream)
        window = probe.window(stream.window_settings.end)
        partitions = stream.partitions
        partition = partitions[0] if partitions else None
        route = stream.describe_route(partition)
        try:
            response = stream.probe(partition, window, tuple(stream.query_keys(partition)))
        except Exception as exc:
            url = stream.get_url(partition)
            explained = explain_connection_failure(
                exc,
                url,
                refused=probe.refused,
                missing=probe.missing.format(url=url, base=stream.url_base),
                hints=probe.hints,
            )
            raise ConnectionCheckError(f"{route}: {explained}") from exc
        detail = stream.connection_detail(response, window) if response is not None else ""
        return f"{route} {probe.passed}." + (f" {detail}" if detail else "")
