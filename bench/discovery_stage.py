"""What the discovery benchmark (`bench.discovery`) runs on: its sizes, the CDB operations, one simulator and
one exporter process in a folder of their own, and readers for the simulator's request log and /metrics.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import measure
from bench.common import CREDENTIALS, REGION, Settings
from bench.measure import Child
from exporter.catalogue.listapis import CDB_TASKS, PAGE_SIZE
from exporter.config.values import LimitsConfig
from exporter.polling.ratelimit import SAFETY

WATCH_REGION = "ap-shanghai"  # the watched tasks' region: never swept, so discovery finds only the others
STATUS_ACTION, LIST_ACTION = "DescribeAsyncRequestInfo", CDB_TASKS.action
LIST_QUOTA = CDB_TASKS.default_rate_limit  # the published quota of DescribeTasks, 100 req/s
THROTTLED = "RequestLimitExceeded"
TASK_TYPES = ("REBOOT", "MODIFY PARAM", "UPGRADE MASTER", "IMPORT DATA", "SQL OPERATION", "ROLLBACK")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
Log = Callable[[str], None]
DEFAULT_DISCOVERED_CAP = LimitsConfig().discovered_tasks


@dataclass(frozen=True)
class Sizes:
    tasks: int = 5_000  # CDB operations the list shows (started within the last hour, all RUNNING)
    watched: int = 100  # CDB tasks named in `watch`: enough to want more than the status quota
    instances: int = 500  # instances the operations are spread over
    repeats: int = 3
    sweep_every_s: float = 12.0  # discovery.interval: one sweep in each window
    poll_every_s: float = 1.0  # polling.interval
    warmup_s: float = 6.0  # after /-/ready, before the first window
    before_s: float = 10.0  # window before the operations appear: polling, and sweeps of an empty list
    window_s: float = 10.0  # window from the discovering sweep's first page (< sweep_every_s: one sweep)
    settle_s: float = 1.0  # the short window ends this long after the discovering sweep's last answer
    # In the last repeat the listed operations change status (discovery_detect.py): from change_after_s after
    # they appear, at random over change_window_s, followed on /metrics for up to detect_cap_s more.
    detect: bool = True
    change_after_s: float = 20.0
    change_window_s: float = 60.0
    detect_cap_s: float = 60.0
    sweep_wait_s: float = 30.0  # the discovering sweep must begin this soon after the operations appear


QUICK = Sizes(
    tasks=200,
    watched=60,
    instances=20,
    repeats=1,
    sweep_every_s=5.0,
    warmup_s=2.0,
    before_s=3.0,
    window_s=4.0,
    change_after_s=8.0,
    change_window_s=10.0,
    detect_cap_s=20.0,
)
# The test suite's smoke run (BENCH_SMOKE with --quick): every part runs, on a workload too small to measure.
SMOKE = Sizes(
    tasks=50,
    watched=20,
    instances=10,
    repeats=1,
    sweep_every_s=2.0,
    warmup_s=1.0,
    before_s=1.0,
    window_s=1.5,
    settle_s=0.5,
    change_after_s=4.0,
    change_window_s=2.0,
    detect_cap_s=15.0,
    sweep_wait_s=10.0,
)


def pages(tasks: int) -> int:
    return max(1, math.ceil(tasks / PAGE_SIZE))


def _task_id(rng: random.Random) -> str:
    return "-".join(f"{rng.getrandbits(32):08x}" for _ in range(4))


def operations(
    sizes: Sizes, seed: int, changes: list[float] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The watched tasks (in WATCH_REGION, in progress) and the ones only discovery finds (in REGION, in
    progress, started within the last hour, with instance and type), in the simulator's JSON form; with
    `changes`, each found one succeeds at its change time (task time)."""
    rng = random.Random(seed)
    running = [{"at": 0.0, "status": "RUNNING", "info": "Benchmark operation, running."}]
    watched = [
        {"product": "cdb", "task_id": _task_id(rng), "phases": running, "region": WATCH_REGION}
        for _ in range(sizes.watched)
    ]
    found = []
    for index in range(sizes.tasks):
        instance = rng.randrange(sizes.instances)
        phases = running
        if changes is not None:
            phases = [*running, {"at": changes[index], "status": "SUCCESS", "info": "Benchmark, done."}]
        found.append(
            {
                "product": "cdb",
                "task_id": _task_id(rng),
                "phases": phases,
                "region": REGION,
                "started": -round(rng.uniform(10.0, 3600.0), 3),
                "task_type": rng.choice(TASK_TYPES),
                "instance_id": f"cdb-bench{instance:04d}",
                "instance_name": f"bench-{instance:04d}",
            }
        )
    return watched, found


