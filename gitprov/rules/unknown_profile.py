"""GP103 unknown-profile: a device's `profile:` or a profile's `extends:` names no profile.

Fails:   `profile: ofice` with only profiles/office.yaml
Passes:  `profile: office`
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import DEVICE, PROFILE
from gitprov.rules import RuleContext, error_at, get
from gitprov.yamldoc import Document

CODE = "GP103"
NAME = "unknown-profile"


def _profile(doc: Document) -> Iterator[tuple[str, Document]]:
    name = get(doc.data, "profile")
    if isinstance(name, str):
        yield name, doc


def check(ctx: RuleContext) -> Iterator[Problem]:
    names = ctx.names(PROFILE)
    index = ctx.index(NAME, (DEVICE,), (), _profile)
    unknown = [
        (doc, "profile", name) for name in index.keys_not_in(names) for doc in index.values(name)
    ]
    for doc in ctx.profiles:
        name = get(doc.data, "extends")
        if isinstance(name, str) and name not in names:
            unknown.append((doc, "extends", name))
    for doc, key, name in unknown:
        close = difflib.get_close_matches(name, sorted(names), n=1)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else (f"known profiles: {', '.join(sorted(names)) or 'none'}; add profiles/{name}.yaml")
        )
        yield error_at(doc, (key,), CODE, f"unknown profile {name!r}", hint)
