"""Operation durations end to end: the exporter polling the simulator observes one duration per finished
operation, from the API's start and end times (MongoDB) or from its own polls (MariaDB flows), none for an
operation first seen already final, and none twice after a restart on the same store, which also keeps when
an operation was first seen in progress."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from exporter.catalogue.products import MARIADB, MONGODB
from exporter.simulator import Phase, SimTask, Simulator, SimulatorThread
from tests.helpers import CREDS, ENV, DaemonProcess, Samples, wait_for

COUNT = "tencentcloud_task_duration_seconds_count"
SUM = "tencentcloud_task_duration_seconds_sum"


def config(path: Path, url: str) -> Path:
    document = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": "ap-guangzhou",
        "apis": {MARIADB.name: {"endpoint": url}, MONGODB.name: {"endpoint": url}},
        "polling": {"interval": "200ms", "finished_interval": "300ms", "timeout": "2s"},
        "watch": {
            MARIADB.watch_key: [11, 12, 13],
            MONGODB.watch_key: ["mongo-api"],
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


def observations(samples: Samples) -> dict[tuple[str, str], tuple[float, float]]:
    """(product, phase) -> (count, sum) of the duration histogram."""
    return {
        (labels["product"], labels["phase"]): (
            count,
            samples.get(SUM, product=labels["product"], phase=labels["phase"]) or 0.0,
        )
        for labels, count in samples.all(COUNT)
    }


def polled_since(daemon: DaemonProcess, moment: float, *task_ids: str) -> bool:
    samples = daemon.scrape()
    for task_id in task_ids:
        last = samples.get("tencentcloud_task_last_poll_success_timestamp_seconds", task_id=task_id)
        if last is None or last < moment:
            return False
    return True


def test_one_observation_per_finished_operation_none_doubled_after_a_restart(tmp_path: Path) -> None:
    with SimulatorThread(Simulator([CREDS])) as sim:
        # Started an hour before the simulator was given it: the API's times say 3600 s and more.
        sim.add_task(
            SimTask(MONGODB.name, "mongo-api", (Phase(0, "RUNNING"), Phase(1.0, "SUCCESS")), started=-3600)
        )
        # Fails after 4 s: the daemon, started meanwhile, sees it running first even on a loaded machine.
        sim.add_task(SimTask(MARIADB.name, "11", (Phase(0, 2), Phase(4.0, 1))))
        sim.add_task(SimTask(MARIADB.name, "12", (Phase(0, 0),)))  # already final when first seen
        sim.add_task(SimTask(MARIADB.name, "13", (Phase(0, 2),)))  # runs on, across the restart
        args = ["--config.file", str(config(tmp_path / "config.yaml", sim.url))]
        args += ["--storage.path", str(tmp_path / "store.db")]

        with DaemonProcess(args, env=ENV) as daemon:
            wait_for(
                lambda: (
                    observations(daemon.scrape()).keys()
                    >= {(MONGODB.name, "succeeded"), (MARIADB.name, "failed")}
                ),
                20,
                "both finished operations to be observed",
            )
            first_run_ended = time.time()
            wait_for(
                lambda: polled_since(daemon, first_run_ended, "11", "12", "13", "mongo-api"), 10, "polls"
            )
            seen = observations(daemon.scrape())
            running_since = daemon.scrape().get(
                "tencentcloud_task_status_change_timestamp_seconds", task_id="13"
            )
        assert seen.keys() == {(MONGODB.name, "succeeded"), (MARIADB.name, "failed")}
        mongo_count, mongo_sum = seen[MONGODB.name, "succeeded"]
        assert mongo_count == 1
        assert 3600 <= mongo_sum <= 3603  # the API's times, to the second
        flow_count, flow_sum = seen[MARIADB.name, "failed"]
        assert flow_count == 1  # flow 11 only: 12 was final when first seen, 13 still runs
        # The polls' times: from the first poll (once the daemon has started) to the first that saw it fail,
        # 4 s after the flow began; one poll interval and a little of slack.
        assert 0 < flow_sum <= 4.5

        with DaemonProcess(args, env=ENV) as daemon:
            restarted = time.time()
            wait_for(lambda: polled_since(daemon, restarted, "11", "12", "13", "mongo-api"), 10, "polls")
            assert observations(daemon.scrape()) == {}  # nothing finished since: nothing observed again
            sim.add_task(SimTask(MARIADB.name, "13", (Phase(0, 0),)))  # flow 13 succeeds now
            wait_for(
                lambda: (MARIADB.name, "succeeded") in observations(daemon.scrape()),
                10,
                "flow 13's duration",
            )
            finished = time.time()
            after = observations(daemon.scrape())
        assert after.keys() == {(MARIADB.name, "succeeded")}
        count, seconds = after[MARIADB.name, "succeeded"]
        assert count == 1
        # From its first in-progress poll before the restart, which the store kept: not from the restart.
        assert running_since is not None
        assert restarted - running_since <= seconds <= finished - running_since + 1
