"""The HTTP client in isolation (aioresponses): what it sends and how it classifies every answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses

from exporter import client as c
from exporter.services import CDB, MARIADB
from exporter.signing import Credentials, authorization

ENDPOINT = "https://cdb.tencentcloudapi.com"
CREDS = Credentials("AKIDtest", "s3cr3t-key", "session-token")
NOW = 1_763_856_000


@pytest.fixture
async def api() -> AsyncIterator[c.ApiClient]:
    async with aiohttp.ClientSession() as session:
        yield c.ApiClient(session, timeout=2.0, wall_clock=lambda: NOW)


def answer(**response: object) -> dict[str, object]:
    return {"Response": {"RequestId": "req-1", **response}}


async def test_sends_a_signed_json_post(api: c.ApiClient) -> None:
    with aioresponses() as mocked:
        mocked.post(ENDPOINT + "/", payload=answer(Status="RUNNING", Info=None))
        outcome = await api.describe(
            CDB, ENDPOINT, "ap-guangzhou", CREDS, "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7"
        )
        [call] = next(iter(mocked.requests.values()))
    assert outcome.ok
    assert outcome.observation is not None
    assert outcome.observation.status == "running"
    headers, body = call.kwargs["headers"], call.kwargs["data"]
    assert json.loads(body) == {"AsyncRequestId": "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7"}
    assert headers["X-TC-Action"] == "DescribeAsyncRequestInfo"
    assert headers["X-TC-Version"] == "2017-03-20"
    assert headers["X-TC-Region"] == "ap-guangzhou"
    assert headers["X-TC-Timestamp"] == str(NOW)
    assert headers["X-TC-Token"] == "session-token"
    assert headers["Host"] == "cdb.tencentcloudapi.com"
    # Signed over the exact bytes sent, with the API's own service name in the scope.
    assert headers["Authorization"] == authorization(CREDS, "cdb", "cdb.tencentcloudapi.com", NOW, body)
    assert "/cdb/tc3_request" in headers["Authorization"]


async def test_scope_service_comes_from_the_api_not_the_host(api: c.ApiClient) -> None:
    endpoint = "http://127.0.0.1:8080"
    with aioresponses() as mocked:
        mocked.post(endpoint + "/", payload=answer(Status=2))
        outcome = await api.describe(MARIADB, endpoint, "ap-guangzhou", CREDS, "3340")
        [call] = next(iter(mocked.requests.values()))
    assert outcome.observation is not None
    assert outcome.observation.status == "running"
    assert json.loads(call.kwargs["data"]) == {"FlowId": 3340}
    assert call.kwargs["headers"]["Host"] == "127.0.0.1:8080"
    assert "/mariadb/tc3_request" in call.kwargs["headers"]["Authorization"]


async def test_no_token_header_without_a_token(api: c.ApiClient) -> None:
    with aioresponses() as mocked:
        mocked.post(ENDPOINT + "/", payload=answer(Status="SUCCESS", Info="done"))
        await api.describe(CDB, ENDPOINT, "ap-guangzhou", Credentials("id", "key"), "abc")
        [call] = next(iter(mocked.requests.values()))
    assert "X-TC-Token" not in call.kwargs["headers"]


@pytest.mark.parametrize(
    ("mock", "code"),
    [
        (
            {"payload": {"Response": {"Error": {"Code": "RequestLimitExceeded", "Message": "slow"}}}},
            "RequestLimitExceeded",
        ),
        (
            {"payload": answer(Error={"Code": "InvalidParameter.InvalidAsyncRequestId", "Message": "x"})},
            "InvalidParameter.InvalidAsyncRequestId",
        ),
        ({"status": 500, "body": "oops"}, c.HTTP_STATUS),
        ({"status": 403, "payload": answer(Status="RUNNING")}, c.HTTP_STATUS),
        ({"body": "{not json"}, c.INVALID_RESPONSE),
        ({"payload": {"Status": "RUNNING"}}, c.INVALID_RESPONSE),
        ({"payload": answer(Info="no status")}, c.INVALID_RESPONSE),
        ({"payload": answer(Status=7)}, c.INVALID_RESPONSE),
        ({"payload": answer(Error="flat string")}, c.INVALID_RESPONSE),
        ({"exception": TimeoutError()}, c.TIMEOUT),
        ({"exception": aiohttp.ClientConnectionError("refused")}, c.CONNECTION_ERROR),
        ({"exception": aiohttp.ClientPayloadError("truncated")}, c.INVALID_RESPONSE),
    ],
)
async def test_every_failure_is_classified(api: c.ApiClient, mock: dict[str, object], code: str) -> None:
    with aioresponses() as mocked:
        mocked.post(ENDPOINT + "/", **mock)  # type: ignore[arg-type]
        outcome = await api.describe(CDB, ENDPOINT, "ap-guangzhou", CREDS, "abc")
    assert outcome.code == code
    assert not outcome.ok
    assert CDB.is_throttling(outcome.code) == code.startswith("RequestLimitExceeded")


@pytest.mark.parametrize(
    ("response", "status", "info"),
    [
        ({"Status": None, "Info": None}, "unknown", None),
        (
            {"Status": "UNDEFINED", "Info": "waiting for the maintenance window"},
            "undefined",
            "waiting for the maintenance window",
        ),
        ({"Status": "Rollback"}, "rollback", None),
        ({"Status": "SUCCESS", "Info": "x" * 1000}, "success", "x" * 199 + "…"),
    ],
)
def test_cdb_statuses(response: dict[str, object], status: str, info: str | None) -> None:
    outcome = c.classify(200, json.dumps(answer(**response)).encode(), CDB)
    assert outcome.observation is not None
    assert (outcome.observation.status, outcome.observation.info) == (status, info)


@pytest.mark.parametrize(
    ("raw", "status"), [(0, "success"), (1, "failed"), (2, "running"), (None, "unknown"), (9, "status_9")]
)
def test_mariadb_statuses(raw: int | None, status: str) -> None:
    outcome = c.classify(200, json.dumps(answer(Status=raw)).encode(), MARIADB)
    assert outcome.observation is not None
    assert outcome.observation.status == status


@pytest.mark.parametrize("body", [b"", b"null", b"[]", b'{"Response": []}', b"\xff\xfe", b'"x"'])
def test_odd_bodies_are_invalid_responses(body: bytes) -> None:
    assert c.classify(200, body, MARIADB).code == c.INVALID_RESPONSE


def test_proxies_come_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "cdb.tencentcloudapi.com")
    api = c.ApiClient(None, 1.0)  # type: ignore[arg-type]  # the session is not used here
    assert api._proxy("https://mariadb.tencentcloudapi.com") == "http://proxy.internal:3128"
    assert api._proxy("https://cdb.tencentcloudapi.com") is None
    assert api._proxy("http://127.0.0.1:8080") is None  # no HTTP_PROXY set
