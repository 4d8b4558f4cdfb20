"""The stall benchmark: `python -m bench --stalls` (issue 21, "a bucket that holds through stalls").

200 MariaDB flows in progress, polled at the full DescribeFlow quota (20/s), while the exporter process is
stopped with SIGSTOP for `stall_s` every `every_s` (as a CPU-limited container is paused by CFS throttling,
or a host by a busy neighbour), for `stalled_s` seconds, after `calm_s` seconds without stalls to compare
with. Counted from the simulator's request log (arrival times, as the API counts its quota): throttled
requests (goal 0), the busiest sliding second, and utilisation (accepted over what the quota allows).
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.common import (
    CREDENTIALS,
    REGION,
    RESULTS,
    Settings,
    code_state,
    machine,
    smoke,
    stderr_log,
    work_directory,
)
from bench.discovery import utilisation
from bench.discovery_stage import Sizes, Stage, busiest_second, start_exporter
from bench.measure import Child
from exporter.catalogue.products import MARIADB

DEFAULT_LATENCY = 0.05


@dataclass(frozen=True)
class StallSizes:
    flows: int = 200  # in progress all along: at polling.interval 1 s they want 10x the quota
    calm_s: float = 10.0  # polling without stalls first
    stalled_s: float = 60.0  # then one stall every every_s
    stall_s: float = 0.4
    every_s: float = 2.0
    warmup_s: float = 4.0


QUICK = StallSizes(calm_s=4.0, stalled_s=10.0)
SMOKE = StallSizes(flows=20, calm_s=1.0, stalled_s=2.0, warmup_s=1.0)


class StallStage(Stage):
    def stall_exporter(self, flows: list[str]) -> Child:
        config = {
            "region": REGION,
            "apis": {MARIADB.name: {"endpoint": self.sim_url, "rate_limit": self.settings.quota_mariadb}},
            "polling": {"interval": "1s", "finished_interval": "10m", "timeout": "10s"},
            "watch": {"mariadb_flows": [int(flow) for flow in flows]},
        }
        child, self.address = start_exporter(self, self.name, self.dir, config, CREDENTIALS)
        return child


def run(settings: Settings, sizes: StallSizes, workdir: Path) -> dict[str, Any]:
    flows = [str(7000 + n) for n in range(sizes.flows)]
    running = [{"at": 0.0, "status": 2, "info": "Benchmark flow, running."}]
    tasks = [{"product": MARIADB.name, "task_id": f, "phases": running, "region": REGION} for f in flows]
    quota = settings.quota_mariadb
    # Stage takes discovery's sizes; the stall run reads none of them.
    with StallStage("stalls", workdir, settings, Sizes()) as stage:
        stage.simulator(tasks)
        exporter = stage.stall_exporter(flows)
        time.sleep(sizes.warmup_s)
        calm_start = time.time()
        time.sleep(sizes.calm_s)
        stalled_start = time.time()
        stalls = 0
        while time.time() < stalled_start + sizes.stalled_s:
            # The stall schedule itself is what is measured: every every_s, stall_s stopped.
            due = stalled_start + stalls * sizes.every_s + sizes.every_s - sizes.stall_s
            time.sleep(max(0.0, due - time.time()))
            exporter.proc.send_signal(signal.SIGSTOP)
            time.sleep(sizes.stall_s)
            exporter.proc.send_signal(signal.SIGCONT)
            stalls += 1
        end = time.time()
        time.sleep(1.0)  # answers to requests sent just before the end
        stage.log.read()
        status = stage.log.of(MARIADB.action)
        calm = utilisation(status, calm_start, stalled_start, quota)
        stalled = utilisation(status, stalled_start, end, quota)
        return {
            "flows": sizes.flows,
            "stalls": stalls,
            "calm": calm,
            "stalled": stalled,
            "busiest_second": busiest_second(status),
            "throttled": sum(1 for r in status if not r.accepted),
            "throttled_at": [round(r.arrived - stalled_start, 3) for r in status if not r.accepted],
            "exporter_alive": exporter.proc.poll() is None,
        }


def main(settings: Settings, args: argparse.Namespace) -> int:
    sizes = (SMOKE if smoke() else QUICK) if args.quick else StallSizes()
    if args.latency is None:
        settings = replace(settings, latency=DEFAULT_LATENCY)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output: Path = args.output or RESULTS / f"stalls-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    log = stderr_log(began)
    log(f"stalls: sizes {json.dumps(asdict(sizes))}, latency {settings.latency:g} s")
    with work_directory(args.keep) as workdir:
        result = run(settings, sizes, workdir)
    info = machine()
    document = {
        "stalls": result,
        "sizes": asdict(sizes),
        "settings": asdict(settings),
        "code": code_state(),
        "machine": info,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": time.monotonic() - began,
    }
    output.write_text(json.dumps(document, indent=2, default=str))
    calm, stalled = result["calm"], result["stalled"]
    print(
        f"tencentcloud-task-exporter stalls: {info['nproc']} CPUs, "
        f"API latency {settings.latency * 1000:.0f} ms, "
        f"{MARIADB.action} quota {settings.quota_mariadb:g}/s, {result['flows']} flows in progress; "
        f"SIGSTOP {sizes.stall_s:g} s every {sizes.every_s:g} s"
    )
    print(f"{'':<28}{'calm':>10}{'stalled':>10}")
    print(f"{'seconds':<28}{calm['seconds']:>10.1f}{stalled['seconds']:>10.1f}")
    print(f"{'accepted':<28}{calm['accepted']:>10}{stalled['accepted']:>10}")
    print(f"{'throttled':<28}{calm['throttled']:>10}{stalled['throttled']:>10}")
    print(f"{'utilisation':<28}{calm['utilisation']:>10.3f}{stalled['utilisation']:>10.3f}")
    print(
        f"stalls {result['stalls']}; busiest second {result['busiest_second']} of {settings.quota_mariadb:g}"
    )
    print(f"results: {output} ({time.monotonic() - began:.0f} s)")
    return 0 if result["exporter_alive"] else 1
