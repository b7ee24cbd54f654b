"""The one stream of tap-kore-billing: billing sessions."""

from __future__ import annotations

import datetime as dt
import logging
import math
import typing as t
from functools import cached_property
from zoneinfo import ZoneInfo

from singer_sdk import typing as th
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.pagination import BaseAPIPaginator

from billing_toolkit.http import RollingRateLimiter, decode_item, describe_response_failure
from billing_toolkit.stream import (
    ResponseShapeError,
    WindowedRESTStream,
    WindowQuery,
    WindowTooLarge,
)
from billing_toolkit.windows import DateWindow
from tap_kore_billing.auth import KoreJWTAuth
from tap_kore_billing.localtime import resolve_not_after, resolve_not_before, resolve_start

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

    from billing_toolkit.stream import SyncPlan

#: Each request reaches this far before its window, and only sessions starting inside the window
#: are kept: exact whatever the API's (undocumented) inclusivity of fromDate and toDate.
BOUNDARY_GUARD = dt.timedelta(seconds=1)
#: The API's documented limit on a request's date range (three months in current docs).
API_MAX_DAYS = 90
#: The largest window the tap plans: the API limit less a day, for the guard and for APIs that
#: count the toDate day in full.
MAX_WINDOW_DAYS = API_MAX_DAYS - 1
#: Text of the documented rate-limit error, recognised under any status.
RATE_LIMIT_TEXT = "rate limit for this api has been reached"


class SkipLimitPaginator(BaseAPIPaginator[int]):
    """``skip``/``limit`` paging: on while ``moreAvailable`` says so and ``skip`` is below ``total``."""

    def __init__(self, stream: BillingSessionsStream) -> None:
        super().__init__(0)
        self._stream = stream

    def get_next(self, response: requests.Response) -> int | None:
        body = self._stream.decoded_body(response)
        sessions = body.get("sessions") or []
        if not body.get("moreAvailable"):
            return None
        if not sessions:
            msg = "moreAvailable is true on an empty page: paging would never advance"
            raise ResponseShapeError(describe_response_failure(response, msg))
        following = self.current_value + len(sessions)
        total = body.get("total")
        if isinstance(total, int) and following >= total:
            return None
        return following

    def continue_if_empty(self, response: requests.Response) -> bool:
        return True


