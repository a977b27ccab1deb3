"""A publish that renamed its files into the roots and then could not write its manifest
(a full state dir, a crash): the versions it served are recorded before the first rename
(STATE_DIR/served.pending.json), so no later publish serves a lower one. Before, the next
publish of the published commit took the new files for edits by hand and put the old
numbers back: 1002 served, then 1001, which every device that took 1002 ignores."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from gitprov import publish as publishing
from gitprov.cli import main
from gitprov.crypto import decrypt
from gitprov.plan import MANIFEST, load_manifest
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args

MAC = "0021f2011b20"
DEVICE = f"inventory/devices/{MAC}.yaml"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _served_version(repo: GitRepo, base: Path, capsys: pytest.CaptureFixture[str]) -> int:
    code, key, err = _run(capsys, "--repo", str(repo.path), "key", MAC)
    assert code == 0, err
    plain = decrypt((base / "http" / f"fv{MAC}.conf").read_bytes(), key.strip())
    first = plain.decode().split("\n", 1)[0]
    assert first.startswith("DBID_DBASE_VERSION="), first
    return int(first.split("=")[1])


def _renamed_then_failed(
    repo: GitRepo,
    base: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    rev: str,
    *more: str,
) -> None:
    """Publish `rev` (with `more` options) with the manifest's write failing as a full
    disk makes it fail."""
    real = publishing._write_hashed

    def full(path: Path, *args: object, **kwargs: object) -> None:
        if path.name == MANIFEST:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(publishing, "_write_hashed", full)
    argv = ["--repo", str(repo.path), "publish", "--rev", rev, *more, *root_args(base)]
    code, _, err = _run(capsys, *argv)
    monkeypatch.setattr(publishing, "_write_hashed", real)
    assert code == 1 and "the files are in place but the manifest could not be" in err, err


def test_the_versions_of_a_publish_that_failed_after_its_renames_never_go_down(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = tmp_path / "out"
    first = str(example_repo.repo.head.target)
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    assert _served_version(example_repo, base, capsys) == 1001
    text = example_repo.files[DEVICE].replace(b"Meeting room", b"Board room")
    assert text != example_repo.files[DEVICE]
    second = example_repo.commit({DEVICE: text}, "rename the meeting room")

    _renamed_then_failed(example_repo, base, capsys, monkeypatch, second)
    assert _served_version(example_repo, base, capsys) == 1002  # (served, and unrecorded)
    manifest = load_manifest(base / "state")
    assert manifest is not None and manifest.commit == first
    assert (base / "state" / publishing.PENDING).is_file()

    # The published commit again: its number for the device is below one served.
    code, _, err = _run(
        capsys, "--repo", str(example_repo.path), "publish", "--rev", first, *root_args(base)
    )
    assert code != 0 and "already passed" in err and "version_floor" in err, err
    assert _served_version(example_repo, base, capsys) == 1002
    # Forced, it gets a number above the one served.
    code, _, err = _run(
        capsys,
        "--repo",
        str(example_repo.path),
        "publish",
        "--rev",
        first,
        "--force",
        *root_args(base),
    )
    assert code == 0, err
    assert _served_version(example_repo, base, capsys) == 1003
    # Recorded by that manifest: the pending record is gone, and its numbers stay.
    assert not (base / "state" / publishing.PENDING).exists()
    manifest = load_manifest(base / "state")
    assert manifest is not None and manifest.served_record[MAC][0] == 1003


def test_publishing_the_failed_commit_again_records_it_and_drops_the_pending_record(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = tmp_path / "out"
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    text = example_repo.files[DEVICE].replace(b"Meeting room", b"Board room")
    second = example_repo.commit({DEVICE: text}, "rename the meeting room")
    _renamed_then_failed(example_repo, base, capsys, monkeypatch, second)
    code, out, err = _run(
        capsys, "--repo", str(example_repo.path), "publish", "--rev", second, *root_args(base)
    )
    assert code == 0, err
    assert "changed by hand" not in out + err
    assert _served_version(example_repo, base, capsys) == 1002
    assert not (base / "state" / publishing.PENDING).exists()
    manifest = load_manifest(base / "state")
    assert manifest is not None and manifest.commit == second


def test_a_pending_record_that_cannot_be_written_stops_the_publish_before_any_file(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Where the record cannot be written (a full state dir, a directory in its place),
    nothing is written: the roots keep the last good files."""
    base = tmp_path / "out"
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in (base / "http").iterdir()}
    (base / "state" / publishing.PENDING).mkdir()
    text = example_repo.files[DEVICE].replace(b"Meeting room", b"Board room")
    example_repo.commit({DEVICE: text}, "rename the meeting room")
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 1, err
    assert "cannot record the versions about to be served" in err
    assert "nothing was changed" in err
    assert {p.name: p.read_bytes() for p in (base / "http").iterdir()} == before


