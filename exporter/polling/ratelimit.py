"""A token bucket per (account, API, endpoint), as Tencent counts quotas, that keeps every sliding second
within the API's quota.

Requests leave on an even pace slightly under the quota, one slot after another. A caller that comes late for
its slot (the event loop was busy elsewhere) may still use the slots that passed meanwhile, up to
BACKLOG_SECONDS of them, so a busy loop delays requests instead of losing them. Made-up slots send several
requests at once, which the even pace alone would never do, so every reservation is also held to a hard
limit: never more than window_limit(rate) reservations (the quota itself, for an integer quota) within one
second plus a margin for requests bunching up on their way out. The margin is JITTER_MARGIN, or how late the
event loop has lately woken the caller when that is more: a loop that is late to wake the caller is as late
to send what it reserved.

On throttling (`RequestLimitExceeded*`, another client spending the same quota) the rate drops
multiplicatively and climbs back additively, so the exporter yields to other users and returns to full speed
when they stop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
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
# Slots missed longer ago than this are forfeit, so a long stall (or an idle spell, which the bucket cannot
# tell apart from one) releases at most about a second's worth of requests at once.
BACKLOG_SECONDS = 1.0
# How much closer together than they were sent requests may arrive and still stay within the quota once
# made-up slots have filled a window. The margin is paid for in catch-up speed: at a quota of N per second,
# N+1 requests span 1/SAFETY = 1.042 s on the even pace but only 1 + JITTER_MARGIN under the limit, and that
# difference (about 2% of the quota) is all that repays missed slots when the limit binds.
JITTER_MARGIN = 0.02
WINDOW_SECONDS = 1.0 + JITTER_MARGIN  # the narrowest window the limit applies to
# Lateness of the loop widens the margin while it lasts, halving every LATENESS_HALF_LIFE seconds. With 200
# scrapers each rendering /metrics on the loop (2 cores, loopback simulator), a fixed 20 ms margin drew 16
# to 64 RequestLimitExceeded in 16 s and the widened one 4, still spending 0.82 of the quota where dropping
# missed slots spent 0.54.
LATENESS_HALF_LIFE = 5.0


def window_limit(rate: float) -> int:
    """Most reservations allowed within a window at `rate` requests per second (at least one): floor(rate).

    That keeps an integer quota, and it keeps shards within one: M replicas each at quota / M send at most
    M * floor(quota / M) <= quota in any second, whatever their phases. A shard's fractional rate would
    otherwise let each put ceil(rate) in the same second (20 / 3: three times 7 of a quota of 20, measured as
    throttled requests one run in three), so the limit binds its pace a little (20 / 3: 5.9/s, not 6.4/s)."""
    return max(1, math.floor(rate + 1e-9))


class TokenBucket:
    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = rate
        self._clock = clock
        self._sleep = sleep
        self._next_slot = clock()  # the even pace's next slot; may lie in the past when callers are late
        # When the latest reservations go out, in order: enough of them to check the window at any rate.
        self._sent: deque[float] = deque(maxlen=window_limit(rate))
        self._floor = rate  # the rate just after the last decrease
        self._decreased_at = float("-inf")
        self._lateness = 0.0  # the latest wake-up lateness seen, decaying from _lateness_at
        self._lateness_at = self._next_slot

    def set_rate(self, rate: float) -> None:
        """A new quota (config reload): applies from the next reservation, forgetting past throttling."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = self._floor = rate
        self._sent = deque(self._sent, maxlen=window_limit(rate))

    def current_rate(self) -> float:
        if self._floor >= self.max_rate:
            return self.max_rate
        recovered = self._floor + self.max_rate / RECOVERY_SECONDS * (self._clock() - self._decreased_at)
        return min(self.max_rate, recovered)

    def reserve(self) -> float:
        """Reserves the next free slot and returns how long the caller must wait for it (<= 0: go now)."""
        now = self._clock()
        rate = self.current_rate()
        slot = max(self._next_slot, now - BACKLOG_SECONDS)
        # The pace advances from the slot, not from now: a late caller's missed slots stay available.
        self._next_slot = slot + 1.0 / (rate * SAFETY)
        at = max(slot, now)
        if self._sent:
            # In order, so the window check below only needs the limit-th latest reservation.
            at = max(at, self._sent[-1])
            limit = window_limit(rate)
            if len(self._sent) >= limit:
                at = max(at, self._sent[-limit] + self.window_seconds())
        self._sent.append(at)
        return at - now

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            due = self._clock() + delay
            await self._sleep(delay)
            self.woke_late(self._clock() - due)

    def woke_late(self, seconds: float) -> None:
        """The caller woke up `seconds` after the slot it slept for: the margin widens to that for a while."""
        now = self._clock()
        self._lateness = max(self._recent_lateness(now), min(seconds, BACKLOG_SECONDS))
        self._lateness_at = now

    def window_seconds(self) -> float:
        """The window in which at most window_limit(rate) reservations fall: one second plus the margin."""
        return 1.0 + max(JITTER_MARGIN, self._recent_lateness(self._clock()))

    def _recent_lateness(self, now: float) -> float:
        return self._lateness * math.pow(0.5, (now - self._lateness_at) / LATENESS_HALF_LIFE)

    def throttled(self) -> None:
        now = self._clock()
        if now - self._decreased_at < DECREASE_COOLDOWN:
            return
        self._floor = max(self.max_rate * 0.05, self.current_rate() * DECREASE_FACTOR)
        self._decreased_at = now
        # The API says we already send too much: missed slots are not made up at the old rate.
        self._next_slot = max(self._next_slot, now)
