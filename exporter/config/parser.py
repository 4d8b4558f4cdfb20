"""The YAML configuration, validated into typed, immutable objects.

Every problem found is collected (not just the first) and reported as `file: key.path: what was expected`, so
an operator fixes a broken file in one round trip. Unknown keys are errors: a typo must not silently fall back
to a default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter.catalogue.products import BY_NAME, PRODUCTS, Product
from exporter.config.accounts import (
    ACCOUNT_NAME,
    DEFAULT_ACCOUNT,
    AccountConfig,
    CredentialsConfig,
    parse_accounts,
    parse_credentials,
)
from exporter.config.discovery import DiscoveryConfig, parse_discovery
from exporter.config.validation import ProblemsError, describe, read_yaml, shown
from exporter.config.values import (
    LIMIT_MAXIMA,
    RESERVED_LABELS,
    LimitsConfig,
    ValueChecker,
    expand_env,
    parse_duration,
)

# Re-exported: callers read every config type from this module.
__all__ = [
    "API",
    "CONFIG",
    "DEFAULT_ACCOUNT",
    "DISCOVERED",
    "RESERVED_LABELS",
    "AccountConfig",
    "ApiConfig",
    "Config",
    "ConfigError",
    "CredentialsConfig",
    "DiscoveryConfig",
    "Key",
    "LimitsConfig",
    "MetricsConfig",
    "PollingConfig",
    "WatchedTask",
    "expand_env",
    "key_fields",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_task",
    "redacted",
]

_WATCH_KEYS = {s.watch_key: s.name for s in PRODUCTS}


class ConfigError(ProblemsError):
    """Raised with every problem found in a configuration; `str()` gives one problem per line."""


def is_financial(region: str) -> bool:
    """The financial zones (ap-shanghai-fsi, ap-shenzhen-fsi...) answer only on their own regional host."""
    return region.endswith("-fsi")


@dataclass(frozen=True)
class ApiConfig:
    endpoint: str  # may hold `{region}`: every region its own host
    rate_limit: float  # per (account, endpoint): Tencent counts each endpoint's quota on its own
    list_rate_limit: float | None = None  # the product's list API (discovery); None: it has none
    endpoints: tuple[tuple[str, str], ...] = ()  # (region, endpoint): overrides for single regions
    regional_endpoint: str = ""  # the product's `{region}` host, where financial regions go by default

    @classmethod
    def default(cls, product: Product) -> ApiConfig:
        listing = product.listing
        list_rate = None if listing is None else listing.default_rate_limit
        return cls(
            product.default_endpoint,
            product.default_rate_limit,
            list_rate,
            regional_endpoint=product.regional_endpoint,
        )

    def endpoint_for(self, region: str) -> str:
        """Where a request about `region` goes: an override, else the endpoint (its `{region}` filled in),
        except that a financial region goes to its own host unless an override or `{region}` says where."""
        for name, endpoint in self.endpoints:
            if name == region:
                return endpoint
        template = self.endpoint
        if "{region}" not in template and is_financial(region) and self.regional_endpoint:
            template = self.regional_endpoint
        return template.replace("{region}", region)


@dataclass(frozen=True)
class PollingConfig:
    interval: float = 30.0
    finished_interval: float = 600.0
    timeout: float = 10.0
    max_backoff: float = 600.0


# metrics.status_series: every status of the product's state set (0 or 1), or only the current one (1).
STATUS_SERIES = ("all", "current")


@dataclass(frozen=True)
class MetricsConfig:
    """What /metrics shows of each task. `current` writes one tencentcloud_task_status series a task
    instead of the whole state set (up to 9): most of the exposition's size and of a task's memory."""

    status_series: str = "all"

    @property
    def current_status_only(self) -> bool:
        return self.status_series == "current"


# (product, region, task ID): how every layer keys a task.
Key = tuple[str, str, str]


# Where a task was first known: the config file, the task API, or discovery (the `source` label).
CONFIG, API, DISCOVERED = "config", "api", "discovered"


@dataclass(frozen=True)
class WatchedTask:
    product: str
    task_id: str
    region: str
    labels: tuple[tuple[str, str], ...] = ()
    # Whose operation it is: its keys sign the requests, its buckets pace them (not part of the key: an ID
    # names one operation in one region, whichever account asks).
    account: str = DEFAULT_ACCOUNT
    # Not part of a task's identity or settings: the same task declared twice is the same task.
    origin: str = field(default=CONFIG, compare=False)

    @property
    def key(self) -> Key:
        return (self.product, self.region, self.task_id)

    def as_json(self) -> dict[str, object]:
        """The task as the task API and /-/config show it (the shape the task API accepts)."""
        return {
            "product": self.product,
            "id": self.task_id,
            "region": self.region,
            "account": self.account,
            "labels": dict(self.labels),
        }


def key_fields(key: Key) -> dict[str, object]:
    """A task's identity as structured log fields, named like its labels on /metrics."""
    return dict(zip(("product", "cloud_region", "task_id"), key, strict=True))