def test_a_directory_in_place_of_the_manifest_is_refused_before_any_file(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It made a publish write every file, then fail on the manifest (exit 1, `free
    space in the state dir`): the roots served what no manifest listed."""
    base = tmp_path / "out"
    (base / "state" / MANIFEST).mkdir(parents=True)
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 2, err
    assert "is a directory: the manifest cannot be written there" in err
    assert not (base / "http").exists() or not any((base / "http").iterdir())


def test_a_publish_by_change_after_one_that_did_not_finish_never_lowers_a_version(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed between the roots: the HTTP root serves the new file (1002), the TFTP root
    still the old one, the manifest the old commit. A publish by change of a sibling
    carried the device over from the manifest, took its bytes from the TFTP root, and
    put 1001 back into the HTTP root. With a pending record, every device is built and
    numbered from what was served: refused, the HTTP root keeps 1002."""
    base = tmp_path / "out"
    first = str(example_repo.repo.head.target)
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    old_tftp = (base / "tftp" / f"fv{MAC}.conf").read_bytes()
    files = dict(example_repo.files)
    text = files[DEVICE].replace(b"Meeting room", b"Board room")
    second = example_repo.commit({DEVICE: text}, "rename the meeting room")
    _renamed_then_failed(example_repo, base, capsys, monkeypatch, second)
    # (the TFTP root as the kill left it: its rename not made)
    (base / "tftp" / f"fv{MAC}.conf").unlink()
    (base / "tftp" / f"fv{MAC}.conf").write_bytes(old_tftp)
    other = "inventory/devices/0021f2011b19.yaml"
    sibling = example_repo.commit(
        {other: files[other] + b"# another device's change\n"},
        "a sibling of the unfinished one",
        branch="sibling",
        parents=[first],
        base=files,
    )
    code, _, err = _run(
        capsys, "--repo", str(example_repo.path), "publish", "--rev", sibling, *root_args(base)
    )
    assert code != 0 and "already passed" in err, err
    assert _served_version(example_repo, base, capsys) == 1002


def test_a_publish_that_renamed_nothing_leaves_no_pending_record(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Written before its files were staged, the record outlived a publish whose every
    root failed untouched (a full disk): the next commit was refused as numbered below
    versions never served."""
    base = tmp_path / "out"
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    text = example_repo.files[DEVICE].replace(b"Meeting room", b"Board room")
    example_repo.commit({DEVICE: text}, "rename the meeting room")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    real = publishing._write_new
    monkeypatch.setattr(publishing, "_write_new", full)
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 1 and "nothing was changed" in err, err
    assert not (base / "state" / publishing.PENDING).exists()
    monkeypatch.setattr(publishing, "_write_new", real)
    text = text.replace(b"Board room", b"Boardroom")
    example_repo.commit({DEVICE: text}, "and again")
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    assert _served_version(example_repo, base, capsys) == 1003


@pytest.mark.parametrize("damage", ["deleted", "torn"])
def test_a_lost_manifest_takes_the_versions_served_from_the_journal(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    """Before, a publish without a readable manifest started its record of the versions
    served from git history: the older commit went back under 1001 after 1002 was served,
    and exit 0."""
    base = tmp_path / "out"
    first = str(example_repo.repo.head.target)
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    text = example_repo.files[DEVICE].replace(b"Meeting room", b"Board room")
    second = example_repo.commit({DEVICE: text}, "rename the meeting room")
    code, _, err = _run(
        capsys, "--repo", str(example_repo.path), "publish", "--rev", second, *root_args(base)
    )
    assert code == 0, err
    assert _served_version(example_repo, base, capsys) == 1002
    path = base / "state" / MANIFEST
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])

    code, _, err = _run(
        capsys, "--repo", str(example_repo.path), "publish", "--rev", first, *root_args(base)
    )
    assert code == 1 and "already passed" in err and "served 1002" in err, err
    assert _served_version(example_repo, base, capsys) == 1002
    code, _, err = _run(
        capsys,
        "--repo",
        str(example_repo.path),
        "publish",
        "--rev",
        first,
        "--force",
        *root_args(base),
    )
    assert code == 0, err
    # (the journal keeps no body to tell the older content by: never lower, at least)
    assert _served_version(example_repo, base, capsys) == 1002


def test_a_lost_manifest_republishes_the_served_commit_under_its_numbers(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The journal keeps no file's body: the commit served, published again, keeps its
    numbers rather than being refused or raised."""
    base = tmp_path / "out"
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    text = example_repo.files[DEVICE].replace(b"Meeting room", b"Board room")
    second = example_repo.commit({DEVICE: text}, "rename the meeting room")
    code, _, err = _run(
        capsys, "--repo", str(example_repo.path), "publish", "--rev", second, *root_args(base)
    )
    assert code == 0, err
    (base / "state" / MANIFEST).unlink()
    code, _, err = _run(
        capsys, "--repo", str(example_repo.path), "publish", "--rev", second, *root_args(base)
    )
    assert code == 0, err
    assert _served_version(example_repo, base, capsys) == 1002


@pytest.mark.parametrize("again", [False, True])
def test_a_file_a_publish_that_did_not_finish_added_goes_when_the_next_commit_lacks_it(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    again: bool,
) -> None:
    """A publish that added a device and could not write its manifest; the next publish,
    of a commit without that device, called its file `not written by gitprov; left
    alone`, and the roots went on serving the device no commit published had; the
    published commit `again` said `already published; nothing to write`. The pending
    record names the files it renamed: one still holding those bytes is ours, and
    removed; a file put there by hand is still left alone."""
    base = tmp_path / "out"
    first = str(example_repo.repo.head.target)
    code, _, err = _run(capsys, "--repo", str(example_repo.path), "publish", *root_args(base))
    assert code == 0, err
    files = dict(example_repo.files)
    added = "inventory/devices/0021f2a0c0ff.yaml"
    text = (
        files[DEVICE]
        .replace(b"00:21:f2:01:1b:20", b"00:21:f2:a0:c0:ff")
        .replace(b'"2010"', b'"2099"')
    )
    assert text.count(b"2099") == 2
    second = example_repo.commit({added: text}, "add a desk")
    _renamed_then_failed(example_repo, base, capsys, monkeypatch, second)
    name = "fv0021f2a0c0ff.conf"
    assert (base / "http" / name).is_file() and (base / "tftp" / name).is_file()
    (base / "http" / "by-hand.conf").write_bytes(b"not gitprov's")
    other = "inventory/devices/0021f2011b19.yaml"
    rev = (
        first
        if again
        else example_repo.commit(
            {other: files[other] + b"# another device's change\n"},
            "a sibling of the unfinished one",
            branch="sibling",
            parents=[first],
            base=files,
        )
    )
    code, out, err = _run(
        capsys, "--repo", str(example_repo.path), "publish", "--rev", rev, *root_args(base)
    )
    assert code == 0, err
    assert not (base / "http" / name).exists() and not (base / "tftp" / name).exists()
    assert f"{name} was not written by gitprov" not in out + err
    assert "by-hand.conf was not written by gitprov; left alone" in out + err
    assert (base / "http" / "by-hand.conf").read_bytes() == b"not gitprov's"
    assert not (base / "state" / publishing.PENDING).exists()
    # The number it served stays recorded: the device added again continues above it.
    manifest = load_manifest(base / "state")
    assert manifest is not None and manifest.served_record["0021f2a0c0ff"][0] == 1001


def test_a_file_added_again_at_a_number_already_recorded_is_in_the_pending_record(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A device added, then removed, then its commit put back with --force: its number
    was recorded already, so that publish raised none and wrote no pending record
    before its renames. Cut short, it left the file served with nothing naming it, and
    the next commit without the device left it alone as not gitprov's."""
    base = tmp_path / "out"
    repo = str(example_repo.path)
    code, _, err = _run(capsys, "--repo", repo, "publish", *root_args(base))
    assert code == 0, err
    added = "inventory/devices/0021f2a0c0ff.yaml"
    text = (
        example_repo.files[DEVICE]
        .replace(b"00:21:f2:01:1b:20", b"00:21:f2:a0:c0:ff")
        .replace(b'"2010"', b'"2099"')
    )
    second = example_repo.commit({added: text}, "add a desk")
    third = example_repo.commit({added: None}, "remove it")
    for rev in (second, third):
        code, _, err = _run(capsys, "--repo", repo, "publish", "--rev", rev, *root_args(base))
        assert code == 0, err
    name = "fv0021f2a0c0ff.conf"
    assert not (base / "http" / name).exists()
    _renamed_then_failed(example_repo, base, capsys, monkeypatch, second, "--force")
    assert (base / "http" / name).is_file()
    fourth = example_repo.commit({DEVICE: example_repo.files[DEVICE] + b"# x\n"}, "other")
    code, out, err = _run(capsys, "--repo", repo, "publish", "--rev", fourth, *root_args(base))
    assert code == 0, err
    assert f"{name} was not written by gitprov" not in out + err
    assert not (base / "http" / name).exists() and not (base / "tftp" / name).exists()
    assert not (base / "state" / publishing.PENDING).exists()
    # A publish that completes leaves no record, whatever made it write one.
    code, _, err = _run(
        capsys, "--repo", repo, "publish", "--rev", second, "--force", *root_args(base)
    )
    assert code == 0, err
    assert not (base / "state" / publishing.PENDING).exists()
