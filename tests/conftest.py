"""Fixtures and helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(condition: Callable[[], object], within: float = 10.0, what: str = "") -> None:
    """Waits on the event loop until `condition()` is truthy; fails naming what never happened."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.01)  # a poll of the condition, not a guess at how long something takes
    raise AssertionError(f"timed out after {within}s waiting for: {what or condition}")
