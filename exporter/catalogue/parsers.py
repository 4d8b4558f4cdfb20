"""How a status answer becomes an Observation: parsers of an integer flow Status, of a word Status with the
fields beside it (a dotted name reaches into an object: `Detail.Progress`), of a Status held one level down
(CKafka's Result) and of a list asked for one ID (PostgreSQL's TaskSet, DTS's sync JobList). The product
entries (`exporter.catalogue.products`) name which parser reads their answer and with which fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from exporter.catalogue.apifields import (
    INFO_MAX_LENGTH,
    STATUS_MAX_LENGTH,
    UNKNOWN,
    InvalidResponse,
    Observation,
    TaskNotFound,
    api_text,
    field,
    percent_ratio,
    tencent_time,
    text_field,
)

# A flow's integer Status, as every flow product's SDK describes it: 0 succeeded, 1 failed, 2 running.
FLOW_STATUS_CODES: tuple[tuple[str, int], ...] = (("success", 0), ("failed", 1), ("running", 2))
Parser = Callable[[Mapping[str, Any]], Observation]


def _require_status(response: Mapping[str, Any]) -> object:
    if "Status" not in response:
        raise InvalidResponse("Response.Status is missing")
    return response["Status"]


_FLOW_STATUS = {code: word for word, code in FLOW_STATUS_CODES}


def flow(info: str = "", instances: str = "") -> Callable[[Mapping[str, Any]], Observation]:
    """A parser of an integer `Status` (0 success, 1 failed, 2 running), with the named free text and the
    first of a list of instance IDs beside it."""

    def parse(response: Mapping[str, Any]) -> Observation:
        raw = _require_status(response)
        text = text_field(response.get(info), INFO_MAX_LENGTH) if info else None
        listed = response.get(instances) if instances else None
        first = listed[0] if isinstance(listed, list) and listed else None
        instance = text_field(first, INFO_MAX_LENGTH) if isinstance(first, str) else None
        if raw is None:
            return Observation(UNKNOWN, info=text, instance_id=instance)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise InvalidResponse(f"Response.Status is not an integer: {raw!r}"[:200])
        status = _FLOW_STATUS.get(raw, f"status_{raw}"[:STATUS_MAX_LENGTH])
        return Observation(status, info=text, instance_id=instance)

    return parse


# MariaDB, TDSQL, SQL Server, TDSQL-C: the integer Status alone.
parse_flow = flow()


def held(
    holder: str, parse: Callable[[Mapping[str, Any]], Observation]
) -> Callable[[Mapping[str, Any]], Observation]:
    """A parser of an answer whose Status and the fields beside it are inside `holder` (CKafka's Result)."""

    def parse_held(response: Mapping[str, Any]) -> Observation:
        inner = response.get(holder)
        if not isinstance(inner, dict):
            raise InvalidResponse(f"Response.{holder} is {'missing' if inner is None else 'not an object'}")
        return parse(inner)

    return parse_held


def fields(
    info: str = "",
    start: str = "",
    end: str = "",
    task_type: str = "",
    instance: str = "",
    progress: str = "",
) -> Callable[[Mapping[str, Any]], Observation]:
    """A parser of a string `Status` (lower-cased; null is `unknown`) and the named extra fields."""

    def parse(answer: Mapping[str, Any]) -> Observation:
        raw = _require_status(answer)
        if raw is not None and not isinstance(raw, str):
            raise InvalidResponse(f"Response.Status is not a string: {raw!r}"[:200])
        status = api_text(raw.strip().lower(), STATUS_MAX_LENGTH) if raw else ""
        ratio = percent_ratio(field(answer, progress)) if progress else None
        return Observation(
            status or UNKNOWN,
            info=text_field(field(answer, info), INFO_MAX_LENGTH) if info else None,
            start_time=tencent_time(field(answer, start)) if start else None,
            end_time=tencent_time(field(answer, end)) if end else None,
            task_type=text_field(field(answer, task_type), INFO_MAX_LENGTH) if task_type else None,
            instance_id=text_field(field(answer, instance), INFO_MAX_LENGTH) if instance else None,
            progress=ratio,
        )

    return parse


_postgres_task = fields(
    task_type="TaskType", instance="DBInstanceId", start="StartTime", end="EndTime", progress="Progress"
)


def first_item(items: str, parse: Parser) -> Parser:
    """A parser of a list action asked for one ID (the status action of a product without a per-ID one):
    the list `items` holds that operation, read by `parse`, or nothing, which is TaskNotFound."""

    def parse_first(response: Mapping[str, Any]) -> Observation:
        listed = response.get(items)
        if listed is None or listed == []:
            raise TaskNotFound(f"{items} is empty")
        if not isinstance(listed, list) or not isinstance(listed[0], dict):
            raise InvalidResponse(f"Response.{items} is not a list of objects")
        return parse(listed[0])

    return parse_first


# PostgreSQL's DescribeTasks, asked for one TaskId: its TaskSet holds that task, or nothing.
parse_task_set = first_item("TaskSet", _postgres_task)
