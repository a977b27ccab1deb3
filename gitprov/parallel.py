"""Work spread over forked processes: the second core of a 2-core publisher.

A job is set before the fork, so it reaches the workers without pickling (an inventory,
a compiler, a repository's blobs); only the parts (lists of indexes) and the results
travel through a pipe. A part a worker fails on is done again in this process, which
raises what it raises (an error of gitprov's loses its hint and place in a pickle).

`Ahead` is the other shape: one forked process works down a list while this one goes
on with its own work, and this one takes each result if it has arrived (else does that
item itself); or, with `rest`, works up the list from its end until the two meet."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from types import TracebackType
from typing import Generic, TypeVar, cast

_T = TypeVar("_T")
_K = TypeVar("_K", bound=Hashable)
_JOB: Callable[[Sequence[int]], object] | None = None


class _Failed:
    """A part a worker could not do."""


def _work(part: Sequence[int]) -> object:
    assert _JOB is not None
    try:
        return _JOB(part)
    except BaseException:
        return _Failed()


def forked_map(
    job: Callable[[Sequence[int]], list[_T]], parts: Sequence[Sequence[int]], workers: int
) -> Iterator[list[_T]]:
    """job(part) for each part, in order, over `workers` forked processes. The caller
    checks `can_fork` first."""
    global _JOB
    _JOB = job
    try:
        with _signals_held():
            pool = multiprocessing.get_context("fork").Pool(workers, _worker_signals)
        with pool:
            for part, result in zip(parts, pool.imap(_work, parts), strict=True):
                yield job(part) if isinstance(result, _Failed) else cast(list[_T], result)
    finally:
        _JOB = None


def parts(count: int, workers: int, minimum: int) -> list[range]:
    """Consecutive ranges of indexes covering `count` items: about eight a worker (one
    slow part does not keep the others waiting), each of at least `minimum` items (a
    part's trip through the pipe is worth its work)."""
    size = max(minimum, count // (workers * 8), 1)
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


def _worker_signals() -> None:
    """A forked worker's signals: SIGTERM kills it (the pool stops its workers so once the
    work is done; a handler inherited from this process, a watcher's or a test runner's,
    would only take note, and a worker waiting for the lock of the task queue, which a
    stopped sibling still held, would keep the pool's join waiting for ever), and Ctrl-C
    is this process's to handle, not each worker's."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)


# Held from the fork until the worker's own handlers are set (see _worker_signals): a
# SIGTERM arriving before (a pool stopped as soon as its work is done, while a worker is
# still starting) went to the handler inherited from this process, which only took note,
# and the pool's join waited for ever on a worker blocked on its task queue's lock.
_HELD = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Processes forked in this block start with SIGTERM and SIGINT held back."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def can_fork() -> bool:
    """Whether forking is safe here: a fork copies no thread but every lock they hold."""
    return threading.active_count() == 1


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Ahead(Generic[_K, _T]):
    """job(key) for each of `keys`, in order, in one forked process started now: `get`
    gives a result once it has arrived, and None before (or when the process failed or
    stopped): the caller then does that item itself, so a result never depends on the
    process. Used as a context manager: leaving it stops the process. The caller checks
    `can_fork` first; the job must not use what this process goes on using (a
    repository's open files: open another)."""

    def __init__(self, job: Callable[[_K], _T], keys: Sequence[_K]) -> None:
        ctx = multiprocessing.get_context("fork")
        self._job = job
        self._keys = list(keys)
        self._got: dict[_K, _T] = {}
        self._recv, send = ctx.Pipe(duplex=False)
        count = len(self._keys)
        # Shared with the process: which items each side took (see `rest`).
        self._claimed = ctx.RawArray("b", max(count, 1))
        self._started = ctx.RawArray("b", max(count, 1))

        def run() -> None:  # in the forked process
            _worker_signals()
            self._recv.close()
            try:
                for i in range(count):
                    # Checked before it is marked started, never after: of an item both
                    # sides reach at once, at least one does it (maybe both: the same
                    # result), whatever order the two processes see each other's marks in.
                    if self._claimed[i]:
                        break
                    self._started[i] = 1
                    send.send((i, job(self._keys[i])))
            except BaseException:  # this process does the rest itself
                pass
            finally:
                send.close()

        self._process = ctx.Process(target=run, daemon=True)
        with _signals_held():
            self._process.start()
        send.close()
        self._open = True

    def get(self, key: _K, *, wait: bool = False) -> _T | None:
        """The result for `key` if it has arrived (each is given once), else None; with
        `wait`, once it arrives (None if the process fails or stops before)."""
        while self._open and (self._recv.poll() or (wait and key not in self._got)):
            try:
                i, value = self._recv.recv()
            except (EOFError, OSError):
                self._open = False
                break
            self._got[self._keys[i]] = value
        return self._got.pop(key, None)

    def rest(self) -> dict[_K, _T | None]:
        """Every item's result, those the process has not started done here, from the
        last back until the two meet: this process's wait for the other becomes work
        shared over two cores. None for an item whose job failed here, or that the
        process started and then failed or stopped on. Called once, after which `get`
        has nothing more."""
        count = len(self._keys)
        mine: dict[int, _T | None] = {}
        for j in reversed(range(count)):
            self._drain()
            if self._keys[j] in self._got:
                break  # (the process works in order: it did all before this one)
            self._claimed[j] = 1
            if self._started[j]:
                break
            try:
                mine[j] = self._job(self._keys[j])
            except Exception:
                mine[j] = None
        out: dict[_K, _T | None] = {}
        for i, key in enumerate(self._keys):
            if i in mine:
                out[key] = mine[i]
                continue
            got = self.get(key, wait=True)
            if got is None and not self._open:
                # (the process stopped short of it: done here, as `get`'s caller would)
                try:
                    got = self._job(key)
                except Exception:
                    got = None
            out[key] = got
        return out

    def _drain(self) -> None:
        while self._open and self._recv.poll():
            try:
                i, value = self._recv.recv()
            except (EOFError, OSError):
                self._open = False
                break
            self._got[self._keys[i]] = value

    def close(self) -> None:
        self._open = False
        self._recv.close()
        if self._process.is_alive():
            self._process.kill()
        self._process.join()

    def __enter__(self) -> Ahead[_K, _T]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