def start_exporter(
    stack: contextlib.ExitStack, name: str, directory: Path, config: dict[str, Any], env: dict[str, str]
) -> tuple[Child, str]:
    """The exporter on `config` (written to `directory`), stopped with `stack`, once it answers /-/ready:
    the child and the address it listens on."""
    config_file = directory / "exporter.yaml"
    config_file.write_text(yaml.safe_dump(config, default_flow_style=None, width=1_000_000))
    args = ["--config.file", str(config_file), "--web.listen-address", "127.0.0.1:0"]
    args += ["--log.format", "json", "--log.level", "info", "--storage.path", str(directory / "tasks.db")]
    # bench.probe is `python -m exporter` plus a log of each request's send time (BENCH_SEND_LOG).
    env = {**env, "BENCH_SEND_LOG": str(directory / "sends.log")}
    child = Child(f"{name}/exporter", "bench.probe", args, env)
    stack.callback(child.stop)
    address: str = child.wait_listening(120)["address"]
    if not measure.wait_until(lambda: exporter_get(address, "/-/ready")[0] == 200, 60):
        raise RuntimeError(f"{name}: the exporter never became ready")
    return child, address


def exporter_get(address: str, path: str) -> tuple[int, str]:
    """GET `path` from the exporter: the status and body, (0, "") when it cannot be reached."""
    try:
        with _OPENER.open(f"http://{address}{path}", timeout=60) as got:
            return got.status, got.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def exporter_metrics(name: str, address: str) -> Exposition:
    status, text = exporter_get(address, "/metrics")
    if status != 200:
        raise RuntimeError(f"{name}: GET /metrics answered {status}")
    return Exposition(time.time(), text)


class Stage(contextlib.ExitStack):
    """A simulator and an exporter in one folder; both stopped on exit."""

    def __init__(self, name: str, workdir: Path, settings: Settings, sizes: Sizes) -> None:
        super().__init__()
        self.name, self.settings, self.sizes = name, settings, sizes
        self.dir = workdir / name
        self.dir.mkdir(parents=True)

    def simulator(self, tasks: list[dict[str, Any]]) -> None:
        tasks_file = self.dir / "simulator-tasks.json"
        tasks_file.write_text(json.dumps(tasks))
        s = self.settings
        args = ["--tasks", str(tasks_file), "--latency", str(s.latency), "--max-runtime", "3600"]
        args += ["--quota-mariadb", str(s.quota_mariadb), "--quota-cdb", str(s.quota_cdb)]
        # The throttled requests counted here are the exporter's, not the simulator's own lateness.
        args += ["--list-quota", f"cdb={LIST_QUOTA:g}", "--record", "--list-cache", "--allow-lateness"]
        sim = Child(f"{self.name}/simulator", "bench.simserver", args, CREDENTIALS, stream="stdout")
        self.callback(sim.stop)
        self.sim_url: str = sim.wait_listening(60)["url"]
        self.log = RequestLog(self.sim_url)

    def exporter(self, watched: list[dict[str, Any]]) -> Child:
        s, z = self.settings, self.sizes
        config = {
            "region": REGION,
            "apis": {
                "cdb": {"endpoint": self.sim_url, "rate_limit": s.quota_cdb, "list_rate_limit": LIST_QUOTA}
            },
            "polling": {"interval": z.poll_every_s, "finished_interval": "10m", "timeout": "10s"},
            "watch": {"cdb_async_requests": [{"id": t["task_id"], "region": t["region"]} for t in watched]},
            "discovery": {
                "regions": [REGION],
                "products": ["cdb"],
                "interval": z.sweep_every_s,
                "lookback": "24h",
            },
            # Every listed operation is kept (the default cap, 20,000, would cut the 50,000 part short).
            "limits": {"discovered_tasks": max(DEFAULT_DISCOVERED_CAP, z.tasks)},
        }
        child, self.address = start_exporter(self, self.name, self.dir, config, CREDENTIALS)
        return child

    def get(self, path: str) -> tuple[int, str]:
        return exporter_get(self.address, path)

    def metrics(self) -> Exposition:
        return exporter_metrics(self.name, self.address)

    def add_tasks(self, tasks: list[dict[str, Any]]) -> tuple[float, float, float]:
        """Gives the simulator `tasks` at once; returns the wall times the request was sent, the simulator
        added them (a list request logged as arrived from then on lists them) and the answer came back.

        The simulator goes on answering while it builds their lists, so a sweep may arrive, and find them,
        before the answer is back: the sweep that finds them is told by the time they were added."""
        path = self.dir / "appearing-tasks.json"
        path.write_text(json.dumps(tasks))
        sent = time.time()
        answer = measure.post_json(self.sim_url + "/_sim/bench/load", {"path": str(path)}, timeout=120)
        if answer.get("added") != len(tasks):
            raise RuntimeError(f"{self.name}: the simulator added {answer} of {len(tasks)} tasks")
        return sent, float(answer["at"]), time.time()

    def sim_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = measure.get_json(self.sim_url + "/_sim/stats")
        return stats


