"""The watch loop without the CLI: hints, re-resolving, coalescing, skipping invalid
commits, retries, reconcile (drift), resume after a crash, remote mirrors, observers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitprov.app import Session
from gitprov.errors import GitprovError, UsageError
from gitprov.metrics import Metrics
from gitprov.pipeline import Build, Pipeline
from gitprov.plan import load_manifest
from gitprov.publish import Targets, publish
from gitprov.publisher_config import PublisherConfig
from gitprov.status import JsonLog, StatusFile
from gitprov.watch import (
    CommitPublisher,
    Kind,
    LocalBranch,
    Outcome,
    RemoteBranch,
    Watcher,
    WatchOptions,
    check_branch,
)
from tests.fixtures.gitrepo import GitRepo, example_files
from tests.fixtures.roots import commit_publisher
from tests.fixtures.signing import SignedRepo, allowed_signers, ssh_key

DEVICE = "inventory/devices/0021f2011b20.yaml"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git (Debian: git)")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A Publisher that records what it was asked and answers from a script."""

    def __init__(self, kinds: list[Kind | str] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.kinds = list(kinds or [])
        self.reconciles = 0

    def publish(self, repo: pygit2.Repository, commit: pygit2.Commit, trigger: str) -> Outcome:
        self.calls.append((str(commit.id), trigger))
        kind = self.kinds.pop(0) if self.kinds else Kind.PUBLISHED
        if kind == "raise":
            raise RuntimeError("boom")
        return Outcome(Kind(kind), str(commit.id), f"{kind} {commit.id}", trigger=trigger)

    def reconcile(self) -> Outcome | None:
        self.reconciles += 1
        return None


def rename(repo: GitRepo, name: str) -> str:
    text = repo.files[DEVICE].replace(
        b"display_name: Meeting room", f"display_name: {name}".encode()
    )
    return repo.commit({DEVICE: text}, f"rename to {name}")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@needs_git
def test_gc_deleting_a_loose_ref_is_not_a_branch_deletion(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    first = repo.commit(example_files(), "example")
    rec = Recorder()
    w = Watcher(LocalBranch(repo.path, "main", inotify=False), rec, clock=Clock())
    assert w.step() is True
    assert rec.calls == [(first, "push")]

    git("pack-refs", "--all", "--prune", cwd=repo.path)
    git("gc", "--quiet", cwd=repo.path)
    assert not (repo.path / "refs" / "heads" / "main").exists()  # only in packed-refs now
    assert w.step() is False
    assert rec.calls == [(first, "push")]

    second = rename(repo, "Board room")
    assert w.step() is True
    assert rec.calls[-1] == (second, "push")

    # A deleted branch publishes nothing (and unpublishes nothing).
    repo.repo.references.delete("refs/heads/main")
    assert w.step() is False
    assert len(rec.calls) == 2


def test_a_missing_branch_is_reported_once_and_its_return_is_published(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    first = repo.commit(example_files(), "example")
    rec = Recorder()
    seen: list[Outcome] = []
    w = Watcher(
        LocalBranch(repo.path, "main", inotify=False), rec, observers=[seen.append], clock=Clock()
    )
    assert w.step() is True
    repo.repo.references.delete("refs/heads/main")
    for _ in range(3):
        assert w.step() is False
    gone = [o for o in seen if o.kind is Kind.FETCH_FAILED]
    assert len(gone) == 1
    assert "no branch main of" in gone[0].message
    assert f"{first[:12]} stays served" in gone[0].message
    assert rec.calls == [(first, "push")]  # nothing unpublished

    repo.repo.references.create("refs/heads/main", first)
    second = rename(repo, "Board room")
    assert w.step() is True
    assert rec.calls[-1] == (second, "push")
    # Gone again: told again (the report is once per spell, not once per process).
    repo.repo.references.delete("refs/heads/main")
    w.step()
    assert len([o for o in seen if o.kind is Kind.FETCH_FAILED]) == 2


def test_a_branch_not_there_yet_says_nothing_is_published(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    seen: list[Outcome] = []
    w = Watcher(
        LocalBranch(repo.path, "main", inotify=False),
        Recorder(),
        observers=[seen.append],
        clock=Clock(),
    )
    assert w.step() is False
    assert [o.kind for o in seen] == [Kind.FETCH_FAILED]
    assert "nothing is published" in seen[0].message


@needs_git
def test_inotify_on_refs_wakes_the_loop_and_gc_is_only_a_hint(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(example_files(), "example")
    source = LocalBranch(repo.path, "main", inotify=True, debounce=0.05)
    stop = threading.Event()
    try:
        started = time.monotonic()
        source.wait(0.4, stop)
        assert time.monotonic() - started >= 0.35  # nothing happened: a full wait

        new: list[str] = []
        timer = threading.Timer(0.3, lambda: new.append(rename(repo, "Board room")))
        timer.start()
        started = time.monotonic()
        source.wait(20, stop)
        waited = time.monotonic() - started
        timer.join()
        assert waited < 5, waited
        found = source.head()
        assert found is not None and str(found[1].id) == new[0]

        git("pack-refs", "--all", "--prune", cwd=repo.path)
        source.wait(5, stop)
        found = source.head()
        assert found is not None and str(found[1].id) == new[0]
    finally:
        source.close()


def test_a_burst_of_commits_publishes_the_newest_only(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(example_files(), "example")
    rec = Recorder()
    w = Watcher(LocalBranch(repo.path, "main", inotify=False), rec, clock=Clock())
    w.step()
    heads = [rename(repo, f"Room {i}") for i in range(10)]
    assert w.step() is True
    assert w.step() is False
    assert [c for c, _ in rec.calls[1:]] == [heads[-1]]


def test_a_burst_ending_on_an_invalid_commit_publishes_the_newest_valid_one(
    tmp_path: Path,
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    first = repo.commit(example_files(), "example")
    rec = Recorder([Kind.PUBLISHED, Kind.INVALID, Kind.INVALID, Kind.PUBLISHED])
    w = Watcher(LocalBranch(repo.path, "main", inotify=False), rec, clock=Clock())
    w.step()
    good, bad1, bad2 = (rename(repo, name) for name in ("Good", "Bad 1", "Bad 2"))
    assert w.step() is True
    assert rec.calls == [
        (first, "push"),
        (bad2, "push"),
        (bad1, "fallback"),
        (good, "fallback"),
    ]


def test_the_fallback_stops_at_the_last_commit_handled(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    first = repo.commit(example_files(), "example")
    rec = Recorder([Kind.PUBLISHED, Kind.INVALID, Kind.INVALID])
    w = Watcher(LocalBranch(repo.path, "main", inotify=False), rec, clock=Clock())
    w.step()
    bad1, bad2 = (rename(repo, name) for name in ("Bad 1", "Bad 2"))
    w.step()
    assert rec.calls == [(first, "push"), (bad2, "push"), (bad1, "fallback")]
    assert w.step() is False  # nothing new: the invalid head is not tried again


def test_a_failed_publish_is_retried_and_a_crash_in_the_publisher_is_survived(
    tmp_path: Path,
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    head = repo.commit(example_files(), "example")
    rec = Recorder(["raise", Kind.FAILED, Kind.PUBLISHED])
    clock = Clock()
    seen: list[Outcome] = []
    w = Watcher(
        LocalBranch(repo.path, "main", inotify=False),
        rec,
        WatchOptions(retry=30, reconcile=300),
        observers=[seen.append],
        clock=clock,
    )
    w.step()
    assert seen[0].kind is Kind.FAILED and "internal error: RuntimeError: boom" in seen[0].message
    clock.now += 10
    w.step()
    assert len(rec.calls) == 1  # not yet
    clock.now += 25
    w.step()
    clock.now += 31
    w.step()
    clock.now += 31
    w.step()
    assert rec.calls == [(head, "push"), (head, "retry"), (head, "retry")]
    assert [o.kind for o in seen] == [Kind.FAILED, Kind.FAILED, Kind.PUBLISHED]


@pytest.fixture
def served(example_repo: GitRepo, private_key: str, tmp_path: Path) -> tuple[GitRepo, Targets]:
    return example_repo, Targets((tmp_path / "http", tmp_path / "tftp"), tmp_path / "state")


def build_of(repo: GitRepo, key: str, rev: str) -> Build:
    commit = repo.repo.revparse_single(rev)
    assert isinstance(commit, pygit2.Commit)
    return Pipeline(repo.repo).build(commit, key)


def served_files(targets: Targets) -> dict[str, dict[str, bytes]]:
    return {r.name: {p.name: p.read_bytes() for p in sorted(r.iterdir())} for r in targets.roots}


def expected_files(build: Build, targets: Targets) -> dict[str, dict[str, bytes]]:
    files = {f.name: f.data for f in sorted(build.files, key=lambda f: f.name)}
    return {r.name: files for r in targets.roots}


def test_an_invalid_commit_is_reported_and_skipped_and_the_next_good_one_publishes(
    served: tuple[GitRepo, Targets], private_key: str, tmp_path: Path
) -> None:
    repo, t = served
    good1 = str(repo.repo.head.target)
    seen: list[Outcome] = []
    status = StatusFile(tmp_path / "status.json", "main")
    log_path = tmp_path / "log.jsonl"
    with log_path.open("w") as log_file:
        w = Watcher(
            LocalBranch(Path(repo.repo.path), "main", inotify=False),
            commit_publisher(repo, private_key, t),
            observers=[seen.append, status, JsonLog(log_file)],
            clock=Clock(),
        )
        w.step()
        assert served_files(t) == expected_files(build_of(repo, private_key, good1), t)

        bad = repo.commit({DEVICE: repo.files[DEVICE].replace(b'"2010"', b"2010")}, "bad")
        w.step()
        assert seen[-1].kind is Kind.INVALID and seen[-1].commit == bad
        assert any(p.file == DEVICE and p.line > 0 and p.is_error for p in seen[-1].problems)
        assert served_files(t) == expected_files(build_of(repo, private_key, good1), t)
        m = load_manifest(t.state_dir)
        assert m is not None and m.commit == good1
        state = json.loads((tmp_path / "status.json").read_text())
        assert state["commit"] == good1 and state["result"] == "invalid"
        assert state["last"]["commit"] == bad
        assert any(p["file"] == DEVICE and p["line"] for p in state["last"]["problems"])

        fixed = repo.files[DEVICE].replace(b": 2010", b': "2010"').replace(b"Meeting", b"Board")
        good2 = repo.commit({DEVICE: fixed}, "good again")
        w.step()
    done = seen[-1]
    assert done.kind is Kind.PUBLISHED and done.devices_changed == 1
    assert served_files(t) == expected_files(build_of(repo, private_key, good2), t)
    state = json.loads((tmp_path / "status.json").read_text())
    assert state["commit"] == good2 and state["result"] == "published"
    lines = [json.loads(ln) for ln in log_path.read_text().splitlines()]
    assert [(ln["result"], ln["commit"]) for ln in lines] == [
        ("published", good1),
        ("invalid", bad),
        ("published", good2),
    ]


def test_reconcile_restores_edited_and_deleted_files_and_counts_them(
    served: tuple[GitRepo, Targets], private_key: str
) -> None:
    repo, t = served
    clock = Clock()
    metrics = Metrics()
    seen: list[Outcome] = []
    w = Watcher(
        LocalBranch(Path(repo.repo.path), "main", inotify=False),
        commit_publisher(repo, private_key, t),
        WatchOptions(reconcile=60),
        observers=[seen.append, metrics],
        clock=clock,
    )
    w.step()
    w.step()
    assert [o.kind for o in seen] == [Kind.PUBLISHED, Kind.CLEAN]
    good = served_files(t)
    (t.roots[0] / "fv0021f2011b19.conf").unlink()  # (replaced: in place, both roots')
    (t.roots[0] / "fv0021f2011b19.conf").write_bytes(b"DBID_SIP_ENABLE=1\n")
    (t.roots[1] / "fv0021f2a0c001.conf").unlink()
    w.step()
    assert len(seen) == 2  # not due yet
    clock.now += 61
    w.step()
    assert seen[-1].kind is Kind.REPAIRED and seen[-1].trigger == "reconcile"
    assert sorted((d.name, d.kind) for d in seen[-1].drift) == [
        ("fv0021f2011b19.conf", "changed"),
        ("fv0021f2a0c001.conf", "deleted"),
    ]
    assert served_files(t) == good
    text = metrics.text()
    assert 'gitprov_drift_repairs_total{kind="changed"} 1.0' in text
    assert 'gitprov_drift_repairs_total{kind="deleted"} 1.0' in text
    assert 'gitprov_reconciles_total{result="repaired"} 1.0' in text


@pytest.mark.parametrize("watch_roots", [True, False])
def test_reconcile_restores_what_the_watch_on_the_roots_cannot_see(
    served: tuple[GitRepo, Targets], private_key: str, tmp_path: Path, watch_roots: bool
) -> None:
    """A served file written in place through a hard link from outside its root: no
    event in the root's watch (a publish on a push does not look at it), a stat the
    reconcile checks. Without the watch (`--no-inotify`), the next publish checks it."""
    repo, t = served
    clock = Clock()
    seen: list[Outcome] = []
    w = Watcher(
        LocalBranch(Path(repo.repo.path), "main", inotify=False),
        commit_publisher(repo, private_key, t, watch_roots=watch_roots),
        WatchOptions(reconcile=60),
        observers=[seen.append],
        clock=clock,
    )
    w.step()
    name = "fv0021f2011b19.conf"
    os.link(t.roots[0] / name, tmp_path / "outside")
    rename(repo, "Board room")
    w.step()
    good = served_files(t)
    repo.files[DEVICE] = repo.files[DEVICE].replace(b"Board room", b"Meeting room")
    with (tmp_path / "outside").open("r+b") as f:
        f.write(b"DBID")  # same size, new mtime
    rename(repo, "Board room 2")
    w.step()
    assert [o.kind for o in seen] == [Kind.PUBLISHED] * 3
    # The file of both roots (a publish links it into each): changed in both.
    if not watch_roots:
        assert [(d.name, d.kind) for d in seen[-1].drift] == [(name, "changed")] * 2
        assert all((r / name).read_bytes() == good[r.name][name] for r in t.roots)
        return
    assert (t.roots[0] / name).read_bytes().startswith(b"DBID")  # not seen by the watch
    clock.now += 61
    w.step()
    assert seen[-1].kind is Kind.REPAIRED and seen[-1].trigger == "reconcile"
    assert [(d.name, d.kind) for d in seen[-1].drift] == [(name, "changed")] * 2
    assert all((r / name).read_bytes() == good[r.name][name] for r in t.roots)


def test_restart_resumes_from_the_manifest_and_repairs_a_crash(
    served: tuple[GitRepo, Targets], private_key: str
) -> None:
    repo, t = served
    first = str(repo.repo.head.target)
    publish(build_of(repo, private_key, first), t)
    second = rename(repo, "Board room")
    new = build_of(repo, private_key, second)
    # A publish of `second` killed after staging every temp and renaming one of them.
    for root in t.roots:
        for f in new.files:
            (root / f".gitprov-{f.name}.deadbeef.tmp").write_bytes(f.data[:7])
    changed = next(f for f in new.files if f.mac == "0021f2011b20")
    (t.roots[0] / changed.name).write_bytes(changed.data)

    rec = Recorder()
    m = load_manifest(t.state_dir)
    assert m is not None and m.commit == first
    resumed = Watcher(
        LocalBranch(Path(repo.repo.path), "main", inotify=False),
        commit_publisher(repo, private_key, t),
        last=m.commit,
        clock=Clock(),
    )
    resumed.step()
    assert served_files(t) == expected_files(new, t)  # no temp file left either

    # Restarted again on the same head: nothing is published, a crash leftover is removed.
    (t.roots[1] / ".gitprov-x.conf.00000000.tmp").write_bytes(b"x")
    again = Watcher(
        LocalBranch(Path(repo.repo.path), "main", inotify=False),
        commit_publisher(repo, private_key, t),
        last=second,
        observers=[lambda o: rec.calls.append((o.commit, str(o.kind)))],
        clock=Clock(),
    )
    again.step()
    assert rec.calls == [(second, "clean")]
    assert served_files(t) == expected_files(new, t)


def test_remote_branch_fetches_into_a_mirror(tmp_path: Path) -> None:
    central = GitRepo(tmp_path / "central.git", bare=True)
    first = central.commit(example_files(), "example")
    source = RemoteBranch(tmp_path / "mirror.git", str(central.path), "main")
    found = source.head()
    assert found is not None and str(found[1].id) == first
    second = rename(central, "Board room")
    found = source.head()
    assert found is not None and str(found[1].id) == second
    assert (tmp_path / "mirror.git" / "HEAD").exists()
    # Reopening an existing mirror with another URL repoints it.
    RemoteBranch(tmp_path / "mirror.git", str(tmp_path / "elsewhere.git"), "main")
    url = pygit2.Repository(str(tmp_path / "mirror.git")).remotes["origin"].url
    assert url is not None and url.endswith("elsewhere.git")


def test_a_deleted_branch_names_the_commit_served_not_the_last_one_refused(
    tmp_path: Path,
) -> None:
    """After a head the publisher refused (a force-push, an unsigned commit), the roots
    still serve the commit before it: the report says so."""
    central = GitRepo(tmp_path / "central.git", bare=True)
    first = central.commit(example_files(), "example")
    seen: list[Outcome] = []
    source = RemoteBranch(tmp_path / "mirror.git", str(central.path), "main")
    w = Watcher(source, Recorder([Kind.PUBLISHED, Kind.REFUSED]), observers=[seen.append])
    assert w.step() is True
    refused = rename(central, "Board room")
    assert w.step() is True and seen[-1].kind is Kind.REFUSED
    central.repo.references.delete("refs/heads/main")
    assert w.step() is False
    assert f"{first[:12]} stays served" in seen[-1].message, seen[-1].message
    assert refused[:12] not in seen[-1].message


def test_a_branch_deleted_on_the_remote_is_reported_and_its_return_is_published(
    tmp_path: Path,
) -> None:
    """The mirror's copy of the branch goes with the remote's: a watcher that kept
    fetching nothing and serving the last commit would never say the branch was gone."""
    central = GitRepo(tmp_path / "central.git", bare=True)
    first = central.commit(example_files(), "example")
    rec = Recorder()
    seen: list[Outcome] = []
    source = RemoteBranch(tmp_path / "mirror.git", str(central.path), "main")
    w = Watcher(source, rec, observers=[seen.append], clock=Clock())
    assert w.step() is True
    central.repo.references.delete("refs/heads/main")
    for _ in range(3):
        assert w.step() is False
    gone = [o for o in seen if o.kind is Kind.FETCH_FAILED]
    assert len(gone) == 1, seen
    assert "no branch main of" in gone[0].message
    assert f"{first[:12]} stays served" in gone[0].message
    assert rec.calls == [(first, "push")]  # nothing unpublished
    # Back at the published commit: said once, and the status is no longer the failure.
    central.repo.references.create("refs/heads/main", first)
    assert w.step() is False
    assert [o.kind for o in seen[-2:]] == [Kind.FETCH_FAILED, Kind.UNCHANGED], seen
    assert "can be read again" in seen[-1].message and seen[-1].ok
    assert w.step() is False and len(seen) == len(gone) + 2
    second = rename(central, "Board room")
    assert w.step() is True
    assert rec.calls[-1] == (second, "push")


def test_a_failing_fetch_is_reported_once_and_the_loop_goes_on(tmp_path: Path) -> None:
    source = RemoteBranch(tmp_path / "mirror.git", str(tmp_path / "nowhere.git"), "main")
    with pytest.raises(GitprovError, match=r"fetch of main from .*nowhere\.git failed") as info:
        source.fetch()
    # (not libgit2's "unsupported URL protocol" of a path that is not there)
    assert "no such directory" in info.value.message, info.value.message
    # Nor of a path that is there but no directory: a file, a FIFO.
    (tmp_path / "file.git").write_text("")
    os.mkfifo(tmp_path / "fifo.git")
    for name in ("file.git", "fifo.git"):
        other = RemoteBranch(tmp_path / f"mirror-{name}", str(tmp_path / name), "main")
        with pytest.raises(GitprovError, match="not a directory") as info:
            other.fetch()
        assert "unsupported URL protocol" not in info.value.message, info.value.message
    seen: list[Outcome] = []
    w = Watcher(source, Recorder(), observers=[seen.append], clock=Clock())
    for _ in range(3):
        assert w.step() is False
    assert [o.kind for o in seen] == [Kind.FETCH_FAILED]


def test_a_remote_that_never_answers_fails_the_fetch_instead_of_holding_the_watcher(
    tmp_path: Path,
) -> None:
    """A server that takes the connection and says nothing: the watcher waited in the
    fetch for ever, reporting nothing and reconciling nothing."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # (connections complete in the backlog; nobody answers them)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/fleet.git"
        source = RemoteBranch(tmp_path / "mirror.git", url, "main", idle=0.5)
        seen: list[Outcome] = []
        w = Watcher(source, Recorder(), observers=[seen.append], clock=Clock())
        thread = threading.Thread(target=w.step, daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "the fetch still waits on the silent remote"
    assert [o.kind for o in seen] == [Kind.FETCH_FAILED], seen
    assert f"fetch of main from {url} failed" in seen[0].message
    assert "timed out" in seen[0].message, seen[0].message


def test_a_remotes_error_message_reaches_the_log_escaped(tmp_path: Path) -> None:
    """A git server's `ERR` line is its own text: an ESC or a newline in it rewrote the
    operator's terminal and forged lines of the watcher's log."""
    said = b"ERR \x1b[31mEVIL\npublished 0000 ok\n"
    body = b"001e# service=git-upload-pack\n0000" + b"%04x" % (len(said) + 4) + said
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)

        def answer_one() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

        thread = threading.Thread(target=answer_one, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/fleet.git"
        source = RemoteBranch(tmp_path / "mirror.git", url, "main", idle=5)
        with pytest.raises(GitprovError) as info:
            source.fetch()
        thread.join(5)
    message = info.value.message
    assert "remote error: \\x1b[31mEVIL\\x0apublished 0000 ok" in message, message
    assert message.isprintable(), message


def test_status_file_is_whole_json_after_every_outcome(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status = StatusFile(path, "main of repo")
    assert json.loads(path.read_text())["commit"] is None
    status(Outcome(Kind.PUBLISHED, "c1", "published c1"))
    status(Outcome(Kind.CLEAN, "c1", "clean", trigger="reconcile"))
    state = json.loads(path.read_text())
    assert state["commit"] == "c1" and state["result"] == "published"
    assert state["last_reconcile"]["result"] == "clean"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_a_status_file_that_cannot_be_written_is_warned_of_and_the_watcher_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "status.json"
    status = StatusFile(path, "main of repo")
    path.unlink()
    (path / "sub").mkdir(parents=True)  # (the path taken since)
    with caplog.at_level("WARNING", logger="gitprov.watch"):
        status(Outcome(Kind.PUBLISHED, "c1", "published c1"))
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"cannot write the status file {path}: Is a directory"], said
    assert not any(r.exc_info for r in caplog.records)  # (one line: no traceback)
    with pytest.raises(UsageError, match="cannot write the status file"):
        StatusFile(path, "main of repo")  # (at start: the operator's to fix)


@pytest.mark.parametrize("what", ["a symbolic link", "a fifo"])
def test_a_status_file_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It is written by a rename over it: a link, a fifo or a device node (as root,
    /dev/null) would be replaced by a regular file."""
    from gitprov.cli import main

    target = tmp_path / "target.txt"
    target.write_text("keep\n")
    path = tmp_path / "status"
    if what == "a symbolic link":
        path.symlink_to(target)
    else:
        os.mkfifo(path)
    bare = tmp_path / "fleet.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    argv = ["watch", "--repo", str(bare), "--status-file", str(path)]
    argv += ["--state-dir", str(tmp_path / "state"), "--http-root", str(tmp_path / "http")]
    assert main(argv) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert path.is_symlink() if what == "a symbolic link" else path.is_fifo()
    assert target.read_text() == "keep\n"


# -- the operator's guards: a refused head is reported, the last good files stay --------
def session_publisher(
    path: Path, config: PublisherConfig, **guards: bool
) -> tuple[Session, CommitPublisher]:
    s = Session(path)
    return s, s.publisher(config, prune_unknown=False, lock_wait=5, **guards)


def commit_of(repo: GitRepo, commit: str) -> pygit2.Commit:
    found = repo.repo.get(commit)
    assert isinstance(found, pygit2.Commit)
    return found


def operator_config(tmp_path: Path, **more: Any) -> PublisherConfig:
    return PublisherConfig(
        http_roots=(str(tmp_path / "http"),),
        tftp_roots=(str(tmp_path / "tftp"),),
        state_dir=str(tmp_path / "state"),
        **more,
    )


def test_a_mass_removal_is_refused_and_the_last_good_files_stay(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    good = str(example_repo.repo.head.target)
    t = Targets((tmp_path / "http", tmp_path / "tftp"), tmp_path / "state")
    _, publisher = session_publisher(example_repo.path, operator_config(tmp_path))
    seen: list[Outcome] = []
    w = Watcher(
        LocalBranch(example_repo.path, "main", inotify=False),
        publisher,
        observers=[seen.append],
        clock=Clock(),
    )
    w.step()
    assert seen[-1].kind is Kind.PUBLISHED
    served = served_files(t)
    gone = [f"inventory/devices/{m}.yaml" for m in ("0021f2a0c001", "0021f2a0c002")]
    bad = example_repo.commit(dict.fromkeys(gone), "delete half the fleet")
    assert w.step() is True
    assert (seen[-1].kind, seen[-1].commit) == (Kind.REFUSED, bad)
    assert "removes 2 of the 4 published devices (50%)" in seen[-1].message
    assert "--allow-mass-removal" in seen[-1].message
    assert served_files(t) == served
    m = load_manifest(t.state_dir)
    assert m is not None and m.commit == good
    assert w.step() is False  # not retried: the next push is judged again

    _, allowing = session_publisher(
        example_repo.path, operator_config(tmp_path), allow_mass_removal=True
    )
    assert allowing.publish(example_repo.repo, commit_of(example_repo, bad), "push").ok


def test_a_pull_request_moving_the_http_root_is_refused_by_the_watcher(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    # The roots come from the inventory (var/http, var/tftp in the work tree), inside the
    # operator's allow-list; the state dir is the operator's.
    config = PublisherConfig(state_dir=str(tmp_path / "state"), allowed_roots=(str(tmp_path),))
    _, publisher = session_publisher(example_repo.path, config)
    seen: list[Outcome] = []
    clock = Clock()
    w = Watcher(
        LocalBranch(example_repo.path, "main", inotify=False),
        publisher,
        WatchOptions(reconcile=60),
        observers=[seen.append],
        clock=clock,
    )
    w.step()
    good = seen[-1].commit
    assert seen[-1].kind is Kind.PUBLISHED
    http = example_repo.path / "var" / "http"
    served = {p.name: p.read_bytes() for p in http.iterdir()}
    fleet = example_repo.files["inventory/gitprov.yaml"]
    moved = example_repo.commit(
        {"inventory/gitprov.yaml": fleet.replace(b"http_root: var/http", b"http_root: ../moved")},
        "move the HTTP root",
    )
    w.step()
    assert (seen[-1].kind, seen[-1].commit) == (Kind.REFUSED, moved)
    assert "changes where files are published (roots" in seen[-1].message
    assert "--allow-target-change" in seen[-1].message
    assert not (tmp_path / "moved").exists()
    assert {p.name: p.read_bytes() for p in http.iterdir()} == served
    m = load_manifest(tmp_path / "state")
    assert m is not None and m.commit == good
    clock.now += 61
    w.step()  # the reconcile keeps serving the last good commit
    assert (seen[-1].kind, seen[-1].commit) == (Kind.CLEAN, good)
    # Outside the allow-list it is refused whatever the flags.
    outside = example_repo.commit(
        {"inventory/gitprov.yaml": fleet.replace(b"http_root: var/http", b"http_root: /etc")},
        "publish into /etc",
    )
    _, allowing = session_publisher(example_repo.path, config, allow_target_change=True)
    refused = allowing.publish(example_repo.repo, commit_of(example_repo, outside), "push")
    assert refused.kind is Kind.REFUSED and "outside the allowed roots" in refused.message


def test_a_symlink_loop_the_commit_names_is_refused_by_the_watcher_not_a_crash(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    config = PublisherConfig(state_dir=str(tmp_path / "state"), allowed_roots=(str(tmp_path),))
    _, publisher = session_publisher(example_repo.path, config)
    var = example_repo.path / "var"
    var.mkdir()
    (var / "loopa").symlink_to("loopb")
    (var / "loopb").symlink_to("loopa")
    fleet = example_repo.files["inventory/gitprov.yaml"]
    looped = example_repo.commit(
        {"inventory/gitprov.yaml": fleet.replace(b"http_root: var/http", b"http_root: var/loopa")},
        "serve from a link",
    )
    refused = publisher.publish(example_repo.repo, commit_of(example_repo, looped), "push")
    assert refused.kind is Kind.REFUSED, refused.message
    assert "inventory/gitprov.yaml:" in refused.message and "publish.http_root" in refused.message
    assert "symbolic links" in refused.message


def test_with_signatures_required_the_watcher_publishes_only_allowed_signers(
    tmp_path: Path, private_key: str
) -> None:
    ops = ssh_key(tmp_path / "keys", "ops")
    stranger = ssh_key(tmp_path / "keys", "stranger")
    signers = allowed_signers(tmp_path / "allowed_signers", ("ops@gitprov.invalid", ops))
    repo = SignedRepo(tmp_path / "repo", tmp_path / "home")
    good = repo.commit(example_files(), "example inventory", key=ops)
    config = operator_config(tmp_path, require_signed=True, allowed_signers=str(signers))
    _, publisher = session_publisher(repo.path, config)
    seen: list[Outcome] = []
    w = Watcher(
        LocalBranch(repo.path, "main", inotify=False),
        publisher,
        observers=[seen.append],
        clock=Clock(),
    )
    w.step()
    assert (seen[-1].kind, seen[-1].commit) == (Kind.PUBLISHED, good)
    t = Targets((tmp_path / "http", tmp_path / "tftp"), tmp_path / "state")
    served = served_files(t)
    text = example_files()[DEVICE]
    for name, key in (("Board room", None), ("War room", stranger)):
        head = repo.commit(
            {DEVICE: text.replace(b"Meeting room", name.encode())},
            f"rename to {name}",
            key=key,
            who=("Eve Pusher", "eve@gitprov.invalid"),
        )
        w.step()
        assert (seen[-1].kind, seen[-1].commit) == (Kind.REFUSED, head)
        assert "(committer Eve Pusher <eve@gitprov.invalid>) is not signed by an allowed" in (
            seen[-1].message
        )
        assert served_files(t) == served
        m = load_manifest(t.state_dir)
        assert m is not None and m.commit == good
    signed = repo.commit({DEVICE: text.replace(b"Meeting room", b"Quiet room")}, "ok", key=ops)
    w.step()
    assert (seen[-1].kind, seen[-1].commit) == (Kind.PUBLISHED, signed)


def _refs(path: Path) -> dict[str, str]:
    repo = pygit2.Repository(str(path))
    return {name: str(repo.references[name].target) for name in repo.references}


def test_a_mirror_is_never_made_in_a_clone_a_directory_or_another_bare_repository(
    tmp_path: Path,
) -> None:
    """`watch --remote URL --repo PATH` fetches `+refs/heads/B:refs/heads/B` into PATH:
    into a clone it would move the checked-out branch from under its own commits, into a
    directory of files it would mix git's with them, into another bare repository it
    would overwrite its branches. Each is refused before anything is written."""
    central = GitRepo(tmp_path / "central.git", bare=True)
    central.commit(example_files(), "example")
    url = str(central.path)
    clone = GitRepo(tmp_path / "clone")
    clone.commit(example_files(), "work of its own", worktree=True)
    other = GitRepo(tmp_path / "other.git", bare=True)
    other.commit(example_files(), "another history")
    files = tmp_path / "files"
    files.mkdir()
    (files / "notes.txt").write_text("mine\n")
    before = {p: _refs(p) for p in (clone.path, other.path)}
    for path, says in (
        (clone.path, "is a clone with a work tree"),
        (files, "is not a repository, and not empty"),
        (other.path, "a bare repository gitprov did not make"),
    ):
        with pytest.raises(UsageError, match=says):
            RemoteBranch(path, url, "main")
    assert {p: _refs(p) for p in (clone.path, other.path)} == before
    assert sorted(p.name for p in clone.path.iterdir()) == [".git", "inventory"]
    assert [p.name for p in files.iterdir()] == ["notes.txt"]
    # A mirror gitprov made, or one of this URL an older gitprov made, is taken again.
    made = RemoteBranch(tmp_path / "empty", url, "main")
    assert made.head() is not None
    RemoteBranch(tmp_path / "empty", url, "main")
    older = pygit2.init_repository(str(tmp_path / "older.git"), bare=True)
    older.remotes.create("origin", url)
    assert RemoteBranch(tmp_path / "older.git", url, "main").head() is not None


@pytest.mark.parametrize(
    "branch", ["main..x", "", "a/../b", "main:refs/heads/evil", "*", "ma\nin", "x" * 1100]
)
def test_a_branch_no_git_could_have_is_refused_at_the_start(
    branch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It polled and failed for ever, crashed past a length (exit 3), fetched every
    branch (`*`) or put a line of its own into the log (a newline)."""
    from gitprov.cli import main

    argv = ["watch", "--branch", branch, "--state-dir", str(tmp_path / "s")]
    argv += ["--http-root", str(tmp_path / "h")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a branch name" in err and "\nin" not in err, err


@pytest.mark.parametrize(
    "branch", ["HEAD", "refs/heads/", "refs/tags/v1", "refs/remotes/origin/main", "refs/main"]
)
def test_a_ref_that_is_no_branch_is_refused(branch: str) -> None:
    """`--branch HEAD` or `refs/tags/v1` was taken, and the watcher waited for ever for
    "no branch HEAD"."""
    with pytest.raises(UsageError) as caught:
        check_branch(branch)
    assert caught.value.message == f"--branch {branch!r} is not a branch's name but a ref's"
    assert "give the branch's short name" in (caught.value.hint or "")


def _watch_until(argv: list[str], cwd: Path, *ends: str) -> tuple[int, list[str]]:
    """(exit code, lines) of a watch run until it exits or prints a line starting with
    one of `ends` (then TERMed); killed after 60 s, should it never do either."""
    import signal
    import sys

    full = [sys.executable, "-m", "gitprov", *argv]
    out = subprocess.PIPE
    with subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=cwd) as proc:
        timer = threading.Timer(60, proc.kill)
        timer.start()
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith(ends):
                    proc.send_signal(signal.SIGTERM)
            return proc.wait(), lines
        finally:
            timer.cancel()
            timer.join()  # (a thread left alive stops a later test's forks: can_fork)
            proc.kill()


def test_a_branch_given_by_its_full_ref_is_that_branch_and_head_is_refused(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    """`--branch refs/heads/main` waited for ever for a branch refs/heads/refs/heads/main;
    it is main, and main is published. `--branch HEAD` waited for ever too."""
    assert check_branch("refs/heads/main") == "main"
    assert check_branch("refs/heads/team/x") == "team/x"
    assert check_branch("main") == "main"
    argv = ["--repo", str(example_repo.path), "watch", "--no-inotify", "--interval", "0.1"]
    argv += ["--state-dir", str(tmp_path / "s"), "--http-root", str(tmp_path / "h")]
    code, lines = _watch_until([*argv, "--branch", "HEAD"], tmp_path, "watching ")
    assert code == 2 and "is not a branch's name but a ref's" in lines[0], lines
    code, lines = _watch_until(
        [*argv, "--branch", "refs/heads/main"], tmp_path, "published ", "no branch "
    )
    assert lines[0].startswith(f"watching main of {example_repo.path}"), lines
    assert lines[-1].startswith("published "), lines


@pytest.mark.parametrize("flag", ["--status-file", "--log-json"])
@pytest.mark.parametrize("where", ["HEAD", "config", "manifest", "root"])
def test_the_watchers_own_files_never_go_where_they_destroy_or_are_served(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    where: str,
) -> None:
    """Written over the repository's HEAD or config, the watcher made it no repository;
    over the manifest, the publisher lost its state; in a root, the file was served."""
    from gitprov.cli import main

    state, http = tmp_path / "state", tmp_path / "http"
    target = {
        "HEAD": example_repo.path / ".git" / "HEAD",
        "config": example_repo.path / ".git" / "config",
        "manifest": state / "manifest.json",
        "root": http / "status.json",
    }[where]
    before = target.read_bytes() if target.exists() else None
    argv = ["--repo", str(example_repo.path), "watch", "--state-dir", str(state)]
    argv += ["--http-root", str(http), flag, str(target)]
    assert main(argv) == 2
    # (the refused watcher's inotify threads stopped: left running, they kept every
    # later fork in this process from happening, see gitprov.parallel.can_fork)
    assert threading.active_count() == 1, threading.enumerate()
    err = capsys.readouterr().err
    assert f"{flag} {target}" in err, err
    assert (target.read_bytes() if target.exists() else None) == before


def test_the_term_handler_never_takes_the_lock_its_thread_may_hold() -> None:
    """The handler set the stop event in the main thread, which may hold that event's
    lock (in its wait, or in the handler's own set, a TERM before): a second TERM, the
    group's then `make run`'s trap's, deadlocked the watcher for good, deaf to every
    later TERM (found so in a fresh clone's make test). Here the lock is held as the
    main thread holds it there: the handler returns, and the event is set once it is
    let go."""
    import signal

    from gitprov.cli.serve import _setter

    event = threading.Event()
    handler = _setter(event)
    with event._cond:  # type: ignore[attr-defined]
        handler(signal.SIGTERM, None)
    assert event.wait(5)


def test_terms_in_a_burst_stop_the_watcher(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    """Two hundred TERMs as fast as they go: a clean stop, exit 0."""
    import signal
    import sys

    argv = [sys.executable, "-m", "gitprov", "--repo", str(example_repo.path), "watch"]
    argv += ["--state-dir", str(tmp_path / "s"), "--http-root", str(tmp_path / "h")]
    argv += ["--interval", "0.1"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("watching "):
                break
        for _ in range(200):
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
