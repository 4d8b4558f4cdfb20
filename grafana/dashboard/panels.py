"""The panel builders the rows share: a stat, an instant table (one query or several merged, with its
columns named and ordered), a time series, and the field overrides they reuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from string import ascii_uppercase

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    LegendDisplayMode,
    LegendPlacement,
)
from grafana_foundation_sdk.models.dashboard import DataTransformerConfig, DynamicConfigValue

from .common import DATASOURCE, phase_text_mappings, prom_query, thresholds


def stat_panel(
    title: str, description: str, expr: str, steps: list[tuple[float | None, str]], span: int = 3
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(prom_query(expr, "A", instant=True))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE)
        .thresholds(thresholds(*steps))
        .unit("none")
        .span(span)
        .height(4)
    )


# A table column: a field shown under its own name, or (field, the name shown). Several queries merged into
# one table name their values "Value #A", "Value #B"... after their ref ids.
Column = str | tuple[str, str]


def table_panel(
    title: str,
    description: str,
    exprs: Sequence[str],
    columns: Sequence[Column] = (),
    hidden: Sequence[str] = (),
) -> table.Panel:
    """An instant table of one query, or of several merged into one row per label set.

    ``columns`` come first in their order (fields not named follow them, user labels for example); ``hidden``
    fields are left out, and so is every query's Time.
    """
    panel = table.Panel().title(title).description(description).datasource(DATASOURCE)
    for ref_id, expr in zip(ascii_uppercase, exprs, strict=False):
        panel = panel.with_target(prom_query(expr, ref_id, instant=True, as_table=True))
    if len(exprs) > 1:
        panel = panel.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    names = [(column, column) if isinstance(column, str) else column for column in columns]
    options: dict[str, object] = {"excludeByName": dict.fromkeys(("Time", *hidden), True)}
    if names:
        options["indexByName"] = {field: index for index, (field, _) in enumerate(names)}
    renames = {field: shown for field, shown in names if field != shown}
    if renames:
        options["renameByName"] = renames
    return panel.with_transformation(DataTransformerConfig(id_val="organize", options=options))


def unit_override(unit: str) -> list[DynamicConfigValue]:
    return [DynamicConfigValue(id_val="unit", value=unit)]


WHOLE = [DynamicConfigValue(id_val="decimals", value=0)]
PHASE_CELLS = [
    DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
    DynamicConfigValue(id_val="mappings", value=phase_text_mappings()),
]
DASHED = [
    DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
    DynamicConfigValue(id_val="custom.fillOpacity", value=0),
]
DOTTED = [
    DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dot", "dash": [0, 10]}),
    DynamicConfigValue(id_val="custom.fillOpacity", value=0),
]
TASK_COLUMNS: list[Column] = ["account", "product", "cloud_region", "task_id"]


def timeseries_panel(title: str, description: str, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .span(12)
        .height(8)
    )
