"""The bare-loop baseline: the same pages as the tap, read with requests + json, nothing else.

    python -m bench.bare_loop luminai|kore|evovoice --config CONFIG.json

It reads the tap's own config file and asks exactly the requests the tap asks (same windows, the
same boundary second before each window, the same paging and page size, the same auth scheme), and
writes one Singer RECORD line per item to stdout. No schema, no state, no type conformance, no
timestamp normalisation, no filtering: it is the floor a hand-written extractor reaches, so the
tap's throughput is reported as a ratio of it.

It imports nothing from this project (and not singer-sdk), so that its start-up is that of a
small script. The window arithmetic below mirrors billing_toolkit.windows and the taps' request
builders; the harness checks that both ask the same pages (see bench.runner).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import sys
import time
import typing as t
import uuid

import requests

UTC = dt.timezone.utc
#: Each tap asks from one second before its window (see tap_luminai / tap_kore_billing streams).
BOUNDARY_GUARD = dt.timedelta(seconds=1)
KORE_WINDOW_DAYS = 89
LUMIN_WINDOW_DAYS = 7
TIMEOUT = (10, 60)

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _parse(value: str) -> dt.datetime:
    """ISO 8601 (date or date-time, naive read as UTC) to an aware UTC datetime."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def windows(start: dt.datetime, end: dt.datetime, size: dt.timedelta) -> list[tuple]:
    """Consecutive half-open windows of ``size`` over ``[start, end)``, as the taps plan them."""
    out, cursor = [], start
    while cursor < end:
        upper = min(cursor + size, end)
        out.append((cursor, upper))
        cursor = upper
    return out


def _lumin_time(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _kore_time(moment: dt.datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def kore_jwt(client_id: str, client_secret: str) -> str:
    """A fresh HS256 JWT per request, as the tap mints them (claims appId, sub, iat, exp, jti)."""
    now = int(time.time())
    claims = {"appId": client_id, "sub": "bare-loop", "iat": now, "exp": now + 300}
    claims["jti"] = uuid.uuid4().hex
    signing = (
        f"{_b64(_dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(_dumps(claims).encode())}"
    )
    signature = hmac.new(client_secret.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(signature)}"


def _emit(write: t.Callable[[str], t.Any], stream: str, items: t.Iterable[t.Any]) -> None:
    for item in items:
        write(_dumps({"type": "RECORD", "stream": stream, "record": item}) + "\n")


def luminai(config: dict, session: requests.Session, write: t.Callable[[str], t.Any]) -> None:
    """POST each window with all event types in one query; follow ``next_token``."""
    url = config["api_url"]
    session.headers["Authorization"] = f"Bearer {config['token']}"
    types = ",".join(sorted(set(config.get("event_types") or ["billing.scheduled"])))
    size = dt.timedelta(days=float(config.get("window_size_days", LUMIN_WINDOW_DAYS)))
    for low, high in windows(_parse(config["start_date"]), _parse(config["end_date"]), size):
        payload = {
            "type": types,
            "start": _lumin_time(low - BOUNDARY_GUARD),
            "end": _lumin_time(high),
        }
        while True:
            body = session.post(url, json=payload, timeout=TIMEOUT).json()
            _emit(write, "billing_events", body["items"])
            token = body.get("next_token")
            if not token:
                break
            payload["start_token"] = token


def kore(config: dict, session: requests.Session, write: t.Callable[[str], t.Any]) -> None:
    """Per bot, POST each window with ``skip``/``limit`` paging while ``moreAvailable``."""
    base = config["api_url"].rstrip("/")
    limit = int(config.get("page_size", 100))
    size = dt.timedelta(days=float(config.get("window_size_days", KORE_WINDOW_DAYS)))
    spans = windows(_parse(config["start_date"]), _parse(config["end_date"]), size)
    for bot in dict.fromkeys(config["bot_ids"]):
        url = f"{base}/api/public/bot/{bot}/getBillingSessionsDetails"
        for low, high in spans:
            skip = 0
            while True:
                payload = {
                    "fromDate": _kore_time(low - BOUNDARY_GUARD),
                    "toDate": _kore_time(high),
                    "skip": skip,
                    "limit": limit,
                }
                headers = {"auth": kore_jwt(config["client_id"], config["client_secret"])}
                body = session.post(url, json=payload, headers=headers, timeout=TIMEOUT).json()
                sessions = body["sessions"]
                _emit(write, "billing_sessions", sessions)
                skip += len(sessions)
                if body.get("moreAvailable") is not True or not sessions:
                    break  # total is not read: it may count the page only


def evovoice(config: dict, session: requests.Session, write: t.Callable[[str], t.Any]) -> None:
    """GET one day at a time (endDate inclusive); both lists of each answer, keyed by the day."""
    url = config["api_url"].rstrip("/") + "/ai/usage"
    session.auth = (config["username"], config["password"])
    session.headers["Accept"] = "application/json"
    day, end = _parse(config["start_date"]).date(), _parse(config["end_date"]).date()
    while day < end:
        text = day.isoformat()
        params = {"startDate": text, "endDate": text}
        body = session.get(url, params=params, timeout=TIMEOUT).json()
        period = {"startDate": text, "endDate": text}
        # An absent or null list is a period without usage.
        _emit(
            write, "ai_account_usage", ({**row, **period} for row in body.get("accountUsage") or [])
        )
        _emit(
            write,
            "ai_customer_usage",
            ({**row, **period} for row in body.get("customerUsage") or []),
        )
        day += dt.timedelta(days=1)


READERS = {"luminai": luminai, "kore": kore, "evovoice": evovoice}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("api", choices=sorted(READERS))
    parser.add_argument("--config", required=True, help="the tap's config file")
    args = parser.parse_args(argv)
    with open(args.config) as handle:
        config = json.load(handle)
    with requests.Session() as session:
        READERS[args.api](config, session, sys.stdout.write)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
