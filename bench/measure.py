"""Measuring tools for the benchmark: child processes, scrapes, exposition parsing, samplers, statistics.

The py-spy profiles are in `profiles.py`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------- processes


def favour(pid: int) -> None:
    """Runs the simulator ahead of the exporter and the load beside it, where the OS lets us (root): it stands
    for Tencent's servers, which this machine's load never delays. A simulator starved of CPU takes requests
    the exporter spaced out in one bunch, and counts a second over the quota that the exporter never sent."""
    with contextlib.suppress(PermissionError, OSError):
        os.setpriority(os.PRIO_PROCESS, pid, -5)


class Child:
    """A child process started with `python -m MODULE`, whose first JSON line with msg=listening is awaited.

    `stream` says where that line comes (stdout for the simulator, stderr for the exporter and baseline).
    Everything the child prints is kept; it is stopped with SIGTERM (then SIGKILL) by `stop()`.
    """

    def __init__(
        self, name: str, module: str, args: Sequence[str], env: dict[str, str], stream: str = "stderr"
    ) -> None:
        self.name = name
        self.lines: list[str] = []
        self.listening: dict[str, Any] = {}
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_environment(env),
        )
        if module == "bench.simserver":
            favour(self.proc.pid)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, stream == "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, stream == "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, pipe: Any, watch: bool) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))
            if watch and not self._ready.is_set() and line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("msg") == "listening":
                    self.listening = event
                    self._ready.set()

    def wait_listening(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.lines[-30:])
                raise RuntimeError(f"{self.name} did not start (exit {self.proc.poll()}):\n{tail}")
        return self.listening

    def events(self, msg: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            if line.startswith("{") and f'"{msg}"' in line:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("msg") == msg:
                    found.append(event)
        return found

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for reader in self._readers:
            reader.join(2)
        return self.proc.returncode


# --------------------------------------------------------------------------------------------- HTTP


# Loopback only: never route the benchmark's own requests through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**env, **extra, "PYTHONPATH": python_path, "NO_PROXY": "*", "no_proxy": "*"}


def get_json(url: str, timeout: float = 10.0) -> Any:
    with _OPENER.open(url, timeout=timeout) as response:
        return json.load(response)


def post_json(url: str, document: Any, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with _OPENER.open(request, timeout=timeout) as response:
        return json.load(response)


@dataclass
class Scrape:
    started: float  # wall time the request was sent
    seconds: float  # until the whole body was read
    status: int
    size: int  # bytes on the wire (compressed when gzip)
    gzip: bool
    body: bytes = field(repr=False, default=b"")


class Scraper:
    """GETs one path over a kept-alive connection, the way Prometheus does, timing the full response."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port, self._timeout = host.strip("[]"), int(port), timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def get(self, path: str = "/metrics", gzip: bool = False, keep_body: bool = False) -> Scrape:
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
                started_wall, started = time.time(), time.perf_counter()
                try:
                    self._conn.request("GET", path, headers=headers)
                    response = self._conn.getresponse()
                    body = response.read()
                except (http.client.HTTPException, OSError):
                    self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
                    continue
                seconds = time.perf_counter() - started
                if response.getheader("Connection", "").lower() == "close":
                    self._conn.close()
                    self._conn = None
                return Scrape(
                    started_wall,
                    seconds,
                    response.status,
                    len(body),
                    response.getheader("Content-Encoding") == "gzip",
                    body if keep_body else b"",
                )
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# --------------------------------------------------------------------------------------------- exposition

_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def task_series(text: str) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], float]]:
    """From an exposition: each task's current status (the state-set series at 1) and status-change time."""
    status: dict[tuple[str, str], str] = {}
    changed: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("tencentcloud_task_status{"):
            labels_text, _, value = line.rpartition("} ")
            if float(value) == 1:
                labels = dict(_LABEL.findall(labels_text))
                status[(labels["product"], labels["task_id"])] = labels["status"]
        elif line.startswith("tencentcloud_task_status_change_timestamp_seconds{"):
            labels_text, _, value = line.rpartition("} ")
            labels = dict(_LABEL.findall(labels_text))
            changed[(labels["product"], labels["task_id"])] = float(value)
    return status, changed


def count_polled(text: str) -> int:
    """Tasks with a successful poll behind them (they have a last-success timestamp)."""
    return sum(1 for line in text.splitlines() if line.startswith("tencentcloud_task_last_poll_success"))


# --------------------------------------------------------------------------------------------- samplers


@dataclass
class Sample:
    wall: float
    cpu: float  # user + system seconds of the process so far
    rss: int


