"""The accounts benchmark's stage (`bench.accounts` runs it): the two accounts and their flows, the sizes, the
simulators and the exporter of one stage in a folder of their own, and the measure of one window from the
simulators' per-account counters, the same window for every bucket.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import measure
from bench.discovery_stage import Exposition, exporter_get, exporter_metrics, lag_between, start_exporter
from bench.measure import Child

PRODUCT, ACTION = "mariadb", "DescribeFlow"
RUNNING = 2  # MariaDB DescribeFlow: 0 success, 1 failed, 2 running
REGIONS = ("ap-guangzhou", "ap-shanghai")
DEFAULT_LATENCY = 0.05
GOAL = 0.95  # each bucket's utilisation, all four in the same window
MAX_WINDOW_S = 100.0  # the simulator remembers accept times for 120 s; windows are read after they end
Log = Callable[[str], None]


@dataclass(frozen=True)
class Account:
    name: str
    secret_id: str
    secret_key: str


ACCOUNTS = (
    Account("prod", "AKIDBENCHPROD00000000000000NOTAREALKEY", "bench-prod-key-not-valid-anywhere"),
    Account("staging", "AKIDBENCHSTAGING000000000000NOTAREALKEY", "bench-staging-key-not-valid-anywhere"),
)


@dataclass(frozen=True)
class Sizes:
    tasks_per_bucket: int = 500  # flows per (account, region): 500 / 5 s = 100 polls/s wanted vs 20/s
    interval_s: float = 5.0  # polling.interval
    quota: float = 20.0  # DescribeFlow, per (account, endpoint): the published quota
    latency: float = DEFAULT_LATENCY
    repeats: int = 3
    warmup_s: float = 8.0  # after /-/ready, before the window
    window_s: float = 25.0  # the accounts stage's window
    control_window_s: float = 15.0
    seed: int = 1

    @property
    def wanted_per_bucket(self) -> float:
        return self.tasks_per_bucket / self.interval_s


QUICK = Sizes(tasks_per_bucket=150, repeats=1, warmup_s=4.0, window_s=10.0, control_window_s=6.0)
# The test suite's smoke run (BENCH_SMOKE with --quick): every part runs, on a workload too small to measure.
SMOKE = Sizes(tasks_per_bucket=100, repeats=1, warmup_s=1.0, window_s=1.0, control_window_s=1.0)


@dataclass(frozen=True)
class Bucket:
    """One quota as Tencent counts it: an account's DescribeFlow requests to one endpoint."""

    account: Account
    region: str  # the region served there (control: "*", every region)
    sim_url: str

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.sim_url).netloc

    @property
    def name(self) -> str:
        return f"{self.account.name}@{self.region}"


def flows(sizes: Sizes) -> list[dict[str, Any]]:
    """Per (account, region), `tasks_per_bucket` flows in progress, in the simulator's JSON form plus the
    account's name. IDs are unique per region (an ID names one operation in one region)."""
    rng = random.Random(sizes.seed)
    ids = rng.sample(range(100_000, 10_000_000), len(ACCOUNTS) * len(REGIONS) * sizes.tasks_per_bucket)
    out = []
    for account in ACCOUNTS:
        for region in REGIONS:
            for _ in range(sizes.tasks_per_bucket):
                out.append(
                    {
                        "product": PRODUCT,
                        "task_id": str(ids.pop()),
                        "phases": [{"at": 0.0, "status": RUNNING}],
                        "region": region,
                        "owner": account.secret_id,
                        "account": account.name,
                    }
                )
    return out


# --------------------------------------------------------------------------------------------- processes


