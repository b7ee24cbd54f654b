"""The benchmark workloads: one sandbox dataset, tap config and expected figures per tap and size.

Each workload knows, from the dataset alone, how many records the tap must emit and the fewest
requests that can fetch them (every window asked once, plus one request per further page), so
that a run's request count can be checked against it.

- tap-luminai: ``size`` events over 2024-01-01..2024-07-01, every event type asked in one query,
  7-day windows (the tap's default), pages of ``LUMIN_PAGE_SIZE`` (the server decides; the seed
  names no size).
- tap-kore-billing: ``size`` billing sessions of 3 bots over 2023, 89-day windows (the tap's
  default and largest), ``limit`` = ``KORE_PAGE_SIZE``, the tap's largest page (the seed documents
  no cap, so the sandbox cap is raised to it). The tap throttles itself to 60 requests a minute per
  bot at most (config validation): 3 bots keep a 1M run under that, and the sandbox's own rate
  limiter is set out of the way.
- tap-evovoice: ``EVO_ACCOUNTS`` accounts x ``EVO_CUSTOMERS`` customers x as many days as ``size``
  needs (about 270 records a day), one request per day: request-bound by design.
"""

from __future__ import annotations

import bisect
import collections
import datetime as dt
import math
import typing as t
from dataclasses import dataclass, field

from billing_sandbox import registry
from billing_sandbox.credentials import (
    EVO_PASSWORD,
    EVO_USERNAME,
    KORE_CLIENT_ID,
    KORE_CLIENT_SECRET,
    LUMIN_TOKEN,
)
from billing_sandbox.evovoice import DayIndexedEvoAPI, EvoSettings, generate_usage
from billing_sandbox.kore import BOTS, KoreAPI, KoreSettings, generate_sessions
from billing_sandbox.luminai import EVENT_TYPES, LuminAPI, LuminSettings, generate_events
from billing_sandbox.registry import TapEntry
from billing_sandbox.server import SandboxAPI
from billing_toolkit.windows import plan_windows

UTC = dt.timezone.utc
LUMIN_PAGE_SIZE = 500
LUMIN_WINDOW_DAYS = 7
KORE_PAGE_SIZE = 10_000
KORE_WINDOW_DAYS = 89
EVO_ACCOUNTS = 30
EVO_CUSTOMERS = 10
#: Expected records a day: each customer has a row on ~80% of days, each account one row a day.
EVO_RECORDS_PER_DAY = EVO_ACCOUNTS * (EVO_CUSTOMERS * 0.8 + 1)


@dataclass
class Workload:
    """One tap against one dataset: what to start, what it must emit, what it may ask."""

    entry: TapEntry  # the tap, from the registry
    bare_api: str  # bench.bare_loop's name of the API
    api: SandboxAPI
    config_for: t.Callable[[str], dict[str, t.Any]]  # base URL -> tap config
    expected_records: int
    minimum_requests: int
    windows: int
    shape: dict[str, t.Any] = field(default_factory=dict)

    @property
    def tap(self) -> str:
        return self.entry.name

    @property
    def module(self) -> str:
        """``python -m MODULE`` runs the tap as shipped."""
        return self.entry.package

    @property
    def tap_class(self) -> str:
        """``module:Class``, for the SDK-default launcher."""
        return self.entry.target


def _pages(count: int, page_size: int) -> int:
    """Requests one window needs: one even when empty, then one per further page."""
    return max(1, math.ceil(count / page_size))


def _window_counts(starts: list[dt.datetime], spans: list[t.Any]) -> list[int]:
    """Items whose (sorted) time lies in each ``[start, end)`` window."""
    return [bisect.bisect_left(starts, w.end) - bisect.bisect_left(starts, w.start) for w in spans]


def luminai(size: int, *, seed: int = 3, page_size: int = LUMIN_PAGE_SIZE) -> Workload:
    start, end = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 7, 1, tzinfo=UTC)
    events = generate_events(seed=seed, count=size, start=start, end=end)
    api = LuminAPI(events, LuminSettings(token=LUMIN_TOKEN, page_size=page_size))
    del events
    spans = plan_windows(start, end, dt.timedelta(days=LUMIN_WINDOW_DAYS))
    counts = _window_counts([e.timestamp for e in api.events], spans)
    types = [kind for kind, _ in EVENT_TYPES]

    def config(base_url: str) -> dict[str, t.Any]:
        return {
            "api_url": base_url + api.settings.path,
            "token": LUMIN_TOKEN,
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "event_types": types,
            "window_size_days": LUMIN_WINDOW_DAYS,
        }

    return Workload(
        entry=registry.entry("tap-luminai"),
        bare_api="luminai",
        api=api,
        config_for=config,
        expected_records=sum(counts),
        minimum_requests=sum(_pages(n, page_size) for n in counts),
        windows=len(spans),
        shape={
            "events": size,
            "range": [start.isoformat(), end.isoformat()],
            "window_days": LUMIN_WINDOW_DAYS,
            "page_size": page_size,
            "event_types": len(types),
        },
    )