@dataclass(frozen=True)
class Config:
    source: str
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)  # the top-level section
    region: str | None = None
    apis: Mapping[str, ApiConfig] = field(
        default_factory=lambda: {s.name: ApiConfig.default(s) for s in PRODUCTS}
    )
    polling: PollingConfig = field(default_factory=PollingConfig)
    tasks: tuple[WatchedTask, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    discovery: DiscoveryConfig | None = None
    # Without `accounts:`, the one account "default" with `credentials`.
    accounts: tuple[AccountConfig, ...] = (AccountConfig(DEFAULT_ACCOUNT),)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def account_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.accounts)

    def where(self, account: AccountConfig) -> str:
        """An account's credentials section as messages name it: `config.yaml: accounts[1].credentials`."""
        return f"{self.source}: {account.where}"


SECRET_FIELDS = frozenset({"secret_key", "token"})


def redacted(config: Config) -> dict[str, Any]:
    """The effective config as plain data, every secret replaced by `<secret>` (for /-/config)."""
    data = dataclasses.asdict(config)
    # Each account's credentials once: the top-level section is the default account's, shown there.
    del data["credentials"]
    data["accounts"] = [
        {"name": a.name, "credentials": _redacted_credentials(a.credentials)} for a in config.accounts
    ]
    data["apis"] = {name: _api_json(api) for name, api in config.apis.items()}
    data["tasks"] = [t.as_json() for t in config.tasks]
    return data


def _redacted_credentials(credentials: CredentialsConfig) -> dict[str, Any]:
    return {
        k: ("<secret>" if k in SECRET_FIELDS and v else v) for k, v in dataclasses.asdict(credentials).items()
    }


def _api_json(api: ApiConfig) -> dict[str, Any]:
    data = dataclasses.asdict(api)
    data["endpoints"] = dict(api.endpoints)
    return data


def _entry(
    check: ValueChecker,
    product: str,
    entry: object,
    path: str,
    default_region: str | None,
    accounts: Sequence[str] | None,
) -> WatchedTask | None:
    """One watch entry (`ID` or `{id, region, account, labels}`), or None after recording what is wrong.
    `accounts`: the config's account names, the first the default; None: any well-formed name."""
    raw_id, region = entry, default_region
    account = accounts[0] if accounts else DEFAULT_ACCOUNT
    labels: tuple[tuple[str, str], ...] = ()
    path_id = path
    if isinstance(entry, dict):
        item = check.mapping(entry, path, {"id", "region", "account", "labels"})
        raw_id, path_id = item.get("id"), f"{path}.id" if path else "id"
        if item.get("region") is not None:
            region = check.region(item["region"], f"{path}.region" if path else "region")
        labels = check.labels(item.get("labels"), f"{path}.labels" if path else "labels")
        raw_account = item.get("account")
        if raw_account is not None:
            if accounts is None and isinstance(raw_account, str) and ACCOUNT_NAME.fullmatch(raw_account):
                account = raw_account
            elif accounts is not None and raw_account in accounts:
                account = str(raw_account)
            else:
                if check.misspelt("", "accounts"):
                    return None  # follows from the misspelt `accounts:`, reported there
                expected = f"one of the accounts {', '.join(accounts)}" if accounts else "an account name"
                check.error(
                    f"{path}.account" if path else "account",
                    f"expected {expected}, got {describe(raw_account)}",
                )
                return None
    id_kind = BY_NAME[product].id_kind
    task_id = id_kind.canonical(raw_id)
    if task_id is None:
        check.error(path_id, f"expected {id_kind.expected}, got {describe(raw_id)}")
        return None
    if region is None:
        # Not when a misspelt `region` (at the top level or on this task) is why: that is reported already.
        if not (check.misspelt("", "region") or check.misspelt(path, "region")):
            check.error(path, "no region: set `region` at the top level or on this task")
        return None
    return WatchedTask(product, task_id, region, labels, account)


