"""Transport security every tap shares: where credentials may go, and which certificates count.

Rules (one :class:`SecureSession` per stream, plus one for the Evo Voice login):

* **One origin.** A session is bound to the origin (scheme, host, port) of the configured API URL.
  A request to any other origin is refused before a byte is sent, and so is a redirect to one
  (``Location`` on another host, another port or another scheme, http -> https included): the run
  fails at once with a :class:`RedirectRefused` naming the configured host and the redirect
  target. Nothing is stripped and forwarded: the other host receives no request at all, so no
  credential of any form can reach it (``Authorization``, Kore's ``auth``, the ``Cookie`` of an
  Evo session, ``Proxy-Authorization``, or a password in a re-posted login body). A redirect
  within the origin is followed with its credentials (at most :data:`MAX_REDIRECTS` hops), and
  ``~/.netrc`` never adds any.
* **TLS verification is always on.** ``verify`` is pinned to True whatever a caller passes or the
  environment says (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``): only the ``ca_bundle_path``
  setting counts, and it *adds* the CAs of a PEM file to the default ones (certifi), e.g. a
  corporate TLS-inspecting proxy's CA. A certificate that does not verify (untrusted issuer,
  wrong host name, expired) fails at once, without retries, with a :class:`TLSVerificationFailed`
  that names ``ca_bundle_path`` as the fix for a private CA.

Both errors are :class:`~singer_sdk.exceptions.FatalAPIError`: the stream's retry loop (which
retries only ``RetriableAPIError`` and connection-level failures) lets them through untouched.
"""

from __future__ import annotations

import ssl
import typing as t
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from singer_sdk.exceptions import FatalAPIError
from urllib3.util.ssl_ import create_urllib3_context

from billing_toolkit.secrets import mask

#: The setting that adds a CA bundle (declared in :mod:`billing_toolkit.settings`).
CA_BUNDLE_SETTING = "ca_bundle_path"
#: Same-origin redirects followed in a row before the request fails (requests allows 30).
MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class TransportSecurityError(FatalAPIError):
    """A request refused for transport-security reasons: never retried, the run fails."""


class RedirectRefused(TransportSecurityError):
    """The API redirected (or a request was aimed) to another origin than the configured one."""


class TLSVerificationFailed(TransportSecurityError):
    """The server's certificate did not verify: a retry would fail the same way."""


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of a URL, lower-cased, with the scheme's default port filled in.

    Raises ``ValueError`` for a URL without a scheme or host, or with a port out of range.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host:
        msg = f"not an absolute URL: {url!r}"
        raise ValueError(msg)
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return scheme, host, port


def origin_text(origin: Origin) -> str:
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if _DEFAULT_PORTS.get(scheme) == port else f":{port}")


def _no_query(url: str) -> str:
    """A URL for messages: without its query and fragment, which may carry tokens."""
    return urlunsplit(urlsplit(url)._replace(query="", fragment=""))


def trust_context(ca_bundle: str) -> ssl.SSLContext:
    """urllib3's default client context trusting certifi's CAs plus those of ``ca_bundle``.

    Certificate and host-name checks are on (``CERT_REQUIRED``, ``check_hostname``), as urllib3
    sets them; raises ``ssl.SSLError``/``OSError`` if the bundle cannot be loaded.
    """
    context = create_urllib3_context()
    context.load_verify_locations(cafile=DEFAULT_CA_BUNDLE_PATH)
    context.load_verify_locations(cafile=ca_bundle)
    return context


