"""`discovery.cloudaudit`: where and how fast discovery reads the audit trail (CloudAudit's DescribeEvents),
which lists the calls that started the request-ID products' tasks (CLB, VPC; `Product.audit_events`).

One quota per account and endpoint, shared by every product discovered through it: one sweep per account
reads every such product's events in every discovery region at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.catalogue.products import AUDIT_TRAIL
from exporter.config.values import ValueChecker

_KEYS = {"endpoint", "rate_limit", "region"}


@dataclass(frozen=True)
class AuditConfig:
    endpoint: str = AUDIT_TRAIL.default_endpoint
    # Requests per second per account (Tencent counts the quota per sub-account and endpoint); every replica
    # of a sharded exporter sweeps, each with its share.
    rate_limit: float = AUDIT_TRAIL.default_rate_limit
    region: str = AUDIT_TRAIL.default_region  # the Region common parameter: where the API is asked


def parse_audit(check: ValueChecker, value: object) -> AuditConfig:
    """The section, or its defaults when absent; problems are recorded on `check`."""
    default = AuditConfig()
    if value is None:
        return default
    path = "discovery.cloudaudit"
    raw = check.mapping(value, path, _KEYS)
    rate = check.positive_number(raw.get("rate_limit"), f"{path}.rate_limit", default.rate_limit)
    if rate > AUDIT_TRAIL.default_rate_limit:
        check.error(
            f"{path}.rate_limit",
            f"expected at most {AUDIT_TRAIL.default_rate_limit:g}, the API's quota per account, got {rate:g}",
        )
        rate = default.rate_limit
    region = check.region(raw.get("region"), f"{path}.region") or default.region
    return AuditConfig(
        endpoint=check.endpoint(raw.get("endpoint"), f"{path}.endpoint", default.endpoint),
        rate_limit=rate,
        region=region,
    )
