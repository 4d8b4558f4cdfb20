"""The listening side of the HTTP server, hardened against clients that hold connections open.

aiohttp's server has no deadline for request headers: a client that sends half a request line keeps its
descriptor for good, and a thousand of them exhaust the open-files limit (then scrapes, API polls and
accept() fail). `GuardedSite` serves an aiohttp runner with:

- a request-header deadline, like Go's ReadHeaderTimeout: the first request's headers must be complete
  `read_header_timeout` after the accept (TLS handshake included); each later request on a keep-alive
  connection gets that long from its first byte, so idle time between requests does not count. Bodies are
  not covered. Request boundaries come from following HTTP/1.1 framing (Content-Length, chunked) on the
  bytes aiohttp gets, under the TLS layer; framing it cannot follow (aiohttp answers 400) starts the clock.
- a cap on open connections (TLS handshakes included): beyond it a new connection is closed right after
  accept(), so descriptors stay free for the API client.

`install_loop_exception_handler` rate-limits repeated event loop error reports (accept() failures).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import resource
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.config import parse_duration

log = logging.getLogger("exporter.httpserver")

DEFAULT_READ_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 512  # as Prometheus' --web.max-connections
# Descriptors kept free for everything but served connections: the API client's connections, the
# listening socket, log and state files.
FD_RESERVE = 64
REPORT_INTERVAL = 10.0

# Longer lines are refused by aiohttp (max_line_size, max_field_size 8190); this only bounds memory.
_MAX_LINE = 16 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


def read_header_timeout_flag(text: str) -> float:
    """argparse type of --web.read-header-timeout: a positive duration (`10s`, `500ms`, plain seconds)."""
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 10s, got {text!r}")
    return seconds


def max_connections_flag(text: str) -> int:
    """argparse type of --web.max-connections: a positive integer."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def raise_open_files_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit, as Go programs do at start; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or (hard != resource.RLIM_INFINITY and soft > hard):
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. macOS refuses an infinite soft limit
        log.debug("open files limit not raised", extra={"fields": {"limit": soft, "error": str(exc)}})
        return soft
    return hard


def _open_descriptors() -> int:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # listdir's own descriptor is listed too
        except OSError:
            continue
    return 0


def fit_max_connections(
    requested: int, *, limit: int | None = None, in_use: int | None = None, reserve: int = FD_RESERVE
) -> int:
    """The connection cap that leaves `reserve` descriptors free under the open-files limit; logs a warning
    when that is below `requested`. `limit` and `in_use` default to this process' values."""
    if limit is None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        return requested
    if in_use is None:
        in_use = _open_descriptors()
    room = limit - in_use - reserve
    if requested <= room:
        return requested
    effective = max(1, room)
    fields = {"requested": requested, "effective": effective, "open_files_limit": limit, "open_files": in_use}
    log.warning("--web.max-connections lowered to keep file descriptors free", extra={"fields": fields})
    return effective


class _Framing:
    """Follows one connection's request stream (RFC 9112 framing) only to tell whether request headers are
    pending: bodies are skipped by Content-Length or chunk sizes, never buffered."""

    _HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _LOST = range(7)

    def __init__(self) -> None:
        self._state = self._HEAD
        self._line = bytearray()
        self._request_line = False  # the current request's request line has been read
        self._lengths: list[bytes] = []
        self._codings: list[bytes] = []
        self._remaining = 0
        # A connection starts waiting for its first request's headers.
        self.pending = True
        self.started = 1  # requests whose first byte arrived (the first one counts from the accept)

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and self._state != self._LOST:
            if self._state in (self._BODY, self._CHUNK_DATA):
                step = min(self._remaining, end - pos)
                pos += step
                self._remaining -= step
                if self._remaining == 0:
                    self._state = self._HEAD if self._state == self._BODY else self._CHUNK_END
                continue
            if self._state == self._HEAD and not self._request_line and not self._line:
                # Empty lines before a request line are ignored (RFC 9112 2.2), so they start no request.
                while pos < end and data[pos] in b"\r\n":
                    pos += 1
                if pos == end:
                    break
                if not self.pending:
                    self.pending = True
                    self.started += 1
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            if len(self._line) < _MAX_LINE:
                self._line += data[pos : min(stop, pos + _MAX_LINE - len(self._line))]
            pos = stop + 1 if newline >= 0 else end
            if newline >= 0:
                line = bytes(self._line).rstrip(b"\r")
                self._line.clear()
                self._on_line(line)
        if self._state == self._LOST:
            self.pending = True  # framing unknown: the clock runs until aiohttp or the deadline closes it

    def _on_line(self, line: bytes) -> None:
        if self._state == self._HEAD:
            if not self._request_line:
                self._request_line = True
            elif line:
                if line[:1] in b" \t":  # obsolete line folding: aiohttp refuses it, nothing to note
                    return
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name in (b"content-length", b"transfer-encoding"):
                    # aiohttp takes at most 128 header lines (max_headers), which bounds these lists.
                    (self._lengths if name == b"content-length" else self._codings).append(value)
            else:
                self._end_of_headers()
        elif self._state == self._CHUNK_SIZE:
            size = line.partition(b";")[0].strip()
            if not _CHUNK_SIZE.fullmatch(size):  # int() alone would take "0x1", "-1" or "1_0"
                self._state = self._LOST
                return
            self._remaining = int(size, 16)
            self._state = self._CHUNK_DATA if self._remaining else self._TRAILERS
        elif self._state == self._CHUNK_END:
            self._state = self._CHUNK_SIZE if not line else self._LOST
        elif self._state == self._TRAILERS and not line:
            self._state = self._HEAD

    def _end_of_headers(self) -> None:
        self.pending = False
        self._request_line = False
        lengths, codings = self._lengths, self._codings
        self._lengths, self._codings = [], []
        if codings:
            names = [c.strip().lower() for value in codings for c in value.split(b",") if c.strip()]
            self._state = self._CHUNK_SIZE if names and names[-1] == b"chunked" else self._LOST
            return
        values = {v.strip() for value in lengths for v in value.split(b",")}
        if not values:
            self._state = self._HEAD
        elif len(values) == 1 and (value := values.pop()).isdigit() and len(value) <= 18:
            self._remaining = int(value)
            self._state = self._BODY if self._remaining else self._HEAD
        else:
            self._state = self._LOST


