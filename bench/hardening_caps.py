"""Hardening part 4, the caps: the exporter's RSS and a full /metrics at the documented cap of discovered
plus registered tasks, against the shipped Kubernetes memory limit (with 25% headroom) and 5 s a scrape.

One simulator holds `registered` CDB tasks, registered over the task API (in WATCH_REGION), and
`discovered` CDB operations its list shows in REGION (started within the hour, with instance, name and
type). CDB is the worst case: its status state set has the most series (9). Every task has finished, so the
exporter polls each once at a high quota and not again for an hour, and the scrapes meet a quiet exporter.
Once the simulator has answered a status request for every task, RSS is read (and the process's peak, the
scrapes included) and /metrics fetched whole, plain and gzip, one scrape at a time. Each
`metrics.status_series` option in `variants` runs on a stage of its own.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import measure
from bench.common import CREDENTIALS, REGION, Settings
from bench.hardening_stage import QUICK, SMOKE, Log, Row, Sizes, Stage, client_session, pair
from bench.measure import Child, ProcessSampler, Scraper, SimulatorSampler
from exporter.catalogue.products import CDB
from exporter.config.values import LimitsConfig

MIB = 2**20
WATCH_REGION = "ap-shanghai"  # never swept: the watched tasks stay registered ones, the others discovered
STATUS_ACTION = CDB.action
TASK_TYPES = ("REBOOT", "MODIFY PARAM", "UPGRADE MASTER", "IMPORT DATA", "SQL OPERATION", "ROLLBACK")
MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "statefulset.yaml"
HEADROOM = 0.75  # RSS must stay under 75% of the memory limit (the 25% headroom)
SCRAPE_TARGET_S = 5.0


@dataclass(frozen=True)
class CapSizes:
    registered: int = LimitsConfig().registered_tasks
    discovered: int = LimitsConfig().discovered_tasks
    variants: tuple[str, ...] = ("all", "current")  # metrics.status_series
    quota: float = 4000.0  # status requests/s the simulator allows and the exporter may spend
    scrapes: int = 3  # full scrapes of each kind (plain, gzip), one after the other
    poll_cap_s: float = 900.0  # every task polled once within this


QUICK_CAPS = CapSizes(registered=500, discovered=2_000, scrapes=2, poll_cap_s=300.0)
SMOKE_CAPS = CapSizes(registered=100, discovered=300, variants=("current",), scrapes=1, poll_cap_s=60.0)


def _limit_mib() -> float | None:
    """The shipped StatefulSet's memory limit in MiB."""
    for document in yaml.safe_load_all(MANIFEST.read_text()):
        if isinstance(document, dict) and document.get("kind") == "StatefulSet":
            for container in document["spec"]["template"]["spec"]["containers"]:
                text = str(container.get("resources", {}).get("limits", {}).get("memory", ""))
                units = {"Mi": 1.0, "Gi": 1024.0}
                for suffix, factor in units.items():
                    if text.endswith(suffix):
                        return float(text.removesuffix(suffix)) * factor
    return None


def _task_id(rng: random.Random) -> str:
    return "-".join(f"{rng.getrandbits(32):08x}" for _ in range(4))


