"""The windowed incremental REST stream every billing tap builds on.

Data flows: partition (SDK context) -> date windows -> passes over a window's pages -> records ->
Singer messages.

State, per partition, is moved by completed windows only, never by single records: the API returns
the items of a window in no particular order, so a record's timestamp says nothing about which
older records have been delivered. After the last page of a window has been emitted, the window's
end becomes the bookmark and a STATE message is written. A run killed at any moment therefore
resumes, from the last STATE it printed, at the start of the window it was reading (minus the
lookback): nothing is lost and at most about one window is read again.

Streams whose query can cover several keys at once (Lumin.ai event types) keep one bookmark per
key under ``bookmarks_by_key``; a key added to the config later has no bookmark and is read from
``start_date``, alone, until it catches up with the others. The SDK's ``replication_key_value`` is
kept equal to the oldest of those bookmarks: the point up to which every key is complete.

The contract a stream implements
--------------------------------
A window is a :class:`~billing_toolkit.windows.DateWindow` of aware UTC datetimes. Each pass over
the pages of one window of one partition is a :class:`WindowPass`, handed to every hook that builds
a request or reads an answer. What a stream keeps for the length of a pass (an order anchor, the
totals its pages reported, where a job stands) lives on its own subclass of ``WindowPass`` named in
``pass_type``, never on the stream. The SDK's private names are used in ``sdk_seams`` only.

Class attributes: ``window_field`` (required: the record field, canonical UTC text, that places a
record in a window), ``min_window``, ``dedupe_within_window``, ``window_rereads``,
``lazy_list_key``, ``pass_type``.

Hooks, in the order a run calls them; each may assume what the ones above it established:

- ``partitions`` (SDK): the partitions, each with its own state.
- ``query_keys(partition)``: keys one query covers, each with its own bookmark (default: none).
- ``split_range(start, end)``: a range cut into windows (default: ``window_size_days``).
- ``log_plan(partition, plan)``: say what will be read.
- ``read_pages(p)``: the page loop of one pass; override only to answer without a request
  (Evo Voice takes an answer the other usage stream already fetched).
- ``new_paginator(p)``: the paging of one pass (default: one page). ``p.paginator`` is it.
- ``page_request(p, token)``: method, URL, query and JSON body of one page; by default
  ``http_method``, ``get_url(p.partition)``, ``request_params(p, token)`` and
  ``request_body(p, token)``.
- ``validate_response(response)`` (SDK): status and transport; extend it, keep ``super()``.
- ``validate_body(body, response)``: a decoded 2xx body; raise ``ResponseShapeError`` (fatal),
  ``RetriableAPIError``, or ``WindowTooLarge`` on a first page that cannot hold the whole window.
- ``parse_page(response, p)``: the page's items (``decoded_body(response)`` is its JSON).
- ``record_in_window(record, window)``: whether a record belongs to the window (default: its
  ``window_field`` inside it); items outside are left to the window they belong to.
- ``window_changed_while_read(p)``: after a pass, whether the window moved (then read again).
- ``throttle_key(context)`` and ``rate_limiter``: the client-side rate budget a request spends.
"""

from __future__ import annotations

import abc
import collections
import datetime as dt
import typing as t
import weakref
from dataclasses import dataclass
from functools import cached_property

import backoff
import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import BaseAPIPaginator, SinglePagePaginator

from billing_toolkit import settings as common
from billing_toolkit.http import (
    RetryPolicy,
    RollingRateLimiter,
    Timeouts,
    decode_json,
    describe_response_failure,
    describe_transport_failure,
)
from billing_toolkit.records import RecordShape, RecordShapeError
from billing_toolkit.sdk_seams import StreamSeams
from billing_toolkit.secrets import mask
from billing_toolkit.settings import WindowSettings
from billing_toolkit.timestamps import format_timestamp, normalize_timestamp, parse_timestamp
from billing_toolkit.windows import DateWindow, plan_windows

