"""The plan (what differs per root) and the manifest it is computed against."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitprov import parallel
from gitprov import plan as plan_module
from gitprov.pipeline import Pipeline
from gitprov.plan import (
    MANIFEST,
    Action,
    Drift,
    FileAction,
    Kind,
    Manifest,
    ManifestEntry,
    RootState,
    check_drift,
    load_manifest,
    plan,
)
from gitprov.publish import Targets, publish_commit
from tests.fixtures.gitrepo import GitRepo


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(data: bytes, mac: str = "0021f2011b19", kind: Kind = Kind.DEVICE) -> ManifestEntry:
    return ManifestEntry(mac, "IP542N", 1001, "c1", sha(b"plain"), sha(data), kind)


def manifest(files: dict[str, bytes], roots: dict[str, RootState], commit: str = "c1") -> Manifest:
    return Manifest(
        commit, "2024-01-01T00:00:00+00:00", roots, {n: entry(d) for n, d in files.items()}
    )


def write(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)


def test_manifest_round_trips_and_reads_format_1(tmp_path: Path) -> None:
    m = manifest(
        {"a.conf": b"A", "IP542N.conf": b"B"},
        {"/srv/http": RootState("c1"), "/srv/edge": RootState("c0", "no space", ("old.conf",))},
    )
    (tmp_path / MANIFEST).write_text(m.to_json())
    assert load_manifest(tmp_path) == m

    old = {
        "format": 1,
        "commit": "c9",
        "published_at": "x",
        "roots": ["/srv/http"],
        "files": {"a.conf": {k: v for k, v in vars(entry(b"A")).items() if k != "kind"}},
    }
    (tmp_path / MANIFEST).write_text(json.dumps(old))
    loaded = load_manifest(tmp_path)
    assert loaded is not None
    assert loaded.roots == {"/srv/http": RootState("c9")}
    assert loaded.files["a.conf"].kind == Kind.DEVICE
    assert loaded.converged("/srv/http")


def test_a_torn_or_foreign_manifest_means_publish_from_scratch(tmp_path: Path) -> None:
    assert load_manifest(tmp_path) is None
    (tmp_path / MANIFEST).write_text('{"format": 2, "commit": "c1", "roo')
    assert load_manifest(tmp_path) is None
    (tmp_path / MANIFEST).write_text('{"format": 99, "commit": "c1"}')
    assert load_manifest(tmp_path) is None
    (tmp_path / MANIFEST).write_text('{"format": 2, "commit": "c1", "roots": [1]}')
    assert load_manifest(tmp_path) is None


def test_plan_adds_changes_keeps_and_removes_only_our_files(tmp_path: Path) -> None:
    root = tmp_path / "http"
    write(
        root,
        {
            "same.conf": b"same",
            "old.conf": b"old",
            "gone.conf": b"removed device",
            "readme.txt": b"an operator's file",
            ".gitprov-same.conf.ab.tmp": b"temp",
        },
    )
    (root / "subdir").mkdir()
    prev = manifest(
        {"same.conf": b"same", "old.conf": b"old", "gone.conf": b"removed device"},
        {str(root): RootState("c1")},
    )
    wanted = {"same.conf": b"same", "old.conf": b"new", "new.conf": b"added"}
    p = plan(wanted, [root], prev)
    assert set(p.actions) == {
        FileAction(str(root), "old.conf", Action.CHANGE),
        FileAction(str(root), "new.conf", Action.ADD),
        FileAction(str(root), "gone.conf", Action.REMOVE),
    }
    assert p.unchanged == 1
    assert p.unknown == ((str(root), "readme.txt"),)
    assert p.drift == ()

    pruned = plan(wanted, [root], prev, prune_unknown=True)
    assert FileAction(str(root), "readme.txt", Action.REMOVE) in pruned.actions
    assert pruned.unknown == ((str(root), "readme.txt"),)


def test_without_a_manifest_nothing_in_a_root_is_ours(tmp_path: Path) -> None:
    root = tmp_path / "http"
    write(root, {"fv1.conf": b"x"})
    p = plan({"fv2.conf": b"y"}, [root, tmp_path / "missing"], None)
    assert FileAction(str(root), "fv1.conf", Action.REMOVE) not in p.actions
    assert p.unknown == ((str(root), "fv1.conf"),)
    assert FileAction(str(tmp_path / "missing"), "fv2.conf", Action.ADD) in p.actions


def test_drift_is_what_differs_from_the_manifest_in_converged_roots(tmp_path: Path) -> None:
    good, lagging = tmp_path / "good", tmp_path / "lagging"
    files = {"a.conf": b"A", "b.conf": b"B", "c.conf": b"C"}
    write(good, {"a.conf": b"edited by hand", "c.conf": b"C"})
    write(lagging, {"a.conf": b"older", "b.conf": b"older"})
    prev = manifest(
        files, {str(good): RootState("c1"), str(lagging): RootState("c0", "no space left")}
    )
    expected = (Drift(str(good), "a.conf", "changed"), Drift(str(good), "b.conf", "deleted"))
    assert check_drift(prev) == expected
    assert plan(files, [good, lagging], prev).drift == expected
    assert prev.lagging() == (str(lagging),)


def test_a_lagging_root_still_owns_the_files_of_removed_devices(tmp_path: Path) -> None:
    lagging, new = tmp_path / "lagging", tmp_path / "new"
    write(lagging, {"keep.conf": b"k", "removed.conf": b"r"})
    write(new, {"removed.conf": b"r"})
    prev = manifest(
        {"keep.conf": b"k"},
        {str(lagging): RootState("c0", "no space left", ("removed.conf",))},
        commit="c1",
    )
    p = plan({"keep.conf": b"k"}, [lagging, new], prev)
    assert FileAction(str(lagging), "removed.conf", Action.REMOVE) in p.actions
    # A root the manifest does not know: its files are not ours to delete.
    assert p.unknown == ((str(new), "removed.conf"),)


def test_an_unchanged_manifest_file_is_parsed_once(tmp_path: Path) -> None:
    m = manifest({"a.conf": b"A"}, {"/srv/http": RootState("c1")})
    path = tmp_path / MANIFEST
    path.write_text(m.to_json())
    first = load_manifest(tmp_path)
    assert first == m
    assert load_manifest(tmp_path) is first  # the same file: what a watcher reads back

    # Replaced by a rename (how publish writes it), even with the same bytes: read again.
    tmp = tmp_path / "next.json"
    tmp.write_text(m.to_json())
    os.replace(tmp, path)
    second = load_manifest(tmp_path)
    assert second == m and second is not first

    # Rewritten in place with bytes of the same length, the mtime put back: the change
    # time tells (the kernel's file times tick every few milliseconds).
    st = path.stat()
    time.sleep(0.05)
    other = manifest({"b.conf": b"A"}, {"/srv/http": RootState("c1")})
    assert len(other.to_json()) == len(m.to_json())
    path.write_text(other.to_json())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_manifest(tmp_path) == other


def test_the_manifest_a_publish_wrote_is_not_read_back(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    t = Targets((tmp_path / "http", tmp_path / "tftp"), tmp_path / "state")
    head = example_repo.repo.revparse_single("main")
    assert isinstance(head, pygit2.Commit)
    result = publish_commit(Pipeline(example_repo.repo), head, t, private_key)
    # What the next publish of a running watcher reads: the manifest it wrote, equal to
    # the file's (checked by reading it as another process would).
    assert load_manifest(t.state_dir) is result.manifest
    assert plan_module._from_json(json.loads((t.state_dir / MANIFEST).read_bytes())) == (
        result.manifest
    )


def _stat_fixture(root: Path, count: int) -> dict[str, tuple[int, int, int]]:
    """`count` files in `root` and their recorded stats, then drift of every kind."""
    root.mkdir()
    recorded: dict[str, tuple[int, int, int]] = {}
    for i in range(count):
        p = root / f"f{i:04d}.conf"
        p.write_bytes(b"x" * (i % 7))
        st = p.lstat()
        recorded[p.name] = (st.st_size, st.st_mtime_ns, st.st_ino)
    (root / "f0001.conf").write_bytes(b"longer than it was")  # size
    os.utime(root / "f0002.conf", ns=(1, 1))  # mtime
    (root / "f0003.conf").unlink()  # gone
    (root / "new.conf").write_bytes(b"")
    (root / "new.conf").replace(root / "f0004.conf")  # another inode
    recorded["never-written.conf"] = (0, 0, 0)
    return recorded


def test_stats_checked_over_workers_are_the_stats_checked_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = [tmp_path / "http", tmp_path / "tftp"]
    checks: list[tuple[Path, list[str], dict[str, tuple[int, int, int]]]] = []
    for root in roots:
        recorded = _stat_fixture(root, 40)
        checks.append((root, sorted(recorded), recorded))
    checks.append((tmp_path / "no-such-root", ["f0000.conf", "f0005.conf"], checks[0][2]))
    here = plan_module._each_not_as_recorded(checks)
    drifted = ["f0001.conf", "f0002.conf", "f0003.conf", "f0004.conf", "never-written.conf"]
    assert sorted(here[0]) == sorted(here[1]) == drifted
    assert sorted(here[2]) == ["f0000.conf", "f0005.conf"]  # no root: every file is off
    forks: list[int] = []
    forked_map = parallel.forked_map

    def counted(*args: Any) -> Any:
        forks.append(1)
        return forked_map(*args)

    monkeypatch.setattr(plan_module, "forked_map", counted)
    monkeypatch.setattr(plan_module, "STAT_PARALLEL_MIN", 10)
    monkeypatch.setattr(plan_module, "usable_cpus", lambda: 2)
    assert [sorted(off) for off in plan_module._each_not_as_recorded(checks)] == [
        sorted(off) for off in here
    ]
    assert forks == [1]  # one pool for every root
