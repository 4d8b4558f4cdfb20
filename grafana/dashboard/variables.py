"""The dashboard's variables: data source, job, account, product, region (query variables, "All" by
default), the stuck and stale thresholds (custom variables) and the task source.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import CustomVariable, DatasourceVariable, QueryVariable
from grafana_foundation_sdk.models.dashboard import VariableOption, VariableRefresh, VariableSort

from .common import ACCOUNT, DATASOURCE, JOB, SVC, TASK


def _custom_variable(name: str, label: str, choices: list[tuple[str, int]], default: str) -> CustomVariable:
    options = [
        VariableOption(selected=text == default, text=text, value=str(seconds)) for text, seconds in choices
    ]
    current = next(o for o in options if o.selected)
    return (
        CustomVariable(name)
        .label(label)
        .values(",".join(f"{text} : {seconds}" for text, seconds in choices))
        .options(options)
        .current(VariableOption(selected=True, text=current.text, value=current.value))
    )


def _query_variable(name: str, label: str, query: str, all_value: str | None) -> QueryVariable:
    variable = (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    if all_value is not None:
        variable = variable.all_value(all_value)
    return variable


def variables() -> list[DatasourceVariable | QueryVariable | CustomVariable]:
    # The discovery gauge lists the regions discovery sweeps even before it has found a task there.
    task_metrics = (
        "tencentcloud_task_info|tencentcloud_task_status|tencentcloud_task_errors_total"
        "|tencentcloud_discovery_consecutive_failed_sweeps"
    )
    account_metrics = "tencentcloud_exporter_watched_tasks|tencentcloud_api_rate_limit_requests_per_second"
    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        # No custom "All" value: "All" expands to exactly the jobs that run this exporter, so `up` is not
        # polluted by unrelated targets.
        _query_variable("job", "Job", "label_values(tencentcloud_exporter_build_info, job)", None),
        # The config's account names ("default" without an `accounts:` section). The rate-limit gauges list
        # an account before it watches any task (one that only runs discovery, say). "All" is .* so series of
        # an exporter without the label (older versions) still show.
        _query_variable(
            "account", "Account", f'label_values({{__name__=~"{account_metrics}", {JOB}}}, account)', ".*"
        ),
        _query_variable(
            "product",
            "Product",
            f"label_values(tencentcloud_exporter_watched_tasks{{{ACCOUNT}}}, product)",
            ".*",
        ),
        _query_variable(
            "cloud_region",
            "Region",
            f'label_values({{__name__=~"{task_metrics}", {SVC}}}, cloud_region)',
            ".*",
        ),
        _custom_variable(
            "stuck_after",
            "Stuck after",
            [("30m", 1800), ("1h", 3600), ("3h", 10800), ("6h", 21600), ("12h", 43200), ("1d", 86400)],
            "6h",
        ),
        _custom_variable(
            "stale_after",
            "Stale after",
            [("2m", 120), ("5m", 300), ("10m", 600), ("30m", 1800)],
            "5m",
        ),
        # Where each task was first known (config, api, discovered). "All" is .* rather than the list of
        # values found, so tasks from an exporter without the label (older versions) still show.
        _query_variable("source", "Source", f"label_values(tencentcloud_task_info{{{TASK}}}, source)", ".*"),
    ]
