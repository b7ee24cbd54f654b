"""The one stream of tap-luminai: billable events."""

from __future__ import annotations

import typing as t
from datetime import timedelta
from functools import cached_property

from singer_sdk import typing as th
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from billing_toolkit.http import describe_response_failure
from billing_toolkit.stream import (
    BodyTokenPaginator,
    ResponseShapeError,
    WindowedRESTStream,
    WindowPass,
)
from billing_toolkit.timestamps import format_timestamp, normalize_timestamp

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context


#: The API's range semantics are undocumented. Each request starts this much before its window and
#: the tap keeps only items inside ``[window start, window end)``: exact whether the API's start and
#: end are inclusive or exclusive, and no item is ever emitted by two windows.
BOUNDARY_GUARD = timedelta(seconds=1)

#: The bookmark key of "every event type" (``event_types: []``), asked for with ``type: ""`` as the
#: only public client does (Bruin-Dev/Intelygenz, ``LuminBillingTypes.ALL = ""``).
ALL_TYPES = "*"
#: The default types, as the seed advises for simple pricing.
DEFAULT_TYPES = ("billing.scheduled",)

#: The two field namings of the seed: the sample response's, and the field list's.
ALIASES = {"datetime": "timestamp", "event_type": "type"}


class BillingEventsStream(WindowedRESTStream):
    """Billable events (appointments scheduled, rescheduled, ...), one record per event id."""

    name = "billing_events"
    primary_keys = ("id",)
    replication_key = "timestamp"
    window_field = "timestamp"
    http_method = "POST"
    path = ""

    schema = th.PropertiesList(
        th.Property("id", th.StringType, required=True, description="Billing record id (unique)"),
        th.Property("conversation_id", th.StringType, description="Conversation that generated it"),
        th.Property("timestamp", th.DateTimeType, required=True, description="Event time, UTC"),
        th.Property("type", th.StringType, description="Event type, e.g. billing.scheduled"),
        th.Property("host_id", th.StringType, description="Host (appointment-making entity)"),
        th.Property("host_did", th.StringType, description="Host DID, digits only"),
        th.Property(
            "user_did", th.StringType, description="End-user DID, digits only; may be empty"
        ),
        th.Property("fake", th.StringType, description="Real or test event marker, e.g. 'real'"),
    ).to_dict()

    @property
    def url_base(self) -> str:
        return str(self.config["api_url"])

    @cached_property
    def authenticator(self) -> BearerTokenAuthenticator:
        return BearerTokenAuthenticator(token=self.config["token"])

    @property
    def partitions(self) -> list[dict[str, str]] | None:
        hosts = self.config.get("hosts") or []
        return [{"host_id": host} for host in dict.fromkeys(hosts)] or None

    def query_keys(self, partition: Context | None) -> list[str]:
        """The event types, each with its own bookmark; ``[]`` is one key: every type."""
        types = self.config.get("event_types")
        if types is None:
            types = DEFAULT_TYPES
        return sorted(set(types)) or [ALL_TYPES]

    def new_paginator(self, p: WindowPass) -> BodyTokenPaginator:
        return BodyTokenPaginator(lambda response: self.decoded_body(response).get("next_token"))

    def request_body(self, p: WindowPass, token: t.Any) -> dict[str, t.Any]:
        payload: dict[str, t.Any] = {
            "type": "" if p.keys == (ALL_TYPES,) else ",".join(p.keys),
            "start": format_timestamp(p.window.start - BOUNDARY_GUARD),
            "end": p.window.end_text,
        }
        if p.part("host_id"):
            payload["host"] = p.part("host_id")
        if token:
            payload["start_token"] = token
        return payload

    def validate_body(self, body: t.Any, response: requests.Response) -> None:
        if not isinstance(body, dict):
            raise ResponseShapeError(
                describe_response_failure(response, "the response is not a JSON object")
            )
        if body.get("ok") is not True:
            raise FatalAPIError(describe_response_failure(response, "the API answered ok=false"))
        items = body.get("items")
        if items is None:
            # A success without its list is a degraded answer: ask again rather than take it as
            # an empty page and move the bookmark past events it did not show.
            msg = describe_response_failure(response, "ok=true but no 'items' list")
            raise RetriableAPIError(msg, response)
        if not isinstance(items, list):
            raise ResponseShapeError(describe_response_failure(response, "'items' is not a list"))

    def parse_page(
        self, response: requests.Response, p: WindowPass
    ) -> t.Iterable[dict[str, t.Any]]:
        for item in self.decoded_body(response).get("items") or []:
            yield self._event(item, response)

    def _event(self, item: t.Any, response: requests.Response) -> dict[str, t.Any]:
        if not isinstance(item, dict):
            raise ResponseShapeError(
                describe_response_failure(response, f"an item is not an object: {item!r}")
            )
        record: dict[str, t.Any] = item  # a fresh dict from this page's JSON: renamed in place
        if "datetime" in item or "event_type" in item:
            record = {ALIASES.get(key) or key: value for key, value in item.items()}
        if not record.get("id") or not isinstance(record["id"], str):
            raise ResponseShapeError(
                describe_response_failure(response, f"an item has no id: {item!r}")
            )
        stamp = record.get("timestamp")
        try:
            record["timestamp"] = normalize_timestamp(str(stamp) if stamp is not None else "")
        except (TypeError, ValueError):
            msg = f"item {record['id']} has no valid timestamp/datetime ({stamp!r})"
            raise ResponseShapeError(describe_response_failure(response, msg)) from None
        return record
