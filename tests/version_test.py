"""Versions across history (DESIGN.md invariant 2), against an oracle written from the
definition in docs/versions.md: per device, n(X) = max over parents P of n(P) (same
content) or n(P) + 1 (other content, absence included), n = 0 before the root; version =
the highest floor of the history + n; invalid commits hold their first parent's content."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pygit2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitprov import version as versioning
from gitprov.compile import placeholder_resolver
from gitprov.formats import flyingvoice
from gitprov.overlay import Fixed, Sorted
from gitprov.pipeline import Pipeline
from gitprov.version import (
    ABSENT,
    Delta,
    Evaluated,
    State,
    VersionCache,
    code_digest,
    compute_state,
)
from tests.fixtures.gitrepo import GitRepo

A = "inventory/devices/0021f2011b19.yaml"
B = "inventory/devices/0021f2011b20.yaml"
C = "inventory/devices/0021f2a0c001.yaml"
D = "inventory/devices/0021f2a0c002.yaml"
OFFICE = "inventory/profiles/office.yaml"
FLEET = "inventory/gitprov.yaml"


def commit_at(repo: pygit2.Repository, rev: object) -> pygit2.Commit:
    c = repo.get(str(rev))
    assert isinstance(c, pygit2.Commit)
    return c


def edit(repo: GitRepo, path: str, old: bytes, new: bytes) -> bytes:
    data = repo.files[path]
    assert old in data, (path, old)
    return data.replace(old, new, 1)


def rendered(repo: pygit2.Repository, commit: pygit2.Commit) -> dict[str, bytes] | None:
    """Each device's rendered body at one commit, with a fresh pipeline (no caches)."""
    p = Pipeline(repo)
    loaded = p.load(p.source(commit))
    if loaded.inventory is None:
        return None
    inv = loaded.inventory
    resolve = placeholder_resolver(inv.sealed)
    return {
        d.mac: d.doc.path.encode() + flyingvoice.body(p.compile(inv, d, resolve))
        for d in inv.devices
    }


def oracle(repo: pygit2.Repository, head: pygit2.Commit) -> dict[str, int]:
    content: dict[str, dict[str, bytes]] = {}  # commit -> mac -> body (absent: missing)
    count: dict[str, dict[str, int]] = {}  # commit -> mac -> n, removed devices included
    floor: dict[str, int] = {}

    def visit(c: pygit2.Commit) -> None:
        cid = str(c.id)
        if cid in count:
            return
        parents = list(c.parents)
        for p in parents:
            visit(p)
        got = rendered(repo, c)
        pf = max((floor[str(p.id)] for p in parents), default=0)
        if got is None:
            got = content[str(parents[0].id)] if parents else {}
            floor[cid] = pf
        else:
            floor[cid] = max(pf, _floor_of(repo, c))
        content[cid] = got
        sides = [(content[str(p.id)], count[str(p.id)]) for p in parents] or [({}, {})]
        macs = set(got).union(*(n for _, n in sides))
        count[cid] = {
            m: max(n.get(m, 0) + (0 if body.get(m) == got.get(m) else 1) for body, n in sides)
            for m in macs
        }

    visit(head)
    h = str(head.id)
    return {m: floor[h] + count[h][m] for m in content[h]}


def _floor_of(repo: pygit2.Repository, commit: pygit2.Commit) -> int:
    p = Pipeline(repo)
    loaded = p.load(p.source(commit))
    assert loaded.inventory is not None
    return loaded.inventory.fleet.version_floor


def computed(
    repo: pygit2.Repository, head: pygit2.Commit, cache: Path | None = None
) -> dict[str, int]:
    p = Pipeline(repo, cache_dir=cache)
    loaded = p.load(p.source(head))
    assert loaded.inventory is not None
    return {mac: v.version for mac, v in p.versions(head).items()}


