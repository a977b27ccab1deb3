"""Snapshots kept between processes (gitprov.checkcache): a fresh Pipeline validating a
child of a commit validated before reads only the changed files, and the cache changes
no output: with it, without it, deleted between any two runs, or damaged."""

from __future__ import annotations

import dataclasses
import errno
import io
import mmap
import pickle
import random
import re
import shutil
import zlib
from pathlib import Path

import pygit2
import pytest

from gitprov import buckets, inventory
from gitprov.buckets import Buckets
from gitprov.checkcache import DIGEST, FORMAT, KEEP, CheckCache, Kept
from gitprov.errors import Problem
from gitprov.pipeline import BOOTSTRAP, Pipeline
from gitprov.rules._facts import Index
from tests.fixtures.fleet import (
    BASE_PROFILE,
    base_profile,
    device_path,
    device_yaml,
    fleet_files,
    generated_mac,
)
from tests.fixtures.gitrepo import GitRepo, demo_private_key
from tests.incremental_test import _history


def _commit(repo: GitRepo, cid: str) -> pygit2.Commit:
    c = repo.repo.get(cid)
    assert isinstance(c, pygit2.Commit)
    return c


Output = tuple[tuple[Problem, ...], dict[str, tuple[int, int, str]]]


def _run(repo: GitRepo, cid: str, cache: Path | None) -> Output:
    """What `validate` and `versions` print for a commit, from a fresh Pipeline (a fresh
    process, but for the caches on disk)."""
    p = Pipeline(repo.repo, cache_dir=cache)
    problems = p.load_commit(_commit(repo, cid)).problems
    versions = {k: (v.version, v.n, v.commit) for k, v in p.versions(_commit(repo, cid)).items()}
    return problems, versions


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[GitRepo, list[str]]:
    repo = GitRepo(tmp_path_factory.mktemp("checkcache") / "repo", bare=True)
    return repo, [cid for cid, _ in _history(repo)]


