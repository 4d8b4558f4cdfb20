"""SQL Server's instance tasks as the simulator answers them: DescribeDBInstances (instances made up from the
tasks, in status 7 "task executing" while one of their started tasks still runs, else 2 "running") and
DescribeInstanceTasks (one instance's tasks, newest first), which is both the list a sweep reads and the
status request of one task (`sqlserver_tasks`: the exporter picks the task by its Id).

A task's ID is `<instance ID>:<task Id>`. Parameters, defaults and fields are written from the official SDK's
models.py (sqlserver v20180328): DescribeDBInstances' Offset is a page number unless PaginationType is
`offset`, its Limit 1-100 (default 100), its Status one integer; DescribeInstanceTasks requires InstanceId
and Limit, and filters by Status (1 running, 2 success, 3 failed). An unknown instance is
ResourceNotFound.InstanceNotFound (errorcodes.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from exporter.catalogue.apifields import split_pair
from exporter.catalogue.products import BY_NAME
from exporter.simulator.answers import tencent_time_text
from exporter.simulator.errors import ApiError
from exporter.simulator.listing import (
    MAX_LIMIT,
    Item,
    Listable,
    ListRequest,
    checked,
    invalid,
    schema,
)

_STATUS_RUNNING, _STATUS_TASK = 2, 7  # DBInstance.Status: 2 running, 7 task executing
_DB_INSTANCES_PARAMS: Final = schema(
    int="ProjectId Status Offset Limit PayMode",
    str="VpcId SubnetId Zone SearchKey InstanceType PaginationType",
    strs="InstanceIdSet VipSet InstanceNameSet VersionSet TagKeys UidSet",
)
_TASKS_PARAMS: Final = schema(str="InstanceId", int="Limit Status Offset")


def _codes(product: str) -> Mapping[object, str]:
    return {code: word for word, code in BY_NAME[product].answer_shape.status_codes}


def _instance_of(task: Listable) -> tuple[str, int]:
    return split_pair(task.task_id)


def _final(task: Listable) -> bool:
    status = task.view.phase.status
    word = _codes(task.view.product.name).get(status) if isinstance(status, int) else None
    return word is not None and word in task.view.product.final_statuses


def task_item(task: Listable) -> Item:
    """One InstanceTask: Id, Type, Status, Progress, times, ErrorCode and Message."""
    view, (_, number) = task.view, _instance_of(task)
    final = _final(task)
    succeeded = final and _codes(view.product.name).get(view.phase.status) == view.product.success_status
    given = view.task.progress_at(view.phase)
    task_type = view.task.task_type
    return {
        "Id": number,
        "Type": int(task_type) if task_type and task_type.isdigit() else 0,
        "Status": view.phase.status,
        "Progress": 100 if succeeded else (given if given is not None else 0),
        "StartTime": view.start_time,
        "EndTime": tencent_time_text(view.phase_began_at) if final else "",
        "ErrorCode": 1 if final and not succeeded else 0,
        "Message": view.phase.info or "",
    }


def _by_instance(tasks: Sequence[Listable]) -> dict[str, list[Listable]]:
    found: dict[str, list[Listable]] = {}
    for task in tasks:
        found.setdefault(_instance_of(task)[0], []).append(task)
    return found


def _paging(params: Mapping[str, Any], default_limit: int) -> tuple[int, int]:
    offset, limit = params.get("Offset", 0), params.get("Limit", default_limit)
    if offset < 0:
        raise invalid("Offset", offset)
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("Limit", limit)
    return offset, limit


def _db_instance(instance_id: str, tasks: Sequence[Listable], request: ListRequest) -> Item:
    newest = sorted(tasks, key=lambda t: t.view.started_at, reverse=True)
    busy = any(t.began and not _final(t) for t in tasks)
    region = newest[0].view.task.region or request.region
    tags = next((t.view.task.tags for t in newest if t.view.task.tags), ())
    return {
        "InstanceId": instance_id,
        "Name": next((t.view.task.instance_name for t in newest if t.view.task.instance_name), ""),
        "ProjectId": 0,
        "Status": _STATUS_TASK if busy else _STATUS_RUNNING,
        "Region": region,
        "Zone": f"{region}-1",
        "CreateTime": newest[-1].view.start_time,
        "UpdateTime": tencent_time_text(max(t.view.phase_began_at for t in tasks)),
        "Memory": 4,
        "Storage": 100,
        "Cpu": 2,
        "Version": "2019",
        "VersionName": "SQL Server 2019 Enterprise",
        "Model": 1,
        "PayMode": 0,
        "ResourceTags": [{"TagKey": key, "TagValue": value} for key, value in tags],
    }


def db_instances(request: ListRequest) -> dict[str, Any]:
    """DescribeDBInstances: the instances of the tasks, ordered by ID."""
    params = request.params
    checked(params, _DB_INSTANCES_PARAMS)
    offset, limit = _paging(params, MAX_LIMIT)
    paging = params.get("PaginationType", "pageNumber")
    if paging not in ("pageNumber", "offset"):
        raise invalid("PaginationType", paging)
    start = offset if paging == "offset" else offset * limit
    instances = [
        _db_instance(instance_id, tasks, request)
        for instance_id, tasks in sorted(_by_instance(request.tasks).items())
    ]
    if "Status" in params:
        instances = [entry for entry in instances if entry["Status"] == params["Status"]]
    if params.get("InstanceIdSet"):
        instances = [entry for entry in instances if entry["InstanceId"] in params["InstanceIdSet"]]
    return {"TotalCount": len(instances), "DBInstances": instances[start : start + limit]}


def answer(instances: bool, request: ListRequest) -> dict[str, Any]:
    """`Response` (without RequestId) of the busy instances' list (`instances`) or an instance's tasks."""
    return db_instances(request) if instances else instance_tasks(request)


def instance_tasks(request: ListRequest) -> dict[str, Any]:
    """DescribeInstanceTasks: one instance's started tasks, newest first (ties: the higher Id first)."""
    params = request.params
    checked(params, _TASKS_PARAMS)
    for name in ("InstanceId", "Limit"):
        if name not in params:
            raise ApiError("MissingParameter", f"The request is missing a required parameter `{name}`.")
    offset, limit = _paging(params, MAX_LIMIT)
    tasks = _by_instance(request.tasks).get(params["InstanceId"])
    if tasks is None:
        raise ApiError(
            "ResourceNotFound.InstanceNotFound", f"The instance {params['InstanceId']} does not exist."
        )
    chosen = [t for t in tasks if t.began]
    if "Status" in params:
        chosen = [t for t in chosen if t.view.phase.status == params["Status"]]
    chosen.sort(key=lambda t: (t.view.started_at, _instance_of(t)[1]), reverse=True)
    items = [task_item(t) for t in chosen[offset : offset + limit]]
    return {"TotalCount": len(chosen), "InstanceTaskSet": items}
