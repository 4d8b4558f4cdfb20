"""Hardening part 2, the scrape storm: each API's quota utilisation without scrapers, then with clients
scraping /metrics back to back, and what the scrapes cost.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench import workload as wl
from bench.common import Settings, scrape_figures
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
from bench.measure import ProcessSampler, Scrape, quantile


def _busy() -> float:
    """CPU seconds the whole machine spent busy so far (every process, ours and anyone else's)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def storm(address: str, clients: int, seconds: float, request_s: float, cap: int) -> list[Scrape]:
    """`clients` sessions GET /metrics back to back for `seconds` (at most `cap` requests in all)."""
    hits: list[Scrape] = []
    deadline = time.monotonic() + seconds

    async def client(gzip: bool) -> None:
        headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
        # auto_decompress off: counts the bytes on the wire
        async with client_session(request_s, auto_decompress=False) as session:
            while time.monotonic() < deadline and len(hits) < cap:
                wall, started = time.time(), time.perf_counter()
                try:
                    async with session.get(f"http://{address}/metrics", headers=headers) as response:
                        body, status = await response.read(), response.status
                except (aiohttp.ClientError, TimeoutError):
                    body, status = b"", 0
                hits.append(Scrape(wall, time.perf_counter() - started, status, len(body), gzip))

    await asyncio.gather(*(client(index % 2 == 1) for index in range(clients)))
    return hits


def scrape_storm(settings: Settings, sizes: Sizes, workdir: Path, flag: str, log: Log) -> dict[str, Any]:
    work = wl.build(sizes.scrape_tasks, (1e6, 1e6 + 1), seed=settings.seed, quotas=settings.quotas)
    with Stage("scrapes", workdir, settings, flag) as stage:
        stage.simulator(work)
        exporter, address, _ = stage.exporter(work.watch())
        cpu = stage.enter_context(ProcessSampler(exporter.pid))
        time.sleep(sizes.warmup_s)
        log(f"scrape storm: {work.size} tasks, {sizes.scrape_s:g} s without scrapers")
        quiet, busy = (time.time(), time.time() + sizes.scrape_s), _busy()
        time.sleep(sizes.scrape_s)
        busy = (_busy() - busy) / sizes.scrape_s
        log(f"scrape storm: {sizes.scrape_s:g} s with {sizes.scrapers} scrapers")
        stage.stats.sample()
        client_cpu, machine, started = sum(psutil.Process().cpu_times()[:2]), _busy(), time.time()
        hits = asyncio.run(storm(address, sizes.scrapers, sizes.scrape_s, sizes.request_s, 1_000_000))
        ended = time.time()
        client_cpu = (sum(psutil.Process().cpu_times()[:2]) - client_cpu) / (ended - started)  # the scrapers'
        machine = (_busy() - machine) / (ended - started)
        stage.stats.sample()
        cpu.sample()
        ok = [h for h in hits if h.status == 200]
        times = [h.seconds for h in ok]
        out: dict[str, Any] = {
            "tasks": {s: work.count(s) for s in wl.PRODUCTS},
            "in_progress": {s: work.in_progress(s, 0.0) for s in wl.PRODUCTS},
            "scrapers": sizes.scrapers,
            "scrape_kinds": "odd-numbered clients gzip, even-numbered plain",
            "quiet": {"cpu_per_s": cpu.cpu_per_second(*quiet), "machine_busy_per_s": busy},
            "storm": {"cpu_per_s": cpu.cpu_per_second(started, ended), "client_cpu_per_s": client_cpu},
            "exporter_alive": exporter.proc.poll() is None,
        }
        out["storm"].update(seconds=ended - started, machine_busy_per_s=machine, cpus=os.cpu_count())
        out["storm"].update(scrapes=len(ok), failed=len(hits) - len(ok), per_s=len(ok) / (ended - started))
        out["storm"].update(p50_ms=ms(quantile(times, 0.5)), p99_ms=ms(quantile(times, 0.99)))
        out["storm"].update(scrape_figures(ok))
        quota_use(stage, settings, {"quiet": quiet, "storm": (started, ended)}, out)
        return out


def scrape_rows(scr: dict[str, Any]) -> list[Row]:
    rows = quota_rows(scr, (("quiet", "no scrapers"), ("storm", f"{scr['scrapers']} scrapers")))
    st = scr["storm"]
    rows.append((f"scrapes/s, {scr['scrapers']} clients (half gzip)", st["per_s"], "", None))
    rows.append(("  scrape p50 / p99, ms", pair(st["p50_ms"], st["p99_ms"]), "", None))
    rows.append(("  plain / gzip p50, ms", pair(st["plain"]["p50_ms"], st["gzip"]["p50_ms"]), "", None))
    rows.append(("  failed scrapes", st["failed"], "0", st["failed"] == 0))
    cpu = pair(scr["quiet"]["cpu_per_s"], st["cpu_per_s"], 2)
    rows.append(("  exporter CPU s/s, no scrapers / storm", cpu, "", None))
    rows.append(("  scrapers' own CPU s/s (same machine)", st["client_cpu_per_s"], "", None))
    busy = pair(scr["quiet"]["machine_busy_per_s"], st["machine_busy_per_s"], 2)
    rows.append((f"  machine busy CPU s/s of {st['cpus']}, no scrapers / storm", busy, "", None))
    return rows
