"""Settings every windowed billing tap shares: declared once here, validated once here.

Each tap adds these properties to its own ``config_jsonschema`` (with its own defaults) and turns the
validated config into explicit values with :func:`window_settings`, :func:`retry_policy` and
:func:`timeouts`. Validation returns one line per problem, each naming the setting at fault.
"""

from __future__ import annotations

import datetime as dt
import decimal
import difflib
import ipaddress
import json
import math
import re
import ssl
import typing as t
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from singer_sdk import typing as th

from billing_toolkit.http import RetryPolicy, Timeouts
from billing_toolkit.secrets import MIN_SECRET_LENGTH
from billing_toolkit.timestamps import parse_timestamp, utc_now
from billing_toolkit.transport import trust_context

if t.TYPE_CHECKING:
    from jsonschema import ValidationError

#: Dates outside this range are refused: they are typos, not billing periods.
EARLIEST_DATE = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


#: The date forms a config accepts: an ISO 8601 calendar date, optionally with a time and an offset.
#: The timestamp parser behind it is lenient (it reads "12" as the 12th of the current month and
#: "now" as a moving instant), which is right for API values but not for a billing period.
ISO_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)

#: Upper bounds that keep date arithmetic in range; larger values are typos.
MAX_WINDOW_DAYS = 3660
MAX_LOOKBACK_MINUTES = 60 * 24 * 366
#: Pages one pass over a window may take before paging is declared endless.
DEFAULT_MAX_PAGES_PER_WINDOW = 100_000


def window_properties(*, window_days: float | None, lookback_minutes: int) -> list[th.Property]:
    """The date-range, window, timeout and retry settings, with this tap's defaults.

    ``window_days=None`` leaves out ``window_size_days``, for taps whose windows are calendar
    periods.
    """
    properties: list[th.Property] = [
        th.Property(
            "start_date",
            th.DateTimeType,
            required=True,
            title="Start date",
            description=(
                "Earliest event time to extract, ISO 8601. Without an offset it is read as UTC; "
                "a date alone means midnight UTC."
            ),
        ),
        th.Property(
            "end_date",
            th.DateTimeType,
            title="End date",
            description=(
                "Exclusive upper bound of the extraction, ISO 8601 (same rule for naive values). "
                "Default: the time the run starts."
            ),
        ),
        th.Property(
            "lookback_minutes",
            th.IntegerType(minimum=0, maximum=MAX_LOOKBACK_MINUTES),
            default=lookback_minutes,
            title="Lookback (minutes)",
            description=(
                "Each run starts this long before the saved bookmark, so that late-arriving events "
                "are read again (the primary key lets the target update them)."
            ),
        ),
        th.Property(
            "connect_timeout_seconds",
            th.NumberType,
            default=10,
            title="Connect timeout (seconds)",
            description="Time allowed to open a connection to the API.",
        ),
        th.Property(
            "read_timeout_seconds",
            th.NumberType,
            default=60,
            title="Read timeout (seconds)",
            description="Time allowed between bytes of a response before the request is retried.",
        ),
        th.Property(
            "retry_max_tries",
            th.IntegerType(minimum=1, maximum=100),
            default=8,
            title="Retry: attempts",
            description=(
                "Attempts per request (the first included) on 429, 5xx, timeouts, dropped "
                "connections and truncated bodies. Other 4xx fail at once."
            ),
        ),
        th.Property(
            "retry_initial_delay_seconds",
            th.NumberType,
            default=1,
            title="Retry: first delay (seconds)",
            description=(
                "First backoff delay; it doubles per attempt (with jitter) up to 60 s. "
                "A Retry-After header from the API takes precedence."
            ),
        ),
        th.Property(
            "retry_max_wait_seconds",
            th.NumberType,
            default=600,
            title="Retry: total wait cap (seconds)",
            description="The most a single request may spend waiting between its attempts.",
        ),
        th.Property(
            "max_pages_per_window",
            th.IntegerType(minimum=1, maximum=10_000_000),
            default=DEFAULT_MAX_PAGES_PER_WINDOW,
            title="Paging guard: pages per window",
            description=(
                "A window that needs more pages than this fails the run (paging that never ends). "
                "Raise it only for a window that truly holds more than this many pages of data."
            ),
        ),
        th.Property(
            "ca_bundle_path",
            th.StringType,
            title="CA bundle (PEM file)",
            description=(
                "Path of a PEM file of CA certificates to trust in addition to the default ones, "
                "e.g. a corporate TLS-inspecting proxy's CA or a private CA of the API host. TLS "
                "certificates are always verified: there is no setting to turn verification off, "
                "and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE are not read."
            ),
        ),
    ]
    if window_days is not None:
        properties.insert(
            2,
            th.Property(
                "window_size_days",
                th.NumberType,
                default=window_days,
                title="Window size (days)",
                description=(
                    "Length of one date window. State is saved after every completed window, so "
                    "an interrupted run re-reads at most about one window. Fractions are allowed."
                ),
            ),
        )
    return properties


