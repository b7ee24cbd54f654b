"""tap-kore-billing: settings and streams."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from singer_sdk import typing as th

from billing_toolkit import settings as common
from billing_toolkit.tap import BillingTap, ConnectionCheckError, explain_connection_failure
from billing_toolkit.windows import DateWindow
from tap_kore_billing.streams import MAX_WINDOW_DAYS, BillingSessionsStream

DEFAULT_ADMIN_PATH = "/api/public/bots/getBillingSessionsDetails"


class TapKoreBilling(BillingTap):
    """Billing sessions from the Kore.ai Billing Sessions API."""

    name = "tap-kore-billing"
    package_name = "voice-billing-taps"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_url",
            th.URIType,
            default="https://platform.kore.ai",
            title="API URL",
            description="Kore.ai platform host, e.g. https://platform.kore.ai (older: https://bots.kore.ai).",
        ),
        th.Property(
            "client_id",
            th.StringType,
            title="Client ID",
            description="Client ID of the Kore.ai app; the tap mints an HS256 JWT (claim appId) per request. Use with client_secret, or set jwt instead.",
        ),
        th.Property(
            "client_secret",
            th.StringType,
            secret=True,
            title="Client secret",
            description="Client secret of the Kore.ai app, used only to sign the JWT.",
        ),
        th.Property(
            "jwt",
            th.StringType,
            secret=True,
            title="JWT",
            description="A ready JWT for the auth header, instead of client_id and client_secret.",
        ),
        th.Property(
            "bot_ids",
            th.ArrayType(th.StringType),
            title="Bot IDs",
            description="Bot (stream) ids: each is read on the Bot Builder path with its own bookmark. Empty: the Admin path, all bots of the account.",
        ),
        th.Property(
            "admin_path",
            th.StringType,
            default=DEFAULT_ADMIN_PATH,
            title="Admin API path",
            description="Route of the Admin-scope API (the docs also name /api/public/getBillingSessionsDetails).",
        ),
        th.Property(
            "channels",
            th.ArrayType(th.StringType),
            title="Channels",
            description="Channel codes to read, each queried on its own with its own bookmark. Empty: all channels.",
        ),
        th.Property(
            "timezone",
            th.StringType,
            default="UTC",
            title="Time zone",
            description="IANA zone in which the API's zone-less timestamps are read, e.g. America/New_York.",
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            default=100,
            title="Page size",
            description="Sessions asked for per request (limit).",
        ),
        th.Property(
            "max_requests_per_minute",
            th.IntegerType,
            default=50,
            title="Throttle: requests per minute",
            description="Client-side cap per bot (or per account on the Admin path); the API allows 60.",
        ),
        th.Property(
            "max_requests_per_hour",
            th.IntegerType,
            default=1500,
            title="Throttle: requests per hour",
            description="Client-side cap per bot (or per account on the Admin path); the API allows 1800.",
        ),
        *common.window_properties(window_days=MAX_WINDOW_DAYS, lookback_minutes=1440),
    ).to_dict()

    def discover_streams(self) -> list[BillingSessionsStream]:
        return [BillingSessionsStream(self)]

    def semantic_config_errors(self) -> list[str]:
        config = self.config
        errors = [
            *common.validate_api_url(config),
            *common.validate_text(config, "client_id"),
            *common.validate_secret(config, "client_secret"),
            *common.validate_secret(config, "jwt"),
            *common.validate_string_list(config, "bot_ids", forbid="/ "),
            *common.validate_string_list(config, "channels"),
            *common.validate_window_settings(config, max_window_days=MAX_WINDOW_DAYS),
        ]
        has_pair = bool(config.get("client_id")) or bool(config.get("client_secret"))
        if config.get("jwt") and has_pair:
            errors.append("set either jwt or client_id + client_secret, not both")
        elif not config.get("jwt") and not (
            config.get("client_id") and config.get("client_secret")
        ):
            errors.append("credentials missing: set client_id and client_secret (or jwt)")
        zone = config.get("timezone", "UTC")
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Etc", a too-long name
            errors.append(
                f"timezone {common.show(zone)} is not an IANA time zone name such as America/New_York"
            )
        path = config.get("admin_path", DEFAULT_ADMIN_PATH)
        if not isinstance(path, str) or not path.startswith("/"):
            errors.append(f"admin_path must be a path starting with '/', got {common.show(path)}")
        elif common.has_control(path) or any(ch.isspace() or ch in "?#" for ch in path):
            errors.append(
                f"admin_path must be a plain path (no white space, control characters, ? or #), got {common.show(path)}"
            )
        for key, low, high in (
            ("page_size", 1, 10_000),
            ("max_requests_per_minute", 1, 60),
            ("max_requests_per_hour", 1, 1800),
        ):
            value = config.get(key)
            if value is not None and (not isinstance(value, int) or not low <= value <= high):
                errors.append(
                    f"{key} must be a whole number from {low} to {high}, got {common.show(value)}"
                )
        return errors

    def check_connection(self) -> str:
        """One request for the last second of the range: checks host, credentials and scope."""
        stream = BillingSessionsStream(self)
        end = stream.window_settings.end
        window = DateWindow(end - dt.timedelta(seconds=1), end)
        partition = stream.partitions[0] if stream.partitions else None
        try:
            stream.probe(partition, window)
        except Exception as exc:
            url = stream.get_url(partition)
            raise ConnectionCheckError(
                explain_connection_failure(
                    exc,
                    url,
                    refused=(
                        "Kore.ai refused the request: either the credentials are wrong (client_id, "
                        "client_secret or jwt), or the app lacks the Billing Sessions API scope (Bot "
                        "Builder scope for bot_ids, Admin scope under Bot Analytics otherwise) or the "
                        "bot was not published with it"
                    ),
                    missing=f"no Billing Sessions API at {url}: check api_url, bot_ids or admin_path",
                )
            ) from exc
        return f"POST {stream.get_url(partition)} accepted the credentials and answered a page"


if __name__ == "__main__":
    TapKoreBilling.cli()
