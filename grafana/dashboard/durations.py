"""The "Operation durations" row: how long finished operations took, per product, task type and phase
(tencentcloud_task_duration_seconds, over the dashboard's time range): the p50 and p95 in a table, and the
p95 over time.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import table, timeseries
from grafana_foundation_sdk.builders.common import TableSortByFieldState

from .common import TASK, prom_query
from .panels import PHASE_CELLS, WHOLE, table_panel, timeseries_panel, unit_override
from .queries import duration_quantile, durations_observed


def durations_table() -> table.Panel:
    return (
        table_panel(
            "Operation durations by product and type",
            "How long the operations that finished in the time range took, per product, task type (empty "
            "where the product gives none) and phase: median (p50), 95th percentile (p95) and how many "
            "finished. From the API's start and end times where the product gives both, else from the first "
            "poll that saw the operation in progress to the first that saw it final. TencentCloudTaskSlow "
            "compares a running operation with the p95 of its type over 7 days.",
            [duration_quantile(0.5), duration_quantile(0.95), durations_observed()],
            [
                "product",
                "task_type",
                "phase",
                ("Value #A", "p50"),
                ("Value #B", "p95"),
                ("Value #C", "finished"),
            ],
        )
        .override_by_name("phase", PHASE_CELLS)
        .override_by_name("p50", unit_override("dtdurations"))
        .override_by_name("p95", unit_override("dtdurations"))
        .override_by_name("finished", WHOLE)
        .sort_by([TableSortByFieldState().display_name("p95").desc(True)])
        .no_value("No operation finished in the time range")
        .span(14)
        .height(8)
    )


def p95_panel() -> timeseries.Panel:
    buckets = f'increase(tencentcloud_task_duration_seconds_bucket{{{TASK}, phase="succeeded"}}[1d])'
    return (
        timeseries_panel(
            "Succeeded operations' p95 duration (1 day window)",
            "The 95th percentile of how long operations took to succeed over the preceding day, per product "
            "and task type.",
            "s",
        )
        .with_target(
            prom_query(
                f"histogram_quantile(0.95, sum by (product, task_type, le) ({buckets}))",
                "A",
                "{{product}} {{task_type}}",
            )
        )
        .min(0)
        .span(10)
    )


def duration_panels() -> list[table.Panel | timeseries.Panel]:
    return [durations_table(), p95_panel()]
