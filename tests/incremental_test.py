"""Validating commit after commit in one Pipeline (whose rules keep what they derived from
each file) gives exactly the problems that a fresh Pipeline finds for each commit."""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping

import pygit2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitprov.errors import Problem
from gitprov.inventory import DEVICE, load_documents, stem
from gitprov.pipeline import Pipeline
from gitprov.rules._facts import Facts, Index
from gitprov.version import first_parent_chain
from gitprov.yamldoc import Document
from tests.fixtures.fleet import BASE_PROFILE, base_profile, device_path, device_yaml, fleet_files
from tests.fixtures.gitrepo import GitRepo
from tests.rules.lint import MemorySource, inventory

FLEET = "inventory/gitprov.yaml"
SECRETS = "inventory/secrets.yaml"
G502N = "inventory/models/G502N.yaml"
EXTRA = "inventory/devices/0021f3ffffff.yaml"
SEALED = "v1:" + "A" * 80


def _edit(files: Mapping[str, bytes], path: str, old: str, new: str) -> bytes:
    text = files[path].decode()
    assert old in text, (path, old)
    return text.replace(old, new).encode()


def _history(repo: GitRepo) -> list[tuple[str, str]]:
    """(commit, what it does) for a history that introduces and fixes each kind of
    cross-file problem, by device edits and by edits of the files devices inherit from."""
    base = fleet_files(12)
    steps: list[tuple[str, dict[str, bytes | str | None]]] = [
        ("fleet", dict(base)),
        ("duplicate MAC", {EXTRA: device_yaml(3).replace('"00:21:f3:00:00:03"', '"0021F3000003"')}),
        ("fix duplicate MAC", {EXTRA: None}),
        ("duplicate account", {device_path(5): device_yaml(5).replace("100005", "100004")}),
        ("fix duplicate account", {device_path(5): device_yaml(5)}),
        ("unknown secret", {device_path(7): device_yaml(7).replace("secret sip_", "secret x_")}),
        (
            "add it",
            {SECRETS: _edit(base, SECRETS, "secrets:\n", f"secrets:\n  x_2002: {SEALED}\n")},
        ),
        (
            "same account, other server",
            {
                device_path(9): device_yaml(9).replace("100009", "100008")
                + "params:\n  sip.server: other.example.net\n"
            },
        ),
        (
            "a profile moves the server: duplicate",
            {BASE_PROFILE: base_profile().replace("sip.example", "other.example")},
        ),
        ("profile back", {BASE_PROFILE: base_profile()}),
        ("unsafe file name", {FLEET: _edit(base, FLEET, 'file_name: "fv', 'file_name: "../fv')}),
        ("shared file name", {FLEET: _edit(base, FLEET, '"fv$(MA).conf"', '"fv$(MA:0:6).conf"')}),
        ("file name back", {FLEET: base[FLEET]}),
        ("unknown model", {G502N: None}),
        ("model back", {G502N: base[G502N]}),
        (
            "too many lines",
            {device_path(1): device_yaml(1) + "  - enabled: false\n  - enabled: false\n"},
        ),
        ("schema error", {device_path(2): device_yaml(2).replace("model: IP542N", "model: 7")}),
        ("parse error", {device_path(2): "mac: [\n"}),
        (
            "no key, parse error fixed",
            {
                FLEET: _edit(base, FLEET, "  master_key: !secret fleet_master_key\n", ""),
                device_path(2): device_yaml(2),
            },
        ),
        (
            "key back, one device fewer, one more",
            {
                FLEET: base[FLEET],
                device_path(2): None,
                device_path(40): device_yaml(40),
                device_path(1): device_yaml(1),
            },
        ),
    ]
    out = []
    for what, changes in steps:
        out.append((repo.commit(changes, what), what))
    return out


def _codes(problems: tuple[Problem, ...]) -> set[str]:
    return {p.code for p in problems}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[GitRepo, list[tuple[str, str]]]:
    repo = GitRepo(tmp_path_factory.mktemp("incremental") / "repo", bare=True)
    return repo, _history(repo)


def _commit(repo: GitRepo, commit: str) -> pygit2.Commit:
    c = repo.repo.get(commit)
    assert isinstance(c, pygit2.Commit)
    return c


def _scratch(repo: GitRepo, commit: str) -> tuple[Problem, ...]:
    return Pipeline(repo.repo).load_commit(_commit(repo, commit)).problems


def test_the_history_introduces_and_fixes_each_problem(
    history: tuple[GitRepo, list[tuple[str, str]]],
) -> None:
    repo, commits = history
    codes = [_codes(_scratch(repo, c)) - {"GP112", "GP119"} for c, _ in commits]
    expected = [
        set(),
        {"GP101", "GP105", "GP106"},  # a copy of a device: its account and path clash too
        set(),
        {"GP105"},
        set(),
        {"GP115"},
        set(),
        set(),
        {"GP105"},
        set(),
        {"GP107"},
        {"GP106"},
        set(),
        {"GP102"},
        set(),
        {"GP122"},
        {"GP013", "GP122"},
        {"GP001", "GP122"},
        {"GP118", "GP122"},
        set(),
    ]
    assert list(zip([w for _, w in commits], codes, strict=True)) == list(
        zip([w for _, w in commits], expected, strict=True)
    )


