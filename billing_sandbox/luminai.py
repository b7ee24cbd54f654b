"""The Lumin.ai Billing API, as its document (seed 000) and the public notes describe it.

- ``POST`` to a customer-specific URL with ``Authorization: Bearer <token>`` and a JSON body
  ``{type: "a,b", start, end, host?, start_token?}`` (``Start`` is accepted too, as in the seed).
  ``type: ""`` asks for every type, as the only public client does (``LuminBillingTypes.ALL``).
- Answers ``{"ok": true, "items": [...], "next_token": ...}``; the end of paging is signalled by an
  absent, a null or an empty token, in turn, so that all three occur.
- Items are in id order, which is no time order. Field naming: ``timestamp``/``type`` (the sample
  response), ``datetime``/``event_type`` (the field list), or both mixed item by item.
- Range semantics are a server setting (start and end inclusive or exclusive): the real API's are
  undocumented, and the tap must be exact under each.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import json
import random
import threading
from dataclasses import asdict, dataclass, field

from billing_sandbox.server import Request, Response

UTC = dt.timezone.utc
EVENT_TYPES = (
    ("billing.scheduled", 60),
    ("billing.rescheduled", 15),
    ("billing.lead-received", 15),
    ("billing.delete", 8),
    ("billing.fatal-error.sfdc.user-id", 2),
)
HOSTS = ("default", "store-001", "store-002", "store-003")
DEFAULT_PATH = "/luminai/billing"


@dataclass(frozen=True)
class LuminEvent:
    id: str
    conversation_id: str
    timestamp: dt.datetime
    type: str
    host_id: str
    host_did: str
    user_did: str
    fake: str

    @property
    def timestamp_text(self) -> str:
        return self.timestamp.isoformat(timespec="microseconds")


def generate_events(
    *,
    seed: int,
    count: int,
    start: dt.datetime,
    end: dt.datetime,
    hosts: tuple[str, ...] = HOSTS,
) -> list[LuminEvent]:
    """``count`` events in ``[start, end)``, the same for the same arguments.

    About 2% of them fall exactly on a whole hour, so that window boundaries are exercised.
    """
    rng = random.Random(seed)
    span_us = int((end - start).total_seconds() * 1_000_000)
    types = [t for t, _ in EVENT_TYPES]
    weights = [w for _, w in EVENT_TYPES]
    conversations = [
        str(5_000_000_000_000_000 + rng.randrange(10**15)) for _ in range(max(1, count // 3))
    ]
    host_dids = {h: f"1{rng.randrange(10**10, 10**11)}" for h in hosts}
    seen: set[str] = set()
    events: list[LuminEvent] = []
    while len(events) < count:
        number = rng.randrange(10**19)
        event_id = base64.b64encode(f"{number:032d}".encode()).decode()
        if event_id in seen:
            continue
        seen.add(event_id)
        moment = start + dt.timedelta(microseconds=rng.randrange(span_us))
        if rng.random() < 0.02:
            moment = moment.replace(minute=0, second=0, microsecond=0)
            moment = max(moment, start)
        host = rng.choice(hosts)
        events.append(
            LuminEvent(
                id=event_id,
                conversation_id=rng.choice(conversations),
                timestamp=moment,
                type=rng.choices(types, weights)[0],
                host_id=host,
                host_did=host_dids[host],
                user_did="" if rng.random() < 0.1 else f"1{rng.randrange(10**10, 10**11)}",
                fake="real",
            )
        )
    return events


@dataclass
class LuminSettings:
    token: str = "sandbox-luminai-token"
    path: str = DEFAULT_PATH
    page_size: int = 100
    naming: str = "timestamp"  # timestamp | datetime | mixed
    start_inclusive: bool = True
    end_inclusive: bool = False
    #: When a query's last page is exactly full, answer with a token and then an empty last page.
    empty_last_page: bool = False
    #: Fields the document does not list, added to every item (the API may grow new ones).
    extra_fields: dict[str, object] = field(default_factory=dict)


class LuminAPI:
    """The API over a mutable event list; safe to add events while it serves."""

    name = "luminai"
    one_request_at_a_time = True  # the document asks for one request at a time

    def __init__(self, events: list[LuminEvent], settings: LuminSettings | None = None) -> None:
        self.settings = settings or LuminSettings()
        self._lock = threading.Lock()
        self._events: list[LuminEvent] = []
        self._times: list[dt.datetime] = []
        self._queries = 0
        self.add_events(events)

    # -- dataset ------------------------------------------------------------------------

    def add_events(self, events: list[LuminEvent]) -> None:
        with self._lock:
            merged = sorted([*self._events, *events], key=lambda e: e.timestamp)
            self._events = merged
            self._times = [e.timestamp for e in merged]

    @property
    def events(self) -> list[LuminEvent]:
        return list(self._events)

    def truth(
        self,
        *,
        types: set[str] | None = None,
        hosts: set[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[LuminEvent]:
        """The events a client asking for ``[start, end)`` should get, in time order."""
        return [
            e
            for e in self._events
            if (types is None or e.type in types)
            and (hosts is None or e.host_id in hosts)
            and (start is None or e.timestamp >= start)
            and (end is None or e.timestamp < end)
        ]

    # -- HTTP ---------------------------------------------------------------------------

    def is_api_request(self, request: Request) -> bool:
        return request.path == self.settings.path

    def error_body(self, status: int, message: str) -> Response:
        return Response.json(status, {"ok": False, "error": message})

    def handle(self, request: Request) -> Response:
        if request.path != self.settings.path:
            return self.error_body(404, f"no such endpoint: {request.path}")
        if request.method != "POST":
            return self.error_body(405, "use POST")
        if request.headers.get("Authorization") != f"Bearer {self.settings.token}":
            return self.error_body(401, "invalid or missing bearer token")
        try:
            payload = request.json()
        except ValueError:
            return self.error_body(400, "the payload is not JSON")
        if not isinstance(payload, dict):
            return self.error_body(400, "the payload must be a JSON object")
        try:
            query = _Query.from_payload(payload)
        except ValueError as exc:
            return self.error_body(400, str(exc))
        return Response.json(200, self._page(query, payload.get("start_token")))

    def _page(self, query: _Query, token: object) -> dict[str, object]:
        matches = self._matching(query)
        after = ""
        if token not in (None, ""):
            decoded = _decode_token(token, query.fingerprint)
            if decoded is None:
                return {"ok": False, "error": "invalid start_token for this query"}
            after = decoded
        position = bisect.bisect_right(matches, after, key=lambda e: e.id) if after else 0
        page = matches[position : position + self.settings.page_size]
        more = position + len(page) < len(matches)
        if (
            not more
            and self.settings.empty_last_page
            and page
            and len(page) == self.settings.page_size
        ):
            more = True
        body: dict[str, object] = {"ok": True, "items": [self._render(e) for e in page]}
        if more:
            body["next_token"] = _encode_token(query.fingerprint, page[-1].id if page else after)
        else:
            with self._lock:
                self._queries += 1
                style = self._queries % 3
            if style == 1:
                body["next_token"] = None
            elif style == 2:
                body["next_token"] = ""
            # style 0: no next_token key at all
        return body

    def _matching(self, query: _Query) -> list[LuminEvent]:
        with self._lock:
            events, times = self._events, self._times
        low = (bisect.bisect_left if self.settings.start_inclusive else bisect.bisect_right)(
            times, query.start
        )
        high = (bisect.bisect_right if self.settings.end_inclusive else bisect.bisect_left)(
            times, query.end
        )
        selected = [
            e
            for e in events[low:high]
            if (query.types is None or e.type in query.types)
            and (query.host is None or e.host_id == query.host)
        ]
        selected.sort(key=lambda e: e.id)
        return selected

    def _render(self, event: LuminEvent) -> dict[str, object]:
        item = asdict(event)
        item["timestamp"] = event.timestamp_text
        item.update(self.settings.extra_fields)
        naming = self.settings.naming
        if naming == "mixed":
            naming = (
                "datetime"
                if int(hashlib.md5(event.id.encode(), usedforsecurity=False).hexdigest(), 16) % 2
                else "timestamp"
            )
        if naming == "datetime":
            item["datetime"] = item.pop("timestamp")
            item["event_type"] = item.pop("type")
        return item


@dataclass(frozen=True)
class _Query:
    types: frozenset[str] | None  # None: every type
    start: dt.datetime
    end: dt.datetime
    host: str | None

    @property
    def fingerprint(self) -> str:
        types = sorted(self.types) if self.types is not None else "*"
        text = f"{types}|{self.start.isoformat()}|{self.end.isoformat()}|{self.host}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_payload(cls, payload: dict[str, object]) -> _Query:
        kinds = payload.get("type")
        if not isinstance(kinds, str):
            msg = "type is required: one event type, several separated by commas, or '' for all"
            raise ValueError(msg)
        if " " in kinds:
            msg = "type: separate event types with commas and no spaces"
            raise ValueError(msg)
        start = _parse_time(payload.get("start", payload.get("Start")), "start")
        end = _parse_time(payload.get("end"), "end")
        host = payload.get("host")
        if host is not None and not isinstance(host, str):
            msg = "host must be a string"
            raise ValueError(msg)
        return cls(frozenset(kinds.split(",")) if kinds else None, start, end, host)


def _parse_time(value: object, name: str) -> dt.datetime:
    if not isinstance(value, str):
        msg = f"{name} is required (ISO 8601 with an offset)"
        raise ValueError(msg)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        msg = f"{name}: {value!r} is not ISO 8601"
        raise ValueError(msg) from None
    if parsed.tzinfo is None:
        msg = f"{name}: {value!r} has no UTC offset"
        raise ValueError(msg)
    return parsed.astimezone(UTC)


def _encode_token(fingerprint: str, last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([fingerprint, last_id]).encode()).decode()


def _decode_token(token: object, fingerprint: str) -> str | None:
    if not isinstance(token, str):
        return None
    try:
        seen, last_id = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        return None
    return last_id if seen == fingerprint else None
