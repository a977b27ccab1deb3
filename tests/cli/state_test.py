"""A state dir, root or state file that is not what gitprov wrote ends in an error that
names the path and says what to do, or in a publish from scratch; never in a trace."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.journal import JOURNAL
from gitprov.plan import INDEX, MANIFEST
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import publish_argv

NESTED = "[" * 100_000 + "]" * 100_000  # past any parser's recursion limit
LONG = "a" * 300  # a path component longer than any filesystem's 255 bytes


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("not a directory\n")
    return tmp_path / "afile"


def _under_a_file(tmp_path: Path) -> Path:
    return _a_file(tmp_path) / "state"


def _too_long(tmp_path: Path) -> Path:
    return tmp_path / LONG / "state"


def _lock_a_directory(tmp_path: Path) -> Path:
    (tmp_path / "state" / "publish.lock").mkdir(parents=True)
    return tmp_path / "state"


@pytest.mark.parametrize(
    ("state_of", "says"),
    [
        (_a_file, "not a directory"),
        (_under_a_file, "not a directory"),
        (_too_long, "name too long"),
        (_lock_a_directory, "is a directory"),
    ],
)
def test_a_state_dir_that_cannot_be_used_is_an_error_naming_it(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    state_of: Callable[[Path], Path],
    says: str,
) -> None:
    state = state_of(tmp_path)
    http, tftp = tmp_path / "http", tmp_path / "tftp"
    code, err = run(capsys, *publish_argv(example_repo, http, tftp, state))
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert str(state)[:40] in err and says in err.lower(), err
    assert "hint:" in err, err
    assert not http.exists() or not any(http.iterdir())  # nothing served
    where = ["--http-root", str(http), "--tftp-root", str(tftp), "--state-dir", str(state)]
    for argv in (["history", "--state-dir", str(state)], ["verify", "--rev", "main", *where]):
        code, err = run(capsys, "--repo", str(example_repo.path), *argv)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)


def test_watch_stops_at_start_on_a_state_dir_that_cannot_be_used(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    # Before, the watcher started and failed the same way at every retry, forever.
    state = _a_file(tmp_path)
    where = ["--http-root", str(tmp_path / "http"), "--tftp-root", str(tmp_path / "tftp")]
    argv = ["--repo", str(example_repo.path), "watch", *where, "--state-dir", str(state)]
    done = subprocess.run(
        [sys.executable, "-m", "gitprov", *argv, "--interval", "0.1", "--no-inotify"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot use the state dir {state}" in done.stderr
    assert "hint:" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "http").exists()


@pytest.mark.parametrize("which", ["http", "tftp"])
def test_a_root_whose_path_cannot_be_used_is_an_error_naming_it(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
) -> None:
    roots = {"http": tmp_path / "http", "tftp": tmp_path / "tftp"}
    roots[which] = tmp_path / LONG / which
    state = tmp_path / "state"
    code, err = run(capsys, *publish_argv(example_repo, roots["http"], roots["tftp"], state))
    # (refused before either root is written: the other one took the commit alone, exit 1)
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert "is 300 bytes long" in err and "nothing was published" in err, err
    assert not (tmp_path / ("tftp" if which == "http" else "http")).exists()
    where = ["--http-root", str(roots["http"]), "--tftp-root", str(roots["tftp"])]
    code, err = run(
        capsys,
        "--repo",
        str(example_repo.path),
        "verify",
        "--rev",
        "main",
        *where,
        "--state-dir",
        str(state),
    )
    assert code == 1 and "Traceback" not in err and "internal error" not in err, err


def _nested_manifest(state: Path) -> None:
    (state / MANIFEST).write_text(NESTED)
    (state / INDEX).unlink()


def _nested_journal(state: Path) -> None:
    with (state / JOURNAL).open("a") as f:
        f.write(NESTED + "\n")


def _nested_record(state: Path) -> None:
    (state / "build-inputs.json").write_text(NESTED)


def _retyped(path: list[str], value: object) -> Callable[[Path], None]:
    def edit(state: Path) -> None:
        data = json.loads((state / MANIFEST).read_bytes())
        at = data
        for key in path[:-1]:
            at = at[key] if key != "*" else next(iter(at.values()))
        at[path[-1]] = value
        (state / MANIFEST).write_text(json.dumps(data))
        (state / INDEX).unlink()

    return edit


@pytest.mark.parametrize(
    "damage",
    [
        _nested_manifest,
        _nested_journal,
        _nested_record,
        _retyped(["files", "*", "version"], "x"),
        _retyped(["files", "*", "version"], None),
        _retyped(["files", "*", "mac"], 5),
        _retyped(["commit"], 5),
        _retyped(["served"], []),
    ],
    ids=[
        "nested-manifest",
        "nested-journal",
        "nested-record",
        "version-text",
        "version-null",
        "mac-number",
        "commit-number",
        "served-list",
    ],
)
def test_a_damaged_state_file_is_read_as_none_and_the_next_publish_converges(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
) -> None:
    http, tftp, state = tmp_path / "http", tmp_path / "tftp", tmp_path / "state"
    args = publish_argv(example_repo, http, tftp, state)
    assert run(capsys, *args)[0] == 0
    served = {p.name: p.read_bytes() for p in sorted(http.iterdir())}
    example_repo.commit(
        {
            "inventory/devices/0021f2011b20.yaml": example_repo.files[
                "inventory/devices/0021f2011b20.yaml"
            ]
            + b"# edited\n"
        },
        "one device",
    )
    damage(state)
    for argv in (
        ["--repo", str(example_repo.path), "history", "--state-dir", str(state)],
        ["--repo", str(example_repo.path), "verify", "--rev", "main", *args[-6:]],
    ):
        code, err = run(capsys, *argv)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
    code, err = run(capsys, *args)
    assert code == 0, err
    assert "Traceback" not in err, err
    manifest_damaged = damage not in (_nested_journal, _nested_record)
    assert (f"{state / MANIFEST} could not be read" in err) == manifest_damaged, err
    again = {p.name: p.read_bytes() for p in sorted(http.iterdir())}
    assert again.keys() == served.keys()
    code, err = run(capsys, "--repo", str(example_repo.path), "verify", "--rev", "main", *args[-6:])
    assert code == 0, err


def test_plan_from_a_json_file_nested_past_reason_is_a_usage_error(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nested = tmp_path / "plan.json"
    nested.write_text(NESTED)
    code, err = run(capsys, "--repo", str(example_repo.path), "plan", "--from-json", str(nested))
    assert code == 2, err
    assert "Traceback" not in err and str(nested) in err, err
