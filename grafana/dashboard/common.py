"""What every part of the dashboard shares: its identity, the data source, the label selectors every query
filters on, the phases (from the exporter's catalogue) with the codes and colours the timeline and tables
draw, and the builders of one Prometheus query and of thresholds.
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

from exporter.catalogue.products import PHASES, Phase

UID = "tencentcloud-task-exporter"
TITLE = "Tencent Cloud database tasks"
JOB_NAME = "tencentcloud-task-exporter"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

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

# Phase -> (number drawn by the state timeline, colour): the same for every product, whatever its status
# words. The timeline needs one number per task, so the phase state set is folded into a code.
PHASE_COLOURS: dict[Phase, str] = {
    Phase.PENDING: "light-blue",
    Phase.RUNNING: "blue",
    Phase.ONGOING: "semi-dark-green",
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.UNKNOWN: "orange",
    Phase.NOT_FOUND: "purple",
}
PHASE_CODES: dict[Phase, tuple[int, str]] = {
    phase: (code, PHASE_COLOURS[phase]) for code, phase in enumerate(PHASES, start=1)
}
FINAL = (Phase.SUCCEEDED, Phase.FAILED)
IN_PROGRESS = (Phase.PENDING, Phase.RUNNING)


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


def phase_text_mappings() -> list[ValueMapping]:
    options = {
        str(phase): ValueMappingResult(color=color, index=index)
        for index, (phase, (_, color)) in enumerate(PHASE_CODES.items())
    }
    return [ValueMap(options=options)]


def phase_code_mappings() -> list[ValueMapping]:
    options = {
        str(code): ValueMappingResult(text=str(phase), color=color, index=index)
        for index, (phase, (code, color)) in enumerate(PHASE_CODES.items())
    }
    return [ValueMap(options=options)]
