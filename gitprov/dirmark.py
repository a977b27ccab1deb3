"""Roots whose listing is known without listing them.

A survey of the served files lists each root (the files besides those recorded, a
crashed publish's temps) and, for a root whose files are hard links of another's, reads
each name's inode from the listing: at 100,000 devices that is half of what publishing
the published commit again costs, and its stats the other half.

A directory's mtime and ctime change whenever a name in it is created, removed or
renamed, and only then. So when a listing found exactly the manifest's names, each one
the inode recorded for it, and the directory's stat was the same before and after that
listing, the same stat later vouches for the same listing: no name added, removed or
replaced since. What it does not vouch for is a file written in place (the directory
does not change): each file's own stat still says that.

The record (`LISTED` in the state dir) names the manifest it was made for, by the
manifest file's identity: once another manifest is written, it vouches for nothing.
A stat taken within `RACY_NS` of the directory's last change is not recorded: a change
in the same tick of the filesystem's clock would leave the stat as it was."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import ParamSpec, TypeVar

from gitprov import statejson

LISTED = "roots.listed"
FORMAT = 1
# A filesystem stamps a change with its coarse clock (a tick of 1 to 10 ms on Linux):
# a directory changed less than this before its stat was taken may change again
# within the same stamp.
RACY_NS = 100_000_000

# (st_dev, st_ino, st_mtime_ns, st_ctime_ns) of a root's directory.
Mark = tuple[int, int, int, int]
_T = TypeVar("_T")
_P = ParamSpec("_P")


def mark(root: str | Path) -> Mark | None:
    """The stat of directory `root` now; None when there is none, or it changed too
    recently (see RACY_NS) for a later change to be told from it by its stat."""
    now = time.time_ns()
    try:
        st = os.stat(root)
    except OSError:
        return None
    if max(st.st_mtime_ns, st.st_ctime_ns) > now - RACY_NS:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def same(before: Mark | None, root: str | Path) -> Mark | None:
    """`before` when directory `root` is still as it was then (taken after a listing
    made since `before`: the listing stands for the directory as `before` says)."""
    if before is None:
        return None
    try:
        st = os.stat(root)
    except OSError:
        return None
    return before if (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) == before else None


def around(
    root: str | Path, listing: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> tuple[_T, Mark | None]:
    """listing(*args, **kwargs) (a listing of `root`), and the mark it stands for: the
    directory's stat when it was the same before and after (see `mark`), else None."""
    before = mark(root)
    found = listing(*args, **kwargs)
    return found, same(before, root)


def load(state_dir: Path, manifest: tuple[int, ...] | None) -> dict[str, Mark]:
    """The marks recorded for the manifest whose identity is `manifest` (see
    `plan.file_identity`): root -> the stat its directory had when listed."""
    if manifest is None:
        return {}
    try:
        raw = json.loads(statejson.read_state(state_dir / LISTED))
        if raw.get("format") != FORMAT or raw.get("manifest") != list(manifest):
            return {}
        marks = raw["roots"]
        return {
            str(root): (int(m[0]), int(m[1]), int(m[2]), int(m[3]))
            for root, m in marks.items()
            if isinstance(m, list) and len(m) == 4 and all(type(v) is int for v in m)
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def vouched(state_dir: Path, manifest: tuple[int, ...] | None, roots: Iterable[str]) -> set[str]:
    """Of `roots`, those whose directory is as recorded for that manifest: their
    listing is the manifest's names, each with its recorded inode (see the module)."""
    marks = load(state_dir, manifest)
    return {root for root in roots if root in marks and same(marks[root], root) is not None}


def save(state_dir: Path, manifest: tuple[int, ...] | None, marks: Mapping[str, Mark]) -> None:
    """Record `marks` for the manifest `manifest`. Best effort, never fsynced: a record
    lost only costs the next survey its listings; a torn one fails its parse."""
    if manifest is None or not marks:
        return
    record = {
        "format": FORMAT,
        "manifest": list(manifest),
        "roots": {root: list(m) for root, m in sorted(marks.items())},
    }
    tmp = state_dir / f".gitprov-{LISTED}.tmp"
    try:
        tmp.write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, state_dir / LISTED)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