def test_deleting_the_cache_between_runs_changes_no_output(
    history: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    repo, commits = history
    expected = {cid: _run(repo, cid, None) for cid in commits}
    # Invalid commits are part of it: their problems and positions are compared too.
    assert sum(1 for problems, _ in expected.values() if any(p.is_error for p in problems)) > 5
    rng = random.Random(12)
    for order in (commits, list(reversed(commits)), rng.sample(commits, len(commits))):
        cache = tmp_path / f"cache-{rng.random()}"
        for cid in order:
            if rng.random() < 0.3:
                shutil.rmtree(cache, ignore_errors=True)
            assert _run(repo, cid, cache) == expected[cid], cid


def test_a_damaged_cache_changes_no_output(
    history: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    repo, commits = history
    cache = tmp_path / "cache"
    for cid in commits:
        _run(repo, cid, cache)
    kept = [f for f in cache.rglob("*") if f.is_file()]
    assert {".pickle", ".floor", ".digests"} <= {f.suffix for f in kept}
    rng = random.Random(5)
    for f in kept:
        data = f.read_bytes()
        cut = rng.randrange(len(data))
        f.write_bytes(data[:cut] + bytes([data[cut] ^ 0x55]) + data[cut + 1 :])
    for cid in commits:
        assert _run(repo, cid, cache) == _run(repo, cid, None), cid


def test_a_child_is_validated_from_the_kept_snapshot_of_its_parent(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(40)
    parent = repo.commit(files, "fleet")
    cache = tmp_path / "cache"
    Pipeline(repo.repo, cache_dir=cache).load_commit(_commit(repo, parent))
    child = repo.commit({device_path(3): device_yaml(3).replace("100003", "100004")}, "dup")

    fresh = Pipeline(repo.repo, cache_dir=cache)
    loaded = fresh.load_commit(_commit(repo, child))
    devices = sum(1 for path in files if "/devices/" in path)
    others = sum(1 for path in files if path.endswith(".yaml")) - devices
    # The fleet settings, profiles, models and secrets, and the one changed device: none
    # of the parent's unchanged device files is read.
    assert devices >= 40
    assert fresh.parse_cache.misses <= others + 1
    assert loaded.problems == Pipeline(repo.repo).load_commit(_commit(repo, child)).problems
    assert any(p.code == "GP105" for p in loaded.problems)

    # Without the cache, every file is read.
    cold = Pipeline(repo.repo)
    cold.load_commit(_commit(repo, child))
    assert cold.parse_cache.misses >= devices + others


def test_versions_of_a_child_compute_digests_of_the_changed_device_only(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(30)
    parent = repo.commit(files, "fleet")
    cache = tmp_path / "cache"
    Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, parent))
    child = repo.commit({device_path(4): device_yaml(4, display="Lobby")}, "one device")

    fresh = Pipeline(repo.repo, cache_dir=cache)
    got = fresh.versions(_commit(repo, child))
    others = sum(1 for path in files if path.endswith(".yaml") and "/devices/" not in path)
    assert fresh.parse_cache.misses <= others + 1
    want = Pipeline(repo.repo).versions(_commit(repo, child))
    assert got == want
    assert sum(1 for v in got.values() if v.commit == child) == 1


def test_a_child_builds_from_the_kept_snapshot_reading_only_what_it_changed(
    tmp_path: Path,
) -> None:
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(30)
    parent = repo.commit(files, "fleet")
    cache = tmp_path / "cache"
    Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, parent))
    child = repo.commit(
        {
            device_path(4): device_yaml(4, display="Lobby"),
            device_path(7): None,
            device_path(31): device_yaml(31),
        },
        "one device changed, one removed, one added",
    )

    # A fresh process: no device built before (the process-wide cache of devices by blob).
    inventory._DEVICES.clear()
    fresh = Pipeline(repo.repo, cache_dir=cache)
    inv = fresh.load_commit(_commit(repo, child)).inventory
    assert inv is not None
    others = sum(1 for path in files if path.endswith(".yaml") and "/devices/" not in path)
    assert fresh.parse_cache.misses <= others + 2

    inventory._DEVICES.clear()
    cold = Pipeline(repo.repo).load_commit(_commit(repo, child)).inventory
    assert cold is not None
    assert inv.devices == cold.devices  # MAC, path, blob id, model, profile, keys
    assert fresh.parse_cache.misses <= others + 2
    # A device's settings are read when asked for, and are those of its file.
    for mine, theirs in zip(inv.devices, cold.devices, strict=True):
        assert mine.doc.data == theirs.doc.data and mine.layer.params == theirs.layer.params
    assert fresh.parse_cache.misses >= len(cold.devices)

    key = demo_private_key()
    got = Pipeline(repo.repo, cache_dir=cache).build(_commit(repo, child), key)
    want = Pipeline(repo.repo).build(_commit(repo, child), key)
    assert [(f.name, f.plain_sha256, f.version) for f in got.files] == [
        (f.name, f.plain_sha256, f.version) for f in want.files
    ]


def test_versions_two_commits_past_the_kept_one_read_only_what_they_changed(
    tmp_path: Path,
) -> None:
    """The commit asked for is validated from the kept snapshot, then the one between
    (for the versions): the cross-file facts, last brought to the other one, find the
    documents that differ by path, each read alone (a lazy kind read whole to find one
    would parse the fleet: a publish two commits past the published one, 13 s more at
    100,000 devices)."""
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(30)
    parent = repo.commit(files, "fleet")
    cache = tmp_path / "cache"
    Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, parent))
    repo.commit({device_path(4): device_yaml(4, display="Lobby")}, "one device")
    child = repo.commit(
        {device_path(7): device_yaml(7, display="Hall"), device_path(31): device_yaml(31)},
        "one changed, one added",
    )
    inventory._DEVICES.clear()
    fresh = Pipeline(repo.repo, cache_dir=cache)
    # As a publish does: the commit validated, then its versions (the one between first).
    assert fresh.load_commit(_commit(repo, child)).inventory is not None
    got = fresh.versions(_commit(repo, child))
    others = sum(1 for path in files if path.endswith(".yaml") and "/devices/" not in path)
    assert fresh.parse_cache.misses <= others + 4
    assert got == Pipeline(repo.repo).versions(_commit(repo, child))


