"""The "Exporter health" row: scrape target up, watched tasks, scrape duration, build info."""

from __future__ import annotations

from grafana_foundation_sdk.builders import table, timeseries

from .common import JOB, SVC, prom_query
from .panels import table_panel, timeseries_panel


def exporter_panels() -> list[timeseries.Panel | table.Panel]:
    up = (
        timeseries_panel("Scrape target up", "1 when Prometheus could scrape the exporter.", "none")
        .with_target(prom_query(f"up{{{JOB}}}", "A", "{{instance}}"))
        .min(0)
        .max(1)
        .span(6)
    )
    watched = (
        timeseries_panel(
            "Watched tasks by account and product",
            "Tasks the exporter polls, per account and product.",
            "none",
        )
        .with_target(
            prom_query(
                f"sum by (account, product) (tencentcloud_exporter_watched_tasks{{{SVC}}})",
                "A",
                "{{account}} {{product}}",
            )
        )
        .min(0)
        .span(6)
    )
    scrape = (
        timeseries_panel("Scrape duration", "How long Prometheus takes to scrape the exporter.", "s")
        .with_target(prom_query(f"scrape_duration_seconds{{{JOB}}}", "A", "{{instance}}"))
        .min(0)
        .span(6)
    )
    build = (
        table_panel(
            "Build info",
            "Exporter versions running.",
            [f"max by (job, instance, version) (tencentcloud_exporter_build_info{{{JOB}}})"],
            hidden=["Value"],
        )
        .span(6)
        .height(8)
    )
    return [up, watched, scrape, build]
