"""The 50,000-operation part of `python -m bench --discovery` (issue 21): "50,000 listed operations (500
pages): sweep time, RSS, loop lag, zero throttled".

One simulator and one exporter (discovery_stage.Stage), the exporter keeping every discovered task
(`limits.discovered_tasks` raised to the operations listed). After a warm-up of polling the watched tasks
alone, `tasks` operations appear in the list at once, all in progress; the next sweep reads their pages and
Discovery takes them in (time slices, exporter/polling/discovery.py). Measured: the discovering sweep (first
page's arrival to last page's answer, against pages / even pace), how long until the exporter had taken them
all (its "tasks discovered" log lines, stamped by the exporter), the status utilisation meanwhile, then
`after_s` of the steady state (operations in progress: a sweep every polling.interval, which at 500 pages
runs back to back at the list quota), the exporter's RSS, its loop lag (its own histogram, from the scrape
before the operations appeared to the last one) and the throttled requests of both actions, from the
simulator's log and the exporter's counters. /metrics is read only twice: at 50,000 tasks it is over 100 MB
(about 2.8 KB a task), and its size and read time are reported too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import Settings
from bench.discovery_stage import (
    LIST_ACTION,
    LIST_QUOTA,
    STATUS_ACTION,
    Log,
    Sizes,
    Stage,
    busiest_second,
    discovering_sweep,
    even_pace,
    lag_between,
    most_in_a_second,
    operations,
    sends,
    throttle_context,
)
from bench.measure import ProcessSampler

MB = 2**20


@dataclass(frozen=True)
class LargeSizes:
    tasks: int = 50_000  # listed operations (500 pages)
    instances: int = 5_000
    watched: int = 100  # as in the 5,000 part: status polling wants more than its quota
    warmup_s: float = 6.0
    after_s: float = 20.0  # steady state after all were taken: back-to-back sweeps of every page
    sweep_wait_s: float = 60.0  # the discovering sweep must begin and end this soon after they appear
    take_wait_s: float = 180.0  # and every operation be taken this soon after its last page


LARGE = LargeSizes()
QUICK_LARGE = LargeSizes(tasks=2_000, instances=200, watched=60, warmup_s=2.0, after_s=4.0)
SMOKE_LARGE = LargeSizes(tasks=300, instances=30, watched=20, warmup_s=1.0, after_s=1.5, sweep_wait_s=15.0)


def _stamp(event: dict[str, Any]) -> float:
    """The exporter's log time of an event (unix seconds, to the millisecond)."""
    return datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00")).timestamp()


def run_large(settings: Settings, base: Sizes, large: LargeSizes, workdir: Path, log: Log) -> dict[str, Any]:
    sizes = replace(
        base, tasks=large.tasks, instances=large.instances, watched=large.watched, warmup_s=large.warmup_s
    )
    watched, found = operations(sizes, settings.seed + 100)
    quota = settings.quota_cdb
    with Stage("large", workdir, settings, sizes) as stage:
        stage.simulator(watched)
        exporter = stage.exporter(watched)
        memory = stage.enter_context(ProcessSampler(exporter.pid))
        time.sleep(sizes.warmup_s)
        first_scrape = stage.metrics()
        rss_before = memory.sample()
        sent, added, appeared = stage.add_tasks(found)
        log(f"large: {len(found):,} operations in the list (loaded in {appeared - sent:.1f} s); sweeping")
        discovering = discovering_sweep(stage, added, large.sweep_wait_s)
        begun = discovering[0].arrived
        last = max(discovering, key=lambda r: r.answered)
        taken_at = _wait_taken(exporter.events, len(found), last.answered + large.take_wait_s)
        log(f"large: all taken {taken_at - last.answered:.1f} s after the last page; steady state")
        end = time.time() + large.after_s
        while time.time() < end:
            time.sleep(min(0.5, max(0.0, end - time.time())))
            stage.log.read()
        rss_max = memory.max_rss(begun, time.time())
        read_began = time.time()
        last_scrape = stage.metrics()
        read_s = time.time() - read_began
        stage.log.read()
        status, listing = stage.log.of(STATUS_ACTION), stage.log.of(LIST_ACTION)
        throttled = "tencentcloud_api_throttled_requests_total"
        pages = len(discovering)
        # The exporter's send log, read once: what it sent, counted when each request left.
        status_sent, list_sent = sends(stage.dir, quota), sends(stage.dir, LIST_QUOTA)
        return {
            "operations": len(found),
            "pages": pages,
            "load_s": appeared - sent,
            "sweep_s": last.answered - begun,
            "sweep_bound_s": pages / even_pace(LIST_QUOTA),
            "sweep_errors": sum(1 for r in discovering if r.code is not None),
            "taken_after_sweep_s": taken_at - last.answered,
            "status_utilisation_sweep_and_take": _utilisation(status, begun, taken_at, quota),
            "status_utilisation_after": _utilisation(status, taken_at, end, quota),
            "list_requests_per_s_after": sum(1 for r in listing if taken_at <= r.arrived < end and r.accepted)
            / max(1e-9, end - taken_at),
            "list_busiest_second": busiest_second(listing),
            "status_busiest_second": busiest_second(status),
            "throttled_simulator": sum(1 for r in status + listing if not r.accepted),
            # What the simulator's quotas let through only by allowing for its own holds (lateness.py).
            "simulator_lateness": stage.sim_stats().get("lateness", {}),
            "throttled_exporter": sum(
                last_scrape.value(throttled, product="cdb", action=action) or 0.0
                for action in (STATUS_ACTION, LIST_ACTION)
            ),
            "status_sent_busiest_second": most_in_a_second(status_sent),
            "sent_totals": {  # requests in the exporter's send log, and as the simulator logged them
                STATUS_ACTION: [len(status_sent), len(status)],
                LIST_ACTION: [len(list_sent), len(listing)],
            },
            "list_sent_busiest_second": most_in_a_second(list_sent),
            "throttle_context": throttle_context(stage.log.requests, added),
            "discovery_tasks": last_scrape.value("tencentcloud_discovery_tasks", product="cdb"),
            "rss_mb_before": rss_before.rss / MB if rss_before else None,
            "rss_mb_max": rss_max / MB if rss_max else None,
            "lag": lag_between(first_scrape, last_scrape),
            "metrics_mb": len(last_scrape.text.encode()) / MB,
            "metrics_read_s": read_s,
            "exporter_alive": exporter.proc.poll() is None,
        }


