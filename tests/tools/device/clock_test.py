"""The virtual clock: order, cancelling, bounds, and per-owner order on many threads."""

from __future__ import annotations

import functools
import threading
import time

import pytest

from gitprov.tools.device.clock import VirtualClock


def test_timers_fire_in_time_order_and_now_is_their_time() -> None:
    clock = VirtualClock()
    seen: list[tuple[str, float]] = []
    for name, when in (("c", 30.0), ("a", 10.0), ("b", 20.0), ("a2", 10.0)):
        clock.call_at(when, functools.partial(lambda n: seen.append((n, clock.now)), name))
    assert clock.run() == 4
    # Same time: the order they were scheduled in.
    assert seen == [("a", 10.0), ("a2", 10.0), ("b", 20.0), ("c", 30.0)]
    assert clock.now == 30.0


def test_run_until_stops_before_later_timers_and_moves_the_clock() -> None:
    clock = VirtualClock()
    seen: list[float] = []
    clock.call_at(5, lambda: seen.append(clock.now))
    clock.call_at(3600, lambda: seen.append(clock.now))
    started = time.monotonic()
    assert clock.run(until=100) == 1
    assert time.monotonic() - started < 1  # virtual: an hour is not waited
    assert (seen, clock.now, clock.pending) == ([5.0], 100.0, 1)
    clock.run(until=4000)
    assert seen == [5.0, 3600.0]
    with pytest.raises(ValueError, match="the clock is at 4000"):
        clock.run(until=10)


def test_timers_schedule_timers_and_cancel() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    def tick() -> None:
        seen.append(clock.now)
        if clock.now < 30:
            clock.call_later(10, tick)

    clock.call_at(0, tick)
    doomed = clock.call_at(15, lambda: seen.append(-1))
    doomed.cancel()
    clock.run()
    assert seen == [0.0, 10.0, 20.0, 30.0]
    with pytest.raises(ValueError, match="cannot schedule at 5"):
        clock.call_at(5, tick)
    with pytest.raises(ValueError, match="negative"):
        clock.call_later(-1, tick)


def test_an_exception_stops_the_run_and_is_raised() -> None:
    clock = VirtualClock()

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_at(1, boom)
    clock.call_at(2, lambda: None)
    with pytest.raises(RuntimeError, match="boom"):
        clock.run()
    assert clock.pending == 1


def test_parallel_run_overlaps_owners_but_never_one_owners_timers() -> None:
    clock = VirtualClock()
    owners = 4
    # All four owners' first timers must be running at once to pass the barrier.
    barrier = threading.Barrier(owners, timeout=5)
    lock = threading.Lock()
    running: dict[int, int] = {}
    order: dict[int, list[float]] = {o: [] for o in range(owners)}
    overlap: list[int] = []

    def work(owner: int, wait: bool) -> None:
        with lock:
            running[owner] = running.get(owner, 0) + 1
            if running[owner] > 1:
                overlap.append(owner)
        order[owner].append(clock.now)
        if wait:
            barrier.wait()
        time.sleep(0.002)
        if clock.now < 5:
            clock.call_later(1, lambda: work(owner, False), owner=owner)
        with lock:
            running[owner] -= 1

    for owner in range(owners):
        clock.call_at(0, functools.partial(work, owner, True), owner=owner)
        # Due while the owner's first timer still runs: it must wait for it.
        clock.call_at(0.5, functools.partial(work, owner, False), owner=owner)
    clock.run(until=10, workers=owners)
    assert overlap == []
    for owner in range(owners):
        assert order[owner][:2] == [0.0, 0.5]
        assert order[owner] == sorted(order[owner])
    assert clock.now == 10.0


def test_parallel_run_raises_a_timers_exception() -> None:
    clock = VirtualClock()

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_at(1, boom, owner="a")
    with pytest.raises(RuntimeError, match="boom"):
        clock.run(workers=3)
    with pytest.raises(ValueError, match="workers"):
        clock.run(workers=0)
