"""`tencentcloud-task-exporter healthcheck`: asks the running daemon whether it is healthy, for a container's
HEALTHCHECK; and the file where the daemon records its address for it (HEALTHCHECK cannot see the flags given
to `docker run`)."""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import logging
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.cli import httpcall
from exporter.cli.flags import (
    DEFAULT_LISTEN_ADDRESS,
    EXIT_UNHEALTHY,
    HEALTHCHECK_AUTH_ENV,
    HEALTHCHECK_FILE_ENV,
    HEALTHY_PATH,
    PROG,
    build_parser,
    parse_listen_address,
)
from exporter.web import httpserver
from exporter.web.config import WebConfigError, load_web_config
from exporter.web.tls import TLSServerConfig

log = logging.getLogger("exporter")

SUMMARY = "ask the running daemon whether it is healthy (for HEALTHCHECK)"


def remove_file(path: Path) -> None:
    """Removes the file at exit, unless another process (with its own pid in it) has replaced it since."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def _loopback(host: str | None) -> str:
    """Where to reach a listening address from this machine: the wildcard addresses mean loopback."""
    if not host or host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _document(address: Any, web_config_file: str) -> str:
    document = {
        "address": httpserver.show_address(_loopback(str(address[0])), int(address[1])),
        "web_config_file": web_config_file,
        "version": __version__,
        "pid": os.getpid(),
    }
    return json.dumps(document) + "\n"


def write_file(address: Any, web_config_file: str) -> Path | None:
    """Writes where the first socket listens (and the web config) to $TENCENTCLOUD_EXPORTER_HEALTHCHECK_FILE,
    for `healthcheck` without flags; returns the path, or None when not asked to or it cannot be written
    (then `healthcheck` falls back to its flags' defaults, which are the image's)."""
    name = os.environ.get(HEALTHCHECK_FILE_ENV, "")
    if not name:
        return None
    path = Path(name)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(_document(address, web_config_file), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        log.warning(
            f"healthcheck file not written ({HEALTHCHECK_FILE_ENV}): healthcheck without flags will try "
            f"{DEFAULT_LISTEN_ADDRESS}",
            extra={"fields": {"path": str(path), "error": exc.strerror or str(exc)}},
        )
        return None
    return path


class HealthcheckError(Exception):
    """Why the check could not even ask: unusable flags, web config, credentials or recorded address."""


@dataclass(frozen=True)
class HealthcheckTarget:
    host: str
    port: int
    tls: ssl.SSLContext | None
    headers: Mapping[str, str]

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{httpserver.show_address(self.host, self.port)}{HEALTHY_PATH}"


def healthcheck(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """`healthcheck [FLAGS]`: 0 when the daemon answers 200 on /-/healthy, 1 otherwise (never 2, which Docker
    reserves: bad flags are 1 too)."""
    try:
        args = build_parser("healthcheck", {"healthcheck": SUMMARY}).parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0; a flag argparse rejects, 2
        return 0 if exc.code in (0, None) else EXIT_UNHEALTHY
    try:
        target = healthcheck_target(args, os.environ if env is None else env)
    except HealthcheckError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    # The basic-auth credentials sent are kept out of what is printed, should an answer echo them.
    redact = httpcall.Redactor.of_headers(target.headers)
    try:
        status, reason = _get(target, args.healthcheck_timeout)
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, TLS failed, not HTTP
        print(f"unhealthy: GET {target.url}: {redact(httpcall.describe_failure(exc))}", file=sys.stderr)
        return EXIT_UNHEALTHY
    reason = redact(reason)
    if status != 200:
        print(f"unhealthy: GET {target.url}: {status} {reason}", file=sys.stderr)
        return EXIT_UNHEALTHY
    print(f"healthy: GET {target.url}: {status} {reason}")
    return 0


def _get(target: HealthcheckTarget, timeout: float) -> tuple[int, str]:
    status, reason, _ = httpcall.call(
        target.host,
        target.port,
        target.tls,
        "GET",
        HEALTHY_PATH,
        headers=target.headers,
        timeout=timeout,
        limit=4096,
    )
    return status, reason


@dataclass(frozen=True)
class _Recorded:
    address: tuple[str | None, int]
    web_config_file: str


def read_healthcheck_file(env: Mapping[str, str]) -> _Recorded | None:
    """What the daemon wrote to $TENCENTCLOUD_EXPORTER_HEALTHCHECK_FILE; None when unset, missing or odd."""
    name = env.get(HEALTHCHECK_FILE_ENV, "")
    if not name:
        return None
    try:
        with open(name, "rb") as file:
            document = json.loads(file.read(64 * 1024))
        address = parse_listen_address(document["address"])
        web_config_file = document.get("web_config_file") or ""
        if not isinstance(web_config_file, str):
            return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, argparse.ArgumentTypeError):
        return None
    return _Recorded(address, web_config_file)


def healthcheck_target(args: argparse.Namespace, env: Mapping[str, str]) -> HealthcheckTarget:
    """Where and how to ask: the first --web.listen-address, else the recorded one, else the default; TLS and
    credentials as the web config needs them. Raises HealthcheckError."""
    recorded = None if args.listen else read_healthcheck_file(env)
    if args.listen:
        host, port = args.listen[0]
    elif recorded is not None:
        host, port = recorded.address
    else:
        host, port = parse_listen_address(DEFAULT_LISTEN_ADDRESS)
    web_config_file = args.web_config_file or (recorded.web_config_file if recorded else "")
    tls = None
    if web_config_file:
        try:
            web_config = load_web_config(web_config_file)
        except WebConfigError as exc:
            raise HealthcheckError(f"--web.config.file: {exc}") from None
        if web_config.tls is not None:
            tls = _client_context(web_config.tls, args)
    headers = {"User-Agent": f"{PROG}-healthcheck/{__version__}"}
    authorization = _basic_auth(args, env)
    if authorization:
        headers["Authorization"] = authorization
    return HealthcheckTarget(_loopback(host), port, tls, headers)


def _client_context(tls: TLSServerConfig, args: argparse.Namespace) -> ssl.SSLContext:
    """Trusts exactly the server's own certificate (chain) from the web config, whatever host name it was
    issued for: the check connects to a loopback address, which a certificate rarely names. Presents a
    client certificate when the server requires one."""
    try:
        server_pem = tls.cert_file.read_text(encoding="ascii") if tls.cert_file else tls.cert
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the certificate itself is pinned instead
        context.load_verify_locations(cadata=server_pem)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the server's leaf is a trust anchor
        if args.healthcheck_cert_file or args.healthcheck_key_file:
            if not (args.healthcheck_cert_file and args.healthcheck_key_file):
                raise HealthcheckError("--healthcheck.cert-file and --healthcheck.key-file go together")
            context.load_cert_chain(args.healthcheck_cert_file, args.healthcheck_key_file)
        elif tls.client_auth_type == "RequireAndVerifyClientCert" and tls.cert_file and tls.key_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise HealthcheckError(f"TLS client settings: {httpcall.describe_failure(exc)}") from None
    return context


def _basic_auth(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """The Authorization header for the given credentials; "" without any."""
    user, password = args.healthcheck_username, ""
    if user or args.healthcheck_password_file:
        if not (user and args.healthcheck_password_file):
            raise HealthcheckError("--healthcheck.username and --healthcheck.password-file go together")
        try:
            password = Path(args.healthcheck_password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise HealthcheckError(
                f"--healthcheck.password-file: cannot read it ({httpcall.describe_failure(exc)})"
            ) from None
    elif env.get(HEALTHCHECK_AUTH_ENV):
        user, colon, password = env[HEALTHCHECK_AUTH_ENV].partition(":")
        if not colon or not user:
            raise HealthcheckError(f"{HEALTHCHECK_AUTH_ENV}: expected user:password (value not shown)")
    else:
        return ""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
