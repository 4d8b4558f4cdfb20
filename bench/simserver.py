"""The simulator as its own process for the benchmark, with an exactly known epoch.

`exporter.simulator.Simulator` stamps each task with its clock reading when the task is added. Here the clock
is held still while the whole workload is added, so every timeline starts at the same instant, and that
instant is printed with the wall-clock time read next to it: a phase at `at` seconds begins at wall time
`epoch_wall + at`, which is what detection latency is measured from. Everything else is the stock simulator
(signatures, per-second quotas, latency, the /_sim control endpoints).

Prints one JSON line on stdout once listening, then serves until SIGTERM/SIGINT or `--max-runtime` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from exporter.signing import Credentials
from exporter.simulator import Simulator, load_scenario


class HeldClock:
    """time.monotonic, except while `held` is set."""

    def __init__(self) -> None:
        self.held: float | None = None

    def __call__(self) -> float:
        return time.monotonic() if self.held is None else self.held


async def serve(args: argparse.Namespace) -> None:
    clock = HeldClock()
    quotas = {"mariadb": args.quota_mariadb, "cdb": args.quota_cdb}
    credentials = Credentials(os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"])
    simulator = Simulator([credentials], quotas=quotas, latency=args.latency, clock=clock)
    tasks = load_scenario(Path(args.tasks))
    url = await simulator.start(args.host, 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        clock.held = time.monotonic()
        epoch_wall = time.time()
        simulator.add_tasks(tasks)
        epoch_mono, clock.held = clock.held, None
        line = {"msg": "listening", "url": url, "epoch_wall": epoch_wall, "epoch_mono": epoch_mono}
        print(json.dumps(line), flush=True)
        try:
            await asyncio.wait_for(stop.wait(), args.max_runtime)
        except TimeoutError:
            print(json.dumps({"msg": "max runtime reached"}), file=sys.stderr, flush=True)
    finally:
        await simulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simserver")
    parser.add_argument("--tasks", required=True, help="JSON list of simulator tasks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--quota-mariadb", type=float, default=20.0)
    parser.add_argument("--quota-cdb", type=float, default=40.0)
    parser.add_argument("--max-runtime", type=float, default=3600.0, help="stop by itself after this long")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
