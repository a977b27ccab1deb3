"""The plan (what differs per root) and the manifest it is computed against."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitprov import dirmark, parallel
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


@pytest.mark.parametrize("read_from", ["json", "index"])
def test_a_manifest_read_from_its_index_plans_what_its_json_does(
    tmp_path: Path, read_from: str
) -> None:
    """Its entries read from the index's columns (one field of a few of them) or from
    the JSON: the same drift, the same files left alone."""
    root = tmp_path / "http"
    files = {f"f{i}.conf": b"%d" % i for i in range(6)}
    write(root, files)
    stats = {n: plan_module.stat_of(root / n) for n in files}
    m = manifest(files, {str(root): RootState("c1", stat=stats)})  # type: ignore[arg-type]
    state = tmp_path / "state"
    state.mkdir()
    data = m.to_bytes()
    (state / MANIFEST).write_bytes(data)
    plan_module.write_index(state, dataclasses.replace(m, sha256=sha(data)))
    if read_from == "json":
        (state / plan_module.INDEX).unlink()
    plan_module._LOADED.clear()
    prev = load_manifest(state)
    assert prev is not None
    assert isinstance(prev.files, plan_module.EntryTable) is (read_from == "index")
    time.sleep(0.01)  # (a rewrite's stat differs from the one recorded)
    write(root, {"f0.conf": b"edited by hand"})
    (root / "f1.conf").unlink()
    # f2 rebuilt with the same bytes (not known to be the recorded ones), f3 with others.
    wanted = {**files, "f3.conf": b"new"}
    got = plan(
        wanted.keys(),
        [root],
        prev,
        digests={n: sha(d) for n, d in wanted.items()},
        as_recorded={"f4.conf", "f5.conf"},
    )
    assert set(got.actions) == {
        FileAction(str(root), "f0.conf", Action.CHANGE),
        FileAction(str(root), "f1.conf", Action.ADD),
        FileAction(str(root), "f3.conf", Action.CHANGE),
    }
    assert got.drift == (
        Drift(str(root), "f0.conf", "changed"),
        Drift(str(root), "f1.conf", "deleted"),
    )
    assert got.unchanged == 3


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


@pytest.mark.parametrize("cpus", [2, 3])
def test_stats_checked_over_workers_are_the_stats_checked_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int
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
    forks: list[str] = []
    forked_map = parallel.forked_map

    def counted(*args: Any) -> Any:
        forks.append("pool")
        return forked_map(*args)

    class Counted(parallel.Ahead[Any, Any]):
        def __init__(self, *args: Any) -> None:
            forks.append("ahead")
            super().__init__(*args)

    monkeypatch.setattr(plan_module, "forked_map", counted)
    monkeypatch.setattr(plan_module, "Ahead", Counted)
    monkeypatch.setattr(plan_module, "STAT_PARALLEL_MIN", 10)
    monkeypatch.setattr(plan_module, "usable_cpus", lambda: cpus)
    assert [sorted(off) for off in plan_module._each_not_as_recorded(checks)] == [
        sorted(off) for off in here
    ]
    # Every root at once: with two CPUs one process forked (this one the second
    # worker), with more a pool.
    assert forks == (["ahead"] if cpus == 2 else ["pool"])


def test_a_listing_takes_known_names_for_files_and_looks_at_the_others(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, {"a.conf": b"a", "b.conf": b"b", ".hidden": b"", ".gitprov-x.tmp": b""})
    (root / "dir").mkdir()
    (root / "link.conf").symlink_to(root / "a.conf")  # served as the file it names
    (root / "dangling.conf").symlink_to(root / "nowhere")
    (root / "subdir-link").symlink_to(root / "dir")
    scanned: list[str] = []
    listed: list[str] = []
    every = plan_module._listing(root, scanned)
    assert every == {"a.conf", "b.conf", "link.conf"}
    assert plan_module._listing(root, listed, known={"a.conf", "b.conf"}) == every
    assert scanned == listed == [str(root / ".gitprov-x.tmp")]
    assert plan_module._listing(tmp_path / "none", known={"a.conf"}) == set()


def _indexed(
    tmp_path: Path, linked: bool = False, stale: tuple[str, ...] = ("gone.conf",)
) -> tuple[Path, Manifest, list[Path]]:
    """Two roots as a publish leaves them (`linked`: sharing their files, as it does on
    one filesystem), their manifest and its index; each root owing the removal of
    `stale`."""
    state = tmp_path / "state"
    state.mkdir()
    files = {f"f{i:03d}.conf": bytes([i]) * i for i in range(30)}
    roots = [tmp_path / "http", tmp_path / "tftp"]
    states = {}
    for root in reversed(roots):  # the manifest's order is not the sorted one
        if linked and root != roots[-1]:
            root.mkdir()
            for name in files:
                os.link(roots[-1] / name, root / name)
        else:
            write(root, files)
        stats = {n: plan_module.stat_of(root / n) for n in files}
        states[str(root)] = RootState("c1", stale=stale, stat=stats)  # type: ignore[arg-type]
    m = manifest(files, states)
    (state / MANIFEST).write_text(m.to_json())
    plan_module.write_index(state, m)
    return state, m, roots


def test_the_index_holds_the_roots_and_names_of_the_manifest_it_names(tmp_path: Path) -> None:
    state, m, roots = _indexed(tmp_path)
    (state / "manifest.index.json").write_text("{}")  # format 1's: removed by a write
    plan_module.write_index(state, m)
    assert not (state / "manifest.index.json").exists()
    index = plan_module.load_index(state)
    assert index is not None
    assert (index.commit, index.names, index.inputs) == (m.commit, frozenset(m.files), m.inputs)
    for key, s in m.roots.items():
        got = index.roots[key]
        assert (got.commit, got.error, got.stale) == (s.commit, s.error, s.stale)
        assert dict(got.stat) == dict(s.stat) and got.stat.keys() == s.stat.keys()

    # A name without a stat in one root has none in the index either.
    http = m.roots[str(roots[0])]
    partial = {n: v for n, v in http.stat.items() if n != "f003.conf"}
    states = {**m.roots, str(roots[0]): RootState("c1", stat=partial)}
    plan_module.write_index(state, manifest({n: b"" for n in m.files}, states))
    index = plan_module.load_index(state)
    assert index is not None and dict(index.roots[str(roots[0])].stat) == partial
    with pytest.raises(KeyError):
        index.roots[str(roots[0])].stat["f003.conf"]

    raw = (state / plan_module.INDEX).read_bytes()
    head, body = raw.split(b"\n", 1)
    damaged = bytearray(body)
    damaged[-1] ^= 1
    (state / plan_module.INDEX).write_bytes(head + b"\n" + bytes(damaged))
    assert plan_module.load_index(state) is None  # a torn body fails its sha256
    other = json.loads(head)
    other["byteorder"] = "big" if other["byteorder"] == "little" else "little"
    (state / plan_module.INDEX).write_bytes(json.dumps(other).encode() + b"\n" + body)
    assert plan_module.load_index(state) is None  # columns of another byte order
    (state / plan_module.INDEX).write_bytes(raw)
    assert plan_module.load_index(state) is not None
    (state / MANIFEST).write_text(m.to_json())  # another manifest (another inode)
    assert plan_module.load_index(state) is None


@pytest.mark.parametrize("linked", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_intact_by_the_index_is_intact_by_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, linked: bool
) -> None:
    """The index's stat columns (roots sharing their files surveyed by inode, see
    plan._twins) and the manifest's dicts (every file stat'ed) tell the same."""
    if workers == 2:  # the forked path, listings and stats in one pool
        monkeypatch.setattr(plan_module, "STAT_PARALLEL_MIN", 10)
        monkeypatch.setattr(plan_module, "usable_cpus", lambda: 2)
    state, m, roots = _indexed(tmp_path, linked)
    http = roots[0]

    def both() -> tuple[Any, Any]:
        index = plan_module.load_index(state)
        assert index is not None
        by_index = plan_module.intact(index.roots, "c1", set(index.names))
        return by_index, plan_module.intact(m.roots, "c1", set(m.files))

    assert both() == ((), ())
    (http / "theirs.conf").write_bytes(b"")
    (http / "dir").mkdir()
    (http / ".gitprov-crash.tmp").write_bytes(b"")
    assert both() == (((str(http), "theirs.conf"),),) * 2
    (http / "gone.conf").write_bytes(b"")  # a file the root owes a removal
    assert both() == (None, None)
    (http / "gone.conf").unlink()
    os.utime(http / "f004.conf", ns=(1, 1))  # touched
    assert both() == (None, None)
    os.utime(http / "f004.conf", ns=(1, m.roots[str(http)].stat["f004.conf"][1]))
    assert both() == (((str(http), "theirs.conf"),),) * 2
    (http / "f005.conf").unlink()
    (http / "f005.conf").mkdir()  # a directory where a served file was
    assert both() == (None, None)
    (http / "f005.conf").rmdir()
    assert both() == (None, None)  # gone
    assert plan_module.intact(m.roots, "c2", set(m.files)) is None  # another commit

    (http / "f005.conf").write_bytes(bytes([5]) * 5)  # as written, but its stat not recorded
    stats = {n: os.lstat(http / n) for n in m.files if n != "f003.conf"}
    recorded = {n: (st.st_size, st.st_mtime_ns, st.st_ino) for n, st in stats.items()}
    m = dataclasses.replace(m, roots={**m.roots, str(http): RootState("c1", stat=recorded)})
    (state / MANIFEST).write_text(m.to_json())
    plan_module.write_index(state, m)
    assert both() == (None, None)


def test_a_damaged_or_hostile_index_is_ignored_never_raised(tmp_path: Path) -> None:
    """Bytes flipped, cut or added anywhere, header fields of the wrong type or size, and
    bodies whose SHA-256 was made to match: the index is read as one or ignored (the
    manifest is read instead), and what is read checks without raising."""
    state, _, _ = _indexed(tmp_path)
    path = state / plan_module.INDEX
    good = path.read_bytes()
    head, body = good.split(b"\n", 1)
    fields = json.loads(head)
    rnd = random.Random(1234)

    def check(raw: bytes) -> None:
        path.write_bytes(raw)
        index = plan_module.load_index(state)
        if index is not None:
            got = plan_module.intact(index.roots, index.commit, set(index.names))
            assert got is None or isinstance(got, tuple)

    def signed(new_head: dict[str, Any], new_body: bytes) -> bytes:
        new_head = {**new_head, "sha256": hashlib.sha256(new_body).hexdigest()}
        return json.dumps(new_head).encode() + b"\n" + new_body

    for _ in range(300):
        raw = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randrange(len(raw))
            how = rnd.randrange(3)
            if how == 0:
                raw[at] ^= 1 << rnd.randrange(8)
            elif how == 1:
                del raw[at : at + rnd.randint(1, 40)]
            else:
                raw[at:at] = rnd.randbytes(rnd.randint(1, 40))
        check(bytes(raw))
        # The same damage to the body alone, its SHA-256 made to match.
        b = bytearray(body)
        at = rnd.randrange(len(b))
        b[at : at + rnd.randint(0, 30)] = rnd.randbytes(rnd.randint(0, 30))
        check(signed(fields, bytes(b)))
    odd: list[Any] = [None, -1, 0, 1, 10**30, "x", [], {}, [1, 2], {"a": 1}, 1.5, True]
    for key in fields:
        for value in odd:
            check(signed({**fields, key: value}, body))
    for value in odd:
        check(signed({**fields, "roots": {"/r": value}}, body))
        check(
            signed({**fields, "roots": {"/r": {"commit": "c1", "error": "", "stale": value}}}, body)
        )
    check(b"")
    check(b"\n")
    check(b"{}\n")
    path.write_bytes(good)
    assert plan_module.load_index(state) is not None


@pytest.mark.parametrize("process", ["done", "stopped"])
def test_a_survey_made_ahead_plans_what_a_survey_made_then_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process: str
) -> None:
    """The survey's process done before the plan asks (this process looks at nothing),
    or stopped before it did anything (this one does every part, each once, never a
    survey of its own besides): the plan is the plan of a survey made then."""
    monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 10)
    monkeypatch.setattr(plan_module, "SURVEY_PART_MIN", 4)  # (several parts a root)
    state, m, roots = _indexed(tmp_path)
    http, tftp = roots
    os.utime(http / "f004.conf", ns=(1, 1))  # touched
    (http / "f005.conf").write_bytes(b"edited by hand")
    (http / "f006.conf").unlink()
    # What the listings find besides the files recorded: a file nobody wrote, one put
    # where a new file goes, a directory, a crashed publish's temp, and the file of a
    # device no longer wanted replaced by a directory (not a file: not listed).
    (http / "stray.conf").write_bytes(b"?")
    (tftp / "new.conf").write_bytes(b"put there by hand")
    (tftp / "adir.conf").mkdir()
    temp = http / f"{plan_module.TMP_PREFIX}f001.conf{plan_module.TMP_SUFFIX}"
    temp.write_bytes(b"half")
    (tftp / "f009.conf").unlink()
    (tftp / "f009.conf").mkdir()
    (tftp / "f008.conf").unlink()  # and one already gone: nothing to remove
    wanted = {n: e.sha256_data for n, e in m.files.items() if n not in ("f008.conf", "f009.conf")}
    wanted["f007.conf"] = sha(b"new bytes")
    wanted["new.conf"] = sha(b"new")
    then = plan(wanted.keys(), roots, m, digests=wanted)
    assert {d.name for d in then.drift} == {"f004.conf", "f005.conf", "f006.conf"}
    assert ("http", "stray.conf") in {(Path(r).name, n) for r, n in then.unknown}
    removed = {(Path(a.root).name, a.name) for a in then.actions if a.action is Action.REMOVE}
    assert removed == {("http", "f008.conf"), ("http", "f009.conf")}

    real, real_listing = plan_module._not_as_recorded, plan_module._listing
    here, stuck = os.getpid(), tmp_path / "stuck"
    if process == "stopped":
        # The survey's process lists the first root, then sticks at its first stats.
        def sticks(*args: Any) -> list[str]:
            if os.getpid() != here:
                stuck.touch()
                time.sleep(60)
            return real(*args)

        monkeypatch.setattr(plan_module, "_not_as_recorded", sticks)
    surveyed = plan_module.SurveyAhead.start(state)
    assert surveyed is not None and surveyed.matches(state)
    if process == "done":
        surveyed._ahead._process.join(10)
    else:
        for _ in range(1000):
            if stuck.exists():
                break
            time.sleep(0.01)
        surveyed._ahead._process.kill()
        surveyed._ahead._process.join(10)
    assert not surveyed._ahead._process.is_alive()
    looked: list[tuple[str, str]] = []
    listed: list[Path] = []

    def spy(fd: int, names: Any, *rest: Any) -> list[str]:
        looked.extend((os.readlink(f"/proc/self/fd/{fd}"), n) for n in names)
        return real(fd, names, *rest)

    def spy_listing(root: Path, *rest: Any) -> set[str]:
        listed.append(root)
        return real_listing(root, *rest)

    # (here, not in the survey's process, forked before)
    monkeypatch.setattr(plan_module, "_not_as_recorded", spy)
    monkeypatch.setattr(plan_module, "_listing", spy_listing)
    monkeypatch.setattr(plan_module, "usable_cpus", lambda: 1)  # a survey here is seen
    try:
        ahead = plan(wanted.keys(), roots, m, digests=wanted, surveyed=surveyed, clean=True)
    finally:
        surveyed.close()
    assert ahead == then
    if process == "done":
        assert looked == [] and listed == []  # every stat and listing was the survey's
    else:
        # Every recorded file's stat here, each once; the second root's listing (the
        # first one's came before the process stuck).
        recorded = [(os.path.realpath(r), n) for r in roots for n in surveyed._tables[str(r)]]
        assert len(recorded) == 60 and sorted(looked) == sorted(recorded)
        assert listed == [Path(tftp)]
    assert not temp.exists()  # its temps are removed as a listing's are

    (state / MANIFEST).write_text(m.to_json())  # another manifest: another inode
    assert not surveyed.matches(state)
    assert plan_module.SurveyAhead.start(state) is None  # the index names the old one
    plan_module.write_index(state, m)
    monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 61)  # 2 roots x 30 files
    assert plan_module.SurveyAhead.start(state) is None  # not worth a process


@pytest.mark.parametrize("vouched", [False, True])
@pytest.mark.parametrize("linked", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_a_publish_by_change_plans_from_what_differs_what_it_plans_from_the_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, linked: bool, vouched: bool
) -> None:
    """A root surveyed ahead, its manifest read from the index and most wanted files
    carried (`as_recorded`): the plan made from the few names that differ
    (`_by_difference`; with `linked` roots, one surveyed by inode) is the plan made
    from each root's sets (every file stat'ed), whatever was done to the roots by hand.
    With `vouched`, the roots' listings were recorded (gitprov.dirmark) before the hand
    came: a root whose directory it left alone is not listed again."""
    monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 10)
    rng = random.Random(seed)
    state, m, roots = _indexed(tmp_path, linked, stale=() if vouched else ("gone.conf",))
    data = m.to_bytes()  # (as a publish writes it: its sha256 known, the index whole)
    (state / MANIFEST).write_bytes(data)
    plan_module.write_index(state, dataclasses.replace(m, sha256=sha(data)))
    plan_module._LOADED.clear()
    previous = load_manifest(state)
    assert previous is not None
    assert all(isinstance(s.stat, plan_module.StatTable) for s in previous.roots.values())
    names = sorted(previous.files)
    if vouched:
        time.sleep(dirmark.RACY_NS / 1e9)  # (a directory changed just now is not vouched for)
        index = plan_module.load_index(state)
        assert index is not None
        assert plan_module.intact(index.roots, "c1", set(names), state_dir=state) == ()
        recorded = dirmark.load(state, plan_module._manifest_identity(state))
        assert recorded.keys() == {str(r) for r in roots}
    dirs = {str(r): os.stat(r) for r in roots}
    for root in roots:  # what a hand did
        for name in rng.sample(names, rng.randint(0, 4)):
            path = root / name
            match rng.randrange(7):
                case 0:
                    os.utime(path, ns=(1, 1))
                case 1:
                    path.write_bytes(b"edited by hand")
                case 6:  # replaced, as an editor saves (in one root only)
                    (root / "edited").write_bytes(b"replaced by hand")
                    os.replace(root / "edited", path)
                case 2:
                    path.unlink()
                case 3:
                    path.unlink()
                    path.mkdir()
                case 4:
                    (root / f"stray{rng.randrange(3)}.conf").write_bytes(b"?")
                case _:  # where a new device's file goes
                    (root / "new.conf").write_bytes(b"put there by hand")
    gone = set(rng.sample(names, rng.randint(0, 3)))  # devices removed
    wanted = {n: previous.files[n].sha256_data for n in names if n not in gone}
    rebuilt = rng.sample(sorted(wanted), rng.randint(0, 3))
    for name in rebuilt:  # built again: the same bytes, or others
        if rng.random() < 0.5:
            wanted[name] = sha(b"new bytes")
    wanted["new.conf"] = sha(b"new")
    carried = {n: previous.files[n] for n in wanted if n not in rebuilt and n != "new.conf"}
    then = plan(wanted.keys(), roots, previous, digests=wanted, as_recorded=carried.keys())
    took: list[int] = []
    real = plan_module._by_difference

    def spy(*args: Any) -> dict[str, Any]:
        found = real(*args)
        took.append(len(found))
        return found

    monkeypatch.setattr(plan_module, "_by_difference", spy)
    surveyed = plan_module.SurveyAhead.start(state)
    assert surveyed is not None
    # A root is listed (or scanned) unless recorded and its directory left alone.
    unchanged = {
        k for k, st in dirs.items() if (st.st_mtime_ns, st.st_ctime_ns) == _times(os.stat(k))
    }
    assert {k for k, first, _ in surveyed._parts if first < 0} == (
        {str(r) for r in roots} - unchanged if vouched else {str(r) for r in roots}
    )
    try:
        ahead = plan(
            wanted.keys(),
            roots,
            previous,
            digests=wanted,
            as_recorded=carried.keys(),
            surveyed=surveyed,
        )
    finally:
        surveyed.close()
    assert ahead == then
    assert {r: dict(s) for r, s in ahead.intact.items()} == {
        r: dict(s) for r, s in then.intact.items()
    }
    assert took == [2]  # (both roots, from what differs)


def _times(st: os.stat_result) -> tuple[int, int]:
    return st.st_mtime_ns, st.st_ctime_ns


def test_a_survey_ahead_of_a_root_gone_plans_what_a_survey_made_then_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 10)
    state, m, roots = _indexed(tmp_path)
    shutil.rmtree(roots[0])
    wanted = {n: e.sha256_data for n, e in m.files.items()}
    then = plan(wanted.keys(), roots, m, digests=wanted)
    assert len([d for d in then.drift if d.kind == "deleted"]) == len(m.files)
    surveyed = plan_module.SurveyAhead.start(state)
    assert surveyed is not None
    try:
        assert plan(wanted.keys(), roots, m, digests=wanted, surveyed=surveyed) == then
    finally:
        surveyed.close()


def test_a_survey_ahead_that_fails_is_made_again_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 10)
    state, m, roots = _indexed(tmp_path)
    (roots[1] / "f009.conf").write_bytes(b"edited by hand")
    wanted = {n: e.sha256_data for n, e in m.files.items()}
    then = plan(wanted.keys(), roots, m, digests=wanted)
    assert [(Path(d.root).name, d.name) for d in then.drift] == [("tftp", "f009.conf")]

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise OSError("in the forked process")

    real = plan_module._survey
    monkeypatch.setattr(plan_module, "_survey", fails)
    surveyed = plan_module.SurveyAhead.start(state)
    monkeypatch.setattr(plan_module, "_survey", real)
    assert surveyed is not None
    try:
        assert plan(wanted.keys(), roots, m, digests=wanted, surveyed=surveyed) == then
    finally:
        surveyed.close()
