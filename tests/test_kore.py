"""tap-kore-billing: every billing session exactly once per key, all four datetimes in UTC."""

from __future__ import annotations

import datetime as dt
import signal
from zoneinfo import ZoneInfo

import pytest

from billing_sandbox.faults import FaultRule
from billing_sandbox.kore import KoreSession, generate_sessions, mint_jwt
from tests.support import (
    KORE_BOTS,
    KORE_CLIENT_ID,
    KORE_CLIENT_SECRET,
    KORE_END,
    KORE_START,
    kore_config,
    run_tap,
    run_tap_interrupted,
    run_tap_killed_after_states,
)

UTC = dt.timezone.utc
MODULE = "tap_kore_billing"
DATETIMES = {
    "conversationSessionStartDateTime": "conversationStart",
    "conversationSessionEndDateTime": "conversationEnd",
    "billingSessionStartDateTime": "billingStart",
    "billingSessionEndDateTime": "billingEnd",
}


def one_session(bot, session_id, moment, minutes=5):
    """A billing session of one block, its conversation of the same span."""
    end = moment + dt.timedelta(minutes=minutes)
    return KoreSession(
        bot,
        "IVR",
        "u",
        "c",
        "Conversations",
        f"conv-{session_id}",
        moment,
        end,
        session_id,
        moment,
        end,
    )


def kore_run(config, state=None, *extra):
    return run_tap(config, state, *extra, module=MODULE)


def assert_exact(
    run, server, *, bots=frozenset(KORE_BOTS), channels=None, start=KORE_START, end=KORE_END
):
    """``bots=None``: every bot of the account (the Admin scope)."""
    assert run.returncode == 0, run.stderr[-3000:]
    truth = {
        s.billingSessionId: s
        for s in server.api.truth(bots=bots, channels=channels, start=start, end=end)
    }
    ids = [r["billingSessionId"] for r in run.records]
    assert len(ids) == len(set(ids)), "a session was emitted twice in one run"
    assert set(ids) == set(truth)
    for record in run.records:
        session = truth[record["billingSessionId"]]
        for field, attribute in DATETIMES.items():
            assert record[field] == getattr(session, attribute).isoformat(
                timespec="microseconds"
            ), field
        assert record["conversationSessionId"] == session.conversationSessionId
    assert server.concurrency_violations == 0


#: What ``total`` counts is undocumented: the samples read as the page's sessions ("page", the
#: sandbox's default), the other plausible reading is every match. The tap must be exact under both.
TOTAL_READINGS = ["page", "matches"]


@pytest.mark.parametrize("total_counts", TOTAL_READINGS)
@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Australia/Lord_Howe"])
def test_sessions_and_datetimes_exact_over_more_than_90_days_across_dst(kore, zone, total_counts):
    server = kore(timezone=zone, total_counts=total_counts)
    # Bursts around New York's changes: 01:00-02:00 happens twice on 3 Nov (05-07 UTC) and
    # 02:00-03:00 never happens on 10 Mar; Lord Howe moves by 30 minutes (6 Apr, 6 Oct 2024).
    bursts = ("2024-11-03T04:30", "2024-03-10T06:30", "2024-04-06T14:00", "2024-10-05T15:00")
    for number, begin in enumerate(bursts):
        start = dt.datetime.fromisoformat(begin).replace(tzinfo=UTC)
        server.api.add_sessions(
            generate_sessions(
                seed=100 + number, conversations=60, start=start, end=start + dt.timedelta(hours=3)
            )
        )
    run = kore_run(kore_config(server))
    assert_exact(run, server)
    starts = {r["billingSessionStartDateTime"][:13] for r in run.records}
    assert {"2024-11-03T05", "2024-11-03T06"} <= starts


