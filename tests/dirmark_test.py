"""gitprov.dirmark: a root's listing vouched for by its directory's stat, and the
publishes that use it (no root listed again when its directory was left alone, every
change by hand still seen)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gitprov import dirmark
from gitprov import plan as plan_module
from gitprov import publish as publish_module
from gitprov.cli import main
from tests.fixtures.fleet import device_path, device_yaml, fleet_files, generated_mac
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import base_argv, publish_json, served_bytes

DEVICES = 12
SETTLE = dirmark.RACY_NS / 1e9  # a directory changed this long ago is vouched for


def settled() -> None:
    time.sleep(SETTLE)


def test_a_mark_is_the_directory_as_it_was_and_none_while_it_just_changed(
    tmp_path: Path,
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    assert dirmark.mark(d) is None  # (changed within RACY_NS: a later change may keep its stat)
    assert dirmark.mark(tmp_path / "none") is None
    settled()
    mark = dirmark.mark(d)
    assert mark is not None and dirmark.same(mark, d) == mark
    (d / "x").write_bytes(b"")  # a name made
    assert dirmark.same(mark, d) is None
    settled()
    mark = dirmark.mark(d)
    assert mark is not None
    (d / "x").write_bytes(b"written in place")  # the file's own stat says it, not the directory's
    assert dirmark.same(mark, d) == mark
    (d / "y").write_bytes(b"")

    def replaced() -> None:
        os.replace(d / "y", d / "x")

    def removed() -> None:
        os.unlink(d / "x")

    def made() -> None:
        os.mkdir(d / "sub")

    for change in (replaced, removed, made):
        settled()
        mark = dirmark.mark(d)
        change()
        assert dirmark.same(mark, d) is None
    assert dirmark.same(None, d) is None


def test_a_record_vouches_for_its_manifest_only_and_its_roots_left_alone(tmp_path: Path) -> None:
    state, a, b = tmp_path / "state", tmp_path / "a", tmp_path / "b"
    for d in (state, a, b):
        d.mkdir()
    settled()
    marks = {str(r): dirmark.mark(r) for r in (a, b)}
    assert all(marks.values())
    identity = (1, 2, 3, 4, 5)
    dirmark.save(state, identity, {k: m for k, m in marks.items() if m})
    assert dirmark.vouched(state, identity, [str(a), str(b), "/elsewhere"]) == {str(a), str(b)}
    assert dirmark.vouched(state, (1, 2, 3, 4, 6), [str(a), str(b)]) == set()  # another manifest
    assert dirmark.vouched(state, None, [str(a)]) == set()
    (b / "stray").write_bytes(b"")
    assert dirmark.vouched(state, identity, [str(a), str(b)]) == {str(a)}
    raw = (state / dirmark.LISTED).read_bytes()
    for torn in (raw[: len(raw) // 2], b"", b"[]", b'{"format": 1}', raw.replace(b"[", b"[[", 1)):
        (state / dirmark.LISTED).write_bytes(torn)
        assert dirmark.vouched(state, identity, [str(a)]) == set()
    assert not list(state.glob(".gitprov-*"))  # (its temp renamed, never left)


# -- through a publish -----------------------------------------------------------------


class Looks:
    """Counts the listings and scans a publish makes (in this process: a small fleet is
    surveyed without a worker)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.roots: list[str] = []
        real_listing, real_scan = plan_module._listing, plan_module._scan

        def listing(root: Path, *rest: Any) -> set[str]:
            self.roots.append(Path(root).name)
            return real_listing(root, *rest)

        def scan(root: Path | str, *rest: Any) -> Any:
            self.roots.append(Path(root).name)
            return real_scan(root, *rest)

        monkeypatch.setattr(plan_module, "_listing", listing)
        monkeypatch.setattr(plan_module, "_scan", scan)

    def take(self) -> list[str]:
        got, self.roots = sorted(self.roots), []
        return got


