"""The YAML configuration, validated into typed, immutable objects.

Every problem found is collected (not just the first) and reported as `file: key.path: what was expected`, so
an operator fixes a broken file in one round trip. Unknown keys are errors: a typo must not silently fall back
to a default.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter.configvalues import (
    LIMIT_MAXIMA,
    RESERVED_LABELS,
    USER_INFO_PROBLEM,
    LimitsConfig,
    ValueChecker,
    expand_env,
    has_user_info,
    parse_duration,
)
from exporter.discoveryconfig import DiscoveryConfig, parse_discovery
from exporter.services import BY_NAME, SERVICES, Service
from exporter.validation import ProblemsError, describe, read_yaml, shown

# Re-exported: callers read every config type from this module.
__all__ = [
    "API",
    "CONFIG",
    "DISCOVERED",
    "RESERVED_LABELS",
    "ApiConfig",
    "Config",
    "ConfigError",
    "CredentialsConfig",
    "DiscoveryConfig",
    "Key",
    "LimitsConfig",
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

_WATCH_KEYS = {s.watch_key: s.name for s in SERVICES}


class ConfigError(ProblemsError):
    """Raised with every problem found in a configuration; `str()` gives one problem per line."""


DEFAULT_STS_ENDPOINT = "https://sts.tencentcloudapi.com"
DEFAULT_ROLE_SESSION_NAME = "tencentcloud-task-exporter"
MAX_ROLE_DURATION = 43200  # AssumeRole's DurationSeconds: default 7200, at most 43200
_CAM_ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,128}")
_ROLE_SESSION_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{2,128}")
_CREDENTIALS_KEYS = {
    "secret_id",
    "secret_key",
    "token",
    "profile",
    "profile_section",
    "cvm_role",
    "role_arn",
    "role_session_name",
    "role_duration",
    "sts_endpoint",
    "metadata_url",
}
DEFAULT_METADATA_URL = "http://metadata.tencentyun.com/latest/meta-data/cam/security-credentials/"


@dataclass(frozen=True)
class CredentialsConfig:
    secret_id: str = ""
    secret_key: str = ""
    token: str = ""
    profile: str = ""  # "": $TENCENTCLOUD_CREDENTIALS_FILE, ~/.tencentcloud/..., /etc/tencentcloud/...
    profile_section: str = "default"
    cvm_role: str = ""  # "": the role the metadata service lists
    cvm_role_enabled: bool = True  # `cvm_role: false` skips the metadata service
    role_arn: str = ""  # set: STS AssumeRole with the keys the chain found
    role_session_name: str = DEFAULT_ROLE_SESSION_NAME
    role_duration: int = 7200
    sts_endpoint: str = DEFAULT_STS_ENDPOINT
    # Where the CVM role's keys are listed; a proxy or a test stands in for the real metadata service here.
    metadata_url: str = DEFAULT_METADATA_URL

    def __repr__(self) -> str:
        parts = (
            f"{f.name}='<secret>'"
            if f.name in ("secret_key", "token")
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"CredentialsConfig({', '.join(parts)})"


def _credentials(check: ValueChecker, value: object) -> CredentialsConfig:
    """The `credentials:` section; every key is optional."""
    creds = check.mapping(value, "credentials", _CREDENTIALS_KEYS)
    default = CredentialsConfig()

    cvm_role, cvm_role_enabled = "", True
    raw_role = creds.get("cvm_role")
    if isinstance(raw_role, bool):
        cvm_role_enabled = raw_role
    elif raw_role is not None:
        if isinstance(raw_role, str) and (raw_role == "" or _CAM_ROLE_NAME.fullmatch(raw_role)):
            cvm_role = raw_role
        else:
            check.error(
                "credentials.cvm_role",
                "expected a CAM role name (1-128 of A-Z a-z 0-9 _+=,.@-), empty to use the role the metadata "
                f"service lists, or false to skip the metadata service, got {describe(raw_role)}",
            )

    section = check.string(
        creds.get("profile_section"), "credentials.profile_section", default.profile_section
    )
    if not section.strip() or "]" in section or "\n" in section:
        check.error("credentials.profile_section", f"expected an INI section name, got {shown(section)}")
        section = default.profile_section

    role_arn = check.string(creds.get("role_arn"), "credentials.role_arn")
    if role_arn and not role_arn.startswith("qcs::cam::"):
        check.error(
            "credentials.role_arn",
            f"expected a role ARN like qcs::cam::uin/12345678:roleName/NAME, got {shown(role_arn)}",
        )
        role_arn = ""

    session_name = check.string(
        creds.get("role_session_name"), "credentials.role_session_name", default.role_session_name
    )
    if not _ROLE_SESSION_NAME.fullmatch(session_name):
        check.error(
            "credentials.role_session_name",
            f"expected 2-128 of A-Z a-z 0-9 _+=,.@- (the AssumeRole limits), got {shown(session_name)}",
        )
        session_name = default.role_session_name

    duration = check.duration(
        creds.get("role_duration"), "credentials.role_duration", default.role_duration, 300, False
    )
    if duration > MAX_ROLE_DURATION or duration != int(duration):
        check.error(
            "credentials.role_duration",
            f"expected whole seconds from 5m to 12h (AssumeRole allows at most 43200s), "
            f"got {creds.get('role_duration')!r}",
        )
        duration = default.role_duration

    return CredentialsConfig(
        secret_id=check.string(creds.get("secret_id"), "credentials.secret_id"),
        secret_key=check.string(creds.get("secret_key"), "credentials.secret_key"),
        token=check.string(creds.get("token"), "credentials.token"),
        profile=check.string(creds.get("profile"), "credentials.profile"),
        profile_section=section,
        cvm_role=cvm_role,
        cvm_role_enabled=cvm_role_enabled,
        role_arn=role_arn,
        role_session_name=session_name,
        role_duration=int(duration),
        sts_endpoint=check.endpoint(
            creds.get("sts_endpoint"), "credentials.sts_endpoint", default.sts_endpoint
        ),
        metadata_url=_metadata_url(check, creds.get("metadata_url"), default.metadata_url),
    )


def _metadata_url(check: ValueChecker, value: object, default: str) -> str:
    text = check.string(value, "credentials.metadata_url", default)
    parts = urlsplit(text)
    if has_user_info(parts):
        check.error("credentials.metadata_url", USER_INFO_PROBLEM)
        return default
    if parts.scheme not in ("http", "https") or not parts.hostname:
        check.error("credentials.metadata_url", f"expected an http(s) URL, got {shown(text)}")
        return default
    # The role name is appended to this URL.
    return text if text.endswith("/") else text + "/"


@dataclass(frozen=True)
class ApiConfig:
    endpoint: str
    rate_limit: float
    list_rate_limit: float | None = None  # the product's list API (discovery); None: it has none

    @classmethod
    def default(cls, service: Service) -> ApiConfig:
        listing = service.listing
        list_rate = None if listing is None else listing.default_rate_limit
        return cls(service.default_endpoint, service.default_rate_limit, list_rate)


@dataclass(frozen=True)
class PollingConfig:
    interval: float = 30.0
    finished_interval: float = 600.0
    timeout: float = 10.0
    max_backoff: float = 600.0


# (product, region, task ID): how every layer keys a task.
Key = tuple[str, str, str]


# Where a task was first known: the config file, the task API, or discovery (the `source` label).
CONFIG, API, DISCOVERED = "config", "api", "discovered"


@dataclass(frozen=True)
class WatchedTask:
    service: str
    task_id: str
    region: str
    labels: tuple[tuple[str, str], ...] = ()
    # Not part of a task's identity or settings: the same task declared twice is the same task.
    origin: str = field(default=CONFIG, compare=False)

    @property
    def key(self) -> Key:
        return (self.service, self.region, self.task_id)

    def as_json(self) -> dict[str, object]:
        """The task as the task API and /-/config show it (the shape the task API accepts)."""
        return {
            "product": self.service,
            "id": self.task_id,
            "region": self.region,
            "labels": dict(self.labels),
        }


def key_fields(key: Key) -> dict[str, object]:
    """A task's identity as structured log fields, named like its labels on /metrics."""
    return dict(zip(("product", "cloud_region", "task_id"), key, strict=True))


