"""The list half of the catalogue: for each product that has one, the API that lists an account's operations
in a region, so discovery can watch operations nobody named.

Each entry says which action and version to call, its published quota, how a page is asked for (a start-time
window, a fixed filter for the products that only show the flow an instance is locked by, or neither for
DTS's job lists, which show every job), where the items
are in the answer, and how one item becomes a Listed operation: the ID the status API takes, plus what the
status API may not say (start time, type, instance, progress, resource tags). Field names are those of the
official SDKs' models.py. mongodb has no account-wide list without an instance ID, so it has no entry;
SQL Server's instance tasks are listed in two steps, busy instances then each one's tasks
(`instancelists`). `exporter.catalogue.products` attaches each entry to its product.

Where a list reports each operation's status too, `statuses` maps its words to the status API's, and a sweep
page then speaks for the operations it lists (discovery.md, "Status from the list"). Only words that mean the
same thing in both APIs are mapped; a word the status API spells or means differently is left out, and the
status API decides for that operation:

- CDB: DescribeTasks' TaskStatus spells success `SUCCEED` (DescribeAsyncRequestInfo: `SUCCESS`); its `PAUSED`
  is "paused" where the status API's is "being terminated", and `WAITING` has no status-API word: not mapped.
- Redis: DescribeTaskList's `Result` is a number, and 4 ("failed") stands for both `failed` and `error` of
  DescribeTaskInfo: 0, 1 and 2 are mapped, 4 is not.
- PostgreSQL: the list is the status action itself, so every word is the same.
- TDSQL-C: DescribeTasks' `Status` has no documented vocabulary, and its status API (DescribeFlow) answers a
  number: not mapped. MariaDB and TDSQL list busy instances, not operations' statuses.
- DTS migration jobs: DescribeMigrationJobs' JobItem.Status spells DescribeMigrationDetail's words alike;
  its own words (creating, resumableErr, resuming, error, canceled, unknown) are not mapped.
- DTS sync jobs: the list is the status action itself (DescribeSyncJobs), so every word is the same.

A final status read from a page is also confirmed by one status request (discovery.py): that request alone
gives the status API's own text (CDB's `Info`, the reason of a failure), and it costs one request per
operation over its whole life, against one per operation every `polling.interval` without the list.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exporter.catalogue.apifields import (
    CHINA_STANDARD_TIME,
    INFO_MAX_LENGTH,
    IdKind,
    InvalidResponse,
    api_text,
    percent_ratio,
    tencent_time,
    text_field,
)
from exporter.catalogue.apifields import field as answer_field
from exporter.catalogue.instancelists import (
    INSTANCE_TASK_STATUSES,
    InstanceList,
    instance_id,
    pair,
    task_number,
    task_status,
)

PAGE_SIZE = 100  # every list API's largest Limit
TAG_MAX = 50  # resource tags kept from one item: bounds what one instance can add to the exposition


@dataclass(frozen=True)
class Listed:
    """One operation a list API reported: its status-API ID, and what the status API may lack."""

    task_id: str
    start_time: float | None = None  # unix time
    end_time: float | None = None
    task_type: str | None = None
    instance_id: str | None = None
    instance_name: str | None = None
    progress: float | None = None  # 0 to 1
    tags: tuple[tuple[str, str], ...] = ()  # (tag key, value): resource tags, where the API gives them
    # The status in the status API's words (`ListApi.statuses`); None: the list says none, or a word the
    # status API spells or means differently, so a status request decides.
    status: str | None = None


@dataclass(frozen=True)
class Page:
    items: tuple[Listed, ...]
    total: int  # TotalCount: how many items every page together holds
    size: int  # how many items of this page were read (at most PAGE_SIZE), including any naming no operation


@dataclass(frozen=True)
class ListApi:
    """One product's list API and how to read it."""

    action: str
    version: str
    default_rate_limit: float  # the published quota, requests per second
    items_field: str
    item: Callable[[Mapping[str, Any], IdKind], Listed | None]  # None: the item names no operation
    # How the simulator answers this list (`exporter.simulator.listing`), by name, as `AnswerShape` names a
    # status answer's: a list answering like an existing one names it and needs no simulator change.
    # `async_request_tasks` (CDB's Items), `task_list` (Redis's Tasks), `flow_tasks` (TDSQL-C's TaskList,
    # each task with its FlowId), `task_set` (PostgreSQL's TaskSet, items as its status answer's),
    # `instances` (MariaDB's Instances, with Locker), `sharded_instances` (TDSQL's, with shards).
    answer_shape: str
    # Request parameters bounding the operations' start time (begin, end); None: the API lists a snapshot
    # (instances locked by a running flow), so a flow that starts and ends between two sweeps is missed.
    window: tuple[str, str] | None = None
    filters: Mapping[str, Any] = field(default_factory=dict)
    max_lookback: float | None = None  # how far back the API can list at all, seconds
    note: str = ""  # for the README's table
    # The list's status words (lower-cased strings, or numbers) that mean a status-API word, and that word.
    statuses: Mapping[object, str] = field(default_factory=dict)
    # The first step of a two-step list (`instancelists`): the busy instances, each of whose own list this
    # is, read with the instance named (`InstanceList.param`); None: the list is account-wide.
    instances: InstanceList | None = None

    @property
    def speaks_status(self) -> bool:
        """Whether a page says each operation's status in words the status API would use."""
        return bool(self.statuses)

    @property
    def snapshot(self) -> bool:
        return self.window is None

    def payload(self, offset: int, begin: float, end: float) -> dict[str, Any]:
        """One page's request: operations that started from `begin` to `end` (unix times), from `offset`."""
        params: dict[str, Any] = {**self.filters, "Offset": offset, "Limit": PAGE_SIZE}
        if self.window is not None:
            params[self.window[0]] = tencent_time_text(begin)
            params[self.window[1]] = tencent_time_text(end)
        return params

    def page(self, response: Mapping[str, Any], id_kind: IdKind) -> Page:
        """Reads one page of answer; raises InvalidResponse when it lacks what the API documents."""
        total = response.get("TotalCount")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise InvalidResponse(f"Response.TotalCount is not a count: {total!r}"[:200])
        raw = response.get(self.items_field)
        if raw is None:
            raw = []  # some APIs answer null rather than [] for an empty page
        if not isinstance(raw, list):
            raise InvalidResponse(f"Response.{self.items_field} is not a list")
        # Every request asks for PAGE_SIZE items: a page holding more is cut there, so a list that ignores
        # its Limit cannot multiply what one sweep (at most MAX_PAGES pages) brings in.
        raw = raw[:PAGE_SIZE]
        items = []
        for entry in raw:
            if not isinstance(entry, dict):
                raise InvalidResponse(f"Response.{self.items_field} holds a {type(entry).__name__}")
            listed = self.item(entry, id_kind)
            if listed is not None:
                items.append(listed)
        return Page(tuple(items), total, len(raw))


