"""Structured logging in logfmt or JSON, one event per line, with promslog's keys.

Every event starts with `time` (UTC, milliseconds), `level` (`debug`, `info`, `warn`, `error`), `source` (the
file and line of the call) and `msg`, as Prometheus programs log them (github.com/prometheus/common/promslog),
then `logger` (the Python logger's name) and the call's own key/values. Call sites pass those as
`extra={"fields": {...}}`; nothing here knows about secrets because nothing that holds a secret is ever passed
in. A field named like one of the keys above is written as `field_<name>` (`field_source=...`), so the
leading keys always mean the same thing.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
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
