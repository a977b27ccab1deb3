"""Versions across history (DESIGN.md invariant 2), against an oracle written from the
definition: version = floor(head) + first-parent depth of the newest commit at which the
device's rendered content (version line excluded) differs from that commit's first parent;
invalid commits were never published and change nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
import pytest

from gitprov.compile import placeholder_resolver
from gitprov.formats import flyingvoice
from gitprov.pipeline import Pipeline
from gitprov.version import VersionCache, compute_states, versions
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
    chain = [head]
    while chain[-1].parents:
        chain.append(chain[-1].parents[0])
    chain.reverse()
    contents: list[dict[str, bytes]] = []
    for c in chain:
        got = rendered(repo, c)
        contents.append(got if got is not None else (contents[-1] if contents else {}))
    p = Pipeline(repo)
    loaded = p.load(p.source(head))
    assert loaded.inventory is not None
    floor = loaded.inventory.fleet.version_floor
    out = {}
    for mac in contents[-1]:
        for i in range(len(chain) - 1, -1, -1):
            before = contents[i - 1].get(mac) if i > 0 else None
            if contents[i].get(mac) != before:
                out[mac] = floor + i + 1
                break
    return out


def computed(
    repo: pygit2.Repository, head: pygit2.Commit, cache: Path | None = None
) -> dict[str, int]:
    p = Pipeline(repo, cache_dir=cache)
    loaded = p.load(p.source(head))
    assert loaded.inventory is not None
    return {mac: v.version for mac, v in p.versions(head, loaded.inventory).items()}


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
    # Depths on the first-parent chain, counted by hand from the fixture:
    # 1 example, 2 rename A, 3 dnd B, 4 doc C, 5 invalid, 6 fix, 7 office, 8 revert B,
    # 9 main moves on (A), 10 merge (C, D), 11 floor 5000, 12 remove D, 13 re-add D.
    r, heads = history
    got = computed(r.repo, commit_at(r.repo, heads[-1]))
    assert got == {
        "0021f2011b19": 5000 + 9,  # A: office (7), then its own edit (9)
        "0021f2011b20": 5000 + 8,  # B: office (7), revert (8)
        "0021f2a0c001": 5000 + 10,  # C: merged change; the doc-only commit 4 changed nothing
        "0021f2a0c002": 5000 + 13,  # D: re-added
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


def test_cold_equals_cached(history: tuple[GitRepo, list[str]], tmp_path: Path) -> None:
    r, heads = history
    cache = tmp_path / "cache"
    for h in heads:  # warm the cache commit by commit, as a watcher would
        head = commit_at(r.repo, h)
        if rendered(r.repo, head) is not None:
            computed(r.repo, head, cache)
    assert any(cache.rglob("*.json"))
    head = commit_at(r.repo, heads[-1])
    assert computed(r.repo, head, cache) == computed(r.repo, head, None)


def test_cache_is_never_the_truth(history: tuple[GitRepo, list[str]], tmp_path: Path) -> None:
    r, heads = history
    head = commit_at(r.repo, heads[-1])
    cache = tmp_path / "cache"
    truth = computed(r.repo, head, cache)
    for f in cache.rglob("*.json"):
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


def test_compute_states_treats_invalid_commits_as_unchanged(example_repo: GitRepo) -> None:
    r = example_repo
    first = commit_at(r.repo, r.repo.head.target)
    bad = commit_at(r.repo, r.commit({C: b"mac: [\n"}, "broken"))
    digests = {str(first.id): {"m": "x"}, str(bad.id): None}
    state = compute_states(bad, lambda c: digests[str(c.id)])
    assert versions(state, 100) == {"m": versions(state, 100)["m"]}
    assert versions(state, 100)["m"].version == 101


def test_version_cache_ignores_other_formats(tmp_path: Path) -> None:
    cache = VersionCache(tmp_path, "salt")
    cache.store("abc", {"m": ("d", 3, "c")})
    assert cache.load("abc") == {"m": ("d", 3, "c")}
    assert VersionCache(tmp_path, "other").load("abc") is None
