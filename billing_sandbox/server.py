"""The HTTP machinery every sandboxed API shares.

A :class:`SandboxServer` runs a threading HTTP/1.1 server on loopback around one :class:`SandboxAPI`
(HTTPS when given an ``ssl.SSLContext``, e.g. one whose certificate a private test CA issued).
It counts requests and any request that arrives while another is in flight (the taps send one at a
time), refuses such a request where the API says so (Lumin.ai: "Always permit one request to end
before beginning another"; ``one_request_at_a_time``), injects faults from a :class:`FaultPlan`, and
keeps a log of what it was asked, for tests to check.
"""

from __future__ import annotations

import email.utils
import json
import select
import socket
import ssl
import threading
import time
import typing as t
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from billing_sandbox.faults import FaultPlan


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: t.Mapping[str, str]
    body: bytes

    def json(self) -> t.Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int
    body: bytes = b""
    #: A list value sends the header once per item (e.g. several Set-Cookie).
    headers: dict[str, t.Any] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: t.Any, **headers: str) -> Response:
        return cls(status, json.dumps(payload, separators=(",", ":")).encode(), dict(headers))


class SandboxAPI(t.Protocol):
    """One vendor API: answers requests and describes its own error bodies."""

    name: str
    #: Whether the API refuses a request while another is in flight (409), as Lumin.ai asks.
    one_request_at_a_time: bool

    def handle(self, request: Request) -> Response: ...

    def error_body(self, status: int, message: str) -> Response: ...

    def is_api_request(self, request: Request) -> bool: ...


@dataclass
class RequestRecord:
    number: int
    method: str
    path: str
    body: bytes
    status: int | None = None
    fault: str | None = None
    #: Whether the request is already out of flight (its answer is out, or its client hung up).
    left: bool = False
    #: When it arrived (``time.monotonic()``): the gaps between requests show a client's pauses.
    arrived: float = field(default_factory=time.monotonic)


