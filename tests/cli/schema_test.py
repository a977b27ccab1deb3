"""`gitprov schema`: writing the schemas into a directory, and what it echoes back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gitprov.cli import main


def test_write_replaces_a_symbolic_link_instead_of_writing_through_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checked-out repository's schemas/ can hold a link to any file of the user's."""
    victim = tmp_path / "bashrc"
    victim.write_text("mine\n")
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "device.schema.json").symlink_to(victim)
    (schemas / "fleet.schema.json").symlink_to(tmp_path / "dangling")
    assert main(["schema", "--write", str(schemas)]) == 0
    assert victim.read_text() == "mine\n" and not (tmp_path / "dangling").exists()
    for name in ("device.schema.json", "fleet.schema.json"):
        path = schemas / name
        assert not path.is_symlink() and json.loads(path.read_text())["$schema"]
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert not [p for p in os.listdir(schemas) if p.startswith(".")]  # no temp left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_unknown_kind_is_echoed_cut_short(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "x" * 100_000]) == 2
    err = capsys.readouterr().err
    assert "no schema 'xxx" in err and "(100,000 characters)" in err and len(err) < 2000
