"""Evo Voice ``GetAIUsage`` (seed 003), with ServiceStack's conventions.

- ``GET /ai/usage?accountId=&customerId=&startDate=&endDate=``, the same as a ``POST`` with a JSON
  body, and ``/json/reply/GetAIUsage``. JSON when asked for (``Accept: application/json`` or
  ``?format=json``); otherwise an HTML page, as ServiceStack serves browsers. ``serves_usage=False``
  plays a host where the service is not deployed (404), as ``evovoice.io`` may be: every public
  GetAIUsage description is on ``team.evovoice.io``.
- HTTP Basic auth, or ``POST /auth/credentials``. The login sets ServiceStack's cookies: ``ss-id``
  (temporary id), ``ss-pid`` (permanent id), ``ss-opt`` (``perm`` when ``rememberMe`` is true, else
  ``temp``) and ``X-UAId``. A ``rememberMe`` session is stored under ``ss-pid``; each request's
  session is looked up under ``ss-pid`` when its ``ss-opt`` cookie holds ``perm``, else under
  ``ss-id`` (ServiceStack ``SessionExtensions.GetSessionId``). So a client that sends back only
  ``ss-id``/``ss-pid`` after a remember-me login is not authenticated. Sessions expire (then 401).
  A user without the SystemAdministrator role gets 403. Errors are
  ``{"responseStatus": {"errorCode", "message", "errors"}}``.
- Dates ``YYYY-MM-DD``; ``endDate`` inclusive (default) or exclusive (second mode). Figures are sums of
  whole minutes from a per-day table, per account and per customer.
- An empty usage list is left out of the JSON (``omit_empty_lists``, default on): the generated
  clients declare both lists nullable and ServiceStack does not serialise null members, so a
  period without usage answers ``{}``, or one list only.
- ``GetBilling``: ``GET /billing?AccountId=&StartDate=&EndDate=[&CustomerId=]`` (and
  ``/json/reply/GetBilling``; ServiceStack binds query names without regard to case), AccountId
  required, both days counted in full (https://evovoice.io/xml/metadata?op=GetBilling), answering
  ``{"customers": [{"customerId", "internationalCosts", "hasCallRecording"}]}`` for the customers
  with usage in the range. Costs are whole cents per customer and day, derived from the usage table.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import json
import random
import secrets
import threading
import typing as t
from dataclasses import dataclass, field

from billing_sandbox.server import Request, Response

ACCOUNTS = ("acct-alpha", "acct-bravo", "acct-charlie")
USAGE_PATHS = ("/ai/usage", "/json/reply/GetAIUsage")
BILLING_PATHS = ("/billing", "/json/reply/GetBilling")


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def international_cents(row: DailyUsage) -> int:
    """A customer's international costs of one day, in cents (a third of customers call abroad)."""
    if _digest(row.account_id, row.customer_id, "abroad") % 3:
        return 0
    return (row.minutes * 7 + _digest(row.customer_id, row.day) % 300) % 2000


def has_call_recording(account_id: str, customer_id: str) -> bool:
    return _digest(account_id, customer_id, "recording") % 2 == 0


@dataclass(frozen=True)
class DailyUsage:
    day: dt.date
    account_id: str
    customer_id: str
    minutes: int


def generate_usage(
    *,
    seed: int,
    start: dt.date,
    end: dt.date,
    accounts: tuple[str, ...] = ACCOUNTS,
    customers_per_account: int = 4,
    idle_share: float = 0.0,
) -> list[DailyUsage]:
    """A per-day table over ``[start, end)``: most customers use some whole minutes most days.

    ``idle_share``: the share of days on which no account has any usage, and of the other days on
    which one account has none (so that answers without usage occur).
    """
    rng = random.Random(seed)
    rows = []
    customers = {
        a: [f"{a}-cust-{n:02d}" for n in range(1, customers_per_account + 1)] for a in accounts
    }
    day = start
    while day < end:
        if idle_share and rng.random() < idle_share:
            day += dt.timedelta(days=1)
            continue
        for account in accounts:
            if idle_share and rng.random() < idle_share:
                continue
            for customer in customers[account]:
                if rng.random() < 0.8:
                    rows.append(DailyUsage(day, account, customer, rng.randrange(0, 240)))
        day += dt.timedelta(days=1)
    return rows


@dataclass
class EvoSettings:
    username: str = "sandbox-admin"
    password: str = "sandbox-evo-password"
    roles: tuple[str, ...] = ("SystemAdministrator",)
    end_inclusive: bool = True
    #: A session expires after this many usage requests (then 401 until the client logs in again).
    session_requests: int = 1_000_000
    #: Users who exist but lack the role.
    other_users: dict[str, str] = field(
        default_factory=lambda: {"sandbox-viewer": "viewer-password-1"}
    )
    #: Leave an empty usage list out of the JSON, as ServiceStack does with a null member.
    omit_empty_lists: bool = True
    #: Whether GetAIUsage is deployed on this host (False: its routes answer 404).
    serves_usage: bool = True


