"""``billing_usage_summary``: the vendor's own counts per bot and UTC hour, day or month.

The Billing Usage Summary API is an asynchronous job (Koredotcom/docs
``docs/xo/apis/automation/billing-usage-summary.md``): ``POST …/billingsessionsummary`` sets the
filters and answers the job (``{"_id": "ds-…", "status": "IN_PROGRESS", …}``), then
``GET …/billingsessionsummary/status?type=summary`` answers ``IN_PROGRESS`` until the figures come
inline (``status: "success"``, ``response.data``). The status route takes no job id: it answers
the route's latest job, so a second job would replace the first. The tap therefore runs one job at a
time (windows and bots one after another), and checks that the job answering is the one it started
(``_id``): only its own finished job's figures become records. A job that fails or vanishes (404)
is started again, up to ``summary_job_attempts`` times; a job of another client that replaced ours
is waited out, then ours started again (starting at once would replace that client's job in turn;
this counts as no failure, up to ten times ``summary_job_attempts`` a window); a job still running after
``summary_job_max_wait_seconds`` fails the run, naming the setting.

Each window holds whole UTC periods (the answer's buckets are UTC, ``…T00:00:00.000Z``) and at most
89 days, under the documented 90. A window starts where its first period starts, so a rerun from a
bookmark inside a period (the lookback, or the period still running when the last run ended) reads
that period whole again: a figure that can still grow is refreshed, never cut.

The job flow runs as the stream's paging loop: the first "page" is the POST, each further page a
status poll; :class:`SummaryJobPaginator` decides, from each answer, whether to poll again, start
again or stop, and ``parse_page`` reads where it stands from the pass (``p.paginator``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import typing as t

from singer_sdk import typing as th
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.pagination import BaseAPIPaginator

from billing_toolkit.http import describe_response_failure
from billing_toolkit.stream import PageRequest, ResponseShapeError, WindowPass
from billing_toolkit.timestamps import format_timestamp, parse_timestamp
from billing_toolkit.windows import DateWindow, next_period, plan_periods
from tap_kore_billing.streams import MAX_WINDOW_DAYS, KoreStream, kore_date

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

UTC = dt.timezone.utc
#: ``granularity`` setting -> the API's ``groupByPeriod``.
GROUP_BY_PERIOD = {"hour": "date_day_hour", "day": "date_day", "month": "date_month"}
#: Every ``unitType`` the docs list; the answer names them ``sessions``, ``requests``,
#: ``alert_notifications``, ``proactive_notifications``, ``conversations``.
UNIT_TYPES = ("session", "request", "alert", "proactive", "conversations")
#: Status texts of a job still running, finished and failed (compared without case). The docs show
#: ``IN_PROGRESS`` and ``success`` only; the others are guesses, and any other text fails the run.
RUNNING = frozenset({"in_progress", "inprogress", "queued", "pending", "running", "started"})
DONE = frozenset({"success", "succeeded", "completed", "complete", "done"})
FAILED = frozenset({"failed", "failure", "error", "errored", "cancelled", "canceled", "aborted"})
#: The "status" the tap gives a status answer of 404: the job is gone.
VANISHED = "__vanished__"
#: How often, per ``summary_job_attempts``, the tap lets another client's job on the route end and
#: starts its own again within one window before it gives up (two clients take turns; this only
#: stops a route that is never free).
YIELDS_PER_ATTEMPT = 10
ALL_BOTS = "ALL"


@dataclasses.dataclass(frozen=True)
class JobStep:
    """Where the job flow of one window stands: which job (None: start one), how many status
    polls it has had (counting the one this step asks for), and since when it waits.

    ``other``: the job of another client that replaced ours on the route; the window waits for it
    to end before starting its own again (starting at once would replace that client's job in
    turn, and two clients would take each other's jobs away for ever).
    """

    attempt: int
    job_id: str | None = None
    polls: int = 0
    started: float = 0.0
    other: str | None = None
    #: How many times another client's job took the route from ours in this window.
    yielded: int = 0


def is_ours(step: JobStep | None, answering: str) -> bool:
    """Whether a status answer (of job ``answering``, "" when it names none) is of our job."""
    return step is not None and (not answering or not step.job_id or answering == step.job_id)


def our_figures(step: JobStep | None, body: dict[str, t.Any]) -> bool:
    """Whether a status answer holds our finished job's figures (never another client's)."""
    done = str(body.get("status") or "").lower() in DONE
    return (
        done
        and step is not None
        and step.job_id is not None
        and is_ours(step, str(body.get("_id") or ""))
    )


class SummaryJobPaginator(BaseAPIPaginator[JobStep | None]):
    """Start the job, poll with backoff until it is done, start it again when it fails or is lost,
    and let another client's job on the same route finish first."""

    def __init__(self, stream: BillingUsageSummaryStream) -> None:
        super().__init__(None)
        self._stream = stream

    def get_next(self, response: requests.Response) -> JobStep | None:
        stream = self._stream
        body = stream.decoded_body(response)
        step = self.current_value or JobStep(attempt=1)
        if step.job_id is None:  # the answer of the POST: the job we started
            started = time.monotonic()
            time.sleep(stream.poll_pause(0))
            return JobStep(step.attempt, str(body.get("_id") or ""), 1, started, None, step.yielded)
        status = str(body.get("status") or "").lower()
        answering = str(body.get("_id") or "")
        if status not in RUNNING | DONE | FAILED and status != VANISHED:
            msg = f"{stream.name}: the usage summary job answered an unknown status {body.get('status')!r}"
            raise ResponseShapeError(describe_response_failure(response, msg))
        ours = is_ours(step, answering)
        if ours and status in DONE:
            stream.job_done(step, answering, time.monotonic() - step.started)
            return None
        if ours and status in RUNNING:
            return self._poll_again(step, body, response)
        if not ours and status in RUNNING:
            if step.other != answering:
                stream.logger.warning(
                    "%s: the usage summary job %s was replaced by job %s (another client started "
                    "one on this route); waiting for that job to end before starting ours again",
                    stream.name,
                    step.job_id,
                    answering,
                )
            return self._poll_again(dataclasses.replace(step, other=answering), body, response)
        if not ours:
            # The other client's job has ended: the route is free, start ours again. This is not
            # a failure of ours (summary_job_attempts); the other client's windows are finite.
            yields = YIELDS_PER_ATTEMPT * stream.job_attempts
            if step.yielded >= yields:
                msg = (
                    f"{stream.name}: other clients' jobs took the route from ours {yields} times "
                    "in one window (ten per summary_job_attempts): run one client per route at a "
                    "time"
                )
                raise FatalAPIError(describe_response_failure(response, msg))
            stream.logger.info(
                "%s: job %s of another client is %s; starting ours again",
                stream.name,
                answering,
                body.get("status"),
            )
            return JobStep(step.attempt, yielded=step.yielded + 1)
        # Ours failed or vanished: start it again.
        what = (
            "vanished (the status route answered 404)"
            if status == VANISHED
            else f"ended {body.get('status')!r}"
        )
        if step.attempt >= stream.job_attempts:
            msg = (
                f"{stream.name}: the usage summary job {step.job_id} {what}; gave up after "
                f"{step.attempt} job(s) (setting summary_job_attempts)"
            )
            raise FatalAPIError(describe_response_failure(response, msg))
        stream.logger.warning(
            "%s: the usage summary job %s %s; starting it again (job %d of at most %d)",
            stream.name,
            step.job_id,
            what,
            step.attempt + 1,
            stream.job_attempts,
        )
        return JobStep(step.attempt + 1, yielded=step.yielded)

    def _poll_again(
        self, step: JobStep, body: dict[str, t.Any], response: requests.Response
    ) -> JobStep:
        """Wait the next pause and poll again, within ``summary_job_max_wait_seconds``."""
        stream = self._stream
        waited = time.monotonic() - step.started
        pause = stream.poll_pause(step.polls)
        if waited + pause > stream.job_max_wait:
            job = step.other or step.job_id
            msg = (
                f"{stream.name}: the usage summary job {job} is still {body.get('status')!r} "
                f"after {waited:.0f} s (setting summary_job_max_wait_seconds: "
                f"{stream.job_max_wait:g} s)"
            )
            raise FatalAPIError(describe_response_failure(response, msg))
        time.sleep(pause)
        return dataclasses.replace(step, polls=step.polls + 1)


