"""Discovery figures for the issue's benchmark: `python -m bench --discovery`.

"5,000 CDB tasks in the list (50 pages): the sweep time against the list quota, and status polling
utilisation during the sweep (goal: at least 0.95)."

Each repeat runs its own simulator (bench.simserver: quotas at the published values, DescribeAsyncRequestInfo
40/s and DescribeTasks 100/s, the API latency, a log of every request) and `python -m exporter`, on
127.0.0.1 in a temporary folder. The exporter watches `watched` CDB tasks in ap-shanghai, more than the status
quota can poll every `polling.interval`, so polling always wants more than the quota; discovery sweeps CDB in
ap-guangzhou every `sweep_every_s`, where the list is empty at first. After a warm-up and a window of polling
alone, `tasks` operations appear in the simulator's list at once (in progress, started within the last hour,
with instances and types); the next sweep reads all their pages and hands them over. Windows are cut from the
simulator's request log (arrival times, to the millisecond). In the last repeat the listed operations change
status at random over a window and /metrics is followed until each shows it (`discovery_detect.py`): the
list speaks for the operations it lists, so detection is bounded by pages, not by IDs. bench/README.md says
what each figure means.

The stage (sizes, processes, log and /metrics readers) is in `discovery_stage.py`, the summary over repeats
and the table in `discovery_report.py`, the 50,000-operation part ("50,000 listed operations (500 pages):
sweep time, RSS, loop lag, zero throttled") in `discovery_large.py`; `--parts sweep,large` picks them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.common import REGION, RESULTS, Settings, code_state, machine, smoke, stderr_log, work_directory
from bench.discovery_detect import change_times, detection
from bench.discovery_large import LARGE, QUICK_LARGE, SMOKE_LARGE, run_large
from bench.discovery_large import rows as large_rows
from bench.discovery_report import rows, summarize, table
from bench.discovery_stage import (
    LIST_ACTION,
    LIST_QUOTA,
    QUICK,
    SMOKE,
    STATUS_ACTION,
    Exposition,
    Log,
    Request,
    Sizes,
    Stage,
    busiest_second,
    discovering_sweep,
    even_pace,
    lag_between,
    most_in_a_second,
    operations,
    read_gaps,
    sends,
    throttle_context,
)
from bench.measure import ProcessSampler, quantile

DEFAULT_LATENCY = 0.05  # API latency unless --latency says otherwise
PARTS = ("sweep", "large")  # the 5,000 operations (repeats, detection), the 50,000 (discovery_large.py)
MB = 2**20


# --------------------------------------------------------------------------------------------- one run


def utilisation(requests: list[Request], start: float, end: float, quota: float) -> dict[str, Any]:
    """Accepted requests that arrived in [start, end) over what the quota allows in that time."""
    inside = [r for r in requests if start <= r.arrived < end]
    accepted = sum(1 for r in inside if r.accepted)
    seconds = end - start
    return {
        "start": start,
        "seconds": seconds,
        "accepted": accepted,
        "throttled": len(inside) - accepted,
        "utilisation": accepted / (quota * seconds) if seconds > 0 else None,
    }


def sweep_figures(requests: list[Request], quota: float) -> dict[str, Any]:
    """One sweep, from its first page's arrival to its last page's answer, against pages / even pace."""
    first, last = requests[0], max(requests, key=lambda r: r.answered)
    span = last.answered - first.arrived
    bound = len(requests) / even_pace(quota)
    return {
        "pages": len(requests),
        "first_arrived": first.arrived,
        "last_answered": last.answered,
        "seconds": span,
        "requests_seconds": max(r.arrived for r in requests) - first.arrived,
        "bound_s": bound,
        "ratio": span / bound,
        "busiest_second": busiest_second(requests),
        "errors": sum(1 for r in requests if r.code is not None),
    }


def per_tenth(requests: list[Request], start: float, end: float) -> list[int]:
    """Accepted requests in each 100 ms from `start` to `end`: the shape of a window, for the JSON."""
    counts = Counter(
        int((r.arrived - start) * 10) for r in requests if r.accepted and start <= r.arrived < end
    )
    return [counts.get(index, 0) for index in range(math.ceil((end - start) * 10))]


def run_once(
    settings: Settings, sizes: Sizes, workdir: Path, index: int, detect: bool, log: Log
) -> dict[str, Any]:
    changes = change_times(sizes, settings.seed + index, sizes.tasks) if detect else None
    watched, found = operations(sizes, settings.seed + index, changes)
    quota = settings.quota_cdb
    with Stage(f"run{index}", workdir, settings, sizes) as stage:
        stage.simulator(watched)
        exporter = stage.exporter(watched)
        memory = stage.enter_context(ProcessSampler(exporter.pid))
        time.sleep(sizes.warmup_s)
        first_scrape = stage.metrics()
        time.sleep(sizes.before_s)
        before_scrape = stage.metrics()
        rss_before = memory.sample()
        sent, added, appeared = stage.add_tasks(found)
        log(f"run {index}: {len(found):,} operations in the list; waiting for the sweep that finds them")
        discovering = discovering_sweep(stage, added, sizes.sweep_wait_s)
        begun = discovering[0].arrived
        window_end = begun + sizes.window_s
        while time.time() < window_end:
            time.sleep(min(0.5, max(0.0, window_end - time.time())))
            stage.log.read()
        after_scrape = stage.metrics()
        rss_found = memory.max_rss(begun, time.time())
        stage.log.read()
        status = stage.log.of(STATUS_ACTION)
        sweep = sweep_figures(discovering, LIST_QUOTA)
        handed_over = sweep["last_answered"]
        out: dict[str, Any] = {
            "operations": len(found),
            "watched": len(watched),
            "load_s": appeared - sent,
            "discovering_sweep": sweep,
            "before": utilisation(status, sent - sizes.before_s, sent, quota),
            "short": utilisation(status, begun, handed_over + sizes.settle_s, quota),
            "window": utilisation(status, begun, window_end, quota),
            "status_per_100ms": per_tenth(status, begun - 1.0, handed_over + 2.0),
            "lag_before": lag_between(first_scrape, before_scrape),
            "lag_window": lag_between(before_scrape, after_scrape),
            "exporter": _exporter_figures(after_scrape),
            "rss_mb": {
                "before": rss_before.rss / MB if rss_before else None,
                "with_discovered": rss_found / MB if rss_found else None,
            },
        }
        if changes is not None:
            out["detection"] = detection(stage, found, changes, added, sizes, log)
            out["rss_mb"]["after_detection"] = (memory.max_rss(time.time() - 5.0) or 0) / MB
        # Throttling over the whole run, from both sides at the same moment.
        last_scrape = stage.metrics()
        out["throttled_exporter"] = _exporter_figures(last_scrape)["throttled"]
        if changes is not None:
            out["detection"]["lag"] = lag_between(after_scrape, last_scrape)
        stage.log.read()
        sim = stage.sim_stats()
        out["simulator"] = sim["services"].get("cdb", {})
        # What its quotas let through only by allowing for its own loop's holds (simulator/lateness.py).
        out["simulator_lateness"] = sim.get("lateness", {})
        out["list_busiest_second"] = busiest_second(stage.log.of(LIST_ACTION))
        out["status_busiest_second"] = busiest_second(stage.log.of(STATUS_ACTION))
        codes = Counter(f"{r.action}: {r.code}" for r in stage.log.requests if r.code is not None)
        out["error_codes"] = dict(codes)
        out["status_per_second"] = _per_second(stage.log.of(STATUS_ACTION), appeared)
        out["simulator_hold_ms"] = {
            action: _hold_ms(stage.log.of(action), settings.latency)
            for action in (STATUS_ACTION, LIST_ACTION)
        }
        out["throttle_context"] = throttle_context(stage.log.requests, appeared)
        # The same seconds by the exporter's clock: what it sent, counted when each request left.
        sent = sends(stage.dir, settings.quota_cdb)
        out["status_sent_busiest_second"] = most_in_a_second(sent)
        out["status_sent_total"] = [len(sent), len(stage.log.of(STATUS_ACTION))]  # exporter's, simulator's
        for context in out["throttle_context"]:
            if context["action"] == STATUS_ACTION:
                at = appeared + context["at"]
                context["exporter_sent_second_before"] = sum(1 for t in sent if at - 1.0 < t <= at)
        out["list_sent_busiest_second"] = most_in_a_second(sends(stage.dir, LIST_QUOTA))
        gaps = read_gaps(r for r in stage.log.requests if r.arrived >= appeared)
        out["read_gaps_over_50ms"] = len(gaps)
        out["read_gaps_longest_s"] = max((g[1] for g in gaps), default=None)
        out["throttled_at"] = [
            [round(r.arrived - appeared, 3), r.action] for r in stage.log.requests if not r.accepted
        ]
        out["exporter_alive"] = exporter.proc.poll() is None
        return out


def _hold_ms(requests: list[Request], latency: float) -> dict[str, float | None]:
    """How long the simulator held requests beyond the API latency (its own work and waits), p50 / p99."""
    held = sorted((r.answered - r.arrived - latency) * 1000 for r in requests)
    return {"p50": quantile(held, 0.5), "p99": quantile(held, 0.99)}


def _per_second(requests: list[Request], origin: float) -> dict[str, int]:
    """Accepted requests in each whole second, counted from `origin` (negative: before it)."""
    counts = Counter(math.floor(r.arrived - origin) for r in requests if r.accepted)
    return {str(second): counts[second] for second in sorted(counts)}


def _exporter_figures(scrape: Exposition) -> dict[str, Any]:
    where = {"product": "cdb", "cloud_region": REGION}
    throttled = "tencentcloud_api_throttled_requests_total"
    return {
        "discovery_tasks": scrape.value("tencentcloud_discovery_tasks", **where),
        "last_sweep_duration_s": scrape.value("tencentcloud_discovery_last_sweep_duration_seconds", **where),
        "sweeps": scrape.value("tencentcloud_discovery_sweeps_total", **where),
        "sweep_errors": scrape.value("tencentcloud_discovery_errors_total", **where) or 0.0,
        "watched_cdb": scrape.value("tencentcloud_exporter_watched_tasks", product="cdb"),
        "throttled": {
            action: scrape.value(throttled, product="cdb", action=action) or 0.0
            for action in (STATUS_ACTION, LIST_ACTION)
        },
    }


# --------------------------------------------------------------------------------------------- main


def main(settings: Settings, args: argparse.Namespace) -> int:
    sizes = (SMOKE if smoke() else QUICK) if args.quick else Sizes()
    large_sizes = (SMOKE_LARGE if smoke() else QUICK_LARGE) if args.quick else LARGE
    chosen = [name.strip() for name in args.parts.split(",")] if args.parts else list(PARTS)
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        print(
            f"error: --parts: unknown {', '.join(unknown)}; the parts are {', '.join(PARTS)}", file=sys.stderr
        )
        return 2
    if not settings.large and "large" in chosen:
        chosen.remove("large")
    if args.repeats is not None:
        sizes = replace(sizes, repeats=args.repeats)
    if args.latency is None:
        settings = replace(settings, latency=DEFAULT_LATENCY)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output: Path = args.output or RESULTS / f"discovery-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    log = stderr_log(began)

    log(f"discovery: sizes {json.dumps(asdict(sizes))}, latency {settings.latency:g} s")
    runs: list[dict[str, Any]] = []
    large: dict[str, Any] | None = None
    with work_directory(args.keep) as workdir:
        for index in range(sizes.repeats if "sweep" in chosen else 0):
            detect = sizes.detect and index == sizes.repeats - 1
            try:
                runs.append(run_once(settings, sizes, workdir, index, detect, log))
            except Exception:  # the other repeats still run; the error goes to the JSON
                runs.append({"error": traceback.format_exc()})
                log(f"run {index} failed:\n{runs[-1]['error']}")
        if "large" in chosen:
            try:
                large = run_large(settings, sizes, large_sizes, workdir, log)
            except Exception:  # the error goes to the table and the JSON
                large = {"error": traceback.format_exc()}
                log(f"large part failed:\n{large['error']}")
    summary = summarize(runs, sizes)
    figures = rows(summary, sizes, settings) if runs else []
    text, table_rows = table(figures + large_rows(large))
    info = machine()
    document = {
        "discovery": {"summary": summary, "runs": runs, "large": large},
        "table": table_rows,
        "sizes": asdict(sizes),
        "large_sizes": asdict(large_sizes),
        "settings": asdict(settings),
        "list_quota": LIST_QUOTA,
        "code": code_state(),
        "machine": info,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": time.monotonic() - began,
    }
    output.write_text(json.dumps(document, indent=2, default=str))
    print(
        f"tencentcloud-task-exporter discovery: {info['nproc']} CPUs ({info['cpu_model']}), Python "
        f"{info['python']}, API latency {settings.latency * 1000:.0f} ms, quotas {STATUS_ACTION} "
        f"{settings.quota_cdb:g}/s, {LIST_ACTION} {LIST_QUOTA:g}/s; {sizes.tasks:,} operations listed, "
        f"{sizes.watched} watched; polling.interval {sizes.poll_every_s:g}s, discovery.interval "
        f"{sizes.sweep_every_s:g}s; {summary['runs']} run(s)"
    )
    print(text)
    print(f"results: {output} ({time.monotonic() - began:.0f} s)")
    failed = summary["failed_runs"] or (large is not None and "error" in large)
    return 1 if failed or not (summary["runs"] or large) else 0
