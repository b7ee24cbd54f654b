"""Transport security of all three taps, over real HTTP(S) against the sandboxes.

* Credentials go only to the configured host: a redirect to another origin (another host name or
  another port) is not followed at all, the run fails with one line naming the redirect, the other
  server receives nothing, and the state written before the failure does not run ahead of the
  records delivered. A redirect within the origin is followed, with its credentials.
* TLS verification is always on: a certificate from a private CA fails at once (one TLS attempt,
  no retries) with an error naming ``ca_bundle_path``; with that setting the run is exact; the
  environment (``CURL_CA_BUNDLE``, ``REQUESTS_CA_BUNDLE``) and unknown keys cannot change that.
* A ``ca_bundle_path`` that is missing, a directory or not PEM is one config error, before any
  request.
"""

from __future__ import annotations

import datetime as dt
import ssl
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import trustme

from billing_sandbox.faults import FaultRule
from billing_sandbox.server import Request, Response, SandboxServer
from billing_toolkit.transport import SecureSession
from tests.support import (
    EVO_END,
    EVO_PASSWORD,
    EVO_START,
    KORE_BOTS,
    KORE_END,
    KORE_START,
    SECRETS,
    TapRun,
    evo_config,
    kore_config,
    lumin_config,
    lumin_truth_ids,
    run_tap,
)

#: Headers that carry a credential in any of the three taps (or could, through a proxy).
CREDENTIAL_HEADERS = {"authorization", "auth", "cookie", "proxy-authorization"}


# -- the three taps, described once --------------------------------------------------------


@dataclass(frozen=True)
class TapCase:
    """How to start, configure and check one tap against its sandbox."""

    name: str
    module: str
    fixture: str
    config: t.Callable[..., dict[str, object]]
    delivered: t.Callable[[TapRun], set[tuple[t.Any, ...]]]
    truth: t.Callable[[SandboxServer], set[tuple[t.Any, ...]]]
    #: An API request that is neither the run's first nor the first page of its window.
    middle_request: int


def _lumin_delivered(run: TapRun) -> set[tuple[t.Any, ...]]:
    return {(record["id"],) for record in run.records}


def _lumin_truth(server: SandboxServer) -> set[tuple[t.Any, ...]]:
    return {(event_id,) for event_id in lumin_truth_ids(server)}


def _kore_delivered(run: TapRun) -> set[tuple[t.Any, ...]]:
    return {(record["billingSessionId"],) for record in run.records}


def _kore_truth(server: SandboxServer) -> set[tuple[t.Any, ...]]:
    sessions = server.api.truth(bots=set(KORE_BOTS), start=KORE_START, end=KORE_END)  # type: ignore[attr-defined]
    return {(s.billingSessionId,) for s in sessions}


def _evo_delivered(run: TapRun) -> set[tuple[t.Any, ...]]:
    figures: set[tuple[t.Any, ...]] = set()
    for message in run.messages:
        if message["type"] != "RECORD":
            continue
        r = message["record"]
        figures.add(
            (message["stream"], r["accountId"], r.get("customerId"), r["startDate"], r["aiMinutes"])
        )
    return figures


def _evo_truth(server: SandboxServer) -> set[tuple[t.Any, ...]]:
    """Every figure by day over [EVO_START, EVO_END), as the sandbox computes it."""
    figures: set[tuple[t.Any, ...]] = set()
    day = EVO_START
    while day < EVO_END:
        by_account, by_customer = server.api.totals(day, day)  # type: ignore[attr-defined]
        for account, minutes in by_account.items():
            figures.add(("ai_account_usage", account, None, day.isoformat(), minutes))
        for (account, customer), minutes in by_customer.items():
            figures.add(("ai_customer_usage", account, customer, day.isoformat(), minutes))
        day += dt.timedelta(days=1)
    return figures


TAPS = {
    "luminai": TapCase(
        "luminai", "tap_luminai", "lumin", lumin_config, _lumin_delivered, _lumin_truth, 2
    ),
    "kore": TapCase(
        "kore", "tap_kore_billing", "kore", kore_config, _kore_delivered, _kore_truth, 2
    ),
    "evovoice": TapCase(
        "evovoice", "tap_evovoice", "evo", evo_config, _evo_delivered, _evo_truth, 5
    ),
}


