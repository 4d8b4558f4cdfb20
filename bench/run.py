"""The benchmark: the exporter against the API quotas, side by side with a naive SDK loop.

    python -m bench [--quick] [--output results.json] [flags]       (or: python bench/run.py ...)

Every run starts a fresh simulator process (bench.simserver: the project's simulator with quotas and latency)
and one subject process, either the exporter (bench.probe: `python -m exporter` plus an event-loop lag probe)
or the baseline (bench.baseline: the official synchronous SDK in a loop, prometheus_client Gauges).

- detect runs (`--detect-tasks`, `--repeats` times, exporter and baseline each against their own simulator):
  quota utilisation, throttling, and the latency from each status change in the simulator to the new status
  on /metrics, against the lower bound `in progress / quota`.
- large run (`--large-tasks`, exporter): utilisation and footprint while the first sweep spends the whole
  quota, then /metrics cost (plain and gzip) and the event-loop stalls scrapes cause, at full size.
- large baseline run: the baseline fills its Gauges for every task against a simulator without latency or
  quota (a synchronous loop at 100 ms would need half an hour), then latency is restored and it is scraped
  the same way.

See bench/README.md for what each figure means exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from bench import workload as wl
from bench.measure import (
    Child,
    ProbeLog,
    ProcessSampler,
    Profile,
    Scrape,
    Scraper,
    SimulatorSampler,
    count_polled,
    median,
    post_json,
    py_spy,
    quantile,
    task_series,
    wait_until,
)

CREDENTIALS = {
    "TENCENTCLOUD_SECRET_ID": "AKIDBENCH000000000000000NOTAREALKEY",
    "TENCENTCLOUD_SECRET_KEY": "bench-secret-key-not-valid-anywhere",
}
ACTIONS = {"mariadb": "DescribeFlow", "cdb": "DescribeAsyncRequestInfo"}
REGION = "ap-guangzhou"
SAFETY_GUESS = 0.95  # only to size warm-up phases; the bounds use the real quota
STARTUP_SLACK = 3.0  # seconds from the simulator's epoch until a subject polls
UNLIMITED = 1e6
STALL_THRESHOLD_MS = 2.0  # bench.probe.THRESHOLD

TARGETS = {
    "utilisation": 0.95,
    "detection_p99_ratio": 1.2,
    "scrape_plain_p50_ms": 50.0,
    "loop_stall_ms": 20.0,
    "rss_mb": 150.0,
}


@dataclass(frozen=True)
class Settings:
    detect_tasks: int = 1000
    large_tasks: int = 10000
    repeats: int = 2
    window: float = 20.0
    latency: float = 0.1
    quota_mariadb: float = 20.0
    quota_cdb: float = 40.0
    interval: float = 1.0
    scrapes: int = 30
    scrape_every: float = 5.0
    seed: int = 1
    sequential: bool = False
    baseline: bool = True
    large: bool = True
    detect: bool = True
    profile: bool = False
    max_run_seconds: float = 900.0
    what_if: tuple[tuple[str, str], ...] = ()

    @property
    def quotas(self) -> dict[str, float]:
        return {"mariadb": self.quota_mariadb, "cdb": self.quota_cdb}


# --------------------------------------------------------------------------------------------- one run


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
        for service, action in ACTIONS.items():
            window = self.stats.window(action, start, end)
            quota = self.settings.quotas[service]
            out[service] = {
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


# --------------------------------------------------------------------------------------------- detection


def detection(
    work: wl.Workload,
    epoch: float,
    text: str,
    end: float,
    latency: float,
    quotas: dict[str, float],
    interval: float,
) -> dict[str, Any]:
    """Latency from each scheduled change to the new status on /metrics, and the lower bound next to it.

    Detected: /metrics shows the new status; its latency is the status-change timestamp the subject exposes
    minus the simulator's wall time of the change. Undetected by the end: censored at `end - change`.
    Lower bound per change: the revisit period of a round-robin poller spending exactly the quota on the
    tasks still in progress, R = in_progress(service, t) / quota (never under the configured polling
    interval, which sizes are chosen to exceed), plus one API round trip (`latency`).
    A perfect poller's latency for a change at a random moment is uniform on [latency, R + latency].
    """
    status, changed = task_series(text)
    latencies: list[float] = []
    censored: list[float] = []
    revisits: list[float] = []
    early = 0
    by_service: dict[str, list[float]] = {s: [] for s in wl.SERVICES}
    revisits_by_service: dict[str, list[float]] = {s: [] for s in wl.SERVICES}
    for change in work.changes:
        key = (change.service, change.task_id)
        at = epoch + change.at
        period = max(work.in_progress(change.service, change.at) / quotas[change.service], interval)
        revisits.append(period)
        revisits_by_service[change.service].append(period)
        if status.get(key) == change.new and key in changed:
            value = changed[key] - at
            if value < 0:
                early += 1
            latencies.append(value)
            by_service[change.service].append(value)
        else:
            censored.append(max(0.0, end - at))
    revisit = _mean(revisits)
    out: dict[str, Any] = {
        "changes": len(work.changes),
        "detected": len(latencies),
        "undetected": len(censored),
        "negative": early,
        "revisit_at_quota_s": revisit,
        "bound_p50_s": None if revisit is None else revisit / 2 + latency,
        "bound_p99_s": None if revisit is None else revisit + latency,
        "by_service": {
            s: {
                "n": len(v),
                "p50_s": quantile(v, 0.5),
                "p99_s": quantile(v, 0.99),
                "revisit_at_quota_s": _mean(revisits_by_service[s]),
                "p50_ratio": _ratio(quantile(v, 0.5), _mean(revisits_by_service[s]), 0.5, latency),
                "p99_ratio": _ratio(quantile(v, 0.99), _mean(revisits_by_service[s]), 1.0, latency),
            }
            for s, v in by_service.items()
        },
    }
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        low = quantile(latencies + censored, q)
        high = quantile(latencies + [math.inf] * len(censored), q)
        out[f"{name}_s"] = low
        out[f"{name}_is_lower_bound"] = bool(censored) and (high is None or high != low)
    for name in ("p50", "p99"):
        value, bound = out[f"{name}_s"], out[f"bound_{name}_s"]
        out[f"{name}_ratio"] = None if value is None or not bound else value / bound
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _ratio(value: float | None, revisit: float | None, share: float, latency: float) -> float | None:
    if value is None or revisit is None:
        return None
    return value / (revisit * share + latency)


def loop_stalls(run: Run, start: float, end: float) -> dict[str, Any]:
    probe = ProbeLog.read(run.probe_file)
    return {
        "max_ms": _ms(probe.worst(start, end)),
        "during_scrape_max_ms": _ms(probe.worst_overlapping(run.scrape_windows(), start, end)),
        "during_plain_scrape_max_ms": _ms(probe.worst_overlapping(run.scrape_windows(False), start, end)),
        "during_gzip_scrape_max_ms": _ms(probe.worst_overlapping(run.scrape_windows(True), start, end)),
        "outside_scrape_max_ms": _ms(probe.worst_outside(run.scrape_windows(), start, end)),
        "probe_seconds": len([s for s in probe.seconds if start <= s[0] <= end]),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _scrape_figures(scrapes: list[Scrape]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, gz in (("plain", False), ("gzip", True)):
        chosen = [s for s in scrapes if s.gzip == gz]
        times = [s.seconds for s in chosen]
        out[label] = {
            "n": len(chosen),
            "p50_ms": _ms(quantile(times, 0.5)),
            "p99_ms": _ms(quantile(times, 0.99)),
            "max_ms": _ms(max(times)) if times else None,
            "bytes": int(median(s.size for s in chosen) or 0) if chosen else None,
        }
    return out


def run_detect(subject: str, settings: Settings, rep: int, workdir: Path) -> dict[str, Any]:
    quotas = settings.quotas
    probe = wl.build(settings.detect_tasks, (0.0, 1.0), seed=settings.seed + rep, quotas=quotas)
    warm = probe.sweep_seconds(SAFETY_GUESS) + STARTUP_SLACK
    window = (round(warm, 1), round(warm + settings.window, 1))
    work = wl.build(settings.detect_tasks, window, seed=settings.seed + rep, quotas=quotas)
    tail = max(work.in_progress(s, window[1]) / (quotas[s] * SAFETY_GUESS) for s in wl.SERVICES)
    length = window[1] + tail + settings.latency + 2.0
    with Run(f"detect-{subject}-{rep}", workdir, settings) as run:
        run.start_simulator(work, settings.latency, quotas)
        (run.start_exporter if subject == "exporter" else run.start_baseline)(work)
        run.idle_until(run.epoch + length, settings.scrape_every)
        final = run.scrape(keep_body=True)
        end = time.time()
        run.stats.sample()
        run.process.sample()
        start = run.epoch + STARTUP_SLACK
        result = {
            "subject": subject,
            "repeat": rep,
            "tasks": work.size,
            "tasks_by_service": {s: work.count(s) for s in wl.SERVICES},
            "window_s": list(window),
            "run_s": end - run.epoch,
            "utilisation": run.utilisation(start, end),
            "utilisation_in_window": run.utilisation(run.epoch + window[0], run.epoch + window[1]),
            "detection": detection(
                work, run.epoch, final.body.decode(), end, settings.latency, quotas, settings.interval
            ),
            "cpu_per_s": run.process.cpu_per_second(start, end),
            "requests": sum(
                (run.stats.window(a, start, end) or {}).get("accepted", 0) for a in ACTIONS.values()
            ),
            "rss_max_mb": (run.process.max_rss() or 0) / 2**20,
            "scrapes": _scrape_figures(run.scrapes[:-1]),
            "scrape_bytes_final": final.size,
            "loop": loop_stalls(run, start, end),
        }
        cpu_between = run.process.cpu_between(start, end)
        requests = int(result["requests"])
        result["cpu_ms_per_request"] = cpu_between / requests * 1000 if cpu_between and requests else None
        return result


# --------------------------------------------------------------------------------------------- large runs


def _scrape_phase(run: Run, settings: Settings, gap: float = 0.25) -> tuple[float, float]:
    started = time.time()
    for _ in range(settings.scrapes):
        run.scrape(gzip=False)
        time.sleep(gap)
        run.scrape(gzip=True)
        time.sleep(gap)
    return started, time.time()


def run_large_exporter(
    settings: Settings, workdir: Path, quiet: threading.Event, outdir: Path | None
) -> dict[str, Any]:
    quotas = settings.quotas
    size = settings.large_tasks
    probe = wl.build(size, (0.0, 1.0), seed=settings.seed, quotas=quotas)
    sweep_guess = probe.sweep_seconds(SAFETY_GUESS) + STARTUP_SLACK
    scrape_phase_guess = settings.scrapes * 0.8
    window = (round(sweep_guess, 1), round(sweep_guess + scrape_phase_guess, 1))
    work = wl.build(size, window, seed=settings.seed, quotas=quotas)
    with Run("large-exporter", workdir, settings) as run:
        run.start_simulator(work, settings.latency, quotas)
        run.start_exporter(work)
        profiles: dict[str, Any] = {}
        polling_profile = None
        if settings.profile and outdir is not None:
            seconds = min(20.0, max(3.0, sweep_guess - STARTUP_SLACK - 5))
            polling_profile = Profile(run.subject.pid, seconds, outdir / "profile-exporter-polling.txt")

        def swept() -> bool:
            return all(run.stats.total(ACTIONS[s], "accepted") >= work.count(s) for s in wl.SERVICES)

        deadline = run.epoch + sweep_guess * 1.5 + 30
        run.idle_until(deadline, settings.scrape_every, stop=swept)
        sweep_end = time.time()
        if polling_profile is not None:
            profiles["polling"] = polling_profile.finish()
        polled = count_polled(run.scrape(keep_body=True).body.decode())
        sweep_times = {s: run.stats.first_reaching(ACTIONS[s], work.count(s)) for s in wl.SERVICES}
        start = run.epoch + STARTUP_SLACK
        full_quota = (start, sweep_end)
        # Others finish first, so the scrape figures are not disturbed by concurrent runs.
        while not quiet.wait(0.5):
            run.idle_until(time.time(), settings.scrape_every)  # only checks that the exporter still runs
        time.sleep(1.0)
        scrape_profile = None
        if settings.profile and outdir is not None:
            scrape_profile = Profile(
                run.subject.pid, settings.scrapes * 0.6, outdir / "profile-exporter-scrapes.txt"
            )
        first_phase_scrape = len(run.scrapes)
        phase = _scrape_phase(run, settings)
        if scrape_profile is not None:
            profiles["scrapes"] = scrape_profile.finish()
        end = time.time()
        run.process.sample()
        run.stats.sample()
        phase_scrapes = run.scrapes[first_phase_scrape:]
        result = {
            "subject": "exporter",
            "tasks": work.size,
            "polled_after_sweep": polled,
            "sweep_s": {s: (t - run.epoch if t else None) for s, t in sweep_times.items()},
            "sweep_bound_s": work.sweep_seconds(),
            "utilisation_full_quota": run.utilisation(*full_quota),
            "cpu_per_s_full_quota": run.process.cpu_per_second(*full_quota),
            "cpu_per_s_scrape_phase": run.process.cpu_per_second(*phase),
            "rss_max_mb": (run.process.max_rss() or 0) / 2**20,
            "rss_full_quota_mb": (run.process.max_rss(*full_quota) or 0) / 2**20,
            "scrapes": _scrape_figures(phase_scrapes),
            "loop": loop_stalls(run, phase[0], end),
            "loop_full_quota": loop_stalls(run, *full_quota),
            "profiles": profiles,
        }
        requests = sum((run.stats.window(a, *full_quota) or {}).get("accepted", 0) for a in ACTIONS.values())
        cpu = run.process.cpu_between(*full_quota)
        result["cpu_ms_per_request_full_quota"] = cpu / requests * 1000 if cpu and requests else None
        return result


def run_large_baseline(settings: Settings, workdir: Path, outdir: Path | None) -> dict[str, Any]:
    size = settings.large_tasks
    work = wl.build(size, (1e6, 1e6 + 1), seed=settings.seed, quotas=settings.quotas)
    with Run("large-baseline", workdir, settings) as run:
        run.start_simulator(work, 0.0, {"mariadb": UNLIMITED, "cdb": UNLIMITED})
        run.start_baseline(work)
        filled = wait_until(lambda: bool(run.subject.events("round complete")), settings.max_run_seconds)
        fill_s = time.time() - run.epoch
        if not filled:
            raise RuntimeError("baseline did not poll every task once in time")
        post_json(run.sim_url + "/_sim/faults", {"latency": settings.latency})
        time.sleep(1.0 + 10 * settings.latency)  # back to its pace at the configured latency
        first = len(run.scrapes)
        profile = None
        if settings.profile and outdir is not None:
            profile = Profile(
                run.subject.pid, settings.scrapes * 0.6, outdir / "profile-baseline-scrapes.txt"
            )
        phase = _scrape_phase(run, settings)
        end = time.time()
        run.process.sample()
        return {
            "subject": "baseline",
            "tasks": size,
            "fill_s": fill_s,
            "rss_max_mb": (run.process.max_rss() or 0) / 2**20,
            "cpu_per_s_scrape_phase": run.process.cpu_per_second(*phase),
            "scrapes": _scrape_figures(run.scrapes[first:]),
            "loop": loop_stalls(run, phase[0], end),
            "profiles": {"scrapes": profile.finish()} if profile else {},
        }


# --------------------------------------------------------------------------------------------- plan


def run_all(
    settings: Settings, workdir: Path, outdir: Path | None, log: Callable[[str], None]
) -> dict[str, Any]:
    results: dict[str, Any] = {"detect": [], "large": {}}
    errors: list[BaseException] = []
    quiet = threading.Event()

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
                quiet.set()

        return call

    def large_exporter() -> None:
        log(f"large run: exporter, {settings.large_tasks} tasks (first sweep ~{_sweep(settings):.0f} s)")
        results["large"]["exporter"] = run_large_exporter(settings, workdir, quiet, outdir)
        log("large run: exporter done")

    def detect_all() -> None:
        for rep in range(settings.repeats if settings.detect else 0):
            subjects = ["exporter", "baseline"] if settings.baseline else ["exporter"]
            log(
                f"detect run {rep + 1}/{settings.repeats}: {', '.join(subjects)}, "
                f"{settings.detect_tasks} tasks"
            )
            found: dict[str, dict[str, Any]] = {}

            def one(subject: str, rep: int = rep, found: dict[str, dict[str, Any]] = found) -> None:
                found[subject] = run_detect(subject, settings, rep, workdir)

            if settings.sequential:
                for subject in subjects:
                    one(subject)
            else:
                threads = [threading.Thread(target=guarded(lambda s=s: one(s))) for s in subjects]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                if errors:
                    raise errors[0]
            results["detect"].extend(found[s] for s in subjects)

    large_thread = None
    if settings.large and not settings.sequential:
        large_thread = threading.Thread(target=guarded(large_exporter))
        large_thread.start()
    try:
        detect_all()
    finally:
        quiet.set()
        if large_thread is not None:
            large_thread.join()
    if errors:
        raise errors[0]
    if settings.large and settings.sequential:
        large_exporter()
    if settings.large and settings.baseline:
        log(f"large run: baseline, {settings.large_tasks} tasks (fill without quota or latency)")
        results["large"]["baseline"] = run_large_baseline(settings, workdir, outdir)
    return results


def _sweep(settings: Settings) -> float:
    work = wl.build(settings.large_tasks, (0.0, 1.0), quotas=settings.quotas)
    return work.sweep_seconds(SAFETY_GUESS)


# --------------------------------------------------------------------------------------------- summary


def summarize(results: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Medians over repeats of every headline figure, per subject."""

    def detect_median(subject: str, path: Callable[[dict[str, Any]], Any]) -> Any:
        values = [path(r) for r in results["detect"] if r["subject"] == subject]
        if values and isinstance(values[0], bool):
            return any(values)
        return median(values)

    summary: dict[str, Any] = {}
    for subject in ("exporter", "baseline"):
        detected = any(r["subject"] == subject for r in results["detect"])
        if not detected and subject not in results["large"]:
            continue
        s: dict[str, Any] = {}
        for service in wl.SERVICES if detected else ():
            s[f"utilisation_{service}"] = detect_median(
                subject, lambda r, sv=service: r["utilisation"][sv]["utilisation"]
            )
            s[f"throttled_{service}"] = sum(
                r["utilisation"][service]["throttled_total"]
                for r in results["detect"]
                if r["subject"] == subject
            )
            s[f"busiest_second_{service}"] = max(
                r["utilisation"][service]["busiest_second"]
                for r in results["detect"]
                if r["subject"] == subject
            )
        if detected:
            s["utilisation_both"] = detect_median(
                subject, lambda r: r["utilisation"].get("both", {}).get("utilisation")
            )
            for key in ("p50_s", "p99_s", "bound_p50_s", "bound_p99_s", "p50_ratio", "p99_ratio"):
                s[f"detect_{key}"] = detect_median(subject, lambda r, k=key: r["detection"][k])
            for key in ("p50_is_lower_bound", "p99_is_lower_bound"):
                s[f"detect_{key}"] = detect_median(subject, lambda r, k=key: r["detection"][k])
            s["detect_undetected"] = sum(
                r["detection"]["undetected"] for r in results["detect"] if r["subject"] == subject
            )
            s["detect_changes"] = sum(
                r["detection"]["changes"] for r in results["detect"] if r["subject"] == subject
            )
            s["cpu_per_s_detect"] = detect_median(subject, lambda r: r["cpu_per_s"])
            s["cpu_ms_per_request_detect"] = detect_median(subject, lambda r: r["cpu_ms_per_request"])
            s["rss_mb_detect"] = detect_median(subject, lambda r: r["rss_max_mb"])
            s["scrape_p50_ms_detect"] = detect_median(subject, lambda r: r["scrapes"]["plain"]["p50_ms"])
            s["loop_stall_ms_detect"] = detect_median(subject, lambda r: r["loop"]["max_ms"])
        large = results["large"].get(subject)
        if large:
            for label in ("plain", "gzip"):
                for key in ("p50_ms", "p99_ms", "bytes"):
                    s[f"scrape_{label}_{key}"] = large["scrapes"][label][key]
            s["loop_stall_scrape_ms"] = large["loop"]["during_scrape_max_ms"]
            s["loop_stall_outside_scrape_ms"] = large["loop"]["outside_scrape_max_ms"]
            s["rss_mb_large"] = large["rss_max_mb"]
            if subject == "exporter":
                for service in wl.SERVICES:
                    s[f"utilisation_large_{service}"] = large["utilisation_full_quota"][service][
                        "utilisation"
                    ]
                    s[f"throttled_large_{service}"] = large["utilisation_full_quota"][service][
                        "throttled_total"
                    ]
                s["cpu_per_s_full_quota"] = large["cpu_per_s_full_quota"]
                s["cpu_ms_per_request_full_quota"] = large["cpu_ms_per_request_full_quota"]
                s["loop_stall_full_quota_ms"] = large["loop_full_quota"]["max_ms"]
                s["loop_stall_polling_only_ms"] = large["loop_full_quota"]["outside_scrape_max_ms"]
                s["sweep_s"] = max((v for v in large["sweep_s"].values() if v is not None), default=None)
                s["sweep_bound_s"] = large["sweep_bound_s"]
        summary[subject] = s
    return summary