def _account(files: dict[str, bytes], i: int, account: str) -> None:
    files[device_path(i)] = device_yaml(i).replace(f'"{100000 + i}"', f'"{account}"').encode()


def test_a_profile_change_derives_again_only_the_devices_it_reaches(tmp_path: Path) -> None:
    """GP105 depends on each device's layers: a profile change re-derives the devices of
    that profile (read from the kept snapshot's blob ids), and finds the clash it makes."""
    repo = GitRepo(tmp_path / "repo", bare=True)
    office = "inventory/profiles/office.yaml"
    files = fleet_files(20)
    _account(files, 0, "777")  # office (devices 0, 1, 4, 5, …: (i // 2) % 2 == 0)
    _account(files, 2, "777")  # base
    apart = files[office] + b"  sip.server: pbx-office.example.net\n"
    first = repo.commit({**files, office: apart}, "office devices on their own server")
    clash = repo.commit({office: files[office]}, "office devices on the base server")
    apart_again = repo.commit({office: apart}, "apart again")
    cache = tmp_path / "cache"
    Pipeline(repo.repo, cache_dir=cache).load_commit(_commit(repo, first))

    def gp105(p: Pipeline, cid: str) -> list[Problem]:
        return [x for x in p.load_commit(_commit(repo, cid)).problems if x.code == "GP105"]

    inventory._DEVICES.clear()
    fresh = Pipeline(repo.repo, cache_dir=cache)
    found = gp105(fresh, clash)
    assert found == gp105(Pipeline(repo.repo), clash)
    assert [p.file for p in found] == [device_path(2)]
    office_devices = sum(
        1 for path, data in files.items() if "/devices/" in path and b"profile: office" in data
    )
    assert 10 <= office_devices < sum(1 for path in files if "/devices/" in path) - 5
    others = sum(1 for path in files if path.endswith(".yaml") and "/devices/" not in path)
    assert fresh.parse_cache.misses <= others + office_devices + 1
    # One pipeline along the history: each step from the one before.
    along = Pipeline(repo.repo, cache_dir=tmp_path / "along")
    assert [len(gp105(along, c)) for c in (first, clash, apart_again)] == [0, 1, 0]


def test_a_profile_change_that_registers_nothing_new_reads_no_device(tmp_path: Path) -> None:
    """GP105's devices depend on what their layers register (server, port, enabled and
    account aliases, each account's position), not on the layers' whole text."""
    repo = GitRepo(tmp_path / "repo", bare=True)
    office = "inventory/profiles/office.yaml"
    files = fleet_files(20)
    # Devices 0 and 4 (office) take their account from the profile: a clash written there.
    for i in (0, 4):
        files[device_path(i)] = re.sub(rb'    account: "\d+"\n', b"", files[device_path(i)])
    profile = files[office] + b'lines:\n  - enabled: true\n    account: "999"\n'
    first = repo.commit({**files, office: profile}, "office accounts from the profile")
    unrelated = profile.replace(b"example.net\n", b"other.example.net\n")
    commits = [
        repo.commit({office: unrelated}, "another SRV domain"),
        repo.commit({office: b"# moved down a line\n" + unrelated}, "a comment on top"),
        repo.commit({office: unrelated.replace(b'"999"', b'"998"')}, "another account"),
    ]
    cache = tmp_path / "cache"
    Pipeline(repo.repo, cache_dir=cache).load_commit(_commit(repo, first))
    others = sum(1 for path in files if path.endswith(".yaml") and "/devices/" not in path)

    def gp105(p: Pipeline, cid: str) -> list[tuple[str, int, int, str]]:
        got = p.load_commit(_commit(repo, cid)).problems
        return [(x.file, x.line, x.col, x.message) for x in got if x.code == "GP105"]

    reads = []
    for parent, cid in zip([first, *commits], commits, strict=False):
        Pipeline(repo.repo, cache_dir=cache).load_commit(_commit(repo, parent))
        inventory._DEVICES.clear()
        fresh = Pipeline(repo.repo, cache_dir=cache)
        found = gp105(fresh, cid)
        assert found == gp105(Pipeline(repo.repo), cid)
        assert [f[0] for f in found] == [office]
        reads.append(fresh.parse_cache.misses - others)
    # The SRV domain registers nothing: no device read. The comment moves the account the
    # clash is reported at, and the new account changes what registers: devices read.
    assert reads[0] <= 1
    assert reads[1] > 1 and reads[2] > 1
    assert (
        gp105(Pipeline(repo.repo), commits[1])[0][1]
        == gp105(Pipeline(repo.repo), commits[0])[0][1] + 1
    )


