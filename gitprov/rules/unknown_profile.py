"""GP103 unknown-profile: a device's `profile:` or a profile's `extends:` names no profile.

Fails:   `profile: ofice` with only profiles/office.yaml
Passes:  `profile: office`
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import PROFILE
from gitprov.rules import RuleContext, get

CODE = "GP103"
NAME = "unknown-profile"


def check(ctx: RuleContext) -> Iterator[Problem]:
    names = ctx.names(PROFILE)
    for doc, key in [(d, "profile") for d in ctx.devices] + [(p, "extends") for p in ctx.profiles]:
        name = get(doc.data, key)
        if isinstance(name, str) and name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else (
                    f"known profiles: {', '.join(sorted(names)) or 'none'}; "
                    f"add profiles/{name}.yaml"
                )
            )
            line, col = doc.pos((key,))
            yield error(doc.path, line, col, CODE, f"unknown profile {name!r}", hint)
