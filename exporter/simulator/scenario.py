"""What the simulator plays: tasks with status timelines, the faults to inject, and their JSON form.

A task's phases are in task time (seconds from when the simulator was given the task, before `speed` scaling).
Fields beyond the status (start time, task type, instance, progress, step) are product-neutral: each product's
answer shows the ones its API has and ignores the rest (`exporter.simulator.answers`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from exporter.catalogue.products import BY_NAME

Status = int | str | None


def status_problem(product: str, status: object) -> str | None:
    """Why `status` cannot be one of `product`'s statuses (wrong JSON type), or None when it can."""
    if status is None:
        return None
    if BY_NAME[product].answer_shape.integer_status:
        if isinstance(status, bool) or not isinstance(status, int):
            return f"a {product} flow status is an integer or None, got {status!r}"
    elif not isinstance(status, str):
        return f"a {product} status is a string or None, got {status!r}"
    return None


@dataclass(frozen=True)
class Phase:
    """From `at` seconds (task time, before `speed` scaling) on, the task reports `status` and the rest.

    `info` is the product's free text (CDB Info, Redis TaskMessage, PostgreSQL TaskDetail.Message);
    `progress` is PostgreSQL's 0-100 (None: carried over from the phase before, 100 once succeeded, else 0);
    `step` is PostgreSQL's TaskDetail.CurrentStep.
    """

    at: float
    status: Status
    info: str | None = None
    progress: int | None = None
    step: str | None = None

    def __post_init__(self) -> None:
        if self.progress is not None and (
            isinstance(self.progress, bool)
            or not isinstance(self.progress, int)
            or not 0 <= self.progress <= 100
        ):
            raise ValueError(f"progress must be an integer from 0 to 100, got {self.progress!r}")


@dataclass(frozen=True)
class Faults:
    """Misbehaviour to inject; HTTP status wins over malformed JSON, which wins over an error code."""

    latency: float = 0.0
    http_status: int | None = None
    malformed: bool = False
    error_code: str | None = None
    missing_status: bool = False

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0, got {self.latency}")
        if self.http_status is not None and not 100 <= self.http_status <= 599:
            raise ValueError(f"http_status must be an HTTP status code, got {self.http_status}")

    def combine(self, other: Faults) -> Faults:
        """Both sets at once: latencies add up, `other` wins where both choose a response."""
        return Faults(
            latency=self.latency + other.latency,
            http_status=other.http_status or self.http_status,
            malformed=self.malformed or other.malformed,
            error_code=other.error_code or self.error_code,
            missing_status=self.missing_status or other.missing_status,
        )


_FAULT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Faults))
_PHASE_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(Phase))


@dataclass(frozen=True)
class SimTask:
    """One task of one product (`product` is the catalogue's product key) and how it behaves.

    `started` is the task time at which the task began (its StartTime; negative: before the simulator was
    given it); `task_type` and `instance_id` are what Redis and PostgreSQL report beside the status, and
    what the list APIs show. The list APIs also show `instance_name` and the instance's resource `tags`
    ((key, value) pairs). The task lives in `region` (None: in every region): listed only there, and a
    status request from another region reads it as unknown. `owner` is the secret id of the account it
    belongs to ("": every account's): to any other account it is unknown and never listed.
    """

    product: str
    task_id: str
    phases: tuple[Phase, ...]
    latency: float = 0.0
    http_status: int | None = None
    malformed: bool = False
    error_code: str | None = None
    missing_status: bool = False
    task_type: str | None = None
    instance_id: str | None = None
    started: float = 0.0
    region: str | None = None
    instance_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    owner: str = ""

    def __post_init__(self) -> None:
        if self.product not in BY_NAME:
            raise ValueError(f"unknown product {self.product!r}; expected one of {sorted(BY_NAME)}")
        where = f"{self.product} task {self.task_id}"
        if not self.phases:
            raise ValueError(f"{where}: needs at least one phase")
        for phase in self.phases:
            problem = status_problem(self.product, phase.status)
            if problem is not None:
                raise ValueError(f"{where}: {problem}")
        if not math.isfinite(self.started):
            raise ValueError(f"{where}: started must be a finite number of seconds, got {self.started!r}")
        if self.region is not None and (not isinstance(self.region, str) or not self.region):
            raise ValueError(f"{where}: region must be a region name or None, got {self.region!r}")
        if not isinstance(self.tags, tuple) or not all(
            isinstance(tag, tuple) and len(tag) == 2 and all(isinstance(part, str) for part in tag)
            for tag in self.tags
        ):
            raise ValueError(f"{where}: tags must be (key, value) pairs of strings, got {self.tags!r}")
        if not isinstance(self.owner, str):
            raise ValueError(f'{where}: owner must be a secret id or "", got {self.owner!r}')
        _ = self.faults  # Faults.__post_init__ validates the fault fields

    @property
    def key(self) -> tuple[str, str]:
        return (self.product, self.task_id)

    @property
    def faults(self) -> Faults:
        return Faults(**{name: getattr(self, name) for name in _FAULT_FIELDS})

    def with_faults(self, faults: Faults) -> SimTask:
        return dataclasses.replace(self, **dataclasses.asdict(faults))

    def phase_at(self, elapsed: float) -> Phase:
        """The latest phase already reached; before the first one, the first one."""
        reached = [p for p in self.phases if p.at <= elapsed]
        return max(reached, key=lambda p: p.at) if reached else min(self.phases, key=lambda p: p.at)

    def progress_at(self, phase: Phase) -> int | None:
        """The latest progress given up to `phase` (in timeline order), or None when none was."""
        given = [p for p in sorted(self.phases, key=lambda p: p.at) if p.at <= phase.at]
        return next((p.progress for p in reversed(given) if p.progress is not None), None)


