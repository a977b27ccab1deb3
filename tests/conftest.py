from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from tests.fixtures.gitrepo import ROOT, GitRepo, demo_private_key, example_files

# Hypothesis keeps its examples and what it reads of the tests' sources in `.hypothesis/`
# of the directory it runs in, the checkout, from when the test modules are collected:
# a directory of this process's own instead, gone with it.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="gitprov-tests-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)


@pytest.fixture
def example_repo(tmp_path: Path) -> GitRepo:
    """A repository whose first commit on main is this project's example inventory."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit(example_files(), "example inventory", worktree=True)
    return repo


@pytest.fixture
def private_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = demo_private_key()
    monkeypatch.setenv("GITPROV_PRIVATE_KEY", key)
    monkeypatch.delenv("GITPROV_PRIVATE_KEY_FILE", raising=False)
    return key


# Caches tools keep beside the sources; anything else a test leaves in the checkout is a
# test writing outside its tmp_path.
CACHES = (".venv/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/")


def _checkout_status() -> set[str] | None:
    """Every untracked, ignored or modified path of this checkout, or None outside git."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--ignored", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    paths = {line[3:] for line in done.stdout.splitlines()}
    return {
        p
        for p in paths
        if not p.startswith(CACHES) and "__pycache__/" not in p and not p.endswith(".pyc")
    }


@pytest.fixture(scope="session", autouse=True)
def checkout_left_as_found() -> Iterator[None]:
    """The whole suite leaves no new file in the checkout (reported at the end)."""
    before = _checkout_status()
    yield
    after = _checkout_status()
    if before is not None and after is not None:
        new = sorted(after - before)
        assert not new, f"tests left files in the checkout (write under tmp_path): {new}"


# -- tests that measure wall time run alone ----------------------------------------------
# The suite runs on every core (pytest-xdist, `-n auto` in pyproject's addopts). A test
# marked `alone` bounds wall time, which a neighbour on the other core would stretch: it
# takes an exclusive lock that every other test holds shared from its setup (module
# fixtures included) to its teardown, so under -n the other workers finish their current
# test and wait. The turnstile keeps the shared holders from starving a waiting exclusive
# one (flock has no writer preference).
def _flock(path: Path, mode: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, mode)
    return fd


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    basetemp = item.config.option.basetemp
    if "PYTEST_XDIST_WORKER" not in os.environ or not basetemp:
        return (yield)
    # xdist gives each worker a base temporary directory inside the run's own one.
    run = Path(basetemp).parent
    alone = item.get_closest_marker("alone") is not None
    gate = _flock(run / "alone.turnstile", fcntl.LOCK_EX)
    try:
        room = _flock(run / "alone.room", fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
    finally:
        if not alone:
            os.close(gate)  # closing the descriptor releases its lock
    try:
        return (yield)
    finally:
        os.close(room)
        if alone:
            os.close(gate)


# -- the longest files start first -------------------------------------------------------
# Under -n the suite can end no sooner than its longest file (loadfile keeps a file on
# one worker): files with a `slow(seconds=N)` test go first, longest first, so the other
# workers fill the time with the many short files instead of waiting at the end for one
# long file started late. Within a file, and among the others, the order is unchanged.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    weight: dict[str, float] = {}
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is not None:
            seconds = float(marker.kwargs.get("seconds", 0))
            weight[item.path.as_posix()] = max(weight.get(item.path.as_posix(), 0), seconds)
    items.sort(key=lambda item: -weight.get(item.path.as_posix(), -1))
