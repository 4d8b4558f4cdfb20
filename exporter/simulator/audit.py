"""CloudAudit's DescribeEvents, as the simulator answers it: the audit trail of the calls that started the
simulator's tasks of the products whose task ID is that call's RequestId (CLB and VPC,
`Product.audit_events`).

A request signed for the `cloudaudit` service (its credential scope) comes here instead of to a product: its
own action and version, its own quota (20/s per account unless told), the same Signature v3 checks. Each such
task that has begun is one event: `RequestID` its task ID, `EventName` its `task_type` when that is one of
its product's audit events (else one of them, by the order the tasks were given), `EventTime` its start (Unix
seconds, as a string). Every fourth task is preceded by a failed attempt (an event whose `CloudAuditEvent`
holds a non-zero apiErrorCode) and every fourth, counting from the third, by one CAM refused (`ErrorCode`
non-zero): neither started anything, so a sweep must skip both. Events come newest first, `MaxResults` a page
(at most 50), and `NextToken` is the offset of the next page. Request fields follow the official SDK's models
(tencentcloud-sdk-python-cloudaudit, cloudaudit/v20190319); refusals use its errorcodes.py.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from exporter.catalogue.auditlists import AUDIT_PAGE_SIZE, AUDIT_TRAIL
from exporter.catalogue.products import Product
from exporter.credentials.signing import Credentials, ParsedAuthorization
from exporter.simulator import gateway
from exporter.simulator.errors import ApiError
from exporter.simulator.lateness import Lateness
from exporter.simulator.stats import AccountStats, ActionStats, held, slide

STATS_KEY: Final = f"{AUDIT_TRAIL.service}:{AUDIT_TRAIL.action}"
_DAY: Final = 86400
_MAX_SPAN: Final = 7 * _DAY  # LimitExceeded.OverTime: "a search spans 7 days at most"
_MAX_AGE: Final = 90 * _DAY  # StartTime: "at most 90 days before now"
_DEFAULT_PAGE: Final = 10  # the documentation gives no default for MaxResults
_KEYS: Final = frozenset(
    {"StartTime", "EndTime", "NextToken", "MaxResults", "LookupAttributes", "IsReturnLocation"}
)
# LookupAttribute.AttributeKey's documented values; only EventName and RequestId are applied here.
_ATTRIBUTE_KEYS: Final = frozenset(
    {
        "RequestId",
        "EventName",
        "ActionType",
        "PrincipalId",
        "ResourceType",
        "ResourceId",
        "ResourceName",
        "AccessKeyId",
        "SensitiveAction",
        "ApiErrorCode",
        "CamErrorCode",
        "SourceIPAddress",
        "Tags",
    }
)
_NAMESPACE: Final = uuid.UUID("9d1f7a52-54a1-4a38-9a47-5e1b3c0c2a11")


@dataclass(frozen=True)
class Audited:
    """One task the audit trail has the starting call of."""

    product: Product
    task_id: str
    region: str
    started_at: float  # wall-clock time of the call
    serial: int  # the order the simulator was given it
    task_type: str | None = None
    instance_id: str | None = None


def is_audit_request(parsed: ParsedAuthorization | None) -> bool:
    """Whether a request is signed for CloudAudit (the real API tells it by host name)."""
    return parsed is not None and parsed.service == AUDIT_TRAIL.service


def authenticate(
    headers: Mapping[str, str],
    query: str,
    body: bytes,
    authorization: ParsedAuthorization | None,
    credentials: Mapping[str, Credentials],
    now: float,
    max_clock_skew: float,
) -> Credentials:
    parsed = gateway.common_parameters(headers, authorization)
    action, version = headers.get("X-TC-Action", "").strip(), headers.get("X-TC-Version", "").strip()
    if action != AUDIT_TRAIL.action:
        raise ApiError("InvalidAction", f"The requested action `{action}` does not exist for `cloudaudit`.")
    if version != AUDIT_TRAIL.version:
        raise ApiError(
            "NoSuchVersion", f"The requested version `{version}` of service `cloudaudit` does not exist."
        )
    return gateway.verify(headers, query, body, parsed, AUDIT_TRAIL.service, credentials, now, max_clock_skew)


class AuditService:
    """The quota (a sliding second per secret id) and the answers of DescribeEvents."""

    def __init__(self, quota: float | None = None) -> None:
        self.quota = float(AUDIT_TRAIL.default_rate_limit if quota is None else quota)
        if self.quota <= 0:
            raise ValueError(f"the audit quota must be > 0, got {quota}")
        self._windows: dict[str, deque[float]] = {}

    def admit(
        self,
        secret_id: str,
        now: float,
        stats: ActionStats,
        account: AccountStats,
        lateness: Lateness | None = None,
    ) -> None:
        window = self._windows.setdefault(secret_id, deque())
        slide(window, now)
        slack = gateway.judge(window, now, self.quota, lateness)
        if held(window, now, slack) >= self.quota:
            stats.throttled += 1
            account.throttled += 1
            raise ApiError(
                "RequestLimitExceeded",
                f"Your current request rate exceeds the limit of {self.quota:g} requests per second "
                f"for {AUDIT_TRAIL.action}. Please reduce the frequency of calls.",
            )
        window.append(now)
        stats.accept(now, slack)
        account.accept(now, slack)

    def answer(self, params: Mapping[str, Any], tasks: Sequence[Audited], now: float) -> dict[str, Any]:
        """One page of events of `tasks` as the request asks; ApiError as the API refuses it."""
        for name in params:
            if name not in _KEYS:
                raise ApiError("UnknownParameter", f"The parameter `{name}` is not recognized.")
        begin, end = _required(params, "StartTime"), _required(params, "EndTime")
        if begin > end:
            raise ApiError("InvalidParameterValue.Time", "StartTime is later than EndTime.")
        if end - begin >= _MAX_SPAN:
            raise ApiError("LimitExceeded.OverTime", "A search spans 7 days at most.")
        if begin < now - _MAX_AGE:
            raise ApiError("InvalidParameterValue.Time", "StartTime is more than 90 days ago.")
        size = _integer(params, "MaxResults") or _DEFAULT_PAGE
        if not 1 <= size <= AUDIT_PAGE_SIZE:
            raise ApiError("InvalidParameterValue.MaxResult", f"MaxResults is at most {AUDIT_PAGE_SIZE}.")
        offset = _integer(params, "NextToken") or 0
        if offset < 0:
            raise ApiError("InvalidParameter", "NextToken is not a token this API gave.")
        wanted = _lookup(params.get("LookupAttributes"))
        events = [e for task in tasks if begin <= task.started_at <= end for e in _events(task)]
        events = [e for e in events if all(e[k] in values for k, values in wanted.items())]
        events.sort(key=lambda e: (-int(e["EventTime"]), e["EventId"]))
        page = events[offset : offset + size]
        return {
            "ListOver": offset + size >= len(events),
            "NextToken": offset + len(page),
            "Events": page,
            "TotalCount": len(events),  # deprecated, still sent (the SDK's model has it)
        }


def _required(params: Mapping[str, Any], name: str) -> int:
    value = _integer(params, name)
    if value is None:
        raise ApiError("MissingParameter", f"The request is missing a required parameter `{name}`.")
    return value


def _integer(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError("InvalidParameter", f"The value type of parameter `{name}` must be Integer.")
    return value


def _lookup(value: object) -> dict[str, set[str]]:
    """The conditions applied: key -> the values ORed; conditions of different keys are ANDed."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise ApiError("InvalidParameter", "The value type of parameter `LookupAttributes` must be Array.")
    wanted: dict[str, set[str]] = {}
    for entry in value:
        key = entry.get("AttributeKey") if isinstance(entry, dict) else None
        attribute = entry.get("AttributeValue") if isinstance(entry, dict) else None
        if key not in _ATTRIBUTE_KEYS or not isinstance(attribute, str):
            raise ApiError(
                "InvalidParameterValue.attributeKey", f"AttributeKey {key!r} is not one the API takes."
            )
        if key == "EventName":
            wanted.setdefault("EventName", set()).add(attribute)
        elif key == "RequestId":
            wanted.setdefault("RequestID", set()).add(attribute)
    return wanted


