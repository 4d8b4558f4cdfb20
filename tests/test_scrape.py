"""Shared /metrics renders: directly, and through the real handler on a real server on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import aiohttp
import pytest
from aiohttp import web

from exporter.catalogue.products import MARIADB, Observation
from exporter.config.parser import WatchedTask, parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import Daemon
from exporter.exposition.scrape import SCRAPES, RenderFailed, SharedRenders, Variant, install
from exporter.web.app import create_app
from tests.conftest import eventually
from tests.helpers import Samples

PLAIN = Variant(openmetrics=False, gzip=False)
GZIP = Variant(openmetrics=False, gzip=True)
OPENMETRICS = Variant(openmetrics=True, gzip=False)
NOW = 1_763_856_000.5


class Gate:
    """A render's pause between chunks that holds it until opened: a render kept in progress on purpose."""

    def __init__(self) -> None:
        self.reached = 0
        self.opened = asyncio.Event()

    async def __call__(self) -> None:
        self.reached += 1
        await self.opened.wait()


class Source:
    """A chunk source that counts its renders and notices when a render let go of it."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.calls = 0
        self.closed = 0

    def __call__(self) -> Iterable[bytes]:
        self.calls += 1
        return self._generate(list(self.chunks))

    def _generate(self, chunks: list[bytes]) -> Iterator[bytes]:
        try:
            for index, chunk in enumerate(chunks):
                if index == self.fail_after:
                    raise ValueError("render exploded")
                yield chunk
        finally:
            self.closed += 1


class Sink:
    """One subscriber's output; with `fail_at`, the client is gone when that chunk is written."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.received: list[bytes] = []
        self.fail_at = fail_at
        self.unblocked = asyncio.Event()
        self.unblocked.set()

    async def write(self, chunk: bytes) -> None:
        if len(self.received) == self.fail_at:
            raise ConnectionResetError("client gone")
        await self.unblocked.wait()
        self.received.append(chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self.received)


CHUNKS = [b"# first\n", b"a 1\n", b"b 2\n", b"c 3\n"]


async def test_scrapes_during_a_render_share_it() -> None:
    gate, source = Gate(), Source(CHUNKS)
    renders = SharedRenders(pause=gate)
    sinks = [Sink() for _ in range(5)]
    scrapes = [asyncio.create_task(renders.stream(PLAIN, source, s.write)) for s in sinks]
    await eventually(lambda: renders.subscribers(PLAIN) == 5, what="five subscribers")
    assert gate.reached == 1  # one render, held after its first chunk
    gate.opened.set()
    await asyncio.gather(*scrapes)
    assert source.calls == 1
    assert [s.body for s in sinks] == [b"".join(CHUNKS)] * 5
    assert renders.in_flight() == 0


async def test_a_scrape_after_the_render_ended_renders_anew_with_new_data() -> None:
    source = Source(CHUNKS)
    renders = SharedRenders()
    first, second = Sink(), Sink()
    await renders.stream(PLAIN, source, first.write)
    source.chunks = [*CHUNKS, b"d 4\n"]
    await renders.stream(PLAIN, source, second.write)
    assert source.calls == 2
    assert second.body == first.body + b"d 4\n"


async def test_each_variant_has_its_own_render() -> None:
    gate, source = Gate(), Source(CHUNKS)
    renders = SharedRenders(pause=gate)
    plain, zipped, again = Sink(), Sink(), Sink()
    scrapes = [
        asyncio.create_task(renders.stream(PLAIN, source, plain.write)),
        asyncio.create_task(renders.stream(GZIP, source, zipped.write)),
        asyncio.create_task(renders.stream(GZIP, source, again.write)),
    ]
    await eventually(lambda: renders.subscribers(GZIP) == 2 and renders.subscribers(PLAIN) == 1)
    assert renders.in_flight() == 2
    gate.opened.set()
    await asyncio.gather(*scrapes)
    assert source.calls == 2
    assert zipped.received == again.received
    assert gzip.decompress(zipped.body) == plain.body == b"".join(CHUNKS)


async def test_the_render_yields_to_the_loop_between_chunks() -> None:
    pauses = 0

    async def pause() -> None:
        nonlocal pauses
        pauses += 1
        await asyncio.sleep(0)

    sink = Sink()
    await SharedRenders(pause=pause).stream(PLAIN, Source(CHUNKS), sink.write)
    assert pauses == len(CHUNKS)


async def test_a_client_gone_mid_stream_leaves_the_render_to_the_others() -> None:
    gate, source = Gate(), Source(CHUNKS)
    renders = SharedRenders(pause=gate)
    gone, stays = Sink(fail_at=1), Sink()
    leaving = asyncio.create_task(renders.stream(PLAIN, source, gone.write))
    staying = asyncio.create_task(renders.stream(PLAIN, source, stays.write))
    await eventually(lambda: len(gone.received) == 1 and len(stays.received) == 1, what="first chunk")
    gate.opened.set()
    with pytest.raises(ConnectionResetError):
        await leaving
    await staying
    assert stays.body == b"".join(CHUNKS)
    assert source.calls == 1
    assert renders.in_flight() == 0