def _tasks(z: CapSizes, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The simulator's tasks (registered ones first) and the IDs the config watches."""
    rng = random.Random(seed)
    # Finished: polled once, then not again for `finished_interval`, so the scrapes meet a quiet exporter.
    done = [{"at": 0.0, "status": "SUCCESS", "info": "Benchmark operation, finished."}]
    tasks: list[dict[str, Any]] = []
    watched = [_task_id(rng) for _ in range(z.registered)]
    for task_id in watched:
        tasks.append({"product": CDB.name, "task_id": task_id, "phases": done, "region": WATCH_REGION})
    for n in range(z.discovered):
        instance = n % 2000
        tasks.append(
            {
                "product": CDB.name,
                "task_id": _task_id(rng),
                "phases": done,
                "region": REGION,
                "started": -round(rng.uniform(10.0, 3600.0), 3),
                "task_type": rng.choice(TASK_TYPES),
                "instance_id": f"cdb-bench{instance:04d}",
                "instance_name": f"bench-{instance:04d}",
            }
        )
    return tasks, watched


async def _register(stage: Stage, address: str, ids: list[str], clients: int = 8) -> int:
    """Registers `ids` over the task API from `clients` connections; returns how many were acknowledged."""
    headers = {"Authorization": f"Bearer {stage.token}"}
    pending, acknowledged = list(reversed(ids)), 0

    async def client() -> None:
        nonlocal acknowledged
        async with client_session(60.0, headers=headers) as session:
            while pending:
                body = {"product": CDB.name, "id": pending.pop(), "region": WATCH_REGION}
                async with session.post(f"http://{address}/api/v1/tasks", json=body) as response:
                    await response.read()
                    acknowledged += response.status == 201

    await asyncio.gather(*(client() for _ in range(clients)))
    return acknowledged


def _exporter(stage: Stage, z: CapSizes, variant: str) -> tuple[Child, str]:
    config = {
        "region": REGION,
        "apis": {
            CDB.name: {"endpoint": stage.sim_url, "rate_limit": z.quota, "list_rate_limit": z.quota / 4}
        },
        "polling": {"interval": "2s", "finished_interval": "1h", "timeout": "30s"},
        "discovery": {"regions": [REGION], "products": [CDB.name], "interval": "1h", "lookback": "24h"},
        "limits": {"registered_tasks": max(z.registered, 1), "discovered_tasks": max(z.discovered, 1)},
        "metrics": {"status_series": variant},
    }
    path = stage.dir / f"exporter-{variant}.yaml"
    path.write_text(yaml.safe_dump(config, default_flow_style=None, width=1_000_000))
    args = ["--config.file", str(path), "--web.listen-address", "127.0.0.1:0", "--log.format", "json"]
    args += ["--log.level", "info", stage.flag, str(stage.storage / f"tasks-{variant}.db")]
    args += ["--tasks.api-token-file", str(stage.token_file)]
    child = Child(f"{stage.name}/exporter-{variant}", "exporter", args, CREDENTIALS)
    stage.callback(child.stop)
    return child, str(child.wait_listening(120)["address"])


def _one(settings: Settings, z: CapSizes, workdir: Path, flag: str, log: Log, variant: str) -> dict[str, Any]:
    tasks, watched = _tasks(z, settings.seed)
    total = len(tasks)
    with Stage(f"caps-{variant}", workdir, settings, flag) as stage:
        sim_file = stage.dir / "simulator-tasks.json"
        sim_file.write_text(json.dumps(tasks))
        args = ["--tasks", str(sim_file), "--latency", "0", "--max-runtime", "3600"]
        args += ["--quota-cdb", str(z.quota)]
        args += ["--list-quota", f"{CDB.name}={z.quota}", "--list-cache"]
        sim = Child(f"{stage.name}/simulator", "bench.simserver", args, CREDENTIALS, stream="stdout")
        stage.callback(sim.stop)
        stage.sim_url = sim.wait_listening(120)["url"]
        stats = stage.enter_context(SimulatorSampler(stage.sim_url, period=1.0))
        started = time.time()
        exporter, address = _exporter(stage, z, variant)
        rss = stage.enter_context(ProcessSampler(exporter.pid, period=0.25))
        log(f"caps ({variant}): {z.registered:,} registered + {z.discovered:,} discovered CDB tasks")
        registered = asyncio.run(_register(stage, address, watched))
        if registered != z.registered:
            raise RuntimeError(f"caps ({variant}): {registered} of {z.registered} registrations acknowledged")
        if not measure.wait_until(lambda: stats.total(STATUS_ACTION, "accepted") >= total, z.poll_cap_s, 1.0):
            raise RuntimeError(
                f"caps ({variant}): {stats.total(STATUS_ACTION, 'accepted')} of {total} polled"
            )
        polled_s = time.time() - started
        time.sleep(2.0)  # the last answers rendered
        settled = rss.sample()
        scraper = Scraper(address, timeout=120.0)
        stage.callback(scraper.close)
        plain, gzipped, statuses = [], [], 0
        for n in range(z.scrapes):
            first = scraper.get(keep_body=n == 0)
            if n == 0:
                statuses = sum(
                    1
                    for line in first.body.splitlines()
                    if line.startswith(b"tencentcloud_task_status{") and line.endswith(b" 1")
                )
            plain.append(first)
            gzipped.append(scraper.get(gzip=True))
        peak = rss.max_rss()
        return {
            "variant": variant,
            "tasks": total,
            "registered": z.registered,
            "discovered": z.discovered,
            "with_status": statuses,
            "polled_s": polled_s,
            "rss_mib": (settled.rss if settled else 0) / MIB,
            "peak_rss_mib": (peak or 0) / MIB,
            "body_mib": plain[0].size / MIB,
            "gzip_mib": gzipped[0].size / MIB,
            "scrape_s": max(s.seconds for s in plain),
            "gzip_scrape_s": max(s.seconds for s in gzipped),
            "failed_scrapes": sum(1 for s in plain + gzipped if s.status != 200),
        }


def caps(settings: Settings, sizes: Sizes, workdir: Path, flag: str, log: Log) -> dict[str, Any]:
    z = {SMOKE: SMOKE_CAPS, QUICK: QUICK_CAPS}.get(sizes, CapSizes())
    limit = _limit_mib()
    runs = [_one(settings, z, workdir, flag, log, variant) for variant in z.variants]
    return {"limit_mib": limit, "budget_mib": None if limit is None else limit * HEADROOM, "runs": runs}


def caps_rows(part: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    budget = part["budget_mib"]
    for run in part["runs"]:
        label = f"caps, {run['registered']:,} + {run['discovered']:,} tasks, status series {run['variant']}"
        rows.append((label, run["with_status"], f"{run['tasks']:,}", run["with_status"] == run["tasks"]))
        met = None if budget is None else run["peak_rss_mib"] <= budget
        target = "" if budget is None else f"<= {budget:.0f}"
        rows.append(("  RSS / peak, MiB", pair(run["rss_mib"], run["peak_rss_mib"]), target, met))
        rows.append(("  /metrics plain / gzip, MiB", pair(run["body_mib"], run["gzip_mib"]), "", None))
        worst = max(run["scrape_s"], run["gzip_scrape_s"])
        rows.append(
            (
                "  full scrape plain / gzip, s",
                pair(run["scrape_s"], run["gzip_scrape_s"], 2),
                "< 5",
                worst < SCRAPE_TARGET_S,
            )
        )
        rows.append(("  every task polled once in, s", run["polled_s"], "", None))
    return rows