if t.TYPE_CHECKING:
    from backoff.types import Details
    from singer_sdk.helpers.types import Context, RequestFunc

BOOKMARKS_BY_KEY = "bookmarks_by_key"

#: Failures worth another attempt: throttling, server errors, timeouts, dropped connections and
#: bodies cut short (``validate_response`` raises RetriableAPIError for a 2xx body that is not JSON).
RETRIABLE_STATUSES = frozenset({408, 425, 429})
RETRIABLE_FAILURES: tuple[type[Exception], ...] = (
    RetriableAPIError,
    ConnectionResetError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class ResponseShapeError(FatalAPIError):
    """A response that is valid JSON but not what the API documents."""


#: Pages in a row that bring no item, each saying there is more, before paging is declared endless.
MAX_EMPTY_PAGES_IN_A_ROW = 500


class WindowTooLarge(Exception):
    """Raised while reading a window's first page: the API cannot return all of it at once.

    The stream then splits the window in two and reads each half, down to ``min_window``.
    """


@dataclass(eq=False)
class WindowPass:
    """One pass over the pages of one window of one partition: what the page hooks are given.

    ``paginator`` is where paging stands and ``response`` the last answer read (both set by
    ``read_pages``); ``pages``, ``items_on_page`` and ``empty_pages_in_a_row`` are the paging guard's.
    """

    partition: Context | None
    window: DateWindow
    #: The query keys this pass covers (e.g. Lumin.ai event types); empty when the stream has none.
    keys: tuple[str, ...] = ()
    #: 0 for the first pass over the window, then 1, 2, ... for each re-read.
    attempt: int = 0
    paginator: BaseAPIPaginator[t.Any] | None = None
    response: requests.Response | None = None
    pages: int = 0
    items_on_page: int = 0
    empty_pages_in_a_row: int = 0

    def part(self, key: str) -> t.Any:
        """A value of the partition (None when there is no partition or it has no such key)."""
        return (self.partition or {}).get(key)

    def metrics_context(self) -> dict[str, t.Any]:
        """What the SDK's request metrics and the throttle see: the partition, and the window in
        words."""
        context = {**(self.partition or {}), "window": str(self.window)}
        if self.keys:
            context["keys"] = ",".join(self.keys)
        return context


@dataclass(frozen=True)
class PageRequest:
    """One page's request: sent with the stream's headers, authenticator and retries."""

    method: str
    url: str
    params: t.Mapping[str, t.Any] | None = None
    #: The JSON body (None: no body).
    body: t.Any = None


@dataclass
class SyncPlan:
    """The windows one partition will read in this run, and where each key starts."""

    windows: list[DateWindow]
    key_starts: dict[str, dt.datetime]

    def keys_due(self, window: DateWindow) -> tuple[str, ...]:
        return tuple(k for k, start in self.key_starts.items() if k and start <= window.start)


class BodyTokenPaginator(BaseAPIPaginator[str | None]):
    """Follows a paging token found in the JSON body.

    The end of paging is an absent, null or empty token. A token seen before in the same series is a
    loop in the API's paging: it fails loudly instead of reading forever.
    """

    def __init__(self, token_of: t.Callable[[requests.Response], t.Any]) -> None:
        super().__init__(None)
        self._token_of = token_of
        self._seen: set[str] = set()

    def get_next(self, response: requests.Response) -> str | None:
        token = self._token_of(response)
        if token is None or token == "":
            return None
        if not isinstance(token, str):
            token = str(token)
        if token in self._seen:
            msg = describe_response_failure(
                response, f"paging loop: the API returned token {token!r} a second time"
            )
            raise ResponseShapeError(msg)
        self._seen.add(token)
        return token


class WindowedRESTStream(StreamSeams, metaclass=abc.ABCMeta):
    """A REST stream read window by window, with state saved after every completed window.

    The hooks a stream implements, and what each may assume, are listed in the module docstring.
    """

    #: The SDK must not move the bookmark per record (see the module docstring).
    is_sorted = False
    #: The record field (canonical UTC text) that places a record in a window. It is fixed by the
    #: API, so a catalog that names another replication key cannot change what windows mean.
    window_field: t.ClassVar[str]
    #: The smallest window a too-large window may be split into before the stream fails loudly.
    min_window: t.ClassVar[dt.timedelta] = dt.timedelta(minutes=1)
    #: Emit each primary key once per window (for offset-paged APIs whose pages can shift).
    dedupe_within_window: t.ClassVar[bool] = False
    #: How many times a window whose content moved while it was read is read again.
    window_rereads: t.ClassVar[int] = 0
    #: What one pass over a window keeps (a subclass of WindowPass for a stream that keeps more).
    pass_type: t.ClassVar[type[WindowPass]] = WindowPass
    #: The key of the records list in a response, when pages are large: its items stay raw JSON
    #: until each is parsed (see ``billing_toolkit.http.decode_json``), so memory holds one page's
    #: bytes rather than one page of dicts.
    lazy_list_key: t.ClassVar[str | None] = None
    #: Types are checked by ``record_shape`` before a record is emitted, without conversion: the
    #: SDK's conformance pass would find nothing to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._decoded: weakref.WeakKeyDictionary[requests.Response, t.Any] = (
            weakref.WeakKeyDictionary()
        )

    # -- the common settings (declared in billing_toolkit.settings, so read here) ------------

    @cached_property
    def window_settings(self) -> WindowSettings:
        """Date range, window size and lookback of this run."""
        config = self.config
        size = config.get("window_size_days")  # not declared where windows are calendar periods
        return common.window_settings(
            start_date=config["start_date"],
            end_date=config.get("end_date"),
            window_size_days=None if size is None else float(size),
            lookback_minutes=int(config["lookback_minutes"]),
        )

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        """How failed requests are retried."""
        return common.retry_policy(
            max_tries=int(self.config["retry_max_tries"]),
            initial_delay=float(self.config["retry_initial_delay_seconds"]),
            max_total_wait=float(self.config["retry_max_wait_seconds"]),
        )

    @cached_property
    def timeouts(self) -> Timeouts:
        """Connect and read timeouts."""
        return common.timeouts(
            connect=float(self.config["connect_timeout_seconds"]),
            read=float(self.config["read_timeout_seconds"]),
        )

    @cached_property
    def max_pages_per_window(self) -> int:
        """Pages one pass over a window may take before paging is declared endless."""
        return int(self.config["max_pages_per_window"])

    @cached_property
    def record_shape(self) -> RecordShape:
        """The check every record passes before it is emitted (see billing_toolkit.records)."""
        return RecordShape(
            self.name, self.schema, list(self.primary_keys or ()), self.logger.warning
        )

    # -- the hooks (see the module docstring) ------------------------------------------------

    def query_keys(self, partition: Context | None) -> t.Sequence[str]:
        """Keys one query can cover together, each with its own bookmark; none by default."""
        return ()

    def split_range(self, start: dt.datetime, end: dt.datetime) -> list[DateWindow]:
        """Cut ``[start, end)`` into windows: of ``window_size_days`` by default (override for
        calendar periods)."""
        size = self.window_settings.window_size
        assert size is not None, f"{self.name} declares no window_size_days: plan its periods"
        return plan_windows(start, end, size)

    def new_paginator(self, p: WindowPass) -> BaseAPIPaginator[t.Any] | None:
        """The paging of one pass over a window; None: the window is one page."""
        return None

    def page_request(self, p: WindowPass, token: t.Any) -> PageRequest:
        """The request of one page of the pass (``token``: the paginator's current value)."""
        return PageRequest(
            self.http_method,
            self.get_url(p.partition),
            self.request_params(p, token),
            self.request_body(p, token),
        )

    def request_params(self, p: WindowPass, token: t.Any) -> dict[str, t.Any] | None:
        """The query parameters of the default ``page_request``; none by default."""
        return None

    def request_body(self, p: WindowPass, token: t.Any) -> t.Any:
        """The JSON body of the default ``page_request``; none by default."""
        return None

    def validate_body(self, body: t.Any, response: requests.Response) -> None:
        """Check a decoded 2xx body; raise ResponseShapeError (fatal) or RetriableAPIError."""

    @abc.abstractmethod
    def parse_page(
        self, response: requests.Response, p: WindowPass
    ) -> t.Iterable[dict[str, t.Any]]:
        """The items of one validated page, as records."""

    def record_in_window(self, record: dict[str, t.Any], window: DateWindow) -> bool:
        """Whether a record belongs to ``window``. Record times are canonical UTC text
        (``normalize_timestamp``), which sorts as the moments do, so the texts are compared."""
        return window.start_text <= record[self.window_field] < window.end_text

    def window_changed_while_read(self, p: WindowPass) -> bool:
        """Whether the window's content moved during the pass ``p`` (then it is read again)."""
        return False

    @property
    def rate_limiter(self) -> RollingRateLimiter | None:
        """A client-side throttle applied to every attempt; none by default."""
        return None

    def throttle_key(self, context: Context | None) -> str:
        """Which rate-limit budget a request spends (e.g. one per bot); ``context`` is the
        request's: its partition's keys, and its window in words (``WindowPass.metrics_context``)."""
        return ""

    def describe_route(self, partition: Context | None) -> str:
        """The route a request of this partition goes to, in words (for ``--test`` and errors)."""
        return f"{self.http_method} {self.get_url(partition)}"

    def connection_detail(self, response: requests.Response, window: DateWindow) -> str:
        """What ``--test`` adds about the first page it read (e.g. a record to check by hand)."""
        return ""

    def parse_response(self, response: requests.Response) -> t.Iterable[dict[str, t.Any]]:
        """Not used: pages are read by ``read_pages`` and parsed by ``parse_page``."""
        msg = f"{self.name}: pages are parsed by parse_page(response, pass), not parse_response"
        raise NotImplementedError(msg)

    # -- windows and state -------------------------------------------------------------------

    def new_pass(
        self,
        partition: Context | None,
        window: DateWindow,
        keys: tuple[str, ...] = (),
        attempt: int = 0,
    ) -> WindowPass:
        return self.pass_type(partition, window, keys, attempt)

    def plan(self, partition: Context | None) -> SyncPlan:
        """Where each key of this partition starts, and the windows that cover them."""
        settings = self.window_settings
        state = self.get_context_state(partition)
        shared = None
        if state.get("replication_key") == self.window_field and state.get("replication_key_value"):
            shared = normalize_timestamp(str(state["replication_key_value"]))
        by_key = state.get(BOOKMARKS_BY_KEY)
        keys = list(dict.fromkeys(self.query_keys(partition))) or [""]
        starts: dict[str, dt.datetime] = {}
        for key in keys:
            if key and isinstance(by_key, dict):
                raw = by_key.get(key)
                bookmark = normalize_timestamp(str(raw)) if raw else None
            else:
                bookmark = shared
            start = settings.start
            if bookmark:
                start = max(settings.start, parse_timestamp(bookmark) - settings.lookback)
            starts[key] = start
        # A window never straddles a key's start, so each key is read from exactly its start.
        breaks = sorted(set(starts.values()))
        windows: list[DateWindow] = []
        for low, high in zip(breaks, [*breaks[1:], settings.end], strict=False):
            if low < min(high, settings.end):
                windows += self.split_range(low, min(high, settings.end))
        return SyncPlan(windows=windows, key_starts=starts)

    def complete_window(
        self,
        partition: Context | None,
        window: DateWindow,
        keys: tuple[str, ...],
        all_keys: t.Sequence[str],
    ) -> None:
        """Record that every page of ``window`` has been emitted for ``keys``, and write STATE."""
        state = self.get_context_state(partition)
        end = window.end_text
        previous = (
            state.get("replication_key_value")
            if state.get("replication_key") == self.window_field
            else None
        )
        previous = normalize_timestamp(str(previous)) if previous else None
        if any(all_keys):
            by_key = state.get(BOOKMARKS_BY_KEY)
            if not isinstance(by_key, dict):
                # First keyed bookmark: a shared bookmark from an older state covers every key.
                by_key = {k: previous for k in all_keys} if previous else {}
                state[BOOKMARKS_BY_KEY] = by_key
            for key in keys:
                old = by_key.get(key)
                by_key[key] = max(normalize_timestamp(str(old)), end) if old else end
            covered = [by_key.get(k) for k in all_keys]
            if all(covered):
                state["replication_key"] = self.window_field
                state["replication_key_value"] = min(normalize_timestamp(str(c)) for c in covered)
        else:
            state["replication_key"] = self.window_field
            state["replication_key_value"] = max(previous, end) if previous else end
        self.write_state_now()

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        plan = self.plan(context)
        all_keys = [k for k in plan.key_starts if k]
        self.log_plan(context, plan)
        pending = collections.deque(plan.windows)
        while pending:
            window = pending.popleft()
            keys = plan.keys_due(window)
            emitted = 0
            try:
                for record in self._window_records(context, window, keys):
                    emitted += 1
                    yield record
            except WindowTooLarge as signal:
                if emitted:
                    msg = f"{self.name}: window {window} became incomplete after {emitted} records"
                    raise FatalAPIError(msg) from signal
                halves = self._split(window, signal)
                pending.extendleft(reversed(halves))
                continue
            self.complete_window(context, window, keys, all_keys)
            self.logger.info(
                "%s%s: window %s complete, %d record(s); bookmark now %s",
                self.name,
                _partition_label(context),
                window,
                emitted,
                window.end_text,
            )

    def _window_records(
        self, partition: Context | None, window: DateWindow, keys: tuple[str, ...]
    ) -> t.Iterator[dict[str, t.Any]]:
        """The records of one window: every page of it, keeping only items inside it.

        With ``dedupe_within_window``, a key met twice in the window is emitted once (offset paging
        repeats items when the data moves). A window whose content moved while it was read is read
        again, up to ``window_rereads`` times, so that an item that arrived ahead of the pages
        already read is not missed. Moved means: a key met twice within one pass (the list shifted
        under the offsets), or :meth:`window_changed_while_read` says so.
        """
        #: key -> the last pass that met it.
        seen: dict[t.Any, int] | None = {} if self.dedupe_within_window else None
        primary = tuple(self.primary_keys or ())
        single = (
            primary[0] if len(primary) == 1 else None
        )  # a bare value, not a 1-tuple: less memory
        outside = repeated = 0
        check = self.record_shape.check
        in_window = self.record_in_window
        # The default placement, inlined (it runs once per record): texts of one canonical form.
        custom = type(self).record_in_window is not WindowedRESTStream.record_in_window
        low, high, field = window.start_text, window.end_text, self.window_field
        for attempt in range(1 + self.window_rereads):
            p = self.new_pass(partition, window, keys, attempt)
            shifted = False
            for item in self.read_pages(p):
                p.items_on_page += 1
                try:
                    record = check(item)
                except RecordShapeError as exc:
                    raise self._with_request(exc, p) from None
                if not (in_window(record, window) if custom else low <= record[field] < high):
                    outside += 1
                    continue
                if seen is not None:
                    key = record.get(single) if single else tuple(record.get(k) for k in primary)
                    previous = seen.get(key)
                    seen[key] = attempt
                    if previous is not None:
                        repeated += 1
                        shifted = shifted or previous == attempt
                        continue
                yield record
            if not (shifted or self.window_changed_while_read(p)):
                break
            self.logger.warning(
                "%s: window %s changed while it was read (pass %d%s); reading it again",
                self.name,
                window,
                attempt + 1,
                ": an item came twice" if shifted else "",
            )
        if repeated:
            self.logger.info(
                "%s: %d repeated item(s) of window %s emitted once", self.name, repeated, window
            )
        if outside:
            self.logger.warning(
                "%s: %d item(s) of window %s fell outside it and were left to the window "
                "they belong to",
                self.name,
                outside,
                window,
            )

    # -- pages --------------------------------------------------------------------------------

    def read_pages(self, p: WindowPass) -> t.Iterator[dict[str, t.Any]]:
        """Every page of one pass, in the paginator's order; an empty page does not end paging
        (the paginator decides)."""
        paginator = p.paginator = self.new_paginator(p) or SinglePagePaginator()
        send = self.sender()
        context = p.metrics_context()
        with self.get_http_request_counter() as counter:
            counter.with_context(context)
            while not paginator.finished:
                page = self.page_request(p, paginator.current_value)
                prepared = self.build_prepared_request(
                    method=page.method,
                    url=page.url,
                    params=dict(page.params or {}),
                    headers=self.http_headers,
                    json=page.body,
                )
                response = send(prepared, context)
                counter.increment()
                self.page_received(p, response)
                self.update_sync_costs(prepared, response, context)
                yield from self.parse_page(response, p)
                paginator.advance(response)

    def page_received(self, p: WindowPass, response: requests.Response) -> None:
        """The paging guard, once per page received.

        Paging that never ends (a token or ``moreAvailable`` that keeps coming) fails loudly: after
        ``MAX_EMPTY_PAGES_IN_A_ROW`` pages in a row without an item, or ``max_pages_per_window`` pages
        in one pass over a window. The items of the previous page were counted as they were yielded.
        """
        if p.pages and not p.items_on_page:
            p.empty_pages_in_a_row += 1
        else:
            p.empty_pages_in_a_row = 0
        p.pages += 1
        p.items_on_page = 0
        p.response = response
        self.page_extracted_now()
        if p.empty_pages_in_a_row >= MAX_EMPTY_PAGES_IN_A_ROW:
            msg = (
                f"{self.name}: paging does not end: {p.empty_pages_in_a_row} pages in a row "
                f"brought no item in window {p.window}"
            )
            raise ResponseShapeError(describe_response_failure(response, msg))
        if p.pages > self.max_pages_per_window:
            msg = (
                f"{self.name}: paging does not end: more than {self.max_pages_per_window} pages in "
                f"window {p.window} (setting max_pages_per_window)"
            )
            raise ResponseShapeError(describe_response_failure(response, msg))

    def probe(
        self, partition: Context | None, window: DateWindow, keys: tuple[str, ...] = ()
    ) -> requests.Response | None:
        """Read the first page of one window and no more: a cheap connection test.

        Returns the answer that was read (validated), for a test that shows what it held.
        """
        p = self.new_pass(partition, window, keys)
        next(iter(self.read_pages(p)), None)
        return p.response

    def _split(self, window: DateWindow, signal: WindowTooLarge) -> list[DateWindow]:
        middle = window.start + (window.end - window.start) / 2
        middle = (
            middle.replace(microsecond=0)
            if middle.replace(microsecond=0) > window.start
            else middle
        )
        if window.end - window.start < 2 * self.min_window:
            msg = (
                f"{self.name}: window {window} is still incomplete and cannot be split below "
                f"{self.min_window}: {signal}. Not truncating in silence: failing."
            )
            raise FatalAPIError(mask(msg)) from signal
        self.logger.info(
            "%s: window %s is too large for one answer (%s); splitting it",
            self.name,
            window,
            signal,
        )
        return [DateWindow(window.start, middle), DateWindow(middle, window.end)]

    def log_plan(self, partition: Context | None, plan: SyncPlan) -> None:
        """Say up front what this partition will read (override to add estimates)."""
        settings = self.window_settings
        if not plan.windows:
            self.logger.info(
                "%s%s: nothing to read before %s",
                self.name,
                _partition_label(partition),
                settings.end.isoformat(),
            )
            return
        starts = ", ".join(
            f"{k or 'all'} from {format_timestamp(v)}" for k, v in plan.key_starts.items()
        )
        self.logger.info(
            "%s%s: %d window(s) of up to %s from %s to %s (%s; lookback %s)",
            self.name,
            _partition_label(partition),
            len(plan.windows),
            settings.window_size or "one period",
            plan.windows[0].start.isoformat(),
            plan.windows[-1].end.isoformat(),
            starts,
            settings.lookback,
        )

    # -- requests ---------------------------------------------------------------------------

    @property
    def timeout(self) -> t.Any:  # (connect, read): requests takes either form
        return self.timeouts.as_tuple()

    def decoded_body(self, response: requests.Response) -> t.Any:
        """The JSON body of a validated response (decoded once, in ``validate_response``)."""
        if response in self._decoded:
            return self._decoded[response]
        return decode_json(response, self.lazy_list_key)

    def keep_decoded(self, response: requests.Response, body: t.Any) -> None:
        """What ``decoded_body`` answers for ``response`` (for an answer read another way)."""
        self._decoded[response] = body

    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status in RETRIABLE_STATUSES or status >= 500:
            raise RetriableAPIError(
                describe_response_failure(response, "retriable failure"), response
            )
        if status >= 400:
            raise FatalAPIError(describe_response_failure(response, "request refused"))
        try:
            body = decode_json(response, self.lazy_list_key)
        except ValueError as exc:
            # A 2xx body that is not JSON was cut short or garbled on the way: ask again.
            raise RetriableAPIError(
                describe_response_failure(response, str(exc)), response
            ) from exc
        self.validate_body(body, response)
        self._decoded[response] = body

    def _with_request(self, error: RecordShapeError, p: WindowPass) -> RecordShapeError:
        """The same error, naming the request whose answer held the record."""
        if p.response is None:
            return error
        return RecordShapeError(describe_response_failure(p.response, str(error)))

    def request_decorator(self, func: RequestFunc) -> RequestFunc:
        policy = self.retry_policy
        limiter = self.rate_limiter

        def throttled(
            prepared_request: requests.PreparedRequest, context: Context | None
        ) -> requests.Response:
            if limiter is not None:
                waited = limiter.acquire(self.throttle_key(context))
                if waited >= 1:
                    self.logger.info(
                        "%s: throttle waited %.1f s (%s)", self.name, waited, limiter.describe()
                    )
            return func(prepared_request, context)

        retrying = backoff.on_exception(
            policy.waits,
            RETRIABLE_FAILURES,
            max_tries=policy.max_tries,
            giveup=lambda failure: isinstance(failure, requests.exceptions.SSLError),
            jitter=None,
            on_backoff=self._log_retry,
            logger=None,
        )(throttled)

        def request_with_retries(
            prepared_request: requests.PreparedRequest, context: Context | None
        ) -> requests.Response:
            try:
                return retrying(prepared_request, context)
            except RetriableAPIError as exc:
                msg = f"Giving up after retries ({policy.max_tries} attempts or {policy.max_total_wait:g} s of waiting at most). {exc}"
                raise FatalAPIError(mask(msg)) from exc
            except (requests.exceptions.RequestException, ConnectionResetError) as exc:
                msg = (
                    f"Giving up after retries: {describe_transport_failure(prepared_request, exc)}"
                )
                raise FatalAPIError(msg) from exc

        return request_with_retries

    def _log_retry(self, details: Details) -> None:
        failure = details.get("exception")
        response = getattr(failure, "response", None)
        if isinstance(response, requests.Response):
            cause = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
            if response.status_code < 400:
                cause += " with a body that is not JSON"
        else:
            cause = type(failure).__name__ if failure else "failure"
        self.logger.warning(
            "%s: attempt %d failed (%s); retrying in %.2f s",
            self.name,
            details.get("tries", 0),
            cause,
            details.get("wait") or 0.0,
        )


def _partition_label(context: Context | None) -> str:
    if not context:
        return ""
    return "[" + ", ".join(f"{k}={v}" for k, v in context.items()) + "]"
