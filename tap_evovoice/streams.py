"""The two streams of tap-evovoice: AI minutes per account and per customer, keyed by period.

GetAIUsage returns aggregates over the dates asked, not events. The tap therefore asks period by
period (a day, or a calendar month) and keys every figure by its period's first day, so that a rerun
refreshes a figure instead of adding it twice.

One answer holds both lists (``accountUsage`` and ``customerUsage``). Either may be absent or null:
the generated clients declare both nullable and ServiceStack leaves null members out of its JSON, so
a period without usage answers ``{}`` (or one list only). Absent or null means no rows; a failure is
what the status code and ``responseStatus`` say. When both streams are
selected, the stream synced first keeps the other's part of each answer in a run-wide
:class:`UsageAnswers` store and the second stream takes it from there: one request per period, not
two. The store is bounded; past its bound the second stream asks the API itself.

``billing_customers`` reads GetBilling (``GET /billing``, https://evovoice.io/xml/metadata?op=GetBilling)
per account and period: each customer's ``internationalCosts`` and ``hasCallRecording``. GetBilling
needs an account: the accounts are ``account_ids``, or, when that is empty, the accounts seen in the
usage answers of the same run.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
import typing as t

import msgspec
from singer_sdk import typing as th
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from billing_toolkit.http import describe_response_failure
from billing_toolkit.stream import ResponseShapeError, WindowedRESTStream, WindowPass
from billing_toolkit.windows import DateWindow, plan_periods
from tap_evovoice.auth import EvoAuth, LoginError

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

UTC = dt.timezone.utc
ACCOUNT_PART = "accountUsage"
CUSTOMER_PART = "customerUsage"
PARTS = (ACCOUNT_PART, CUSTOMER_PART)
#: The period every figure is keyed by (its first and last day), and a usage figure's fields.
PERIOD = (
    th.Property("startDate", th.DateType, required=True, description="First day of the period"),
    th.Property(
        "endDate", th.DateType, required=True, description="Last day (inclusive) of the period"
    ),
)
USAGE_FIGURE = (
    th.Property(
        "aiMinutes", th.IntegerType, required=True, description="Whole AI minutes in the period"
    ),
    *PERIOD,
)
#: The host every public GetAIUsage description names (the vendor CLI calls evovoice.io production).
DOCUMENTED_HOST = "https://team.evovoice.io"


def not_deployed(url: str) -> str:
    """What a 404 from the usage route means, naming the documented host."""
    text = f"no GetAIUsage service at {url}/ai/usage (HTTP 404)"
    if url.rstrip("/") == DOCUMENTED_HOST:
        return f"{text}: check api_url"
    return (
        f"{text}: the service may not be deployed on that host; every public GetAIUsage "
        f"description is on {DOCUMENTED_HOST}: try api_url {DOCUMENTED_HOST}"
    )


class UsageAnswers:
    """Run-wide store of the answer parts one stream fetched for the other.

    The parts wait on disk (a temporary file, deleted when the run ends) with only an index in
    memory, so a backfill of any length keeps memory flat; the bound is on rows kept.
    """

    def __init__(self, auth: EvoAuth, max_rows: int = 10_000_000) -> None:
        self.auth = auth
        self.max_rows = max_rows
        self._file: t.BinaryIO | None = None
        #: key -> (offset, size, rows) of one kept part in the file.
        self._index: dict[tuple[t.Any, ...], tuple[int, int, int]] = {}
        self._rows = 0
        self.streams: dict[str, AIUsageStream] = {}
        #: Every account a usage answer of this run named (billing_customers reads these when
        #: account_ids is empty).
        self.accounts_seen: set[str] = set()

    def keep(self, key: tuple[t.Any, ...], rows: list[dict[str, t.Any]]) -> None:
        if self._rows + len(rows) > self.max_rows:
            return  # the other stream will ask the API itself
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the run
        data = msgspec.json.encode(rows)
        self._file.seek(0, io.SEEK_END)
        self._index[key] = (self._file.tell(), len(data), len(rows))
        self._file.write(data)
        self._rows += len(rows)

    def take(self, key: tuple[t.Any, ...]) -> list[dict[str, t.Any]] | None:
        entry = self._index.pop(key, None)
        if entry is None or self._file is None:
            return None
        offset, size, count = entry
        self._file.seek(offset)
        rows: list[dict[str, t.Any]] = msgspec.json.decode(self._file.read(size))
        self._rows -= count
        return rows


class EvoStream(WindowedRESTStream):
    """What every Evo Voice stream shares: the login, calendar periods keyed by ``startDate``, and
    ServiceStack's answers (401 = the session expired, ``responseStatus`` errors)."""

    http_method = "GET"
    replication_key = "startDate"
    window_field = "startDate"
    answers: UsageAnswers
    #: The service's name, for errors (a 404 says it is not deployed at ``api_url``).
    service: t.ClassVar[str]
    #: What a 403 means for this service.
    forbidden: t.ClassVar[str] = "the user lacks a role the service requires"

    @property
    def url_base(self) -> str:
        return str(self.config["api_url"]).rstrip("/")

    @property
    def authenticator(self) -> EvoAuth:
        return self.answers.auth

    @property
    def http_headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    @property
    def partitions(self) -> list[dict[str, str]] | None:
        accounts = list(dict.fromkeys(self.config.get("account_ids") or []))
        return [{"accountId": a} for a in accounts] or None

    # -- periods ---------------------------------------------------------------------------

    def split_range(self, start: dt.datetime, end: dt.datetime) -> list[DateWindow]:
        """Calendar periods (UTC days or months), one a window, covering ``[start, end)``, cut to
        the range: a first period that starts before ``start_date`` starts there."""
        period = str(self.config["granularity"])
        windows = plan_periods(start, end, period, max_span=dt.timedelta(0))
        first = self.window_settings.start
        if windows and windows[0].start < first:
            windows[0] = DateWindow(first, windows[0].end)
        return windows

    def record_in_window(self, record: dict[str, t.Any], window: DateWindow) -> bool:
        return True  # a figure is the period itself

    @staticmethod
    def period_days(window: DateWindow) -> tuple[dt.date, dt.date]:
        """The first and last (inclusive) day a window covers; a cut-short last day counts."""
        return window.start.date(), (window.end - dt.timedelta(microseconds=1)).date()

    @staticmethod
    def answer_key(p: WindowPass) -> tuple[t.Any, ...]:
        """Which answer a pass reads: its account and period."""
        return (p.part("accountId"), p.window.start, p.window.end)

    # -- answers ----------------------------------------------------------------------------

    def validate_response(self, response: requests.Response) -> None:
        if (
            response.status_code == 401
            and self.answers.auth.method == "credentials"
            and not self._relogged
        ):
            # The session expired: log in again, once, and ask again.
            self._relogged = True
            try:
                self.answers.auth.login()
            except LoginError as exc:
                raise FatalAPIError(str(exc)) from exc
            raise RetriableAPIError(
                describe_response_failure(response, "session expired; logged in again"), response
            )
        if response.status_code == 404:
            msg = describe_response_failure(response, self.not_found())
            raise FatalAPIError(msg)
        if response.status_code == 403:
            raise FatalAPIError(describe_response_failure(response, self.forbidden))
        content_type = response.headers.get("Content-Type", "")
        if response.status_code == 200 and "json" not in content_type:
            msg = f"the API answered {content_type or 'no content type'}, not JSON: is api_url the Evo Voice API root?"
            raise ResponseShapeError(describe_response_failure(response, msg))
        super().validate_response(response)
        self._relogged = False

    _relogged = False

    def not_found(self) -> str:
        return f"no {self.service} service at {self.url_base}{self.path} (HTTP 404): check api_url"

    def check_answer(
        self, body: t.Any, response: requests.Response, lists: t.Sequence[str]
    ) -> None:
        """An object whose ``lists``, where present and not null, are lists. An absent or null list
        has no rows (ServiceStack leaves null members out); a ``responseStatus`` with an
        ``errorCode`` is a failure, whatever the status said; an answer without rows that holds keys
        the service never sends is not read as "nothing": it fails the run."""
        if not isinstance(body, dict):
            raise ResponseShapeError(
                describe_response_failure(response, "the response is not a JSON object")
            )
        status = body.get("responseStatus")
        if isinstance(status, dict) and status.get("errorCode"):
            msg = f"the answer carries an error: {status.get('errorCode')}: {status.get('message')}"
            raise FatalAPIError(describe_response_failure(response, msg))
        for part in lists:
            if body.get(part) is not None and not isinstance(body[part], list):
                raise ResponseShapeError(
                    describe_response_failure(response, f"'{part}' is not a list")
                )
        unknown = sorted(set(body) - {*lists, "responseStatus"})
        if unknown and not any(body.get(part) for part in lists):
            # No row, and keys the service never sends ({"ok": false, ...}, a proxy's JSON error):
            # not an answer to read as "nothing".
            msg = f"no {' or '.join(lists)} rows, and keys {self.service} does not send: {unknown}"
            raise ResponseShapeError(describe_response_failure(response, msg))


