"""GP106 duplicate-path: two devices (or a device and a model's file) publish to one path.

Fails:   `file_name: "fv$(MA:0:6).conf"` with two devices of the same vendor prefix
Passes:  `file_name: "fv$(MA).conf"` (the MAC makes each name unique)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import DEFAULT_FILE_NAME, stem
from gitprov.macros import device_variables, expand, normalise_mac
from gitprov.rules import RuleContext, get
from gitprov.yamldoc import Document

CODE = "GP106"
NAME = "duplicate-path"


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None:
        return
    template = get(fleet.data, "file_name")
    if not isinstance(template, str):
        template = DEFAULT_FILE_NAME
    taken: dict[str, Document] = {}
    for m in ctx.models:
        for key in ("config_file_name",):
            name = get(m.data, key)
            if isinstance(name, str):
                taken[name] = m
        fw = get(m.data, "firmware", "file")
        if isinstance(fw, str):
            taken[fw] = m
    products = {stem(m.path): get(m.data, "product_name") or "" for m in ctx.models}
    for doc in ctx.devices:
        raw = get(doc.data, "mac")
        mac = normalise_mac(raw) if isinstance(raw, str) else None
        if mac is None:
            continue
        model = get(doc.data, "model")
        serial = get(doc.data, "serial")
        name = expand(
            template,
            device_variables(
                mac,
                product_name=str(products.get(model, "")) if isinstance(model, str) else "",
                serial=serial if isinstance(serial, str) else "",
            ),
        )
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
