"""The touched names a watcher's publish takes instead of a stat of every served file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitprov import plan as plan_module
from gitprov import rootwatch
from gitprov.pipeline import Pipeline
from gitprov.publish import Guards, Targets, publish_commit
from gitprov.rootwatch import RootWatch
from tests.fixtures.fleet import device_path, device_yaml, fleet_files, generated_mac, served_files
from tests.fixtures.gitrepo import GitRepo

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="inotify is Linux's (elsewhere: a full survey)"
)


def new_watch() -> RootWatch:
    fd = rootwatch._inotify()
    assert fd is not None
    return RootWatch(fd)


def roots_with_files(tmp_path: Path) -> list[str]:
    roots = [tmp_path / "http", tmp_path / "tftp"]
    for root in roots:
        root.mkdir()
        for i in range(6):
            (root / f"f{i}.conf").write_bytes(b"x" * i)
    return [str(r) for r in roots]


def test_the_names_touched_since_the_publish_vouched_for(tmp_path: Path) -> None:
    http, tftp = roots_with_files(tmp_path)
    watch = new_watch()
    first = watch.take([http, tftp], None)
    assert first.names == {http: None, tftp: None}  # nothing known yet: survey all
    manifest = object()
    watch.vouch(manifest)
    assert watch.take([http, tftp], manifest).names == {http: set(), tftp: set()}
    watch.vouch(manifest)

    Path(http, "f1.conf").write_bytes(b"edited")
    os.utime(Path(http, "f2.conf"), ns=(1, 1))
    os.chmod(Path(http, "f3.conf"), 0o600)
    Path(tftp, "f4.conf").unlink()
    Path(tftp, "new.tmp").write_bytes(b"")
    os.replace(Path(tftp, "new.tmp"), Path(tftp, "f5.conf"))
    Path(tftp, "f0.conf").read_bytes()  # a read is no change
    touched = watch.take([http, tftp], manifest)
    # The roots share their files (a publish links each into both): a name touched in
    # one is looked at in both.
    either = {"f1.conf", "f2.conf", "f3.conf", "f4.conf", "new.tmp", "f5.conf"}
    assert touched.names == {http: either, tftp: either}
    names = [f"f{i}.conf" for i in range(6)]
    assert touched.off(http, names) == ([], ["f1.conf", "f2.conf", "f3.conf", "f4.conf", "f5.conf"])
    assert touched.off(str(tmp_path / "other"), names) is None

    # Not vouched for (the publish failed): the next one surveys all, events or not.
    assert watch.take([http, tftp], manifest).names == {http: None, tftp: None}
    watch.vouch(manifest)
    # Another manifest than the one vouched for (another process published): the same.
    assert watch.take([http, tftp], object()).names == {http: None, tftp: None}
    watch.vouch(manifest)
    Path(http, "f0.conf").write_bytes(b"again")
    assert watch.take([http, tftp], manifest).names == {http: {"f0.conf"}, tftp: {"f0.conf"}}
    watch.close()


def test_a_root_replaced_or_dropped_events_mean_a_full_survey(tmp_path: Path) -> None:
    http, tftp = roots_with_files(tmp_path)
    watch = new_watch()
    manifest = object()
    watch.take([http, tftp], None)
    watch.vouch(manifest)
    os.rename(http, tmp_path / "old-http")
    os.mkdir(http)
    Path(http, "f1.conf").write_bytes(b"")
    # What was written through the old directory's names may be the other root's files.
    assert watch.take([http, tftp], manifest).names == {http: None, tftp: None}
    watch.vouch(manifest)
    Path(http, "f2.conf").write_bytes(b"")  # the new directory is watched now
    assert watch.take([http, tftp], manifest).names == {http: {"f2.conf"}, tftp: {"f2.conf"}}
    watch.vouch(manifest)

    # More events than the kernel queues (16,384 by default): it drops them, says so.
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    a, b = Path(tftp, "f1.conf"), Path(tftp, "f2.conf")
    for i in range(limit // 2 + 8):  # (alternating: the kernel merges repeats)
        os.utime(a, ns=(i, i))
        os.utime(b, ns=(i, i))
    assert watch.take([http, tftp], manifest).names == {http: None, tftp: None}
    watch.vouch(manifest)
    assert watch.take([http, tftp], manifest).names == {http: set(), tftp: set()}

    # A root gone: nothing to watch, surveyed (and found gone) each time.
    os.rename(tftp, tmp_path / "old-tftp")
    watch.vouch(manifest)
    assert watch.take([http, tftp], manifest).names == {http: None, tftp: None}
    watch.vouch(manifest)
    assert watch.take([http, tftp], manifest).names == {http: None, tftp: None}
    watch.close()


def test_one_inotify_instance_per_state_dir_and_a_few_at_most(tmp_path: Path) -> None:
    made = [rootwatch.watch_for(tmp_path / f"state-{i}") for i in range(rootwatch.MAX_WATCHED + 3)]
    assert all(w is not None for w in made)
    assert rootwatch.watch_for(tmp_path / "state-3") is made[3]
    assert len(rootwatch._WATCHES) <= rootwatch.MAX_WATCHED
    assert made[0] not in rootwatch._WATCHES.values()  # the oldest were closed


def test_a_watcher_looks_only_at_the_files_touched_and_repairs_them(
    tmp_path: Path, private_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    files = fleet_files(6)
    repo.commit(files, "fleet", branch="main")
    pipeline = Pipeline(repo.repo, cache_dir=repo.path / "gitprov-cache")
    where = tmp_path / "out"
    targets = Targets((where / "http", where / "tftp"), where / "state")
    looked: list[str] = []
    real = plan_module._not_as_recorded

    def spy(fd: int, names: Any, *rest: Any) -> list[str]:
        looked.extend(names)
        return real(fd, names, *rest)

    monkeypatch.setattr(plan_module, "_not_as_recorded", spy)

    def publish(display: str) -> None:
        new = dict(files)
        new[device_path(0)] = device_yaml(0, display=display).encode()
        repo.commit(new, f"device edit: {display}", branch="main")
        commit = repo.repo.revparse_single("main")
        assert isinstance(commit, pygit2.Commit)
        looked.clear()
        publish_commit(
            pipeline, commit, targets, private_key, guards=Guards(allow_mass_removal=True)
        )

    publish("One")
    publish("Two")  # the files the first one wrote were touched (by it)
    publish("Three")
    name = f"fv{generated_mac(3)}.conf"
    # Touched since the last publish: only the file it wrote, which this one rewrites.
    assert looked == []
    published = (where / "tftp" / name).read_bytes()
    # Replaced as an editor saves: in the root it was edited in, and in the other, whose
    # files are the same files (a publish links them), found as recorded.
    (where / "http" / "edited").write_bytes(b"edited by hand\n")
    os.replace(where / "http" / "edited", where / "http" / name)
    publish("Four")
    assert looked == [name, name]
    assert (where / "http" / name).read_bytes() == published
    # Written in place: through its name in one root, the file of both, restored in both.
    other = f"fv{generated_mac(4)}.conf"
    was = (where / "tftp" / other).read_bytes()
    (where / "http" / other).write_bytes(b"edited by hand\n")
    assert (where / "tftp" / other).read_bytes() == b"edited by hand\n"
    publish("Five")
    assert (where / "http" / other).read_bytes() == was
    assert (where / "tftp" / other).read_bytes() == was
    fresh = tmp_path / "fresh"
    commit = repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit)
    publish_commit(
        Pipeline(repo.repo),
        commit,
        Targets((fresh / "http", fresh / "tftp"), fresh / "state"),
        private_key,
    )
    assert served_files(where) == served_files(fresh)
