"""The dashboard put together: its settings, the variables, the rows top to bottom with their panels, and
the JSON text that is committed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from grafana_foundation_sdk.builders.dashboard import AnnotationQuery, Dashboard, Row
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Panel

from .api import api_error_ratio_panel, api_errors_panel, latency_panel, quota_panels
from .common import TITLE, UID
from .discovery import discovery_panels
from .durations import duration_panels
from .health import exporter_panels
from .overview import attention_table, overview_stats, poll_errors_table
from .tasks import freshness_panel, operations_table, status_timeline, tasks_table
from .variables import variables


def build_dashboard() -> Dashboard:
    dashboard = (
        Dashboard(TITLE)
        .uid(UID)
        .description(
            "Status of Tencent Cloud database async operations, every product of the exporter's catalogue."
        )
        .tags(["tencentcloud", "database", "tencentcloud-task-exporter"])
        .timezone("browser")
        .refresh("30s")
        .time("now-6h", "now")
        .editable()
        .annotation(
            AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
    )
    for variable in variables():
        dashboard = dashboard.with_variable(variable)
    for title, panels in sections():
        dashboard = dashboard.with_row(Row(title))
        for panel in panels:
            dashboard = dashboard.with_panel(panel)
    return dashboard


def sections() -> list[tuple[str, Sequence[Builder[Panel]]]]:
    """The dashboard's rows, top to bottom, each with its panels."""
    return [
        ("Overview", [*overview_stats(), attention_table(), poll_errors_table()]),
        ("Tasks", [tasks_table(), operations_table(), status_timeline()]),
        ("Operation durations", duration_panels()),
        ("Quota use per account and endpoint", quota_panels()),
        ("Tencent Cloud API", [api_errors_panel(), api_error_ratio_panel(), latency_panel()]),
        ("Data freshness", [freshness_panel()]),
        ("Discovery", discovery_panels()),
        ("Exporter health", exporter_panels()),
    ]


def render() -> str:
    """The dashboard as the JSON text that is committed (panel ids assigned in order, stable key order)."""
    model = json.loads(JSONEncoder(sort_keys=True).encode(build_dashboard().build()))
    for panel_id, panel in enumerate(model["panels"], start=1):
        panel["id"] = panel_id
    return json.dumps(model, indent=2, sort_keys=True) + "\n"
