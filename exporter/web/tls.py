"""`tls_server_config` of the web config: validating it into a TLSServerConfig and building the server's
`ssl.SSLContext` from it (certificates, private key, client CAs, versions, suites, curve); and the
listener's SwitchingContext, which makes each new connection with the context in force after a reload.

`exporter.web.config` describes what is supported and how it differs from the exporter-toolkit; this module
is its TLS half, split off to keep either file readable. Nothing secret (inline keys) ever appears in an
error.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from exporter.web.configcheck import WebChecker, WebConfigError
from exporter.web.model import TLSServerConfig as TLSServerConfig
from exporter.web.model import WebConfig

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


def parse_tls(check: WebChecker, value: object, base: Path) -> TLSServerConfig | None:
    """The validated `tls_server_config`, or None for plain HTTP; problems go to `check`."""
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


def build_context(tls: TLSServerConfig, source: str) -> ssl.SSLContext:
    """Loads the certificate, key and CAs into a server context; raises WebConfigError if any fails."""
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


class SwitchingContext(ssl.SSLContext):
    """The listener's server context, whose every new connection is made by the context `current()` returns
    then: a certificate, key or client CA loaded since applies from the next handshake on, with every
    setting of its config (client certificate verification, versions, suites, curve), while connections
    already open keep the context they were made with.

    asyncio makes each TLS connection with `wrap_bio()` (ssl sockets with `wrap_socket()`), the only ways
    to make one, which hand over to the context in force. This context itself holds no certificate: used
    any other way, a handshake fails rather than falling back to something stale.

    Each loaded context has its own session cache and ticket keys, so a client resumes a TLS session only
    with the context that made it: a session made before a reload, whose client certificate the config in
    force may no longer accept, or that had none, is never resumed after it (a full handshake checks it).
    """

    def __new__(cls, current: Callable[[], ssl.SSLContext]) -> SwitchingContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, current: Callable[[], ssl.SSLContext]) -> None:
        self._current = current

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self._current().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return self._current().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, server_hostname, session
        )


def ssl_context(config: WebConfig) -> ssl.SSLContext | None:
    """The server-side context for `web.TCPSite(..., ssl_context=...)`; None when the config has no TLS.

    Raises WebConfigError if a file changed since load_web_config() and no longer loads.
    """
    return None if config.tls is None else build_context(config.tls, config.source)
