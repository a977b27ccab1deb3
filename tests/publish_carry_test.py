"""A publish in a fresh process takes the devices whose inputs did not change over from
the roots (build-inputs.json beside the manifest) instead of compiling and encrypting them
again: what it serves and records must be what a full build of the same commit into
fresh roots gives, over any sequence of commits."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from gitprov import builder as builder_module
from gitprov.cli import main
from gitprov.plan import MANIFEST
from gitprov.publish import BUILD_INPUTS
from tests.fixtures.fleet import base_profile, changes, device_path, device_yaml, fleet_files
from tests.fixtures.gitrepo import GitRepo

DEVICES = 12
FLEET_FILE = "inventory/gitprov.yaml"


def publish(repo: GitRepo, where: Path) -> None:
    argv = ["-q", "--repo", str(repo.path), "publish", "--rev", "main"]
    argv += ["--http-root", str(where / "http"), "--tftp-root", str(where / "tftp")]
    assert main([*argv, "--state-dir", str(where / "state")]) == 0


def served(where: Path) -> dict[str, bytes]:
    return {
        f"{root}/{p.name}": p.read_bytes()
        for root in ("http", "tftp")
        for p in sorted((where / root).iterdir())
        if not p.name.startswith(".")
    }


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


@pytest.mark.parametrize("seed", [1, 2])
def test_a_publish_carrying_devices_over_serves_what_a_full_build_serves(
    tmp_path: Path, private_key: str, compiled: list[str], seed: int
) -> None:
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
        assert served(incremental) == served(full), (step, what)
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
