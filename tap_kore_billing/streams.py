"""The streams of tap-kore-billing: what they share (:class:`KoreStream`) and billing sessions.

The Billing Usage Summary and the GenAI/LLM usage logs live in ``usage_summary`` and ``llm_usage``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import typing as t
from dataclasses import dataclass, field
from functools import cached_property
from zoneinfo import ZoneInfo

from singer_sdk import typing as th
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.pagination import BaseAPIPaginator

from billing_toolkit.http import RollingRateLimiter, decode_item, describe_response_failure
from billing_toolkit.stream import (
    ResponseShapeError,
    WindowedRESTStream,
    WindowPass,
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
#: The four zone-less local times of a session.
LOCAL_TIME_FIELDS = (
    "billingSessionStartDateTime",
    "billingSessionEndDateTime",
    "conversationSessionStartDateTime",
    "conversationSessionEndDateTime",
)
#: Text of the documented rate-limit error, recognised under any status.
RATE_LIMIT_TEXT = "rate limit for this api has been reached"


class SkipLimitPaginator(BaseAPIPaginator[int]):
    """``skip``/``limit`` paging, on while ``moreAvailable`` says so.

    ``total`` never ends paging: what it counts is not documented, and both documented samples carry
    the number of sessions *on the page* (the seed's ``total: 2`` with two sessions, the current
    docs' ``total: 5, moreAvailable: true`` with five), so ``skip + page >= total`` would stop after
    the first page. An answer without ``moreAvailable`` (older API) is one page: ``validate_body``
    decides whether it can be complete.
    """

    def __init__(self, stream: BillingSessionsStream) -> None:
        super().__init__(0)
        self._stream = stream

    def get_next(self, response: requests.Response) -> int | None:
        body = self._stream.decoded_body(response)
        if body.get("moreAvailable") is not True:
            return None
        sessions = body.get("sessions") or []
        if not sessions:
            msg = "moreAvailable is true on an empty page: paging would never advance"
            raise ResponseShapeError(describe_response_failure(response, msg))
        return self.current_value + len(sessions)


class KoreStream(WindowedRESTStream):
    """What every Kore.ai stream shares: the host, the JWT, the scope, the bots, and one rate budget
    per bot (or per account on the Admin routes) spent by every stream of the run."""

    def __init__(self, tap: t.Any, *, rate_limiter: RollingRateLimiter | None = None) -> None:
        super().__init__(tap)
        self._rate_limiter = rate_limiter or budget_of(self.config)

    @property
    def url_base(self) -> str:
        return str(self.config["api_url"]).rstrip("/")

    @cached_property
    def scope(self) -> str:
        """``bot`` (Bot Builder routes, per bot) or ``admin`` (Admin routes)."""
        return scope_of(self.config)

    @property
    def bot_ids(self) -> list[str]:
        return list(dict.fromkeys(self.config.get("bot_ids") or []))

    @cached_property
    def authenticator(self) -> KoreJWTAuth:
        return KoreJWTAuth(
            client_id=self.config.get("client_id"),
            client_secret=self.config.get("client_secret"),
            jwt=self.config.get("jwt"),
        )

    @property
    def rate_limiter(self) -> RollingRateLimiter:
        return self._rate_limiter

    #: The partition key that names a bot (each stream's records carry it under this name).
    bot_key: t.ClassVar[str] = "botId"

    def throttle_key(self, context: Context | None) -> str:
        """Per bot on the Bot Builder routes; per account on the Admin routes (documented limits)."""
        if self.scope == "admin":
            return "admin"
        return str((context or {}).get(self.bot_key) or "admin")

    def validate_response(self, response: requests.Response) -> None:
        if response.status_code != 200 and RATE_LIMIT_TEXT in response.text[:2000].lower():
            # The rate-limit message may come under any status: wait and go on.
            msg = describe_response_failure(response, "rate limited")
            raise RetriableAPIError(msg, response)
        super().validate_response(response)


def budget_of(config: t.Mapping[str, t.Any]) -> RollingRateLimiter:
    """The client-side throttle the settings ask for (one budget per bot or per account)."""
    return RollingRateLimiter(
        [
            (int(config["max_requests_per_minute"]), 60.0),
            (int(config["max_requests_per_hour"]), 3600.0),
        ]
    )


@dataclass(eq=False)
class SessionsPass(WindowPass):
    """A pass over a window of sessions: the order check and the totals its pages reported."""

    #: Canonical UTC text of the billing start listed before (the API lists newest first): each
    #: billing start is at most the one listed before it, within one pass.
    order_anchor: str = ""
    #: (total, sessions on the page) of each page of the pass.
    page_totals: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.order_anchor = self.order_anchor or self.window.end_text


class BillingSessionsStream(KoreStream):
    """Kore.ai billing sessions, one record per ``billingSessionId``, API field names kept.

    Scope ``bot``: the Bot Builder route of each bot in ``bot_ids``. Scope ``admin``: the Admin
    route, each bot in ``bot_ids`` named by ``botId`` in the body, or every bot of the account when
    ``bot_ids`` is empty. Either way each bot is its own partition (``{"botId": ...}``), so a change
    of scope keeps the bookmarks.
    """

    name = "billing_sessions"
    primary_keys = ("billingSessionId",)
    replication_key = "billingSessionStartDateTime"
    window_field = "billingSessionStartDateTime"
    http_method = "POST"
    #: skip/limit over a newest-first list: a session arriving mid-paging shifts later pages, so
    #: keys are emitted once per window and a window whose listing moved is read again.
    dedupe_within_window = True
    #: Pages of up to 10,000 sessions are kept as raw JSON and parsed one session at a time.
    lazy_list_key = "sessions"
    window_rereads = 2
    path = "getBillingSessionsDetails"  # for metrics; get_url builds the scope's full route
    min_window = dt.timedelta(minutes=1)
    pass_type = SessionsPass

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

    def get_url(self, context: Context | None) -> str:
        bot = (context or {}).get("botId")
        if self.scope == "bot" and bot:
            return f"{self.url_base}/api/public/bot/{bot}/getBillingSessionsDetails"
        return self.url_base + str(self.config["admin_path"])

    def describe_route(self, context: Context | None) -> str:
        """The scope, route and bot of a request, in words (for ``--test`` and errors)."""
        bot = (context or {}).get("botId")
        where = f"POST {self.get_url(context)}"
        if self.scope == "admin":
            named = f"botId {bot} in the body" if bot else "every bot of the account"
            return f"scope admin: {where} ({named})"
        return f"scope bot: {where}"

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(str(self.config["timezone"]))

    @property
    def partitions(self) -> list[dict[str, str]] | None:
        bots = self.bot_ids
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
        per_minute = int(self.config["max_requests_per_minute"])
        per_hour = int(self.config["max_requests_per_hour"])
        budgets = (
            1 if self.scope == "admin" else len({p.get("botId") for p in self.partitions or [{}]})
        )
        per_bot = requests / max(1, budgets)
        # Rolling limits release the budget in bursts: the first per_minute requests go at once,
        # each further batch a minute later (likewise per hour).
        minutes = max(
            math.ceil(max(0, requests - per_minute) / per_minute),
            math.ceil(max(0.0, per_bot - per_hour) / per_hour) * 60,
        )
        level = logging.WARNING if minutes >= 60 else logging.INFO
        self.logger.log(
            level,
            "%s plan (%s): %d partition(s) x %d window(s) = at least %d request(s) (one more per "
            "extra page); at %d/min and %d/h per %s that takes at least %.0f min",
            self.name,
            self.describe_route(None).split(":")[0],
            partitions,
            len(plan.windows),
            requests,
            per_minute,
            per_hour,
            "account" if self.scope == "admin" else "bot",
            minutes,
        )

    def new_paginator(self, p: WindowPass) -> SkipLimitPaginator:
        return SkipLimitPaginator(self)

    def request_body(self, p: WindowPass, token: t.Any) -> dict[str, t.Any]:
        payload: dict[str, t.Any] = {
            "fromDate": kore_date(p.window.start - BOUNDARY_GUARD),
            "toDate": kore_date(p.window.end),
            "skip": int(token or 0),
            "limit": self.page_size,
        }
        if p.part("channel"):
            payload["channel"] = p.part("channel")
        if self.scope == "admin" and p.part("botId"):
            payload["botId"] = p.part("botId")
        return payload

    @property
    def page_size(self) -> int:
        return int(self.config["page_size"])

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
        more = body.get("moreAvailable")
        if more is not None and not isinstance(more, bool):
            raise ResponseShapeError(
                describe_response_failure(response, "'moreAvailable' is not true or false")
            )
        total = page_total(body)
        if more is None:
            # The older API does not page: one answer per window, which may be cut.
            limit = self.page_size
            if len(sessions) >= limit:
                raise WindowTooLarge(
                    f"{len(sessions)} sessions, as many as the limit asked for, and no "
                    "moreAvailable: the answer may be cut, whatever total says"
                )
            if total is not None and len(sessions) < total:
                raise WindowTooLarge(
                    f"the API returned {len(sessions)} of {total} sessions and does not page"
                )

    def parse_page(
        self, response: requests.Response, p: WindowPass
    ) -> t.Iterable[dict[str, t.Any]]:
        assert isinstance(p, SessionsPass)
        body = self.decoded_body(response)
        sessions = body.get("sessions") or []
        total = page_total(body)
        if total is not None:
            p.page_totals.append((total, len(sessions)))
        for raw in sessions:
            try:
                item = decode_item(raw)
            except ValueError as exc:
                msg = f"a session is not valid JSON ({exc})"
                raise ResponseShapeError(describe_response_failure(response, msg)) from None
            yield self._session(item, response, p)

    def window_changed_while_read(self, p: WindowPass) -> bool:
        """A ``total`` that counts matches and changed between pages means the window moved.

        Where every page's ``total`` equals its own sessions (as in the documented samples), it
        counts the page: its changes say nothing. A shifted listing is caught by the stream
        anyway (a session met twice in one pass).
        """
        assert isinstance(p, SessionsPass)
        totals = p.page_totals
        counts_matches = any(total != count for total, count in totals)
        return counts_matches and len({total for total, _ in totals}) > 1

    def connection_detail(self, response: requests.Response, window: DateWindow) -> str:
        """The newest session of an answer, raw and read under ``timezone``, in words: what a user
        holds against the Kore.ai dashboard to check the zone the API writes its times in."""
        p = self.new_pass(None, window)
        assert isinstance(p, SessionsPass)
        sessions = []
        for raw in self.decoded_body(response).get("sessions") or []:
            item = decode_item(raw)
            if isinstance(item, dict) and item.get("billingSessionId"):
                text = {f: item.get(f) for f in LOCAL_TIME_FIELDS}
                sessions.append((self._session(dict(item), response, p), text))
        if not sessions:
            return (
                f"No session between {window.start_text} and {window.end_text} to check timezone "
                "against: run --test again when the bot has had traffic in the last day."
            )
        record, raw = max(sessions, key=lambda pair: pair[0]["billingSessionStartDateTime"])
        readings = "; ".join(
            f"{field} {raw[field]!r} -> {record[field]}"
            for field in LOCAL_TIME_FIELDS
            if raw[field]
        )
        return (
            f"Newest of {len(sessions)} session(s) on the first page for the last day: "
            f"billingSessionId {record['billingSessionId']}, read under timezone {self.zone.key}: "
            f"{readings}. Find this session in the Kore.ai dashboard: if it shows another time, "
            "set timezone to the zone the API writes in (README, 'Choosing timezone')."
        )

    def _session(
        self, item: t.Any, response: requests.Response, p: SessionsPass
    ) -> dict[str, t.Any]:
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
                p.window.start_text,
                p.window.end_text,
                p.order_anchor,
            )
            p.order_anchor = start
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


def page_total(body: dict[str, t.Any]) -> int | None:
    """The page's ``total``, when it is a whole number."""
    total = body.get("total")
    return total if isinstance(total, int) and not isinstance(total, bool) else None


def kore_date(moment: dt.datetime) -> str:
    """``yyyy-mm-ddThh:mm:ss.mssZ``, one of the two documented forms."""
    return (
        moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}Z"
    )


def scope_of(config: t.Mapping[str, t.Any]) -> str:
    """The configured ``scope``, or its default: ``bot`` when ``bot_ids`` is set, else ``admin``."""
    scope = config.get("scope")
    if scope:
        return str(scope)
    return "bot" if config.get("bot_ids") else "admin"
