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
import re
from zoneinfo import ZoneInfo

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
    match = _PATTERN.match(text)
    if not match:
        msg = f"{text!r} is not a Kore.ai timestamp (MM-DD-YYYY h:mm:ss am|pm)"
        raise ValueError(msg)
    month, day, year, hour, minute, second, half = match.groups()
    hour_24 = int(hour) % 12 + (12 if half.lower() == "p" else 0)
    if not 1 <= int(hour) <= 12:
        msg = f"{text!r} has an hour outside 1-12"
        raise ValueError(msg)
    naive = dt.datetime(int(year), int(month), int(day), hour_24, int(minute), int(second))
    found = []
    for fold in (0, 1):
        instant = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == naive and instant not in found:
            found.append(instant)
    if not found:  # a missing local time: read with the offset before the change
        found.append(naive.replace(tzinfo=zone, fold=0).astimezone(UTC))
    return sorted(found)


def resolve_start(
    text: str, zone: ZoneInfo, start: dt.datetime, end: dt.datetime, not_after: dt.datetime
) -> dt.datetime:
    """A billing start: inside ``[start, end)`` and, the API listing newest first, not after the
    session listed before it (``not_after``); the latest such instant."""
    candidates = local_candidates(text, zone)
    inside = [c for c in candidates if start <= c < end] or candidates
    ordered = [c for c in inside if c <= not_after]
    return max(ordered) if ordered else min(inside)


def resolve_not_after(text: str, zone: ZoneInfo, anchor: dt.datetime) -> dt.datetime:
    """A time that cannot follow ``anchor`` (a conversation's start): the latest such instant."""
    candidates = local_candidates(text, zone)
    before = [c for c in candidates if c <= anchor]
    return max(before) if before else min(candidates)


def resolve_not_before(text: str, zone: ZoneInfo, anchor: dt.datetime) -> dt.datetime:
    """A time that cannot precede ``anchor`` (an end): the earliest such instant."""
    candidates = local_candidates(text, zone)
    after = [c for c in candidates if c >= anchor]
    return min(after) if after else max(candidates)
