"""The answers to a list action, the API discovery sweeps to find operations nobody watches: one per list
shape the catalogue names (`ListApi.answer_shape`), so a product whose list answers like another's needs
nothing here.

Start-time lists (cdb DescribeTasks, redis DescribeTaskList, cynosdb DescribeTasks, postgres DescribeTasks)
show the product's tasks that have started, newest first, within the request's start-time bounds. Snapshot
lists (mariadb DescribeDBInstances, dcdb DescribeDCDBInstances) show instances, made up from the tasks that
name one: an instance whose latest started flow still runs is in status 1 ("flow in progress") with that
flow's ID in `Locker`.

Parameters, defaults and fields are written from the official SDKs' request and response models, apart from
the exporter's list catalogue (`catalogue.listapis`), so a mistake on either side shows up as a disagreement
in the tests that read these answers with both the SDKs and the exporter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from exporter.catalogue.listapis import ListApi
from exporter.simulator.answers import CHINA_STANDARD_TIME, SHAPES, TIME_FORMAT, TaskView, tencent_time_text
from exporter.simulator.errors import ApiError

MAX_LIMIT: Final = 100  # every list action's largest Limit
_DAY: Final = 86400.0
_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")

Item = dict[str, Any]


@dataclass(frozen=True)
class Listable:
    """One of the product's tasks in the request's region, as the list API sees it now."""

    view: TaskView
    serial: int  # order in which the simulator was given it: CynosDB's task ID, CDB's JobId
    began: bool  # its start time has come; a task that has not started yet is not listed

    @property
    def task_id(self) -> str:
        return self.view.task.task_id


@dataclass(frozen=True)
class ListRequest:
    params: Mapping[str, Any]
    tasks: Sequence[Listable]
    region: str  # X-TC-Region
    now: float  # wall-clock time, for the lookback the API allows


def answer(api: ListApi, request: ListRequest) -> dict[str, Any]:
    """`Response` (without RequestId) of a list action of a shape written here; raises ApiError for bad
    parameters. `joblists.answer` answers every shape, these and DTS's job lists."""
    return LISTS[api.answer_shape](request)


# ---------------------------------------------------------------------------------------------- parameters


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Each JSON type a parameter may have: the name the API's messages give it, and its test.
_KINDS: Final[Mapping[str, tuple[str, Callable[[object], bool]]]] = {
    "str": ("String", lambda v: isinstance(v, str)),
    "int": ("Integer", _integer),
    "bool": ("Boolean", lambda v: isinstance(v, bool)),
    "ints": ("Array of Integer", lambda v: isinstance(v, list) and all(_integer(x) for x in v)),
    "strs": ("Array of String", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "objects": ("Array of Object", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v)),
}


def _schema(**names: str) -> dict[str, str]:
    """Parameter kinds by name, written by kind: `_schema(int="Offset Limit", str="InstanceId")`."""
    return {name: kind for kind, spaced in names.items() for name in spaced.split()}


def _checked(params: Mapping[str, Any], schema: Mapping[str, str]) -> None:
    """Unknown names are UnknownParameter, values of the wrong JSON type InvalidParameter (as the API)."""
    for name, value in params.items():
        kind = schema.get(name)
        if kind is None:
            raise ApiError("UnknownParameter", f"The parameter `{name}` is not recognized.")
        described, valid = _KINDS[kind]
        if not valid(value):
            raise ApiError("InvalidParameter", f"The value type of parameter `{name}` must be {described}.")


def _invalid(name: str, value: object) -> ApiError:
    return ApiError("InvalidParameterValue", f"The value `{value}` of parameter `{name}` is not valid.")


def _paging(params: Mapping[str, Any], default_limit: int) -> tuple[int, int]:
    offset, limit = params.get("Offset", 0), params.get("Limit", default_limit)
    if offset < 0:
        raise _invalid("Offset", offset)
    if not 1 <= limit <= MAX_LIMIT:
        raise _invalid("Limit", limit)
    return offset, limit


def _bound(params: Mapping[str, Any], name: str) -> float | None:
    """A `YYYY-MM-DD hh:mm:ss` (UTC+8) time parameter as a unix time; None when absent."""
    text = params.get(name)
    if text is None:
        return None
    try:
        if not _TIME.fullmatch(text):
            raise ValueError(text)
        moment = datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        raise _invalid(name, text) from None
    return moment.replace(tzinfo=CHINA_STANDARD_TIME).timestamp()


