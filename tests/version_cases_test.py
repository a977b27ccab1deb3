"""The histories on which the first-parent rule served a lower or reused version, each with
its numbers worked out by hand from the rule of docs/versions.md:

    n(X) = max over parents P: n(P) (same content) or n(P) + 1 (other content, absence too)
    version = the history's highest version_floor (+ the option-66 lift) + n

The example inventory: devices A (0021f2011b19), B (0021f2011b20), X (0021f2a0c001) and
D (0021f2a0c002) are all at n = 1 in its first commit, `version_floor: 1000`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from gitprov.cli import main
from gitprov.plan import MANIFEST, load_manifest
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args

A, A_MAC = "inventory/devices/0021f2011b19.yaml", "0021f2011b19"
B, B_MAC = "inventory/devices/0021f2011b20.yaml", "0021f2011b20"
D, D_MAC = "inventory/devices/0021f2a0c002.yaml", "0021f2a0c002"
X_MAC = "0021f2a0c001"  # has no display name: never changed here
FLEET = "inventory/gitprov.yaml"


def named(repo: GitRepo, path: str, name: str) -> bytes:
    """`path` with its first line's display name replaced (a rendered change)."""
    data = repo.files[path]
    start = data.index(b"display_name: ") + len(b"display_name: ")
    end = data.index(b"\n", start)
    return data[:start] + name.encode() + data[end:]


