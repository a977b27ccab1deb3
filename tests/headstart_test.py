"""gitprov.headstart: `gitprov publish --state-dir DIR` takes DIR's lock and starts the
survey of its served files before the rest of gitprov loads; what it then publishes is
what a publish without the head start publishes, and the lock is held throughout."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitprov import headstart
from gitprov import pipeline as pipeline_module
from gitprov import plan as plan_module
from gitprov.source import tree_changes
from tests.fixtures.fleet import device_path, device_yaml, fleet_files, generated_mac
from tests.fixtures.gitrepo import ROOT, GitRepo
from tests.fixtures.roots import base_argv, publish_json, served_bytes

DEVICES = 12


REAL = headstart.head_start


class Heads:
    """Makes `gitprov publish` take its head start (recorded) or none."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.taken: list[headstart.HeadStart | None] = []

    def use(self, taken: bool) -> None:
        @contextlib.contextmanager
        def spy(
            state_dir: str | None, diff: headstart.DiffAsked | None = None
        ) -> Iterator[headstart.HeadStart | None]:
            with REAL(state_dir if taken else None, diff) as head:
                self.taken.append(head)
                yield head

        self.monkeypatch.setattr(headstart, "head_start", spy)


@pytest.fixture
def repo(tmp_path: Path, private_key: str, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    monkeypatch.setenv("GITPROV_PRIVATE_KEY", private_key)
    monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 1)  # (a small fleet surveyed ahead)
    made = GitRepo(tmp_path / "repo.git", bare=True)
    made.commit(fleet_files(DEVICES), "a fleet")
    return made


