"""The YAML configuration, validated into typed, immutable objects.

Every problem found is collected (not just the first) and reported as `file: key.path: what was expected`, so
an operator fixes a broken file in one round trip. Unknown keys are errors: a typo must not silently fall back
to a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from exporter.services import BY_NAME, SERVICES
from exporter.validation import Checker, ProblemsError, describe, key_text, read_yaml, shown

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Names the exporter itself puts on task series, plus those Prometheus would rename on ingestion.
RESERVED_LABELS = frozenset(
    {"product", "cloud_region", "task_id", "status", "code", "info", "task_type", "instance_id", "action"}
    # Target labels Prometheus or Kubernetes service discovery set: a clash would be renamed exported_*.
    | {"job", "instance", "service", "region", "namespace", "pod", "container", "endpoint"}
)
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


def _credentials(check: _Checker, value: object) -> CredentialsConfig:
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


def _metadata_url(check: _Checker, value: object, default: str) -> str:
    text = check.string(value, "credentials.metadata_url", default)
    parts = urlsplit(text)
    if _has_user_info(parts):
        check.error("credentials.metadata_url", _USER_INFO_PROBLEM)
        return default
    if parts.scheme not in ("http", "https") or not parts.hostname:
        check.error("credentials.metadata_url", f"expected an http(s) URL, got {shown(text)}")
        return default
    # The role name is appended to this URL.
    return text if text.endswith("/") else text + "/"


_USER_INFO_PROBLEM = (
    "expected a URL without user info (user:password@ is never sent to the API, and would be shown on "
    "/-/config); credentials belong in the credentials section"
)


def _has_user_info(parts: SplitResult) -> bool:
    return "@" in parts.netloc


@dataclass(frozen=True)
class ApiConfig:
    endpoint: str
    rate_limit: float


@dataclass(frozen=True)
class PollingConfig:
    interval: float = 30.0
    finished_interval: float = 600.0
    timeout: float = 10.0
    max_backoff: float = 600.0


@dataclass(frozen=True)
class LimitsConfig:
    """Caps on what a watch entry or a task API call may ask for: no one caller can exhaust the exporter."""

    labels_per_task: int = 16
    label_name_length: int = 64
    label_value_length: int = 256
    registered_tasks: int = 20000
    request_body_bytes: int = 65536


_LIMIT_MAXIMA = {
    "labels_per_task": 1000,
    "label_name_length": 1024,
    "label_value_length": 65536,
    "registered_tasks": 10_000_000,
    "request_body_bytes": 64 * 1024 * 1024,
}


# (product, region, task ID): how every layer keys a task.
Key = tuple[str, str, str]


@dataclass(frozen=True)
class WatchedTask:
    service: str
    task_id: str
    region: str
    labels: tuple[tuple[str, str], ...] = ()

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
        default_factory=lambda: {
            s.name: ApiConfig(s.default_endpoint, s.default_rate_limit) for s in SERVICES
        }
    )
    polling: PollingConfig = field(default_factory=PollingConfig)
    tasks: tuple[WatchedTask, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)


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


def parse_duration(value: object) -> float | None:
    """Seconds from `500ms`, `30s`, `1h30m` or a plain number; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def expand_env(value: Any, env: Mapping[str, str]) -> Any:
    """Replaces `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document.

    Expansion happens after parsing, so a secret holding `:` or `#` cannot change the document's structure.
    An unset variable expands to its default or to "", which for credentials means "try the next source".
    """
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