async def test_a_slow_client_does_not_hold_back_the_render_or_the_others() -> None:
    source = Source(CHUNKS)
    renders = SharedRenders()
    slow, fast = Sink(), Sink()
    slow.unblocked.clear()  # its writes wait, like a client that does not read
    stuck = asyncio.create_task(renders.stream(PLAIN, source, slow.write))
    await renders.stream(PLAIN, source, fast.write)
    assert fast.body == b"".join(CHUNKS)
    assert renders.in_flight() == 0  # the render ended without waiting for the slow one
    fresh = Sink()
    await renders.stream(PLAIN, source, fresh.write)
    assert source.calls == 2
    slow.unblocked.set()
    await stuck
    assert slow.body == b"".join(CHUNKS)


async def test_the_last_client_leaving_cancels_the_render() -> None:
    gate, source = Gate(), Source(CHUNKS)
    renders = SharedRenders(pause=gate)
    with pytest.raises(ConnectionResetError):
        await renders.stream(PLAIN, source, Sink(fail_at=0).write)
    assert renders.in_flight() == 0
    await eventually(lambda: source.closed == 1, what="the cancelled render to let go of its source")
    gate.opened.set()
    sink = Sink()
    await renders.stream(PLAIN, source, sink.write)
    assert source.calls == 2
    assert sink.body == b"".join(CHUNKS)


async def test_a_failing_render_fails_its_subscribers_and_the_next_scrape_starts_afresh() -> None:
    gate, source = Gate(), Source(CHUNKS, fail_after=2)
    renders = SharedRenders(pause=gate)
    sinks = [Sink(), Sink()]
    scrapes = [asyncio.create_task(renders.stream(PLAIN, source, s.write)) for s in sinks]
    await eventually(lambda: renders.subscribers(PLAIN) == 2)
    gate.opened.set()
    for scrape in scrapes:
        with pytest.raises(RenderFailed) as failed:
            await scrape
        assert isinstance(failed.value.__cause__, ValueError)
    assert renders.in_flight() == 0
    source.fail_after = None
    sink = Sink()
    await renders.stream(PLAIN, source, sink.write)
    assert sink.body == b"".join(CHUNKS)


async def test_close_cancels_renders_in_flight() -> None:
    gate = Gate()
    renders = SharedRenders(pause=gate)
    scrape = asyncio.create_task(renders.stream(PLAIN, Source(CHUNKS), Sink().write))
    await eventually(lambda: gate.reached == 1)
    await renders.close()
    with pytest.raises(RenderFailed):
        await scrape


# Through the real /metrics handler, served as the daemon serves it (cli.py) on a free loopback port.


class Served:
    """The exporter's app on a real server, with Metrics.chunks counted and every handler's outcome kept."""

    def __init__(self, renders: SharedRenders | None) -> None:
        self.daemon = Daemon(
            parse_config({}, "empty.yaml", {}), StaticProvider(Credentials("id", "key"), "t")
        )
        self.outcomes: list[str] = []
        self.app = create_app(self.daemon, middlewares=[self._record])
        if renders is None:
            install(self.app)
        else:
            self.app[SCRAPES] = renders
        self.chunk_calls: list[bool] = []  # the `openmetrics` argument of every render
        self.url = ""

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except BaseException as exc:
            self.outcomes.append(type(exc).__name__)
            raise
        self.outcomes.append("ok")
        return response

    def _counted(self, chunks: Callable[..., Iterator[bytes]]) -> Callable[..., Iterator[bytes]]:
        def wrapper(states: list[object], openmetrics: bool = False) -> Iterator[bytes]:
            self.chunk_calls.append(openmetrics)
            return chunks(states, openmetrics)

        return wrapper

    @contextlib.asynccontextmanager
    async def running(
        self, monkeypatch: pytest.MonkeyPatch, tasks: int, handler_cancellation: bool = False
    ) -> AsyncIterator[aiohttp.ClientSession]:
        runner = web.AppRunner(self.app, handle_signals=False, handler_cancellation=handler_cancellation)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}/metrics"
            for n in range(tasks):  # after start, which opens the store
                add_task(self.daemon, f"flow-{n}")
            monkeypatch.setattr(self.daemon.metrics, "chunks", self._counted(self.daemon.metrics.chunks))
            async with aiohttp.ClientSession() as session:
                yield session
        finally:
            await runner.cleanup()

    async def fetch(self, session: aiohttp.ClientSession, variant: Variant) -> bytes:
        """The body of one scrape of `variant` as served (still compressed for gzip)."""
        headers = {"Accept-Encoding": "gzip" if variant.gzip else "identity"}
        if variant.openmetrics:
            headers["Accept"] = "application/openmetrics-text; version=1.0.0"
        async with session.get(self.url, headers=headers, auto_decompress=False) as response:
            assert response.status == 200
            assert response.headers["Vary"] == "Accept, Accept-Encoding"
            assert response.headers.get("Content-Encoding") == ("gzip" if variant.gzip else None)
            kind = "application/openmetrics-text" if variant.openmetrics else "text/plain; version=0.0.4"
            assert response.headers["Content-Type"].startswith(kind)
            return await response.read()


