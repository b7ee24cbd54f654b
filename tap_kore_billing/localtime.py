"""Kore.ai's zone-less 12-hour timestamps (``03-10-2021 2:05:03 pm``), read in a configured zone.

The documented rule for the two hours a year a local time does not name one instant:

* **Ambiguous** (clocks go back, the local hour happens twice). A billing start takes the instant
  inside the window being read (the API selected the session by its true start) that is not after
  the billing start of the session listed before it (the API lists newest first); the latest such.
  A conversation start takes the latest instant not after the billing start; the two ends take the
  earliest instant not before it. Only a conversation that itself spans the repeated hour can still
  be read an hour off: its local times do not say which occurrence they mean.
* **Missing** (clocks go forward, the local time never happened): read with the offset in force
  before the change, i.e. as if the clocks had not yet moved. The API cannot produce such a time
  from a real instant; the rule only keeps the tap total.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from zoneinfo import ZoneInfo

from billing_toolkit.timestamps import format_timestamp

UTC = dt.timezone.utc
_PATTERN = re.compile(
    r"^\s*(\d{1,2})-(\d{1,2})-(\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?\s*([ap])\.?m\.?\s*$",
    re.IGNORECASE,
)


def local_candidates(text: str, zone: ZoneInfo) -> list[dt.datetime]:
    """The UTC instants ``text`` can name in ``zone``: one, two (ambiguous) or, if missing, the
    pre-change reading.

    Raises:
        ValueError: if ``text`` is not ``MM-DD-YYYY h:mm:ss am|pm``.
    """
    naive = parse_local(text)
    offsets = _hour_offsets(zone, naive.replace(minute=0, second=0))
    if offsets is not None:
        return [(naive - offset).replace(tzinfo=UTC) for offset in offsets]
    return _candidates(naive, zone)


def parse_local(text: str) -> dt.datetime:
    """The naive local time written ``MM-DD-YYYY h:mm:ss am|pm``; ValueError if it is not."""
    match = _PATTERN.match(text)
    if not match:
        msg = f"{text!r} is not a Kore.ai timestamp (MM-DD-YYYY h:mm:ss am|pm)"
        raise ValueError(msg)
    month, day, year, hour, minute, second, half = match.groups()
    hour_24 = int(hour) % 12 + (12 if half.lower() == "p" else 0)
    if not 1 <= int(hour) <= 12:
        msg = f"{text!r} has an hour outside 1-12"
        raise ValueError(msg)
    return dt.datetime(int(year), int(month), int(day), hour_24, int(minute), int(second))


@functools.lru_cache(maxsize=16384)
def _hour_offsets(zone: ZoneInfo, hour: dt.datetime) -> tuple[dt.timedelta, ...] | None:
    """The UTC offsets every local time of this hour can have (earliest instant first), or None
    when they differ within the hour (a change that is not on the hour, e.g. Lord Howe's).

    Local times are read thousands of times per hour of data: this keeps the zone arithmetic to
    once per local hour.
    """
    first = _candidates(hour, zone)
    last = _candidates(hour + dt.timedelta(minutes=59, seconds=59), zone)
    offsets = tuple(hour - c.replace(tzinfo=None) for c in first)
    if offsets != tuple(
        hour + dt.timedelta(minutes=59, seconds=59) - c.replace(tzinfo=None) for c in last
    ):
        return None
    return offsets


def _candidates(naive: dt.datetime, zone: ZoneInfo) -> list[dt.datetime]:
    found = []
    for fold in (0, 1):
        instant = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == naive and instant not in found:
            found.append(instant)
    if not found:  # a missing local time: read with the offset before the change
        found.append(naive.replace(tzinfo=zone, fold=0).astimezone(UTC))
    return sorted(found)


def utc_readings(text: str, zone: ZoneInfo) -> list[str]:
    """``local_candidates`` as canonical UTC texts (fixed width: their order is time order).

    The common form (``MM-DD-YYYY h:mm:ss am``, whole-hour offsets) is read by slicing, with the
    zone arithmetic done once per local hour; anything else takes the general path.
    """
    parts = text.split()
    if len(parts) == 3:
        day, clock, half = parts
        pieces = clock.split(":")
        if len(pieces) == 3:
            hour, minute, second = pieces
            if (
                len(minute) == 2
                and len(second) == 2
                and clock.isascii()
                and minute.isdigit()
                and second.isdigit()
                and minute < "60"
                and second < "60"
            ):
                prefixes = _hour_prefixes(zone, day, hour, half)
                if prefixes is not None:
                    return [f"{prefix}:{minute}:{second}.000000+00:00" for prefix in prefixes]
    return [format_timestamp(moment) for moment in local_candidates(text, zone)]


@functools.lru_cache(maxsize=16384)
def _hour_prefixes(zone: ZoneInfo, day: str, hour: str, half: str) -> tuple[str, ...] | None:
    """``YYYY-MM-DDTHH`` of each UTC reading of one local hour, or None if the fast path does
    not apply (an offset that is not whole hours, or a change within the hour)."""
    if half not in {"am", "pm", "AM", "PM"}:
        return None
    try:
        naive = parse_local(f"{day} {hour}:00:00 {half}")
    except ValueError:
        return None  # the general path raises the explanatory error
    offsets = _hour_offsets(zone, naive)
    if offsets is None or any(offset.total_seconds() % 3600 for offset in offsets):
        return None
    return tuple((naive - offset).strftime("%Y-%m-%dT%H") for offset in offsets)


def resolve_start(text: str, zone: ZoneInfo, low: str, high: str, not_after: str) -> str:
    """A billing start: inside ``[low, high)`` and, the API listing newest first, not after the
    session listed before it (``not_after``); the latest such instant. All canonical UTC texts."""
    candidates = utc_readings(text, zone)
    if len(candidates) == 1:
        return candidates[0]
    inside = [c for c in candidates if low <= c < high] or candidates
    ordered = [c for c in inside if c <= not_after]
    return max(ordered) if ordered else min(inside)


def resolve_not_after(text: str, zone: ZoneInfo, anchor: str) -> str:
    """A time that cannot follow ``anchor`` (a conversation's start): the latest such instant."""
    candidates = utc_readings(text, zone)
    if len(candidates) == 1:
        return candidates[0]
    before = [c for c in candidates if c <= anchor]
    return max(before) if before else min(candidates)


def resolve_not_before(text: str, zone: ZoneInfo, anchor: str) -> str:
    """A time that cannot precede ``anchor`` (an end): the earliest such instant."""
    candidates = utc_readings(text, zone)
    if len(candidates) == 1:
        return candidates[0]
    after = [c for c in candidates if c >= anchor]
    return min(after) if after else max(candidates)