def _watch(
    check: ValueChecker, value: object, default_region: str | None, accounts: Sequence[str]
) -> tuple[WatchedTask, ...]:
    watch = check.mapping(value, "watch", set(_WATCH_KEYS))
    tasks: list[WatchedTask] = []
    seen: dict[tuple[str, str, str], str] = {}
    for key, product in _WATCH_KEYS.items():
        entries = watch.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            check.error(f"watch.{key}", f"expected a list of task IDs, got {describe(entries)}")
            continue
        for index, entry in enumerate(entries):
            path = f"watch.{key}[{index}]"
            task = _entry(check, product, entry, path, default_region, accounts)
            if task is None:
                continue
            if task.key in seen:
                check.error(
                    path,
                    f"duplicate task {product} {task.task_id} in {task.region} (first at {seen[task.key]})",
                )
                continue
            seen[task.key] = path
            tasks.append(task)
    return tuple(tasks)


def parse_task(
    product: str,
    entry: Mapping[str, Any],
    default_region: str | None,
    source: str,
    limits: LimitsConfig | None = None,
    accounts: Sequence[str] | None = (DEFAULT_ACCOUNT,),
) -> WatchedTask:
    """One task given at run time (`{id, region, account, labels}`), checked exactly like a watch entry in
    the file; its origin is the task API.

    Nothing is expanded from the environment: the input comes from outside and must not reach secrets.
    """
    check = ValueChecker(source, limits)
    check.utf8(dict(entry))
    task = _entry(check, product, dict(entry), "", default_region, accounts)
    if task is None or check.problems:
        raise ConfigError(check.problems)
    return dataclasses.replace(task, origin=API)


def _limits(check: ValueChecker, value: object) -> LimitsConfig:
    raw = check.mapping(value, "limits", set(LIMIT_MAXIMA))
    default = LimitsConfig()
    return LimitsConfig(
        **{
            name: check.count(raw.get(name), f"limits.{name}", getattr(default, name), maximum)
            for name, maximum in LIMIT_MAXIMA.items()
        }
    )


