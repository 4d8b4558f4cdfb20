"""What a catalogue entry is: the Product dataclass (one product's status API, every fact about it), the ID
kinds products share, and `flow_product` for the products whose flows answer an integer Status 0/1/2.

The entries themselves are in `exporter.catalogue.products`, the one table of supported products.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from exporter.catalogue.apifields import NOT_FOUND, IdKind, Observation
from exporter.catalogue.listapis import ListApi
from exporter.catalogue.parsers import parse_flow
from exporter.catalogue.phases import FINAL_PHASES, STATUS_PHASES, Phase
from exporter.catalogue.shapes import FLOW_ANSWER, AnswerShape

# Every product: RequestLimitExceeded and its sub-codes (.UinLimitExceeded, .IPLimitExceeded, ...).
THROTTLING = ("RequestLimitExceeded",)


@dataclass(frozen=True)
class Product:
    """One product's status API: everything the exporter knows about it, and nothing elsewhere."""

    name: str  # the product key: config, labels, the task API, the credential scope's service
    action: str
    version: str
    id_param: str
    id_kind: IdKind
    watch_key: str  # its list under `watch:` in the config file
    default_endpoint: str
    default_rate_limit: float  # the published quota, requests per second
    # Every documented status, as the parser spells it (lower case), and its phase, in the API's order: one
    # succeeded, the other final ones failed, those accepted but not started pending, the rest running;
    # null (UNKNOWN) and any word not here are unknown.
    phases: tuple[tuple[str, Phase], ...]
    parse: Callable[[Mapping[str, Any]], Observation]
    not_found_codes: tuple[str, ...]  # error codes meaning the ID is unknown (TaskNotFound: NOT_FOUND)
    answer_shape: AnswerShape  # what the answer holds beside Status, for the simulator
    throttling_codes: tuple[str, ...] = THROTTLING  # each with its sub-codes (`Code.Sub`)
    extra_fields: tuple[str, ...] = ()  # answer fields beyond Status, for the README's table
    title: str = ""  # the product's name in documentation
    listing: ListApi | None = None  # the API listing the account's operations, for discovery; None: none
    unlisted_why: str = "none without an instance ID"  # the table's Discovery cell when there is no list API
    # The audit trail's names of the calls that start a request-ID task (CloudAudit's EventName): discovery
    # then finds them there (`exporter.catalogue.auditlists`). Only for request-ID products.
    audit_events: tuple[str, ...] = ()
    # The Tencent Cloud service that answers, where the product key is not it: the credential scope requests
    # are signed for, the endpoint's first label, what the simulator routes by (SQL Server's instance tasks
    # are `sqlserver`'s, DTS's sync jobs `dts`'s); "": the product key.
    service: str = ""
    # The status request's parameters for an ID where it is not `{id_param: ID}` (an instance's task list).
    request: Callable[[str], dict[str, Any]] | None = None
    # A parser that needs the ID to find the task in the answer (an instance's task list); None: `parse`.
    parse_for: Callable[[Mapping[str, Any], str], Observation] | None = None

    def __post_init__(self) -> None:
        words = [status for status, _ in self.phases]
        if len(set(words)) != len(words):
            raise ValueError(f"{self.name}: a status has two phases")
        odd = [f"{s}: {p!r}" for s, p in self.phases if p not in STATUS_PHASES]
        if odd:
            raise ValueError(f"{self.name}: not a status's phase: {', '.join(odd)}")
        if self.audit_events and not self.id_kind.request_id:
            raise ValueError(f"{self.name}: audit events need a task ID that is the call's RequestId")
        succeeded = [s for s, p in self.phases if p is Phase.SUCCEEDED]
        if len(succeeded) != 1:
            raise ValueError(f"{self.name}: expected one succeeded status, got {succeeded}")

    @property
    def api_service(self) -> str:
        """The service requests are signed for (the credential scope's): the product key unless it says."""
        return self.service or self.name

    @cached_property
    def _phase_by_status(self) -> Mapping[str, Phase]:
        return dict(self.phases)

    def phase(self, status: str | None) -> Phase:
        """The phase of a status word; unknown for None and any word the catalogue does not list."""
        return Phase.UNKNOWN if status is None else self._phase_by_status.get(status, Phase.UNKNOWN)

    def is_not_found(self, code: str | None) -> bool:
        """True when an error code is the API's way of saying it knows no operation with this ID."""
        return code is not None and (code == NOT_FOUND or code in self.not_found_codes)

    @property
    def statuses(self) -> tuple[str, ...]:
        """Every documented status, in the API's order."""
        return tuple(status for status, _ in self.phases)

    @cached_property
    def final_statuses(self) -> frozenset[str]:
        """The statuses that never change again: succeeded or failed."""
        return frozenset(s for s, p in self.phases if p in FINAL_PHASES)

    @cached_property
    def failure_statuses(self) -> frozenset[str]:
        """The final statuses that are not the success."""
        return frozenset(s for s, p in self.phases if p is Phase.FAILED)

    @property
    def success_status(self) -> str:
        """The one final status that means it worked."""
        return next(s for s, p in self.phases if p is Phase.SUCCEEDED)

    @property
    def discoverable(self) -> bool:
        """Whether discovery can find its operations: through a list API, or the audit trail."""
        return self.listing is not None or bool(self.audit_events)

    @property
    def listing_shares_quota(self) -> bool:
        """True when the list API is the status action itself, so the two spend one quota between them."""
        return self.listing is not None and (self.listing.action, self.listing.version) == (
            self.action,
            self.version,
        )

    @property
    def regional_endpoint(self) -> str:
        """The product's endpoint in one region, `{region}` to fill in: cdb.ap-shanghai.tencentcloudapi.com.

        Tencent counts quotas per endpoint, so each regional host has a quota of its own; the financial
        regions are reached only through theirs."""
        scheme, host = self.default_endpoint.split("://", 1)
        product, domain = host.split(".", 1)
        return f"{scheme}://{product}.{{region}}.{domain}"

    def payload(self, task_id: str) -> dict[str, Any]:
        if self.request is not None:
            return self.request(task_id)
        return {self.id_param: self.id_kind.request_value(task_id)}

    def observe(self, response: Mapping[str, Any], task_id: str) -> Observation:
        """The Observation of one status answer about `task_id`; raises as the parser does."""
        return self.parse(response) if self.parse_for is None else self.parse_for(response, task_id)

    def is_throttling(self, code: str | None) -> bool:
        """True when an error code means "too many requests": the bucket slows down and it counts as such."""
        return code is not None and any(code == c or code.startswith(c + ".") for c in self.throttling_codes)


