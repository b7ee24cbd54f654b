"""Kore.ai's other billing APIs, consistent with the billing sessions the sandbox serves.

**Billing Usage Summary** (Koredotcom/docs ``docs/xo/apis/automation/billing-usage-summary.md``): an
asynchronous job. ``POST …/billingsessionsummary`` with ``fromDate``, ``toDate``, ``unitType``,
``groupByBot`` (or ``groupByApp``), ``groupByPeriod`` (``date_day_hour|date_day|date_month``) and, on
the Admin route, ``streamIds``, answers the job (``{"_id": "ds-…", "status": "IN_PROGRESS", …}``);
``GET …/billingsessionsummary/status?type=summary`` takes no job id and answers the *latest* job of
the route: ``IN_PROGRESS`` for a while, then ``success`` with ``response.data`` =
``[{"bot": <bot id or "ALL">, "val": [{"date": "<bucket start, UTC>", "val": {<figure>: n}}]}]``.
A second job on the same route replaces the first. Figures per bucket: ``sessions`` = the billing
sessions starting in it, ``conversations`` = the conversations whose first billing session starts in
it, ``requests``/``alert_notifications``/``proactive_notifications`` deterministic from the sessions.
What the docs leave open is a setting: failure statuses, jobs that never end or vanish, and whether
``toDate`` is inclusive.

**GenAI and LLM usage logs** (``docs/xo/apis/automation/llm-usage-logs-api.md``):
``POST /api/1.1/public/bot/{botId}/getLLMUsageLogs`` with ``dateFrom``/``dateTo`` (days, or ISO
times), ``limit`` (required; the sample sends text), ``skip``; answers a bare JSON array, newest
first, rows keyed exactly as documented (``"Feature Name "`` with its trailing space). The calls are
derived from the billing sessions (0 to 3 per session, at times inside it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import threading
import time
import typing as t
from dataclasses import dataclass, field

if t.TYPE_CHECKING:
    from billing_sandbox.kore import KoreSession

UTC = dt.timezone.utc
#: ``unitType`` value -> the figure's name in the answer.
UNIT_FIGURES = {
    "session": "sessions",
    "request": "requests",
    "alert": "alert_notifications",
    "proactive": "proactive_notifications",
    "conversations": "conversations",
}
PERIODS = {"date_day_hour": "hour", "date_day": "day", "date_month": "month"}
MODELS = ("GPT-4", "gpt-4o-mini", "claude-3-haiku", "Azure OpenAI GPT-35")
FEATURES = ("GenAI Node", "Dynamic Conversation", "Answer Generation", "Rephrase Responses")


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def bucket_start(moment: dt.datetime, granularity: str) -> dt.datetime:
    moment = moment.astimezone(UTC)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_bucket(start: dt.datetime, granularity: str) -> dt.datetime:
    if granularity == "hour":
        return start + dt.timedelta(hours=1)
    if granularity == "day":
        return start + dt.timedelta(days=1)
    return (start + dt.timedelta(days=32)).replace(day=1)


def vendor_figures(
    sessions: t.Iterable[KoreSession],
    granularity: str,
    *,
    start: dt.datetime,
    end: dt.datetime,
    end_inclusive: bool = True,
) -> dict[tuple[str, dt.datetime], dict[str, int]]:
    """Every figure per (bot, bucket start) for sessions whose billing start lies in the range."""
    figures: dict[tuple[str, dt.datetime], dict[str, int]] = {}
    first_of: dict[str, dt.datetime] = {}
    chosen = [
        s
        for s in sessions
        if start <= s.billingStart
        and (s.billingStart <= end if end_inclusive else s.billingStart < end)
    ]
    for s in chosen:
        known = first_of.get(s.conversationSessionId)
        if known is None or s.billingStart < known:
            first_of[s.conversationSessionId] = s.billingStart
    for s in chosen:
        key = (s.botId, bucket_start(s.billingStart, granularity))
        row = figures.setdefault(key, dict.fromkeys(UNIT_FIGURES.values(), 0))
        row["sessions"] += 1
        row["requests"] += 2 + _digest(s.billingSessionId, "requests") % 9
        if first_of[s.conversationSessionId] == s.billingStart:
            row["conversations"] += 1
        row["alert_notifications"] += int(_digest(s.billingSessionId, "alert") % 7 == 0)
        row["proactive_notifications"] += int(_digest(s.billingSessionId, "proactive") % 11 == 0)
    return figures


@dataclass
class SummaryJob:
    id: str
    slot: str
    body: dict[str, t.Any]
    #: Status answers of ``IN_PROGRESS`` before it is done.
    polls_in_progress: int
    outcome: str  # "success", "failed", "stuck" or "vanished"
    number: int = 0
    polls: int = 0


@dataclass
class SummarySettings:
    #: Status answers of ``IN_PROGRESS`` a job gives before it is done.
    polls_in_progress: int = 2
    #: How many of the first jobs end ``failed`` (each later one succeeds).
    failing_jobs: int = 0
    #: How many of the first jobs vanish: the status route then answers 404 ("no job").
    vanishing_jobs: int = 0
    #: How many of the first jobs another client replaces (a job of its own on the same route,
    #: started just before the first status poll): the status route then answers that job.
    replaced_jobs: int = 0
    #: Whether every job stays ``IN_PROGRESS`` forever.
    stuck: bool = False
    #: Whether a figure counts what happened at ``toDate`` itself (the docs do not say).
    to_inclusive: bool = True
    #: The status text of a finished job (the sample says ``success``).
    success_status: str = "success"
    failure_status: str = "failed"
    #: Added to the vendor's ``sessions`` figure of (bot, UTC day): a discrepancy a reconciliation
    #: must find. Keys ``(bot id, "YYYY-MM-DD")``.
    session_offsets: dict[tuple[str, str], int] = field(default_factory=dict)


class SummaryJobs:
    """The latest job per route ("slot"): the status route takes no job id."""

    def __init__(self, settings: SummarySettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._latest: dict[str, SummaryJob] = {}
        self._numbers = itertools.count(1)
        self.started = 0
        self.replaced = 0

    def start(self, slot: str, body: dict[str, t.Any], *, foreign: bool = False) -> SummaryJob:
        """A new job, the slot's latest from now on. ``foreign``: another client's (for tests),
        which does not count among the first jobs the settings make fail, vanish or be replaced."""
        with self._lock:
            s = self.settings
            number = 0 if foreign else next(self._numbers)
            self.started += 0 if foreign else 1
            outcome = "success"
            if s.stuck:
                outcome = "stuck"
            elif 0 < number <= s.vanishing_jobs:
                outcome = "vanished"
            elif 0 < number <= s.vanishing_jobs + s.failing_jobs:
                outcome = "failed"
            job = SummaryJob(
                id=f"ds-{_digest('job', number, len(self._latest), time.monotonic_ns()):016x}",
                slot=slot,
                body=body,
                polls_in_progress=s.polls_in_progress,
                outcome=outcome,
                number=number,
            )
            if slot in self._latest:
                self.replaced += 1
            self._latest[slot] = job
            return job

    def poll(self, slot: str) -> SummaryJob | None:
        """The slot's latest job after one more status request (None: no job, or it vanished)."""
        with self._lock:
            job = self._latest.get(slot)
        if job is not None and job.polls == 0 and 0 < job.number <= self.settings.replaced_jobs:
            # Another client's question: the same route and dates, other figures.
            job = self.start(slot, {**job.body, "unitType": ["alert"]}, foreign=True)
        with self._lock:
            if job is None or job.outcome == "vanished":
                return None
            job.polls += 1
            return job


