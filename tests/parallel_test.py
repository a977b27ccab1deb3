"""Parsing and checking a whole inventory over forked workers gives what one process
gives: the same documents, the same problems, on every hostile input of the corpus."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gitprov import inventory, parallel, validate
from gitprov.catalog import load_catalog
from gitprov.errors import Problem
from gitprov.inventory import Documents, ParseCache, read_documents
from gitprov.validate import Options, SchemaCache
from tests.rules.lint import MemorySource
from tests.validate_test import MISTAKES

CORPUS = Path(__file__).parent / "corpus"


def _corpus_inventory() -> dict[str, bytes]:
    """The corpus's base with every case's files on it: device files under a name of
    their case (so none hides another), the other files as the cases have them."""
    files: dict[str, bytes] = {}
    for case in sorted(CORPUS.iterdir()):
        top = case / "tree" / "inventory"
        if not top.is_dir():
            continue
        for p in sorted(top.rglob("*")):
            if not p.is_file() or p.is_symlink():
                continue
            rel = p.relative_to(top).as_posix()
            if rel.startswith("devices/") and not case.name.startswith("_"):
                rel = f"devices/{case.name}-{p.name}"
            files[rel] = p.read_bytes()
    # And validate_test's many mistakes at once: schema errors where a rule would say
    # something too (a rule stays silent on a place the schema flagged).
    for path, text in MISTAKES.items():
        rel = path.removeprefix("inventory/")
        if rel.startswith("devices/"):
            rel = f"devices/mistakes-{rel.removeprefix('devices/')}"
        files[rel] = text.encode()
    # A URL the schema refuses (its scheme) and the Profile Rule's parser would too: only
    # the schema's problem is reported, the rule sees the place flagged.
    fleet = files["gitprov.yaml"].decode()
    files["gitprov.yaml"] = re.sub(
        r"(?m)^  url: .*$", '  url: "ftp://prov.example.com"', fleet
    ).encode()
    return files


def _run(
    files: dict[str, bytes], workers: int, strict: bool
) -> tuple[Documents, dict[str, tuple[Problem, ...]], list[Problem]]:
    source = MemorySource(files)
    cache = ParseCache()
    cache.workers = workers
    docs, read = read_documents(source, cache)
    checks = SchemaCache()
    checks.workers = workers
    extra = [p for found in read.values() for p in found]
    found = validate.validate(docs, load_catalog(), Options(strict=strict), None, extra, checks)
    return docs, read, found


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every inventory a worker pool (each part a file or two); the pools that ran."""
    monkeypatch.setattr(inventory, "PARSE_PARALLEL_MIN", 1)
    monkeypatch.setattr(inventory, "PARSE_CHUNK_MIN", 1)
    monkeypatch.setattr(validate, "CHECK_PARALLEL_MIN", 1)
    monkeypatch.setattr(validate, "CHECK_CHUNK_MIN", 1)
    pools: list[int] = []

    def counted(job: Any, parts: Sequence[Sequence[int]], n: int) -> Iterator[Any]:
        pools.append(len(parts))
        return parallel.forked_map(job, parts, n)

    monkeypatch.setattr(inventory, "forked_map", counted)
    monkeypatch.setattr(validate, "forked_map", counted)
    return pools


@pytest.mark.parametrize("strict", [False, True])
def test_two_workers_read_and_check_what_one_does(forks: list[int], strict: bool) -> None:
    files = _corpus_inventory()
    assert len(files) > 100
    one = _run(files, 1, strict)
    assert forks == []
    two = _run(files, 2, strict)
    assert len(forks) == 2 and min(forks) > 10  # the parse, then the checks, in parts
    docs_one, read_one, found_one = one
    docs_two, read_two, found_two = two
    assert docs_one.kinds() == docs_two.kinds()
    for kind in docs_one.kinds():
        assert docs_one.of(kind) == docs_two.of(kind)
    assert read_one == read_two
    assert found_one == found_two
    # Hostile files: errors of reading, of the schema and of single-document rules.
    codes = {p.code for p in found_one}
    assert {"GP001", "GP002", "GP003"} <= codes


def test_a_kept_snapshot_is_not_checked_again_in_workers(forks: list[int]) -> None:
    files = _corpus_inventory()
    source = MemorySource(files)
    cache = ParseCache()
    docs, read = read_documents(source, cache)
    checks = SchemaCache()
    extra = [p for found in read.values() for p in found]
    validate.validate(docs, load_catalog(), Options(), None, extra, checks)
    ran = len(forks)
    # The indexes are up to date: a second validation derives what changed, here.
    validate.validate(docs, load_catalog(), Options(), None, extra, checks)
    assert len(forks) == ran


def _all_of(ahead: parallel.Ahead[int, int], keys: Sequence[int]) -> dict[int, int]:
    """Each result as it arrives (the process works at its own pace)."""
    got: dict[int, int] = {}
    for _ in range(500):
        for k in keys:
            if k not in got:
                v = ahead.get(k)
                if v is not None:
                    got[k] = v
        if len(got) == len(keys):
            break
        ahead._recv.poll(0.01)
    return got


