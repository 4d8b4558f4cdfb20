"""Runs the exporter exactly as `python -m exporter` does, plus an event-loop lag probe inside its process.

The exporter has no probe of its own yet, so this launcher installs an event-loop policy whose new loop starts
one extra task before anything else runs: it sleeps PERIOD seconds in a loop and records how late each wake-up
was. A wake-up that is late by L seconds means the loop ran something else, without yielding, for about L
seconds just before. The probe appends to the file named by BENCH_LOOP_PROBE_FILE:

    S <wall time of the wake-up> <lateness>     for every wake-up later than THRESHOLD
    H <wall time> <max lateness in the last second> <wake-ups in the last second>    once a second

What-if switches, for experiments only (`python -m bench --what-if KEY=VALUE` sets them; the default run
uses none, so it measures the exporter as shipped):

    BENCH_WHATIF_SAFETY=0.97     exporter.ratelimit.SAFETY, the share of the quota the token bucket spends
    BENCH_WHATIF_TRUST_ENV=0     the exporter's aiohttp session without trust_env (no per-request .netrc
                                 lookup in a worker thread; proxies from the environment are then ignored)

Usage: python -m bench.probe [exporter flags...]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import types
from typing import Any, TextIO

import aiohttp

from exporter import daemon, ratelimit
from exporter.cli import main as exporter_main

PERIOD = 0.005
THRESHOLD = 0.002


async def _probe(out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    out.write(f"P {time.time():.6f} {PERIOD} {THRESHOLD}\n")
    report_at = loop.time() + 1.0
    worst, wakeups = 0.0, 0
    try:
        while True:
            asleep = loop.time()
            await asyncio.sleep(PERIOD)
            now = loop.time()
            lateness = now - asleep - PERIOD
            wakeups += 1
            worst = max(worst, lateness)
            if lateness > THRESHOLD:
                out.write(f"S {time.time():.6f} {lateness:.6f}\n")
            if now >= report_at:
                out.write(f"H {time.time():.6f} {worst:.6f} {wakeups}\n")
                out.flush()
                worst, wakeups = 0.0, 0
                report_at = max(report_at + 1.0, now)
    finally:
        out.flush()


class _ProbedPolicy(asyncio.DefaultEventLoopPolicy):
    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self._out = out
        self._tasks: set[asyncio.Task[None]] = set()

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.call_soon(self._start, loop)
        return loop

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(_probe(self._out), name="bench-loop-probe")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _AiohttpWithoutTrustEnv(types.ModuleType):
    """Stands in for the aiohttp module inside exporter.daemon: same names, sessions without trust_env."""

    def __getattr__(self, name: str) -> Any:
        return getattr(aiohttp, name)

    @staticmethod
    def ClientSession(*args: Any, **kwargs: Any) -> aiohttp.ClientSession:
        kwargs["trust_env"] = False
        return aiohttp.ClientSession(*args, **kwargs)


def _apply_what_ifs() -> None:
    safety = os.environ.get("BENCH_WHATIF_SAFETY")
    if safety:
        ratelimit.SAFETY = float(safety)
    if os.environ.get("BENCH_WHATIF_TRUST_ENV") == "0":
        setattr(daemon, "aiohttp", _AiohttpWithoutTrustEnv("aiohttp"))  # noqa: B010 - a module attribute


def main() -> int:
    _apply_what_ifs()
    path = os.environ.get("BENCH_LOOP_PROBE_FILE")
    with contextlib.ExitStack() as stack:
        if path:
            out = stack.enter_context(open(path, "w", encoding="ascii"))
            asyncio.set_event_loop_policy(_ProbedPolicy(out))
        sys.argv[0] = "bench.probe"
        return exporter_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