@dataclass(frozen=True)
class WindowSettings:
    """Explicit date-range settings of one run."""

    start: dt.datetime
    end: dt.datetime
    #: None where the tap plans calendar periods instead (Evo Voice declares no window size).
    window_size: dt.timedelta | None
    lookback: dt.timedelta


def window_settings(
    *,
    start_date: str,
    end_date: str | None,
    window_size_days: float | None,
    lookback_minutes: int,
    now: dt.datetime | None = None,
) -> WindowSettings:
    """The run's date range from validated settings (``end`` defaults to ``now``)."""
    current = now or utc_now()
    # A bookmark must never pass the present: events after it do not exist yet.
    end = min(parse_timestamp(end_date), current) if end_date else current
    return WindowSettings(
        start=parse_timestamp(start_date),
        end=end,
        window_size=None if window_size_days is None else dt.timedelta(days=window_size_days),
        lookback=dt.timedelta(minutes=lookback_minutes),
    )


def retry_policy(*, max_tries: int, initial_delay: float, max_total_wait: float) -> RetryPolicy:
    """How failed requests are retried: doubling waits from ``initial_delay``, each at most a
    minute (or ``initial_delay`` when larger), ``max_tries`` attempts and ``max_total_wait``
    seconds of waiting at most."""
    return RetryPolicy(
        max_tries=max_tries,
        initial_delay=initial_delay,
        max_delay=max(60.0, initial_delay),
        max_total_wait=max_total_wait,
    )


def timeouts(*, connect: float, read: float) -> Timeouts:
    return Timeouts(connect=connect, read=read)


def validate_window_settings(
    config: t.Mapping[str, t.Any],
    *,
    max_window_days: float | None = None,
) -> list[str]:
    """Problems with the date-range, window, timeout and retry settings, one line each."""
    errors: list[str] = []
    start = _check_date(config, "start_date", errors, required=True)
    end = _check_date(config, "end_date", errors, required=False)
    if start and end and end <= start:
        errors.append(
            f"end_date ({end.isoformat()}) must be after start_date ({start.isoformat()}): "
            "the range [start_date, end_date) is empty"
        )
    if start and not end and start > utc_now():
        errors.append(
            f"start_date ({start.isoformat()}) is in the future: there is nothing to read"
        )
    size = config.get("window_size_days")
    if size is not None:
        if not _is_number(size) or size * 86400 < 1 or size > MAX_WINDOW_DAYS:
            errors.append(
                f"window_size_days must be a number of days from 1 second to {MAX_WINDOW_DAYS}, got {show(size)}"
            )
        elif max_window_days is not None and size > max_window_days:
            errors.append(
                f"window_size_days ({size}) is larger than the API allows ({max_window_days} days)"
            )
    # Whole-number bounds are in the schema; number bounds are checked here, since a schema's
    # minimum and maximum let NaN through (every comparison with NaN is false).
    for key in ("connect_timeout_seconds", "read_timeout_seconds"):
        value = config.get(key)
        if value is not None and (not _is_number(value) or not 0 < value <= 3600):
            errors.append(
                f"{key} must be a number of seconds above 0 and at most 3600, got {show(value)}"
            )
    for key in ("retry_initial_delay_seconds", "retry_max_wait_seconds"):
        value = config.get(key)
        if value is not None and (not _is_number(value) or not 0 <= value <= 86400):
            errors.append(f"{key} must be a number of seconds from 0 to 86400, got {show(value)}")
    errors.extend(validate_ca_bundle(config))
    return errors