def _id_order(task_id: str) -> tuple[int, int, str]:
    return (0, int(task_id), "") if task_id.isdigit() else (1, 0, task_id)


def _number(task_id: str) -> int:
    """An integer ID field; 0 (the APIs' "none") for an ID that is not a number."""
    return int(task_id) if task_id.isdigit() else 0


Filter = Callable[[Item], bool]


def _by_start(task: Listable) -> float:
    return task.view.started_at


def _started_list(
    request: ListRequest,
    window: tuple[str, str],
    item: Callable[[Listable, ListRequest], Item],
    filters: Sequence[Filter] = (),
    lookback: float | None = None,
    order: Callable[[Listable], float] = _by_start,
    ascending: bool = False,
) -> tuple[int, list[Item]]:
    """TotalCount and one page of the tasks that started within the window: newest first unless `order` and
    `ascending` say otherwise, ties in ID order, so that offsets page through a stable sequence."""
    offset, limit = _paging(request.params, 20)  # every start-time list's default Limit
    begin, end = _bound(request.params, window[0]), _bound(request.params, window[1])
    if lookback is not None:  # older tasks are out of the API's reach whatever the bounds say
        begin = max(begin if begin is not None else -math.inf, math.floor(request.now - lookback))
    chosen = []
    for task in request.tasks:
        second = math.floor(task.view.started_at)  # StartTime shows whole seconds; bounds are inclusive
        if not task.began or (begin is not None and second < begin) or (end is not None and second > end):
            continue
        chosen.append(task)
    chosen.sort(key=lambda t: _id_order(t.task_id))
    chosen.sort(key=order, reverse=not ascending)  # stable, even reversed: ties stay in ID order
    if not filters:
        # Only the page's items are built: at thousands of tasks, building all of them for every page made
        # the simulator, not the exporter, the bottleneck of the discovery benchmark.
        return len(chosen), [item(t, request) for t in chosen[offset : offset + limit]]
    items = [entry for entry in (item(t, request) for t in chosen) if all(f(entry) for f in filters)]
    return len(items), items[offset : offset + limit]


def _equals(name: str, value: object) -> Filter:
    return lambda entry: entry.get(name) == value


def _one_of(name: str, values: Sequence[object]) -> Filter:
    return lambda entry: entry.get(name) in values


# ---------------------------------------------------------------------------------------- cdb DescribeTasks

# Upper-case, as TaskDetail.TaskStatus spells them, with the TaskStatus filter's code of each.
_CDB_STATUSES: Final = ("UNDEFINED", "INITIAL", "RUNNING", "SUCCEED", "FAILED", "KILLED", "REMOVED", "PAUSED")
_CDB_STATUS_CODES: Final = {status: code for code, status in enumerate(_CDB_STATUSES, start=-1)}
# The TaskTypes filter's codes and the TaskDetail.TaskType each one stands for.
_CDB_TASK_TYPES: Final = {
    1: "ROLLBACK",
    2: "SQL OPERATION",
    3: "IMPORT DATA",
    5: "MODIFY PARAM",
    6: "INITIAL",
    7: "REBOOT",
    8: "OPEN GTID",
    9: "UPGRADE RO",
    10: "BATCH ROLLBACK",
    11: "UPGRADE MASTER",
    12: "DROP TABLES",
    13: "SWITCH DR TO MASTER",
}
_CDB_PARAMS: Final = _schema(
    str="InstanceId AsyncRequestId StartTimeBegin StartTimeEnd",
    ints="TaskTypes TaskStatus",
    int="Offset Limit",
)


def _cdb_status(view: TaskView) -> str:
    """The status API's status as the list spells it: upper-case, with success written SUCCEED."""
    status = view.phase.status
    if not isinstance(status, str) or not status:
        return "UNDEFINED"
    return "SUCCEED" if status.upper() == "SUCCESS" else status.upper()


def _cdb_item(task: Listable, request: ListRequest) -> Item:
    view = task.view
    failed = view.final and not view.succeeded
    return {
        "Code": 1 if failed else 0,  # "0: success; anything else: the error"
        "Message": view.phase.info or "",
        "JobId": task.serial,
        "Progress": view.progress,
        "TaskStatus": _cdb_status(view),
        "TaskType": view.task.task_type or "",
        "StartTime": view.start_time,
        "EndTime": view.end_time,
        "InstanceIds": [view.task.instance_id] if view.task.instance_id else [],
        "AsyncRequestId": task.task_id,
        "TaskAttachInfo": [],
    }


