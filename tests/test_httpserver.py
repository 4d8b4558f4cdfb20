"""GuardedSite against real clients on loopback: header deadline, connection cap, TLS; the loop error limiter;
and the real daemon under a flood of half-open connections with a low open-files limit."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.cli.main import build_parser
from exporter.web import httpserver
from exporter.web.framing import Framing
from exporter.web.httpserver import GuardedSite, fit_max_connections
from exporter.web.looperrors import RepeatLimiter, install_loop_exception_handler
from tests.helpers import DaemonProcess, Samples, wait_for

GET_OK = b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n"
TIMEOUT = 0.3  # the header deadline of most tests here


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def echo(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


async def peer(request: web.Request) -> web.Response:
    # What webconfig's mTLS checks read: the connection's TLS state must reach aiohttp intact.
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    names = [value for kind, value in (cert or {}).get("subjectAltName", ()) if kind == "DNS"]
    return web.Response(text=f"{request.secure} {','.join(names)}")


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[GuardedSite]:
    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_post("/echo", echo)
    app.router.add_get("/peer", peer)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = GuardedSite(runner, "127.0.0.1", 0, **options)
        await site.start()
        yield site
    finally:
        await runner.cleanup()


async def eventually(predicate: Callable[[], object], within: float, what: str) -> None:
    """Polls a condition on the running loop; the failure says what never happened."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for: {what}")
        await asyncio.sleep(0.02)