@pytest.mark.parametrize("order", ["history", "reversed", "shuffled"])
def test_one_pipeline_finds_what_fresh_ones_find(
    history: tuple[GitRepo, list[tuple[str, str]]], order: str
) -> None:
    repo, commits = history
    ids = [c for c, _ in commits]
    if order == "reversed":
        ids.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(ids)
        ids += ids[:5]  # some twice, and the last one twice in a row
        ids.append(ids[-1])
    pipeline = Pipeline(repo.repo)
    for commit in ids:
        assert pipeline.load_commit(_commit(repo, commit)).problems == _scratch(repo, commit)


def test_versions_validate_each_commit_of_the_chain_as_fresh_pipelines_do(
    history: tuple[GitRepo, list[tuple[str, str]]],
) -> None:
    repo, commits = history
    pipeline = Pipeline(repo.repo)
    head = _commit(repo, commits[-1][0])
    valid = [pipeline.state(c).valid for c in first_parent_chain(head)]
    fresh = [
        Pipeline(repo.repo).load_commit(_commit(repo, c)).inventory is not None for c, _ in commits
    ]
    assert valid == fresh
    assert pipeline.load_commit(head).problems == _scratch(repo, commits[-1][0])


# -- random histories ------------------------------------------------------------------
D = "devices/"
_MACS = ["00:21:f2:01:1b:19", "0021F2011B19", "00:21:f2:01:1b:20", "00-21-f2-01-1b-21"]
_ACCOUNTS = ["2001", "2002", "2003"]
_SECRETS = ["sip_2001", "sip_2002", "nope"]


def _device(mac: str, model: str, profile: str, account: str, secret: str, lines: int) -> str:
    text = f'mac: "{mac}"\nmodel: {model}\nprofile: {profile}\nlines:\n'
    for n in range(lines):
        text += f'  - enabled: true\n    account: "{account}{n or ""}"\n'
        text += f"    password: !secret {secret}\n"
    return text


DEVICES = st.builds(
    _device,
    st.sampled_from(_MACS),
    st.sampled_from(["IP542N", "G502N", "X1"]),
    st.sampled_from(["base", "office", "gone"]),
    st.sampled_from(_ACCOUNTS),
    st.sampled_from(_SECRETS),
    st.integers(0, 3),
)
EDITS = st.dictionaries(
    st.sampled_from(
        [
            f"{D}a.yaml",
            f"{D}b.yaml",
            f"{D}c.yaml",
            f"{D}d.yaml",
            "profiles/base.yaml",
            "profiles/office.yaml",
            "gitprov.yaml",
            "models/G502N.yaml",
        ]
    ),
    st.one_of(st.none(), DEVICES),
    min_size=1,
    max_size=3,
)
_SHARED = {
    "profiles/base.yaml": st.sampled_from(
        [
            None,
            "params:\n  sip.server: sip.example.net\n",
            'params:\n  sip.server: sip2.example.net\nlines:\n  - account: "2001"\n',
        ]
    ),
    "profiles/office.yaml": st.sampled_from([None, "extends: base\n", "extends: office\n"]),
    "gitprov.yaml": st.sampled_from(
        [
            inventory()["gitprov.yaml"],
            inventory()["gitprov.yaml"].replace("fv$(MA)", "fv$(MA:0:4)"),
            inventory()["gitprov.yaml"].replace("fv$(MA)", "../fv$(MA)"),
            inventory()["gitprov.yaml"].replace("  master_key: !secret fleet_master_key\n", ""),
        ]
    ),
    "models/G502N.yaml": st.sampled_from(
        [None, inventory()["models/G502N.yaml"], "family: flyingvoice\nline_count: 1\n"]
    ),
}


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, str | None]]:
    out = []
    for edits in draw(st.lists(EDITS, min_size=1, max_size=6)):
        step: dict[str, str | None] = {}
        for path, device in edits.items():
            step[path] = draw(_SHARED[path]) if path in _SHARED else device
        out.append(step)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories())
def test_random_histories_validate_alike(history: list[dict[str, str | None]]) -> None:
    pipeline = Pipeline(None)
    files: dict[str, str | None] = {}
    for step in history:
        files.update(step)
        source = MemorySource(inventory(files))
        assert pipeline.load(source).problems == Pipeline(None).load(source).problems