class Stage(contextlib.ExitStack):
    """Simulators and one exporter in one folder; all stopped on exit."""

    def __init__(self, name: str, workdir: Path, sizes: Sizes) -> None:
        super().__init__()
        self.name, self.sizes = name, sizes
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.pids: dict[str, int] = {}

    def simulator(
        self, label: str, tasks: list[dict[str, Any]], accounts: list[Account], region: str | None
    ) -> str:
        tasks_file = self.dir / f"simulator-{label}-tasks.json"
        sim_tasks = [{k: v for k, v in t.items() if k != "account"} for t in tasks]
        tasks_file.write_text(json.dumps(sim_tasks))
        keys_file = self.dir / f"simulator-{label}-accounts.json"
        keys_file.write_text(
            json.dumps([{"secret_id": a.secret_id, "secret_key": a.secret_key} for a in accounts])
        )
        z = self.sizes
        args = ["--tasks", str(tasks_file), "--latency", str(z.latency), "--max-runtime", "1800"]
        args += ["--quota-mariadb", str(z.quota), "--accounts-file", str(keys_file)]
        if region is not None:
            args += ["--region", region]
        sim = Child(f"{self.name}/simulator-{label}", "bench.simserver", args, {}, stream="stdout")
        self.callback(sim.stop)
        event = sim.wait_listening(60)
        if event.get("region") != region:
            raise RuntimeError(
                f"{self.name}: simulator {label} serves {event.get('region')!r}, not {region!r}"
            )
        self.pids[f"simulator-{label}"] = sim.pid
        url: str = event["url"]
        return url

    def exporter(self, accounts: list[Account], urls: dict[str, str], tasks: list[dict[str, Any]]) -> Child:
        z = self.sizes
        config = {
            "accounts": [
                {"name": a.name, "credentials": {"secret_id": a.secret_id, "secret_key": a.secret_key}}
                for a in accounts
            ],
            "region": REGIONS[0],
            "apis": {
                PRODUCT: {
                    "endpoint": urls[REGIONS[0]],
                    "endpoints": {region: urls[region] for region in REGIONS},
                    "rate_limit": z.quota,
                }
            },
            "polling": {"interval": z.interval_s, "finished_interval": "10m", "timeout": "10s"},
            "watch": {
                "mariadb_flows": [
                    {"id": int(t["task_id"]), "region": t["region"], "account": t["account"]} for t in tasks
                ]
            },
        }
        child, self.address = start_exporter(self, self.name, self.dir, config, {})
        self.pids["exporter"] = child.pid
        return child

    def get(self, path: str) -> tuple[int, str]:
        return exporter_get(self.address, path)

    def metrics(self) -> Exposition:
        return exporter_metrics(self.name, self.address)


# --------------------------------------------------------------------------------------------- one window


def _sim_stats(url: str) -> dict[str, Any]:
    """The simulator's /_sim/stats, with the bench's monotonic clock read just before and after."""
    before = time.monotonic()
    stats: dict[str, Any] = measure.get_json(url + "/_sim/stats")
    stats["_read_between"] = (before, time.monotonic())
    return stats


def _bucket_stats(stats: dict[str, Any], bucket: Bucket) -> dict[str, Any]:
    found: dict[str, Any] = stats["accounts"].get(bucket.account.secret_id, {}).get(f"{PRODUCT}:{ACTION}", {})
    return found


def _accepted(bucket: Bucket, start: float, end: float) -> int:
    query = urllib.parse.urlencode(
        {
            "secret_id": bucket.account.secret_id,
            "product": PRODUCT,
            "action": ACTION,
            "start": start,
            "end": end,
        }
    )
    answer = measure.get_json(f"{bucket.sim_url}/_sim/stats/accepted?{query}")
    return int(answer["accepted"])