# --------------------------------------------------------------------------------------------- request log


@dataclass(frozen=True)
class Request:
    arrived: float  # wall time the simulator read it (and counted it against the quota)
    answered: float  # wall time its answer was ready (after the API latency)
    action: str
    key: Any  # the task ID of a status request, the Offset of a list request
    code: str | None  # the error code; None for a successful answer

    @property
    def accepted(self) -> bool:
        """Within the quota (an error after the quota check, as an unknown ID, still spent it)."""
        return self.code is None or not (self.code == THROTTLED or self.code.startswith("AuthFailure"))


class RequestLog:
    """The simulator's log of API requests (`bench.simserver --record`), read incrementally."""

    def __init__(self, sim_url: str) -> None:
        self._url = sim_url + "/_sim/bench/requests"
        self.requests: list[Request] = []
        self._next = 0

    def read(self) -> list[Request]:
        """Fetches the entries not read yet; returns them."""
        got = measure.get_json(f"{self._url}?since={self._next}", timeout=30)
        new = [Request(*entry) for entry in got["requests"]]
        self._next += len(new)
        self.requests += new
        return new

    def of(self, action: str, start: float = -math.inf, end: float = math.inf) -> list[Request]:
        return [r for r in self.requests if r.action == action and start <= r.arrived < end]


def sweeps(requests: Iterable[Request]) -> list[list[Request]]:
    """List requests grouped by sweep: each sweep begins with the page at Offset 0."""
    found: list[list[Request]] = []
    for request in sorted(requests, key=lambda r: r.arrived):
        if request.key == 0 or not found:
            found.append([])
        found[-1].append(request)
    return found