def _fmt(value: Any, unit: str = "", digits: int = 2, lower_bound: bool = False) -> str:
    if value is None:
        return "n/a"
    if unit == "stall":
        # The probe records wake-ups later than its threshold only; below it, say so.
        return f"<{STALL_THRESHOLD_MS:g}" if value < STALL_THRESHOLD_MS else f"{value:.1f}"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.{digits}f}"
    return (">=" if lower_bound else "") + text + unit


def table(summary: dict[str, Any], settings: Settings) -> tuple[str, list[dict[str, Any]]]:
    exp = summary.get("exporter", {})
    base = summary.get("baseline", {})
    rows: list[dict[str, Any]] = []

    def row(
        label: str,
        key: str,
        unit: str = "",
        digits: int = 2,
        target: str = "",
        ok: Callable[[float], bool] | None = None,
        base_key: str | None = None,
        lb: str | None = None,
        no_ratio: bool = False,
    ) -> None:
        e, b = exp.get(key), base.get(base_key or key)
        e_lb = bool(lb and exp.get(lb))
        b_lb = bool(lb and base.get(lb))
        ratio = None
        below = unit == "stall" and min(e or 0, b or 0) < STALL_THRESHOLD_MS
        if isinstance(e, int | float) and isinstance(b, int | float) and b and not below and not no_ratio:
            ratio = e / b
        verdict = "" if ok is None or e is None else ("yes" if ok(e) and not e_lb else "NO")
        rows.append(
            {
                "figure": label,
                "exporter": e,
                "baseline": b,
                "ratio": ratio,
                "target": target,
                "met": verdict,
                "exporter_lower_bound": e_lb,
                "baseline_lower_bound": b_lb,
                "text": [
                    label,
                    _fmt(e, unit, digits, e_lb),
                    _fmt(b, unit, digits, b_lb),
                    ("<=" if b_lb and not e_lb else "") + _fmt(ratio, "x", 2) if ratio is not None else "n/a",
                    target,
                    verdict,
                ],
            }
        )

    n, big = settings.detect_tasks, settings.large_tasks
    for service in wl.SERVICES:
        row(
            f"{service} quota utilisation ({n} tasks)",
            f"utilisation_{service}",
            digits=3,
            target=">= 0.95",
            ok=lambda v: v >= TARGETS["utilisation"],
        )
        row(f"{service} RequestLimitExceeded ({n})", f"throttled_{service}", target="0", ok=lambda v: v == 0)
        row(f"{service} busiest second, req", f"busiest_second_{service}", digits=0)
    row(
        f"both APIs, share of {settings.quota_mariadb + settings.quota_cdb:g} req/s",
        "utilisation_both",
        digits=3,
    )
    if "utilisation_large_mariadb" in exp:
        for service in wl.SERVICES:
            row(
                f"{service} utilisation, first sweep ({big})",
                f"utilisation_large_{service}",
                digits=3,
                target=">= 0.95",
                ok=lambda v: v >= TARGETS["utilisation"],
            )
            row(
                f"{service} RequestLimitExceeded ({big})",
                f"throttled_large_{service}",
                target="0",
                ok=lambda v: v == 0,
            )
    row("detection p50, s", "detect_p50_s", "s", lb="detect_p50_is_lower_bound")
    row("  lower bound p50 (R/2 + L), s", "detect_bound_p50_s", "s")
    row("  p50 / bound", "detect_p50_ratio", "x", lb="detect_p50_is_lower_bound")
    row("detection p99, s", "detect_p99_s", "s", lb="detect_p99_is_lower_bound")
    row("  lower bound p99 (R + L), s", "detect_bound_p99_s", "s")
    row(
        "  p99 / bound",
        "detect_p99_ratio",
        "x",
        target="<= 1.2",
        ok=lambda v: v <= TARGETS["detection_p99_ratio"],
        lb="detect_p99_is_lower_bound",
    )
    row("  changes undetected at end", "detect_undetected", digits=0, no_ratio=True)
    if "scrape_plain_p50_ms" in exp or "scrape_plain_p50_ms" in base:
        row(
            f"/metrics plain p50 ({big}), ms",
            "scrape_plain_p50_ms",
            "",
            1,
            "< 50",
            lambda v: v < TARGETS["scrape_plain_p50_ms"],
        )
        row(f"/metrics plain p99 ({big}), ms", "scrape_plain_p99_ms", "", 1)
        row(f"/metrics gzip p50 ({big}), ms", "scrape_gzip_p50_ms", "", 1)
        row(f"/metrics gzip p99 ({big}), ms", "scrape_gzip_p99_ms", "", 1)
        row("/metrics bytes, plain", "scrape_plain_bytes")
        row("/metrics bytes, gzip", "scrape_gzip_bytes")
        row(
            "longest loop stall during a scrape, ms",
            "loop_stall_scrape_ms",
            "stall",
            1,
            "<= 20",
            lambda v: v <= TARGETS["loop_stall_ms"],
        )
        row("longest loop stall between scrapes, ms", "loop_stall_outside_scrape_ms", "stall", 1)
        if "loop_stall_polling_only_ms" in exp:
            row("longest loop stall, first sweep, no scrape, ms", "loop_stall_polling_only_ms", "stall", 1)
        row(
            f"RSS max ({big}), MB",
            "rss_mb_large",
            "",
            1,
            "< 150",
            lambda v: v < TARGETS["rss_mb"],
        )
    if "cpu_per_s_full_quota" in exp:
        row(f"CPU s/s, first sweep at full quota ({big})", "cpu_per_s_full_quota", digits=3, no_ratio=True)
        row(f"CPU ms per API request ({big})", "cpu_ms_per_request_full_quota", digits=2, no_ratio=True)
        row(f"first sweep of {big} tasks, s", "sweep_s", digits=1)
        row("  bound (tasks / quota), s", "sweep_bound_s", digits=1)
    row(f"CPU s/s ({n} tasks)", "cpu_per_s_detect", digits=3)
    row(f"CPU ms per API request ({n} tasks)", "cpu_ms_per_request_detect", digits=2)
    row(f"RSS max ({n} tasks), MB", "rss_mb_detect", digits=1)

    headers = ["figure", "exporter", "baseline", "exp/base", "target", "met"]
    cells = [headers] + [r["text"] for r in rows]
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(headers))]
    lines = []
    for index, cell in enumerate(cells):
        lines.append(
            "  ".join(
                str(v).ljust(widths[i]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(cell)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines), [{k: v for k, v in r.items() if k != "text"} for r in rows]


# --------------------------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in (
        "aiohttp",
        "prometheus-client",
        "tencentcloud-sdk-python-common",
        "tencentcloud-sdk-python-mariadb",
        "tencentcloud-sdk-python-cdb",
        "psutil",
        "py-spy",
        "tencentcloud-task-exporter",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }


# --------------------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the exporter against the API quotas, side by side with a naive SDK loop.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run under a minute (small sizes)")
    parser.add_argument("--detect-tasks", type=int, help=f"tasks in detect runs ({defaults.detect_tasks})")
    parser.add_argument("--large-tasks", type=int, help=f"tasks in the large run ({defaults.large_tasks})")
    parser.add_argument("--repeats", type=int, help=f"detect runs per subject ({defaults.repeats})")
    parser.add_argument("--window", type=float, help=f"seconds during which tasks change ({defaults.window})")
    parser.add_argument("--latency", type=float, help=f"API latency, seconds ({defaults.latency})")
    parser.add_argument("--quota-mariadb", type=float, help=f"DescribeFlow req/s ({defaults.quota_mariadb})")
    parser.add_argument(
        "--quota-cdb", type=float, help=f"DescribeAsyncRequestInfo req/s ({defaults.quota_cdb})"
    )
    parser.add_argument("--interval", type=float, help=f"polling.interval, seconds ({defaults.interval})")
    parser.add_argument(
        "--scrapes", type=int, help=f"timed scrapes of each kind at full size ({defaults.scrapes})"
    )
    parser.add_argument(
        "--scrape-every", type=float, help=f"background scrape period, seconds ({defaults.scrape_every})"
    )
    parser.add_argument("--seed", type=int, help=f"workload seed ({defaults.seed})")
    parser.add_argument("--sequential", action="store_true", help="one process pair at a time (slower)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the SDK baseline")
    parser.add_argument("--no-large", action="store_true", help="skip the large (scrape, footprint) runs")
    parser.add_argument("--no-detect", action="store_true", help="skip the detect runs")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of the large runs")
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment on the exporter: safety=0.97 (token bucket share; see bench/probe.py)",
    )
    parser.add_argument("--output", type=Path, help="JSON results file (default bench/results/<time>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, probe logs)")
    parser.add_argument("--hardening", action="store_true", help="only bench/hardening.py (see README)")
    parser.add_argument("--discovery", action="store_true", help="only bench/discovery.py (see README)")
    parser.add_argument("--accounts", action="store_true", help="only bench/accounts.py (see README)")
    args = parser.parse_args(argv)
    settings = defaults
    if args.quick:
        settings = replace(
            settings, detect_tasks=300, large_tasks=1000, repeats=1, window=8.0, scrapes=10, scrape_every=3.0
        )
    overrides = {
        name: getattr(args, name)
        for name in (
            "detect_tasks",
            "large_tasks",
            "repeats",
            "window",
            "latency",
            "quota_mariadb",
            "quota_cdb",
            "interval",
            "scrapes",
            "scrape_every",
            "seed",
        )
        if getattr(args, name) is not None
    }
    settings = replace(
        settings,
        **overrides,
        sequential=args.sequential,
        baseline=not args.no_baseline,
        large=not args.no_large,
        detect=not args.no_detect,
        profile=args.profile,
        what_if=tuple(_what_if(parser, item) for item in args.what_if),
    )
    if (
        settings.detect_tasks < 10
        or settings.large_tasks < 10
        or settings.repeats < 1
        or settings.scrapes < 1
    ):
        parser.error("sizes need at least 10 tasks, 1 repeat and 1 scrape")
    if settings.profile and py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    return settings, args


