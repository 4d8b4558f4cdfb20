"""Hardening parts 1 and 3, both about POST /api/v1/tasks: registration (throughput and latency at two
registry sizes, the fill between them, the bytes written to the storage) and kill -9 (a burst of
registrations, SIGKILL right after the last answer, a restart on the same storage, what was lost).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench import measure
from bench import workload as wl
from bench.common import Settings
from bench.hardening_stage import TARGETS, Log, Row, Sizes, Stage, client_session, ms, pair
from bench.measure import Child, ProcessSampler, quantile


def _written(child: Child) -> tuple[int, int]:
    """Bytes the process passed to write() (files, pipes; not sockets) less its log output, and block-device
    bytes it dirtied, so far (/proc/PID/io). Its only files are the storage."""
    io = psutil.Process(child.pid).io_counters()
    return io.write_chars - sum(len(line.encode()) + 1 for line in list(child.lines)), io.write_bytes


def _bytes(before: tuple[int, int], after: tuple[int, int]) -> dict[str, int]:
    return {"written": after[0] - before[0], "disk": after[1] - before[1]}


@dataclass
class Answer:
    done: float  # perf_counter when the whole answer was read
    seconds: float
    status: int  # 0: no answer (connection error or timeout)
    key: tuple[str, str]


async def post_all(
    sessions: Sequence[aiohttp.ClientSession],
    url: str,
    items: Sequence[tuple[str, str]],
    cap_s: float,
    on_last: Callable[[], None] = lambda: None,
) -> list[Answer]:
    """Registers `items` (product, ID) from every session in parallel, back to back, for at most `cap_s`;
    calls `on_last` right after the answer to the last one."""
    answers: list[Answer] = []
    position = 0
    deadline = time.monotonic() + cap_s

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal position
        while position < len(items) and time.monotonic() < deadline:
            product, task_id = items[position]
            position += 1
            body = {"product": product, "id": int(task_id) if product == "mariadb" else task_id}
            started = time.perf_counter()
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            now = time.perf_counter()
            answers.append(Answer(now, now - started, status, (product, task_id)))
            if len(answers) == len(items):
                on_last()

    await asyncio.gather(*(client(s) for s in sessions))
    return answers


def _figures(answers: list[Answer], started: float) -> dict[str, Any]:
    seconds = max(a.done for a in answers) - started if answers else None
    acked, times = sum(a.status == 201 for a in answers), [a.seconds for a in answers]
    return {
        "posted": len(answers),
        "acknowledged": acked,
        "other_answers": dict(Counter(str(a.status) for a in answers if a.status != 201)),
        "seconds": seconds,
        "per_s": acked / seconds if seconds else None,
        "p50_ms": ms(quantile(times, 0.5)),
        "p99_ms": ms(quantile(times, 0.99)),
        "max_ms": ms(max(times, default=None)),
    }


def _items(size: int, seed: int, settings: Settings) -> tuple[wl.Workload, list[tuple[str, str]]]:
    """`size` tasks the simulator will know (no status changes during the run), in a shuffled order."""
    work = wl.build(size, (1e6, 1e6 + 1), seed=seed, quotas=settings.quotas)
    items = work.task_list()
    random.Random(seed).shuffle(items)
    return work, items


def _slices(answers: list[Answer], started: float, first: int, parts: int = 10) -> list[dict[str, Any]]:
    """Rate and latency by registry size: the answers, in order, cut into `parts` consecutive slices."""
    ordered, size = sorted(answers, key=lambda a: a.done), max(1, len(answers) // parts)
    starts = [started] + [a.done for a in ordered[size - 1 :: size]]
    cuts = range(0, len(ordered), size)
    return [{"registry_from": first + i, **_figures(ordered[i : i + size], starts[i // size])} for i in cuts]


# ------------------------------------------------------------------------------------------ 1. registration


def registration(settings: Settings, sizes: Sizes, workdir: Path, flag: str, log: Log) -> dict[str, Any]:
    low, window = sizes.low, sizes.window
    high = max(sizes.high, low + window)
    work, items = _items(high + window, settings.seed, settings)
    plan = [
        ("prefill", items[:low], sizes.fill_cap_s),
        ("low", items[low : low + window], sizes.window_cap_s),
        ("fill", items[low + window : high], sizes.fill_cap_s),
        ("high", items[high:], sizes.window_cap_s),
    ]
    out: dict[str, Any] = {"clients": sizes.clients, "storage_flag": flag}
    with Stage("registration", workdir, settings, flag) as stage:
        stage.simulator(work)
        exporter, address, _ = stage.exporter()
        before = _written(exporter)
        cpu = stage.enter_context(ProcessSampler(exporter.pid))

        async def drive() -> None:
            headers = {"Authorization": f"Bearer {stage.token}"}
            sessions = [client_session(sizes.request_s, headers=headers) for _ in range(sizes.clients)]
            try:
                registered = 0
                for name, chunk, cap in plan:
                    log(f"registration: {name}, {len(chunk)} registrations from registry size {registered}")
                    at_start, wall, started = _written(exporter), time.time(), time.perf_counter()
                    answers = await post_all(sessions, f"http://{address}/api/v1/tasks", chunk, cap)
                    phase = out[name] = {"registry_at_start": registered, **_figures(answers, started)}
                    phase["capped"] = len(answers) < len(chunk)
                    phase["storage_bytes"] = _bytes(at_start, _written(exporter))
                    phase["cpu_per_s"] = cpu.cpu_per_second(wall, time.time())
                    if name == "fill":
                        phase["slices"] = _slices(answers, started, registered)
                    registered += phase["acknowledged"]
            finally:
                await asyncio.gather(*(s.close() for s in sessions))

        asyncio.run(drive())
        time.sleep(0.3)  # the log readers catch up before bytes are counted
        cpu.sample()
        stage.stats.sample()
        out["storage_bytes"] = _bytes(before, _written(exporter))
        out["storage_size_bytes"] = sum(p.stat().st_size for p in stage.storage.rglob("*") if p.is_file())
        out["storage_files"] = sorted(str(p.relative_to(stage.storage)) for p in stage.storage.rglob("*"))
        out["rss_max_mb"] = (cpu.max_rss() or 0) / 2**20
        last = stage.stats.samples[-1].actions
        out["polls"] = {a: {k: last.get(a, {}).get(k) for k in ("accepted", "errors")} for a in last}
        out["exporter_alive"] = exporter.proc.poll() is None
    low_p50, high_p50 = out["low"]["p50_ms"], out["high"]["p50_ms"]
    out["median_ratio"] = high_p50 / low_p50 if low_p50 and high_p50 else None
    return out


def registration_rows(reg: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []

    def add(label: str, value: Any, target: str = "", met: bool | None = None) -> None:
        rows.append((label, value, target, None if value is None else met))

    for name in ("low", "high"):
        p = reg[name]
        size = f"{p['registry_at_start']:,}->{p['registry_at_start'] + p['acknowledged']:,}"
        rate = p["per_s"] or 0.0
        add(f"registrations/s, registry {size}, {reg['clients']} clients", p["per_s"], ">= 500", rate >= 500)
        add("  p50 / p99 latency, ms", pair(p["p50_ms"], p["p99_ms"]))
    ratio, fill = reg["median_ratio"], reg["fill"]
    add("  p50 at high / p50 at low", ratio, "<= 2", (ratio or 0.0) <= TARGETS["median_ratio"])
    add(f"fill {fill['registry_at_start']:,}->{reg['high']['registry_at_start']:,}, reg/s", fill["per_s"])
    add("  fill duration, s" + (" (capped)" if fill["capped"] else ""), fill["seconds"])
    add("bytes written to storage, whole run, MB", reg["storage_bytes"]["written"] / 1e6)
    add("  block-device bytes dirtied, MB", reg["storage_bytes"]["disk"] / 1e6)
    add("  storage size at the end, MB", reg["storage_size_bytes"] / 1e6)
    others = sum(sum(reg[p]["other_answers"].values()) for p in ("prefill", "low", "fill", "high"))
    add("  answers other than 201", others, "0", others == 0)
    return rows


# ------------------------------------------------------------------------------------------ 3. kill -9


def kill9(settings: Settings, sizes: Sizes, workdir: Path, flag: str, log: Log) -> dict[str, Any]:
    work, items = _items(sizes.burst, settings.seed + 1, settings)
    with Stage("kill9", workdir, settings, flag) as stage:
        stage.simulator(work)
        exporter, address, first_start_s = stage.exporter()
        killed: list[float] = []

        def kill() -> None:
            if not killed:
                os.kill(exporter.pid, signal.SIGKILL)
                killed.append(time.perf_counter())

        async def burst() -> tuple[list[Answer], float]:
            headers = {"Authorization": f"Bearer {stage.token}"}
            sessions = [client_session(sizes.request_s, headers=headers) for _ in range(sizes.burst_clients)]
            try:
                started = time.perf_counter()
                url = f"http://{address}/api/v1/tasks"
                return await post_all(sessions, url, items, sizes.burst_cap_s, kill), started
            finally:
                kill()  # also when the cap cut the burst short
                await asyncio.gather(*(s.close() for s in sessions))

        log(f"kill -9: {len(items)} registrations from {sizes.burst_clients} clients, then SIGKILL")
        answers, started = asyncio.run(burst())
        exporter.proc.wait(10)
        acked = {a.key for a in answers if a.status == 201}
        last_ack = max((a.done for a in answers if a.status == 201), default=None)
        left = sum(p.stat().st_size for p in stage.storage.rglob("*") if p.is_file())
        log(f"kill -9: restarting on the same storage ({left:,} bytes)")
        restarted, address, restart_s = stage.exporter()
        began = time.perf_counter()
        ready = measure.wait_until(lambda: stage.get(address, "/-/ready")[0] == 200, 60, 0.02)
        ready_s = restart_s + time.perf_counter() - began
        status, body = stage.get(address, "/api/v1/tasks")
        listed = {(t["product"], str(t["id"])) for t in json.loads(body)["tasks"]} if status == 200 else set()
        return {
            "clients": sizes.burst_clients,
            **_figures(answers, started),
            "kill_after_last_ack_ms": ms(killed[0] - last_ack) if killed and last_ack else None,
            "killed_by_sigkill": exporter.proc.returncode == -signal.SIGKILL,
            "storage_size_after_kill_bytes": left,
            "first_start_s": first_start_s,
            "restart_to_listening_s": restart_s,
            "restart_to_ready_s": ready_s if ready else None,
            "list_status": status,
            "listed_after_restart": len(listed),
            "missing": len(acked - listed) if status == 200 else None,
            "missing_examples": sorted(acked - listed)[:5],
            "restarted_alive": restarted.proc.poll() is None,
        }


def kill9_rows(k9: dict[str, Any]) -> list[Row]:
    missing, restart = k9["missing"], pair(k9["restart_to_listening_s"], k9["restart_to_ready_s"], 2)
    return [
        (f"kill -9: acknowledged (201), {k9['clients']} clients", k9["acknowledged"], "", None),
        ("  burst registrations/s", k9["per_s"], "", None),
        ("  acknowledged but missing after restart", missing, "0", None if missing is None else missing == 0),
        ("  restart to listening / ready, s", restart, "", None),
    ]
