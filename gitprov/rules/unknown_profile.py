"""GP103 unknown-profile: a device's `profile:` or a profile's `extends:` names no profile.

Fails:   `profile: ofice` with only profiles/office.yaml
Passes:  `profile: office`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE, PROFILE
from gitprov.rules import NameHints, RuleContext, get
from gitprov.yamldoc import Document

CODE = "GP103"
NAME = "unknown-profile"


def _profile(doc: Document) -> Iterator[tuple[str, tuple[int, int]]]:
    name = get(doc.data, "profile")
    if isinstance(name, str):
        yield name, doc.pos(("profile",))


def check(ctx: RuleContext) -> Iterator[Problem]:
    names = ctx.names(PROFILE)
    index = ctx.index(NAME, (DEVICE,), (), _profile)
    unknown = [
        (path, at, name)
        for name in index.keys_not_in(names)
        for (path, _), at in index.members(name)
    ]
    for doc in ctx.profiles:
        name = get(doc.data, "extends")
        if isinstance(name, str) and name not in names:
            unknown.append((doc.path, doc.pos(("extends",)), name))
    hint = NameHints(names, "profiles", lambda name: f"add profiles/{name}.yaml")
    # By name: the names given a close-name search are the same whatever order the
    # index holds them in (a fresh validation or one from a parent's snapshot).
    for path, (line, col), name in sorted(unknown, key=lambda u: (u[2], u[0])):
        yield error(path, line, col, CODE, f"unknown profile {str(name)!r}", hint(name))