def tencent_time_text(unix_time: float) -> str:
    """The `YYYY-MM-DD hh:mm:ss` (UTC+8) form the list APIs take their time bounds in."""
    return datetime.fromtimestamp(unix_time, CHINA_STANDARD_TIME).strftime("%Y-%m-%d %H:%M:%S")


_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def _time(value: object) -> float | None:
    """tencent_time, fast: a sweep reads two times an item, and strptime (its locale lookup) took 120 us a
    call, most of the 190 us an item took to read (1 s of event loop for a sweep of 5,000 operations)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not _TIME.fullmatch(text) or text == "0000-00-00 00:00:00":
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=CHINA_STANDARD_TIME).timestamp()
    except ValueError:
        return None


def _text(entry: Mapping[str, Any], name: str) -> str | None:
    return text_field(entry.get(name), INFO_MAX_LENGTH) if name else None


def _instance(entry: Mapping[str, Any], name: str) -> str | None:
    """An instance ID field, or the first of a list of them (CDB's InstanceIds)."""
    value = entry.get(name) if name else None
    if isinstance(value, list):
        value = value[0] if value and isinstance(value[0], str) else None
    return text_field(value, INFO_MAX_LENGTH) if isinstance(value, str) else None


def resource_tags(entry: Mapping[str, Any], name: str = "ResourceTags") -> tuple[tuple[str, str], ...]:
    """Resource tags, a list of {TagKey, TagValue} (MariaDB's ResourceTags, DTS's Tags)."""
    raw = entry.get(name)
    if not isinstance(raw, list):
        return ()
    tags = {}
    for tag in raw[:TAG_MAX]:
        if isinstance(tag, dict) and isinstance(tag.get("TagKey"), str) and tag["TagKey"]:
            value = tag.get("TagValue")
            tags[api_text(tag["TagKey"], INFO_MAX_LENGTH)] = api_text(
                value if isinstance(value, str) else "", INFO_MAX_LENGTH
            )
    return tuple(sorted(tags.items()))


def _status(value: object, statuses: Mapping[object, str]) -> str | None:
    """The status-API word for a list's status value (a string matched lower-cased, or a number)."""
    if isinstance(value, str):
        return statuses.get(value.strip().lower())
    if isinstance(value, int) and not isinstance(value, bool):
        return statuses.get(value)
    return None


def task_list(
    id_field: str,
    task_type: str,
    instance: str,
    start: str,
    end: str,
    progress: str,
    fallback_instance: str = "",
    status: str = "",
    statuses: Mapping[object, str] | None = None,
    tags: str = "",
) -> Callable[[Mapping[str, Any], IdKind], Listed | None]:
    """An item of a list of operations: the operation's ID in `id_field`, and the named fields beside it
    (a dotted name reaches into an object: `Detail.Progress`)."""
    words = statuses or {}

    def item(entry: Mapping[str, Any], id_kind: IdKind) -> Listed | None:
        task_id = id_kind.canonical(entry.get(id_field))
        if task_id is None:
            return None  # an entry without an ID the status API takes (a CynosDB task with no flow)
        return Listed(
            task_id,
            start_time=_time(entry.get(start)),
            end_time=_time(entry.get(end)),
            task_type=_text(entry, task_type),
            instance_id=_instance(entry, instance) or _instance(entry, fallback_instance),
            progress=percent_ratio(answer_field(entry, progress)) if progress else None,
            status=_status(entry.get(status), words) if status else None,
            tags=resource_tags(entry, tags) if tags else (),
        )

    return item


def _locked_instance(entry: Mapping[str, Any], id_kind: IdKind) -> Listed | None:
    """An instance of MariaDB or TDSQL: `Locker` is the FlowId of the flow it is busy with (0: none)."""
    task_id = id_kind.canonical(entry.get("Locker"))
    if task_id is None:
        return None
    return Listed(
        task_id,
        instance_id=_text(entry, "InstanceId"),
        instance_name=_text(entry, "InstanceName"),
        tags=resource_tags(entry),
    )


_DAY = 86400.0
# Instances in status 1, "flow in progress": their Locker is the running flow.
_LOCKED = {"Status": [1]}

# TaskDetail.TaskStatus -> DescribeAsyncRequestInfo's Status (lower-cased, as the exporter exports it).
_CDB_STATUSES: Mapping[object, str] = {
    "undefined": "undefined",
    "initial": "initial",
    "running": "running",
    "succeed": "success",
    "failed": "failed",
    "killed": "killed",
    "removed": "removed",
}
CDB_TASKS = ListApi(
    "DescribeTasks",
    "2017-03-20",
    100.0,
    "Items",
    task_list(
        "AsyncRequestId",
        "TaskType",
        "InstanceIds",
        "StartTime",
        "EndTime",
        "Progress",
        status="TaskStatus",
        statuses=_CDB_STATUSES,
    ),
    window=("StartTimeBegin", "StartTimeEnd"),
    answer_shape="async_request_tasks",
    statuses=_CDB_STATUSES,
)
MARIADB_INSTANCES = ListApi(
    "DescribeDBInstances",
    "2017-03-12",
    200.0,
    "Instances",
    _locked_instance,
    filters=_LOCKED,
    note="`Locker` of instances busy with a flow",
    answer_shape="instances",
)
DCDB_INSTANCES = ListApi(
    "DescribeDCDBInstances",
    "2018-04-11",
    200.0,
    "Instances",
    _locked_instance,
    filters=_LOCKED,
    note="`Locker` of instances busy with a flow",
    answer_shape="sharded_instances",
)
# TaskInfoDetail.Result -> DescribeTaskInfo's Status; 4 ("failed") is either `failed` or `error` there.
_REDIS_RESULTS: Mapping[object, str] = {0: "preparing", 1: "running", 2: "succeed"}
REDIS_TASKS = ListApi(
    "DescribeTaskList",
    "2018-04-12",
    100.0,
    "Tasks",
    task_list(
        "TaskId",
        "TaskType",
        "InstanceId",
        "StartTime",
        "EndTime",
        "Progress",
        status="Result",
        statuses=_REDIS_RESULTS,
    ),
    window=("BeginTime", "EndTime"),
    max_lookback=30 * _DAY,
    answer_shape="task_list",
    statuses=_REDIS_RESULTS,
)
CYNOSDB_TASKS = ListApi(
    "DescribeTasks",
    "2019-01-07",
    1000.0,
    "TaskList",
    # The status API (DescribeFlow) takes the task's FlowId, not its ID.
    task_list("FlowId", "TaskType", "InstanceId", "StartTime", "EndTime", "Process", "ClusterId"),
    window=("StartTimeBegin", "StartTimeEnd"),
    answer_shape="flow_tasks",
)
# The status action's own words (TaskSet[].Status), lower-cased.
_POSTGRES_STATUSES: Mapping[object, str] = {
    w: w for w in ("running", "success", "waitswitch", "fail", "pause")
}
# KeeWiDB's task list answers like Redis's (the same request and TaskInfoDetail items); 50/s, from its API
# documentation (cloud.tencent.com/document/api/1520/86201), which gives no lookback limit.
KEEWIDB_TASKS = ListApi(
    "DescribeTaskList",
    "2022-03-08",
    50.0,
    "Tasks",
    task_list("TaskId", "TaskType", "InstanceId", "StartTime", "EndTime", "Progress"),
    window=("BeginTime", "EndTime"),
    answer_shape="task_list",
)
# The status action itself, listing by start time: the two share one quota (see ListApi users).
POSTGRES_TASKS = ListApi(
    "DescribeTasks",
    "2017-03-12",
    2.0,
    "TaskSet",
    task_list(
        "TaskId",
        "TaskType",
        "DBInstanceId",
        "StartTime",
        "EndTime",
        "Progress",
        status="Status",
        statuses=_POSTGRES_STATUSES,
    ),
    statuses=_POSTGRES_STATUSES,
    window=("MinStartTime", "MaxStartTime"),
    max_lookback=180 * _DAY,
    note="the status action itself: 2/s of its 20/s go to discovery",
    answer_shape="task_set",
)


def busy_instances(instances: InstanceList, response: Mapping[str, Any]) -> Page:
    """One page of busy instances: each item a Listed naming the instance (its `task_id` too) with its
    name and resource tags, which its tasks inherit; raises InvalidResponse as ListApi.page does."""
    total = response.get("TotalCount")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise InvalidResponse(f"Response.TotalCount is not a count: {total!r}"[:200])
    raw = response.get(instances.items_field)
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise InvalidResponse(f"Response.{instances.items_field} is not a list")
    raw = raw[:PAGE_SIZE]  # every request asks for PAGE_SIZE: more is cut, as ListApi.page does
    items = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise InvalidResponse(f"Response.{instances.items_field} holds a {type(entry).__name__}")
        found = instance_id(entry.get(instances.id_field))
        if found is None:
            continue  # an item naming no instance the task list would take
        name = text_field(entry.get(instances.name_field), INFO_MAX_LENGTH) if instances.name_field else None
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
