"""`gitprov schema`: what it echoes back."""

from __future__ import annotations

import pytest

from gitprov.cli import main


def test_an_unknown_kind_is_echoed_cut_short(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "x" * 100_000]) == 2
    err = capsys.readouterr().err
    assert "no schema 'xxx" in err and "(100,000 characters)" in err and len(err) < 2000
