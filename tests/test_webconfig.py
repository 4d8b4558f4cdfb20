"""`--web.config.file`: TLS, mutual TLS and basic auth against real servers with real trustme certificates."""

from __future__ import annotations

import base64
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from exporter.config.parser import parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import Daemon
from exporter.web import config as webconfig
from exporter.web import guard as webguard
from exporter.web.app import create_app
from exporter.web.config import (
    WWW_AUTHENTICATE,
    WebConfig,
    WebConfigError,
    load_web_config,
    middlewares,
    ssl_context,
)

PASSWORD = "s3cret-Pa55word-xyzzy"
TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class Pki:
    ca: trustme.CA
    directory: Path
    client: trustme.LeafCert  # issued by `ca`, SAN prometheus.example
    other_client: trustme.LeafCert  # issued by `ca`, SAN intruder.example
    rogue_client: trustme.LeafCert  # issued by an untrusted CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for blob in server.cert_chain_pems:
        blob.write_to_path(str(directory / "server.pem"), append=True)
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    return Pki(
        ca=ca,
        directory=directory,
        client=ca.issue_cert("prometheus.example"),
        other_client=ca.issue_cert("intruder.example"),
        rogue_client=trustme.CA().issue_cert("prometheus.example"),
    )


@pytest.fixture(scope="module")
def password_hash() -> str:
    # Cost 4, the minimum, keeps the tests fast; `$2y$` is what htpasswd writes.
    return "$2y$" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()[4:]


def write(directory: Path, text: str, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def tls_yaml(pki: Pki, extra: str = "") -> str:
    d = pki.directory
    return f"tls_server_config:\n  cert_file: {d / 'server.pem'}\n  key_file: {d / 'server.key'}\n" + "".join(
        f"  {line}\n" for line in extra.splitlines()
    )


def client_context(pki: Pki, cert: trustme.LeafCert | None = None, trust: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if trust:
        pki.ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


def tiny_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello\n")

    app = web.Application()
    for path in ("/", "/metrics", "/-/healthy", "/-/ready"):
        app.router.add_get(path, hello)
    return app


@asynccontextmanager
async def serve(config: WebConfig, app: web.Application | None = None) -> AsyncIterator[str]:
    """Serves `app` (a tiny stand-in by default) guarded by `config` on 127.0.0.1, on a free port."""
    app = tiny_app() if app is None else app
    # The guard goes first, ahead of any middleware the app has (aiohttp freezes the list at startup).
    for guard in reversed(middlewares(config)):
        app.middlewares.insert(0, guard)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context(config))
        await site.start()
        port = runner.addresses[0][1]
        yield f"{'https' if config.tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


async def get(
    url: str,
    context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    request_headers = dict(headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request_headers["Authorization"] = f"Basic {token}"
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(url, ssl=context if context is not None else True, headers=request_headers) as response,
    ):
        return Reply(response.status, dict(response.headers), await response.text())


def problems_of(path: Path) -> list[str]:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    return caught.value.problems


# --- TLS -------------------------------------------------------------------------------------------------


async def test_tls_serves_clients_that_trust_the_ca(pki: Pki, tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, tls_yaml(pki)))
    async with serve(config) as url:
        assert url.startswith("https://")
        reply = await get(f"{url}/metrics", client_context(pki))
        assert (reply.status, reply.body) == (200, "hello\n")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(f"{url}/metrics", client_context(pki, trust=False))


async def test_plain_http_to_the_tls_port_fails(pki: Pki, tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, tls_yaml(pki)))
    async with serve(config) as url:
        with pytest.raises(aiohttp.ClientError):
            await get(url.replace("https://", "http://") + "/metrics")


async def test_min_version_tls13_refuses_tls12_clients(pki: Pki, tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, tls_yaml(pki, "min_version: TLS13")))
    old_client = client_context(pki)
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serve(config) as url:
        with pytest.raises(aiohttp.ClientError):
            await get(f"{url}/", old_client)
        assert (await get(f"{url}/", client_context(pki))).status == 200


