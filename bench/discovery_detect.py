"""Detection through the list (issue 21): in the last repeat of `python -m bench --discovery`, every listed
operation changes from RUNNING to SUCCESS at a random moment of a window, and /metrics is followed until
each one shows it. Measured: detection p50 / p99 from the simulator's change to /metrics, the status and list
requests spent meanwhile against what per-ID polling would spend (the whole status quota, and one sweep of
all IDs takes tasks / (0.96 x quota) seconds), and throttling.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from bench.discovery_stage import LIST_ACTION, STATUS_ACTION, Log, Sizes, Stage, busiest_second, even_pace
from bench.measure import quantile

# One line of the status state set that is 1: a line scan, since parsing 5,000 tasks' families takes seconds.
_STATUS_LINE = re.compile(
    r'^tencentcloud_task_status\{[^}]*task_id="([^"]+)"[^}]*status="success"[^}]*\} 1(?:\.0)?$', re.M
)


def change_times(sizes: Sizes, seed: int, count: int) -> list[float]:
    """When each operation changes, in task time (seconds after the simulator was given it)."""
    rng = random.Random(seed)
    return [sizes.change_after_s + rng.uniform(0.0, sizes.change_window_s) for _ in range(count)]


def detection(
    stage: Stage, found: list[dict[str, Any]], changes: list[float], added: float, sizes: Sizes, log: Log
) -> dict[str, Any]:
    """Follows /metrics until every operation shows SUCCESS (or the cap); the figures of that run."""
    changed_at = {task["task_id"]: added + at for task, at in zip(found, changes, strict=True)}
    seen: dict[str, float] = {}
    deadline = added + sizes.change_after_s + sizes.change_window_s + sizes.detect_cap_s
    scrape_s: list[float] = []
    log(f"detection: {len(found):,} operations change within {sizes.change_window_s:g} s; following /metrics")
    while len(seen) < len(changed_at) and time.time() < deadline:
        began = time.time()
        status, text = stage.get("/metrics")
        now = time.time()
        scrape_s.append(now - began)
        if status == 200:
            for match in _STATUS_LINE.finditer(text):
                task_id = match.group(1)
                if task_id in changed_at and task_id not in seen:
                    seen[task_id] = now
        time.sleep(0.5)  # a scrape of 5,000 tasks costs the exporter too: twice a second, not more
    end = time.time()
    stage.log.read()
    lags = sorted(seen[t] - changed_at[t] for t in seen)
    first_change = added + min(changes)
    # Status requests about the listed operations (the watched tasks spend the rest of the quota).
    every_status = [r for r in stage.log.of(STATUS_ACTION) if first_change - 1.0 <= r.arrived < end]
    status = [r for r in every_status if r.key in changed_at]
    listing = [r for r in stage.log.of(LIST_ACTION) if first_change - 1.0 <= r.arrived < end]
    quota = stage.settings.quota_cdb
    seconds = end - (first_change - 1.0)
    per_id = even_pace(quota) * seconds  # per-ID polling spends the whole quota all along
    return {
        "operations": len(changed_at),
        "detected": len(seen),
        "capped": len(seen) < len(changed_at),
        "p50_s": quantile(lags, 0.5),
        "p99_s": quantile(lags, 0.99),
        "max_s": lags[-1] if lags else None,
        "scrape_median_s": quantile(sorted(scrape_s), 0.5),
        "seconds": seconds,
        "status_requests": sum(1 for r in status if r.accepted),
        "list_requests": sum(1 for r in listing if r.accepted),
        "per_id_requests": per_id,
        "status_share_of_per_id": sum(1 for r in status if r.accepted) / per_id if per_id else None,
        "per_id_bound_s": len(changed_at) / even_pace(quota),
        "throttled": sum(1 for r in every_status + listing if not r.accepted),
        "list_busiest_second": busiest_second(listing),
        "status_busiest_second": busiest_second(every_status),
        "status_utilisation": sum(1 for r in every_status if r.accepted) / (quota * seconds),
    }


def rows(d: dict[str, Any] | None, interval: float) -> list[tuple[str, Any, str, bool | None]]:
    """The detection part of the table."""
    if d is None:
        return [("detection through the list", "not measured", "", None)]
    goal = interval + 2.0
    p99 = d["p99_s"]
    share = d["status_share_of_per_id"]
    return [
        (f"detection of {d['operations']:,} changes, p50, s", d["p50_s"], "", None),
        (
            "  p99, s" + (" (capped)" if d["capped"] else ""),
            p99,
            f"<= {goal:g}",
            p99 is not None and p99 <= goal,
        ),
        ("  per-ID polling: one round of every ID, s", d["per_id_bound_s"], "", None),
        ("  /metrics read (median), s", d["scrape_median_s"], "", None),
        ("  their status requests / per-ID polling's", share, "<= 0.05", share is not None and share <= 0.05),
        ("  status requests, list requests", f"{d['status_requests']:,}, {d['list_requests']:,}", "", None),
        ("  status utilisation meanwhile (watched tasks too)", d["status_utilisation"], ">= 0.95", None),
        ("  throttled meanwhile", d["throttled"], "0", d["throttled"] == 0),
    ]
