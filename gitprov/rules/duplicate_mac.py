"""GP101 duplicate-mac: two device files describe the same MAC, in any spelling.

Fails:   devices/a.yaml `mac: "00:21:f2:01:1b:19"` and devices/b.yaml `mac: "0021F2011B19"`
Passes:  each MAC in exactly one device file.
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE
from gitprov.rules import RuleContext
from gitprov.yamldoc import Document

CODE = "GP101"
NAME = "duplicate-mac"


def check(ctx: RuleContext) -> Iterator[Problem]:
    # Entries are plain facts (the MAC's line and column), never the document: an index
    # is kept on disk between processes (gitprov.checkcache).
    def entries(doc: Document) -> Iterator[tuple[str, tuple[int, int]]]:
        mac = ctx.mac_of(doc)
        if mac is not None:
            yield mac, doc.pos(("mac",))

    index = ctx.index(NAME, (DEVICE,), (), entries)
    for mac in index.shared:
        ((other, _), (other_line, _)), *rest = index.members(mac)
        for (path, _), (line, col) in rest:
            yield error(
                path,
                line,
                col,
                CODE,
                f"MAC {mac} is also used by {other}:{other_line}",
                "each device has exactly one file; remove or fix one of them",
            )