def test_an_index_reads_again_only_the_documents_that_changed() -> None:
    facts = Facts()
    read: list[str] = []

    def names(kind: str, doc: Document) -> list[tuple[str, str]]:
        read.append(doc.path)
        return [(stem(doc.path)[:10], kind)]

    d1, d2, d3 = (f"inventory/{D}0021f2011b{n}.yaml" for n in (19, 20, 21))
    before = load_documents(MemorySource(inventory()))[0]
    index = facts.index(before, "names", (DEVICE,), (), names)
    assert read == [d1, d2]
    assert sorted(index.shared) == ["0021f2011b"]
    assert [m for m, _ in index.members("0021f2011b")] == [(d1, 0), (d2, 0)]

    changed = inventory({f"{D}0021f2011b20.yaml": None, f"{D}0021f2011b21.yaml": "mac: x\n"})
    after = load_documents(MemorySource(changed))[0]
    read.clear()
    index = facts.index(after, "names", (DEVICE,), (), names)
    assert read == [d3]
    assert [m for m, _ in index.members("0021f2011b")] == [(d1, 0), (d3, 0)]

    read.clear()
    facts.index(after, "names", (DEVICE,), ("another env",), names)
    assert read == [d1, d3]


def test_index_groups_follow_additions_and_removals() -> None:
    index: Index[str, str] = Index(())
    index._add("a", [("k", "a0"), ("k", "a1"), ("x", "a2")])
    index._add("b", [("k", "b0")])
    assert list(index.shared) == ["k"]
    assert (index.count("k"), index.count("x"), index.count("y")) == (3, 1, 0)
    assert index.members("k") == [(("a", 0), "a0"), (("a", 1), "a1"), (("b", 0), "b0")]
    assert index.first("x") == (("a", 2), "a2")
    index._remove("a")
    assert list(index.shared) == []
    assert index.members("k") == [(("b", 0), "b0")]
    assert (list(index.keys()), index.values("x")) == (["k"], [])
    index._add("c", [("k", "c0")])
    index._remove("b")
    index._remove("b")
    assert (list(index.keys()), list(index.all_items())) == (["k"], ["c0"])


def test_an_index_asks_the_version_of_each_dependency_its_documents_name_now() -> None:
    """`version` is asked once per dependency named by a document now: one gone with its
    last document is not asked again, a new one is."""
    facts = Facts()
    asked: list[str] = []
    profile = {f"inventory/{D}0021f2011b{n}.yaml": "office" for n in (19, 20)}

    def depends(doc: Document) -> str:
        return profile.get(doc.path, "base")

    def version(dep: Hashable) -> Hashable:
        asked.append(str(dep))
        return dep

    def names(kind: str, doc: Document) -> list[tuple[str, str]]:
        return [(doc.path, kind)]

    def index(files: dict[str, str | None]) -> None:
        asked.clear()
        docs = load_documents(MemorySource(inventory(files)))[0]
        facts.index(docs, "n", (DEVICE,), (), names, depends=depends, version=version)

    index({})
    assert sorted(asked) == ["office"]
    profile[f"inventory/{D}0021f2011b21.yaml"] = "lab"
    index({f"{D}0021f2011b21.yaml": "mac: x\n"})
    assert sorted(asked) == ["lab", "office"]
    index({f"{D}0021f2011b21.yaml": "mac: x\n", f"{D}0021f2011b19.yaml": None})
    assert sorted(asked) == ["lab", "office"]  # 0021f2011b20 still names office
    index({f"{D}0021f2011b19.yaml": None, f"{D}0021f2011b20.yaml": None})
    assert sorted(asked) == []


def test_the_indexes_of_one_validation_hold_one_object_per_member_and_equal_item() -> None:
    """What makes a kept snapshot a third smaller to unpickle: two indexes over the same
    documents share their `(path, n)` members, equal items are one object, and an item
    that cannot be hashed is kept as it is. `settle` lets go of the table behind it."""
    facts = Facts()
    docs = load_documents(MemorySource(inventory()))[0]

    def at() -> tuple[int, ...]:
        return tuple([1, 6])  # a new tuple each time: `(1, 6)` would be one constant

    def by_name(kind: str, doc: Document) -> list[tuple[str, object]]:
        return [(doc.path, at())]

    def by_kind(kind: str, doc: Document) -> list[tuple[str, object]]:
        return [(kind, at()), (doc.path + "#list", [doc.path])]

    names = facts.index(docs, "names", (DEVICE,), (), by_name)
    kinds = facts.index(docs, "kinds", (DEVICE,), (), by_kind)
    d1, d2 = (f"inventory/{D}0021f2011b{n}.yaml" for n in (19, 20))
    assert names.first(d1)[0] is kinds.members(DEVICE)[0][0]
    assert names.first(d1)[1] is names.first(d2)[1] is kinds.first(DEVICE)[1]
    assert names.first(d1)[0] == (d1, 0) and kinds.first(d2 + "#list") == ((d2, 1), [d2])
    assert facts._interned
    facts.settle()
    assert not facts._interned
