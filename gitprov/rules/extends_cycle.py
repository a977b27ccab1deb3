"""GP104 extends-cycle: profiles that extend each other in a loop.

Fails:   profiles/a.yaml `extends: b` and profiles/b.yaml `extends: a`
Passes:  profiles/a.yaml `extends: b`, profiles/b.yaml without `extends`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import stem
from gitprov.rules import RuleContext, error_at, get

CODE = "GP104"
NAME = "extends-cycle"


def check(ctx: RuleContext) -> Iterator[Problem]:
    parent = {}
    docs = {}
    for doc in ctx.profiles:
        ext = get(doc.data, "extends")
        if isinstance(ext, str):
            parent[stem(doc.path)] = ext
            docs[stem(doc.path)] = doc
    # Each profile is walked once: a walk stops at a profile an earlier walk went through
    # (whatever lies beyond it is known), so a long chain costs its length, not its square.
    visited: set[str] = set()
    for start in sorted(parent):
        if start in visited:
            continue
        walk: list[str] = []
        at: dict[str, int] = {}
        node: str | None = start
        while node is not None and node not in visited:
            visited.add(node)
            at[node] = len(walk)
            walk.append(node)
            node = parent.get(node)
        if node is None or node not in at:
            continue
        cycle = walk[at[node] :]
        for name in cycle:
            yield error_at(
                docs[name],
                ("extends",),
                CODE,
                "profiles extend each other in a loop: " + " → ".join([*cycle, cycle[0]]),
                f"remove `extends:` from one of {', '.join(cycle)}",
            )
