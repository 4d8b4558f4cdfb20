"""The PromQL of the panels: task phases (failed, stuck, stale), API rates and utilisation per token bucket,
latency and operation duration quantiles, discovery sweeps, operations per instance. Every query filters on
the dashboard's variables through the selectors of `common`; tasks are told apart by phase, the same for
every product, never by a product's status words.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.catalogue.products import Phase

from .common import API, BUCKET, FINAL, IN_PROGRESS, KEY, PHASE_CODES, SVC, SWEEP, TASK


def _phases(phases: Sequence[Phase]) -> str:
    return "|".join(str(p) for p in phases)


def phase_is(phases: Sequence[Phase]) -> str:
    """Tasks whose current phase is one of ``phases``, with their product's own status word; value 1."""
    return (
        f"max by ({KEY}, status) (\n    tencentcloud_task_status{{{TASK}}} == 1\n"
        f"    and on ({KEY})\n"
        f'    tencentcloud_task_phase{{{TASK}, phase=~"{_phases(phases)}"}} == 1\n)'
    )


def phase_count(phases: Sequence[Phase]) -> str:
    """How many tasks are in one of ``phases``."""
    return f'count(tencentcloud_task_phase{{{TASK}, phase=~"{_phases(phases)}"}} == 1) or vector(0)'


def current_status() -> str:
    """Every task's current status; value 1."""
    return f"max by ({KEY}, status) (tencentcloud_task_status{{{TASK}}} == 1)"


def current_phase() -> str:
    """Every task's current phase; value 1."""
    return f"max by ({KEY}, phase) (tencentcloud_task_phase{{{TASK}}} == 1)"


def seconds_in_status() -> str:
    return f"time() - max by ({KEY}) (tencentcloud_task_status_change_timestamp_seconds{{{TASK}}})"


def seconds_since_poll() -> str:
    return f"time() - max by ({KEY}) (tencentcloud_task_last_poll_success_timestamp_seconds{{{TASK}}})"


def stuck_tasks() -> str:
    """Pending or running tasks that have been in their status longer than ``$stuck_after``; value in
    seconds."""
    return f"({seconds_in_status()} > $stuck_after) * on ({KEY}) group_left (status) {phase_is(IN_PROGRESS)}"


def stale_tasks() -> str:
    """Unfinished tasks without a successful poll for ``$stale_after``; value in seconds. Not those the API
    says do not exist: they are listed as not found."""
    final = _phases((*FINAL, Phase.NOT_FOUND))
    return (
        f"({seconds_since_poll()} > $stale_after) unless on ({KEY}) "
        f'(tencentcloud_task_phase{{{TASK}, phase=~"{final}"}} == 1)'
    )


def failed_tasks() -> str:
    """Tasks in the failed phase, with the time since they were seen failing."""
    return f"({seconds_in_status()}) * on ({KEY}) group_left (status) {phase_is((Phase.FAILED,))}"


def not_found_tasks() -> str:
    """Tasks the API says do not exist, with the time since the last successful poll (if any)."""
    return (
        f"({seconds_since_poll()}) * on ({KEY}) group_left ()"
        f' (max by ({KEY}) (tencentcloud_task_phase{{{TASK}, phase="not_found"}}) == 1)'
    )


def count_or_zero(expr: str) -> str:
    return f"count({expr}) or vector(0)"


def attention_query() -> str:
    parts = [
        f'label_replace({failed_tasks()}, "problem", "failed", "", "")',
        f'label_replace({stuck_tasks()}, "problem", "stuck", "", "")',
        f'label_replace({stale_tasks()}, "problem", "stale", "", "")',
        f'label_replace({not_found_tasks()}, "problem", "not found", "", "")',
    ]
    return "\n  or\n".join(parts)


def timeline_query() -> str:
    parts = [
        f'(tencentcloud_task_phase{{{TASK}, phase="{phase}"}} == 1) * {code}'
        for phase, (code, _) in PHASE_CODES.items()
    ]
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
    """How many operations each (instance, task type) has in each phase.

    tencentcloud_task_info holds the instance and type, tencentcloud_task_phase the phase; both are reduced
    to one series per task first (user labels and the info text vary per task and would split the count).
    """
    info = f'max by ({KEY}, instance_id, task_type) (tencentcloud_task_info{{{TASK}, source=~"$source"}})'
    return (
        f"count by (account, product, cloud_region, instance_id, task_type, phase) (\n  {info}\n"
        f"  * on ({KEY}) group_left (phase)\n  {current_phase()}\n)"
    )


DURATION_BUCKETS = "tencentcloud_task_duration_seconds_bucket"


def duration_quantile(q: float) -> str:
    """The ``q`` quantile of finished operations' durations per product, type and phase, over the range."""
    buckets = f"increase({DURATION_BUCKETS}{{{TASK}}}[$__range])"
    return f"histogram_quantile({q}, sum by (product, task_type, phase, le) ({buckets}))"


def durations_observed() -> str:
    """How many operations finished per product, type and phase in the time range."""
    counted = f"increase(tencentcloud_task_duration_seconds_count{{{TASK}}}[$__range])"
    return f"sum by (product, task_type, phase) ({counted}) > 0"