class Client:
    """A raw HTTP/1.1 client: sends exactly the bytes a test gives it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, site: GuardedSite, tls: ssl.SSLContext | None = None) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", site.port, ssl=tls, server_hostname="localhost" if tls else None
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        length = next(
            int(v) for k, _, v in (x.partition(": ") for x in lines) if k.lower() == "content-length"
        )
        body = await asyncio.wait_for(self.reader.readexactly(length), 5)
        return int(lines[0].split()[1]), body

    async def get(self, path: str = "/ok") -> tuple[int, bytes]:
        await self.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        return await self.response()

    async def closed_within(self, seconds: float) -> float:
        """Seconds until the server closed the connection; fails if it stays open for `seconds`."""
        start = time.monotonic()
        try:
            data = await asyncio.wait_for(self.reader.read(1024), seconds)
        except TimeoutError:  # before OSError, of which it is a subclass
            raise AssertionError(f"connection still open after {seconds}s") from None
        except (OSError, asyncio.IncompleteReadError):
            data = b""  # a reset, or TLS ended without close_notify: closed all the same
        assert data == b"", data
        return time.monotonic() - start

    def close(self) -> None:
        self.writer.transport.abort()


@contextlib.asynccontextmanager
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


async def test_half_sent_request_line_is_closed_after_the_header_timeout() -> None:
    async with serving(read_header_timeout=TIMEOUT) as site, clients() as opened:
        opened.append(client := await Client.connect(site))
        await client.send(b"GET /metr")
        waited = await client.closed_within(5)
        assert waited >= TIMEOUT * 0.8
        assert site.header_timeouts == 1
        await eventually(lambda: site.open_connections == 0, 5, "the slot to be given back")


async def test_keep_alive_idle_time_is_not_counted_but_half_a_second_request_is() -> None:
    async with serving(read_header_timeout=TIMEOUT) as site, clients() as opened:
        opened.append(keep := await Client.connect(site))
        assert await keep.get() == (200, b"ok")
        # A second, half-open connection closing proves more than the timeout has passed since.
        opened.append(witness := await Client.connect(site))
        await witness.closed_within(5)
        assert await keep.get() == (200, b"ok")  # idle longer than the deadline, still served
        await keep.send(b"GET /o")
        await keep.closed_within(5)
        assert site.header_timeouts == 2


async def test_half_request_pipelined_behind_a_complete_one_is_closed() -> None:
    async with serving(read_header_timeout=TIMEOUT) as site, clients() as opened:
        opened.append(client := await Client.connect(site))
        await client.send(GET_OK + b"GET /o")
        assert await client.response() == (200, b"ok")
        await client.closed_within(5)
        assert site.header_timeouts == 1


async def test_slow_headers_in_time_and_slow_bodies_are_served() -> None:
    async with serving(read_header_timeout=0.8) as site, clients() as opened:
        opened.append(client := await Client.connect(site))
        for piece in (b"GET /ok HT", b"TP/1.1\r\nHo", b"st: test\r\n", b"\r\n"):
            await client.send(piece)
            await asyncio.sleep(0.05)  # the client's pace (0.2s of the 0.8s deadline), not synchronisation
        assert await client.response() == (200, b"ok")
        # Bodies are not under the deadline: each takes longer than it, and must be skipped by the framing
        # (a body full of blank lines and "GET" must not look like headers).
        body = b"GET /\r\n\r\n" * 10
        await client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body))
        for part in (body[:30], body[30:60], body[60:]):
            await asyncio.sleep(0.4)  # the client's pace: 1.2s in all
            await client.send(part)
        assert await client.response() == (200, str(len(body)).encode())
        await client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in (b"5;name=x\r\nhello\r\n", b"3\r\n\r\n\r\r\n", b"0\r\nX-Trailer: 1\r\n\r\n"):
            await asyncio.sleep(0.4)  # the client's pace
            await client.send(chunk)
        assert await client.response() == (200, b"8")
        assert await client.get() == (200, b"ok")
        assert site.header_timeouts == 0


async def test_connections_beyond_the_cap_are_refused_while_open_ones_keep_working() -> None:
    registry = CollectorRegistry()
    async with (
        serving(read_header_timeout=30, max_connections=3, registry=registry) as site,
        clients() as opened,
    ):
        for _ in range(3):
            opened.append(client := await Client.connect(site))
            assert await client.get() == (200, b"ok")
        opened.append(extra := await Client.connect(site))
        assert await extra.closed_within(2) < 2  # at once: the header deadline is 30s
        assert site.refused == 1
        for client in opened[:3]:
            assert await client.get() == (200, b"ok")
        opened[0].close()
        await eventually(lambda: site.open_connections == 2, 5, "the closed connection's slot to be free")
        opened.append(again := await Client.connect(site))
        assert await again.get() == (200, b"ok")
        value = registry.get_sample_value
        assert value("tencentcloud_exporter_http_connections_refused_total") == 1
        assert value("tencentcloud_exporter_http_open_connections") == 3
        assert value("tencentcloud_exporter_http_max_connections") == 3
        assert value("tencentcloud_exporter_http_header_timeouts_total") == 0


@pytest.fixture(scope="module")
def pki() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context asking for (optional) client certificates, and a client context presenting one."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_OPTIONAL
    client = ssl.create_default_context()
    ca.configure_trust(client)
    ca.issue_cert("prometheus.example").configure_cert(client)
    return server, client


async def test_tls_requests_are_served_and_stalled_ones_closed(
    pki: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client_tls = pki
    async with serving(read_header_timeout=TIMEOUT, ssl_context=server) as site, clients() as opened:
        opened.append(client := await Client.connect(site, client_tls))
        assert await client.get("/peer") == (200, b"True prometheus.example")
        opened.append(half := await Client.connect(site, client_tls))
        await half.send(b"GET /pe")
        await half.closed_within(5)
        # No handshake at all: the deadline covers it.
        opened.append(silent := await Client.connect(site))
        await silent.closed_within(5)
        assert site.header_timeouts == 2
        assert await client.get("/peer") == (200, b"True prometheus.example")


async def test_tls_handshakes_count_against_the_cap(pki: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """A handshake holds a slot; at the cap it is a request not complete yet, so a newcomer closes the
    oldest one, never a connection whose request was complete (tests/test_red_team_http.py: per peer)."""
    server, client_tls = pki
    async with (
        serving(read_header_timeout=30, max_connections=2, ssl_context=server) as site,
        clients() as opened,
    ):
        opened += [await Client.connect(site), await Client.connect(site)]  # TCP only, no ClientHello
        await eventually(lambda: site.open_connections == 2, 5, "both to be accepted")
        opened.append(client := await Client.connect(site, client_tls))
        assert await client.get("/peer") == (200, b"True prometheus.example")
        assert await opened[0].closed_within(2) < 2  # the oldest, at once: the header deadline is 30s
        opened.append(second := await Client.connect(site, client_tls))
        assert await second.get("/peer") == (200, b"True prometheus.example")
        assert await opened[1].closed_within(2) < 2
        assert await client.get("/peer") == (200, b"True prometheus.example")  # complete: kept
        assert (site.evicted, site.refused, site.open_connections) == (2, 0, 2)
        with pytest.raises((ssl.SSLError, OSError)):  # nothing left to close: refused before any handshake
            await asyncio.wait_for(Client.connect(site, client_tls), 5)
        assert site.refused == 1


async def test_runner_reports_the_bound_address() -> None:
    # The one private aiohttp attribute GuardedSite sets (BaseSite._server) is what runner.addresses reads:
    # this fails if aiohttp stops reading it, and the daemon would no longer log its address.
    runner = web.AppRunner(web.Application(), handle_signals=False)
    await runner.setup()
    try:
        site = GuardedSite(runner, "127.0.0.1", 0)
        await site.start()
        assert site.port != 0
        assert [address[:2] for address in runner.addresses] == [("127.0.0.1", site.port)]
        assert site.name == f"http://127.0.0.1:{site.port}"
    finally:
        await runner.cleanup()
    with pytest.raises(ConnectionRefusedError):  # stopped listening
        await asyncio.open_connection("127.0.0.1", site.port)


async def test_loop_error_reports_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.ERROR, logger="exporter.httpserver")
    install_loop_exception_handler(loop, interval=0.3)
    try:
        for n in range(1000):
            loop.call_exception_handler(
                {
                    "message": f"socket.accept() out of system resource\nsocket: <fd={n} 0x{n:x}>",
                    "exception": OSError(24, "Too many open files"),
                    "socket": object(),
                }
            )
        loop.call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": KeyError()}
        )

        def lines() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "exporter.httpserver"]

        assert len(lines()) == 2  # one per kind
        await eventually(lambda: len(lines()) == 3, 5, "the suppressed repeats to be reported")
        summary = lines()[2]
        assert summary.getMessage() == "event loop error repeated"
        fields = summary.fields  # type: ignore[attr-defined]
        assert fields["suppressed"] == 999
        assert fields["exception"] == "OSError"
        assert fields["report"].startswith("socket.accept() out of system resource")
    finally:
        loop.set_exception_handler(None)


def test_repeat_limiter_counts_and_bounds_kinds() -> None:
    now = [0.0]
    limiter = RepeatLimiter(10.0, lambda: now[0], max_kinds=3)
    assert [limiter.admit("a") for _ in range(1000)].count(None) == 999
    now[0] = 10.0
    assert limiter.due() == [("a", 999)]
    assert limiter.admit("a") is None  # the summary restarted the interval
    now[0] = 20.0
    assert limiter.admit("a") == 1
    assert limiter.admit("b") == 0
    assert limiter.admit("c") == 0
    assert limiter.admit("d") == 0  # the table is full: "d" is counted as "other" from now on
    assert limiter.admit("e") is None
    now[0] = 30.0
    assert ("other", 1) in limiter.due()


def test_framing_follows_requests_byte_by_byte() -> None:
    stream = [
        (b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 1),
        (b"POST /e HTTP/1.1\r\ncontent-length:  12\r\n\r\n" + b"\r\n\r\nGET / \r\n\r\n", 2),
        (b"POST /e HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 3),
        (b"4;x=y\r\n\r\n\r\n\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n", 3),
        (b"\r\n\r\nGET /last HTTP/1.0\r\n\r\n", 4),
    ]
    framing = Framing()
    for part, started in stream:
        for i in range(len(part)):
            framing.feed(part[i : i + 1])
        assert not framing.pending, part
        assert framing.started == started, part
    framing.feed(b"G")
    assert framing.pending
    assert framing.started == 5
    for odd in (b"Content-Length: 1, 2", b"Content-Length: -1", b"Transfer-Encoding: gzip"):
        lost = Framing()
        lost.feed(b"POST / HTTP/1.1\r\n" + odd + b"\r\n\r\n")
        assert lost.pending, odd  # framing it cannot follow keeps the deadline running
    for size in (b"-1", b"0x1", b"1_0"):
        lost = Framing()
        lost.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n")
        assert lost.pending, size


_bodies = st.binary(max_size=300) | st.sampled_from([b"\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"0\r\n\r\n"])


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    body = draw(_bodies)
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    head = b"%s /p HTTP/1.1\r\nHost: x\r\n" % draw(st.sampled_from([b"GET", b"POST", b"PUT"]))
    if framing == "none" or (framing == "length" and not body):
        return head + b"\r\n"
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
    encoded = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + encoded + b"0\r\nTrailer: t\r\n\r\n"


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(_request(), min_size=1, max_size=5), st.lists(st.integers(1, 50), min_size=1), st.data())
def test_framing_agrees_with_the_request_boundaries(
    requests: list[bytes], sizes: list[int], data: st.DataObject
) -> None:
    framing = Framing()
    for number, request in enumerate(requests, 1):
        pos = 0
        while pos < len(request):  # the request arrives in reads of arbitrary sizes
            size = sizes[pos % len(sizes)]
            framing.feed(request[pos : pos + size])
            pos += size
            assert framing.started == number
        assert not framing.pending, request
        if data.draw(st.booleans()):
            framing.feed(b"\r\n")  # a stray empty line between requests starts nothing
            assert not framing.pending


def test_cap_is_lowered_to_leave_descriptors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="exporter.httpserver")
    assert fit_max_connections(512, limit=100_000, in_use=20) == 512
    assert not caplog.records
    assert fit_max_connections(512, limit=256, in_use=20) == 256 - 20 - 64
    assert len(caplog.records) == 1
    assert caplog.records[0].fields["effective"] == 172  # type: ignore[attr-defined]


def test_flags() -> None:
    args = build_parser().parse_args([])
    assert (args.read_header_timeout, args.max_connections) == (10.0, 512)
    args = build_parser().parse_args(["--web.read-header-timeout", "500ms", "--web.max-connections", "64"])
    assert (args.read_header_timeout, args.max_connections) == (0.5, 64)
    for bad in (["--web.read-header-timeout", "0s"], ["--web.max-connections", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def test_open_files_soft_limit_is_raised_to_the_hard_limit() -> None:
    # In a child: the test process' own limits stay as they are.
    code = (
        "import resource; from exporter.web.httpserver import raise_open_files_limit as r; "
        "print(r(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30, preexec_fn=lower
    )
    assert out.stdout.split() == ["256", "256", "256"]


def _fd_limit_256() -> None:
    # Below the hard limit on purpose: the exporter raises the soft limit to the hard one at start.
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))


@contextlib.contextmanager
def half_open(address: tuple[str, int], count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for n in range(count):
            try:
                sock = socket.create_connection(address, timeout=5)
            except OSError as exc:  # what today's aiohttp server does once out of descriptors
                raise AssertionError(f"the exporter stopped accepting after {n} connections: {exc}") from None
            opened.append(sock)
            with contextlib.suppress(OSError):  # refused ones may already be closed
                sock.sendall(b"GET /metr")
            sock.setblocking(False)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


def _last_poll(samples: Samples) -> float:
    return max(
        (v for _, v in samples.all("tencentcloud_task_last_poll_success_timestamp_seconds")), default=0
    )


def _requests_sent(samples: Samples) -> float:
    return sum(v for _, v in samples.all("tencentcloud_api_requests_total"))


def test_daemon_keeps_serving_and_polling_through_a_half_open_flood() -> None:
    args = ["--demo", "--demo.speed", "20", "--web.max-connections", "64", "--web.read-header-timeout", "2s"]
    with DaemonProcess(args, preexec_fn=_fd_limit_256) as daemon:
        limits = Path(f"/proc/{daemon.pid}/limits").read_text()
        assert any(
            line.split()[3:5] == ["256", "256"] for line in limits.splitlines() if "open files" in line
        )
        wait_for(lambda: _last_poll(daemon.scrape()) > 0, 20, "the demo's first polls")
        host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
        sent = _requests_sent(daemon.scrape())
        flood_start = time.time()
        # More than the cap, and more than the whole open-files limit.
        with half_open((host, int(port)), 300) as socks:
            # Beyond the cap they are refused at once; the 64 admitted ones once the 2s deadline passes.
            # Meanwhile a fresh scrape is refused too (the cap is full); the polls go on regardless.
            wait_for(lambda: all(_closed(s) for s in socks), 20, "every half-open connection to be closed")
        wait_for(lambda: _last_poll(daemon.scrape()) > time.time() - 2, 10, "polls to keep succeeding")
        samples = daemon.scrape()
        assert _last_poll(samples) > flood_start
        assert _requests_sent(samples) > sent
        failed = [
            labels
            for labels, _ in samples.all("tencentcloud_api_errors_total")
            if "Transport" in labels["code"]
        ]
        assert not failed, failed  # every poll sent during the flood got its answer
    stderr = sum(len(line) + 1 for line in daemon.lines)
    assert stderr < 200_000, stderr
    assert not [line for line in daemon.lines if "Too many open files" in line]


def test_a_wildcard_address_serves_ipv4_alone_where_the_host_has_no_ipv6(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel booted with ipv6.disable=1 refuses IPv6 sockets; `:PORT` must still serve (asyncio's
    create_server skips the family too), while an IPv6 address asked for by name still fails."""
    real = socket.create_server

    def without_ipv6(address: Any, *, family: int = socket.AF_INET, **kwargs: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(address, family=family, **kwargs)

    monkeypatch.setattr(socket, "create_server", without_ipv6)
    sockets = httpserver.bind([(None, 0)])
    try:
        assert [s.family for s in sockets] == [socket.AF_INET]
    finally:
        for sock in sockets:
            sock.close()
    with pytest.raises(httpserver.ListenError, match="Address family not supported"):
        httpserver.bind([("::1", 0)])
