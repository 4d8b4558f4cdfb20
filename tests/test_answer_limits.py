"""Every answer from the cloud has a size limit, as sent and once inflated (red team finding 7).

Hostile peers are real aiohttp servers on loopback ports: a gzip bomb, a huge plain answer (declared and
not), a slow endless one, corrupt or unasked-for encodings; the status and list APIs and the credential
sources (metadata service, STS) read them. The simulator's own answers, including a full list page, pass
with the limits cut to a fraction, so the limits leave room for real answers; and the real exporter,
polling a bomb, counts Transport.ResponseTooLarge and polls the task again.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from exporter.catalogue.products import DISCOVERABLE, MARIADB, PRODUCTS
from exporter.credentials.base import CredentialsError
from exporter.credentials.expiring import ANSWER_BYTES, http
from exporter.credentials.signing import Credentials
from exporter.credentials.sources import discover_role
from exporter.polling import client as c
from exporter.simulator import Phase, SimTask, SimulatorThread
from tests.helpers import CREDS, ENV, DaemonProcess, wait_for, write_config
from tests.products import FACTS, tid

MIB = 1024 * 1024
REGION = "ap-guangzhou"
KEYS = Credentials("AKIDtest", "s3cr3t-key")


@functools.cache
def _bomb(inflated: int) -> bytes:
    """A gzip answer of `inflated` zero bytes: about a thousandth of that on the wire."""
    pack = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block, parts = bytes(MIB), []
    for _ in range(inflated // MIB):
        parts.append(pack.compress(block))
    parts.append(pack.flush())
    return b"".join(parts)


BOMB = 200 * MIB  # as the red team sent it: 200 MB once inflated, 200 KB on the wire
SMALL_BOMB = 16 * MIB  # 16 KB on the wire: within the credential sources' limit until inflated


class Peer:
    """A loopback HTTP server answering every request with `handler`; `finished` is set when a handler
    ends (a cut-off answer ends its handler with the connection)."""

    def __init__(self, handler: Callable[[web.Request], object]) -> None:
        self.handler = handler
        self.finished = asyncio.Event()
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.handler(request)  # type: ignore[misc]
        finally:
            self.finished.set()


@asynccontextmanager
async def peer(handler: Callable[[web.Request], object]) -> AsyncIterator[Peer]:
    server = Peer(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        (_, port, *_) = runner.addresses[0]
        server.url = f"http://127.0.0.1:{port}"
        yield server
    finally:
        await runner.cleanup()


def bomb(inflated: int) -> Callable[[web.Request], object]:
    """A gzip bomb inflating to `inflated` bytes (compressed once, when first served)."""

    async def handle(request: web.Request) -> web.Response:
        body = _bomb(inflated)
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    return handle


gzip_bomb = bomb(BOMB)


async def declared_huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": str(200 * MIB)})
    await response.prepare(request)
    for _ in range(200):
        await response.write(bytes(MIB))
    return response


def streaming(chunk: int, pause: float) -> Callable[[web.Request], object]:
    """An endless chunked answer (no Content-Length): `chunk` bytes every `pause` seconds."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        while True:
            await response.write(b" " * chunk)
            await asyncio.sleep(pause)

    return handle


def encoded(body: bytes, encoding: str) -> Callable[[web.Request], object]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Encoding": encoding})

    return handle


def padded(size: int) -> bytes:
    """A well-formed MariaDB status answer of about `size` bytes."""
    head = b'{"Response":{"RequestId":"req-1","Status":2,"Pad":"'
    return head + b"x" * max(0, size - len(head) - 4) + b'"}}'


@pytest.fixture
async def api() -> AsyncIterator[c.ApiClient]:
    async with c.api_session() as session:
        yield c.ApiClient(session, timeout=10.0)


async def describe(api: c.ApiClient, url: str) -> c.Outcome:
    return await api.describe(MARIADB, url, REGION, KEYS, "1")


