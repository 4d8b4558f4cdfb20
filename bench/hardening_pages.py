"""Hardening part: the board under load. Each API's quota utilisation without page readers, then with
`clients` sessions fetching `/tasks` back to back (issue 19, finding 3: 20,000 tasks, 8 clients), and what
each fetch cost: latency and bytes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import workload as wl
from bench.common import Settings
from bench.hardening_stage import (
    Log,
    Row,
    Sizes,
    Stage,
    client_session,
    ms,
    pair,
    quota_rows,
    quota_use,
)
from bench.measure import ProcessSampler, quantile

FULL_TASKS, CLIENTS = 20_000, 8  # the figures
_LAG = "tencentcloud_exporter_event_loop_lag_seconds"


def loop_lag(stage: Stage, address: str) -> dict[str, float]:
    """The exporter's event-loop lag histogram so far: wake-ups counted, and those later than 20 and 50 ms."""
    status, body = stage.get(address, "/metrics")
    counts: dict[str, float] = {}
    for line in body.decode().splitlines() if status == 200 else ():
        if line.startswith(f'{_LAG}_bucket{{le="0.02"}}'):
            counts["le_20ms"] = float(line.split()[-1])
        elif line.startswith(f'{_LAG}_bucket{{le="0.05"}}'):
            counts["le_50ms"] = float(line.split()[-1])
        elif line.startswith(f"{_LAG}_count"):
            counts["count"] = float(line.split()[-1])
    return counts


def _stalls(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    if not {"count", "le_20ms", "le_50ms"} <= before.keys() & after.keys():
        return {}
    count = after["count"] - before["count"]
    return {
        "wakeups": count,
        "over_20ms": count - (after["le_20ms"] - before["le_20ms"]),
        "over_50ms": count - (after["le_50ms"] - before["le_50ms"]),
    }


def page_tasks(sizes: Sizes) -> int:
    """20,000 tasks for the full run; a tenth as many a quick run's scrape storm watches, for --quick."""
    return FULL_TASKS if sizes == Sizes() else min(FULL_TASKS, sizes.scrape_tasks * 10)


async def readers(
    address: str, clients: int, seconds: float, request_s: float, path: str = "/tasks"
) -> list[tuple[float, int, int]]:
    """`clients` sessions GET `path` back to back for `seconds`: (seconds, status, bytes) of each fetch."""
    hits: list[tuple[float, int, int]] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        async with client_session(request_s) as session:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    async with session.get(f"http://{address}{path}") as response:
                        body, status = await response.read(), response.status
                except (aiohttp.ClientError, TimeoutError):
                    body, status = b"", 0
                hits.append((time.perf_counter() - started, status, len(body)))

    await asyncio.gather(*(client() for _ in range(clients)))
    return hits


def pages_storm(
    settings: Settings, sizes: Sizes, workdir: Path, flag: str, log: Log, path: str = "/tasks"
) -> dict[str, Any]:
    """The part; `path`: what the clients read (another page, or `/-/healthy` as a control)."""
    size = page_tasks(sizes)
    work = wl.build(size, (1e6, 1e6 + 1), seed=settings.seed, quotas=settings.quotas)
    with Stage("pages", workdir, settings, flag) as stage:
        stage.simulator(work)
        exporter, address, _ = stage.exporter(work.watch())
        cpu = stage.enter_context(ProcessSampler(exporter.pid))
        time.sleep(sizes.warmup_s)
        log(f"pages: {work.size} tasks, {sizes.scrape_s:g} s without readers")
        quiet, lag_quiet = (time.time(), time.time() + sizes.scrape_s), loop_lag(stage, address)
        time.sleep(sizes.scrape_s)
        lag_storm = loop_lag(stage, address)
        log(f"pages: {sizes.scrape_s:g} s with {CLIENTS} clients fetching /tasks")
        stage.stats.sample()
        started = time.time()
        hits = asyncio.run(readers(address, CLIENTS, sizes.scrape_s, sizes.request_s, path))
        ended = time.time()
        lag_end = loop_lag(stage, address)
        stage.stats.sample()
        cpu.sample()
        ok = [h for h in hits if h[1] == 200]
        times = [h[0] for h in ok]
        out: dict[str, Any] = {
            "tasks": work.size,
            "clients": CLIENTS,
            "path": path,
            "quiet": {"cpu_per_s": cpu.cpu_per_second(*quiet), "loop": _stalls(lag_quiet, lag_storm)},
            "storm": {
                "cpu_per_s": cpu.cpu_per_second(started, ended),
                "seconds": ended - started,
                "fetches": len(ok),
                "failed": len(hits) - len(ok),
                "per_s": len(ok) / (ended - started),
                "p50_ms": ms(quantile(times, 0.5)),
                "p99_ms": ms(quantile(times, 0.99)),
                "page_bytes": max((h[2] for h in ok), default=0),
                "loop": _stalls(lag_storm, lag_end),
            },
            "exporter_alive": exporter.proc.poll() is None,
        }
        quota_use(stage, settings, {"quiet": quiet, "storm": (started, ended)}, out)
        return out


def pages_rows(part: dict[str, Any]) -> list[Row]:
    tasks, clients = part["tasks"], part["clients"]
    windows = (("quiet", "no readers"), ("storm", f"{clients} clients on /tasks"))
    rows = quota_rows(part, windows, context=f"{tasks:,} tasks, ")
    st = part["storm"]
    rows.append((f"/tasks fetches/s, {clients} clients", st["per_s"], "", None))
    rows.append(("  /tasks p50 / p99, ms", pair(st["p50_ms"], st["p99_ms"]), "", None))
    rows.append(("  /tasks page, bytes", st["page_bytes"], "", None))
    rows.append(("  failed fetches", st["failed"], "0", st["failed"] == 0))
    rows.append(
        (
            "  exporter CPU s/s, no readers / readers",
            pair(part["quiet"]["cpu_per_s"], st["cpu_per_s"], 2),
            "",
            None,
        )
    )
    quiet_loop, storm_loop = part["quiet"].get("loop") or {}, st.get("loop") or {}
    for name in ("over_20ms", "over_50ms"):
        label = f"  event loop woken > {name[5:7]} ms late, no readers / readers"
        rows.append((label, pair(quiet_loop.get(name), storm_loop.get(name), 0), "", None))
    return rows