@pytest.fixture
def published(
    tmp_path: Path, private_key: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[GitRepo, dict[str, bytes]]:
    monkeypatch.setenv("GITPROV_PRIVATE_KEY", private_key)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(fleet_files(DEVICES), "a fleet")
    assert main(base_argv(repo, tmp_path)) == 0
    return repo, served_bytes(tmp_path)


def test_the_published_commit_again_lists_no_root_left_alone_and_sees_each_change(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    published: tuple[GitRepo, dict[str, bytes]],
) -> None:
    repo, files = published
    http, tftp = tmp_path / "http", tmp_path / "tftp"
    looks = Looks(monkeypatch)
    settled()
    # The first publish again lists both roots (the http one's files linked into the
    # tftp one: scanned) and records what their directories vouch for.
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    assert looks.take() == ["http", "tftp"]
    record = json.loads((tmp_path / "state" / dirmark.LISTED).read_text())
    assert set(record["roots"]) == {str(http), str(tftp)}
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    assert looks.take() == []

    # A file written in place: its stat says so, listed or not.
    device = http / f"fv{generated_mac(3)}.conf"
    with open(device, "r+b") as f:
        f.write(b"X")
    out = publish_json(repo, tmp_path, capsys)
    assert out["already_published"] is False
    assert {(d["root"], d["name"]) for d in out["drift"]} == {
        (str(http), device.name),
        (str(tftp), device.name),  # (one file in both roots)
    }
    assert served_bytes(tmp_path) == files

    # A file replaced in the linked root alone: not its twin's any more.
    settled()
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    looks.take()
    other = tftp / f"fv{generated_mac(5)}.conf"
    (tftp / "new").write_bytes(b"saved by an editor")
    os.replace(tftp / "new", other)
    out = publish_json(repo, tmp_path, capsys)
    assert out["already_published"] is False
    assert [(d["root"], d["name"]) for d in out["drift"]] == [(str(tftp), other.name)]
    assert served_bytes(tmp_path) == files
    # Restored in that root alone: a file of its own, which a record does not cover.
    assert os.stat(other).st_ino != os.stat(http / other.name).st_ino
    settled()
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    with open(other, "r+b") as f:
        f.write(b"X")
    out = publish_json(repo, tmp_path, capsys)
    assert [(d["root"], d["name"]) for d in out["drift"]] == [(str(tftp), other.name)]
    assert served_bytes(tmp_path) == files

    # A file put there by hand: found (and with --prune-unknown removed).
    settled()
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    looks.take()
    (http / "stray.conf").write_bytes(b"?")
    publish_json(repo, tmp_path, capsys, "--prune-unknown")
    assert "http" in looks.take()
    assert served_bytes(tmp_path) == files


def test_a_publish_that_wrote_much_records_its_listings_and_the_next_one_lists_nothing(
    tmp_path: Path,
    private_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GITPROV_PRIVATE_KEY", private_key)
    monkeypatch.setattr(publish_module, "NOTE_LISTED_MIN", DEVICES)
    # (a publish this small writes its last file well within RACY_NS of its listing)
    monkeypatch.setattr(dirmark, "RACY_NS", 0)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(fleet_files(DEVICES), "a fleet")
    state = tmp_path / "state"
    assert publish_json(repo, tmp_path, capsys)["already_published"] is False
    record = json.loads((state / dirmark.LISTED).read_text())
    assert set(record["roots"]) == {str(tmp_path / "http"), str(tmp_path / "tftp")}
    looks = Looks(monkeypatch)
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    assert looks.take() == []

    # A one-device commit writes too few files to list its roots again: the record, made
    # for the manifest before, vouches for nothing after it.
    time.sleep(0.05)  # (past the filesystem's tick: its change shows in the directory)
    before = (state / dirmark.LISTED).read_bytes()
    (tmp_path / "tftp" / f"fv{generated_mac(1)}.conf").unlink()
    out = publish_json(repo, tmp_path, capsys)
    assert out["already_published"] is False
    assert [d["name"] for d in out["drift"]] == [f"fv{generated_mac(1)}.conf"]
    assert "tftp" in looks.take()
    assert (state / dirmark.LISTED).read_bytes() == before  # (wrote one file: not recorded)
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    assert sorted(looks.take()) == ["http", "tftp"]  # the manifest changed: listed again


def test_a_new_commit_surveyed_ahead_lists_no_root_left_alone_and_stats_its_own_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    published: tuple[GitRepo, dict[str, bytes]],
) -> None:
    repo, files = published
    http, tftp = tmp_path / "http", tmp_path / "tftp"
    monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 1)
    # One file of the tftp root its own (restored there alone), then recorded.
    mine = tftp / f"fv{generated_mac(5)}.conf"
    (tftp / "new").write_bytes(b"saved by an editor")
    os.replace(tftp / "new", mine)
    assert publish_json(repo, tmp_path, capsys)["already_published"] is False
    assert os.stat(mine).st_ino != os.stat(http / mine.name).st_ino
    settled()
    assert publish_json(repo, tmp_path, capsys)["already_published"] is True
    surveys: list[plan_module.SurveyAhead] = []
    start = plan_module.SurveyAhead.start

    def spy(
        state_dir: Path, first: Callable[[], object] | None = None
    ) -> plan_module.SurveyAhead | None:
        made = start(state_dir, first)
        if made is not None:
            surveys.append(made)
        return made

    monkeypatch.setattr(plan_module.SurveyAhead, "start", staticmethod(spy))
    with open(mine, "r+b") as f:
        f.write(b"X")  # in place: the directory says nothing of it
    repo.commit({device_path(7): device_yaml(7, display="Back office")}, "one device")
    out = publish_json(repo, tmp_path, capsys)
    assert [(d["root"], d["name"]) for d in out["drift"]] == [(str(tftp), mine.name)]
    assert [w["name"] for w in out["written"]] == [mine.name, f"fv{generated_mac(7)}.conf"]
    # Neither root listed; the tftp one scanned for the file of its own.
    assert [(Path(k).name, first) for k, first, _ in surveys[0]._parts if first < 0] == [
        ("tftp", -2)
    ]
    again = served_bytes(tmp_path)
    assert {n: b for n, b in again.items() if "fv" + generated_mac(7) not in n} == {
        n: b for n, b in files.items() if "fv" + generated_mac(7) not in n
    }
