"""GP132 duplicate-name: two files define one profile or one model.

Fails:   profiles/base.yaml and profiles/base.yml (or models/G502N.yaml and models/G502N.yml)
Passes:  each profile and each model in exactly one file.

A profile's or a model's name is its file's name less `.yaml` or `.yml`: with both, one
would silently replace the other, and a pull request that adds the second would change
what every device of the first renders without a line of it in the diff.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import MODEL, PROFILE, stem
from gitprov.rules import RuleContext
from gitprov.yamldoc import Document

CODE = "GP132"
NAME = "duplicate-name"


def check(ctx: RuleContext) -> Iterator[Problem]:
    def entries(doc: Document) -> Iterator[tuple[tuple[str, str], None]]:
        yield (posixpath.basename(posixpath.dirname(doc.path)), stem(doc.path)), None

    index = ctx.index(NAME, (PROFILE, MODEL), (), entries)
    for key in index.shared:
        what = "profile" if key[0] == "profiles" else "model"
        ((first, _), _), *rest = index.members(key)
        for (path, _), _ in rest:
            yield error(
                path,
                1,
                1,
                CODE,
                f"{what} {key[1]!r} is also defined by {first}",
                f"keep one file for the {what}: remove or rename this one",
            )