@pytest.fixture(params=list(TAPS))
def case(request: pytest.FixtureRequest) -> tuple[TapCase, t.Callable[..., SandboxServer]]:
    """Each tap in turn, with the fixture that starts its sandbox."""
    tap = TAPS[request.param]
    return tap, request.getfixturevalue(tap.fixture)


def run(tap: TapCase, config: dict, state: dict | None = None, **kwargs: t.Any) -> TapRun:
    return run_tap(config, state, module=tap.module, **kwargs)


def error_lines(result: TapRun, *needles: str) -> list[str]:
    """Lines of the tap's log that hold every one of ``needles``."""
    return [line for line in result.stderr.splitlines() if all(n in line for n in needles)]


# -- a server of another origin that records everything ----------------------------------


class TrapAPI:
    """A "vendor API" that records every request it receives (headers included), and answers as
    an API would, so that a tap following a redirect to it would even seem to succeed."""

    name = "trap"
    one_request_at_a_time = False

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []

    def is_api_request(self, request: Request) -> bool:
        return True

    def error_body(self, status: int, message: str) -> Response:
        return Response.json(status, {"error": message})

    def handle(self, request: Request) -> Response:
        self.received.append((request.method, request.path, dict(request.headers), request.body))
        return Response.json(
            200, {"ok": True, "items": [], "accountUsage": [], "customerUsage": []}
        )


class Trap:
    """A second loopback server (the sandbox's own server, another port, reached as localhost or
    127.0.0.1) that records every request it receives."""

    def __init__(self) -> None:
        self.api = TrapAPI()
        self._server = SandboxServer(self.api).start()

    @property
    def received(self) -> list[tuple[str, str, dict[str, str], bytes]]:
        return self.api.received

    def url(self, host: str) -> str:
        return f"http://{host}:{self._server.port}"

    def leaked(self) -> list[str]:
        """Every credential header name and secret value the trap received."""
        found = []
        for _method, _path, headers, body in self.received:
            found += [name for name in headers if name.lower() in CREDENTIAL_HEADERS]
            text = " ".join(headers.values()) + body.decode("utf-8", "replace")
            found += [secret for secret in SECRETS if secret in text]
        return found

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture
def trap() -> t.Iterator[Trap]:
    server = Trap()
    yield server
    server.stop()


# -- redirects ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
@pytest.mark.parametrize("where", ["first request", "middle page"])
def test_a_redirect_to_another_origin_is_refused_and_nothing_reaches_it(case, trap, host, where):
    tap, start = case
    at = 1 if where == "first request" else tap.middle_request
    server = start(faults=[FaultRule("redirect", at=(at,))])
    server.faults.redirect_to = trap.url(host)
    # No lookback: a resumed run starts exactly at the saved bookmark, so a bookmark that ran
    # ahead of the delivered records would show as records missing below.
    config = tap.config(server, lookback_minutes=0)

    failed = run(tap, config)

    assert failed.returncode != 0
    assert trap.received == [], "a request reached the other origin"
    assert trap.leaked() == []
    assert server.faults.injected == {"redirect": 1}
    assert len(server.api_log()) == at, "a refused redirect must not be retried"
    lines = error_lines(failed, "redirect refused", trap.url(host), server.base_url)
    assert lines, failed.stderr[-3000:]
    if where == "first request":
        assert failed.records == []
    # The state written before the failure covers only what was delivered: resuming from it
    # (the fault is spent) delivers the rest, and together they are exactly the truth.
    resumed = run(tap, config, failed.last_state)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tap.delivered(failed) | tap.delivered(resumed) == tap.truth(server)
    assert trap.received == []


def test_the_evo_login_is_not_redirected_with_the_password(evo, trap):
    server = evo(faults=[FaultRule("redirect", at=(1,))])
    server.faults.redirect_to = trap.url("localhost")
    api = server.api
    usage_request = api.is_api_request

    def login_too(request: Request) -> bool:
        return request.path == "/auth/credentials" or usage_request(request)

    api.is_api_request = login_too  # type: ignore[method-assign]

    failed = run(TAPS["evovoice"], evo_config(server, auth_method="credentials"))

    assert failed.returncode != 0
    assert server.api_log()[0].path == "/auth/credentials"
    assert trap.received == [], "the login (and its password) reached the other origin"
    assert error_lines(failed, "redirect refused", trap.url("localhost"))
    assert EVO_PASSWORD not in failed.stderr
    assert failed.records == []