def kore(size: int, *, seed: int = 1, page_size: int = KORE_PAGE_SIZE) -> Workload:
    start, end = dt.datetime(2023, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 1, tzinfo=UTC)
    conversations = math.ceil(size / 1.2) + 10  # ~1.28 billing sessions per conversation
    sessions = generate_sessions(seed=seed, conversations=conversations, start=start, end=end)
    while len(sessions) < size:
        conversations *= 2
        sessions = generate_sessions(seed=seed, conversations=conversations, start=start, end=end)
    settings = KoreSettings(
        client_id=KORE_CLIENT_ID,
        client_secret=KORE_CLIENT_SECRET,
        page_cap=page_size,
        rate_limits=[(1_000_000_000, 1.0)],
    )
    api = KoreAPI(sessions[:size], settings)
    del sessions
    spans = plan_windows(start, end, dt.timedelta(days=KORE_WINDOW_DAYS))
    by_bot: dict[str, list[dt.datetime]] = collections.defaultdict(list)
    for session in api.sessions:  # in billing-start order
        by_bot[session.botId].append(session.billingStart)
    counts = [n for bot in BOTS for n in _window_counts(by_bot[bot], spans)]

    def config(base_url: str) -> dict[str, t.Any]:
        return {
            "api_url": base_url,
            "client_id": KORE_CLIENT_ID,
            "client_secret": KORE_CLIENT_SECRET,
            "bot_ids": list(BOTS),
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "timezone": "UTC",
            "page_size": page_size,
            "window_size_days": KORE_WINDOW_DAYS,
            "max_requests_per_minute": 60,
            "max_requests_per_hour": 1800,
        }

    return Workload(
        entry=registry.entry("tap-kore-billing"),
        bare_api="kore",
        api=api,
        config_for=config,
        expected_records=sum(counts),
        minimum_requests=sum(_pages(n, page_size) for n in counts),
        windows=len(counts),
        shape={
            "sessions": size,
            "bots": len(BOTS),
            "range": [start.isoformat(), end.isoformat()],
            "window_days": KORE_WINDOW_DAYS,
            "page_size": page_size,
        },
    )


def evo_accounts(count: int = EVO_ACCOUNTS) -> tuple[str, ...]:
    return tuple(f"acct-{n:03d}" for n in range(1, count + 1))


def evovoice(size: int, *, seed: int = 4) -> Workload:
    days = max(1, math.ceil(size / EVO_RECORDS_PER_DAY))
    end = dt.date(2024, 1, 1)
    start = end - dt.timedelta(days=days)
    rows = generate_usage(
        seed=seed,
        start=start,
        end=end,
        accounts=evo_accounts(),
        customers_per_account=EVO_CUSTOMERS,
    )
    api = DayIndexedEvoAPI(rows, EvoSettings(username=EVO_USERNAME, password=EVO_PASSWORD))
    account_days = {(row.day, row.account_id) for row in rows}

    def config(base_url: str) -> dict[str, t.Any]:
        return {
            "api_url": base_url,
            "username": EVO_USERNAME,
            "password": EVO_PASSWORD,
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
        }

    return Workload(
        entry=registry.entry("tap-evovoice"),
        bare_api="evovoice",
        api=api,
        config_for=config,
        expected_records=len(rows) + len(account_days),
        minimum_requests=days,
        windows=days,
        shape={
            "accounts": EVO_ACCOUNTS,
            "customers_per_account": EVO_CUSTOMERS,
            "days": days,
            "range": [start.isoformat(), end.isoformat()],
            "granularity": "day",
        },
    )


BUILDERS: dict[str, t.Callable[[int], Workload]] = {
    "tap-luminai": luminai,
    "tap-kore-billing": kore,
    "tap-evovoice": evovoice,
}
