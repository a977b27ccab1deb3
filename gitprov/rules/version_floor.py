"""GP113 version-floor-lowered: `version_floor` is lower than the history already reached.

DBID_DBASE_VERSION = the highest version_floor of the commit and its ancestors + a count
of the device's changes (docs/versions.md). A floor written lower than one some ancestor
had changes nothing in the numbers, but reads as if it did; a reviewer would believe a
version that is not served. The comparison is with the whole history, not the parent:
lowering the floor and then making an ordinary change must not slip through.

Fails:   an ancestor commit has `version_floor: 2000`, this commit `version_floor: 1000`
Passes:  the history's highest is `version_floor: 1000`, this commit `version_floor: 2000`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.rules import RuleContext, error_at, get, warning_at

CODE = "GP113"
NAME = "version-floor-lowered"


def _floor(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    history = ctx.history_floor
    if fleet is None or history is None:
        return
    now = _floor(get(fleet.data, "version_floor"))
    if now is None:
        return
    if not history.complete:
        # (a clone of depth 1, actions/checkout's default, holds no parent to compare with)
        seen = (
            "checked against the parent commit only: the history is shallow, so a lower "
            "floor in an older commit cannot be seen"
            if history.commit
            else "not checked: the history is shallow and holds none of this commit's "
            "parents, so a lower floor than the history's cannot be seen"
        )
        yield warning_at(
            fleet,
            ("version_floor",),
            CODE,
            f"version_floor {seen}",
            "fetch the whole history (`git fetch --unshallow`; actions/checkout `fetch-depth: 0`)",
        )
    if now >= history.value:
        return
    where = f"commit {history.commit[:12]}" if history.commit else "the parent commit"
    yield error_at(
        fleet,
        ("version_floor",),
        CODE,
        f"version_floor lowered to {now}: the history already has {history.value} (set in {where})",
        f"versions only go up: write {history.value} or higher (to undo a change, git revert it)",
    )
