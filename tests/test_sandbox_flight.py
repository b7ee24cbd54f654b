"""The sandbox's own rule for Lumin.ai's "one request at a time": it refuses a request only while
another is really in flight, never a client's next request sent after the last answer arrived."""

from __future__ import annotations

import json
import threading
import time

import requests

from billing_sandbox.faults import FaultRule
from tests.support import LUMIN_TOKEN

QUESTION = json.dumps(
    {
        "type": "billing.scheduled",
        "start": "2024-01-01T00:00:00+00:00",
        "end": "2024-01-08T00:00:00+00:00",
    }
)


def _post(base_url: str, timeout: float = 10) -> requests.Response:
    # A new connection per request (no Session), as a client without keep-alive sends them.
    return requests.post(
        base_url + "/luminai/billing",
        data=QUESTION,
        headers={"Authorization": f"Bearer {LUMIN_TOKEN}", "Content-Type": "application/json"},
        timeout=timeout,
    )


def test_requests_sent_one_after_another_are_never_refused(lumin):
    # Each answer's handler thread used to count itself out of flight only after the client had
    # the whole answer: about 1 request in 200 was then refused as overlapping (11 of 2,000).
    server = lumin(events=20)
    statuses = [_post(server.base_url).status_code for _ in range(1000)]
    assert statuses.count(409) == 0
    assert set(statuses) == {200}
    assert server.concurrency_violations == 0


def test_a_request_while_another_is_in_flight_is_refused_and_counted(lumin):
    # The first request stalls (no answer) until its client gives up after 2 s; one sent meanwhile
    # is refused with 409, and once the first client has hung up the next is served again.
    server = lumin(events=20, faults=[FaultRule("stall", at=(1,))], stall_seconds=30)
    stalled = threading.Thread(target=_post_until_timeout, args=(server.base_url, 2.0))
    stalled.start()
    deadline = time.monotonic() + 5
    while server.requests < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    overlapping = _post(server.base_url)
    stalled.join()
    assert overlapping.status_code == 409
    assert "one request at a time" in overlapping.text
    assert server.concurrency_violations == 1
    time.sleep(0.1)  # the stalled handler notices the hang-up within a few milliseconds
    assert _post(server.base_url).status_code == 200


def _post_until_timeout(base_url: str, timeout: float) -> None:
    try:
        _post(base_url, timeout=timeout)
    except requests.exceptions.ReadTimeout:
        return
    raise AssertionError("the stalled request was answered")
