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


@dataclass(frozen=True)
class Service:
    name: str
    action: str
    version: str
    id_param: str
    default_endpoint: str
    default_rate_limit: float
    statuses: tuple[str, ...]
    final_statuses: frozenset[str]
    parse: Callable[[Mapping[str, Any]], Observation]

    def payload(self, task_id: str) -> dict[str, Any]:
        return {self.id_param: int(task_id) if self.name == "mariadb" else task_id}


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


MARIADB = Service(
    name="mariadb",
    action="DescribeFlow",
    version="2017-03-12",
    id_param="FlowId",
    default_endpoint="https://mariadb.tencentcloudapi.com",
    default_rate_limit=20.0,
    statuses=("success", "failed", "running"),
    final_statuses=frozenset({"success", "failed"}),
    parse=_parse_flow,
)

CDB = Service(
    name="cdb",
    action="DescribeAsyncRequestInfo",
    version="2017-03-20",
    id_param="AsyncRequestId",
    default_endpoint="https://cdb.tencentcloudapi.com",
    default_rate_limit=40.0,
    statuses=("initial", "running", "success", "failed", "killed", "removed", "paused", "undefined", UNKNOWN),
    final_statuses=frozenset({"success", "failed", "killed", "removed"}),
    parse=_parse_async_request,
)

SERVICES: tuple[Service, ...] = (MARIADB, CDB)
BY_NAME: Mapping[str, Service] = {s.name: s for s in SERVICES}
