"""Scrapes of /metrics that arrive while a render of the same variant is in progress share that render.

A variant is the body's format and encoding (text or OpenMetrics, gzip or not). The first scrape of a variant
starts a render in its own task; scrapes of that variant arriving before it ends subscribe to it and receive
the very same chunks, each written to its own response at that client's speed. A scrape arriving after the
render ended starts a new one, so nobody is served data older than the render in flight.

The render never waits for its subscribers: it keeps every chunk while it runs, because a subscriber may
still join and needs the body from its start, and publishes them as a chain of links. Once it has ended, each
subscriber holds only the links it has not sent yet, so memory goes back as clients make progress, and a
client that disconnects drops its share at once. When the last subscriber leaves a render still running,
the render is cancelled: nobody would read it.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple

from aiohttp import web


class Variant(NamedTuple):
    openmetrics: bool
    gzip: bool


Source = Callable[[], Iterable[bytes]]  # the uncompressed body in chunks; called once per render
Write = Callable[[bytes], Awaitable[None]]  # one subscriber's output, e.g. StreamResponse.write


class RenderFailed(Exception):
    """The render a scrape subscribed to ended before its last chunk."""


async def _yield_to_loop() -> None:
    await asyncio.sleep(0)


class _Link:
    """A published chunk and the way to the next one; the last link has no next."""

    __slots__ = ("chunk", "error", "next", "published")

    def __init__(self) -> None:
        self.chunk = b""
        self.next: _Link | None = None
        self.error: BaseException | None = None
        self.published = asyncio.Event()


class _Render:
    def __init__(self) -> None:
        # Where subscribers start, kept only while the render runs so the chain can be freed behind them.
        self.head: _Link | None = _Link()
        self.tail = self.head
        self.subscribers = 0
        self.task: asyncio.Task[None] | None = None

    def publish(self, chunk: bytes) -> None:
        link, following = self.tail, _Link()
        link.chunk, link.next = chunk, following
        self.tail = following
        link.published.set()

    def end(self, error: BaseException | None) -> None:
        self.tail.error = error
        self.tail.published.set()
        self.head = None


class SharedRenders:
    """The renders in flight of one app's /metrics, at most one per variant."""

    def __init__(self, pause: Callable[[], Awaitable[None]] = _yield_to_loop) -> None:
        """`pause`: awaited by a render between two chunks, so polls and other requests run meanwhile."""
        self._pause = pause
        self._in_flight: dict[Variant, _Render] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def in_flight(self) -> int:
        """How many renders are running."""
        return len(self._in_flight)

    def subscribers(self, variant: Variant) -> int:
        """How many scrapes are reading the render of `variant` in flight (0 when there is none)."""
        render = self._in_flight.get(variant)
        return 0 if render is None else render.subscribers

    async def stream(self, variant: Variant, source: Source, write: Write) -> None:
        """Writes the body of `variant` with `write`, from the render in flight or from a new one made of
        `source()`. Raises RenderFailed when the render breaks off; whatever `write` raises (a client gone)
        ends this scrape alone."""
        render = self._in_flight.get(variant)
        if render is None:
            render = self._start(variant, source)
        link = render.head
        assert link is not None  # a render in flight keeps its head
        render.subscribers += 1
        try:
            while True:
                await link.published.wait()
                if link.next is None:
                    if link.error is not None:
                        raise RenderFailed("the /metrics render broke off") from link.error
                    return
                await write(link.chunk)
                link = link.next
                # A late subscriber finds many chunks ready and writes rarely block: let others run too.
                await asyncio.sleep(0)
        finally:
            render.subscribers -= 1
            if render.subscribers == 0 and self._in_flight.get(variant) is render:
                # Forgotten at once: a scrape arriving next starts afresh instead of joining a cancelled one.
                del self._in_flight[variant]
                if render.task is not None:
                    render.task.cancel()

    def _start(self, variant: Variant, source: Source) -> _Render:
        render = _Render()
        render.task = asyncio.create_task(self._produce(variant, render, source), name=f"render-{variant}")
        self._tasks.add(render.task)
        render.task.add_done_callback(self._tasks.discard)
        self._in_flight[variant] = render
        return render

    async def _produce(self, variant: Variant, render: _Render, source: Source) -> None:
        try:
            await self._render(variant, render, source)
        except asyncio.CancelledError:
            render.end(RenderFailed("the /metrics render was cancelled"))
            raise
        except Exception as exc:  # every subscriber gets it, through RenderFailed
            render.end(exc)
        else:
            render.end(None)
        finally:
            # In the same step as the last link's publication: a scrape arriving after it starts a new render.
            if self._in_flight.get(variant) is render:
                del self._in_flight[variant]

    async def _render(self, variant: Variant, render: _Render, source: Source) -> None:
        loop = asyncio.get_running_loop()
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if variant.gzip else None  # wbits 31: gzip
        for chunk in source():
            if compressor is not None:
                # zlib releases the GIL: compression runs beside the event loop, not on it.
                chunk = await loop.run_in_executor(None, compressor.compress, chunk)
            if chunk:
                render.publish(chunk)
            await self._pause()
        if compressor is not None:
            render.publish(compressor.flush())

    async def close(self) -> None:
        """Cancels the renders still running (their subscribers get RenderFailed) and waits for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


SCRAPES = web.AppKey("scrapes", SharedRenders)


def install(app: web.Application) -> None:
    """Lets the scrapes of `app` share renders (web.metrics looks for SCRAPES); call before the app starts."""
    renders = SharedRenders()
    app[SCRAPES] = renders

    async def close(_: web.Application) -> None:
        await renders.close()

    app.on_cleanup.append(close)
