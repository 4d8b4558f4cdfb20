"""The listening side of the HTTP server, hardened against clients that hold connections open.

aiohttp's server has no deadline for request headers: a client that sends half a request line keeps its
descriptor for good, and a thousand of them exhaust the open-files limit (then scrapes, API polls and
accept() fail). `GuardedSite` serves an aiohttp runner with:

- a request-header deadline, like Go's ReadHeaderTimeout: the first request's headers must be complete
  `read_header_timeout` after the accept (TLS handshake included); each later request on a keep-alive
  connection gets that long from its first byte, so idle time between requests does not count. Bodies are
  not covered. Request boundaries come from following HTTP/1.1 framing (Content-Length, chunked) on the
  bytes aiohttp gets, under the TLS layer; framing it cannot follow (aiohttp answers 400) starts the clock.
- a cap on open connections (TLS handshakes included), so descriptors stay free for the API client. At the
  cap a new connection makes room by closing the oldest connection still waiting for its request headers,
  taken from the peer that holds the most connections (an IPv4 address, an IPv6 /64); when no connection is
  waiting for headers, the new one is closed right after accept(). So one client holding unfinished requests
  and reconnecting as they time out closes its own connections, never a scrape whose request is complete,
  and a scraper from another address gets in. A per-peer share alone would still let a few addresses fill
  the cap, and the oldest-first rule alone would let a fast enough flood close a scrape's connection in the
  moment between its accept and its headers; the two together keep a client from using more than the
  connections it already has.

One site serves every listening socket: those `bind()` opens for each --web.listen-address, or those systemd
passed (`systemd_sockets()`, --web.systemd-socket), both in `exporter.web.listen` and importable from here.
The cap counts connections on all of them together.

The framing those deadlines follow is in `exporter.web.framing`; the rate-limited reports (event loop
errors, aiohttp's own error reports and answers, which `quiet()` takes over for each connection) are in
`exporter.web.looperrors`.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import resource
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.config.parser import parse_duration
from exporter.web.framing import Framing
from exporter.web.listen import ListenError as ListenError
from exporter.web.listen import bind as bind
from exporter.web.listen import show_address as show_address
from exporter.web.listen import systemd_sockets as systemd_sockets
from exporter.web.looperrors import REPORT_INTERVAL, RepeatLimiter, ServerErrorReports, quiet

log = logging.getLogger("exporter.httpserver")

DEFAULT_READ_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 512  # as Prometheus' --web.max-connections
# Descriptors kept free for everything but served connections: the API client's connections, the
# listening socket, log and state files.
FD_RESERVE = 64


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


def peer_key(address: object) -> str:
    """What the connection cap counts connections by: the client's IPv4 address, or its IPv6 /64 (one host
    commonly holds a whole /64); an IPv4-mapped IPv6 address counts as the IPv4 one."""
    host = address[0] if isinstance(address, tuple) and address else address
    try:
        ip = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


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


class _Connection(asyncio.Protocol):
    """One admitted connection: the header deadline, TLS, then aiohttp's own protocol underneath."""

    def __init__(self, site: GuardedSite, peer: str = "") -> None:
        self._site = site
        self.peer = peer  # what the connection cap counts by: see peer_key()
        self._loop = asyncio.get_running_loop()
        self._raw: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._framing = Framing()
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

    @property
    def awaiting_headers(self) -> bool:
        """Connected, and its request (the first, or one started on a keep-alive connection) is unfinished."""
        return self._raw is not None and not self._lost and self._framing.pending

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
        inner = quiet(self._site._protocol_factory(), self._site.reports)
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

    It listens on `host` and `port`, or on `sockets` (already listening; the site closes them when stopped).

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
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        if read_header_timeout <= 0:
            raise ValueError(f"read_header_timeout must be positive, got {read_header_timeout}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port, self._listen_backlog = host, port, backlog
        self._given = list(sockets)
        self._listeners: _Listeners | None = None
        self.ssl_context = ssl_context
        self.read_header_timeout = read_header_timeout
        self.requested_max_connections = self.max_connections = max_connections
        self.refused = self.header_timeouts = self.evicted = 0
        self._open: set[_Connection] = set()
        # Open connections by peer, oldest first (dicts keep insertion order).
        self._by_peer: dict[str, dict[_Connection, None]] = {}
        self.reports = ServerErrorReports()
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
        if self._listeners is not None:
            host = str(self._listeners.sockets[0].getsockname()[0])
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
        if self._given:
            return self._given
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
                sock, address = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except Exception as exc:  # out of descriptors or buffers, say: asyncio's own loop also waits 1s
                loop.call_exception_handler({"message": "socket.accept() failed", "exception": exc})
                await asyncio.sleep(1.0)
                continue
            if len(self._open) >= self.max_connections and not self._evict():
                sock.close()  # at once: the descriptor is free again before the next accept()
                self._refuse()
                await asyncio.sleep(0)  # a flood of refusals must not keep the loop from everything else
                continue
            connection = _Connection(self, peer_key(address))
            self._open.add(connection)
            self._by_peer.setdefault(connection.peer, {})[connection] = None
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

    def _evict(self) -> bool:
        """Closes the oldest connection awaiting its request headers of the peer holding the most
        connections (the next peer if that one has none); False if no connection awaits headers."""
        for peer in sorted(self._by_peer, key=lambda p: len(self._by_peer[p]), reverse=True):
            for connection in self._by_peer[peer]:
                if connection.awaiting_headers:
                    self.evicted += 1
                    log.debug("connection closed to make room: request headers not complete (cap reached)")
                    connection.abort()
                    self._release(connection)  # its descriptor is closed in the next loop iteration
                    return True
        return False

    def _release(self, connection: _Connection) -> None:
        self._open.discard(connection)
        held = self._by_peer.get(connection.peer)
        if held is not None:
            held.pop(connection, None)
            if not held:
                del self._by_peer[connection.peer]

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
        yield CounterMetricFamily(
            n + "connections_evicted",
            "Closed to make room at the cap: request headers not complete",
            s.evicted,
        )
        yield CounterMetricFamily(
            n + "malformed_requests", "Refused by the HTTP parser (400), logged at debug", s.reports.malformed
        )
