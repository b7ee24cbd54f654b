"""HTTP behaviour shared by the taps: timeouts, retry policy, Retry-After, descriptive failures."""

from __future__ import annotations

import bisect
import datetime as dt
import email.utils
import random
import time
import typing as t
from dataclasses import dataclass

import msgspec
import requests

from billing_toolkit.secrets import mask

#: How much of a response body an error message quotes.
BODY_EXCERPT_CHARS = 2000


@dataclass(frozen=True)
class Timeouts:
    """Explicit connect and read timeouts, in seconds, as ``requests`` takes them."""

    connect: float
    read: float

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, Retry-After honoured, within a capped total wait.

    ``max_tries`` counts every attempt, the first included. ``max_total_wait`` caps the sum of the
    waits between attempts: a wait that would pass it (a long Retry-After, say) ends the retries.
    """

    max_tries: int = 8
    initial_delay: float = 1.0
    max_delay: float = 60.0
    max_total_wait: float = 600.0

    def waits(self, rng: random.Random | None = None) -> t.Generator[float, t.Any, None]:
        """A wait generator for ``backoff.on_exception``: it is sent each failure in turn.

        The n-th computed delay is ``initial_delay * 2**n`` capped at ``max_delay``, drawn uniformly
        from its upper half ("equal jitter"). A Retry-After on the failed response replaces it (plus a
        little jitter, never less than asked). Returning ends the retries: backoff then re-raises.
        """
        rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        waited = 0.0
        attempt = 0
        failure = yield 0.0  # priming value, discarded by backoff
        while True:
            hinted = retry_after_seconds(failure)
            if hinted is not None:
                wait = hinted + rng.uniform(0, min(1.0, self.initial_delay))
            else:
                ceiling = min(self.max_delay, self.initial_delay * (2**attempt))
                wait = rng.uniform(ceiling / 2, ceiling)
            if waited + wait > self.max_total_wait:
                return
            waited += wait
            attempt += 1
            failure = yield wait


def retry_after_seconds(failure: object, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait according to the failed response's Retry-After header, if it has one.

    Both forms are understood: delta-seconds (``120``) and an HTTP-date
    (``Wed, 21 Oct 2015 07:28:00 GMT``). A date in the past means no wait.
    """
    response = getattr(failure, "response", None)
    if not isinstance(response, requests.Response):
        return None
    header = response.headers.get("Retry-After")
    if header is None:
        return None
    header = header.strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    current = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - current).total_seconds())


def payload_text(request: requests.PreparedRequest | None) -> str:
    """The request payload as text, masked: what the Lumin.ai doc asks for when reporting a problem."""
    if request is None or request.body is None:
        return "(none)"
    body = request.body
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return mask(text)


def body_excerpt(response: requests.Response) -> str:
    """The response body as text, masked and cut to a readable length."""
    try:
        text = response.text
    except Exception:
        text = repr(response.content[:BODY_EXCERPT_CHARS])
    if not text:
        return "(empty)"
    if len(text) > BODY_EXCERPT_CHARS:
        text = f"{text[:BODY_EXCERPT_CHARS]}... ({len(text)} characters in all)"
    return mask(text)


def describe_response_failure(response: requests.Response, problem: str) -> str:
    """One message naming the URL, the payload, the status and the body of a failed request."""
    request = response.request
    method = request.method if request is not None else "?"
    url = mask(response.url or (request.url if request is not None else "?") or "?")
    return mask(
        f"{problem}: {method} {url} answered HTTP {response.status_code} {response.reason or ''}".rstrip()
        + f". Request payload: {payload_text(request)}. Response body: {body_excerpt(response)}"
    )


def describe_transport_failure(request: requests.PreparedRequest, error: BaseException) -> str:
    """One message naming the URL and payload of a request that got no usable response."""
    return mask(
        f"{request.method} {request.url} failed without a usable response "
        f"({type(error).__name__}: {error}). Request payload: {payload_text(request)}"
    )


#: msgspec's decoder: the same values as ``json.loads`` (NaN and Infinity refused), about twice
#: as fast on the pages the taps read.
_decode = msgspec.json.Decoder().decode
_decode_top = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw]).decode


def decode_json(response: requests.Response, lazy_list: str | None = None) -> t.Any:
    """Decode a JSON body; raise ``ValueError`` naming the problem if it is not JSON.

    ``lazy_list``: the key of the list of records in an object body. Its items are left as raw JSON
    (``msgspec.Raw``, views into the body, decoded one at a time with :func:`decode_item`), so a page
    of many records never sits in memory as that many dicts at once.
    """
    content = response.content
    try:
        if lazy_list is not None:
            try:
                top = _decode_top(content)
                items = top.get(lazy_list)
                body = {key: _decode(raw) for key, raw in top.items() if key != lazy_list}
                if items is not None:
                    try:
                        body[lazy_list] = _decode_raw_list(items)
                    except msgspec.ValidationError:  # not a list: kept for validate_body to refuse
                        body[lazy_list] = _decode(items)
                return body
            except msgspec.ValidationError:
                pass  # not an object: decoded whole below, for validate_body to refuse
        return _decode(content)
    except (ValueError, UnicodeDecodeError, msgspec.DecodeError) as exc:
        msg = f"the response body is not valid JSON ({exc})"
        raise ValueError(msg) from exc


def decode_item(raw: t.Any) -> t.Any:
    """One record left raw by ``decode_json(..., lazy_list=...)`` (anything else is returned as is);
    ``ValueError`` if it is not valid JSON."""
    if not isinstance(raw, msgspec.Raw):
        return raw
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from exc


class RollingRateLimiter:
    """Keeps requests within several rolling limits at once (e.g. 60 a minute and 1,800 an hour).

    Each key (a bot, an account) has its own budget. ``acquire`` sleeps until one more request fits
    every limit, then counts it. Waits are totalled in ``waited`` so that runs can report them.
    """

    def __init__(
        self,
        limits: t.Sequence[tuple[int, float]],
        *,
        clock: t.Callable[[], float] = time.monotonic,
        sleep: t.Callable[[float], None] = time.sleep,
    ) -> None:
        if not limits or any(count < 1 or seconds <= 0 for count, seconds in limits):
            msg = "rate limits must be (count >= 1, seconds > 0) pairs"
            raise ValueError(msg)
        self.limits = sorted(limits, key=lambda limit: limit[1])
        self._longest = max(seconds for _, seconds in self.limits)
        self._sent: dict[str, list[float]] = {}
        self._clock = clock
        self._sleep = sleep
        self.waited = 0.0

    def delay(self, key: str = "") -> float:
        """Seconds to wait before one more request under ``key`` fits every limit."""
        now = self._clock()
        sent = self._sent.setdefault(key, [])
        expired = bisect.bisect_right(sent, now - self._longest)
        if expired:
            del sent[:expired]
        wait = 0.0
        for count, seconds in self.limits:
            recent = len(sent) - bisect.bisect_right(sent, now - seconds)
            if recent >= count:
                wait = max(wait, sent[len(sent) - count] + seconds - now)
        return wait

    def acquire(self, key: str = "") -> float:
        """Wait until one more request fits, count it, and return how long it waited."""
        wait = self.delay(key)
        if wait > 0:
            self._sleep(wait)
            self.waited += wait
        self._sent.setdefault(key, []).append(self._clock())
        return wait

    def describe(self) -> str:
        return " and ".join(f"{count} per {seconds:g} s" for count, seconds in self.limits)
