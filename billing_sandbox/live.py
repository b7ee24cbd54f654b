"""Live datasets: generated day by day from a seed, so that they are the same across restarts and
grow as time passes (the current day only up to now). The demo's second run sees new data."""

from __future__ import annotations

import datetime as dt
import typing as t
import zlib

from billing_sandbox.evovoice import DailyUsage, generate_usage
from billing_sandbox.kore import KoreSession, generate_sessions
from billing_sandbox.luminai import LuminEvent, generate_events

UTC = dt.timezone.utc


def _days(days: int, now: dt.datetime) -> t.Iterator[tuple[int, dt.datetime, dt.datetime]]:
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for back in range(days, -1, -1):
        start = today - dt.timedelta(days=back)
        yield zlib.crc32(start.date().isoformat().encode()), start, start + dt.timedelta(days=1)


def live_events(*, seed: int, days: int, per_day: int, now: dt.datetime) -> list[LuminEvent]:
    events: list[LuminEvent] = []
    for salt, start, end in _days(days, now):
        day = generate_events(seed=seed * 1_000_003 + salt, count=per_day, start=start, end=end)
        events += [e for e in day if e.timestamp < now]
    return events


def live_sessions(*, seed: int, days: int, per_day: int, now: dt.datetime) -> list[KoreSession]:
    sessions: list[KoreSession] = []
    for salt, start, end in _days(days, now):
        day = generate_sessions(
            seed=seed * 1_000_003 + salt, conversations=per_day, start=start, end=end
        )
        sessions += [s for s in day if s.billingEnd <= now]
    return sessions


def live_usage(*, seed: int, days: int, now: dt.datetime) -> list[DailyUsage]:
    rows: list[DailyUsage] = []
    for salt, start, end in _days(days, now):
        day = generate_usage(seed=seed * 1_000_003 + salt, start=start.date(), end=end.date())
        if end > now:  # today: minutes so far
            share = (now - start) / (end - start)
            day = [
                DailyUsage(r.day, r.account_id, r.customer_id, int(r.minutes * share)) for r in day
            ]
        rows += day
    return rows
