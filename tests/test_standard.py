"""The SDK's standard tap tests, against a sandbox on loopback, plus what they check weakly."""

from __future__ import annotations

import contextlib
import io
import json
import typing as t

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_evovoice.tap import TapEvoVoice
from tap_kore_billing.tap import TapKoreBilling
from tap_luminai.tap import TapLuminai
from tests.support import (
    evo_config,
    evo_sandbox,
    kore_config,
    kore_sandbox,
    lumin_config,
    lumin_sandbox,
    select_streams,
)

# The SDK builds its test classes at import time, from configs that must already name a server:
# each sandbox is bound to its port on import, and serves only while this module's tests run.
_SERVER = lumin_sandbox(events=600, serve=False)
CONFIG = lumin_config(_SERVER)

TestTapLuminai = get_tap_test_class(
    TapLuminai,
    config=CONFIG,
    suite_config=SuiteConfig(max_records_limit=None),
)


@pytest.fixture(scope="module", autouse=True)
def _sandboxes_serving() -> t.Iterator[None]:
    """The three sandboxes serve from this module's first test to its last."""
    servers = (_SERVER, _KORE, _EVO)
    for server in servers:
        server.start()
    yield
    for server in servers:
        server.stop()


def every_stream_selected(tap_class, config) -> dict:
    """The tap's catalog with every stream selected (the reconciliation streams are not by
    default), for the SDK's standard tests of every stream."""
    catalog = tap_class(config=config).catalog_dict
    return select_streams(catalog, [stream["tap_stream_id"] for stream in catalog["streams"]])


def standard_run(tap_class, config) -> tuple[list[dict], dict]:
    """Records and final state of one in-process run (the SDK's runner keeps no final state)."""
    tap = tap_class(config=config)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        tap.sync_all()
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    return records, [m for m in messages if m["type"] == "STATE"][-1]["value"]


def test_standard_run_has_unique_primary_keys_and_a_resumable_final_state():
    # StreamPrimaryKeysTest builds generators (always distinct) and TapValidFinalStateTest looks at
    # the wrong key; check the same properties directly.
    records, final = standard_run(TapLuminai, CONFIG)
    ids = [r["id"] for r in records]
    assert ids
    assert len(ids) == len(set(ids))
    stream_state = final["bookmarks"]["billing_events"]
    assert "progress_markers" not in stream_state
    assert "replication_key_signpost" not in stream_state
    assert stream_state["replication_key_value"] == "2024-04-01T00:00:00.000000+00:00"


# -- tap-kore-billing -----------------------------------------------------------------------

_KORE = kore_sandbox(conversations=300, serve=False)
KORE_CONFIG = kore_config(_KORE)

# Every stream selected: the SDK's dry run forces each stream on, but a stream that is not selected
# by default (the reconciliation streams) keeps no selected property in a default catalog.
TestTapKoreBilling = get_tap_test_class(
    TapKoreBilling,
    config=KORE_CONFIG,
    suite_config=SuiteConfig(max_records_limit=None),
    catalog=every_stream_selected(TapKoreBilling, KORE_CONFIG),
)


def test_kore_standard_run_has_unique_keys_and_a_clean_final_state():
    records, final = standard_run(TapKoreBilling, KORE_CONFIG)
    ids = [r["billingSessionId"] for r in records]
    assert ids
    assert len(ids) == len(set(ids))
    for partition in final["bookmarks"]["billing_sessions"]["partitions"]:
        assert "progress_markers" not in partition
        assert partition["replication_key_value"] == "2024-12-01T00:00:00.000000+00:00"


# -- tap-evovoice ---------------------------------------------------------------------------

_EVO = evo_sandbox(serve=False)
EVO_CONFIG = evo_config(_EVO, granularity="month")

TestTapEvoVoice = get_tap_test_class(
    TapEvoVoice,
    config=EVO_CONFIG,
    suite_config=SuiteConfig(max_records_limit=None),
    catalog=every_stream_selected(TapEvoVoice, EVO_CONFIG),
)


def test_evo_standard_run_has_unique_keys_and_a_clean_final_state():
    records, final = standard_run(TapEvoVoice, EVO_CONFIG)
    keys = [(r["accountId"], r.get("customerId"), r["startDate"]) for r in records]
    assert keys
    assert len(keys) == len(set(keys))
    for stream in ("ai_account_usage", "ai_customer_usage"):
        state = final["bookmarks"][stream]
        assert "progress_markers" not in state
        assert state["replication_key_value"] == "2024-04-10T00:00:00.000000+00:00"
