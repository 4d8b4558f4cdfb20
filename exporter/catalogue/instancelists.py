"""Operations reached through their instance: the ID, request, parser and two-step list of a product whose
task list takes one instance ID and has no account-wide form (SQL Server's DescribeInstanceTasks).

Such an operation's ID is the pair (instance ID, task ID), written `mssql-njj2mtpl:23517`: the task ID alone
is unique only within its instance's list, and the status request must name the instance. The separator is
`:`, not `/`, because the ID is one path segment of the task API (`DELETE /api/v1/tasks/{product}/{id}`).

Its status request is the instance's task list (`InstanceId`, `Limit` 100), and the parser picks the item
with the task's ID; an item absent from that page is not found. The list's order is not documented, so an
instance with more than 100 tasks may hide one of them (docs/discovery.md).

Discovery is a sweep in two steps (`InstanceList`, named by `ListApi.instances`): the account's instances
busy with a task (a snapshot: a fixed filter), then each busy instance's running tasks. The entries, the page
reader of the first step (`busy_instances`) and the item reader of the second (`within` makes each task's
pair ID) are in `listapis`, which imports this module. DescribeDBInstances has a quota of its own;
DescribeInstanceTasks is also the status action, so polling and the second step share its quota.

Facts from the official SDK (tencentcloud-sdk-python-sqlserver 3.1.183, sqlserver/v20180328 models.py):
DescribeDBInstancesRequest.Status is one integer, 7 "task executing (backup, rollback...)" (DBInstance.Status
also has 9 expanding, 10 migrating, 12 restarting, 13-17 modifying or creating, not swept); its Offset is a
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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.catalogue.apifields import (
    INFO_MAX_LENGTH,
    PAIR_SEPARATOR,
    STATUS_MAX_LENGTH,
    UNKNOWN,
    InvalidResponse,
    Observation,
    TaskNotFound,
    percent_ratio,
    split_pair,
    tencent_time,
    text_field,
)
from exporter.catalogue.shapes import INSTANCE_TASKS_ANSWER

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
INSTANCE_TASK_STATUSES: Mapping[object, str] = {
    code: word for word, code in INSTANCE_TASKS_ANSWER.status_codes
}


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
