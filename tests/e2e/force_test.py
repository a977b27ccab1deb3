"""`publish --force` of a commit that does not descend from the published one: allowed only
when asked for, and still never lowers a version (issue 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.pipeline import Conflict, _served_version
from gitprov.plan import load_manifest
from gitprov.version import VersionInfo
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args

X = "inventory/devices/0021f2011b20.yaml"
XMAC = "0021f2011b20"


def publish(
    capsys: pytest.CaptureFixture[str], repo: GitRepo, tmp_path: Path, rev: str, *extra: str
) -> tuple[int, str]:
    code = main(
        [
            "--repo",
            str(repo.path),
            "publish",
            "--rev",
            rev,
            *root_args(tmp_path, tftp=False),
            *extra,
        ]
    )
    return code, capsys.readouterr().err


def versions(tmp_path: Path) -> dict[str, int]:
    m = load_manifest(tmp_path / "state")
    assert m is not None
    return {e.mac: e.version for e in m.files.values() if e.mac}


def test_force_publishes_an_old_branch_without_lowering_versions(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = example_repo
    a = str(r.repo.head.target)
    original = r.files[X]
    for i in range(3):  # main moves on: X gets depth 4
        r.commit({X: original.replace(b"Meeting room", f"Room {i}".encode())}, f"edit {i}")
    assert publish(capsys, r, tmp_path, "main")[0] == 0
    on_main = versions(tmp_path)
    assert on_main[XMAC] == 1004

    # A hotfix branch from the first commit: depth 2, so history alone would give X 1002.
    hotfix = r.commit(
        {X: original.replace(b"Meeting room", b"Hotfix")},
        "hotfix",
        branch="hotfix",
        parents=[a],
        base=r.files_at(a),
    )
    code, err = publish(capsys, r, tmp_path, hotfix)
    assert code == 1
    assert "not a descendant" in err and "git revert" in err
    assert versions(tmp_path) == on_main

    assert publish(capsys, r, tmp_path, hotfix, "--force")[0] == 0
    forced = versions(tmp_path)
    assert forced[XMAC] == on_main[XMAC] + 1  # new content, a new and higher version
    for mac, v in on_main.items():
        if mac != XMAC:
            assert forced[mac] == v  # same content: same version, not the lower 1001


def _forced(computed: int, body: str, served: int, served_body: str) -> int:
    info = VersionInfo(computed, computed - 1000, "c")
    conflicts: list[Conflict] = []
    got = _served_version("m", info, body, {"m": (served, served_body)}, True, conflicts)
    assert not conflicts
    return got


def test_forced_versions_never_lower_nor_reuse() -> None:
    assert _forced(1010, "new", 1004, "old") == 1010
    assert _forced(1002, "same", 1004, "same") == 1004
    assert _forced(1002, "new", 1004, "old") == 1005
    assert _forced(1004, "new", 1004, "old") == 1005
    assert _forced(1004, "new", 1004, "") == 1004  # an old manifest without bodies


def test_unforced_lower_versions_are_conflicts() -> None:
    conflicts: list[Conflict] = []
    info = VersionInfo(1002, 2, "c")
    _served_version("m", info, "new", {"m": (1004, "old")}, False, conflicts)
    _served_version("s", info, "same", {"s": (1002, "same")}, False, conflicts)
    _served_version("t", info, "new", {"t": (1002, "old")}, False, conflicts)
    assert conflicts == [Conflict("m", 1002, 1004, False), Conflict("t", 1002, 1002, False)]