def test_ahead_gives_each_result_once_as_the_job_made_it() -> None:
    keys = [5, 3, 9, 1]
    with parallel.Ahead(lambda k: k * k, keys) as ahead:
        assert _all_of(ahead, keys) == {5: 25, 3: 9, 9: 81, 1: 1}
        assert ahead.get(5) is None  # given once: the caller keeps it
        assert ahead.get(7) is None  # never asked for


def test_after_a_failing_item_ahead_has_nothing_more_and_the_caller_does_the_rest() -> None:
    def job(k: int) -> int:
        if k == 2:
            raise ValueError("this one fails")
        return -k

    with parallel.Ahead(job, [1, 2, 3]) as ahead:
        ahead._process.join(10)
        assert not ahead._process.is_alive()
        assert ahead.get(1) == -1
        assert ahead.get(2) is None and ahead.get(3) is None


def test_rest_shares_the_items_left_with_the_process_and_gives_every_result() -> None:
    """This process works up from the last item while the other works down: each
    item's result is there, some made here and some there."""
    here = os.getpid()
    done_here: list[int] = []

    def job(k: int) -> int:
        time.sleep(0.05)
        if os.getpid() == here:
            done_here.append(k)
        return k * k

    keys = list(range(20))
    with parallel.Ahead(job, keys) as ahead:
        got = ahead.rest()
    assert got == {k: k * k for k in keys}
    assert done_here and len(done_here) < len(keys)
    # From the last item back, without a gap: the process did the first ones.
    assert sorted(done_here) == keys[len(keys) - len(done_here) :]


def test_rest_does_what_the_process_failed_or_stopped_on() -> None:
    here = os.getpid()

    def job(k: int) -> int:
        if os.getpid() != here and k == 2:
            raise ValueError("this one fails there")
        if os.getpid() != here and k > 2:
            time.sleep(30)  # (never: the process stopped at 2)
        return -k

    with parallel.Ahead(job, [1, 2, 3, 4]) as ahead:
        ahead._process.join(10)
        assert ahead.rest() == {1: -1, 2: -2, 3: -3, 4: -4}

    def fails_here(k: int) -> int:
        if os.getpid() == here:
            raise ValueError("and here")
        time.sleep(30)
        return k

    with parallel.Ahead(fails_here, [1, 2]) as ahead:
        ahead._process.kill()
        ahead._process.join(10)
        assert ahead.rest() == {1: None, 2: None}  # (the caller makes its own)


def test_leaving_ahead_stops_its_process() -> None:
    def slow(k: int) -> int:
        import time

        time.sleep(30)
        return k

    with parallel.Ahead(slow, [1]) as ahead:
        process = ahead._process
        assert process.is_alive()
    assert not process.is_alive()
    assert ahead.get(1) is None


def test_forked_workers_die_on_sigterm_whatever_handler_this_process_has() -> None:
    # The pool stops its workers with SIGTERM: a handler inherited from the parent (a
    # watcher's, pytest-xdist's) that only takes note would leave a worker blocked on the
    # task queue's lock, and the pool's join waiting for ever.
    import signal

    def handlers() -> tuple[object, object]:
        return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    old = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        got = [
            r for rs in parallel.forked_map(lambda _: [handlers()], [[0], [1], [2]], 2) for r in rs
        ]
        with parallel.Ahead(lambda _: handlers(), [0]) as ahead:
            ahead._process.join(10)
            got.append(ahead.get(0) or ("nothing arrived", None))
    finally:
        signal.signal(signal.SIGTERM, old)
    assert got == [(signal.SIG_DFL, signal.SIG_IGN)] * 4


def test_a_sigterm_before_a_workers_own_handlers_are_set_still_stops_it() -> None:
    """A pool stopped while a worker is still starting: the SIGTERM it sends arrives
    before the worker's own handlers are set. It must not go to the handler inherited
    from this process (which only takes note): the worker would live on, blocked on the
    task queue's lock, and the pool's join would wait for ever (seen in a test run)."""
    import multiprocessing
    import signal

    def starting() -> None:  # what a worker does before its initializer has run
        os.kill(os.getpid(), signal.SIGTERM)
        parallel._worker_signals()

    old = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        process = multiprocessing.get_context("fork").Process(target=starting)
        with parallel._signals_held():
            process.start()
        process.join(30)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert process.exitcode == -signal.SIGTERM
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


@pytest.mark.parametrize(
    ("count", "workers", "minimum"), [(0, 2, 250), (1, 2, 250), (5000, 2, 250), (999, 4, 7)]
)
def test_parts_cover_every_index_once_in_order(count: int, workers: int, minimum: int) -> None:
    chunks = parallel.parts(count, workers, minimum)
    assert [i for r in chunks for i in r] == list(range(count))
    assert all(len(r) >= minimum for r in chunks[:-1])
    assert len(chunks) <= max(1, workers * 8 + 1)