@pytest.mark.parametrize("total_counts", TOTAL_READINGS)
def test_paging_follows_more_available_and_never_ends_on_total(kore, total_counts):
    # About 1,800 sessions over pages of 100: a total that counts the page (as the documented
    # samples show) must not end a window after its first page, nor look like a moving window.
    server = kore(conversations=4000, page_cap=100, total_counts=total_counts)
    run = kore_run(kore_config(server, page_size=100, bot_ids=[KORE_BOTS[0]]))
    assert_exact(run, server, bots={KORE_BOTS[0]})
    truth = server.api.truth(bots={KORE_BOTS[0]}, start=KORE_START, end=KORE_END)
    assert len(truth) > 1000
    pages = sum(-(-n // 100) or 1 for n in _sessions_per_window(server, run))
    assert server.requests == pages, "one request per page: no window read twice"
    assert "changed while it was read" not in run.stderr


def _sessions_per_window(server, run):
    """How many sessions each window of the run's request log matched (one bot)."""
    windows = {}
    for request in server.api_log():
        body = __import__("json").loads(request.body)
        windows[(body["fromDate"], body["toDate"])] = None
    counts = []
    for low, high in windows:
        start = dt.datetime.fromisoformat(low.replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(high.replace("Z", "+00:00"))
        counts.append(len(server.api.truth(bots={KORE_BOTS[0]}, start=start, end=end)))
    return counts


def test_conversations_spanning_several_billing_sessions_keep_each(kore):
    server = kore()
    run = kore_run(kore_config(server))
    assert_exact(run, server)
    per_conversation: dict[str, int] = {}
    for record in run.records:
        per_conversation[record["conversationSessionId"]] = (
            per_conversation.get(record["conversationSessionId"], 0) + 1
        )
    assert max(per_conversation.values()) > 1


def test_admin_scope_reads_every_bot_of_the_account(kore):
    server = kore()
    run = kore_run(kore_config(server, bot_ids=None))
    assert_exact(run, server, bots=None)
    assert all(r.path == "/api/public/bots/getBillingSessionsDetails" for r in server.api_log())
    assert all("botId" not in _body(r) for r in server.api_log())


def _body(request):
    return __import__("json").loads(request.body)


def test_admin_scope_with_named_bots_sends_each_as_bot_id_in_its_own_partition(kore):
    server = kore()
    run = kore_run(kore_config(server, scope="admin"))
    assert_exact(run, server)
    log = server.api_log()
    assert {r.path for r in log} == {"/api/public/bots/getBillingSessionsDetails"}
    assert {_body(r)["botId"] for r in log} == set(KORE_BOTS)
    partitions = run.last_state["bookmarks"]["billing_sessions"]["partitions"]
    assert sorted(p["context"]["botId"] for p in partitions) == sorted(KORE_BOTS)


def test_scope_defaults_to_bot_with_bot_ids(kore):
    server = kore()
    run = kore_run(kore_config(server))
    assert_exact(run, server)
    assert {r.path for r in server.api_log()} == {
        f"/api/public/bot/{bot}/getBillingSessionsDetails" for bot in KORE_BOTS
    }
    assert all("botId" not in _body(r) for r in server.api_log())


def test_a_change_of_scope_keeps_the_bookmarks_of_each_bot(kore):
    first_end = dt.datetime(2024, 10, 1, tzinfo=UTC)
    server = kore()
    first = kore_run(kore_config(server, scope="bot", end_date=first_end.isoformat()))
    assert first.returncode == 0
    second = kore_run(kore_config(server, scope="admin"), first.last_state)
    assert second.returncode == 0
    assert (
        min(r["billingSessionStartDateTime"] for r in second.records)
        >= (first_end - dt.timedelta(minutes=1440)).isoformat()
    )
    union = {r["billingSessionId"] for r in first.records + second.records}
    assert union == {s.billingSessionId for s in server.api.truth(bots=set(KORE_BOTS))}


def test_the_admin_route_spends_one_budget_for_the_account(kore):
    # Limits are per account on the Admin route: two bots share one budget there. At one request
    # a minute, the second bot's request waits for the first's minute; on the Bot Builder route
    # (a budget per bot) both go at once. The Admin run is stopped after 3 s: by then its second
    # request must not have been sent.
    end = KORE_START + dt.timedelta(days=60)
    per_bot = kore(end=end, conversations=40)
    config = kore_config(
        per_bot, max_requests_per_minute=1, page_size=1000, end_date=end.isoformat()
    )
    assert_exact(kore_run(config), per_bot, end=end)
    assert per_bot.requests == 2

    account = kore(end=end, conversations=40)
    config = kore_config(
        account, scope="admin", max_requests_per_minute=1, page_size=1000, end_date=end.isoformat()
    )
    run = run_tap_interrupted(config, module=MODULE, after_seconds=3, signum=signal.SIGTERM)
    assert run.returncode == 128 + signal.SIGTERM, run.stderr[-2000:]
    assert account.requests == 1
    assert "per account" in run.stderr


def test_admin_route_is_a_setting(kore):
    server = kore()
    run = kore_run(
        kore_config(server, bot_ids=None, admin_path="/api/public/getBillingSessionsDetails")
    )
    assert_exact(run, server, bots=None)
    assert {r.path for r in server.api_log()} == {"/api/public/getBillingSessionsDetails"}


def test_channel_filter_queries_each_channel_on_its_own(kore):
    server = kore()
    run = kore_run(kore_config(server, channels=["IVR", "rtm"]))
    assert_exact(run, server, channels={"IVR", "rtm"})
    partitions = run.last_state["bookmarks"]["billing_sessions"]["partitions"]
    assert len(partitions) == 4  # 2 bots x 2 channels


@pytest.mark.parametrize("total_counts", TOTAL_READINGS)
def test_older_api_without_paging_is_split_until_complete(kore, total_counts):
    # The older API ignores limit and answers at most 40 sessions; page_size is set to that cap.
    server = kore(paging=False, legacy_cap=40, total_counts=total_counts)
    run = kore_run(kore_config(server, page_size=40))
    assert_exact(run, server)
    assert "splitting it" in run.stderr


def test_older_api_whose_total_counts_matches_is_split_even_below_page_size(kore):
    server = kore(paging=False, legacy_cap=40, total_counts="matches")
    run = kore_run(kore_config(server, page_size=100))
    assert_exact(run, server)
    assert "of" in run.stderr and "does not page" in run.stderr


@pytest.mark.parametrize("total_counts", TOTAL_READINGS)
def test_a_window_that_cannot_be_split_further_fails_loudly(kore, total_counts):
    # Every conversation of one bot starts in the same minute: no split can bring it under the cap.
    server = kore(paging=False, legacy_cap=5, conversations=0, total_counts=total_counts)
    burst = generate_sessions(
        seed=5,
        conversations=30,
        start=dt.datetime(2024, 2, 1, 12, tzinfo=UTC),
        end=dt.datetime(2024, 2, 1, 12, 0, 20, tzinfo=UTC),
        bots=(KORE_BOTS[0],),
    )
    server.api.add_sessions(burst)
    run = kore_run(kore_config(server, bot_ids=[KORE_BOTS[0]], page_size=5))
    assert run.returncode != 0
    assert "Not truncating in silence" in run.stderr
    bookmark = (
        run.last_state["bookmarks"]["billing_sessions"]["partitions"][0].get(
            "replication_key_value"
        )
        if run.last_state
        else None
    )
    assert bookmark is None or bookmark <= "2024-02-01T12:00:00"


def test_page_size_capped_by_the_api_still_pages_through(kore):
    server = kore(page_cap=20)
    run = kore_run(kore_config(server, page_size=500))
    assert_exact(run, server)


def test_rate_limit_answers_are_waited_out_and_the_run_stays_exact(kore):
    server = kore(rate_limits=[(4, 1.0)])
    run = kore_run(kore_config(server))
    assert_exact(run, server)
    assert server.api.rate_limited > 0
    assert "rate limited" not in run.stdout


def test_rate_limit_message_under_another_status_is_waited_out(kore):
    server = kore(rate_limits=[(4, 1.0)], rate_limit_status=400)
    run = kore_run(kore_config(server))
    assert_exact(run, server)
    assert server.api.rate_limited > 0


def test_client_side_throttle_keeps_within_the_limit(kore):
    # 6 per minute would be far too slow here; the sandbox's limit is the minute budget scaled down.
    server = kore(rate_limits=[(60, 60.0)])
    run = kore_run(kore_config(server, max_requests_per_minute=50))
    assert_exact(run, server)
    assert server.api.rate_limited == 0


@pytest.mark.parametrize("kind", ["429", "500", "503", "stall", "drop", "truncate"])
def test_retriable_faults_are_survived_exactly(kore, kind):
    server = kore(faults=[FaultRule(kind, at=(1, 5, 9))], stall_seconds=5)
    run = kore_run(kore_config(server, read_timeout_seconds=0.5))
    assert_exact(run, server)


def test_bad_credentials_fail_clearly_without_state(kore):
    server = kore()
    run = kore_run(kore_config(server, client_secret="not-the-secret-at-all"))
    assert run.returncode != 0
    assert "HTTP 401" in run.stderr and "Invalid SDK credentials" in run.stderr
    assert not run.records


def test_a_ready_jwt_works_and_is_never_printed(kore):
    server = kore()
    token = mint_jwt(KORE_CLIENT_ID, KORE_CLIENT_SECRET)
    config = kore_config(server, client_id=None, client_secret=None, jwt=token)
    run = kore_run(config)
    assert_exact(run, server)
    assert token not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"client_secret": None}, "client_secret"),
        ({"jwt": "eyJhbGciOiAiSFMyNTYiLCJ4Ijp9.e30.c2ln"}, "jwt"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"window_size_days": 120}, "window_size_days"),
        ({"admin_path": "api/no-slash"}, "admin_path"),
        ({"max_requests_per_minute": 100}, "max_requests_per_minute"),
        ({"client_id": "   "}, "client_id"),
    ],
)
def test_bad_config_is_refused_before_any_request(kore, overrides, setting):
    server = kore()
    run = kore_run(kore_config(server, **overrides))
    assert run.returncode != 0
    assert any(setting in line for line in run.stderr.splitlines() if "| ERROR" in line), run.stderr
    assert "Traceback" not in run.stderr
    assert server.requests == 0


