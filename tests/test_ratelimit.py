"""The token bucket against a fake clock that moves only when told, and jumps (a stall, SIGSTOP, an idle
spell): every window counted by when requests leave stays within the limit, and nothing bursts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.polling.ratelimit import (
    BACKLOG_SECONDS,
    CATCH_UP,
    DECREASE_FACTOR,
    LATENESS_CAP,
    LATENESS_HALF_LIFE,
    SAFETY,
    SWEEP_BACKLOG_SECONDS,
    WINDOW_SECONDS,
    Ticket,
    TokenBucket,
    window_limit,
)
from tests.helpers import FakeClock


def go(bucket: TokenBucket, clock: FakeClock, late: float = 0.0) -> Ticket:
    """One on-time caller (woken `late` after its slot): waits as told, then is let through."""
    wait = bucket.delay()
    if wait > 0:
        clock.now += wait + late
    ticket = bucket.take()
    assert ticket is not None
    return ticket


def send_times(bucket: TokenBucket, clock: FakeClock, count: int, late: float = 0.0) -> list[float]:
    return [go(bucket, clock, late).at for _ in range(count)]


def run_until(bucket: TokenBucket, clock: FakeClock, until: float, late: float = 0.0) -> list[float]:
    times = []
    while clock.now < until:
        times.append(go(bucket, clock, late).at)
    return times


def busiest_window(times: list[float], window: float = WINDOW_SECONDS) -> int:
    """The most times within any window of `window` seconds."""
    times = sorted(times)
    worst, first = 0, 0
    for last, at in enumerate(times):
        while times[first] + window <= at:
            first += 1
        worst = max(worst, last - first + 1)
    return worst


def test_never_more_than_the_quota_in_any_sliding_second_even_after_idle() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    times = send_times(bucket, clock, 100)
    clock.now = times[-1] + 30  # idle: the slots that went by are forfeit
    times += send_times(bucket, clock, 100)
    assert busiest_window(times, 1.0) <= 20
    assert busiest_window(times) <= 20


def test_uses_nearly_all_of_the_quota_when_busy() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(40, clock)
    times = send_times(bucket, clock, 401)
    assert 400 / (times[-1] - times[0]) == pytest.approx(40 * SAFETY, rel=0.01)


def test_ready_waits_without_letting_a_request_through() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    assert bucket.delay() <= 0
    assert bucket.delay() <= 0  # asking counts nothing
    assert bucket.take() is not None
    assert bucket.take() is None
    assert bucket.delay() == pytest.approx(1 / (20 * SAFETY))


def test_a_caller_late_on_every_wake_up_still_spends_the_whole_pace() -> None:
    # Lateness must not push every later slot back: the slots missed are repaid at up to CATCH_UP times the
    # pace. The window limit (40 in 1.04 s, 38.46/s) binds a little when every send is late: 99%.
    clock = FakeClock(1000.0)
    bucket = TokenBucket(40, clock)
    start = clock.now
    times = run_until(bucket, clock, start + 60, late=0.01)
    assert sum(1 for t in times if t < start + 60) >= 0.99 * 40 * SAFETY * 60
    assert busiest_window(times) <= 40


def test_a_stall_never_ends_in_a_burst() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    before = run_until(bucket, clock, clock.now + 5)
    clock.now += 0.4  # SIGSTOP: about 8 slots went by
    resumed = clock.now
    after = run_until(bucket, clock, clock.now + 5)
    spacing = 1 / (20 * SAFETY)
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) >= spacing / CATCH_UP - 1e-9  # catching up is smooth, never a burst
    assert after[0] == resumed
    assert busiest_window(before + after) <= 20
    # At most BACKLOG_SECONDS of missed slots are repaid; a longer stall forfeits the rest.
    owed = len(after) - 5 * 20 * SAFETY
    assert owed <= 20 * SAFETY * BACKLOG_SECONDS + 1


def test_a_request_let_through_before_a_stall_counts_from_when_it_leaves() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    sent = run_until(bucket, clock, clock.now + 3)
    stalled = go(bucket, clock)  # let through, then the process stops before the write
    clock.now += 0.4
    stalled.left()  # written as the process resumes
    assert stalled.at == clock.now
    moved_at = stalled.at
    after = run_until(bucket, clock, clock.now + 3)
    assert busiest_window([*sent, stalled.at, *after]) <= 20
    stalled.left()  # only the first report moves it
    assert stalled.at == moved_at < clock.now


@settings(max_examples=80, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=80),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["go", "late", "jump", "stalled_send", "throttled", "burst"]),
            st.floats(min_value=0, max_value=2.5),
        ),
        min_size=1,
        max_size=200,
    ),
)
def test_never_more_than_the_window_limit_by_send_time_whatever_the_clock_does(
    rate: float, steps: list[tuple[str, float]]
) -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(rate, clock)
    tickets: list[Ticket] = []
    limits: list[int] = []

    def send(late: float = 0.0, jump_before_write: float = 0.0) -> None:
        limits.append(window_limit(bucket.current_rate()))
        ticket = go(bucket, clock, late)
        clock.now += jump_before_write  # the process stalls between the check and the write
        ticket.left()
        tickets.append(ticket)

    for action, amount in steps:
        if action == "go":
            send()
        elif action == "late":  # woken up late after its slot
            send(late=amount / 10)
        elif action == "jump":  # the clock jumps: a stall, or an idle spell
            clock.now += amount
        elif action == "stalled_send":
            send(jump_before_write=amount / 2)
        elif action == "throttled":
            bucket.throttled()
        else:  # several callers waiting at once, each let through in turn
            for _ in range(int(amount * 10)):
                send()
    times = [t.at for t in tickets]
    assert times == sorted(times)
    for last, at in enumerate(times):
        within = sum(1 for t in times[: last + 1] if t > at - WINDOW_SECONDS)
        # Each request is held to the limit of the rate at that moment, never above the quota's limit.
        assert within <= limits[last] <= window_limit(rate)
    spacing = 1 / (bucket.max_rate * SAFETY)
    assert all(b - a >= spacing / CATCH_UP - 1e-9 for a, b in itertools.pairwise(times))


async def test_acquire_waits_for_its_slot_and_counts_from_when_it_is_let_through() -> None:
    clock = FakeClock(1000.0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds + 0.2  # the loop was busy when the timer was due

    bucket = TokenBucket(20, clock, sleep)
    first = await bucket.acquire()
    assert slept == []
    assert first.at == 1000.0
    second = await bucket.acquire()
    assert slept == [pytest.approx(1 / (20 * SAFETY))]
    assert second.at == clock.now  # counted when it is let through, not when its slot was
    await bucket.ready()
    await bucket.ready()
    assert len(slept) == 2  # ready() waits for a slot but takes none
    assert bucket.take() is not None


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
    before = run_until(bucket, clock, clock.now + 5)
    clock.now += 0.3  # late: these slots would be owed, but the API just said we send too much
    bucket.throttled()
    throttled_at = clock.now
    # While the rate recovers from 14 to 15 requests per second, the window limit is 14.
    after = run_until(bucket, clock, throttled_at + 2)
    # The first waits for the lower limit to hold; then the pace is the lowered rate's, nothing repaid.
    assert after[-1] - after[-2] == pytest.approx(1 / (bucket.current_rate() * SAFETY), rel=0.02)
    after = [t for t in after if t < throttled_at + 0.45]
    assert busiest_window(before + after) <= 20
    assert max(sum(1 for u in before + after if t - WINDOW_SECONDS < u <= t) for t in after) <= 14


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
    assert 400 / (times[-1] - times[0]) == pytest.approx(40 * SAFETY, rel=0.01)
    assert busiest_window(times) <= 40
    bucket.set_rate(10)
    lowered = run_until(bucket, clock, clock.now + 60)
    assert busiest_window([t for t in times + lowered if t > lowered[0] - WINDOW_SECONDS]) <= 10
    # The first waits until the lower limit holds over the requests sent just before the change.
    assert 10 * SAFETY * (60 - WINDOW_SECONDS) - 2 <= len(lowered) <= 10 * SAFETY * 60 + 2


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
        times = run_until(bucket, clock, clock.now + 60)
        assert busiest_window(times, 1.0) <= window_limit(rate), (quota, shards)
        # What it costs: the pace held to the window limit, never below it.
        floor = min(rate * SAFETY, window_limit(rate) / WINDOW_SECONDS) * 60 - 2
        assert len(times) >= floor, (quota, shards, len(times))


def test_a_late_wake_up_widens_the_window_for_a_while_up_to_a_cap() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(20, clock)
    assert bucket.window_seconds() == WINDOW_SECONDS
    bucket.woke_late(0.06)  # the machine is busy: requests may bunch up by as much on their way
    assert bucket.window_seconds() == pytest.approx(1.06)
    clock.now += LATENESS_HALF_LIFE
    assert bucket.window_seconds() == WINDOW_SECONDS  # 0.03 is within the usual margin
    bucket.woke_late(0.4)  # a stall: capped, since requests are counted when they leave
    assert bucket.window_seconds() == pytest.approx(1 + LATENESS_CAP)
    times = run_until(bucket, clock, clock.now + 2)
    assert busiest_window(times, 1 + LATENESS_CAP * 0.75) <= 20


def test_a_sweep_bucket_restarts_its_pace_after_a_pause_instead_of_repaying_it() -> None:
    # A sweep's pages come after a pause: with the default backlog the first half second of slots is repaid
    # at twice the pace; a sweep's bucket repays at most SWEEP_BACKLOG_SECONDS of them.
    spacing = 1 / (100 * SAFETY)
    for backlog, burst in ((BACKLOG_SECONDS, True), (SWEEP_BACKLOG_SECONDS, False)):
        clock = FakeClock(1000.0)
        bucket = TokenBucket(100, clock, backlog=backlog)
        send_times(bucket, clock, 50)
        clock.now += 0.6  # the rest of the interval
        start = clock.now
        times = send_times(bucket, clock, 50)
        owed = sum(1 for t in times if t < start + 0.25) - 0.25 / spacing
        assert (owed > 10) is burst
        assert owed <= backlog / spacing + 1
        assert busiest_window(times) <= 100