@dataclass(frozen=True)
class Config:
    source: str
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    region: str | None = None
    apis: Mapping[str, ApiConfig] = field(
        default_factory=lambda: {s.name: ApiConfig.default(s) for s in SERVICES}
    )
    polling: PollingConfig = field(default_factory=PollingConfig)
    tasks: tuple[WatchedTask, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    discovery: DiscoveryConfig | None = None


SECRET_FIELDS = frozenset({"secret_key", "token"})


def redacted(config: Config) -> dict[str, Any]:
    """The effective config as plain data, every secret replaced by `<secret>` (for /-/config)."""
    data = dataclasses.asdict(config)
    data["credentials"] = {
        k: ("<secret>" if k in SECRET_FIELDS and v else v) for k, v in data["credentials"].items()
    }
    data["apis"] = {name: dataclasses.asdict(api) for name, api in config.apis.items()}
    data["tasks"] = [t.as_json() for t in config.tasks]
    return data


def _entry(
    check: ValueChecker, service: str, entry: object, path: str, default_region: str | None
) -> WatchedTask | None:
    """One watch entry (`ID` or `{id, region, labels}`), or None after recording what is wrong with it."""
    raw_id, region = entry, default_region
    labels: tuple[tuple[str, str], ...] = ()
    path_id = path
    if isinstance(entry, dict):
        item = check.mapping(entry, path, {"id", "region", "labels"})
        raw_id, path_id = item.get("id"), f"{path}.id" if path else "id"
        if item.get("region") is not None:
            region = check.region(item["region"], f"{path}.region" if path else "region")
        labels = check.labels(item.get("labels"), f"{path}.labels" if path else "labels")
    id_kind = BY_NAME[service].id_kind
    task_id = id_kind.canonical(raw_id)
    if task_id is None:
        check.error(path_id, f"expected {id_kind.expected}, got {describe(raw_id)}")
        return None
    if region is None:
        check.error(path, "no region: set `region` at the top level or on this task")
        return None
    return WatchedTask(service, task_id, region, labels)


def _watch(check: ValueChecker, value: object, default_region: str | None) -> tuple[WatchedTask, ...]:
    watch = check.mapping(value, "watch", set(_WATCH_KEYS))
    tasks: list[WatchedTask] = []
    seen: dict[tuple[str, str, str], str] = {}
    for key, service in _WATCH_KEYS.items():
        entries = watch.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            check.error(f"watch.{key}", f"expected a list of task IDs, got {describe(entries)}")
            continue
        for index, entry in enumerate(entries):
            path = f"watch.{key}[{index}]"
            task = _entry(check, service, entry, path, default_region)
            if task is None:
                continue
            if task.key in seen:
                check.error(
                    path,
                    f"duplicate task {service} {task.task_id} in {task.region} (first at {seen[task.key]})",
                )
                continue
            seen[task.key] = path
            tasks.append(task)
    return tuple(tasks)


def parse_task(
    service: str,
    entry: Mapping[str, Any],
    default_region: str | None,
    source: str,
    limits: LimitsConfig | None = None,
) -> WatchedTask:
    """One task given at run time (`{id, region, labels}`), checked exactly like a watch entry in the file;
    its origin is the task API.

    Nothing is expanded from the environment: the input comes from outside and must not reach secrets.
    """
    check = ValueChecker(source, limits)
    check.utf8(dict(entry))
    task = _entry(check, service, dict(entry), "", default_region)
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
        expanded, "", {"credentials", "region", "apis", "polling", "watch", "limits", "discovery"}
    )
    check.limits = _limits(check, data.get("limits"))

    credentials = _credentials(check, data.get("credentials"))
    region = check.region(data.get("region"), "region")

    apis_raw = check.mapping(data.get("apis"), "apis", {s.name for s in SERVICES})
    apis = {spec.name: _api(check, spec, apis_raw.get(spec.name)) for spec in SERVICES}

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

    tasks = _watch(check, data.get("watch"), region)
    discovery = parse_discovery(check, data.get("discovery"))
    if check.problems:
        raise ConfigError(check.problems)
    return Config(source, credentials, region, apis, polling, tasks, check.limits, discovery)


def _api(check: ValueChecker, spec: Service, value: object) -> ApiConfig:
    """`apis.<product>`: endpoint and the quotas the exporter may spend of the status and list APIs."""
    path, default = f"apis.{spec.name}", ApiConfig.default(spec)
    keys = {"endpoint", "rate_limit"} | ({"list_rate_limit"} if spec.listing else set())
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
        endpoint=check.endpoint(api.get("endpoint"), f"{path}.endpoint", default.endpoint),
        rate_limit=rate,
        list_rate_limit=list_rate,
    )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Reads and validates a YAML file; raises ConfigError naming the file on any problem."""
    return parse_config(read_yaml(path, ConfigError), str(path), env)