async def test_mtls_require_and_verify_client_cert(pki: Pki, tmp_path: Path) -> None:
    extra = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.directory / 'ca.pem'}"
    config = load_web_config(write(tmp_path, tls_yaml(pki, extra)))
    async with serve(config) as url:
        with pytest.raises(aiohttp.ClientError):
            await get(f"{url}/metrics", client_context(pki))
        with pytest.raises(aiohttp.ClientError):
            await get(f"{url}/metrics", client_context(pki, pki.rogue_client))
        reply = await get(f"{url}/metrics", client_context(pki, pki.client))
        assert reply.status == 200


async def test_mtls_verify_client_cert_if_given(pki: Pki, tmp_path: Path) -> None:
    extra = f"client_auth_type: VerifyClientCertIfGiven\nclient_ca_file: {pki.directory / 'ca.pem'}"
    config = load_web_config(write(tmp_path, tls_yaml(pki, extra)))
    async with serve(config) as url:
        assert (await get(f"{url}/", client_context(pki))).status == 200
        assert (await get(f"{url}/", client_context(pki, pki.client))).status == 200
        with pytest.raises(aiohttp.ClientError):
            await get(f"{url}/", client_context(pki, pki.rogue_client))


async def test_client_allowed_sans(pki: Pki, tmp_path: Path) -> None:
    extra = (
        f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.directory / 'ca.pem'}\n"
        "client_allowed_sans: [prometheus.example]"
    )
    config = load_web_config(write(tmp_path, tls_yaml(pki, extra)))
    async with serve(config) as url:
        assert (await get(f"{url}/metrics", client_context(pki, pki.client))).status == 200
        refused = await get(f"{url}/metrics", client_context(pki, pki.other_client))
        assert refused.status == 403
        assert "hello" not in refused.body


async def test_inline_certificate_and_key(pki: Pki, tmp_path: Path) -> None:
    cert = (pki.directory / "server.pem").read_text()
    key = (pki.directory / "server.key").read_text()

    def block(text: str) -> str:
        return "".join(f"    {line}\n" for line in text.splitlines())

    config = load_web_config(
        write(tmp_path, f"tls_server_config:\n  cert: |\n{block(cert)}  key: |\n{block(key)}")
    )
    assert key not in repr(config)
    async with serve(config) as url:
        assert (await get(f"{url}/", client_context(pki))).status == 200


def test_cipher_suites_and_curve_are_applied(pki: Pki, tmp_path: Path) -> None:
    extra = (
        "cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "curve_preferences: [CurveP384]\nprefer_server_cipher_suites: false"
    )
    config = load_web_config(write(tmp_path, tls_yaml(pki, extra)))
    assert config.tls is not None
    assert config.tls.curve == "secp384r1"
    context = ssl_context(config)
    assert context is not None
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"}
    assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert any("TLS_AES_128_GCM_SHA256" in w and "not configurable" in w for w in config.warnings)


# --- Basic auth ------------------------------------------------------------------------------------------


async def test_basic_auth(pki: Pki, tmp_path: Path, password_hash: str) -> None:
    config = load_web_config(
        write(tmp_path, tls_yaml(pki) + f"basic_auth_users:\n  alice: '{password_hash}'\n")
    )
    context = client_context(pki)
    async with serve(config) as url:
        missing = await get(f"{url}/metrics", context)
        assert missing.status == 401
        assert missing.headers["WWW-Authenticate"] == 'Basic realm="tencentcloud-task-exporter"'
        assert missing.headers["WWW-Authenticate"] == WWW_AUTHENTICATE
        assert (await get(f"{url}/metrics", context, ("alice", "wrong"))).status == 401
        assert (await get(f"{url}/metrics", context, ("bob", PASSWORD))).status == 401
        assert (await get(f"{url}/metrics", context, ("alice", PASSWORD + "x"))).status == 401
        bearer = await get(f"{url}/metrics", context, headers={"Authorization": f"Bearer {PASSWORD}"})
        assert bearer.status == 401
        garbled = await get(f"{url}/metrics", context, headers={"Authorization": "Basic !!!not-base64"})
        assert garbled.status == 401
        ok = await get(f"{url}/metrics", context, ("alice", PASSWORD))
        assert (ok.status, ok.body) == (200, "hello\n")