class AIUsageStream(EvoStream):
    """One GetAIUsage request per period (and account partition); records of one part of it."""

    path = "/ai/usage"
    service = "GetAIUsage"
    forbidden = "the user lacks the SystemAdministrator role that GetAIUsage requires"
    part: t.ClassVar[str]
    other_part: t.ClassVar[str]

    def not_found(self) -> str:
        return not_deployed(self.url_base)

    def request_params(self, p: WindowPass, token: t.Any) -> dict[str, t.Any]:
        first, last = self.period_days(p.window)
        end = last if self.config["end_date_inclusive"] else last + dt.timedelta(days=1)
        params = {"startDate": first.isoformat(), "endDate": end.isoformat()}
        if p.part("accountId"):
            params["accountId"] = p.part("accountId")
        return params

    # -- one request, two streams -----------------------------------------------------------

    def read_pages(self, p: WindowPass) -> t.Iterator[dict[str, t.Any]]:
        kept = self.answers.take((*self.answer_key(p), self.part))
        if kept is not None:
            yield from self._records(kept, p)
            return
        yield from super().read_pages(p)

    def parse_page(
        self, response: requests.Response, p: WindowPass
    ) -> t.Iterable[dict[str, t.Any]]:
        body = self.decoded_body(response)
        other = self.answers.streams.get(self.other_part)
        if other is not None and other.selected:
            self.answers.keep(
                (*self.answer_key(p), self.other_part), body.get(self.other_part) or []
            )
        yield from self._records(body.get(self.part) or [], p, response)

    def _records(
        self, rows: list[t.Any], p: WindowPass, response: requests.Response | None = None
    ) -> t.Iterator[dict[str, t.Any]]:
        first, last = self.period_days(p.window)
        wanted = set(self.config.get("customer_ids") or [])
        for row in rows:
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("accountId"), str)
                or not isinstance(row.get("aiMinutes"), int)
            ):
                msg = f"a {self.part} row without accountId or whole aiMinutes: {row!r}"
                raise ResponseShapeError(
                    describe_response_failure(response, msg) if response is not None else msg
                )
            self.answers.accounts_seen.add(row["accountId"])
            if self.part == CUSTOMER_PART and wanted and row.get("customerId") not in wanted:
                continue
            yield {**row, "startDate": first.isoformat(), "endDate": last.isoformat()}

    def validate_body(self, body: t.Any, response: requests.Response) -> None:
        self.check_answer(body, response, PARTS)


