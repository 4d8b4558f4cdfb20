"""`--web.config.file`: TLS, mutual TLS, basic auth, response headers and a rate limit for every endpoint.

The file uses the web configuration format shared by Prometheus exporters (the Go exporter-toolkit), so an
operator can reuse the file they already have for node_exporter. Problems are collected and reported as
`file: key.path: what was expected`, like the main config; unknown keys are errors.

Relative `cert_file`, `key_file` and `client_ca_file` paths are resolved against the web config file's
directory, as the toolkit does. Nothing secret (inline keys, bcrypt hashes, presented passwords) ever appears
in an error, a log line or a response.

Where Python's `ssl` module or aiohttp cannot do what the toolkit does, the setting is an error or a warning
(in `WebConfig.warnings`, for the caller to log), never silently dropped:

- The file is re-read when it changes, as the toolkit re-reads it for each connection: `exporter.web.reload`
  checks it (and the certificate, key and CA files it names) once a second, off the event loop, and keeps the
  last good version in force when a new one is invalid. Turning TLS on or off still needs a restart.
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
- `http_server_config.headers` values may be numbers (`X-XSS-Protection: 1`), as Go's YAML decoder turns a
  number into text; they are sent in decimal (Go sends them as written: quote `0x10` to send that). A YAML
  boolean (`true`, `yes`, `on`) is an error: no header the toolkit allows takes one (quote it if meant).
- The headers are added by the request middleware, and also by `header_hook()` (for the app's
  `on_response_prepare`) to responses a handler streams itself, as /metrics does.

This module validates the file into a WebConfig (`exporter.web.model`). `exporter.web.tls` holds the TLS
part (parsing `tls_server_config`, building the `ssl.SSLContext`), `exporter.web.guard` the request-time
middleware, `exporter.web.reload` the watching of the file, and `exporter.web.configcheck` the error type and
checker they share; the public names are re-exported here.
"""

from __future__ import annotations

import math
import re
import ssl
from pathlib import Path
from typing import Any

from exporter.config.validation import describe, read_yaml
from exporter.web.configcheck import WebChecker, value_kind
from exporter.web.configcheck import WebConfigError as WebConfigError
from exporter.web.guard import REALM as REALM
from exporter.web.guard import WWW_AUTHENTICATE as WWW_AUTHENTICATE
from exporter.web.guard import header_hook as header_hook
from exporter.web.guard import middleware as middleware
from exporter.web.guard import middlewares as middlewares
from exporter.web.model import TLSServerConfig as TLSServerConfig
from exporter.web.model import WebConfig as WebConfig
from exporter.web.tls import build_context, parse_tls
from exporter.web.tls import ssl_context as ssl_context

_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
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


def _header_text(check: WebChecker, value: object, path: str) -> str:
    """A header value as text: a string, or a number as Go's YAML decoder would give it ("" if unusable)."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, bool):
        # PyYAML reads `true`, `yes` and `on` alike, so what was written cannot even be sent back; and no
        # header the toolkit allows takes a boolean (X-XSS-Protection takes 0 or 1).
        check.error(
            path, f"expected text or a number, got {describe(value)}: no header takes true/false (quote it)"
        )
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)  # the shortest text that reads back as the same number: 1.0, 0.5, 1e+20
        check.error(path, f"expected text or a finite number, got {describe(value)}")
        return ""
    check.error(path, f"expected text or a number, got {describe(value)}")
    return ""


def _headers(check: WebChecker, value: object) -> tuple[tuple[str, str], ...]:
    path = "http_server_config.headers"
    data = check.mapping(value, path, set(_HEADERS))
    result = []
    for name, raw in data.items():
        text = _header_text(check, raw, f"{path}.{name}")
        if not text:
            continue  # blank: the header is not sent
        if "\r" in text or "\n" in text:
            check.error(f"{path}.{name}", "expected a single-line value")
        elif _HEADERS[name] and text not in _HEADERS[name]:
            check.error(f"{path}.{name}", f"expected one of {', '.join(_HEADERS[name])}, got {text!r}")
        else:
            result.append((name, text))
    return tuple(result)


def _users(check: WebChecker, value: object) -> tuple[tuple[str, bytes], ...]:
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
            check.error(path, f"expected a bcrypt hash string, got a {value_kind(raw)} (value not shown)")
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
    return build_web_config(document, source, base_dir)[0]


def build_web_config(
    document: object, source: str, base_dir: Path
) -> tuple[WebConfig, ssl.SSLContext | None]:
    """parse_web_config(), also handing back the server context built from the files as they were read now."""
    check = WebChecker(source)
    check.utf8(document)
    data = check.mapping(document, "", _TOP_KEYS)
    tls = parse_tls(check, data.get("tls_server_config"), base_dir)

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
    # Loads the certificate, key and CAs now, so a bad file fails at startup (or fails the reload).
    return config, None if tls is None else build_context(tls, source)


def load_web_config(path: str | Path) -> WebConfig:
    """Reads and validates a web config file and loads its certificates; raises WebConfigError if invalid."""
    return parse_web_config(read_yaml(path, WebConfigError), str(path), Path(path).parent)


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
