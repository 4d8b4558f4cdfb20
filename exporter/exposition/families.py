"""The per-task metric families, each declared once: name, type, help and how one task renders its lines.

TaskState renders every family when the task changes and keeps the bytes; /metrics writes each family's
header once, then every task's lines for it. Adding a per-task metric is one entry in TASK_FAMILIES.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from exporter.catalogue.products import BY_NAME, PHASES, Phase
from exporter.config.parser import WatchedTask

POLLED = "Values come from background polling of the Tencent Cloud API, not from the scrape."


def escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    return repr(float(value))


def task_labels(task: WatchedTask) -> str:
    """The labels that identify one task's series, rendered once: every task family starts with them."""
    # product and cloud_region, not service and region: those are target labels under Kubernetes service
    # discovery and would be renamed exported_* on ingestion.
    return (
        f'product="{escape(task.product)}",cloud_region="{escape(task.region)}",'
        f'task_id="{escape(task.task_id)}",account="{escape(task.account)}"'
    )


class TaskState(Protocol):
    """What a family reads of one task (exposition.state.TaskState is the one implementation); a protocol, so
    this module does not import the state it renders."""

    @property
    def task(self) -> WatchedTask: ...
    @property
    def status(self) -> str | None: ...
    @property
    def phase(self) -> Phase | None: ...
    @property
    def status_since(self) -> float | None: ...
    @property
    def last_success(self) -> float | None: ...
    @property
    def errors(self) -> Mapping[str, int]: ...
    @property
    def source(self) -> str: ...
    @property
    def start_time(self) -> float | None: ...
    @property
    def end_time(self) -> float | None: ...
    @property
    def task_type(self) -> str | None: ...
    @property
    def instance_id(self) -> str | None: ...
    @property
    def instance_name(self) -> str | None: ...
    @property
    def progress(self) -> float | None: ...
    @property
    def info(self) -> str | None: ...


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # Prometheus text type
    help: str
    # One task's lines of this family, given its identifying labels; "" when the task has none.
    render: Callable[[TaskState, str], str]

    def header(self, openmetrics: bool) -> str:
        name, kind = self.name, self.kind
        if openmetrics and kind == "counter":
            name = name.removesuffix("_total")
        elif openmetrics and name.endswith("_info"):
            name, kind = name.removesuffix("_info"), "info"
        return f"# HELP {name} {self.help}\n# TYPE {name} {kind}\n"


def _status(state: TaskState, labels: str) -> str:
    if state.status is None:
        return ""  # no series before the first successful poll
    known = BY_NAME[state.task.product].statuses
    states = known if state.status in known else (*known, state.status)
    return "".join(
        f'tencentcloud_task_status{{{labels},status="{escape(s)}"}} {1 if s == state.status else 0}\n'
        for s in states
    )


def _phase(state: TaskState, labels: str) -> str:
    phase = state.phase
    if phase is None:
        return ""  # no series before the first answer (a status, or "no such ID")
    return "".join(
        f'tencentcloud_task_phase{{{labels},phase="{p}"}} {1 if p is phase else 0}\n' for p in PHASES
    )


def current_status(state: TaskState, labels: str) -> str:
    """The status family with `metrics.status_series: current`: only the series at 1 (a third to a ninth of
    the state set's lines); `tencentcloud_task_status{status="x"} == 1` selects the same tasks either way."""
    if state.status is None:
        return ""
    return f'tencentcloud_task_status{{{labels},status="{escape(state.status)}"}} 1\n'


def _timestamp(name: str, value: Callable[[TaskState], float | None]) -> Callable[[TaskState, str], str]:
    def render(state: TaskState, labels: str) -> str:
        seconds = value(state)
        return "" if seconds is None else f"{name}{{{labels}}} {format_value(seconds)}\n"

    return render


def _errors(state: TaskState, labels: str) -> str:
    return "".join(
        f'tencentcloud_task_errors_total{{{labels},code="{escape(code)}"}} {count}\n'
        for code, count in sorted(state.errors.items())
    )


def _info(state: TaskState, labels: str) -> str:
    known = (
        ("task_type", state.task_type),
        ("instance_id", state.instance_id),
        ("instance_name", state.instance_name),
        ("source", state.source),
    )
    # Empty is the same as absent to Prometheus: only what the product gave is written.
    facts = "".join(f',{name}="{escape(value)}"' for name, value in known if value)
    user = "".join(f',{name}="{escape(value)}"' for name, value in state.task.labels)
    return f'tencentcloud_task_info{{{labels},info="{escape(state.info or "")}"{facts}{user}}} 1' + "\n"


def _progress(state: TaskState, labels: str) -> str:
    ratio = state.progress
    return (
        "" if ratio is None else f"tencentcloud_task_progress_ratio{{{labels}}} {format_value(ratio)}" + "\n"
    )


_CHANGE = "tencentcloud_task_status_change_timestamp_seconds"
_SUCCESS = "tencentcloud_task_last_poll_success_timestamp_seconds"
_START = "tencentcloud_task_start_timestamp_seconds"
_END = "tencentcloud_task_end_timestamp_seconds"

TASK_FAMILIES: tuple[Family, ...] = (
    Family(
        "tencentcloud_task_status",
        "gauge",
        f"Current status of the watched task as a state set (1 for the current status). {POLLED}",
        _status,
    ),
    Family(
        "tencentcloud_task_phase",
        "gauge",
        "Current phase of the watched task as a state set, the same few for every product: pending "
        "(accepted, not started), running, ongoing (in progress by design, with no end of its own: a sync "
        "job replicating), succeeded, failed (every other final status), unknown (a null or "
        "undocumented status), not_found (the API's last answer: no such ID). Each product's statuses map "
        f"onto them in the catalogue. {POLLED}",
        _phase,
    ),
    Family(
        _CHANGE,
        "gauge",
        f"Unix time the exporter first saw the task's current status. {POLLED}",
        _timestamp(_CHANGE, lambda s: s.status_since),
    ),
    Family(
        _SUCCESS,
        "gauge",
        f"Unix time of the last successful poll of the task. {POLLED}",
        _timestamp(_SUCCESS, lambda s: s.last_success),
    ),
    Family(
        _START,
        "gauge",
        f"Unix time the task started, as the product's status or list API reports it (if it does). {POLLED}",
        _timestamp(_START, lambda s: s.start_time),
    ),
    Family(
        _END,
        "gauge",
        f"Unix time the task ended, as the product's status or list API reports it (if it does). {POLLED}",
        _timestamp(_END, lambda s: s.end_time),
    ),
    Family(
        "tencentcloud_task_progress_ratio",
        "gauge",
        f"Progress of the task from 0 to 1, as the product's status or list API reports it (where it does). "
        f"{POLLED}",
        _progress,
    ),
    Family(
        "tencentcloud_task_errors_total",
        "counter",
        f"Failed polls of the task by error code. {POLLED}",
        _errors,
    ),
    Family(
        "tencentcloud_task_info",
        "gauge",
        "Task metadata: info text; task_type, instance_id and instance_name where the product gives them; "
        "source (config, api or discovered: where the task was first known); user labels and discovered "
        f"resource tags. Joinable on product, cloud_region, task_id. {POLLED}",
        _info,
    ),
)