class _Checker(Checker):
    """The config file's own kinds of values, on top of the shared key-path bookkeeping."""

    def __init__(self, source: str, limits: LimitsConfig | None = None) -> None:
        super().__init__(source)
        self.limits = limits or LimitsConfig()

    def count(self, value: object, path: str, default: int, maximum: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            self.error(path, f"expected a whole number from 1 to {maximum}, got {describe(value)}")
            return default
        return value

    def duration(self, value: object, path: str, default: float, minimum: float, allow_zero: bool) -> float:
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            self.error(
                path, f"expected a duration like 500ms, 30s, 10m, 1h or plain seconds, got {shown(value)}"
            )
            return default
        if seconds == 0 and allow_zero:
            return 0.0
        if seconds < minimum:
            expected = "0 or at least" if allow_zero else "at least"
            self.error(path, f"expected {expected} {minimum:g}s, got {shown(value)}")
            return default
        return seconds

    def positive_number(self, value: object, path: str, default: float) -> float:
        if value is None:
            return default
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number) or number <= 0:
            self.error(path, f"expected a positive number, got {shown(value)}")
            return default
        return number

    def region(self, value: object, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _REGION.fullmatch(value):
            self.error(path, f"expected a region name like ap-guangzhou, got {shown(value)}")
            return None
        return value

    def endpoint(self, value: object, path: str, default: str) -> str:
        text = self.string(value, path, default)
        parts = urlsplit(text)
        if _has_user_info(parts):
            # Checked first and never quoted: the text holds a password.
            self.error(path, _USER_INFO_PROBLEM)
            return default
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.error(path, f"expected a URL like https://host[:port], got {shown(text)}")
            return default
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            self.error(
                path, f"expected a URL without path or query (the API is served at /), got {shown(text)}"
            )
            return default
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            self.error(path, f"expected a valid port in {shown(text)}")
            return default
        # Hosts are case-insensitive and the API signs the lower-cased Host; send what it will compute.
        return parts._replace(netloc=parts.netloc.lower(), path="").geturl()

    def labels(self, value: object, path: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping of label names to values, got {describe(value)}")
            return ()
        limits = self.limits
        if len(value) > limits.labels_per_task:
            self.error(path, f"expected at most {limits.labels_per_task} labels (limits.labels_per_task)")
            return ()
        result = []
        for name, raw in value.items():
            where = f"{path}.{key_text(name)}"
            text = str(raw).lower() if isinstance(raw, bool) else str(raw)
            if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                self.error(
                    where, "expected a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting __)"
                )
            elif len(name) > limits.label_name_length:
                self.error(where, f"expected a label name of at most {limits.label_name_length} characters")
            elif name in RESERVED_LABELS:
                self.error(where, f"label name is reserved (reserved: {', '.join(sorted(RESERVED_LABELS))})")
            elif isinstance(raw, dict | list) or raw is None:
                self.error(where, f"expected a label value (string or number), got {describe(raw)}")
            elif len(text) > limits.label_value_length:
                self.error(where, f"expected a label value of at most {limits.label_value_length} characters")
            else:
                result.append((name, text))
        return tuple(sorted(result))


def _entry(
    check: _Checker, service: str, entry: object, path: str, default_region: str | None
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


def _watch(check: _Checker, value: object, default_region: str | None) -> tuple[WatchedTask, ...]:
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
    """One task given at run time (`{id, region, labels}`), checked exactly like a watch entry in the file.

    Nothing is expanded from the environment: the input comes from outside and must not reach secrets.
    """
    check = _Checker(source, limits)
    check.utf8(dict(entry))
    task = _entry(check, service, dict(entry), "", default_region)
    if task is None or check.problems:
        raise ConfigError(check.problems)
    return task


def _limits(check: _Checker, value: object) -> LimitsConfig:
    raw = check.mapping(value, "limits", set(_LIMIT_MAXIMA))
    default = LimitsConfig()
    return LimitsConfig(
        **{
            name: check.count(raw.get(name), f"limits.{name}", getattr(default, name), maximum)
            for name, maximum in _LIMIT_MAXIMA.items()
        }
    )


def parse_config(document: object, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Validates a parsed YAML document; raises ConfigError listing every problem."""
    check = _Checker(source)
    expanded = expand_env(document, os.environ if env is None else env)
    check.utf8(expanded)
    data = check.mapping(expanded, "", {"credentials", "region", "apis", "polling", "watch", "limits"})
    check.limits = _limits(check, data.get("limits"))

    credentials = _credentials(check, data.get("credentials"))
    region = check.region(data.get("region"), "region")

    apis_raw = check.mapping(data.get("apis"), "apis", {s.name for s in SERVICES})
    apis = {}
    for spec in SERVICES:
        api = check.mapping(apis_raw.get(spec.name), f"apis.{spec.name}", {"endpoint", "rate_limit"})
        apis[spec.name] = ApiConfig(
            endpoint=check.endpoint(api.get("endpoint"), f"apis.{spec.name}.endpoint", spec.default_endpoint),
            rate_limit=check.positive_number(
                api.get("rate_limit"), f"apis.{spec.name}.rate_limit", spec.default_rate_limit
            ),
        )

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
    if check.problems:
        raise ConfigError(check.problems)
    return Config(source, credentials, region, apis, polling, tasks, check.limits)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Reads and validates a YAML file; raises ConfigError naming the file on any problem."""
    return parse_config(read_yaml(path, ConfigError), str(path), env)
