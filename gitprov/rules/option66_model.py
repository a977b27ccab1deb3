"""GP301 option66-model: `publish.option66` names a model the inventory does not have.

Fails:   `publish: {option66: [G502X]}` with no models/G502X.yaml
Passes:  `option66: [G502N]` with models/G502N.yaml, or `option66: true` (every model)

A publish cannot write that model's bootstrap file: found here, it is a located error
in review, not a refusal after the merge.
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get

CODE = "GP301"
NAME = "option66-model"


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None:
        return
    names = get(fleet.data, "publish", "option66")
    if not isinstance(names, list):
        return  # (true, false, or a shape the schema reports)
    for i, name in enumerate(names):
        if isinstance(name, str) and name not in ctx.model_docs:
            line, col = fleet.pos(("publish", "option66", i))
            yield error(
                fleet.path,
                line,
                col,
                CODE,
                f"publish.option66 names model {name!r}, which has no models/{name}.yaml",
                "name a model of the inventory, or write true for every model",
            )