def parse_config(document: object, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Validates a parsed YAML document; raises ConfigError listing every problem."""
    check = ValueChecker(source)
    expanded = expand_env(document, os.environ if env is None else env)
    check.utf8(expanded)
    data = check.mapping(
        expanded,
        "",
        {"credentials", "accounts", "region", "apis", "polling", "watch", "limits", "discovery", "metrics"},
    )
    check.limits = _limits(check, data.get("limits"))

    credentials = parse_credentials(check, data.get("credentials"))
    accounts = parse_accounts(check, data.get("accounts"), credentials, data.get("credentials") is not None)
    names = tuple(a.name for a in accounts)
    region = check.region(data.get("region"), "region")

    apis_raw = check.mapping(data.get("apis"), "apis", {s.name for s in PRODUCTS})
    apis = {spec.name: _api(check, spec, apis_raw.get(spec.name)) for spec in PRODUCTS}

    defaults = PollingConfig()
    poll = check.mapping(
        data.get("polling"), "polling", {"interval", "finished_interval", "timeout", "max_backoff"}
    )
    polling = PollingConfig(
        interval=check.duration(poll.get("interval"), "polling.interval", defaults.interval, 0.01, False),
        finished_interval=check.duration(
            poll.get("finished_interval"), "polling.finished_interval", defaults.finished_interval, 0.01, True
        ),
        timeout=check.duration(poll.get("timeout"), "polling.timeout", defaults.timeout, 0.01, False),
        max_backoff=check.duration(
            poll.get("max_backoff"), "polling.max_backoff", defaults.max_backoff, 0.01, False
        ),
    )

    tasks = _watch(check, data.get("watch"), region, names)
    discovery = parse_discovery(check, data.get("discovery"), names)
    metrics = _metrics(check, data.get("metrics"))
    if check.problems:
        raise ConfigError(check.problems)
    return Config(
        source, credentials, region, apis, polling, tasks, check.limits, discovery, accounts, metrics
    )


def _metrics(check: ValueChecker, value: object) -> MetricsConfig:
    raw = check.mapping(value, "metrics", {"status_series"})
    series = raw.get("status_series", MetricsConfig().status_series)
    if series not in STATUS_SERIES:
        shown_values = " or ".join(STATUS_SERIES)
        check.error("metrics.status_series", f"expected {shown_values}, got {shown(series)}")
        return MetricsConfig()
    return MetricsConfig(status_series=series)


def _api(check: ValueChecker, spec: Product, value: object) -> ApiConfig:
    """`apis.<product>`: endpoint and the quotas the exporter may spend of the status and list APIs."""
    path, default = f"apis.{spec.name}", ApiConfig.default(spec)
    keys = {"endpoint", "endpoints", "rate_limit"} | ({"list_rate_limit"} if spec.listing else set())
    api = check.mapping(value, path, keys)
    rate = check.positive_number(api.get("rate_limit"), f"{path}.rate_limit", default.rate_limit)
    list_rate = default.list_rate_limit
    if list_rate is not None:
        list_rate = check.positive_number(api.get("list_rate_limit"), f"{path}.list_rate_limit", list_rate)
        if spec.listing_shares_quota and list_rate >= rate:
            # One quota for both: discovery takes its share out of the status API's rate.
            check.error(
                f"{path}.list_rate_limit",
                f"expected less than rate_limit ({rate:g}): {spec.name}'s list API is its status action, "
                f"so both spend one quota, got {list_rate:g}",
            )
    return ApiConfig(
        endpoint=_endpoint(check, api.get("endpoint"), f"{path}.endpoint", default.endpoint),
        rate_limit=rate,
        list_rate_limit=list_rate,
        endpoints=_endpoints(check, api.get("endpoints"), f"{path}.endpoints"),
        regional_endpoint=default.regional_endpoint,
    )


def _endpoint(check: ValueChecker, value: object, path: str, default: str) -> str:
    """An endpoint URL that may hold `{region}` in its host (checked with a region filled in)."""
    if not isinstance(value, str) or "{region}" not in value:
        return check.endpoint(value, path, default)
    sample = "ap-guangzhou"
    if "{region}" not in (urlsplit(value).hostname or ""):
        check.error(path, f"expected {{region}} in the host name, got {shown(value)}")
        return default
    before = len(check.problems)
    filled = check.endpoint(value.replace("{region}", sample), path, default)
    return default if len(check.problems) > before else filled.replace(sample, "{region}")


def _endpoints(check: ValueChecker, value: object, path: str) -> tuple[tuple[str, str], ...]:
    """`endpoints: {region: URL}`: the endpoint of single regions."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        check.error(path, f"expected a mapping of region names to endpoint URLs, got {describe(value)}")
        return ()
    endpoints = []
    for region, url in value.items():
        where = f"{path}.{region}"
        if check.region(region, where) is None:
            continue
        if isinstance(url, str) and "{region}" in url:
            check.error(where, f"expected the region's own endpoint, without {{region}}, got {shown(url)}")
            continue
        before = len(check.problems)
        endpoint = check.endpoint(url, where, "")
        if len(check.problems) == before:
            endpoints.append((region, endpoint))
    return tuple(sorted(endpoints))


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Reads and validates a YAML file; raises ConfigError naming the file on any problem."""
    return parse_config(read_yaml(path, ConfigError), str(path), env)