def discovering_sweep(stage: Stage, added: float, wait_s: float) -> list[Request]:
    """The first sweep that began after the operations were added, once all its pages have been answered."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        stage.log.read()
        later = [s for s in sweeps(stage.log.of(LIST_ACTION)) if s[0].arrived >= added]
        # Complete once the next sweep began, or once its pages have all been asked and a second passed.
        if later and (len(later) > 1 or (time.time() - max(r.answered for r in later[0]) > 1.0)):
            return later[0]
        time.sleep(0.2)
    raise RuntimeError(f"no sweep began and ended within {wait_s:g} s of the operations appearing")


def busiest_second(requests: Iterable[Request]) -> int:
    """The most accepted requests that arrived within any one second (the simulator's sliding window)."""
    return most_in_a_second(sorted(r.arrived for r in requests if r.accepted))


def read_gaps(requests: Iterable[Request], over: float = 0.05) -> list[tuple[float, float, int]]:
    """Spells longer than `over` in which the simulator read no request at all, while the exporter sends one
    every 10 ms (the list pace) to 26 ms (the status pace): (when the spell began, how long it lasted, how
    many requests it then read within 5 ms). A spell followed by a bunch is the simulator's loop busy or its
    process waiting for a CPU; the requests it then reads at once were sent spread over the spell."""
    times = sorted(r.arrived for r in requests)
    out = []
    for index in range(1, len(times)):
        gap = times[index] - times[index - 1]
        if gap > over:
            bunch = sum(1 for t in times[index : index + 50] if t - times[index] <= 0.005)
            out.append((times[index - 1], gap, bunch))
    return out


def throttle_context(requests: list[Request], origin: float) -> list[dict[str, Any]]:
    """For each throttled request: when (from `origin`), its action, how many of its action the simulator
    accepted in the second before, and the longest read gap (read_gaps) in that second."""
    gaps = read_gaps(requests)
    out = []
    for request in [r for r in requests if not r.accepted][:50]:
        before = [g for g in gaps if request.arrived - 1.0 <= g[0] < request.arrived]
        longest = max(before, key=lambda g: g[1], default=None)
        out.append(
            {
                "at": round(request.arrived - origin, 3),
                "action": request.action,
                "accepted_second_before": sum(
                    1
                    for r in requests
                    if r.action == request.action
                    and r.accepted
                    and request.arrived - 1.0 < r.arrived
                    and r.arrived <= request.arrived
                ),
                "longest_gap_s": None if longest is None else round(longest[1], 3),
                "gap_began_s_before": None if longest is None else round(request.arrived - longest[0], 3),
                "bunch_after_gap": None if longest is None else longest[2],
            }
        )
    return out


def sends(directory: Path, rate: float) -> list[float]:
    """The send times (wall clock) the exporter's bucket of `rate` counted, from bench.probe's send log."""
    path = directory / "sends.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        at, _, bucket = line.partition(" ")
        if bucket and float(bucket) == rate:
            out.append(float(at))
    return sorted(out)


def most_in_a_second(times: list[float]) -> int:
    """The most of `times` (sorted) within any sliding second (as the simulator's window counts)."""
    best, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


def even_pace(quota: float) -> float:
    """Requests per second the exporter's token bucket sends at: SAFETY of the quota."""
    return quota * SAFETY


# --------------------------------------------------------------------------------------------- /metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
LAG = "tencentcloud_exporter_event_loop_lag_seconds"


@dataclass(frozen=True)
class Exposition:
    wall: float
    text: str

    def values(self, name: str, **labels: str) -> list[float]:
        """Values of the series called `name` whose labels include `labels`."""
        out = []
        for line in self.text.splitlines():
            if not line.startswith(name):
                continue
            match = _SAMPLE.match(line)
            if match is None or match.group(1) != name:
                continue
            have = dict(_LABEL.findall(match.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                out.append(float(match.group(3)))
        return out

    def value(self, name: str, **labels: str) -> float | None:
        found = self.values(name, **labels)
        return sum(found) if found else None

    def lag_buckets(self) -> dict[float, float]:
        """The loop-lag histogram's cumulative counts by upper bound (+Inf as math.inf)."""
        buckets = {}
        for line in self.text.splitlines():
            if line.startswith(LAG + "_bucket{"):
                match = _SAMPLE.match(line)
                if match is not None:
                    le = dict(_LABEL.findall(match.group(2) or "")).get("le", "+Inf")
                    buckets[math.inf if le == "+Inf" else float(le)] = float(match.group(3))
        return buckets


def lag_between(before: Exposition, after: Exposition) -> dict[str, Any]:
    """The loop-lag observations made between two scrapes: how many, over 20/50/100 ms, and the largest
    bucket bound any of them reached (None: one was over the last finite bound)."""
    start, end = before.lag_buckets(), after.lag_buckets()
    counts = {le: end.get(le, 0.0) - start.get(le, 0.0) for le in end}
    total = counts.get(math.inf, 0.0)
    over = {f"over_{round(b * 1000)}ms": int(total - counts.get(b, 0.0)) for b in (0.02, 0.05, 0.1)}
    reached = min((le for le, n in counts.items() if n >= total), default=math.inf)
    return {
        "observations": int(total),
        **over,
        "max_bound_s": None if math.isinf(reached) else reached,
        "seconds": after.wall - before.wall,
    }
