"""Two products made up for this test, added to a copy of the exporter's catalogue and to nothing else: the
copy takes them everywhere. Its config accepts their watch keys and `apis.<product>`, its simulator answers
them, its exporter polls them and shows them on /metrics with their phases, its task API registers one, `get`
and `wait` read them, its demo has a story for each, its dashboard is the same as without them (it reads
phases, never a product's statuses) and the alert rules fire for them.

One answers like the flow products (an integer Status, integer IDs), the other like CDB (a string Status
with Info, string IDs): a product that reuses an answer shape needs its catalogue entry and nothing more
(docs/adding-a-product.md lists the files; tests/test_adding_a_product.py keeps the two in step).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import CREDS, ENV, DaemonProcess, Samples, require_binary, wait_for
from tests.simulator_sdk import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("exporter", "grafana/generate_dashboard.py", "grafana/dashboard")
# The only file of the copy this test edits.
EDITED = ("exporter/catalogue/products.py",)
FLOW, REQUEST = "acmedb", "widgetdb"
NOT_FOUND = "ResourceNotFound"
MADE_UP = f'''
# Made up by tests/test_made_up_products.py: one product answering like the flows, one like CDB.
ACMEDB = flow_product("{FLOW}", "AcmeDB", "DescribeAcmeFlow", "2031-01-01", ("{NOT_FOUND}",))
WIDGETDB = Product(
    name="{REQUEST}",
    title="WidgetDB",
    action="DescribeWidgetRequest",
    version="2031-02-02",
    id_param="WidgetRequestId",
    id_kind=ASYNC_REQUEST_ID,
    watch_key="{REQUEST}_requests",
    default_endpoint="https://{REQUEST}.tencentcloudapi.com",
    default_rate_limit=20.0,
    phases=(
        ("queued", Phase.PENDING),
        ("running", Phase.RUNNING),
        ("success", Phase.SUCCEEDED),
        ("failed", Phase.FAILED),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_fields(info="Info"),
    not_found_codes=("{NOT_FOUND}",),
    answer_shape=STATUS_INFO_ANSWER,
    extra_fields=("Info",),
)
PRODUCTS = (*PRODUCTS, ACMEDB, WIDGETDB)
'''
TOKEN = "made-up-products-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REGION = "ap-guangzhou"


def copy_with_made_up_products(root: Path) -> Path:
    """The exporter (and the dashboard's generator) copied under `root`, the two products in its catalogue."""
    for name in COPIED:
        source, target = ROOT / name, root / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    catalogue = root / EDITED[0]
    text = catalogue.read_text()
    anchor = "BY_NAME: Mapping[str, Product] ="
    assert text.count(anchor) == 1
    catalogue.write_text(text.replace(anchor, MADE_UP + anchor))
    return root


def edited_files(root: Path) -> set[str]:
    """The copy's files that differ from the repository's."""
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and (ROOT / path.relative_to(root)).read_bytes() != path.read_bytes()
    }


def scenario(path: Path) -> Path:
    flows = [
        {"product": FLOW, "task_id": "101", "phases": [{"at": 0, "status": 2}, {"at": 1, "status": 0}]},
        {"product": FLOW, "task_id": "102", "phases": [{"at": 0, "status": 1}]},
    ]
    requests = [
        {
            "product": REQUEST,
            "task_id": task_id,
            "phases": [{"at": 0, "status": "RUNNING", "info": "working"}, {"at": done, "status": "SUCCESS"}],
        }
        for task_id, done in (("req-1", 1), ("req-2", 3600))
    ]
    failed = {"product": REQUEST, "task_id": "req-3", "phases": [{"at": 0, "status": "FAILED", "info": "no"}]}
    path.write_text(json.dumps({"tasks": [*flows, *requests, failed]}))
    return path


def config(path: Path, url: str) -> Path:
    document = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": REGION,
        "apis": {FLOW: {"endpoint": url}, REQUEST: {"endpoint": url, "rate_limit": 10}},
        "polling": {"interval": "200ms", "finished_interval": "1s", "timeout": "2s", "max_backoff": "1s"},
        "watch": {f"{FLOW}_flows": [101, 102, 999], f"{REQUEST}_requests": ["req-1", "req-3"]},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def cli(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=copy,
        env={**os.environ, **ENV},
    )


# Run in the copy: what its demo makes of the made-up products, which have no scripted story there.
DEMO = """
import json
from exporter.simulator.demo import demo_config, demo_tasks
tasks = [t for t in demo_tasks() if t.product in {products}]
watched = [t for t in demo_config("http://127.0.0.1:9").tasks if t.product in {products}]
seen = sorted({{(t.product, p.status) for t in tasks for p in t.phases}}, key=str)
print(json.dumps({{"tasks": len(tasks), "watched": len(watched), "statuses": seen}}))
"""


def series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


