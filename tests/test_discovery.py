"""Discovery end to end: the real daemon (a subprocess) sweeping the real simulator's list APIs, with an empty
watch list; plus the config section and the retention rules on their own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.catalogue.products import (
    CDB,
    CYNOSDB,
    DCDB,
    MARIADB,
    MONGODB,
    POSTGRES,
    PRODUCTS,
    REDIS,
    SQLSERVER,
)
from exporter.config.parser import ConfigError, parse_config
from exporter.simulator import Faults, Phase, SimTask, SimulatorThread
from tests.helpers import ENV, DaemonProcess, Samples, swept, wait_for, wait_for_sweeps

REGION = "ap-guangzhou"
CDB_ID = "2d8f6b1e-93a4c7d0-5e1f8b2a-c6d3e9f4"
WATCHED_CDB_ID = "7c4e2a9b-1f6d8e3c-b5a07d4f-e2c9b6a1"


def _config(path: Path, url: str, watch: dict[str, list[Any]] | None = None, **discovery: Any) -> Path:
    document = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": REGION,
        "apis": {MARIADB.name: {"endpoint": url}, CDB.name: {"endpoint": url}},
        "polling": {"interval": "200ms", "finished_interval": "500ms", "timeout": "2s"},
        "watch": watch or {},
        "discovery": {
            "regions": [REGION],
            "products": [CDB.name, MARIADB.name],
            "interval": "1s",
            "lookback": "1h",
            "tag_labels": ["team"],
            **discovery,
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _gauge(daemon: DaemonProcess, name: str, **labels: str) -> float | None:
    return daemon.scrape().get(name, product=CDB.name, cloud_region=REGION, **labels)


def _info(samples: Samples, task_id: str) -> dict[str, str] | None:
    found = samples.all("tencentcloud_task_info", task_id=task_id)
    return found[0][0] if found else None


def test_operations_nobody_named_are_discovered_polled_to_the_end_and_forgotten(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    config = _config(tmp_path / "config.yaml", simulator.url, retention="2s")
    with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:
        # The first sweeps have run and found nothing: the operations below start after the daemon did.
        wait_for(
            lambda: daemon.scrape().get(
                "tencentcloud_discovery_last_success_timestamp_seconds", product=CDB.name
            ),
            10,
            "a first successful cdb sweep",
        )
        simulator.add_task(
            SimTask(
                CDB.name,
                CDB_ID,
                (Phase(0, "RUNNING"), Phase(3, "SUCCESS", "Parameters modified.")),
                task_type="MODIFY PARAM",
                instance_id="cdb-k2v9x1aa",
            )
        )
        simulator.add_task(
            SimTask(
                MARIADB.name,
                "8801",
                (Phase(0, 2), Phase(3, 0)),
                instance_id="tdsql-ow728lmc",
                instance_name="orders-prod",
                tags=(("team", "dba"), ("cost_center", "42")),
            )
        )
        # Within one interval (1 s) plus one poll (200 ms); `python -m bench --discovery` measures how soon,
        # the deadline leaves room for a loaded machine.
        wait_for(
            lambda: _info(daemon.scrape(), CDB_ID) and _info(daemon.scrape(), "8801"),
            15,
            "both operations on /metrics",
            interval=0.1,
        )
        samples = daemon.scrape()
        cdb, flow = _info(samples, CDB_ID), _info(samples, "8801")
        assert cdb is not None
        assert flow is not None
        assert cdb["source"] == "discovered"
        assert (cdb["instance_id"], cdb["task_type"]) == ("cdb-k2v9x1aa", "MODIFY PARAM")
        assert flow["source"] == "discovered"
        assert (flow["instance_id"], flow["instance_name"]) == ("tdsql-ow728lmc", "orders-prod")
        assert flow["team"] == "dba"
        assert "cost_center" not in flow  # only the configured tag keys
        # The list API gives CDB's start time, which its status API lacks.
        start = samples.get("tencentcloud_task_start_timestamp_seconds", task_id=CDB_ID)
        assert start is not None
        assert abs(start - time.time()) < 30
        # The /tasks page shows instance, type, source and how long it has been running.
        status, page = daemon.get("/tasks")
        assert status == 200
        row = next(line for line in page.decode().splitlines() if CDB_ID in line)
        for shown in (">cdb-k2v9x1aa<", "<td>MODIFY PARAM ", ">discovered<", 'class="running">running '):
            assert shown in row, (shown, row)

        wait_for(
            lambda: (
                daemon.scrape().status(CDB.name, CDB_ID) == "success"
                and daemon.scrape().status(MARIADB.name, "8801") == "success"
            ),
            15,
            "both operations to succeed",
        )
        samples = daemon.scrape()
        assert samples.get("tencentcloud_discovery_tasks", product=CDB.name, cloud_region=REGION) == 1
        # Gone after retention (2 s after they ended), and the list (which still shows the CDB task) does
        # not bring it back.
        wait_for(
            lambda: _info(daemon.scrape(), CDB_ID) is None and _info(daemon.scrape(), "8801") is None,
            15,
            "both operations forgotten after retention",
        )
        wait_for_sweeps(daemon, CDB.name, REGION, swept(daemon.scrape(), CDB.name, REGION), 2)
        samples = daemon.scrape()
        assert _info(samples, CDB_ID) is None
        assert samples.get("tencentcloud_discovery_tasks", product=CDB.name, cloud_region=REGION) == 0
        assert samples.get("tencentcloud_discovery_consecutive_failed_sweeps", product=CDB.name) == 0
        events = daemon.events()

    assert any(e.get("msg") == "tasks discovered" and e.get("product") == CDB.name for e in events)
    # Zero quota violations on every action, list and status alike.
    for product, actions in simulator.stats()["services"].items():
        for action, stats in actions.items():
            assert stats["throttled"] == 0, (product, action, stats)
            assert stats["accepted"] > 0, (product, action)


def test_a_failing_list_api_leaves_status_polling_and_discovered_tasks_alone(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    simulator.add_task(SimTask(CDB.name, WATCHED_CDB_ID, (Phase(0, "RUNNING"),)))
    simulator.add_task(SimTask(CDB.name, CDB_ID, (Phase(0, "RUNNING"),), instance_id="cdb-k2v9x1aa"))
    config = _config(tmp_path / "config.yaml", simulator.url, {"cdb_async_requests": [WATCHED_CDB_ID]})
    with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:
        wait_for(lambda: _info(daemon.scrape(), CDB_ID), 10, "the discovered task")
        assert (_info(daemon.scrape(), WATCHED_CDB_ID) or {}).get("source") == "config"

        simulator.set_action_faults(CDB.name, "DescribeTasks", Faults(error_code="InternalError.DBError"))

        def failing() -> bool:
            return (_gauge(daemon, "tencentcloud_discovery_consecutive_failed_sweeps") or 0) >= 3

        wait_for(failing, 15, "three failed cdb sweeps in a row")
        samples = daemon.scrape()
        errors = _gauge(daemon, "tencentcloud_discovery_errors_total", code="InternalError.DBError")
        assert errors is not None
        assert errors >= 3
        # Status polling went on at its own pace, without a single error, for both tasks.
        for task_id in (WATCHED_CDB_ID, CDB_ID):
            last = samples.get("tencentcloud_task_last_poll_success_timestamp_seconds", task_id=task_id)
            assert last is not None, task_id
            assert time.time() - last < 3, task_id
        assert not samples.all("tencentcloud_api_errors_total", action="DescribeAsyncRequestInfo")
        # The task found before the failures stays watched.
        assert (_info(samples, CDB_ID) or {}).get("source") == "discovered"

        simulator.set_action_faults(CDB.name, "DescribeTasks", Faults())
        wait_for(
            lambda: (
                daemon.scrape().get("tencentcloud_discovery_consecutive_failed_sweeps", product=CDB.name) == 0
            ),
            10,
            "a successful sweep after the fault cleared",
        )
        assert daemon.get("/-/ready")[0] == 200


def test_the_discovery_section_is_checked_with_every_problem_named() -> None:
    document = {
        "discovery": {
            "regions": ["ap-guangzhou", "ap-guangzhou", "Guangzhou"],
            "products": [CDB.name, SQLSERVER.name, "oracle"],
            "interval": "0.5s",
            "lookback": "forever",
            "tag_labels": ["team", "source", "cost-center"],
        },
        "apis": {POSTGRES.name: {"list_rate_limit": 25}, MONGODB.name: {"list_rate_limit": 5}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "config.yaml", env={})
    problems = str(caught.value)
    for expected in (
        "config.yaml: discovery.regions[1]: 'ap-guangzhou' is listed twice",
        "config.yaml: discovery.regions[2]: expected a region name like ap-guangzhou",
        "config.yaml: discovery.products[1]: sqlserver has no API listing an account's operations",
        "config.yaml: discovery.products[2]: expected one of mariadb, cdb, dcdb, sqlserver_tasks, cynosdb",
        "config.yaml: discovery.interval: expected at least 1s",
        "config.yaml: discovery.lookback: expected a duration",
        "config.yaml: discovery.tag_labels[1]: source is a label the exporter or Prometheus sets itself",
        "config.yaml: discovery.tag_labels[2]: expected a tag key that is also a Prometheus label name",
        "config.yaml: apis.postgres.list_rate_limit: expected less than rate_limit (20)",
        "config.yaml: apis.mongodb.list_rate_limit: unknown key",
    ):
        assert expected in problems, (expected, problems)
    with pytest.raises(ConfigError, match=r"discovery\.regions: required"):
        parse_config({"discovery": {}}, "config.yaml", env={})
    # Present and valid: `watch` may be empty, and the defaults are every product with a list API or whose
    # calls the audit trail lists.
    config = parse_config({"discovery": {"regions": ["ap-shanghai"]}}, "config.yaml", env={})
    assert config.discovery is not None
    assert config.discovery.products == tuple(p.name for p in PRODUCTS if p.discoverable)
    assert {MARIADB.name, CDB.name, DCDB.name, CYNOSDB.name, REDIS.name, POSTGRES.name} <= set(
        config.discovery.products
    )
    assert (config.discovery.interval, config.discovery.lookback, config.discovery.retention) == (
        60.0,
        86400.0,
        86400.0,
    )
    assert parse_config({}, "config.yaml", env={}).discovery is None


def test_a_reload_without_the_section_stops_discovery_and_forgets_what_it_found(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    simulator.add_task(SimTask(CDB.name, CDB_ID, (Phase(0, "RUNNING"),), instance_id="cdb-k2v9x1aa"))
    simulator.add_task(SimTask(CDB.name, WATCHED_CDB_ID, (Phase(0, "RUNNING"),)))
    config = _config(tmp_path / "config.yaml", simulator.url, {"cdb_async_requests": [WATCHED_CDB_ID]})
    with DaemonProcess(["--config.file", str(config), "--web.enable-lifecycle"], env=ENV) as daemon:
        wait_for(lambda: _info(daemon.scrape(), CDB_ID), 10, "the discovered task")
        assert daemon.scrape().get("tencentcloud_discovery_interval_seconds") == 1.0

        document = yaml.safe_load(config.read_text())
        del document["discovery"]
        config.write_text(yaml.safe_dump(document))
        assert daemon.request("POST", "/-/reload")[0] == 200
        samples = daemon.scrape()
        assert _info(samples, CDB_ID) is None  # gone with the reload, not a retention later
        assert (_info(samples, WATCHED_CDB_ID) or {}).get("source") == "config"
        assert samples.get("tencentcloud_discovery_interval_seconds") == 0
        assert not samples.all("tencentcloud_discovery_tasks")
        swept = (simulator.stats()["services"][CDB.name].get("DescribeTasks") or {}).get("accepted", 0)
        # No sweep after the reload: wait for two status polls' worth of time, measured by the polls.
        polls = samples.get(
            "tencentcloud_api_requests_total", product=CDB.name, action="DescribeAsyncRequestInfo"
        )
        wait_for(
            lambda: (
                (
                    daemon.scrape().get(
                        "tencentcloud_api_requests_total", product=CDB.name, action="DescribeAsyncRequestInfo"
                    )
                    or 0
                )
                >= (polls or 0) + 10
            ),
            10,
            "twenty more status polls",
        )
        assert simulator.stats()["services"][CDB.name]["DescribeTasks"]["accepted"] == swept


def test_a_discovered_task_keeps_its_status_first_seen_time_across_a_restart(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    simulator.add_task(SimTask(CDB.name, CDB_ID, (Phase(0, "RUNNING"),), instance_id="cdb-k2v9x1aa"))
    config = _config(tmp_path / "config.yaml", simulator.url)
    flags = ["--config.file", str(config), "--storage.path", str(tmp_path / "store.db")]
    change = "tencentcloud_task_status_change_timestamp_seconds"
    with DaemonProcess(flags, env=ENV) as daemon:
        wait_for(
            lambda: daemon.scrape().get(change, task_id=CDB_ID), 10, "the discovered task's first status"
        )
        first_seen = daemon.scrape().get(change, task_id=CDB_ID)
    with DaemonProcess(flags, env=ENV) as daemon:
        wait_for(lambda: daemon.scrape().get(change, task_id=CDB_ID), 10, "the task discovered again")
        # Running since before the restart, not since the restart: a running-too-long alert keeps its clock.
        assert daemon.scrape().get(change, task_id=CDB_ID) == first_seen
