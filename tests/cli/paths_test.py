"""A path the user gives that cannot even be looked at (a symbolic link loop, a name
longer than the file system allows, a relative path once the current directory is gone)
is a usage error naming the path and what to do (exit 2): never an internal error, and
never argparse's raw trace."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gitprov.cli import main
from tests.fixtures.gitrepo import GitRepo

LONG = "n" * 300  # a path component longer than any file system's 255 bytes
LOOP_SAYS = "too many levels of symbolic links"
LONG_SAYS = "file name too long"
NO_CWD_SAYS = "the current directory no longer exists"

# argv given the repository, a scratch directory and the unusable path
Argv = Callable[[Path, Path, str], list[str]]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err


def _roots(tmp: Path) -> list[str]:
    return ["--http-root", str(tmp / "h"), "--tftp-root", str(tmp / "t")]


def _publish_with(option: str) -> Argv:
    def argv(repo: Path, tmp: Path, bad: str) -> list[str]:
        given = {"--state-dir": str(tmp / "st"), "--http-root": str(tmp / "h")}
        given[option] = bad
        more = [] if option in ("--state-dir", "--http-root") else [option, bad]
        named = [w for k, v in given.items() for w in (k, v)]
        return ["--repo", str(repo), "publish", *named, "--tftp-root", str(tmp / "t"), *more]

    return argv


def _watch_with(option: str) -> Argv:
    def argv(repo: Path, tmp: Path, bad: str) -> list[str]:
        state = ["--state-dir", str(tmp / "st")]
        return ["--repo", str(repo), "watch", *_roots(tmp), *state, option, bad]

    return argv


LOOPED: dict[str, Argv] = {
    "--repo": lambda repo, tmp, bad: ["--repo", bad, "validate"],
    "publish --state-dir": _publish_with("--state-dir"),
    "publish --http-root": _publish_with("--http-root"),
    "publish --firmware-dir": _publish_with("--firmware-dir"),
    "publish --stage-root": _publish_with("--stage-root"),
    "verify --state-dir": lambda repo, tmp, bad: [
        *["--repo", str(repo), "verify", "--state-dir", bad, *_roots(tmp)]
    ],
    "init DIR": lambda repo, tmp, bad: [
        *["init", bad, "--private-key-out", str(tmp / "k"), "--no-workflows"]
    ],
    "init --private-key-out": lambda repo, tmp, bad: [
        *["init", str(tmp / "new"), "--private-key-out", bad, "--no-workflows"]
    ],
    "watch --status-file": _watch_with("--status-file"),
    "watch --log-json": _watch_with("--log-json"),
    "plan --from-json": lambda repo, tmp, bad: ["--repo", str(repo), "plan", "--from-json", bad],
}

TOO_LONG: dict[str, Argv] = {
    "--repo": lambda repo, tmp, bad: ["--repo", bad, "validate"],
    "build --out": lambda repo, tmp, bad: ["--repo", str(repo), "build", "--out", bad],
    "fleet --state-dir": lambda repo, tmp, bad: ["--repo", str(repo), "fleet", "--state-dir", bad],
    "schema --write": lambda repo, tmp, bad: ["schema", "--write", bad],
    "init DIR": LOOPED["init DIR"],
    "secrets keygen --out": lambda repo, tmp, bad: [
        *["--repo", str(repo), "secrets", "keygen", "--out", bad]
    ],
    "serve --http-root": lambda repo, tmp, bad: [
        *["--repo", str(repo), "serve", "--http-root", bad, "--http-port", "0"]
    ],
    "publish --config": lambda repo, tmp, bad: [*_publish_with("--config")(repo, tmp, bad)],
    "plan --from-json": LOOPED["plan --from-json"],
    "decrypt FILE": lambda repo, tmp, bad: ["--repo", str(repo), "decrypt", bad, "--key", "k"],
}


@pytest.fixture
def loop(tmp_path: Path) -> Path:
    """tmp_path/loopa -> loopb -> loopa."""
    (tmp_path / "loopa").symlink_to("loopb")
    (tmp_path / "loopb").symlink_to("loopa")
    return tmp_path / "loopa"


def _refused(code: int, err: str, bad: str, says: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert bad in err and says in err.lower(), err
    assert "hint:" in err or "error: argument" in err, err  # (argparse's own line)


@pytest.mark.parametrize("name", sorted(LOOPED))
def test_a_symlink_loop_given_as_a_path_is_a_usage_error_naming_it(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    loop: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    code, err = run(capsys, LOOPED[name](example_repo.path, tmp_path, str(loop)))
    _refused(code, err, str(loop), LOOP_SAYS)
    assert not (tmp_path / "h").exists()  # nothing published


@pytest.mark.parametrize(
    ("variable", "command", "named"),
    [
        ("GIT_QUARANTINE_PATH", "validate", "GIT_QUARANTINE_PATH"),
        ("GITPROV_ALLOWED_ROOTS", "publish", "the allowed root"),
    ],
)
def test_a_symlink_loop_in_a_variable_is_a_usage_error_naming_it(
    example_repo: GitRepo,
    private_key: str,
    loop: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    command: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, str(loop))
    code, err = run(capsys, ["--repo", str(example_repo.path), command])
    _refused(code, err, str(loop), LOOP_SAYS)
    assert named in err, err


@pytest.mark.parametrize("name", sorted(TOO_LONG))
def test_a_name_too_long_is_a_usage_error_naming_it(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    bad = str(tmp_path / LONG)
    code, err = run(capsys, TOO_LONG[name](example_repo.path, tmp_path, bad))
    _refused(code, err, bad, LONG_SAYS)


def test_a_name_too_long_in_the_quarantine_variable_is_a_usage_error(
    example_repo: GitRepo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GIT_QUARANTINE_PATH", str(tmp_path / LONG))
    code, err = run(capsys, ["--repo", str(example_repo.path), "validate"])
    _refused(code, err, "GIT_QUARANTINE_PATH", LONG_SAYS)


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["publish", "--state-dir", "st", "--http-root", "h", "--tftp-root", "t"], "st"),
        (["secrets", "keygen", "--out", "k2"], "k2"),
        (["init", "rel", "--private-key-out", "k", "--no-workflows"], "rel"),
    ],
    ids=["publish", "secrets keygen", "init"],
)
def test_relative_paths_once_the_current_directory_is_gone_are_a_usage_error(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    bad: str,
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    repo = [] if argv[0] == "init" else ["--repo", str(example_repo.path)]
    code, err = run(capsys, [*repo, *argv])
    _refused(code, err, bad, NO_CWD_SAYS)


def test_a_symlink_loop_the_commit_names_is_refused_at_the_setting(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fleet = example_repo.files["inventory/gitprov.yaml"]
    assert b"http_root: var/http\n" in fleet
    example_repo.commit(
        {"inventory/gitprov.yaml": fleet.replace(b"http_root: var/http", b"http_root: var/loopa")},
        "serve from a link",
    )
    var = example_repo.path / "var"
    var.mkdir()
    (var / "loopa").symlink_to("loopb")
    (var / "loopb").symlink_to("loopa")
    code, err = run(capsys, ["--repo", str(example_repo.path), "publish"])
    assert code == 1, err  # the commit's to fix, as a path outside the allowed roots
    assert "Traceback" not in err and "internal error" not in err, err
    line = next(n for n, text in enumerate(fleet.splitlines(), 1) if b"http_root" in text)
    assert f"inventory/gitprov.yaml:{line}:" in err and "publish.http_root" in err, err
    assert LOOP_SAYS in err.lower() and "nothing was published" in err, err
    assert not (var / "tftp").exists()


# -- the safety net: a path's error that escapes a command's own checks ---------------------
def test_a_path_error_escaping_a_command_is_a_usage_error_and_nothing_else_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raising: list[BaseException] = []

    def fail() -> None:
        raise raising[-1]

    monkeypatch.setattr("gitprov.schemas.all_schemas", fail)
    for raised, says in (
        (OSError(errno.ELOOP, os.strerror(errno.ELOOP), "/x/loopa"), LOOP_SAYS),
        (OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "/x/long"), LONG_SAYS),
        (RuntimeError("Symlink loop from '/x/loopa'"), LOOP_SAYS),  # (3.11's resolve())
    ):
        raising.append(raised)
        code, err = run(capsys, ["schema", "--list"])
        _refused(code, err, "/x/", says)
    # Any other error stays what it was: a gitprov bug to report.
    for raised in (
        OSError(errno.EACCES, os.strerror(errno.EACCES), "/x/y"),
        RuntimeError("something else"),
    ):
        raising.append(raised)
        code, err = run(capsys, ["schema", "--list"])
        assert code == 3 and "internal error" in err, err


def test_a_path_error_escaping_an_option_type_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(text: str) -> None:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), text)

    monkeypatch.setattr("gitprov.fleet.parse_log_source", fail)
    code, err = run(capsys, ["fleet", "--log", "/x/long"])
    _refused(code, err, "/x/long", LONG_SAYS)


# A path the user typed, holding what a terminal obeys (ESC starts a colour or moves the
# cursor, BEL rings): each command's error shows it escaped, never raw.
ESCAPED: dict[str, Argv] = {
    "--repo": lambda repo, tmp, bad: ["--repo", f"{bad}/nope", "validate"],
    "publish, one root inside the other": lambda repo, tmp, bad: [
        *["--repo", str(repo), "publish", "--http-root", f"{bad}/h"],
        *["--tftp-root", f"{bad}/h/sub", "--state-dir", str(tmp / "st")],
    ],
    "publish, a root under a file": lambda repo, tmp, bad: [
        *["--repo", str(repo), "publish", "--http-root", f"{tmp}/file/{bad.rsplit('/', 1)[1]}"],
        *["--tftp-root", str(tmp / "t"), "--state-dir", str(tmp / "st")],
    ],
    "fleet --state-dir": lambda repo, tmp, bad: [
        *["--repo", str(repo), "fleet", "--state-dir", f"{bad}/no"]
    ],
    "serve --http-root": lambda repo, tmp, bad: [
        *["--repo", str(repo), "serve", "--http-root", f"{bad}/no", "--http-port", "0"]
    ],
    "--private-key-file": lambda repo, tmp, bad: [
        *["--private-key-file", f"{bad}/key", "--repo", str(repo), "build", "--out", str(tmp)]
    ],
}


@pytest.mark.parametrize("name", sorted(ESCAPED))
def test_a_typed_path_that_a_terminal_would_obey_is_shown_escaped(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    bad = tmp_path / "d\x1b[31mX\x07Y"
    bad.mkdir()
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "st").mkdir()
    code, err = run(capsys, ESCAPED[name](example_repo.path, tmp_path, str(bad)))
    assert code == 2, err
    assert "\x1b" not in err and "\x07" not in err, err
    assert "d\\x1b[31mX\\x07Y" in err, err  # (named, escaped)


def test_schema_write_shows_the_directory_it_wrote_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "d\x1b[31mX"
    code, out = run(capsys, ["schema", "--write", str(target)])
    assert code == 0, out
    assert "\x1b" not in out and "d\\x1b[31mX" in out, out