#: What a PEM certificate starts with; a CA bundle without one trusts nothing.
PEM_CERTIFICATE_MARKER = b"-----BEGIN CERTIFICATE-----"


def validate_ca_bundle(config: t.Mapping[str, t.Any], key: str = "ca_bundle_path") -> list[str]:
    """The CA bundle, when set, must be a readable PEM file whose certificates load.

    Checked up front so that a wrong path fails the run before any request, in one line, instead
    of as a TLS failure that would look like the API's fault.
    """
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, str) or not value.strip():
        return [f"{key} must be the path of a PEM file of CA certificates (a non-blank string)"]
    path = Path(value)
    try:
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as exc:  # e.g. a name too long for the file system
        return [f"{key}: {show(value)} is not a usable path ({type(exc).__name__})"]
    if not exists:
        return [f"{key}: no such file {show(value)}"]
    if not is_file:
        return [f"{key}: {show(value)} is not a file (give one PEM file of CA certificates)"]
    try:
        content = path.read_bytes()
    except OSError as exc:
        return [f"{key}: {value!r} cannot be read ({exc.strerror or exc})"]
    if PEM_CERTIFICATE_MARKER not in content:
        return [f"{key}: {value!r} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)"]
    try:
        trust_context(value)  # loaded exactly as the transport will load it
    except (ssl.SSLError, OSError) as exc:
        return [f"{key}: {value!r} holds a certificate that cannot be loaded ({exc})"]
    return []


def validate_api_url(config: t.Mapping[str, t.Any], key: str = "api_url") -> list[str]:
    """An API URL must be http(s) with a host; plain HTTP only to a loopback host.

    Plain HTTP anywhere else would send the credentials in clear text over the network. A URL is
    quoted in an error only with any user:password part replaced, since that part is a credential.
    """
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, str) or not value.strip():
        return [f"{key} must be a URL such as https://api.example.com/path, got {show(value)}"]
    shown = show(redact_url(value))
    if _has_space_or_control(value):
        return [f"{key} must not contain white space or control characters, got {shown}"]
    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return [f"{key} is not a valid URL ({exc}), got {shown}"]
    if parts.scheme not in {"http", "https"} or not host:
        return [f"{key} must be an http(s) URL with a host, got {shown}"]
    if parts.username or parts.password or "@" in parts.netloc:
        return [f"{key} must not carry credentials; use the secret settings instead"]
    if port == 0:
        return [f"{key} has port 0, which cannot be connected to, got {shown}"]
    if parts.scheme == "http" and not is_loopback_host(host):
        return [
            f"{key} uses plain http to {host}: credentials would travel unencrypted; "
            "use https (plain http is accepted only for loopback hosts such as 127.0.0.1)"
        ]
    return []


