"""GP122 too-many-lines: a device sets more lines than its model has.

Per-line parameters carry one value per line of the model (`line_count`); items of
`lines:` past it would be dropped without a word.

Fails:   a G502N (`line_count: 2`) device with three items under `lines:`
Passes:  two items, or a model with `line_count: 4`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import DEVICE
from gitprov.rules import RuleContext, error_at, get
from gitprov.yamldoc import Document

CODE = "GP122"
NAME = "too-many-lines"


def _used(device: Document) -> Iterator[tuple[tuple[str, int], Document]]:
    """(model, number of lines up to the last one set): more than the model has is wrong."""
    model, lines = get(device.data, "model"), get(device.data, "lines")
    if isinstance(model, str) and isinstance(lines, list):
        used = next((n for n in range(len(lines), 0, -1) if lines[n - 1] is not None), 0)
        if used:
            yield (model, used), device


def check(ctx: RuleContext) -> Iterator[Problem]:
    index = ctx.index(NAME, (DEVICE,), (), _used)
    for name, used in list(index.keys()):
        model = ctx.model_docs.get(name)
        count = get(model.data, "line_count") if model is not None else None
        if not isinstance(count, int) or isinstance(count, bool) or used <= count:
            continue
        for device in index.values((name, used)):
            yield from _problems(device, count)


def _problems(device: Document, count: int) -> Iterator[Problem]:
    lines = get(device.data, "lines")
    if isinstance(lines, list):
        for slot in range(count, len(lines)):
            if lines[slot] is None:
                continue
            yield error_at(
                device,
                ("lines", slot),
                CODE,
                f"line {slot + 1} is set, but model {get(device.data, 'model')} has "
                f"{count} line(s)",
                f"remove items past the {count}. of `lines:`, or use the right model",
            )
