"""The main benchmark's large runs (`bench.benchmark`): the exporter while its first sweep of `--large-tasks`
spends the whole quota, then /metrics cost (plain and gzip) and the loop stalls scrapes cause at full size;
and the baseline, filled without quota or latency, scraped the same way.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench import workload as wl
from bench.benchmark_stage import SAFETY_GUESS, Pace, Run, loop_stalls
from bench.common import ACTIONS, Settings, scrape_figures
from bench.measure import count_polled, post_json, wait_until
from bench.profiles import Profile

UNLIMITED = 1e6


def _scrape_phase(run: Run, settings: Settings, gap: float = 0.25) -> tuple[float, float]:
    started = time.time()
    for _ in range(settings.scrapes):
        run.scrape(gzip=False)
        time.sleep(gap)
        run.scrape(gzip=True)
        time.sleep(gap)
    return started, time.time()


def run_large_exporter(
    settings: Settings, workdir: Path, quiet: threading.Event, outdir: Path | None, pace: Pace
) -> dict[str, Any]:
    quotas = settings.quotas
    size = settings.large_tasks
    probe = wl.build(size, (0.0, 1.0), seed=settings.seed, quotas=quotas)
    sweep_guess = probe.sweep_seconds(SAFETY_GUESS) + pace.startup_slack
    scrape_phase_guess = settings.scrapes * 0.8
    window = (round(sweep_guess, 1), round(sweep_guess + scrape_phase_guess, 1))
    work = wl.build(size, window, seed=settings.seed, quotas=quotas)
    with Run("large-exporter", workdir, settings) as run:
        run.start_simulator(work, settings.latency, quotas)
        run.start_exporter(work)
        profiles: dict[str, Any] = {}
        polling_profile = None
        if settings.profile and outdir is not None:
            seconds = min(20.0, max(3.0, sweep_guess - pace.startup_slack - 5))
            polling_profile = Profile(run.subject.pid, seconds, outdir / "profile-exporter-polling.txt")

        def swept() -> bool:
            return all(run.stats.total(ACTIONS[s], "accepted") >= work.count(s) for s in wl.PRODUCTS)

        deadline = run.epoch + sweep_guess * 1.5 + 30
        run.idle_until(deadline, settings.scrape_every, stop=swept)
        sweep_end = time.time()
        if polling_profile is not None:
            profiles["polling"] = polling_profile.finish()
        polled = count_polled(run.scrape(keep_body=True).body.decode())
        sweep_times = {s: run.stats.first_reaching(ACTIONS[s], work.count(s)) for s in wl.PRODUCTS}
        start = run.epoch + pace.startup_slack
        full_quota = (start, sweep_end)
        # Others finish first, so the scrape figures are not disturbed by concurrent runs.
        while not quiet.wait(0.5):
            run.idle_until(time.time(), settings.scrape_every)  # only checks that the exporter still runs
        time.sleep(pace.settle)
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
            "scrapes": scrape_figures(phase_scrapes),
            "loop": loop_stalls(run, phase[0], end),
            "loop_full_quota": loop_stalls(run, *full_quota),
            "profiles": profiles,
        }
        requests = sum((run.stats.window(a, *full_quota) or {}).get("accepted", 0) for a in ACTIONS.values())
        cpu = run.process.cpu_between(*full_quota)
        result["cpu_ms_per_request_full_quota"] = cpu / requests * 1000 if cpu and requests else None
        return result


def run_large_baseline(settings: Settings, workdir: Path, outdir: Path | None, pace: Pace) -> dict[str, Any]:
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
        time.sleep(pace.settle + 10 * settings.latency)  # back to its pace at the configured latency
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
            "scrapes": scrape_figures(run.scrapes[first:]),
            "loop": loop_stalls(run, phase[0], end),
            "profiles": {"scrapes": profile.finish()} if profile else {},
        }
