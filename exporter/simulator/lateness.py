"""How late the simulator's own event loop has been lately, so its quota judges the client, not itself.

The simulator stamps a request with the time it reads it. When its loop is held (a busy or single-core
machine, the GIL of a test process it shares, a garbage collection), requests that left the client spread
over the hold are read together at its end: a client that kept to its quota by its own clock looks over it
by the simulator's. A ticker measures that hold: every PERIOD it notes how much later than asked it woke.
The quota then counts a sliding second shortened at its start by the longest hold of the last MEMORY
seconds (`slack`, at most CAP): a request read up to that late cannot be told from one sent inside the
second, so it is not held against the client. With a prompt loop the slack is 0 and the window the strict
second; a burst (many requests within the shortened second) is refused as before. Each request admitted
only thanks to the slack is counted (`Lateness.lenient`), and the largest slack used is reported in stats.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Final

PERIOD: Final = 0.01  # the ticker's interval, seconds
MEMORY: Final = 1.5  # how long a hold is remembered: the second it can disturb, and the one after
CAP: Final = 0.5  # the most a second is shortened: half of it still judges the client
NOISE: Final = 0.002  # lateness under this is a timer's own jitter, not a hold


class Lateness:
    """The simulator loop's recent holds, measured by a ticker running in that loop (`run`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._holds: deque[tuple[float, float]] = deque()  # (when the ticker woke, how late)
        self.lenient = 0  # requests admitted only thanks to the slack
        self.max_slack = 0.0  # the largest slack a quota decision used

    async def run(self) -> None:
        """Ticks until cancelled, noting each wake-up later than PERIOD by more than NOISE."""
        while True:
            asked = self._clock() + PERIOD
            await asyncio.sleep(PERIOD)
            woke = self._clock()
            if woke - asked > NOISE:
                self._holds.append((woke, woke - asked))

    def slack(self) -> float:
        """The longest hold of the last MEMORY seconds, at most CAP: how late a request may have been read."""
        now = self._clock()
        while self._holds and self._holds[0][0] < now - MEMORY:
            self._holds.popleft()
        return min(CAP, max((late for _, late in self._holds), default=0.0))

    def used(self, slack: float, lenient: bool) -> None:
        """Notes a quota decision that used `slack`; `lenient`: it admitted what the strict second refuses."""
        self.max_slack = max(self.max_slack, slack)
        self.lenient += lenient

    def reset(self) -> None:
        """Forgets what was counted (the stats' reset); the holds of the last MEMORY seconds still count."""
        self.lenient, self.max_slack = 0, 0.0
