"""tencentcloud_task_phase end to end: the real daemon polling the simulator exports each task's phase beside
its raw status, with the same task labels, for a task from the config file, one registered through the task
API, one found by discovery and an ID the API does not know (not_found), and moves it as the status
changes."""

from __future__ import annotations

from pathlib import Path

import yaml

from exporter.catalogue.products import CDB, MARIADB, PHASES, Phase
from exporter.simulator import Phase as SimPhase
from exporter.simulator import SimTask, Simulator, SimulatorThread
from tests.helpers import CREDS, ENV, DaemonProcess, Samples, wait_for

REGION = "ap-guangzhou"
OTHER_REGION = "ap-shanghai"
TOKEN = "phases-token-7d1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DISCOVERED = "5c1e7a2b-8d3f4e6a-9b0c1d2e-3f4a5b6c"


def config(path: Path, url: str) -> Path:
    document = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": REGION,
        "apis": {MARIADB.name: {"endpoint": url}, CDB.name: {"endpoint": url}},
        "polling": {"interval": "200ms", "finished_interval": "300ms", "timeout": "2s"},
        "watch": {MARIADB.watch_key: [21, 404]},
        "discovery": {"regions": [REGION], "products": [CDB.name], "interval": "1s", "lookback": "1h"},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def phase(samples: Samples, task_id: str) -> str | None:
    """The phase whose state-set series is 1; every phase has a series once there is one."""
    series = samples.all("tencentcloud_task_phase", task_id=task_id)
    if not series:
        return None
    assert sorted(labels["phase"] for labels, _ in series) == sorted(str(p) for p in PHASES)
    [current] = [labels["phase"] for labels, value in series if value == 1]
    return current


def test_watched_registered_and_discovered_tasks_have_a_phase(tmp_path: Path) -> None:
    with SimulatorThread(Simulator([CREDS])) as sim:
        sim.add_task(SimTask(MARIADB.name, "21", (SimPhase(0, 2), SimPhase(1.5, 1))))  # running, then failed
        # Pending, and in a region discovery does not sweep: registered, never also found by the list first.
        sim.add_task(SimTask(CDB.name, "cdb-reg", (SimPhase(0, "INITIAL"),), region=OTHER_REGION))
        sim.add_task(SimTask(CDB.name, DISCOVERED, (SimPhase(0, "KILLED"),), instance_id="cdb-1"))
        args = ["--config.file", str(config(tmp_path / "config.yaml", sim.url))]
        with DaemonProcess(args, env={**ENV, "TENCENTCLOUD_EXPORTER_API_TOKEN": TOKEN}) as daemon:
            registration = {"product": CDB.name, "id": "cdb-reg", "region": OTHER_REGION}
            answer = daemon.request("POST", "/api/v1/tasks", registration, AUTH)
            assert answer[0] == 201, answer
            wait_for(
                lambda: all(phase(daemon.scrape(), t) for t in ("21", "404", "cdb-reg", DISCOVERED)),
                15,
                "a phase for every task",
            )
            samples = daemon.scrape()
            assert phase(samples, "cdb-reg") == Phase.PENDING  # CDB's INITIAL
            assert phase(samples, DISCOVERED) == Phase.FAILED  # CDB's KILLED
            assert phase(samples, "404") == Phase.NOT_FOUND
            assert samples.status(MARIADB.name, "404") is None  # no status: the API never gave one
            assert phase(samples, "21") in {Phase.RUNNING, Phase.FAILED}
            wait_for(lambda: phase(daemon.scrape(), "21") == Phase.FAILED, 10, "flow 21 to fail")
            samples = daemon.scrape()
            # The same task labels as the status's, and the status keeps the product's own word.
            [(labels, _)] = samples.all("tencentcloud_task_phase", task_id=DISCOVERED, phase="failed")
            [(status, _)] = samples.all("tencentcloud_task_status", task_id=DISCOVERED, status="killed")
            assert {k: v for k, v in labels.items() if k != "phase"} == {
                k: v for k, v in status.items() if k != "status"
            }
            assert samples.status(CDB.name, DISCOVERED) == "killed"
            sources = {
                t: samples.all("tencentcloud_task_info", task_id=t)[0][0]["source"]
                for t in ("21", "cdb-reg", DISCOVERED)
            }
            assert sources == {"21": "config", "cdb-reg": "api", DISCOVERED: "discovered"}
