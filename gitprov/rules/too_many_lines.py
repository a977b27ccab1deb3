"""GP122 too-many-lines: a device sets more lines than its model has.

Per-line parameters carry one value per line of the model (`line_count`); items of
`lines:` past it would be dropped without a word.

Fails:   a G502N (`line_count: 2`) device with three items under `lines:`
Passes:  two items, or a model with `line_count: 4`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE
from gitprov.rules import RuleContext, get
from gitprov.yamldoc import Document

CODE = "GP122"
NAME = "too-many-lines"


# Each line item that is set: (0-based slot, line, column).
Slots = tuple[tuple[int, int, int], ...]


def _used(device: Document) -> Iterator[tuple[tuple[str, int], Slots]]:
    """(model, number of lines up to the last one set): more than the model has is wrong."""
    model, lines = get(device.data, "model"), get(device.data, "lines")
    if isinstance(model, str) and isinstance(lines, list):
        used = next((n for n in range(len(lines), 0, -1) if lines[n - 1] is not None), 0)
        if used:
            slots = tuple(
                (slot, *device.pos(("lines", slot)))
                for slot in range(used)
                if lines[slot] is not None
            )
            yield (model, used), slots


def check(ctx: RuleContext) -> Iterator[Problem]:
    index = ctx.index(NAME, (DEVICE,), (), _used)
    for name, used in list(index.keys()):
        model = ctx.model_docs.get(name)
        count = get(model.data, "line_count") if model is not None else None
        if not isinstance(count, int) or isinstance(count, bool) or used <= count:
            continue
        for (path, _), slots in index.members((name, used)):
            yield from _problems(path, name, slots, count)


def _problems(path: str, model: str, slots: Slots, count: int) -> Iterator[Problem]:
    for slot, line, col in slots:
        if slot < count:
            continue
        yield error(
            path,
            line,
            col,
            CODE,
            f"line {slot + 1} is set, but model {model} has {count} line(s)",
            f"remove items past the {count}. of `lines:`, or use the right model",
        )
