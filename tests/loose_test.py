"""A loose object cut short: libgit2 1.9 loops for ever on one (libgit2 issue 7342), so
gitprov finds it first. Each command here runs in a process of its own under a timeout:
a hang is a failure, not a suite that never ends."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pygit2
import pytest

from gitprov import loose
from gitprov.errors import UsageError
from tests.fixtures.gitrepo import GitRepo

DEVICE = "inventory/devices/0021f2011b19.yaml"


def _object_file(repo: GitRepo, oid: str) -> Path:
    return repo.path / ".git" / "objects" / oid[:2] / oid[2:]


def _cut(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(data[:keep])


def _gitprov(repo: GitRepo, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "gitprov", "--repo", str(repo.path), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=repo.path.parent,
    )


@pytest.mark.parametrize("what", ["a device's blob", "the commit"])
@pytest.mark.parametrize("keep", [2, 20, -1])
def test_a_loose_object_cut_short_is_a_damaged_repository_not_a_hang(
    example_repo: GitRepo, what: str, keep: int
) -> None:
    repo = example_repo.repo
    head = repo.head.peel(pygit2.Commit)
    oid = str(head.tree[DEVICE].id) if what == "a device's blob" else str(head.id)
    path = _object_file(example_repo, oid)
    size = path.stat().st_size
    _cut(path, keep if keep > 0 else size - 1)
    got = _gitprov(example_repo, "validate")
    assert got.returncode == 2, got
    assert f"the repository cannot read object {oid} (a loose object)" in got.stderr
    assert "cut short" in got.stderr and "git fsck" in got.stderr
    assert "Traceback" not in got.stderr


def test_whole_objects_are_checked_once_then_by_their_size_and_mtime(
    example_repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second process reads no whole object again (the list in gitprov-cache), but an
    object changed since it was listed is read again: the list hides no damage."""
    cache = example_repo.path / ".git" / "gitprov-cache"
    repo = pygit2.Repository(str(example_repo.path))
    inflated: list[str] = []
    real = loose._whole

    def counted(path: str) -> bool:
        inflated.append(path)
        return real(path)

    monkeypatch.setattr(loose, "_whole", counted)
    loose._CHECKED.clear()
    loose.check(repo, cache)
    count = sum(1 for p in (example_repo.path / ".git" / "objects").glob("??/*"))
    assert len(inflated) == count > 10
    listed = (cache / loose.LISTED).read_text().splitlines()
    assert len(listed) == count + 1
    loose._CHECKED.clear()  # (as a fresh process)
    inflated.clear()
    loose.check(repo, cache)
    assert inflated == []
    blob = str(repo.head.peel(pygit2.Commit).tree[DEVICE].id)
    path = _object_file(example_repo, blob)
    _cut(path, 10)
    loose._CHECKED.clear()
    with pytest.raises(UsageError, match="cut short"):
        loose.check(repo, cache)
    assert inflated == [str(path)]


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (zlib.compress(b"blob 5\0hello"), True),
        (zlib.compress(b"blob 5\0hello")[:-1], False),
        (zlib.compress(b"blob 5\0hello")[:2], False),
        (b"x", False),
        (b"", False),
        # A stream of zeros, inflated a step at a time (50 MB from 50 kB).
        (zlib.compress(b"\0" * 50_000_000, 9), True),
        (zlib.compress(b"\0" * 50_000_000, 9)[:-10], False),
        # Bytes that inflate to something and never end: libgit2 loops on them as well.
        (zlib.compress(b"blob 5\0hello")[:4] + b"\xff" * 20, False),
        # Not zlib (git's format before 2006), or a stream zlib refuses: libgit2 refuses
        # those with an error, no hang; left to it.
        (b"\x00\x01not zlib at all", True),
        (zlib.compress(b"blob 5\0hello")[:2] + b"\x07" * 20, True),
    ],
)
def test_a_stream_is_whole_when_it_ends(tmp_path: Path, data: bytes, whole: bool) -> None:
    path = tmp_path / "obj"
    path.write_bytes(data)
    assert loose._whole(str(path)) is whole


@pytest.mark.parametrize("what", ["a device's blob", "the commit"])
def test_a_fifo_in_an_objects_place_is_a_damaged_repository_not_a_hang(
    example_repo: GitRepo, what: str
) -> None:
    """Opening a fifo waits for a writer: the check's open of it, and libgit2's, hung the
    command for ever."""
    head = example_repo.repo.head.peel(pygit2.Commit)
    oid = str(head.tree[DEVICE].id) if what == "a device's blob" else str(head.id)
    path = _object_file(example_repo, oid)
    path.unlink()
    os.mkfifo(path)
    got = _gitprov(example_repo, "validate")
    assert got.returncode == 2, got
    assert f"the repository cannot read object {oid} (a loose object)" in got.stderr
    assert "is a fifo, not a file" in got.stderr and "git fsck" in got.stderr
    assert "Traceback" not in got.stderr


def test_a_loose_object_no_commit_needs_cut_short_is_refused_with_the_way_out(
    example_repo: GitRepo,
) -> None:
    """A blob of a `git add` the disk cut short, which no commit names: refused all the
    same (which objects libgit2 reads is not known before it hangs on one), and the hint
    says how to tell so (git fsck names no missing object) and what then: delete it."""
    oid = str(example_repo.repo.create_blob(os.urandom(5000)))
    path = _object_file(example_repo, oid)
    _cut(path, 100)
    got = _gitprov(example_repo, "validate")
    assert got.returncode == 2 and f"cannot read object {oid} (a loose object)" in got.stderr
    assert "git fsck --full" in got.stderr and "nothing needs it: delete the file" in got.stderr
    fsck = subprocess.run(
        ["git", "-C", str(example_repo.path), "fsck", "--full"], capture_output=True, text=True
    )
    assert oid in fsck.stderr and f"missing blob {oid}" not in fsck.stdout + fsck.stderr
    path.unlink()
    assert _gitprov(example_repo, "validate").returncode == 0


def test_the_watchers_read_of_a_moved_branch_finds_a_loose_object_cut_short(
    example_repo: GitRepo,
) -> None:
    """The watcher reads the branch afresh at each poll: once it moved (a push, a fetch,
    which leave loose objects), an object cut short is an error the watcher reports
    (Watcher._head), trying again at the next poll, not a hang."""
    from gitprov import watch

    loose._CHECKED.clear()
    watch._LOOKED_AT.clear()
    head = str(example_repo.repo.head.target)
    _cut(_object_file(example_repo, head), 5)
    for _ in range(2):  # (and again at the next poll)
        with pytest.raises(UsageError, match="cut short"):
            watch.resolve_branch(example_repo.path, "main")


def test_a_linked_work_tree_reads_the_objects_of_its_repository(
    example_repo: GitRepo, tmp_path: Path
) -> None:
    """`git worktree add`: the work tree's git directory (.git/worktrees/NAME) holds no
    objects; the check looked there, found none, and the command hung."""
    linked = tmp_path / "linked"
    subprocess.run(
        ["git", "-C", str(example_repo.path), "worktree", "add", "-q", str(linked), "-b", "w"],
        check=True,
    )
    head = example_repo.repo.head.peel(pygit2.Commit)
    blob = str(head.tree[DEVICE].id)
    _cut(_object_file(example_repo, blob), 20)
    got = subprocess.run(
        [sys.executable, "-m", "gitprov", "--repo", str(linked), "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert got.returncode == 2 and "cut short" in got.stderr, got
