"""tap-evovoice: settings and streams."""

from __future__ import annotations

from singer_sdk import typing as th

from billing_toolkit import settings as common
from billing_toolkit.tap import BillingTap, ConnectionProbe
from billing_toolkit.timestamps import parse_timestamp
from tap_evovoice.auth import EvoAuth
from tap_evovoice.streams import (
    AIAccountUsageStream,
    AICustomerUsageStream,
    AIUsageStream,
    BillingCustomersStream,
    EvoStream,
    UsageAnswers,
)


class TapEvoVoice(BillingTap):
    """AI-minutes usage per account and per customer from Evo Voice GetAIUsage."""

    name = "tap-evovoice"
    package_name = "voice-billing-taps"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_url",
            th.URIType,
            default="https://evovoice.io",
            title="API URL",
            description="Evo Voice API root. The default is the host the vendor's CLI calls production; every public description of GetAIUsage is on https://team.evovoice.io: if --test says the service is not deployed (404), use that.",
        ),
        th.Property(
            "username",
            th.StringType,
            required=True,
            title="Username",
            description="Evo Voice user with the SystemAdministrator role.",
        ),
        th.Property(
            "password",
            th.StringType,
            required=True,
            secret=True,
            title="Password",
            description="That user's password.",
        ),
        th.Property(
            "auth_method",
            th.StringType,
            default="basic",
            allowed_values=["basic", "credentials"],
            title="Authentication method",
            description="basic: HTTP Basic on every request. credentials: one POST /auth/credentials login (rememberMe) whose cookies (ss-id, ss-pid, ss-opt, ...) are all sent back, as ServiceStack needs; renewed once on a 401.",
        ),
        th.Property(
            "account_ids",
            th.ArrayType(th.StringType),
            title="Account IDs",
            description="Accounts to read, each its own partition and bookmark. Empty: all accounts in one usage query; billing_customers then reads the accounts the usage answers of the same run named.",
        ),
        th.Property(
            "customer_ids",
            th.ArrayType(th.StringType),
            title="Customer IDs",
            description="Customers to keep in ai_customer_usage and billing_customers (filtered from the full answers). Empty: all.",
        ),
        th.Property(
            "granularity",
            th.StringType,
            default="day",
            allowed_values=["day", "month"],
            title="Granularity",
            description="Period of each figure: day, or calendar month (UTC). A month partly inside the range is reported for the part inside.",
        ),
        th.Property(
            "end_date_inclusive",
            th.BooleanType,
            default=True,
            title="API endDate is inclusive",
            description="Whether GetAIUsage counts the endDate day (undocumented; its sibling GetBilling does).",
        ),
        *common.window_properties(window_days=None, lookback_minutes=3 * 24 * 60),
    ).to_dict()

    def discover_streams(self) -> list[EvoStream]:
        auth = EvoAuth(
            api_url=str(self.config["api_url"]),
            username=str(self.config["username"]),
            password=str(self.config["password"]),
            method=str(self.config["auth_method"]),
            timeouts=common.timeouts(
                connect=float(self.config["connect_timeout_seconds"]),
                read=float(self.config["read_timeout_seconds"]),
            ),
            ca_bundle=self.config.get("ca_bundle_path"),
        )
        answers = UsageAnswers(auth)
        usage: list[AIUsageStream] = [AIAccountUsageStream(self), AICustomerUsageStream(self)]
        for stream in usage:
            answers.streams[stream.part] = stream
        # billing_customers comes last: without account_ids it reads the accounts usage named.
        streams: list[EvoStream] = [*usage, BillingCustomersStream(self)]
        for each in streams:
            each.answers = answers
        return streams

    def semantic_config_errors(self) -> list[str]:
        config = self.config
        errors = [
            *common.validate_api_url(config),
            *common.validate_text(config, "username", required=True),
            *common.validate_secret(config, "password"),
            *common.validate_string_list(config, "account_ids"),
            *common.validate_string_list(config, "customer_ids"),
            *common.validate_window_settings(config),
        ]
        username = config.get("username")
        if config["auth_method"] == "basic" and ":" in str(username or ""):
            # RFC 7617: HTTP Basic cannot carry a user-id holding a colon.
            errors.append("username must not contain ':' with auth_method basic")
        for key in ("start_date", "end_date"):
            value = config.get(key)
            if not isinstance(value, str) or not common.ISO_DATE.fullmatch(value):
                continue  # missing, or already reported as not a date
            try:
                moment = parse_timestamp(value) if value else None
            except (ValueError, OverflowError):
                continue  # already reported
            if moment is not None and moment != moment.replace(
                hour=0, minute=0, second=0, microsecond=0
            ):
                errors.append(
                    f"{key} must be a whole day (midnight UTC): GetAIUsage counts whole days, got {common.show(value)}"
                )
        return errors

    def connection_probe(self) -> ConnectionProbe:
        """One request for the last day of the range: checks host, credentials and role."""
        return ConnectionProbe(
            stream="ai_account_usage",
            period="day",
            hints=(
                (
                    "SystemAdministrator",
                    "the user lacks the SystemAdministrator role that GetAIUsage requires",
                ),
                ("may not be deployed", "GetAIUsage is not at this api_url"),
            ),
            refused="Evo Voice refused the username or password",
            missing="no GetAIUsage service at {base}: check api_url",
            passed="accepted the credentials and answered usage figures",
        )


if __name__ == "__main__":
    TapEvoVoice.cli()