def test_a_redirect_within_the_origin_is_followed_with_credentials(case):
    tap, start = case
    server = start(faults=[FaultRule("redirect", at=(1, tap.middle_request))])
    # redirect_to unset: the same path on the same server (same scheme, host and port).
    result = run(tap, tap.config(server))
    assert result.returncode == 0, result.stderr[-3000:]
    assert server.faults.injected == {"redirect": 2}
    assert tap.delivered(result) == tap.truth(server)


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private CA that no default trust store knows."""
    return trustme.CA()


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def https(ca: trustme.CA) -> t.Iterator[t.Callable[..., SandboxServer]]:
    """Serve a started sandbox's API again over HTTPS, with a certificate of the private CA."""
    started: list[SandboxServer] = []

    def serve(plain: SandboxServer, names: tuple[str, ...] = ("127.0.0.1",)) -> SandboxServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        server = SandboxServer(plain.api, faults=plain.faults, ssl_context=context).start()
        started.append(server)
        return server

    yield serve
    for server in started:
        server.stop()


def assert_tls_refused(result: TapRun, server: SandboxServer) -> None:
    """Failed on the certificate, at the first TLS attempt, naming the setting that fixes it."""
    assert result.returncode != 0
    assert error_lines(result, "TLS verification", "ca_bundle_path"), result.stderr[-3000:]
    assert server.tls_connections == 1, "a TLS failure must not be retried"
    assert server.requests == 0
    assert result.records == []


def test_a_private_ca_fails_at_once_and_names_ca_bundle_path(case, https):
    tap, start = case
    server = https(start())
    result = run(tap, tap.config(server))
    assert_tls_refused(result, server)
    assert error_lines(result, "certificate verify failed")


def test_with_ca_bundle_path_the_run_is_exact(case, https, ca_pem):
    tap, start = case
    server = https(start())
    result = run(tap, tap.config(server, ca_bundle_path=ca_pem))
    assert result.returncode == 0, result.stderr[-3000:]
    assert tap.delivered(result) == tap.truth(server)
    assert server.tls_handshake_failures == 0
    assert server.concurrency_violations == 0


def test_the_evo_login_verifies_tls_with_the_same_bundle(evo, https, ca_pem):
    tap = TAPS["evovoice"]
    server = https(evo())
    refused = run(tap, evo_config(server, auth_method="credentials"))
    assert_tls_refused(refused, server)
    assert server.api.logins == 0  # type: ignore[attr-defined]
    exact = run(tap, evo_config(server, auth_method="credentials", ca_bundle_path=ca_pem))
    assert exact.returncode == 0, exact.stderr[-3000:]
    assert server.api.logins == 1  # type: ignore[attr-defined]
    assert tap.delivered(exact) == tap.truth(server)


def test_a_certificate_for_another_host_fails_even_with_the_bundle(lumin, https, ca_pem):
    server = https(lumin(), names=("billing.example.com",))
    result = run(TAPS["luminai"], lumin_config(server, ca_bundle_path=ca_pem))
    assert_tls_refused(result, server)
    assert error_lines(result, "certificate verify failed", "127.0.0.1")


#: Environment variables that widen trust for requests or OpenSSL. Each variable set here is
#: also one this machine may already have: the empty values keep an inherited one from hiding
#: the one under test (requests reads REQUESTS_CA_BUNDLE first, then CURL_CA_BUNDLE).
ENV_TRICKS = {
    "CURL_CA_BUNDLE empty": {"CURL_CA_BUNDLE": "", "REQUESTS_CA_BUNDLE": ""},
    "REQUESTS_CA_BUNDLE private CA": {"REQUESTS_CA_BUNDLE": "{ca}"},
    "CURL_CA_BUNDLE private CA": {"CURL_CA_BUNDLE": "{ca}", "REQUESTS_CA_BUNDLE": ""},
    "SSL_CERT_FILE private CA": {
        "SSL_CERT_FILE": "{ca}",
        "CURL_CA_BUNDLE": "",
        "REQUESTS_CA_BUNDLE": "",
    },
}


