"""Issue 2's acceptance: from a commit on main to files in the roots, through the CLI."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.crypto import decrypt
from gitprov.formats import flyingvoice
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args

CHANGED_MAC = "0021f2011b20"
CHANGED_FILE = "inventory/devices/0021f2011b20.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(tmp_path: Path) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for root in ("http", "tftp"):
        for p in sorted((tmp_path / root).iterdir()):
            st = p.stat()
            out[f"{root}/{p.name}"] = (p.read_bytes(), st.st_ino, st.st_mtime_ns)
    return out


def device_key(capsys: pytest.CaptureFixture[str], repo: GitRepo, mac: str) -> str:
    code, out, _ = run(capsys, "--repo", str(repo.path), "key", mac)
    assert code == 0
    return out.strip()


def body(plain: bytes) -> bytes:
    """The file without its version line."""
    return b"".join(
        ln for ln in plain.splitlines(keepends=True) if not ln.startswith(b"DBID_DBASE_VERSION=")
    )


def version_of(plain: bytes) -> int:
    return int(flyingvoice.parse(plain)["DBID_DBASE_VERSION"])


def test_one_parameter_change_rewrites_one_file_and_revert_goes_higher(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = example_repo
    args = ["--repo", str(repo.path), "publish", "--rev", "main", *root_args(tmp_path)]
    assert run(capsys, *args)[0] == 0
    first = snapshot(tmp_path)
    assert len(first) == 8  # 4 devices x 2 roots
    key = device_key(capsys, repo, CHANGED_MAC)
    name = f"fv{CHANGED_MAC}.conf"
    plain1 = decrypt(first[f"http/{name}"][0], key)

    original = repo.files[CHANGED_FILE]
    changed = original.replace(b"display_name: Meeting room", b"display_name: Board room")
    assert changed != original
    repo.commit({CHANGED_FILE: changed}, "rename the meeting room")
    assert run(capsys, *args)[0] == 0
    second = snapshot(tmp_path)
    differing = {path for path in first if first[path][0] != second[path][0]}
    assert differing == {f"http/{name}", f"tftp/{name}"}
    for path in first:
        if path not in differing:
            # Not rewritten: same inode and mtime, not just the same bytes.
            assert first[path] == second[path], path
    plain2 = decrypt(second[f"http/{name}"][0], key)
    assert b"Board room" in plain2
    assert version_of(plain2) > version_of(plain1)

    repo.commit({CHANGED_FILE: original}, 'Revert "rename the meeting room"')
    assert run(capsys, *args)[0] == 0
    third = snapshot(tmp_path)
    plain3 = decrypt(third[f"http/{name}"][0], key)
    assert version_of(plain3) > version_of(plain2)
    assert body(plain3) == body(plain1)
    for path in first:
        if name not in path:
            assert first[path] == third[path], path


def test_publish_twice_writes_nothing(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--repo", str(example_repo.path), "publish", "--rev", "main", *root_args(tmp_path)]
    assert run(capsys, *args)[0] == 0
    before = snapshot(tmp_path)
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert "already published" in out
    assert snapshot(tmp_path) == before


def test_removed_device_file_is_removed(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--repo", str(example_repo.path), "publish", "--rev", "main", *root_args(tmp_path)]
    assert run(capsys, *args)[0] == 0
    example_repo.commit({CHANGED_FILE: None}, "retire the meeting room phone")
    assert run(capsys, *args)[0] == 0
    for root in ("http", "tftp"):
        names = sorted(p.name for p in (tmp_path / root).iterdir())
        assert f"fv{CHANGED_MAC}.conf" not in names
        assert len(names) == 3


def tree(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_build_is_reproducible(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"build{i}"
        # A fresh pipeline each time (no shared caches): each run is its own process image.
        code, _, _ = run(
            capsys, "--repo", str(example_repo.path), "build", "--rev", "main", "--out", str(out)
        )
        assert code == 0
        outs.append(tree(out))
    assert outs[0] == outs[1]
    assert len(outs[0]) == 8
    assert all(
        data.startswith(b"Salted__") for p, data in outs[0].items() if p.startswith("encrypted/")
    )


BROKEN_DEVICE = """\
mac: "00:21:f2:01:1b:20"
model: IP542N
serial: E3C08109000052
profile: ofice
lines:
  - enabled: true
    account: "2010"
params:
  sip.server_port: "fifty"
"""


def test_invalid_commit_is_located_and_publishes_nothing(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = example_repo
    pub = ["--repo", str(repo.path), "publish", "--rev", "main", *root_args(tmp_path)]
    assert run(capsys, *pub)[0] == 0
    before = snapshot(tmp_path)
    manifest = (tmp_path / "state" / "manifest.json").read_bytes()
    repo.commit({CHANGED_FILE: BROKEN_DEVICE}, "typos")

    code, out, _ = run(capsys, "--repo", str(repo.path), "validate", "--rev", "main")
    assert code == 1
    # Positions written by hand from BROKEN_DEVICE above (line:col, 1-based).
    assert re.search(
        rf"^{CHANGED_FILE}:4:10: error\[GP103\]: unknown profile 'ofice'", out, re.M
    ), out
    assert "did you mean 'office'?" in out
    assert re.search(
        rf"^{CHANGED_FILE}:9:20: error\[GP010\]: params.sip.server_port: "
        r"expected integer",
        out,
        re.M,
    ), out

    code, _, err = run(capsys, *pub)
    assert code == 1
    assert f"{CHANGED_FILE}:4:10" in err
    assert snapshot(tmp_path) == before
    assert (tmp_path / "state" / "manifest.json").read_bytes() == manifest
    assert not [p for p in os.listdir(tmp_path / "http") if p.startswith(".")]


def test_each_file_names_its_own_key_and_path(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a device relies on: the Profile Rule inside a file points at that same file and
    carries the key that decrypts it, and each device has its own key."""
    args = ["--repo", str(example_repo.path), "publish", "--rev", "main", *root_args(tmp_path)]
    assert run(capsys, *args)[0] == 0
    keys = set()
    for path in sorted((tmp_path / "http").iterdir()):
        key = device_key(capsys, example_repo, path.name[2:14])
        plain = decrypt(path.read_bytes(), key)
        rule = flyingvoice.parse(plain)["DBID_PROFILE_RULE"]
        m = re.fullmatch(
            r"\[--key ([a-z2-7]+)\]http://127\.0\.0\.1:8080/(fv[0-9a-f]{12}\.conf)", rule
        )
        assert m is not None, rule
        assert m.group(1) == key
        assert m.group(2) == path.name
        keys.add(key)
    assert len(keys) == 4
