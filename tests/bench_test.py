"""The benchmark's floor (bench/floor.py) stays honest: on a tiny generated fleet it
publishes byte-identical roots and computes the same versions, log and blame as gitprov.
If gitprov's output changes on purpose, the floor must follow, or `make bench` would
compare gitprov with something that does less."""

from __future__ import annotations

import json
from pathlib import Path

import pygit2
import pytest

from bench import bench, floor
from bench.fleet import fleet_repo, history_repo, history_target
from gitprov.cli import main as gitprov_main


def _gitprov(capsys: pytest.CaptureFixture[str], repo: Path, *argv: str) -> str:
    capsys.readouterr()
    assert gitprov_main(["-q", "--repo", str(repo), *argv]) == 0
    return capsys.readouterr().out


def _floor(capsys: pytest.CaptureFixture[str], repo: Path, *argv: str) -> str:
    capsys.readouterr()
    assert floor.main(["--repo", str(repo), *argv]) == 0
    return capsys.readouterr().out


def _roots(base: Path) -> list[str]:
    return [
        "--http-root",
        str(base / "http"),
        "--tftp-root",
        str(base / "tftp"),
        "--state-dir",
        str(base / "state"),
    ]


@pytest.mark.usefixtures("private_key")
def test_floor_publishes_the_same_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = fleet_repo(tmp_path / "work", 20)
    for rev in ("base", "base", "one-device", "profile", "child"):
        _gitprov(capsys, repo, "publish", "--rev", rev, *_roots(tmp_path / "g"))
        _floor(capsys, repo, "publish", "--rev", rev, *_roots(tmp_path / "f"))
        for root in ("http", "tftp"):
            mine = bench._tree(tmp_path / "g" / root)
            theirs = bench._tree(tmp_path / "f" / root)
            assert len(mine) == 20
            assert mine == theirs, (rev, root)
    assert "no problems" in _floor(capsys, repo, "validate", "--rev", "child")


@pytest.mark.usefixtures("private_key")
def test_floor_numbers_the_history_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 12 commits: device edits, a version_floor raise, and a merge of a side branch.
    repo = history_repo(tmp_path / "work", 20, 12)
    mine = json.loads(_gitprov(capsys, repo, "versions", "--format", "json"))
    theirs = json.loads(_floor(capsys, repo, "versions", "--format", "json"))
    assert mine == theirs
    assert len({r["version"] for r in mine}) > 1  # the history gave different numbers
    mac = history_target(20)
    bench._same_log(
        _gitprov(capsys, repo, "log", mac, "--format", "json"),
        _floor(capsys, repo, "log", mac, "--format", "json"),
    )
    bench._same_blame(
        _gitprov(capsys, repo, "blame", mac, "--format", "json"),
        _floor(capsys, repo, "blame", mac, "--format", "json"),
    )


def test_a_difference_stops_the_benchmark(tmp_path: Path) -> None:
    for side in ("gitprov", "floor"):
        (tmp_path / side / "http").mkdir(parents=True)
        (tmp_path / side / "http" / "fv0021f4000000.conf").write_bytes(side.encode())
    with pytest.raises(bench.Mismatch, match="different bytes"):
        bench.Bench(tmp_path).compare(tmp_path, "cold publish")


def test_boot_storm_runs_small(capsys: pytest.CaptureFixture[str]) -> None:
    # The script checks every device ended on its own file (else Mismatch, exit != 0).
    from bench import boot_storm

    assert boot_storm.main(["--devices", "20", "--workers", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("boot storm: 20 devices, Random Delay 40 s (virtual), 4 at once")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:4]}
    assert rows["gitprov"][0] == "20" and rows["floor"][0] == "20"


def test_boot_storm_runs_small_against_nginx_and_tftpd_hpa(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import boot_storm
    from tests.fixtures.peers import need

    need("nginx", "nginx")
    need("in.tftpd", "tftpd-hpa")
    argv = ["--devices", "20", "--workers", "4", "--server", "nginx", "--server", "tftpd-hpa"]
    assert boot_storm.main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("protocol both (HTTP nginx, TFTP tftpd-hpa)")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:4]}
    assert rows["nginx+tftpd-hpa"][0] == "20" and rows["floor"][0] == "20"
    assert "slowest http fetch (nginx): " in out and "slowest tftp fetch (tftpd-hpa): " in out


def test_boot_storm_needs_one_server_per_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import boot_storm

    with pytest.raises(SystemExit) as exc:
        boot_storm.main(["--devices", "2", "--server", "nginx"])
    assert exc.value.code == 2
    assert "TFTP needs one server, none given: add --server gitprov or tftpd-hpa" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        boot_storm.main(["--devices", "2", "--server", "gitprov", "--server", "nginx"])
    assert "HTTP needs one server, gitprov and nginx given" in capsys.readouterr().err


@pytest.mark.usefixtures("private_key")
def test_merge_to_served_runs_small_and_leaves_the_cached_repository_alone(
    tmp_path: Path,
) -> None:
    # bench.watch raises SystemExit if a commit is not served, or the watcher dies.
    work = tmp_path / "work"
    cached = fleet_repo(work, 20)
    refs_before = {r: str(pygit2.Repository(str(cached)).references[r].target) for r in _REFS}
    files_before = sorted(str(p.relative_to(cached)) for p in cached.rglob("*"))
    b = bench.Bench(work)
    b.watch(20, merges=2)
    [row] = b.rows
    assert row.scenario.startswith("merge -> served, watcher (p50 of 2; max ")
    assert row.size == "20" and row.floor is None and row.target == "< 1 s p50"
    assert 0 < row.gitprov.seconds < bench.SERVED_WITHIN and row.gitprov.rss > 0
    refs_after = {r: str(pygit2.Repository(str(cached)).references[r].target) for r in _REFS}
    assert refs_after == refs_before
    assert sorted(str(p.relative_to(cached)) for p in cached.rglob("*")) == files_before
    b.clean()
    assert [p.name for p in work.iterdir()] == [cached.name]  # its scratch dir is gone


_REFS = tuple(f"refs/heads/{r}" for r in ("main", "base", "one-device", "profile", "child"))
