"""GP115 unknown-secret: `!secret NAME` names a secret that secrets.yaml does not hold.

Fails:   `password: !secret line_2001` with no `line_2001:` under `secrets:`
Passes:  `gitprov secrets set line_2001` first, then `password: !secret line_2001`
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get
from gitprov.yamldoc import Document, Path_, SecretRef

CODE = "GP115"
NAME = "unknown-secret"


def _refs(data: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    if isinstance(data, SecretRef):
        yield path, data.name
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _refs(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _refs(v, (*path, i))


def _uses(doc: Document) -> Iterator[tuple[str, tuple[Document, Path_]]]:
    for path, name in _refs(doc.data, ()):
        yield name, (doc, path)


def check(ctx: RuleContext) -> Iterator[Problem]:
    known: set[str] = set()
    for doc in ctx.secrets:
        sealed = get(doc.data, "secrets")
        if isinstance(sealed, dict):
            known.update(sealed)
    index = ctx.index(NAME, None, (), _uses)
    for name in index.keys_not_in(known):
        for doc, path in index.values(name):
            line, col = doc.pos(path)
            yield error(
                doc.path,
                line,
                col,
                CODE,
                f"unknown secret {name!r}",
                f"add it with `gitprov secrets set {name}` (it is sealed into secrets.yaml)",
            )