@pytest.mark.parametrize(
    ("scope", "route", "meaning"),
    [
        (
            "bot",
            "/api/public/bot/st-1a2b3c4d-0001/getBillingSessionsDetails",
            "Bot Builder API scope",
        ),
        ("admin", "/api/public/bots/getBillingSessionsDetails", "Admin API scope"),
    ],
)
def test_connection_test_names_scope_and_route_and_what_a_401_means_there(
    kore, scope, route, meaning
):
    server = kore()
    good = kore_run(kore_config(server, scope=scope), None, "--test")
    assert good.returncode == 0, good.stderr
    assert server.requests == 1
    passed = next(line for line in good.stderr.splitlines() if "Connection test passed" in line)
    assert f"scope {scope}: POST " in passed and route in passed
    bad = kore_run(
        kore_config(server, scope=scope, client_secret="wrong-secret-value"), None, "--test"
    )
    assert bad.returncode == 1
    failed = next(line for line in bad.stderr.splitlines() if "Connection test failed" in line)
    assert f"scope {scope}" in failed and route in failed
    assert meaning in failed and "HTTP 401" in failed


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_connection_test_shows_the_newest_session_raw_and_in_utc(kore, zone):
    end = dt.datetime(2024, 7, 1, tzinfo=UTC)
    server = kore(timezone="America/New_York", conversations=0)
    newest = end - dt.timedelta(hours=3)
    for number, moment in enumerate((newest, newest - dt.timedelta(hours=5))):
        server.api.add_sessions([one_session(KORE_BOTS[0], f"newest-check-{number}", moment, 4)])
    config = kore_config(server, end_date=end.isoformat(), timezone=zone)
    run = kore_run(config, None, "--test")
    assert run.returncode == 0, run.stderr
    passed = next(line for line in run.stderr.splitlines() if "Connection test passed" in line)
    raw = server.api.render_time(newest)  # as the API writes it: New York time, no zone
    assert "newest-check-0" in passed and repr(raw) in passed and f"timezone {zone}" in passed
    reading = dt.datetime.strptime(raw, "%m-%d-%Y %I:%M:%S %p").replace(tzinfo=ZoneInfo(zone))
    assert reading.astimezone(UTC).isoformat(timespec="microseconds") in passed
    empty = kore_run({**config, "end_date": "2024-06-01T00:00:00+00:00"}, None, "--test")
    assert empty.returncode == 0
    assert "No session between" in empty.stderr


