"""``llm_usage_logs``: one record per LLM call of a bot's GenAI features, with its tokens.

``POST /api/1.1/public/bot/{botId}/getLLMUsageLogs`` (Koredotcom/docs
``docs/xo/apis/automation/llm-usage-logs-api.md``) answers a bare JSON array paged by ``skip`` and
``limit``, with no total and no "more" flag, keyed with spaces and mixed case exactly as documented
(``"start Date"``, ``"Feature Name "`` with a trailing space, ``"Payload Details"`` holding
``"Request Tokens"``/``"Response Tokens"``). Keys are turned into snake_case (``Feature Name `` ->
``feature_name``, ``statusCode`` -> ``status_code``); the tokens become integers; the prompt and
completion texts inside ``Payload Details`` are left out (they hold end users' words, and nothing on
a bill needs them), the provider's completion id, model and ``usage`` are kept.

The API gives no id. The primary key ``id`` is the SHA-256 (hex) of the JSON array of the row's
identifying fields, in this order: ``bot_id``, ``start_date`` and ``end_date`` (canonical UTC text),
``user_id``, ``task_id``, ``feature_name``, ``model_name``, ``prompt_name``, ``channel_name``,
``integration``, ``description``, ``provider_response_id`` (null where absent). It is the same on
every rerun, so a target's upsert keeps each call once.

Paging: ``skip`` advances by the rows received. A window ends on an empty page, or on a page shorter
than an earlier page of the same window: a limit the API caps below ``llm_page_size`` is then never
taken for the end (a single short first page costs one more request). The order of the rows is not
documented; under offset paging a call arriving mid-read shifts the pages, so each ``id`` is emitted
once per window and a window whose listing moved is read again.

``dateFrom``/``dateTo`` are sent as days, as in the documented sample: the first day of the window
and the day holding its end (the next day when the window ends inside a day), so that the window is
covered whether the API counts the ``dateTo`` day or stops at its start; rows outside the window are
left to the window they belong to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import typing as t

from singer_sdk import typing as th
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.pagination import BaseAPIPaginator

from billing_toolkit.http import describe_response_failure
from billing_toolkit.stream import ResponseShapeError, WindowPass
from billing_toolkit.timestamps import format_timestamp, parse_timestamp
from tap_kore_billing.streams import KoreStream

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

#: The fields whose values identify one LLM call, hashed (in this order) into ``id``.
IDENTITY = (
    "bot_id",
    "start_date",
    "end_date",
    "user_id",
    "task_id",
    "feature_name",
    "model_name",
    "prompt_name",
    "channel_name",
    "integration",
    "description",
    "provider_response_id",
)
TOKEN_FIELDS = {"Request Tokens": "request_tokens", "Response Tokens": "response_tokens"}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(key: str) -> str:
    """``"Feature Name "`` -> ``feature_name``, ``"statusCode"`` -> ``status_code``."""
    words = _CAMEL.sub(" ", key.strip())
    return "_".join(words.lower().split())


def call_id(record: t.Mapping[str, t.Any]) -> str:
    """The documented primary key of one call: SHA-256 of its identifying fields."""
    identity = [record.get(name) for name in IDENTITY]
    return hashlib.sha256(json.dumps(identity, separators=(",", ":")).encode()).hexdigest()


class ShortPagePaginator(BaseAPIPaginator[int]):
    """``skip`` paging over bare arrays: ends on an empty page, or a page shorter than an earlier one."""

    def __init__(self, stream: LLMUsageLogsStream) -> None:
        super().__init__(0)
        self._stream = stream
        self._longest = 0

    def get_next(self, response: requests.Response) -> int | None:
        rows = len(self._stream.decoded_body(response))
        if rows == 0 or rows < self._longest:
            return None
        self._longest = rows
        return self.current_value + rows


class LLMUsageLogsStream(KoreStream):
    """LLM calls per bot (Bot Builder route; each bot of ``bot_ids`` is its own partition)."""

    name = "llm_usage_logs"
    #: Not part of a run without a catalog (the older streams' runs ask nothing more of the API
    #: after an upgrade); select it in the catalog, or with Meltano's ``select``.
    selected_by_default = False
    primary_keys = ("id",)
    replication_key = "start_date"
    window_field = "start_date"
    http_method = "POST"
    path = "getLLMUsageLogs"  # for metrics; get_url builds each bot's route
    bot_key = "bot_id"
    dedupe_within_window = True
    window_rereads = 2

    schema = th.PropertiesList(
        th.Property(
            "id",
            th.StringType,
            required=True,
            description="SHA-256 of the identifying fields (README)",
        ),
        th.Property("bot_id", th.StringType, required=True, description="Bot ID"),
        th.Property("start_date", th.DateTimeType, required=True, description="start Date, UTC"),
        th.Property("end_date", th.DateTimeType, description="End Date, UTC"),
        th.Property("time_taken", th.IntegerType, description="Time Taken (milliseconds)"),
        th.Property("model_name", th.StringType, description="Model Name"),
        th.Property(
            "feature_name", th.StringType, description="Feature Name (sent with a trailing space)"
        ),
        th.Property("prompt_name", th.StringType, description="Prompt Name"),
        th.Property("integration", th.StringType, description="Integration, e.g. OpenAI"),
        th.Property("channel_name", th.StringType, description="Channel Name"),
        th.Property("user_id", th.StringType, description="User ID"),
        th.Property("task_id", th.StringType, description="task Id"),
        th.Property("description", th.StringType, description="Description"),
        th.Property("status", th.StringType, description="Status, e.g. Success"),
        th.Property("status_code", th.IntegerType, description="statusCode"),
        th.Property(
            "request_tokens", th.IntegerType, description="Payload Details: Request Tokens"
        ),
        th.Property(
            "response_tokens", th.IntegerType, description="Payload Details: Response Tokens"
        ),
        th.Property(
            "provider_response_id",
            th.StringType,
            description="The LLM provider's id of the completion (Payload Details: Response Payload.id)",
        ),
        th.Property("provider_model", th.StringType, description="Response Payload.model"),
        th.Property(
            "provider_usage",
            th.ObjectType(additional_properties=True),
            description="The provider's own usage figures (Response Payload.usage)",
        ),
    ).to_dict()

    @property
    def partitions(self) -> list[dict[str, str]]:
        bots = self.bot_ids
        if not bots:
            msg = (
                "llm_usage_logs reads one bot at a time (POST /api/1.1/public/bot/{botId}/"
                "getLLMUsageLogs): set bot_ids, or deselect the stream"
            )
            raise FatalAPIError(msg)
        return [{"bot_id": b} for b in bots]

    @property
    def page_size(self) -> int:
        return int(self.config["llm_page_size"])

    def get_url(self, context: Context | None) -> str:
        bot = (context or {}).get("bot_id")
        return f"{self.url_base}/api/1.1/public/bot/{bot}/getLLMUsageLogs"

    def new_paginator(self, p: WindowPass) -> ShortPagePaginator:
        return ShortPagePaginator(self)

    def request_body(self, p: WindowPass, token: t.Any) -> dict[str, t.Any]:
        window = p.window
        last = window.end.date()
        if window.end != dt.datetime.combine(last, dt.time(), window.end.tzinfo):
            last += dt.timedelta(days=1)  # the window ends inside that day
        return {
            "dateFrom": window.start.date().isoformat(),
            "dateTo": last.isoformat(),
            # As in the documented sample, limit and skip travel as text.
            "limit": str(self.page_size),
            "skip": str(int(token or 0)),
            "isDeveloper": bool(self.config["llm_include_developer_usage"]),
        }

    def validate_body(self, body: t.Any, response: requests.Response) -> None:
        if not isinstance(body, list):
            msg = "the answer is not a JSON array of usage rows"
            raise ResponseShapeError(describe_response_failure(response, msg))

    def parse_page(
        self, response: requests.Response, p: WindowPass
    ) -> t.Iterable[dict[str, t.Any]]:
        for row in self.decoded_body(response):
            yield self._call(row, response)

    def _call(self, row: t.Any, response: requests.Response) -> dict[str, t.Any]:
        if not isinstance(row, dict):
            msg = f"a usage row that is not an object: {row!r}"
            raise ResponseShapeError(describe_response_failure(response, msg))
        record: dict[str, t.Any] = {}
        details: t.Any = None
        for key, value in row.items():
            if key.strip().lower() == "payload details":
                details = value
            else:
                record[snake_case(key)] = value
        try:
            for field in ("start_date", "end_date"):
                if record.get(field) is not None:
                    record[field] = format_timestamp(parse_timestamp(str(record[field])))
        except ValueError as exc:
            msg = f"a usage row whose {field} is not a timestamp ({exc})"
            raise ResponseShapeError(describe_response_failure(response, msg)) from None
        if isinstance(details, dict):
            record.update(_payload_fields(details, response))
        for field in ("time_taken", "status_code"):
            if field in record:
                record[field] = _whole(record[field], field, response)
        record.setdefault("provider_response_id", None)
        record["id"] = call_id(record)
        return record


def _payload_fields(details: dict[str, t.Any], response: requests.Response) -> dict[str, t.Any]:
    """What ``Payload Details`` holds for a bill: the tokens and the provider's id, model and usage
    (never the prompt or the completion)."""
    fields: dict[str, t.Any] = {}
    for key, value in details.items():
        name = TOKEN_FIELDS.get(key.strip())
        if name:
            fields[name] = _whole(value, key, response)
    provider = details.get("Response Payload")
    if isinstance(provider, dict):
        fields["provider_response_id"] = provider.get("id")
        fields["provider_model"] = provider.get("model")
        if isinstance(provider.get("usage"), dict):
            fields["provider_usage"] = provider["usage"]
    return fields


def _whole(value: t.Any, name: str, response: requests.Response) -> int | None:
    """A count as an integer: a whole number, or digits as text (the sample's limit is text too)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    msg = f"{name.strip()} is not a whole number: {value!r}"
    raise ResponseShapeError(describe_response_failure(response, msg))
