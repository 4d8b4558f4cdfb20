"""The HTTP client against real peers on 127.0.0.1: what it sends and how it classifies every answer.

Well-formed answers come from an `aiohttp.web` app that records every request it receives. It serves HTTPS
with a trustme certificate for cdb.tencentcloudapi.com, which the session's resolver sends to the app's
loopback port, so the client calls the real endpoint URL; and plain HTTP on a second loopback port. A peer
that misbehaves (hangs, truncates, resets, refuses) is a raw asyncio server writing exactly the bytes each
case needs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict

from exporter.catalogue.products import CDB, MARIADB
from exporter.credentials.signing import Credentials, authorization
from exporter.polling import client as c

API_HOST = "cdb.tencentcloudapi.com"
ENDPOINT = f"https://{API_HOST}"
CREDS = Credentials("AKIDtest", "s3cr3t-key", "session-token")
NOW = 1_763_856_000


def answer(**response: object) -> dict[str, object]:
    return {"Response": {"RequestId": "req-1", **response}}


@dataclass(frozen=True)
class Reply:
    """What the app answers: an HTTP status and the exact body bytes."""

    status: int
    body: bytes
    content_type: str = "application/json"


def json_reply(document: object, status: int = 200) -> Reply:
    return Reply(status, json.dumps(document).encode())


def text_reply(text: str, status: int = 200) -> Reply:
    return Reply(status, text.encode(), "text/plain")


@dataclass(frozen=True)
class Seen:
    """One request as it arrived at the server."""

    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class ApiServer:
    """The API's stand-in: answers every request with `reply` and records it in `seen`."""

    tls_port: int = 0
    plain_endpoint: str = ""
    reply: Reply = field(default_factory=lambda: json_reply(answer(Status="RUNNING")))
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, CIMultiDict(request.headers), body))
        return web.Response(
            status=self.reply.status, body=self.reply.body, content_type=self.reply.content_type
        )


class LoopbackResolver(AbstractResolver):
    """Sends API_HOST:443 to the app's TLS port on 127.0.0.1; other names fail: no test leaves the host."""

    def __init__(self, tls_port: int) -> None:
        self._tls_port = tls_port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if (host, port) != (API_HOST, 443):
            raise OSError(f"the tests resolve only {API_HOST}:443, not {host}:{port}")
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self._tls_port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def server(ca: trustme.CA) -> AsyncIterator[ApiServer]:
    """The app on two free loopback ports, HTTPS (certificate for API_HOST) and plain HTTP; stopped after."""
    api_server = ApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api_server.handle)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(API_HOST).configure_cert(tls)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        (_, tls_port, *_), (_, plain_port, *_) = runner.addresses
        api_server.tls_port = tls_port
        api_server.plain_endpoint = f"http://127.0.0.1:{plain_port}"
        yield api_server
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(ca: trustme.CA, server: ApiServer) -> AsyncIterator[c.ApiClient]:
    """The client on a session that trusts the test CA and resolves API_HOST to the app."""
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    connector = aiohttp.TCPConnector(ssl=trust, resolver=LoopbackResolver(server.tls_port))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield c.ApiClient(session, timeout=2.0, wall_clock=lambda: NOW)


async def test_sends_a_signed_json_post(api: c.ApiClient, server: ApiServer) -> None:
    server.reply = json_reply(answer(Status="RUNNING", Info=None))
    outcome = await api.describe(CDB, ENDPOINT, "ap-guangzhou", CREDS, "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7")
    assert outcome.ok
    assert outcome.observation is not None
    assert outcome.observation.status == "running"
    [seen] = server.seen
    headers, body = seen.headers, seen.body
    assert (seen.method, seen.path) == ("POST", "/")
    assert json.loads(body) == {"AsyncRequestId": "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7"}
    assert headers["X-TC-Action"] == "DescribeAsyncRequestInfo"
    assert headers["X-TC-Version"] == "2017-03-20"
    assert headers["X-TC-Region"] == "ap-guangzhou"
    assert headers["X-TC-Timestamp"] == str(NOW)
    assert headers["X-TC-Token"] == "session-token"
    assert headers["Host"] == "cdb.tencentcloudapi.com"
    # Signed over the exact bytes that arrived, with the API's own service name in the scope.
    assert headers["Authorization"] == authorization(CREDS, CDB.name, "cdb.tencentcloudapi.com", NOW, body)
    assert "/cdb/tc3_request" in headers["Authorization"]


async def test_scope_service_comes_from_the_api_not_the_host(api: c.ApiClient, server: ApiServer) -> None:
    endpoint = server.plain_endpoint  # http://127.0.0.1:<port>
    server.reply = json_reply(answer(Status=2))
    outcome = await api.describe(MARIADB, endpoint, "ap-guangzhou", CREDS, "3340")
    assert outcome.observation is not None
    assert outcome.observation.status == "running"
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", "/")
    assert json.loads(seen.body) == {"FlowId": 3340}
    assert seen.headers["Host"] == endpoint.removeprefix("http://")
    assert "/mariadb/tc3_request" in seen.headers["Authorization"]


