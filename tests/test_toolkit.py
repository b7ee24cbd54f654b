"""Building blocks of the shared toolkit: timestamps, windows, Retry-After, the retry budget."""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import random

import pytest
import requests

from billing_toolkit.http import RetryPolicy, retry_after_seconds
from billing_toolkit.settings import is_loopback_host
from billing_toolkit.timestamps import format_timestamp, normalize_timestamp, parse_timestamp
from billing_toolkit.windows import plan_windows

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", "2024-01-01T00:00:00.000000+00:00"),
        ("2024-01-01T10:00:00", "2024-01-01T10:00:00.000000+00:00"),
        ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00.000000+00:00"),
        ("2019-02-01T01:00:00-08:00", "2019-02-01T09:00:00.000000+00:00"),
        ("2019-02-24T21:29:36.798081+00:00", "2019-02-24T21:29:36.798081+00:00"),
        ("2019-02-24 21:29:36+01:00", "2019-02-24T20:29:36.000000+00:00"),
    ],
)
def test_timestamps_are_read_as_utc_with_naive_meaning_utc(text, expected):
    assert normalize_timestamp(text) == expected
    assert format_timestamp(parse_timestamp(text)) == expected


def test_windows_cover_the_range_half_open_without_gaps():
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    end = dt.datetime(2024, 1, 10, 6, tzinfo=UTC)
    windows = plan_windows(start, end, dt.timedelta(days=4))
    assert [w.start for w in windows] == [
        start,
        start + dt.timedelta(days=4),
        start + dt.timedelta(days=8),
    ]
    assert windows[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))


def _failure(header: str) -> Exception:
    response = requests.Response()
    response.status_code = 429
    response.headers["Retry-After"] = header
    error = Exception()
    error.response = response  # type: ignore[attr-defined]
    return error


def test_retry_after_in_seconds_and_as_http_date():
    assert retry_after_seconds(_failure("7")) == 7
    now = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    date = email.utils.format_datetime(now + dt.timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(_failure(date), now=now) == 30
    assert retry_after_seconds(_failure("Wed, 21 Oct 2015 07:28:00 GMT"), now=now) == 0
    assert retry_after_seconds(_failure("soon")) is None


def test_backoff_grows_with_jitter_and_stops_at_the_total_wait_cap():
    policy = RetryPolicy(initial_delay=1, max_delay=8, max_total_wait=20)
    waits = policy.waits(random.Random(1))
    next(waits)
    seen = []
    try:
        while True:
            seen.append(waits.send(Exception()))
    except StopIteration:
        pass
    assert 0.5 <= seen[0] <= 1
    assert 1 <= seen[1] <= 2
    assert 2 <= seen[2] <= 4
    assert sum(seen) <= 20
    assert len(seen) >= 4


def test_retry_after_beyond_the_cap_ends_the_retries():
    waits = RetryPolicy(max_total_wait=10).waits(random.Random(1))
    next(waits)
    with pytest.raises(StopIteration):
        waits.send(_failure("3600"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("api.example.com", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback
