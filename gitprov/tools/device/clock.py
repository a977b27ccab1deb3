"""A virtual clock: timers that fire in order of virtual time, without real waiting.

The emulated devices wait seconds to hours (Random Delay, Resync Periodic, Forced Resync
Delay); tests and boot storms skip those waits but keep their order. Work done inside a
timer (a real fetch over the network) takes real time and no virtual time.

Timers carry an `owner` (a device). With `run(workers=N)` the timers of different owners
may run at the same time on N threads, while the timers of one owner run one at a time in
virtual-time order: a device's state is touched by one thread at a time, and its timers
see the same sequence as with `workers=1`. Owners never read each other's state, so the
only thing that differs between runs is the real load on the servers: exactly what a boot
storm wants, N devices fetching at once in the order of their virtual start times.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

__all__ = ["Timer", "VirtualClock"]


class Timer:
    """A callback due at virtual time `when`; `cancel()` stops it from running."""

    __slots__ = ("callback", "cancelled", "owner", "when")

    def __init__(self, when: float, callback: Callable[[], None], owner: Hashable | None) -> None:
        self.when = when
        self.callback = callback
        self.owner = owner
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<Timer at {self.when:g}{state}>"


class VirtualClock:
    """Virtual seconds from `start`. `now` inside a timer is that timer's time."""

    def __init__(self, start: float = 0.0) -> None:
        self._frontier = float(start)  # the latest time dispatched (or run to)
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def now(self) -> float:
        current: float | None = getattr(self._local, "now", None)
        return self._frontier if current is None else current

    @property
    def pending(self) -> int:
        """Timers not yet run nor cancelled."""
        with self._lock:
            return sum(1 for _, _, timer in self._heap if not timer.cancelled)

    def call_at(
        self, when: float, callback: Callable[[], None], *, owner: Hashable | None = None
    ) -> Timer:
        """Run `callback` at virtual time `when` (not before `now`)."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when:g}: the clock is at {self.now:g}")
        timer = Timer(float(when), callback, owner)
        with self._lock:
            heapq.heappush(self._heap, (timer.when, next(self._sequence), timer))
        return timer

    def call_later(
        self, delay: float, callback: Callable[[], None], *, owner: Hashable | None = None
    ) -> Timer:
        if delay < 0:
            raise ValueError(f"delay must not be negative, not {delay:g}")
        return self.call_at(self.now + delay, callback, owner=owner)

    def run(self, until: float | None = None, *, workers: int = 1) -> int:
        """Run every timer due at or before `until` (None: until none is left), then set
        the clock to `until`; the number of timers run. A timer's exception stops the
        run (timers already running on other threads finish first) and is raised."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if until is not None and until < self._frontier:
            raise ValueError(f"cannot run until {until:g}: the clock is at {self._frontier:g}")
        count = self._run_serial(until) if workers == 1 else self._run_parallel(until, workers)
        if until is not None:
            self._frontier = max(self._frontier, until)
        return count

    def _next(self, until: float | None) -> Timer | None:
        """Pop the earliest live timer due by `until`; the lock is held by the caller."""
        while self._heap:
            when, _, timer = self._heap[0]
            if until is not None and when > until:
                return None
            heapq.heappop(self._heap)
            if not timer.cancelled:
                return timer
        return None

    def _fire(self, timer: Timer) -> None:
        self._local.now = timer.when
        try:
            timer.callback()
        finally:
            self._local.now = None

    def _run_serial(self, until: float | None) -> int:
        count = 0
        while True:
            with self._lock:
                timer = self._next(until)
                if timer is None:
                    return count
                self._frontier = max(self._frontier, timer.when)
            self._fire(timer)
            count += 1

    def _run_parallel(self, until: float | None, workers: int) -> int:
        count = 0
        busy: set[Hashable] = set()
        deferred: dict[Hashable, list[Timer]] = {}
        running: dict[Future[None], Timer] = {}
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gitprov-clock") as pool:
            while True:
                with self._lock:
                    while failure is None and len(running) < workers:
                        timer = self._next(until)
                        if timer is None:
                            break
                        if timer.owner is not None and timer.owner in busy:
                            deferred.setdefault(timer.owner, []).append(timer)
                            continue
                        if timer.owner is not None:
                            busy.add(timer.owner)
                        self._frontier = max(self._frontier, timer.when)
                        running[pool.submit(self._fire, timer)] = timer
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                with self._lock:
                    for future in done:
                        timer = running.pop(future)
                        count += 1
                        if future.exception() is not None and failure is None:
                            failure = future.exception()
                        if timer.owner is not None:
                            busy.discard(timer.owner)
                            for later in deferred.pop(timer.owner, []):
                                heapq.heappush(
                                    self._heap, (later.when, next(self._sequence), later)
                                )
        with self._lock:
            for timers in deferred.values():
                for later in timers:
                    heapq.heappush(self._heap, (later.when, next(self._sequence), later))
        if failure is not None:
            raise failure
        return count
