"""Fault injection, chosen per server instance.

A :class:`FaultRule` names a fault kind and which requests get it: by request number (1-based,
counting every API request the server receives, retries included), ``repeat`` consecutive times
from each of those, or at random with a seeded ``rate``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

#: Every fault kind the sandbox can inject.
FAULT_KINDS = (
    "429",  # Too Many Requests with Retry-After in seconds
    "429-date",  # Too Many Requests with Retry-After as an HTTP-date
    "500",
    "502",
    "503",
    "stall",  # no answer until the client gives up (past its read timeout)
    "drop",  # the connection is closed without an answer
    "truncate",  # a 200 whose JSON body is cut short (its Content-Length matches the cut body)
    "not-ok",  # a 200 with {"ok": false, ...}
    "401",
    "redirect",  # 307 (FaultPlan.redirect_status) to FaultPlan.redirect_to + the request's path
)
RETRIABLE_KINDS = frozenset({"429", "429-date", "500", "502", "503", "stall", "drop", "truncate"})
FATAL_KINDS = frozenset({"not-ok", "401"})


@dataclass
class FaultRule:
    kind: str
    at: tuple[int, ...] = ()
    repeat: int = 1
    rate: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            msg = f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}"
            raise ValueError(msg)

    def hits(self, number: int, rng: random.Random) -> bool:
        if any(start <= number < start + self.repeat for start in self.at):
            return True
        return self.rate > 0 and rng.random() < self.rate

    @classmethod
    def parse(cls, text: str) -> FaultRule:
        """``KIND[@N[,N...]][xREPEAT][~RATE]``, e.g. ``503@2x3``, ``drop~0.01``, ``429-date@1``."""
        kind, rate, repeat = text, 0.0, 1
        at: tuple[int, ...] = ()
        if "~" in kind:
            kind, rate_text = kind.split("~", 1)
            rate = float(rate_text)
        if "x" in kind.rsplit("@", 1)[-1] and "@" in kind:
            kind, repeat_text = kind.rsplit("x", 1)
            repeat = int(repeat_text)
        if "@" in kind:
            kind, at_text = kind.split("@", 1)
            at = tuple(int(n) for n in at_text.split(","))
        return cls(kind=kind, at=at, repeat=repeat, rate=rate)


@dataclass
class FaultPlan:
    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0
    retry_after_seconds: int = 1
    stall_seconds: float = 30.0
    #: Where the "redirect" fault points: a base URL (scheme://host:port, an optional path prefix)
    #: to which the request's own path and query are appended. None: this same server, same path
    #: (a same-origin redirect).
    redirect_to: str | None = None
    redirect_status: int = 307
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    injected: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def choose(self, number: int) -> str | None:
        """The fault for request ``number``, if any (the first matching rule wins)."""
        with self._lock:
            for rule in self.rules:
                if rule.hits(number, self._rng):
                    self.injected[rule.kind] = self.injected.get(rule.kind, 0) + 1
                    return rule.kind
        return None
