"""One blocking HTTP request of a command-line client (`healthcheck`, `register`) to a running exporter,
why a failed one failed, in words fit for stderr, and `Redactor`, which keeps the credentials a request
sent out of whatever the command prints (an answer can echo them: a proxy's 400 page, a JSON error quoting
the request's headers)."""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
import ssl
from collections.abc import Iterable, Mapping

REDACTED = "<redacted>"
# A secret this long is redacted wherever it appears; a shorter one only as a word of its own, so a token
# "t" does not mangle "Connection refused".
_ANYWHERE = 8
_WORD_EDGE = "A-Za-z0-9"
# An echoed Authorization (or Proxy-Authorization) header or field, whatever its quoting: `Authorization:
# Bearer x`, `"authorization": "Basic x"`, `authorization=x`. The value is its scheme and credentials.
_ECHOED = re.compile(
    r"""(?i)((?:proxy-)?authori[sz]ation["']?\s*[:=]\s*["']?)([^\s"'<>,;&}]+(?:[ \t]+[^\s"'<>,;&}]+)?)"""
)


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


class Redactor:
    """Replaces the credentials of a request's `Authorization` header, in every form an answer may echo them
    (the whole value, the credentials after the scheme, and for basic auth the decoded `user:password` and
    the password), and any echoed Authorization header's value, with <redacted>."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        secret = secret.strip()
        if not secret:
            return
        forms = {secret}
        scheme, _, credentials = secret.partition(" ")
        if credentials.strip():
            forms.add(credentials.strip())
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    decoded = ""
                if decoded:
                    forms.add(decoded)
                    forms.add(decoded.partition(":")[2])
        # As a JSON string would carry them (a JSON error quoting the headers): `/` as `\/`, say.
        escaped = {json.dumps(form)[1:-1] for form in forms}
        forms |= escaped | {form.replace("/", "\\/") for form in escaped}
        self._secrets |= {form for form in forms if form}

    @classmethod
    def of_headers(cls, headers: Mapping[str, str | bytes]) -> Redactor:
        """The credentials in `headers` (Authorization, Proxy-Authorization)."""
        redactor = cls()
        for name, value in headers.items():
            if name.lower() in ("authorization", "proxy-authorization"):
                redactor.add(value.decode("latin-1") if isinstance(value, bytes) else value)
        return redactor

    def __call__(self, text: str) -> str:
        text = _ECHOED.sub(lambda m: m.group(1) + REDACTED, text)
        for secret in sorted(self._secrets, key=len, reverse=True):  # longest first: a form holds others
            if len(secret) >= _ANYWHERE:
                text = text.replace(secret, REDACTED)
            else:
                edge = _WORD_EDGE
                text = re.sub(rf"(?<![{edge}]){re.escape(secret)}(?![{edge}])", REDACTED, text)
        return text
