"""What the exporter knows about each Tencent Cloud API it polls: action, version, quota, statuses.

Parsing a successful `Response` into a status lives here too, beside the status vocabulary it maps onto.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

UNKNOWN = "unknown"  # the API answered, but Status was null
INFO_MAX_LENGTH = 200  # keeps one chatty task from blowing up label sizes
_STATUS_MAX_LENGTH = 64


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
    info: str | None = None


_INT64_MAX = 2**63 - 1  # the SDKs' integer IDs are int64
_STRING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


@dataclass(frozen=True)
class IdKind:
    """How one product spells its task IDs: a positive integer, or a string of letters, digits, _ and -."""

    integer: bool
    expected: str  # for messages: "expected <this>, got ..."

    def canonical(self, value: object) -> str | None:
        """The canonical text of an ID (integers without leading zeros), or None when it is not one."""
        if isinstance(value, bool):
            return None
        if self.integer:
            if isinstance(value, str) and value.isascii() and value.isdigit():
                value = int(value)
            return str(value) if isinstance(value, int) and 0 < value <= _INT64_MAX else None
        return value if isinstance(value, str) and _STRING_ID.fullmatch(value) else None

    def request_value(self, task_id: str) -> int | str:
        return int(task_id) if self.integer else task_id


# Every product: RequestLimitExceeded and its sub-codes (.UinLimitExceeded, .IPLimitExceeded, ...).
_THROTTLING = ("RequestLimitExceeded",)


@dataclass(frozen=True)
class Service:
    """One product's status API: everything the exporter knows about it, and nothing elsewhere."""

    name: str  # the product key: config, labels, the task API, the credential scope's service
    action: str
    version: str
    id_param: str
    id_kind: IdKind
    watch_key: str  # its list under `watch:` in the config file
    default_endpoint: str
    default_rate_limit: float  # the published quota, requests per second
    statuses: tuple[str, ...]
    final_statuses: frozenset[str]
    parse: Callable[[Mapping[str, Any]], Observation]
    throttling_codes: tuple[str, ...] = _THROTTLING  # each with its sub-codes (`Code.Sub`)

    def payload(self, task_id: str) -> dict[str, Any]:
        return {self.id_param: self.id_kind.request_value(task_id)}

    def is_throttling(self, code: str | None) -> bool:
        """True when an error code means "too many requests": the bucket slows down and it counts as such."""
        return code is not None and any(code == c or code.startswith(c + ".") for c in self.throttling_codes)


_FLOW_STATUS = {0: "success", 1: "failed", 2: "running"}


def _parse_flow(response: Mapping[str, Any]) -> Observation:
    if "Status" not in response:
        raise InvalidResponse("Response.Status is missing")
    raw = response["Status"]
    if raw is None:
        return Observation(UNKNOWN)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidResponse(f"Response.Status is not an integer: {raw!r}"[:200])
    return Observation(_FLOW_STATUS.get(raw, f"status_{raw}"[:_STATUS_MAX_LENGTH]))


def _parse_async_request(response: Mapping[str, Any]) -> Observation:
    if "Status" not in response:
        raise InvalidResponse("Response.Status is missing")
    raw, info = response["Status"], response.get("Info")
    if raw is not None and not isinstance(raw, str):
        raise InvalidResponse(f"Response.Status is not a string: {raw!r}"[:200])
    status = api_text(raw.strip().lower(), _STATUS_MAX_LENGTH) if raw else ""
    if info is not None and not isinstance(info, str):
        info = str(info)
    return Observation(status or UNKNOWN, None if info is None else api_text(info, INFO_MAX_LENGTH))


FLOW_ID = IdKind(integer=True, expected="a positive integer flow ID")
ASYNC_REQUEST_ID = IdKind(integer=False, expected="an async request ID string")

MARIADB = Service(
    name="mariadb",
    action="DescribeFlow",
    version="2017-03-12",
    id_param="FlowId",
    id_kind=FLOW_ID,
    watch_key="mariadb_flows",
    default_endpoint="https://mariadb.tencentcloudapi.com",
    default_rate_limit=20.0,
    statuses=("success", "failed", "running"),
    final_statuses=frozenset({"success", "failed"}),
    parse=_parse_flow,
    throttling_codes=(*_THROTTLING, "LimitExceeded.TooFrequentlyCalled"),
)

CDB = Service(
    name="cdb",
    action="DescribeAsyncRequestInfo",
    version="2017-03-20",
    id_param="AsyncRequestId",
    id_kind=ASYNC_REQUEST_ID,
    watch_key="cdb_async_requests",
    default_endpoint="https://cdb.tencentcloudapi.com",
    default_rate_limit=40.0,
    statuses=("initial", "running", "success", "failed", "killed", "removed", "paused", "undefined", UNKNOWN),
    final_statuses=frozenset({"success", "failed", "killed", "removed"}),
    parse=_parse_async_request,
)

SERVICES: tuple[Service, ...] = (MARIADB, CDB)
BY_NAME: Mapping[str, Service] = {s.name: s for s in SERVICES}
