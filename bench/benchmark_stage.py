"""One run of the main benchmark (`bench.benchmark`): a simulator process and one subject process, either the
exporter (bench.probe: `python -m exporter` plus an event-loop lag probe) or the baseline (bench.baseline:
the official synchronous SDK in a loop, prometheus_client Gauges), with the samplers that watch them.

The detect runs (`benchmark_detect.py`) and the large runs (`benchmark_large.py`) each use one `Run`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import workload as wl
from bench.common import ACTIONS, CREDENTIALS, REGION, Settings, ms
from bench.measure import Child, ProbeLog, ProcessSampler, Scrape, Scraper, SimulatorSampler

SAFETY_GUESS = 0.95  # only to size warm-up phases; the bounds use the real quota


@dataclass(frozen=True)
class Pace:
    """The fixed waits of a run, in seconds, apart from the sizes the flags set."""

    startup_slack: float = 3.0  # from the simulator's epoch until a subject polls
    final_margin: float = 2.0  # a detect run's last scrape, after the last change should have been seen
    settle: float = 1.0  # a large run waits this long before its timed scrapes
    # A detect run that has not seen every change by its planned end scrapes on until it has, for at most this
    # long: 0 for a measurement (a change seen late is censored, as it should be); the smoke run waits for the
    # condition instead, so a busy machine makes it slower, not red.
    detect_grace: float = 0.0


# The test suite's smoke run (BENCH_SMOKE with --quick): it only shows that every part works.
SMOKE_PACE = Pace(startup_slack=1.0, final_margin=1.0, settle=0.1, detect_grace=60.0)


class Run:
    """A simulator process and one subject process, stopped (with every sampler) when the block ends."""

    def __init__(self, name: str, workdir: Path, settings: Settings) -> None:
        self.name, self.settings = name, settings
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self._stack = contextlib.ExitStack()
        self.probe_file = self.dir / "loop-probe.txt"

    def __enter__(self) -> Run:
        self._stack.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(None, None, None)

    def start_simulator(self, work: wl.Workload, latency: float, quotas: dict[str, float]) -> None:
        tasks_file = self.dir / "simulator-tasks.json"
        tasks_file.write_text(json.dumps(work.simulator_tasks()))
        args = ["--tasks", str(tasks_file), "--latency", str(latency)]
        args += ["--quota-mariadb", str(quotas["mariadb"]), "--quota-cdb", str(quotas["cdb"])]
        args += ["--max-runtime", str(self.settings.max_run_seconds)]
        self.sim = Child(f"{self.name}/simulator", "bench.simserver", args, CREDENTIALS, stream="stdout")
        self._stack.callback(self.sim.stop)
        event = self.sim.wait_listening(60)
        self.sim_url: str = event["url"]
        self.epoch: float = event["epoch_wall"]

    def start_exporter(self, work: wl.Workload) -> None:
        config = {
            "region": REGION,
            "apis": {
                "mariadb": {"endpoint": self.sim_url, "rate_limit": self.settings.quota_mariadb},
                "cdb": {"endpoint": self.sim_url, "rate_limit": self.settings.quota_cdb},
            },
            "polling": {"interval": self.settings.interval, "finished_interval": "10m", "timeout": "10s"},
            "watch": work.watch(),
        }
        config_file = self.dir / "exporter.yaml"
        config_file.write_text(yaml.safe_dump(config, default_flow_style=None, width=1_000_000))
        args = ["--config.file", str(config_file), "--web.listen-address", "127.0.0.1:0"]
        args += ["--log.format", "json", "--log.level", "info"]
        # Its own store: the default (data/ under the working directory) is locked by one exporter at a time.
        args += ["--storage.path", str(self.dir / "store.db")]
        env = {**CREDENTIALS, "BENCH_LOOP_PROBE_FILE": str(self.probe_file)}
        env.update({f"BENCH_WHATIF_{key.upper()}": value for key, value in self.settings.what_if})
        self.subject = Child(f"{self.name}/exporter", "bench.probe", args, env)
        self._stack.callback(self.subject.stop)
        self.address: str = self.subject.wait_listening(120)["address"]
        self._after_start()

    def start_baseline(self, work: wl.Workload) -> None:
        tasks_file = self.dir / "baseline-tasks.json"
        tasks_file.write_text(json.dumps(work.task_list()))
        args = ["--endpoint", self.sim_url.removeprefix("http://"), "--tasks", str(tasks_file)]
        args += ["--interval", str(self.settings.interval), "--region", REGION]
        args += ["--max-runtime", str(self.settings.max_run_seconds)]
        env = {**CREDENTIALS, "BENCH_LOOP_PROBE_FILE": str(self.probe_file)}
        self.subject = Child(f"{self.name}/baseline", "bench.baseline", args, env)
        self._stack.callback(self.subject.stop)
        self.address = self.subject.wait_listening(60)["address"]
        self._after_start()

    def _after_start(self) -> None:
        self.process = ProcessSampler(self.subject.pid).start()
        self._stack.callback(self.process.stop)
        self.stats = SimulatorSampler(self.sim_url).start()
        self._stack.callback(self.stats.stop)
        self.scraper = Scraper(self.address)
        self._stack.callback(self.scraper.close)
        self.scrapes: list[Scrape] = []

    def scrape(self, gzip: bool = False, keep_body: bool = False) -> Scrape:
        result = self.scraper.get("/metrics", gzip=gzip, keep_body=keep_body)
        if result.status != 200:
            raise RuntimeError(f"{self.name}: /metrics answered {result.status}")
        self.scrapes.append(result)
        return result

    def idle_until(self, wall: float, scrape_every: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Sleeps until `wall`, scraping /metrics (plain) every `scrape_every` seconds like Prometheus."""
        next_scrape = time.time() + scrape_every
        while time.time() < wall and not stop():
            if self.subject.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: subject exited:\n" + "\n".join(self.subject.lines[-20:]))
            if time.time() >= next_scrape:
                self.scrape()
                next_scrape += scrape_every
            time.sleep(min(0.2, max(0.0, wall - time.time())))

    def scrape_windows(self, gzip: bool | None = None) -> list[tuple[float, float]]:
        return [(s.started, s.started + s.seconds) for s in self.scrapes if gzip is None or s.gzip == gzip]

    def utilisation(self, start: float, end: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for product, action in ACTIONS.items():
            window = self.stats.window(action, start, end)
            quota = self.settings.quotas[product]
            out[product] = {
                **(window or {}),
                "quota": quota,
                "utilisation": None if window is None else window["rate"] / quota,
                "throttled_total": self.stats.total(action, "throttled"),
                "busiest_second": self.stats.busiest_second(action),
            }
        rates = [out[s].get("rate") for s in ACTIONS]
        if all(r is not None for r in rates):
            out["both"] = {"utilisation": sum(rates) / sum(self.settings.quotas.values())}
        return out


def loop_stalls(run: Run, start: float, end: float) -> dict[str, Any]:
    """The subject's longest loop stalls from `start` to `end`: overall, during and outside scrapes."""
    probe = ProbeLog.read(run.probe_file)
    return {
        "max_ms": ms(probe.worst(start, end)),
        "during_scrape_max_ms": ms(probe.worst_overlapping(run.scrape_windows(), start, end)),
        "during_plain_scrape_max_ms": ms(probe.worst_overlapping(run.scrape_windows(False), start, end)),
        "during_gzip_scrape_max_ms": ms(probe.worst_overlapping(run.scrape_windows(True), start, end)),
        "outside_scrape_max_ms": ms(probe.worst_outside(run.scrape_windows(), start, end)),
        "probe_seconds": len([s for s in probe.seconds if start <= s[0] <= end]),
    }
