"""Hardening figures for the issue "No input takes the exporter down": `python -m bench --hardening`.

1. registration: POST /api/v1/tasks throughput and latency at two registry sizes, the fill between them, and
   the bytes the exporter wrote to its storage;
2. scrape storm: each API's quota utilisation without, then with `scrapers` clients scraping back to back;
3. kill -9 right after the last answer to a burst of registrations, restart, count what was lost.

Each runs against its own simulator and exporter processes on 127.0.0.1, in a temporary folder; the storage
flag is --storage.path once `python -m exporter --help` lists it, else --tasks.state-file. bench/README.md
says what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

from bench import measure
from bench import workload as wl
from bench.measure import Child, ProcessSampler, Scrape, SimulatorSampler, quantile
from bench.run import ACTIONS, CREDENTIALS, REGION, Settings, _fmt, _scrape_figures, _workdir, machine

# Inside the run's storage folder; if --storage.path comes to name a folder rather than a file, it is one.
STORE_NAME = {"--storage.path": "tasks.db", "--tasks.state-file": "registered-tasks.json"}
TARGETS = {"registrations_per_s": 500.0, "median_ratio": 2.0, "utilisation": 0.95}  # from the issue
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
Log = Callable[[str], None]
Row = tuple[str, Any, str, bool | None]  # figure, value, target, met (None: no target)


@dataclass(frozen=True)
class Sizes:
    low: int = 100  # registry size for the first timed window
    high: int = 10_000  # filled up to this many before the second timed window
    window: int = 500  # registrations per timed window
    clients: int = 8
    fill_cap_s: float = 900.0
    window_cap_s: float = 180.0
    scrape_tasks: int = 1_000
    scrapers: int = 50
    scrape_s: float = 30.0
    warmup_s: float = 5.0
    burst: int = 3_000
    burst_clients: int = 16
    burst_cap_s: float = 600.0
    request_s: float = 60.0  # timeout of one HTTP request


QUICK = Sizes(high=600, window=100, scrape_tasks=300, scrape_s=3.0, warmup_s=2.0, burst=300)


def storage_flag() -> str:
    """--storage.path once the CLI accepts it (the SQLite store), else the JSON store's --tasks.state-file."""
    command, env = [sys.executable, "-m", "exporter", "--help"], measure.child_environment({})
    done = subprocess.run(
        command, cwd=measure.ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`python -m exporter --help` failed:\n{done.stderr[-3000:]}")
    return "--storage.path" if "--storage.path" in done.stdout else "--tasks.state-file"


class Stage(contextlib.ExitStack):
    """A simulator and the exporters started against it, in one folder; every process stopped on exit."""

    def __init__(self, name: str, workdir: Path, settings: Settings, flag: str) -> None:
        super().__init__()
        self.name, self.settings, self.flag = name, settings, flag
        self.dir = workdir / name
        self.storage = self.dir / "storage"
        self.storage.mkdir(parents=True)
        self.token = secrets.token_urlsafe(24)
        self.token_file = self.dir / "api-token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)

    def simulator(self, work: wl.Workload) -> None:
        tasks_file = self.dir / "simulator-tasks.json"
        tasks_file.write_text(json.dumps(work.simulator_tasks()))
        s = self.settings
        args = ["--tasks", str(tasks_file), "--latency", str(s.latency), "--max-runtime", "3600"]
        args += ["--quota-mariadb", str(s.quota_mariadb), "--quota-cdb", str(s.quota_cdb)]
        sim = Child(f"{self.name}/simulator", "bench.simserver", args, CREDENTIALS, stream="stdout")
        self.callback(sim.stop)
        self.sim_url: str = sim.wait_listening(60)["url"]
        self.stats = SimulatorSampler(self.sim_url).start()
        self.callback(self.stats.stop)

    def exporter(self, watch: dict[str, list[Any]] | None = None) -> tuple[Child, str, float]:
        """Starts an exporter on this stage's storage; returns it, its address and seconds to listening."""
        s, url = self.settings, self.sim_url
        config = {
            "region": REGION,
            "apis": {name: {"endpoint": url, "rate_limit": q} for name, q in s.quotas.items()},
            "polling": {"interval": s.interval, "finished_interval": "10m", "timeout": "10s"},
            "watch": watch or {},
        }
        config_file = self.dir / "exporter.yaml"
        config_file.write_text(yaml.safe_dump(config, default_flow_style=None, width=1_000_000))
        args = ["--config.file", str(config_file), "--web.listen-address", "127.0.0.1:0", "--log.format"]
        args += ["json", "--log.level", "info", "--tasks.api-token-file", str(self.token_file)]
        args += [self.flag, str(self.storage / STORE_NAME[self.flag])]
        started = time.perf_counter()
        child = Child(f"{self.name}/exporter", "exporter", args, CREDENTIALS)
        self.callback(child.stop)
        address: str = child.wait_listening(120)["address"]
        return child, address, time.perf_counter() - started

    def get(self, address: str, path: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with _OPENER.open(
                urllib.request.Request(f"http://{address}{path}", headers=headers), timeout=60
            ) as got:
                return got.status, got.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def _written(child: Child) -> tuple[int, int]:
    """Bytes the process passed to write() (files, pipes; not sockets) less its log output, and block-device
    bytes it dirtied, so far (/proc/PID/io). Its only files are the storage."""
    io = psutil.Process(child.pid).io_counters()
    return io.write_chars - sum(len(line.encode()) + 1 for line in list(child.lines)), io.write_bytes


def _bytes(before: tuple[int, int], after: tuple[int, int]) -> dict[str, int]:
    return {"written": after[0] - before[0], "disk": after[1] - before[1]}


def _busy() -> float:
    """CPU seconds the whole machine spent busy so far (every process, ours and anyone else's)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# --------------------------------------------------------------------------------------------- clients


@dataclass
class Answer:
    done: float  # perf_counter when the whole answer was read
    seconds: float
    status: int  # 0: no answer (connection error or timeout)
    key: tuple[str, str]


def _session(request_s: float, **options: Any) -> aiohttp.ClientSession:
    """One client: a single kept-alive connection, no proxy from the environment."""
    timeout = aiohttp.ClientTimeout(total=request_s)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=timeout, trust_env=False, **options
    )


async def post_all(
    sessions: Sequence[aiohttp.ClientSession],
    url: str,
    items: Sequence[tuple[str, str]],
    cap_s: float,
    on_last: Callable[[], None] = lambda: None,
) -> list[Answer]:
    """Registers `items` (service, ID) from every session in parallel, back to back, for at most `cap_s`;
    calls `on_last` right after the answer to the last one."""
    answers: list[Answer] = []
    position = 0
    deadline = time.monotonic() + cap_s

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal position
        while position < len(items) and time.monotonic() < deadline:
            service, task_id = items[position]
            position += 1
            body = {"service": service, "id": int(task_id) if service == "mariadb" else task_id}
            started = time.perf_counter()
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            now = time.perf_counter()
            answers.append(Answer(now, now - started, status, (service, task_id)))
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
        "p50_ms": _ms(quantile(times, 0.5)),
        "p99_ms": _ms(quantile(times, 0.99)),
        "max_ms": _ms(max(times, default=None)),
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


def _pair(a: Any, b: Any, digits: int = 1) -> str:
    return f"{_fmt(a, '', digits)} / {_fmt(b, '', digits)}"


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
        cpu = ProcessSampler(exporter.pid).start()
        stage.callback(cpu.stop)

        async def drive() -> None:
            headers = {"Authorization": f"Bearer {stage.token}"}
            sessions = [_session(sizes.request_s, headers=headers) for _ in range(sizes.clients)]
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
        add("  p50 / p99 latency, ms", _pair(p["p50_ms"], p["p99_ms"]))
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


# ------------------------------------------------------------------------------------------ 2. scrape storm


async def storm(address: str, clients: int, seconds: float, request_s: float, cap: int) -> list[Scrape]:
    """`clients` sessions GET /metrics back to back for `seconds` (at most `cap` requests in all)."""
    hits: list[Scrape] = []
    deadline = time.monotonic() + seconds

    async def client(gzip: bool) -> None:
        headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
        async with _session(request_s, auto_decompress=False) as session:  # counts the bytes on the wire
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
        cpu = ProcessSampler(exporter.pid).start()
        stage.callback(cpu.stop)
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
            "tasks": {s: work.count(s) for s in wl.SERVICES},
            "in_progress": {s: work.in_progress(s, 0.0) for s in wl.SERVICES},
            "scrapers": sizes.scrapers,
            "scrape_kinds": "odd-numbered clients gzip, even-numbered plain",
            "quiet": {"cpu_per_s": cpu.cpu_per_second(*quiet), "machine_busy_per_s": busy},
            "storm": {"cpu_per_s": cpu.cpu_per_second(started, ended), "client_cpu_per_s": client_cpu},
            "exporter_alive": exporter.proc.poll() is None,
        }
        out["storm"].update(seconds=ended - started, machine_busy_per_s=machine, cpus=os.cpu_count())
        out["storm"].update(scrapes=len(ok), failed=len(hits) - len(ok), per_s=len(ok) / (ended - started))
        out["storm"].update(p50_ms=_ms(quantile(times, 0.5)), p99_ms=_ms(quantile(times, 0.99)))
        out["storm"].update(_scrape_figures(ok))
        for phase, (start, end) in (("quiet", quiet), ("storm", (started, ended))):
            for service, action in ACTIONS.items():
                counts = stage.stats.window(action, start, end) or {}
                rate = counts.get("rate")
                utilisation = None if rate is None else rate / settings.quotas[service]
                out[phase][service] = {**counts, "utilisation": utilisation}
        return out


def scrape_rows(scr: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for service in wl.SERVICES:
        for phase, label in (("quiet", "no scrapers"), ("storm", f"{scr['scrapers']} scrapers")):
            use, throttled = scr[phase][service].get("utilisation"), scr[phase][service].get("throttled")
            met = None if use is None else use >= TARGETS["utilisation"]
            rows.append((f"{service} utilisation, {label}", use, ">= 0.95", met))
            rows.append((f"  RequestLimitExceeded, {label}", throttled, "0", throttled == 0))
    st = scr["storm"]
    rows.append((f"scrapes/s, {scr['scrapers']} clients (half gzip)", st["per_s"], "", None))
    rows.append(("  scrape p50 / p99, ms", _pair(st["p50_ms"], st["p99_ms"]), "", None))
    rows.append(("  plain / gzip p50, ms", _pair(st["plain"]["p50_ms"], st["gzip"]["p50_ms"]), "", None))
    rows.append(("  failed scrapes", st["failed"], "0", st["failed"] == 0))
    cpu = _pair(scr["quiet"]["cpu_per_s"], st["cpu_per_s"], 2)
    rows.append(("  exporter CPU s/s, no scrapers / storm", cpu, "", None))
    rows.append(("  scrapers' own CPU s/s (same machine)", st["client_cpu_per_s"], "", None))
    busy = _pair(scr["quiet"]["machine_busy_per_s"], st["machine_busy_per_s"], 2)
    rows.append((f"  machine busy CPU s/s of {st['cpus']}, no scrapers / storm", busy, "", None))
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
            sessions = [_session(sizes.request_s, headers=headers) for _ in range(sizes.burst_clients)]
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
        listed = {(t["service"], str(t["id"])) for t in json.loads(body)["tasks"]} if status == 200 else set()
        return {
            "clients": sizes.burst_clients,
            **_figures(answers, started),
            "kill_after_last_ack_ms": _ms(killed[0] - last_ack) if killed and last_ack else None,
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
    missing, restart = k9["missing"], _pair(k9["restart_to_listening_s"], k9["restart_to_ready_s"], 2)
    return [
        (f"kill -9: acknowledged (201), {k9['clients']} clients", k9["acknowledged"], "", None),
        ("  burst registrations/s", k9["per_s"], "", None),
        ("  acknowledged but missing after restart", missing, "0", None if missing is None else missing == 0),
        ("  restart to listening / ready, s", restart, "", None),
    ]


# --------------------------------------------------------------------------------------------- report

PARTS = {
    "registration": (registration, registration_rows),
    "scrapes": (scrape_storm, scrape_rows),
    "kill9": (kill9, kill9_rows),
}


def table(results: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    rows: list[Row] = []
    for name, part in results.items():
        if "error" in part:
            rows.append((f"{name}: FAILED", part["error"].strip().splitlines()[-1][:60], "", False))
        else:
            rows += PARTS[name][1](part)
    cells = [["figure", "value", "target", "met"]]
    for label, value, target, met in rows:
        digits = 3 if isinstance(value, float) and abs(value) < 10 else 1
        text = value if isinstance(value, str) else _fmt(value, "", digits)
        cells.append([label, text, target, "" if met is None else ("yes" if met else "NO")])
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths, strict=True))
        )
        for c in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    keys = ("figure", "value", "target", "met")
    return "\n".join(line.rstrip() for line in lines), [dict(zip(keys, row, strict=True)) for row in rows]


def _code_state() -> dict[str, Any]:
    """The code measured: its folder, and the commit and modified files of a git checkout (read-only)."""
    git = ["git", "--no-optional-locks", "-C", str(measure.ROOT)]
    out: dict[str, Any] = {"root": git[-1]}
    for key, command in (("commit", ["rev-parse", "HEAD"]), ("modified", ["status", "--porcelain"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            lines = subprocess.run([*git, *command], capture_output=True, text=True, timeout=10, check=True)
            out[key] = lines.stdout.splitlines() if key == "modified" else lines.stdout.strip()
    return out


def main(settings: Settings, args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else Sizes()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output: Path = args.output or Path(__file__).resolve().parent / "results" / f"hardening-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    try:
        flag = storage_flag()
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log(f"hardening: storage flag {flag}, sizes {json.dumps(asdict(sizes))}")
    results: dict[str, Any] = {}
    with _workdir(args.keep) as workdir:
        for name, (run_part, _) in PARTS.items():
            try:
                results[name] = run_part(settings, sizes, workdir, flag, log)
            except Exception:  # the other parts still run; the error goes to the table and the JSON
                results[name] = {"error": traceback.format_exc()}
                log(f"{name} failed:\n{results[name]['error']}")
    text, rows = table(results)
    info = machine()
    document = {
        "hardening": results,
        "table": rows,
        "sizes": asdict(sizes),
        "settings": asdict(settings),
        "storage_flag": flag,
        "code": _code_state(),
        "machine": info,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": time.monotonic() - began,
    }
    output.write_text(json.dumps(document, indent=2, default=str))
    machine_text = f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}"
    quotas = f"{settings.quota_mariadb:g}/{settings.quota_cdb:g}"
    api = f"API latency {settings.latency * 1000:.0f} ms, quotas {quotas}"
    print(f"tencentcloud-task-exporter hardening: {machine_text}, {api} req/s, storage {flag}")
    print(text)
    slices = (results.get("registration") or {}).get("fill", {}).get("slices", [])
    if slices:
        shown = ", ".join(f"{c['registry_from']:,}: {_fmt(c['per_s'], '', 0)}/s" for c in slices)
        print(f"fill rate by registry size: {shown}")
    print(f"results: {output} ({time.monotonic() - began:.0f} s)")
    return 1 if any("error" in r for r in results.values()) else 0
