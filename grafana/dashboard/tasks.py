"""The "Tasks" row (every task, operations by instance and type, the status timeline) and the "Data
freshness" row (time since each task's last successful poll).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    TableSortByFieldState,
    VizLegendOptions,
)
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode, VisibilityMode
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from .common import DATASOURCE, KEY, TASK, phase_code_mappings, prom_query, thresholds
from .panels import PHASE_CELLS, TASK_COLUMNS, WHOLE, table_panel, timeseries_panel, unit_override
from .queries import (
    current_phase,
    current_status,
    operations_by_instance,
    seconds_in_status,
    seconds_since_poll,
    timeline_query,
)


def tasks_table() -> table.Panel:
    return (
        table_panel(
            "All tasks",
            "Every watched task: its account, phase (the same for every product) and current status (the "
            "product's own word), how long it has been in it (since the exporter first saw it), the age of "
            "the last successful poll, the Info text, user labels and failed polls in the time range.",
            [
                current_status(),
                seconds_in_status(),
                seconds_since_poll(),
                f"max without (job, instance) (tencentcloud_task_info{{{TASK}}})",
                f"sum by ({KEY}) (increase(tencentcloud_task_errors_total{{{TASK}}}[$__range]))",
                current_phase(),
            ],
            [
                *TASK_COLUMNS,
                "phase",
                "status",
                ("Value #B", "in status for"),
                ("Value #C", "last poll (ago)"),
                "info",
                ("Value #E", "failed polls"),
            ],
            hidden=["Value #A", "Value #D", "Value #F"],
        )
        .override_by_name("phase", PHASE_CELLS)
        .override_by_name("in status for", unit_override("dtdurations"))
        .override_by_name("last poll (ago)", unit_override("dtdurations"))
        .override_by_name("failed polls", WHOLE)
        .override_by_name("info", [DynamicConfigValue(id_val="custom.width", value=320)])
        .sort_by([TableSortByFieldState().display_name("phase")])
        .span(24)
        .height(10)
    )


def operations_table() -> table.Panel:
    return (
        table_panel(
            "Operations by instance and type",
            "How many watched operations each instance has, per task type and current phase. The 'Source' "
            "variable narrows it to tasks from the configuration (config), named through the API (api) or "
            "found by discovery (discovered). An empty instance or type: the product's status API does not "
            "give it and discovery has not seen the task.",
            [operations_by_instance()],
            [
                "account",
                "product",
                "cloud_region",
                "instance_id",
                "task_type",
                "phase",
                ("Value", "operations"),
            ],
        )
        .override_by_name("phase", PHASE_CELLS)
        .override_by_name("operations", WHOLE)
        .sort_by([TableSortByFieldState().display_name("operations").desc(True)])
        .no_value("No watched operations")
        .span(24)
        .height(8)
    )


def status_timeline() -> statetimeline.Panel:
    return (
        statetimeline.Panel()
        .title("Task phase over time")
        .description(
            "Each task's phase as polled, the same colours for every product. Gaps mean the task had no "
            "answer yet (not yet polled)."
        )
        .datasource(DATASOURCE)
        .with_target(
            prom_query(timeline_query(), "A", "{{account}} {{product}} {{cloud_region}} {{task_id}}")
        )
        .mappings(phase_code_mappings())
        .thresholds(thresholds((None, "text")))
        .show_value(VisibilityMode.AUTO)
        .merge_values(True)
        .row_height(0.8)
        .legend(VizLegendOptions().show_legend(False))
        .span(24)
        .height(9)
    )


def freshness_panel() -> timeseries.Panel:
    return (
        timeseries_panel(
            "Time since last successful poll",
            "How old each task's data is. Finished tasks may stop being polled, so their line keeps growing; "
            "for unfinished ones anything above a few poll intervals means the data is stale.",
            "s",
        )
        .with_target(
            prom_query(seconds_since_poll(), "A", "{{account}} {{product}} {{cloud_region}} {{task_id}}")
        )
        .thresholds(thresholds((None, "green"), (300, "red")))
        .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED))
        .min(0)
        .span(24)
    )