FLOW_ID = IdKind(integer=True, expected="a positive integer flow ID")
TASK_ID = IdKind(integer=True, expected="a positive integer task ID")
ASYNC_REQUEST_ID = IdKind(integer=False, expected="an async request ID string")
# A request-ID task: its ID is the RequestId of the call that started it (CLB, VPC).
REQUEST_ID = IdKind(
    integer=False, expected="the RequestId of the call that started the task", request_id=True
)
FLOW_PHASES = {"success": Phase.SUCCEEDED, "failed": Phase.FAILED, "running": Phase.RUNNING}
FLOW_STATUSES = tuple((word, FLOW_PHASES[word]) for word, _ in FLOW_ANSWER.status_codes)


def flow_product(
    name: str,
    title: str,
    action: str,
    version: str,
    not_found: tuple[str, ...],
    throttling: tuple[str, ...] = (),
    listing: ListApi | None = None,
) -> Product:
    """One of the products whose flows answer an integer Status 0/1/2 (20 requests/s)."""
    return Product(
        name=name,
        action=action,
        version=version,
        id_param="FlowId",
        id_kind=FLOW_ID,
        watch_key=f"{name}_flows",
        default_endpoint=f"https://{name}.tencentcloudapi.com",
        default_rate_limit=20.0,
        phases=FLOW_STATUSES,
        parse=parse_flow,
        not_found_codes=not_found,
        answer_shape=FLOW_ANSWER,
        throttling_codes=(*THROTTLING, *throttling),
        title=title,
        listing=listing,
    )
