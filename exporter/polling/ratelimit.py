"""A token bucket per (account, API, endpoint), as Tencent counts quotas, that keeps every sliding second
within the API's quota, counted by when requests leave, whatever the process does in between.

A request is let through by `acquire()` (or `take()`), which checks the bucket and counts the request in one
synchronous step; the caller then signs and sends it with no await in between, and the HTTP layer moves the
count to the moment the body is written (`Ticket.left()`, called from the client's trace hook just before the
socket write). A request let through just before the process stalls (SIGSTOP, a CFS throttling pause, a GC
pause) therefore counts from when the stall ends and its bytes actually leave, not from before the stall.

Two limits hold each request:

- the pace: one slot after another slightly under the quota. A caller up to BACKLOG_SECONDS late for its slot
  may use the slots that passed, so a loop that wakes the caller late delays requests instead of losing them;
  but those missed slots are repaid at most CATCH_UP times the pace, never in a burst, and slots missed longer
  ago (a stall, an idle spell) are forfeit.
- the window: never more than window_limit(rate) requests (the quota itself, for an integer quota) within
  WINDOW_SECONDS, counted by send time. That is what holds whatever the pace allows.

On throttling (`RequestLimitExceeded*`, another client spending the same quota) the rate drops
multiplicatively and climbs back additively, so the exporter yields to other users and returns to full speed
when they stop.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Awaitable, Callable

# Requests leave at this share of the quota. N+1 consecutive requests then span 1/0.96 s, so arrivals may
# bunch up by ~40 ms (network and scheduling jitter) before the API's sliding second sees more than N.
# Measured on loopback at 250 ms latency: 0.97 drew an occasional RequestLimitExceeded in one run of three
# setups, 0.95 and 0.96 none; 0.96 keeps utilisation clear of the 0.95 target.
SAFETY = 0.96
# Gentler than halving: a lone throttled request is more often jitter than a competing client.
DECREASE_FACTOR = 0.7
# Full recovery from zero takes RECOVERY_SECONDS without further throttling.
RECOVERY_SECONDS = 10.0
# Several in-flight requests are usually throttled together; they count as one signal.
DECREASE_COOLDOWN = 1.0
# Slots missed up to this long ago may still be used (a caller woken late by a busy loop); older ones are
# forfeit, so after a stall or an idle spell the pace restarts instead of owing what went by.
BACKLOG_SECONDS = 0.5
# A sweep's pages come after a pause (the rest of the interval): the slots missed in it are idle time, not a
# late caller's, and repaying BACKLOG_SECONDS of them began every sweep with a burst at CATCH_UP times the
# pace (50 pages in 0.35 s, 143/s, where the pace is 96/s; python -m bench --discovery). Within the quota,
# but nothing needs it: a sweep every polling.interval sees nothing sooner for ending 0.15 s earlier, and a
# server answering pages one at a time (the benchmark's simulator) holds the status requests behind it.
# Enough for a page woken a little late.
SWEEP_BACKLOG_SECONDS = 0.05
# Missed slots are repaid at most this many times the pace: the gap between two requests never shrinks below
# 1 / CATCH_UP of the pace's, so a late caller catches up smoothly and a stall never ends in a burst.
CATCH_UP = 2.0
# How much closer together than they were written requests may arrive at the API and still stay within the
# quota once the window limit binds (after a stall, while missed slots are repaid). 40 ms is the bunching the
# pace itself tolerates (N+1 requests span 1/SAFETY s), so the limit binding is no riskier than the pace.
JITTER_MARGIN = 0.04
WINDOW_SECONDS = 1.0 + JITTER_MARGIN  # the window the limit applies to
# A caller woken late says the machine is busy, and then requests bunch up on their way (and at a simulator
# on the same machine) by about as much: the margin widens to the lateness seen, up to LATENESS_CAP, halving
# every LATENESS_HALF_LIFE seconds. Capped because a long stall is no such sign: requests are counted when
# they leave, so it needs no margin. Measured under two CPU hogs on 2 cores with the simulator on the same
# machine: without it, 1 throttled request in 14 s at full quota.
LATENESS_CAP = 0.1
LATENESS_HALF_LIFE = 5.0
_HORIZON = 1.0 + max(JITTER_MARGIN, LATENESS_CAP)  # the widest window: older sends are forgotten


def window_limit(rate: float) -> int:
    """Most requests allowed within a window at `rate` requests per second (at least one): floor(rate).

    That keeps an integer quota, and it keeps shards within one: M replicas each at quota / M send at most
    M * floor(quota / M) <= quota in any second, whatever their phases. A shard's fractional rate would
    otherwise let each put ceil(rate) in the same second (20 / 3: three times 7 of a quota of 20, measured as
    throttled requests one run in three), so the limit binds its pace a little (20 / 3: 5.8/s, not 6.4/s)."""
    return max(1, math.floor(rate + 1e-9))


class Ticket:
    """One request let through by a bucket, counted at `at`: when it was let through until the HTTP layer
    says its bytes left (`left()`), then from that moment."""

    __slots__ = ("_bucket", "_left", "at")

    def __init__(self, bucket: TokenBucket, at: float) -> None:
        self._bucket, self.at, self._left = bucket, at, False

    def left(self) -> None:
        """The request's bytes are being written now; only the first call counts."""
        if not self._left:
            self._left = True
            self._bucket._moved(self)