def _cpu(pids: dict[str, int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
            out[name] = times.user + times.system
        except psutil.Error:
            out[name] = None
    return out


def _per_second(first: float | None, last: float | None, seconds: float) -> float | None:
    return None if first is None or last is None or seconds <= 0 else (last - first) / seconds


def _busy() -> tuple[float, float]:
    """The whole machine's busy and total CPU seconds so far."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times)
    return total - idle, total


def measure_window(stage: Stage, buckets: list[Bucket], seconds: float, quota: float) -> dict[str, Any]:
    """Every bucket's figures over one window of `seconds`, the same window for all of them."""
    urls = sorted({b.sim_url for b in buckets})
    scrape_before = stage.metrics()
    time.sleep(0.5)  # the scrape's own cost stays outside the window
    stats_before = {url: _sim_stats(url) for url in urls}
    cpu_before, busy_before = _cpu(stage.pids), _busy()
    start, wall_start = time.monotonic(), time.time()
    time.sleep(seconds)
    end, wall_end = time.monotonic(), time.time()
    cpu_after, busy_after = _cpu(stage.pids), _busy()
    stats_after = {url: _sim_stats(url) for url in urls}
    scrape_after = stage.metrics()
    span = end - start

    # The simulators' `now` must lie between the bench's readings around the request: one clock.
    clock_ok = all(
        s["_read_between"][0] - 0.001 <= s["now"] <= s["_read_between"][1] + 0.001
        for s in (*stats_before.values(), *stats_after.values())
    )
    per_bucket: dict[str, dict[str, Any]] = {}
    for bucket in buckets:
        first, last = (_bucket_stats(s[bucket.sim_url], bucket) for s in (stats_before, stats_after))
        accepted = _accepted(bucket, start, end)
        per_second = [_accepted(bucket, start + k, min(end, start + k + 1) - 1e-9) for k in range(int(span))]
        labels = {"account": bucket.account.name, "product": PRODUCT, "action": ACTION}
        labels["api_endpoint"] = bucket.host
        sent = [x.value("tencentcloud_api_requests_total", **labels) for x in (scrape_before, scrape_after)]
        per_bucket[bucket.name] = {
            "account": bucket.account.name,
            "region": bucket.region,
            "api_endpoint": bucket.host,
            "quota": quota,
            "accepted": accepted,
            "accepted_by_counters": int(last.get("accepted", 0)) - int(first.get("accepted", 0)),
            "rate": accepted / span,
            "utilisation": accepted / (quota * span),
            "per_second": per_second,
            "throttled_window": int(last.get("throttled", 0)) - int(first.get("throttled", 0)),
            # Whole run so far (warm-up included), as the simulator counted them:
            "throttled": int(last.get("throttled", 0)),
            "max_in_window": int(last.get("max_in_window", 0)),
            "violations": max(0, int(last.get("max_in_window", 0)) - math.ceil(quota)),
            "foreign": int(last.get("foreign", 0)),
            "wrong_region": int(last.get("wrong_region", 0)),
            "errors": dict(last.get("errors", {})),
            "simulator_quota": last.get("quota"),
            "exporter": {
                "requests_per_s": _per_second(sent[0], sent[1], scrape_after.wall - scrape_before.wall),
                "requests_total": sent[1],
                "throttled_total": scrape_after.value("tencentcloud_api_throttled_requests_total", **labels),
                "errors_total": scrape_after.value("tencentcloud_api_errors_total", **labels),
                "rate_limit": scrape_after.value("tencentcloud_api_rate_limit_requests_per_second", **labels),
                "current_rate_limit": scrape_after.value(
                    "tencentcloud_api_current_rate_limit_requests_per_second", **labels
                ),
            },
        }
    rates = [b["rate"] for b in per_bucket.values()]
    utilisations = [b["utilisation"] for b in per_bucket.values()]
    busy = busy_after[0] - busy_before[0]
    total = busy_after[1] - busy_before[1]
    cpu = {name: _per_second(cpu_before.get(name), cpu_after.get(name), span) for name in stage.pids}
    return {
        "start_wall": wall_start,
        "end_wall": wall_end,
        "seconds": span,
        "clock_shared": clock_ok,
        "buckets": per_bucket,
        "aggregate_rate": sum(rates),
        "sum_quotas": quota * len(buckets),
        "aggregate_utilisation": sum(rates) / (quota * len(buckets)),
        "min_utilisation": min(utilisations),
        "all_at_goal": all(u >= GOAL for u in utilisations),
        "exporter_current_rate_limit": sum(
            b["exporter"]["current_rate_limit"] or 0.0 for b in per_bucket.values()
        ),
        "lag": lag_between(scrape_before, scrape_after),
        "cpu_per_s": cpu,
        "machine_busy_cpus": busy / total * (psutil.cpu_count() or 1) if total > 0 else None,
        "watched": scrape_after.value("tencentcloud_exporter_watched_tasks", product=PRODUCT),
    }
