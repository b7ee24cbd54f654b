"""Building blocks of the shared toolkit: timestamps, windows, Retry-After, the retry budget."""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import random

import pytest
import requests

from billing_toolkit.http import RetryPolicy, RollingRateLimiter, retry_after_seconds
from billing_toolkit.secrets import mask
from billing_toolkit.settings import is_loopback_host
from billing_toolkit.timestamps import format_timestamp, normalize_timestamp, parse_timestamp
from billing_toolkit.windows import plan_windows
from tap_kore_billing.auth import KoreJWTAuth, mint_jwt

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


def test_backoff_never_waits_longer_than_its_maximum_delay():
    # Doubling from 1 s would pass 60 s at the seventh retry; every wait stays within max_delay.
    policy = RetryPolicy(max_tries=20, initial_delay=1, max_delay=60, max_total_wait=10_000)
    waits = policy.waits(random.Random(3))
    next(waits)
    seen = [waits.send(Exception()) for _ in range(12)]
    assert max(seen) <= 60
    assert all(30 <= wait <= 60 for wait in seen[7:]), seen  # the upper half of the ceiling


class _Clock:
    """A clock that moves only when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_lets_exactly_the_limit_through_each_rolling_window():
    clock = _Clock()
    limiter = RollingRateLimiter([(3, 60.0), (5, 3600.0)], clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(7):
        limiter.acquire("bot-1")
        sent.append(clock.now)
    # Three at once; the next two a minute after the first three (rolling); then the hour's budget
    # of five is spent: the sixth and seventh wait for the first three to leave the hour.
    assert sent[:3] == [0.0, 0.0, 0.0]
    assert sent[3:5] == [60.0, 60.0]
    assert sent[5] == 3600.0
    assert sent[6] == 3600.0
    # Another key has a budget of its own.
    clock_before = clock.now
    assert limiter.acquire("bot-2") == 0 and clock.now == clock_before


def test_rate_limiter_delay_is_zero_below_the_limit_and_exact_at_it():
    clock = _Clock()
    limiter = RollingRateLimiter([(2, 10.0)], clock=clock, sleep=clock.sleep)
    assert limiter.delay("k") == 0
    limiter.acquire("k")
    clock.now = 4.0
    limiter.acquire("k")
    assert limiter.delay("k") == 6.0  # the first of the two leaves the window at 10 s
    clock.now = 10.0
    assert limiter.delay("k") == 0


def test_a_minted_jwt_is_masked_wherever_it_appears():
    KoreJWTAuth(client_id="cs-mask-test", client_secret="mask-test-secret-4f1c", jwt=None)
    token = mint_jwt("cs-mask-test", "mask-test-secret-4f1c")
    text = f"request failed: auth header {token} was refused; body quoted {token[:-1]}x"
    masked = mask(text)
    assert token not in masked
    assert token.split(".")[2] not in masked  # not even its signature
    assert "mask-test-secret-4f1c" not in mask("secret mask-test-secret-4f1c")
