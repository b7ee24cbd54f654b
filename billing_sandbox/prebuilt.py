"""Pre-built pages: any sandbox API served from a cache of its answers, for benchmarks.

A benchmark of a tap must measure the tap, not the sandbox. The sandbox APIs compute each page
(filter, sort, render the dataset) on every request; :class:`PrebuiltPages` wraps one of them and
keeps the answer to every API request it has seen, keyed by what was asked (method, path, query
and body) and not by who asked: Kore.ai's JWT changes on every request, and a benchmark client
sends the same credentials every time anyway. After one warm-up pass over the dataset the server
only copies bytes.

Only successful (200) API answers are kept, so faults, refusals and logins behave as the wrapped
API says. A cached answer is served without checking the credentials again: this wrapper is for
measuring clients that are known to authenticate, never for testing authentication.
"""

from __future__ import annotations

import contextlib
import json
import threading
from urllib.parse import urlencode

from billing_sandbox.server import Request, Response, SandboxAPI

#: What identifies a request: method, path, canonical query, canonical body.
RequestKey = tuple[str, str, str, bytes]


def request_key(request: Request) -> RequestKey:
    """The cache key of a request: the same question asked twice gives the same key.

    A JSON body is re-encoded with sorted keys and no spaces, and the query string is sorted, so
    that two clients that ask the same thing in different spellings (key order, separators) share
    one answer.
    """
    query = urlencode(sorted((k, v) for k, values in request.query.items() for v in values))
    body = request.body
    if body:
        with contextlib.suppress(ValueError):  # not JSON: the raw bytes are the key
            body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    return (request.method, request.path, query, body)


class PrebuiltPages:
    """A :class:`SandboxAPI` that answers each API request once and then from its cache."""

    def __init__(self, api: SandboxAPI, *, record_keys: bool = False) -> None:
        self.api = api
        self.name = api.name
        self.one_request_at_a_time = api.one_request_at_a_time
        #: Keep the key of every API request (see :meth:`asked`), to compare what clients asked.
        self.record_keys = record_keys
        self._cache: dict[RequestKey, Response] = {}
        self._lock = threading.Lock()
        self._asked: list[RequestKey] = []
        self.hits = 0
        self.misses = 0
        self.cached_bytes = 0

    # -- the SandboxAPI protocol -----------------------------------------------------------

    def is_api_request(self, request: Request) -> bool:
        return self.api.is_api_request(request)

    def error_body(self, status: int, message: str) -> Response:
        return self.api.error_body(status, message)

    def handle(self, request: Request) -> Response:
        """Answer from the cache, or ask the wrapped API and keep a 200 answer."""
        if not self.api.is_api_request(request):
            return self.api.handle(request)  # logins and other routes: never cached
        key = request_key(request)
        with self._lock:
            if self.record_keys:
                self._asked.append(key)
            cached = self._cache.get(key)
            if cached is not None:
                self.hits += 1
                return cached
        response = self.api.handle(request)
        with self._lock:
            self.misses += 1
            if response.status == 200 and key not in self._cache:
                self._cache[key] = response
                self.cached_bytes += len(response.body)
        return response

    # -- counters ----------------------------------------------------------------------------

    @property
    def pages(self) -> int:
        """How many distinct answers are cached."""
        return len(self._cache)

    def asked(self) -> list[RequestKey]:
        """The keys of the API requests seen since the last :meth:`reset_counters`, in order."""
        with self._lock:
            return list(self._asked)

    def reset_counters(self) -> None:
        """Start counting hits, misses and asked keys afresh (the cache is kept)."""
        with self._lock:
            self.hits = 0
            self.misses = 0
            self._asked.clear()

    def clear(self) -> None:
        """Forget every cached answer."""
        with self._lock:
            self._cache.clear()
            self.cached_bytes = 0