def _cdb(request: ListRequest) -> dict[str, Any]:
    params = request.params
    _checked(params, _CDB_PARAMS)
    filters: list[Filter] = []
    if "InstanceId" in params:
        filters.append(lambda entry: params["InstanceId"] in entry["InstanceIds"])
    if "AsyncRequestId" in params:
        filters.append(_equals("AsyncRequestId", params["AsyncRequestId"]))
    if params.get("TaskTypes"):
        filters.append(_one_of("TaskType", [_CDB_TASK_TYPES.get(code) for code in params["TaskTypes"]]))
    if params.get("TaskStatus"):
        codes = params["TaskStatus"]
        filters.append(lambda entry: _CDB_STATUS_CODES.get(entry["TaskStatus"]) in codes)
    total, items = _started_list(request, ("StartTimeBegin", "StartTimeEnd"), _cdb_item, filters)
    return {"TotalCount": total, "Items": items}


# ------------------------------------------------------------------------------------ redis DescribeTaskList

# TaskInfoDetail.Result: 0 initialising, 1 running, 2 done, 4 failed.
_REDIS_RESULTS: Final = {"preparing": 0, "running": 1, "succeed": 2, "failed": 4, "error": 4}
_REDIS_PARAMS: Final = _schema(
    str="InstanceId InstanceName BeginTime EndTime",
    int="Limit Offset",
    ints="ProjectIds TaskStatus Result OperatorUin",
    strs="TaskTypes OperateUin",
)


def _redis_result(view: TaskView) -> int:
    status = view.phase.status
    if not isinstance(status, str):
        return 0
    return _REDIS_RESULTS.get(status.lower(), 1)  # a status the SDK does not list: still in progress


def _redis_item(task: Listable, request: ListRequest) -> Item:
    view = task.view
    return {
        "TaskId": _number(task.task_id),
        "StartTime": view.start_time,
        "TaskType": view.task.task_type or "",
        "InstanceName": view.task.instance_name or "",
        "InstanceId": view.task.instance_id or "",
        "ProjectId": 0,
        "Progress": float(view.progress),
        "EndTime": view.end_time,
        "Result": _redis_result(view),
    }


def _redis(request: ListRequest) -> dict[str, Any]:
    params = request.params
    _checked(params, _REDIS_PARAMS)
    offset, limit = _paging(params, 20)
    if offset % limit:  # "Offset must be a multiple of Limit: limit * (page - 1)"
        raise _invalid("Offset", offset)
    filters: list[Filter] = [
        _equals(name, params[name]) for name in ("InstanceId", "InstanceName") if name in params
    ]
    if params.get("TaskTypes"):
        filters.append(_one_of("TaskType", params["TaskTypes"]))
    if params.get("Result"):
        filters.append(_one_of("Result", params["Result"]))
    # Both bounds are on the start time; the API reaches back 30 days at most.
    total, items = _started_list(request, ("BeginTime", "EndTime"), _redis_item, filters, 30 * _DAY)
    return {"TotalCount": total, "Tasks": items}


# ---------------------------------------------------------------------------------- cynosdb DescribeTasks

_CYNOSDB_STATUS: Final = {0: "success", 1: "failed", 2: "running"}  # a flow's integer status, spelled out
_CYNOSDB_PARAMS: Final = _schema(str="StartTimeBegin StartTimeEnd", objects="Filters", int="Limit Offset")
_QUERY_FILTER: Final = _schema(strs="Values Names", bool="ExactMatch", str="Name Operator")
# QueryFilter names (case-insensitive) and the BizTaskInfo field each one searches.
_CYNOSDB_FILTER_FIELDS: Final = {
    "clusterid": "ClusterId",
    "clustername": "ClusterName",
    "instanceid": "InstanceId",
    "instancename": "InstanceName",
    "status": "Status",
    "taskid": "ID",
    "tasktype": "TaskType",
}
_CYNOSDB_FUZZY: Final = frozenset({"ClusterName", "InstanceName"})  # LIKE-matched unless ExactMatch