def add_task(daemon: Daemon, task_id: str) -> None:
    daemon.store.add(WatchedTask(MARIADB.name, task_id, "ap-guangzhou")).observe(Observation("running"), NOW)


def task_samples(text: bytes) -> list[tuple[str, dict[str, str], float]]:
    """The per-task series of an exposition (process_* ones differ from one render to the next)."""
    return [s for s in Samples(text.decode()).samples if s[0].startswith("tencentcloud_task_")]


async def test_concurrent_scrapes_share_one_render_per_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate()
    renders = SharedRenders(pause=gate)
    served = Served(renders)
    async with served.running(monkeypatch, tasks=2500) as session:
        wanted = [PLAIN] * 4 + [GZIP] * 4 + [OPENMETRICS] * 2
        scrapes = [asyncio.create_task(served.fetch(session, v)) for v in wanted]
        await eventually(
            lambda: (
                (renders.subscribers(PLAIN), renders.subscribers(GZIP), renders.subscribers(OPENMETRICS))
                == (4, 4, 2)
            ),
            what="every scrape subscribed",
        )
        gate.opened.set()
        bodies = await asyncio.gather(*scrapes)
    assert sorted(served.chunk_calls) == [False, False, True]  # text (plain and gzip), OpenMetrics
    plain, zipped, openmetrics = bodies[:4], bodies[4:8], bodies[8:]
    for same in (plain, zipped, openmetrics):
        assert len(set(same)) == 1
    samples = Samples(plain[0].decode())
    assert len(samples.all("tencentcloud_task_status", product=MARIADB.name, status="running")) == 2500
    assert task_samples(gzip.decompress(zipped[0])) == task_samples(plain[0])
    assert openmetrics[0].endswith(b"# EOF\n")
    assert served.outcomes == ["ok"] * 10


async def test_a_scrape_after_the_render_sees_new_data(monkeypatch: pytest.MonkeyPatch) -> None:
    served = Served(None)
    async with served.running(monkeypatch, tasks=3) as session:
        before = Samples(gzip.decompress(await served.fetch(session, GZIP)).decode())
        add_task(served.daemon, "flow-new")
        after = Samples(gzip.decompress(await served.fetch(session, GZIP)).decode())
        assert served.app[SCRAPES].in_flight() == 0
    assert served.chunk_calls == [False, False]
    assert before.status(MARIADB.name, "flow-new") is None
    assert after.status(MARIADB.name, "flow-new") == "running"


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["write-fails", "handler-cancelled"])
async def test_a_client_disconnecting_mid_stream_does_not_break_the_others(
    monkeypatch: pytest.MonkeyPatch, handler_cancellation: bool
) -> None:
    gate = Gate()
    renders = SharedRenders(pause=gate)
    served = Served(renders)
    async with served.running(monkeypatch, 2500, handler_cancellation) as session:
        headers = {"Accept-Encoding": "identity"}
        leaving = await session.get(served.url, headers=headers)
        assert await leaving.content.readany()  # the first chunk arrived, then the client goes away
        staying = [asyncio.create_task(served.fetch(session, PLAIN)) for _ in range(3)]
        await eventually(lambda: renders.subscribers(PLAIN) == 4, what="every scrape subscribed")
        leaving.close()
        if handler_cancellation:  # else it is noticed on the next write only
            await eventually(lambda: renders.subscribers(PLAIN) == 3, what="the leaving scrape cancelled")
        gate.opened.set()
        bodies = await asyncio.gather(*staying)
        # The client that left ends its own scrape only: on its next write, or cancelled with its handler.
        await eventually(lambda: len(served.outcomes) == 4, what="the leaving scrape to end")
        gone = "CancelledError" if handler_cancellation else "ClientConnectionResetError"
        assert sorted(served.outcomes) == sorted([gone, "ok", "ok", "ok"])
        assert len(set(bodies)) == 1
        assert len(Samples(bodies[0].decode()).all("tencentcloud_task_status", status="running")) == 2500
        assert served.chunk_calls == [False]
        assert task_samples(await served.fetch(session, PLAIN)) == task_samples(bodies[0])
        assert served.chunk_calls == [False, False]  # the next scrape renders anew
        assert renders.in_flight() == 0