class EvoAPI:
    name = "evovoice"
    one_request_at_a_time = False  # undocumented: overlaps are counted, not refused

    def __init__(self, rows: list[DailyUsage], settings: EvoSettings | None = None) -> None:
        self.settings = settings or EvoSettings()
        self._rows = list(rows)
        self._lock = threading.Lock()
        #: Session id (ss-pid for a remember-me login, else ss-id) -> (user, requests used).
        self._sessions: dict[str, tuple[str, int]] = {}
        self.logins = 0
        #: Every session id ever issued: secrets that must never appear in a tap's output.
        self.issued_sessions: list[str] = []

    def add_rows(self, rows: list[DailyUsage]) -> None:
        with self._lock:
            self._rows.extend(rows)

    # -- truth --------------------------------------------------------------------------

    def totals(
        self, first: dt.date, last: dt.date, account: str | None = None
    ) -> tuple[dict, dict]:
        """Minutes per account and per (account, customer) over the days ``first..last`` inclusive."""
        by_account: dict[str, int] = {}
        by_customer: dict[tuple[str, str], int] = {}
        for row in self._rows:
            if first <= row.day <= last and (account is None or row.account_id == account):
                by_account[row.account_id] = by_account.get(row.account_id, 0) + row.minutes
                key = (row.account_id, row.customer_id)
                by_customer[key] = by_customer.get(key, 0) + row.minutes
        return by_account, by_customer

    def billing_totals(
        self, first: dt.date, last: dt.date, account: str
    ) -> dict[str, tuple[float, bool]]:
        """GetBilling's answer: (international costs, call recording) per customer of ``account``
        with usage on the days ``first..last`` inclusive."""
        cents: dict[str, int] = {}
        for row in self._rows:
            if first <= row.day <= last and row.account_id == account:
                cents[row.customer_id] = cents.get(row.customer_id, 0) + international_cents(row)
        return {c: (n / 100, has_call_recording(account, c)) for c, n in sorted(cents.items())}

    def daily_figures(
        self, first: dt.date, end: dt.date, accounts: t.Collection[str] | None = None
    ) -> tuple[dict[tuple[str, dt.date], int], dict[tuple[str, str, dt.date], int]]:
        """Minutes per (account, day) and per (account, customer, day) for days in ``[first, end)``,
        in one pass over the data (what a tap reading by day must deliver)."""
        by_account: dict[tuple[str, dt.date], int] = {}
        by_customer: dict[tuple[str, str, dt.date], int] = {}
        for row in self._rows:
            if first <= row.day < end and (accounts is None or row.account_id in accounts):
                key = (row.account_id, row.day)
                by_account[key] = by_account.get(key, 0) + row.minutes
                ckey = (row.account_id, row.customer_id, row.day)
                by_customer[ckey] = by_customer.get(ckey, 0) + row.minutes
        return by_account, by_customer

    # -- HTTP ---------------------------------------------------------------------------

    def is_api_request(self, request: Request) -> bool:
        return (request.path in USAGE_PATHS and self.settings.serves_usage) or (
            request.path in BILLING_PATHS
        )

    def error_body(self, status: int, message: str) -> Response:
        code = {401: "Unauthorized", 403: "Forbidden", 400: "ArgumentException"}.get(
            status, "Exception"
        )
        return Response.json(
            status, {"responseStatus": {"errorCode": code, "message": message, "errors": []}}
        )

    def handle(self, request: Request) -> Response:
        if request.path == "/auth/credentials" and request.method == "POST":
            return self._login(request)
        if request.path in BILLING_PATHS:
            return self._billing(request)
        if request.path not in USAGE_PATHS or not self.settings.serves_usage:
            return self.error_body(404, f"Handler for Request not found: {request.path}")
        user = self._user(request)
        if user is None:
            return self.error_body(401, "Not Authenticated")
        if user not in {self.settings.username}:
            return self.error_body(403, "Invalid Role")
        params = {k: v[-1] for k, v in request.query.items()}
        if request.method == "POST" and request.body:
            try:
                body = request.json()
            except ValueError:
                return self.error_body(400, "Invalid JSON")
            params.update({k: str(v) for k, v in (body or {}).items() if v is not None})
        wants_json = "json" in request.headers.get("Accept", "") or params.get("format") == "json"
        if request.path.startswith("/json/"):
            wants_json = True
        try:
            first = dt.date.fromisoformat(params["startDate"])
            end = dt.date.fromisoformat(params["endDate"])
        except (KeyError, ValueError):
            return self.error_body(400, "startDate and endDate are required as YYYY-MM-DD")
        last = end if self.settings.end_inclusive else end - dt.timedelta(days=1)
        by_account, by_customer = self.totals(first, last, params.get("accountId") or None)
        customer = params.get("customerId") or None
        lists = {
            "accountUsage": [
                {"accountId": a, "aiMinutes": m} for a, m in sorted(by_account.items())
            ],
            "customerUsage": [
                {"accountId": a, "customerId": c, "aiMinutes": m}
                for (a, c), m in sorted(by_customer.items())
                if customer is None or c == customer
            ],
        }
        answer = {
            key: rows for key, rows in lists.items() if rows or not self.settings.omit_empty_lists
        }
        if not wants_json:
            html = f"<html><body><h1>GetAIUsage</h1><pre>{json.dumps(answer)}</pre></body></html>"
            return Response(200, html.encode(), content_type="text/html")
        return Response.json(200, answer)

    def _billing(self, request: Request) -> Response:
        if self._user(request) is None:
            return self.error_body(401, "Not Authenticated")
        params = {k.lower(): v[-1] for k, v in request.query.items()}
        account = params.get("accountid")
        if not account:
            return self.error_body(400, "'AccountId' should not be empty.")
        try:
            # Only the date portion is used; both days are counted in full.
            first = dt.date.fromisoformat(params["startdate"][:10])
            last = dt.date.fromisoformat(params["enddate"][:10])
        except (KeyError, ValueError):
            return self.error_body(400, "StartDate and EndDate are required")
        wanted = params.get("customerid")
        customers = [
            {"customerId": c, "internationalCosts": cost, "hasCallRecording": recording}
            for c, (cost, recording) in self.billing_totals(first, last, account).items()
            if not wanted or c == wanted
        ]
        return Response.json(200, {"customers": customers})

    def _login(self, request: Request) -> Response:
        try:
            body = request.json() or {}
        except ValueError:
            return self.error_body(400, "Invalid JSON")
        user, password = body.get("userName"), body.get("password")
        known = {self.settings.username: self.settings.password, **self.settings.other_users}
        if body.get("provider") != "credentials" or known.get(str(user)) != password:
            return self.error_body(401, "Invalid UserName or Password")
        remember = body.get("rememberMe") in (True, "true", "True")
        temporary, permanent = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        session = permanent if remember else temporary
        with self._lock:
            self._sessions[session] = (str(user), 0)
            self.issued_sessions += [temporary, permanent]
            self.logins += 1
        response = Response.json(
            200, {"userId": "1", "sessionId": session, "userName": user, "responseStatus": {}}
        )
        forever = "expires=Fri, 01 Jan 2100 00:00:00 GMT"
        response.headers["Set-Cookie"] = [
            f"ss-id={temporary}; path=/; samesite=lax; httponly",
            f"ss-pid={permanent}; {forever}; path=/; samesite=lax; httponly",
            f"ss-opt={'perm' if remember else 'temp'}; {forever}; path=/; samesite=lax; httponly",
            "X-UAId=1; path=/; samesite=lax; httponly",
        ]
        return response

    def _user(self, request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None
            known = {self.settings.username: self.settings.password, **self.settings.other_users}
            return user if known.get(str(user)) == password else None
        cookies = dict(
            part.strip().split("=", 1)
            for part in request.headers.get("Cookie", "").split(";")
            if "=" in part
        )
        # ServiceStack: the session id is ss-pid when ss-opt holds "perm", else ss-id.
        options = set(cookies.get("ss-opt", "").split(","))
        session = cookies.get("ss-pid") if "perm" in options else cookies.get("ss-id")
        with self._lock:
            if session not in self._sessions:
                return None
            user, used = self._sessions[session]
            if used >= self.settings.session_requests:
                del self._sessions[session]  # expired
                return None
            self._sessions[session] = (user, used + 1)
        return user


class DayIndexedEvoAPI(EvoAPI):
    """EvoAPI whose totals read only the days asked (the original scans every row per request).

    Same answers, byte for byte (the smoke test compares them): a 1M-record warm-up pass would
    otherwise cost days x rows.
    """

    def __init__(self, rows: list[DailyUsage], settings: EvoSettings | None = None) -> None:
        self._by_day: dict[dt.date, list[DailyUsage]] = collections.defaultdict(list)
        super().__init__(rows, settings)
        for row in rows:
            self._by_day[row.day].append(row)

    def add_rows(self, rows: list[DailyUsage]) -> None:
        super().add_rows(rows)
        with self._lock:
            for row in rows:
                self._by_day[row.day].append(row)

    def totals(
        self, first: dt.date, last: dt.date, account: str | None = None
    ) -> tuple[dict, dict]:
        by_account: dict[str, int] = {}
        by_customer: dict[tuple[str, str], int] = {}
        day = first
        while day <= last:
            for row in self._by_day.get(day, ()):
                if account is None or row.account_id == account:
                    by_account[row.account_id] = by_account.get(row.account_id, 0) + row.minutes
                    key = (row.account_id, row.customer_id)
                    by_customer[key] = by_customer.get(key, 0) + row.minutes
            day += dt.timedelta(days=1)
        return by_account, by_customer