class BillingCustomersStream(EvoStream):
    """GetBilling per account and period: one record per customer with international costs."""

    name = "billing_customers"
    #: Not part of a run without a catalog (the older streams' runs ask nothing more of the API
    #: after an upgrade); select it in the catalog, or with Meltano's ``select``.
    selected_by_default = False
    path = "/billing"
    service = "GetBilling"
    primary_keys = ("accountId", "customerId", "startDate")
    schema = th.PropertiesList(
        th.Property("accountId", th.StringType, required=True),
        th.Property("customerId", th.StringType, required=True),
        *PERIOD,
        th.Property(
            "internationalCosts",
            th.NumberType,
            description="International costs of the period, as GetBilling reports them",
        ),
        th.Property("hasCallRecording", th.BooleanType),
    ).to_dict()

    @property
    def partitions(self) -> list[dict[str, str]] | None:
        """``account_ids``, or the accounts the usage answers of this run named (sorted)."""
        named = super().partitions
        if named:
            return named
        if not any(stream.selected for stream in self.answers.streams.values()):
            msg = (
                "billing_customers needs accounts (GetBilling requires AccountId): set account_ids, "
                "or select ai_account_usage or ai_customer_usage so that the accounts they see "
                "are read"
            )
            raise FatalAPIError(msg)
        return [{"accountId": a} for a in sorted(self.answers.accounts_seen)]

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        if not context:
            self.logger.info(
                "%s: no account seen in this run's usage answers: nothing to read", self.name
            )
            return
        yield from super().get_records(context)

    def request_params(self, p: WindowPass, token: t.Any) -> dict[str, t.Any]:
        first, last = self.period_days(p.window)
        # GetBilling counts both days in full (documented), whatever end_date_inclusive says.
        return {
            "accountId": p.part("accountId"),
            "startDate": first.isoformat(),
            "endDate": last.isoformat(),
        }

    def validate_body(self, body: t.Any, response: requests.Response) -> None:
        self.check_answer(body, response, ("customers",))

    def parse_page(
        self, response: requests.Response, p: WindowPass
    ) -> t.Iterable[dict[str, t.Any]]:
        first, last = self.period_days(p.window)
        account = p.part("accountId")
        wanted = set(self.config.get("customer_ids") or [])
        for row in self.decoded_body(response).get("customers") or []:
            if not isinstance(row, dict) or not isinstance(row.get("customerId"), str):
                msg = f"a customers row without customerId: {row!r}"
                raise ResponseShapeError(describe_response_failure(response, msg))
            if wanted and row["customerId"] not in wanted:
                continue
            yield {
                **row,
                "accountId": account,
                "startDate": first.isoformat(),
                "endDate": last.isoformat(),
            }


class AIAccountUsageStream(AIUsageStream):
    """AI minutes per account and period."""

    name = "ai_account_usage"
    primary_keys = ("accountId", "startDate")
    part = ACCOUNT_PART
    other_part = CUSTOMER_PART
    schema = th.PropertiesList(
        th.Property("accountId", th.StringType, required=True),
        *USAGE_FIGURE,
    ).to_dict()


class AICustomerUsageStream(AIUsageStream):
    """AI minutes per customer and period."""

    name = "ai_customer_usage"
    primary_keys = ("accountId", "customerId", "startDate")
    part = CUSTOMER_PART
    other_part = ACCOUNT_PART
    schema = th.PropertiesList(
        th.Property("accountId", th.StringType, required=True),
        th.Property("customerId", th.StringType, required=True),
        *USAGE_FIGURE,
    ).to_dict()
