"""tap-kore-billing: settings and streams."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from singer_sdk import typing as th

from billing_toolkit import settings as common
from billing_toolkit.tap import BillingTap, ConnectionProbe
from tap_kore_billing.llm_usage import LLMUsageLogsStream
from tap_kore_billing.streams import (
    MAX_WINDOW_DAYS,
    BillingSessionsStream,
    KoreStream,
    budget_of,
    scope_of,
)
from tap_kore_billing.usage_summary import GROUP_BY_PERIOD, BillingUsageSummaryStream

DEFAULT_ADMIN_PATH = "/api/public/bots/getBillingSessionsDetails"
DEFAULT_SUMMARY_ADMIN_PATH = "/api/public/bots/billingsessionsummary"
SCOPES = ("bot", "admin")
#: What a refused request (401/403) usually means under each scope.
REFUSED = {
    "bot": (
        "Kore.ai refused the request under scope bot. That usually means the app lacks the Bot "
        "Builder API scope Billing Sessions for this bot (newer platform: App Settings > Dev Tools "
        "> API Scopes > Automation Billing Sessions), the bot was not published after the scope "
        "was added, or the credentials (client_id and client_secret, or jwt) are wrong"
    ),
    "admin": (
        "Kore.ai refused the request under scope admin. That usually means the app is not a Bot "
        "Admin Console app holding the Admin API scope Billing Sessions under Bot Analytics "
        "(newer platform: Security > API Scopes > BotAnalytics > Billing Sessions), or the "
        "credentials (client_id and client_secret, or jwt) are wrong. An app created in a bot's "
        "own settings holds the Bot Builder scope: set scope bot and bot_ids"
    ),
}


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
            "scope",
            th.StringType,
            allowed_values=list(SCOPES),
            title="API scope",
            description="Which API scope the app holds. bot: the Bot Builder route, one bot of bot_ids per request series (needs bot_ids). admin: the Admin route; each bot of bot_ids is sent as botId in the body, or every bot of the account when bot_ids is empty. Default: bot when bot_ids is set, admin otherwise.",
        ),
        th.Property(
            "bot_ids",
            th.ArrayType(th.StringType),
            title="Bot IDs",
            description="Bot (stream) ids to read, each its own partition with its own bookmark (under either scope). Empty: every bot of the account, on the Admin route.",
        ),
        th.Property(
            "admin_path",
            th.StringType,
            default=DEFAULT_ADMIN_PATH,
            title="Admin API path",
            description="Route of the Admin-scope API: the docs' samples use /api/public/bots/getBillingSessionsDetails, their table /api/public/getBillingSessionsDetails.",
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
            description="IANA zone in which the API's zone-less timestamps (03-10-2021 2:05:03 pm) are read, e.g. America/New_York. The API does not document its zone: --test shows the newest session of the last day, raw and read in this zone, to hold against the Kore.ai dashboard.",
        ),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1, maximum=10_000),
            default=100,
            title="Page size",
            description="Sessions asked for per request (limit); no maximum is documented. An older API that answers without moreAvailable does not page: a window whose answer holds page_size sessions is then split, so set page_size to that API's cap.",
        ),
        th.Property(
            "max_requests_per_minute",
            th.IntegerType(minimum=1, maximum=60),
            default=50,
            title="Throttle: requests per minute",
            description="Client-side cap per bot (or per account on the Admin path); the API allows 60.",
        ),
        th.Property(
            "max_requests_per_hour",
            th.IntegerType(minimum=1, maximum=1800),
            default=1500,
            title="Throttle: requests per hour",
            description="Client-side cap per bot (or per account on the Admin path); the API allows 1800.",
        ),
        th.Property(
            "summary_granularity",
            th.StringType,
            default="day",
            allowed_values=list(GROUP_BY_PERIOD),
            title="Usage summary: period",
            description="Bucket of the billing_usage_summary stream (the API's groupByPeriod): hour, day or month, in UTC.",
        ),
        th.Property(
            "summary_job_max_wait_seconds",
            th.IntegerType(minimum=1, maximum=86_400),
            default=600,
            title="Usage summary: longest wait for a job",
            description="How long one usage summary job may stay in progress before the run fails, naming this setting.",
        ),
        th.Property(
            "summary_job_attempts",
            th.IntegerType(minimum=1, maximum=10),
            default=3,
            title="Usage summary: jobs per window",
            description="How many times a window's job is started when one fails, vanishes or is replaced by another client's job on the same route.",
        ),
        th.Property(
            "summary_poll_milliseconds",
            th.IntegerType(minimum=1, maximum=30_000),
            default=2000,
            title="Usage summary: first poll pause",
            description="Pause before the first status poll of a job, in milliseconds; each later pause doubles, up to 30 s.",
        ),
        th.Property(
            "summary_admin_path",
            th.StringType,
            default=DEFAULT_SUMMARY_ADMIN_PATH,
            title="Usage summary: Admin API path",
            description="Route of the Admin-scope usage summary job: the docs' samples use /api/public/bots/billingsessionsummary, their table /api/public/billingsessionsummary (the status route adds /status).",
        ),
        th.Property(
            "llm_page_size",
            th.IntegerType(minimum=1, maximum=10_000),
            default=100,
            title="LLM usage logs: page size",
            description="Rows asked for per request of the llm_usage_logs stream (limit).",
        ),
        th.Property(
            "llm_include_developer_usage",
            th.BooleanType,
            default=False,
            title="LLM usage logs: developer usage",
            description="Whether llm_usage_logs includes the developers' own test calls (the API's isDeveloper).",
        ),
        *common.window_properties(window_days=MAX_WINDOW_DAYS, lookback_minutes=1440),
    ).to_dict()

    def discover_streams(self) -> list[KoreStream]:
        # One rate budget per bot (or per account on the Admin routes) for every stream of the run.
        budget = budget_of(self.config)
        return [
            BillingSessionsStream(self, rate_limiter=budget),
            BillingUsageSummaryStream(self, rate_limiter=budget),
            LLMUsageLogsStream(self, rate_limiter=budget),
        ]

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
        zone = config["timezone"]
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Etc", a too-long name
            errors.append(
                f"timezone {common.show(zone)} is not an IANA time zone name such as America/New_York"
            )
        if scope_of(config) == "bot" and not config.get("bot_ids"):
            errors.append(
                "scope bot needs bot_ids: the Bot Builder route is per bot; list the bots, or set "
                "scope admin to read every bot of the account"
            )
        for key in ("admin_path", "summary_admin_path"):
            errors += _path_errors(key, config[key])
        return errors

    def connection_probe(self) -> ConnectionProbe:
        """One request for the last day of the range: checks host, credentials and scope, and
        shows the newest session's raw times beside their UTC reading under ``timezone``."""
        return ConnectionProbe(
            stream="billing_sessions",
            refused=REFUSED[scope_of(self.config)],
            missing="no Billing Sessions API at {url}: check api_url, scope, bot_ids or admin_path",
            passed="accepted the credentials and answered a page",
        )


def _path_errors(key: str, path: object) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        return [f"{key} must be a path starting with '/', got {common.show(path)}"]
    if common.has_control(path) or any(ch.isspace() or ch in "?#" for ch in path):
        return [
            f"{key} must be a plain path (no white space, control characters, ? or #), got {common.show(path)}"
        ]
    return []


if __name__ == "__main__":
    TapKoreBilling.cli()