@pytest.fixture
def history(example_repo: GitRepo) -> tuple[GitRepo, list[str]]:
    """A history with every case of issue 4: linear edits, a no-op commit, an invalid commit,
    a profile change reaching several devices, a revert, a feature branch merged, a floor
    change, a device removed and re-added."""
    r = example_repo
    heads = [str(r.repo.head.target)]

    def c(changes: dict[str, bytes | None], msg: str) -> None:
        heads.append(r.commit(changes, msg))

    c({A: edit(r, A, b"display_name: Reception\n", b"display_name: Front desk\n")}, "rename A")
    c({B: edit(r, B, b"call.dnd: true", b"call.dnd: false")}, "dnd off on B")
    c({C: edit(r, C, b"description: Warehouse fax line", b"description: Fax")}, "doc only")
    c({C: b"mac: [broken\n"}, "an invalid commit")
    c({C: r.files_at(heads[-2])[C]}, "fix the invalid commit")
    c({OFFICE: edit(r, OFFICE, b"sbc2.example.net", b"sbc3.example.net")}, "office backup proxy")
    c({B: r.files_at(heads[1])[B]}, "Revert dnd off on B")
    base = heads[-1]
    main_files = dict(r.files)
    f1 = r.commit(
        {C: edit(r, C, b'account: "3001"', b'account: "3005"')},
        "feature: C",
        branch="feature",
        parents=[base],
    )
    f2 = r.commit(
        {D: edit(r, D, b"display_name: Door", b"display_name: Gate")},
        "feature: D",
        branch="feature",
        parents=[f1],
    )
    feature_files = dict(r.files)
    r.files = main_files
    heads.append(
        r.commit(
            {A: edit(r, A, b"display_name: Reception 2", b"display_name: Desk 2")}, "main moves on"
        )
    )
    merged = dict(r.files)
    merged[C], merged[D] = feature_files[C], feature_files[D]
    heads.append(r.commit({}, "Merge branch feature", base=merged, parents=[heads[-1], f2]))
    c({FLEET: edit(r, FLEET, b"version_floor: 1000", b"version_floor: 5000")}, "raise floor")
    removed = r.files[D]
    c({D: None}, "remove D")
    c({D: removed}, "re-add D")
    return r, heads


def test_versions_match_the_definition_at_every_head(history: tuple[GitRepo, list[str]]) -> None:
    r, heads = history
    for h in heads:
        head = commit_at(r.repo, h)
        if rendered(r.repo, head) is None:
            continue
        assert computed(r.repo, head) == oracle(r.repo, head), h


def test_hand_checked_numbers(history: tuple[GitRepo, list[str]]) -> None:
    # n counts each device's own changes, over every parent of a merge (docs/versions.md):
    # 1 example: every device 1. 2 rename A: A 2. 3 dnd B: B 2. 4 C's description: not
    # rendered, no change. 5 invalid, 6 its fix: nothing changes. 7 office proxy (A, B and
    # D use office): A 3, B 3, D 2. 8 revert B's file (its content now differs from 7's):
    # B 4. feature from 8: C 2, D 3. 9 main edits A: A 4. 10 merge takes C and D from the
    # feature: C max(1 + 1, 2) = 2, D max(2 + 1, 3) = 3. 11 floor 5000. 12 remove D: 4 (not
    # served). 13 re-add D: 5, above every number it had.
    r, heads = history
    got = computed(r.repo, commit_at(r.repo, heads[-1]))
    assert got == {
        "0021f2011b19": 5000 + 4,
        "0021f2011b20": 5000 + 4,
        "0021f2a0c001": 5000 + 2,
        "0021f2a0c002": 5000 + 5,
    }


def test_monotonic_per_device(history: tuple[GitRepo, list[str]]) -> None:
    r, heads = history
    last: dict[str, int] = {}
    for h in heads:
        head = commit_at(r.repo, h)
        if rendered(r.repo, head) is None:
            continue
        now = computed(r.repo, head)
        for mac, v in now.items():
            assert v >= last.get(mac, 0), (h, mac)
        last.update(now)


