"""GP122 too-many-lines: a device sets more lines than its model has.

Per-line parameters carry one value per line of the model (`line_count`); items of
`lines:` past it would be dropped without a word.

Fails:   a G502N (`line_count: 2`) device with three items under `lines:`
Passes:  two items, or a model with `line_count: 4`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get

CODE = "GP122"
NAME = "too-many-lines"


def check(ctx: RuleContext) -> Iterator[Problem]:
    for device in ctx.devices:
        lines = get(device.data, "lines")
        model = ctx.model_of(device)
        count = get(model.data, "line_count") if model is not None else None
        if not isinstance(lines, list) or not isinstance(count, int) or isinstance(count, bool):
            continue
        for slot in range(count, len(lines)):
            if lines[slot] is None:
                continue
            line, col = device.pos(("lines", slot))
            yield error(
                device.path,
                line,
                col,
                CODE,
                f"line {slot + 1} is set, but model {get(device.data, 'model')} has "
                f"{count} line(s)",
                f"remove items past the {count}. of `lines:`, or use the right model",
            )
