"""tap-kore-billing, stream llm_usage_logs: every LLM call once per run window, keys in snake_case,
tokens as integers, and a primary key computed from the documented fields."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from billing_sandbox.faults import FaultRule
from billing_sandbox.kore import generate_sessions
from tests.support import KORE_BOTS, killed_then_resumed, kore_config, run_tap

UTC = dt.timezone.utc
MODULE = "tap_kore_billing"
STREAM = "llm_usage_logs"
START = dt.datetime(2024, 1, 1, tzinfo=UTC)
END = dt.datetime(2024, 6, 1, 12, tzinfo=UTC)  # ends inside a day


def llm_run(server, state=None, **overrides):
    config = kore_config(
        server, **{"start_date": START.isoformat(), "end_date": END.isoformat(), **overrides}
    )
    return run_tap(config, state, module=MODULE, select=[STREAM], timeout=180)


def documented_id(call) -> str:
    """The key the README documents, computed here from the sandbox's own call."""
    fields = [
        call.bot_id,
        call.start.isoformat(timespec="microseconds"),
        call.end.isoformat(timespec="microseconds"),
        call.user_id,
        call.task_id,
        call.feature,
        call.model,
        call.prompt,
        call.channel,
        call.integration,
        call.description,
        call.completion_id if call.status_code == 200 else None,
    ]
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()


def assert_calls_exact(run, server, *, bots=KORE_BOTS, start=START, end=END):
    assert run.returncode == 0, run.stderr[-3000:]
    truth = {
        documented_id(c): c for c in server.api.llm_truth(bots=set(bots), start=start, end=end)
    }
    ids = [r["id"] for r in run.records]
    assert len(ids) == len(set(ids)), "a call was emitted twice in one run"
    assert set(ids) == set(truth)
    for record in run.records:
        call = truth[record["id"]]
        assert record["bot_id"] == call.bot_id
        assert record["start_date"] == call.start.isoformat(timespec="microseconds")
        assert record["feature_name"] == call.feature  # sent as "Feature Name " (trailing space)
        assert record["model_name"] == call.model
        assert record["status_code"] == call.status_code
        assert record["request_tokens"] == call.request_tokens
        assert record["response_tokens"] == call.response_tokens
        assert type(record["request_tokens"]) is int and type(record["response_tokens"]) is int
    return truth


@pytest.mark.parametrize(
    "date_to_inclusive", [True, False], ids=["dateTo-inclusive", "dateTo-exclusive"]
)
def test_every_call_once_with_its_tokens_and_documented_key(kore, date_to_inclusive):
    server = kore(start=START, end=END, llm_date_to_inclusive=date_to_inclusive)
    run = llm_run(server)
    truth = assert_calls_exact(run, server)
    assert len(truth) > 300
    # The prompt and completion texts never leave the tap; the provider's usage does.
    assert "end-user text" not in run.stdout
    assert any(r.get("provider_usage", {}).get("total_tokens") for r in run.records)
    # Days as in the documented sample; limit and skip as text.
    body = json.loads(server.api_log()[0].body)
    assert body["dateFrom"] == "2024-01-01" and isinstance(body["limit"], str)


def test_a_limit_capped_below_the_page_size_still_pages_through(kore):
    # The API gives 30 rows where 100 were asked: a page of 30 must not be taken for the last.
    server = kore(start=START, end=END, llm_page_cap=30)
    run = llm_run(server, llm_page_size=100)
    assert_calls_exact(run, server)
    assert max(len(json.loads(r.body)) for r in server.api_log() if r.method == "POST") > 0
    pages = [json.loads(r.body) for r in server.api_log()]
    assert any(int(p["skip"]) >= 60 for p in pages)


def test_calls_arriving_while_a_window_is_paged_are_read_once_and_none_missed(kore):
    server = kore(start=START, end=END, llm_page_cap=20)
    # After the second request, new calls arrive at the newest end of the first window
    # ([2024-01-01, 2024-03-30), listed newest first): every later page shifts by their number.
    late = generate_sessions(
        seed=77,
        conversations=15,
        start=dt.datetime(2024, 3, 29, tzinfo=UTC),
        end=dt.datetime(2024, 3, 29, 20, tzinfo=UTC),
        bots=(KORE_BOTS[0],),
    )
    original = server.api.handle
    served = []

    def handle(request):
        served.append(request.path)
        if len(served) == 2:
            server.api.add_sessions(late)
        return original(request)

    server.api.handle = handle
    window_end = dt.datetime(2024, 3, 30, tzinfo=UTC)
    run = llm_run(server, bot_ids=[KORE_BOTS[0]], llm_page_size=20, end_date=window_end.isoformat())
    assert_calls_exact(run, server, bots=[KORE_BOTS[0]], end=window_end)
    assert "changed while it was read" in run.stderr


def test_without_bot_ids_the_stream_fails_naming_the_setting(kore):
    server = kore(start=START, end=END)
    run = llm_run(server, scope="admin", bot_ids=None)
    assert run.returncode == 1
    assert "llm_usage_logs reads one bot at a time" in run.stderr
    assert "set bot_ids, or deselect the stream" in run.stderr
    assert "Traceback" not in run.stderr
    assert not server.api_log()


@pytest.mark.parametrize("kind", ["429", "500", "drop", "truncate"])
def test_transport_faults_on_the_logs_route_are_survived_exactly(kore, kind):
    server = kore(start=START, end=END, faults=[FaultRule(kind, at=(2,))])
    run = llm_run(server, bot_ids=[KORE_BOTS[0]])
    assert_calls_exact(run, server, bots=[KORE_BOTS[0]])


def test_the_key_is_the_same_on_every_rerun_and_the_lookback_reads_only_recent_calls(kore):
    server = kore(start=START, end=END)
    first = llm_run(server, bot_ids=[KORE_BOTS[0]], lookback_minutes=3 * 1440)
    assert_calls_exact(first, server, bots=[KORE_BOTS[0]])
    server.reset_counters()
    again = llm_run(server, first.last_state, bot_ids=[KORE_BOTS[0]], lookback_minutes=3 * 1440)
    assert again.returncode == 0, again.stderr[-3000:]
    lookback = END - dt.timedelta(days=3)
    recent = {r["id"] for r in first.records if r["start_date"] >= lookback.isoformat()}
    assert {r["id"] for r in again.records} == recent
    assert recent  # the day before the end has calls


def test_killed_after_a_window_the_resumed_run_completes_every_call(kore):
    server = kore(start=START, end=END)
    config = kore_config(server, start_date=START.isoformat(), end_date=END.isoformat())
    killed, resumed = killed_then_resumed(config, module=MODULE, select=[STREAM])
    union = {r["id"] for r in killed.records} | {r["id"] for r in resumed.records}
    assert union == {
        documented_id(c) for c in server.api.llm_truth(bots=set(KORE_BOTS), start=START, end=END)
    }