class BillingUsageSummaryStream(KoreStream):
    """One record per (bot or ``ALL``, period start, unit) with the vendor's figure.

    Scope ``bot``: the Bot Builder route of each bot (``groupByBot: "no"``; the answer's ``ALL`` is
    that bot). Scope ``admin`` with ``bot_ids``: the Admin route, each bot named in ``streamIds``
    with ``groupByBot: "yes"``. Scope ``admin`` without ``bot_ids``: the whole account, ``bot`` =
    ``ALL``.
    """

    name = "billing_usage_summary"
    #: Not part of a run without a catalog (the older streams' runs ask nothing more of the API
    #: after an upgrade); select it in the catalog, or with Meltano's ``select``.
    selected_by_default = False
    primary_keys = ("bot", "period_start", "unit")
    replication_key = "period_start"
    window_field = "period_start"
    http_method = "POST"
    path = "billingsessionsummary"  # for metrics; get_http_request builds each route
    bot_key = "bot"

    schema = th.PropertiesList(
        th.Property(
            "bot",
            th.StringType,
            required=True,
            description="Bot (stream) id, or ALL for the whole account (Admin scope without bot_ids)",
        ),
        th.Property(
            "period_start", th.DateTimeType, required=True, description="Start of the UTC bucket"
        ),
        th.Property(
            "period_end",
            th.DateTimeType,
            description="End of the UTC bucket (exclusive); a bucket still running when the run "
            "ended is read again by the next run",
        ),
        th.Property("granularity", th.StringType, required=True, description="hour, day or month"),
        th.Property(
            "unit",
            th.StringType,
            required=True,
            description="The API's figure name: sessions, requests, alert_notifications, "
            "proactive_notifications, conversations",
        ),
        th.Property("value", th.IntegerType, required=True, description="The vendor's figure"),
    ).to_dict()

    @property
    def granularity(self) -> str:
        return str(self.config["summary_granularity"])

    @property
    def job_attempts(self) -> int:
        return int(self.config["summary_job_attempts"])

    @property
    def job_max_wait(self) -> float:
        return int(self.config["summary_job_max_wait_seconds"])

    _unchecked_jobs = False

    def job_done(self, step: JobStep, answering: str, seconds: float) -> None:
        """Log a finished job; say once when the answers carry no job id to check."""
        self.logger.info(
            "%s: usage summary job %s done after %d poll(s), %.1f s",
            self.name,
            answering or step.job_id or "(no id)",
            step.polls,
            seconds,
        )
        if not (answering and step.job_id) and not self._unchecked_jobs:
            self._unchecked_jobs = True
            self.logger.warning(
                "%s: the job's answers carry no _id, so a job another client started on the "
                "same route in the meantime could not be told from ours: run one client per "
                "route at a time",
                self.name,
            )

    def poll_pause(self, polls: int) -> float:
        """Seconds before the next status poll: doubling from ``summary_poll_milliseconds``, at
        most 30."""
        first = int(self.config["summary_poll_milliseconds"]) / 1000
        return min(30.0, first * 2 ** min(polls, 16))

    @property
    def partitions(self) -> list[dict[str, str]] | None:
        return [{"bot": b} for b in self.bot_ids] or None

    def split_range(self, start: dt.datetime, end: dt.datetime) -> list[DateWindow]:
        cap = dt.timedelta(days=MAX_WINDOW_DAYS)
        size = min(self.window_settings.window_size or cap, cap)
        return plan_periods(start, end, self.granularity, max_span=size)

    def new_paginator(self, p: WindowPass) -> SummaryJobPaginator:
        return SummaryJobPaginator(self)

    def _route(self, partition: Context | None) -> str:
        bot = (partition or {}).get("bot")
        if self.scope == "bot" and bot:
            return f"{self.url_base}/api/public/bot/{bot}/billingsessionsummary"
        return self.url_base + str(self.config["summary_admin_path"])

    def page_request(self, p: WindowPass, token: JobStep | None) -> PageRequest:
        """The POST that starts a job, or (once a job is known) the poll of its status."""
        route = self._route(p.partition)
        if token is not None and token.job_id is not None:
            return PageRequest("GET", route + "/status", {"type": "summary"})
        payload: dict[str, t.Any] = {
            "fromDate": kore_date(p.window.start),
            "toDate": kore_date(p.window.end),
            "unitType": list(UNIT_TYPES),
            "groupByBot": "no",
            "groupByPeriod": GROUP_BY_PERIOD[self.granularity],
        }
        bot = p.part("bot")
        if self.scope == "admin" and bot:
            payload["streamIds"] = [bot]
            payload["groupByBot"] = "yes"
        return PageRequest("POST", route, None, payload)

    def validate_response(self, response: requests.Response) -> None:
        if response.status_code == 404 and response.request.method == "GET":
            # The status route lost the job (the route itself answered the POST).
            self.keep_decoded(response, {"status": VANISHED})
            return
        super().validate_response(response)

    def validate_body(self, body: t.Any, response: requests.Response) -> None:
        if not isinstance(body, dict):
            raise ResponseShapeError(
                describe_response_failure(response, "the response is not a JSON object")
            )
        if response.request.method == "POST":
            if not body.get("_id") and not body.get("status"):
                msg = "the job's start was answered without a job (_id or status)"
                raise ResponseShapeError(describe_response_failure(response, msg))
            return
        if "status" not in body:
            msg = "a status answer without status"
            raise ResponseShapeError(describe_response_failure(response, msg))

    def parse_page(
        self, response: requests.Response, p: WindowPass
    ) -> t.Iterable[dict[str, t.Any]]:
        if response.request.method != "GET" or p.paginator is None:
            return
        body = self.decoded_body(response)
        if not our_figures(p.paginator.current_value, body):
            return
        data = (body.get("response") or {}).get("data")
        entries = [data] if isinstance(data, dict) else data
        if not isinstance(entries, list):
            msg = "a finished job without response.data"
            raise ResponseShapeError(describe_response_failure(response, msg))
        named = p.part("bot")
        if named and len(entries) > 1:
            msg = f"figures of {len(entries)} bots where one bot ({named}) was asked for"
            raise ResponseShapeError(describe_response_failure(response, msg))
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("bot"), str):
                msg = f"a figure entry without bot: {entry!r}"
                raise ResponseShapeError(describe_response_failure(response, msg))
            bot = named or entry["bot"]
            buckets = entry.get("val")
            for bucket in [buckets] if isinstance(buckets, dict) else buckets or []:
                yield from self._figures(bot, bucket, response)

    def _figures(
        self, bot: str, bucket: t.Any, response: requests.Response
    ) -> t.Iterator[dict[str, t.Any]]:
        try:
            start = parse_timestamp(str(bucket["date"]))
            figures = bucket["val"]
            assert isinstance(figures, dict)
        except (TypeError, KeyError, ValueError, AssertionError):
            msg = f"a bucket without date or figures: {bucket!r}"
            raise ResponseShapeError(describe_response_failure(response, msg)) from None
        period_start = format_timestamp(start)
        period_end = format_timestamp(next_period(start, self.granularity))
        for unit, value in figures.items():
            if not isinstance(value, int) or isinstance(value, bool):
                msg = f"figure {unit!r} of bucket {bucket['date']} is not a whole number: {value!r}"
                raise ResponseShapeError(describe_response_failure(response, msg))
            yield {
                "bot": bot,
                "period_start": period_start,
                "period_end": period_end,
                "granularity": self.granularity,
                "unit": unit,
                "value": value,
            }
