"""Hostile answers from the APIs: each is handled by a documented rule, never by a silent drop.

The rules (README, "Reliability"): a declared field of the wrong type or a required field missing
fails the run naming the field; an unknown field is left out with one warning, the record kept; a
success without its list, a body that is not JSON and an HTML error page are asked again (then fail
once the retry budget is spent); a 4xx fails at once; a paging token seen twice, paging that keeps
saying "more" on empty pages, or more pages than ``max_pages_per_window`` fail the run. Every test
also checks the fault-matrix invariant: exact delivery, or a clean failure whose state does not run
ahead of what was delivered.
"""

from __future__ import annotations

import itertools
import json
import typing as t

import pytest

from billing_sandbox.server import Request, Response, SandboxServer
from tests.fault_cases import CASES, TapCase, outcome_of
from tests.reliability import record_key, record_value
from tests.support import run_tap

Mutation = t.Callable[[int, Request, Response], Response]

#: Per tap: the list that holds the records, and fields of each kind in one record.
SHAPES = {
    "luminai": {"list": "items", "string": "host_id", "optional": "host_did", "when": "timestamp"},
    "kore": {
        "list": "sessions",
        "string": "channel",
        "optional": "channelUserId",
        "when": "billingSessionStartDateTime",
    },
    "evovoice": {"list": "accountUsage", "string": "accountId", "figure": "aiMinutes"},
}


def start(case: TapCase, mutate: Mutation, **sandbox: t.Any) -> SandboxServer:
    """A sandbox whose n-th API answer (1-based, every attempt counted) passes through ``mutate``."""
    server = case.start_sandbox(**sandbox)
    real = server.api.handle
    numbers = itertools.count(1)

    def handle(request: Request) -> Response:
        response = real(request)
        if not server.api.is_api_request(request):
            return response
        return mutate(next(numbers), request, response)

    server.api.handle = handle  # type: ignore[method-assign]
    return server


def on_json(at: t.Container[int], edit: t.Callable[[dict[str, t.Any]], t.Any]) -> Mutation:
    """Edit the decoded body of the answers numbered ``at``."""

    def mutate(number: int, request: Request, response: Response) -> Response:
        if number not in at or response.status != 200:
            return response
        return Response.json(200, edit(json.loads(response.body)))

    return mutate


def every_record(edit: t.Callable[[dict[str, t.Any]], None], list_key: str) -> t.Callable:
    def apply(body: dict[str, t.Any]) -> dict[str, t.Any]:
        for item in body.get(list_key) or []:
            edit(item)
        return body

    return apply


def problem(result) -> str:
    """The failure line without the request it quotes (whose body names every field)."""
    return result.stderr.splitlines()[-1].split("Request payload:")[0]


def run(case: TapCase, server: SandboxServer, **config: t.Any):
    result = run_tap(case.config(server, **config), module=case.module)
    return result, outcome_of(case, server, result)


ALL = list(CASES)
PAGED = ["luminai", "kore"]
EVERY = range(1, 10_000)


@pytest.mark.parametrize("tap", ALL)
def test_a_field_of_the_wrong_type_fails_the_run_naming_the_field(tap):
    case, shape = CASES[tap], SHAPES[tap]
    field = shape.get("figure", shape["string"])
    wrong: t.Any = "12" if field == "aiMinutes" else 12345

    def edit(body):
        body[shape["list"]][0][field] = wrong
        return body

    server = start(case, on_json({2}, edit))
    try:
        result, outcome = run(case, server)
        assert outcome == "failed-cleanly"
        assert field in problem(result)
        assert len(server.api_log()) == 2, "a shape error is not retried"
    finally:
        server.stop()


@pytest.mark.parametrize("tap", ALL)
def test_a_missing_required_field_fails_the_run_naming_it(tap):
    case, shape = CASES[tap], SHAPES[tap]
    field = shape.get("when", shape.get("figure"))

    def edit(body):
        body[shape["list"]][-1].pop(field, None)
        body[shape["list"]][-1].pop("datetime", None)  # Lumin.ai's other naming of the time
        return body

    server = start(case, on_json({3}, edit))
    try:
        result, outcome = run(case, server)
        assert outcome == "failed-cleanly"
        assert field in problem(result)
    finally:
        server.stop()


@pytest.mark.parametrize("tap", PAGED)
def test_a_missing_optional_field_keeps_the_record(tap):
    case, shape = CASES[tap], SHAPES[tap]
    server = start(
        case, on_json(EVERY, every_record(lambda r: r.pop(shape["optional"], None), shape["list"]))
    )
    try:
        result, outcome = run(case, server)
        assert outcome == "exact"
        assert all(shape["optional"] not in r for r in result.records)
    finally:
        server.stop()


