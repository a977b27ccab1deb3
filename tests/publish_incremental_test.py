"""Publishing only what changed: one syncfs per filesystem instead of an fsync per file;
served files judged by the size, mtime and inode the manifest recorded (a file whose stat
changed is rewritten as drift, --verify reads them all); the published commit published
again, in a fresh process, without loading anything; the guards without the published
commit's inventory."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitprov import plan as plan_module
from gitprov import publish as publish_module
from gitprov.cli import main
from gitprov.pipeline import Loaded, Pipeline
from gitprov.plan import INDEX, MANIFEST, MAP_ENDS, RootState, load_index, load_manifest
from gitprov.publish import Targets
from gitprov.watch import CommitPublisher, Kind
from tests.fixtures.fleet import (
    BASE_PROFILE,
    base_profile,
    device_path,
    device_yaml,
    fleet_files,
    generated_mac,
)
from tests.fixtures.gitrepo import ROOT, GitRepo
from tests.fixtures.roots import commit_publisher, publish_argv

DEVICES = 30


def fleet(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(fleet_files(DEVICES), "a fleet")
    return repo


def roots(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "http", tmp_path / "tftp"


def argv(repo: GitRepo, tmp_path: Path, *more: str) -> list[str]:
    return [*publish_argv(repo, *roots(tmp_path), tmp_path / "state"), "--format", "json", *more]


def publish(
    repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str], *more: str
) -> dict[str, Any]:
    capsys.readouterr()
    assert main(argv(repo, tmp_path, *more)) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def files_of(tmp_path: Path) -> dict[str, tuple[int, int, bytes]]:
    """root/name -> (inode, mtime_ns, bytes) of every served file."""
    out = {}
    for root in roots(tmp_path):
        for p in sorted(root.iterdir()):
            st = p.stat()
            out[f"{root.name}/{p.name}"] = (st.st_ino, st.st_mtime_ns, p.read_bytes())
    return out


def device_file(i: int) -> str:
    return f"fv{generated_mac(i)}.conf"


def rename_a_desk(repo: GitRepo) -> str:
    """A one-device commit: device 5's display name."""
    return repo.commit({device_path(5): device_yaml(5, display="Front desk")}, "rename a desk")


def loose_object(repo: GitRepo, oid: str) -> Path:
    return Path(repo.repo.path) / "objects" / oid[:2] / oid[2:]