def test_incremental_rerun_reads_new_sessions_and_the_lookback_only(kore):
    first_end = dt.datetime(2024, 10, 1, tzinfo=UTC)
    server = kore(end=first_end)
    first = kore_run(kore_config(server, end_date=first_end.isoformat()))
    assert first.returncode == 0
    server.api.add_sessions(
        generate_sessions(
            seed=77, conversations=200, start=first_end - dt.timedelta(hours=20), end=KORE_END
        )
    )
    second = kore_run(kore_config(server), first.last_state)
    assert second.returncode == 0
    union = {r["billingSessionId"] for r in first.records} | {
        r["billingSessionId"] for r in second.records
    }
    assert union == {
        s.billingSessionId
        for s in server.api.truth(bots=set(KORE_BOTS), start=KORE_START, end=KORE_END)
    }
    oldest = min(r["billingSessionStartDateTime"] for r in second.records)
    assert oldest >= (first_end - dt.timedelta(minutes=1440)).isoformat()


@pytest.mark.parametrize("states_before_kill", [1, 3, 5])
def test_sigkill_then_resume_loses_nothing(kore, states_before_kill):
    server = kore(conversations=2000, page_cap=20)
    config = kore_config(server, window_size_days=30)
    killed = run_tap_killed_after_states(config, None, states_before_kill, module=MODULE)
    resumed = kore_run(config, killed.last_state)
    assert resumed.returncode == 0
    union = {r["billingSessionId"] for r in killed.records} | {
        r["billingSessionId"] for r in resumed.records
    }
    assert union == {
        s.billingSessionId
        for s in server.api.truth(bots=set(KORE_BOTS), start=KORE_START, end=KORE_END)
    }


