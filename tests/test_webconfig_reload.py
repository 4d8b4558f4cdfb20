"""`--web.config.file` re-read while serving: basic auth users and headers changed without a restart, and
the watching itself (stat off the event loop, reload on demand, an invalid file at start). The TLS part is in
test_webconfig_reload_tls.py. Every wait polls a condition with a deadline."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import bcrypt
import pytest

from exporter.config.parser import parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import Daemon
from exporter.web import reload as webreload
from exporter.web.app import create_app
from exporter.web.config import WebConfigError
from exporter.web.reload import WebConfigReloader
from tests.webconfig_reloading import (
    INTERVAL,
    PASSWORD,
    TLS_YAML,
    Connection,
    Pki,
    as_probe,
    checks_pass,
    fetch,
    serving,
    until,
    write_atomically,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


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
        await until(lambda: as_probe(reloader.reloads == 2), "the empty config to be put in force")
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