class BillingSessionsStream(WindowedRESTStream):
    """Kore.ai billing sessions, one record per ``billingSessionId``, API field names kept."""

    name = "billing_sessions"
    primary_keys = ("billingSessionId",)
    replication_key = "billingSessionStartDateTime"
    window_field = "billingSessionStartDateTime"
    http_method = "POST"
    #: skip/limit over a newest-first list: a session arriving mid-paging shifts later pages, so
    #: keys are emitted once per window and a window whose total moved is read again.
    dedupe_within_window = True
    #: Pages of up to 10,000 sessions are kept as raw JSON and parsed one session at a time.
    lazy_list_key = "sessions"
    window_rereads = 2
    path = "getBillingSessionsDetails"  # for metrics; get_url builds the scope's full route
    min_window = dt.timedelta(minutes=1)

    schema = th.PropertiesList(
        th.Property("billingSessionId", th.StringType, required=True),
        th.Property("botId", th.StringType, description="Bot (stream) id"),
        th.Property("channel", th.StringType, description="Channel code, e.g. IVR, rtm"),
        th.Property("koreUserId", th.StringType),
        th.Property("channelUserId", th.StringType),
        th.Property("billingSessionType", th.StringType, description="e.g. Conversations"),
        th.Property(
            "conversationSessionId",
            th.StringType,
            description="Shared by the billing sessions of one conversation",
        ),
        th.Property("conversationSessionStartDateTime", th.DateTimeType, description="UTC"),
        th.Property("conversationSessionEndDateTime", th.DateTimeType, description="UTC"),
        th.Property(
            "billingSessionStartDateTime", th.DateTimeType, required=True, description="UTC"
        ),
        th.Property("billingSessionEndDateTime", th.DateTimeType, description="UTC"),
    ).to_dict()

    @property
    def url_base(self) -> str:
        return str(self.config.get("api_url", "https://platform.kore.ai")).rstrip("/")

    def get_url(self, context: Context | None) -> str:
        bot = (context or {}).get("botId")
        if bot:
            return f"{self.url_base}/api/public/bot/{bot}/getBillingSessionsDetails"
        return self.url_base + str(
            self.config.get("admin_path", "/api/public/bots/getBillingSessionsDetails")
        )

    @cached_property
    def authenticator(self) -> KoreJWTAuth:
        return KoreJWTAuth(
            client_id=self.config.get("client_id"),
            client_secret=self.config.get("client_secret"),
            jwt=self.config.get("jwt"),
        )

    @cached_property
    def rate_limiter(self) -> RollingRateLimiter:
        return RollingRateLimiter(
            [
                (int(self.config.get("max_requests_per_minute", 50)), 60.0),
                (int(self.config.get("max_requests_per_hour", 1500)), 3600.0),
            ]
        )

    def throttle_key(self, context: Context | None) -> str:
        return str((context or {}).get("botId") or "admin")

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(str(self.config.get("timezone", "UTC")))

    @property
    def partitions(self) -> list[dict[str, str]] | None:
        bots = list(dict.fromkeys(self.config.get("bot_ids") or []))
        channels = list(dict.fromkeys(self.config.get("channels") or []))
        if bots and channels:
            return [{"botId": b, "channel": c} for b in bots for c in channels]
        if bots:
            return [{"botId": b} for b in bots]
        if channels:
            return [{"channel": c} for c in channels]
        return None

    _estimated = False

    def log_plan(self, context: Context | None, plan: SyncPlan) -> None:
        """Also say, once, how long the whole run will take at the throttle."""
        super().log_plan(context, plan)
        if self._estimated:
            return
        self._estimated = True
        partitions = len(self.partitions or [None])
        requests = len(plan.windows) * partitions
        per_minute = int(self.config.get("max_requests_per_minute", 50))
        per_hour = int(self.config.get("max_requests_per_hour", 1500))
        per_bot = requests / max(1, len({p.get("botId") for p in self.partitions or [{}]}))
        # Rolling limits release the budget in bursts: the first per_minute requests go at once,
        # each further batch a minute later (likewise per hour).
        minutes = max(
            math.ceil(max(0, requests - per_minute) / per_minute),
            math.ceil(max(0.0, per_bot - per_hour) / per_hour) * 60,
        )
        level = logging.WARNING if minutes >= 60 else logging.INFO
        self.logger.log(
            level,
            "%s plan: %d partition(s) x %d window(s) = at least %d request(s) (one more per "
            "extra page); at %d/min and %d/h per bot that takes at least %.0f min",
            self.name,
            partitions,
            len(plan.windows),
            requests,
            per_minute,
            per_hour,
            minutes,
        )

    def get_new_paginator(self) -> SkipLimitPaginator:
        return SkipLimitPaginator(self)

    def prepare_request_payload(
        self, context: Context | None, next_page_token: t.Any
    ) -> dict[str, t.Any]:
        query = WindowQuery.from_context(context)
        payload: dict[str, t.Any] = {
            "fromDate": _kore_date(query.window.start - BOUNDARY_GUARD),
            "toDate": _kore_date(query.window.end),
            "skip": int(next_page_token or 0),
            "limit": int(self.config.get("page_size", 100)),
        }
        if context and context.get("channel"):
            payload["channel"] = context["channel"]
        return payload

    def validate_response(self, response: requests.Response) -> None:
        if response.status_code != 200 and RATE_LIMIT_TEXT in response.text[:2000].lower():
            # The rate-limit message may come under any status: wait and go on.
            msg = describe_response_failure(response, "rate limited")
            raise RetriableAPIError(msg, response)
        super().validate_response(response)

    def validate_body(self, body: t.Any, response: requests.Response) -> None:
        if not isinstance(body, dict):
            raise ResponseShapeError(
                describe_response_failure(response, "the response is not a JSON object")
            )
        sessions = body.get("sessions")
        if sessions is None:
            msg = describe_response_failure(response, "no 'sessions' list in a success")
            raise RetriableAPIError(msg, response)
        if not isinstance(sessions, list):
            raise ResponseShapeError(
                describe_response_failure(response, "'sessions' is not a list")
            )
        total = body.get("total")
        if isinstance(total, int):
            self._totals.add(total)
        if "moreAvailable" not in body:
            # The older API does not page: it answers at most N sessions and says how many matched.
            if isinstance(total, int) and len(sessions) < total:
                raise WindowTooLarge(
                    f"the API returned {len(sessions)} of {total} sessions and does not page"
                )
            if total is None and len(sessions) >= int(self.config.get("page_size", 100)):
                raise WindowTooLarge(
                    f"a full page of {len(sessions)} sessions with no total and no paging"
                )

    def parse_response(self, response: requests.Response) -> t.Iterable[dict[str, t.Any]]:
        window = self.current_window
        assert window is not None  # pages are only read inside a window
        for raw in self.decoded_body(response).get("sessions") or []:
            try:
                item = decode_item(raw)
            except ValueError as exc:
                msg = f"a session is not valid JSON ({exc})"
                raise ResponseShapeError(describe_response_failure(response, msg)) from None
            record = self._session(item, response, window)
            yield record

    #: Canonical UTC text of the billing start listed before (the API lists newest first).
    _order_anchor: str = "9999"
    _totals: set[int] = set()  # noqa: RUF012 - replaced per window in start_window

    def start_window(self, context: Context | None, window: DateWindow) -> None:
        super().start_window(context, window)
        # The API lists newest first: each billing start is at most the one listed before it,
        # within one partition's pass over one window.
        self._order_anchor = window.end_text
        self._totals = set()

    def window_changed_while_read(self) -> bool:
        return len(self._totals) > 1

    def _session(self, item: t.Any, response: requests.Response, window: t.Any) -> dict[str, t.Any]:
        if not isinstance(item, dict) or not item.get("billingSessionId"):
            msg = f"a session without billingSessionId: {item!r}"
            raise ResponseShapeError(describe_response_failure(response, msg))
        record = item  # a fresh dict from this page's JSON: its times are rewritten in place
        zone = self.zone
        field = "billingSessionStartDateTime"
        try:
            start = resolve_start(
                str(item.get(field)),
                zone,
                window.start_text,
                window.end_text,
                self._order_anchor,
            )
            self._order_anchor = start
            record[field] = start
            field = "conversationSessionStartDateTime"
            if item.get(field):
                record[field] = resolve_not_after(str(item[field]), zone, start)
            for field in ("conversationSessionEndDateTime", "billingSessionEndDateTime"):
                if item.get(field):
                    record[field] = resolve_not_before(str(item[field]), zone, start)
        except ValueError as exc:
            msg = f"session {item['billingSessionId']}: field {field!r}: {exc}"
            raise ResponseShapeError(describe_response_failure(response, msg)) from None
        return record


def _kore_date(moment: dt.datetime) -> str:
    """``yyyy-mm-ddThh:mm:ss.mssZ``, one of the two documented forms."""
    return (
        moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}Z"
    )
