"""The audit trail as a list: CloudAudit's DescribeEvents lists every call made in the account, each with its
RequestId, so the products whose task ID is the RequestId of the call that started the task (CLB, VPC) are
discovered from it, account-wide.

Facts from the official SDK (tencentcloud-sdk-python-cloudaudit 3.1.39, cloudaudit/v20190319 models.py and
errorcodes.py) and the API documentation (tencentcloud.com/document/product/1021/42703: at most 20 requests a
second; served in ap-guangzhou, ap-hongkong, ap-seoul, ap-singapore, ap-tokyo and eu-frankfurt):

- DescribeEventsRequest: StartTime and EndTime are Unix seconds; StartTime at most 90 days back, and the span
  less than 30 days (7 days, says the error code LimitExceeded.OverTime: AUDIT_SPAN_MAX); MaxResults at
  most 50 (InvalidParameterValue.MaxResult beyond); NextToken (an integer) asks for the page after the one
  that answered it. LookupAttributes: conditions of different keys are ANDed, several EventName values
  ORed ("检索的各个条件间是与的关系,EventName传多个值内部是或的关系"), so one request covers every audited
  product's event names.
- DescribeEventsResponse: ListOver (true: no page follows), NextToken, Events; TotalCount is deprecated
  ("use ListOver with NextToken").
- Event: the call's ID is `RequestID` (capital D, unlike every answer's `RequestId`), its name `EventName`,
  its time `EventTime` (a string: the model gives no format, so Unix seconds and `YYYY-MM-DD hh:mm:ss` in
  UTC+8 are both read), `ResourceRegion`/`EventRegion`, `EventSource`, `ErrorCode` (the CAM authentication
  error code: non-zero, the call was refused and started nothing) and `CloudAuditEvent` (the event's JSON
  detail, whose `apiErrorCode` is non-zero when the API answered an error: no task either).

The audit trail says nothing of a task's status: a listed operation has none, and status polling by ID
decides. It also lags the calls it records by a delay this exporter does not measure (docs/discovery.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.catalogue.apifields import (
    CHINA_STANDARD_TIME,
    IdKind,
    InvalidResponse,
)
from exporter.catalogue.listapis import Listed

AUDIT_PAGE_SIZE = 50  # MaxResults' largest value
_DAY = 86400.0
# The request model says EndTime - StartTime must be under 30 days, but errorcodes.py's
# LimitExceeded.OverTime says "检索支持的有效时间范围是7天" (a search spans 7 days at most): the narrower
# one holds, so no sweep fails for a discovery.lookback the API refuses; a minute less leaves room for
# rounding to whole seconds.
AUDIT_SPAN_MAX = 7 * _DAY - 60.0
# The detail JSON (CloudAuditEvent) is read for its error code only up to this size; a larger one is not read
# (the event is kept, and the status API says whether its RequestId started anything).
DETAIL_MAX_BYTES = 64 * 1024
_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+){1,4}")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_API_HOST = ".tencentcloudapi.com"


@dataclass(frozen=True)
class AuditOwner:
    """The product an audit event belongs to: its name (also its credential scope's service and host
    label) and its ID kind (the RequestId as its status API takes it)."""

    product: str
    id_kind: IdKind


@dataclass(frozen=True)
class AuditItem:
    """One audited call that started an operation: whose it is, the region to ask, and what it says."""

    product: str
    region: str
    listed: Listed


@dataclass(frozen=True)
class AuditPage:
    items: tuple[AuditItem, ...]
    list_over: bool  # no page follows
    next_token: int | None  # what asks for the next page (None with list_over)
    size: int  # events read from this page (at most AUDIT_PAGE_SIZE), those naming no operation included


@dataclass(frozen=True)
class AuditTrail:
    """CloudAudit's DescribeEvents: its own service and host, quota and paging."""

    service: str = "cloudaudit"  # the host's first label and the credential scope's service
    action: str = "DescribeEvents"
    version: str = "2019-03-19"
    default_rate_limit: float = 20.0
    # The Region common parameter: the API is served from a few regions only (ap-guangzhou among them) and
    # lists the account's calls in every region.
    default_region: str = "ap-guangzhou"
    throttling_codes: tuple[str, ...] = ("RequestLimitExceeded",)

    @property
    def default_endpoint(self) -> str:
        return f"https://{self.service}.tencentcloudapi.com"

    def is_throttling(self, code: str | None) -> bool:
        return code is not None and any(code == c or code.startswith(c + ".") for c in self.throttling_codes)

    @staticmethod
    def window(now: float, lookback: float) -> tuple[int, int]:
        """(StartTime, EndTime) in whole Unix seconds: the lookback up to now, cut to the API's span."""
        end = int(now)
        return end - int(min(lookback, AUDIT_SPAN_MAX)), end

    def payload(
        self, begin: int, end: int, event_names: tuple[str, ...], token: int | None
    ) -> dict[str, Any]:
        """One page's request: the events named `event_names` (ORed) from `begin` to `end`."""
        params: dict[str, Any] = {
            "StartTime": begin,
            "EndTime": end,
            "MaxResults": AUDIT_PAGE_SIZE,
            "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": n} for n in event_names],
        }
        if token is not None:
            params["NextToken"] = token
        return params

    def page(self, response: Mapping[str, Any], owners: Mapping[str, AuditOwner]) -> AuditPage:
        """Reads one page; raises InvalidResponse when it lacks what the API documents. `owners`: each event
        name that starts an operation, and whose operation it is."""
        list_over = response.get("ListOver")
        if not isinstance(list_over, bool):
            raise InvalidResponse(f"Response.ListOver is not a boolean: {list_over!r}"[:200])
        token = response.get("NextToken")
        if token is not None and (isinstance(token, bool) or not isinstance(token, int) or token < 0):
            raise InvalidResponse(f"Response.NextToken is not a token: {token!r}"[:200])
        if not list_over and token is None:
            raise InvalidResponse("Response.NextToken is missing while ListOver is false")
        raw = response.get("Events")
        if raw is None:
            raw = []  # null: no events (the documentation allows it)
        if not isinstance(raw, list):
            raise InvalidResponse("Response.Events is not a list")
        # Every request asks for AUDIT_PAGE_SIZE events: a page holding more is cut there, so an answer that
        # ignores MaxResults cannot multiply what one sweep (a bounded number of pages) brings in.
        raw = raw[:AUDIT_PAGE_SIZE]
        items = []
        for entry in raw:
            if not isinstance(entry, dict):
                raise InvalidResponse(f"Response.Events holds a {type(entry).__name__}")
            item = _item(entry, owners)
            if item is not None:
                items.append(item)
        return AuditPage(tuple(items), list_over, None if list_over else token, len(raw))


