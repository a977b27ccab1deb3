"""GP115 unknown-secret: `!secret NAME` names a secret that secrets.yaml does not hold.

Fails:   `password: !secret line_2001` with no `line_2001:` under `secrets:`
Passes:  `gitprov secrets set line_2001` first, then `password: !secret line_2001`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get
from gitprov.yamldoc import Document, SecretRef, leaves

CODE = "GP115"
NAME = "unknown-secret"


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
        for (path, _), (line, col) in index.members(name):
            yield error(
                path,
                line,
                col,
                CODE,
                f"unknown secret {name!r}",
                f"add it with `gitprov secrets set {name}` (it is sealed into secrets.yaml)",
            )