@pytest.mark.parametrize("tap", ALL)
def test_an_unknown_field_is_left_out_with_one_warning_and_the_record_kept(tap):
    case, shape = CASES[tap], SHAPES[tap]

    def add(record):
        record["surpriseField"] = {"nested": [1, 2]}

    server = start(case, on_json(EVERY, every_record(add, shape["list"])))
    try:
        result, outcome = run(case, server)
        assert outcome == "exact"
        assert all("surpriseField" not in r for r in result.records)
        warnings = [line for line in result.stderr.splitlines() if "'surpriseField'" in line]
        assert len(warnings) == 1, warnings
        assert "records are kept" in warnings[0]
    finally:
        server.stop()


@pytest.mark.parametrize("tap", PAGED)
def test_null_where_the_list_belongs_is_asked_again(tap):
    case, shape = CASES[tap], SHAPES[tap]
    server = start(case, on_json({2}, lambda body: {**body, shape["list"]: None}))
    try:
        result, outcome = run(case, server)
        assert outcome == "exact"
        assert "retrying in" in result.stderr
    finally:
        server.stop()


@pytest.mark.parametrize("tap", PAGED)
def test_null_lists_past_the_retry_budget_fail_cleanly(tap):
    case, shape = CASES[tap], SHAPES[tap]
    server = start(case, on_json(range(2, 100), lambda body: {**body, shape["list"]: None}))
    try:
        result, outcome = run(case, server, retry_max_tries=3, retry_initial_delay_seconds=0.05)
        assert outcome == "failed-cleanly"
        assert len(server.api_log()) == 4
        assert "Giving up after retries" in result.stderr
    finally:
        server.stop()


def test_evo_voice_absent_or_null_lists_are_periods_without_rows():
    # ServiceStack leaves null members out of its JSON: {"customerUsage": [...]} and
    # {"accountUsage": null, ...} both say "no account rows" for that period, not "ask again".
    case = CASES["evovoice"]

    def edit(number: int) -> t.Callable[[dict[str, t.Any]], t.Any]:
        def apply(body: dict[str, t.Any]) -> dict[str, t.Any]:
            if number == 2:
                body.pop("accountUsage", None)
            else:
                body["accountUsage"] = None
            return body

        return apply

    emptied: set[str] = set()

    def mutate(number: int, request: Request, response: Response) -> Response:
        if number in (2, 3) and response.status == 200:
            emptied.add(request.query["startDate"][-1])
            return Response.json(200, edit(number)(json.loads(response.body)))
        return response

    server = start(case, mutate)
    try:
        result = run_tap(case.config(server), module=case.module)
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(emptied) == 2
        truth = case.truth(server)
        want = {
            key: fact.value
            for key, fact in truth.items()
            if not (key[0] == "ai_account_usage" and key[-1] in emptied)
        }
        got = {record_key(m): record_value(m) for m in result.messages if m["type"] == "RECORD"}
        assert got == want
        assert len(server.api_log()) == 8, "one request per day, none asked again"
        assert "retrying" not in result.stderr
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            {"ok": False, "error": "the request could not be served"},
            "does not send: ['error', 'ok']",
        ),
        (
            {"responseStatus": {"errorCode": "Exception", "message": "backend unavailable"}},
            "Exception: backend unavailable",
        ),
    ],
    ids=["keys-it-never-sends", "response-status-error"],
)
def test_evo_voice_an_answer_without_rows_that_is_not_a_usage_answer_fails(body, said):
    case = CASES["evovoice"]

    def mutate(number: int, request: Request, response: Response) -> Response:
        return Response.json(200, body) if number == 3 else response

    server = start(case, mutate)
    try:
        result, outcome = run(case, server)
        assert outcome == "failed-cleanly"
        assert said in problem(result)
        assert len(server.api_log()) == 3, "not asked again"
    finally:
        server.stop()


def _html(status: int) -> Mutation:
    page = b"<html><head><title>Bad Gateway</title></head><body><h1>nginx</h1></body></html>"

    def mutate(number: int, request: Request, response: Response) -> Response:
        if number != 2:
            return response
        return Response(status, page, content_type="text/html")

    return mutate


@pytest.mark.parametrize("tap", ALL)
@pytest.mark.parametrize("status", [200, 502])
def test_an_html_page_instead_of_json_is_asked_again(tap, status):
    case = CASES[tap]
    server = start(case, _html(status))
    try:
        result, outcome = run(case, server)
        if tap == "evovoice" and status == 200:
            # Evo Voice answers HTML when it was not asked for JSON: a setup error, said at once.
            assert outcome == "failed-cleanly"
            assert "not JSON" in result.stderr.splitlines()[-1]
        else:
            assert outcome == "exact"
            assert "retrying in" in result.stderr
    finally:
        server.stop()


