"""Which files are the inventory: devices in directories at any depth (`devices/<site>/
<mac>.yaml`) as well as flat, profiles and models flat, everything else ignored (GP005).
A nested fleet compiles to exactly the files of the same fleet kept flat."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pygit2
import pytest

from gitprov.cli import main
from gitprov.inventory import DEVICE, MODEL, PROFILE, kind_of, load_documents
from gitprov.source import CommitSource, WorktreeSource
from tests.fixtures.fleet import device_path, device_yaml, fleet_files, generated_mac
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args

N = 24


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("inventory/devices/0021f2011b19.yaml", DEVICE),
        ("inventory/devices/0021f2011b19.yml", DEVICE),
        ("inventory/devices/paris/0021f2011b19.yaml", DEVICE),
        ("inventory/devices/eu/fr/paris/floor-2/0021f2011b19.yml", DEVICE),
        # A dot-directory is not read (the work tree skips it too); a dot-file is as before.
        ("inventory/devices/.old/0021f2011b19.yaml", None),
        ("inventory/devices/eu/.trash/0021f2011b19.yaml", None),
        ("inventory/devices/eu/.0021f2011b19.yaml", DEVICE),
        ("inventory/devices/paris/README.md", None),
        ("inventory/devices/paris/0021f2011b19.json", None),
        # Profiles and models are named by their file names: they stay flat.
        ("inventory/profiles/office.yaml", PROFILE),
        ("inventory/profiles/eu/office.yaml", None),
        ("inventory/models/IP542N.yaml", MODEL),
        ("inventory/models/old/IP542N.yaml", None),
        ("inventory/sites/paris/0021f2011b19.yaml", None),
        ("other/devices/paris/0021f2011b19.yaml", None),
    ],
)
def test_kind_of(path: str, kind: str | None) -> None:
    assert kind_of(path, "inventory") == kind


def test_kind_of_at_the_repository_top() -> None:
    assert kind_of("devices/a/b/0021f2011b19.yaml", "") == DEVICE
    assert kind_of("devices/a/b/0021f2011b19.yaml", ".") == DEVICE
    assert kind_of("profiles/a/b.yaml", "") is None


SITES = ("", "paris/", "eu/fr/lyon/floor-2/")


def _nested_files() -> dict[str, bytes]:
    """fleet_files(N) with the generated devices in three layouts at once: a third flat,
    a third one directory down, a third four directories down."""
    out = fleet_files(N)
    for i in range(N):
        flat = device_path(i)
        out[flat.replace("/devices/", f"/devices/{SITES[i % 3]}")] = out.pop(flat)
    return out


def digests(top: Path) -> dict[str, str]:
    """Every file under `top` (relative name -> sha256): the whole served state."""
    return {
        p.relative_to(top).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(top.rglob("*"))
        if p.is_file()
    }


def versions_json(repo: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["--repo", str(repo), "versions", "--format", "json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def test_a_nested_fleet_compiles_to_the_files_of_the_flat_one(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = GitRepo(tmp_path / "flat")
    flat.commit(fleet_files(N), "flat fleet")
    deep = GitRepo(tmp_path / "deep")
    deep.commit(_nested_files(), "nested fleet")
    deepest = "inventory/devices/eu/fr/lyon/floor-2/"
    assert sum(p.startswith(deepest) for p in deep.files) == N // 3

    for name in ("flat", "deep"):
        repo = tmp_path / name
        capsys.readouterr()
        assert main(["--repo", str(repo), "validate", "--format", "json"]) == 0
        problems = json.loads(capsys.readouterr().out)["problems"]
        # Nothing ignored (GP005): only the note that the example's key is the demo key.
        assert [p["code"] for p in problems] == ["GP119"], problems
        assert main(["--repo", str(repo), "build", "--out", str(tmp_path / f"{name}-out")]) == 0
        argv = ["--repo", str(repo), "publish", *root_args(tmp_path / f"{name}-roots")]
        assert main(argv) == 0
    built = digests(tmp_path / "flat-out")
    assert len([n for n in built if n.startswith("encrypted/")]) == N + 4
    assert digests(tmp_path / "deep-out") == built
    # The served files are per MAC, in flat roots, whatever the inventory's layout.
    for root in ("http", "tftp"):
        served = digests(tmp_path / "deep-roots" / root)
        assert served == digests(tmp_path / "flat-roots" / root)
        assert all("/" not in name for name in served)
        assert f"fv{generated_mac(N - 1)}.conf" in served
    flat_versions = versions_json(flat.path, capsys)
    assert [r["version"] for r in versions_json(deep.path, capsys)] == [
        r["version"] for r in flat_versions
    ]
    assert len(flat_versions) == N + 4


def test_moving_devices_into_directories_changes_no_version_and_no_file(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(fleet_files(N), "flat fleet")
    roots = root_args(tmp_path / "roots")
    assert main(["--repo", str(repo.path), "publish", *roots]) == 0
    before = digests(tmp_path / "roots" / "http")
    versions = versions_json(repo.path, capsys)
    moved = _nested_files()
    changes: dict[str, bytes | str | None] = {p: None for p in repo.files if p not in moved}
    changes.update({p: d for p, d in moved.items() if p not in repo.files})
    repo.commit(changes, "devices by site")
    capsys.readouterr()
    assert main(["--repo", str(repo.path), "publish", *roots]) == 0
    assert digests(tmp_path / "roots" / "http") == before
    # The same numbers, set by the same commits: the move changed no device.
    assert versions_json(repo.path, capsys) == versions


def test_the_same_mac_in_two_directories_is_an_error_naming_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = fleet_files(3)
    mac = generated_mac(1)
    paris = f"inventory/devices/paris/{mac}.yaml"
    lyon = f"inventory/devices/eu/lyon/{mac}.yaml"
    files[paris] = files.pop(device_path(1))
    files[lyon] = device_yaml(1).encode()
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files, "one device in two sites")
    assert main(["--repo", str(repo.path), "validate", "--format", "json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    dup = [p for p in problems if p["code"] == "GP101"]
    assert len(dup) == 1, problems
    # Reported at the `mac:` of the later file by path (line 1, column 6), naming the
    # other file and its line.
    assert (dup[0]["file"], dup[0]["line"], dup[0]["col"]) == (paris, 1, 6)
    assert f"also used by {lyon}:1" in dup[0]["message"]


def test_an_unsafe_directory_name_is_refused_like_an_unsafe_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = fleet_files(2)
    files["inventory/devices/par\x1b[2Jis/" + generated_mac(1) + ".yaml"] = files.pop(
        device_path(1)
    )
    files["inventory/devices/lyon\n/x:1:1: error[GP999]/" + generated_mac(0) + ".yaml"] = files.pop(
        device_path(0)
    )
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files, "bad site names")
    assert main(["--repo", str(repo.path), "validate"]) == 1
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "GP108" in ln]
    assert len(lines) == 2, out
    assert "inventory/devices/par\\x1b[2Jis/" in out and "\x1b" not in out
    assert "inventory/devices/lyon\\n/x:1:1" in out
    # Each problem is one line: the newline did not start a forged one.
    assert not any(ln.startswith("/x:1:1") for ln in out.splitlines())


@pytest.mark.parametrize("fmt", ["text", "github"])
def test_a_key_that_could_forge_a_line_or_move_the_cursor_is_shown_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """A pull request's key with ESC, a newline or a bidi override: CI prints the
    problems in its log, where the raw characters would clear the screen, forge a
    problem line or reverse the text read."""
    files = fleet_files(1)
    hostile = '"DBID_Z\\x1b[2J": 2\n  "DBID_N\\n::error file=x::forged": 3\n  "DBID_X\\u202eY": 1\n'
    files[device_path(0)] = files[device_path(0)] + b"params:\n  " + hostile.encode()
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files, "hostile keys")
    assert main(["--repo", str(repo.path), "validate", "--format", fmt]) == 1
    out = capsys.readouterr().out
    assert out.count("GP108") == 3, out
    for raw in ("\x1b", "\u202e"):
        assert raw not in out, out
    assert not any(ln.startswith("::error file=x") for ln in out.splitlines()), out
    assert "DBID_Z\\x1b[2J" in out and "DBID_X\\u202eY" in out, out


def test_a_name_that_is_not_utf8_is_refused_and_shown_as_its_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Git keeps any bytes; Python reads them as surrogates. Such a device passed
    # validation, then stopped a publish after its files were written (exit 3) and
    # every publish after it; `blame` ended in a traceback too.
    files = fleet_files(3)
    files["inventory/devices/caf\udcc3(/" + generated_mac(0) + ".yaml"] = files.pop(device_path(0))
    files["inventory/devices/" + generated_mac(1) + "\udcff.yaml"] = files.pop(device_path(1))
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files, "names git keeps as bytes")
    assert main(["--repo", str(repo.path), "validate", "--format", "json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    found = sorted((p["file"], p["code"], p["message"]) for p in problems if p["code"] == "GP108")
    assert found == [
        (
            f"inventory/devices/{generated_mac(1)}\\xff.yaml",
            "GP108",
            "the file name holds the byte 0xFF, which is not UTF-8",
        ),
        (
            f"inventory/devices/caf\\xc3(/{generated_mac(0)}.yaml",
            "GP108",
            "the file name holds the byte 0xC3, which is not UTF-8",
        ),
    ]
    roots = ["--http-root", str(tmp_path / "http"), "--tftp-root", str(tmp_path / "tftp")]
    state = ["--state-dir", str(tmp_path / "state")]
    assert main(["--repo", str(repo.path), "publish", *roots, *state]) == 1
    assert "nothing was published" in capsys.readouterr().err
    assert not (tmp_path / "http").exists() or not any((tmp_path / "http").iterdir())


def at(repo: GitRepo, commit: str) -> CommitSource:
    found = repo.repo.get(commit)
    assert isinstance(found, pygit2.Commit)
    return CommitSource(repo.repo, found)


def test_gp005_for_what_is_not_read(tmp_path: Path) -> None:
    files = fleet_files(1)
    files["inventory/profiles/eu/office.yaml"] = b"params: {}\n"
    files["inventory/devices/paris/notes.txt"] = b"the third floor\n"
    files["inventory/devices/.archive/0021f3aaaaaa.yaml"] = b"mac: nope\n"
    files["inventory/devices/paris/README.md"] = b"# Paris\n"
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit(files, "extras")
    docs, problems = load_documents(at(repo, commit))
    # At 1:1, located as every problem is (the file as a whole is what is ignored).
    assert sorted((p.file, p.line, p.col, p.code) for p in problems) == [
        ("inventory/devices/paris/notes.txt", 1, 1, "GP005"),
        ("inventory/profiles/eu/office.yaml", 1, 1, "GP005"),
    ]
    assert "devices/**/*.yaml" in (problems[0].hint or "")
    assert len(docs.of(DEVICE)) == 1 + 4


def test_the_work_tree_reads_nested_devices_as_a_commit_does(tmp_path: Path) -> None:
    files = _nested_files()
    files["inventory/devices/.archive/0021f3aaaaaa.yaml"] = b"mac: nope\n"
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit(files, "nested", worktree=True)
    from_commit, p1 = load_documents(at(repo, commit))
    from_disk, p2 = load_documents(WorktreeSource(tmp_path / "repo"))
    assert p1 == p2 == []
    assert [d.path for d in from_disk.of(DEVICE)] == [d.path for d in from_commit.of(DEVICE)]
    assert len(from_disk.of(DEVICE)) == N + 4