class _TrustAdapter(HTTPAdapter):
    """An adapter whose HTTPS connections use one prepared context (default CAs + the bundle)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: t.Any) -> t.Any:
        proxy_kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def cert_verify(self, conn: t.Any, url: str, verify: t.Any, cert: t.Any) -> None:
        super().cert_verify(conn, url, True, cert)
        if url.lower().startswith("https"):
            # The context already holds every CA to trust: do not load certifi's file into it
            # again for each new connection.
            conn.ca_certs = None
            conn.ca_cert_dir = None


class SecureSession(requests.Session):
    """A session that sends requests, and so credentials, to one origin only, always over
    verified TLS (see the module docstring for the rules)."""

    def __init__(self, api_url: str, *, ca_bundle: str | None = None) -> None:
        super().__init__()
        self.origin = origin_of(api_url)
        self.ca_bundle = ca_bundle or None
        self.max_redirects = MAX_REDIRECTS
        if self.ca_bundle:
            adapter = _TrustAdapter(trust_context(self.ca_bundle))
            self.mount("https://", adapter)

    @property  # type: ignore[override]
    def verify(self) -> bool:
        """Always True: the CA bundle, if any, is in the HTTPS adapter's context."""
        return True

    @verify.setter
    def verify(self, value: object) -> None:
        if value is not True:
            msg = (
                "TLS verification cannot be turned off or replaced; use the ca_bundle_path setting"
            )
            raise ValueError(msg)

    def send(self, request: requests.PreparedRequest, **kwargs: t.Any) -> requests.Response:
        """Send within the origin only, verifying TLS whatever ``verify`` the caller passed."""
        target = self._checked_origin(request.url or "")
        if target != self.origin:
            msg = (
                f"refused to send {request.method} {origin_text(target)}: this tap sends requests "
                f"and credentials only to the configured host {origin_text(self.origin)}"
            )
            raise RedirectRefused(mask(msg))
        kwargs["verify"] = True
        try:
            return super().send(request, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise TLSVerificationFailed(self._describe_tls_failure(exc)) from exc

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        """Called for every redirect hop before it is sent: refuse any hop off the origin.

        Within the origin the request keeps its credentials as they are (``~/.netrc`` is not
        consulted, unlike requests' default).
        """
        target = self._checked_origin(prepared_request.url or "")
        if target != self.origin:
            sent = response.request
            source = (
                f"{sent.method} {_no_query(sent.url or '')}" if sent is not None else "a request"
            )
            msg = (
                f"redirect refused: {source} answered HTTP {response.status_code} redirecting to "
                f"{_no_query(prepared_request.url or '')}, off the configured host "
                f"{origin_text(self.origin)} (another scheme, host or port); credentials are sent "
                "only to the configured host, "
                "so the redirect was not followed (if the API has moved, set api_url to its new "
                "address)"
            )
            raise RedirectRefused(mask(msg))

    def resolve_redirects(
        self, resp: requests.Response, req: requests.PreparedRequest, *args: t.Any, **kwargs: t.Any
    ) -> t.Any:
        """Follow redirects; skip requests' look-ahead when the caller did not ask to follow.

        (With ``allow_redirects=False`` requests still prepares the next hop for
        ``Response.next``; a 3xx then reaches the caller as a response, not as an error.)
        """
        if kwargs.get("yield_requests"):
            return iter(())
        return super().resolve_redirects(resp, req, *args, **kwargs)

    def _checked_origin(self, url: str) -> Origin:
        try:
            return origin_of(url)
        except ValueError as exc:
            msg = f"refused to send a request to {url!r}: {exc}"
            raise RedirectRefused(mask(msg)) from exc

    def _describe_tls_failure(self, error: requests.exceptions.SSLError) -> str:
        where = origin_text(self.origin)
        verified, reason = _ssl_reason(error)
        what = f"TLS verification of {where} failed" if verified else f"TLS with {where} failed"
        added = f" (ca_bundle_path {self.ca_bundle} is trusted too)" if self.ca_bundle else ""
        return mask(
            f"{what}: {reason}. Certificates are always verified against the default CAs{added}; "
            "verification cannot be turned off. If the API, or a proxy in between, uses a private "
            "or corporate CA, set ca_bundle_path to a PEM file of that CA; if the certificate "
            "names another host, check api_url."
        )


def _ssl_reason(error: BaseException) -> tuple[bool, str]:
    """Whether the certificate failed verification, and the innermost ssl error's words
    (e.g. 'certificate verify failed: unable to get local issuer certificate')."""
    seen: set[int] = set()
    current: BaseException | None = error
    found: BaseException | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            found = current
        nested = getattr(current, "reason", None)
        if isinstance(nested, BaseException):
            current = nested
        elif current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
        else:
            current = current.__cause__ or current.__context__
    if isinstance(found, ssl.SSLCertVerificationError):
        detail = found.verify_message or found.reason or "certificate verify failed"
        return True, f"certificate verify failed: {detail}".rstrip(".")
    if found is not None:
        return False, str(getattr(found, "reason", None) or found).rstrip(".")
    return False, str(error).rstrip(".")


def secure_session(api_url: str, config: t.Mapping[str, t.Any]) -> SecureSession:
    """The session for one tap's API: bound to ``api_url``'s origin, with ``ca_bundle_path``."""
    bundle = config.get(CA_BUNDLE_SETTING)
    return SecureSession(api_url, ca_bundle=str(bundle) if bundle else None)
