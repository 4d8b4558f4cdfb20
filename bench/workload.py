"""The benchmark's workload: a seeded mix of MariaDB flows and CDB async requests with known timelines.

Every task is in one of three groups:

- finished: already in a final state when the run starts (the exporter should poll it once, then rarely);
- steady: in progress for the whole run (it can still change, so it deserves polls);
- changing: in progress at first, then changes status once at a known time inside the detection window.

Tasks are split between the two APIs in proportion to their quotas, so both spend their quota equally fast and
the revisit period of an in-progress task, `in progress / quota`, is the same for both products. Phase times
are seconds after the simulator registered the tasks (its "epoch").
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Statuses as the exporter exposes them (MariaDB's integers mapped, CDB's strings lower-cased).
MARIADB_CODES = {"success": 0, "failed": 1, "running": 2}
FINAL = {
    "mariadb": frozenset({"success", "failed"}),
    "cdb": frozenset({"success", "failed", "killed", "removed"}),
}
PRODUCTS = ("mariadb", "cdb")
DEFAULT_QUOTAS: Mapping[str, float] = {"mariadb": 20.0, "cdb": 40.0}

# (old, new, weight) for tasks that change during the window. CDB has in-progress to in-progress changes too,
# which keep the number of tasks in progress (and so the lower bound) steady.
_MARIADB_CHANGES = (("running", "success", 4), ("running", "failed", 1))
_CDB_CHANGES = (
    ("initial", "running", 3),
    ("running", "success", 3),
    ("running", "failed", 1),
    ("running", "paused", 1),
    ("running", "killed", 1),
)
_MARIADB_FINISHED = (("success", 4), ("failed", 1))
_CDB_FINISHED = (("success", 5), ("failed", 2), ("killed", 1), ("removed", 1))
_CDB_STEADY = (("running", 6), ("initial", 2), ("paused", 1), ("undefined", 1))


@dataclass(frozen=True)
class Change:
    product: str
    task_id: str
    at: float  # seconds after the epoch
    old: str
    new: str


@dataclass
class Workload:
    tasks: dict[str, list[tuple[str, tuple[tuple[float, str], ...]]]]  # product -> [(task_id, phases)]
    changes: list[Change]
    window: tuple[float, float]  # when changes happen, seconds after the epoch
    quotas: Mapping[str, float]
    # product -> sorted times at which a task leaves the in-progress set, and the count at the epoch
    _leave_times: dict[str, list[float]] = field(default_factory=dict)
    _initially_active: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for product, tasks in self.tasks.items():
            active, leaves = 0, []
            for _, phases in tasks:
                first = phases[0][1]
                if first not in FINAL[product]:
                    active += 1
                    later = [at for at, status in phases[1:] if status in FINAL[product]]
                    if later:
                        leaves.append(later[0])
            self._initially_active[product] = active
            self._leave_times[product] = sorted(leaves)

    @property
    def size(self) -> int:
        return sum(len(t) for t in self.tasks.values())

    def count(self, product: str) -> int:
        return len(self.tasks[product])

    def in_progress(self, product: str, at: float) -> int:
        """Tasks of `product` not yet in a final state at `at` seconds after the epoch."""
        return self._initially_active[product] - bisect.bisect_right(self._leave_times[product], at)

    def sweep_seconds(self, share: float = 1.0) -> float:
        """Lower bound of the time to poll every task once: the slowest product's count over its quota."""
        return max(self.count(s) / (self.quotas[s] * share) for s in PRODUCTS)

    def simulator_tasks(self) -> list[dict[str, Any]]:
        """The tasks in the JSON shape `exporter.simulator.task_from_dict` reads."""
        out: list[dict[str, Any]] = []
        for product, tasks in self.tasks.items():
            for task_id, phases in tasks:
                out.append(
                    {
                        "product": product,
                        "task_id": task_id,
                        "phases": [_phase(product, at, status) for at, status in phases],
                    }
                )
        return out

    def watch(self) -> dict[str, list[Any]]:
        """The `watch` section of the exporter's config."""
        return {
            "mariadb_flows": [int(task_id) for task_id, _ in self.tasks["mariadb"]],
            "cdb_async_requests": [task_id for task_id, _ in self.tasks["cdb"]],
        }

    def task_list(self) -> list[tuple[str, str]]:
        """(product, task_id) in watch order, for the baseline."""
        return [(product, task_id) for product in PRODUCTS for task_id, _ in self.tasks[product]]


def _phase(product: str, at: float, status: str) -> dict[str, Any]:
    if product == "mariadb":
        return {"at": at, "status": MARIADB_CODES[status]}
    return {"at": at, "status": status.upper(), "info": f"Benchmark task, {status}."}


def _pick(rng: random.Random, weighted: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    choice: tuple[Any, ...] = rng.choices(weighted, weights=[w[-1] for w in weighted])[0]
    return choice[:-1]


def build(
    size: int,
    window: tuple[float, float],
    seed: int = 1,
    quotas: Mapping[str, float] = DEFAULT_QUOTAS,
    finished_share: float = 0.4,
    changing_share: float = 0.25,
) -> Workload:
    """`size` tasks split by quota; `changing_share` of them change once, uniformly inside `window`."""
    if size < 2:
        raise ValueError("a workload needs at least 2 tasks")
    if min(finished_share, changing_share) < 0 or finished_share + changing_share > 1:
        raise ValueError("finished_share + changing_share must be within [0, 1]")
    rng = random.Random(seed)
    total_quota = sum(quotas[s] for s in PRODUCTS)
    n_mariadb = max(1, round(size * quotas["mariadb"] / total_quota))
    counts = {"mariadb": n_mariadb, "cdb": size - n_mariadb}
    tasks: dict[str, list[tuple[str, tuple[tuple[float, str], ...]]]] = {s: [] for s in PRODUCTS}
    changes: list[Change] = []
    start, end = window
    for product in PRODUCTS:
        n = counts[product]
        groups = ["finished"] * round(n * finished_share) + ["changing"] * round(n * changing_share)
        groups += ["steady"] * (n - len(groups))
        rng.shuffle(groups)
        for index, group in enumerate(groups):
            task_id = _task_id(product, index, rng)
            phases: tuple[tuple[float, str], ...]
            if group == "finished":
                (status,) = _pick(rng, _MARIADB_FINISHED if product == "mariadb" else _CDB_FINISHED)
                phases = ((0.0, status),)
            elif group == "steady":
                status = "running" if product == "mariadb" else _pick(rng, _CDB_STEADY)[0]
                phases = ((0.0, status),)
            else:
                old, new = _pick(rng, _MARIADB_CHANGES if product == "mariadb" else _CDB_CHANGES)
                at = round(rng.uniform(start, end), 3)
                phases = ((0.0, old), (at, new))
                changes.append(Change(product, task_id, at, old, new))
            tasks[product].append((task_id, phases))
    return Workload(tasks, sorted(changes, key=lambda c: c.at), window, dict(quotas))


def _task_id(product: str, index: int, rng: random.Random) -> str:
    if product == "mariadb":
        return str(100_000 + index)
    return "-".join(f"{rng.getrandbits(32):08x}" for _ in range(4))
