"""DESIGN.md invariant 7 in a running publisher: a one-device change compiles, renders and
encrypts that device only; everything else is reused byte for byte."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from gitprov.catalog import load_catalog
from gitprov.compile import Compiler, DeviceConfig, compile_device
from gitprov.errors import GitprovError, Problem
from gitprov.inventory import Device
from gitprov.pipeline import BOOTSTRAP, Pipeline, secret_resolver
from gitprov.source import WorktreeSource
from gitprov.version import ABSENT
from tests.fixtures.fleet import device_path, device_yaml, fleet_files, generated_mac
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.inventory import sealed_secrets, write_tree
from tests.formats.flyingvoice_test import DEVICE, FLEET, MODEL

B = "inventory/devices/0021f2011b20.yaml"


def head(repo: GitRepo) -> pygit2.Commit:
    c = repo.repo.get(repo.repo.head.target)
    assert isinstance(c, pygit2.Commit)
    return c


@pytest.mark.parametrize("published", [False, True])
def test_second_build_compiles_only_the_changed_device(
    example_repo: GitRepo, private_key: str, monkeypatch: pytest.MonkeyPatch, published: bool
) -> None:
    compiled: list[str] = []
    real = Compiler.compile

    def counting(self: Compiler, device: Device) -> DeviceConfig:
        compiled.append(device.mac)
        return real(self, device)

    monkeypatch.setattr(Compiler, "compile", counting)
    p = Pipeline(example_repo.repo)
    first = p.build(head(example_repo), private_key)
    assert sorted(compiled) == sorted(f.mac for f in first.files)  # each device once
    example_repo.commit({B: example_repo.files[B].replace(b"Meeting room", b"Board room")}, "x")
    compiled.clear()
    # What a watcher's next build is told: the first build's files were served.
    served = {f.mac: (f.version, f.body_sha256) for f in first.files} if published else None
    second = p.build(head(example_repo), private_key, served)
    # Once for the digest, the version and the file alike.
    assert compiled == ["0021f2011b20"]
    before = {f.mac: f.data for f in first.files}
    after = {f.mac: f.data for f in second.files}
    assert {m for m in after if after[m] != before[m]} == {"0021f2011b20"}


def test_a_fresh_pipeline_builds_the_same_bytes(example_repo: GitRepo, private_key: str) -> None:
    warm = Pipeline(example_repo.repo)
    warm.build(head(example_repo), private_key)
    example_repo.commit({B: example_repo.files[B].replace(b"Meeting room", b"Board room")}, "x")
    reused = warm.build(head(example_repo), private_key)
    fresh = Pipeline(example_repo.repo).build(head(example_repo), private_key)
    assert [(f.name, f.data) for f in reused.files] == [(f.name, f.data) for f in fresh.files]


@pytest.mark.parametrize("char", ["\n", "\x1b", "\u202e"])
def test_a_secret_holding_a_control_character_is_refused_not_rendered(
    tmp_path: Path, char: str
) -> None:
    # Validation cannot look inside a sealed value: the resolver is where GP108's rule holds.
    private, secrets_yaml = sealed_secrets({"sip_23103": f"s3cr{char}et"})
    files = {"inventory/gitprov.yaml": FLEET, "inventory/models/IP542N.yaml": MODEL}
    files["inventory/devices/0021f2011b19.yaml"] = DEVICE
    write_tree(tmp_path, {**files, "inventory/secrets.yaml": secrets_yaml})
    inv = Pipeline(None).load(WorktreeSource(tmp_path)).inventory
    assert inv is not None
    with pytest.raises(GitprovError) as caught:
        compile_device(inv.devices[0], inv, load_catalog(), secret_resolver(inv, private))
    assert type(caught.value) is GitprovError  # exit 1: a problem of the inventory
    assert "'sip_23103'" in caught.value.message and "s3cr" not in caught.value.message
    assert "gitprov secrets set sip_23103" in caught.value.hint


def _with_floor(files: dict[str, bytes], floor: int) -> dict[str, bytes]:
    path = "inventory/gitprov.yaml"
    text = files[path].replace(b"version_floor: 1000\n", f"version_floor: {floor}\n".encode())
    assert text != files[path] or floor == 1000
    return {**files, path: text}


def test_validating_a_head_reads_no_ancestor_when_its_floor_is_the_highest(
    tmp_path: Path,
) -> None:
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(20)
    repo.commit(files, "fleet")
    for i in range(15):
        repo.commit({device_path(i): device_yaml(i, display=f"desk {i}")}, f"desk {i}")
    top = head(repo)
    fresh = Pipeline(repo.repo)
    problems = fresh.load_commit(top).problems
    # The head's own files and one gitprov.yaml: no ancestor is validated.
    assert fresh.parse_cache.misses <= sum(1 for p in files if p.endswith(".yaml")) + 1
    exact = Pipeline(repo.repo)
    assert problems == exact.load(exact.source(top), exact.history_floor(top.parent_ids)).problems


@pytest.mark.parametrize("high_floor_valid", [True, False])
def test_a_lowered_floor_is_checked_against_the_valid_history_only(
    tmp_path: Path, high_floor_valid: bool
) -> None:
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(3)
    repo.commit(files, "fleet")
    raised = _with_floor(files, 5000)
    if not high_floor_valid:
        # Declares 5000 but does not validate: the history's floor stays 1000.
        raised[device_path(1)] = device_yaml(1).replace("mac:", "mac: [").encode()
    repo.commit(raised, "raise")
    repo.commit(files, "back to 1000")
    repo.commit({device_path(2): device_yaml(2, display="lobby")}, "a change")
    codes = [p.code for p in Pipeline(repo.repo).load_commit(head(repo)).problems]
    assert ("GP113" in codes) is high_floor_valid


def test_a_childs_evaluation_says_which_digests_changed(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(12)
    parent = repo.commit(files, "fleet")
    child = repo.commit(
        {device_path(3): device_yaml(3, display="lobby"), device_path(5): None}, "two devices"
    )
    p = Pipeline(repo.repo)
    old, new = repo.repo.get(parent), repo.repo.get(child)
    assert isinstance(old, pygit2.Commit) and isinstance(new, pygit2.Commit)
    before, after = p.evaluate(old, 0), p.evaluate(new, 0)
    assert before is not None and after is not None and after.changed is not None
    # Exactly what the rule would find by comparing the whole fleet, and no more devices.
    diff = {
        k: after.digests.get(k, ABSENT) for k, _ in after.digests.items() ^ before.digests.items()
    }
    assert {k: v for k, v in after.changed.items() if before.digests.get(k, ABSENT) != v} == diff
    assert set(diff) == {generated_mac(3), generated_mac(5)}
    assert set(after.changed) <= set(diff) | {BOOTSTRAP}


def _blobs_under(files: dict[str, bytes], prefix: str) -> dict[str, str]:
    """The oracle: each file under `prefix`, and one in the inventory directory's place
    (listed for validation to name it, GP010), with its blob id, from the file dicts."""
    return {
        p: str(pygit2.hash(d))
        for p, d in files.items()
        if not prefix or p.startswith(prefix) or p == prefix[:-1]
    }


@pytest.mark.parametrize("inventory_dir", ["inventory", "deploy/site-a/inventory", ""])
def test_the_changed_paths_are_the_difference_of_the_two_listings(
    tmp_path: Path, inventory_dir: str
) -> None:
    prefix = inventory_dir + "/" if inventory_dir else ""
    repo = GitRepo(tmp_path / "repo", bare=True)
    steps: list[dict[str, bytes | None]] = [
        {prefix + "devices/a.yaml": b"a", prefix + "profiles/p.yaml": b"p", "README.md": b"r"},
        {"README.md": b"only outside the inventory", "docs/x.md": b"x"},
        {prefix + "devices/a.yaml": b"a2", prefix + "devices/site/b.yaml": b"b"},
        {prefix + "profiles/p.yaml": None, prefix + "devices/site/b.yaml": None},
    ]
    if inventory_dir:
        # The inventory directory gone, then a file in its place, then back.
        everything: dict[str, bytes | None] = {
            p: None for step in steps for p in step if p.startswith(prefix)
        }
        steps += [everything, {inventory_dir: b"a file now"}]
        steps += [{inventory_dir: None, prefix + "gitprov.yaml": b"back"}]
    p = Pipeline(repo.repo, inventory_dir=inventory_dir)
    before: dict[str, bytes] = {}
    old: pygit2.Commit | None = None
    for step in steps:
        new = repo.repo.get(repo.commit(step))
        assert isinstance(new, pygit2.Commit)
        if old is not None:
            was, now = _blobs_under(before, prefix), _blobs_under(repo.files, prefix)
            want = {k: now.get(k) for k in was.keys() | now.keys() if was.get(k) != now.get(k)}
            assert p.changes(old, new) == want
        before, old = dict(repo.files), new


def test_a_one_commit_pipeline_lets_go_of_its_indexes_and_publishes_the_same(
    tmp_path: Path,
) -> None:
    """`gitprov publish` validates one commit and exits: its pipeline drops the rules'
    indexes once the snapshot is on disk. A cache only: the same files, and a commit
    validated after it (were one) gets the same problems."""
    from gitprov.publish import Targets, publish_commit
    from tests.fixtures.gitrepo import demo_private_key

    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(12)
    base = repo.commit(files, "fleet")
    files[device_path(4)] = device_yaml(4, display="Booth").encode()
    files[device_path(7)] = device_yaml(4).encode()  # a duplicate MAC: a cross-file rule's error
    child = repo.commit(files, "a duplicate")
    served: list[dict[str, bytes]] = []
    problems: list[tuple[Problem, ...]] = []
    for one_commit in (False, True):
        where = tmp_path / f"one-{one_commit}"
        pipeline = Pipeline(repo.repo, cache_dir=where / "cache")
        pipeline.one_commit = one_commit
        head = repo.repo.get(base)
        assert isinstance(head, pygit2.Commit)
        publish_commit(
            pipeline, head, Targets((where / "http",), where / "state"), demo_private_key()
        )
        served.append({p.name: p.read_bytes() for p in (where / "http").iterdir()})
        assert pipeline.schema_cache.facts.has("document-rules") is not one_commit
        after = repo.repo.get(child)
        assert isinstance(after, pygit2.Commit)
        problems.append(pipeline.load_commit(after).problems)
    assert served[0] == served[1] and len(served[0]) >= 12
    assert problems[0] == problems[1] and any(p.is_error for p in problems[0])
