"""A Simulator on its own event loop in a background thread, for synchronous code and benchmarks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from exporter.simulator.scenario import Faults, SimTask
from exporter.simulator.server import Simulator

_T = TypeVar("_T")


class SimulatorThread:
    """Runs a Simulator in a background thread; a context manager that stops server, loop and thread.

    Every method hops onto that loop, so the simulator's state is only ever touched from one thread.
    """

    def __init__(
        self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0
    ) -> None:
        self.simulator = simulator
        self._host, self._port, self._timeout = host, port, timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("simulator thread is not running")
        return self._url

    def __enter__(self) -> SimulatorThread:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="simulator", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(self.simulator.start(self._host, self._port), loop)
            self._url = future.result(self._timeout)
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self.simulator.stop(), loop).result(self._timeout)
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(self._timeout)
            self._loop = self._thread = self._url = None

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, fn: Callable[[], _T]) -> _T:
        if self._loop is None:
            raise RuntimeError("simulator thread is not running")

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self._timeout)

    def stats(self) -> dict[str, Any]:
        return self._call(self.simulator.stats)

    def reset_stats(self) -> None:
        self._call(self.simulator.reset_stats)

    def accepted_in(self, secret_id: str, product: str, action: str, start: float, end: float) -> int:
        return self._call(lambda: self.simulator.accepted_in(secret_id, product, action, start, end))

    def add_task(self, task: SimTask) -> None:
        self._call(lambda: self.simulator.add_task(task))

    def remove_task(self, product: str, task_id: str) -> bool:
        return self._call(lambda: self.simulator.remove_task(product, task_id))

    def set_latency(self, seconds: float) -> None:
        self._call(lambda: self.simulator.set_latency(seconds))

    def set_faults(self, faults: Faults) -> None:
        self._call(lambda: self.simulator.set_faults(faults))

    def set_task_faults(self, product: str, task_id: str, faults: Faults) -> None:
        self._call(lambda: self.simulator.set_task_faults(product, task_id, faults))

    def set_action_faults(
        self, product: str, action: str, faults: Faults, *, sweeps_only: bool = False
    ) -> None:
        self._call(lambda: self.simulator.set_action_faults(product, action, faults, sweeps_only=sweeps_only))