def test_versions_of_a_child_compute_digests_of_the_devices_its_layers_reach(
    tmp_path: Path,
) -> None:
    """A profile or model change compiles again the devices that inherit it, not the
    fleet; the others keep their digests (and versions)."""
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(30)
    office, g502n = "inventory/profiles/office.yaml", "inventory/models/G502N.yaml"
    commits = [repo.commit(files, "fleet")]
    domain = files[office].replace(b"example.net\n", b"office.example.net\n")
    commits.append(repo.commit({office: domain}, "office devices: another SRV domain"))
    model = files[g502n] + b"params:\n  sip.dns_srv_domain: g5.example.net\n"
    commits.append(repo.commit({g502n: model}, "G502N devices: another SRV domain"))
    reached = [_macs_with(files, b"profile: office\n"), _macs_with(files, b"model: G502N\n")]
    assert 10 < len(reached[0]) < 25 and 10 < len(reached[1]) < 25
    others = sum(1 for path in files if path.endswith(".yaml") and "/devices/" not in path)
    for n, (parent, cid, macs) in enumerate(zip(commits, commits[1:], reached, strict=False)):
        cache = tmp_path / f"cache{n}"  # the parent's digests kept, as a publish keeps them
        Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, parent))
        inventory._DEVICES.clear()
        fresh = Pipeline(repo.repo, cache_dir=cache)
        got = fresh.versions(_commit(repo, cid))
        assert got == Pipeline(repo.repo).versions(_commit(repo, cid))
        assert {mac for mac, v in got.items() if v.commit == cid} == macs
        assert fresh.parse_cache.misses <= others + 1 + len(macs)  # + the changed layer


