"""`--web.config.file` re-read while serving: real TLS (trustme) and real HTTP on loopback, files rewritten on
disk while the server runs, never restarted. Every wait polls a condition with a deadline."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from exporter.config.parser import parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import Daemon
from exporter.web import reload as webreload
from exporter.web.app import create_app
from exporter.web.config import WebConfigError
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


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


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
    await until(lambda: _true(reloader.checks >= target), f"{count} more checks of the files")


async def _true(value: bool) -> bool:
    return value


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


def metric(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(f"tencentcloud_exporter_web_config_{name}")


# --- Certificates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("site_kind", ["tcp", "guarded"])
async def test_rotated_certificate_is_served_to_new_connections(pki: Pki, site_kind: str) -> None:
    first, second = pki.server(), pki.server()
    pki.install(first)
    path = pki.directory / "web.yml"
    write_atomically(path, TLS_YAML)
    reloader = WebConfigReloader(path, interval=INTERVAL)
    async with serving(reloader, site_kind) as url:
        kept = await Connection.open(url, pki.client_context())
        try:
            assert (kept.serial, kept.subject) == (first.serial, first.name)
            assert await kept.get("/metrics") == (200, "hello\n")

            pki.install(second)

            async def new_certificate() -> bool:
                return (await certificate(url, pki.client_context()))[0] == second.serial

            await until(new_certificate, "a new connection to be shown the new certificate")
            assert await certificate(url, pki.client_context()) == (second.serial, second.name)
            # The connection opened before the rotation is still served, on the session it started with.
            assert await kept.get("/metrics") == (200, "hello\n")
            assert kept.serial == first.serial
        finally:
            await kept.close()
    assert (reloader.reloads, reloader.failures) == (1, 0), "the certificate and key were read together"


async def test_secret_volume_symlink_swap(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """A Kubernetes secret volume: the files are links through `..data`, swapped in one rename."""
    caplog.set_level(logging.INFO, logger="exporter.webconfig")
    first, second = pki.server(), pki.server()
    tls = pki.directory / "tls"
    for version, server in (("..v1", first), ("..v2", second)):
        (tls / version).mkdir(parents=True)
        pki.install(server, tls / version)
    (tls / "..data").symlink_to("..v1")
    for name in ("server.pem", "server.key"):
        (tls / name).symlink_to(f"..data/{name}")
    path = pki.directory / "web.yml"
    write_atomically(path, TLS_YAML.replace("server.", "tls/server."))
    reloader = WebConfigReloader(path, interval=INTERVAL)
    async with serving(reloader) as url:
        assert (await certificate(url, pki.client_context()))[0] == first.serial
        (tls / "..data_tmp").symlink_to("..v2")
        os.replace(tls / "..data_tmp", tls / "..data")

        async def swapped() -> bool:
            return (await certificate(url, pki.client_context()))[0] == second.serial

        await until(swapped, "the certificate behind the swapped link to be served")
    assert reloader.failures == 0
    assert len(records(caplog, "web config reloaded")) == 1


async def test_broken_rewrite_keeps_the_last_good_certificate_and_logs_once(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.webconfig")
    first, third = pki.server(), pki.server()
    pki.install(first)
    path = pki.directory / "web.yml"
    write_atomically(path, TLS_YAML)
    reloader = WebConfigReloader(path, interval=INTERVAL)
    registry = CollectorRegistry()
    reloader.register(registry)
    assert metric(registry, "last_reload_successful") == 1
    started = metric(registry, "last_reload_success_timestamp_seconds")
    failed = "web config reload failed; keeping the running web config"
    garbage = "-----BEGIN PRIVATE KEY-----\nTOPSECRETGARBAGE\n-----END PRIVATE KEY-----\n"
    async with serving(reloader) as url:
        write_atomically(pki.directory / "server.key", garbage)
        await until(lambda: _true(bool(records(caplog, failed))), "the failed reload to be logged")
        assert (await certificate(url, pki.client_context()))[0] == first.serial, (
            "the last good one is served"
        )
        await checks_pass(reloader, 5)
        [error] = records(caplog, failed)  # once per change, not once per check
        assert error.levelno == logging.ERROR
        assert "tls_server_config.key_file: cannot load the private key" in error.fields["error"]  # type: ignore[attr-defined]
        assert "TOPSECRETGARBAGE" not in caplog.text
        assert metric(registry, "last_reload_successful") == 0
        assert metric(registry, "last_reload_success_timestamp_seconds") == started

        # Another broken change is logged again: once per change.
        write_atomically(pki.directory / "server.key", garbage + "\n")
        await until(lambda: _true(len(records(caplog, failed)) == 2), "the second broken change to be logged")

        pki.install(third)

        async def fixed() -> bool:
            return (await certificate(url, pki.client_context()))[0] == third.serial

        await until(fixed, "a fixed pair to be served")
        assert metric(registry, "last_reload_successful") == 1
        assert (metric(registry, "last_reload_success_timestamp_seconds") or 0) >= (started or 0)
    assert (reloader.reloads, reloader.failures) == (1, 2)


async def test_a_certificate_named_before_it_exists_is_loaded_when_it_appears(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.webconfig")
    first, second = pki.server(), pki.server()
    pki.install(first)
    path = pki.directory / "web.yml"
    write_atomically(path, TLS_YAML)
    reloader = WebConfigReloader(path, interval=INTERVAL)
    async with serving(reloader) as url:
        write_atomically(path, TLS_YAML.replace("server.", "next."))
        await until(lambda: _true(reloader.failures == 1), "the config naming missing files to be refused")
        [error] = records(caplog, "web config reload failed; keeping the running web config")
        assert "file not found" in error.fields["error"]  # type: ignore[attr-defined]
        write_atomically(pki.directory / "next.key", second.key)
        write_atomically(pki.directory / "next.pem", second.chain)

        async def appeared() -> bool:
            return (await certificate(url, pki.client_context()))[0] == second.serial

        await until(appeared, "the certificate that appeared to be served")


# --- Client certificates ---------------------------------------------------------------------------------


async def test_mtls_and_allowed_sans_turned_on_without_restart(pki: Pki) -> None:
    pki.install(pki.server())
    write_atomically(pki.directory / "clients.pem", pki.client_ca.cert_pem.bytes())
    path = pki.directory / "web.yml"
    write_atomically(path, TLS_YAML)
    reloader = WebConfigReloader(path, interval=INTERVAL)
    async with serving(reloader) as url:
        assert (await fetch(url, pki.client_context())).status == 200
        write_atomically(
            path,
            TLS_YAML + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.pem\n"
            "  client_allowed_sans: [prometheus.example]\n",
        )
        await until(lambda: _true(reloader.reloads == 1), "the mTLS config to be put in force")
        with pytest.raises(aiohttp.ClientError):
            await fetch(url, pki.client_context())  # no client certificate: refused in the handshake
        assert (await fetch(url, pki.client_context(pki.client))).status == 200
        assert (await fetch(url, pki.client_context(pki.other_client))).status == 403


def handshake(
    url: str, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession, bool]:
    """A blocking TLS connection offering `session` to resume (asyncio cannot) and one GET over it: the
    session it ends with and whether it was resumed. Raises ConnectionRefusedError when the server shuts
    the connection (as it does, after the handshake in TLS 1.3, to a client without a certificate)."""
    port = int(url.rsplit(":", 1)[1])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT.total) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            reply = tls.recv(64)  # also lets TLS 1.3 tickets arrive
            reused, session = bool(tls.session_reused), tls.session
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        raise ConnectionRefusedError(f"refused: {exc}") from exc
    if not reply:
        raise ConnectionRefusedError("refused: closed without an answer")
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert session is not None
    return session, reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_a_session_from_before_a_change_is_not_resumed(pki: Pki, version: ssl.TLSVersion) -> None:
    """Resuming would skip the client certificate checks of the config now in force."""
    pki.install(pki.server())
    write_atomically(pki.directory / "clients.pem", pki.client_ca.cert_pem.bytes())
    path = pki.directory / "web.yml"
    write_atomically(path, TLS_YAML)
    reloader = WebConfigReloader(path, interval=INTERVAL)
    anonymous, with_cert = pki.client_context(), pki.client_context(pki.client)
    for context in (anonymous, with_cert):
        context.maximum_version = version
    async with serving(reloader) as url:
        sessions = {}
        for context in (anonymous, with_cert):
            session, resumed = await asyncio.to_thread(handshake, url, context)
            assert not resumed
            sessions[id(context)], resumed = await asyncio.to_thread(handshake, url, context, session)
            assert resumed, "sessions are resumed while the config stays"
        write_atomically(
            path, TLS_YAML + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.pem\n"
        )
        await until(lambda: _true(reloader.reloads == 1), "the mTLS config to be put in force")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(handshake, url, anonymous, sessions[id(anonymous)])
        session, resumed = await asyncio.to_thread(handshake, url, with_cert, sessions[id(with_cert)])
        assert not resumed, "a full handshake checked the client certificate"
        assert (await asyncio.to_thread(handshake, url, with_cert, session))[1], "new sessions resume"


async def test_client_ca_rotation(pki: Pki) -> None:
    pki.install(pki.server())
    clients = pki.directory / "clients.pem"
    write_atomically(clients, pki.client_ca.cert_pem.bytes())
    path = pki.directory / "web.yml"
    write_atomically(
        path, TLS_YAML + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.pem\n"
    )
    reloader = WebConfigReloader(path, interval=INTERVAL)
    new_ca = trustme.CA()
    new_client = new_ca.issue_cert("prometheus.example")
    async with serving(reloader) as url:
        assert (await fetch(url, pki.client_context(pki.client))).status == 200
        with pytest.raises(aiohttp.ClientError):
            await fetch(url, pki.client_context(new_client))
        write_atomically(clients, new_ca.cert_pem.bytes())
        await until(lambda: _true(reloader.reloads == 1), "the new client CA to be put in force")
        assert (await fetch(url, pki.client_context(new_client))).status == 200
        with pytest.raises(aiohttp.ClientError):
            await fetch(url, pki.client_context(pki.client))


async def test_turning_tls_off_needs_a_restart(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter.webconfig")
    first = pki.server()
    pki.install(first)
    path = pki.directory / "web.yml"
    write_atomically(path, TLS_YAML)
    reloader = WebConfigReloader(path, interval=INTERVAL)
    async with serving(reloader) as url:
        write_atomically(path, "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
        await until(lambda: _true(reloader.failures == 1), "turning TLS off to be refused")
        [error] = records(caplog, "web config reload failed; keeping the running web config")
        assert "turning TLS off needs a restart" in error.fields["error"]  # type: ignore[attr-defined]
        assert (await certificate(url, pki.client_context()))[0] == first.serial
        seen = await fetch(url, pki.client_context())
        assert seen.status == 200
        assert "X-Frame-Options" not in seen.headers, "nothing of the refused config is in force"


# --- Basic auth and headers ------------------------------------------------------------------------------


async def test_basic_auth_users_change_without_restart(tmp_path: Path, password_hash: str) -> None:
    path = tmp_path / "web.yml"
    write_atomically(path, f"basic_auth_users:\n  alice: '{password_hash}'\n")
    reloader = WebConfigReloader(path, interval=INTERVAL)
    async with serving(reloader) as url:
        kept = await Connection.open(url)
        try:
            assert (await kept.get("/", ("alice", PASSWORD)))[0] == 200
            assert (await fetch(url, auth=("bob", PASSWORD))).status == 401
            write_atomically(path, f"basic_auth_users:\n  bob: '{password_hash}'\n")

            async def bob_in() -> bool:
                return (await fetch(url, auth=("bob", PASSWORD))).status == 200

            await until(bob_in, "the new user to be let in")
            assert (await fetch(url, auth=("alice", PASSWORD))).status == 401
            # Checked on every request, as the toolkit does: a removed user's open connection is shut out too.
            assert (await kept.get("/", ("alice", PASSWORD)))[0] == 401
            assert (await kept.get("/", ("bob", PASSWORD)))[0] == 200
        finally:
            await kept.close()

        write_atomically(path, "")  # no users at all: open again
        await until(lambda: _true(reloader.reloads == 2), "the empty config to be put in force")
        assert (await fetch(url)).status == 200


async def test_numeric_header_values_are_served_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    write_atomically(path, "http_server_config:\n  headers:\n    X-XSS-Protection: 1\n")
    reloader = WebConfigReloader(path, interval=INTERVAL)
    async with serving(reloader) as url:
        seen = await fetch(url)
        assert (seen.status, seen.headers["X-XSS-Protection"]) == (200, "1")
        write_atomically(
            path, "http_server_config:\n  headers:\n    X-XSS-Protection: 0\n    X-Frame-Options: deny\n"
        )

        async def changed() -> bool:
            return (await fetch(url)).headers.get("X-XSS-Protection") == "0"

        await until(changed, "the new header value to be served")
        seen = await fetch(f"{url}/no-such-page")
        assert (seen.status, seen.headers["X-Frame-Options"]) == (404, "deny")


async def test_headers_reach_the_real_metrics_page(tmp_path: Path) -> None:
    """/metrics streams its answer, sent before the request guard sees it: the headers come with it too."""
    path = tmp_path / "web.yml"
    write_atomically(path, "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    reloader = WebConfigReloader(path, interval=INTERVAL)
    daemon = Daemon(parse_config({}, "x.yaml", {}), StaticProvider(Credentials("id", "key"), "test"))
    async with serving(reloader, app=create_app(daemon, reloader.middlewares())) as url:
        for page in ("/metrics", "/", "/-/healthy", "/no-such-page"):
            assert (await fetch(f"{url}{page}")).headers.get("X-Frame-Options") == "deny", page
        write_atomically(path, "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n")

        async def changed() -> bool:
            return (await fetch(f"{url}/metrics")).headers.get("X-Frame-Options") == "sameorigin"

        await until(changed, "the new header on /metrics")
        metrics = await fetch(f"{url}/metrics")
        assert "tencentcloud_exporter_build_info" in metrics.body


# --- The watching itself ---------------------------------------------------------------------------------


async def test_unchanged_files_are_only_stat_ed_off_the_event_loop(
    pki: Pki, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.webconfig")
    pki.install(pki.server())
    path = pki.directory / "web.yml"
    write_atomically(
        path, TLS_YAML + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
    )
    write_atomically(pki.directory / "ca.pem", pki.client_ca.cert_pem.bytes())
    reloader = WebConfigReloader(path, interval=INTERVAL)
    stats: list[tuple[Path, bool]] = []
    real_stat = webreload._stat

    def recording(file: Path) -> webreload.Stat:
        stats.append((file, threading.current_thread() is threading.main_thread()))
        return real_stat(file)

    monkeypatch.setattr(webreload, "_stat", recording)
    async with serving(reloader):
        await checks_pass(reloader, 3)
    assert {file.name for file, _ in stats} == {"web.yml", "server.pem", "server.key", "ca.pem"}
    assert not any(on_loop for _, on_loop in stats), "stat() never runs on the event loop's thread"
    assert (reloader.reloads, reloader.failures) == (0, 0)
    assert not [r for r in caplog.records if r.name.startswith("exporter")], (
        "nothing reloaded, nothing logged"
    )


async def test_reload_reads_now(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    write_atomically(path, "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    reloader = WebConfigReloader(path, interval=3600)  # never checks by itself within the test
    write_atomically(path, "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n")
    assert await reloader.reload()
    assert reloader.config.headers == (("X-Frame-Options", "sameorigin"),)
    write_atomically(path, "http_server_config:\n  headers:\n    X-Frame-Options: allow\n")
    assert not await reloader.reload()
    assert reloader.config.headers == (("X-Frame-Options", "sameorigin"),)


def test_an_invalid_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    write_atomically(path, "tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n")
    with pytest.raises(WebConfigError) as caught:
        WebConfigReloader(path)
    assert any("tls_server_config.cert_file: file not found" in p for p in caught.value.problems)
    with pytest.raises(ValueError, match="interval"):
        WebConfigReloader(path, interval=0)
