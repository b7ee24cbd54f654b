"""Date windows: the unit of work and of state.

A stream reads ``[start, end)`` as consecutive half-open windows. A window is complete once every page
of it has been emitted; only then does its end become a bookmark.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

from billing_toolkit.timestamps import format_timestamp


@dataclass(frozen=True)
class DateWindow:
    """The half-open interval ``[start, end)`` of aware UTC datetimes."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            msg = f"a window must end after it starts: {self.start} >= {self.end}"
            raise ValueError(msg)

    @cached_property
    def start_text(self) -> str:
        """Canonical UTC text of ``start`` (compared with record times for every record)."""
        return format_timestamp(self.start)

    @cached_property
    def end_text(self) -> str:
        return format_timestamp(self.end)

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def plan_windows(start: dt.datetime, end: dt.datetime, size: dt.timedelta) -> list[DateWindow]:
    """Split ``[start, end)`` into consecutive windows of ``size`` (the last one may be shorter)."""
    if size <= dt.timedelta(0):
        msg = "window size must be positive"
        raise ValueError(msg)
    windows: list[DateWindow] = []
    cursor = start
    while cursor < end:
        upper = min(cursor + size, end)
        windows.append(DateWindow(cursor, upper))
        cursor = upper
    return windows


#: Calendar periods (UTC) a window may be aligned to.
PERIODS = ("hour", "day", "month")


def period_start(moment: dt.datetime, period: str) -> dt.datetime:
    """The start of the UTC ``period`` (hour, day or month) holding ``moment``."""
    moment = moment.astimezone(dt.timezone.utc)
    if period == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if period == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    msg = f"unknown period {period!r}; known: {', '.join(PERIODS)}"
    raise ValueError(msg)


def next_period(start: dt.datetime, period: str) -> dt.datetime:
    """The start of the period after the one starting at ``start``."""
    if period == "hour":
        return start + dt.timedelta(hours=1)
    if period == "day":
        return start + dt.timedelta(days=1)
    return (start.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def plan_periods(
    start: dt.datetime, end: dt.datetime, period: str, *, max_span: dt.timedelta
) -> list[DateWindow]:
    """Windows of whole UTC periods covering ``[start, end)``: the first starts where the period
    holding ``start`` starts, each holds as many whole periods as fit in ``max_span`` (at least one),
    and the last ends at ``end`` (so a period still running is cut at ``end``)."""
    windows: list[DateWindow] = []
    cursor = period_start(start, period)
    while cursor < end:
        upper = next_period(cursor, period)
        while upper < end and next_period(upper, period) - cursor <= max_span:
            upper = next_period(upper, period)
        windows.append(DateWindow(cursor, min(upper, end)))
        cursor = upper
    return windows
