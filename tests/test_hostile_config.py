"""Hostile configuration: every malformed setting gets clear lines naming it, never a traceback.

Each property test starts from a valid config of one tap and spoils ONE setting (or adds one
unknown key). Constructing the tap must then raise ``ConfigValidationError`` and nothing else;
every error line must name the spoilt setting, fit on one line, and quote no secret. Most cases
run in-process (constructing a tap makes no request); a handful run the tap as a real process to
prove that the user sees one ERROR line per problem, a non-zero exit and no traceback.

``pytest tests/test_hostile_config.py --hypothesis-show-statistics`` prints how many configs each
property tried.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import re
import string
import typing as t
import zoneinfo
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from singer_sdk.exceptions import ConfigValidationError

from billing_toolkit import secrets as secret_registry
from billing_toolkit.settings import MAX_LOOKBACK_MINUTES, MAX_WINDOW_DAYS
from billing_toolkit.tap import BillingTap
from tap_evovoice.tap import TapEvoVoice
from tap_kore_billing.streams import MAX_WINDOW_DAYS as KORE_MAX_WINDOW_DAYS
from tap_kore_billing.tap import TapKoreBilling
from tap_luminai.tap import TapLuminai
from tests.support import (
    EVO_PASSWORD,
    KORE_CLIENT_SECRET,
    LUMIN_TOKEN,
    evo_config,
    kore_config,
    lumin_config,
    run_tap,
)

#: Validation makes no request, so the URL only has to be a valid loopback one.
_STUB = SimpleNamespace(
    base_url="http://127.0.0.1:9",
    api=SimpleNamespace(settings=SimpleNamespace(path="/luminai/billing", timezone="UTC")),
)


class TapCase(t.NamedTuple):
    cls: type[BillingTap]
    module: str
    base: dict[str, t.Any]
    #: Secret settings and their values in ``base``: none may appear in any message.
    secrets: dict[str, str]


TAPS = {
    "luminai": TapCase(TapLuminai, "tap_luminai", lumin_config(_STUB), {"token": LUMIN_TOKEN}),  # type: ignore[arg-type]
    "kore": TapCase(
        TapKoreBilling,
        "tap_kore_billing",
        kore_config(_STUB),  # type: ignore[arg-type]
        {"client_secret": KORE_CLIENT_SECRET},
    ),
    "evovoice": TapCase(TapEvoVoice, "tap_evovoice", evo_config(_STUB), {"password": EVO_PASSWORD}),  # type: ignore[arg-type]
}
TAP_NAMES = list(TAPS)

#: Settings the SDK declares for its capabilities (stream maps, flattening).
SDK_SETTINGS = {
    "stream_maps": "object",
    "stream_map_config": "object",
    "faker_config": "object",
    "flattening_enabled": "boolean",
    "flattening_max_depth": "integer",
    "flattening_max_key_length": "integer",
    "flattening_separator": "string",
}

PROPERTY_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def declared(case: TapCase) -> dict[str, dict[str, t.Any]]:
    schema = dict(case.cls.config_jsonschema)
    case.cls.append_builtin_config(schema)
    return schema["properties"]


def json_type(schema: dict[str, t.Any]) -> str:
    kinds = schema.get("type", "string")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return next(k for k in kinds if k != "null")


def own_settings(case: TapCase) -> dict[str, str]:
    """The tap's own settings (not the SDK's) and their JSON types."""
    return {
        name: json_type(schema)
        for name, schema in declared(case).items()
        if name not in SDK_SETTINGS
    }


# -- what every case checks -----------------------------------------------------------------------


@contextlib.contextmanager
def fresh_secret_registry() -> t.Iterator[None]:
    """Register this example's secrets in a registry of its own.

    The registry is process-wide: a random short "secret" left in it would mask that text in every
    later test's output.
    """
    saved = secret_registry.REGISTRY
    secret_registry.REGISTRY = secret_registry.SecretRegistry()
    try:
        yield
    finally:
        secret_registry.REGISTRY = saved


def names(setting: str, line: str) -> bool:
    """Whether ``line`` names ``setting`` as a word (``end_date`` is not named by ``end_date_x``)."""
    return re.search(rf"(?<![\w]){re.escape(setting)}(?![\w])", line) is not None


def secret_fragments(value: object) -> list[str]:
    """The parts of a (spoilt) secret value that no message may contain."""
    if isinstance(value, str):
        return [value.strip()] if len(value.strip()) >= 6 else []
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return [str(value)] if len(str(value)) >= 6 else []
    if isinstance(value, (list, tuple)):
        return [f for item in value for f in secret_fragments(item)]
    if isinstance(value, dict):
        return [f for item in value.values() for f in secret_fragments(item)]
    return []


def refusal(
    tap: str, config: dict[str, t.Any], *, extra_secrets: t.Sequence[object] = ()
) -> list[str]:
    """Construct the tap; it must raise ConfigValidationError. Returns the error lines.

    Any other exception propagates and fails the test: it would be a traceback for the user.
    """
    case = TAPS[tap]
    with fresh_secret_registry(), pytest.raises(ConfigValidationError) as info:
        case.cls(config=config)
    errors = list(info.value.errors)
    assert errors, "refused without saying why"
    text = "\n".join([*errors, str(info.value)])
    secret_settings = case.cls.secret_setting_names()
    for value in [
        *case.secrets.values(),
        *(config.get(k) for k in secret_settings),
        *extra_secrets,
    ]:
        for fragment in secret_fragments(value):
            assert fragment not in text, f"a secret value was quoted: {errors}"
    assert all("\n" not in line and line.strip() for line in errors), errors
    return errors


def assert_refused(
    tap: str, setting: str, value: object, *, extra_secrets: t.Sequence[object] = ()
) -> list[str]:
    """``setting`` spoilt to ``value`` (``None`` removes it): refused, every line naming it."""
    config = dict(TAPS[tap].base)
    if value is None:
        config.pop(setting, None)
    else:
        config[setting] = value
    errors = refusal(tap, config, extra_secrets=extra_secrets)
    assert all(names(setting, line) for line in errors), (setting, value, errors)
    return errors


def spoil(tap: str, setting: str, value: object, category: str) -> None:
    event(f"{category}: {tap}")
    assert_refused(tap, setting, value)


# -- strategies -----------------------------------------------------------------------------------

CONTROL_CHARS = st.sampled_from([chr(c) for c in [*range(32), 127, 133, 155]])
BLANKS = st.text(alphabet=" \t\r\n\u00a0\u2003", min_size=1, max_size=4)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
)
FRACTIONS = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())
SHORT_TEXT = st.text(max_size=12)
LISTS = st.lists(st.one_of(st.integers(), SHORT_TEXT, st.none()), max_size=3)
OBJECTS = st.dictionaries(SHORT_TEXT, st.integers(), max_size=2)
NOT_FINITE = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        decimal.Decimal("NaN"),
        decimal.Decimal("sNaN"),
        decimal.Decimal("Infinity"),
        decimal.Decimal("-Infinity"),
    ]
)
HUGE_INTS = st.integers(min_value=19, max_value=400).map(lambda n: 10**n)


def wrong_type(kind: str) -> st.SearchStrategy[object]:
    """JSON values of any type but ``kind`` (an integral float counts as an integer)."""
    others: dict[str, list[st.SearchStrategy[t.Any]]] = {
        "string": [NUMBERS, st.booleans(), LISTS, OBJECTS],
        "number": [SHORT_TEXT, st.booleans(), LISTS, OBJECTS],
        "integer": [SHORT_TEXT, st.booleans(), LISTS, OBJECTS, FRACTIONS, NOT_FINITE],
        "boolean": [SHORT_TEXT, NUMBERS, LISTS, OBJECTS],
        "array": [
            SHORT_TEXT,
            NUMBERS,
            st.booleans(),
            OBJECTS,
            st.lists(st.one_of(st.integers(), st.booleans(), OBJECTS), min_size=1, max_size=3),
        ],
        "object": [SHORT_TEXT, NUMBERS, st.booleans(), st.lists(st.integers(), max_size=3)],
    }
    return st.one_of(*others[kind])


def with_control_char(text: str) -> st.SearchStrategy[str]:
    """``text`` with one control character put at any position."""
    return st.tuples(st.integers(min_value=0, max_value=len(text)), CONTROL_CHARS).map(
        lambda pc: text[: pc[0]] + pc[1] + text[pc[0] :]
    )


def iso_date(year: int, month: int = 1, day: int = 1) -> str:
    return f"{year:04d}-{month:02d}-{day:02d}"


OUT_OF_RANGE_DATES = st.one_of(
    st.integers(min_value=1, max_value=1999).map(iso_date),
    st.integers(min_value=2101, max_value=9999).map(iso_date),
    st.integers(min_value=2101, max_value=9999).map(lambda y: f"{y:04d}-06-30T12:00:00Z"),
    st.sampled_from(
        ["1999-12-31T23:59:59Z", "2000-01-01T00:00:00+00:01", "9999-12-31T23:00:00-05:00"]
    ),
)
MALFORMED_DATES = st.one_of(
    st.tuples(st.integers(2000, 2100), st.integers(13, 99), st.integers(1, 28)).map(
        lambda ymd: iso_date(*ymd)
    ),
    st.tuples(st.integers(2000, 2100), st.integers(1, 12), st.integers(32, 99)).map(
        lambda ymd: iso_date(*ymd)
    ),
    st.sampled_from(
        [
            "last tuesday",
            "yesterday",
            "2024-02-30",
            "2023-02-29",
            "2024-13-01",
            "24-01-01T25:00:00",
            "2024-01-01T24:61:00Z",
            "01/02/2024",  # 1 February or 2 January?
            "Jan 1 2024",
            "2024/01/01",
            "2024-1-1",
            "2024",
            "2024-02",
            "2024-W05",
            "2024-032",
            "20240101T000000",
            "1",
            "12",  # was read as the 12th of the current month
            " 2024-01-01",
            "2024-01-01Z",
            "2024-01-01T00:00:00+25:00",
            "+002024-01-01",
            "now",  # was read as the moment of validation
            "-",
            "T",
        ]
    ),
    st.text(alphabet=string.ascii_letters + " ,.!?", min_size=1, max_size=20).filter(
        lambda s: any(ch.isalpha() for ch in s)
    ),
)
NOT_LOOPBACK_HOSTS = st.one_of(
    st.sampled_from(
        [
            "example.com",
            "10.0.0.1",
            "192.168.1.5",
            "[2001:db8::1]",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "0.0.0.0",  # noqa: S104 (not loopback: it reaches other interfaces)
            "platform.kore.ai",
        ]
    ),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,6}){1,2}", fullmatch=True),
)
URL_SECRET = "url-pass-7Qz93kfW"


@st.composite
def bad_urls(draw: st.DrawFn) -> tuple[str, str]:
    """(kind, URL): plain http to a remote host, credentials, other schemes, no host, bad ports."""
    host = draw(NOT_LOOPBACK_HOSTS)
    path = draw(st.sampled_from(["", "/", "/api/billing", "/a?b=c"]))
    kind = draw(
        st.sampled_from(
            ["plain http", "credentials", "scheme", "no host", "port", "space", "control", "blank"]
        )
    )
    if kind == "plain http":
        return kind, f"http://{host}{path}"
    if kind == "credentials":
        userinfo = draw(st.sampled_from([f"user:{URL_SECRET}", URL_SECRET, f":{URL_SECRET}"]))
        local = draw(st.sampled_from([host, "127.0.0.1:9"]))
        return kind, f"{draw(st.sampled_from(['https', 'http', 'ftp']))}://{userinfo}@{local}{path}"
    if kind == "scheme":
        scheme = draw(
            st.sampled_from(["ftp", "file", "ws", "wss", "sftp", "gopher", "httpx", "HTTP2"])
        )
        return kind, f"{scheme}://{host}{path}"
    if kind == "no host":
        return kind, draw(
            st.sampled_from(
                [
                    "https://",
                    "https:///api",
                    "http:/127.0.0.1/x",
                    "https:?x",
                    "//example.com/x",
                    "example.com/api",
                    "billing-api",
                    "https://:443/x",
                    "file:///etc/hosts",
                    "mailto:a@b.c",
                ]
            )
        )
    if kind == "port":
        port = draw(st.sampled_from(["0", "65536", "99999", "-1", "abc", "8o80"]))
        return kind, f"https://{host}:{port}{path}"
    if kind == "space":
        return kind, draw(with_space(f"https://{host}{path}"))
    if kind == "control":
        return kind, draw(with_control_char(f"https://{host}{path}"))
    return kind, draw(st.sampled_from(["", " ", "\t"]))


def with_space(text: str) -> st.SearchStrategy[str]:
    return st.tuples(
        st.integers(min_value=0, max_value=len(text)), st.sampled_from(" \t\u00a0")
    ).map(lambda pc: text[: pc[0]] + pc[1] + text[pc[0] :])


def edit_once(name: str) -> st.SearchStrategy[str]:
    """Typos of a setting name: one character dropped, doubled, swapped or replaced."""
    positions = st.integers(min_value=0, max_value=len(name) - 1)
    return st.one_of(
        positions.map(lambda i: name[:i] + name[i + 1 :]),
        positions.map(lambda i: name[:i] + name[i] + name[i:]),
        positions.filter(lambda i: i < len(name) - 1).map(
            lambda i: name[:i] + name[i + 1] + name[i] + name[i + 2 :]
        ),
        st.tuples(positions, st.sampled_from(string.ascii_lowercase + "_")).map(
            lambda ic: name[: ic[0]] + ic[1] + name[ic[0] + 1 :]
        ),
        st.just(name.upper()),
        st.just(name.replace("_", "-")),
    )


ANY_VALUE = st.one_of(st.none(), st.booleans(), NUMBERS, SHORT_TEXT, LISTS, OBJECTS)


# -- the properties -------------------------------------------------------------------------------


def test_the_base_configs_are_valid():
    """Every refusal below is due to the one spoilt setting, not to the starting point."""
    for tap, case in TAPS.items():
        with fresh_secret_registry():
            case.cls(config=dict(case.base))
        assert set(case.base) <= set(declared(case)), tap


@pytest.mark.parametrize("tap", TAP_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_wrong_json_types_are_refused_naming_the_setting(tap, data):
    kinds = {**own_settings(TAPS[tap]), **SDK_SETTINGS}
    setting = data.draw(st.sampled_from(sorted(kinds)), label="setting")
    value = data.draw(wrong_type(kinds[setting]), label="value")
    spoil(tap, setting, value, f"wrong type ({kinds[setting]})")


@pytest.mark.parametrize("tap", TAP_NAMES)
def test_null_for_a_required_setting_is_refused_as_missing(tap):
    for setting in TAPS[tap].cls.config_jsonschema.get("required", []):
        errors = refusal(tap, {**TAPS[tap].base, setting: None})
        assert errors == [f"{setting} is required (got null)"], errors


@pytest.mark.parametrize("tap", TAP_NAMES)
def test_null_for_an_optional_setting_means_its_default(tap):
    """As when Meltano leaves an unset setting out; code reading the config never sees None."""
    case = TAPS[tap]
    required = case.cls.config_jsonschema.get("required", [])
    for setting, schema in declared(case).items():
        if setting in required or setting in case.secrets or setting in {"client_id", "jwt"}:
            continue  # (Kore's credentials are required as a pair or as a jwt)
        with fresh_secret_registry():
            instance = case.cls(config={**case.base, setting: None})
        assert instance.config.get(setting) == schema.get("default"), setting
        assert None not in instance.config.values(), setting


def string_settings(tap: str) -> list[str]:
    kinds = own_settings(TAPS[tap])
    return sorted(k for k, v in kinds.items() if v in {"string", "array"})


def valid_text(tap: str, setting: str) -> str:
    """A valid value of a string setting (the first item of a list setting)."""
    case = TAPS[tap]
    value = case.base.get(setting, declared(case)[setting].get("default"))
    if isinstance(value, list):
        value = value[0] if value else "item-1"
    return str(value) if value is not None else "valid-text"


@pytest.mark.parametrize("tap", TAP_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_empty_and_blank_strings_are_refused(tap, data):
    # An empty end_date means "not set" (up to now), like null; a blank one is refused.
    settings_ = [s for s in string_settings(tap) if s != "end_date"]
    setting = data.draw(st.sampled_from([*settings_, "end_date"]), label="setting")
    blank = data.draw(BLANKS if setting == "end_date" else st.one_of(st.just(""), BLANKS))
    kind = own_settings(TAPS[tap])[setting]
    value = [blank] if kind == "array" else blank
    spoil(tap, setting, value, "empty or blank string")


@pytest.mark.parametrize("tap", TAP_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_control_characters_are_refused(tap, data):
    setting = data.draw(st.sampled_from(string_settings(tap)), label="setting")
    text = data.draw(with_control_char(valid_text(tap, setting)), label="text")
    kind = own_settings(TAPS[tap])[setting]
    spoil(tap, setting, [text] if kind == "array" else text, "control character")


@pytest.mark.parametrize("tap", TAP_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_bad_dates_are_refused(tap, data):
    case = TAPS[tap]
    start = dt.date.fromisoformat(case.base["start_date"][:10])
    setting = data.draw(st.sampled_from(["start_date", "end_date"]), label="setting")
    kind = data.draw(st.sampled_from(["out of range", "malformed", "end not after start"]))
    if kind == "out of range":
        value = data.draw(OUT_OF_RANGE_DATES)
    elif kind == "malformed":
        value = data.draw(MALFORMED_DATES)
    else:
        setting = "end_date"
        days = data.draw(st.integers(min_value=0, max_value=(start - dt.date(2000, 1, 1)).days))
        value = (start - dt.timedelta(days=days)).isoformat()
    spoil(tap, setting, value, f"date {kind}")


@pytest.mark.parametrize("tap", ["luminai", "kore"])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_a_start_date_after_the_end_date_is_refused(tap, data):
    end = dt.datetime.fromisoformat(TAPS[tap].base["end_date"])
    seconds = data.draw(st.integers(min_value=0, max_value=60 * 86400))
    value = (end + dt.timedelta(seconds=seconds)).isoformat()
    spoil(tap, "start_date", value, "start after end")


def number_bounds(tap: str) -> dict[str, st.SearchStrategy[object]]:
    """Out-of-range values of each numeric setting of ``tap``."""
    window_max = KORE_MAX_WINDOW_DAYS if tap == "kore" else MAX_WINDOW_DAYS

    def outside(low: float, high: float, *, whole: bool) -> st.SearchStrategy[object]:
        if whole:
            return st.one_of(
                st.integers(max_value=int(low) - 1),
                st.integers(min_value=int(high) + 1),
                HUGE_INTS,
            )
        return st.one_of(
            st.floats(max_value=low, exclude_max=True, allow_infinity=False),
            st.floats(min_value=high, exclude_min=True, allow_infinity=False),
            st.decimals(min_value=high + 1, allow_nan=False, allow_infinity=False),
            NOT_FINITE,
            HUGE_INTS,
        )

    bounds: dict[str, st.SearchStrategy[object]] = {
        "lookback_minutes": outside(0, MAX_LOOKBACK_MINUTES, whole=True),
        "retry_max_tries": outside(1, 100, whole=True),
        "connect_timeout_seconds": st.one_of(outside(0, 3600, whole=False), st.just(0)),
        "read_timeout_seconds": st.one_of(outside(0, 3600, whole=False), st.just(0.0)),
        "retry_initial_delay_seconds": outside(0, 86400, whole=False),
        "retry_max_wait_seconds": outside(0, 86400, whole=False),
        "max_pages_per_window": outside(1, 10**8, whole=True),
    }
    if tap != "evovoice":
        bounds["window_size_days"] = st.one_of(
            # (just under one second may round to one second: the bound is not fuzzed that finely)
            st.floats(max_value=0.99 / 86400, allow_infinity=False),
            st.floats(min_value=window_max, exclude_min=True, allow_infinity=False),
            st.sampled_from([0, 0.0, -1, decimal.Decimal("0"), 1e-12]),
            NOT_FINITE,
            HUGE_INTS,
        )
    if tap == "kore":
        bounds["page_size"] = outside(1, 10_000, whole=True)
        bounds["max_requests_per_minute"] = outside(1, 60, whole=True)
        bounds["max_requests_per_hour"] = outside(1, 1800, whole=True)
        bounds["summary_job_attempts"] = outside(1, 10, whole=True)
        bounds["summary_job_max_wait_seconds"] = outside(1, 86_400, whole=True)
        bounds["summary_poll_milliseconds"] = outside(1, 30_000, whole=True)
        bounds["llm_page_size"] = outside(1, 10_000, whole=True)
    return bounds


@pytest.mark.parametrize("tap", TAP_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_out_of_range_windows_timeouts_and_retries_are_refused(tap, data):
    bounds = number_bounds(tap)
    setting = data.draw(st.sampled_from(sorted(bounds)), label="setting")
    value = data.draw(bounds[setting], label="value")
    spoil(tap, setting, value, "number out of range")


@pytest.mark.parametrize("tap", TAP_NAMES)
@PROPERTY_SETTINGS
@given(kind_url=bad_urls())
def test_unsafe_or_malformed_api_urls_are_refused(tap, kind_url):
    kind, url = kind_url
    event(f"api_url {kind}: {tap}")
    assert_refused(tap, "api_url", url, extra_secrets=[URL_SECRET])


@pytest.mark.parametrize("tap", TAP_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_unknown_settings_are_refused_with_a_suggestion_for_typos(tap, data):
    case = TAPS[tap]
    known = declared(case)
    typo = data.draw(st.booleans(), label="typo")
    if typo:
        original = data.draw(st.sampled_from(sorted(own_settings(case))), label="original")
        key = data.draw(edit_once(original), label="key")
    else:
        key = data.draw(st.text(min_size=1, max_size=30), label="key")
    assume(key not in known)
    # The value may be anything, even the tap's secret: it is never quoted.
    value = data.draw(st.one_of(ANY_VALUE, st.sampled_from(list(case.secrets.values()))))
    event(f"unknown key ({'typo' if typo else 'random'}): {tap}")
    # (a random value that happens to be part of the key's name is of course quoted with it)
    quoted_with_key = any(f in repr(key) for f in secret_fragments(value))
    errors = refusal(
        tap, {**case.base, key: value}, extra_secrets=[] if quoted_with_key else [value]
    )
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"unknown setting {repr(key)[:40]}"), errors
    if typo:
        suggestion = re.search(r"did you mean '([^']+)'\?", errors[0])
        assert suggestion and suggestion.group(1) in known, errors


@pytest.mark.parametrize(
    ("tap", "key", "meant"),
    [
        ("luminai", "start_data", "start_date"),
        ("luminai", "end_dat", "end_date"),
        ("luminai", "tokne", "token"),
        ("luminai", "Window_Size_Days", "window_size_days"),
        ("kore", "client_secert", "client_secret"),
        ("kore", "bot_id", "bot_ids"),
        ("evovoice", "pasword", "password"),
        ("evovoice", "granularty", "granularity"),
        ("evovoice", "stream_map", "stream_maps"),
    ],
)
def test_common_typos_suggest_the_setting_meant(tap, key, meant):
    errors = refusal(tap, {**TAPS[tap].base, key: "2024-02-01"})
    assert errors == [f"unknown setting {key!r}; did you mean {meant!r}?"]


def test_batch_config_is_refused_because_batch_messages_are_not_supported():
    """BATCH could put STATE ahead of the data a target has received (see BillingTap)."""
    errors = refusal("luminai", {**TAPS["luminai"].base, "batch_config": {"encoding": {}}})
    assert len(errors) == 1 and "batch_config" in errors[0]


@st.composite
def bad_secrets(draw: st.DrawFn, secret: str) -> object:
    """A spoilt secret that is still recognisable, so that a quoted one would be noticed."""
    kind = draw(
        st.sampled_from(["short", "padded", "control", "number", "list", "object", "bool", "blank"])
    )
    if kind == "short":
        return draw(st.text(alphabet=string.ascii_letters, min_size=1, max_size=3))
    if kind == "padded":
        return draw(st.sampled_from([f" {secret}", f"{secret} ", f"\t{secret}\n", f"{secret}\r\n"]))
    if kind == "control":
        return draw(with_control_char(secret).filter(lambda s: s.strip() == s))
    if kind == "number":
        return draw(
            st.one_of(
                st.integers(min_value=10**6, max_value=10**18),
                st.floats(min_value=1e6, max_value=1e18),
            )
        )
    if kind == "list":
        return [secret]
    if kind == "object":
        return {"value": secret}
    if kind == "bool":
        return draw(st.booleans())
    return draw(st.one_of(st.just(""), BLANKS))


@pytest.mark.parametrize("tap", TAP_NAMES)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_malformed_secrets_are_refused_without_being_quoted(tap, data):
    case = TAPS[tap]
    setting, secret = data.draw(st.sampled_from(sorted(case.secrets.items())), label="secret")
    value = data.draw(bad_secrets(secret), label="value")
    event(f"malformed secret: {tap}")
    assert_refused(tap, setting, value, extra_secrets=[value])


INVALID_ZONES = st.one_of(
    st.sampled_from(
        [
            "Etc",
            "America",
            "Mars/Olympus",
            "utc ",
            " UTC",
            "../../etc/passwd",
            "a" * 300,
            "America/New York",
            "GMT+25",
            "Europe//Berlin",
            "/UTC",
            "UTC/",
            ".",
        ]
    ),
    st.from_regex(r"[A-Z][a-z]{2,8}/[A-Z][a-z]{2,8}x9", fullmatch=True),
).filter(lambda z: z not in zoneinfo.available_timezones())


@PROPERTY_SETTINGS
@given(data=st.data())
def test_kore_specific_settings_are_refused(data):
    setting = data.draw(
        st.sampled_from(
            [
                "timezone",
                "admin_path",
                "summary_admin_path",
                "jwt",
                "bot_ids",
                "scope",
                "summary_granularity",
            ]
        )
    )
    if setting == "timezone":
        value: object = data.draw(INVALID_ZONES)
    elif setting in {"scope", "summary_granularity"}:
        allowed = declared(TAPS["kore"])[setting]["enum"]
        value = data.draw(st.text(max_size=12).filter(lambda v: v not in allowed))
    elif setting in {"admin_path", "summary_admin_path"}:
        value = data.draw(
            st.one_of(
                st.text(max_size=20).filter(lambda p: not p.startswith("/")),
                st.sampled_from(["/api bots", "/api?x=1", "/api#x", "/api\n"]),
            )
        )
    elif setting == "jwt":  # a jwt beside client_id + client_secret: which one counts?
        value = "eyJhbGciOiAiSFMyNTYi.eyJhcHBJZCI6.c2lnbmF0dXJl"
    else:
        value = data.draw(st.sampled_from([["st-1/2"], ["st 1"], ["a", "a"], [""]]))
    spoil("kore", setting, value, f"kore {setting}")


@pytest.mark.parametrize("tap", TAP_NAMES)
@pytest.mark.parametrize("path", ["no-such-ca-bundle.pem", ".", "x" * 5000])
def test_an_unusable_ca_bundle_path_is_refused(tap, path):
    assert_refused(tap, "ca_bundle_path", path)


def test_kore_credentials_must_be_complete():
    assert_refused("kore", "client_secret", None)
    assert_refused("kore", "client_id", None)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_evovoice_specific_settings_are_refused(data):
    setting = data.draw(
        st.sampled_from(["auth_method", "granularity", "start_date", "end_date", "username"])
    )
    if setting in {"auth_method", "granularity"}:
        allowed = declared(TAPS["evovoice"])[setting]["enum"]
        value: object = data.draw(st.text(max_size=12).filter(lambda v: v not in allowed))
    elif setting == "username":
        value = data.draw(st.sampled_from(["evo:admin", ":admin", "admin:"]))
    else:  # GetAIUsage counts whole days: a time of day would be silently dropped
        day = dt.date.fromisoformat(TAPS["evovoice"].base[setting])
        seconds = data.draw(st.integers(min_value=1, max_value=86399))
        value = (
            dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=seconds)
        ).isoformat() + "Z"
    spoil("evovoice", setting, value, f"evovoice {setting}")


def test_every_own_setting_has_hostile_cases():
    """Wrong types reach every setting; this lists the settings whose values are also checked.

    A new setting makes this fail until its bad values are added to the properties above.
    """
    common = {
        "api_url",
        "start_date",
        "end_date",
        "lookback_minutes",
        "connect_timeout_seconds",
        "read_timeout_seconds",
        "retry_max_tries",
        "retry_initial_delay_seconds",
        "retry_max_wait_seconds",
        "max_pages_per_window",
        "ca_bundle_path",
    }
    covered = {
        "luminai": common | {"token", "event_types", "hosts", "window_size_days"},
        "kore": common
        | {
            "client_id",
            "client_secret",
            "jwt",
            "bot_ids",
            "scope",
            "admin_path",
            "channels",
            "timezone",
            "page_size",
            "max_requests_per_minute",
            "max_requests_per_hour",
            "window_size_days",
            "summary_granularity",
            "summary_job_max_wait_seconds",
            "summary_job_attempts",
            "summary_poll_milliseconds",
            "summary_admin_path",
            "llm_page_size",
            "llm_include_developer_usage",
        },
        "evovoice": common
        | {
            "username",
            "password",
            "auth_method",
            "account_ids",
            "customer_ids",
            "granularity",
            "end_date_inclusive",
        },
    }
    for tap in TAP_NAMES:
        assert set(own_settings(TAPS[tap])) == covered[tap], tap


# -- end to end: what the user sees --------------------------------------------------------------


def error_lines(stderr: str) -> list[str]:
    return [line.split("|", 3)[-1].strip() for line in stderr.splitlines() if "| ERROR" in line]


def assert_cli_refuses(run, setting: str | None, *, problems: int = 1) -> list[str]:
    assert run.returncode != 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = error_lines(run.stderr)
    assert lines[-1] == "Config validation failed", run.stderr
    assert len(lines) == problems + 1, run.stderr  # one line per problem, then the summary
    if setting is not None:
        assert all(names(setting, line) for line in lines[:-1]), run.stderr
    assert run.records == []
    return lines


CLI_CASES: dict[str, tuple[str, dict[str, object], str]] = {
    "numeric token": ("luminai", {"token": 987654321012}, "token"),
    "misspelt end_date": ("luminai", {"end_dat": "2024-02-01"}, "end_dat"),
    "NaN window in the JSON file": (
        "luminai",
        {"window_size_days": float("nan")},
        "window_size_days",
    ),
    "Infinity timeout in the JSON file": (
        "kore",
        {"read_timeout_seconds": float("inf")},
        "read_timeout_seconds",
    ),
    "huge window": ("kore", {"window_size_days": 10**30}, "window_size_days"),
    "a directory as time zone": ("kore", {"timezone": "Etc"}, "timezone"),
    "bot scope without bots": ("kore", {"scope": "bot", "bot_ids": None}, "scope"),
    "empty username": ("evovoice", {"username": ""}, "username"),
    "date out of range": ("evovoice", {"start_date": "1999-12-31"}, "start_date"),
    "credentials in the URL": (
        "luminai",
        {"api_url": f"https://user:{URL_SECRET}@billing.example.com/x"},
        "api_url",
    ),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=list(CLI_CASES))
def test_cli_prints_one_line_naming_the_setting_and_no_traceback(case):
    tap, overrides, setting = CLI_CASES[case]
    run = run_tap({**TAPS[tap].base, **overrides}, module=TAPS[tap].module)
    assert_cli_refuses(run, setting)
    assert URL_SECRET not in run.stderr
    assert "987654321012" not in run.stderr


def test_cli_refuses_a_config_file_that_is_not_an_object():
    run = run_tap([TAPS["luminai"].base])  # type: ignore[arg-type]
    lines = assert_cli_refuses(run, None)
    assert "must hold a JSON object of settings" in lines[0]


def test_cli_refuses_a_malformed_integer_from_the_environment(monkeypatch):
    monkeypatch.setenv("TAP_LUMINAI_LOOKBACK_MINUTES", "sixty")
    run = run_tap(TAPS["luminai"].base, None, "--config", "ENV")
    lines = assert_cli_refuses(run, "lookback_minutes")
    assert "sixty" not in "".join(lines)
