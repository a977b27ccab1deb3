"""GP133 option66-over-rule: a layer turns option 66 on where gitprov writes a Profile Rule.

The vendor overview (2.1): with Option 66 enabled "the parameter 'Profile Rule' has no
effect", and (4.4) "if Profile Rule is preferred, Option 66 should be set 'disable' or set
DBID_PRV_OPTION66_ENABLED=0 in configuration file". With `provisioning.url` set, each
device's file carries its own Profile Rule (and its key); a file that also sets
`provision.option66` on sends the device back to the option-66 Config File Name, whose
bootstrap has a lower version and no key: it never takes a new file again.

Fails:   `params: {provision.option66: true}` (any layer) with `provisioning: {url: ...}`
Passes:  `provision.option66: false`, or the parameter not set (the bootstrap turns it off)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get
from gitprov.rules._bindings import LAYER_KINDS
from gitprov.yamldoc import Document

CODE = "GP133"
NAME = "option66-over-rule"

KEY = "DBID_PRV_OPTION66_ENABLED"


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None or not get(fleet.data, "provisioning", "url"):
        return
    catalog = ctx.catalog

    def turned_on(doc: Document) -> Iterator[tuple[str, tuple[str, int, int]]]:
        params = get(doc.data, "params")
        if not isinstance(params, dict):
            return
        for name, value in params.items():
            p = catalog.lookup(name) if isinstance(name, str) else None
            # (rendered as the device reads it: true and 1 are "1")
            on = value is True or (not isinstance(value, bool) and str(value) == "1")
            if p is not None and p.key == KEY and on:
                line, col = doc.pos(("params", name))
                yield doc.path, (name, line, col)

    index = ctx.index(NAME, LAYER_KINDS, catalog.digest, turned_on)
    for path in sorted(index.keys()):
        for name, line, col in index.values(path):
            yield error(
                path,
                line,
                col,
                CODE,
                f"{name} turns option 66 on: the device would ignore the Profile Rule "
                "its file gives it (provisioning.url) and go back to the option-66 "
                "bootstrap, which never brings it a newer file",
                "remove it, or set it to false (the bootstrap file turns option 66 off)",
            )
