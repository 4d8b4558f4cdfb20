"""Structured logging in logfmt or JSON, one event per line, with promslog's keys.

Every event starts with `time` (UTC, milliseconds), `level` (`debug`, `info`, `warn`, `error`), `source` (the
file and line of the call) and `msg`, as Prometheus programs log them (github.com/prometheus/common/promslog),
then `logger` (the Python logger's name) and the call's own key/values. Call sites pass those as
`extra={"fields": {...}}`; nothing here knows about secrets because nothing that holds a secret is ever passed
in. A field named like one of the keys above is written as `field_<name>` (`field_source=...`), so the
leading keys always mean the same thing.

The exporter's log rate limit is here too (`RepeatLimiter`, `REPORT_INTERVAL`): a report that can repeat at
a client's or the network's pace (an event loop error, a refused connection, a malformed request) is logged
the first time of its kind, then at most once per 10 s with the count suppressed meanwhile. Third-party
loggers (aiohttp's server and access loggers) go through `ThirdPartyGuard`: one line, no traceback, no
arguments, under that limit, whatever those libraries pass.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# What --log.level accepts: promslog's names, and `warning` (this exporter's name before 0.2.0) as an alias.
LEVELS = ("debug", "info", "warn", "warning", "error")
_LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
RESERVED_KEYS = ("time", "level", "source", "msg", "logger")


def level_name(levelno: int) -> str:
    """promslog's lower-case level names; CRITICAL (unused here) counts as error."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def _time(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _event(record: logging.LogRecord) -> dict[str, Any]:
    event: dict[str, Any] = {
        "time": _time(record.created),
        "level": level_name(record.levelno),
        "source": f"{record.filename}:{record.lineno}",
        "msg": record.getMessage(),
        "logger": record.name,
    }
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        for key, value in fields.items():
            name = str(key)
            event[f"field_{name}" if name in RESERVED_KEYS else name] = value
    if record.exc_info:
        event["error"] = logging.Formatter().formatException(record.exc_info)
    return event


def _logfmt_value(value: object) -> str:
    text = "" if value is None else str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _event(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_event(record), default=str, ensure_ascii=False)


def setup(level: str, fmt: str) -> None:
    """`level`: one of LEVELS; `fmt`: logfmt or json."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(ThirdPartyGuard())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVEL_NUMBERS[level])
    # aiohttp's access log would add a line per scrape; errors still come through its other loggers.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class FirstOfKind:
    """Remembers which unexpected exceptions were already reported with a traceback: one report for each
    (exception type, where it was raised), so a bug hit on every poll does not flood the log."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def first(self, exc: BaseException) -> bool:
        """True the first time an exception of this type is raised at this place."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        signature = (type(exc).__name__, where)
        if signature in self._seen:
            return False
        self._seen.add(signature)
        return True


REPORT_INTERVAL = 10.0
# Numbers and addresses that differ between reports of one kind (ports, descriptors, sizes).
VARYING = re.compile(r"0x[0-9a-fA-F]+|\d+")


@dataclass
class _Kind:
    last: float  # when a report of this kind was last let through
    suppressed: int = 0  # reports suppressed since


class RepeatLimiter:
    """Lets the first report of each kind through, then at most one per `interval`, counting the rest.

    Kinds are bounded (`max_kinds`): beyond that, new kinds share the kind `other`, so a flood of distinct
    reports grows neither memory nor the log."""

    OTHER = "other"

    def __init__(
        self, interval: float, clock: Callable[[], float] = time.monotonic, max_kinds: int = 64
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._max_kinds = max_kinds
        self._kinds: dict[str, _Kind] = {}

    def admit(self, kind: str) -> int | None:
        """None to suppress this report, else how many of its kind were suppressed since the last one."""
        now = self._clock()
        entry = self._kinds.get(kind)
        if entry is None:
            if len(self._kinds) >= self._max_kinds:
                self._evict(now)
            if len(self._kinds) < self._max_kinds or kind == self.OTHER:
                self._kinds[kind] = _Kind(now)
                return 0
            return self.admit(self.OTHER)
        if now - entry.last >= self.interval:
            suppressed = entry.suppressed
            entry.last, entry.suppressed = now, 0
            return suppressed
        entry.suppressed += 1
        return None

    def due(self) -> list[tuple[str, int]]:
        """Kinds whose interval has passed with reports still suppressed, and their counts (which restart)."""
        now = self._clock()
        out = []
        for kind, entry in self._kinds.items():
            if entry.suppressed and now - entry.last >= self.interval:
                out.append((kind, entry.suppressed))
                entry.last, entry.suppressed = now, 0
        return out

    def pending(self) -> bool:
        return any(entry.suppressed for entry in self._kinds.values())

    def _evict(self, now: float) -> None:
        idle = [k for k, e in self._kinds.items() if not e.suppressed and now - e.last >= self.interval]
        for kind in idle:
            del self._kinds[kind]


class ThirdPartyGuard(logging.Filter):
    """A handler filter for the loggers of libraries (`aiohttp.*`): their records become one line, the
    message's first line without its arguments' values beyond 200 characters, the exception's type instead
    of its traceback, under the rate limit. aiohttp's server quotes a malformed request's header line, the
    `Authorization` value included, in the traceback it logs; nothing of that may reach the log."""

    def __init__(self, prefixes: tuple[str, ...] = ("aiohttp",), interval: float = REPORT_INTERVAL) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._limiter = RepeatLimiter(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        try:
            message = str(record.msg).partition("\n")[0][:200]  # the format, never its arguments
        except Exception:  # a message object whose str() fails: still one line
            message = type(record.msg).__name__
        error_type = type(exc).__name__ if exc is not None else ""
        suppressed = self._limiter.admit(f"{record.name}|{error_type}|{VARYING.sub('#', message)}")
        if suppressed is None:
            return False
        fields: dict[str, Any] = {"exception": error_type} if error_type else {}
        if suppressed:
            fields["suppressed"] = suppressed
        record.msg, record.args = message, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.fields = fields
        return True
