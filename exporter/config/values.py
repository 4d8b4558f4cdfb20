"""The config file's kinds of values (durations, regions, endpoints, label sets, counts) and their checker,
shared by every section's parser (`config`, `discoveryconfig`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from exporter.config.validation import Checker, describe, key_text, shown

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Names the exporter itself puts on task series, plus those Prometheus would rename on ingestion.
RESERVED_LABELS = frozenset(
    {"product", "cloud_region", "task_id", "status", "code", "info", "task_type", "instance_id", "action"}
    | {"source", "instance_name"}  # tencentcloud_task_info, for discovered tasks
    | {"account", "api_endpoint"}  # every task series; per-API series
    # Target labels Prometheus or Kubernetes service discovery set: a clash would be renamed exported_*.
    | {"job", "instance", "service", "region", "namespace", "pod", "container", "endpoint"}
)

USER_INFO_PROBLEM = (
    "expected a URL without user info (user:password@ is never sent to the API, and would be shown on "
    "/-/config); credentials belong in the credentials section"
)


def has_user_info(parts: SplitResult) -> bool:
    return "@" in parts.netloc


def has_odd_characters(url: str) -> bool:
    """Whitespace or a control character in a URL's text. urlsplit drops tabs and line breaks wherever they
    are ("ht\ntp://x" parses as http://x), and the text itself is what requests go to: refused, not mended."""
    return any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url)


@dataclass(frozen=True)
class LimitsConfig:
    """Caps on what a watch entry or a task API call may ask for: no one caller can exhaust the exporter."""

    labels_per_task: int = 16
    label_name_length: int = 64
    label_value_length: int = 256
    registered_tasks: int = 20000
    request_body_bytes: int = 65536
    # Operations discovery keeps at once. With registered_tasks, what the memory limit of the shipped
    # manifests is sized for (docs/operations.md, measured by `python -m bench --hardening`).
    discovered_tasks: int = 20000


LIMIT_MAXIMA = {
    "labels_per_task": 1000,
    "label_name_length": 1024,
    "label_value_length": 65536,
    "registered_tasks": 10_000_000,
    "request_body_bytes": 64 * 1024 * 1024,
    "discovered_tasks": 10_000_000,
}


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


class ValueChecker(Checker):
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
        if has_user_info(parts):
            # Checked first and never quoted: the text holds a password.
            self.error(path, USER_INFO_PROBLEM)
            return default
        if has_odd_characters(text) or parts.scheme not in ("http", "https") or not parts.hostname:
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
            if not isinstance(name, str) or not LABEL_NAME.fullmatch(name) or name.startswith("__"):
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