# -- durability --------------------------------------------------------------------------
class Syncs:
    """Records syncfs calls (by filesystem) and fsyncs (by path: files and directories),
    each still done for real."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.syncfs: list[int] = []
        self.files: list[Path] = []
        self.dirs: list[Path] = []
        real_syncfs = publish_module.syncfs
        real_fsync = os.fsync

        def syncfs(fd: int) -> None:
            self.syncfs.append(os.fstat(fd).st_dev)
            real_syncfs(fd)

        def fsync(fd: int) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                self.dirs.append(path)
            else:
                self.files.append(path)
            real_fsync(fd)

        monkeypatch.setattr(publish_module, "syncfs", syncfs)
        monkeypatch.setattr(os, "fsync", fsync)


def test_one_syncfs_per_filesystem_and_one_fsync_per_directory_not_per_file(
    tmp_path: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sys.platform == "linux":
        assert publish_module._SYNCFS is not None, "Linux's libc has syncfs(2)"
    else:
        pytest.skip("syncfs(2) is Linux's")
    repo = fleet(tmp_path)
    syncs = Syncs(monkeypatch)
    out = publish(repo, tmp_path, capsys)
    assert len(out["written"]) > DEVICES  # every device, in two roots on one filesystem
    assert syncs.syncfs == [os.stat(tmp_path).st_dev]
    # No served file is fsynced; each root directory once; the state dir's own records.
    http, tftp = roots(tmp_path)
    assert [p for p in syncs.files if p.parent != tmp_path / "state"] == []
    assert sorted(p for p in syncs.dirs if p != tmp_path / "state") == [http, tftp]


@pytest.mark.parametrize("fails", ["the fsync", "the work meanwhile"])
def test_a_write_is_durable_or_fails_whatever_runs_during_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """The manifest's fsync runs beside other work (the journal's digest): a failed
    fsync still fails the write, and so does a failure of that work (which a publish's
    never raises), each leaving the last good file and no temp."""
    target = tmp_path / "manifest.json"
    target.write_bytes(b"the last good one")
    ran: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        ran.append(threading.current_thread().name)
        if fails == "the fsync":
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    def meanwhile() -> None:
        ran.append("meanwhile")
        if fails == "the work meanwhile":
            raise ValueError("not the write's business")

    monkeypatch.setattr(os, "fsync", fsync)
    error = OSError if fails == "the fsync" else ValueError
    with pytest.raises(error):
        publish_module.write_atomic(target, [b"a new ", b"one"], meanwhile=meanwhile)
    assert target.read_bytes() == b"the last good one"
    assert sorted(ran) == ["gitprov-fsync", "meanwhile"]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp left


def test_a_synced_write_starts_its_writeback_a_step_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that is to be fsynced has the disk start on it as it is written (a 60 MB
    manifest's fsync then waits for its tail alone): every `WRITEBACK_STEP` bytes, the
    range written since, by sync_file_range(2) where libc has it. Never for a file
    that is not synced; the bytes written are the same either way."""
    if sys.platform == "linux":
        assert publish_module._SYNC_FILE_RANGE is not None, "Linux's libc has sync_file_range(2)"
    monkeypatch.setattr(publish_module, "WRITEBACK_STEP", 5)
    real = publish_module._SYNC_FILE_RANGE
    ranges: list[tuple[int, int]] = []

    def started(fd: int, offset: int, size: int, flags: int) -> int:
        ranges.append((offset, size))
        assert flags == 2  # SYNC_FILE_RANGE_WRITE alone: nothing is waited for
        got = real(fd, offset, size, flags) if real is not None else 0
        assert got == 0, ctypes.get_errno()  # (the binding's types are the call's)
        return got

    monkeypatch.setattr(publish_module, "_SYNC_FILE_RANGE", started)
    pieces: list[bytes | memoryview] = [b"a" * 12, memoryview(b"bcdefg"), b"", b"hij"]
    target = tmp_path / "manifest.json"
    publish_module.write_atomic(target, pieces)
    assert target.read_bytes() == b"a" * 12 + b"bcdefghij"
    # Written 5 bytes a call at most: 5, 10 (12), 17, 18, 21; a range each 5 bytes past.
    assert ranges == [(0, 5), (5, 5), (10, 7)]
    ranges.clear()
    publish_module.write_atomic(target, pieces, sync=False)
    assert target.read_bytes() == b"a" * 12 + b"bcdefghij"
    assert ranges == []


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted under tmp_path (needs root and mount rights, as tests/e2e/disk_test)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "other"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (mount: {done.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_roots_on_two_filesystems_get_one_syncfs_each(
    tmp_path: Path,
    other_filesystem: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = fleet(tmp_path)
    syncs = Syncs(monkeypatch)
    capsys.readouterr()
    args = [*argv(repo, tmp_path), "--http-root", str(other_filesystem / "http")]
    assert main(args) == 0
    assert sorted(syncs.syncfs) == sorted(
        {os.stat(tmp_path).st_dev, os.stat(other_filesystem).st_dev}
    )
    assert [p for p in syncs.files if p.parent != tmp_path / "state"] == []
    # Each root has its own files there (no link crosses filesystems), the same bytes.
    http, tftp = other_filesystem / "http", tmp_path / "tftp"
    names = sorted(p.name for p in http.iterdir())
    assert names == sorted(p.name for p in tftp.iterdir()) and names
    assert all(copies(http / name, tftp / name) for name in names)


def linked(a: Path, b: Path) -> bool:
    """Whether two names are one file (a publish links a file into every root of one
    filesystem: one fsync covers both)."""
    return os.path.samefile(a, b) and os.stat(a).st_nlink == 2


def copies(a: Path, b: Path) -> bool:
    """Whether two names are two files of the same bytes (roots that share no file)."""
    return not os.path.samefile(a, b) and a.read_bytes() == b.read_bytes()


def test_roots_on_one_filesystem_share_each_file(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = fleet(tmp_path)
    out = publish(repo, tmp_path, capsys)
    http, tftp = roots(tmp_path)
    names = [w["name"] for w in out["written"]]
    assert names == sorted(p.name for p in http.iterdir()) == sorted(p.name for p in tftp.iterdir())
    assert all(linked(http / n, tftp / n) for n in names)
    assert all(stat.S_IMODE((tftp / n).stat().st_mode) == 0o644 for n in names)
    # A file rewritten in one root only (its twin there as recorded) is its own again.
    (http / names[0]).unlink()
    assert publish(repo, tmp_path, capsys)["written"] == [out["written"][0]]
    assert (http / names[0]).read_bytes() == (tftp / names[0]).read_bytes()
    assert publish(repo, tmp_path, capsys)["already_published"] is True


def test_a_filesystem_that_refuses_links_gets_each_file_written(
    tmp_path: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[str] = []

    def refuse(src: str, dst: str, **kw: Any) -> None:
        tried.append(dst)
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    repo = fleet(tmp_path)
    out = publish(repo, tmp_path, capsys)
    monkeypatch.undo()
    http, tftp = roots(tmp_path)
    names = [w["name"] for w in out["written"]]
    assert len(tried) == 1  # refused once: not asked again
    assert all(copies(http / name, tftp / name) for name in names)
    assert publish(repo, tmp_path, capsys)["already_published"] is True


def test_without_syncfs_every_temp_is_fsynced_before_its_rename(
    tmp_path: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publish_module, "_SYNCFS", None)
    repo = fleet(tmp_path)
    syncs = Syncs(monkeypatch)
    out = publish(repo, tmp_path, capsys)
    served = sum(1 for root in roots(tmp_path) for _ in root.iterdir())
    assert served == 2 * len(out["written"])
    assert syncs.syncfs == []
    in_roots = [p for p in syncs.files if p.parent in roots(tmp_path)]
    # Each temp of the first root, named as it was before its rename: the other root's
    # are links to the same files (one filesystem).
    http, tftp = roots(tmp_path)
    assert sorted(p.name.rsplit(".", 2)[0] for p in in_roots) == sorted(
        ".gitprov-" + w["name"] for w in out["written"]
    )
    assert {p.parent for p in in_roots} == {http}
    assert all(linked(http / w["name"], tftp / w["name"]) for w in out["written"])


def test_a_small_change_fsyncs_its_few_files_not_the_whole_filesystem(
    tmp_path: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # syncfs would wait for every dirty page of the filesystem, other programs' too: a
    # change of a few files fsyncs each of them (before its rename), and nothing else.
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    rename_a_desk(repo)
    syncs = Syncs(monkeypatch)
    out = publish(repo, tmp_path, capsys)
    names = [w["name"] for w in out["written"]]
    assert 0 < len(names) * 2 < publish_module.SYNCFS_MIN
    assert syncs.syncfs == []
    # Each temp (".gitprov-NAME.RANDOM.tmp"), named as it was before its rename.
    in_roots = [p for p in syncs.files if p.parent in roots(tmp_path)]
    http, tftp = roots(tmp_path)
    assert sorted((p.parent, p.name.rsplit(".", 2)[0]) for p in in_roots) == sorted(
        (http, ".gitprov-" + name) for name in names
    )
    assert all(linked(http / name, tftp / name) for name in names)


# -- the published commit again ----------------------------------------------------------
def run(
    repo: GitRepo, tmp_path: Path, env: dict[str, str], *more: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitprov", *argv(repo, tmp_path, *more)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=120,
    )


def test_the_published_commit_again_in_a_fresh_process_loads_nothing(
    tmp_path: Path, private_key: str
) -> None:
    repo = fleet(tmp_path)
    env = {**os.environ, "GITPROV_PRIVATE_KEY": private_key}
    first = run(repo, tmp_path, env)
    assert first.returncode == 0, first.stderr
    served = files_of(tmp_path)
    manifest = (tmp_path / "state" / MANIFEST).read_bytes()

    # One device's blob gone from the object store: whatever reads the inventory fails.
    blob = str(repo.repo.revparse_single(f"main:{device_path(7)}").id)
    loose_object(repo, blob).unlink()
    # And no private key: building would need it.
    env.pop("GITPROV_PRIVATE_KEY")
    again = run(repo, tmp_path, env)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["already_published"] is True
    assert out["written"] == [] and out["removed"] == [] and out["drift"] == []
    assert out["unchanged"] == 2 * len(json.loads(first.stdout)["written"])
    assert files_of(tmp_path) == served
    assert (tmp_path / "state" / MANIFEST).read_bytes() == manifest

    # A served file touched: now the commit goes through validation and the build, from
    # the kept snapshot: the unchanged devices (the missing blob's among them) are taken
    # over from the roots, checked against the manifest, not read from git again.
    target = roots(tmp_path)[0] / device_file(3)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    env["GITPROV_PRIVATE_KEY"] = private_key
    third = run(repo, tmp_path, env)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["already_published"] is False
    assert {n: f[-1] for n, f in files_of(tmp_path).items()} == {
        n: f[-1] for n, f in served.items()
    }

    # Without the kept snapshot, every device file is read: the missing blob is an error.
    shutil.rmtree(repo.repo.path.rstrip("/") + "/gitprov-cache")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    fourth = run(repo, tmp_path, env)
    assert fourth.returncode == 2, fourth.stderr
    assert f"cannot read object {blob}" in fourth.stderr


def test_a_manifest_without_stats_is_checked_by_reading_and_then_recorded(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    path = tmp_path / "state" / MANIFEST
    raw = json.loads(path.read_text())
    for state in raw["roots"].values():
        del state["stat"]  # as gitprov wrote it before it recorded stats
    del raw["inputs"]
    path.write_text(json.dumps(raw))
    served = files_of(tmp_path)

    out = publish(repo, tmp_path, capsys)
    assert out["already_published"] is True and out["written"] == []
    assert files_of(tmp_path) == served
    m = load_manifest(tmp_path / "state")
    assert m is not None and m.inputs
    for root in roots(tmp_path):
        recorded = m.roots[str(root)].stat
        assert set(recorded) == {p.name for p in root.iterdir()}
        for name, (size, mtime, ino) in recorded.items():
            st = (root / name).stat()
            assert (size, mtime, ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


# -- drift by stat, and --verify ---------------------------------------------------------
def test_a_touched_file_is_rewritten_and_an_edited_one_restored_nothing_else_written(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    http, tftp = roots(tmp_path)
    touched, edited = device_file(1), device_file(2)
    st = (http / touched).stat()
    os.utime(http / touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    good = (tftp / edited).read_bytes()
    (tftp / edited).write_bytes(b"DBID_SIP_ENABLE=1\n")
    before = files_of(tmp_path)

    out = publish(repo, tmp_path, capsys)
    assert out["already_published"] is False
    assert [w["name"] for w in out["written"]] == sorted([touched, edited])
    # Each is one file in both roots (linked by the publish): touched and edited in both.
    assert sorted((d["root"], d["name"], d["kind"]) for d in out["drift"]) == sorted(
        (str(root), name, kind)
        for root in (http, tftp)
        for name, kind in ((touched, "touched"), (edited, "changed"))
    )
    after = files_of(tmp_path)
    rewritten = {k for k in before if before[k][0] != after[k][0]}
    assert rewritten == {f"{r}/{n}" for r in ("http", "tftp") for n in (touched, edited)}
    assert after[f"tftp/{edited}"][2] == good
    assert after[f"http/{touched}"][2] == before[f"http/{touched}"][2]
    again = publish(repo, tmp_path, capsys)
    assert again["already_published"] is True and again["drift"] == []


def test_verify_reads_every_file_and_repairs_exactly_the_one_tampered_with(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    http, tftp = roots(tmp_path)
    name = device_file(4)
    good = (http / name).read_bytes()
    st = (http / name).stat()
    with open(http / name, "r+b") as f:  # in place: same inode, same size
        f.seek(len(good) // 2)
        f.write(bytes([good[len(good) // 2] ^ 0x01]))
    os.utime(http / name, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back
    tampered = files_of(tmp_path)
    assert tampered[f"http/{name}"][2] != good

    # By stat the file is intact: that is what --verify is for.
    assert publish(repo, tmp_path, capsys)["already_published"] is True
    assert files_of(tmp_path) == tampered

    out = publish(repo, tmp_path, capsys, "--verify")
    assert [w["name"] for w in out["written"]] == [name]
    # One file in both roots (linked by the publish): changed in both, restored in both.
    assert out["drift"] == [
        {"root": str(root), "name": name, "kind": "changed"} for root in (http, tftp)
    ]
    after = files_of(tmp_path)
    assert after[f"http/{name}"][2] == good == (tftp / name).read_bytes()
    assert {k for k in after if after[k] != tampered[k]} == {f"http/{name}", f"tftp/{name}"}
    assert publish(repo, tmp_path, capsys, "--verify")["already_published"] is True
    assert publish(repo, tmp_path, capsys)["already_published"] is True


# -- a one-device commit -----------------------------------------------------------------
def test_a_one_device_commit_writes_its_file_only_and_never_loads_the_published_commit(
    tmp_path: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    published = str(repo.repo.head.target)
    before = files_of(tmp_path)
    rename_a_desk(repo)

    loads: list[str] = []
    real = Pipeline.load_commit

    def load_commit(self: Pipeline, commit: pygit2.Commit, **kw: bool) -> Loaded:
        loads.append(str(commit.id))
        return real(self, commit, **kw)

    monkeypatch.setattr(Pipeline, "load_commit", load_commit)
    out = publish(repo, tmp_path, capsys)
    assert [w["name"] for w in out["written"]] == [device_file(5)]
    assert published not in loads
    after = files_of(tmp_path)
    assert {k for k in after if after[k][:2] != before[k][:2]} == {
        f"http/{device_file(5)}",
        f"tftp/{device_file(5)}",
    }


# -- the watcher's reconcile -------------------------------------------------------------
def test_reconcile_trusts_stat_and_with_verify_reads_the_files(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    t = Targets(roots(tmp_path), tmp_path / "state")

    def watcher(verify: bool) -> CommitPublisher:
        return commit_publisher(example_repo, private_key, t, verify=verify)

    commit = example_repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit)
    assert watcher(False).publish(example_repo.repo, commit).kind is Kind.PUBLISHED
    http = roots(tmp_path)[0]
    name = sorted(p.name for p in http.iterdir())[0]
    good = (http / name).read_bytes()
    st = (http / name).stat()
    (http / name).write_bytes(good[:-1] + bytes([good[-1] ^ 0x01]))
    os.utime(http / name, ns=(st.st_atime_ns, st.st_mtime_ns))

    clean = watcher(False).reconcile()
    assert clean is not None and clean.kind is Kind.CLEAN
    repaired = watcher(True).reconcile()
    assert repaired is not None and repaired.kind is Kind.REPAIRED
    # (one file in both roots: changed in both)
    assert [(d.name, d.kind) for d in repaired.drift] == [(name, "changed")] * 2
    assert (http / name).read_bytes() == good

    touched = roots(tmp_path)[1] / name
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = watcher(False).reconcile()
    assert again is not None and again.kind is Kind.REPAIRED
    assert [(d.root, d.name, d.kind) for d in again.drift] == [
        (str(root), name, "touched") for root in roots(tmp_path)
    ]


def test_an_index_that_does_not_name_the_manifest_is_not_trusted(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    state = tmp_path / "state"
    index = (state / INDEX).read_bytes()
    found = load_index(state)
    assert found is not None and found.commit == str(repo.repo.head.target)

    # The manifest says the TFTP root is lagging (as after a full disk there); the index
    # beside it still says both roots are at the commit, intact.
    m = load_manifest(state)
    assert m is not None
    tftp = str(roots(tmp_path)[1])
    lagging = {**m.roots, tftp: RootState(None, "no space left on the device")}
    (state / MANIFEST).write_text(dataclasses.replace(m, roots=lagging).to_json())
    (state / INDEX).write_bytes(index)

    out = publish(repo, tmp_path, capsys)
    assert out["already_published"] is False  # the root caught up, nothing rewritten
    assert out["written"] == []
    caught_up = load_manifest(state)
    assert caught_up is not None and caught_up.lagging() == ()
    assert publish(repo, tmp_path, capsys)["already_published"] is True


def test_a_state_dir_copied_gets_its_index_and_map_ends_back_by_a_publish_again(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """State files copied are other files (inodes): the index and the map ends no longer
    name the manifest. Publishing the published commit again writes both anew, so that
    the next publish by change reads the manifest from the index and splices its text
    without a scan for the ends of its maps."""
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    state = tmp_path / "state"
    ends = json.loads((state / MAP_ENDS).read_text())["ends"]
    kept = tmp_path / "kept"
    shutil.copytree(state, kept)
    shutil.rmtree(state)
    shutil.copytree(kept, state)  # (the same bytes, other inodes)
    identity = plan_module.file_identity(os.stat(state / MANIFEST))
    assert plan_module._ends_of(state, identity) is None
    plan_module._LOADED.clear()
    assert publish(repo, tmp_path, capsys)["already_published"] is True
    assert plan_module._ends_of(state, identity) == ends
    assert load_index(state) is not None


def test_the_published_commit_again_still_removes_a_crashed_publishs_temps(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    http = roots(tmp_path)[0]
    left = [http / f".gitprov-{device_file(1)}.1a2b3c4d.tmp", tmp_path / "state" / ".gitprov-x.tmp"]
    served = files_of(tmp_path)
    for path in left:
        path.write_bytes(b"half a file")
    out = publish(repo, tmp_path, capsys)
    assert out["already_published"] is True
    assert [p for p in left if p.exists()] == []
    assert files_of(tmp_path) == served


def test_a_new_commits_publish_removes_a_crashed_publishs_temps_from_its_listing(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan lists each root once and removes the temps it finds there."""
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    http, tftp = roots(tmp_path)[:2]
    left = [
        http / f".gitprov-{device_file(1)}.1a2b3c4d.tmp",
        tftp / f".gitprov-{device_file(2)}.5e6f7a8b.tmp",
        tmp_path / "state" / ".gitprov-x.tmp",
    ]
    for path in left:
        path.write_bytes(b"half a file")
    kept = http / ".an-operators-dot-file"
    kept.write_bytes(b"not ours")
    rename_a_desk(repo)
    out = publish(repo, tmp_path, capsys)
    assert [w["name"] for w in out["written"]] == [device_file(5)]
    assert [p for p in left if p.exists()] == []
    assert kept.exists()


def test_renames_in_threads_replace_every_file_and_a_failed_one_fails_only_its_root(
    tmp_path: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = fleet(tmp_path)
    publish(repo, tmp_path, capsys)
    http, tftp = roots(tmp_path)
    # Every device changes: more renames over served files than run in one thread.
    assert DEVICES >= publish_module._IO_THREADED_MIN
    repo.commit({BASE_PROFILE: base_profile("-b")}, "new SIP server")
    broken = device_file(5)
    real = os.replace

    threads = set()

    def replace(src: Any, dst: Any, **dir_fds: Any) -> None:
        threads.add(threading.get_ident())
        # Names are relative to their root's directory, open as dst_dir_fd.
        fd = dir_fds.get("dst_dir_fd")
        where = Path(os.readlink(f"/proc/self/fd/{fd}")) / dst if fd is not None else Path(dst)
        if where.parent == tftp and where.name == broken:
            raise OSError(5, "Input/output error")
        real(src, dst, **dir_fds)

    monkeypatch.setattr(os, "replace", replace)
    capsys.readouterr()
    assert main(argv(repo, tmp_path)) != 0
    monkeypatch.setattr(os, "replace", real)
    assert len(threads) > 1
    failures = json.loads(capsys.readouterr().out)["failures"]
    assert failures == {str(tftp): f"{broken}: Input/output error"}

    # The HTTP root has the new commit's files; the TFTP root's failure left no temp
    # behind, and the next publish completes it.
    head = repo.repo.revparse_single("main")
    assert isinstance(head, pygit2.Commit)
    served = {f.name: f.data for f in Pipeline(repo.repo).build(head, private_key).files}
    assert {p.name: p.read_bytes() for p in http.iterdir()} == served
    assert not [p for p in tftp.iterdir() if p.name.startswith(".")]
    assert (tftp / broken).read_bytes() != served[broken]
    assert publish(repo, tmp_path, capsys)["written"]
    assert {p.name: p.read_bytes() for p in tftp.iterdir()} == served