@pytest.mark.parametrize("tap", ALL)
def test_an_html_4xx_page_fails_at_once_quoting_it(tap):
    case = CASES[tap]
    server = start(case, _html(404))
    try:
        result, outcome = run(case, server)
        assert outcome == "failed-cleanly"
        assert "HTTP 404" in result.stderr and "<title>Bad Gateway</title>" in result.stderr
        assert len(server.api_log()) == 2
    finally:
        server.stop()


@pytest.mark.parametrize("tap", ALL)
def test_json_under_a_wrong_content_type(tap):
    case = CASES[tap]

    def mutate(number: int, request: Request, response: Response) -> Response:
        response.content_type = "text/plain; charset=latin-1"
        return response

    server = start(case, mutate)
    try:
        result, outcome = run(case, server)
        if tap == "evovoice":
            assert outcome == "failed-cleanly"
            assert "text/plain" in result.stderr.splitlines()[-1]
        else:  # the body decides: valid JSON is read whatever the header says
            assert outcome == "exact"
    finally:
        server.stop()


def test_a_huge_page_is_read_whole_and_exactly():
    case = CASES["luminai"]
    server = case.start_sandbox(page_size=100_000)
    try:
        result = run_tap(case.config(server, window_size_days=90), module=case.module)
        assert outcome_of(case, server, result) == "exact"
        assert server.requests == 1, "one page held the whole range"
    finally:
        server.stop()


def test_a_huge_kore_page_is_read_whole_and_exactly():
    case = CASES["kore"]
    server = case.start_sandbox(page_cap=10_000)
    try:
        result = run_tap(case.config(server, page_size=10_000), module=case.module)
        assert outcome_of(case, server, result) == "exact"
        assert server.requests == 8, "one page per window and bot (2 bots x 4 windows)"
    finally:
        server.stop()


# -- paging that loops or never ends -------------------------------------------------------------


def test_a_repeated_paging_token_fails_as_a_loop():
    case = CASES["luminai"]
    first: dict[str, t.Any] = {}

    def mutate(number: int, request: Request, response: Response) -> Response:
        body = json.loads(response.body)
        if number == 1:
            first["token"] = body.get("next_token")
            return response
        if number == 2:
            body["next_token"] = first["token"]
        return Response.json(200, body)

    server = start(case, mutate)
    try:
        result, outcome = run(case, server)
        assert outcome == "failed-cleanly"
        assert "paging loop" in result.stderr.splitlines()[-1]
        assert len(server.api_log()) == 2
    finally:
        server.stop()


def _endless(repeat_items: bool) -> Mutation:
    """After the first page, every answer has a fresh token (and the first items, or none)."""
    first: dict[str, t.Any] = {}

    def mutate(number: int, request: Request, response: Response) -> Response:
        body = json.loads(response.body)
        if number == 1:
            first["items"] = body["items"]
        items = first["items"] if repeat_items else []
        return Response.json(200, {"ok": True, "items": items, "next_token": f"endless-{number}"})

    return mutate


def test_a_token_that_never_ends_on_empty_pages_fails():
    case = CASES["luminai"]
    server = start(case, _endless(repeat_items=False))
    try:
        result, outcome = run(case, server)
        assert outcome == "failed-cleanly"
        assert "paging does not end: 500 pages in a row" in problem(result)
        assert len(server.api_log()) == 501
    finally:
        server.stop()


def test_a_token_that_never_ends_with_data_stops_at_the_page_guard():
    case = CASES["luminai"]
    server = start(case, _endless(repeat_items=True))
    try:
        result, outcome = run(case, server, max_pages_per_window=30)
        assert outcome == "failed-cleanly"
        assert "more than 30 pages" in result.stderr.splitlines()[-1]
        assert "max_pages_per_window" in result.stderr.splitlines()[-1]
        assert len(server.api_log()) == 31
    finally:
        server.stop()


def test_kore_more_available_forever_on_the_same_page_stops_at_the_page_guard():
    # Every answer repeats the first page and says there is more, with no total: the repeated
    # sessions are emitted once, and the page guard ends the paging.
    case = CASES["kore"]
    first: dict[str, t.Any] = {}

    def mutate(number: int, request: Request, response: Response) -> Response:
        body = json.loads(response.body)
        first.setdefault("sessions", body["sessions"])
        return Response.json(200, {"sessions": first["sessions"], "moreAvailable": True})

    server = start(case, mutate)
    try:
        result, outcome = run(case, server, max_pages_per_window=25)
        assert outcome == "failed-cleanly"
        assert "more than 25 pages" in problem(result)
        assert len(server.api_log()) == 26
    finally:
        server.stop()
