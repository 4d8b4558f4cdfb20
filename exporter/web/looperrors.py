"""Rate-limited reports: the event loop exception handler, and the HTTP server's own error reports.

asyncio's default handler logs every report in full; when accept() fails for lack of descriptors that is a
line per attempt, with socket objects in it. `install_loop_exception_handler` logs each kind of report once,
then at most once per interval with the count suppressed meanwhile. `exporter.web.httpserver` uses the same
limiter for its connection-refused warnings.

aiohttp's server logs a malformed request at error with a traceback quoting the offending header line
(`Authorization : Basic ...`, a token ending in `\\r`): a credential in the log, and a line per request a
client can send in a loop. `quiet()` gives each connection's aiohttp protocol `ServerErrorReports` instead:
one line, no traceback, nothing the client sent, under the same rate limit; its error answers are JSON.
"""

from __future__ import annotations

import asyncio
import logging
import re
import traceback
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from exporter.log import REPORT_INTERVAL, VARYING, RepeatLimiter

__all__ = [
    "REPORT_INTERVAL",
    "LoopErrorReporter",
    "QuietRequestHandler",
    "RepeatLimiter",
    "ServerErrorReports",
    "install_loop_exception_handler",
    "quiet",
    "safe_reason",
]

# The logger name is in every log line (`logger=`): kept as it was before this code left httpserver, so
# anyone filtering on it still sees these reports.
log = logging.getLogger("exporter.httpserver")


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
        kind = f"{error_type}|{VARYING.sub('#', first_line)[:200]}"
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


# The start of a parser error's message, up to the first character that could begin a quoted header line or
# value (aiohttp's parser puts those after a colon or in quotes): "Invalid header token", "Bad status line".
_SAFE_REASON = re.compile(r"[A-Za-z][A-Za-z0-9 ,.-]{0,79}")


def safe_reason(exc: BaseException | None) -> str:
    """Why a request was refused, in words that quote nothing the client sent (no header line or value)."""
    text = exc.message if isinstance(exc, HttpProcessingError) else ""
    match = _SAFE_REASON.match(str(text).strip())
    return match.group(0).strip(" ,.-").lower() if match else "malformed request"


def _raised_at(exc: BaseException | None) -> str:
    frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
    return f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""


class ServerErrorReports:
    """The HTTP server's own reports, each one line under the exporter's log rate limit, none quoting what
    the client sent: a malformed request and a client gone before its answer was written at debug (a client
    can cause them at will), a request handler's unexpected exception at error with its type and the line
    that raised it (never its message or traceback, which can hold request data)."""

    def __init__(self, interval: float = REPORT_INTERVAL) -> None:
        self._limiter = RepeatLimiter(interval)
        self.malformed = 0  # requests aiohttp's parser refused
        self.handler_class: type[QuietRequestHandler] | None = None  # made by quiet()

    def report(self, remote: str | None, status: int, exc: BaseException | None) -> None:
        fields: dict[str, Any] = {"remote": remote or ""}
        if isinstance(exc, ConnectionError):
            level, message = logging.DEBUG, "client closed the connection before its answer was written"
        elif status < 500:
            self.malformed += 1
            level, message = logging.DEBUG, "malformed request refused"
            fields["reason"] = safe_reason(exc)
        else:
            level, message = logging.ERROR, "request handler failed"
            fields["where"] = _raised_at(exc)
        if not isinstance(exc, ConnectionError):
            fields["status"] = status
        if exc is not None:
            fields["exception"] = type(exc).__name__
        self._log(level, message, fields)

    def unexpected(self, message: object, exc: BaseException | None) -> None:
        """What aiohttp's server logs through `log_exception` ("Unhandled exception"): its words, one line."""
        fields: dict[str, Any] = {"report": str(message).partition("\n")[0][:200]}
        if exc is not None:
            fields |= {"exception": type(exc).__name__, "where": _raised_at(exc)}
        self._log(logging.WARNING, "HTTP server error", fields)

    def _log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        if not log.isEnabledFor(level):
            return
        kind = f"{message}|{fields.get('exception', '')}|{fields.get('reason', '')}|{fields.get('where', '')}"
        suppressed = self._limiter.admit(kind)
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed"] = suppressed
        log.log(level, message, extra={"fields": fields})


class QuietRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with its error reports through `ServerErrorReports` and its error
    answers in JSON (`{"error": ...}`) that quote nothing of the request. No new slots: `quiet()` turns the
    handler aiohttp's `web.Server` made (with its settings) into one of these."""

    __slots__ = ()

    reports: ServerErrorReports = ServerErrorReports()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        self.reports.report(request.remote, status, exc)
        if request.writer.output_size > 0:
            # As aiohttp does: part of an answer went out, so no error answer can follow; the connection is
            # dropped (aiohttp reports this ConnectionError at debug).
            raise ConnectionError("the answer had started: no error answer can be sent")
        if status >= 500:
            reason = "request timed out" if status == 504 else "internal error"
        else:
            reason = f"bad request: {safe_reason(exc)}"
        answer = web.json_response({"error": reason}, status=status)
        answer.force_close()
        return answer

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        self.reports.unexpected(args[0] if args else "", exc if isinstance(exc, BaseException) else None)


def quiet(handler: asyncio.Protocol, reports: ServerErrorReports) -> asyncio.Protocol:
    """`handler` (aiohttp's RequestHandler, as its web.Server makes it) reporting through `reports`."""
    if type(handler) is RequestHandler:
        # A class per ServerErrorReports (one per site, made once): the handler has no room for an attribute.
        if reports.handler_class is None:
            namespace = {"__slots__": (), "reports": reports}
            reports.handler_class = type("QuietRequestHandler", (QuietRequestHandler,), namespace)
        handler.__class__ = reports.handler_class
    return handler