@pytest.mark.parametrize("total_counts", TOTAL_READINGS)
def test_a_session_arriving_while_a_window_is_paged_is_read_once_and_not_missed(kore, total_counts):
    start, end = dt.datetime(2024, 11, 1, tzinfo=UTC), dt.datetime(2024, 11, 8, tzinfo=UTC)
    server = kore(
        start=start, end=end - dt.timedelta(hours=1), conversations=120, total_counts=total_counts
    )
    api = server.api
    real = api.handle
    late = end - dt.timedelta(minutes=1)
    arrival = KoreSession(
        KORE_BOTS[0],
        "IVR",
        "u-late",
        "c-late",
        "Conversations",
        "conv-late",
        late,
        late,
        "late-session-000000000001",
        late,
        late,
    )

    def handle(request):
        response = real(request)
        if len(server.api_log()) == 1:  # it finishes while the tap pages: newest first, on top
            api.add_sessions([arrival])
        return response

    api.handle = handle
    run = kore_run(
        kore_config(
            server, bot_ids=[KORE_BOTS[0]], start_date=start.isoformat(), end_date=end.isoformat()
        )
    )
    assert_exact(run, server, bots={KORE_BOTS[0]}, start=start, end=end)
    assert "changed while it was read" in run.stderr


def test_each_partition_resolves_the_repeated_hour_on_its_own(kore):
    # One window per bot covers 3 Nov: the newest-first anchor must not carry over between bots.
    start, end = dt.datetime(2024, 10, 20, tzinfo=UTC), dt.datetime(2024, 11, 20, tzinfo=UTC)
    server = kore(timezone="America/New_York", start=start, end=end, conversations=0)
    for number, bot in enumerate(KORE_BOTS):
        for minute in (10, 30, 50):
            for hour in (5, 6):  # 01:xx EDT and 01:xx EST
                moment = dt.datetime(2024, 11, 3, hour, minute, tzinfo=UTC)
                server.api.add_sessions(
                    [one_session(bot, f"s{number}{hour}{minute:02d}0000000000000", moment)]
                )
    run = kore_run(kore_config(server, start_date=start.isoformat(), end_date=end.isoformat()))
    assert_exact(run, server, start=start, end=end)


