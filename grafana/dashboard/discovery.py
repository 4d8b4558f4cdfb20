"""The "Discovery" row: tasks found by discovery, each sweep's health, errors by code, tasks found over
time.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import TableSortByFieldState
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from .common import KEY, TASK, prom_query, thresholds
from .panels import DASHED, WHOLE, stat_panel, table_panel, timeseries_panel, unit_override
from .queries import count_or_zero, discovery_errors, discovery_sweeps, per_sweep


def discovery_panels() -> list[stat.Panel | table.Panel | timeseries.Panel]:
    discovered = (
        stat_panel(
            "Discovered tasks",
            "Operations the exporter watches only because discovery found them: nobody configured or "
            "registered them (source=discovered).",
            count_or_zero(f'max by ({KEY}) (tencentcloud_task_info{{{TASK}, source="discovered"}})'),
            [(None, "blue")],
        )
        .span(4)
        .height(8)
    )
    # One row per swept (account, product, cloud_region); the failure streak is always exported, so a region
    # that never succeeded still has a row (with an empty "last success").
    health = (
        table_panel(
            "Discovery health",
            "Per account, product and region: how long ago the last complete sweep succeeded, how many "
            "sweeps failed since (3 fire TencentCloudDiscoveryFailing), how many watched tasks the sweeps "
            "found (configured ones included) and how long the last sweep took. A last success older than a "
            "few sweep intervals means new operations go unseen.",
            [
                f"time() - {per_sweep('max', 'tencentcloud_discovery_last_success_timestamp_seconds')}",
                per_sweep("max", "tencentcloud_discovery_consecutive_failed_sweeps"),
                per_sweep("sum", "tencentcloud_discovery_tasks"),
                per_sweep("max", "tencentcloud_discovery_last_sweep_duration_seconds"),
            ],
            [
                "account",
                "product",
                "cloud_region",
                ("Value #A", "last success (ago)"),
                ("Value #B", "failed sweeps in a row"),
                ("Value #C", "tasks found"),
                ("Value #D", "last sweep took"),
            ],
        )
        .override_by_name("last success (ago)", unit_override("dtdurations"))
        .override_by_name(
            "failed sweeps in a row",
            [
                *WHOLE,
                DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
                # Orange from the first failure, red from the alert's threshold.
                DynamicConfigValue(
                    id_val="thresholds",
                    value=thresholds((None, "green"), (1, "orange"), (3, "red")).build(),
                ),
            ],
        )
        .override_by_name("tasks found", WHOLE)
        .override_by_name("last sweep took", unit_override("s"))
        .sort_by([TableSortByFieldState().display_name("failed sweeps in a row").desc(True)])
        .no_value("Discovery is off")
        .span(20)
        .height(8)
    )
    errors = (
        timeseries_panel(
            "Discovery errors by code",
            "Failed sweeps per second by account, product and error code (Tencent Cloud codes, Transport.* "
            "for network and malformed answers, Exporter.* for the exporter's own). Dashed: sweeps "
            "attempted. Sweeps run once per interval, so a failing region shows as regular spikes.",
            "ops",
        )
        .with_target(prom_query(discovery_errors(), "A", "{{account}} {{product}} {{code}}"))
        .with_target(prom_query(discovery_sweeps(), "B", "{{account}} {{product}} sweeps"))
        .override_by_query("B", DASHED)
        .min(0)
    )
    tasks_over_time = (
        timeseries_panel(
            "Tasks found by discovery",
            "Watched operations the sweeps found, per account, product and region, configured ones included.",
            "none",
        )
        .with_target(
            prom_query(
                per_sweep("sum", "tencentcloud_discovery_tasks"),
                "A",
                "{{account}} {{product}} {{cloud_region}}",
            )
        )
        .min(0)
    )
    return [discovered, health, errors, tasks_over_time]
