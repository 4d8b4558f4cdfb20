"""End to end with the real Prometheus: the shipped dashboard and alert rules against the exporter's --demo.

A real ``prometheus`` (Debian package) scrapes ``python -m exporter --demo --demo.speed 20`` every second and
evaluates ``prometheus/alerts.yml`` every second. Then, through Prometheus' HTTP API:

- every dashboard expression (template variables substituted) is valid and returns data, and every
  ``label_values`` variable query finds values;
- TencentCloudTaskFailed fires for the demo's failed tasks (with CDB's Info text in the description) and
  TencentCloudTaskNotFound for the demo's unknown IDs, while TencentCloudExporterDown stays silent.
  The rules are loaded from a copy with every ``for:`` set to 0s, so the test does not wait 5-15 minutes;
  expressions, labels and annotations are exactly the shipped ones;
- ``promtool check metrics`` finds nothing to complain about in the exporter's /metrics.

All files live under pytest's tmp_path; ports are picked free at run time; every process started is
stopped in a ``finally``. Skipped while ``exporter.simulator.demo`` cannot be imported, and when the
binaries are missing (failed instead with CI=true).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.catalogue.products import CDB, MARIADB

demo = pytest.importorskip(
    "exporter.simulator.demo", reason="exporter.simulator.demo (the --demo simulator) is not available yet"
)

from exporter.catalogue.products import BY_NAME, PRODUCTS  # noqa: E402
from tests.helpers import (  # noqa: E402
    DaemonProcess,
    require_binary,
    wait_for,
)
from tests.promql import REPO, metric_names, panel_queries, variable_queries  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOB = "tencentcloud-task-exporter"  # the job name the alert rules and the example config use
ALERTS = REPO / "prometheus" / "alerts.yml"
# What Grafana would put in for a short range on a 1 s scrape interval.
LIVE_BUILTINS = {
    "__rate_interval": "10s",
    "__interval": "1s",
    "__interval_ms": "1000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
NOT_FOUND_CODES = {code for product in PRODUCTS for code in product.not_found_codes}
TARGET_LABELS = {
    "service": "tencentcloud-task-exporter",
    "region": "k8s-cluster-1",
    "namespace": "monitoring",
    "endpoint": "http-metrics",  # what a Prometheus Operator ServiceMonitor adds: no clash with api_endpoint
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrometheusServer:
    """A real Prometheus on a free loopback port, with its config, data and log under ``workdir``."""

    def __init__(self, binary: str, workdir: Path, target: str, rules: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        self.log = workdir / "prometheus.log"
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                    "rule_files": [str(rules)],
                    # The target labels a kube-prometheus-stack ServiceMonitor adds: the exporter's own labels
                    # must not clash with them (else they arrive as exported_service, exported_region).
                    "scrape_configs": [
                        {
                            "job_name": JOB,
                            "static_configs": [{"targets": [target], "labels": TARGET_LABELS}],
                        }
                    ],
                }
            ),
            encoding="utf-8",
        )

    def __enter__(self) -> PrometheusServer:
        try:
            for _ in range(3):  # a port picked free can be taken before Prometheus binds it: try another
                if self._start(free_port()):
                    return self
                self._stop()
            raise AssertionError(f"prometheus did not start:\n{self.log_tail()}")
        except BaseException:
            self._stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start(self, port: int) -> bool:
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        return False

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; a Prometheus error (for example a PromQL syntax error) fails the test."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=15) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"{path} {params}: HTTP {exc.code}: {exc.read().decode(errors='replace')}"
            ) from exc
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, seconds: int = 30) -> list[dict[str, Any]]:
        end = time.time()
        data = self.api("query_range", query=expr, start=str(end - seconds), end=str(end), step="1")
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, selector: str | None) -> list[str]:
        params = {"match[]": selector} if selector else {}
        values: list[str] = self.api(f"label/{label}/values", **params)
        return values

    def last_rule_evaluation(self) -> float:
        """Unix time of the oldest of the rule groups' last evaluations (0 before every group has run)."""
        groups = self.api("rules")["groups"]
        times = []
        for group in groups:
            stamp = str(group.get("lastEvaluation", ""))
            if not stamp or stamp.startswith("0001-"):
                return 0.0
            # RFC 3339 with nanoseconds, which datetime does not take: the fraction is added apart.
            match = re.fullmatch(r"([^.]+?)(\.\d+)?(Z|[+-]\d\d:\d\d)", stamp)
            assert match is not None, stamp
            whole, fraction, zone = match.groups()
            parsed = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
            times.append(parsed.timestamp() + float(fraction or 0))
        return min(times) if times else 0.0

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return [a for a in alerts if a["labels"].get("alertname") == alertname and a["state"] == "firing"]


