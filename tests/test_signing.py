"""`exporter.credentials.signing` against Tencent's published example and the official SDK's signer."""

from __future__ import annotations

import hashlib
import json
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tencentcloud.cdb.v20170320 import cdb_client
from tencentcloud.common import abstract_client, credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.sign import Sign
from tencentcloud.mariadb.v20170312 import mariadb_client

from exporter.catalogue.products import CDB, MARIADB
from exporter.credentials import signing
from exporter.credentials.signing import Credentials

# The worked example of the "Signature v3" page (DescribeInstances on CVM). Every value below is printed in
# the document; its example key pair is a placeholder that ends in EXAMPLE.
DOC_SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
DOC_SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
DOC_TIMESTAMP = 1551113065  # 2019-02-26 00:44:25 in UTC+8
DOC_SCOPE_DATE = "2019-02-25"
DOC_HOST = "cvm.tencentcloudapi.com"
DOC_CONTENT_TYPE = "application/json; charset=utf-8"
DOC_PAYLOAD = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
DOC_HASHED_PAYLOAD = "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
DOC_CANONICAL_REQUEST = (
    "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n"
    f"content-type;host\n{DOC_HASHED_PAYLOAD}"
)
DOC_HASHED_CANONICAL_REQUEST = "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
DOC_STRING_TO_SIGN = (
    f"TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n{DOC_HASHED_CANONICAL_REQUEST}"
)
DOC_SIGNATURE = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
DOC_AUTHORIZATION = (
    f"TC3-HMAC-SHA256 Credential={DOC_SECRET_ID}/2019-02-25/cvm/tc3_request, "
    f"SignedHeaders=content-type;host, Signature={DOC_SIGNATURE}"
)


def test_published_example_step_by_step() -> None:
    assert hashlib.sha256(DOC_PAYLOAD).hexdigest() == DOC_HASHED_PAYLOAD
    canonical = signing.canonical_request("POST", DOC_HOST, DOC_CONTENT_TYPE, DOC_PAYLOAD)
    assert canonical == DOC_CANONICAL_REQUEST
    to_sign = signing.string_to_sign(DOC_TIMESTAMP, "cvm", canonical)
    assert to_sign == DOC_STRING_TO_SIGN
    assert signing.signature(DOC_SECRET_KEY, DOC_TIMESTAMP, "cvm", to_sign) == DOC_SIGNATURE


def test_published_example_authorization_header() -> None:
    header = signing.authorization(
        Credentials(DOC_SECRET_ID, DOC_SECRET_KEY),
        "cvm",
        DOC_HOST,
        DOC_TIMESTAMP,
        DOC_PAYLOAD,
        content_type=DOC_CONTENT_TYPE,
    )
    assert header == DOC_AUTHORIZATION


def test_sdk_signer_agrees_with_the_published_example() -> None:
    # Guards the known answer itself: the reference implementation must reproduce it too.
    assert Sign.sign_tc3(DOC_SECRET_KEY, "2019-02-25", "cvm", DOC_STRING_TO_SIGN) == DOC_SIGNATURE


@pytest.fixture
def beijing_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Runs the test with the process in UTC+8, where local and UTC dates differ after 16:00 UTC."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("beijing_time")
def test_utc_date_ignores_the_local_time_zone() -> None:
    assert time.localtime(DOC_TIMESTAMP).tm_mday == 26  # the fixture really moved the local clock
    assert signing.utc_date(DOC_TIMESTAMP) == "2019-02-25"
    assert DOC_SCOPE_DATE in signing.authorization(Credentials("a", "b"), "cvm", "h", DOC_TIMESTAMP, b"")
    midnight = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())
    assert (signing.utc_date(midnight - 1), signing.utc_date(midnight)) == ("2024-02-29", "2024-03-01")


# ------------------------------------------------------------------ against the SDK's request builder


CASES = [
    pytest.param(
        mariadb_client.MariadbClient,
        MARIADB.name,
        "DescribeFlow",
        "2017-03-12",
        "mariadb.tencentcloudapi.com",
        Credentials("AKIDmariadbcase000000000000000000001", "mariadb-case-key"),
        {"FlowId": 3340},
        1551113065,
        id="mariadb-default-host",
    ),
    pytest.param(
        cdb_client.CdbClient,
        CDB.name,
        "DescribeAsyncRequestInfo",
        "2017-03-20",
        "cdb.ap-guangzhou.tencentcloudapi.com",
        Credentials("AKIDcdbregionalcase00000000000000002", "cdb-case-key", "session-token-Zm9vYmFy"),
        {"AsyncRequestId": "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7"},
        1709251199,  # 23:59:59 UTC: one second before the scope date changes
        id="cdb-regional-host-with-token",
    ),
    pytest.param(
        cdb_client.CdbClient,
        CDB.name,
        "DescribeAsyncRequestInfo",
        "2017-03-20",
        "127.0.0.1:8080",
        Credentials("AKIDlocalcase0000000000000000000003", "local/case+key=="),
        {"AsyncRequestId": "数据库-任务"},  # the SDK escapes it to ASCII JSON
        1709251200,
        id="simulator-host-non-ascii-id",
    ),
]