class SandboxServer:
    """A loopback HTTP server playing one API. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        api: SandboxAPI,
        *,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_log: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.api = api
        self.ssl_context = ssl_context
        #: HTTPS only: connections accepted (each is one TLS handshake attempt), and handshakes
        #: that failed (e.g. the client did not trust the certificate). Plain API requests that
        #: got through are counted in ``requests`` as usual.
        self.tls_connections = 0
        self.tls_handshake_failures = 0
        self.faults = faults or FaultPlan()
        self.keep_log = keep_log
        self.log: list[RequestRecord] = []
        self.requests = 0
        self.concurrency_violations = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        handler = _handler_for(self)
        self._httpd = _HTTPServer((host, port), handler, sandbox=self)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"sandbox-{self.api.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def reset_counters(self) -> None:
        with self._lock:
            self.log.clear()
            self.requests = 0
            self.concurrency_violations = 0

    def api_log(self) -> list[RequestRecord]:
        return list(self.log)

    # -- called by the handler -----------------------------------------------------------

    def _enter(self, request: Request) -> tuple[RequestRecord, bool]:
        with self._lock:
            self.requests += 1
            concurrent = self._in_flight > 0
            if concurrent:
                self.concurrency_violations += 1
            self._in_flight += 1
            record = RequestRecord(self.requests, request.method, request.path, request.body)
            if self.keep_log:
                self.log.append(record)
        return record, concurrent

    def _leave(self, record: RequestRecord) -> None:
        """Count ``record`` out of flight, once."""
        with self._lock:
            if not record.left:
                record.left = True
                self._in_flight -= 1

    def _count_tls(self, *, failed: bool) -> None:
        with self._lock:
            if failed:
                self.tls_handshake_failures += 1
            else:
                self.tls_connections += 1


#: How long a TLS client may take over its handshake before the server gives up on it.
TLS_HANDSHAKE_SECONDS = 10.0


class _HTTPServer(ThreadingHTTPServer):
    """Wraps each accepted connection in TLS when the sandbox has a context.

    The handshake runs in the connection's own thread (``Handler.setup``), so a client that
    fails it, or never finishes it, does not hold up the accept loop.
    """

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        sandbox: SandboxServer,
    ) -> None:
        self.sandbox = sandbox
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, t.Any]:
        connection, address = super().get_request()
        context = self.sandbox.ssl_context
        if context is None:
            return connection, address
        self.sandbox._count_tls(failed=False)
        wrapped = context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return wrapped, address


def _http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def _redirect_location(base: str | None, target: str) -> str:
    """Where the "redirect" fault sends a request: ``base`` + its path and query, or (no base)
    the same path on this same server."""
    return (base.rstrip("/") + target) if base else target


def _handler_for(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "billing-sandbox/1"

        tls_failed = False

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, delayed ACKs cost ~40 ms a page.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.settimeout(TLS_HANDSHAKE_SECONDS)
                try:
                    self.connection.do_handshake()
                except (ssl.SSLError, OSError):
                    self.tls_failed = True
                    server._count_tls(failed=True)
                self.connection.settimeout(None)

        def handle(self) -> None:
            if not self.tls_failed:
                super().handle()

        def log_message(self, format: str, *args: t.Any) -> None:
            return  # quiet: tests and benchmarks read the server's own log

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Request(
                self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body
            )
            if not server.api.is_api_request(request):
                self._send(server.api.handle(request))
                return
            record, concurrent = server._enter(request)
            try:
                if concurrent and server.api.one_request_at_a_time:
                    response = server.api.error_body(
                        409, "another request is in flight: send one request at a time"
                    )
                    record.status = response.status
                    self._send(response, record)
                    return
                fault = server.faults.choose(record.number)
                record.fault = fault
                if fault is None:
                    response = server.api.handle(request)
                    record.status = response.status
                    self._send(response, record)
                else:
                    self._inject(fault, request, record)
            finally:
                server._leave(record)

        def _inject(self, fault: str, request: Request, record: RequestRecord) -> None:
            plan = server.faults
            if fault in {"429", "429-date"}:
                after = (
                    str(plan.retry_after_seconds)
                    if fault == "429"
                    else _http_date(plan.retry_after_seconds)
                )
                response = server.api.error_body(429, "rate limit reached, try again later")
                response.headers["Retry-After"] = after
            elif fault in {"500", "502", "503", "401"}:
                response = server.api.error_body(int(fault), f"injected {fault}")
            elif fault == "not-ok":
                response = Response.json(
                    200, {"ok": False, "error": "injected: the request could not be served"}
                )
            elif fault == "stall":
                record.status = None
                self._stall(plan.stall_seconds, record)
                return
            elif fault == "drop":
                record.status = None
                self.close_connection = True
                # Out of flight before the client can see the drop: its retry on a new connection
                # must not be taken for a concurrent request.
                server._leave(record)
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            elif fault == "redirect":
                response = Response.json(plan.redirect_status, {"moved": True})
                response.headers["Location"] = _redirect_location(plan.redirect_to, self.path)
            elif fault == "truncate":
                real = server.api.handle(request)
                cut = max(1, len(real.body) // 2)
                response = Response(200, real.body[:cut], real.headers, real.content_type)
            else:  # pragma: no cover - FaultRule validates kinds
                msg = f"unknown fault {fault}"
                raise ValueError(msg)
            record.status = response.status
            self._send(response, record)

        def _stall(self, seconds: float, record: RequestRecord) -> None:
            """Answer nothing until the client hangs up (or ``seconds`` pass), then close."""
            deadline = time.monotonic() + seconds
            sock = self.connection
            while time.monotonic() < deadline:
                readable, _, _ = select.select([sock], [], [], 0.005)
                if readable:
                    try:
                        # TLS sockets cannot peek; what the client sends while it waits is not
                        # needed (the connection is closed after the stall anyway).
                        peek = (
                            sock.recv(1)
                            if isinstance(sock, ssl.SSLSocket)
                            else sock.recv(1, socket.MSG_PEEK)
                        )
                        if not peek:
                            break  # the client closed the connection
                    except (OSError, ValueError):
                        break
            # Out of flight as soon as the client has given up: its retry must not be taken for a
            # concurrent request.
            server._leave(record)
            self.close_connection = True

        def _send(self, response: Response, record: RequestRecord | None = None) -> None:
            """Send ``response``. ``record`` leaves flight before the body's last write: once the
            client holds the whole answer it may send its next request, which must not race this
            thread's bookkeeping into a false overlap."""
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in response.headers.items():
                for item in value if isinstance(value, list) else [value]:
                    self.send_header(key, item)
            self.end_headers()
            if record is not None:
                server._leave(record)
            self.wfile.write(response.body)

    return Handler