async def test_every_path_of_the_real_app_is_guarded(tmp_path: Path, password_hash: str) -> None:
    config = load_web_config(write(tmp_path, f"basic_auth_users:\n  alice: '{password_hash}'\n"))
    daemon = Daemon(parse_config({}, "x.yaml", {}), StaticProvider(Credentials("id", "key"), "test"))
    async with serve(config, create_app(daemon)) as url:
        for path in ("/", "/metrics", "/-/healthy", "/-/ready", "/no-such-page", "/-/reload?x=1"):
            reply = await get(f"{url}{path}")
            assert reply.status == 401, path
            assert reply.body == "401: Unauthorized\n", path
        assert (await get(f"{url}/-/healthy", auth=("alice", PASSWORD))).status == 200
        metrics = await get(f"{url}/metrics", auth=("alice", PASSWORD))
        assert metrics.status == 200
        assert "tencentcloud_exporter_build_info" in metrics.body
        assert (await get(f"{url}/no-such-page", auth=("alice", PASSWORD))).status == 404


async def test_password_never_logged_or_echoed(
    pki: Pki, tmp_path: Path, password_hash: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = load_web_config(
        write(tmp_path, tls_yaml(pki) + f"basic_auth_users:\n  alice: '{password_hash}'\n")
    )
    bodies = []
    async with serve(config) as url:
        for auth in (("alice", PASSWORD + "!"), (PASSWORD, PASSWORD), ("alice", PASSWORD)):
            reply = await get(f"{url}/metrics", client_context(pki), auth)
            bodies.append(reply.body + str(reply.headers))
    assert caplog.records, "the rejections are logged (at debug), just without the credentials"
    for text in [caplog.text, *bodies, repr(config), str(webconfig.summary(config))]:
        assert PASSWORD not in text
        assert password_hash not in text
        assert password_hash[7:] not in text


async def test_bcrypt_runs_off_the_loop_and_successes_are_cached(
    tmp_path: Path, password_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    real_check: Callable[[bytes, bytes], bool] = webguard._bcrypt_check

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(threading.current_thread() is threading.main_thread())
        return real_check(password, hashed)

    monkeypatch.setattr(webguard, "_bcrypt_check", counting)
    config = load_web_config(write(tmp_path, f"basic_auth_users:\n  alice: '{password_hash}'\n"))
    async with serve(config) as url:
        for _ in range(3):
            assert (await get(f"{url}/metrics", auth=("alice", PASSWORD))).status == 200
        assert len(calls) == 1, "a repeated successful login is served from the cache"
        for _ in range(2):
            assert (await get(f"{url}/metrics", auth=("alice", "wrong"))).status == 401
        assert len(calls) == 3, "failures are never cached"
        assert (await get(f"{url}/metrics", auth=("mallory", "x"))).status == 401
        assert len(calls) == 4, "unknown users cost a bcrypt check too (no timing oracle)"
    assert calls == [False] * 4, "bcrypt never runs on the event loop's thread"


async def test_headers_are_added_to_every_response(tmp_path: Path, password_hash: str) -> None:
    text = (
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
        f"basic_auth_users:\n  alice: '{password_hash}'\n"
    )
    config = load_web_config(write(tmp_path, text))
    async with serve(config) as url:
        for path, auth, status in (
            ("/", None, 401),
            ("/", ("alice", PASSWORD), 200),
            ("/x", ("alice", PASSWORD), 404),
        ):
            reply = await get(f"{url}{path}", auth=auth)
            assert reply.status == status
            assert reply.headers["X-Frame-Options"] == "deny"
            assert reply.headers["X-Content-Type-Options"] == "nosniff"


async def test_header_hook_reaches_streamed_responses(tmp_path: Path) -> None:
    """/metrics streams its answer, sent before the middleware sees it; the hook sets the headers as it is."""
    config = load_web_config(write(tmp_path, "http_server_config:\n  headers:\n    X-XSS-Protection: 0\n"))
    daemon = Daemon(parse_config({}, "x.yaml", {}), StaticProvider(Credentials("id", "key"), "test"))
    app = create_app(daemon)
    app.on_response_prepare.append(webconfig.header_hook(config))
    async with serve(config, app) as url:
        for page in ("/metrics", "/", "/no-such-page"):
            assert (await get(f"{url}{page}")).headers.get("X-XSS-Protection") == "0", page


async def test_numeric_header_values_are_sent_as_text(tmp_path: Path) -> None:
    # YAML reads these as numbers; Go's YAML decoder (and so the toolkit) takes them as the text they are.
    text = "http_server_config:\n  headers:\n    X-XSS-Protection: 1\n    Strict-Transport-Security: ''\n"
    config = load_web_config(write(tmp_path, text))
    assert config.headers == (("X-XSS-Protection", "1"),)
    for value, sent in (("0", "0"), ("1.0", "1.0"), ("'1; mode=block'", "1; mode=block")):
        other = write(tmp_path, f"http_server_config:\n  headers:\n    X-XSS-Protection: {value}\n", "n.yml")
        assert load_web_config(other).headers == (("X-XSS-Protection", sent),)
    async with serve(config) as url:
        reply = await get(f"{url}/")
        assert (reply.status, reply.headers["X-XSS-Protection"]) == (200, "1")
        assert "Strict-Transport-Security" not in reply.headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", "expected text or a number, got a boolean (True): no header takes true/false (quote it)"),
        ("yes", "got a boolean (True)"),
        (".nan", "expected text or a finite number, got float nan"),
        ("{a: 1}", "expected text or a number, got a mapping"),
        ("[1]", "expected text or a number, got a list"),
        ("2024-01-01", "expected text or a number, got date"),
        ('"1\\r\\nSet-Cookie: a=b"', "expected a single-line value"),
    ],
)
def test_header_values_that_are_refused(tmp_path: Path, value: str, expected: str) -> None:
    path = write(tmp_path, f"http_server_config:\n  headers:\n    X-XSS-Protection: {value}\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: http_server_config.headers.X-XSS-Protection: "), problem
    assert expected in problem, problem


