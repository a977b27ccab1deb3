"""GP113 version-floor-lowered: `version_floor` is lower than in the parent commit.

DBID_DBASE_VERSION = version_floor + history depth. Lowering the floor lowers every
device's version, and a device does not apply a file whose version is not new to it: the
whole fleet would stop taking changes until the versions climb back.

Fails:   parent commit `version_floor: 2000`, this commit `version_floor: 1000`
Passes:  parent `version_floor: 1000`, this commit `version_floor: 2000` (raising is fine)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import FLEET
from gitprov.rules import RuleContext, error_at, get

CODE = "GP113"
NAME = "version-floor-lowered"


def _floor(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None or ctx.parent is None:
        return
    before_docs = ctx.parent.of(FLEET)
    if not before_docs:
        return
    before = _floor(get(before_docs[0].data, "version_floor"))
    now = _floor(get(fleet.data, "version_floor"))
    if before is None or now is None or now >= before:
        return
    yield error_at(
        fleet,
        ("version_floor",),
        CODE,
        f"version_floor lowered from {before} (parent commit) to {now}",
        f"versions only go up: keep {before} or raise it (to undo a change, git revert it)",
    )
