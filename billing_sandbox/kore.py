"""The Kore.ai Billing Sessions API, as its page (seed 001) and the public notes describe it.

- Bot Builder scope ``POST /api/public/bot/{botId}/getBillingSessionsDetails``; Admin scope
  ``POST /api/public/bots/getBillingSessionsDetails`` and ``/api/public/getBillingSessionsDetails``
  (the docs disagree; both are served) with an optional ``botId`` in the body.
- Header ``auth``: an HS256 JWT whose ``appId`` claim is the client id, signed with the client
  secret. Otherwise 401 ``{"errors": [{"msg" (or "message"): ..., "code": 4002}]}``.
- ``fromDate``/``toDate`` as ``yyyy-mm-dd`` (read as GMT) or ``yyyy-mm-ddThh:mm:ss.mssZ``; a range
  longer than ``max_window_days`` is a 400. Sessions whose billing start lies in ``[from, to)``.
- Newest first. Paging by ``skip``/``limit`` (``limit`` capped) with ``total`` and ``moreAvailable``;
  or the older mode without paging: at most ``legacy_cap`` sessions.
- What ``total`` counts is never defined by the docs; both documented samples read as if it were the
  sessions *on the page* (the seed's ``total: 2`` with two sessions, the current docs' ``total: 5,
  moreAvailable: true`` with five). ``total_counts`` plays either reading: ``"page"`` (the default,
  as the samples show) or ``"matches"`` (every session matching the query).
- Timestamps like ``03-10-2021 2:05:03 pm``: month first, 12-hour clock, no zone, rendered in a
  configurable time zone (so ambiguous around a daylight-saving change).
- A rolling rate limiter per bot on the Bot Builder route, per account on the Admin route (the
  documented limits are "per bot, or per account for Admin APIs"): 429 with the documented message
  and no Retry-After. The other billing APIs below spend the same budgets.
- The Billing Usage Summary job and the GenAI/LLM usage logs: see ``billing_sandbox.kore_usage``.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import hmac
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from billing_sandbox.kore_usage import (
    PERIODS,
    UNIT_FIGURES,
    LLMCall,
    SummaryJobs,
    SummarySettings,
    bucket_start,
    llm_calls_of,
    next_bucket,
    render_llm_call,
    vendor_figures,
)
from billing_sandbox.server import Request, Response

UTC = dt.timezone.utc
RATE_LIMIT_MESSAGE = "Rate limit for this API has been reached. Please try again after some time."
BOTS = ("st-1a2b3c4d-0001", "st-1a2b3c4d-0002", "st-1a2b3c4d-0003")
CHANNELS = ("IVR", "rtm", "msteams", "whatsapp")
BOT_PATH = re.compile(r"^/api/public/bot/(?P<bot>[^/]+)/getBillingSessionsDetails$")
ADMIN_PATHS = (
    "/api/public/bots/getBillingSessionsDetails",
    "/api/public/getBillingSessionsDetails",
)
#: The Billing Usage Summary job: start (POST) and status (GET ``/status?type=summary``).
SUMMARY_BOT_PATH = re.compile(
    r"^/api/public/bot/(?P<bot>[^/]+)/billingsessionsummary(?P<status>/status)?$"
)
SUMMARY_ADMIN_PATH = re.compile(
    r"^/api/public(?:/bots)?/billingsessionsummary(?P<status>/status)?$"
)
LLM_PATH = re.compile(r"^/api/1\.1/public/bot/(?P<bot>[^/]+)/getLLMUsageLogs$")
BILLING_BLOCK = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class KoreSession:
    botId: str
    channel: str
    koreUserId: str
    channelUserId: str
    billingSessionType: str
    conversationSessionId: str
    conversationStart: dt.datetime
    conversationEnd: dt.datetime
    billingSessionId: str
    billingStart: dt.datetime
    billingEnd: dt.datetime


def generate_sessions(
    *,
    seed: int,
    conversations: int,
    start: dt.datetime,
    end: dt.datetime,
    bots: tuple[str, ...] = BOTS,
    channels: tuple[str, ...] = CHANNELS,
) -> list[KoreSession]:
    """Billing sessions of ``conversations`` conversations starting in ``[start, end)``.

    A conversation longer than 15 minutes spans several billing sessions (one per 15-minute block);
    only blocks starting before ``end`` are kept.
    """
    rng = random.Random(seed)
    span = int((end - start).total_seconds())
    sessions: list[KoreSession] = []
    for number in range(conversations):
        begin = start + dt.timedelta(seconds=rng.randrange(span))
        length = dt.timedelta(seconds=int(rng.expovariate(1 / 600)) + 5)
        finish = begin + length
        bot, channel = rng.choice(bots), rng.choice(channels)
        user = f"u-{rng.getrandbits(64):016x}"
        conversation = f"{rng.getrandbits(96):024x}"
        block = begin
        while block < finish and block < end:
            block_end = min(block + BILLING_BLOCK, finish)
            sessions.append(
                KoreSession(
                    botId=bot,
                    channel=channel,
                    koreUserId=user,
                    channelUserId=f"{rng.getrandbits(64):x}/{channel.lower()}/{number:08d}",
                    billingSessionType="Conversations",
                    conversationSessionId=conversation,
                    conversationStart=begin,
                    conversationEnd=finish,
                    billingSessionId=f"{rng.getrandbits(96):024x}",
                    billingStart=block,
                    billingEnd=block_end,
                )
            )
            block = block_end
    return sessions


def mint_jwt(client_id: str, client_secret: str, **claims: object) -> str:
    """An HS256 JWT as Kore.ai expects it (used by the sandbox's own tests and tools)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"appId": client_id, "sub": "sandbox", **claims}).encode())
    signature = hmac.new(client_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{_b64(signature.digest())}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class KoreSettings:
    client_id: str = "cs-sandbox-client"
    client_secret: str = "sandbox-kore-client-secret"
    timezone: str = "UTC"
    max_window_days: int = 90
    paging: bool = True
    page_cap: int = 100
    default_limit: int = 50
    legacy_cap: int = 100
    #: Whether the older mode sends ``total`` at all.
    legacy_total: bool = True
    #: What ``total`` counts: ``"page"`` (the sessions of this answer, as the documented samples
    #: read) or ``"matches"`` (every session matching the query).
    total_counts: str = "page"
    #: Rolling limits per bot (or per account on the Admin path): (requests, seconds) pairs.
    rate_limits: list[tuple[int, float]] = field(
        default_factory=lambda: [(60, 60.0), (1800, 3600.0)]
    )
    #: Status of a rate-limited answer (429; some gateways send 400 with the same message).
    rate_limit_status: int = 429
    error_key: str = "msg"  # "msg", or "message" as some versions say
    #: The Billing Usage Summary's job behaviour and figures.
    summary: SummarySettings = field(default_factory=SummarySettings)
    #: Largest ``limit`` the LLM usage logs honour, and whether their ``dateTo`` day counts in full.
    llm_page_cap: int = 100
    llm_date_to_inclusive: bool = True


class KoreAPI:
    name = "kore"
    one_request_at_a_time = False  # undocumented: overlaps are counted, not refused

    def __init__(self, sessions: list[KoreSession], settings: KoreSettings | None = None) -> None:
        self.settings = settings or KoreSettings()
        self._zone = ZoneInfo(self.settings.timezone)
        self._lock = threading.Lock()
        self._sessions: list[KoreSession] = []
        self._starts: list[dt.datetime] = []
        self._calls: dict[str, list[float]] = {}
        self.rate_limited = 0
        self.jobs = SummaryJobs(self.settings.summary)
        self._llm: list[LLMCall] = []
        self._llm_starts: list[dt.datetime] = []
        self.add_sessions(sessions)

    def add_sessions(self, sessions: list[KoreSession]) -> None:
        with self._lock:
            merged = sorted(
                [*self._sessions, *sessions], key=lambda s: (s.billingStart, s.billingSessionId)
            )
            self._sessions = merged
            self._starts = [s.billingStart for s in merged]
            calls = sorted([*self._llm, *llm_calls_of(sessions)], key=lambda c: (c.start, c.key))
            self._llm = calls
            self._llm_starts = [c.start for c in calls]

    @property
    def sessions(self) -> list[KoreSession]:
        return list(self._sessions)

    def truth(
        self,
        *,
        bots: set[str] | None = None,
        channels: set[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[KoreSession]:
        return [
            s
            for s in self._sessions
            if (bots is None or s.botId in bots)
            and (channels is None or s.channel in channels)
            and (start is None or s.billingStart >= start)
            and (end is None or s.billingStart < end)
        ]

    def llm_truth(
        self,
        *,
        bots: set[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[LLMCall]:
        return [
            c
            for c in self._llm
            if (bots is None or c.bot_id in bots)
            and (start is None or c.start >= start)
            and (end is None or c.start < end)
        ]

    def summary_truth(
        self,
        granularity: str,
        *,
        start: dt.datetime,
        end: dt.datetime,
        bots: set[str] | None = None,
    ) -> dict[tuple[str, dt.datetime], dict[str, int]]:
        """The vendor's figures per (bot, bucket) over whole buckets of ``[start, end)``, with the
        configured discrepancies; buckets without sessions are left out."""
        sessions = [s for s in self._sessions if bots is None or s.botId in bots]
        figures = vendor_figures(sessions, granularity, start=start, end=end, end_inclusive=False)
        return {
            key: self._with_offsets(key[0], key[1], granularity, row)
            for key, row in figures.items()
        }

    def _with_offsets(
        self, bot: str, bucket: dt.datetime, granularity: str, row: dict[str, int]
    ) -> dict[str, int]:
        offsets = self.settings.summary.session_offsets
        if not offsets:
            return row
        following = next_bucket(bucket, granularity)
        extra = sum(
            n
            for (b, day), n in offsets.items()
            if bot in ("ALL", b)
            and bucket <= dt.datetime.fromisoformat(day).replace(tzinfo=UTC) < following
        )
        return {**row, "sessions": row["sessions"] + extra}

    def render_time(self, moment: dt.datetime) -> str:
        local = moment.astimezone(self._zone)
        hour = local.hour % 12 or 12
        return f"{local:%m-%d-%Y} {hour}:{local:%M:%S} {'am' if local.hour < 12 else 'pm'}"

    # -- HTTP ---------------------------------------------------------------------------

    def is_api_request(self, request: Request) -> bool:
        path = request.path
        return bool(
            BOT_PATH.match(path)
            or path in ADMIN_PATHS
            or SUMMARY_BOT_PATH.match(path)
            or SUMMARY_ADMIN_PATH.match(path)
            or LLM_PATH.match(path)
        )

    def error_body(self, status: int, message: str, code: int | None = None) -> Response:
        return Response.json(
            status, {"errors": [{self.settings.error_key: message, "code": code or status}]}
        )

    def handle(self, request: Request) -> Response:
        summary = SUMMARY_BOT_PATH.match(request.path) or SUMMARY_ADMIN_PATH.match(request.path)
        if summary:
            return self._summary(request, summary)
        llm = LLM_PATH.match(request.path)
        if llm:
            return self._llm_logs(request, llm.group("bot"))
        match = BOT_PATH.match(request.path)
        if not match and request.path not in ADMIN_PATHS:
            return self.error_body(404, f"Cannot POST {request.path}")
        refused = self._refusal(request, "POST", match.group("bot") if match else "admin-account")
        if refused:
            return refused
        body = self._body(request)
        if isinstance(body, Response):
            return body
        bot = match.group("bot") if match else body.get("botId")
        try:
            start, end = self._range(body, "fromDate", "toDate")
        except ValueError as exc:
            return self.error_body(400, str(exc))
        return Response.json(200, self._answer(bot, body.get("channel"), start, end, body))

    # -- Billing Usage Summary ------------------------------------------------------------

    def _summary(self, request: Request, match: re.Match[str]) -> Response:
        groups = match.groupdict()
        bot = groups.get("bot")
        slot = bot or "admin-account"
        status_route = bool(groups.get("status"))
        refused = self._refusal(request, "GET" if status_route else "POST", slot)
        if refused:
            return refused
        if status_route:
            if request.query.get("type", [""])[-1] != "summary":
                return self.error_body(400, "type must be summary")
            return self._summary_status(slot)
        body = self._body(request)
        if isinstance(body, Response):
            return body
        try:
            self._range(body, "fromDate", "toDate")
        except ValueError as exc:
            return self.error_body(400, str(exc))
        units = body.get("unitType")
        if not isinstance(units, list) or not units or any(u not in UNIT_FIGURES for u in units):
            return self.error_body(400, f"unitType must be a list of {', '.join(UNIT_FIGURES)}")
        if body.get("groupByPeriod") not in PERIODS:
            return self.error_body(400, f"groupByPeriod must be one of {', '.join(PERIODS)}")
        grouped = body.get("groupByBot", body.get("groupByApp"))
        if grouped not in ("yes", "no"):
            return self.error_body(400, "groupByBot must be yes or no")
        job = self.jobs.start(slot, {**body, "_route_bot": bot})
        return Response.json(
            200,
            {
                "reportId": str(int(job.id[3:11], 16) % 1_000_000),
                "status": "IN_PROGRESS",
                "percentageComplete": 0,
                "jobType": "BILLINGSESSIONS_API",
                "action": "QUERY",
                "statusLogs": [],
                "_id": job.id,
                "createdOn": dt.datetime.now(UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
            },
        )

    def _summary_status(self, slot: str) -> Response:
        job = self.jobs.poll(slot)
        if job is None:
            return self.error_body(404, "No billing session summary job found")
        if job.outcome == "stuck" or job.polls <= job.polls_in_progress:
            percentage = min(95, 100 * job.polls // (job.polls_in_progress + 1))
            return Response.json(
                200, {"_id": job.id, "status": "IN_PROGRESS", "percentageComplete": percentage}
            )
        if job.outcome == "failed":
            return Response.json(
                200,
                {
                    "_id": job.id,
                    "status": self.settings.summary.failure_status,
                    "statusLogs": [{"msg": "report generation failed"}],
                },
            )
        return Response.json(
            200,
            {
                "_id": job.id,
                "status": self.settings.summary.success_status,
                "__v": 0,
                "response": self._summary_response(job.body),
            },
        )

    def _summary_response(self, body: dict) -> dict:
        granularity = PERIODS[body["groupByPeriod"]]
        start = _parse_date(body["fromDate"], "fromDate")
        end = _parse_date(body["toDate"], "toDate")
        route_bot = body.get("_route_bot")
        named = body.get("streamIds") if isinstance(body.get("streamIds"), list) else None
        with self._lock:
            sessions = [
                s
                for s in self._sessions
                if (route_bot is None or s.botId == route_bot) and (not named or s.botId in named)
            ]
        figures = vendor_figures(
            sessions,
            granularity,
            start=start,
            end=end,
            end_inclusive=self.settings.summary.to_inclusive,
        )
        by_bot = body.get("groupByBot", body.get("groupByApp")) == "yes"
        bots = sorted({s.botId for s in sessions}) if by_bot else ["ALL"]
        wanted = [UNIT_FIGURES[u] for u in body["unitType"]]
        merged: dict[tuple[str, dt.datetime], dict[str, int]] = {}
        for (bot, bucket), values in figures.items():
            row = merged.setdefault((bot if by_bot else "ALL", bucket), dict.fromkeys(wanted, 0))
            for name in wanted:
                row[name] += values[name]
        data = []
        total = 0
        for bot in bots:
            buckets = []
            cursor = bucket_start(start, granularity)
            while cursor <= end:
                row = merged.get((bot, cursor)) or dict.fromkeys(wanted, 0)
                if "sessions" in row:
                    label = bot if by_bot else (route_bot or "ALL")
                    row = self._with_offsets(label, cursor, granularity, row)
                    total += row["sessions"]
                buckets.append({"date": cursor.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "val": row})
                cursor = next_bucket(cursor, granularity)
            data.append({"bot": bot, "val": buckets})
        return {"data": data, "averageSessions": total // max(1, sum(len(d["val"]) for d in data))}

    # -- GenAI and LLM usage logs ---------------------------------------------------------

    def _llm_logs(self, request: Request, bot: str) -> Response:
        refused = self._refusal(request, "POST", bot)
        if refused:
            return refused
        body = self._body(request)
        if isinstance(body, Response):
            return body
        try:
            limit = int(str(body.get("limit")))
            skip = int(str(body.get("skip") or 0))
            # A day for dateTo counts in full, if the API is played so.
            whole_day = self.settings.llm_date_to_inclusive and len(str(body.get("dateTo"))) == 10
            start, end = self._range(body, "dateFrom", "dateTo", extend=whole_day)
        except ValueError as exc:
            return self.error_body(400, str(exc))
        with self._lock:
            calls, starts = self._llm, self._llm_starts
        low, high = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        matching = [c for c in calls[low:high] if c.bot_id == bot]
        matching.reverse()  # newest first
        page = matching[skip : skip + min(max(limit, 0), self.settings.llm_page_cap)]
        return Response.json(200, [render_llm_call(c) for c in page])

    def _refusal(self, request: Request, method: str, budget: str) -> Response | None:
        """The answer to a request with the wrong method, bad credentials or over the rolling
        limits of ``budget`` (a bot, or the account on the Admin routes); None when it may go on."""
        if request.method != method:
            return self.error_body(405, "Method not allowed")
        if not self._authorized(request.headers.get("auth")):
            return self.error_body(401, "Invalid SDK credentials", 4002)
        if self._over_limit(budget):
            self.rate_limited += 1
            return self.error_body(self.settings.rate_limit_status, RATE_LIMIT_MESSAGE, 429)
        return None

    def _body(self, request: Request) -> dict | Response:
        """The JSON object of a request's body, or the 400 that refuses it."""
        try:
            body = request.json() or {}
        except ValueError:
            return self.error_body(400, "Invalid JSON body")
        return body if isinstance(body, dict) else self.error_body(400, "Invalid JSON body")

    def _range(
        self, body: dict, low: str, high: str, *, extend: bool = False
    ) -> tuple[dt.datetime, dt.datetime]:
        """``[low, high)`` of a body, at most ``max_window_days`` long (``extend``: plus a day)."""
        start, end = _parse_date(body.get(low), low), _parse_date(body.get(high), high)
        end += dt.timedelta(days=1) if extend else dt.timedelta(0)
        if end <= start:
            msg = f"{high} must be after {low}"
            raise ValueError(msg)
        if end - start > dt.timedelta(days=self.settings.max_window_days):
            msg = f"Maximum {self.settings.max_window_days} days date period allowed"
            raise ValueError(msg)
        return start, end

    def _authorized(self, token: str | None) -> bool:
        if not token or token.count(".") != 2:
            return False
        header, payload, signature = token.split(".")
        expected = hmac.new(
            self.settings.client_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256
        )
        try:
            if not hmac.compare_digest(_unb64(signature), expected.digest()):
                return False
            head, claims = json.loads(_unb64(header)), json.loads(_unb64(payload))
        except ValueError:
            return False
        if head.get("alg") != "HS256" or claims.get("appId") != self.settings.client_id:
            return False
        expires = claims.get("exp")
        return not (isinstance(expires, (int, float)) and expires < time.time())

    def _over_limit(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(key, [])
            longest = max(seconds for _, seconds in self.settings.rate_limits)
            del calls[: bisect.bisect_right(calls, now - longest)]
            for count, seconds in self.settings.rate_limits:
                if len(calls) - bisect.bisect_right(calls, now - seconds) >= count:
                    return True
            calls.append(now)
            return False

    def _answer(
        self, bot: object, channel: object, start: dt.datetime, end: dt.datetime, body: dict
    ) -> dict:
        with self._lock:
            sessions, starts = self._sessions, self._starts
        low, high = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        matching = [
            s
            for s in sessions[low:high]
            if (not bot or s.botId == bot) and (not channel or s.channel == channel)
        ]
        matching.reverse()  # newest first
        if not self.settings.paging:
            page = matching[: self.settings.legacy_cap]
            answer: dict = {"sessions": [self._render(s) for s in page]}
            if self.settings.legacy_total:
                answer["total"] = self._total(page, matching)
            return answer
        skip = int(body.get("skip") or 0)
        limit = min(int(body.get("limit") or self.settings.default_limit), self.settings.page_cap)
        page = matching[skip : skip + limit]
        return {
            "total": self._total(page, matching),
            "moreAvailable": skip + len(page) < len(matching),
            "sessions": [self._render(s) for s in page],
        }

    def _total(self, page: list[KoreSession], matching: list[KoreSession]) -> int:
        return len(page) if self.settings.total_counts == "page" else len(matching)

    def _render(self, s: KoreSession) -> dict[str, str]:
        return {
            "botId": s.botId,
            "channel": s.channel,
            "koreUserId": s.koreUserId,
            "channelUserId": s.channelUserId,
            "billingSessionType": s.billingSessionType,
            "conversationSessionId": s.conversationSessionId,
            "conversationSessionStartDateTime": self.render_time(s.conversationStart),
            "conversationSessionEndDateTime": self.render_time(s.conversationEnd),
            "billingSessionId": s.billingSessionId,
            "billingSessionStartDateTime": self.render_time(s.billingStart),
            "billingSessionEndDateTime": self.render_time(s.billingEnd),
        }


def _parse_date(value: object, name: str) -> dt.datetime:
    if not isinstance(value, str):
        msg = f"{name} is required"
        raise ValueError(msg)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return dt.datetime.fromisoformat(value).replace(tzinfo=UTC)  # date-only: GMT
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z", value):
            raise ValueError(value)
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        msg = f"{name}: expected yyyy-mm-dd or yyyy-mm-ddThh:mm:ss.msZ, got {value!r}"
        raise ValueError(msg) from None