AUDIT_TRAIL = AuditTrail()


def _item(entry: Mapping[str, Any], owners: Mapping[str, AuditOwner]) -> AuditItem | None:
    """The operation an event started, or None: another call, a refused or failed one, no usable ID or
    region."""
    name = entry.get("EventName")
    owner = owners.get(name) if isinstance(name, str) else None
    if owner is None or not isinstance(name, str):
        return None
    if _other_service(entry.get("EventSource"), owner.product) or _failed(entry):
        return None
    task_id = owner.id_kind.canonical(entry.get("RequestID"))
    region = _region(entry.get("ResourceRegion")) or _region(entry.get("EventRegion"))
    if task_id is None or region is None:
        return None
    return AuditItem(
        owner.product,
        region,
        Listed(
            task_id,
            start_time=event_time(entry.get("EventTime")),
            task_type=name,
            instance_id=_resource(entry),
        ),
    )


def _other_service(source: object, product: str) -> bool:
    """True when EventSource names another product's API host (`gaap.tencentcloudapi.com`): products share
    action names (GAAP has CreateRule too). Any other form of source is not taken to say whose call it was."""
    if not isinstance(source, str) or _API_HOST not in source:
        return False
    return source.strip().split(".", 1)[0].lower() != product


def _failed(entry: Mapping[str, Any]) -> bool:
    """True when the event says the call was refused (ErrorCode, CAM's) or failed (the detail's
    apiErrorCode): it started nothing."""
    if _nonzero(entry.get("ErrorCode")):
        return True
    detail = entry.get("CloudAuditEvent")
    if not isinstance(detail, str) or not detail or len(detail) > DETAIL_MAX_BYTES:
        return False
    try:
        parsed = json.loads(detail)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and (
        _nonzero(parsed.get("apiErrorCode")) or _nonzero(parsed.get("errorCode"))
    )


def _nonzero(code: object) -> bool:
    if isinstance(code, bool):
        return False
    if isinstance(code, int):
        return code != 0
    return isinstance(code, str) and code.strip() not in ("", "0")


def _region(value: object) -> str | None:
    return value if isinstance(value, str) and _REGION.fullmatch(value) else None


def _resource(entry: Mapping[str, Any]) -> str | None:
    """The resource the call names (Resources.ResourceName), when it is one ID."""
    resources = entry.get("Resources")
    name = resources.get("ResourceName") if isinstance(resources, dict) else None
    return name if isinstance(name, str) and _RESOURCE_ID.fullmatch(name) else None


def event_time(value: object) -> float | None:
    """An EventTime: Unix seconds (a number, or digits in a string) or `YYYY-MM-DD hh:mm:ss` in UTC+8."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 < value < 10**10:
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isascii() and text.isdigit() and 0 < len(text) <= 10:
        return float(int(text))
    if _TIME.fullmatch(text):
        try:
            return datetime.fromisoformat(text).replace(tzinfo=CHINA_STANDARD_TIME).timestamp()
        except ValueError:
            return None
    return None
