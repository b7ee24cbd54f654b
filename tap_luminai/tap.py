"""tap-luminai: settings and streams."""

from __future__ import annotations

import datetime as dt

from singer_sdk import typing as th

from billing_toolkit import settings as common
from billing_toolkit.tap import BillingTap, ConnectionCheckError, explain_connection_failure
from billing_toolkit.windows import DateWindow
from tap_luminai.streams import ALL_TYPES, BillingEventsStream


class TapLuminai(BillingTap):
    """Billable events from the Lumin.ai Billing API."""

    name = "tap-luminai"
    package_name = "voice-billing-taps"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_url",
            th.URIType,
            required=True,
            title="API URL",
            description="The customer-specific Billing API endpoint supplied by Lumin.ai; POSTed to as is.",
        ),
        th.Property(
            "token",
            th.StringType,
            required=True,
            secret=True,
            title="Bearer token",
            description="The customer-specific bearer token supplied by Lumin.ai.",
        ),
        th.Property(
            "event_types",
            th.ArrayType(th.StringType),
            default=["billing.scheduled"],
            title="Event types",
            description=(
                "Billable event types to extract, e.g. billing.scheduled, billing.rescheduled, "
                "billing.delete; each has its own bookmark, so a type added later is extracted from "
                'start_date. [] (an empty list): every type, sent as type "" as the public client '
                "does, with its own bookmark."
            ),
        ),
        th.Property(
            "hosts",
            th.ArrayType(th.StringType),
            title="Hosts",
            description=(
                "Host ids to extract (filters on host_id), each with its own bookmark. "
                "Empty: all hosts in one query."
            ),
        ),
        *common.window_properties(window_days=7, lookback_minutes=60),
    ).to_dict()

    def discover_streams(self) -> list[BillingEventsStream]:
        return [BillingEventsStream(self)]

    def semantic_config_errors(self) -> list[str]:
        config = self.config
        return [
            *common.validate_api_url(config),
            *common.validate_secret(config, "token"),
            *common.validate_string_list(config, "event_types", forbid=", "),
            *(
                [f"event_types: {ALL_TYPES!r} is not an event type; use [] for every type"]
                if any(ALL_TYPES in str(item) for item in config.get("event_types") or [])
                else []
            ),
            *common.validate_string_list(config, "hosts"),
            *common.validate_window_settings(config),
        ]

    def check_connection(self) -> str:
        """One request for the last second of the range: checks URL, token and response shape."""
        stream = BillingEventsStream(self)
        end = stream.window_settings.end
        window = DateWindow(end - dt.timedelta(seconds=1), end)
        keys = tuple(stream.query_keys(None))
        partition = stream.partitions[0] if stream.partitions else None
        try:
            stream.probe(partition, window, keys)
        except Exception as exc:
            url = str(self.config["api_url"])
            raise ConnectionCheckError(
                explain_connection_failure(
                    exc,
                    url,
                    refused="the API refused the token: check the `token` setting",
                    missing=f"no Billing API at {url}: check the `api_url` setting",
                )
            ) from exc
        return f"POST {self.config['api_url']} accepted the token and answered a billing page"


if __name__ == "__main__":
    TapLuminai.cli()
