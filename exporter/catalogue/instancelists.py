"""Operations reached through their instance: the ID, request, parser and two-step list of a product whose
task list takes one instance ID and has no account-wide form (SQL Server's DescribeInstanceTasks).

Such an operation's ID is the pair (instance ID, task ID), written `mssql-njj2mtpl:23517`: the task ID alone
is unique only within its instance's list, and the status request must name the instance. The separator is
`:`, not `/`, because the ID is one path segment of the task API (`DELETE /api/v1/tasks/{product}/{id}`).

Its status request is the instance's task list (`InstanceId`, `Limit` 100), and the parser picks the item
with the task's ID; an item absent from that page is not found. The list's order is not documented, so an
instance with more than 100 tasks may hide one of them (docs/discovery.md).

Discovery is a sweep in two steps (`InstanceList`): the account's instances busy with a task (a snapshot: a
fixed filter), then each busy instance's running tasks. Each step is an action with its own quota.

Facts from the official SDK (tencentcloud-sdk-python-sqlserver 3.1.183, sqlserver/v20180328 models.py):
DescribeDBInstancesRequest.Status is one integer, 7 "task executing (backup, rollback...)"; its Offset is a
page number ("页编号, 默认值为第0页") unless PaginationType is `offset` (default `pageNumber`); Limit 1-100.
DescribeInstanceTasksRequest takes InstanceId, Limit, Offset and Status (1 running, 2 success, 3 failed);
its answer's InstanceTaskSet holds InstanceTask items (Id, Type, Status, Progress, StartTime, EndTime,
ErrorCode, Message), with no instance ID. Quotas 20/s each (cloud.tencent.com/document/api/238/101734 for
DescribeInstanceTasks, with InstanceId and Limit required; intl.cloud.tencent.com/document/product/238/32115
for DescribeDBInstances).

Whether InstanceTask.Id is the FlowId DescribeFlowStatus takes: nothing says so. The SDK calls it a "unique
id", while every FlowId field it has says to pass it to DescribeFlowStatus; the Terraform provider
(terraform-provider-tencentcloud, services/sqlserver, 2026-08) never calls DescribeInstanceTasks and polls
DescribeFlowStatus only with the FlowId a mutating call answered. So these tasks are a product of their own
(`sqlserver_tasks`), whose status is the task list's own.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.catalogue.apifields import (
    INFO_MAX_LENGTH,
    PAIR_SEPARATOR,
    STATUS_MAX_LENGTH,
    UNKNOWN,
    IdKind,
    InvalidResponse,
    Observation,
    TaskNotFound,
    percent_ratio,
    split_pair,
    tencent_time,
    text_field,
)
from exporter.catalogue.listapis import PAGE_SIZE, ListApi, Listed, Page, resource_tags

# The task list's page when asked for one task's status: the largest page every list here takes.
STATUS_PAGE = 100
_INT64_MAX = 2**63 - 1
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def instance_id(value: object) -> str | None:
    """An instance ID as an answer gives it, or None when it is not one."""
    return value if isinstance(value, str) and _INSTANCE_ID.fullmatch(value) else None


def task_number(value: object) -> int | None:
    """A task's integer ID (positive, int64), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value <= _INT64_MAX else None


def pair(instance: str, task: int) -> str:
    return f"{instance}{PAIR_SEPARATOR}{task}"


def instance_task_request(task_id: str) -> dict[str, Any]:
    """The status request of one task: its instance's task list, one page of STATUS_PAGE."""
    instance, _ = split_pair(task_id)
    return {"InstanceId": instance, "Limit": STATUS_PAGE}


# InstanceTask.Status, as DescribeInstanceTasksRequest.Status documents it: 1 running, 2 success, 3 failed.
INSTANCE_TASK_STATUSES: Mapping[object, str] = {1: "running", 2: "success", 3: "failed"}


def task_status(value: object) -> str:
    """An InstanceTask's Status as a word; null is unknown, an undocumented number `status_<n>`."""
    if value is None:
        return UNKNOWN
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidResponse(f"InstanceTask.Status is not an integer: {value!r}"[:200])
    return INSTANCE_TASK_STATUSES.get(value, f"status_{value}"[:STATUS_MAX_LENGTH])


def _task_items(response: Mapping[str, Any]) -> list[Any]:
    raw = response.get("InstanceTaskSet")
    if raw is None:
        return []  # an instance with no task answers null
    if not isinstance(raw, list):
        raise InvalidResponse("Response.InstanceTaskSet is not a list")
    return raw[:STATUS_PAGE]


