"""The "Quota use per account and endpoint" row (one token bucket per account, product, action and endpoint:
requests against the rate limits, throttling) and the "Tencent Cloud API" row (errors, error ratio,
latency).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import table, timeseries
from grafana_foundation_sdk.builders.common import TableSortByFieldState
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from .common import API, BUCKET, prom_query, thresholds
from .panels import DASHED, DOTTED, table_panel, timeseries_panel, unit_override
from .queries import (
    BUCKET_LEGEND,
    CURRENT_RATE_LIMIT,
    ERRORS,
    RATE_LIMIT,
    REQUESTS,
    THROTTLED,
    api_rate,
    bucket_utilisation,
    latency_quantile,
    zero_when_absent,
)


def api_errors_panel() -> timeseries.Panel:
    return (
        timeseries_panel(
            "API errors by code",
            "Failed API calls per second by account, API and error code (Tencent Cloud codes, or Transport.* "
            "for network, HTTP and malformed-response failures).",
            "reqps",
        )
        .with_target(
            prom_query(
                api_rate(ERRORS, by=f"{API}, code"),
                "A",
                "{{account}} {{product}} {{action}} {{code}}",
            )
        )
        .min(0)
        .span(8)
    )


def api_error_ratio_panel() -> timeseries.Panel:
    return (
        timeseries_panel(
            "API error ratio",
            "Share of API calls that failed, per account, API and endpoint (all error codes, including "
            "unknown task IDs).",
            "percentunit",
        )
        .with_target(
            prom_query(
                f"(\n{zero_when_absent(api_rate(ERRORS, BUCKET), BUCKET)}\n)\n/ {api_rate(REQUESTS, BUCKET)}",
                "A",
                BUCKET_LEGEND,
            )
        )
        .min(0)
        .max(1)
        .span(8)
    )


def latency_panel() -> timeseries.Panel:
    panel = timeseries_panel(
        "API latency",
        "Duration of API calls: median, 90th and 99th percentile per API and endpoint.",
        "s",
    )
    for ref_id, q in (("A", 0.5), ("B", 0.9), ("C", 0.99)):
        legend = f"{{{{product}}}} {{{{action}}}} {{{{api_endpoint}}}} p{round(q * 100)}"
        panel = panel.with_target(prom_query(latency_quantile(q), ref_id, legend))
    return panel.min(0).span(8)


# --- quota use: one token bucket per (account, product, action, endpoint) --------------------------------


def quota_table() -> table.Panel:
    return (
        table_panel(
            "Quota utilisation per account and endpoint",
            "One row per token bucket: an API's quota at one endpoint for one account (Tencent Cloud "
            "counts them apart). Requests per second the exporter sends, the rate limit it keeps to "
            "(rate_limit, or list_rate_limit for a list action; sharded replicas' shares added up), the rate "
            "the bucket allows now (lowered after throttling, climbing back to the rate limit) and "
            "utilisation = requests / rate limit. Above 80% for 15 minutes fires "
            "TencentCloudApiQuotaNearlyExhausted.",
            [
                api_rate(REQUESTS, BUCKET),
                RATE_LIMIT,
                CURRENT_RATE_LIMIT,
                bucket_utilisation(),
            ],
            [
                "account",
                ("api_endpoint", "endpoint"),
                "product",
                "action",
                ("Value #A", "requests/s"),
                ("Value #B", "rate limit"),
                ("Value #C", "current rate limit"),
                ("Value #D", "utilisation"),
            ],
        )
        .override_by_name("requests/s", unit_override("reqps"))
        .override_by_name("rate limit", unit_override("reqps"))
        .override_by_name("current rate limit", unit_override("reqps"))
        .override_by_name(
            "utilisation",
            [
                *unit_override("percentunit"),
                DynamicConfigValue(id_val="min", value=0),
                DynamicConfigValue(id_val="max", value=1),
                DynamicConfigValue(id_val="custom.cellOptions", value={"type": "gauge", "mode": "basic"}),
                DynamicConfigValue(
                    id_val="thresholds",
                    value=thresholds((None, "green"), (0.5, "yellow"), (0.8, "red")).build(),
                ),
            ],
        )
        .sort_by([TableSortByFieldState().display_name("utilisation").desc(True)])
        .no_value("No API calls")
        .span(24)
        .height(8)
    )


def bucket_rates_panel() -> timeseries.Panel:
    return (
        timeseries_panel(
            "Requests vs rate limits per bucket",
            "Per account, API and endpoint: requests per second sent (solid), the configured rate limit "
            "(dashed) and the rate the bucket allows now (dotted). The current limit drops to 70% when the "
            "API throttles and climbs back to the configured one; below it for long, something else spends "
            "the same account's quota at that endpoint.",
            "reqps",
        )
        .with_target(prom_query(api_rate(REQUESTS, BUCKET), "A", BUCKET_LEGEND))
        .with_target(prom_query(RATE_LIMIT, "B", f"{BUCKET_LEGEND} rate limit"))
        .with_target(prom_query(CURRENT_RATE_LIMIT, "C", f"{BUCKET_LEGEND} current limit"))
        .override_by_query("B", DASHED)
        .override_by_query("C", DOTTED)
        .min(0)
    )


def throttling_panel() -> timeseries.Panel:
    return (
        timeseries_panel(
            "Throttled requests by account and endpoint",
            "Calls rejected as too many (RequestLimitExceeded and its sub-codes for account or IP limits, "
            "and each product's own throttling codes), per account, API and endpoint. Anything above 0 "
            "means the exporter (or something else using the same sub-account, main account or IP) is over "
            "that endpoint's quota.",
            "reqps",
        )
        .with_target(prom_query(zero_when_absent(api_rate(THROTTLED, BUCKET), BUCKET), "A", BUCKET_LEGEND))
        .min(0)
    )


def quota_panels() -> list[table.Panel | timeseries.Panel]:
    return [quota_table(), bucket_rates_panel(), throttling_panel()]
