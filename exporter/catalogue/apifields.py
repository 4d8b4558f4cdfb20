"""What the API answers are made of, shared by the status and list catalogues: answer text made safe to
export, Tencent's UTC+8 times, task ID kinds, and the Observation a status answer becomes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

UNKNOWN = "unknown"  # the API answered, but Status was null
INFO_MAX_LENGTH = 200  # keeps one chatty task from blowing up label sizes
STATUS_MAX_LENGTH = 64


_SURROGATE = re.compile("[\ud800-\udfff]")


def api_text(value: str, limit: int) -> str:
    """Text from an API answer made safe to export: valid UTF-8 (a JSON answer can carry lone surrogates,
    which would break encoding the exposition) and at most `limit` characters."""
    text = _SURROGATE.sub("\ufffd", value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InvalidResponse(ValueError):
    """A 200 answer whose body lacks what the API documents (counted as Transport.InvalidResponse)."""


@dataclass(frozen=True)
class Observation:
    status: str
    info: str | None = None  # CDB's Info, Redis's TaskMessage
    start_time: float | None = None  # unix time
    end_time: float | None = None
    task_type: str | None = None
    instance_id: str | None = None
    progress: float | None = None  # 0 to 1


class TaskNotFound(Exception):
    """An answer saying, in the product's own way, that no task has this ID (postgres: an empty TaskSet)."""


_INT64_MAX = 2**63 - 1  # the SDKs' integer IDs are int64
_STRING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# An instance's task (`exporter.catalogue.instancelists`): `<instance ID>:<task number>`. Not `/`: the ID is
# one path segment of the task API.
PAIR_SEPARATOR = ":"
_PAIR_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]{0,63}):(\d{1,19})")


def split_pair(task_id: str) -> tuple[str, int]:
    """The instance ID and task number of an instance task ID; ValueError when it is not one."""
    match = _PAIR_ID.fullmatch(task_id) if task_id.isascii() else None
    number = int(match.group(2)) if match else 0
    if match is None or not 0 < number <= _INT64_MAX:
        raise ValueError(f"not an instance task ID: {task_id!r}"[:200])
    return match.group(1), number


@dataclass(frozen=True)
class IdKind:
    """How one product spells its task IDs: a positive integer, or a string of letters, digits, _ and -."""

    integer: bool
    expected: str  # for messages: "expected <this>, got ..."
    # The ID is the RequestId that the call starting the task answered (CLB, VPC): a UUID, which any call
    # answers, so an ID that never started a task is merely not found.
    request_id: bool = False
    # The ID is an (instance ID, task number) pair, `mssql-njj2mtpl:23517` (instancelists).
    pair: bool = False

    def canonical(self, value: object) -> str | None:
        """The canonical text of an ID (integers without leading zeros), or None when it is not one."""
        if isinstance(value, bool):
            return None
        if self.pair:
            if not isinstance(value, str):
                return None
            try:
                instance, number = split_pair(value)
            except ValueError:
                return None
            return f"{instance}{PAIR_SEPARATOR}{number}"
        if self.integer:
            if isinstance(value, str) and value.isascii() and value.isdigit():
                value = int(value)
            return str(value) if isinstance(value, int) and 0 < value <= _INT64_MAX else None
        return value if isinstance(value, str) and _STRING_ID.fullmatch(value) else None

    def request_value(self, task_id: str) -> int | str:
        return int(task_id) if self.integer else task_id


# When a product says "no such task" with an empty answer instead of an error code.
NOT_FOUND = "Exporter.TaskNotFound"
# Tencent's `YYYY-MM-DD hh:mm:ss` times carry no zone: they are China Standard Time.
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
_NO_TIME = {"", "0000-00-00 00:00:00"}


def tencent_time(value: object) -> float | None:
    """Unix time of a `YYYY-MM-DD hh:mm:ss` string in UTC+8; None when absent or not such a time."""
    if not isinstance(value, str) or value.strip() in _NO_TIME:
        return None
    try:
        moment = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=CHINA_STANDARD_TIME).timestamp()


def field(answer: Mapping[str, Any], name: str) -> object:
    """A field of an answer; a dotted name reaches into objects (`Detail.Progress`); None when absent or
    when what should hold it is not an object."""
    value: object = answer
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def text_field(value: object, limit: int) -> str | None:
    if value is None or value == "":
        return None
    return api_text(value if isinstance(value, str) else str(value), limit)


def percent_ratio(value: object) -> float | None:
    """A 0-100 progress figure (as every product gives it) as a 0-1 ratio; None when it is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 100:
        return value / 100
    return None
