"""Settings every windowed billing tap shares: declared once here, validated once here.

Each tap adds these properties to its own ``config_jsonschema`` (with its own defaults) and turns the
validated config into explicit values with :func:`window_settings`, :func:`retry_policy` and
:func:`timeouts`. Validation returns one line per problem, each naming the setting at fault.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

from singer_sdk import typing as th

from billing_toolkit.http import RetryPolicy, Timeouts
from billing_toolkit.secrets import MIN_SECRET_LENGTH
from billing_toolkit.timestamps import parse_timestamp, utc_now

#: Dates outside this range are refused: they are typos, not billing periods.
EARLIEST_DATE = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


#: Upper bounds that keep date arithmetic in range; larger values are typos.
MAX_WINDOW_DAYS = 3660
MAX_LOOKBACK_MINUTES = 60 * 24 * 366


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
            th.IntegerType,
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
            th.IntegerType,
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
    window_size: dt.timedelta
    lookback: dt.timedelta


def window_settings(
    config: t.Mapping[str, t.Any], *, now: dt.datetime | None = None
) -> WindowSettings:
    """Turn a validated config into the run's date range (``end`` defaults to ``now``)."""
    end_value = config.get("end_date")
    current = now or utc_now()
    # A bookmark must never pass the present: events after it do not exist yet.
    end = min(parse_timestamp(end_value), current) if end_value else current
    return WindowSettings(
        start=parse_timestamp(config["start_date"]),
        end=end,
        window_size=dt.timedelta(days=float(config.get("window_size_days", 1))),
        lookback=dt.timedelta(minutes=int(config.get("lookback_minutes", 0))),
    )


def retry_policy(config: t.Mapping[str, t.Any]) -> RetryPolicy:
    return RetryPolicy(
        max_tries=int(config.get("retry_max_tries", 8)),
        initial_delay=float(config.get("retry_initial_delay_seconds", 1)),
        max_delay=max(60.0, float(config.get("retry_initial_delay_seconds", 1))),
        max_total_wait=float(config.get("retry_max_wait_seconds", 600)),
    )


def timeouts(config: t.Mapping[str, t.Any]) -> Timeouts:
    return Timeouts(
        connect=float(config.get("connect_timeout_seconds", 10)),
        read=float(config.get("read_timeout_seconds", 60)),
    )


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
                f"window_size_days must be a number of days from 1 second to {MAX_WINDOW_DAYS}, got {size!r}"
            )
        elif max_window_days is not None and size > max_window_days:
            errors.append(
                f"window_size_days ({size}) is larger than the API allows ({max_window_days} days)"
            )
    for key, low, high in (
        ("lookback_minutes", 0, MAX_LOOKBACK_MINUTES),
        ("retry_max_tries", 1, 100),
    ):
        value = config.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
        ):
            errors.append(f"{key} must be a whole number from {low} to {high}, got {value!r}")
    for key in ("connect_timeout_seconds", "read_timeout_seconds"):
        value = config.get(key)
        if value is not None and (not _is_number(value) or not 0 < value <= 3600):
            errors.append(
                f"{key} must be a number of seconds above 0 and at most 3600, got {value!r}"
            )
    for key in ("retry_initial_delay_seconds", "retry_max_wait_seconds"):
        value = config.get(key)
        if value is not None and (not _is_number(value) or not 0 <= value <= 86400):
            errors.append(f"{key} must be a number of seconds from 0 to 86400, got {value!r}")
    return errors


def validate_api_url(config: t.Mapping[str, t.Any], key: str = "api_url") -> list[str]:
    """An API URL must be http(s) with a host; plain HTTP only to a loopback host.

    Plain HTTP anywhere else would send the credentials in clear text over the network.
    """
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, str) or not value.strip():
        return [f"{key} must be a URL such as https://api.example.com/path, got {value!r}"]
    try:
        parts = urlsplit(value.strip())
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        return [f"{key} is not a valid URL ({exc}), got {value!r}"]
    if parts.scheme not in {"http", "https"} or not host:
        return [f"{key} must be an http(s) URL with a host, got {value!r}"]
    if parts.username or parts.password:
        return [f"{key} must not carry credentials; use the secret settings instead"]
    if parts.scheme == "http" and not is_loopback_host(host):
        return [
            f"{key} uses plain http to {host}: credentials would travel unencrypted; "
            "use https (plain http is accepted only for loopback hosts such as 127.0.0.1)"
        ]
    return []


def validate_secret(config: t.Mapping[str, t.Any], key: str) -> list[str]:
    """A secret setting, when given, must be a non-blank string long enough to mask safely."""
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LENGTH:
        return [f"{key} must be a string of at least {MIN_SECRET_LENGTH} characters"]
    if value != value.strip():
        return [f"{key} has leading or trailing white space; remove it"]
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return [f"{key} contains control characters (a newline?); it cannot be sent in a header"]
    return []


def validate_text(config: t.Mapping[str, t.Any], key: str, *, required: bool = False) -> list[str]:
    """A plain text setting, when given (or when required), must be a non-blank string."""
    value = config.get(key)
    if value is None:
        return [f"{key} is required"] if required else []
    if not isinstance(value, str) or not value.strip():
        return [f"{key} must be a non-blank string, got {value!r}"]
    if value != value.strip():
        return [f"{key} has leading or trailing white space; remove it"]
    return []


def validate_string_list(config: t.Mapping[str, t.Any], key: str, *, forbid: str = "") -> list[str]:
    """A list setting must hold non-empty strings without the given characters."""
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        return [f"{key} must be a list of strings, got {value!r}"]
    for item in value:
        if not isinstance(item, str) or not item.strip():
            return [f"{key} must hold non-empty strings, got {item!r}"]
        if item != item.strip():
            return [f"{key} item {item!r} has leading or trailing white space"]
        if any(ch in item for ch in forbid):
            return [f"{key} item {item!r} must not contain any of {forbid!r}; list each item apart"]
    if len(set(value)) != len(value):
        return [f"{key} lists an item twice"]
    return []


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _check_date(
    config: t.Mapping[str, t.Any], key: str, errors: list[str], *, required: bool
) -> dt.datetime | None:
    value = config.get(key)
    if value is None or value == "":
        if required:
            errors.append(f"{key} is required (ISO 8601, e.g. 2024-01-01T00:00:00Z)")
        return None
    try:
        parsed = parse_timestamp(value)
    except (ValueError, OverflowError):
        errors.append(
            f"{key} must be an ISO 8601 date or date-time (e.g. 2024-01-01), got {value!r}"
        )
        return None
    if parsed < EARLIEST_DATE or parsed.year > 2100:
        errors.append(f"{key} ({value!r}) is outside the supported range 2000-01-01 .. 2100-12-31")
        return None
    return parsed