def test_a_number_is_still_checked_against_the_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "http_server_config:\n  headers:\n    X-Frame-Options: 1\n")
    assert "X-Frame-Options: expected one of deny, sameorigin, got '1'" in problems_of(path)[0]


async def test_rate_limit(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, "rate_limit:\n  interval: 1h\n  burst: 2\n"))
    assert (config.rate_limit_interval, config.rate_limit_burst) == (3600.0, 2)
    async with serve(config) as url:
        assert [(await get(f"{url}/")).status for _ in range(3)] == [200, 200, 429]


# --- Loading and validation ------------------------------------------------------------------------------


def test_no_web_config_means_nothing_to_enforce(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, ""))
    assert config.tls is None
    assert config.basic_auth_users == ()
    assert ssl_context(config) is None
    assert middlewares(config) == []
    assert middlewares(WebConfig()) == []
    assert ssl_context(WebConfig()) is None


def test_relative_paths_are_relative_to_the_config_file(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "tls").mkdir(parents=True)
    for name in ("server.pem", "server.key", "ca.pem"):
        (conf_dir / "tls" / name).write_bytes((pki.directory / name).read_bytes())
    text = (
        "tls_server_config:\n  cert_file: tls/server.pem\n  key_file: tls/server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: tls/ca.pem\n"
    )
    path = write(conf_dir, text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_web_config(path)
    assert config.tls is not None
    assert config.tls.cert_file == conf_dir / "tls" / "server.pem"
    assert config.tls.client_ca_file == conf_dir / "tls" / "ca.pem"
    # A relative path to the config file itself works too: its directory is the base.
    monkeypatch.chdir(tmp_path)
    assert load_web_config(Path("conf/web.yml")).tls is not None
    # And a missing relative file names where it was looked for.
    (conf_dir / "tls" / "ca.pem").unlink()
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: tls_server_config.client_ca_file: file not found: ")
    assert str(conf_dir / "tls" / "ca.pem") in problem


def test_unknown_keys_are_errors_naming_file_and_path(pki: Pki, tmp_path: Path) -> None:
    path = write(tmp_path, tls_yaml(pki, "client_auth: RequireAndVerifyClientCert") + "basic_auth:\n  a: b\n")
    found = problems_of(path)
    assert len(found) == 2, found
    assert any(p.startswith(f"{path}: tls_server_config.client_auth: unknown key") for p in found), found
    assert any(p.startswith(f"{path}: basic_auth: unknown key") and "basic_auth_users" in p for p in found)
    headers = write(tmp_path, "http_server_config:\n  headers:\n    X-Powered-By: me\n", "h.yml")
    assert problems_of(headers)[0].startswith(
        f"{headers}: http_server_config.headers.X-Powered-By: unknown key"
    )


@pytest.mark.parametrize(
    ("extra", "where", "expected"),
    [
        ("client_auth_type: Sometimes", "client_auth_type", "expected one of NoClientCert"),
        ("client_auth_type: RequireAnyClientCert", "client_auth_type", "not supported"),
        ("client_auth_type: RequireAndVerifyClientCert", "client_auth_type", "needs client_ca_file"),
        ("client_ca_file: {ca}", "client_auth_type", "NoClientCert"),
        ("min_version: TLS14", "min_version", "expected one of TLS10, TLS11, TLS12, TLS13"),
        ("min_version: TLS13\nmax_version: TLS12", "max_version", "lower than min_version"),
        ("cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]", "cipher_suites[0]", "unknown cipher suite"),
        ("curve_preferences: [X25519, CurveP256]", "curve_preferences", "only restrict"),
        ("client_allowed_sans: [a.example]", "client_allowed_sans", "RequireAndVerifyClientCert"),
        ("cert: inline", "cert", "not both"),
    ],
)
def test_tls_problems(pki: Pki, tmp_path: Path, extra: str, where: str, expected: str) -> None:
    path = write(tmp_path, tls_yaml(pki, extra.format(ca=pki.directory / "ca.pem")))
    found = problems_of(path)
    assert any(p.startswith(f"{path}: tls_server_config.{where}: ") and expected in p for p in found), found


def test_tls_settings_without_a_certificate_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "tls_server_config:\n  min_version: TLS13\n")
    found = problems_of(path)
    assert f"{path}: tls_server_config: missing cert_file" in found[0]
    assert "missing key_file" in found[1]