def _what_if(parser: argparse.ArgumentParser, item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or key != "safety":
        parser.error(f"--what-if: expected safety=SHARE, got {item!r}")
    return key, value


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tc-exporter-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    if args.hardening:
        from bench import hardening  # it imports this module

        return hardening.main(settings, args)
    if args.discovery:
        from bench import discovery  # it imports this module

        return discovery.main(settings, args)
    if args.accounts:
        from bench import accounts  # it imports this module

        return accounts.main(settings, args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output: Path = args.output or Path(__file__).resolve().parent / "results" / f"{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    outdir = output.parent / f"{output.stem}-profiles" if settings.profile else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    log(f"settings: {json.dumps(asdict(settings))}")
    with _workdir(args.keep) as workdir:
        results = run_all(settings, workdir, outdir, log)
    summary = summarize(results, settings)
    text, rows = table(summary, settings)
    info = machine()
    document = {
        "settings": asdict(settings),
        "machine": info,
        "duration_s": time.monotonic() - began,
        "summary": summary,
        "table": rows,
        "runs": results,
        "definitions": DEFINITIONS,
    }
    output.write_text(json.dumps(document, indent=2, default=str))
    print(
        f"tencentcloud-task-exporter benchmark: {info['nproc']} CPUs ({info['cpu_model']}), "
        f"Python {info['python']}, API latency {settings.latency * 1000:.0f} ms, quotas "
        f"{settings.quota_mariadb:g}/{settings.quota_cdb:g} req/s, {settings.repeats} repeat(s), medians"
    )
    print(text)
    for subject in ("exporter", "baseline"):
        for name, profile in results["large"].get(subject, {}).get("profiles", {}).items():
            if profile:
                top = ", ".join(f"{fn} {share:.0%}" for fn, share in profile["self"][:6])
                print(f"profile {subject}/{name} ({profile['samples']} samples), top self: {top}")
    print(f"results: {output} ({time.monotonic() - began:.0f} s)")
    return 0


DEFINITIONS = {
    "utilisation": "accepted requests per second / quota, from the simulator's counters, for the whole run "
    "after the first 3 s (detect runs) or during the first sweep (large run)",
    "detection_latency": "exposed status-change timestamp minus the simulator's wall time of the change; "
    "undetected changes are censored at the end of the run (figures marked >= are then lower bounds)",
    "lower_bound": "R = in-progress tasks of the service at the change / quota (round-robin revisit at "
    "exactly the quota, never under polling.interval), L = API latency; a perfect poller's latency is "
    "uniform on [L, R + L]: p50 bound R/2 + L, p99 bound R + L (the issue's 'in progress / quota', plus the "
    "round trip)",
    "loop_stall": "lateness of a 5 ms sleep in a probe task on the exporter's event loop (bench.probe); "
    "'during a scrape' when the blocked span overlaps a timed /metrics request; for the baseline the same "
    "probe is a thread, so its figure is GIL wait rather than an event loop",
    "scrape": "client-side time from sending GET /metrics to the last body byte on a kept-alive connection",
    "baseline_large": "the baseline fills its Gauges without quota or latency, then is scraped at the "
    "configured latency; its CPU figures come from the detect runs",
}


if __name__ == "__main__":
    sys.exit(main())