async def test_a_gzip_bomb_is_cut_off_at_the_limit_without_being_inflated(api: c.ApiClient) -> None:
    _bomb(BOMB)  # compressed before memory is traced: only the client's share is measured
    async with peer(gzip_bomb) as server:
        tracemalloc.start()
        try:
            outcome = await describe(api, server.url)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert outcome.code == c.RESPONSE_TOO_LARGE
    assert "inflated" in outcome.message
    assert "256 KiB" in outcome.message
    assert peak < 8 * MIB  # the red team's 200 MB never existed in memory; the limit is 256 KiB


@pytest.mark.parametrize(
    ("handler", "said"),
    [
        (declared_huge, "Content-Length"),
        (streaming(64 * 1024, 0.0), "sent"),
        (streaming(16 * 1024, 0.01), "sent"),  # slow and endless: cut at the limit, long before the timeout
    ],
    ids=["declared", "chunked", "slow"],
)
async def test_a_huge_answer_is_cut_off_and_its_connection_dropped(
    api: c.ApiClient, handler: Callable[[web.Request], object], said: str
) -> None:
    async with peer(handler) as server:
        outcome = await describe(api, server.url)
        assert outcome.code == c.RESPONSE_TOO_LARGE
        assert said in outcome.message
        assert outcome.duration < 5.0  # the client's timeout is 10 s: it was the limit, not the clock
        # The server sees the connection go: the rest of the answer is never read.
        await asyncio.wait_for(server.finished.wait(), 10)


async def test_a_list_page_may_be_larger_than_a_status_answer(api: c.ApiClient) -> None:
    listing = DISCOVERABLE[0]
    assert listing.listing is not None
    big = b'{"Response":{"RequestId":"r","Error":{"Code":"InternalError","Message":"' + b"m" * MIB + b'"}}}'
    async with peer(encoded(big, "identity")) as server:
        status = await describe(api, server.url)
        page = await api.list_page(listing, server.url, REGION, KEYS, {})
    assert status.code == c.RESPONSE_TOO_LARGE
    assert page.code == "InternalError"  # read whole: 1 MiB is within a list page's limit
    async with peer(encoded(b" " * (c.LIST_ANSWER_BYTES + 1), "identity")) as server:
        page = await api.list_page(listing, server.url, REGION, KEYS, {})
    assert page.code == c.RESPONSE_TOO_LARGE


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_within_the_limit_are_read(api: c.ApiClient, encoding: str) -> None:
    body = padded(200 * 1024)
    if encoding == "gzip":
        sent = gzip.compress(body)
    else:
        pack = zlib.compressobj(wbits=zlib.MAX_WBITS if encoding == "deflate" else -zlib.MAX_WBITS)
        sent = pack.compress(body) + pack.flush()
    async with peer(encoded(sent, encoding.removeprefix("raw-"))) as server:
        outcome = await describe(api, server.url)
    assert outcome.code is None
    assert outcome.observation is not None


@pytest.mark.parametrize(
    ("body", "encoding"),
    [(gzip.compress(padded(1000))[:-30], "gzip"), (b"not gzip at all", "gzip"), (padded(100), "br")],
    ids=["truncated", "corrupt", "unasked"],
)
async def test_undecodable_answers_are_invalid_responses(
    api: c.ApiClient, body: bytes, encoding: str
) -> None:
    async with peer(encoded(body, encoding)) as server:
        outcome = await describe(api, server.url)
    assert outcome.code == c.INVALID_RESPONSE


