"""The shipped alert rules and runbook: promtool checks and unit tests, the example scrape config, and the
conventions (mixin style, the account in every grouping, per-bucket API alerts, a runbook section each).

promtool (Debian's ``prometheus`` package) is skipped when missing, except with CI=true, where it fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import require_binary
from tests.ops_artifacts import (
    ALERTS,
    ALERTS_TEST,
    ALLOWED_METRICS,
    BUCKET,
    PROMETHEUS_DIR,
    PROMETHEUS_EXAMPLE,
    RUNBOOK,
    alert_rules,
    carries_account,
    groupings,
    run,
    runbook_anchors,
    selectors_without,
)
from tests.promql import (
    metric_names,
    panel_queries,
)

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
    """Unknown IDs have their own alert (on the not_found phase): the error ratio skips every product's
    not-found code, only those."""
    from exporter.catalogue.products import PRODUCTS

    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    assert 'phase="not_found"' in exprs["TencentCloudTaskNotFound"]
    skipped = re.search(r'code!~"([^"]+)"', exprs["TencentCloudApiErrorRatioHigh"])
    assert skipped is not None
    assert set(skipped.group(1).split("|")) == {c for p in PRODUCTS for c in p.not_found_codes}


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