_TASK_KEYS: Final = frozenset(f.name for f in dataclasses.fields(SimTask))


def task_from_dict(data: Mapping[str, Any]) -> SimTask:
    """Builds a task from its JSON form (the shape `task_to_dict` produces); raises ValueError."""
    if "service" in data and "product" not in data:
        # Older scenario files (and the benchmarks) call the product `service`: they still load.
        data = {("product" if key == "service" else key): value for key, value in data.items()}
    unknown = set(data) - _TASK_KEYS
    if unknown:
        raise ValueError(f"unknown task keys: {sorted(unknown)}")
    try:
        phases = tuple(_phase_from_dict(p) for p in data["phases"])
        faults = faults_from_dict({k: v for k, v in data.items() if k in _FAULT_FIELDS})
        return SimTask(
            str(data["product"]),
            str(data["task_id"]),
            phases,
            task_type=_optional_text(data.get("task_type")),
            instance_id=_optional_text(data.get("instance_id")),
            started=float(data.get("started", 0.0)),
            region=_optional_text(data.get("region")),
            instance_name=_optional_text(data.get("instance_name")),
            # JSON has no tuples: task_to_dict's pairs come back as two-item lists.
            tags=tuple(_tag(pair) for pair in data.get("tags", ())),
            owner=_owner(data.get("owner", "")),
        ).with_faults(faults)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed task {dict(data)!r}: {exc!r}") from exc


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def _owner(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"owner is a secret id (a string), got {value!r}")
    return value


def _tag(pair: object) -> tuple[str, str]:
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise ValueError(f"a tag is a [key, value] pair, got {pair!r}")
    return (str(pair[0]), str(pair[1]))


def _phase_from_dict(data: Mapping[str, Any]) -> Phase:
    unknown = set(data) - _PHASE_FIELDS
    if unknown:
        raise ValueError(f"unknown phase keys: {sorted(unknown)}")
    return Phase(
        at=float(data["at"]),
        status=data.get("status"),
        info=data.get("info"),
        progress=data.get("progress"),
        step=data.get("step"),
    )


def task_to_dict(task: SimTask) -> dict[str, Any]:
    return dataclasses.asdict(task)


def faults_from_dict(data: Mapping[str, Any]) -> Faults:
    unknown = set(data) - set(_FAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown fault keys: {sorted(unknown)}")
    http_status = data.get("http_status")
    error_code = data.get("error_code")
    return Faults(
        latency=float(data.get("latency", 0.0)),
        http_status=None if http_status is None else int(http_status),
        malformed=bool(data.get("malformed", False)),
        error_code=None if error_code is None else str(error_code),
        missing_status=bool(data.get("missing_status", False)),
    )


def load_scenario(path: Path) -> list[SimTask]:
    """Tasks from a JSON file holding either a list of tasks or `{"tasks": [...]}`."""
    document = json.loads(path.read_text(encoding="utf-8"))
    entries = document.get("tasks") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of tasks or an object with a `tasks` list")
    return [task_from_dict(entry) for entry in entries]