def _cynosdb_item(task: Listable, request: ListRequest) -> Item:
    view = task.view
    # An instance ID names its cluster too (`cynosdbmysql-ins-x` is in `cynosdbmysql-x`); an ID without
    # `-ins-` is a cluster's, for an operation on the cluster as a whole.
    target = view.task.instance_id or ""
    instance = target if "-ins-" in target else ""
    cluster = target.replace("-ins-", "-", 1)
    status = view.phase.status
    return {
        "ID": task.serial,
        "AppId": 0,
        "ClusterId": cluster,
        "Region": view.task.region or request.region,
        "CreateTime": view.start_time,
        "DelayTime": "",
        "ErrMsg": (view.phase.info or "") if view.final and not view.succeeded else "",
        "FlowId": _number(task.task_id),  # what the status action, DescribeFlow, takes
        "Input": "",
        "InstanceGrpId": "",
        "InstanceGroupId": "",
        "InstanceId": instance,
        "ObjectId": instance or cluster,
        "ObjectType": "instance" if instance else "cluster",
        "Operator": "",
        "Output": "",
        "Status": _CYNOSDB_STATUS.get(status, "") if isinstance(status, int) else "",
        "TaskType": view.task.task_type or "",
        "TriggerTaskId": 0,
        "UpdateTime": tencent_time_text(view.phase_began_at),
        "StartTime": view.start_time,
        "EndTime": view.end_time,
        # The task's one name is its instance's, or its cluster's when it names no instance.
        "ClusterName": "" if instance else (view.task.instance_name or ""),
        "InstanceName": (view.task.instance_name or "") if instance else "",
        "Process": view.progress,
    }


def _cynosdb_filter(raw: Mapping[str, Any]) -> Filter:
    """One QueryFilter: any of its names holding any of its values (several filters must all match)."""
    try:
        _checked(raw, _QUERY_FILTER)
    except ApiError as error:
        raise ApiError("InvalidParameter", f"Filters: {error.message}") from None
    names = [*raw.get("Names", []), *([raw["Name"]] if "Name" in raw else [])]
    values, exact = raw.get("Values", []), raw.get("ExactMatch", False)
    fields = []
    for name in names:
        field = _CYNOSDB_FILTER_FIELDS.get(name.lower())
        if field is None:
            raise _invalid("Filters.Names", name)
        fields.append(field)

    def matches(entry: Item) -> bool:
        for field in fields:
            text = str(entry[field])
            fuzzy = field in _CYNOSDB_FUZZY and not exact
            if any(value in text if fuzzy else value == text for value in values):
                return True
        return False

    return matches


def _cynosdb(request: ListRequest) -> dict[str, Any]:
    params = request.params
    _checked(params, _CYNOSDB_PARAMS)
    filters = [_cynosdb_filter(raw) for raw in params.get("Filters", [])]
    total, items = _started_list(request, ("StartTimeBegin", "StartTimeEnd"), _cynosdb_item, filters)
    return {"TotalCount": total, "TaskList": items}


# --------------------------------------------------------------------------------- postgres DescribeTasks

_POSTGRES_PARAMS: Final = _schema(
    int="TaskId Limit Offset", str="DBInstanceId MinStartTime MaxStartTime OrderBy OrderByType"
)


def _postgres_item(task: Listable, request: ListRequest) -> Item:
    # Exactly the item the one-task question answers (`answers`), so polling and listing never disagree.
    return SHAPES["task_set"].fields(task.view)


def _postgres(request: ListRequest) -> dict[str, Any]:
    params = request.params
    _checked(params, _POSTGRES_PARAMS)
    order_by, order = params.get("OrderBy", "StartTime"), params.get("OrderByType", "desc")
    if order_by not in ("StartTime", "EndTime"):
        raise _invalid("OrderBy", order_by)
    if order not in ("asc", "desc"):
        raise _invalid("OrderByType", order)
    filters: list[Filter] = [
        _equals(name, params[name]) for name in ("TaskId", "DBInstanceId") if name in params
    ]
    # "Only the last 180 days unless MinStartTime says otherwise": the lookback is a default, not a wall.
    lookback = None if "MinStartTime" in params else 180 * _DAY
    total, items = _started_list(
        request,
        ("MinStartTime", "MaxStartTime"),
        _postgres_item,
        filters,
        lookback,
        _by_start if order_by == "StartTime" else _by_end,
        ascending=order == "asc",
    )
    return {"TotalCount": total, "TaskSet": items}


def _by_end(task: Listable) -> float:
    """When the task ended; one still running has not yet, so it sorts as the latest."""
    return task.view.phase_began_at if task.view.final else math.inf


# ---------------------------------------------------------------- mariadb and dcdb: instances and Locker

