"""The HTTP machinery every sandboxed API shares.

A :class:`SandboxServer` runs a threading HTTP/1.1 server on loopback around one :class:`SandboxAPI`.
It counts requests, refuses and counts any request that arrives while another is in flight (the
vendors ask for one request at a time), injects faults from a :class:`FaultPlan`, and keeps a log of
what it was asked, for tests to check.
"""

from __future__ import annotations

import email.utils
import json
import select
import socket
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
    ) -> None:
        self.api = api
        self.faults = faults or FaultPlan()
        self.keep_log = keep_log
        self.log: list[RequestRecord] = []
        self.requests = 0
        self.concurrency_violations = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        handler = _handler_for(self)
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def _handler_for(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "billing-sandbox/1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, delayed ACKs cost ~40 ms a page.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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
                if concurrent:
                    response = server.api.error_body(
                        409, "another request is in flight: send one request at a time"
                    )
                    record.status = response.status
                    self._send(response)
                    return
                fault = server.faults.choose(record.number)
                record.fault = fault
                if fault is None:
                    response = server.api.handle(request)
                    record.status = response.status
                    self._send(response)
                else:
                    self._inject(fault, request, record)
            finally:
                server._leave()

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
                self._stall(plan.stall_seconds)
                return
            elif fault == "drop":
                record.status = None
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            elif fault == "truncate":
                real = server.api.handle(request)
                cut = max(1, len(real.body) // 2)
                response = Response(200, real.body[:cut], real.headers, real.content_type)
            else:  # pragma: no cover - FaultRule validates kinds
                msg = f"unknown fault {fault}"
                raise ValueError(msg)
            record.status = response.status
            self._send(response)

        def _stall(self, seconds: float) -> None:
            """Answer nothing until the client hangs up (or ``seconds`` pass), then close."""
            deadline = time.monotonic() + seconds
            sock = self.connection
            while time.monotonic() < deadline:
                readable, _, _ = select.select([sock], [], [], 0.02)
                if readable:
                    try:
                        if not sock.recv(1, socket.MSG_PEEK):
                            break  # the client closed the connection
                    except OSError:
                        break
            self.close_connection = True

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in response.headers.items():
                for item in value if isinstance(value, list) else [value]:
                    self.send_header(key, item)
            self.end_headers()
            self.wfile.write(response.body)

    return Handler
