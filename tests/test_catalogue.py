"""The catalogue (exporter/catalogue/) is the one place per-product facts live; these check what comes
from it: config keys, ID rules, answer parsing (shapes as the official SDKs' models.py give them), the
families a task renders, and that no other module branches on a product's name."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from exporter.catalogue.products import (
    BY_NAME,
    CDB,
    CKAFKA,
    CLB,
    CYNOSDB,
    DCDB,
    DTS,
    FINAL_PHASES,
    KEEWIDB,
    MARIADB,
    MONGODB,
    NOT_FOUND,
    PHASES,
    POSTGRES,
    PRODUCTS,
    REDIS,
    SQLSERVER,
    TDMYSQL,
    UNKNOWN,
    VPC,
    Phase,
    tencent_time,
)
from exporter.catalogue.table import catalogue_table
from exporter.config.parser import parse_config
from exporter.exposition.state import TaskState
from exporter.polling.client import INVALID_RESPONSE, classify
from tests.helpers import Samples

ROOT = Path(__file__).resolve().parent.parent


def answer(product: str, body: dict[str, object]) -> bytes:
    return json.dumps({"Response": {**body, "RequestId": "r-1"}}).encode()


def test_times_are_china_standard_time() -> None:
    assert tencent_time("2024-08-23 00:00:00") == datetime(2024, 8, 22, 16, 0, tzinfo=UTC).timestamp()
    for absent in (None, "", "0000-00-00 00:00:00", "yesterday", 5, "2024-02-30 00:00:00"):
        assert tencent_time(absent) is None


def test_every_product_has_config_keys_and_checks_its_ids() -> None:
    watch = {s.watch_key: ["123" if s.id_kind.integer else "req-1"] for s in PRODUCTS}
    config = parse_config({"region": "ap-guangzhou", "watch": watch}, "c.yaml", {})
    assert sorted(t.product for t in config.tasks) == sorted(s.name for s in PRODUCTS)
    assert set(config.apis) == set(BY_NAME)
    for product in PRODUCTS:
        # The host is the service answering: DTS sync jobs are served by dts.
        assert config.apis[product.name].endpoint == f"https://{product.api_service}.tencentcloudapi.com"
        assert product.payload("123") == {product.id_param: 123 if product.id_kind.integer else "123"}
    with pytest.raises(Exception, match=r"watch.redis_tasks\[0\]: expected a positive integer task ID"):
        parse_config({"region": "ap-guangzhou", "watch": {"redis_tasks": ["abc"]}}, "c.yaml", {})


@pytest.mark.parametrize(
    ("product", "body", "status", "final"),
    [
        (MARIADB.name, {"Status": 2}, "running", False),
        (DCDB.name, {"Status": 0}, "success", True),
        (SQLSERVER.name, {"Status": 1}, "failed", True),
        (CYNOSDB.name, {"Status": 2}, "running", False),
        (CDB.name, {"Status": "KILLED", "Info": "stopped"}, "killed", True),
        (
            MONGODB.name,
            {"Status": "undoed", "StartTime": "2026-11-23 10:00:00", "EndTime": ""},
            "undoed",
            True,
        ),
        (REDIS.name, {"Status": "preparing", "StartTime": "2026-11-23 10:00:00"}, "preparing", False),
        (
            POSTGRES.name,
            {"TotalCount": 1, "TaskSet": [{"TaskId": 5, "Status": "WaitSwitch"}]},
            "waitswitch",
            False,
        ),
        (KEEWIDB.name, {"Status": "error", "TaskMessage": "disk full"}, "error", True),
        (TDMYSQL.name, {"Status": "paused"}, "paused", False),
        (CKAFKA.name, {"Result": {"Status": 1, "Output": "rebalance failed"}}, "failed", True),
        (CLB.name, {"Status": 2, "LoadBalancerIds": ["lb-1"], "Message": ""}, "running", False),
        (VPC.name, {"Status": "FAILED", "Output": "quota", "Result": []}, "failed", True),
        (DTS.name, {"Status": "checkNotPass", "BriefMsg": "no binlog"}, "checknotpass", True),
        (DTS.name, {"Status": "manualPaused"}, "manualpaused", False),
    ],
)
def test_each_products_answer_becomes_a_status(
    product: str, body: dict[str, object], status: str, final: bool
) -> None:
    outcome = classify(200, answer(product, body), BY_NAME[product])
    assert outcome.observation is not None
    assert outcome.observation.status == status
    assert (status in BY_NAME[product].final_statuses) == final
    assert status in BY_NAME[product].statuses


def test_extra_fields_become_families() -> None:
    redis = classify(
        200,
        answer(
            REDIS.name,
            {
                "Status": "running",
                "StartTime": "2026-11-23 18:00:00",
                "TaskType": "配置变更",
                "InstanceId": "crs-1a2b",
                "TaskMessage": "",
            },
        ),
        BY_NAME[REDIS.name],
    )
    postgres = classify(
        200,
        answer(
            POSTGRES.name,
            {
                "TotalCount": 1,
                "TaskSet": [
                    {
                        "TaskId": 9,
                        "Status": "Running",
                        "TaskType": "ModifySpec",
                        "DBInstanceId": "postgres-x1",
                        "StartTime": "2026-11-23 18:00:00",
                        "EndTime": "",
                        "Progress": 42,
                    }
                ],
            },
        ),
        BY_NAME[POSTGRES.name],
    )
    text = ""
    for product, task_id, outcome in ((REDIS.name, "3", redis), (POSTGRES.name, "9", postgres)):
        assert outcome.observation is not None
        state = TaskState(
            parse_config(
                {"region": "ap-guangzhou", "watch": {BY_NAME[product].watch_key: [task_id]}}, "c", {}
            ).tasks[0]
        )
        state.observe(outcome.observation, 0.0)
        text += b"".join(state.lines).decode()
    samples = Samples(text)
    started = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()  # 18:00 in UTC+8
    assert samples.get("tencentcloud_task_start_timestamp_seconds", task_id="3") == started
    assert (
        samples.get("tencentcloud_task_info", task_id="3", task_type="配置变更", instance_id="crs-1a2b") == 1
    )
    assert samples.get("tencentcloud_task_progress_ratio", task_id="9") == 0.42
    assert samples.get("tencentcloud_task_info", task_id="9", instance_id="postgres-x1") == 1
    assert samples.get("tencentcloud_task_end_timestamp_seconds", task_id="9") is None  # still running
    assert samples.get("tencentcloud_task_progress_ratio", task_id="3") is None  # redis gives none


def test_postgres_unknown_id_is_not_found_and_odd_task_sets_are_invalid() -> None:
    empty = classify(200, answer(POSTGRES.name, {"TotalCount": 0, "TaskSet": []}), BY_NAME[POSTGRES.name])
    assert (empty.code, empty.observation) == (NOT_FOUND, None)
    assert NOT_FOUND in BY_NAME[POSTGRES.name].not_found_codes
    for odd in ({"TaskSet": "x"}, {"TaskSet": [1]}, {"TaskSet": [{"Status": 5}]}):
        assert classify(200, answer(POSTGRES.name, odd), BY_NAME[POSTGRES.name]).code == INVALID_RESPONSE


def test_a_status_held_one_level_down_is_read_there() -> None:
    product = BY_NAME[CKAFKA.name]
    done = classify(200, answer(CKAFKA.name, {"Result": {"Status": 0, "Output": "ok"}}), product)
    assert done.observation is not None
    assert (done.observation.status, done.observation.info) == ("success", "ok")
    null = classify(200, answer(CKAFKA.name, {"Result": {"Status": None}}), product)
    assert null.observation is not None
    assert null.observation.status == "unknown"
    for odd in ({}, {"Result": None}, {"Result": [0]}, {"Status": 0}, {"Result": {"Status": "0"}}):
        assert classify(200, answer(CKAFKA.name, odd), product).code == INVALID_RESPONSE


def test_a_request_id_tasks_resources_and_message_are_read() -> None:
    body = {"Status": 1, "LoadBalancerIds": ["lb-9", "lb-8"], "Message": "listener conflict"}
    failed = classify(200, answer(CLB.name, body), BY_NAME[CLB.name])
    assert failed.observation is not None
    assert (failed.observation.status, failed.observation.instance_id, failed.observation.info) == (
        "failed",
        "lb-9",
        "listener conflict",
    )
    assert BY_NAME[CLB.name].id_kind.request_id
    assert BY_NAME[CLB.name].id_kind.canonical("55c85074-3e7f-4c6d-864f-673660d4f8de") is not None


def test_alerts_read_phases_not_status_words() -> None:
    """Every task alert reads the phase: no rule spells a product's status word (a new product's statuses
    need no alert edit), and TencentCloudTaskFailed selects exactly the failed phase."""
    text = (ROOT / "prometheus" / "alerts.yml").read_text()
    assert re.findall(r"status\s*[=!]~", text) == []
    assert re.findall(r'status\s*!?=\s*"', text) == []
    rules = yaml.safe_load(text)
    exprs = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    assert 'tencentcloud_task_phase{phase="failed"}' in exprs["TencentCloudTaskFailed"]
    assert 'tencentcloud_task_phase{phase="not_found"}' in exprs["TencentCloudTaskNotFound"]
    words = {status for product in PRODUCTS for status in product.statuses} - set(PHASES)
    for name, expr in exprs.items():
        quoted = set(re.findall(r'"([^"]*)"', expr))
        assert not quoted & words, (name, quoted & words)


def test_every_status_of_every_product_has_exactly_one_phase() -> None:
    for product in PRODUCTS:
        statuses = [status for status, _ in product.phases]
        assert len(statuses) == len(set(statuses)), product.name  # one phase each, no status twice
        assert set(statuses) == set(product.statuses), product.name
        for status in product.statuses:
            assert product.phase(status) in PHASES, (product.name, status)
            assert product.phase(status) is not Phase.NOT_FOUND, (product.name, status)
        assert [s for s in statuses if product.phase(s) is Phase.SUCCEEDED] == [product.success_status]
        assert {s for s in statuses if product.phase(s) is Phase.FAILED} == set(product.failure_statuses)
        assert product.final_statuses == {s for s in statuses if product.phase(s) in FINAL_PHASES}
        # null, the word unknown and any word the catalogue does not know are unknown
        assert product.phase(None) is Phase.UNKNOWN
        assert product.phase(UNKNOWN) is Phase.UNKNOWN
        assert product.phase("never-documented") is Phase.UNKNOWN


@pytest.mark.parametrize(
    ("product", "status", "phase"),
    [
        (CDB.name, "initial", Phase.PENDING),
        (CDB.name, "paused", Phase.RUNNING),  # "terminating": not final yet
        (CDB.name, "removed", Phase.FAILED),
        (MONGODB.name, "paused", Phase.FAILED),  # "failed, paused": final
        (MONGODB.name, "undoed", Phase.FAILED),
        (REDIS.name, "preparing", Phase.PENDING),
        (REDIS.name, "succeed", Phase.SUCCEEDED),
        (REDIS.name, "error", Phase.FAILED),
        (POSTGRES.name, "waitswitch", Phase.RUNNING),
        (POSTGRES.name, "fail", Phase.FAILED),
        (MARIADB.name, "success", Phase.SUCCEEDED),
        (KEEWIDB.name, "preparing", Phase.PENDING),
        (TDMYSQL.name, "paused", Phase.RUNNING),  # waits for someone to resume it: not final
        (CKAFKA.name, "failed", Phase.FAILED),
        (VPC.name, "success", Phase.SUCCEEDED),
        (DTS.name, "created", Phase.PENDING),
        (DTS.name, "checkpass", Phase.RUNNING),  # waiting to be started
        (DTS.name, "manualpaused", Phase.RUNNING),
        (DTS.name, "checknotpass", Phase.FAILED),  # final: waits for a fix and a new check
    ],
)
def test_each_products_own_words_map_to_the_shared_phase(product: str, status: str, phase: Phase) -> None:
    assert BY_NAME[product].phase(status) is phase


def test_a_product_entry_refuses_phases_that_do_not_add_up() -> None:
    with pytest.raises(ValueError, match="one succeeded"):
        dataclasses.replace(CDB, phases=(("running", Phase.RUNNING), ("done", Phase.FAILED)))
    with pytest.raises(ValueError, match="two phases"):
        dataclasses.replace(CDB, phases=(("ok", Phase.SUCCEEDED), ("ok", Phase.FAILED)))
    with pytest.raises(ValueError, match="not a status's phase"):
        dataclasses.replace(CDB, phases=(("ok", Phase.SUCCEEDED), ("gone", Phase.NOT_FOUND)))


def test_not_found_codes_are_the_not_found_phase() -> None:
    for product in PRODUCTS:
        for code in product.not_found_codes:
            assert product.is_not_found(code), (product.name, code)
        assert product.is_not_found(NOT_FOUND)
        assert not product.is_not_found("Transport.Timeout")
        assert not product.is_not_found(None)


# Where a product's name may be spelled: the catalogue; the demo's scripted stories (any other product gets a
# generic one) and the simulator's stats keys kept for MariaDB and CDB; the tests' product facts.
_MAY_NAME_PRODUCTS = (
    "exporter/catalogue/",
    "exporter/simulator/demo.py",
    "exporter/simulator/gateway.py",
    "tests/products.py",
)


def test_no_module_outside_the_catalogue_names_a_product() -> None:
    names = "|".join(re.escape(s.name) for s in PRODUCTS)
    literal = re.compile(rf"""["'](?:{names})["']""")
    modules = [
        path
        for folder in ("exporter", "tests", "grafana", "prometheus")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if not path.relative_to(ROOT).as_posix().startswith(_MAY_NAME_PRODUCTS)
    ]
    assert len(modules) > 60
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in modules
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert offenders == []


def test_the_product_tables_of_the_readme_and_the_manual_are_the_catalogues() -> None:
    for page in ("README.md", "docs/products.md"):
        assert catalogue_table() in (ROOT / page).read_text(encoding="utf-8"), (
            f"{page}: paste catalogue_table()"
        )


def test_each_product_has_one_success_status_among_its_final_ones() -> None:
    for product in PRODUCTS:
        assert product.success_status in product.final_statuses, product.name
        assert product.success_status not in product.failure_statuses, product.name
        assert product.success_status in product.statuses, product.name
