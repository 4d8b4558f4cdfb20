"""`--web.config.file` re-read while serving, its TLS part: certificates rotated, swapped in through a
secret volume's symlink, broken and repaired, named before they exist; client certificates and allowed SANs
turned on, CA rotation, sessions not resumed across a change. Real TLS (trustme) on loopback, files
rewritten on disk while the server runs, never restarted. Every wait polls a condition with a deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme
from prometheus_client import CollectorRegistry

from exporter.web.reload import WebConfigReloader
from tests.webconfig_reloading import (
    INTERVAL,
    TIMEOUT,
    TLS_YAML,
    Connection,
    Pki,
    as_probe,
    certificate,
    checks_pass,
    fetch,
    metric,
    records,
    serving,
    until,
    write_atomically,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


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
        await until(lambda: as_probe(bool(records(caplog, failed))), "the failed reload to be logged")
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
        await until(
            lambda: as_probe(len(records(caplog, failed)) == 2), "the second broken change to be logged"
        )

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
        await until(lambda: as_probe(reloader.failures == 1), "the config naming missing files to be refused")
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
        await until(lambda: as_probe(reloader.reloads == 1), "the mTLS config to be put in force")
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
        await until(lambda: as_probe(reloader.reloads == 1), "the mTLS config to be put in force")
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
        await until(lambda: as_probe(reloader.reloads == 1), "the new client CA to be put in force")
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
        await until(lambda: as_probe(reloader.failures == 1), "turning TLS off to be refused")
        [error] = records(caplog, "web config reload failed; keeping the running web config")
        assert "turning TLS off needs a restart" in error.fields["error"]  # type: ignore[attr-defined]
        assert (await certificate(url, pki.client_context()))[0] == first.serial
        seen = await fetch(url, pki.client_context())
        assert seen.status == 200
        assert "X-Frame-Options" not in seen.headers, "nothing of the refused config is in force"
