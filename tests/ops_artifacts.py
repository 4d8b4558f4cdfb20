"""What the checks of the shipped operations artifacts share (test_ops_alerts.py, test_ops_dashboard.py,
test_ops_queries.py): where the artifacts are, which metrics they may use, the account and bucket labels, and
helpers that run promtool and read the alert rules, the runbook and the dashboard generator.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers import require_binary, require_module
from tests.promql import CONTRACT_METRICS, REPO, SCRAPE_METRICS, PanelQuery, metric_names

PROMETHEUS_DIR = REPO / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_EXAMPLE = PROMETHEUS_DIR / "prometheus.example.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
GENERATOR = REPO / "grafana" / "generate_dashboard.py"
PROVISIONING = REPO / "grafana" / "provisioning"

# Discovery's metrics (polling/discovery.py, exposition/metrics.py). They appear in a rendering only once a
# (product, region) is swept, so CONTRACT_METRICS, read off a rendering without discovery, lacks them;
# test_discovery_metrics_are_declared_by_the_exporter keeps this list honest instead.
DISCOVERY_METRICS = frozenset(
    {
        "tencentcloud_discovery_sweeps_total",
        "tencentcloud_discovery_errors_total",
        "tencentcloud_discovery_last_success_timestamp_seconds",
        "tencentcloud_discovery_consecutive_failed_sweeps",
        "tencentcloud_discovery_tasks",
        "tencentcloud_discovery_last_sweep_duration_seconds",
        "tencentcloud_discovery_interval_seconds",
    }
)
# The rate a bucket allows now (lowered after throttling), exported with the per-(account, endpoint) buckets.
# Like the discovery metrics, kept honest by test_bucket_metrics_are_declared_by_the_exporter until a
# rendering has it.
BUCKET_METRICS = frozenset({"tencentcloud_api_current_rate_limit_requests_per_second"})
# Each account's credentials (daemon/credentialstate.py), a collector the daemon registers beside Metrics;
# kept honest by test_credential_metrics_are_declared_by_the_exporter.
CREDENTIAL_METRICS = frozenset(
    {"tencentcloud_exporter_credentials_available", "tencentcloud_exporter_credentials_failures_total"}
)
# The recording rules of alerts.yml (level:metric:operations): alerts and panels may read what they record.
RECORDED_METRICS = frozenset(
    rule["record"]
    for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    for rule in group["rules"]
    if "record" in rule
)
ALLOWED_METRICS = (
    CONTRACT_METRICS
    | SCRAPE_METRICS
    | DISCOVERY_METRICS
    | BUCKET_METRICS
    | CREDENTIAL_METRICS
    | RECORDED_METRICS
)

# The label every per-task, per-API and discovery series carries: the config's account name ("default" without
# an `accounts:` section). Per-API series also carry `api_endpoint` (the endpoint's host[:port]; `endpoint` is
# a Kubernetes target label): one token bucket (one quota) per (account, product, action, api_endpoint).
ACCOUNT_FILTER = 'account=~"$account"'
BUCKET = ("account", "product", "action", "api_endpoint")


def carries_account(name: str) -> bool:
    """Whether the exporter's series of this name carry the `account` label."""
    if name == "tencentcloud_discovery_interval_seconds":
        return False  # one number for the whole process
    scoped = ("tencentcloud_task_", "tencentcloud_api_", "tencentcloud_discovery_")
    return name.startswith(scoped) or name == "tencentcloud_exporter_watched_tasks"


def selectors_without(expr: str, wanted: str) -> list[str]:
    """The selectors of account-carrying series in ``expr`` whose label matchers lack ``wanted``.

    Names selected by a metric name (followed by its ``{...}`` or by nothing) and by ``__name__`` matchers
    (``{__name__=~"a|b", ...}``) both count.
    """
    missing = []
    for name in sorted(n for n in metric_names(expr) if carries_account(n)):
        for match in re.finditer(rf'(?<![\w:"|]){re.escape(name)}(?![\w:])\s*(\{{[^{{}}]*\}})?', expr):
            if wanted not in (match.group(1) or ""):
                missing.append(match.group(0))
    for match in re.finditer(r'\{[^{}]*__name__\s*=~?\s*"([^"]*)"[^{}]*\}', expr):
        if any(carries_account(n) for n in match.group(1).split("|")) and wanted not in match.group(0):
            missing.append(match.group(0))
    return missing


def groupings(expr: str) -> list[tuple[str, list[str]]]:
    """Every ``by (...)`` and ``on (...)`` clause of ``expr``: the keyword and its labels."""
    return [
        (keyword, [label.strip() for label in labels.split(",") if label.strip()])
        for keyword, labels in re.findall(r"\b(by|on)\s*\(([^()]*)\)", expr)
    ]


def run(
    cmd: list[str], cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^##\s+(.+?)\s*$", RUNBOOK.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def load_generator() -> ModuleType:
    require_module("grafana_foundation_sdk", "pip install the project's 'dashboards' extra")
    spec = importlib.util.spec_from_file_location("generate_dashboard", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_columns(panel: dict[str, Any]) -> list[str]:
    """A table's fields in the order its organize transformation puts them."""
    (organize,) = (t["options"] for t in panel["transformations"] if t["id"] == "organize")
    index: dict[str, int] = organize.get("indexByName", {})
    return sorted(index, key=index.__getitem__)


def assert_declared_by_the_exporter(names: frozenset[str], prefix: str) -> None:
    sources = {path: path.read_text(encoding="utf-8") for path in sorted((REPO / "exporter").rglob("*.py"))}
    if not any(prefix in text for text in sources.values()):
        pytest.skip(f"the exporter has no {prefix}* metrics yet")
    text = "\n".join(sources.values())
    for name in sorted(names):
        # prometheus_client appends _total to a Counter's name itself.
        declared = name.removesuffix("_total")
        assert f'"{declared}"' in text, f"{name}: used by the artifacts, declared nowhere in exporter/"


def by_title(queries: list[PanelQuery], title: str, ref_id: str = "A") -> str:
    return next(q.expr for q in queries if q.panel_title == title and q.ref_id == ref_id)


def promtool_expr_test(
    tmp_path: Path, series: dict[str, str], expected: list[tuple[str, list[tuple[str, float]]]]
) -> None:
    """promtool evaluates each expression at 10m over ``series`` (1m apart) and compares its samples."""
    promtool = require_binary("promtool")
    document = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "10m",
                        "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
                    }
                    for expr, samples in expected
                ],
            }
        ],
    }
    path = tmp_path / "queries_test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result = run([promtool, "test", "rules", path.name], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
