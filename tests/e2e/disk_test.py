"""Issue 5, acceptance 2: publishing onto a full filesystem fails cleanly with a clear
error, the served files stay the last good ones, and a publish after freeing space
converges. The filesystem is a size-limited tmpfs (needs root and mount rights)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.plan import load_manifest
from tests.fixtures.fleet import changes, fleet_files
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import publish_argv

DEVICES = 60  # 60 x 2 roots of ~600-byte files: one 4 KiB tmpfs page each


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a size-limited tmpfs")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (mount: {proc.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the filesystem; returns the filler to delete later."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def built(repo: GitRepo, out: Path) -> dict[str, bytes]:
    assert main(["--repo", str(repo.path), "build", "--rev", "main", "--out", str(out)]) == 0
    return snapshot(out / "encrypted")


def test_a_full_disk_fails_cleanly_and_a_publish_after_freeing_space_converges(
    small_disk: Path, tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(fleet_files(DEVICES), "a fleet")
    http, tftp, state = small_disk / "http", small_disk / "tftp", tmp_path / "state"
    args = publish_argv(repo, http, tftp, state)
    assert main(args) == 0
    good_http, good_tftp = snapshot(http), snapshot(tftp)
    good_manifest = (state / "manifest.json").read_bytes()

    repo.commit(changes(repo.files, fleet_files(DEVICES, marker="2")), "every device changes")
    filler = fill(small_disk)
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err, err
    assert "nothing was changed, the last good files stay" in err, err
    assert "Traceback" not in err
    assert snapshot(http) == good_http and snapshot(tftp) == good_tftp  # no temp file either
    assert (state / "manifest.json").read_bytes() == good_manifest

    filler.unlink()
    assert main(args) == 0
    expected = built(repo, tmp_path / "b")
    assert snapshot(http) == expected and snapshot(tftp) == expected
    m = load_manifest(state)
    assert m is not None and m.commit == str(repo.repo.head.target) and not m.lagging()


def test_a_full_disk_under_one_target_leaves_the_others_converged(
    small_disk: Path, tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(fleet_files(DEVICES), "a fleet")
    http, tftp, state = small_disk / "http", tmp_path / "tftp", tmp_path / "state"
    args = publish_argv(repo, http, tftp, state)
    assert main(args) == 0
    good_http = snapshot(http)

    repo.commit(changes(repo.files, fleet_files(DEVICES, marker="2")), "every device changes")
    filler = fill(small_disk)
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{http}: no space left on the device; it keeps its last good files" in err, err
    expected = built(repo, tmp_path / "b")
    assert snapshot(http) == good_http
    assert snapshot(tftp) == expected
    m = load_manifest(state)
    assert m is not None and m.lagging() == (str(http),)

    filler.unlink()
    assert main(args) == 0
    assert snapshot(http) == expected and snapshot(tftp) == expected
    m = load_manifest(state)
    assert m is not None and not m.lagging()
