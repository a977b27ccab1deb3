"""GP106 duplicate-path: two devices (or a device and a model's file) publish to one path.

Fails:   `file_name: "fv$(MA:0:6).conf"` with two devices of the same vendor prefix
Passes:  `file_name: "fv$(MA).conf"` (the MAC makes each name unique)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get
from gitprov.yamldoc import Document

CODE = "GP106"
NAME = "duplicate-path"


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None:
        return
    taken: dict[str, Document] = {}
    for m in ctx.models:
        for key in ("config_file_name",):
            name = get(m.data, key)
            if isinstance(name, str):
                taken[name] = m
        fw = get(m.data, "firmware", "file")
        if isinstance(fw, str):
            taken[fw] = m
    for doc in ctx.devices:
        if doc.path not in ctx.file_names:
            continue
        _, name = ctx.file_names[doc.path]
        if name in taken and taken[name] is not doc:
            line, col = doc.pos(("mac",))
            yield error(
                doc.path,
                line,
                col,
                CODE,
                f"publishes to {name!r}, which {taken[name].path} publishes too",
                "make the fleet's file_name unique per device (include $(MA))",
            )
        else:
            taken[name] = doc
