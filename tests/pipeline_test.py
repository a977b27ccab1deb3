"""DESIGN.md invariant 7 in a running publisher: a one-device change compiles, renders and
encrypts that device only; everything else is reused byte for byte."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from gitprov.catalog import load_catalog
from gitprov.compile import Compiler, DeviceConfig, compile_device
from gitprov.errors import GitprovError
from gitprov.inventory import Device
from gitprov.pipeline import Pipeline, secret_resolver
from gitprov.source import WorktreeSource
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.inventory import sealed_secrets, write_tree
from tests.formats.flyingvoice_test import DEVICE, FLEET, MODEL

B = "inventory/devices/0021f2011b20.yaml"


def head(repo: GitRepo) -> pygit2.Commit:
    c = repo.repo.get(repo.repo.head.target)
    assert isinstance(c, pygit2.Commit)
    return c


def test_second_build_compiles_only_the_changed_device(
    example_repo: GitRepo, private_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[str] = []
    real = Compiler.compile

    def counting(self: Compiler, device: Device) -> DeviceConfig:
        compiled.append(device.mac)
        return real(self, device)

    monkeypatch.setattr(Compiler, "compile", counting)
    p = Pipeline(example_repo.repo)
    first = p.build(head(example_repo), private_key)
    assert sorted(compiled) == sorted(f.mac for f in first.files)  # each device once
    example_repo.commit({B: example_repo.files[B].replace(b"Meeting room", b"Board room")}, "x")
    compiled.clear()
    second = p.build(head(example_repo), private_key)
    # Once for the digest, the version and the file alike.
    assert compiled == ["0021f2011b20"]
    before = {f.mac: f.data for f in first.files}
    after = {f.mac: f.data for f in second.files}
    assert {m for m in after if after[m] != before[m]} == {"0021f2011b20"}


def test_a_fresh_pipeline_builds_the_same_bytes(example_repo: GitRepo, private_key: str) -> None:
    warm = Pipeline(example_repo.repo)
    warm.build(head(example_repo), private_key)
    example_repo.commit({B: example_repo.files[B].replace(b"Meeting room", b"Board room")}, "x")
    reused = warm.build(head(example_repo), private_key)
    fresh = Pipeline(example_repo.repo).build(head(example_repo), private_key)
    assert [(f.name, f.data) for f in reused.files] == [(f.name, f.data) for f in fresh.files]


@pytest.mark.parametrize("char", ["\n", "\x1b", "\u202e"])
def test_a_secret_holding_a_control_character_is_refused_not_rendered(
    tmp_path: Path, char: str
) -> None:
    # Validation cannot look inside a sealed value: the resolver is where GP108's rule holds.
    private, secrets_yaml = sealed_secrets({"sip_23103": f"s3cr{char}et"})
    files = {"inventory/gitprov.yaml": FLEET, "inventory/models/IP542N.yaml": MODEL}
    files["inventory/devices/0021f2011b19.yaml"] = DEVICE
    write_tree(tmp_path, {**files, "inventory/secrets.yaml": secrets_yaml})
    inv = Pipeline(None).load(WorktreeSource(tmp_path)).inventory
    assert inv is not None
    with pytest.raises(GitprovError) as caught:
        compile_device(inv.devices[0], inv, load_catalog(), secret_resolver(inv, private))
    assert type(caught.value) is GitprovError  # exit 1: a problem of the inventory
    assert "'sip_23103'" in caught.value.message and "s3cr" not in caught.value.message
    assert "gitprov secrets set sip_23103" in caught.value.hint
