"""The web config's plain data: what `exporter.web.config` validates the file into, and what the TLS builder
(`exporter.web.tls`) and the request guard (`exporter.web.guard`) read. Kept apart so those modules need not
import each other.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path


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
