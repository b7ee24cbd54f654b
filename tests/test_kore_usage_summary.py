"""tap-kore-billing, stream billing_usage_summary: the vendor's own figures per bot and UTC period,
read through the asynchronous job exactly, whatever the job does."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import itertools
import json

import pytest

from billing_sandbox.faults import FaultRule
from billing_sandbox.kore import generate_sessions
from billing_toolkit.windows import next_period, period_start
from tests.support import KORE_BOTS, killed_then_resumed, kore_config, run_tap

UTC = dt.timezone.utc
MODULE = "tap_kore_billing"
STREAM = "billing_usage_summary"
START = dt.datetime(2024, 1, 1, tzinfo=UTC)
END = dt.datetime(2024, 6, 1, tzinfo=UTC)  # 152 days: two windows of whole days


def summary_run(server, state=None, **overrides):
    config = kore_config(
        server, **{"start_date": START.isoformat(), "end_date": END.isoformat(), **overrides}
    )
    return run_tap(config, state, module=MODULE, select=[STREAM], timeout=180)


def figures(run) -> dict[tuple[str, str, str], int]:
    found: dict[tuple[str, str, str], int] = {}
    for record in run.records:
        key = (record["bot"], record["period_start"], record["unit"])
        assert key not in found, f"{key} emitted twice in one run"
        found[key] = record["value"]
    return found


def truth(server, granularity="day", *, bots=KORE_BOTS, start=START, end=END, all_bots=False):
    """Every unit of every period of ``[start, end)`` (zeros included), per bot or for ALL."""
    vendor = server.api.summary_truth(granularity, start=start, end=end, bots=set(bots))
    expected: dict[tuple[str, str, str], int] = {}
    labels = ["ALL"] if all_bots else list(bots)
    cursor = period_start(start, granularity)
    while cursor < end:
        text = cursor.isoformat(timespec="microseconds")
        for label in labels:
            rows = [r for (b, p), r in vendor.items() if p == cursor and (all_bots or b == label)]
            for unit in (
                "sessions",
                "requests",
                "alert_notifications",
                "proactive_notifications",
                "conversations",
            ):
                expected[(label, text, unit)] = sum(r[unit] for r in rows)
        cursor = next_period(cursor, granularity)
    return expected


@pytest.mark.parametrize(
    "to_inclusive", [True, False], ids=["toDate-inclusive", "toDate-exclusive"]
)
def test_daily_figures_equal_the_vendors_per_bot_day_and_unit(kore, to_inclusive):
    server = kore(start=START, end=END)
    server.api.settings.summary.to_inclusive = to_inclusive
    run = summary_run(server)
    assert run.returncode == 0, run.stderr[-3000:]
    assert figures(run) == truth(server)
    # Sessions of the vendor's figures are the billing sessions the other stream delivers.
    sessions = sum(v for (_, _, unit), v in figures(run).items() if unit == "sessions")
    assert sessions == len(server.api.truth(bots=set(KORE_BOTS), start=START, end=END)) > 0
    # Two bots x two windows of at most 89 days, each one job: a POST and its polls.
    posts = [r for r in server.api_log() if r.method == "POST"]
    assert len(posts) == 4
    assert all(r.path.endswith("/billingsessionsummary") for r in posts)


@pytest.mark.parametrize(
    ("granularity", "start", "end"),
    [
        ("hour", dt.datetime(2024, 3, 9, 5, 30, tzinfo=UTC), dt.datetime(2024, 3, 12, tzinfo=UTC)),
        ("month", START, END),
    ],
)
def test_hourly_and_monthly_figures_are_whole_utc_periods(kore, granularity, start, end):
    server = kore(start=START, end=END)
    run = summary_run(
        server,
        summary_granularity=granularity,
        start_date=start.isoformat(),
        end_date=end.isoformat(),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = figures(run)
    # The first period is read whole: it starts where the period holding start_date starts.
    assert got == truth(server, granularity, start=period_start(start, granularity), end=end)
    assert {r["granularity"] for r in run.records} == {granularity}
    first = min(r["period_start"] for r in run.records)
    assert first == period_start(start, granularity).isoformat(timespec="microseconds")


def test_admin_scope_without_bots_reads_the_account_as_all(kore):
    server = kore(start=START, end=END)
    run = summary_run(server, scope="admin", bot_ids=None)
    assert run.returncode == 0, run.stderr[-3000:]
    every_bot = sorted({s.botId for s in server.api.sessions})
    assert len(every_bot) == 3
    assert figures(run) == truth(server, bots=every_bot, all_bots=True)
    assert all(
        r.path == "/api/public/bots/billingsessionsummary"
        for r in server.api_log()
        if r.method == "POST"
    )


def test_admin_scope_names_each_bot_in_stream_ids(kore):
    server = kore(start=START, end=END)
    run = summary_run(server, scope="admin")
    assert run.returncode == 0, run.stderr[-3000:]
    assert figures(run) == truth(server)
    bodies = [json.loads(r.body) for r in server.api_log() if r.method == "POST"]
    assert all(b["groupByBot"] == "yes" and len(b["streamIds"]) == 1 for b in bodies)
    assert {b["streamIds"][0] for b in bodies} == set(KORE_BOTS)


def test_a_slow_job_is_polled_with_growing_pauses_until_done(kore):
    server = kore(start=START, end=END)
    server.api.settings.summary.polls_in_progress = 4
    run = summary_run(
        server, bot_ids=[KORE_BOTS[0]], end_date="2024-02-01", summary_poll_milliseconds=100
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert figures(run) == truth(
        server, bots=[KORE_BOTS[0]], end=dt.datetime(2024, 2, 1, tzinfo=UTC)
    )
    polls = [r for r in server.api_log() if r.method == "GET"]
    assert len(polls) == 5  # four answers IN_PROGRESS, then the figures
    # The pause before each poll doubles from summary_poll_milliseconds (0.1 s before the first).
    gaps = [b.arrived - a.arrived for a, b in itertools.pairwise(polls)]
    for gap, pause in zip(gaps, [0.2, 0.4, 0.8, 1.6], strict=True):
        assert pause <= gap < pause + 0.3


@pytest.mark.parametrize("trouble", ["failing_jobs", "vanishing_jobs"])
def test_a_job_that_fails_or_vanishes_is_started_again(kore, trouble):
    server = kore(start=START, end=END)
    setattr(server.api.settings.summary, trouble, 2)
    run = summary_run(server, bot_ids=[KORE_BOTS[0]], end_date="2024-02-01")
    assert run.returncode == 0, run.stderr[-3000:]
    assert figures(run) == truth(
        server, bots=[KORE_BOTS[0]], end=dt.datetime(2024, 2, 1, tzinfo=UTC)
    )
    assert "starting it again (job 3 of at most 3)" in run.stderr
    # The tap's own jobs: three, one after another (no second job while one ran).
    own = [r for r in server.api_log() if r.method == "POST"]
    assert len(own) == 3


@pytest.mark.parametrize("trouble", ["failing_jobs", "vanishing_jobs"])
def test_a_job_that_keeps_failing_fails_the_run_naming_the_setting(kore, trouble):
    server = kore(start=START, end=END)
    setattr(server.api.settings.summary, trouble, 100)
    run = summary_run(server, bot_ids=[KORE_BOTS[0]], summary_job_attempts=2)
    assert run.returncode == 1
    assert "gave up after 2 job(s) (setting summary_job_attempts)" in run.stderr
    assert "Traceback" not in run.stderr
    assert not run.records
    assert STREAM not in (run.last_state or {}).get("bookmarks", {})


def test_a_job_replaced_by_another_clients_waits_for_it_then_starts_again(kore):
    # Another client starts a job on the route (other figures) just before each of our first two
    # jobs' first poll: the tap keeps none of that job's figures, waits for it to end, and starts
    # its own again; that is not a failure of its own (one attempt is enough).
    server = kore(start=START, end=END)
    server.api.settings.summary.replaced_jobs = 2
    run = summary_run(server, bot_ids=[KORE_BOTS[0]], end_date="2024-02-01", summary_job_attempts=1)
    assert run.returncode == 0, run.stderr[-3000:]
    assert figures(run) == truth(
        server, bots=[KORE_BOTS[0]], end=dt.datetime(2024, 2, 1, tzinfo=UTC)
    )
    assert run.stderr.count("waiting for that job to end before starting ours again") == 2
    assert len([r for r in server.api_log() if r.method == "POST"]) == 3


def test_a_route_another_client_never_leaves_fails_the_run_clearly(kore):
    server = kore(start=START, end=END)
    server.api.settings.summary.replaced_jobs = 1000
    run = summary_run(server, bot_ids=[KORE_BOTS[0]], end_date="2024-02-01", summary_job_attempts=1)
    assert run.returncode == 1
    assert "took the route from ours 10 times in one window" in run.stderr
    assert "run one client per route at a time" in run.stderr
    assert not run.records


def test_two_runs_on_one_route_at_once_take_turns_and_both_are_exact(kore):
    # The status route answers the route's latest job: two clients at once replace each other's
    # jobs. A client that finds another's job waits for it to end before starting its own again,
    # so both runs finish, each with its own figures (seen with an Airflow fan-out task and the
    # DuckDB DAG reading the same bot).
    server = kore(start=START, end=END)
    server.api.settings.summary.polls_in_progress = 3
    end = dt.datetime(2024, 2, 1, tzinfo=UTC)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda _: summary_run(server, bot_ids=[KORE_BOTS[0]], end_date=end.isoformat()),
                range(2),
            )
        )
    expected = truth(server, bots=[KORE_BOTS[0]], end=end)
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert figures(run) == expected
    assert server.api.jobs.replaced >= 1, "the two runs did not overlap: nothing was shown"
    assert any("waiting for that job to end" in run.stderr for run in runs)


def test_a_job_still_running_past_the_wait_fails_the_run_naming_the_setting(kore):
    server = kore(start=START, end=END)
    server.api.settings.summary.stuck = True
    run = summary_run(
        server,
        bot_ids=[KORE_BOTS[0]],
        summary_job_max_wait_seconds=1,
        summary_poll_milliseconds=100,
    )
    assert run.returncode == 1
    assert "is still 'IN_PROGRESS'" in run.stderr
    assert "setting summary_job_max_wait_seconds: 1 s" in run.stderr
    assert len([r for r in server.api_log() if r.method == "POST"]) == 1  # not started again


@pytest.mark.parametrize("kind", ["429", "503", "drop", "truncate", "stall"])
@pytest.mark.parametrize("where", [1, 2], ids=["job-start", "status-poll"])
def test_transport_faults_on_the_job_routes_are_survived_exactly(kore, kind, where):
    server = kore(start=START, end=END, faults=[FaultRule(kind, at=(where,))], stall_seconds=5)
    run = summary_run(server, bot_ids=[KORE_BOTS[0]], end_date="2024-02-01")
    assert run.returncode == 0, run.stderr[-3000:]
    assert figures(run) == truth(
        server, bots=[KORE_BOTS[0]], end=dt.datetime(2024, 2, 1, tzinfo=UTC)
    )


def test_a_rerun_reads_again_from_the_period_the_lookback_reaches_and_refreshes_it(kore):
    server = kore(start=START, end=END)
    first = summary_run(server, bot_ids=[KORE_BOTS[0]])
    assert first.returncode == 0, first.stderr[-3000:]
    # Late sessions on the last day: its figure grows, and the rerun must refresh it.
    late = generate_sessions(
        seed=99,
        conversations=20,
        start=dt.datetime(2024, 5, 31, 22, tzinfo=UTC),
        end=END,
        bots=(KORE_BOTS[0],),
    )
    server.api.add_sessions(late)
    server.reset_counters()
    second = summary_run(server, first.last_state, bot_ids=[KORE_BOTS[0]])
    assert second.returncode == 0, second.stderr[-3000:]
    # lookback 24 h from the bookmark (2024-06-01): the periods of 31 May only.
    assert {r["period_start"][:10] for r in second.records} == {"2024-05-31"}
    assert figures(second) == {
        k: v for k, v in truth(server, bots=[KORE_BOTS[0]]).items() if k[1].startswith("2024-05-31")
    }
    assert len([r for r in server.api_log() if r.method == "POST"]) == 1


def test_killed_after_a_window_the_resumed_run_completes_every_figure(kore):
    server = kore(start=START, end=END)
    config = kore_config(server, start_date=START.isoformat(), end_date=END.isoformat())
    killed, resumed = killed_then_resumed(config, module=MODULE, select=[STREAM])
    union = {**figures(killed), **figures(resumed)}
    assert union == truth(server)


def test_selecting_only_billing_sessions_asks_nothing_of_the_other_routes(kore):
    server = kore(start=START, end=END)
    run = run_tap(kore_config(server), module=MODULE)  # no catalog: the default selection
    assert run.returncode == 0, run.stderr[-3000:]
    assert {m["stream"] for m in run.messages if m["type"] == "RECORD"} == {"billing_sessions"}
    assert all(r.path.endswith("/getBillingSessionsDetails") for r in server.api_log())