@pytest.mark.parametrize("every", [1, 3, versioning.SNAPSHOT_EVERY])
def test_cold_equals_cached(
    history: tuple[GitRepo, list[str]],
    tmp_path: Path,
    every: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Snapshots at every head, at every third delta from one, or (the default) every
    # state from the deltas of a history this short, as in a fleet far larger than the
    # changes of its commits.
    monkeypatch.setattr(versioning, "SNAPSHOT_EVERY", every)
    monkeypatch.setattr(versioning, "SNAPSHOT_SHARE", 0)
    r, heads = history
    cache = tmp_path / "cache"
    for h in heads:  # warm the cache commit by commit, as a watcher would
        head = commit_at(r.repo, h)
        if rendered(r.repo, head) is not None:
            computed(r.repo, head, cache)
    snapshots = len(list(cache.rglob("*.snap")))
    assert any(cache.rglob("*.pack"))
    assert bool(snapshots) == (every < len(heads)), snapshots
    if every == 3:
        assert snapshots < len(heads) // 2
    head = commit_at(r.repo, heads[-1])
    assert computed(r.repo, head, cache) == computed(r.repo, head, None)


def test_a_child_of_a_snapshot_is_not_written_whole(
    history: tuple[GitRepo, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish of a child commit reads its parent's snapshot and one delta: writing the
    child's whole state (100,000 entries at 100,000 devices) would cost more."""
    # The history's few devices stand for a fleet far larger than a commit's change.
    monkeypatch.setattr(versioning, "SNAPSHOT_SHARE", 0)
    r, heads = history
    cache = tmp_path / "cache"
    p = Pipeline(r.repo, cache_dir=cache)
    p.version_cache.store_snapshot(heads[-2], p.state(commit_at(r.repo, heads[-2])))
    assert [f.stem for f in cache.rglob("*.snap")] == [heads[-2]]
    fresh = Pipeline(r.repo, cache_dir=cache)
    state = fresh.state(commit_at(r.repo, heads[-1]))
    assert [f.stem for f in cache.rglob("*.snap")] == [heads[-2]]
    assert fresh.version_cache.delta(heads[-1]) is not None
    again = Pipeline(r.repo, cache_dir=cache).state(commit_at(r.repo, heads[-1]))
    assert again.versions() == state.versions() == computed_state(r.repo, heads[-1])


def test_a_state_made_of_large_deltas_is_written_whole(
    history: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    """A state built from a history's first commits (every device added in them) is read
    faster from a snapshot than from those deltas: its computation keeps one, however
    few commits it went over."""
    r, heads = history
    cache = tmp_path / "cache"
    Pipeline(r.repo, cache_dir=cache).state(commit_at(r.repo, heads[0]))
    assert [f.stem for f in cache.rglob("*.snap")] == [heads[0]]


def computed_state(repo: pygit2.Repository, head: str) -> dict[str, Any]:
    return Pipeline(repo).state(commit_at(repo, head)).versions()


def test_states_come_back_from_deltas_alone(
    history: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    # Without the snapshots, each state is its first parent's plus its delta: the same
    # numbers, and nothing is evaluated again.
    r, heads = history
    cache = tmp_path / "cache"
    head = commit_at(r.repo, heads[-1])
    truth = computed(r.repo, head, cache)
    for f in cache.rglob("*.snap"):
        f.unlink()
    p = Pipeline(r.repo, cache_dir=cache)
    evaluated: list[str] = []

    def evaluate(commit: pygit2.Commit, floor_min: int) -> Evaluated | None:
        evaluated.append(str(commit.id))
        return p.evaluate(commit, floor_min)

    state = compute_state(r.repo, head, evaluate, p.version_cache)
    assert {m: v.version for m, v in state.versions().items()} == truth
    assert evaluated == []


def test_cache_is_never_the_truth(history: tuple[GitRepo, list[str]], tmp_path: Path) -> None:
    r, heads = history
    head = commit_at(r.repo, heads[-1])
    cache = tmp_path / "cache"
    truth = computed(r.repo, head, cache)
    files = [*cache.rglob("*.pack"), *cache.rglob("*.snap")]
    assert files
    for f in files:
        # Still JSON, one number off: the checksum in the header no longer matches.
        f.write_bytes(f.read_bytes().replace(b",1,", b",2,"))
    assert computed(r.repo, head, cache) == truth
    for f in files:
        f.write_text("{not json")
    assert computed(r.repo, head, cache) == truth


def test_two_clones_agree(history: tuple[GitRepo, list[str]], tmp_path: Path) -> None:
    r, heads = history
    for n in ("one", "two"):
        subprocess.run(
            ["git", "clone", "-q", "--no-checkout", str(r.path), str(tmp_path / n)],
            check=True,
            capture_output=True,
        )
    one = pygit2.Repository(str(tmp_path / "one"))
    two = pygit2.Repository(str(tmp_path / "two"))
    a = computed(one, commit_at(one, heads[-1]), tmp_path / "c1")
    b = computed(two, commit_at(two, heads[-1]), tmp_path / "c2")
    assert a == b == computed(r.repo, commit_at(r.repo, heads[-1]))


def test_invalid_commits_hold_their_first_parents_content(example_repo: GitRepo) -> None:
    r = example_repo
    first = commit_at(r.repo, r.repo.head.target)
    bad = commit_at(r.repo, r.commit({C: b"mac: [\n"}, "broken"))
    results = {str(first.id): Evaluated({"m": "x"}, 100), str(bad.id): None}
    state = compute_state(r.repo, bad, lambda c, floor_min: results[str(c.id)])
    assert not state.valid
    assert state.versions() == {"m": state.versions()["m"]}
    assert state.versions()["m"].version == 101
    assert state.versions()["m"].commit == str(first.id)


def test_version_cache_ignores_other_formats(tmp_path: Path) -> None:
    cache = VersionCache(tmp_path, "salt")
    state = State(7, "f", {"m": ("d", 3, "c"), "n": ("e", 1, "c")}, True)
    cache.store_snapshot("abc", state)
    assert VersionCache(tmp_path, "salt").state("abc") == state
    assert VersionCache(tmp_path, "other").state("abc") is None
    snap = cache.directory / "abc.snap" if cache.directory else tmp_path
    head, body = snap.read_bytes().split(b"\n", 1)
    snap.write_bytes(head.replace(b'"format":3', b'"format":2') + b"\n" + body)
    assert VersionCache(tmp_path, "salt").state("abc") is None


# Any text (a NUL, a lone surrogate: the columns are then JSON), any count of changes.
_any_text = st.text(st.characters(), max_size=6)
_snapshot_states = st.builds(
    State,
    st.integers(0, 2**70),
    _any_text,
    st.dictionaries(
        _any_text,
        st.tuples(_any_text | st.just(ABSENT), st.integers(0, 2**70), st.sampled_from("abc")),
        max_size=8,
    ),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(_snapshot_states)
def test_a_snapshot_reads_back_as_the_state_it_was_written_from(
    tmp_path_factory: pytest.TempPathFactory, state: State
) -> None:
    directory = tmp_path_factory.mktemp("cache")
    VersionCache(directory, "salt").store_snapshot("abc", state)
    back = VersionCache(directory, "salt").state("abc")
    assert back == state
    assert back is not None and dict(back.keys) == dict(state.keys)


@pytest.mark.parametrize(
    "lie",
    [
        lambda h: h.update(blocks=[*h["blocks"][:-1], h["blocks"][-1] + 8]),
        lambda h: h.update(blocks=[h["blocks"][0] + 2, h["blocks"][1] - 2, *h["blocks"][2:]]),
        lambda h: h.update(count=h["count"] + 1),
        lambda h: h.update(count=-1),
        lambda h: h.update(blocks=h["blocks"][:3]),
        lambda h: h.update(blocks=["x", 1, 2, 3]),
        lambda h: h.update(byteorder="middle"),
        lambda h: h.update(commits=[]),
    ],
)
def test_a_snapshot_whose_header_does_not_describe_its_blocks_is_not_read(
    tmp_path: Path, lie: Any
) -> None:
    """The checksum covers the blocks, not the header's word on them: a header that
    lies (rewritten by hand, its checksum made anew) gives no state, never a wrong one
    or an exception."""
    state = State(7, "f", {"m": ("d", 3, "b"), "n": ("e", 1, "c"), "o": ("g", 2, "c")}, True)
    cache = VersionCache(tmp_path, "salt")
    cache.store_snapshot("abc", state)
    snap = cache.directory / "abc.snap" if cache.directory else tmp_path
    head, body = snap.read_bytes().split(b"\n", 1)
    header = json.loads(head)
    lie(header)
    snap.write_bytes(json.dumps(header).encode() + b"\n" + body)
    assert VersionCache(tmp_path, "salt").state("abc") is None


def test_a_snapshot_reads_back_whether_or_not_its_keys_are_in_order(tmp_path: Path) -> None:
    """A snapshot's keys are written sorted and read as columns (looked up by bisection);
    one written before, in any order, is read as a dict: the same state either way."""
    state = State(7, "f", {"n": ("e", 1, "c"), "m": ("d", 3, "b"), "o": ("g", 2, "c")}, True)
    cache = VersionCache(tmp_path, "salt")
    cache.store_snapshot("abc", state)
    snap = cache.directory / "abc.snap" if cache.directory else tmp_path
    head, body = snap.read_bytes().split(b"\n", 1)
    sizes = json.loads(head)["blocks"]
    assert body[: sizes[0]] == b"m\0n\0o" and body[sizes[0] : sum(sizes[:2])] == b"d\0e\0g"
    back = VersionCache(tmp_path, "salt").state("abc")
    assert back is not None and isinstance(back.keys, Sorted)
    assert back.entry("m") == ("d", 3, "b") and back.entry("x")[0] == ABSENT
    # The digests, of one width, read in place (Fixed): looked up, none of them split.
    digests = back.keys._columns[0]
    assert isinstance(digests, Fixed) and digests._list is None
    assert back == state
    # The columns as JSON (as a snapshot that cannot be blocks is written), in another
    # order.
    columns = {"keys": ["n", "o", "m"], "digests": ["e", "g", "d"], "n": [1, 2, 3]}
    columns["by"] = [json.loads(head)["commits"].index(c) for c in ("c", "c", "b")]
    raw = json.dumps(columns).encode() + b"\n"
    header = json.loads(head)
    del header["blocks"]
    header["sha256"] = hashlib.sha256(raw).hexdigest()
    snap.write_bytes(json.dumps(header).encode() + b"\n" + raw)
    back = VersionCache(tmp_path, "salt").state("abc")
    assert back is not None and isinstance(back.keys, dict) and back == state
    assert list(back.keys) == ["n", "o", "m"]


def test_deltas_round_trip_through_packs(tmp_path: Path) -> None:
    cache = VersionCache(tmp_path, "salt")
    one = Delta("c1", (), 1000, "c1", True, {"m": ("d", 1, "c1"), "n": ("e", 1, "c1")})
    two = Delta("c2", ("c1", "x"), 1000, "c1", False, {"m": ("f", 2, "x")})
    cache.add(one)
    cache.add(two)
    cache.flush()
    again = VersionCache(tmp_path, "salt")
    assert (again.delta("c1"), again.delta("c2"), again.delta("c3")) == (one, two, None)


def test_many_packs_are_merged_into_one(tmp_path: Path) -> None:
    cache = VersionCache(tmp_path, "salt")
    deltas = [Delta(f"c{i}", (), i, "", True, {"m": ("d", i, "x")}) for i in range(40)]
    for d in deltas:
        cache.add(d)
        cache.flush()
    assert cache.directory is not None
    assert len(list(cache.directory.glob("*.pack"))) <= 16
    again = VersionCache(tmp_path, "salt")
    assert [again.delta(d.commit) for d in deltas] == deltas


def test_the_cache_is_salted_by_gitprovs_code(tmp_path: Path) -> None:
    # A changed rule (or digest, or validation) must never read states computed by the
    # old code: the salt names every .py file of the package, and nothing else.
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "version.py").write_text("def step(): return 1\n")
    (package / "sub" / "rule.py").write_text("X = 1\n")
    before = code_digest(package)
    (package / "notes.txt").write_text("not code")
    assert code_digest(package) == before
    (package / "sub" / "rule.py").write_text("X = 2\n")
    changed = code_digest(package)
    assert changed != before
    (package / "sub" / "rule.py").rename(package / "rule.py")
    assert code_digest(package) not in (before, changed)


def test_pipelines_of_other_code_use_other_caches(
    example_repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = Pipeline(example_repo.repo, cache_dir=tmp_path)
    monkeypatch.setattr(versioning, "rule", lambda: "rule-3-another")
    two = Pipeline(example_repo.repo, cache_dir=tmp_path)
    assert one.version_cache.directory != two.version_cache.directory


def test_a_history_with_its_diffs_worked_out_ahead_gives_the_same_deltas(
    history: tuple[GitRepo, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitprov import parallel
    from gitprov import pipeline as pipeline_module
    from gitprov.version import first_parent_deltas

    r, heads = history
    head = commit_at(r.repo, heads[-1])
    here: list[tuple[str, str]] = []  # the diffs this process worked out itself
    tree_changes = pipeline_module.tree_changes

    def counted(old: pygit2.Tree, new: pygit2.Tree, inventory_dir: str) -> dict[str, str | None]:
        here.append((str(old.id), str(new.id)))
        return tree_changes(old, new, inventory_dir)

    monkeypatch.setattr(pipeline_module, "tree_changes", counted)
    one = Pipeline(r.repo)
    one.parse_cache.workers = 1
    alone = first_parent_deltas(
        r.repo, head, one.evaluate, one.version_cache, ahead=one.diffs_ahead
    )
    diffs = len(here)
    assert diffs >= 10
    # Two workers, every diff given by the forked process: wait for each (the test must
    # not depend on which process is faster).
    get = parallel.Ahead.get

    def waiting(self: parallel.Ahead[Any, Any], key: Any) -> Any:
        self._recv.poll(10)
        return get(self, key)

    monkeypatch.setattr(parallel.Ahead, "get", waiting)
    monkeypatch.setattr(pipeline_module, "DIFFS_AHEAD_MIN", 1)
    here.clear()
    two = Pipeline(r.repo)
    two.parse_cache.workers = 2
    ahead = first_parent_deltas(
        r.repo, head, two.evaluate, two.version_cache, ahead=two.diffs_ahead
    )
    assert here == []
    assert ahead == alone
    assert (
        compute_state(r.repo, head, two.evaluate).versions()
        == compute_state(r.repo, head, one.evaluate).versions()
    )