def test_certificate_problems(pki: Pki, tmp_path: Path) -> None:
    other = pki.ca.issue_cert("other.example")
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    mismatch = write(
        tmp_path, f"tls_server_config:\n  cert_file: {pki.directory / 'server.pem'}\n  key_file: other.key\n"
    )
    [problem] = problems_of(mismatch)
    assert (
        problem
        == f"{mismatch}: tls_server_config.key_file: the private key does not belong to the certificate"
    )

    key = serialization.load_pem_private_key(other.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (tmp_path / "encrypted.key").write_bytes(encrypted)
    enc = write(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki.directory / 'server.pem'}\n  key_file: encrypted.key\n",
    )
    [problem] = problems_of(enc)  # and no passphrase prompt blocks the test
    assert "tls_server_config.key_file: the private key is encrypted" in problem

    (tmp_path / "junk.pem").write_text("not a certificate\n")
    junk = write(tmp_path, "tls_server_config:\n  cert_file: junk.pem\n  key_file: other.key\n")
    assert "tls_server_config.cert_file: expected a PEM certificate" in problems_of(junk)[0]


def test_secrets_stay_out_of_error_messages(pki: Pki, tmp_path: Path, password_hash: str) -> None:
    secret_key = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----"
    cert = (pki.directory / "server.pem").read_text()
    text = (
        "tls_server_config:\n  cert: |\n"
        + "".join(f"    {line}\n" for line in cert.splitlines())
        + "  key: |\n"
        + "".join(f"    {line}\n" for line in secret_key.splitlines())
        + f"basic_auth_users:\n  alice: '{password_hash[:-3]}'\n  bob: 12345\n"
    )
    found = problems_of(write(tmp_path, text))
    joined = "\n".join(found)
    assert "basic_auth_users.alice: expected a bcrypt hash" in joined
    assert "basic_auth_users.bob: expected a bcrypt hash string" in joined
    assert password_hash[:-3] not in joined
    assert password_hash[7:20] not in joined
    assert "12345" not in joined
    # The hash problem stops validation before the key is loaded; on its own the key fails without showing it.
    found = problems_of(write(tmp_path, text.split("basic_auth_users")[0], "key-only.yml"))
    assert any("tls_server_config.key" in p for p in found), found
    assert "TOPSECRETKEYMATERIAL" not in "\n".join(found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rate_limit:\n  interval: 5\n  burst: 1\n", "rate_limit.interval: expected a duration with a unit"),
        ("rate_limit:\n  interval: 1s\n", "rate_limit.burst: must be at least 1"),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "X-Frame-Options: expected one of deny",
        ),
        ("http_server_config:\n  http2: maybe\n", "http_server_config.http2: expected true or false"),
        ("basic_auth_users:\n  'a:b': $2y$04$" + "a" * 53 + "\n", "basic_auth_users.a:b: a user name cannot"),
        ("basic_auth_users:\n  a: $2y$03$" + "a" * 53 + "\n", "basic_auth_users.a: bcrypt cost must be 4-31"),
        (
            'basic_auth_users:\n  a: "$2y$04$' + "a" * 53 + '\\n"\n',
            "basic_auth_users.a: expected a bcrypt hash",
        ),
        ("- a list\n", "<top level>: expected a mapping, got a list"),
        ("tls_server_config: [\n", "invalid YAML"),
    ],
)
def test_other_problems(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    found = problems_of(path)
    assert any(p.startswith(f"{path}: ") and expected in p for p in found), found


def test_missing_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yml") == [f"{tmp_path / 'nope.yml'}: file not found"]


def test_warnings_for_what_cannot_be_honoured(pki: Pki, tmp_path: Path, password_hash: str) -> None:
    text = (
        tls_yaml(pki, "client_auth_type: RequestClientCert\nmin_version: TLS11")
        + "http_server_config:\n  http2: true\n"
    )
    config = load_web_config(write(tmp_path, text))
    warnings = "\n".join(config.warnings)
    assert "tls_server_config.client_auth_type: RequestClientCert" in warnings
    assert "tls_server_config.min_version: TLS11 is deprecated" in warnings
    assert "http_server_config.http2: aiohttp serves HTTP/1.1 only" in warnings
    plain = load_web_config(write(tmp_path, f"basic_auth_users:\n  alice: '{password_hash}'\n", "plain.yml"))
    assert any("clear text" in w for w in plain.warnings)


def test_summary_is_loggable(pki: Pki, tmp_path: Path, password_hash: str) -> None:
    config = load_web_config(
        write(tmp_path, tls_yaml(pki) + f"basic_auth_users:\n  alice: '{password_hash}'\n")
    )
    fields: dict[str, Any] = webconfig.summary(config)
    assert fields["tls"] is True
    assert fields["basic_auth_users"] == 1
    assert fields["tls_versions"] == "TLSv1_2-TLSv1_3"
