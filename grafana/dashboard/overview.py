"""The "Overview" row: counts of watched, running, succeeded, failed, stuck and stale tasks, whether the
exporter is up, and the tables of tasks that need a look and of tasks whose polls fail.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, table
from grafana_foundation_sdk.builders.common import TableSortByFieldState
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue, ValueMap, ValueMappingResult

from .common import FAILED, FINAL, JOB, KEY, SUCCEEDED, SVC, TASK
from .panels import TASK_COLUMNS, WHOLE, stat_panel, table_panel, unit_override
from .queries import attention_query, count_or_zero, stale_tasks, status_is, stuck_tasks


def overview_stats() -> list[stat.Panel]:
    ok: list[tuple[float | None, str]] = [(None, "green")]
    bad_when_any: list[tuple[float | None, str]] = [(None, "green"), (1, "red")]
    warn_when_any: list[tuple[float | None, str]] = [(None, "green"), (1, "orange")]
    exporter_up = (
        stat_panel(
            "Exporter",
            "Whether Prometheus can scrape the exporter (the lowest `up` of the selected jobs).",
            f"min(up{{{JOB}}})",
            [(None, "red"), (1, "green")],
        )
        .mappings(
            [
                ValueMap(
                    options={
                        "0": ValueMappingResult(text="DOWN", color="red", index=0),
                        "1": ValueMappingResult(text="UP", color="green", index=1),
                    }
                )
            ]
        )
        .no_value("DOWN")
    )
    return [
        stat_panel(
            "Watched tasks",
            "Tasks the exporter is configured to watch.",
            f"sum(tencentcloud_exporter_watched_tasks{{{SVC}}}) or vector(0)",
            [(None, "blue")],
        ),
        stat_panel(
            "Running",
            "Tasks in a status that is not final (running, initial, paused, unknown...).",
            count_or_zero(status_is(FINAL, negate=True)),
            [(None, "blue")],
        ),
        stat_panel("Succeeded", "Tasks that finished successfully.", count_or_zero(status_is(SUCCEEDED)), ok),
        stat_panel(
            "Failed / killed",
            "Tasks that ended as failed or killed. See the table below for which ones.",
            count_or_zero(status_is(FAILED)),
            bad_when_any,
        ),
        stat_panel(
            "Stuck",
            "Unfinished tasks that have been in the same status for longer than the 'Stuck after' variable.",
            count_or_zero(stuck_tasks()),
            warn_when_any,
        ),
        stat_panel(
            "Stale data",
            "Unfinished tasks whose last successful poll is older than the 'Stale after' variable.",
            count_or_zero(stale_tasks()),
            warn_when_any,
        ),
        stat_panel(
            "Tasks with poll errors",
            "Tasks whose polls failed at least once in the last 15 minutes (any error code).",
            count_or_zero(f"sum by ({KEY}) (increase(tencentcloud_task_errors_total{{{TASK}}}[15m])) > 0"),
            warn_when_any,
        ),
        exporter_up,
    ]


def attention_table() -> table.Panel:
    return (
        table_panel(
            "Failed, stuck and stale tasks",
            "Tasks that need a look: failed or killed (for = time since the exporter saw it fail), stuck "
            "(unfinished for longer than 'Stuck after') and stale (no successful poll for 'Stale after').",
            [attention_query()],
            ["problem", *TASK_COLUMNS, "status", ("Value", "for")],
        )
        .override_by_name("for", unit_override("dtdurations"))
        .override_by_name(
            "problem",
            [
                DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
                DynamicConfigValue(
                    id_val="mappings",
                    value=[
                        ValueMap(
                            options={
                                "failed": ValueMappingResult(color="red", index=0),
                                "stuck": ValueMappingResult(color="orange", index=1),
                                "stale": ValueMappingResult(color="yellow", index=2),
                            }
                        )
                    ],
                ),
            ],
        )
        .sort_by([TableSortByFieldState().display_name("problem")])
        .no_value("Nothing failed, stuck or stale")
        .span(14)
        .height(8)
    )


def poll_errors_table() -> table.Panel:
    return (
        table_panel(
            "Tasks whose polls fail",
            "Failed polls per task and error code over the dashboard's time range. "
            "InvalidParameter.FlowNotFound / InvalidParameter.InvalidAsyncRequestId: the task ID is unknown; "
            "AuthFailure.*: credentials; RequestLimitExceeded.*: throttled; Transport.*: network.",
            [f"sum by ({KEY}, code) (increase(tencentcloud_task_errors_total{{{TASK}}}[$__range])) > 0"],
            [*TASK_COLUMNS, "code", ("Value", "errors")],
        )
        .override_by_name("errors", WHOLE)
        .sort_by([TableSortByFieldState().display_name("errors").desc(True)])
        .no_value("No failed polls")
        .span(10)
        .height(8)
    )