def test_after_a_profile_change_reaching_many_devices_a_child_compiles_its_change_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One changed profile file reaches every device: the process that derives its
    digests keeps them, so that the next process, for a one-device child, compiles that
    device and not the fleet again (as it did until 64 more changes came: at 100,000
    devices, 2.7 s of every following one-device publish)."""
    from gitprov.builder import Builder

    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(120)
    commits = [repo.commit(files, "fleet")]
    commits.append(repo.commit({BASE_PROFILE: base_profile("2").encode()}, "new server"))
    one = device_path(7)
    moved = device_yaml(7).replace('"100007"', '"190007"').encode()  # (its account)
    commits.append(repo.commit({one: moved}, "device 7: another account"))
    cache = tmp_path / "cache"
    for cid in commits[:2]:  # each published by its own process, as CI does
        Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, cid))
    compiled: list[int] = []
    real = Builder.digests

    def counted(self: Builder, inv: inventory.Inventory) -> dict[str, str]:
        compiled.append(len(inv.devices))
        return real(self, inv)

    monkeypatch.setattr(Builder, "digests", counted)
    inventory._DEVICES.clear()
    got = Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, commits[2]))
    assert sum(compiled) == 1, compiled
    assert got[generated_mac(7)].commit == commits[2]
    monkeypatch.setattr(Builder, "digests", real)
    assert got == Pipeline(repo.repo).versions(_commit(repo, commits[2]))


def _macs_with(files: dict[str, bytes], line: bytes) -> set[str]:
    return {
        re.sub(r"[^0-9a-f]", "", data.split(b'mac: "')[1].split(b'"')[0].decode().lower())
        for path, data in files.items()
        if "/devices/" in path and line in data
    }


def test_versions_of_a_child_follow_a_device_file_that_changes_its_mac(tmp_path: Path) -> None:
    """The kept MAC of each device path is shared between snapshots while no device
    comes, goes or changes its MAC: here one does each, from the parent's kept digests."""
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(12)
    parent = repo.commit(files, "fleet")
    moved = files[device_path(3)].replace(b'mac: "00:21:f3:00:00:03"', b'mac: "00:21:f3:00:0a:03"')
    assert moved != files[device_path(3)]
    steps = [
        repo.commit({device_path(3): moved}, "device 3 is another box now"),
        repo.commit({device_path(5): None}, "device 5 gone"),
        repo.commit({device_path(20): device_yaml(20)}, "device 20 comes"),
        repo.commit({device_path(3): None}, "the other box is gone too"),
    ]
    along = Pipeline(repo.repo, cache_dir=tmp_path / "along")
    along.versions(_commit(repo, parent))
    for n, (before, cid) in enumerate(zip([parent, *steps], steps, strict=False)):
        want = Pipeline(repo.repo).versions(_commit(repo, cid))
        cache = tmp_path / f"cache{n}"
        Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, before))
        assert Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, cid)) == want, n
        assert along.versions(_commit(repo, cid)) == want, n  # each from the one before
    # What each step must give, whatever path computed it (the pipelines above share the
    # rule's code: an error in it would be the same in all of them).
    boxes = [
        set(along.versions(_commit(repo, c))) & {"0021f3000003", "0021f3000a03"} for c in steps
    ]
    assert boxes == [{"0021f3000a03"}, {"0021f3000a03"}, {"0021f3000a03"}, set()]


def test_the_option66_files_key_goes_when_a_change_of_models_leaves_none(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(0)
    fleet = "inventory/gitprov.yaml"
    files[fleet] = files[fleet].replace(
        b"  state_dir: var/state\n", b"  state_dir: var/state\n  option66: true\n"
    )
    parent = repo.commit(files, "fleet")
    empty: dict[str, bytes | str | None] = {
        p: None for p in files if "/devices/" in p or "/models/" in p
    }
    child = repo.commit(empty, "no devices, no models: no option-66 file")
    cache = tmp_path / "cache"
    before = Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, parent))
    assert BOOTSTRAP in before
    got = Pipeline(repo.repo, cache_dir=cache).versions(_commit(repo, child))
    assert BOOTSTRAP not in got
    assert got == Pipeline(repo.repo, cache_dir=tmp_path / "scratch").versions(_commit(repo, child))


