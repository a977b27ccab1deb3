"""Work spread over forked processes: the second core of a 2-core publisher.

A job is set before the fork, so it reaches the workers without pickling (an inventory,
a compiler, a repository's blobs); only the parts (lists of indexes) and the results
travel through a pipe. A part a worker fails on is done again in this process, which
raises what it raises (an error of gitprov's loses its hint and place in a pickle)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar, cast

_T = TypeVar("_T")
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
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for part, result in zip(parts, pool.imap(_work, parts), strict=True):
                yield job(part) if isinstance(result, _Failed) else cast(list[_T], result)
    finally:
        _JOB = None


def can_fork() -> bool:
    """Whether forking is safe here: a fork copies no thread but every lock they hold."""
    return threading.active_count() == 1


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
