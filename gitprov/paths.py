"""Paths the user gives (an option, a variable, a setting) that cannot even be looked at.

Looking at a path fails for reasons of the path itself, not of gitprov: a symbolic link
on the way that leads back to itself, a name longer than the file system allows, a
relative path when the current directory was deleted. Each is the user's to fix (exit
2, the path named and what to do), and each surfaces differently: Python 3.11's
`Path.resolve()` says RuntimeError for a loop, `Path.exists()` says False for a loop
but raises for a name too long, `Path.absolute()` raises FileNotFoundError without a
name. These helpers say all of them the same way, as `UnusablePath`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from gitprov.errors import UsageError

# The errors of a path's own making, which no retry and no other setting cures.
PATH_ERRNOS = frozenset({errno.ELOOP, errno.ENAMETOOLONG})

_HINTS = {
    errno.ELOOP: "a symbolic link on the way leads back to itself: fix or remove the link, "
    "or give another path",
    errno.ENAMETOOLONG: "a name in it (or the whole path) is longer than the file system "
    "allows: give a shorter path",
}
_NO_CWD = "the current directory no longer exists"
_NO_CWD_HINT = "cd to a directory that exists and run it again, or give an absolute path"


class UnusablePath(UsageError):
    """`path` cannot be looked at, for `reason`; `what` names where it came from."""

    def __init__(
        self, path: str | os.PathLike[str], reason: str, hint: str, what: str = ""
    ) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.what = what
        named = f"{what} {self.path}" if what else self.path
        super().__init__(f"cannot use {named}: {reason}", hint=hint)


def from_errno(path: str | os.PathLike[str], code: int, what: str = "") -> UnusablePath:
    return UnusablePath(path, os.strerror(code), _HINTS.get(code, "check the path"), what)


def unusable(
    path: str | os.PathLike[str], exc: BaseException, what: str = ""
) -> UnusablePath | None:
    """The usage error `exc` is when it is a path's own problem (see the module); None
    for anything else, which the caller handles as before."""
    if isinstance(exc, UnusablePath):
        return exc
    if isinstance(exc, OSError) and exc.errno in PATH_ERRNOS:
        return from_errno(path, exc.errno, what)
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop"):
        # (Python 3.11's Path.resolve(); later versions raise OSError, or nothing)
        return from_errno(path, errno.ELOOP, what)
    return None


def absolute(path: str | os.PathLike[str], what: str = "") -> Path:
    """Path(path).absolute(), or UnusablePath when it is relative and the current
    directory is gone (os.getcwd() fails; the kernel names no path)."""
    here = Path(path)
    if here.is_absolute():
        return here
    try:
        return here.absolute()
    except FileNotFoundError:
        raise UnusablePath(path, _NO_CWD, _NO_CWD_HINT, what) from None


def resolved(path: str | os.PathLike[str], what: str = "") -> Path:
    """Path(path).resolve() (symlinks followed), or UnusablePath for a loop or a
    relative path without a current directory. A name too long passes, as with
    resolve(): see `usable`."""
    here = absolute(path, what)
    try:
        return here.resolve()
    except (OSError, RuntimeError) as exc:
        found = unusable(path, exc, what)
        if found is None:
            raise
        raise found from None


def usable(path: str | os.PathLike[str], what: str = "") -> Path:
    """`resolved`, and UnusablePath for a name too long as well: for a path gitprov
    is about to look at or make, where no file can ever be."""
    kind(path, what)
    return resolved(path, what)


def kind(path: str | os.PathLike[str], what: str = "") -> int | None:
    """The file type bits (stat.S_IFMT) of what `path` names, symlinks followed; None
    when nothing is there. UnusablePath when the path cannot be looked at."""
    absolute(path, what)
    try:
        return stat.S_IFMT(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None  # (as Path.exists(): a NUL names nothing)
    except OSError as exc:
        found = unusable(path, exc, what)
        if found is None:
            raise
        raise found from None


def exists(path: str | os.PathLike[str], what: str = "") -> bool:
    """Path.exists(), but UnusablePath for a loop or a name too long (where exists()
    says False, or raises)."""
    return kind(path, what) is not None


def is_dir(path: str | os.PathLike[str], what: str = "") -> bool:
    """Path.is_dir(), but UnusablePath as `exists`."""
    return kind(path, what) == stat.S_IFDIR


__all__ = [
    "PATH_ERRNOS",
    "UnusablePath",
    "absolute",
    "exists",
    "is_dir",
    "kind",
    "resolved",
    "usable",
]
