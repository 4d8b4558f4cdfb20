"""The real daemon (a subprocess) against the real simulator (an aiohttp server on a free port)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from exporter.catalogue.products import CDB, MARIADB
from exporter.simulator import Faults, Phase, SimTask, Simulator, SimulatorThread
from tests.helpers import (
    CREDS,
    ENV,
    DaemonProcess,
    Samples,
    add_running_tasks,
    require_binary,
    wait_for,
    write_config,
)

CDB_A = "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7"
CDB_NULL = "0a6e1bd4-3c7f5e20-8d1e6a77-41bc9f02"
CDB_NOVEL = "c6a9f2d4-7e3b1c8f-9d2a6e4b-3f8c1a7e"
CDB_UNKNOWN = "5b0d7e21-4c3a9f08-a16e2d5b-0f9c8e73"


def test_statuses_follow_their_timelines_and_odd_answers_are_handled(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """Each task moves on only once the exporter has shown its current status (the simulator's task is
    replaced by its next step then), so a slow start on a busy machine cannot skip a status."""
    steps: dict[tuple[str, str], list[SimTask]] = {
        (MARIADB.name, "3340"): [SimTask(MARIADB.name, "3340", (Phase(0, s),)) for s in (2, 0)],
        (MARIADB.name, "3341"): [SimTask(MARIADB.name, "3341", (Phase(0, s),)) for s in (2, 1)],
        (CDB.name, CDB_A): [
            SimTask(CDB.name, CDB_A, (Phase(0, status, info),))
            for status, info in (("INITIAL", ""), ("RUNNING", "Upgrading."), ("SUCCESS", "Upgraded."))
        ],
    }
    for tasks in steps.values():
        simulator.add_task(tasks.pop(0))
    simulator.add_task(SimTask(CDB.name, CDB_NULL, (Phase(0, None, None),)))
    simulator.add_task(SimTask(CDB.name, CDB_NOVEL, (Phase(0, "RUNNING"), Phase(0.5, "ROLLBACK"))))
    watch = {
        "mariadb_flows": [3340, {"id": 3341, "labels": {"team": "dba"}}, 999],
        "cdb_async_requests": [CDB_A, CDB_NULL, CDB_NOVEL, CDB_UNKNOWN],
    }
    config = write_config(tmp_path / "config.yaml", simulator.url, watch)
    seen: dict[tuple[str, str], list[str]] = {key: [] for key in steps}

    with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:

        def settled() -> bool:
            samples = daemon.scrape()
            for (product, task), history in seen.items():
                status = samples.status(product, task)
                if status is not None and (not history or history[-1] != status):
                    history.append(status)
                    if steps[(product, task)]:  # shown: the task takes its next step
                        simulator.add_task(steps[(product, task)].pop(0))
            return not any(steps.values()) and all(
                history[-1:] == [final]
                for history, final in zip(seen.values(), ("success", "failed", "success"), strict=True)
            )

        wait_for(settled, 30, "the tasks to reach their final statuses", interval=0.1)
        samples = daemon.scrape()
        assert daemon.get("/-/healthy")[0] == 200
        assert daemon.get("/-/ready")[0] == 200
        events = daemon.events()
        metrics_text = samples.text

    # Statuses moved through their timelines in order.
    assert seen[(MARIADB.name, "3340")] == ["running", "success"]
    assert seen[(MARIADB.name, "3341")] == ["running", "failed"]
    assert seen[(CDB.name, CDB_A)] == ["initial", "running", "success"]
    assert samples.get("tencentcloud_task_info", task_id=CDB_A, info="Upgraded.") == 1
    assert samples.get("tencentcloud_task_info", task_id="3341", team="dba") == 1
    change = samples.get("tencentcloud_task_status_change_timestamp_seconds", task_id="3341")
    last_success = samples.get("tencentcloud_task_last_poll_success_timestamp_seconds", task_id="3341")
    assert change is not None
    assert last_success is not None
    assert time.time() - 60 < change <= last_success <= time.time()

    # A null Status is "unknown"; a value never documented is its own state, logged once.
    assert samples.status(CDB.name, CDB_NULL) == "unknown"
    assert samples.status(CDB.name, CDB_NOVEL) == "rollback"
    novel_logs = [e for e in events if e.get("msg", "").startswith("undocumented status")]
    assert [(e["product"], e["status"]) for e in novel_logs] == [(CDB.name, "rollback")]

    # Unknown IDs are counted under the API's error code, with no status, and the daemon stays up.
    flow_errors = samples.get(
        "tencentcloud_task_errors_total", task_id="999", code="InvalidParameter.FlowNotFound"
    )
    cdb_errors = samples.get(
        "tencentcloud_task_errors_total", task_id=CDB_UNKNOWN, code="InvalidParameter.InvalidAsyncRequestId"
    )
    assert flow_errors is not None
    assert flow_errors >= 1
    assert cdb_errors is not None
    assert cdb_errors >= 1
    assert samples.status(MARIADB.name, "999") is None
    assert (
        samples.get(
            "tencentcloud_api_errors_total", product=MARIADB.name, code="InvalidParameter.FlowNotFound"
        )
        is not None
    )
    assert daemon.returncode == 0  # SIGTERM is a clean exit

    # The live output passes promtool's lint too (unknown statuses, errors and info labels included).
    promtool = require_binary("promtool")
    lint = subprocess.run([promtool, "check", "metrics"], input=metrics_text, capture_output=True, text=True)
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, "", "")

    # The secret key never leaves the process.
    assert CREDS.secret_key not in metrics_text
    assert all(CREDS.secret_key not in line for line in daemon.lines)


def test_faults_are_counted_by_code_and_recovered_from(simulator: SimulatorThread, tmp_path: Path) -> None:
    faults = {
        "1": Faults(http_status=500),
        "2": Faults(malformed=True),
        "3": Faults(missing_status=True),
        "4": Faults(error_code="InternalError.DbOperationFailed"),
        "5": Faults(latency=1.5),
    }
    for task_id, fault in faults.items():
        simulator.add_task(SimTask(MARIADB.name, task_id, (Phase(0, 2),)).with_faults(fault))
    config = write_config(
        tmp_path / "config.yaml",
        simulator.url,
        {"mariadb_flows": [int(t) for t in faults]},
        timeout="500ms",
        max_backoff="1s",
    )
    expected = {
        "1": "Transport.HTTPStatus",
        "2": "Transport.InvalidResponse",
        "3": "Transport.InvalidResponse",
        "4": "InternalError.DbOperationFailed",
        "5": "Transport.Timeout",
    }
    with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:

        def all_counted() -> bool:
            samples = daemon.scrape()
            return all(
                samples.get("tencentcloud_task_errors_total", task_id=t, code=code)
                for t, code in expected.items()
            )

        wait_for(all_counted, 20, "every fault to be counted under its code")
        for task_id in faults:
            simulator.add_task(SimTask(MARIADB.name, task_id, (Phase(0, 0),)))
        wait_for(
            lambda: all(daemon.scrape().status(MARIADB.name, t) == "success" for t in faults),
            20,
            "every task to recover once the faults stop",
        )
        assert daemon.get("/-/healthy")[0] == 200
        events = daemon.events()
    failures = [e for e in events if e.get("msg") == "task poll failed"]
    assert {e["code"] for e in failures} >= set(expected.values())
    assert any(e.get("msg") == "task poll recovered" for e in events)


def test_quota_is_never_exceeded_and_mostly_used(tmp_path: Path) -> None:
    """Several hundred tasks per API at 250 ms latency: never over the quota, zero throttling, and the quota
    used. How much of it (0.95 and more) is measured by `python -m bench`; a test only checks a floor that a
    loaded or single-core machine still reaches."""
    sim = Simulator([CREDS], latency=0.25)
    per_api = 300
    with SimulatorThread(sim) as simulator:
        watch = add_running_tasks(simulator, per_api, 10_000, "bench-")
        config = write_config(tmp_path / "config.yaml", simulator.url, watch, interval="1s")

        def accepted(action: str) -> int:
            return int(simulator.stats()["actions"].get(action, {}).get("accepted", 0))

        with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:
            # About four seconds of each quota: enough for the sliding-second checks to bind many times.
            wait_for(
                lambda: accepted("DescribeFlow") >= 80 and accepted("DescribeAsyncRequestInfo") >= 160,
                30,
                "80 DescribeFlow and 160 DescribeAsyncRequestInfo answers",
            )
            samples = daemon.scrape()
        stats = simulator.stats()["actions"]

    for action, quota in [("DescribeFlow", 20), ("DescribeAsyncRequestInfo", 40)]:
        action_stats = stats[action]
        assert action_stats["throttled"] == 0, action_stats
        assert action_stats["max_in_window"] <= quota
        rate = (action_stats["accepted"] - 1) / (
            action_stats["last_accepted"] - action_stats["first_accepted"]
        )
        assert rate >= 0.5 * quota, f"{action}: {rate:.1f} req/s of {quota}"
    assert isinstance(samples, Samples)
    assert (samples.get("tencentcloud_api_errors_total", code="RequestLimitExceeded") or 0) == 0