def fleet(repo: GitRepo, old: bytes, new: bytes) -> bytes:
    data = repo.files[FLEET]
    assert old in data
    return data.replace(old, new, 1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def versions(
    capsys: pytest.CaptureFixture[str], repo: Path, rev: str = "main", *extra: str
) -> dict[str, tuple[int, str]]:
    code, out, err = run(
        capsys, "--repo", str(repo), *extra, "versions", "--rev", rev, "--format", "json"
    )
    assert code == 0, err
    return {row["mac"]: (row["version"], row["commit"]) for row in json.loads(out)}


def numbers(capsys: pytest.CaptureFixture[str], repo: Path, rev: str = "main") -> dict[str, int]:
    return {mac: v for mac, (v, _) in versions(capsys, repo, rev).items()}


def publish(
    capsys: pytest.CaptureFixture[str], repo: GitRepo, base: Path, rev: str, *extra: str
) -> tuple[int, str, str]:
    return run(
        capsys,
        "--repo",
        str(repo.path),
        "publish",
        "--rev",
        rev,
        *root_args(base, tftp=False),
        *extra,
    )


def served(base: Path) -> dict[str, int]:
    m = load_manifest(base / "state")
    assert m is not None
    return {e.mac: e.version for e in m.files.values() if e.mac}


def clone(repo: GitRepo, target: Path, *extra: str) -> Path:
    subprocess.run(
        ["git", "clone", "-q", "--no-checkout", *extra, f"file://{repo.path}", str(target)],
        check=True,
        capture_output=True,
    )
    return target


# -- 1. foxtrot --------------------------------------------------------------------------
def foxtrot(r: GitRepo) -> dict[str, str]:
    root = str(r.repo.head.target)
    root_files = dict(r.files)
    ids = {"R": root}
    for i in range(1, 6):  # M1..M5: A's display name b..f, one change each
        ids[f"M{i}"] = r.commit({A: named(r, A, f"Desk {i}")}, f"M{i}")
    main_files = dict(r.files)
    ids["F1"] = r.commit(
        {D: named(r, D, "Gate 2")}, "F1", branch="feature", parents=[root], base=root_files
    )
    merged = {**main_files, D: r.files[D]}
    ids["F2"] = r.commit(
        {},
        "Merge branch main into feature",
        branch="feature",
        parents=[ids["F1"], ids["M5"]],
        base=merged,
    )
    # The fast-forward "merge" button: main now points at the feature's merge.
    r.repo.references["refs/heads/main"].set_target(pygit2.Oid(hex=ids["F2"]))
    return ids


def test_foxtrot_merge_keeps_every_number(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    ids = foxtrot(r)
    code, _, err = publish(capsys, r, tmp_path, ids["M5"])
    assert code == 0, err
    assert served(tmp_path)[A_MAC] == 1006  # R 1, M1..M5 2..6
    # F2: A = max(n(F1) + 1 = 2, n(M5) = 6) = 6 (content f, as at M5): the first-parent
    # rule gave 1003 (depth 3). D = max(n(F1) = 2, n(M5) + 1 = 2) = 2.
    want = {A_MAC: 1006, B_MAC: 1001, D_MAC: 1002, X_MAC: 1001}
    assert numbers(capsys, r.path) == want
    assert numbers(capsys, clone(r, tmp_path / "fresh")) == want
    code, _, err = publish(capsys, r, tmp_path, "main")
    assert code == 0, err
    assert served(tmp_path) == want
    r.files = r.files_at(ids["F2"])
    r.commit({A: named(r, A, "Desk 7")}, "G")
    assert numbers(capsys, r.path)[A_MAC] == 1007


def test_log_and_versions_name_the_commit_that_set_each_number(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    ids = foxtrot(r)
    got = versions(capsys, r.path)
    assert got[A_MAC] == (1006, ids["M5"])  # set on main, brought in by the merge
    assert got[D_MAC] == (1002, ids["F1"])
    code, out, err = run(capsys, "--repo", str(r.path), "log", A_MAC)
    assert code == 0, err
    lines = out.splitlines()  # newest first
    assert len(lines) == 2
    assert lines[0].startswith(ids["M5"][:12]) and "version 1006" in lines[0]
    assert "changed" in lines[0] and f"(merged by {ids['F2'][:12]})" in lines[0]
    assert lines[1].startswith(ids["R"][:12]) and "version 1001" in lines[1]


# -- 2. floor lowered, then an ordinary commit ----------------------------------------
def test_a_lowered_floor_stays_invalid_in_later_commits(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    r.commit({FLEET: fleet(r, b"version_floor: 1000", b"version_floor: 1050")}, "raise")
    r.commit({A: named(r, A, "Desk 2")}, "A")  # A: n = 2 -> 1052
    assert publish(capsys, r, tmp_path, "main")[0] == 0
    assert served(tmp_path)[A_MAC] == 1052
    r.commit({FLEET: fleet(r, b"version_floor: 1050", b"version_floor: 1000")}, "lower")
    ordinary = r.commit({A: named(r, A, "Desk 3")}, "an ordinary change")
    code, out, _ = run(capsys, "--repo", str(r.path), "validate", "--rev", ordinary)
    assert code == 1
    assert "error[GP113]: version_floor lowered to 1000: the history already has 1050" in out
    code, _, err = publish(capsys, r, tmp_path, "main")
    assert code == 1 and "error(s)" in err
    assert served(tmp_path)[A_MAC] == 1052
    # Restored: both invalid commits held A's content of "A" (n = 2); now it changes: 3.
    r.commit({FLEET: fleet(r, b"version_floor: 1000", b"version_floor: 1050")}, "restore")
    assert numbers(capsys, r.path)[A_MAC] == 1053


# -- 3. removed by a forced publish, re-added later -------------------------------------
def test_a_device_removed_and_re_added_never_reuses_a_number(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    root = str(r.repo.head.target)
    root_files = dict(r.files)
    for i in range(8):
        r.commit({A: named(r, A, f"Desk {i}")}, f"A {i}")
    assert publish(capsys, r, tmp_path, "main")[0] == 0
    assert served(tmp_path)[A_MAC] == 1009
    gone = r.commit({A: None}, "retire A", branch="old", parents=[root], base=root_files)
    assert publish(capsys, r, tmp_path, gone)[0] == 1  # not a descendant
    code, _, err = publish(capsys, r, tmp_path, gone, "--force")
    assert code == 0, err
    assert A_MAC not in served(tmp_path)
    r.files[A] = root_files[A]
    back = r.commit({A: named(r, A, "Back again")}, "re-add A", branch="old")
    # On this branch A is 1 (root), 2 (removed), 3 (back): 1003, below the 1009 it had.
    assert numbers(capsys, r.path, back)[A_MAC] == 1003
    code, _, err = publish(capsys, r, tmp_path, back)
    assert code == 1
    assert "set `version_floor: 1007`" in err  # 1007 + 3 = 1010 > 1009
    assert A_MAC not in served(tmp_path)
    code, _, err = publish(capsys, r, tmp_path, back, "--force")
    assert code == 0, err
    assert served(tmp_path)[A_MAC] == 1010


# -- 4. shallow clones ------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["build", "--out", "{base}/out"],
        ["publish", "--http-root", "{base}/http", "--state-dir", "{base}/state"],
        ["versions"],
        ["plan", "--base", "HEAD"],
        ["log", A_MAC],
        ["blame", A_MAC],
        ["show", A_MAC, "--rev", "HEAD"],
    ],
)
def test_a_shallow_clone_is_refused(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    r = example_repo
    r.commit({A: named(r, A, "Desk 2")}, "A")
    r.commit({B: named(r, B, "Desk 3")}, "B")
    shallow = clone(r, tmp_path / "shallow", "--depth", "1")
    assert pygit2.Repository(str(shallow)).is_shallow
    base = tmp_path / "targets"
    argv = [a.format(base=base) for a in command]
    code, out, err = run(capsys, "--repo", str(shallow), *argv)
    assert code == 2, (out, err)
    assert "history is incomplete" in err
    assert "git fetch --unshallow" in err and "fetch-depth: 0" in err
    assert not base.exists()  # nothing written


def test_validate_works_in_a_shallow_clone_and_says_what_it_could_not_check(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    r.commit({A: named(r, A, "Desk 2")}, "A")
    # Depth 1 (actions/checkout's default) holds no parent: it said "checked against the
    # parent commit only", and passed a lowered floor it had compared with nothing.
    shallow = clone(r, tmp_path / "shallow", "--depth", "1")
    code, out, _ = run(capsys, "--repo", str(shallow), "validate", "--rev", "HEAD")
    assert code == 0
    assert "warning[GP113]: version_floor not checked: the history is shallow" in out
    deeper = clone(r, tmp_path / "deeper", "--depth", "2")
    code, out, _ = run(capsys, "--repo", str(deeper), "validate", "--rev", "HEAD")
    assert code == 0
    assert "warning[GP113]: version_floor checked against the parent commit only" in out


# -- 5. two inventories in one repository ----------------------------------------------
def test_two_inventories_in_one_repository_keep_their_own_numbers(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    second = {p.replace("inventory/", "second/", 1): d for p, d in r.files.items()}
    r.commit(second, "a second inventory, a copy of the first")
    second_a = A.replace("inventory/", "second/", 1)
    for i in range(3):  # only the second inventory's A changes: 1 -> 4 there
        r.commit({second_a: named(r, second_a, f"Second {i}")}, f"second A {i}")
    first = numbers(capsys, r.path)
    other = versions(capsys, r.path, "main", "--inventory-dir", "second")
    again = numbers(capsys, r.path)
    assert first == again and first[A_MAC] == 1001
    assert other[A_MAC][0] == 1004
    cache = Path(r.repo.path) / "gitprov-cache"
    assert cache.is_dir()
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    assert versions(capsys, r.path, "main", "--inventory-dir", "second") == other


# -- 6. concurrent forced publishes ---------------------------------------------------------
@pytest.mark.slow(seconds=25)
def test_concurrent_forced_publishes_never_share_a_number(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    r = example_repo
    args = root_args(tmp_path, tftp=False)
    gitprov = [sys.executable, "-m", "gitprov", "--repo", str(r.path), "publish"]
    subprocess.run([*gitprov, "--rev", "main", *args], check=True, capture_output=True)
    seen: dict[int, str] = {}  # A's version -> the body it was served with
    base = str(r.repo.head.target)
    base_files = dict(r.files)
    for round_ in range(20):
        siblings = [
            r.commit(
                {A: named(r, A, f"Round {round_} side {side}")},
                f"{round_}/{side}",
                branch=f"r{round_}s{side}",
                parents=[base],
                base=base_files,
            )
            for side in (0, 1)
        ]
        procs = [
            subprocess.Popen(
                [*gitprov, "--rev", rev, "--force", "--wait", "60", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for rev in siblings
        ]
        for proc, rev in zip(procs, siblings, strict=True):
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            line = next(ln for ln in out.splitlines() if f"  {A_MAC}  version " in ln)
            version = int(line.rsplit(" ", 1)[1])
            assert version not in seen, (round_, version)
            seen[version] = rev
        # The next round forks from the one published last.
        m = load_manifest(tmp_path / "state")
        assert m is not None
        base = m.commit
        base_files = r.files_at(base)
    assert len(seen) == 40


# -- 7. the option-66 bootstrap ----------------------------------------------------------
def test_bootstrap_versions_rise_with_their_content_and_stay_below_the_devices(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    r.commit({FLEET: fleet(r, b"\npublish:\n", b"\npublish:\n  option66: true\n")}, "option 66")
    assert publish(capsys, r, tmp_path, "main")[0] == 0
    http = tmp_path / "http"
    # Bootstrap key: absent -> present, n = 1, lift 0: the floor. Devices unchanged: 1001.
    assert (http / "IP542N.conf").read_bytes().startswith(b"DBID_DBASE_VERSION=1000\n")
    assert served(tmp_path)[A_MAC] == 1001
    r.commit({FLEET: fleet(r, b"http://127.0.0.1:8080", b"http://127.0.0.1:8081")}, "new url")
    code, _, err = publish(capsys, r, tmp_path, "main")
    assert code == 0, err
    # Bootstrap n = 2, lift 1: 1001. Each device's Profile Rule changed too (n = 2): 1003.
    boot = (http / "IP542N.conf").read_bytes()
    assert boot.startswith(b"DBID_DBASE_VERSION=1001\n") and b"127.0.0.1:8081" in boot
    assert served(tmp_path) == dict.fromkeys(served(tmp_path), 1003)
    m = load_manifest(tmp_path / "state")
    assert m is not None and m.served["bootstrap/IP542N.conf"][0] == 1001


# -- acceptance 5: roots published by the first-parent rule -------------------------------
def test_roots_of_the_old_rule_are_continued_upwards_or_refused_with_the_floor_to_set(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    for i in range(4):  # depths 2..5 change B only
        r.commit({B: named(r, B, f"Room {i}")}, f"B {i}")
    r.commit({A: named(r, A, "Desk 6")}, "A at depth 6")
    assert publish(capsys, r, tmp_path, "main")[0] == 0
    # What the first-parent rule served: floor + depth of the last change, and a manifest
    # written before it kept a record of served numbers.
    old = {A_MAC: 1006, B_MAC: 1005, D_MAC: 1001, X_MAC: 1001}
    path = tmp_path / "state" / MANIFEST
    raw = json.loads(path.read_text())
    raw.pop("served")
    for entry in raw["files"].values():
        if entry["mac"]:
            entry["version"] = old[entry["mac"]]
    path.write_text(json.dumps(raw))
    before = {p.name: p.read_bytes() for p in (tmp_path / "http").iterdir()}
    r.commit({D: named(r, D, "Gate 7")}, "D")
    # The new rule: A 2, B 5, D 2, X 1. A needs 1006 - 1002 = 4 more (same content):
    # floor 1004; then B 1009, D 1006 (new content, above 1001), X 1005.
    code, _, err = publish(capsys, r, tmp_path, "main")
    assert code == 1
    assert "set `version_floor: 1004`" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "http").iterdir()} == before
    r.commit({FLEET: fleet(r, b"version_floor: 1000", b"version_floor: 1004")}, "continue")
    code, _, err = publish(capsys, r, tmp_path, "main")
    assert code == 0, err
    now = served(tmp_path)
    assert now == {A_MAC: 1006, B_MAC: 1009, D_MAC: 1006, X_MAC: 1005}
    assert all(now[mac] >= v for mac, v in old.items())