def test_a_publish_writes_a_fleets_snapshot_once_then_its_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitprov.publish import Targets, publish_commit

    stored: list[Kept] = []
    digested: list[str] = []
    real, real_digests = CheckCache.store, CheckCache.store_digests

    def counted(self: CheckCache, kept: Kept) -> None:
        stored.append(kept)
        real(self, kept)

    def counted_digests(self: CheckCache, cid: str, *rest: dict[str, str]) -> None:
        digested.append(cid)
        real_digests(self, cid, *rest)

    monkeypatch.setattr(CheckCache, "store", counted)
    monkeypatch.setattr(CheckCache, "store_digests", counted_digests)
    repo = GitRepo(tmp_path / "repo", bare=True)
    cid = repo.commit(fleet_files(12), "fleet")
    cache = tmp_path / "cache"
    targets = Targets((tmp_path / "http",), tmp_path / "state")
    pipeline = Pipeline(repo.repo, cache_dir=cache)
    publish_commit(pipeline, _commit(repo, cid), targets, demo_private_key())
    # The indexes once, as soon as the commit is validated; the digests once, after.
    assert [(k.commit, k.digests is None) for k in stored] == [(cid, True)]
    assert digested == [cid]
    assert pipeline.checks is not None
    kept = pipeline.checks.load(cid)
    assert kept is not None and kept.macs is not None and kept.digests is not None
    # What a process without any cache derives.
    state = Pipeline(repo.repo).state(_commit(repo, cid))
    assert kept.digests == {k: e[0] for k, e in state.keys.items() if k in kept.digests}
    assert kept.digests.keys() == set(state.present())

    # The next process validates from it, reading no device, and derives no digest.
    inventory._DEVICES.clear()
    fresh = Pipeline(repo.repo, cache_dir=cache)
    assert fresh.load_commit(_commit(repo, cid)).inventory is not None
    assert fresh.parse_cache.misses <= 6  # gitprov.yaml, secrets, models, profiles


def test_an_invalid_commit_publish_refused_keeps_its_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitprov.errors import InvalidInventory
    from gitprov.publish import Targets, publish_commit

    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(12)
    files[device_path(3)] = b"mac: [not, a, mac]\n"
    cid = repo.commit(files, "a broken device")
    cache = tmp_path / "cache"
    targets = Targets((tmp_path / "http",), tmp_path / "state")
    with pytest.raises(InvalidInventory):
        publish_commit(
            Pipeline(repo.repo, cache_dir=cache), _commit(repo, cid), targets, demo_private_key()
        )
    # Publishing it again (CI retried) does not read the fleet again.
    fresh = Pipeline(repo.repo, cache_dir=cache)
    assert fresh.load_commit(_commit(repo, cid)).errors
    assert fresh.parse_cache.misses <= 6


def test_a_publish_keeps_a_snapshot_when_the_version_cache_already_had_the_state(
    tmp_path: Path,
) -> None:
    # The snapshots are gone (pruned, removed by hand, another format) but the version
    # cache is there: the publish still keeps one, with its digests, so the next process
    # validates and numbers a child from it instead of from every file, again and again.
    from gitprov.publish import Targets, publish_commit

    repo = GitRepo(tmp_path / "repo", bare=True)
    files = fleet_files(12)
    cid = repo.commit(files, "fleet")
    cache = tmp_path / "cache"
    targets = Targets((tmp_path / "http",), tmp_path / "state")

    def publish(p: Pipeline, cid: str) -> None:
        publish_commit(p, _commit(repo, cid), targets, demo_private_key())

    publish(Pipeline(repo.repo, cache_dir=cache), cid)
    shutil.rmtree(cache / "checks")
    shutil.rmtree(tmp_path / "state")
    publish(Pipeline(repo.repo, cache_dir=cache), cid)
    child = repo.commit({device_path(4): device_yaml(4, display="Lobby")}, "one device")
    inventory._DEVICES.clear()
    fresh = Pipeline(repo.repo, cache_dir=cache)
    publish(fresh, child)
    others = sum(1 for path in files if path.endswith(".yaml") and "/devices/" not in path)
    assert fresh.parse_cache.misses <= others + 1


