"""The real exporter, stopped and continued by signals while it spends a whole quota: the API never sees more
than its quota in a second (the token bucket counts requests when they leave, and never catches up in a
burst after a stall).

About 13 s: five stalls of 0.4 s, one every 2 s, are what make a burst after a stall likely enough to show;
the simulator runs in a process of its own so that its count of each second is not held up by this one."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from exporter.catalogue.products import MARIADB
from exporter.simulator import Phase, SimTask
from tests.helpers import CREDS, ENV, DaemonProcess, wait_for, write_config
from tests.simulator_sdk import SimulatorProcess

STALLS, STALL_SECONDS, EVERY_SECONDS = 5, 0.4, 2.0


def test_stopping_the_exporter_never_makes_it_exceed_the_quota(tmp_path: Path) -> None:
    flows = [7000 + n for n in range(200)]
    credentials = f"--credentials={CREDS.secret_id}:{CREDS.secret_key}"
    with SimulatorProcess(["--latency", "0.05", credentials]) as sim:
        sim.add_tasks([SimTask(MARIADB.name, str(f), (Phase(0, 2),)) for f in flows])
        # 200 flows every 200 ms want 1,000 requests a second: the quota (20/s) binds all along.
        config = write_config(tmp_path / "config.yaml", sim.url, {"mariadb_flows": flows})

        def answered() -> tuple[int, int]:
            entry = sim.stats()["actions"].get(MARIADB.action, {})
            return int(entry.get("accepted", 0)), int(entry.get("throttled", 0))

        with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:
            wait_for(lambda: answered()[0] >= 20, 20, "the exporter to spend its quota")
            start = answered()[0]
            began = time.monotonic()
            for stall in range(STALLS):
                # The schedule of the stalls is the point of the test, not a wait for a condition.
                time.sleep(
                    max(0.0, began + stall * EVERY_SECONDS + EVERY_SECONDS - STALL_SECONDS - time.monotonic())
                )
                daemon.signal(signal.SIGSTOP)
                time.sleep(STALL_SECONDS)
                daemon.signal(signal.SIGCONT)
            elapsed = time.monotonic() - began
            accepted, throttled = answered()
    assert throttled == 0
    # Still at work through the stalls (the figure itself is measured in `python -m bench --stalls`).
    assert accepted - start > 0.5 * 20 * elapsed