@pytest.mark.parametrize(
    ("zone", "written", "expected"),
    [
        # 10 March 2024, New York: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        ("America/New_York", "03-10-2024 2:30:00 am", "2024-03-10T07:30:00.000000+00:00"),
        # 6 October 2024, Lord Howe: 02:00 +10:30 jumps to 02:30 +11:00; 02:10 does not exist.
        ("Australia/Lord_Howe", "10-06-2024 2:10:00 am", "2024-10-05T15:40:00.000000+00:00"),
    ],
)
def test_a_local_time_inside_a_spring_forward_gap_takes_the_offset_before_the_change(
    kore, zone, written, expected
):
    # The sandbox renders real instants, so it never writes a time that does not exist: this one
    # is written into the answer by hand. The documented rule, checked here against the zone's
    # offset before the change (not against the tap's own helper): read it with that offset.
    start, end = dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 10, 20, tzinfo=UTC)
    server = kore(timezone=zone, start=start, end=end, conversations=0)
    moment = dt.datetime.fromisoformat(expected) + dt.timedelta(hours=2)
    server.api.add_sessions([one_session(KORE_BOTS[0], "gap00000000000000000001", moment)])
    render = server.api._render

    def with_gap_time(session):
        rendered = render(session)
        rendered["billingSessionStartDateTime"] = written
        rendered["conversationSessionStartDateTime"] = written
        return rendered

    server.api._render = with_gap_time
    config = kore_config(
        server, bot_ids=[KORE_BOTS[0]], start_date=start.isoformat(), end_date=end.isoformat()
    )
    run = kore_run(config)
    assert run.returncode == 0, run.stderr[-3000:]
    (record,) = run.records
    assert record["billingSessionStartDateTime"] == expected
    assert record["conversationSessionStartDateTime"] == expected
    before = dt.datetime.fromisoformat(expected).astimezone(ZoneInfo(zone)) - dt.timedelta(hours=1)
    naive = dt.datetime.strptime(written, "%m-%d-%Y %I:%M:%S %p")
    assert naive.replace(tzinfo=before.utcoffset() and dt.timezone(before.utcoffset())) == (
        dt.datetime.fromisoformat(expected)
    )


def test_without_paging_or_total_a_full_page_is_split_not_trusted(kore):
    # Nothing says how many sessions matched: a page holding page_size sessions may be cut short.
    server = kore(paging=False, legacy_cap=40, legacy_total=False)
    run = kore_run(kore_config(server, page_size=40))
    assert_exact(run, server)
    assert "as many as the limit asked for" in run.stderr


@pytest.mark.parametrize(
    "zone", ["America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns"]
)
def test_the_fast_readings_of_local_times_agree_with_the_zone_rules(zone):
    # Local times are read by slicing, with the zone arithmetic cached per local hour; both must
    # agree with the arithmetic done afresh, across both DST changes of two years (Lord Howe's is
    # 30 minutes, India's and Newfoundland's offsets are not whole hours).
    from billing_toolkit.timestamps import format_timestamp
    from tap_kore_billing import localtime

    tz = ZoneInfo(zone)
    moment, differ = dt.datetime(2023, 1, 1), []
    while moment < dt.datetime(2025, 1, 1):
        text = f"{moment:%m-%d-%Y} {moment.hour % 12 or 12}:{moment:%M:%S} " + (
            "am" if moment.hour < 12 else "pm"
        )
        want = [format_timestamp(c) for c in localtime._candidates(moment, tz)]
        got = [format_timestamp(c) for c in localtime.local_candidates(text, tz)]
        if localtime.utc_readings(text, tz) != want or got != want:
            differ.append(text)
        moment += dt.timedelta(minutes=23, seconds=7)
    assert differ == []
