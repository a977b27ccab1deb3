"""GP101 duplicate-mac: two device files describe the same MAC, in any spelling.

Fails:   devices/a.yaml `mac: "00:21:f2:01:1b:19"` and devices/b.yaml `mac: "0021F2011B19"`
Passes:  each MAC in exactly one device file.
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import DEVICE
from gitprov.rules import RuleContext, error_at
from gitprov.yamldoc import Document

CODE = "GP101"
NAME = "duplicate-mac"


def check(ctx: RuleContext) -> Iterator[Problem]:
    def entries(doc: Document) -> Iterator[tuple[str, Document]]:
        mac = ctx.mac_of(doc)
        if mac is not None:
            yield mac, doc

    index = ctx.index(NAME, (DEVICE,), (), entries)
    for mac in index.shared:
        (_, other), *rest = index.members(mac)
        for _, doc in rest:
            yield error_at(
                doc,
                ("mac",),
                CODE,
                f"MAC {mac} is also used by {other.path}:{other.pos(('mac',))[0]}",
                "each device has exactly one file; remove or fix one of them",
            )