def alert_test(samples: Samples) -> dict[str, Any]:
    """A promtool unit test over series as the exporter exported them: the alert rules' expressions (of
    TaskFailed and TaskNotFound, as alerts.yml has them) select the failed tasks and the unknown flow ID,
    from the phases the copy's exporter gave them."""
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    exprs = {
        rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule
    }
    failed = [
        labels
        for product in (FLOW, REQUEST)
        for labels, value in samples.all("tencentcloud_task_phase", product=product, phase="failed")
        if value == 1
    ]
    assert {labels["product"] for labels in failed} == {FLOW, REQUEST}
    statuses = [
        labels
        for labels, value in samples.all("tencentcloud_task_status")
        if value == 1 and labels["product"] in (FLOW, REQUEST)
    ]
    [(missing, found)] = samples.all(
        "tencentcloud_task_phase", product=FLOW, task_id="999", phase="not_found"
    )
    assert found == 1
    inputs = [
        {"series": series(name, labels), "values": "1+0x20"}
        for name, chosen in (
            ("tencentcloud_task_phase", [*failed, missing]),
            ("tencentcloud_task_status", statuses),
        )
        for labels in chosen
    ]

    def selects(alert: str, tasks: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "expr": f"count by (product, task_id) ({exprs[alert]})",
            "eval_time": "10m",
            "exp_samples": [
                {"labels": series("", {k: labels[k] for k in ("product", "task_id")}), "value": 1}
                for labels in tasks
            ],
        }

    return {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    selects("TencentCloudTaskFailed", failed),
                    selects("TencentCloudTaskNotFound", [missing]),
                ],
            }
        ],
    }


def test_made_up_products_need_only_their_catalogue_entry(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    copy = copy_with_made_up_products(tmp_path / "copy")
    assert edited_files(copy) == set(EDITED)
    path = config(tmp_path / "config.yaml", "http://127.0.0.1:9")
    # The config's checks accept the watch keys and `apis.<product>`: `check-config` runs them.
    checked = cli(copy, "--config.file", str(path), "--check-config")
    assert checked.returncode == 0, checked.stderr

    keys = ["--secret-id", CREDS.secret_id, "--secret-key", CREDS.secret_key]
    with SimulatorProcess(["--scenario", str(scenario(tmp_path / "scenario.json")), *keys], cwd=copy) as sim:
        path = config(path, sim.url)
        env = {**ENV, "TENCENTCLOUD_EXPORTER_API_TOKEN": TOKEN}
        with DaemonProcess(["--config.file", str(path)], env=env, cwd=copy) as daemon:
            expected = {(FLOW, "101"): "success", (FLOW, "102"): "failed", (REQUEST, "req-1"): "success"}
            wait_for(
                lambda: (
                    all(daemon.scrape().status(p, t) == s for (p, t), s in expected.items())
                    and daemon.scrape().get("tencentcloud_task_errors_total", product=FLOW, task_id="999")
                ),
                10,
                "the made-up products' tasks to be polled to their final statuses",
            )
            status, answer = daemon.request(
                "POST", "/api/v1/tasks", {"product": REQUEST, "id": "req-2"}, AUTH
            )
            assert status == 201, answer
            wait_for(lambda: daemon.scrape().status(REQUEST, "req-2") == "running", 10, "the registered task")
            samples = daemon.scrape()
        # The answer's Info, as the shape reused from CDB carries it.
        assert samples.get("tencentcloud_task_info", product=REQUEST, task_id="req-2", info="working") == 1
        assert sim.stats()["services"].keys() == {FLOW, REQUEST}

        got = cli(
            copy, "get", FLOW, "101", "999", REQUEST, "req-1", "--output", "json", "--config.file", str(path)
        )
        tasks = {(t["product"], t["id"]): t for t in json.loads(got.stdout)["tasks"]}
        assert tasks[FLOW, "101"]["status"] == "success", got.stdout
        assert tasks[REQUEST, "req-1"]["status"] == "success", got.stdout
        assert tasks[FLOW, "999"]["status"] is None, got.stdout
        waited = cli(copy, "wait", REQUEST, "req-1", FLOW, "101", "--config.file", str(path))
        assert waited.returncode == 0, waited.stderr

    demo = subprocess.run(
        [sys.executable, "-c", DEMO.format(products=repr((FLOW, REQUEST)))],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=copy,
    )
    assert demo.returncode == 0, demo.stderr
    story = json.loads(demo.stdout)
    # Every task watched, plus each product's unknown ID; every documented status played (flows: 0, 1, 2).
    assert story["watched"] == story["tasks"] + 2
    assert {(p, s) for p, s in story["statuses"]} >= {
        *((FLOW, code) for code in (0, 1, 2)),
        *((REQUEST, status) for status in ("running", "success", "failed")),
    }

    dashboard = tmp_path / "dashboard.json"
    generated = subprocess.run(
        [sys.executable, "grafana/generate_dashboard.py", "--output", str(dashboard)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=copy,
        env={**os.environ, "PYTHONPATH": str(copy)},
    )
    assert generated.returncode == 0, generated.stderr
    # The dashboard reads phases: two more products change nothing in it.
    committed = ROOT / "grafana" / "dashboards" / "tencentcloud-task-exporter.json"
    assert dashboard.read_text() == committed.read_text()

    rules_test = tmp_path / "alerts_test.yml"
    rules_test.write_text(yaml.safe_dump(alert_test(samples)))
    result = subprocess.run(
        [promtool, "test", "rules", str(rules_test)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