def parse_instance_task(response: Mapping[str, Any], task_id: str) -> Observation:
    """One task's status, picked by ID from its instance's task list; TaskNotFound when it is not there."""
    instance, number = split_pair(task_id)
    for entry in _task_items(response):
        if not isinstance(entry, dict):
            raise InvalidResponse("Response.InstanceTaskSet holds a non-object")
        if task_number(entry.get("Id")) != number:
            continue
        status = task_status(entry.get("Status"))
        message = text_field(entry.get("Message"), INFO_MAX_LENGTH)
        task_type = entry.get("Type")
        return Observation(
            status,
            info=message,
            start_time=tencent_time(entry.get("StartTime")),
            end_time=tencent_time(entry.get("EndTime")),
            task_type=str(task_type) if task_number(task_type) is not None else None,
            instance_id=instance,
            progress=percent_ratio(entry.get("Progress")),
        )
    raise TaskNotFound(f"task {number} is not in the first {STATUS_PAGE} of {instance}'s task list")


@dataclass(frozen=True)
class InstanceList:
    """The first step of a two-step list: the instances busy with a task, each of whose own task list is then
    read (`ListApi.instances`). A snapshot: a task that starts and ends between two sweeps is missed."""

    action: str
    version: str
    default_rate_limit: float  # the published quota, requests per second
    items_field: str
    id_field: str  # an item's instance ID
    filters: Mapping[str, Any] = field(default_factory=dict)  # what makes an instance busy
    name_field: str = ""
    param: str = "InstanceId"  # the task list's parameter naming the instance
    page_numbered: bool = False  # Offset counts pages, not items
    note: str = ""

    def payload(self, offset: int, limit: int) -> dict[str, Any]:
        """One page of busy instances from item `offset`."""
        start = offset // limit if self.page_numbered else offset
        return {**self.filters, "Offset": start, "Limit": limit}

    def page(self, response: Mapping[str, Any]) -> Page:
        """One page of busy instances: each item a Listed naming the instance (its `task_id` too) with its
        name and resource tags, which its tasks inherit; raises InvalidResponse as ListApi.page does."""
        total = response.get("TotalCount")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise InvalidResponse(f"Response.TotalCount is not a count: {total!r}"[:200])
        raw = response.get(self.items_field)
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise InvalidResponse(f"Response.{self.items_field} is not a list")
        raw = raw[:PAGE_SIZE]  # every request asks for PAGE_SIZE: more is cut, as ListApi.page does
        items = []
        for entry in raw:
            if not isinstance(entry, dict):
                raise InvalidResponse(f"Response.{self.items_field} holds a {type(entry).__name__}")
            found = instance_id(entry.get(self.id_field))
            if found is None:
                continue  # an item naming no instance the task list would take
            name = text_field(entry.get(self.name_field), INFO_MAX_LENGTH) if self.name_field else None
            items.append(Listed(found, instance_id=found, instance_name=name, tags=resource_tags(entry)))
        return Page(tuple(items), total, len(raw))


def within(instance: Listed, listed: Listed) -> Listed | None:
    """A task of an instance's list as the operation it is: its ID made the (instance, task) pair, and the
    instance's ID, name and tags added; None when the item's ID is not a task number."""
    number = task_number(int(listed.task_id)) if listed.task_id.isdigit() else None
    if number is None:
        return None
    return dataclasses.replace(
        listed,
        task_id=pair(instance.task_id, number),
        instance_id=instance.task_id,
        instance_name=instance.instance_name,
        tags=instance.tags,
    )


def _instance_task(entry: Mapping[str, Any], id_kind: IdKind) -> Listed | None:
    """An InstanceTask, its ID still the bare task number (`within` makes it the pair)."""
    number = task_number(entry.get("Id"))
    if number is None:
        return None
    task_type = entry.get("Type")
    try:
        status: str | None = task_status(entry.get("Status"))
    except InvalidResponse:
        status = None  # the status request decides
    return Listed(
        str(number),
        start_time=tencent_time(entry.get("StartTime")),
        end_time=tencent_time(entry.get("EndTime")),
        task_type=str(task_type) if task_number(task_type) is not None else None,
        progress=percent_ratio(entry.get("Progress")),
        status=status if status in INSTANCE_TASK_STATUSES.values() else None,
    )


_DESCRIBE_FLOW_VERSION = "2018-03-28"
# DescribeDBInstances, Status 7: "task executing (backup, rollback...)". One integer, not a list as MariaDB's
# Status filter is. Offset is a page number by default (PaginationType pageNumber).
SQLSERVER_BUSY_INSTANCES = InstanceList(
    "DescribeDBInstances",
    _DESCRIBE_FLOW_VERSION,
    20.0,
    "DBInstances",
    "InstanceId",
    filters={"Status": 7},
    name_field="Name",
    page_numbered=True,
    note="instances in status 7 (task executing)",
)
# Each busy instance's running tasks (Status filter 1): the list is the status action itself, so the two
# spend its one quota (20/s); 5/s of it go to discovery by default.
SQLSERVER_INSTANCE_TASKS = ListApi(
    "DescribeInstanceTasks",
    _DESCRIBE_FLOW_VERSION,
    5.0,
    "InstanceTaskSet",
    _instance_task,
    answer_shape="instance_tasks",
    filters={"Status": 1},
    note="each busy instance's running tasks, of the status action's 20/s",
    statuses=INSTANCE_TASK_STATUSES,
    instances=SQLSERVER_BUSY_INSTANCES,
)
