"""Helpers for the tests of the shipped Prometheus and Grafana artifacts.

- ``panel_queries`` extracts every PromQL expression of the Grafana dashboard with the template variables
  substituted the way Grafana would, so the expressions can be checked offline (promtool) and run against a
  real Prometheus (tests/test_prometheus_live.py).
- ``metric_names`` finds the metric names an expression reads, without a full PromQL parser: good enough
  for the expressions we write, and every expression is also validated by promtool or Prometheus itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "dashboards" / "tencentcloud-task-exporter.json"


# The metric contract of the exporter: the only names dashboards and alerts may use.
def _exported_metric_names() -> frozenset[str]:
    """Every sample name the exporter can expose, read off a real rendering (so new metrics count too)."""
    from prometheus_client.parser import text_string_to_metric_families

    from exporter.catalogue.products import MARIADB, Observation, Phase
    from exporter.config.parser import WatchedTask
    from exporter.exposition.metrics import Metrics
    from exporter.exposition.state import TaskStore
    from exporter.polling.client import Outcome
    from exporter.polling.ratelimit import TokenBucket
    from tests.helpers import status_lane

    metrics, store = Metrics(), TaskStore()
    state = store.add(WatchedTask(MARIADB.name, "1", "ap-guangzhou"))
    state.observe(Observation("running", start_time=0.0, end_time=1.0), 0.0)
    metrics.observe_duration(state, Phase.SUCCEEDED, 1.0)
    state.fail("RequestLimitExceeded", 1.0)
    metrics.lane_opened(status_lane(MARIADB), TokenBucket(MARIADB.default_rate_limit))
    metrics.observe_api(status_lane(MARIADB), MARIADB, Outcome("RequestLimitExceeded"))
    metrics.loop_lag.observe(0.001)
    metrics.set_watched(store.count_by_account(["default"]))
    text = metrics.render(store).decode()
    return frozenset(s.name for f in text_string_to_metric_families(text) for s in f.samples)


CONTRACT_METRICS = _exported_metric_names()
# Series Prometheus itself writes for every scrape target.
SCRAPE_METRICS = frozenset({"up", "scrape_duration_seconds"})

# Grafana's global variables, with values close to what Grafana would use for a 1 h range at 15 s scrapes.
DEFAULT_BUILTINS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}


# --- dashboard -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    raw: str  # as written in the dashboard
    expr: str  # template variables substituted
    instant: bool

    @property
    def name(self) -> str:
        return f"panel {self.panel_id} {self.panel_title!r} query {self.ref_id}"


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        if len(value) == 1:
            return str(value[0])
        return "(" + "|".join(str(v) for v in value) + ")"
    return str(value)


def variable_values(
    dashboard: Mapping[str, Any], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The value each template variable has when the dashboard opens (its saved ``current``).

    "All" becomes the variable's ``allValue`` or, without one, ``.*`` (Grafana would expand it to the
    alternation of the options it found; pass ``overrides`` to pin a value instead).
    """
    values: dict[str, str] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        if variable.get("type") == "datasource":
            values[name] = "prometheus"
            continue
        current = variable.get("current") or {}
        value = current.get("value", "")
        if value in ("$__all", ["$__all"]):
            values[name] = variable.get("allValue") or ".*"
        else:
            values[name] = _format_value(value)
    values.update(overrides or {})
    return values


_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::(?P<fmt>[\w]+))?\}"  # ${name} and ${name:format}
    r"|\[\[(?P<bracketed>\w+)(?::\w+)?\]\]"  # [[name]] (deprecated)
    r"|\$(?P<plain>\w+)"  # $name
)


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replaces Grafana variable references; an unknown variable raises KeyError."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bracketed") or match.group("plain")
        if name not in values:
            raise KeyError(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def panel_queries(
    dashboard: Mapping[str, Any] | None = None,
    overrides: Mapping[str, str] | None = None,
    builtins: Mapping[str, str] | None = None,
) -> list[PanelQuery]:
    """Every Prometheus target of every panel, with variables substituted."""
    dashboard = load_dashboard() if dashboard is None else dashboard
    values = {**DEFAULT_BUILTINS, **(builtins or {}), **variable_values(dashboard, overrides)}
    queries = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            raw = target.get("expr")
            if not raw:
                continue
            queries.append(
                PanelQuery(
                    panel_id=int(panel.get("id", 0)),
                    panel_title=str(panel.get("title", "")),
                    panel_type=str(panel.get("type", "")),
                    ref_id=str(target.get("refId", "")),
                    raw=raw,
                    expr=substitute(raw, values),
                    instant=bool(target.get("instant")) and not target.get("range"),
                )
            )
    return queries


@dataclass(frozen=True)
class VariableQuery:
    name: str
    raw: str
    selector: str | None  # series selector of label_values(selector, label); None for label_values(label)
    label: str


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$", re.S)


def variable_queries(
    dashboard: Mapping[str, Any] | None = None, overrides: Mapping[str, str] | None = None
) -> list[VariableQuery]:
    """The ``label_values(...)`` queries of the dashboard's query variables, variables substituted."""
    dashboard = load_dashboard() if dashboard is None else dashboard
    values = {**DEFAULT_BUILTINS, **variable_values(dashboard, overrides)}
    result = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        raw = query.get("query", "") if isinstance(query, dict) else str(query)
        match = _LABEL_VALUES.match(raw)
        if match is None:
            raise ValueError(f"variable {variable['name']}: not a label_values() query: {raw!r}")
        selector = match.group("selector")
        result.append(
            VariableQuery(
                name=variable["name"],
                raw=raw,
                selector=substitute(selector, values) if selector else None,
                label=match.group("label"),
            )
        )
    return result


# --- PromQL ----------------------------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKEN = re.compile(r"(?P<num>\d[\w.]*|\.\d[\w.]*)|(?P<ident>[A-Za-z_:][\w:]*)")


def metric_names(expr: str) -> set[str]:
    """Metric names read by a PromQL expression (bare names and ``__name__`` matchers)."""
    names: set[str] = set()
    for op, value in _NAME_MATCHER.findall(expr):
        alternatives = value.split("|") if op == "=~" else [value]
        for alternative in alternatives:
            if not re.fullmatch(r"[A-Za-z_:][\w:]*", alternative):
                raise ValueError(f"__name__ matcher {value!r} is not a list of plain names in {expr!r}")
            names.add(alternative)
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # range and subquery windows
    text = _GROUPING.sub(" ", text)
    for match in _TOKEN.finditer(text):
        ident = match.group("ident")
        if ident is None or ident in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[match.end() :]):
            continue  # function or aggregation
        names.add(ident)
    return names
