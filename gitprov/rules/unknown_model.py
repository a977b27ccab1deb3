"""GP102 unknown-model: a device names a model that has no file in models/.

Fails:   `model: IP524N` with only models/IP542N.yaml
Passes:  `model: IP542N`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE, MODEL
from gitprov.rules import NameHints, RuleContext, get
from gitprov.yamldoc import Document

CODE = "GP102"
NAME = "unknown-model"


def _model(doc: Document) -> Iterator[tuple[str, tuple[int, int]]]:
    model = get(doc.data, "model")
    if isinstance(model, str):
        yield model, doc.pos(("model",))


def check(ctx: RuleContext) -> Iterator[Problem]:
    models = ctx.names(MODEL)
    index = ctx.index(NAME, (DEVICE,), (), _model)
    hints = NameHints(models, "models", lambda model: f"add models/{model}.yaml")
    for model in sorted(index.keys_not_in(models)):  # (see unknown_profile)
        hint = hints(model)
        for (path, _), (line, col) in index.members(model):
            yield error(path, line, col, CODE, f"unknown model {str(model)!r}", hint)
