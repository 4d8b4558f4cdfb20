"""Structured logging in logfmt or JSON, one event per line.

Call sites pass their key/values as `extra={"fields": {...}}`; nothing here knows about secrets because
nothing that holds a secret is ever passed in.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

LEVELS = ("debug", "info", "warning", "error")


def _event(record: logging.LogRecord) -> dict[str, Any]:
    event: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        event.update(fields)
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
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
