"""GP115 unknown-secret: `!secret NAME` names a secret that secrets.yaml does not hold.

Fails:   `password: !secret line_2001` with no `line_2001:` under `secrets:`
Passes:  `gitprov secrets set line_2001` first, then `password: !secret line_2001`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get
from gitprov.secrets import NAME_RE
from gitprov.yamldoc import Document, SecretRef, leaves

CODE = "GP115"
NAME = "unknown-secret"
NAME_RULE = "a secret's name is 1-64 letters, digits, '_', '.' or '-'"


def _uses(doc: Document) -> Iterator[tuple[str, tuple[int, int]]]:
    for path, value in leaves(doc.data):
        if isinstance(value, SecretRef):
            yield value.name, doc.pos(path)


def check(ctx: RuleContext) -> Iterator[Problem]:
    known: set[str] = set()
    for doc in ctx.secrets:
        sealed = get(doc.data, "secrets")
        if isinstance(sealed, dict):
            known.update(sealed)
    index = ctx.index(NAME, None, (), _uses)
    for name in index.keys_not_in(known):
        if not name:
            message = "!secret without a name"
            hint = f"write `!secret NAME`: {NAME_RULE}"
        elif not NAME_RE.fullmatch(name):
            # `gitprov secrets set` refuses it: no hint to run it, nor the name unescaped.
            message = f"{name[:80]!r} cannot be a secret's name"
            hint = NAME_RULE
        else:
            message = f"unknown secret {name!r}"
            hint = f"add it with `gitprov secrets set {name}` (it is sealed into secrets.yaml)"
        for (path, _), (line, col) in index.members(name):
            yield error(path, line, col, CODE, message, hint)