@pytest.mark.parametrize("trick", ENV_TRICKS)
def test_the_environment_cannot_change_verification(case, https, ca_pem, trick):
    tap, start = case
    server = https(start())
    env = {name: value.format(ca=ca_pem) for name, value in ENV_TRICKS[trick].items()}
    # Evo Voice through its login too: that call goes through requests' environment merging.
    login = {"auth_method": "credentials"} if tap.name == "evovoice" else {}
    result = run(tap, tap.config(server, **login), env=env)
    assert_tls_refused(result, server)


def test_requests_alone_would_have_trusted_the_environment(lumin, https, ca_pem, monkeypatch):
    """The control for the test above: the variable does work on a plain session, so the tap
    refusing under it is its own pinning, not a broken setup."""
    server = https(lumin())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_pem)
    assert requests.Session().get(server.base_url + "/", timeout=10).status_code > 0
    with pytest.raises(Exception, match="ca_bundle_path"):
        SecureSession(server.base_url).get(server.base_url + "/", timeout=10)


@pytest.mark.parametrize(
    "unknown",
    [{"verify_ssl": False}, {"verify": False}, {"ssl_verify": False}, {"insecure": True}],
    ids=lambda value: next(iter(value)),
)
def test_an_unknown_key_cannot_turn_verification_off(case, https, unknown):
    tap, start = case
    server = https(start())
    result = run(tap, tap.config(server, **unknown))
    assert result.returncode != 0
    assert result.records == []
    assert server.requests == 0, "an API request got through without a trusted certificate"
    key = next(iter(unknown))
    refused_as_unknown = bool(error_lines(result, "ERROR", key))
    refused_by_tls = bool(error_lines(result, "TLS verification", "ca_bundle_path"))
    assert refused_as_unknown or refused_by_tls, result.stderr[-3000:]


def test_a_session_refuses_to_turn_verification_off(lumin, https, ca_pem):
    server = https(lumin())
    session = SecureSession(server.base_url)
    with pytest.raises(ValueError, match="cannot be turned off"):
        session.verify = False  # type: ignore[assignment]
    with pytest.raises(Exception, match="TLS verification"):
        session.get(server.base_url + "/", verify=False, timeout=10)
    trusted = SecureSession(server.base_url, ca_bundle=ca_pem)
    assert trusted.get(server.base_url + "/", verify=False, timeout=10).status_code > 0
    assert server.tls_connections == 2


# -- the setting itself -------------------------------------------------------------------


def _bundle(tmp_path: Path, kind: str) -> str:
    if kind == "missing file":
        return str(tmp_path / "no-such-ca.pem")
    if kind == "a directory":
        return str(tmp_path)
    path = tmp_path / "ca.pem"
    if kind == "not PEM":
        path.write_text("this is not a certificate\n")
    else:  # a PEM block whose content is not a certificate
        path.write_text(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
        )
    return str(path)


@pytest.mark.parametrize("kind", ["missing file", "a directory", "not PEM", "broken PEM"])
def test_a_bad_ca_bundle_path_is_one_config_error_before_any_request(case, tmp_path, kind):
    tap, start = case
    server = start()
    result = run(tap, tap.config(server, ca_bundle_path=_bundle(tmp_path, kind)))
    assert result.returncode != 0
    assert len(error_lines(result, "| ERROR", "ca_bundle_path")) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert server.requests == 0
    assert result.records == []


def test_the_setting_is_declared_in_every_tap():
    from tap_evovoice.tap import TapEvoVoice
    from tap_kore_billing.tap import TapKoreBilling
    from tap_luminai.tap import TapLuminai

    for tap_class in (TapLuminai, TapKoreBilling, TapEvoVoice):
        properties = tap_class.config_jsonschema["properties"]
        assert "string" in str(properties["ca_bundle_path"]["type"])
        assert "ca_bundle_path" not in tap_class.config_jsonschema.get("required", [])
        # Nothing that could turn verification off exists to be set.
        assert not any(word in name for name in properties for word in ("verify", "insecure"))
