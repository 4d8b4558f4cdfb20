"""The answers to a status action, one per answer shape the catalogue names (`AnswerShape`): the fields
beside `Status`, as the official SDKs' models read them (`flow`: an integer Status; `status_info`: Status
and Info; `status_times`: Status, StartTime, EndTime; `task_info`: Status, StartTime, TaskType, InstanceId,
TaskMessage; `task_set`: a TaskSet; `status`: a string Status alone; `result_flow`: an integer Status
and Output inside Result; `task_status`: an integer Status, LoadBalancerIds and Message; `task_result`: a
word Status, Output and Result; `migration_detail`: a word Status, JobId, JobName, BriefMsg and times;
`sync_jobs`: a JobList holding the one sync job asked for).

Which shape, action, version, ID parameter, quota and not-found code a product has comes from the catalogue
(`catalogue.products`), and so does which statuses are final (EndTime set, Progress 100). The shapes of the
answers are written here, separately from the exporter's parsers, so a mistake on one side shows up as a
disagreement in the tests that drive both with the official SDKs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from exporter.catalogue.products import PRODUCTS, Product
from exporter.simulator.errors import ApiError
from exporter.simulator.scenario import Phase, SimTask

# The APIs write `YYYY-MM-DD hh:mm:ss` without a zone, in China Standard Time.
CHINA_STANDARD_TIME: Final = timezone(timedelta(hours=8))
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
# An integer flow Status, as the flow products' SDKs describe it: 0 succeeded, 1 failed, 2 running.
_FLOW_SUCCEEDED, _FLOW_FAILED = 0, 1


def tencent_time_text(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, CHINA_STANDARD_TIME).strftime(TIME_FORMAT)


@dataclass(frozen=True)
class TaskView:
    """One task as its API sees it at one instant; times are unix times already scaled by `speed`."""

    product: Product
    task: SimTask
    phase: Phase
    started_at: float
    phase_began_at: float

    @property
    def final(self) -> bool:
        status = self.phase.status
        if isinstance(status, int):  # the list answers show a flow's end time and progress too
            return status in (_FLOW_SUCCEEDED, _FLOW_FAILED)
        return isinstance(status, str) and status.lower() in self.product.final_statuses

    @property
    def succeeded(self) -> bool:
        status = self.phase.status
        if isinstance(status, int):
            return status == _FLOW_SUCCEEDED
        return self.final and isinstance(status, str) and status.lower() not in self.product.failure_statuses

    @property
    def start_time(self) -> str:
        return tencent_time_text(self.started_at)

    @property
    def end_time(self) -> str:
        """When the task reached its final status; empty while it has not (as MongoDB answers)."""
        return tencent_time_text(self.phase_began_at) if self.final else ""

    @property
    def progress(self) -> int:
        given = self.task.progress_at(self.phase)
        if given is not None and not self.succeeded:
            return given
        return 100 if self.succeeded else 0


class Shape:
    """How one answer shape answers a task that exists and one that does not."""

    def fields(self, view: TaskView) -> dict[str, Any]:
        return {"Status": view.phase.status}

    def answer(self, view: TaskView, *, with_status: bool = True) -> dict[str, Any]:
        fields = self.fields(view)
        if not with_status:
            del fields["Status"]
        return fields

    def not_found(self, product: Product, task_id: str) -> dict[str, Any]:
        raise ApiError(product.not_found_codes[0], f"The {product.id_param} `{task_id}` was not found.")


class _AsyncRequestInfo(Shape):
    def fields(self, view: TaskView) -> dict[str, Any]:
        return {"Status": view.phase.status, "Info": view.phase.info}


class _AsyncRequestTimes(Shape):
    def fields(self, view: TaskView) -> dict[str, Any]:
        return {"Status": view.phase.status, "StartTime": view.start_time, "EndTime": view.end_time}


class _TaskInfo(Shape):
    def fields(self, view: TaskView) -> dict[str, Any]:
        return {
            "Status": view.phase.status,
            "StartTime": view.start_time,
            "TaskType": view.task.task_type or "",
            "InstanceId": view.task.instance_id or "",
            # "Empty while running or after success; the error when it failed" (SDK).
            "TaskMessage": view.phase.info or "",
        }


class _TaskSet(Shape):
    """DescribeTasks filtered by TaskId: the task as the only item of TaskSet; an unknown ID is no error."""

    def fields(self, view: TaskView) -> dict[str, Any]:
        steps = list(dict.fromkeys(p.step for p in sorted(view.task.phases, key=lambda p: p.at) if p.step))
        return {
            "TaskId": view.product.id_kind.request_value(view.task.task_id),
            "TaskType": view.task.task_type or "",
            "DBInstanceId": view.task.instance_id or "",
            "StartTime": view.start_time,
            "EndTime": view.end_time,
            "Status": view.phase.status,
            "Progress": view.progress,
            "TaskDetail": {
                "CurrentStep": view.phase.step or "",
                "AllSteps": ",".join(steps),
                "Input": "",
                "Output": "",
                # 3: "switch over in the maintenance window", what WaitSwitch waits for; 0: no switch-over.
                "SwitchTag": 3 if view.phase.status == "WaitSwitch" else 0,
                "SwitchTime": "",
                "Message": view.phase.info or "",
            },
        }

    def answer(self, view: TaskView, *, with_status: bool = True) -> dict[str, Any]:
        item = self.fields(view)
        if not with_status:
            del item["Status"]
        return {"TotalCount": 1, "TaskSet": [item]}

    def not_found(self, product: Product, task_id: str) -> dict[str, Any]:
        return {"TotalCount": 0, "TaskSet": []}


class _Held(Shape):
    """Another shape's fields one level down, inside the product's holder (CKafka's Result)."""

    def __init__(self, inner: Shape) -> None:
        self.inner = inner

    def fields(self, view: TaskView) -> dict[str, Any]:
        return self.inner.fields(view)

    def answer(self, view: TaskView, *, with_status: bool = True) -> dict[str, Any]:
        return {view.product.answer_shape.holder: self.inner.answer(view, with_status=with_status)}


class _FlowOutput(Shape):
    def fields(self, view: TaskView) -> dict[str, Any]:
        # "Output information" (SDK); the simulator's free text of the phase, empty while it has none.
        return {"Status": view.phase.status, "Output": view.phase.info or ""}


class _TaskStatus(Shape):
    """CLB's: an integer Status, the load balancers the task concerns and a Message (a failure's reason)."""

    def fields(self, view: TaskView) -> dict[str, Any]:
        instance = view.task.instance_id
        return {
            "Status": view.phase.status,
            "LoadBalancerIds": [instance] if instance else [],
            "Message": view.phase.info or "",
        }


class _TaskResult(Shape):
    """VPC's: a word Status, Output and Result, the resources of a batch operation (one: the task's)."""

    def fields(self, view: TaskView) -> dict[str, Any]:
        instance = view.task.instance_id
        return {
            "Status": view.phase.status,
            "Output": view.phase.info or "",
            "Result": [{"ResourceId": instance, "Status": view.phase.status}] if instance else [],
        }


class _MigrationDetail(Shape):
    """DTS's DescribeMigrationDetail, the fields that say where a job is (the SDK ignores those left out)."""

    def fields(self, view: TaskView) -> dict[str, Any]:
        return {
            "JobId": view.task.task_id,
            "JobName": view.task.instance_name or "",
            "Status": view.phase.status,
            "BriefMsg": view.phase.info or "",
            "CreateTime": view.start_time,
            "UpdateTime": tencent_time_text(view.phase_began_at),
            "StartTime": view.start_time,
            "EndTime": view.end_time,
        }


class _SyncJobs(Shape):
    """DTS's DescribeSyncJobs filtered by JobId: the job as the only item of JobList (a SyncJobInfo, the
    fields that say where it is; the SDK ignores those left out); an unknown ID is an empty JobList."""

    def fields(self, view: TaskView) -> dict[str, Any]:
        region = view.task.region or ""
        return {
            "JobId": view.task.task_id,
            "JobName": view.task.instance_name or "",
            "PayMode": "PostPay",
            "RunMode": "Immediate",
            "ExpectRunTime": "",
            "AllActions": ["view", "configure", "check", "start", "stop", "pause", "resume", "release"],
            "Actions": ["view"],
            "SrcRegion": region,
            "SrcDatabaseType": "mysql",
            "SrcAccessType": "cvm",  # self-built on CVM
            "DstRegion": region,
            "DstDatabaseType": "mysql",
            "DstAccessType": "cvm",
            "CreateTime": view.start_time,
            "StartTime": view.start_time,
            "Status": view.phase.status,
            "EndTime": view.end_time,
            "Tags": [{"TagKey": key, "TagValue": value} for key, value in view.task.tags],
            "Detail": {
                "StepAll": 4,
                "StepNow": 4 if view.final else 1,
                "Progress": view.progress,
                "CurrentStepProgress": -1,  # "-1: this step shows no progress" (SDK)
                "MasterSlaveDistance": 0,
                "SecondsBehindMaster": 0,
                "Message": view.phase.info or "",
                "StepInfos": [],
            },
            "TradeStatus": "Normal",
            "InstanceClass": "micro",
            "AutoRenew": 0,
        }

    def answer(self, view: TaskView, *, with_status: bool = True) -> dict[str, Any]:
        item = self.fields(view)
        if not with_status:
            del item["Status"]
        return {"TotalCount": 1, "JobList": [item]}

    def not_found(self, product: Product, task_id: str) -> dict[str, Any]:
        return {"TotalCount": 0, "JobList": []}


# By the catalogue's shape names (`AnswerShape.name`). A flow's integer Status and a word alone (`status`)
# need nothing beyond the base.
SHAPES: Final[Mapping[str, Shape]] = {
    "flow": Shape(),
    "status": Shape(),
    "result_flow": _Held(_FlowOutput()),
    "task_status": _TaskStatus(),
    "task_result": _TaskResult(),
    "migration_detail": _MigrationDetail(),
    "sync_jobs": _SyncJobs(),
    "status_info": _AsyncRequestInfo(),
    "status_times": _AsyncRequestTimes(),
    "task_info": _TaskInfo(),
    "task_set": _TaskSet(),
}
# A product of a new shape needs its answer written here; failing at import says so at once.
# An instance's task list is answered by the list action (`instancetasks`), status requests included.
_UNKNOWN: Final = sorted({p.answer_shape.name for p in PRODUCTS} - set(SHAPES) - {"instance_tasks"})
if _UNKNOWN:
    raise RuntimeError(f"the simulator has no answer of the catalogue's shapes {_UNKNOWN}")


def shape_of(product: Product) -> Shape:
    return SHAPES[product.answer_shape.name]
