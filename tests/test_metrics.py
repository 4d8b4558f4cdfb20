"""The exposition: state sets, pre-rendered task lines, both formats, and promtool's lint."""

from __future__ import annotations

import subprocess

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from exporter.catalogue.products import CDB, MARIADB, Observation
from exporter.config.parser import WatchedTask
from exporter.exposition.metrics import Metrics
from exporter.exposition.state import TaskStore
from exporter.polling.client import Outcome
from exporter.polling.ratelimit import TokenBucket
from tests.helpers import Samples, require_binary, status_lane

NOW = 1_763_856_000.5


def populated() -> tuple[Metrics, TaskStore]:
    metrics = Metrics()
    store = TaskStore()
    flow = store.add(WatchedTask(MARIADB.name, "3340", "ap-guangzhou", (("team", "dba"),)))
    flow.observe(Observation("running"), NOW)
    cdb = store.add(WatchedTask(CDB.name, "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7", "ap-shanghai"))
    cdb.observe(Observation("success", 'Dropped "t1"\nback\\slash'), NOW)
    novel = store.add(WatchedTask(CDB.name, "novel-1", "ap-shanghai"))
    novel.observe(Observation("rollback"), NOW)
    unknown = store.add(WatchedTask(MARIADB.name, "999", "ap-guangzhou"))
    unknown.fail("InvalidParameter.FlowNotFound", NOW)
    unknown.fail("InvalidParameter.FlowNotFound", NOW + 1)
    store.add(WatchedTask(CDB.name, "never-polled", "ap-guangzhou"))
    for product in (MARIADB, CDB):
        metrics.lane_opened(status_lane(product), TokenBucket(product.default_rate_limit))
    metrics.observe_api(status_lane(MARIADB), MARIADB, Outcome(None, Observation("running"), duration=0.12))
    metrics.observe_api(
        status_lane(MARIADB), MARIADB, Outcome("InvalidParameter.FlowNotFound", duration=0.05)
    )
    metrics.observe_api(status_lane(CDB), CDB, Outcome("Transport.Timeout", duration=10.0))
    metrics.set_watched(store.count_by_account(["default"]))
    return metrics, store


def test_status_is_a_state_set_with_exactly_one_current_value() -> None:
    metrics, store = populated()
    samples = Samples(metrics.render(store).decode())
    flow = samples.all("tencentcloud_task_status", product=MARIADB.name, task_id="3340")
    assert {labels["status"]: value for labels, value in flow} == {"success": 0, "failed": 0, "running": 1}
    cdb = samples.all(
        "tencentcloud_task_status", product=CDB.name, task_id="f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7"
    )
    assert sorted(labels["status"] for labels, _ in cdb) == sorted(CDB.statuses)
    assert samples.status(CDB.name, "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7") == "success"
    # An undocumented value is its own state beside the documented ones.
    assert samples.status(CDB.name, "novel-1") == "rollback"
    assert len(samples.all("tencentcloud_task_status", task_id="novel-1")) == len(CDB.statuses) + 1


def test_no_status_before_the_first_successful_poll() -> None:
    metrics, store = populated()
    samples = Samples(metrics.render(store).decode())
    assert samples.all("tencentcloud_task_status", task_id="never-polled") == []
    assert samples.all("tencentcloud_task_status", task_id="999") == []
    assert samples.get("tencentcloud_task_info", task_id="never-polled") == 1
    assert (
        samples.get("tencentcloud_task_errors_total", task_id="999", code="InvalidParameter.FlowNotFound")
        == 2
    )


def test_timestamps_info_and_user_labels() -> None:
    metrics, store = populated()
    samples = Samples(metrics.render(store).decode())
    assert samples.get("tencentcloud_task_status_change_timestamp_seconds", task_id="3340") == NOW
    assert samples.get("tencentcloud_task_last_poll_success_timestamp_seconds", task_id="3340") == NOW
    [(labels, value)] = samples.all("tencentcloud_task_info", task_id="3340")
    assert labels["team"] == "dba"
    assert value == 1
    [(labels, _)] = samples.all("tencentcloud_task_info", task_id="f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7")
    assert labels["info"] == 'Dropped "t1"\nback\\slash'


def test_api_and_exporter_metrics() -> None:
    metrics, store = populated()
    samples = Samples(metrics.render(store).decode())
    assert samples.get("tencentcloud_api_requests_total", product=MARIADB.name, action="DescribeFlow") == 2
    assert (
        samples.get("tencentcloud_api_requests_total", product=CDB.name, action="DescribeAsyncRequestInfo")
        == 1
    )
    assert samples.get("tencentcloud_api_errors_total", product=CDB.name, code="Transport.Timeout") == 1
    assert samples.get("tencentcloud_api_request_duration_seconds_count", product=MARIADB.name) == 2
    assert samples.get("tencentcloud_api_rate_limit_requests_per_second", product=CDB.name) == 40
    assert samples.get("tencentcloud_api_current_rate_limit_requests_per_second", product=CDB.name) == 40
    cdb_host = {"account": "default", "api_endpoint": "cdb.tencentcloudapi.com"}
    assert samples.get("tencentcloud_api_requests_total", product=CDB.name, **cdb_host) == 1
    assert samples.get("tencentcloud_exporter_watched_tasks", product=MARIADB.name) == 2
    assert samples.get("tencentcloud_exporter_watched_tasks", product=CDB.name) == 3
    assert samples.get("tencentcloud_exporter_build_info") == 1


def test_openmetrics_output_parses() -> None:
    metrics, store = populated()
    text = metrics.render(store, openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["tencentcloud_task_errors"].type == "counter"
    assert families["tencentcloud_task"].type == "info"
    assert families["tencentcloud_task_status"].type == "gauge"


def test_promtool_finds_nothing_to_lint() -> None:
    promtool = require_binary("promtool")
    metrics, store = populated()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=metrics.render(store), capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b""
    assert result.stderr.strip() == b""


def test_relabelled_task_keeps_what_was_learnt() -> None:
    store = TaskStore()
    state = store.add(WatchedTask(MARIADB.name, "1", "ap-guangzhou"))
    state.observe(Observation("running"), NOW)
    relabelled = store.add(WatchedTask(MARIADB.name, "1", "ap-guangzhou", (("team", "x"),)))
    assert relabelled.status == "running"
    assert b'team="x"' in b"".join(relabelled.lines)


def test_every_throttling_code_of_a_product_is_counted_as_throttled() -> None:
    metrics = Metrics()
    for code in (
        "RequestLimitExceeded",
        "RequestLimitExceeded.UinLimitExceeded",
        "RequestLimitExceeded.IPLimitExceeded",
        "LimitExceeded.TooFrequentlyCalled",  # MariaDB's own
        "InvalidParameter.FlowNotFound",  # not throttling
        "RequestLimitExceededButNotReally",  # not a sub-code
    ):
        metrics.observe_api(status_lane(MARIADB), MARIADB, Outcome(code))
        metrics.observe_api(status_lane(CDB), CDB, Outcome(code))
    throttled = "tencentcloud_api_throttled_requests_total"
    get = metrics.registry.get_sample_value
    lane = {"account": "default", "api_endpoint": "mariadb.tencentcloudapi.com"}
    assert get(throttled, {"product": MARIADB.name, "action": "DescribeFlow", **lane}) == 4
    lane = {"account": "default", "api_endpoint": "cdb.tencentcloudapi.com"}
    assert get(throttled, {"product": CDB.name, "action": "DescribeAsyncRequestInfo", **lane}) == 3