@pytest.mark.parametrize(
    ("client_class", "service", "action", "version", "host", "key", "params", "timestamp"), CASES
)
def test_headers_match_the_sdk_request_builder(
    monkeypatch: pytest.MonkeyPatch,
    client_class: Any,
    service: str,
    action: str,
    version: str,
    host: str,
    key: Credentials,
    params: dict[str, Any],
    timestamp: int,
) -> None:
    monkeypatch.setattr(abstract_client, "time", types.SimpleNamespace(time=lambda: timestamp))
    cred = credential.Credential(key.secret_id, key.secret_key, key.token or None)
    client = client_class(cred, "ap-guangzhou", ClientProfile(httpProfile=HttpProfile(endpoint=host)))
    request = RequestInternal(host, "POST", "/")
    client._build_req_with_tc3_signature(action, params, request)

    payload = request.data.encode("utf-8")
    ours = signing.sign_headers(
        key,
        service=service,
        host=host,
        action=action,
        version=version,
        region="ap-guangzhou",
        timestamp=timestamp,
        payload=payload,
    )
    theirs = {name: request.header[name] for name in ours}
    assert ours == theirs
    assert ("X-TC-Token" in ours) == bool(key.token)
    parsed = signing.parse_authorization(request.header["Authorization"])
    assert parsed is not None
    assert (parsed.secret_id, parsed.service, parsed.date) == (
        key.secret_id,
        service,
        signing.utc_date(timestamp),
    )


@pytest.mark.parametrize(
    "payload",
    [
        '{"AsyncRequestId": "未命名-任务"}',  # raw UTF-8, as a client not escaping to ASCII sends it
        '{"FlowId": 1, "Note": "ümlaut ✓ 🚀"}',
        "",
    ],
)
def test_signature_matches_the_sdk_for_raw_non_ascii_payloads(payload: str) -> None:
    timestamp, service, host = 1700000000, CDB.name, "cdb.tencentcloudapi.com"
    key = "non-ascii-case-key"
    cred = credential.Credential("AKIDnonasciicase00000000000000000004", key)
    client = cdb_client.CdbClient(cred, "ap-guangzhou", ClientProfile(httpProfile=HttpProfile(endpoint=host)))
    request = RequestInternal(host, "POST", "/", header={"Content-Type": "application/json", "Host": host})
    request.header["X-TC-Timestamp"] = str(timestamp)
    request.data = payload
    date = signing.utc_date(timestamp)
    theirs = client._get_tc3_signature(json.loads(payload or "{}"), request, date, service, key)

    canonical = signing.canonical_request("POST", host, "application/json", payload.encode("utf-8"))
    ours = signing.signature(key, timestamp, service, signing.string_to_sign(timestamp, service, canonical))
    assert ours == theirs


# --------------------------------------------------------------------------- parsing and hygiene


def test_parse_authorization_round_trips() -> None:
    header = signing.authorization(Credentials("AKIDx", "k"), CDB.name, "h", DOC_TIMESTAMP, b"{}")
    parsed = signing.parse_authorization(header)
    assert parsed == signing.ParsedAuthorization(
        "AKIDx", "2019-02-25", CDB.name, "content-type;host", header.rsplit("=", 1)[1]
    )


_SIGNED = "SignedHeaders=content-type;host, Signature=ab"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "TC3-HMAC-SHA256",
        f"HMAC-SHA256 Credential=AKIDx/2019-02-25/cdb/tc3_request, {_SIGNED}",
        "TC3-HMAC-SHA256 Credential=AKIDx/2019-02-25/cdb/tc3_request, Signature=ab",
        f"TC3-HMAC-SHA256 Credential=AKIDx/2019-02-25/cdb, {_SIGNED}",
        f"TC3-HMAC-SHA256 Credential=AKIDx/2019-02-25/cdb/aws4_request, {_SIGNED}",
        f"TC3-HMAC-SHA256 Credential, {_SIGNED}",
    ],
)
def test_parse_authorization_rejects_malformed_headers(header: str) -> None:
    assert signing.parse_authorization(header) is None


def test_credentials_repr_hides_secrets() -> None:
    text = repr(Credentials("AKIDvisible", "very-secret-key", "very-secret-token"))
    assert "AKIDvisible" in text
    assert "very-secret" not in text