@dataclass(frozen=True)
class LLMCall:
    bot_id: str
    user_id: str
    channel: str
    start: dt.datetime
    end: dt.datetime
    model: str
    feature: str
    prompt: str
    integration: str
    description: str
    task_id: str
    status_code: int
    request_tokens: int
    response_tokens: int
    completion_id: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.bot_id, self.completion_id)


def llm_calls_of(sessions: t.Iterable[KoreSession]) -> list[LLMCall]:
    """0 to 3 LLM calls inside each billing session, deterministic from its id."""
    calls = []
    for s in sessions:
        for n in range(_digest(s.billingSessionId, "llm") % 4):
            h = _digest(s.billingSessionId, "llm", n)
            span = max(1, int((s.billingEnd - s.billingStart).total_seconds() * 1000))
            start = s.billingStart + dt.timedelta(milliseconds=h % span)
            start = start.replace(microsecond=start.microsecond // 1000 * 1000)
            failed = h % 23 == 0
            calls.append(
                LLMCall(
                    bot_id=s.botId,
                    user_id=s.koreUserId,
                    channel=s.channel,
                    start=start,
                    end=start + dt.timedelta(milliseconds=300 + h % 7700),
                    model=MODELS[h % len(MODELS)],
                    feature=FEATURES[(h >> 8) % len(FEATURES)],
                    prompt="Default" if h % 3 else "Custom prompt",
                    integration="OpenAI" if h % 5 else "Azure OpenAI",
                    description=f"Order pizza-GenAINode{(h >> 16) % 10:04d}",
                    task_id=f"dg-{h:016x}",
                    status_code=429 if failed else 200,
                    request_tokens=0 if failed else 50 + h % 2000,
                    response_tokens=0 if failed else 5 + (h >> 4) % 400,
                    completion_id=f"chatcmpl-{h:020x}",
                )
            )
    return calls


def render_llm_call(call: LLMCall) -> dict[str, t.Any]:
    """One row as the documented sample shows it, keys exactly as there."""
    ok = call.status_code == 200
    usage = {
        "prompt_tokens": call.request_tokens,
        "completion_tokens": call.response_tokens,
        "total_tokens": call.request_tokens + call.response_tokens,
    }
    return {
        "Prompt Name": call.prompt,
        "Integration": call.integration,
        "start Date": _iso_ms(call.start),
        "End Date": _iso_ms(call.end),
        "Time Taken": int((call.end - call.start).total_seconds() * 1000),
        "statusCode": call.status_code,
        "Bot ID": call.bot_id,
        "User ID": call.user_id,
        "Feature Name ": call.feature,
        "Model Name": call.model,
        "Channel Name": call.channel,
        "Description": call.description,
        "task Id": call.task_id,
        "Status": "Success" if ok else "Failure",
        "Payload Details": {
            "Prompt Name": call.prompt,
            "Request Payload": {
                "model": call.model.lower(),
                "messages": [{"role": "user", "content": f"end-user text of {call.user_id}"}],
            },
            "Response Payload": (
                {"id": call.completion_id, "model": call.model.lower(), "usage": usage}
                if ok
                else {"error": {"message": "Rate limit reached", "code": 429}}
            ),
            "Request Tokens": call.request_tokens,
            "Response Tokens": call.response_tokens,
        },
    }


def _iso_ms(moment: dt.datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )
