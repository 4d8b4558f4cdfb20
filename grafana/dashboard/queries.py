"""The PromQL of the panels: task states (failed, stuck, stale), API rates and utilisation per token bucket,
latency quantiles, discovery sweeps, operations per instance. Every query filters on the dashboard's
variables through the selectors of `common`.
"""

from __future__ import annotations

from collections.abc import Mapping

from .common import API, BUCKET, FAILED, FINAL, KEY, OTHER_STATUS, STATUS_CODES, SVC, SWEEP, TASK


def status_is(statuses: Mapping[str, frozenset[str]], negate: bool = False) -> str:
    """Tasks whose current status is (or, negated, is not) in their product's set of ``statuses``; value 1."""
    groups: dict[frozenset[str], list[str]] = {}
    for product, chosen in statuses.items():
        groups.setdefault(chosen, []).append(product)
    op = "!~" if negate else "=~"
    selectors = []
    for chosen, products in groups.items():
        match = f'product=~"{"|".join(products)}", status{op}"{"|".join(sorted(chosen))}"'
        selectors.append(f"tencentcloud_task_status{{{TASK}, {match}}} == 1")
    return f"max by ({KEY}, status) (\n    " + "\n  or\n    ".join(selectors) + "\n)"


def current_status() -> str:
    """Every task's current status; value 1."""
    return f"max by ({KEY}, status) (tencentcloud_task_status{{{TASK}}} == 1)"


def seconds_in_status() -> str:
    return f"time() - max by ({KEY}) (tencentcloud_task_status_change_timestamp_seconds{{{TASK}}})"


def seconds_since_poll() -> str:
    return f"time() - max by ({KEY}) (tencentcloud_task_last_poll_success_timestamp_seconds{{{TASK}}})"


def stuck_tasks() -> str:
    """Unfinished tasks that have been in their status longer than ``$stuck_after``; value in seconds."""
    return f"({seconds_in_status()} > $stuck_after) * on ({KEY}) group_left (status) {status_is(FINAL, True)}"


def stale_tasks() -> str:
    """Unfinished tasks without a successful poll for ``$stale_after``; value in seconds."""
    return f"({seconds_since_poll()} > $stale_after) unless on ({KEY}) {status_is(FINAL)}"


def failed_tasks() -> str:
    """Failed or killed tasks, with the time since they were seen failing."""
    return f"({seconds_in_status()}) * on ({KEY}) group_left (status) {status_is(FAILED)}"


def count_or_zero(expr: str) -> str:
    return f"count({expr}) or vector(0)"


def attention_query() -> str:
    parts = [
        f'label_replace({failed_tasks()}, "problem", "failed", "", "")',
        f'label_replace({stuck_tasks()}, "problem", "stuck", "", "")',
        f'label_replace({stale_tasks()}, "problem", "stale", "", "")',
    ]
    return "\n  or\n".join(parts)


def timeline_query() -> str:
    parts = [
        f'(tencentcloud_task_status{{{TASK}, status="{name}"}} == 1) * {code}'
        for name, (code, _) in STATUS_CODES.items()
    ]
    parts.append(f"(tencentcloud_task_status{{{TASK}}} == 1) * {OTHER_STATUS[0]}")
    return f"max by ({KEY}) (\n    " + "\n  or\n    ".join(parts) + "\n)"


def api_rate(metric: str, by: str = API, extra: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{{{SVC}{extra}}}[$__rate_interval]))"


BUCKET_LEGEND = "{{account}} {{product}} {{action}} {{api_endpoint}}"
REQUESTS = "tencentcloud_api_requests_total"
ERRORS = "tencentcloud_api_errors_total"
THROTTLED = "tencentcloud_api_throttled_requests_total"
# A bucket's rates are summed over the replicas: each shard keeps to rate_limit / --shard.count, so the sum is
# the configured rate_limit, which the requests of every replica together are measured against.
RATE_LIMIT = f"sum by ({BUCKET}) (tencentcloud_api_rate_limit_requests_per_second{{{SVC}}})"
CURRENT_RATE_LIMIT = f"sum by ({BUCKET}) (tencentcloud_api_current_rate_limit_requests_per_second{{{SVC}}})"


def zero_when_absent(expr: str, by: str = API) -> str:
    """``expr`` per ``by``, with 0 for APIs (buckets) that were called but never hit ``expr``."""
    return f"{expr}\n  or\n{api_rate(REQUESTS, by)} * 0"


def bucket_utilisation() -> str:
    """Requests per second as a share of the rate limit of the same bucket (the alert's measure)."""
    return f"{api_rate(REQUESTS, BUCKET)}\n/ on ({BUCKET})\n{RATE_LIMIT}"


def latency_quantile(q: float) -> str:
    # Latency is the network path's and the endpoint's, whichever account asks.
    buckets = api_rate(
        "tencentcloud_api_request_duration_seconds_bucket", by="product, action, api_endpoint, le"
    )
    return f"histogram_quantile({q}, {buckets})"


# Discovery sweeps each (account, product, cloud_region) on its own: its series carry those labels and no
# task_id.
def per_sweep(aggregation: str, metric: str) -> str:
    return f"{aggregation} by ({SWEEP}) ({metric}{{{TASK}}})"


def discovery_errors() -> str:
    """Failed sweeps per second by account, product and code; 0 for products whose sweeps never failed.

    The fallback is matched on (account, product) only, so it adds a line just for those without any error
    series.
    """
    errors = (
        "sum by (account, product, code) "
        f"(rate(tencentcloud_discovery_errors_total{{{TASK}}}[$__rate_interval]))"
    )
    return f"{errors}\n  or on (account, product)\n{discovery_sweeps()} * 0"


def discovery_sweeps() -> str:
    return (
        f"sum by (account, product) (rate(tencentcloud_discovery_sweeps_total{{{TASK}}}[$__rate_interval]))"
    )


def operations_by_instance() -> str:
    """How many operations each (instance, task type) has in each status.

    tencentcloud_task_info holds the instance and type, tencentcloud_task_status the status; both are reduced
    to one series per task first (user labels and the info text vary per task and would split the count).
    """
    info = f'max by ({KEY}, instance_id, task_type) (tencentcloud_task_info{{{TASK}, source=~"$source"}})'
    return (
        f"count by (account, product, cloud_region, instance_id, task_type, status) (\n  {info}\n"
        f"  * on ({KEY}) group_left (status)\n  {current_status()}\n)"
    )