async def test_the_credential_sources_answers_have_a_limit_too() -> None:
    async with aiohttp.ClientSession() as session:
        async with peer(bomb(SMALL_BOMB)) as server:
            with pytest.raises(CredentialsError, match="inflated"):
                await discover_role(session, server.url + "/meta-data/cam/security-credentials/", 5)
            with pytest.raises(CredentialsError, match="64 KiB"):
                await http(session, "POST", server.url + "/", 5, "STS", data=b"{}")
        async with peer(streaming(16 * 1024, 0.0)) as server:
            with pytest.raises(CredentialsError, match="more than 64 KiB sent"):
                await http(session, "GET", server.url + "/", 5, "metadata service")
        within = b'{"Response":{}}' + b" " * (ANSWER_BYTES - 100)
        async with peer(encoded(gzip.compress(within), "gzip")) as server:
            assert await http(session, "GET", server.url + "/", 5, "STS") == (200, within)


# ------------------------------------------------------------------ the simulator's answers fit the limits


def _task_id(product: str, number: int) -> str:
    facts = FACTS[product]
    if facts.instance_tasks:
        return tid(product, str(number), "op")
    return f"{number}" if facts.sdk.integer_id else f"{facts.instance_prefix}op{number}"


async def test_the_simulators_answers_pass_with_the_limits_cut_to_a_fraction(
    simulator: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status answer of every product within a sixteenth of its limit, a full list page (100 operations,
    each with a name and tags) within a quarter: the limits are far from what real answers weigh."""
    monkeypatch.setattr(c, "STATUS_ANSWER_BYTES", c.STATUS_ANSWER_BYTES // 16)
    monkeypatch.setattr(c, "LIST_ANSWER_BYTES", c.LIST_ANSWER_BYTES // 4)
    tags = tuple((f"tag-key-{n}", "v" * 60) for n in range(10))
    for product in PRODUCTS:
        facts = FACTS[product.name]
        for n in range(100):
            simulator.add_task(
                SimTask(
                    product.name,
                    _task_id(product.name, 9000 + n),
                    (Phase(0, facts.running),),
                    task_type="MODIFY PARAM",
                    instance_id=f"{facts.instance_prefix}{n:08d}",
                    instance_name="n" * 60,
                    tags=tags,
                )
            )
    async with c.api_session() as session:
        api = c.ApiClient(session, timeout=10.0)
        for product in PRODUCTS:
            facts = FACTS[product.name]
            task = _task_id(product.name, 9000)
            outcome = await api.describe(product, simulator.url, REGION, CREDS, task)
            assert outcome.code is None, (product.name, outcome)
        for product in DISCOVERABLE:
            assert product.listing is not None
            payload = product.listing.payload(0, 0.0, 4e9)
            if product.listing.instances is not None:  # one instance's page: all 100 tasks are its
                payload[product.listing.instances.param] = tid(product.name, "9000", "op").split(":")[0]
            page = await api.list_page(product, simulator.url, REGION, CREDS, payload)
            assert page.code is None, (product.name, page)
            assert page.page is not None
            assert len(page.page.items) == 100, product.name


# ---------------------------------------------------------------------------- the exporter, end to end


@contextmanager
def bomb_server() -> Iterator[str]:
    """The gzip bomb as an API endpoint, served from a thread of its own for the exporter subprocess."""
    loop = asyncio.new_event_loop()
    started, url = threading.Event(), []
    stop: asyncio.Future[None] = loop.create_future()

    async def serve() -> None:
        async with peer(gzip_bomb) as server:
            url.append(server.url)
            started.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        yield url[0]
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()


def test_the_exporter_counts_a_bomb_and_polls_the_task_again(tmp_path: Path) -> None:
    with bomb_server() as url:
        config = write_config(tmp_path / "config.yaml", url, {MARIADB.watch_key: [1]}, max_backoff="300ms")
        with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:

            def too_large() -> float:
                samples = daemon.scrape()
                return samples.get("tencentcloud_task_errors_total", code=c.RESPONSE_TOO_LARGE) or 0.0

            wait_for(lambda: too_large() >= 2, 15, "two polls answered by the bomb")
            samples = daemon.scrape()
            assert samples.get("tencentcloud_api_errors_total", code=c.RESPONSE_TOO_LARGE)
            assert daemon.returncode is None