def _wait_taken(events: Any, count: int, deadline: float) -> float:
    """The exporter's time of the "tasks discovered" line that brought the total to `count`."""
    while time.time() < deadline:
        total = 0
        for event in events("tasks discovered"):
            total += int(event.get("new", 0))
            if total >= count:
                return _stamp(event)
        time.sleep(0.2)
    raise RuntimeError(f"the exporter did not take all {count:,} operations in time")


def _utilisation(requests: list[Any], start: float, end: float, quota: float) -> float | None:
    accepted = sum(1 for r in requests if r.accepted and start <= r.arrived < end)
    return accepted / (quota * (end - start)) if end > start else None


def rows(large: dict[str, Any] | None) -> list[tuple[str, Any, str, bool | None]]:
    """The large part of the table."""
    if large is None:
        return [("50,000-operation part", "not run", "", None)]
    if "error" in large:
        return [("50,000-operation part", "failed (see the JSON)", "", False)]
    lag = large["lag"]
    bound = lag["max_bound_s"]
    n, pages = large["operations"], large["pages"]
    return [
        (f"{n:,} listed: discovering sweep, {pages} pages, s", large["sweep_s"], "", None),
        ("  bound: pages / (0.96 x 100/s), s", large["sweep_bound_s"], "", None),
        ("  all taken in, s after the last page", large["taken_after_sweep_s"], "", None),
        ("  status utilisation, sweep to all taken", large["status_utilisation_sweep_and_take"], "", None),
        ("  status utilisation, steady state after", large["status_utilisation_after"], "", None),
        ("  list requests per second, steady state", large["list_requests_per_s_after"], "", None),
        ("  RSS before / largest, MB", f"{large['rss_mb_before']:.1f} / {large['rss_mb_max']:.1f}", "", None),
        ("  loop lag over 50 / 100 ms", f"{lag['over_50ms']} / {lag['over_100ms']}", "", None),
        ("  loop lag, largest bucket reached, s", "> 1" if bound is None else f"<= {bound:g}", "", None),
        (
            "  /metrics at the end: MB, read in s",
            f"{large['metrics_mb']:.0f}, {large['metrics_read_s']:.1f}",
            "",
            None,
        ),
        (
            "  most requests sent in a second, status / list (exporter's clock)",
            f"{large['status_sent_busiest_second']} / {large['list_sent_busiest_second']}",
            "40 / 100",
            large["status_sent_busiest_second"] <= 40 and large["list_sent_busiest_second"] <= 100,
        ),
        ("  tencentcloud_discovery_tasks", large["discovery_tasks"], f"{n:,}", large["discovery_tasks"] == n),
        (
            "  throttled, simulator / exporter",
            f"{large['throttled_simulator']} / {large['throttled_exporter']:g}",
            "0 / 0",
            large["throttled_simulator"] == 0 and large["throttled_exporter"] == 0,
        ),
        (
            "  admitted only by the simulator's allowance for its own holds / largest allowance, s",
            f"{large['simulator_lateness'].get('lenient', 0)} / "
            f"{float(large['simulator_lateness'].get('max_slack_s', 0.0)):.3f}",
            "",
            None,
        ),
    ]
