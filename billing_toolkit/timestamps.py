"""Timezone-aware UTC timestamps, parsed leniently and written in one canonical form.

The rule for naive input (documented in the README): a date or date-time without an offset is read
as UTC; a date alone means midnight UTC of that day.

Canonical form: ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``. It has a fixed width, so comparing two canonical
strings compares the instants they name; bookmarks rely on that.
"""

from __future__ import annotations

import datetime as dt

import pendulum

UTC = dt.timezone.utc


def parse_timestamp(value: str) -> dt.datetime:
    """Parse an ISO 8601 date or date-time into an aware UTC datetime.

    Raises:
        ValueError: if ``value`` is not a date or date-time.
    """
    if not isinstance(value, str) or not value.strip():
        msg = f"{value!r} is not an ISO 8601 date or date-time"
        raise ValueError(msg)
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            result = pendulum.parse(text, strict=False)
        except (ValueError, TypeError, pendulum.parsing.exceptions.ParserError) as exc:
            msg = f"{value!r} is not an ISO 8601 date or date-time"
            raise ValueError(msg) from exc
        if isinstance(result, pendulum.Date) and not isinstance(result, pendulum.DateTime):
            parsed = dt.datetime(result.year, result.month, result.day)
        elif isinstance(result, dt.datetime):
            parsed = result
        else:
            msg = f"{value!r} is not an ISO 8601 date or date-time"
            raise ValueError(msg) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(value: dt.datetime) -> str:
    """Write an aware datetime in the canonical UTC form."""
    if value.tzinfo is None:
        msg = "naive datetimes are ambiguous; attach a timezone first"
        raise ValueError(msg)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def normalize_timestamp(value: str) -> str:
    """Return the canonical UTC form of an ISO 8601 string (fast path when it already is)."""
    if len(value) == 32 and value.endswith("+00:00") and value[10] == "T" and value[19] == ".":
        return value
    return format_timestamp(parse_timestamp(value))


def utc_now() -> dt.datetime:
    """The current instant, aware, in UTC, truncated to whole seconds."""
    return dt.datetime.now(UTC).replace(microsecond=0)
