"""TC3-HMAC-SHA256 request signing (Tencent Cloud API "Signature v3").

Both the client and the simulator use these functions, so the simulator verifies exactly what the client
produces; tests cross-check both against the official SDK so neither can drift from the real protocol.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

ALGORITHM = "TC3-HMAC-SHA256"
SIGNED_HEADERS = "content-type;host"
CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Credentials:
    secret_id: str
    secret_key: str
    token: str = ""

    def __repr__(self) -> str:
        # Keeps the key out of tracebacks, logs and debug output.
        return f"Credentials(secret_id={self.secret_id!r}, secret_key='<secret>', token='<secret>')"


def utc_date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def canonical_request(method: str, host: str, content_type: str, payload: bytes, query: str = "") -> str:
    payload_hash = hashlib.sha256(payload).hexdigest()
    canonical_headers = f"content-type:{content_type}\nhost:{host}\n"
    return f"{method}\n/\n{query}\n{canonical_headers}\n{SIGNED_HEADERS}\n{payload_hash}"


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signature(secret_key: str, timestamp: int, service: str, to_sign: str) -> str:
    k_date = _hmac(("TC3" + secret_key).encode("utf-8"), utc_date(timestamp))
    k_service = _hmac(k_date, service)
    k_signing = _hmac(k_service, "tc3_request")
    return hmac.new(k_signing, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(
    credentials: Credentials,
    service: str,
    host: str,
    timestamp: int,
    payload: bytes,
    content_type: str = CONTENT_TYPE,
    method: str = "POST",
) -> str:
    """The `Authorization` header value for a request whose body is exactly `payload`."""
    canonical = canonical_request(method, host, content_type, payload)
    sig = signature(credentials.secret_key, timestamp, service, string_to_sign(timestamp, service, canonical))
    return (
        f"{ALGORITHM} Credential={credentials.secret_id}/{utc_date(timestamp)}/{service}/tc3_request, "
        f"SignedHeaders={SIGNED_HEADERS}, Signature={sig}"
    )


def sign_headers(
    credentials: Credentials,
    *,
    service: str,
    host: str,
    action: str,
    version: str,
    region: str,
    timestamp: int,
    payload: bytes,
) -> dict[str, str]:
    """Every header a TC3-signed JSON POST needs, `Authorization` included."""
    headers = {
        "Content-Type": CONTENT_TYPE,
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Region": region,
        "Authorization": authorization(credentials, service, host, timestamp, payload),
    }
    if credentials.token:
        headers["X-TC-Token"] = credentials.token
    return headers


@dataclass(frozen=True)
class ParsedAuthorization:
    secret_id: str
    date: str
    service: str
    signed_headers: str
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Splits an `Authorization` header; None when it is not a well-formed TC3 header."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            return None
        fields[key] = val
    try:
        credential, signed_headers, sig = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError:
        return None
    scope = credential.split("/")
    if len(scope) != 4 or scope[3] != "tc3_request":
        return None
    return ParsedAuthorization(scope[0], scope[1], scope[2], signed_headers, sig)
