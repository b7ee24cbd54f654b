"""Secret masking for everything a tap writes.

Every secret setting, and every token derived from one (a minted JWT, a Basic credential, a session
cookie), is registered here. Masking is applied when a log record is created, so it covers every
logger and every handler (also ones configured later, e.g. by ``SINGER_SDK_LOG_CONFIG``), the
message, its arguments and any attached traceback.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import traceback
import typing as t
from urllib.parse import quote, quote_plus

MASK = "***"
#: Values shorter than this are not masked: masking them would garble every log line and they
#: protect nothing. Settings validation rejects such short secrets anyway.
MIN_SECRET_LENGTH = 4


class SecretRegistry:
    """The process-wide set of strings that must never appear in output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._patterns: list[str] = []
        self._extra: re.Pattern[str] | None = None

    def add(self, value: object) -> None:
        """Register a secret and the forms in which it may be written (JSON, repr, URL-quoted).

        A secret setting of the wrong type (a list, a number) is registered part by part, since
        error messages quote such values as they are.
        """
        if isinstance(value, (list, tuple)):
            for item in value:
                self.add(item)
            return
        if isinstance(value, dict):
            for item in value.values():
                self.add(item)
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
            return
        forms = {
            value,
            json.dumps(value)[1:-1],
            repr(value)[1:-1],
            quote(value, safe=""),
            quote_plus(value),
        }
        with self._lock:
            if forms <= self._values:
                return
            self._values |= {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def add_pattern(self, pattern: str) -> None:
        """Mask everything matching ``pattern`` too: for secrets minted per request (JWTs)."""
        with self._lock:
            if pattern not in self._patterns:
                self._patterns.append(pattern)
                self._extra = re.compile("|".join(f"(?:{p})" for p in self._patterns))

    def mask(self, text: str) -> str:
        """Replace every registered secret in ``text`` by ``***``."""
        if not text:
            return text
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if self._extra is not None:
            text = self._extra.sub(MASK, text)
        return text

    def __contains__(self, value: object) -> bool:
        return value in self._values


REGISTRY = SecretRegistry()
_install_lock = threading.Lock()
_installed = False


def register_secret(value: object) -> None:
    """Register a secret in the process-wide registry and make sure log masking is on."""
    REGISTRY.add(value)
    install_log_masking()


#: A JSON Web Token: three base64url segments, the first one a JSON object ("eyJ" = '{"').
JWT_PATTERN = r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"


def register_secret_pattern(pattern: str) -> None:
    """Mask every string matching ``pattern`` (e.g. :data:`JWT_PATTERN`) in all output."""
    REGISTRY.add_pattern(pattern)
    install_log_masking()


def mask(text: str) -> str:
    """Mask every registered secret in ``text``."""
    return REGISTRY.mask(text)


def install_log_masking() -> None:
    """Wrap the log record factory once so that every record is masked as it is created."""
    global _installed  # noqa: PLW0603
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def masked_record(*args: t.Any, **kwargs: t.Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _mask_record(record)
            return record

        logging.setLogRecordFactory(masked_record)
        _installed = True


def _mask_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        message = f"{record.msg!s} {record.args!r}"
    record.msg = REGISTRY.mask(message)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = REGISTRY.mask(text)
        record.exc_info = None
    if record.stack_info:
        record.stack_info = REGISTRY.mask(record.stack_info)