def test_a_snapshot_is_written_as_it_is_made_and_read_back_only_whole(tmp_path: Path) -> None:
    """The file starts with the CRC-32 of the rest (written last, in the place kept for
    it); a file cut short or altered reads as no snapshot; a snapshot that cannot be
    written leaves nothing behind."""
    cache = CheckCache(tmp_path, "salt" * 8)
    kept = Kept("c" * 40, {"inventory/a.yaml": "1" * 40}, {}, {}, {"i": {"k": ("v", 1)}})
    cache.store(kept)
    [path] = cache.directory.iterdir()
    raw = path.read_bytes()
    assert raw[:8] == b"%08x" % zlib.crc32(raw[9:]) and raw[8:9] == b"\n"
    assert cache.load(kept.commit) == kept
    assert cache.load("d" * 40) is None
    path.write_bytes(raw[:-1])
    assert cache.load(kept.commit) is None
    path.write_bytes(raw[:8] + b" " + raw[9:])
    assert cache.load(kept.commit) is None
    path.write_bytes(b"")
    assert cache.load(kept.commit) is None

    path.unlink()
    unpicklable = Kept("e" * 40, {}, {}, {}, {"i": lambda: None})
    with pytest.raises((pickle.PicklingError, AttributeError)):
        cache.store(unpicklable)
    assert list(cache.directory.iterdir()) == []


def test_digests_stored_after_a_snapshot_are_read_with_it_and_pruned_with_it(
    tmp_path: Path,
) -> None:
    cache = CheckCache(tmp_path, "salt")

    def kept(n: int) -> Kept:
        return Kept(f"{n:040x}", {"a": "1"}, {}, {}, {})

    cache.store(kept(1))
    loaded = cache.load(kept(1).commit)
    assert loaded is not None and loaded.digests is None  # none stored yet
    cache.store_digests(kept(1).commit, {"mac": "d1"}, {"devices/x.yaml": "mac"})
    loaded = cache.load(kept(1).commit)
    assert loaded is not None
    assert (loaded.digests, loaded.macs) == ({"mac": "d1"}, {"devices/x.yaml": "mac"})
    # Another commit's digests are never taken for this one's.
    other = cache._file(kept(2).commit, "digests")
    cache.store(kept(2))
    other.write_bytes(cache._file(kept(1).commit, "digests").read_bytes())
    loaded = cache.load(kept(2).commit)
    assert loaded is not None and loaded.digests is None
    # Pruned with its snapshot: no digests file outlives it.
    for n in range(3, 3 + KEEP + 1):
        cache.store(kept(n))
        cache.store_digests(kept(n).commit, {}, {})
    left = {f.stem for f in cache.directory.glob("*.pickle")}
    assert {f.stem for f in cache.directory.glob("*.digests")} <= left
    assert len(left) == KEEP


def test_a_fleets_registrations_share_their_server_and_account_node(tmp_path: Path) -> None:
    """GP105's index holds every device line's registration, and a snapshot is all of it
    unpickled: one str per server and one tuple per account node, not one per line."""
    repo = GitRepo(tmp_path / "repo", bare=True)
    cid = repo.commit(fleet_files(12), "fleet")
    pipeline = Pipeline(repo.repo)
    assert not any(p.is_error for p in pipeline.load_commit(_commit(repo, cid)).problems)
    index = pipeline.schema_cache.facts._indexes["duplicate-account"]
    entries = list(index._single.items())
    assert len(entries) >= 12
    servers = {id(server) for (server, _), _ in entries}
    nodes = {id(item[3]) for _, item in entries}
    assert len(servers) == len({server for (server, _), _ in entries})
    assert len(nodes) == len({item[3] for _, item in entries})