def _events(task: Audited) -> list[dict[str, Any]]:
    """The task's starting call, after a failed attempt for some tasks (see the module's docstring)."""
    product = task.product
    names = product.audit_events
    name = task.task_type if task.task_type in names else names[task.serial % len(names)]
    assert name is not None
    events = [_event(task, name, task.task_id, 0, 0)]
    if task.serial % 4 == 0:
        events.append(_event(task, name, str(uuid.uuid5(_NAMESPACE, f"failed {task.task_id}")), 0, 4001))
    elif task.serial % 4 == 3:
        events.append(_event(task, name, str(uuid.uuid5(_NAMESPACE, f"refused {task.task_id}")), 403, 0))
    return events


def _event(task: Audited, name: str, request_id: str, cam_error: int, api_error: int) -> dict[str, Any]:
    product = task.product
    moment = int(task.started_at) - (1 if request_id != task.task_id else 0)  # the failed try came first
    detail = {
        "eventName": name,
        "requestID": request_id,
        "eventRegion": task.region,
        "errorCode": cam_error,
        "apiErrorCode": api_error,
        "apiErrorMessage": "simulated failure" if api_error else "",
        "actionType": "Write",
        "eventTime": moment,
    }
    return {
        "EventId": str(uuid.uuid5(_NAMESPACE, f"event {request_id}")),
        "Username": "simulator",
        "EventTime": str(moment),
        "CloudAuditEvent": json.dumps(detail),
        "ResourceTypeCn": product.title,
        "ErrorCode": cam_error,
        "EventName": name,
        "SecretId": "AKID****",
        "EventSource": f"{product.name}.tencentcloudapi.com",
        "RequestID": request_id,
        "ResourceRegion": task.region,
        "AccountID": 100000000001,
        "SourceIPAddress": "127.0.0.1",
        "EventNameCn": "",
        "Resources": {"ResourceType": product.name, "ResourceName": task.instance_id or ""},
        "EventRegion": task.region,
        "Location": "",
    }
