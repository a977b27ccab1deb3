"""gitprov.paths: each way looking at a path fails for reasons of the path itself comes
out as one UnusablePath (a usage error) naming it, and only those."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gitprov import paths
from gitprov.errors import UsageError


@pytest.fixture
def loop(tmp_path: Path) -> Path:
    (tmp_path / "loopa").symlink_to("loopb")
    (tmp_path / "loopb").symlink_to("loopa")
    return tmp_path / "loopa"


@pytest.mark.parametrize("below", ["", "sub/file"])
@pytest.mark.parametrize("look", [paths.resolved, paths.usable, paths.exists, paths.is_dir])
def test_a_symlink_loop_is_an_unusable_path_naming_it(
    loop: Path, below: str, look: Callable[..., object]
) -> None:
    path = loop / below if below else loop
    with pytest.raises(paths.UnusablePath) as caught:
        look(path, "--state-dir")
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2
    assert caught.value.message == f"cannot use --state-dir {path}: {os.strerror(errno.ELOOP)}"
    assert "symbolic link" in caught.value.hint


@pytest.mark.parametrize("look", [paths.usable, paths.exists, paths.is_dir, paths.kind])
def test_a_name_too_long_is_an_unusable_path(tmp_path: Path, look: Callable[..., object]) -> None:
    path = tmp_path / ("n" * 300)
    with pytest.raises(paths.UnusablePath, match="File name too long"):
        look(path)


def test_resolved_lets_a_name_too_long_pass_as_resolve_does(tmp_path: Path) -> None:
    path = tmp_path / ("n" * 300)
    assert paths.resolved(path) == path.resolve()


@pytest.mark.parametrize("look", [paths.absolute, paths.resolved, paths.usable, paths.kind])
def test_a_relative_path_without_a_current_directory_is_an_unusable_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, look: Callable[..., object]
) -> None:
    (tmp_path / "gone").mkdir()
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()
    with pytest.raises(paths.UnusablePath, match="current directory no longer exists"):
        look("rel")
    assert paths.absolute(tmp_path) == tmp_path  # (an absolute one needs none)


def test_what_is_there_and_what_is_not(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert paths.is_dir(tmp_path) and not paths.is_dir(tmp_path / "f")
    assert paths.exists(tmp_path / "f") and not paths.exists(tmp_path / "none")
    assert not paths.exists(tmp_path / "f" / "below")  # (ENOTDIR: nothing there)
    assert paths.resolved(tmp_path / "none") == (tmp_path / "none").resolve()


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.EACCES, "Permission denied", "/x"), RuntimeError("something else")],
)
def test_other_errors_are_not_a_path_s_own(exc: BaseException) -> None:
    assert paths.unusable("/x", exc) is None