class TokenBucket:
    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backlog: float = BACKLOG_SECONDS,
    ) -> None:
        """`backlog`: how long ago a missed slot may be and still be used (BACKLOG_SECONDS; less for callers
        that come in bursts after idle spells, as a sweep's pages: SWEEP_BACKLOG_SECONDS)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = rate
        self.backlog = backlog
        self._clock = clock
        self._sleep = sleep
        self._next_slot = clock()  # the pace's next slot; may lie in the past when callers are late
        self._last = float("-inf")  # when the latest request was let through
        # Send times within the latest window, in order (a Ticket moving later re-sorts its own).
        self._sent: list[float] = []
        self._floor = rate  # the rate just after the last decrease
        self._decreased_at = float("-inf")
        self._lateness = 0.0  # the latest wake-up lateness seen (capped), decaying from _lateness_at
        self._lateness_at = self._next_slot

    def set_rate(self, rate: float) -> None:
        """A new quota (config reload): applies from the next request, forgetting past throttling."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = self._floor = rate

    def current_rate(self) -> float:
        if self._floor >= self.max_rate:
            return self.max_rate
        recovered = self._floor + self.max_rate / RECOVERY_SECONDS * (self._clock() - self._decreased_at)
        return min(self.max_rate, recovered)

    def window_seconds(self) -> float:
        """The window in which at most window_limit(rate) requests leave: one second plus the margin."""
        return 1.0 + max(JITTER_MARGIN, self._recent_lateness(self._clock()))

    def woke_late(self, seconds: float) -> None:
        """A caller woke up `seconds` after the time it slept for: the margin widens to that for a while."""
        now = self._clock()
        self._lateness = max(self._recent_lateness(now), min(seconds, LATENESS_CAP))
        self._lateness_at = now

    def _recent_lateness(self, now: float) -> float:
        return self._lateness * math.pow(0.5, (now - self._lateness_at) / LATENESS_HALF_LIFE)

    def delay(self) -> float:
        """How long until a request may leave (<= 0: now). Counts nothing."""
        now = self._clock()
        rate = self.current_rate()
        spacing = 1.0 / (rate * SAFETY)
        at = max(now, self._next_slot, self._last + spacing / CATCH_UP)
        cut = bisect.bisect_right(self._sent, now - _HORIZON)
        if cut:
            del self._sent[:cut]
        limit = window_limit(rate)
        if len(self._sent) >= limit:
            at = max(at, self._sent[-limit] + self.window_seconds())
        return at - now

    def take(self) -> Ticket | None:
        """Lets one request through now if the pace and the window allow it, counting it from now; the caller
        sends it before its next await. None: not yet (see delay())."""
        if self.delay() > 0:
            return None
        now = self._clock()
        rate = self.current_rate()
        spacing = 1.0 / (rate * SAFETY)
        # The pace advances from the slot, not from now: a slightly late caller's missed slots stay available.
        slot = max(self._next_slot, now - self.backlog)
        self._next_slot = slot + spacing
        self._last = now
        bisect.insort(self._sent, now)
        return Ticket(self, now)

    async def ready(self) -> None:
        """Waits until a request may leave, without letting one through (a worker choosing what to send)."""
        while (wait := self.delay()) > 0:
            await self._nap(wait)

    async def acquire(self) -> Ticket:
        """Waits until a request may leave and lets it through: the check and the count happen together after
        the last await, so the caller that sends at once sends at the time counted."""
        while True:
            ticket = self.take()
            if ticket is not None:
                return ticket
            await self._nap(self.delay())

    async def _nap(self, seconds: float) -> None:
        due = self._clock() + seconds
        await self._sleep(seconds)
        self.woke_late(self._clock() - due)

    def _moved(self, ticket: Ticket) -> None:
        now = self._clock()
        index = bisect.bisect_left(self._sent, ticket.at)
        if index < len(self._sent) and self._sent[index] == ticket.at:
            del self._sent[index]
        ticket.at = now
        bisect.insort(self._sent, now)
        self._last = max(self._last, now)

    def throttled(self) -> None:
        now = self._clock()
        if now - self._decreased_at < DECREASE_COOLDOWN:
            return
        self._floor = max(self.max_rate * 0.05, self.current_rate() * DECREASE_FACTOR)
        self._decreased_at = now
        # The API says we already send too much: missed slots are not made up at the old rate.
        self._next_slot = max(self._next_slot, now)