class _Periodic:
    """Calls `sample()` at start, every `period` seconds in a thread, and once more at stop."""

    def __init__(self, period: float) -> None:
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> object:
        raise NotImplementedError

    def start(self) -> Self:
        self.sample()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    # A context manager too, so a stage (an ExitStack) starts it and stops it with the stage in one line.
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProcessSampler(_Periodic):
    """Samples a process's CPU time and RSS every `period` seconds in a thread."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        super().__init__(period)
        self._process = psutil.Process(pid)
        self.samples: list[Sample] = []

    def sample(self) -> Sample | None:
        try:
            with self._process.oneshot():
                times = self._process.cpu_times()
                sample = Sample(time.time(), times.user + times.system, self._process.memory_info().rss)
        except psutil.Error:
            return None
        self.samples.append(sample)
        return sample

    def cpu_per_second(self, start: float, end: float) -> float | None:
        inside = [s for s in self.samples if start <= s.wall <= end]
        if len(inside) < 2 or inside[-1].wall - inside[0].wall <= 0:
            return None
        return (inside[-1].cpu - inside[0].cpu) / (inside[-1].wall - inside[0].wall)

    def cpu_between(self, start: float, end: float) -> float | None:
        inside = [s for s in self.samples if start <= s.wall <= end]
        return inside[-1].cpu - inside[0].cpu if len(inside) >= 2 else None

    def max_rss(self, start: float = 0.0, end: float = math.inf) -> int | None:
        inside = [s.rss for s in self.samples if start <= s.wall <= end]
        return max(inside) if inside else None


@dataclass
class SimSample:
    wall: float
    now: float  # the simulator's clock
    actions: dict[str, dict[str, Any]]


class SimulatorSampler(_Periodic):
    """Reads the simulator's /_sim/stats every `period` seconds: accepted and throttled requests by action."""

    def __init__(self, url: str, period: float = 0.5) -> None:
        super().__init__(period)
        self._url = url + "/_sim/stats"
        self.samples: list[SimSample] = []

    def sample(self) -> SimSample | None:
        try:
            stats = get_json(self._url)
        except OSError:
            return None
        sample = SimSample(time.time(), stats["now"], stats["actions"])
        self.samples.append(sample)
        return sample

    def _at(self, wall: float, after: bool) -> SimSample | None:
        chosen = [s for s in self.samples if (s.wall >= wall if after else s.wall <= wall)]
        if not chosen:
            return None
        return chosen[0] if after else chosen[-1]

    def window(self, action: str, start: float, end: float) -> dict[str, Any] | None:
        """Accepted and throttled requests of `action` between the samples nearest inside [start, end]."""
        first, last = self._at(start, after=True), self._at(end, after=False)
        if first is None or last is None or last.now <= first.now:
            return None

        def field_of(sample: SimSample, name: str) -> int:
            value = sample.actions.get(action, {}).get(name, 0)
            return int(value)

        seconds = last.now - first.now
        accepted = field_of(last, "accepted") - field_of(first, "accepted")
        throttled = field_of(last, "throttled") - field_of(first, "throttled")
        return {"seconds": seconds, "accepted": accepted, "throttled": throttled, "rate": accepted / seconds}

    def first_reaching(self, action: str, accepted: int) -> float | None:
        """Wall time of the first sample with at least `accepted` requests accepted for `action`."""
        for sample in self.samples:
            if sample.actions.get(action, {}).get("accepted", 0) >= accepted:
                return sample.wall
        return None

    def total(self, action: str, name: str) -> int:
        last = self.samples[-1] if self.samples else None
        return int(last.actions.get(action, {}).get(name, 0)) if last else 0

    def busiest_second(self, action: str) -> int:
        last = self.samples[-1] if self.samples else None
        return int(last.actions.get(action, {}).get("max_in_window", 0)) if last else 0


# --------------------------------------------------------------------------------------------- loop probe


@dataclass
class ProbeLog:
    stalls: list[tuple[float, float]]  # (wall time of the late wake-up, lateness)
    seconds: list[tuple[float, float, int]]  # (wall, max lateness in that second, wake-ups)

    @classmethod
    def read(cls, path: Path) -> ProbeLog:
        stalls, seconds = [], []
        if path.exists():
            for line in path.read_text(encoding="ascii", errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "S":
                    stalls.append((float(parts[1]), float(parts[2])))
                elif len(parts) == 4 and parts[0] == "H":
                    seconds.append((float(parts[1]), float(parts[2]), int(parts[3])))
        return cls(stalls, seconds)

    def worst(self, start: float = 0.0, end: float = math.inf) -> float | None:
        values = [lag for wall, lag, _ in self.seconds if start <= wall <= end]
        values += [lag for wall, lag in self.stalls if start <= wall <= end]
        return max(values) if values else None

    def worst_overlapping(
        self, intervals: Iterable[tuple[float, float]], start: float, end: float, slack: float = 0.002
    ) -> float:
        """The longest stall whose blocked span [wake - lateness, wake] overlaps one of `intervals`."""
        spans = sorted(intervals)
        worst = 0.0
        for wake, lag in self.stalls:
            if not start <= wake <= end:
                continue
            blocked_from = wake - lag
            if any(blocked_from <= e + slack and wake >= s - slack for s, e in spans):
                worst = max(worst, lag)
        return worst

    def worst_outside(self, intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
        spans = sorted(intervals)
        worst = 0.0
        for wake, lag in self.stalls:
            if not start <= wake <= end:
                continue
            blocked_from = wake - lag
            if not any(blocked_from <= e + 0.002 and wake >= s - 0.002 for s, e in spans):
                worst = max(worst, lag)
        return worst


# --------------------------------------------------------------------------------------------- statistics


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (as numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return quantile(present, 0.5)


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()
