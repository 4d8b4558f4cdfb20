"""The "Overview" row: counts of watched tasks and of tasks per phase (pending or running, succeeded,
failed, not found), stuck and stale tasks, whether the exporter is up, and the tables of tasks that need a
look and of tasks whose polls fail.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, table
from grafana_foundation_sdk.builders.common import TableSortByFieldState
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue, ValueMap, ValueMappingResult

from exporter.catalogue.products import Phase

from .common import IN_PROGRESS, JOB, KEY, PHASE_COLOURS, SVC, TASK
from .panels import TASK_COLUMNS, WHOLE, stat_panel, table_panel, unit_override
from .queries import attention_query, count_or_zero, phase_count, stale_tasks, stuck_tasks


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
            span=2,
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
            span=2,
        ),
        stat_panel(
            "Pending / running",
            "Tasks in the pending or running phase: accepted, not finished, whatever the product calls it.",
            phase_count(IN_PROGRESS),
            [(None, "blue")],
        ),
        stat_panel(
            "Succeeded",
            "Tasks in the succeeded phase: their product's success status.",
            phase_count((Phase.SUCCEEDED,)),
            ok,
        ),
        stat_panel(
            "Failed",
            "Tasks in the failed phase: any final status but the success (failed, killed, error, fail, "
            "MongoDB's paused...). See the table below for which ones.",
            phase_count((Phase.FAILED,)),
            bad_when_any,
        ),
        stat_panel(
            "Not found / unknown",
            "Tasks the API says do not exist (not_found), or whose status is null or undocumented (unknown).",
            phase_count((Phase.NOT_FOUND, Phase.UNKNOWN)),
            warn_when_any,
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
            span=2,
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
            "Tasks that need a look: failed (for = time since the exporter saw it fail), stuck (pending or "
            "running for longer than 'Stuck after'), stale (no successful poll for 'Stale after') and not "
            "found (the API says the ID does not exist; for = time since the last successful poll).",
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
                                "failed": ValueMappingResult(color=PHASE_COLOURS[Phase.FAILED], index=0),
                                "stuck": ValueMappingResult(color="orange", index=1),
                                "stale": ValueMappingResult(color="yellow", index=2),
                                "not found": ValueMappingResult(
                                    color=PHASE_COLOURS[Phase.NOT_FOUND], index=3
                                ),
                            }
                        )
                    ],
                ),
            ],
        )
        .sort_by([TableSortByFieldState().display_name("problem")])
        .no_value("Nothing failed, stuck, stale or not found")
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
