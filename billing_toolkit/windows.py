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
