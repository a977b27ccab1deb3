"""A publish in a fresh process takes the devices whose inputs did not change over from
the roots (build-inputs.json beside the manifest) instead of compiling and encrypting them
again: what it serves and records must be what a full build of the same commit into
fresh roots gives, over any sequence of commits."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from gitprov import buckets
from gitprov import builder as builder_module
from gitprov.buckets import PER_BUCKET
from gitprov.cli import main
from gitprov.pipeline import Pipeline
from gitprov.plan import MANIFEST, load_manifest, served_versions
from gitprov.publish import (
    BUILD_INPUTS,
    CarriedFile,
    CarriedUnreadable,
    Targets,
    _prior,
    publish_commit,
    publish_inputs,
)
from tests.fixtures.fleet import (
    base_profile,
    changes,
    device_path,
    device_yaml,
    fleet_files,
    served_files,
)
from tests.fixtures.gitrepo import GitRepo

DEVICES = 12
FLEET_FILE = "inventory/gitprov.yaml"


def publish(repo: GitRepo, where: Path) -> None:
    # (the steps change the master key: every device stranded, on purpose)
    argv = ["-q", "--repo", str(repo.path), "publish", "--rev", "main", "--allow-stranding"]
    argv += ["--http-root", str(where / "http"), "--tftp-root", str(where / "tftp")]
    assert main([*argv, "--state-dir", str(where / "state")]) == 0


def entries(where: Path) -> dict[str, object]:
    files: dict[str, object] = json.loads((where / "state" / MANIFEST).read_text())["files"]
    return files


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The MACs each build finished (compiled, rendered, encrypted), in order."""
    made: list[str] = []
    real = builder_module.finish

    def counting(tpl: builder_module.Template, *args: object) -> list[builder_module.DeviceFile]:
        made.append(tpl.mac)
        return real(tpl, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(builder_module, "finish", counting)
    return made


Edit = Callable[[dict[str, bytes], random.Random, int], str]


def edit_device(files: dict[str, bytes], rng: random.Random, step: int) -> str:
    devices = sorted(p for p in files if p.startswith("inventory/devices/0021f3"))
    path = rng.choice(devices)
    i = int(Path(path).stem[6:], 16)
    files[path] = device_yaml(i, display=f"Edited {step}").encode()
    return "device edit"


def add_device(files: dict[str, bytes], rng: random.Random, step: int) -> str:
    i = 100 + step
    files[device_path(i)] = device_yaml(i).encode()
    return "device add"


def remove_device(files: dict[str, bytes], rng: random.Random, step: int) -> str:
    devices = sorted(p for p in files if p.startswith("inventory/devices/0021f3"))
    del files[rng.choice(devices)]
    return "device remove"


def edit_profile(files: dict[str, bytes], rng: random.Random, step: int) -> str:
    files["inventory/profiles/base.yaml"] = base_profile(f"m{step}").encode()
    return "profile edit"


def edit_fleet(files: dict[str, bytes], rng: random.Random, step: int) -> str:
    text = files[FLEET_FILE].decode()
    floor = int(text.split("version_floor: ", 1)[1].split("\n", 1)[0])
    files[FLEET_FILE] = text.replace(
        f"version_floor: {floor}", f"version_floor: {floor + 7}"
    ).encode()
    return "fleet edit"


def change_key(files: dict[str, bytes], rng: random.Random, step: int) -> str:
    text = files[FLEET_FILE].decode()
    old, new = "!secret fleet_master_key", "!secret sip_2001"
    if old not in text:
        old, new = new, old
    files[FLEET_FILE] = text.replace(f"master_key: {old}", f"master_key: {new}").encode()
    return "key change"


EDITS: tuple[Edit, ...] = (
    edit_device,
    edit_device,
    add_device,
    remove_device,
    edit_profile,
    edit_fleet,
    change_key,
)


# With one entry a bucket, every map of the snapshots kept between processes (the rules'
# indexes, the device facts; see gitprov.buckets) is read and written back in part.
@pytest.mark.parametrize(("seed", "per_bucket"), [(1, PER_BUCKET), (2, PER_BUCKET), (3, 1)])
def test_a_publish_carrying_devices_over_serves_what_a_full_build_serves(
    tmp_path: Path,
    private_key: str,
    compiled: list[str],
    seed: int,
    per_bucket: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(buckets, "PER_BUCKET", per_bucket)
    rng = random.Random(seed)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    files = fleet_files(DEVICES)
    repo.commit(files, "a fleet")
    incremental = tmp_path / "incremental"
    publish(repo, incremental)
    carried_over = 0
    for step in range(12):
        new = dict(files)
        what = rng.choice(EDITS)(new, rng, step)
        repo.commit(changes(files, new), what)
        files = new
        if step == 5:
            # A served file that is not what the manifest says is never carried over.
            victim = sorted((incremental / "http").iterdir())[0]
            victim.write_bytes(b"not what was published\n")
        compiled.clear()
        publish(repo, incremental)
        built_incrementally = len(compiled)
        full = tmp_path / f"full-{step}"
        compiled.clear()
        publish(repo, full)
        devices = len(compiled)
        assert served_files(incremental) == served_files(full), (step, what)
        assert entries(incremental) == entries(full), (step, what)
        if what == "device edit" and step != 5:
            assert built_incrementally == 1, (step, what)
            carried_over += 1
        if what in ("profile edit", "fleet edit", "key change"):
            assert built_incrementally == devices, (step, what)
    assert carried_over, "the sequence had no device edit to carry the others over"


def test_a_record_of_another_commit_is_not_used(
    tmp_path: Path, private_key: str, compiled: list[str]
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    files = fleet_files(4)
    repo.commit(files, "a fleet")
    where = tmp_path / "out"
    publish(repo, where)
    record = json.loads((where / "state" / BUILD_INPUTS).read_text())
    assert set(record["devices"]) >= {Path(device_path(i)).stem for i in range(4)}
    record["commit"] = "0" * 40
    (where / "state" / BUILD_INPUTS).write_text(json.dumps(record))
    new = dict(files)
    edit_device(new, random.Random(0), 0)
    repo.commit(changes(files, new), "device edit")
    compiled.clear()
    publish(repo, where)
    assert len(compiled) == len(record["devices"])


@pytest.mark.parametrize("lost", ["the record before", "torn", "zeroed", "gone"])
def test_a_record_lost_to_a_power_cut_costs_a_full_build_and_nothing_else(
    tmp_path: Path, private_key: str, compiled: list[str], lost: str
) -> None:
    """The record is not fsynced: after a power cut it may be the one the publish
    before wrote, a file cut short, zeros of its size, or none. Each only makes the
    next publish build what it would otherwise have carried over."""
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    files = fleet_files(4)
    repo.commit(files, "a fleet")
    where = tmp_path / "out"
    publish(repo, where)
    record = where / "state" / BUILD_INPUTS
    before = record.read_bytes()
    files = edit(repo, files, 0, 1)
    publish(repo, where)
    written = record.read_bytes()
    assert written != before
    if lost == "the record before":
        record.write_bytes(before)
    elif lost == "torn":
        record.write_bytes(written[: len(written) // 2])
    elif lost == "zeroed":
        record.write_bytes(bytes(len(written)))
    else:
        record.unlink()
    files = edit(repo, files, 1, 2)
    compiled.clear()
    publish(repo, where)
    built = len(compiled)
    full = tmp_path / "full"
    compiled.clear()
    publish(repo, full)
    assert served_files(where) == served_files(full)
    assert entries(where) == entries(full)
    assert built == len(compiled)  # (every device built: none carried over on its word)


def files_of(where: Path, i: int) -> list[str]:
    """The names served for device `i` (the manifest's entries of its MAC)."""
    mac = Path(device_path(i)).stem
    return sorted(n for n, e in entries(where).items() if e["mac"] == mac)  # type: ignore[index]


def edit(repo: GitRepo, files: dict[str, bytes], i: int, step: int) -> dict[str, bytes]:
    new = dict(files)
    new[device_path(i)] = device_yaml(i, display=f"Edited {step}").encode()
    repo.commit(changes(files, new), f"device {i} edit")
    return new


def test_a_carried_file_is_read_only_when_needed_and_only_as_recorded(
    tmp_path: Path, private_key: str
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(fleet_files(3), "a fleet")
    where = tmp_path / "out"
    publish(repo, where)
    pipeline = Pipeline(repo.repo)
    targets = Targets((where / "http", where / "tftp"), where / "state")
    previous = load_manifest(where / "state")
    carry = _prior(where / "state", previous, publish_inputs(pipeline, targets))
    commit = repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit)
    build = pipeline.build(
        commit, private_key, served_versions(previous), keep_plaintext=False, prior=carry
    )
    carried = [f for f in build.files if isinstance(f, CarriedFile)]
    assert len(carried) == len(build.files) >= 3
    assert not any(f.loaded for f in carried)

    first, second, third = carried[:3]
    published = (where / "tftp" / first.name).read_bytes()
    (where / "http" / first.name).unlink()
    assert first.data == published  # from the other root
    assert first.loaded and first.data == published

    for root in ("http", "tftp"):  # another file, same size, in every root
        path = where / root / second.name
        altered = bytes(b ^ 0xFF for b in path.read_bytes())
        path.unlink()  # (written in place, both roots' names are one file: linked)
        path.write_bytes(altered)
    with pytest.raises(CarriedUnreadable, match=second.mac):
        second.data  # noqa: B018
    (where / "http" / third.name).unlink()
    (where / "tftp" / third.name).unlink()
    with pytest.raises(CarriedUnreadable, match=third.mac):
        third.data  # noqa: B018


def test_carried_files_gone_or_altered_in_the_roots_serve_what_a_full_build_serves(
    tmp_path: Path, private_key: str, compiled: list[str]
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    files = fleet_files(6)
    repo.commit(files, "a fleet")
    where = tmp_path / "incremental"
    publish(repo, where)
    files = edit(repo, files, 0, 1)
    for name in files_of(where, 1):  # one root: taken over from the other
        (where / "http" / name).unlink()
    for name in files_of(where, 2):  # every root, altered: built again
        for root in ("http", "tftp"):
            (where / root / name).write_bytes(b"not what was published\n")
    for name in files_of(where, 3):  # every root, gone: built again
        for root in ("http", "tftp"):
            (where / root / name).unlink()
    compiled.clear()
    publish(repo, where)
    # (the edited device twice: building again starts from scratch, bar what is carried)
    assert set(compiled) == {Path(device_path(i)).stem for i in (0, 2, 3)}
    full = tmp_path / "full"
    publish(repo, full)
    assert served_files(where) == served_files(full)
    assert entries(where) == entries(full)


def test_a_process_that_carried_files_builds_them_when_they_are_gone(
    tmp_path: Path, private_key: str, compiled: list[str]
) -> None:
    """A watcher keeps what it carried over: a file removed from every root after that
    is built again, not written from what the manifest once recorded."""
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    files = fleet_files(5)
    repo.commit(files, "a fleet")
    where = tmp_path / "incremental"
    publish(repo, where)
    pipeline = Pipeline(repo.repo)
    targets = Targets((where / "http", where / "tftp"), where / "state")

    def publish_main() -> None:
        commit = repo.repo.revparse_single("main")
        assert isinstance(commit, pygit2.Commit)
        publish_commit(pipeline, commit, targets, private_key)

    files = edit(repo, files, 0, 1)
    compiled.clear()
    publish_main()
    assert compiled == [Path(device_path(0)).stem]
    for name in files_of(where, 4):
        for root in ("http", "tftp"):
            (where / root / name).unlink()
    files = edit(repo, files, 1, 2)
    compiled.clear()
    publish_main()
    assert set(compiled) == {Path(device_path(i)).stem for i in (1, 4)}
    full = tmp_path / "full"
    publish(repo, full)
    assert served_files(where) == served_files(full)
    assert entries(where) == entries(full)
