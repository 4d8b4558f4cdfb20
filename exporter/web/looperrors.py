"""Rate-limited reports: `RepeatLimiter`, and the event loop exception handler built on it.

asyncio's default handler logs every report in full; when accept() fails for lack of descriptors that is a
line per attempt, with socket objects in it. `install_loop_exception_handler` logs each kind of report once,
then at most once per interval with the count suppressed meanwhile. `exporter.web.httpserver` uses the same
limiter for its connection-refused warnings.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The logger name is in every log line (`logger=`): kept as it was before this code left httpserver, so
# anyone filtering on it still sees these reports.
log = logging.getLogger("exporter.httpserver")

REPORT_INTERVAL = 10.0


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


_VARYING = re.compile(r"0x[0-9a-fA-F]+|\d+")


class LoopErrorReporter:
    """An event loop exception handler: logs each kind of report (message and exception type) once, then at
    most once per `interval` with the count suppressed meanwhile. Only the report's message and the
    exception with its traceback are logged, never the context's transport, protocol or socket objects."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = REPORT_INTERVAL) -> None:
        self._loop = loop
        self._limiter = RepeatLimiter(interval, loop.time)
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "unhandled exception in event loop")[:500]
        exc = context.get("exception")
        error_type = type(exc).__name__ if isinstance(exc, BaseException) else ""
        # Reports of one kind differ in addresses, descriptors and times: those are not part of the kind.
        first_line = message.partition("\n")[0]
        kind = f"{error_type}|{_VARYING.sub('#', first_line)[:200]}"
        suppressed = self._limiter.admit(kind)
        if suppressed is None:
            if self._flush is None and not loop.is_closed():
                self._flush = loop.call_later(self._limiter.interval, self._report_suppressed)
            return
        fields: dict[str, Any] = {"report": message, "exception": error_type}
        if suppressed:
            fields["suppressed"] = suppressed
        exc_info = exc if isinstance(exc, BaseException) else None
        log.error("event loop error", exc_info=exc_info, extra={"fields": fields})

    def _report_suppressed(self) -> None:
        self._flush = None
        for kind, count in self._limiter.due():
            # The kind: exception type and the message's first line, numbers blanked out (or "other").
            error_type, _, message = kind.partition("|") if "|" in kind else ("", "", kind)
            log.error(
                "event loop error repeated",
                extra={"fields": {"report": message, "exception": error_type, "suppressed": count}},
            )
        if self._limiter.pending() and not self._loop.is_closed():
            self._flush = self._loop.call_later(self._limiter.interval, self._report_suppressed)


def install_loop_exception_handler(
    loop: asyncio.AbstractEventLoop, interval: float = REPORT_INTERVAL
) -> LoopErrorReporter:
    """Replaces the loop's exception handler (asyncio's logs every report in full) with a rate-limited one."""
    reporter = LoopErrorReporter(loop, interval)
    loop.set_exception_handler(reporter)
    return reporter
