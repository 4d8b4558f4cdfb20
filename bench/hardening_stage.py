"""What the hardening parts (`bench.hardening`) share: their sizes, the stage each runs on (a simulator and
exporter processes in a folder of their own), the HTTP client they use and the table helpers.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import measure
from bench import workload as wl
from bench.common import ACTIONS, CREDENTIALS, REGION, Settings, fmt
from bench.measure import Child, SimulatorSampler

# Inside the run's storage folder; if --storage.path comes to name a folder rather than a file, it is one.
STORE_NAME = {"--storage.path": "tasks.db", "--tasks.state-file": "registered-tasks.json"}
TARGETS = {"registrations_per_s": 500.0, "median_ratio": 2.0, "utilisation": 0.95}  # from the issue
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
Log = Callable[[str], None]
Row = tuple[str, Any, str, bool | None]  # figure, value, target, met (None: no target)


@dataclass(frozen=True)
class Sizes:
    low: int = 100  # registry size for the first timed window
    high: int = 10_000  # filled up to this many before the second timed window
    window: int = 500  # registrations per timed window
    clients: int = 8
    fill_cap_s: float = 900.0
    window_cap_s: float = 180.0
    scrape_tasks: int = 1_000
    scrapers: int = 200  # as the issues' red-team runs measured it
    scrape_s: float = 30.0
    warmup_s: float = 5.0
    burst: int = 3_000
    burst_clients: int = 16
    burst_cap_s: float = 600.0
    request_s: float = 60.0  # timeout of one HTTP request
    flood_clients: int = 8  # the bad-request flood's connections at a time


QUICK = Sizes(high=600, window=100, scrape_tasks=300, scrape_s=3.0, warmup_s=2.0, burst=300)
# The test suite's smoke run (BENCH_SMOKE with --quick): every part runs, on a workload too small to measure.
SMOKE = Sizes(
    low=20,
    high=100,
    window=20,
    clients=4,
    scrape_tasks=100,
    scrapers=10,
    scrape_s=1.5,
    warmup_s=0.5,
    burst=100,
    burst_clients=8,
    flood_clients=4,
)


def storage_flag() -> str:
    """--storage.path once the CLI accepts it (the SQLite store), else the JSON store's --tasks.state-file."""
    command, env = [sys.executable, "-m", "exporter", "--help"], measure.child_environment({})
    done = subprocess.run(
        command, cwd=measure.ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`python -m exporter --help` failed:\n{done.stderr[-3000:]}")
    return "--storage.path" if "--storage.path" in done.stdout else "--tasks.state-file"


class Stage(contextlib.ExitStack):
    """A simulator and the exporters started against it, in one folder; every process stopped on exit."""

    def __init__(self, name: str, workdir: Path, settings: Settings, flag: str) -> None:
        super().__init__()
        self.name, self.settings, self.flag = name, settings, flag
        self.dir = workdir / name
        self.storage = self.dir / "storage"
        self.storage.mkdir(parents=True)
        self.token = secrets.token_urlsafe(24)
        self.token_file = self.dir / "api-token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)

    def simulator(self, work: wl.Workload) -> None:
        tasks_file = self.dir / "simulator-tasks.json"
        tasks_file.write_text(json.dumps(work.simulator_tasks()))
        s = self.settings
        args = ["--tasks", str(tasks_file), "--latency", str(s.latency), "--max-runtime", "3600"]
        args += ["--quota-mariadb", str(s.quota_mariadb), "--quota-cdb", str(s.quota_cdb)]
        sim = Child(f"{self.name}/simulator", "bench.simserver", args, CREDENTIALS, stream="stdout")
        self.callback(sim.stop)
        self.sim_url: str = sim.wait_listening(60)["url"]
        self.stats = self.enter_context(SimulatorSampler(self.sim_url))

    def exporter(
        self, watch: dict[str, list[Any]] | None = None, log_level: str = "info"
    ) -> tuple[Child, str, float]:
        """Starts an exporter on this stage's storage; returns it, its address and seconds to listening."""
        s, url = self.settings, self.sim_url
        config = {
            "region": REGION,
            "apis": {name: {"endpoint": url, "rate_limit": q} for name, q in s.quotas.items()},
            "polling": {"interval": s.interval, "finished_interval": "10m", "timeout": "10s"},
            "watch": watch or {},
        }
        config_file = self.dir / "exporter.yaml"
        config_file.write_text(yaml.safe_dump(config, default_flow_style=None, width=1_000_000))
        args = ["--config.file", str(config_file), "--web.listen-address", "127.0.0.1:0", "--log.format"]
        args += ["json", "--log.level", log_level, "--tasks.api-token-file", str(self.token_file)]
        args += [self.flag, str(self.storage / STORE_NAME[self.flag])]
        started = time.perf_counter()
        child = Child(f"{self.name}/exporter", "exporter", args, CREDENTIALS)
        self.callback(child.stop)
        address: str = child.wait_listening(120)["address"]
        return child, address, time.perf_counter() - started

    def get(self, address: str, path: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with _OPENER.open(
                urllib.request.Request(f"http://{address}{path}", headers=headers), timeout=60
            ) as got:
                return got.status, got.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def client_session(request_s: float, **options: Any) -> aiohttp.ClientSession:
    """One client: a single kept-alive connection, no proxy from the environment."""
    timeout = aiohttp.ClientTimeout(total=request_s)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=timeout, trust_env=False, **options
    )


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def pair(a: Any, b: Any, digits: int = 1) -> str:
    return f"{fmt(a, '', digits)} / {fmt(b, '', digits)}"


def quota_use(
    stage: Stage, settings: Settings, windows: dict[str, tuple[float, float]], out: dict[str, Any]
) -> None:
    """Each status action's requests in each window (the simulator's count) and its use of the quota, into
    `out[window][product]`: the figures every part compares without and with its load."""
    for phase, (start, end) in windows.items():
        for product, action in ACTIONS.items():
            counts = stage.stats.window(action, start, end) or {}
            rate = counts.get("rate")
            out[phase][product] = {
                **counts,
                "utilisation": None if rate is None else rate / settings.quotas[product],
            }


def quota_rows(part: dict[str, Any], windows: tuple[tuple[str, str], ...], context: str = "") -> list[Row]:
    """The table's rows for quota_use's figures: utilisation against the target and no throttling, for each
    product and each (window, label)."""
    rows: list[Row] = []
    for product in wl.PRODUCTS:
        for phase, label in windows:
            use, throttled = part[phase][product].get("utilisation"), part[phase][product].get("throttled")
            met = None if use is None else use >= TARGETS["utilisation"]
            rows.append((f"{product} utilisation, {context}{label}", use, ">= 0.95", met))
            rows.append((f"  RequestLimitExceeded, {label}", throttled, "0", throttled == 0))
    return rows