def test_a_publish_with_a_head_start_is_the_publish_without_one(
    tmp_path: Path,
    repo: GitRepo,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with_head, without = tmp_path / "with", tmp_path / "without"
    heads = Heads(monkeypatch)
    # The tree diffs this process works out itself (the head start's are its survey's).
    diffed: list[str] = []
    tree_changes = pipeline_module.tree_changes

    def counted(old: pygit2.Tree, new: pygit2.Tree, inventory_dir: str) -> dict[str, str | None]:
        diffed.append(str(new.id))
        return tree_changes(old, new, inventory_dir)

    monkeypatch.setattr(pipeline_module, "tree_changes", counted)

    def both(*more: str) -> list[Any]:
        outs = []
        for base in (with_head, without):
            heads.use(base == with_head)
            out = publish_json(repo, base, capsys, *more)
            # (what differs: where)
            out["roots"] = [Path(r).relative_to(base) for r in out.pop("roots")]
            for d in out["drift"]:
                d["root"] = Path(d["root"]).relative_to(base)
            outs.append(out)
        return outs

    a, b = both()
    assert a == b and a["already_published"] is False
    assert heads.taken == [None, None]  # (nothing published there yet: nothing to lock)
    # The published commit again; a file touched by hand in each; a one-device commit; a
    # file put there by hand (pruned). Each time the same output and the same roots.
    a, b = both()
    assert a == b and a["already_published"] is True
    head = heads.taken[-2]
    assert head is not None and head.state_dir == with_head / "state"
    assert head.survey is not None
    for base in (with_head, without):
        os.utime(base / "http" / f"fv{generated_mac(2)}.conf", ns=(1, 1))
    a, b = both()
    assert a == b and {d["name"] for d in a["drift"]} == {f"fv{generated_mac(2)}.conf"}
    repo.commit({device_path(4): device_yaml(4, display="Lobby")}, "one device")
    diffed.clear()
    a, b = both()
    assert a == b and [w["name"] for w in a["written"]] == [f"fv{generated_mac(4)}.conf"]
    # With the head start, the survey's process diffed the trees; without, this one.
    assert diffed == [str(repo.repo.revparse_single("main").peel(pygit2.Tree).id)]
    for base in (with_head, without):
        (base / "tftp" / "stray.conf").write_bytes(b"?")
    a, b = both("--prune-unknown")
    assert a == b
    assert served_bytes(with_head) == served_bytes(without)
    assert not (with_head / "tftp" / "stray.conf").exists()
    assert all(h is not None and h.survey is not None for h in heads.taken[2::2])


def test_the_tree_diff_worked_out_ahead_is_given_only_for_what_was_asked(
    tmp_path: Path, repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish_json(repo, tmp_path, capsys)["already_published"] is False
    published = str(repo.repo.revparse_single("main").id)
    repo.commit({device_path(4): device_yaml(4, display="Lobby")}, "one device")
    new = repo.repo.revparse_single("main").peel(pygit2.Commit)
    old = repo.repo[published]
    assert isinstance(old, pygit2.Commit)
    expected = tree_changes(old.tree, new.tree, "inventory")
    assert list(expected) == [device_path(4)]
    state = str(tmp_path / "state")
    asked = headstart.DiffAsked(str(repo.path), "main", "inventory")
    with headstart.head_start(state, asked) as head:
        assert head is not None and head.diff_of == (published, "inventory")
        assert head.diff(published, str(new.id), "inventory") == expected
        # Another commit to publish, from, or another inventory directory: not this one.
        assert head.diff(published, published, "inventory") is None
        assert head.diff(str(new.id), str(new.id), "inventory") is None
        assert head.diff(published, str(new.id), "other") is None
    # A revision that names nothing, or no diff asked: none, and the survey goes on.
    for diff in (headstart.DiffAsked(str(repo.path), "no-such-rev", "inventory"), None):
        with headstart.head_start(state, diff) as head:
            assert head is not None and head.survey is not None
            assert head.diff(published, str(new.id), "inventory") is None
            assert head.survey.got(str(tmp_path / "http")) == ([], [], [])


def test_the_head_start_holds_the_lock_and_lets_a_busy_one_be(
    tmp_path: Path, repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert publish_json(repo, tmp_path, capsys)["already_published"] is False
    state = tmp_path / "state"
    with headstart.head_start(str(state)) as head:
        assert head is not None and head.state_dir == state
        # Held: another process cannot publish there meanwhile.
        other = subprocess.run(
            [sys.executable, "-m", "gitprov", *base_argv(repo, tmp_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ},
            check=False,
            timeout=120,
        )
        assert other.returncode != 0
        assert f"another publish is running on {state} (pid {os.getpid()})" in other.stderr
        # And this process, busy: no head start, and the publish says so as it would.
        with headstart.head_start(str(state)) as second:
            assert second is None
    with headstart.head_start(str(state)) as again:
        assert again is not None  # (let go when the first block ended)
    # No state dir given, or nothing published there: nothing is taken, nothing made.
    with headstart.head_start(None) as none:
        assert none is None
    with headstart.head_start(str(tmp_path / "fresh")) as fresh:
        assert fresh is None
    assert not (tmp_path / "fresh").exists()


def test_a_head_start_in_another_state_dir_is_left_to_its_holder(
    tmp_path: Path, repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    """A head start whose state dir the commit does not publish to (the caller guessed
    wrong) is not used: the publish takes its own lock, and the other stays held."""
    from gitprov.app import Session

    first, second = tmp_path / "first", tmp_path / "second"
    for base in (first, second):
        assert publish_json(repo, base, capsys)["already_published"] is False
    repo.commit({device_path(4): device_yaml(4, display="Lobby")}, "one device")
    config = _config(second)
    with headstart.head_start(str(first / "state")) as head:
        assert head is not None
        session = Session(repo.path)
        result = session.publish("main", config, head=head)
        assert result.state_dir == second / "state"
        assert [a.name for a in result.written] == [f"fv{generated_mac(4)}.conf"] * 2
        with headstart.head_start(str(first / "state")) as busy:
            assert busy is None  # (still held by this block)


def _config(base: Path) -> Any:
    from gitprov.publisher_config import PublisherConfig

    return PublisherConfig(
        http_roots=(str(base / "http"),),
        tftp_roots=(str(base / "tftp"),),
        state_dir=str(base / "state"),
    )


def test_a_head_start_through_another_name_of_the_state_dir_is_its_own(
    tmp_path: Path, repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lock taken through a link to the state dir is the state dir's: the publish
    uses it (taking it again would wait for this very process)."""
    from gitprov.app import Session

    assert publish_json(repo, tmp_path, capsys)["already_published"] is False
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "state")
    config = _config(tmp_path)
    for rev in ("main", "one device"):
        if rev != "main":
            repo.commit({device_path(4): device_yaml(4, display="Lobby")}, rev)
        with headstart.head_start(str(alias)) as head:
            assert head is not None and head.survey is not None
            result = Session(repo.path).publish("main", config, head=head)
        assert result.state_dir == tmp_path / "state"
        assert result.already_published is (rev == "main")
