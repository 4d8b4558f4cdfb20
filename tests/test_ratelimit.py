from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.polling.ratelimit import (
    BACKLOG_SECONDS,
    DECREASE_FACTOR,
    LATENESS_HALF_LIFE,
    SAFETY,
    WINDOW_SECONDS,
    TokenBucket,
    window_limit,
)
from tests.helpers import FakeClock


def send_times(bucket: TokenBucket, clock: FakeClock, count: int) -> list[float]:
    """Times at which `count` back-to-back callers get their slot."""
    times = []
    for _ in range(count):
        wait = bucket.reserve()
        times.append(clock.now + wait)
    return times


def run_late(bucket: TokenBucket, clock: FakeClock, until: float, lateness: list[float]) -> list[float]:
    """Send times of one caller looping until `until`, as the scheduler's worker does: it reserves, sleeps
    when told to and then wakes up late by the next of `lateness` (cycled), or reserves again at once."""
    times: list[float] = []
    turn = 0
    while clock.now < until:
        wait = bucket.reserve()
        times.append(clock.now + wait)
        if wait > 0:
            clock.now += wait + lateness[turn % len(lateness)]
            turn += 1
    return times


def busiest_window(times: list[float]) -> int:
    """The most send times within any window of WINDOW_SECONDS (times in order)."""
    worst, first = 0, 0
    for last, at in enumerate(times):
        while times[first] + WINDOW_SECONDS <= at:
            first += 1
        worst = max(worst, last - first + 1)
    return worst


def max_in_sliding_second(times: list[float]) -> int:
    return max(sum(1 for u in times if t <= u < t + 1.0) for t in times)


def test_never_more_than_the_quota_in_any_sliding_second_even_after_idle() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    times = send_times(bucket, clock, 100)
    clock.now = times[-1] + 30  # idle: at most BACKLOG_SECONDS of slots are still owed, within the limit
    times += send_times(bucket, clock, 100)
    assert max_in_sliding_second(times) <= 20
    assert busiest_window(times) <= 20


def test_uses_nearly_all_of_the_quota_when_busy() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(40, clock)
    times = send_times(bucket, clock, 401)
    achieved = 400 / (times[-1] - times[0])
    assert achieved == pytest.approx(40 * SAFETY)


def test_a_late_caller_gets_the_slots_it_missed() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    assert bucket.reserve() == 0
    clock.now += 0.25  # the loop was busy: 4 slots (at 1/19.2 s each) went by
    waits = [bucket.reserve() for _ in range(5)]
    assert [w <= 0 for w in waits] == [True] * 4 + [False]
    assert waits[-1] == pytest.approx(5 / (20 * SAFETY) - 0.25)


def test_a_caller_late_on_every_wake_up_still_spends_the_whole_pace() -> None:
    # Lateness longer than the spacing (26 ms at 40 req/s) used to push every later slot back: 40 ms on each
    # wake-up cut the rate to under 80%.
    clock = FakeClock(1000.0)
    bucket = TokenBucket(40, clock)
    start = clock.now
    times = run_late(bucket, clock, start + 60, [0.04])
    assert abs(sum(1 for t in times if t < start + 60) - 40 * SAFETY * 60) <= 1.001
    assert busiest_window(times) <= 40


@settings(max_examples=60, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=60),
    lateness=st.lists(st.floats(min_value=0, max_value=0.06), min_size=1, max_size=40),
)
def test_missed_slots_are_made_up_over_a_long_run(rate: int, lateness: list[float]) -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(rate, clock)
    start = clock.now
    busy, quiet = 30.0, 30.0
    times = run_late(bucket, clock, start + busy, lateness)
    # Then on time, long enough for the slots still owed to be repaid within the window limit.
    times += run_late(bucket, clock, start + busy + quiet, [0.0])
    sent = sum(1 for t in times if t < start + busy + quiet)
    assert abs(sent - rate * SAFETY * (busy + quiet)) <= 1.001


def test_a_stall_longer_than_the_backlog_forfeits_the_older_slots() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    bucket.reserve()
    clock.now += 10
    owed = 0
    while bucket.reserve() <= 0:
        owed += 1
    assert owed == pytest.approx(20 * SAFETY * BACKLOG_SECONDS, abs=1)


@settings(max_examples=80, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=80),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["sleep", "late", "stall", "throttled", "burst", "woke_late"]),
            st.floats(min_value=0, max_value=2.5),
        ),
        min_size=1,
        max_size=200,
    ),
)
def test_never_more_than_the_window_limit_whatever_the_lateness(
    rate: float, steps: list[tuple[str, float]]
) -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(rate, clock)
    times: list[float] = []
    limits: list[int] = []

    def reserve() -> float:
        at = clock.now + bucket.reserve()
        times.append(at)
        limits.append(window_limit(bucket.current_rate()))
        return at

    for action, amount in steps:
        if action == "sleep":  # an on-time caller
            clock.now = max(clock.now, reserve())
        elif action == "late":  # woken up late after its slot
            clock.now = max(clock.now, reserve()) + amount / 10
        elif action == "stall":  # the loop (or the bucket) sat idle
            clock.now += amount
        elif action == "throttled":
            bucket.throttled()
        elif action == "woke_late":  # the margin widens, then decays
            bucket.woke_late(amount / 5)
        else:  # several callers reserving at once
            for _ in range(int(amount * 10)):
                reserve()
    assert times == sorted(times)
    for last, at in enumerate(times):
        within = sum(1 for t in times[: last + 1] if t > at - WINDOW_SECONDS)
        # Each reservation is held to the limit of the rate at that moment, never above the quota's limit.
        assert within <= limits[last] <= window_limit(rate)