async def test_no_token_header_without_a_token(api: c.ApiClient, server: ApiServer) -> None:
    server.reply = json_reply(answer(Status="SUCCESS", Info="done"))
    await api.describe(CDB, ENDPOINT, "ap-guangzhou", Credentials("id", "key"), "abc")
    [seen] = server.seen
    assert "X-TC-Token" not in seen.headers


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (
            json_reply({"Response": {"Error": {"Code": "RequestLimitExceeded", "Message": "slow"}}}),
            "RequestLimitExceeded",
        ),
        (
            json_reply(answer(Error={"Code": "InvalidParameter.InvalidAsyncRequestId", "Message": "x"})),
            "InvalidParameter.InvalidAsyncRequestId",
        ),
        (text_reply("oops", status=500), c.HTTP_STATUS),
        (json_reply(answer(Status="RUNNING"), status=403), c.HTTP_STATUS),
        (text_reply("{not json"), c.INVALID_RESPONSE),
        (json_reply({"Status": "RUNNING"}), c.INVALID_RESPONSE),
        (json_reply(answer(Info="no status")), c.INVALID_RESPONSE),
        (json_reply(answer(Status=7)), c.INVALID_RESPONSE),
        (json_reply(answer(Error="flat string")), c.INVALID_RESPONSE),
    ],
)
async def test_every_failure_is_classified(
    api: c.ApiClient, server: ApiServer, reply: Reply, code: str
) -> None:
    server.reply = reply
    outcome = await api.describe(CDB, ENDPOINT, "ap-guangzhou", CREDS, "abc")
    assert outcome.code == code
    assert not outcome.ok
    assert CDB.is_throttling(outcome.code) == code.startswith("RequestLimitExceeded")
    assert len(server.seen) == 1


# Misbehaving peers. Each reads one whole request (so closing never resets a connection with unread bytes in
# it, unless it means to), keeps its body, then does exactly what its case needs.

BODY = json.dumps(answer(Status="RUNNING")).encode()
HALF = len(BODY) // 2
SIZED_HEAD = (
    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
)
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@dataclass
class Peer:
    endpoint: str
    bodies: list[bytes] = field(default_factory=list)  # of the requests it read
    release: asyncio.Event = field(default_factory=asyncio.Event)  # set when the test is over


Behaviour = Callable[[Peer, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_peer(behave: Behaviour) -> AsyncIterator[Peer]:
    """An asyncio server on a free loopback port; on exit it releases, closes and awaits every connection."""
    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)  # the task start_server made for this connection
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(value)
                for name, _, value in (line.partition(b":") for line in head.split(b"\r\n"))
                if name.strip().lower() == b"content-length"
            )
            peer.bodies.append(await reader.readexactly(length))
            await behave(peer, writer)
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    peer = Peer(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield peer
    finally:
        peer.release.set()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*handlers)  # a handler's own failure surfaces here


@asynccontextmanager
async def refusing() -> AsyncIterator[Peer]:
    """A loopback port bound but never listening: held for the test, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield Peer(f"http://127.0.0.1:{sock.getsockname()[1]}")


async def hangs(peer: Peer, writer: asyncio.StreamWriter) -> None:
    await peer.release.wait()


async def stalls_mid_body(peer: Peer, writer: asyncio.StreamWriter) -> None:
    writer.write(SIZED_HEAD + BODY[:HALF])
    await writer.drain()
    await peer.release.wait()


async def closes_without_answering(peer: Peer, writer: asyncio.StreamWriter) -> None:
    pass


async def resets(peer: Peer, writer: asyncio.StreamWriter) -> None:
    # Linger on, timeout 0: closing sends an RST instead of a FIN.
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def truncates_sized_body(peer: Peer, writer: asyncio.StreamWriter) -> None:
    writer.write(SIZED_HEAD + BODY[:HALF])  # Content-Length promises all of BODY; the FIN comes first
    await writer.drain()


async def truncates_chunked_body(peer: Peer, writer: asyncio.StreamWriter) -> None:
    # One chunk the size of BODY that stops halfway, and no last chunk.
    writer.write(CHUNKED_HEAD + f"{len(BODY):x}\r\n".encode() + BODY[:HALF])
    await writer.drain()


def behaving(behave: Behaviour) -> Callable[[], AbstractAsyncContextManager[Peer]]:
    return lambda: raw_peer(behave)


@pytest.mark.parametrize(
    ("peer_factory", "code", "evidence", "reached"),
    [
        pytest.param(behaving(hangs), c.TIMEOUT, "no answer within", True, id="hangs-before-answering"),
        pytest.param(behaving(stalls_mid_body), c.TIMEOUT, "no answer within", True, id="stalls-mid-body"),
        pytest.param(refusing, c.CONNECTION_ERROR, "ClientConnectorError", False, id="refuses"),
        pytest.param(
            behaving(closes_without_answering),
            c.CONNECTION_ERROR,
            "ServerDisconnectedError",
            True,
            id="closes-unanswered",
        ),
        pytest.param(behaving(resets), c.CONNECTION_ERROR, "ClientOSError", True, id="resets"),
        pytest.param(
            behaving(truncates_sized_body),
            c.INVALID_RESPONSE,
            "truncated body",
            True,
            id="truncates-sized-body",
        ),
        pytest.param(
            behaving(truncates_chunked_body),
            c.INVALID_RESPONSE,
            "truncated body",
            True,
            id="truncates-chunked-body",
        ),
    ],
)
async def test_every_transport_failure_is_classified(
    api: c.ApiClient,
    peer_factory: Callable[[], AbstractAsyncContextManager[Peer]],
    code: str,
    evidence: str,
    reached: bool,
) -> None:
    if code == c.TIMEOUT:
        api.set_timeout(0.5)  # the peer never finishes the answer: the test takes this long
    async with peer_factory() as peer:
        outcome = await api.describe(CDB, peer.endpoint, "ap-guangzhou", CREDS, "abc")
        assert outcome.code == code, outcome.message
        assert not outcome.ok
        assert not CDB.is_throttling(outcome.code)
        # Failed the way this peer fails (a cut body must not pass as a whole one that is not JSON)...
        assert evidence in outcome.message
        # ...after the request arrived whole, except where nothing listens.
        assert peer.bodies == ([b'{"AsyncRequestId":"abc"}'] if reached else [])


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
