"""The `discovery:` section: where and how often to sweep the list APIs for operations nobody named."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.catalogue.products import BY_NAME, PRODUCTS
from exporter.config.auditconfig import AuditConfig, parse_audit
from exporter.config.validation import describe, shown
from exporter.config.values import LABEL_NAME, RESERVED_LABELS, ValueChecker

_KEYS = {"regions", "accounts", "products", "interval", "lookback", "retention", "tag_labels", "cloudaudit"}


@dataclass(frozen=True)
class DiscoveryConfig:
    regions: tuple[str, ...]
    accounts: tuple[str, ...] = ("default",)  # whose operations are listed: every account by default
    # Every product with a list API, or whose calls the audit trail lists.
    products: tuple[str, ...] = tuple(s.name for s in PRODUCTS if s.discoverable)
    interval: float = 60.0  # each (product, region) is swept this often
    lookback: float = 86400.0  # operations that started within this window are listed
    retention: float = 86400.0  # a discovered task is forgotten this long after it reached a final state
    tag_labels: tuple[str, ...] = ()  # resource tag keys copied onto tencentcloud_task_info as labels
    cloudaudit: AuditConfig = field(
        default_factory=AuditConfig
    )  # the audit trail, for the products discovered through it


def parse_discovery(check: ValueChecker, value: object, accounts: tuple[str, ...]) -> DiscoveryConfig | None:
    """The section, or None when it is absent (discovery off); problems are recorded on `check`.
    `accounts`: the config's account names."""
    if value is None:
        return None
    raw = check.mapping(value, "discovery", _KEYS)
    if not raw and not isinstance(value, dict):
        return None  # mapping() has recorded what is wrong with it
    default = DiscoveryConfig(regions=())
    interval = check.duration(raw.get("interval"), "discovery.interval", default.interval, 1.0, False)
    lookback = check.duration(raw.get("lookback"), "discovery.lookback", default.lookback, 60.0, False)
    return DiscoveryConfig(
        regions=_regions(check, raw.get("regions")),
        accounts=_accounts(check, raw.get("accounts"), accounts),
        products=_products(check, raw.get("products"), default.products),
        interval=interval,
        lookback=lookback,
        retention=check.duration(raw.get("retention"), "discovery.retention", default.retention, 0.0, True),
        tag_labels=_tag_labels(check, raw.get("tag_labels")),
        cloudaudit=parse_audit(check, raw.get("cloudaudit")),
    )


def _strings(
    check: ValueChecker, value: object, path: str, what: str, valid: Callable[[str, str], bool] | None = None
) -> list[str]:
    """Distinct strings; `valid(item, path)` records what is wrong with an item and says if it is valid."""
    if not isinstance(value, list):
        check.error(path, f"expected a list of {what}, got {describe(value)}")
        return []
    items: list[str] = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, str):
            check.error(where, f"expected {what[:-1]}, got {describe(item)}")
        elif item in items:
            check.error(where, f"{shown(item)} is listed twice")
        elif valid is None or valid(item, where):
            items.append(item)
    return items


def _regions(check: ValueChecker, value: object) -> tuple[str, ...]:
    if value is None:
        check.error("discovery.regions", "required: the regions to look in, like [ap-guangzhou]")
        return ()
    regions = _strings(
        check, value, "discovery.regions", "region names", lambda r, where: check.region(r, where) is not None
    )
    if not regions and value == []:
        check.error("discovery.regions", "expected at least one region")
    return tuple(regions)


def _accounts(check: ValueChecker, value: object, known: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return known

    def valid(name: str, where: str) -> bool:
        if name not in known and not check.misspelt("", "accounts"):  # else reported at the typo
            check.error(where, f"expected one of the accounts {', '.join(known)}, got {shown(name)}")
        return name in known

    names = _strings(check, value, "discovery.accounts", "account names", valid)
    if not names and value == []:
        check.error("discovery.accounts", "expected at least one account")
    return tuple(names)


def _products(check: ValueChecker, value: object, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    products = []
    for index, name in enumerate(_strings(check, value, "discovery.products", "product keys")):
        product = BY_NAME.get(name)
        if product is not None and product.discoverable:
            products.append(name)
        elif product is not None:
            check.error(
                f"discovery.products[{index}]",
                f"{name} has no API listing an account's operations without an instance ID; "
                f"expected one of {', '.join(default)}",
            )
        else:
            check.error(
                f"discovery.products[{index}]", f"expected one of {', '.join(default)}, got {shown(name)}"
            )
    return tuple(products)


def _tag_labels(check: ValueChecker, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    names = []
    for index, name in enumerate(_strings(check, value, "discovery.tag_labels", "tag keys")):
        where = f"discovery.tag_labels[{index}]"
        if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            check.error(
                where,
                "expected a tag key that is also a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, "
                f"not starting __), got {shown(name)}",
            )
        elif name in RESERVED_LABELS:
            check.error(where, f"{name} is a label the exporter or Prometheus sets itself")
        else:
            names.append(name)
    return tuple(names)