_STATUS_RUNNING, _STATUS_FLOW = 2, 1  # DBInstance.Status: 2 running, 1 "flow in progress"
_STATUS_DESC: Final = {_STATUS_RUNNING: "运行中", _STATUS_FLOW: "流程处理中"}
_INSTANCE_PARAMS: Final = _schema(
    str="SearchName SearchKey VpcId SubnetId OrderBy OrderByType FilterInstanceType",
    int="Offset Limit ExclusterType",
    bool="IsFilterVpc IsFilterExcluster",
    strs="InstanceIds ExclusterIds TagKeys",
    ints="ProjectIds Status ExcludeStatus",
    objects="Tags",
)
_MARIADB_PARAMS: Final = {**_INSTANCE_PARAMS, "OriginSerialIds": "strs"}


def _instance(instance_id: str, tasks: Sequence[Listable], request: ListRequest) -> Item:
    """An instance made up from its tasks: locked by the latest started one while that still runs."""
    newest = sorted(tasks, key=lambda t: (t.view.started_at, _id_order(t.task_id)), reverse=True)
    latest = next((t for t in newest if t.began), None)
    locker = _number(latest.task_id) if latest is not None and not latest.view.final else 0
    status = _STATUS_FLOW if locker else _STATUS_RUNNING
    region = newest[0].view.task.region or request.region
    tags = next((t.view.task.tags for t in newest if t.view.task.tags), ())
    return {
        "InstanceId": instance_id,
        "InstanceName": next((t.view.task.instance_name for t in newest if t.view.task.instance_name), ""),
        "ProjectId": 0,
        "Region": region,
        "Zone": f"{region}-1",
        "Status": status,
        "StatusDesc": _STATUS_DESC[status],
        "Locker": locker,
        "CreateTime": newest[-1].view.start_time,
        "UpdateTime": tencent_time_text(latest.view.phase_began_at) if latest else newest[-1].view.start_time,
        "NodeCount": 2,
        "ResourceTags": [{"TagKey": key, "TagValue": value} for key, value in tags],
    }


def _instances(schema: Mapping[str, str], default_limit: int, extra: Item) -> Callable[[ListRequest], Item]:
    def answer(request: ListRequest) -> dict[str, Any]:
        params = request.params
        _checked(params, schema)
        offset, limit = _paging(params, default_limit)
        if len(params.get("InstanceIds", [])) > MAX_LIMIT:
            raise _invalid("InstanceIds", f"{len(params['InstanceIds'])} IDs")
        by_instance: dict[str, list[Listable]] = {}
        for task in request.tasks:
            if task.view.task.instance_id:
                by_instance.setdefault(task.view.task.instance_id, []).append(task)
        filters: list[Filter] = []
        if params.get("InstanceIds"):
            filters.append(_one_of("InstanceId", params["InstanceIds"]))
        if params.get("Status"):
            filters.append(_one_of("Status", params["Status"]))
        if params.get("ExcludeStatus"):
            excluded = params["ExcludeStatus"]
            filters.append(lambda entry: entry["Status"] not in excluded)
        if params.get("TagKeys"):
            keys = set(params["TagKeys"])
            filters.append(lambda entry: any(tag["TagKey"] in keys for tag in entry["ResourceTags"]))
        instances = [
            {**_instance(instance_id, tasks, request), **extra}
            for instance_id, tasks in sorted(by_instance.items())
        ]
        chosen = [entry for entry in instances if all(f(entry) for f in filters)]
        return {"TotalCount": len(chosen), "Instances": chosen[offset : offset + limit]}

    return answer


# By the catalogue's list shape names (`ListApi.answer_shape`); DTS's job lists are in `joblists`, which
# checks that every list of the catalogue has an answer.
LISTS: Final[Mapping[str, Callable[[ListRequest], dict[str, Any]]]] = {
    "async_request_tasks": _cdb,
    "task_list": _redis,
    "flow_tasks": _cynosdb,
    "task_set": _postgres,
    # DescribeDBInstances' Limit defaults to 20, DescribeDCDBInstances' to 10.
    "instances": _instances(_MARIADB_PARAMS, 20, {"DbEngine": "MariaDB"}),
    "sharded_instances": _instances(
        _INSTANCE_PARAMS, 10, {"DbEngine": "MySQL", "ShardCount": 2, "ShardDetail": []}
    ),
}
# For the list answers written in modules of their own (`instancetasks`, `joblists`, which checks that every
# list of the catalogue has an answer).
checked, invalid, schema = _checked, _invalid, _schema
