"""Debian's chromium, headless, driven over the Chrome DevTools Protocol with aiohttp's websocket client: no
browser download and no driver library, only the browser the system has (`require_binary("chromium")`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from tests.conftest import eventually


class BrowserError(AssertionError):
    """The page threw, or the browser answered a command with an error."""


class Chromium:
    """One headless browser with one page at `width` x `height` CSS pixels; stopped (its whole process group,
    started here) on exit, its profile in a temporary folder."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000) -> None:
        self.binary, self.width, self.height = binary, width, height
        self._profile = tempfile.TemporaryDirectory(prefix="board-chromium-", ignore_cleanup_errors=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}

    def _launch(self, profile: Path) -> subprocess.Popen[bytes]:
        command = [
            self.binary,
            "--headless",
            "--no-sandbox",  # tests may run as root (containers), where the sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # a free port, written to DevToolsActivePort in the profile
            f"--user-data-dir={profile}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        # A session of its own, so stopping it reaches the helper processes it starts too.
        return subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    async def __aenter__(self) -> Chromium:
        profile = Path(self._profile.name)
        self._proc = self._launch(profile)
        port_file = profile / "DevToolsActivePort"
        await eventually(
            lambda: port_file.exists() and port_file.read_text().count("\n") >= 1, 20, "chromium"
        )
        port = int(port_file.read_text().splitlines()[0])
        self._http = aiohttp.ClientSession(trust_env=False)
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as answer:
            pages = [t for t in await answer.json() if t.get("type") == "page"]
        self._ws = await self._http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            waiter = self._waiting.pop(data.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        number = next(self._ids)
        waiter = self._waiting[number] = asyncio.get_running_loop().create_future()
        await self._ws.send_json({"id": number, "method": method, "params": params})
        answer = await asyncio.wait_for(waiter, 20)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})  # type: ignore[no-any-return]

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, within: float = 15.0) -> Any:
        """Waits for a JavaScript expression to be truthy in the page (across a navigation) and returns it."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(BrowserError):  # the old page may be torn down mid-evaluation
                value = await self.evaluate(expression)
                if value:
                    return value
            await asyncio.sleep(0.05)  # a poll of the page's state, not a guess at how long anything takes
        raise AssertionError(f"timed out after {within}s waiting for {expression}")

    async def goto(self, url: str) -> None:
        """Loads `url` and waits until the page and its resources have loaded."""
        await self.send("Page.navigate", url=url)
        await self.until(f"document.readyState === 'complete' && location.href === {json.dumps(url)}")

    async def screenshot(self) -> bytes:
        """A PNG of the page as shown (the first `height` pixels)."""
        shot = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)  # the browser and the helpers it started
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._profile.cleanup()
