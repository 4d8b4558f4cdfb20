"""What the tests of `--web.config.file` re-read while serving share (test_webconfig_reload.py and
test_webconfig_reload_tls.py): a private CA whose files are rewritten on disk, servers on loopback (plain
aiohttp sites and the exporter's GuardedSite), clients that report what they saw, and polls with deadlines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from exporter.web.httpserver import GuardedSite
from exporter.web.reload import WebConfigReloader

INTERVAL = 0.02  # seconds between checks: fast tests; production checks once a second
PASSWORD = "rotate-Me-0123"
TIMEOUT = aiohttp.ClientTimeout(total=10)


def write_atomically(path: Path, data: bytes | str) -> None:
    """As a careful operator (or cert-manager) writes: a temporary file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


@dataclass
class Server:
    """A server certificate and key, as files are written."""

    leaf: trustme.LeafCert
    name: str

    @property
    def chain(self) -> bytes:
        return b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems)

    @property
    def key(self) -> bytes:
        return self.leaf.private_key_pem.bytes()

    @property
    def serial(self) -> int:
        return x509.load_pem_x509_certificate(self.leaf.cert_chain_pems[0].bytes()).serial_number


class Pki:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.client = self.client_ca.issue_cert("prometheus.example")
        self.other_client = self.client_ca.issue_cert("intruder.example")
        self.count = 0

    def server(self) -> Server:
        """A new server certificate for 127.0.0.1, each with its own serial and common name."""
        self.count += 1
        name = f"server-{self.count}"
        return Server(self.ca.issue_cert("127.0.0.1", "localhost", common_name=name), name)

    def install(self, server: Server, directory: Path | None = None) -> None:
        """Writes the certificate, then the key, each atomically (two renames, as `mv a b; mv c d` does)."""
        directory = directory or self.directory
        write_atomically(directory / "server.pem", server.chain)
        write_atomically(directory / "server.key", server.key)

    def client_context(self, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return context


TLS_YAML = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"


def tiny_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello\n")

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/metrics", hello)
    return app


@asynccontextmanager
async def serving(
    reloader: WebConfigReloader, site_kind: str = "tcp", app: web.Application | None = None
) -> AsyncIterator[str]:
    """Serves an app (a tiny one by default) guarded by `reloader` on a free loopback port, as the exporter
    does, the reloader checking meanwhile."""
    if app is None:
        app = tiny_app()
        for guard in reversed(reloader.middlewares()):
            app.middlewares.insert(0, guard)
    app.on_response_prepare.append(reloader.add_headers)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site: web.BaseSite
        if site_kind == "guarded":  # the exporter's own listener (TLS through loop.start_tls)
            site = GuardedSite(runner, "127.0.0.1", 0, ssl_context=reloader.ssl_context)
        else:
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=reloader.ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        async with reloader:
            yield f"{'https' if reloader.ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Seen:
    status: int
    headers: dict[str, str]
    body: str


async def fetch(
    url: str,
    context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> Seen:
    """One GET with aiohttp, on a new connection."""
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(url, ssl=context if context is not None else True, headers=headers) as response,
    ):
        return Seen(response.status, dict(response.headers), await response.text())


class Connection:
    """One connection speaking HTTP/1.1 with keep-alive; under TLS it knows the certificate it was shown."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.serial: int | None = None
        self.subject: str | None = None
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            cert = x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))
            self.serial = cert.serial_number
            self.subject = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    @classmethod
    async def open(cls, url: str, context: ssl.SSLContext | None = None) -> Connection:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context), TIMEOUT.total
        )
        return cls(reader, writer)

    async def get(self, path: str = "/", auth: tuple[str, str] | None = None) -> tuple[int, str]:
        """Status and body of one GET on this connection, which stays open."""
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if auth is not None:
            request += f"Authorization: Basic {base64.b64encode(':'.join(auth).encode()).decode()}\r\n"
        self.writer.write(f"{request}\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT.total)
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await self.reader.readexactly(int(fields["Content-Length"]))
        return int(lines[0].split()[1]), body.decode()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


async def certificate(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    """The serial and common name of the certificate a new connection is shown, after a 200 over it."""
    connection = await Connection.open(url, context)
    try:
        assert await connection.get("/metrics") == (200, "hello\n")
        assert connection.serial is not None, "a TLS connection"
        assert connection.subject is not None
        return connection.serial, connection.subject
    finally:
        await connection.close()


async def until(probe: Callable[[], Awaitable[object]], what: str, within: float = 10.0) -> None:
    """Polls an async condition until it holds; fails naming what never happened."""
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for: {what}")
        await asyncio.sleep(0.01)  # a poll, not a guess at how long the reload takes


async def checks_pass(reloader: WebConfigReloader, count: int) -> None:
    """Waits until the reloader made `count` more checks of the files."""
    target = reloader.checks + count
    await until(lambda: as_probe(reloader.checks >= target), f"{count} more checks of the files")


async def as_probe(value: bool) -> bool:
    """A value already known, as the awaitable `until` polls."""
    return value


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


def metric(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(f"tencentcloud_exporter_web_config_{name}")