class _Connection(asyncio.Protocol):
    """One admitted connection: the header deadline, TLS, then aiohttp's own protocol underneath."""

    def __init__(self, site: GuardedSite) -> None:
        self._site = site
        self._loop = asyncio.get_running_loop()
        self._raw: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._framing = _Framing()
        self._timer: asyncio.TimerHandle | None = None
        # Under TLS, decrypted bytes can arrive between the handshake and the moment aiohttp is attached.
        self._early: list[bytes] = []
        self._early_eof = False
        self._writing_paused = False
        self._lost = False

    # -- asyncio.Protocol: first the raw TCP transport calls these, then (under TLS) the TLS layer does.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        self._raw = raw
        self._arm()
        tls = self._site.ssl_context
        if tls is None:
            self._attach(raw)
        else:
            # Nothing may reach this protocol before start_tls() puts the TLS layer in between.
            raw.pause_reading()
            self._site._spawn(self._start_tls(raw, tls))

    def data_received(self, data: bytes) -> None:
        started = self._framing.started
        self._framing.feed(data)
        if not self._framing.pending:
            self._disarm()
        elif self._timer is None or self._framing.started != started:
            self._arm()
        if self._inner is None:
            self._early.append(data)
        else:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            self._early_eof = True
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._disarm()
        self._site._release(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._inner is not None:
            self._inner.resume_writing()

    # -- internals

    def itself(self) -> _Connection:
        """The protocol factory for connect_accepted_socket(): this connection was counted beforehand."""
        return self

    @property
    def attached(self) -> bool:
        return self._inner is not None

    def abort(self) -> None:
        if self._raw is not None and not self._raw.is_closing():
            self._raw.abort()

    async def _start_tls(self, raw: asyncio.Transport, tls: ssl.SSLContext) -> None:
        transport: asyncio.Transport | None = None
        try:
            if not raw.is_closing():
                # The header deadline, already running, bounds the handshake (asyncio's own limit is 60s).
                transport = await self._loop.start_tls(
                    raw, self, tls, server_side=True, ssl_handshake_timeout=self._site.read_header_timeout + 1
                )
        except Exception as exc:  # handshake failures are the client's problem, never worth more than debug
            log.debug("TLS handshake failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
        finally:
            # start_tls() hands back None when the connection closed during the handshake; a failed
            # handshake never reaches connection_lost() either, so the slot is given back here.
            if transport is None or self._lost or transport.is_closing():
                self._disarm()
                self._site._release(self)
                self.abort()
                transport = None
        if transport is not None:
            self._attach(transport)

    def _attach(self, transport: asyncio.Transport) -> None:
        inner = self._site._protocol_factory()
        self._inner = inner
        inner.connection_made(transport)
        if self._writing_paused:
            inner.pause_writing()
        if self._early:
            data, self._early = b"".join(self._early), []
            inner.data_received(data)
        if self._early_eof:
            inner.eof_received()

    def _arm(self) -> None:
        self._disarm()
        self._timer = self._loop.call_later(self._site.read_header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._site.header_timeouts += 1
        log.debug("request headers not complete in time: connection closed")
        self.abort()


class _Listeners:
    """The listening sockets, with the two things aiohttp's runner uses of an asyncio server."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self.sockets = tuple(sockets)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite with a request-header deadline and a connection cap; metrics with `registry`.

    It accepts by itself: under asyncio's accept loop a refused socket lives on for a few loop iterations,
    and a burst of them could use more descriptors than the cap saves.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int = 0,
        *,
        read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if read_header_timeout <= 0:
            raise ValueError(f"read_header_timeout must be positive, got {read_header_timeout}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port, self._listen_backlog = host, port, backlog
        self._listeners: _Listeners | None = None
        self.ssl_context = ssl_context
        self.read_header_timeout = read_header_timeout
        self.requested_max_connections = self.max_connections = max_connections
        self.refused = self.header_timeouts = 0
        self._open: set[_Connection] = set()
        self._accepting: list[asyncio.Task[None]] = []
        self._handshakes: set[asyncio.Task[None]] = set()
        self._refusals = RepeatLimiter(REPORT_INTERVAL)
        # aiohttp's web.Server is the factory of its per-connection protocol, which runs under _Connection.
        self._protocol_factory: Callable[[], asyncio.Protocol] = cast(web.Server, runner.server)
        if registry is not None:
            registry.register(_SiteCollector(self))

    @property
    def name(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host = self._host or "0.0.0.0"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{self.port}"

    @property
    def port(self) -> int:
        """The port given, or once started the one bound (the OS chooses for port 0)."""
        return self._port

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self) -> None:
        await super().start()
        self.max_connections = fit_max_connections(self.requested_max_connections)
        loop = asyncio.get_running_loop()
        self._listeners = _Listeners(await self._listen(loop))
        self._port = int(self._listeners.sockets[0].getsockname()[1])
        # The one private attribute used: BaseRunner.addresses and BaseSite.stop() read the listening server
        # from BaseSite._server (its .sockets and .close() only), as aiohttp's own TCPSite sets it.
        # test_httpserver checks runner.addresses.
        self._server = cast(asyncio.AbstractServer, self._listeners)
        self._accepting = [loop.create_task(self._accept(loop, sock)) for sock in self._listeners.sockets]

    async def stop(self) -> None:
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        await super().stop()  # closes the listening sockets; aiohttp's runner then shuts connections down
        # Connections still in their TLS handshake are unknown to aiohttp: close them here.
        for connection in list(self._open):
            if not connection.attached:
                connection.abort()

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> list[socket.socket]:
        # One socket per address, as asyncio's create_server binds them (IPv6 ones IPv6-only).
        infos = await loop.getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        sockets: list[socket.socket] = []
        try:
            for family, _, _, _, address in dict.fromkeys(infos):
                sockets.append(socket.create_server(address, family=family, backlog=self._listen_backlog))
                sockets[-1].setblocking(False)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    async def _accept(self, loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except Exception as exc:  # out of descriptors or buffers, say: asyncio's own loop also waits 1s
                loop.call_exception_handler({"message": "socket.accept() failed", "exception": exc})
                await asyncio.sleep(1.0)
                continue
            if len(self._open) >= self.max_connections:
                sock.close()  # at once: the descriptor is free again before the next accept()
                self._refuse()
                await asyncio.sleep(0)  # a flood of refusals must not keep the loop from everything else
                continue
            connection = _Connection(self)
            self._open.add(connection)
            sock.setblocking(False)
            try:
                await loop.connect_accepted_socket(connection.itself, sock)
            except Exception as exc:  # never let one connection stop the accept loop
                self._release(connection)
                sock.close()
                loop.call_exception_handler({"message": "accepted connection not served", "exception": exc})

    def _refuse(self) -> None:
        self.refused += 1
        repeats = self._refusals.admit("refused")
        if repeats is not None:
            log.warning(
                "connection refused: too many open connections (--web.max-connections)",
                extra={"fields": {"max_connections": self.max_connections, "suppressed": repeats}},
            )

    def _release(self, connection: _Connection) -> None:
        self._open.discard(connection)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._handshakes.add(task)  # the loop keeps only a weak reference to tasks
        task.add_done_callback(self._handshakes.discard)


class _SiteCollector:
    def __init__(self, site: GuardedSite) -> None:
        self._site = site

    def collect(self) -> Iterable[Metric]:
        s, n = self._site, "tencentcloud_exporter_http_"
        yield GaugeMetricFamily(n + "open_connections", "Open connections, TLS too", s.open_connections)
        yield GaugeMetricFamily(n + "max_connections", "Cap on open connections", s.max_connections)
        yield CounterMetricFamily(n + "connections_refused", "Closed at once: cap reached", s.refused)
        yield CounterMetricFamily(n + "header_timeouts", "Closed: request headers late", s.header_timeouts)


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