def test_a_late_wake_up_widens_the_window_for_a_while() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    assert bucket.window_seconds() == WINDOW_SECONDS
    before = run_late(bucket, clock, clock.now + 3, [0.0])
    clock.now += 0.5  # the loop was busy: the slots missed are owed, but requests may bunch by 0.5 s
    bucket.woke_late(0.5)
    seen = clock.now
    assert bucket.window_seconds() == pytest.approx(1.5)
    after = run_late(bucket, clock, clock.now + 3, [0.0])
    # The margin decays to 0.5 * 2**(-3/5) = 0.33 s over those 3 s: no more than 20 requests within 1.3 s.
    assert max(sum(1 for u in before + after if t - 1.3 < u <= t) for t in after) <= 20
    clock.now = seen + LATENESS_HALF_LIFE
    assert bucket.window_seconds() == pytest.approx(1.25)
    clock.now = seen + 10 * LATENESS_HALF_LIFE
    assert bucket.window_seconds() == WINDOW_SECONDS
    bucket.woke_late(0.01)  # within the usual margin
    assert bucket.window_seconds() == WINDOW_SECONDS


async def test_acquire_waits_for_its_slot_and_notices_when_it_woke_up_late() -> None:
    clock = FakeClock(1000.0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds + 0.2  # the loop was busy when the timer was due

    bucket = TokenBucket(20, clock, sleep)
    await bucket.acquire()
    assert slept == []  # the first slot is now
    await bucket.acquire()
    assert slept == [pytest.approx(1 / (20 * SAFETY))]
    assert bucket.window_seconds() == pytest.approx(1.2)


def test_throttling_cuts_the_rate_then_recovers_additively() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    bucket.throttled()
    assert bucket.current_rate() == pytest.approx(20 * DECREASE_FACTOR)
    bucket.throttled()  # within the cooldown: the same burst of throttled answers
    assert bucket.current_rate() == pytest.approx(20 * DECREASE_FACTOR)
    clock.now += 2
    assert 20 * DECREASE_FACTOR < bucket.current_rate() < 20
    clock.now += 100
    assert bucket.current_rate() == 20


def test_throttling_lowers_the_window_limit_at_once_and_forgets_missed_slots() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    before = run_late(bucket, clock, clock.now + 5, [0.0])
    clock.now += 0.5  # late: these slots would be owed, but the API just said we send too much
    bucket.throttled()
    throttled_at = clock.now
    # While the rate recovers from 14 to 15 requests per second, the window limit is 14.
    after = run_late(bucket, clock, throttled_at + 0.45, [0.0])
    assert after[0] == throttled_at
    assert after[1] - after[0] == pytest.approx(1 / (14 * SAFETY))
    assert busiest_window(before + after) <= 20
    assert busiest_window([t for t in before + after if t > throttled_at - WINDOW_SECONDS]) <= 14


def test_repeated_throttling_keeps_a_floor() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    for _ in range(20):
        bucket.throttled()
        clock.now += 1.0
    assert bucket.current_rate() >= 1.0


def test_set_rate_changes_the_pace_and_the_limit_and_forgets_throttling() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    bucket.throttled()
    bucket.set_rate(40)
    assert bucket.max_rate == 40
    assert bucket.current_rate() == 40
    times = send_times(bucket, clock, 401)
    assert 400 / (times[-1] - times[0]) == pytest.approx(40 * SAFETY)
    assert busiest_window(times) <= 40
    bucket.set_rate(10)
    clock.now = times[-1]
    lowered = run_late(bucket, clock, clock.now + 60, [0.0])
    assert busiest_window([t for t in times + lowered if t > lowered[0] - WINDOW_SECONDS]) <= 10
    # The requests sent just before the change hold the first ones back; that time is made up within the
    # limit, so over a minute the count is the pace's, plus at most the backlog.
    sent = sum(1 for t in lowered if t < times[-1] + 60)
    assert 10 * SAFETY * 60 - 1 <= sent <= 10 * SAFETY * (60 + BACKLOG_SECONDS) + 1


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(5).set_rate(-1)


def test_window_limit_is_the_quota_for_integer_quotas_and_shards_add_up_to_at_most_the_quota() -> None:
    assert [window_limit(n) for n in (1, 2, 20, 40, 50, 100, 200)] == [1, 2, 20, 40, 50, 100, 200]
    for quota, shards in ((20, 3), (40, 3), (20, 7), (1, 2), (25, 2)):
        rate = quota / shards
        # Shards cannot see each other's phases: only their per-second maxima adding up is safe.
        assert shards * window_limit(rate) <= max(quota, shards)
        clock = FakeClock(1000.0)
        bucket = TokenBucket(rate, clock)
        sent, times, end = 0, [], clock.now + 60
        while clock.now < end:
            clock.now += max(0.0, bucket.reserve())  # an on-time caller
            times.append(clock.now)
            sent += 1
        busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        assert busiest <= window_limit(rate), (quota, shards, busiest)
        # What it costs: the pace held to the window limit, never below it.
        assert sent >= min(rate * SAFETY, window_limit(rate) / WINDOW_SECONDS) * 60 - 2, (quota, shards, sent)
