"""One blocking HTTP request of a command-line client (`healthcheck`, `register`) to a running exporter,
and why a failed one failed, in words fit for stderr."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping


def call(
    host: str,
    port: int | None,
    tls: ssl.SSLContext | None,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str | bytes],
    timeout: float,
    limit: int,
    body: bytes | None = None,
) -> tuple[int, str, bytes]:
    """Status, reason and at most `limit` bytes of the answer; raises OSError or HTTPException."""
    connection: http.client.HTTPConnection
    if tls is None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.reason, response.read(limit)
    finally:
        connection.close()


def describe_failure(exc: BaseException) -> str:
    """A failed request or file read, without a traceback: the TLS reason, the system's message..."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message or exc.reason or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
