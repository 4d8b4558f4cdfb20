"""What every part of the dashboard shares: its identity, the data source, each product's status sets
(from the exporter's catalogue), the label selectors every query filters on, the status codes and colours
the timeline draws, and the builders of one Prometheus query and of thresholds.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMapping,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from exporter.catalogue.products import PRODUCTS

UID = "tencentcloud-task-exporter"
TITLE = "Tencent Cloud database tasks"
JOB_NAME = "tencentcloud-task-exporter"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Each product's status sets, from the catalogue: they differ (CDB's paused is not final, MongoDB's is a
# failure), so a query selects per group of products that share a set.
FINAL = {s.name: s.final_statuses for s in PRODUCTS}
FAILED = {s.name: s.failure_statuses for s in PRODUCTS}
SUCCEEDED = {s.name: s.final_statuses - s.failure_statuses for s in PRODUCTS}

# Label selectors shared by the queries.
JOB = 'job=~"$job"'
ACCOUNT = f'{JOB}, account=~"$account"'
SVC = f'{ACCOUNT}, product=~"$product"'
TASK = f'{SVC}, cloud_region=~"$cloud_region"'
# What identifies a task, an API, one token bucket of an API (a quota: Tencent Cloud counts it per API,
# endpoint and sub-account) and a discovery sweep.
KEY = "account, product, cloud_region, task_id"
API = "account, product, action"
BUCKET = "account, product, action, api_endpoint"
SWEEP = "account, product, cloud_region"

# Status -> (number drawn by the state timeline, colour). The timeline needs one number per task, so the
# state set is folded into a code; anything not listed (a status the exporter has not seen before) is 10.
STATUS_CODES: dict[str, tuple[int, str]] = {
    "initial": (1, "light-blue"),
    "running": (2, "blue"),
    "paused": (3, "yellow"),
    "success": (4, "green"),
    "failed": (5, "red"),
    "killed": (6, "dark-red"),
    "removed": (7, "gray"),
    "undefined": (8, "orange"),
    "unknown": (9, "orange"),
    # The other products' spellings share the codes of the same meaning.
    "preparing": (1, "light-blue"),
    "waitswitch": (3, "yellow"),
    "pause": (3, "yellow"),
    "succeed": (4, "green"),
    "fail": (5, "red"),
    "error": (5, "red"),
    "undoed": (6, "dark-red"),
}
OTHER_STATUS = (10, "purple")


def prom_query(
    expr: str, ref_id: str, legend: str = "", *, instant: bool = False, as_table: bool = False
) -> Dataquery:
    query = Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    query = query.instant() if instant else query.range()
    if as_table:
        query = query.format(PromQueryFormat.TABLE)
    return query


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def status_text_mappings() -> list[ValueMapping]:
    options = {
        name: ValueMappingResult(color=color, index=index)
        for index, (name, (_, color)) in enumerate(STATUS_CODES.items())
    }
    return [ValueMap(options=options)]


def status_code_mappings() -> list[ValueMapping]:
    options = {
        str(code): ValueMappingResult(text=name, color=color, index=index)
        for index, (name, (code, color)) in enumerate(STATUS_CODES.items())
    }
    options[str(OTHER_STATUS[0])] = ValueMappingResult(
        text="other", color=OTHER_STATUS[1], index=len(STATUS_CODES)
    )
    return [ValueMap(options=options)]
