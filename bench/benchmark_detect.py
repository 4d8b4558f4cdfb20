"""The main benchmark's detect runs (`bench.benchmark`): a workload whose tasks change status at known
moments, and the latency from each change in the simulator to the new status on the subject's /metrics, next
to the lower bound a poller spending exactly the quota could reach.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench import workload as wl
from bench.benchmark_stage import SAFETY_GUESS, Pace, Run, loop_stalls
from bench.common import ACTIONS, Settings, scrape_figures
from bench.measure import quantile, task_series


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
    tasks still in progress, R = in_progress(product, t) / quota (never under the configured polling
    interval, which sizes are chosen to exceed), plus one API round trip (`latency`).
    A perfect poller's latency for a change at a random moment is uniform on [latency, R + latency].
    """
    status, changed = task_series(text)
    latencies: list[float] = []
    censored: list[float] = []
    revisits: list[float] = []
    early = 0
    by_product: dict[str, list[float]] = {s: [] for s in wl.PRODUCTS}
    revisits_by_product: dict[str, list[float]] = {s: [] for s in wl.PRODUCTS}
    for change in work.changes:
        key = (change.product, change.task_id)
        at = epoch + change.at
        period = max(work.in_progress(change.product, change.at) / quotas[change.product], interval)
        revisits.append(period)
        revisits_by_product[change.product].append(period)
        if status.get(key) == change.new and key in changed:
            value = changed[key] - at
            if value < 0:
                early += 1
            latencies.append(value)
            by_product[change.product].append(value)
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
        "by_product": {
            s: {
                "n": len(v),
                "p50_s": quantile(v, 0.5),
                "p99_s": quantile(v, 0.99),
                "revisit_at_quota_s": _mean(revisits_by_product[s]),
                "p50_ratio": _ratio(quantile(v, 0.5), _mean(revisits_by_product[s]), 0.5, latency),
                "p99_ratio": _ratio(quantile(v, 0.99), _mean(revisits_by_product[s]), 1.0, latency),
            }
            for s, v in by_product.items()
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


def _all_seen(work: wl.Workload, text: str) -> bool:
    """Whether /metrics shows every scheduled change's new status."""
    status, changed = task_series(text)
    keys = [((c.product, c.task_id), c.new) for c in work.changes]
    return all(status.get(key) == new and key in changed for key, new in keys)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _ratio(value: float | None, revisit: float | None, share: float, latency: float) -> float | None:
    if value is None or revisit is None:
        return None
    return value / (revisit * share + latency)


def run_detect(subject: str, settings: Settings, rep: int, workdir: Path, pace: Pace) -> dict[str, Any]:
    quotas = settings.quotas
    probe = wl.build(settings.detect_tasks, (0.0, 1.0), seed=settings.seed + rep, quotas=quotas)
    warm = probe.sweep_seconds(SAFETY_GUESS) + pace.startup_slack
    window = (round(warm, 1), round(warm + settings.window, 1))
    work = wl.build(settings.detect_tasks, window, seed=settings.seed + rep, quotas=quotas)
    tail = max(work.in_progress(s, window[1]) / (quotas[s] * SAFETY_GUESS) for s in wl.PRODUCTS)
    length = window[1] + tail + settings.latency + pace.final_margin
    with Run(f"detect-{subject}-{rep}", workdir, settings) as run:
        run.start_simulator(work, settings.latency, quotas)
        (run.start_exporter if subject == "exporter" else run.start_baseline)(work)
        run.idle_until(run.epoch + length, settings.scrape_every)
        final = run.scrape(keep_body=True)
        grace = time.time() + pace.detect_grace
        while time.time() < grace and not _all_seen(work, final.body.decode()):
            run.idle_until(min(grace, time.time() + settings.scrape_every), settings.scrape_every)
            final = run.scrape(keep_body=True)
        end = time.time()
        run.stats.sample()
        run.process.sample()
        start = run.epoch + pace.startup_slack
        result = {
            "subject": subject,
            "repeat": rep,
            "tasks": work.size,
            "tasks_by_product": {s: work.count(s) for s in wl.PRODUCTS},
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
            "scrapes": scrape_figures(run.scrapes[:-1]),
            "scrape_bytes_final": final.size,
            "loop": loop_stalls(run, start, end),
        }
        cpu_between = run.process.cpu_between(start, end)
        requests = int(result["requests"])
        result["cpu_ms_per_request"] = cpu_between / requests * 1000 if cpu_between and requests else None
        return result
