"""tap-luminai: settings and streams."""

from __future__ import annotations

import datetime as dt

from singer_sdk import typing as th

from billing_toolkit import settings as common
from billing_toolkit.tap import BillingTap, ConnectionProbe
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

    def connection_probe(self) -> ConnectionProbe:
        """One request for the last second of the range: checks URL, token and response shape."""
        return ConnectionProbe(
            stream="billing_events",
            span=dt.timedelta(seconds=1),
            refused="the API refused the token: check the `token` setting",
            missing="no Billing API at {base}: check the `api_url` setting",
            passed="accepted the token and answered a billing page",
        )


if __name__ == "__main__":
    TapLuminai.cli()