def rules_without_for(path: Path) -> Path:
    """A copy of the shipped rules with every `for:` set to 0s (expressions and annotations unchanged)."""
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def exporter() -> Iterator[DaemonProcess]:
    with DaemonProcess(["--demo", "--demo.speed", "20"]) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def prometheus(
    exporter: DaemonProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    rules = rules_without_for(workdir / "alerts.yml")
    target = urllib.parse.urlsplit(exporter.url).netloc
    with PrometheusServer(binary, workdir, target, rules) as server:
        try:
            wait_for(
                lambda: server.query(f'up{{job="{JOB}"}} == 1'),
                60,
                f"Prometheus to scrape the demo exporter at {target}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nprometheus log:\n{server.log_tail()}") from exc
        yield server


def sweeps(exporter: DaemonProcess) -> bool:
    """Whether the exporter runs discovery: it exports a failure streak per swept product and region."""
    status, body = exporter.get("/metrics")
    assert status == 200
    return b"tencentcloud_discovery_consecutive_failed_sweeps{" in body


def reads_discovery(expr: str) -> bool:
    return any(name.startswith("tencentcloud_discovery_") for name in metric_names(expr))


def test_every_dashboard_query_returns_data(exporter: DaemonProcess, prometheus: PrometheusServer) -> None:
    queries = panel_queries(overrides={"job": JOB}, builtins=LIVE_BUILTINS)
    assert queries
    # Without discovery the Discovery panels have nothing to show: Prometheus must still accept their
    # queries (query() fails on an error), but they may be empty.
    may_be_empty = set() if sweeps(exporter) else {q.name for q in queries if reads_discovery(q.expr)}
    deadline = time.monotonic() + 90  # rates need a few scrapes, the demo's failures a few polls
    while True:
        empty = {}
        for query in queries:
            if not prometheus.query(query.expr):
                if query.name not in may_be_empty:
                    empty[query.name] = query.expr
            elif not query.instant and not prometheus.query_range(query.expr):
                empty[query.name + " (range)"] = query.expr
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not empty, "dashboard queries without data:\n" + "\n".join(
        f"{k}:\n  {v}" for k, v in empty.items()
    )


def test_dashboard_variables_find_values(prometheus: PrometheusServer) -> None:
    found = {
        v.name: prometheus.label_values(v.label, v.selector) for v in variable_queries(overrides={"job": JOB})
    }
    assert JOB in found["job"]
    assert {MARIADB.name, CDB.name} <= set(found["product"])
    assert found["cloud_region"], found
    assert {"prod", "staging"} <= set(found["account"]), found  # the demo's two accounts


def test_dashboard_stats_count_the_demo_tasks(prometheus: PrometheusServer) -> None:
    stats = {q.panel_title: q for q in panel_queries(overrides={"job": JOB}, builtins=LIVE_BUILTINS)}

    def value(title: str) -> float:
        result = prometheus.query(stats[title].expr)
        assert len(result) == 1, (title, result)
        return float(result[0]["value"][1])

    wait_for(lambda: value("Failed") >= 1, 60, "the demo's failed tasks to be counted")
    assert value("Pending / running") >= 1
    assert value("Not found / unknown") >= 1  # the demo's unknown IDs
    assert value("Succeeded") >= 1
    assert value("Watched tasks") >= value("Pending / running") + value("Succeeded") + value("Failed")
    assert value("Exporter") == 1


def test_operations_table_counts_every_task_once(prometheus: PrometheusServer) -> None:
    (table,) = (
        q.expr
        for q in panel_queries(overrides={"job": JOB}, builtins=LIVE_BUILTINS)
        if q.panel_title == "Operations by instance and type"
    )
    tasks = f'count(count by (product, cloud_region, task_id) (tencentcloud_task_phase{{job="{JOB}"}} == 1))'

    def rows() -> list[dict[str, Any]]:
        return prometheus.query(table)

    # The demo's Redis and PostgreSQL tasks carry their instance and type.
    wait_for(
        lambda: any(r["metric"].get("instance_id") and r["metric"].get("task_type") for r in rows()),
        60,
        "a row with the instance and type of a demo task",
    )
    wait_for(
        lambda: sum(float(r["value"][1]) for r in rows()) == float(prometheus.query(tasks)[0]["value"][1]),
        30,
        "the table to count every task with a phase exactly once",
    )


def test_task_failed_alert_fires_for_the_demo_failed_tasks(prometheus: PrometheusServer) -> None:
    wait_for(lambda: prometheus.firing("TencentCloudTaskFailed"), 60, "TencentCloudTaskFailed to fire")
    alerts = prometheus.firing("TencentCloudTaskFailed")
    with_info = 0
    for alert in alerts:
        labels = alert["labels"]
        assert labels["severity"] == "warning"
        assert labels["status"] in BY_NAME[labels["product"]].failure_statuses
        assert "exported_service" not in labels
        key = (labels["product"], labels["cloud_region"], labels["task_id"])
        task = 'product="{}", cloud_region="{}", task_id="{}"'.format(*key)
        assert prometheus.query(f'tencentcloud_task_status{{{task}, status="{labels["status"]}"}} == 1'), (
            labels
        )
        description = alert["annotations"]["description"]
        assert labels["task_id"] in description
        assert alert["annotations"]["runbook_url"].endswith("docs/runbook.md#tencentcloudtaskfailed")
        info = [r["metric"].get("info", "") for r in prometheus.query(f"tencentcloud_task_info{{{task}}}")]
        if any(info):
            assert f"Info: {info[0]}" in description, (description, info)
            with_info += 1
    assert with_info, f"no failed CDB task with its Info text among {alerts}"


def test_not_found_alert_fires_for_the_demo_unknown_ids(prometheus: PrometheusServer) -> None:
    wait_for(
        lambda: (
            {MARIADB.name, CDB.name}
            <= {a["labels"]["product"] for a in prometheus.firing("TencentCloudTaskNotFound")}
        ),
        60,
        "TencentCloudTaskNotFound to fire for the unknown MariaDB and CDB IDs",
    )
    alerts = prometheus.firing("TencentCloudTaskNotFound")
    for alert in alerts:  # the code the product answered, from the description's query, once counted
        description = alert["annotations"]["description"]
        if "Code: " in description:
            assert description.rpartition("Code: ")[2].rstrip(".") in NOT_FOUND_CODES, description
    assert {MARIADB.name, CDB.name} <= {a["labels"]["product"] for a in alerts}
    fired_ids = {a["labels"]["task_id"] for a in alerts}
    expected = {
        str(getattr(demo, name))
        for name in ("DEMO_UNKNOWN_FLOW_ID", "DEMO_UNKNOWN_ASYNC_REQUEST_ID")
        if hasattr(demo, name)
    }
    assert expected <= fired_ids


def test_exporter_down_does_not_fire(prometheus: PrometheusServer) -> None:
    # Before the first scrape `absent(up)` holds and the alert (its `for:` removed here) rightly fires; in any
    # order of the tests, judge only rule evaluations made after Prometheus has seen the exporter up.
    wait_for(lambda: prometheus.query(f'up{{job="{JOB}"}} == 1'), 30, "a first scrape of the exporter")
    seen_up = time.time()
    wait_for(lambda: prometheus.last_rule_evaluation() > seen_up, 30, "a rule evaluation after that scrape")
    assert prometheus.firing("TencentCloudExporterDown") == []
    assert prometheus.firing("TencentCloudApiAuthFailure") == []


def test_promtool_check_metrics_is_clean(exporter: DaemonProcess) -> None:
    promtool = require_binary("promtool")
    status, body = exporter.get("/metrics")
    assert status == 200
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=body.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, report
    assert report == "", report


def test_quota_table_names_each_bucket(prometheus: PrometheusServer) -> None:
    """Quota use per (account, endpoint): every row says whose quota at which host, beside the target's
    own `endpoint` label (which a ServiceMonitor sets and must not be renamed)."""
    queries = [
        q
        for q in panel_queries(overrides={"job": JOB}, builtins=LIVE_BUILTINS)
        if q.panel_title == "Quota utilisation per account and endpoint"
    ]
    assert queries

    def rows() -> list[dict[str, Any]]:
        return [row for q in queries for row in prometheus.query(q.expr)]

    wait_for(lambda: {r["metric"].get("account") for r in rows()} >= {"prod", "staging"}, 60, "both accounts")
    for row in rows():
        labels = row["metric"]
        assert labels.get("account") in ("prod", "staging"), labels
        assert labels.get("api_endpoint", "").startswith("127.0.0.1:"), labels
        assert "exported_endpoint" not in labels, labels
