"""Evo Voice (ServiceStack) authentication: HTTP Basic, or a credentials login kept as cookies."""

from __future__ import annotations

import base64
import threading

import requests
from singer_sdk.exceptions import FatalAPIError

from billing_toolkit.http import Timeouts, describe_response_failure
from billing_toolkit.secrets import register_secret
from billing_toolkit.transport import SecureSession


class LoginError(FatalAPIError):
    """The credentials login failed; the message names the response."""


#: ServiceStack's session-options cookie: its values (``perm``, ``temp``) are flags, not secrets.
SESSION_OPTIONS_COOKIE = "ss-opt"


class EvoAuth(requests.auth.AuthBase):
    """Adds ``Authorization: Basic …``, or every cookie a credentials login set.

    ServiceStack stores a ``rememberMe`` login's session under the permanent id ``ss-pid`` and sets
    ``ss-opt=perm``; it looks a request's session up under ``ss-pid`` only when ``ss-opt`` says
    ``perm``, else under ``ss-id`` (``SessionExtensions.GetSessionId``). So every cookie of the
    login goes back on each request, as browsers and the vendor's CLI do; each value but the
    session options is masked in all output.

    One instance serves every stream of a run, so there is one login, not one per stream. A 401
    under the credentials method means the session expired: :meth:`login` again (once per
    failure; the stream decides).

    The login goes through its own :class:`SecureSession`, under the streams' rules: verified TLS
    with ``ca_bundle``, and never to another origin (a redirect off the API's host fails the run,
    so the password in the login body cannot follow it).
    """

    def __init__(
        self,
        *,
        api_url: str,
        username: str,
        password: str,
        method: str,
        timeouts: Timeouts,
        ca_bundle: str | None = None,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._username = username
        self._password = password
        self.method = method
        self._timeouts = timeouts
        self._ca_bundle = ca_bundle
        self._session: SecureSession | None = None  # made at the first login, after validation
        self._cookies: dict[str, str] = {}  # every cookie of the last login, in its order
        self._lock = threading.Lock()
        self._basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        register_secret(password)
        register_secret(self._basic[6:])

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.method == "basic":
            request.headers["Authorization"] = self._basic
            return request
        if not self._cookies:
            self.login()
        request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._cookies.items())
        return request

    def login(self) -> None:
        """``POST /auth/credentials`` and keep every cookie it sets."""
        with self._lock:
            if self._session is None:
                self._session = SecureSession(self._api_url, ca_bundle=self._ca_bundle)
            self._session.cookies.clear()  # each login starts afresh, as a new client would
            response = self._session.post(
                f"{self._api_url}/auth/credentials",
                json={
                    "provider": "credentials",
                    "userName": self._username,
                    "password": self._password,
                    "rememberMe": True,
                },
                headers={"Accept": "application/json"},
                timeout=self._timeouts.as_tuple(),
            )
            _register_session_values(response)
            if response.status_code != 200:
                raise LoginError(
                    describe_response_failure(response, "the credentials login was refused")
                )
            # The session's jar: cookies set on any hop of a same-origin redirect count too, and
            # cookies the server expired are gone from it.
            cookies = {k: v for k, v in self._session.cookies.items() if v}
            if not {"ss-id", "ss-pid"} & cookies.keys():
                raise LoginError(
                    describe_response_failure(response, "the login set no ss-id or ss-pid cookie")
                )
            for name, value in cookies.items():
                if name != SESSION_OPTIONS_COOKIE:
                    register_secret(value)
            self._cookies = cookies


#: Body fields of a ServiceStack login answer that are credentials in their own right.
_SESSION_FIELDS = ("sessionId", "bearerToken", "refreshToken")


def _register_session_values(response: requests.Response) -> None:
    """Mask the session values a login answer carries (cookies and body) before anything quotes it."""
    for name, value in response.cookies.items():
        if name != SESSION_OPTIONS_COOKIE:
            register_secret(value)
    try:
        body = response.json()
    except ValueError:
        return
    if isinstance(body, dict):
        for field in _SESSION_FIELDS:
            register_secret(body.get(field))
