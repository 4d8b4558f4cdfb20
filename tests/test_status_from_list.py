"""Status from the list: a sweep page speaks for the operations it lists, so detection is bounded by pages,
not by IDs. 300 discovered CDB operations with the status quota held at 2/s (per-ID polling would reach each
once every 150 s) all reach their final status on /metrics within one sweep of changing.

About 20 s: the daemon starts and sweeps once, the operations change over the next 5 s, and the test follows
/metrics until the last one is final."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import yaml

from exporter.catalogue.products import CDB, CYNOSDB, POSTGRES, REDIS
from exporter.simulator import Phase, SimTask
from tests.helpers import CREDS, ENV, DaemonProcess, wait_for
from tests.simulator_sdk import SimulatorProcess

REGION = "ap-guangzhou"
OPERATIONS, STATUS_QUOTA, INTERVAL = 300, 2.0, 1.0
STATUS_LINE = re.compile(
    r'^tencentcloud_task_status\{[^}]*task_id="([^"]+)"[^}]*status="([^"]+)"[^}]*\} 1(?:\.0)?$', re.M
)


def test_list_statuses_are_read_in_the_status_apis_words_and_only_where_both_mean_the_same() -> None:
    assert CDB.listing is not None
    assert REDIS.listing is not None
    assert POSTGRES.listing is not None
    assert CYNOSDB.listing is not None
    cdb = [{"AsyncRequestId": f"{n:08x}-0-0-0", "TaskStatus": s} for n, s in enumerate(("SUCCEED", "PAUSED"))]
    page = CDB.listing.page({"TotalCount": 2, "Items": cdb}, CDB.id_kind)
    # SUCCEED is the status API's SUCCESS; PAUSED means "being terminated" there: the status API decides.
    assert [i.status for i in page.items] == ["success", None]
    redis = [{"TaskId": n + 1, "Result": r} for n, r in enumerate((1, 2, 4))]
    page = REDIS.listing.page({"TotalCount": 3, "Tasks": redis}, REDIS.id_kind)
    assert [i.status for i in page.items] == ["running", "succeed", None]  # 4: failed or error
    page = POSTGRES.listing.page(
        {"TotalCount": 1, "TaskSet": [{"TaskId": 7, "Status": "Running"}]}, POSTGRES.id_kind
    )
    assert [i.status for i in page.items] == ["running"]
    assert not CYNOSDB.listing.speaks_status
    assert CDB.listing.speaks_status


def test_listed_operations_reach_their_final_status_within_one_sweep(tmp_path: Path) -> None:
    rng = random.Random(21)
    finals, changes = {}, {}
    # The simulator in a process of its own: it counts each second's requests when it handles them, which
    # must not wait behind this process parsing /metrics ten times a second.
    credentials = f"--credentials={CREDS.secret_id}:{CREDS.secret_key}"
    with SimulatorProcess(["--quota", f"{CDB.name}={STATUS_QUOTA:g}", credentials]) as sim:
        tasks = []
        added = time.time()
        for n in range(OPERATIONS):
            task_id = f"{n:08x}-5a5a5a5a-6b6b6b6b-7c7c7c7c"
            at = rng.uniform(5.0, 10.0)  # after the daemon has started and swept once
            finals[task_id] = rng.choice(["SUCCESS", "FAILED"])
            phases = (Phase(0, "RUNNING"), Phase(at, finals[task_id]))
            tasks.append(SimTask(CDB.name, task_id, phases, started=-30.0, region=REGION))
            changes[task_id] = added + at
        sim.add_tasks(tasks)
        config = {
            "credentials": {
                "secret_id": "${TENCENTCLOUD_SECRET_ID}",
                "secret_key": "${TENCENTCLOUD_SECRET_KEY}",
            },
            "region": REGION,
            "apis": {CDB.name: {"endpoint": sim.url, "rate_limit": STATUS_QUOTA}},
            "polling": {"interval": f"{INTERVAL:g}s", "finished_interval": "10m", "timeout": "2s"},
            "watch": {},
            # Idle, the list would be swept every 30 s: work in progress is what brings it to every second.
            "discovery": {"regions": [REGION], "products": [CDB.name], "interval": "30s", "lookback": "1h"},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        with DaemonProcess(["--config.file", str(path)], env=ENV) as daemon:
            seen_final: dict[str, float] = {}

            def all_final() -> bool:
                # A line scan, not a full parse: 300 tasks' families take the parser a second, which
                # would be measured as lateness.
                _, body = daemon.get("/metrics")
                now = time.time()
                for match in STATUS_LINE.finditer(body.decode()):
                    task_id, status = match.group(1), match.group(2)
                    if task_id in finals and task_id not in seen_final and status == finals[task_id].lower():
                        seen_final[task_id] = now
                return len(seen_final) == len(finals)

            wait_for(all_final, 40, "every operation's final status on /metrics", interval=0.1)
            samples = daemon.scrape()
        stats = sim.stats()["actions"]
    lags = sorted(seen_final[t] - changes[t] for t in finals)
    # One sweep: the next one starts within polling.interval, reads 3 pages, and /metrics is read every 0.1 s.
    assert lags[-1] <= INTERVAL + 1.5, lags[-10:]
    for action in (CDB.action, "DescribeTasks"):
        assert stats.get(action, {}).get("throttled", 0) == 0, (action, stats.get(action))
    # The statuses came from the pages: status requests went to the confirmations of final statuses (one per
    # operation at most), not to per-ID polling.
    assert stats[CDB.action]["accepted"] <= OPERATIONS + 10
    assert samples.get("tencentcloud_api_throttled_requests_total", product=CDB.name) in (None, 0.0)
