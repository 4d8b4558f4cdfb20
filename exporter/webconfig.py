"""`--web.config.file`: TLS, mutual TLS, basic auth, response headers and a rate limit for every endpoint.

The file uses the web configuration format shared by Prometheus exporters (the Go exporter-toolkit), so an
operator can reuse the file they already have for node_exporter. Problems are collected and reported as
`file: key.path: what was expected`, like the main config; unknown keys are errors.

Relative `cert_file`, `key_file` and `client_ca_file` paths are resolved against the web config file's
directory, as the toolkit does. Nothing secret (inline keys, bcrypt hashes, presented passwords) ever appears
in an error, a log line or a response.

Where Python's `ssl` module or aiohttp cannot do what the toolkit does, the setting is an error or a warning
(in `WebConfig.warnings`, for the caller to log), never silently dropped:

- The file is read once at startup; a new certificate or user needs a restart (the toolkit re-reads it).
- `client_auth_type: RequireAnyClientCert` (and its old alias `RequireClientCert`) is an error: `ssl` cannot
  demand a certificate without verifying it. Use `RequireAndVerifyClientCert` with a client CA.
- `client_auth_type: RequestClientCert` is a warning: no certificate is requested, because `ssl` cannot ask
  for one without verifying it. Nothing is lost: an unverified certificate authenticates nobody.
- `VerifyClientCertIfGiven` and `RequireAndVerifyClientCert` need `client_ca_file` or `client_ca` (the toolkit
  would fall back to the system roots, trusting any publicly issued certificate).
- `client_allowed_sans` is checked on each request (403, connection closed) instead of inside the handshake,
  and needs `RequireAndVerifyClientCert`.
- `curve_preferences` takes one curve: `ssl` can restrict the key exchange to one group, not order several.
- `cipher_suites` entries for TLS 1.3 are accepted with a warning: TLS 1.3 suites are not configurable (in Go
  either). The others are translated to their OpenSSL names.
- `http_server_config.http2: true` is a warning: aiohttp serves HTTP/1.1 only (and says so in ALPN).
- Giving both an inline value and a file (`cert` and `cert_file`, ...) is an error, not a silent preference.
- `rate_limit.interval` needs a unit (`1s`); a bare non-zero number would mean nanoseconds to the toolkit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import re
import secrets
import ssl
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from exporter.validation import Checker, ProblemsError, describe, read_yaml

log = logging.getLogger("exporter.webconfig")

REALM = "tencentcloud-task-exporter"
WWW_AUTHENTICATE = f'Basic realm="{REALM}"'

_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
_TLS_KEYS = {
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's names (crypto/tls CipherSuites()) for TLS 1.0-1.2, and the OpenSSL names of the same suites.
_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
_TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
# The headers the toolkit lets a web config add, with the only values it accepts where it restricts them.
_HEADERS: dict[str, tuple[str, ...]] = {
    "Content-Security-Policy": (),
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
}
# $2a$/$2b$/$2x$/$2y$, a two-digit cost, then 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(rb"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")  # used with fullmatch()
_BCRYPT_MIN_COST, _BCRYPT_MAX_COST = 4, 31
# bcrypt only ever uses the first 72 bytes of a password (Go's implementation and htpasswd likewise).
_BCRYPT_MAX_PASSWORD = 72
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class WebConfigError(ProblemsError):
    """Raised with every problem found in a web configuration; `str()` gives one problem per line."""


@dataclass(frozen=True)
class TLSServerConfig:
    """`tls_server_config`, with files resolved to absolute-or-config-relative paths and names translated."""

    cert_file: Path | None = None
    key_file: Path | None = None
    cert: str = ""
    key: str = field(default="", repr=False)
    client_ca_file: Path | None = None
    client_ca: str = ""
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] = ()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    # OpenSSL names of the TLS 1.2 (and lower) suites to offer; empty for OpenSSL's defaults.
    ciphers: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    # OpenSSL name of the only key exchange group to allow; None for OpenSSL's defaults.
    curve: str | None = None


@dataclass(frozen=True)
class WebConfig:
    """A validated web configuration. `WebConfig()` is "no web config": plain HTTP, no authentication."""

    source: str = ""
    tls: TLSServerConfig | None = None
    http2: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    # (user name, bcrypt hash); the hashes stay out of repr.
    basic_auth_users: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    rate_limit_interval: float = 0.0
    rate_limit_burst: int = 0
    # Settings accepted but not honoured exactly; the caller logs each one at startup.
    warnings: tuple[str, ...] = ()


class _Checker(Checker):
    """The web config's own kinds of values, on top of the shared key-path bookkeeping."""

    def secret(self, value: object, path: str) -> str:
        """Like string(), but an error never shows the value."""
        if value is None:
            return ""
        if not isinstance(value, str):
            self.error(path, f"expected a string, got a {_kind(value)} (value not shown)")
            return ""
        return value

    def boolean(self, value: object, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {describe(value)}")
            return default
        return value

    def strings(self, value: object, path: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list of strings, got {describe(value)}")
            return []
        result = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item:
                result.append(item)
            else:
                self.error(f"{path}[{index}]", f"expected a non-empty string, got {describe(item)}")
        return result

    def file(self, value: object, path: str, base: Path) -> Path | None:
        text = self.string(value, path)
        if not text:
            return None
        resolved = Path(text) if Path(text).is_absolute() else base / text
        if not resolved.is_file():
            shown = str(resolved) if resolved == Path(text) else f"{resolved} (relative to {base})"
            self.error(path, f"file not found: {shown}")
            return None
        return resolved


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _go_duration(value: object) -> float | None:
    """Seconds from a Go duration (`1s`, `500ms`, `1m30s`) or the number 0; None otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0.0 if value == 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _GO_DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 and math.isfinite(total) else None


def _tls(check: _Checker, value: object, base: Path) -> TLSServerConfig | None:
    data = check.mapping(value, "tls_server_config", _TLS_KEYS)
    if not data:
        # Absent, null or {}: plain HTTP, as with the toolkit. Any key at all asks for TLS.
        return None
    p = "tls_server_config"

    cert_file = check.file(data.get("cert_file"), f"{p}.cert_file", base)
    key_file = check.file(data.get("key_file"), f"{p}.key_file", base)
    client_ca_file = check.file(data.get("client_ca_file"), f"{p}.client_ca_file", base)
    cert = check.string(data.get("cert"), f"{p}.cert")
    key = check.secret(data.get("key"), f"{p}.key")
    client_ca = check.string(data.get("client_ca"), f"{p}.client_ca")
    for inline, name in ((cert, "cert"), (key, "key"), (client_ca, "client_ca")):
        if inline and data.get(f"{name}_file"):
            check.error(f"{p}.{name}", f"set either {name} (inline PEM) or {name}_file, not both")
    if not cert and not data.get("cert_file"):
        check.error(p, "missing cert_file (or an inline cert): TLS needs the server certificate")
    if not key and not data.get("key_file"):
        check.error(p, "missing key_file (or an inline key): TLS needs the server's private key")

    auth = check.string(data.get("client_auth_type"), f"{p}.client_auth_type") or "NoClientCert"
    has_ca = bool(client_ca_file or client_ca or data.get("client_ca_file"))
    if auth in ("RequireAnyClientCert", "RequireClientCert"):
        check.error(
            f"{p}.client_auth_type",
            f"{auth} (require a client certificate without verifying it) is not supported: Python's ssl "
            "module verifies every certificate it requires; "
            "use RequireAndVerifyClientCert with client_ca_file",
        )
    elif auth not in _VERIFY_MODES:
        check.error(f"{p}.client_auth_type", f"expected one of {', '.join(_CLIENT_AUTH_TYPES)}, got {auth!r}")
    elif auth == "NoClientCert" and has_ca:
        check.error(
            f"{p}.client_auth_type",
            "a client CA is configured but client_auth_type is NoClientCert; "
            "set RequireAndVerifyClientCert (or remove the client CA)",
        )
    elif auth == "RequestClientCert":
        check.warn(
            f"{p}.client_auth_type",
            "RequestClientCert: no client certificate is requested (Python's ssl module cannot request one "
            "without verifying it); this type never authenticated clients, use RequireAndVerifyClientCert",
        )
    elif _VERIFY_MODES[auth] != ssl.CERT_NONE and not has_ca:
        check.error(
            f"{p}.client_auth_type",
            f"{auth} needs client_ca_file (or client_ca) to verify certificates against",
        )

    sans = check.strings(data.get("client_allowed_sans"), f"{p}.client_allowed_sans")
    if sans and auth in _VERIFY_MODES and auth != "RequireAndVerifyClientCert":
        check.error(
            f"{p}.client_allowed_sans",
            f"needs client_auth_type RequireAndVerifyClientCert (got {auth}): otherwise a client may connect "
            "without a certificate, leaving no SAN to check",
        )

    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        text = check.string(data.get(name), f"{p}.{name}") or default
        if text not in _TLS_VERSIONS:
            check.error(f"{p}.{name}", f"expected one of {', '.join(_TLS_VERSIONS)}, got {text!r}")
            text = default
        elif text in ("TLS10", "TLS11"):
            check.warn(f"{p}.{name}", f"{text} is deprecated and OpenSSL may refuse it regardless")
        versions[name] = _TLS_VERSIONS[text]
    if versions["min_version"] > versions["max_version"]:
        check.error(f"{p}.max_version", "is lower than min_version: no TLS version would be left")

    ciphers = []
    for index, name in enumerate(check.strings(data.get("cipher_suites"), f"{p}.cipher_suites")):
        if name in _CIPHER_SUITES:
            ciphers.append(_CIPHER_SUITES[name])
        elif name in _TLS13_SUITES:
            check.warn(
                f"{p}.cipher_suites[{index}]",
                f"{name} is a TLS 1.3 suite; TLS 1.3 suites are not configurable",
            )
        else:
            check.error(
                f"{p}.cipher_suites[{index}]",
                f"unknown cipher suite {name!r} (expected one of: {', '.join(_CIPHER_SUITES)})",
            )
    if data.get("cipher_suites") and not ciphers and versions["min_version"] < ssl.TLSVersion.TLSv1_3:
        check.error(
            f"{p}.cipher_suites", "lists no TLS 1.2 suite: TLS 1.2 clients could not connect with any suite"
        )

    curve = None
    curves = check.strings(data.get("curve_preferences"), f"{p}.curve_preferences")
    for index, name in enumerate(curves):
        if name not in _CURVES:
            check.error(
                f"{p}.curve_preferences[{index}]",
                f"unknown curve {name!r} (expected one of: {', '.join(_CURVES)})",
            )
    if len(curves) > 1:
        check.error(
            f"{p}.curve_preferences",
            "lists several curves, but Python's ssl module can only restrict the key exchange to one; "
            "list one curve or remove the key",
        )
    elif curves and curves[0] in _CURVES:
        curve = _CURVES[curves[0]]

    return TLSServerConfig(
        cert_file=cert_file,
        key_file=key_file,
        cert=cert,
        key=key,
        client_ca_file=client_ca_file,
        client_ca=client_ca,
        client_auth_type=auth,
        client_allowed_sans=tuple(sans),
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        ciphers=tuple(ciphers),
        prefer_server_cipher_suites=check.boolean(
            data.get("prefer_server_cipher_suites"), f"{p}.prefer_server_cipher_suites", True
        ),
        curve=curve,
    )


def _headers(check: _Checker, value: object) -> tuple[tuple[str, str], ...]:
    path = "http_server_config.headers"
    data = check.mapping(value, path, set(_HEADERS))
    result = []
    for name, raw in data.items():
        text = check.string(raw, f"{path}.{name}")
        if not text:
            continue  # blank: the header is not sent
        if "\r" in text or "\n" in text:
            check.error(f"{path}.{name}", "expected a single-line value")
        elif _HEADERS[name] and text not in _HEADERS[name]:
            check.error(f"{path}.{name}", f"expected one of {', '.join(_HEADERS[name])}, got {text!r}")
        else:
            result.append((name, text))
    return tuple(result)


def _users(check: _Checker, value: object) -> tuple[tuple[str, bytes], ...]:
    data = check.mapping(value, "basic_auth_users")
    users = []
    for name, raw in data.items():
        path = f"basic_auth_users.{name}"
        if not isinstance(name, str) or not name:
            check.error(path, "expected a user name (a non-empty string)")
            continue
        if ":" in name:
            check.error(path, "a user name cannot contain ':' (basic auth splits user and password there)")
            continue
        if not isinstance(raw, str):
            check.error(path, f"expected a bcrypt hash string, got a {_kind(raw)} (value not shown)")
            continue
        hashed = raw.encode("utf-8", "replace")
        match = _BCRYPT.fullmatch(hashed)
        if match is None:
            # The hash is a secret (it can be attacked offline): describe it without showing it.
            check.error(
                path,
                "expected a bcrypt hash like $2y$10$ followed by 53 characters "
                f"(got {len(raw)} characters, not shown)",
            )
            continue
        cost = int(match.group(1))
        if not _BCRYPT_MIN_COST <= cost <= _BCRYPT_MAX_COST:
            check.error(path, f"bcrypt cost must be {_BCRYPT_MIN_COST}-{_BCRYPT_MAX_COST}, got {cost}")
            continue
        users.append((name, hashed))
    return tuple(users)


def parse_web_config(document: object, source: str, base_dir: Path) -> WebConfig:
    """Validates a parsed YAML document; relative file paths are taken from `base_dir`."""
    check = _Checker(source)
    check.utf8(document)
    data = check.mapping(document, "", _TOP_KEYS)
    tls = _tls(check, data.get("tls_server_config"), base_dir)

    http = check.mapping(data.get("http_server_config"), "http_server_config", {"http2", "headers"})
    http2 = check.boolean(http.get("http2"), "http_server_config.http2", True)
    if http.get("http2") is True:
        check.warn("http_server_config.http2", "aiohttp serves HTTP/1.1 only; HTTP/2 is not offered")
    headers = _headers(check, http.get("headers"))

    users = _users(check, data.get("basic_auth_users"))
    if users and tls is None:
        check.warn(
            "basic_auth_users",
            "passwords cross the network in clear text: tls_server_config is not set "
            "(fine only behind a TLS-terminating proxy)",
        )

    rate = check.mapping(data.get("rate_limit"), "rate_limit", {"interval", "burst"})
    interval = 0.0
    if rate.get("interval") is not None:
        parsed = _go_duration(rate["interval"])
        if parsed is None:
            check.error(
                "rate_limit.interval",
                f"expected a duration with a unit like 1s or 500ms (or 0), got {describe(rate['interval'])}",
            )
        else:
            interval = parsed
    burst = rate.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        check.error("rate_limit.burst", f"expected a non-negative integer, got {describe(burst)}")
        burst = 0
    if interval > 0 and burst < 1:
        check.error(
            "rate_limit.burst", "must be at least 1 when rate_limit.interval is set (else nothing passes)"
        )

    if check.problems:
        raise WebConfigError(check.problems)
    config = WebConfig(
        source=source,
        tls=tls,
        http2=http2,
        headers=headers,
        basic_auth_users=users,
        rate_limit_interval=interval,
        rate_limit_burst=burst if interval > 0 else 0,
        warnings=tuple(check.warnings),
    )
    if tls is not None:
        _build_context(tls, source)  # loads the certificate, key and CAs now, so a bad file fails at startup
    return config


def load_web_config(path: str | Path) -> WebConfig:
    """Reads and validates a web config file and loads its certificates; raises WebConfigError if invalid."""
    return parse_web_config(read_yaml(path, WebConfigError), str(path), Path(path).parent)


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt for a passphrase on the terminal and block startup.
    raise _EncryptedKey


@contextmanager
def _pem_path(file: Path | None, inline: str) -> Iterator[str]:
    """A path to the PEM data: `ssl` loads a certificate chain only from a file."""
    if file is not None:
        yield str(file)
        return
    data = inline.encode()
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("exporter-web-config")  # stays in memory: an inline key never touches disk
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="exporter-web-config-") as tmp:  # mode 0700
        pem = Path(tmp) / "inline.pem"
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        yield str(pem)


def _read_pem(file: Path | None, inline: str, path: str, marker: str, what: str, problems: list[str]) -> str:
    """The PEM text, or "" after recording why it is unusable."""
    if file is None:
        text = inline
    else:
        try:
            text = file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a PEM (ASCII) file"
            problems.append(f"{path}: cannot read {file}: {reason}")
            return ""
    if marker not in text:
        problems.append(f"{path}: expected a PEM {what} (no '{marker}' line found)")
        return ""
    return text


def _openssl_reason(exc: ssl.SSLError) -> str:
    # OpenSSL's reasons name what failed ("PEM lib", "NO_START_LINE"), never the key material.
    return exc.reason or re.sub(r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc)) or "unknown error"


def _build_context(tls: TLSServerConfig, source: str) -> ssl.SSLContext:
    problems: list[str] = []
    p = f"{source}: tls_server_config"
    cert_path = f"{p}.cert_file" if tls.cert_file else f"{p}.cert"
    key_path = f"{p}.key_file" if tls.key_file else f"{p}.key"
    ca_path = f"{p}.client_ca_file" if tls.client_ca_file else f"{p}.client_ca"

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # TLS10/TLS11 warn once in WebConfig.warnings already; ssl's DeprecationWarning would repeat it.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = tls.min_version
        context.maximum_version = tls.max_version
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    if tls.ciphers:
        try:
            context.set_ciphers(":".join(tls.ciphers))
        except ssl.SSLError:
            problems.append(f"{p}.cipher_suites: none of these suites is available in {ssl.OPENSSL_VERSION}")
    if tls.curve is not None:
        try:
            context.set_ecdh_curve(tls.curve)
        except (ValueError, ssl.SSLError):
            problems.append(f"{p}.curve_preferences: {tls.curve} is not available in {ssl.OPENSSL_VERSION}")

    cert_pem = _read_pem(
        tls.cert_file, tls.cert, cert_path, "-----BEGIN CERTIFICATE-----", "certificate", problems
    )
    if cert_pem:
        try:
            # Parses every certificate on its own first, so a broken one is not blamed on the key.
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_pem)
        except ssl.SSLError as exc:
            problems.append(f"{cert_path}: cannot load the certificate ({_openssl_reason(exc)})")
            cert_pem = ""
    key_pem = _read_pem(tls.key_file, tls.key, key_path, "PRIVATE KEY-----", "private key", problems)
    if cert_pem and key_pem:
        try:
            with _pem_path(tls.cert_file, tls.cert) as cert, _pem_path(tls.key_file, tls.key) as key:
                context.load_cert_chain(cert, key, password=_refuse_passphrase)
        except _EncryptedKey:
            problems.append(f"{key_path}: the private key is encrypted; provide it unencrypted")
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                problems.append(f"{key_path}: the private key does not belong to the certificate")
            else:
                problems.append(
                    f"{key_path}: cannot load the private key ({_openssl_reason(exc)}); "
                    "expected an unencrypted PEM private key"
                )
        except OSError as exc:
            problems.append(f"{key_path}: cannot load the private key ({exc.strerror})")

    context.verify_mode = _VERIFY_MODES.get(tls.client_auth_type, ssl.CERT_NONE)
    if context.verify_mode != ssl.CERT_NONE:
        ca_pem = _read_pem(
            tls.client_ca_file,
            tls.client_ca,
            ca_path,
            "-----BEGIN CERTIFICATE-----",
            "CA certificate",
            problems,
        )
        if ca_pem:
            try:
                context.load_verify_locations(cadata=ca_pem)
            except ssl.SSLError as exc:
                problems.append(f"{ca_path}: cannot load the client CA certificates ({_openssl_reason(exc)})")
    if problems:
        raise WebConfigError(problems)
    return context


def ssl_context(config: WebConfig) -> ssl.SSLContext | None:
    """The server-side context for `web.TCPSite(..., ssl_context=...)`; None when the config has no TLS.

    Raises WebConfigError if a file changed since load_web_config() and no longer loads.
    """
    return None if config.tls is None else _build_context(config.tls, config.source)


class _RateLimit:
    """A token bucket: `burst` requests at once, then one per `interval` (the toolkit's rate.Limiter)."""

    def __init__(self, interval: float, burst: int) -> None:
        self._interval = interval
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:
        return False


class _BasicAuth:
    """Checks `Authorization: Basic` credentials against bcrypt hashes without blocking the event loop.

    bcrypt is slow on purpose (~60 ms at cost 10), and Prometheus scrapes every few seconds with the same
    credentials, so successful checks are cached:

    - Only successes are cached, so the cache never turns a wrong password into a fast "no" to probe with,
      and never grows from failed guesses; entries can only be added by someone who knows a password.
    - The key is an HMAC-SHA256 of user, password and stored hash under a random per-process key. A hit
      therefore requires presenting the very same user and password (a SHA-256 collision aside). Nothing in
      the cache reveals a password: unlike an unkeyed fast hash, entries cannot be brute-forced without the
      process's key, and they die with the process. Dict lookup timing reveals nothing either, since nobody
      outside the process can compute the keys being looked up.
    - The cache holds at most `_CACHE_SIZE` entries (least recently used evicted), and the users and hashes
      cannot change while the process runs, so an entry never outlives the hash it was checked against.

    Misses run bcrypt in a worker thread, one at a time (like the toolkit): a flood of wrong passwords then
    costs one core, not all of them, and cached scrapes are not queued behind it. Unknown users are checked
    against a dummy hash of the highest configured cost so their timing matches known users'.
    """

    _CACHE_SIZE = 64

    def __init__(self, users: tuple[tuple[str, bytes], ...]) -> None:
        self._secret = secrets.token_bytes(32)
        self._users = [(self._mac(name.encode()), hashed) for name, hashed in users]
        cost = max(int(hashed[4:6]) for _, hashed in users)
        # A well-formed hash that no password matches; checking against it costs the same as a real one.
        self._dummy = bcrypt.gensalt(rounds=cost) + b"." * 31
        self._cache: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._lock = asyncio.Lock()

    def _mac(self, *parts: bytes) -> bytes:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()

    def _lookup(self, user: bytes) -> bytes | None:
        wanted, found = self._mac(user), None
        for name, hashed in self._users:  # every entry compared, in constant time: no early exit
            if hmac.compare_digest(name, wanted):
                found = hashed
        return found

    async def check(self, header: str | None) -> bool:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._lookup(user)
        key = self._mac(user, password, hashed or b"")
        if hashed is not None and key in self._cache:
            self._cache.move_to_end(key)
            return True
        async with self._lock:
            if hashed is not None and key in self._cache:  # a concurrent request just checked the same
                return True
            ok = await asyncio.to_thread(_bcrypt_check, password, hashed or self._dummy)
        if ok and hashed is not None:
            self._cache[key] = None
            while len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
            return True
        return False


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _subject_alt_names(peercert: object) -> set[str]:
    names: set[str] = set()
    if not isinstance(peercert, dict):
        return names
    for entry in peercert.get("subjectAltName", ()):
        if not (isinstance(entry, tuple) and len(entry) == 2):
            continue
        kind, value = entry
        if kind in ("DNS", "email", "URI"):
            names.add(str(value))
        elif kind == "IP Address":
            names.add(_normal_ip(str(value).strip()))
    return names


def _normal_ip(text: str) -> str:
    # ssl spells IPv6 addresses in full upper case; Go (and an operator) in the short form.
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _plain(status: int, reason: str, headers: Mapping[str, str]) -> web.Response:
    return web.Response(status=status, text=f"{status}: {reason}\n", headers=headers)


def middleware(config: WebConfig, bearer_paths: tuple[str, ...] = ()) -> Middleware:
    """An aiohttp middleware enforcing the config on every request, whatever the path.

    In order: the client certificate's SAN (403), the rate limit (429), basic auth (401 with a
    `WWW-Authenticate` challenge); then the configured headers are added to every response, errors included.
    Put it first in `web.Application(middlewares=...)` so nothing runs before it.

    A request under one of `bearer_paths` that carries a bearer token is not asked for basic auth: both
    would need the one `Authorization` header, and the handler there checks the token (a secret of its own).
    """
    headers = dict(config.headers)
    allowed_sans = {_normal_ip(san) for san in config.tls.client_allowed_sans} if config.tls else set()
    limiter = (
        _RateLimit(config.rate_limit_interval, config.rate_limit_burst)
        if config.rate_limit_interval
        else None
    )
    auth = _BasicAuth(config.basic_auth_users) if config.basic_auth_users else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if allowed_sans:
            peercert = request.transport.get_extra_info("peercert") if request.transport else None
            if not _subject_alt_names(peercert) & allowed_sans:
                log.debug("rejected a client certificate without an allowed SAN", extra=_fields(request))
                response = _plain(403, "Forbidden", headers)
                response.force_close()
                return response
        if limiter is not None and not limiter.allow():
            return _plain(429, "Too Many Requests", headers)
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        bearer = authorization is not None and authorization.split(" ", 1)[0].lower() == "bearer"
        if bearer and request.path.startswith(bearer_paths):
            pass  # the handler checks the bearer token
        elif auth is not None and not await auth.check(authorization):
            log.debug("rejected a request without valid basic auth credentials", extra=_fields(request))
            return _plain(401, "Unauthorized", {**headers, hdrs.WWW_AUTHENTICATE: WWW_AUTHENTICATE})
        try:
            served = await handler(request)
        except web.HTTPException as exc:  # 404, 405 and friends
            exc.headers.update(headers)
            raise
        if headers and not served.prepared:
            served.headers.update(headers)
        return served

    return guard


def _fields(request: web.Request) -> dict[str, Any]:
    # Only where the request came from and what it asked for: never its headers.
    return {"fields": {"remote": request.remote, "path": request.path}}


def middlewares(config: WebConfig, bearer_paths: tuple[str, ...] = ()) -> list[Middleware]:
    """What `create_app(..., middlewares=...)` needs for this config; empty when nothing is to be enforced."""
    if config.headers or config.basic_auth_users or config.rate_limit_interval:
        return [middleware(config, bearer_paths)]
    if config.tls is not None and config.tls.client_allowed_sans:
        return [middleware(config, bearer_paths)]
    return []


def summary(config: WebConfig) -> dict[str, Any]:
    """Log fields describing the config, safe to print: no keys, hashes or certificate contents."""
    fields: dict[str, Any] = {"web_config": config.source, "tls": config.tls is not None}
    if config.tls is not None:
        fields.update(
            client_auth=config.tls.client_auth_type,
            tls_versions=f"{config.tls.min_version.name}-{config.tls.max_version.name}",
        )
        if config.tls.client_allowed_sans:
            fields["client_allowed_sans"] = ",".join(config.tls.client_allowed_sans)
    fields["basic_auth_users"] = len(config.basic_auth_users)
    if config.rate_limit_interval:
        fields["rate_limit"] = f"{config.rate_limit_burst} burst, 1 per {config.rate_limit_interval:g}s"
    return fields
