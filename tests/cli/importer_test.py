"""`gitprov import` on the command line: exit codes, the report, help that explains."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.importer import tables
from gitprov.init import init_inventory
from tests.fixtures.fifo import writerless_fifo

CONF = (
    "DBID_DBASE_VERSION=41\n"
    "DBID_SIP_ENABLE=1\t0\n"
    "DBID_SIP_ACCOUNT=5001\t\n"
    "DBID_SIP_PASSWORD=pw-cli-5001\t\n"
    "DBID_PROFILE_RULE=[--key cli-key]http://provisioning.example.net/fv0021f2dd0001.conf\n"
)


@pytest.fixture
def top(tmp_path: Path) -> Path:
    top = tmp_path / "fleet"
    init_inventory(top, tmp_path / "fleet.key", "fleet")
    return top


@pytest.fixture
def old(tmp_path: Path) -> Path:
    root = tmp_path / "old"
    root.mkdir()
    (root / "fv0021f2dd0001.conf").write_text(CONF)
    return root


def test_exit_codes(
    top: Path, old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ["--repo", str(top)]
    assert main([*repo, "import", "conf", str(old), "--model", "G502N"]) == 0
    out = capsys.readouterr().out
    assert f"imported  {old}/fv0021f2dd0001.conf -> inventory/devices/0021f2dd0001.yaml" in out
    assert "version_floor: 1000 -> 1000" not in out  # 41 is below the floor: unchanged
    assert "pw-cli-5001" not in out and "cli-key" not in out
    # Again: the device exists, so it is skipped (not an error).
    assert main([*repo, "import", "conf", str(old), "--model", "G502N"]) == 0
    assert "skipped   " in capsys.readouterr().out
    # Problems of the input: 1.
    (old / "fv0021f2dd0001.conf").write_text("DBID_SIP_ENABLE=1\t0\t0\n")  # (2 lines)
    assert main([*repo, "import", "conf", str(old), "--model", "G502N", "--force"]) == 1
    assert ":1:17: error[GP406]" in capsys.readouterr().err
    # Usage and environment: 2.
    for argv in (
        ["import", "conf", str(tmp_path / "nowhere"), "--model", "G502N"],
        ["import", "conf", str(old), "--model", "G520N"],
        ["import", "conf", str(old), "--model", "G502N", "--threshold", "40"],
        ["import", "conf", str(old), "--key-file", str(tmp_path / "none.txt")],
        ["import", "csv", str(tmp_path / "none.csv")],
    ):
        assert main([*repo, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("gitprov: error: ") and "Traceback" not in err, err
    assert main(["--repo", str(tmp_path / "no-repo"), "import", "csv", "x.csv"]) == 2


def test_quiet_prints_the_report_only(
    top: Path, old: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--repo", str(top), "import", "conf", str(old), "--model", "G502N", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imported  ")


def test_help_explains_the_threshold_and_the_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "conf", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "more than PERCENT% of the devices" in out and "(default: 50)" in out
    assert "`MAC KEY` per line" in out
    assert main(["import", "csv", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "lineN.FIELD" in out and "comma, semicolon or TAB" in out


@pytest.mark.parametrize("table", ["csv", "--key-file", "--models"])
def test_a_table_past_its_bound_is_refused_before_it_is_read_whole(
    top: Path,
    old: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    table: str,
) -> None:
    """`import csv /dev/zero` was read until memory ran out: a table is read up to its
    bound (256 MiB; 1 KiB here) and refused past it."""
    monkeypatch.setattr(tables, "TABLE_MAX", 1024)
    big = tmp_path / "big.csv"
    big.write_text("mac,model\n" + "0021f2dd0002,G502N\n" * 100)
    repo = ["--repo", str(top)]
    if table == "csv":
        argv = ["import", "csv", str(big)]
    else:
        argv = ["import", "conf", str(old), "--model", "G502N", table, str(big)]
    assert main([*repo, *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{big} is larger than 1,024 bytes" in err and "Traceback" not in err, err


@pytest.mark.parametrize("table", ["csv", "--key-file", "--models"])
def test_a_table_from_a_fifo_nothing_writes_to_is_refused(
    top: Path, old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str
) -> None:
    """`import csv FIFO` with no writer waited for ever."""
    with writerless_fifo(tmp_path / "devices.csv") as fifo:
        if table == "csv":
            argv = ["import", "csv", str(fifo)]
        else:
            argv = ["import", "conf", str(old), "--model", "G502N", table, str(fifo)]
        code = main(["--repo", str(top), *argv, "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and f"{fifo} is a fifo or pipe nothing writes to, not a file" in err, err
