"""Runs the exporter exactly as `python -m exporter` does, plus an event-loop lag probe inside its process.

The exporter has no probe of its own yet, so this launcher installs an event-loop policy whose new loop starts
one extra task before anything else runs: it sleeps PERIOD seconds in a loop and records how late each wake-up
was. A wake-up that is late by L seconds means the loop ran something else, without yielding, for about L
seconds just before. The probe appends to the file named by BENCH_LOOP_PROBE_FILE:

    S <wall time of the wake-up> <lateness>     for every wake-up later than THRESHOLD
    H <wall time> <max lateness in the last second> <wake-ups in the last second>    once a second

What-if switches, for experiments only (`python -m bench --what-if KEY=VALUE` sets them; the default run
uses none, so it measures the exporter as shipped):

    BENCH_WHATIF_SAFETY=0.97     exporter.polling.ratelimit.SAFETY, the share of the quota the bucket spends

With BENCH_SEND_LOG set, every request's send time (the moment its token bucket counts it as leaving,
`Ticket.left`) is appended to that file as `<wall time> <bucket rate>` lines, so the requests the exporter
sent in any second can be counted by its own clock next to what the simulator read.

Usage: python -m bench.probe [exporter flags...]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import TextIO

from bench.lateness import LatenessLog
from exporter.cli.main import main as exporter_main
from exporter.polling import ratelimit

PERIOD = 0.005
THRESHOLD = 0.002


async def _probe(out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    record = LatenessLog(out, PERIOD, THRESHOLD, loop.time()).record
    try:
        while True:
            asleep = loop.time()
            await asyncio.sleep(PERIOD)
            now = loop.time()
            record(now - asleep - PERIOD, now)
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


def _apply_what_ifs() -> None:
    safety = os.environ.get("BENCH_WHATIF_SAFETY")
    if safety:
        ratelimit.SAFETY = float(safety)


def _log_sends(out: TextIO) -> None:
    """Wraps Ticket.left so that each request's send time and its bucket's rate are written to `out`."""
    left = ratelimit.Ticket.left

    def logged(ticket: ratelimit.Ticket) -> None:
        first = not ticket._left
        left(ticket)
        if first:
            out.write(f"{time.time():.6f} {ticket._bucket.max_rate:g}\n")

    ratelimit.Ticket.left = logged  # type: ignore[method-assign]


def main() -> int:
    _apply_what_ifs()
    path = os.environ.get("BENCH_LOOP_PROBE_FILE")
    with contextlib.ExitStack() as stack:
        sends = os.environ.get("BENCH_SEND_LOG")
        if sends:
            _log_sends(stack.enter_context(open(sends, "w", buffering=1, encoding="ascii")))
        if path:
            out = stack.enter_context(open(path, "w", encoding="ascii"))
            asyncio.set_event_loop_policy(_ProbedPolicy(out))
        sys.argv[0] = "bench.probe"
        return exporter_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
