"""The windowed incremental REST stream every billing tap builds on.

Data flows: partition (SDK context) -> date windows -> pages -> records -> Singer messages.

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
from singer_sdk import RESTStream
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.pagination import BaseAPIPaginator

from billing_toolkit import settings as common
from billing_toolkit.http import (
    RetryPolicy,
    RollingRateLimiter,
    Timeouts,
    decode_json,
    describe_response_failure,
    describe_transport_failure,
)
from billing_toolkit.output import RecordLineWriter
from billing_toolkit.records import RecordShape, RecordShapeError
from billing_toolkit.secrets import mask
from billing_toolkit.settings import WindowSettings
from billing_toolkit.timestamps import format_timestamp, normalize_timestamp, parse_timestamp
from billing_toolkit.transport import SecureSession, secure_session
from billing_toolkit.windows import DateWindow, plan_windows

if t.TYPE_CHECKING:
    from backoff.types import Details
    from singer_sdk.helpers.types import Context, Record, RequestFunc

BOOKMARKS_BY_KEY = "bookmarks_by_key"
WINDOW_START = "window_start"
WINDOW_END = "window_end"
QUERY_KEYS = "query_keys"

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


@dataclass(frozen=True)
class WindowQuery:
    """What one series of pages asks for: a window, and the keys covered by it."""

    window: DateWindow
    keys: tuple[str, ...]

    def as_context(self, partition: Context | None) -> dict[str, t.Any]:
        return {
            **(partition or {}),
            WINDOW_START: self.window.start_text,
            WINDOW_END: self.window.end_text,
            QUERY_KEYS: ",".join(self.keys),
        }

    @classmethod
    def from_context(cls, context: Context | None) -> WindowQuery:
        if not context or WINDOW_START not in context:
            msg = "a page request was built outside a date window"
            raise RuntimeError(msg)
        keys = context[QUERY_KEYS]
        return cls(
            DateWindow(
                parse_timestamp(context[WINDOW_START]), parse_timestamp(context[WINDOW_END])
            ),
            tuple(keys.split(",")) if keys else (),
        )


@dataclass
class SyncPlan:
    """The windows one partition will read in this run, and where each key starts."""

    windows: list[DateWindow]
    key_starts: dict[str, str]

    def keys_due(self, window: DateWindow) -> tuple[str, ...]:
        return tuple(k for k, start in self.key_starts.items() if start <= window.start_text)


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

    def continue_if_empty(self, response: requests.Response) -> bool:
        # An empty page with a token is not the end: the token decides.
        return True


class WindowedRESTStream(RESTStream[t.Any], metaclass=abc.ABCMeta):
    """A REST stream read window by window, with state saved after every completed window."""

    #: The SDK must not move the bookmark per record (see the module docstring).
    is_sorted = False
    #: The record field (canonical UTC text) that places a record in a window. It is fixed by the
    #: API, so a catalog that names another replication key cannot change what windows mean.
    window_field: t.ClassVar[str]
    #: The smallest window a too-large window may be split into before the stream fails loudly.
    min_window: t.ClassVar[dt.timedelta] = dt.timedelta(minutes=1)
    #: The window being read (for parsers that need it, e.g. to resolve ambiguous local times).
    current_window: DateWindow | None = None
    #: Emit each primary key once per window (for offset-paged APIs whose pages can shift).
    dedupe_within_window: t.ClassVar[bool] = False
    #: How many times a window whose content moved while it was read is read again.
    window_rereads: t.ClassVar[int] = 0
    #: Types are checked by ``record_shape`` before a record is emitted, without conversion: the
    #: SDK's conformance pass would find nothing to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    #: Write RECORD lines directly when the SDK's record path would not change them (see
    #: billing_toolkit.output). False gives the SDK's own path (the benchmarks' baseline).
    fast_records: t.ClassVar[bool] = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._decoded: weakref.WeakKeyDictionary[requests.Response, t.Any] = (
            weakref.WeakKeyDictionary()
        )
        self._line_writer: RecordLineWriter | bool | None = False  # False: not decided yet
        # Paging guard of the current pass over a window (see ``update_sync_costs``).
        self._pages_in_pass = 0
        self._items_on_page = 0
        self._empty_pages_in_a_row = 0

    # -- the common settings (declared in billing_toolkit.settings, so read here) ------------

    @cached_property
    def window_settings(self) -> WindowSettings:
        """Date range, window size and lookback of this run."""
        return common.window_settings(self.config)

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        """How failed requests are retried."""
        return common.retry_policy(self.config)

    @cached_property
    def timeouts(self) -> Timeouts:
        """Connect and read timeouts."""
        return common.timeouts(self.config)

    @cached_property
    def max_pages_per_window(self) -> int:
        """Pages one pass over a window may take before paging is declared endless."""
        return int(self.config.get("max_pages_per_window", common.DEFAULT_MAX_PAGES_PER_WINDOW))

    @cached_property
    def record_shape(self) -> RecordShape:
        """The check every record passes before it is emitted (see billing_toolkit.records)."""
        return RecordShape(
            self.name, self.schema, list(self.primary_keys or ()), self.logger.warning
        )

    def query_keys(self, context: Context | None) -> t.Sequence[str]:
        """Keys one query can cover together, each with its own bookmark; none by default."""
        return ()

    def split_range(self, start: dt.datetime, end: dt.datetime) -> list[DateWindow]:
        """Cut ``[start, end)`` into windows: of ``window_size_days`` by default (override for
        calendar periods)."""
        return plan_windows(start, end, self.window_settings.window_size)

    def record_in_window(self, record: dict[str, t.Any], low: str, high: str) -> bool:
        """Whether a record belongs to the window ``[low, high)`` (canonical UTC texts)."""
        return low <= record[self.window_field] < high

    def validate_body(self, body: t.Any, response: requests.Response) -> None:
        """Check a decoded 2xx body; raise ResponseShapeError (fatal) or RetriableAPIError."""

    # -- windows and state -------------------------------------------------------------------

    def plan(self, context: Context | None) -> SyncPlan:
        """Where each key of this partition starts, and the windows that cover them."""
        settings = self.window_settings
        state = self.get_context_state(context)
        shared = None
        if state.get("replication_key") == self.window_field and state.get("replication_key_value"):
            shared = normalize_timestamp(str(state["replication_key_value"]))
        by_key = state.get(BOOKMARKS_BY_KEY)
        keys = list(dict.fromkeys(self.query_keys(context))) or [""]
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
        return SyncPlan(
            windows=windows, key_starts={k: format_timestamp(v) for k, v in starts.items()}
        )

    def complete_window(
        self, context: Context | None, query: WindowQuery, all_keys: t.Sequence[str]
    ) -> None:
        """Record that every page of ``query`` has been emitted, and write STATE."""
        state = self.get_context_state(context)
        end = query.window.end_text
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
            for key in query.keys:
                old = by_key.get(key)
                by_key[key] = max(normalize_timestamp(str(old)), end) if old else end
            covered = [by_key.get(k) for k in all_keys]
            if all(covered):
                state["replication_key"] = self.window_field
                state["replication_key_value"] = min(normalize_timestamp(str(c)) for c in covered)
        else:
            state["replication_key"] = self.window_field
            state["replication_key_value"] = max(previous, end) if previous else end
        self.state_manager.is_flushed = False
        self._write_state_message()

    def _increment_stream_state(
        self, latest_record: Record, *, context: Context | None = None
    ) -> None:
        """Records never move the bookmark: completed windows do (see ``complete_window``)."""

    # -- output -------------------------------------------------------------------------------

    def _process_record(
        self,
        record: Record,
        child_context: Context | None = None,
        partition_context: Context | None = None,
    ) -> None:
        """The SDK's per-record step, without its child-stream machinery when there are none."""
        if self.child_streams:
            super()._process_record(record, child_context, partition_context)
            return
        for key, value in (partition_context or {}).items():
            if key not in record:  # the partition's keys go into its records, as the SDK does
                record[key] = value

    def _write_record_message(self, record: Record) -> None:
        writer = self._line_writer
        if writer is False:
            writer = self._line_writer = self._direct_writer()
        if writer is None:
            super()._write_record_message(record)
            return
        assert isinstance(writer, RecordLineWriter)
        writer.write(record)
        self.state_manager.is_flushed = False

    def _direct_writer(self) -> RecordLineWriter | None:
        """A direct RECORD writer, if the SDK's record path would emit records unchanged."""
        maps = self.stream_maps
        identity = (
            len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and maps[0].stream_alias == self.name
            and not maps[0].flattening_enabled
        )
        everything_selected = all(
            self.mask.get(("properties", name), True) for name in self.schema["properties"]
        )
        if not (self.fast_records and identity and everything_selected):
            return None
        writer = RecordLineWriter(self.name)
        writer.set_time_extracted(_now_text())
        return writer

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        plan = self.plan(context)
        all_keys = [k for k in plan.key_starts if k]
        self.log_plan(context, plan)
        pending = collections.deque(plan.windows)
        while pending:
            window = pending.popleft()
            query = WindowQuery(window, tuple(k for k in plan.keys_due(window) if k))
            emitted = 0
            try:
                for record in self._window_records(context, query):
                    emitted += 1
                    yield record
            except WindowTooLarge as signal:
                if emitted:
                    msg = f"{self.name}: window {window} became incomplete after {emitted} records"
                    raise FatalAPIError(msg) from signal
                halves = self._split(window, signal)
                pending.extendleft(reversed(halves))
                continue
            self.complete_window(context, query, all_keys)
            self.logger.info(
                "%s%s: window %s complete, %d record(s); bookmark now %s",
                self.name,
                _partition_label(context),
                window,
                emitted,
                window.end_text,
            )

    def start_window(self, context: Context | None, window: DateWindow) -> None:
        """Called before each pass over a window's pages (override to reset per-window state)."""
        self.current_window = window

    def window_changed_while_read(self) -> bool:
        """Whether the window's content moved during the last pass (then it is read again)."""
        return False

    def _window_records(
        self, context: Context | None, query: WindowQuery
    ) -> t.Iterator[dict[str, t.Any]]:
        """The records of one window: every page of it, keeping only items inside it.

        With ``dedupe_within_window``, a key met twice in the window is emitted once (offset paging
        repeats items when the data moves). A window whose content moved while it was read is read
        again, up to ``window_rereads`` times, so that an item that arrived ahead of the pages
        already read is not missed. Moved means: a key met twice within one pass (the list shifted
        under the offsets), or :meth:`window_changed_while_read` says so.
        """
        low, high = query.window.start_text, query.window.end_text
        #: key -> the last pass that met it.
        seen: dict[t.Any, int] | None = {} if self.dedupe_within_window else None
        keys = tuple(self.primary_keys or ())
        single = keys[0] if len(keys) == 1 else None  # a bare value, not a 1-tuple: less memory
        outside = repeated = 0
        check = self.record_shape.check
        for attempt in range(1 + self.window_rereads):
            self.start_window(context, query.window)
            self._pages_in_pass = self._items_on_page = self._empty_pages_in_a_row = 0
            shifted = False
            for item in self.request_records(query.as_context(context)):
                self._items_on_page += 1
                try:
                    record = check(item)
                except RecordShapeError as exc:
                    raise self._with_request(exc) from None
                if not self.record_in_window(record, low, high):
                    outside += 1
                    continue
                if seen is not None:
                    key = record.get(single) if single else tuple(record.get(k) for k in keys)
                    previous = seen.get(key)
                    seen[key] = attempt
                    if previous is not None:
                        repeated += 1
                        shifted = shifted or previous == attempt
                        continue
                yield record
            if not (shifted or self.window_changed_while_read()):
                break
            self.logger.warning(
                "%s: window %s changed while it was read (pass %d%s); reading it again",
                self.name,
                query.window,
                attempt + 1,
                ": an item came twice" if shifted else "",
            )
        if repeated:
            self.logger.info(
                "%s: %d repeated item(s) of window %s emitted once",
                self.name,
                repeated,
                query.window,
            )
        if outside:
            self.logger.warning(
                "%s: %d item(s) of window %s fell outside it and were left to the window "
                "they belong to",
                self.name,
                outside,
                query.window,
            )

    def update_sync_costs(
        self,
        request: requests.PreparedRequest,
        response: requests.Response,
        context: Context | None,
    ) -> dict[str, int]:
        """Called by the SDK once per page received: the paging guard.

        Paging that never ends (a token or ``moreAvailable`` that keeps coming) fails loudly: after
        ``MAX_EMPTY_PAGES_IN_A_ROW`` pages in a row without an item, or ``max_pages_per_window`` pages
        in one pass over a window. The items of the previous page were counted as they were yielded.
        """
        if self._pages_in_pass and not self._items_on_page:
            self._empty_pages_in_a_row += 1
        else:
            self._empty_pages_in_a_row = 0
        self._pages_in_pass += 1
        self._items_on_page = 0
        if isinstance(self._line_writer, RecordLineWriter):
            self._line_writer.set_time_extracted(_now_text())
        window = self.current_window
        if self._empty_pages_in_a_row >= MAX_EMPTY_PAGES_IN_A_ROW:
            msg = (
                f"{self.name}: paging does not end: {self._empty_pages_in_a_row} pages in a row "
                f"brought no item in window {window}"
            )
            raise ResponseShapeError(describe_response_failure(response, msg))
        if self._pages_in_pass > self.max_pages_per_window:
            msg = (
                f"{self.name}: paging does not end: more than {self.max_pages_per_window} pages in "
                f"window {window} (setting max_pages_per_window)"
            )
            raise ResponseShapeError(describe_response_failure(response, msg))
        return super().update_sync_costs(request, response, context)

    def probe(
        self, context: Context | None, window: DateWindow, keys: tuple[str, ...] = ()
    ) -> requests.Response | None:
        """Read the first page of one window and no more: a cheap connection test.

        Returns the answer that was read (validated), for a test that shows what it held.
        """
        self.start_window(context, window)
        next(iter(self.request_records(WindowQuery(window, keys).as_context(context))), None)
        return self._last_response

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

    def log_plan(self, context: Context | None, plan: SyncPlan) -> None:
        """Say up front what this partition will read (override to add estimates)."""
        settings = self.window_settings
        if not plan.windows:
            self.logger.info(
                "%s%s: nothing to read before %s",
                self.name,
                _partition_label(context),
                settings.end.isoformat(),
            )
            return
        starts = ", ".join(f"{k or 'all'} from {v}" for k, v in plan.key_starts.items())
        self.logger.info(
            "%s%s: %d window(s) of up to %s from %s to %s (%s; lookback %s)",
            self.name,
            _partition_label(context),
            len(plan.windows),
            settings.window_size,
            plan.windows[0].start.isoformat(),
            plan.windows[-1].end.isoformat(),
            starts,
            settings.lookback,
        )

    # -- requests ---------------------------------------------------------------------------

    @property
    def requests_session(self) -> requests.Session:
        """Requests, and so credentials, go to the API's origin only, over verified TLS
        (``ca_bundle_path`` added): see billing_toolkit.transport for the rules."""
        if not isinstance(self._requests_session, SecureSession):
            self._requests_session = secure_session(self.url_base, self.config)
        return self._requests_session

    @property
    def timeout(self) -> t.Any:  # (connect, read): requests takes either form
        return self.timeouts.as_tuple()

    #: The key of the records list in a response, when pages are large: its items stay raw JSON
    #: until each is parsed (see ``billing_toolkit.http.decode_json``), so memory holds one page's
    #: bytes rather than one page of dicts.
    lazy_list_key: t.ClassVar[str | None] = None

    def decoded_body(self, response: requests.Response) -> t.Any:
        """The JSON body of a validated response (decoded once, in ``validate_response``)."""
        if response in self._decoded:
            return self._decoded[response]
        return decode_json(response, self.lazy_list_key)

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
        self._last_response = response

    _last_response: requests.Response | None = None

    def _with_request(self, error: RecordShapeError) -> RecordShapeError:
        """The same error, naming the request whose answer held the record."""
        if self._last_response is None:
            return error
        return RecordShapeError(describe_response_failure(self._last_response, str(error)))

    @property
    def rate_limiter(self) -> RollingRateLimiter | None:
        """A client-side throttle applied to every attempt; none by default."""
        return None

    def throttle_key(self, context: Context | None) -> str:
        """Which rate-limit budget a request spends (e.g. one per bot)."""
        return ""

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


def _now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _partition_label(context: Context | None) -> str:
    if not context:
        return ""
    return "[" + ", ".join(f"{k}={v}" for k, v in context.items()) + "]"