def test_a_cache_of_many_small_buckets_changes_no_output(
    history: tuple[GitRepo, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same history as above with every kept map cut into buckets of one or two
    entries: each index and each device's facts is read in part by the next commit."""
    monkeypatch.setattr(buckets, "PER_BUCKET", 1)
    repo, commits = history
    cache = tmp_path / "cache"
    rng = random.Random(7)
    for cid in rng.sample(commits, len(commits)) + commits:
        assert _run(repo, cid, cache) == _run(repo, cid, None), cid


def _snapshot(count: int) -> Kept:
    index: Index[str, tuple[int, int]] = Index(())
    for n in range(count):
        index._add(device_path(n), [(f"mac{n}", (n, 1)), ("shared", (n, 2))])
    facts = {
        device_path(n): ("oid", f"mac{n}", "G502N", None, "", None, None) for n in range(count)
    }
    files = {path: "1" * 40 for path in facts}
    return Kept("c" * 40, files, {"devices": files}, {}, {"mac": index}, devices=facts)


def test_a_snapshots_maps_are_read_in_buckets_and_written_back_as_read(tmp_path: Path) -> None:
    cache = CheckCache(tmp_path, "salt")
    cache.store(_snapshot(3000))
    loaded = cache.load("c" * 40)
    assert loaded is not None and loaded.devices is not None
    index = loaded.indexes["mac"]
    devices = loaded.devices
    assert isinstance(devices, Buckets) and isinstance(index._keys, Buckets)
    assert isinstance(index._shared["shared"], Buckets)
    # One device's fact, one MAC and one path's keys: a bucket each, not the fleet.
    assert devices[device_path(7)][1] == "mac7"
    assert index.members("mac7") == [((device_path(7), 0), (7, 1))]
    index._remove(device_path(8))
    assert (devices.loaded, index._keys.loaded) == (1, 1) and index._single.loaded <= 2
    assert len(index._single._parts) > 10
    assert index.count("shared") == 2999

    # Written again: the buckets never unpickled as they were read, the others anew.
    again = dataclasses.replace(loaded, commit="d" * 40)
    cache.store(again)
    back = cache.load("d" * 40)
    assert back is not None and back.devices is not None
    assert dict(back.devices) == _snapshot(3000).devices
    ix = back.indexes["mac"]
    assert ix.count("mac8") == 0 and ix.count("mac9") == 1 and ix.count("shared") == 2999
    assert dict(ix._keys) == {
        p: k for p, k in _snapshot(3000).indexes["mac"]._keys.items() if p != device_path(8)
    }


def test_a_snapshot_is_read_where_files_cannot_be_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CheckCache(tmp_path, "salt")
    cache.store(_snapshot(600))

    def unmappable(*args: object, **kwargs: object) -> mmap.mmap:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(mmap, "mmap", unmappable)
    loaded = cache.load("c" * 40)
    assert loaded is not None and loaded.devices is not None
    assert dict(loaded.devices) == _snapshot(600).devices
    assert loaded.indexes["mac"].count("shared") == 600


def test_a_snapshot_cut_in_its_buckets_or_naming_maps_wrongly_reads_as_none(
    tmp_path: Path,
) -> None:
    cache = CheckCache(tmp_path, "salt")
    cache.store(_snapshot(600))
    path = cache._file("c" * 40, "pickle")
    body = path.read_bytes()[DIGEST + 1 :]

    def write(new: bytes) -> None:
        path.write_bytes(b"%08x\n" % zlib.crc32(new) + new)

    write(body[:-1])  # a bucket cut short, behind a matching CRC
    assert cache.load("c" * 40) is None
    write(body + b"\0" * 8)  # more than its maps
    assert cache.load("c" * 40) is None
    write(body)
    assert cache.load("c" * 40) is not None
    for pid in [("x",), (1, 1, 1), (0, 0, 1), (0, 10**9, 1), (0, 1, -1), "0", (0, 1.0, 1)]:
        # A snapshot whose pickle names a map by something its writer never writes.
        out = io.BytesIO()
        _Naming(out).dump(((FORMAT, "c" * 40), _Named(pid)))
        write(out.getvalue() + (1).to_bytes(8, "little") + b"}")
        assert cache.load("c" * 40) is None, pid


class _Named:
    """Pickled as the persistent id it holds, by `_Naming`."""

    def __init__(self, pid: object) -> None:
        self.pid = pid


class _Naming(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        return obj.pid if isinstance(obj, _Named) else None