def redact_url(url: str) -> str:
    """``url`` with everything between the scheme and its last ``@`` replaced, for error messages.

    Cutting at the last ``@`` (not at the first ``/``) also hides a password that holds a ``/``.
    """
    if "@" not in url:
        return url
    head, _, tail = url.rpartition("@")
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(//)?", head)
    return (scheme.group(0) if scheme else "") + "***@" + tail


def validate_secret(config: t.Mapping[str, t.Any], key: str) -> list[str]:
    """A secret setting, when given, must be a non-blank string long enough to mask safely."""
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LENGTH:
        return [f"{key} must be a string of at least {MIN_SECRET_LENGTH} characters"]
    if value != value.strip():
        return [f"{key} has leading or trailing white space; remove it"]
    if has_control(value):
        return [f"{key} contains control characters (a newline?); it cannot be sent in a header"]
    return []


def validate_text(config: t.Mapping[str, t.Any], key: str, *, required: bool = False) -> list[str]:
    """A plain text setting, when given (or when required), must be a non-blank string."""
    value = config.get(key)
    if value is None:
        return [f"{key} is required"] if required else []
    if not isinstance(value, str) or not value.strip():
        return [f"{key} must be a non-blank string, got {show(value)}"]
    if value != value.strip():
        return [f"{key} has leading or trailing white space; remove it"]
    if has_control(value):
        return [f"{key} contains control characters (a newline?), got {show(value)}"]
    return []


def validate_string_list(config: t.Mapping[str, t.Any], key: str, *, forbid: str = "") -> list[str]:
    """A list setting must hold non-empty strings without the given characters."""
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        return [f"{key} must be a list of strings, got {show(value)}"]
    for item in value:
        if not isinstance(item, str) or not item.strip():
            return [f"{key} must hold non-empty strings, got {show(item)}"]
        if item != item.strip():
            return [f"{key} item {show(item)} has leading or trailing white space"]
        if has_control(item):
            return [f"{key} item {show(item)} contains control characters"]
        if any(ch in item for ch in forbid):
            return [
                f"{key} item {show(item)} must not contain any of {forbid!r}; list each item apart"
            ]
    if len(set(value)) != len(value):
        return [f"{key} lists an item twice"]
    return []


#: How much of a bad value an error quotes: enough to recognise it, never a wall of text.
SHOW_LIMIT = 60

_TYPE_WORDS = {
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def show(value: object) -> str:
    """A value as an error quotes it: on one line (repr escapes newlines) and at most 60 characters."""
    try:
        text = str(value) if _is_numeric(value) else repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return "a number too long to print"
    return text if len(text) <= SHOW_LIMIT else text[: SHOW_LIMIT - 3] + "..."


def describe_type(value: object) -> str:
    """What kind of value this is, for errors about secret settings (whose values are never quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if _is_numeric(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def unknown_setting_errors(config: t.Mapping[str, t.Any], declared: t.Collection[str]) -> list[str]:
    """One line per key the schema does not declare, suggesting the closest setting if there is one.

    A misspelt optional setting would otherwise be ignored and its default used without a word: a
    typo in ``end_date`` silently extracts up to now. The value is never quoted (it may be a secret).
    """
    names = sorted(declared)
    lowered = {name.lower(): name for name in names}
    errors = []
    for key in config:
        if key in declared:
            continue
        text = f"unknown setting {show(key)}"
        match = difflib.get_close_matches(str(key).lower(), list(lowered), n=1)
        if match:
            text += f"; did you mean {lowered[match[0]]!r}?"
        else:
            text += "; remove it (see --about for the settings of this tap)"
        errors.append(text)
    return errors


def without_optional_nulls(
    config: t.Mapping[str, t.Any], required: t.Collection[str]
) -> dict[str, t.Any]:
    """The config without ``null`` optional settings: null means "not set", so the default applies.

    Meltano leaves unset settings out in the same way. A ``null`` required setting stays, to be
    reported as missing.
    """
    return {k: v for k, v in config.items() if v is not None or k in required}


def schema_error_message(error: ValidationError, *, secrets: t.Collection[str]) -> str:
    """One line for a JSON-schema error, starting with the setting's name.

    The SDK writes ``<value> is not of type 'string' in config['token']``: the setting comes last
    and the value is quoted even when it is a secret. Here a secret's value is only described.
    """
    path = list(error.absolute_path)
    where = _path_text(path)
    if error.validator == "required":
        missing = [n for n in error.validator_value if error.message.startswith(f"{n!r} ")]
        return f"{missing[0] if missing else where or 'a setting'} is required"
    secret = bool(path) and path[0] in secrets
    got = describe_type(error.instance) if secret else show(error.instance)
    if error.validator == "type":
        if error.instance is None and len(path) == 1:
            return f"{where} is required (got null)"
        kinds = (
            error.validator_value
            if isinstance(error.validator_value, list)
            else [error.validator_value]
        )
        expected = " or ".join(_TYPE_WORDS.get(str(k), str(k)) for k in kinds if k != "null")
        return f"{where} must be {expected}, got {got}"
    if error.validator in {"minimum", "maximum"}:
        low, high = error.schema.get("minimum"), error.schema.get("maximum")
        whole = "integer" in (error.schema.get("type") or [])
        kind = "a whole number" if whole else "a number"
        span = (
            f"from {low} to {high}"
            if None not in (low, high)
            else (f"of at least {low}" if high is None else f"of at most {high}")
        )
        return f"{where} must be {kind} {span}, got {got}"
    if error.validator == "enum":
        options = ", ".join(str(v) for v in error.validator_value)
        return f"{where} must be one of {options}, got {got}"
    if secret:
        return f"{where} is not valid ({error.validator})"
    message = " ".join(error.message.split())
    return f"{where or 'config'}: {message[:200]}"


def config_file_errors(path: str) -> list[str]:
    """Why a --config file cannot be used, one line each; empty when it is a readable JSON object.

    Used when the SDK's own reader failed, so that the user reads the reason instead of a traceback.
    Non-finite numbers (NaN, Infinity) are not JSON; the settings holding them are named.
    """
    file = Path(path)
    where = f"config file {path!r}"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"{where} was not found"]
    except UnicodeDecodeError:
        return [f"{where} is not UTF-8 text"]
    except OSError as exc:
        return [f"{where} cannot be read: {exc.strerror or type(exc).__name__}"]
    try:
        value = json.loads(text, parse_float=decimal.Decimal)
    except json.JSONDecodeError as exc:
        return [f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
    except ValueError:  # e.g. an integer beyond Python's digit limit
        return [f"{where} holds a number too long to read"]
    if not isinstance(value, dict):
        return [f"{where} must hold a JSON object of settings, got {describe_type(value)}"]
    return non_finite_errors(value)


def non_finite_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    """Settings holding NaN or an infinity (a float or a Decimal), one line each: not JSON numbers,
    and a schema's bounds cannot judge them (a Decimal NaN makes the comparison raise)."""
    return [
        f"{key} must be a finite number: not-a-number and infinite values are not JSON"
        for key, item in config.items()
        if _holds_non_finite(item)
    ]


def environment_errors(
    schema: t.Mapping[str, t.Any], prefix: str, environ: t.Mapping[str, str]
) -> list[str]:
    """Environment variables that the SDK would fail to convert, one line each (values not quoted).

    With ``--config ENV`` the SDK calls ``int()`` on integer settings and parses JSON for object
    settings; a bad value would end in a traceback instead of a message naming the setting.
    """
    errors = []
    for key, subschema in schema.get("properties", {}).items():
        name = prefix + key.upper().replace("-", "_")
        if name not in environ:
            continue
        kinds = subschema.get("type", [])
        kinds = [kinds] if isinstance(kinds, str) else kinds
        text = environ[name]
        if "integer" in kinds and not re.fullmatch(r"\s*[+-]?\d{1,4000}\s*", text):
            errors.append(f"{key} (from {name}) must be a whole number")
        elif "object" in kinds and not _is_json_object(text):
            errors.append(f"{key} (from {name}) must be a JSON object")
    return errors


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _holds_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, decimal.Decimal):
        return not value.is_finite()
    if isinstance(value, list):
        return any(_holds_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_non_finite(item) for item in value.values())
    return False


def _path_text(path: list[t.Any]) -> str:
    text = str(path[0]) if path else ""
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _is_numeric(value: object) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_number(value: object) -> bool:
    """A finite int, float or Decimal: NaN compares false to every bound, so it would pass them."""
    if isinstance(value, bool):
        return False
    if isinstance(value, decimal.Decimal):
        return value.is_finite()
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)


def has_control(text: str) -> bool:
    """C0 and C1 control characters and DEL: they break headers, URLs and log lines."""
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


def _has_space_or_control(text: str) -> bool:
    return has_control(text) or any(ch.isspace() for ch in text)


def _check_date(
    config: t.Mapping[str, t.Any], key: str, errors: list[str], *, required: bool
) -> dt.datetime | None:
    value = config.get(key)
    if value is None or value == "":
        if required:
            errors.append(f"{key} is required (ISO 8601, e.g. 2024-01-01T00:00:00Z)")
        return None
    if isinstance(value, str) and has_control(value):
        errors.append(f"{key} contains control characters (a newline?), got {show(value)}")
        return None
    try:
        if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
            raise ValueError(value)
        parsed = parse_timestamp(value)
    except (ValueError, OverflowError):
        errors.append(
            f"{key} must be an ISO 8601 date or date-time (e.g. 2024-01-01), got {show(value)}"
        )
        return None
    if parsed < EARLIEST_DATE or parsed.year > 2100:
        errors.append(
            f"{key} ({show(value)}) is outside the supported range 2000-01-01 .. 2100-12-31"
        )
        return None
    return parsed
