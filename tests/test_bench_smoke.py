"""The benchmark harness at a tiny size: every variant measured, requests minimal, pages pre-built.

`make bench` is not part of `make test`; this keeps the harness from rotting. No figure is timed.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import requests

from billing_sandbox import registry
from billing_sandbox.credentials import SECRETS
from billing_sandbox.evovoice import DayIndexedEvoAPI, EvoAPI, EvoSettings, generate_usage
from billing_sandbox.kore import KoreAPI, KoreSettings, generate_sessions, mint_jwt
from billing_sandbox.luminai import LuminAPI, LuminSettings, generate_events
from billing_sandbox.prebuilt import PrebuiltPages
from billing_sandbox.server import SandboxServer
from tests.support import (
    EVO_PASSWORD,
    EVO_USERNAME,
    KORE_CLIENT_ID,
    KORE_CLIENT_SECRET,
    LUMIN_TOKEN,
    assert_no_secrets,
)

ROOT = Path(__file__).resolve().parent.parent
TAPS = registry.NAMES
VARIANTS = ("bare-loop", "sdk-default", "tap")
UTC = dt.timezone.utc


def test_harness_measures_every_variant_with_minimal_requests(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", "500", "--repeats", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "benchmarks.json").read_text())
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
    rows = {(r["tap"], r["variant"]): r for r in report["summary"]}
    assert set(rows) == {(tap, variant) for tap in TAPS for variant in VARIANTS}
    for (tap, variant), row in rows.items():
        assert row["size"] == 500
        assert row["requests"] == [row["minimum_requests"]], (tap, variant)
        assert row["cache_misses"] == 0, (tap, variant)
        assert row["concurrency_violations"] == 0
        assert row["records_per_second"] > 0
        assert row["peak_rss_mb"] > 0
        if variant != "bare-loop":
            assert row["exact"], (tap, variant, row["records"], row["expected_records"])
        assert f"| {tap} |" in markdown
    for tap in TAPS:
        assert rows[(tap, "bare-loop")]["ratio_vs_bare_loop"] == 1.0
        assert rows[(tap, "sdk-default")]["ratio_vs_sdk_default"] == 1.0
        assert report["same_requests"][tap]["500"] == dict.fromkeys(VARIANTS, True)
        shipped = report["shipped"][tap]
        assert shipped["forced_writer"] == "SimpleSingerWriter"
        assert shipped["streams"], tap  # the launcher saw (and forced) the tap's streams
    assert {row["tap"] for row in report["startup_summary"]} == set(TAPS)
    assert all(row["wall_seconds"] > 0 for row in report["startup_summary"])
    assert report["machine"]["cpu_count"] >= 1
    assert report["machine"]["singer_sdk"].startswith("0.54")
    for text in (result.stdout, result.stderr, markdown, json.dumps(report)):
        assert not any(secret in text for secret in SECRETS)


def test_sdk_default_launcher_forces_the_default_writer_and_conformance(lumin, tmp_path):
    server = lumin(events=40)
    config = {
        "api_url": server.base_url + server.api.settings.path,
        "token": LUMIN_TOKEN,
        "start_date": "2024-01-01T00:00:00+00:00",
        "end_date": "2024-04-01T00:00:00+00:00",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.sdk_default",
            "tap_luminai.tap:TapLuminai",
            "--config",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_secrets(result.stdout, result.stderr)
    marker = [line for line in result.stderr.splitlines() if "bench-sdk-default:" in line][-1]
    seen = json.loads(marker.split("bench-sdk-default:", 1)[1])
    assert seen["forced_type_conformance"] == "RECURSIVE"
    assert "billing_events" in seen["streams"]
    records = [json.loads(line) for line in result.stdout.splitlines() if '"RECORD"' in line]
    expected = server.api.truth(types={"billing.scheduled"})
    assert sorted(r["record"]["id"] for r in records) == sorted(e.id for e in expected)
    # The SDK's default writer: json.dumps with its separators, a time_extracted on every record.
    assert all("time_extracted" in r for r in records)


def _lumin_post(server: SandboxServer, body: str, token: str = LUMIN_TOKEN) -> requests.Response:
    return requests.post(
        server.base_url + "/luminai/billing",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10,
    )


def test_prebuilt_pages_answer_the_same_question_from_the_cache():
    events = generate_events(
        seed=1,
        count=30,
        start=dt.datetime(2024, 1, 1, tzinfo=UTC),
        end=dt.datetime(2024, 1, 8, tzinfo=UTC),
    )
    pages = PrebuiltPages(LuminAPI(events, LuminSettings(token=LUMIN_TOKEN, page_size=10)))
    server = SandboxServer(pages).start()
    try:
        question = {"type": "billing.scheduled", "start": "2024-01-01T00:00:00+00:00"}
        question["end"] = "2024-01-08T00:00:00+00:00"
        refused = _lumin_post(server, json.dumps(question), token="not-the-token-at-all")
        assert refused.status_code == 401
        first = _lumin_post(server, json.dumps(question))
        # The same question, spelt differently (key order, spaces): the same cached answer.
        again = _lumin_post(server, json.dumps(dict(reversed(question.items())), indent=2))
        assert first.status_code == again.status_code == 200
        assert first.content == again.content
        assert (pages.misses, pages.hits, pages.pages) == (2, 1, 1)  # the 401 was not kept
        other = _lumin_post(
            server, json.dumps({**question, "start_token": first.json()["next_token"]})
        )
        assert other.status_code == 200 and other.content != first.content
        assert (pages.misses, pages.pages) == (3, 2)
        assert server.requests == 4
    finally:
        server.stop()


def test_prebuilt_pages_ignore_the_per_request_jwt():
    sessions = generate_sessions(
        seed=2,
        conversations=20,
        start=dt.datetime(2024, 1, 1, tzinfo=UTC),
        end=dt.datetime(2024, 2, 1, tzinfo=UTC),
    )
    settings = KoreSettings(client_id=KORE_CLIENT_ID, client_secret=KORE_CLIENT_SECRET)
    pages = PrebuiltPages(KoreAPI(sessions, settings))
    server = SandboxServer(pages).start()
    try:
        url = server.base_url + f"/api/public/bot/{sessions[0].botId}/getBillingSessionsDetails"
        body = {"fromDate": "2024-01-01", "toDate": "2024-02-01", "skip": 0, "limit": 50}
        answers = [
            requests.post(
                url,
                json=body,
                headers={"auth": mint_jwt(KORE_CLIENT_ID, KORE_CLIENT_SECRET, jti=str(n))},
                timeout=10,
            )
            for n in range(3)
        ]
        assert {a.status_code for a in answers} == {200}
        assert len({a.content for a in answers}) == 1
        assert (pages.misses, pages.hits) == (1, 2)
    finally:
        server.stop()


def test_day_indexed_evo_api_answers_byte_for_byte_as_the_evo_api():
    rows = generate_usage(seed=9, start=dt.date(2024, 1, 1), end=dt.date(2024, 2, 1))
    settings = EvoSettings(username=EVO_USERNAME, password=EVO_PASSWORD)
    servers = [SandboxServer(EvoAPI(rows, settings)).start()]
    servers.append(SandboxServer(DayIndexedEvoAPI(rows, settings)).start())
    try:
        for params in (
            {"startDate": "2024-01-05", "endDate": "2024-01-05"},
            {"startDate": "2024-01-01", "endDate": "2024-01-31", "accountId": "acct-bravo"},
            {
                "startDate": "2023-12-30",
                "endDate": "2024-01-02",
                "customerId": "acct-alpha-cust-02",
            },
            {"startDate": "2024-01-09", "endDate": "2024-01-03"},
        ):
            plain, indexed = (
                requests.get(
                    s.base_url + "/ai/usage",
                    params=params,
                    auth=(EVO_USERNAME, EVO_PASSWORD),
                    headers={"Accept": "application/json"},
                    timeout=10,
                )
                for s in servers
            )
            assert plain.status_code == indexed.status_code == 200
            assert plain.content == indexed.content, params
        assert json.loads(plain.content) == {}  # the last range is empty: null lists left out
    finally:
        for server in servers:
            server.stop()
