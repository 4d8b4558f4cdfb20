"""Discovery of an instance's tasks end to end (catalogue/instancelists.py, polling/instancesweep.py): the
real daemon sweeping the simulator's busy instances, then each busy instance's running tasks, finds tasks no
config names and follows them to their final status; faults in either list action fail sweeps (counted)
and never touch status polling, and the sweeps recover. The simulator's two answers parse with the
official SDK's models."""

from __future__ import annotations

from pathlib import Path

import yaml
from tencentcloud.sqlserver.v20180328 import models

from exporter.catalogue.products import SQLSERVER_TASKS
from exporter.simulator import Faults, Phase, SimTask, SimulatorThread
from tests.helpers import CREDS, ENV, DaemonProcess, Samples, wait_for
from tests.simulator_sdk import sdk_client
from tests.simulator_sdk import sdk_error as sdk_error_code

PRODUCT = SQLSERVER_TASKS
LISTING = PRODUCT.listing
assert LISTING is not None
assert LISTING.instances is not None
FIRST, SECOND = LISTING.instances.action, LISTING.action  # DescribeDBInstances, DescribeInstanceTasks
REGION = "ap-guangzhou"
RUNNING, SUCCESS, FAILED = 1, 2, 3  # InstanceTask.Status
BUSY_A, BUSY_B, IDLE = "mssql-busy0001", "mssql-busy0002", "mssql-idle0003"
ENDS_AT = 5.0  # seconds after the simulator has them: time to see them running and to inject faults


def _tasks() -> list[SimTask]:
    def task(instance: str, number: int, *phases: Phase, **fields: object) -> SimTask:
        return SimTask(PRODUCT.name, f"{instance}:{number}", phases, region=REGION, **fields)  # type: ignore[arg-type]

    return [
        task(BUSY_A, 101, Phase(0, RUNNING), Phase(ENDS_AT, SUCCESS), started=-30, tags=(("team", "dba"),)),
        task(BUSY_A, 90, Phase(0, SUCCESS), started=-3600),  # long done: not running, so never listed
        task(BUSY_B, 202, Phase(0, RUNNING), Phase(ENDS_AT, FAILED, info="disk full"), started=-20),
        task(IDLE, 303, Phase(0, SUCCESS), started=-600),  # an instance with no running task: not busy
    ]


def _config(path: Path, url: str) -> Path:
    document = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": REGION,
        "apis": {PRODUCT.name: {"endpoint": url}},
        "polling": {"interval": "200ms", "finished_interval": "1s", "timeout": "2s"},
        "watch": {},
        "discovery": {
            "regions": [REGION],
            "products": [PRODUCT.name],
            "interval": "1s",
            "lookback": "1h",
            "tag_labels": ["team"],
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _status(samples: Samples, task_id: str) -> str | None:
    return samples.status(PRODUCT.name, task_id)


def _errors(daemon: DaemonProcess, code: str) -> float:
    found = daemon.scrape().get(
        "tencentcloud_discovery_errors_total", product=PRODUCT.name, cloud_region=REGION, code=code
    )
    return found or 0.0


def test_tasks_nobody_named_are_found_through_their_busy_instances_and_survive_list_faults(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    found_a, found_b = f"{BUSY_A}:101", f"{BUSY_B}:202"
    with DaemonProcess(
        ["--config.file", str(_config(tmp_path / "config.yaml", simulator.url))], env=ENV
    ) as daemon:
        # Given once the daemon is up, so a slow start cannot let the tasks end before a sweep sees them.
        for task in _tasks():
            simulator.add_task(task)
        wait_for(
            lambda: all(_status(daemon.scrape(), t) == "running" for t in (found_a, found_b)),
            5,
            "both running tasks discovered through their busy instances",
        )
        samples = daemon.scrape()
        info = samples.all("tencentcloud_task_info", task_id=found_a)
        assert info, "the discovered task's info series"
        assert info[0][0].get("source") == "discovered"
        assert info[0][0].get("team") == "dba"  # the instance's resource tag
        # Neither the finished task of a busy instance nor any task of an idle one was listed.
        assert not samples.all("tencentcloud_task_status", task_id=f"{BUSY_A}:90")
        assert not samples.all("tencentcloud_task_status", task_id=f"{IDLE}:303")

        # A fault in each list action in turn: sweeps fail and are counted; the status polls go on.
        for action, faults, code in (
            (FIRST, Faults(error_code="InternalError.DBError"), "InternalError.DBError"),
            (SECOND, Faults(error_code="RequestLimitExceeded"), "RequestLimitExceeded"),
        ):
            simulator.set_action_faults(PRODUCT.name, action, faults, sweeps_only=True)
            wait_for(lambda c=code: _errors(daemon, c) >= 1, 6, f"a failed sweep counted as {code}")
            simulator.set_action_faults(PRODUCT.name, action, Faults(), sweeps_only=True)
            wait_for(
                lambda: (
                    daemon.scrape().get(
                        "tencentcloud_discovery_consecutive_failed_sweeps", product=PRODUCT.name
                    )
                    == 0
                ),
                6,
                f"a successful sweep after the {action} fault cleared",
            )

        wait_for(
            lambda: (
                _status(daemon.scrape(), found_a) == "success"
                and _status(daemon.scrape(), found_b) == "failed"
            ),
            8,
            "both discovered tasks at their final status",
        )
        samples = daemon.scrape()
        # Status polling was never touched: no task error, nothing throttled.
        assert not samples.all("tencentcloud_task_errors_total", product=PRODUCT.name)
        assert daemon.get("/-/ready")[0] == 200

    # Every request within its quota: the sweep's buckets and the status lane share DescribeInstanceTasks'.
    stats = simulator.stats()["services"][PRODUCT.name]
    for action in (FIRST, SECOND):
        assert stats[action]["accepted"] > 0, action
        assert stats[action]["throttled"] == 0, (action, stats[action])


def test_the_simulators_busy_instances_and_task_lists_parse_with_the_official_sdk(
    simulator: SimulatorThread,
) -> None:
    for task in _tasks():
        simulator.add_task(task)
    client = sdk_client(PRODUCT.name, simulator.url, CREDS)
    request = models.DescribeDBInstancesRequest()
    request.Status, request.Limit, request.Offset = 7, 100, 0
    busy = client.DescribeDBInstances(request)
    assert busy.TotalCount == 2
    assert [i.InstanceId for i in busy.DBInstances] == [BUSY_A, BUSY_B]
    assert busy.DBInstances[0].ResourceTags[0].TagKey == "team"
    request = models.DescribeInstanceTasksRequest()
    request.InstanceId, request.Limit, request.Status = BUSY_A, 100, RUNNING
    tasks = client.DescribeInstanceTasks(request)
    assert (tasks.TotalCount, [t.Id for t in tasks.InstanceTaskSet]) == (1, [101])
    request.Status = None
    every = client.DescribeInstanceTasks(request)
    assert [(t.Id, t.Status) for t in every.InstanceTaskSet] == [(101, RUNNING), (90, SUCCESS)]
    assert every.InstanceTaskSet[1].EndTime
    assert every.InstanceTaskSet[1].Progress == 100
    request.InstanceId = "mssql-gone"
    assert sdk_error_code(lambda: client.DescribeInstanceTasks(request)) == PRODUCT.not_found_codes[0]
