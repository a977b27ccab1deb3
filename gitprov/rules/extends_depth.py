"""GP125 extends-depth: an `extends` chain longer than the fleet's `limits.extends_depth`.

Every device walks its profile's whole chain; a chain of thousands of profiles is a
mistake or an attack, and costs every device that uses it. The problem is reported once a
chain, at the profile whose `extends:` makes it one profile too long.

Fails:   33 profiles, each extending the next (the default limit is 32)
Passes:  profiles/office.yaml `extends: base`, profiles/base.yaml without `extends`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.rules import RuleContext, error_at, get

CODE = "GP125"
NAME = "extends-depth"


def check(ctx: RuleContext) -> Iterator[Problem]:
    docs = ctx.profile_docs
    parent: dict[str, str] = {}
    for name, doc in docs.items():
        ext = get(doc.data, "extends")
        if isinstance(ext, str) and ext in docs:
            parent[name] = ext
    limit = ctx.limits.extends_depth
    # Profiles in the chain from each profile to its base, and that base; a profile that
    # leads into a loop has none (GP104 reports the loop).
    depth: dict[str, int] = {}
    base: dict[str, str] = {}
    for start in sorted(docs):
        walk: list[str] = []
        on_walk: set[str] = set()
        node: str | None = start
        while node is not None and node not in depth and node not in on_walk:
            on_walk.add(node)
            walk.append(node)
            node = parent.get(node)
        if node is None:
            count, root = 0, walk[-1]
        elif node in depth and depth[node] > 0:
            count, root = depth[node], base[node]
        else:
            for name in walk:
                depth[name] = 0
            continue
        for name in reversed(walk):
            count += 1
            depth[name] = count
            base[name] = root
    for name in sorted(docs):
        if depth.get(name) != limit + 1:
            continue
        shown = [name, parent[name]]
        chain = " → ".join(shown) + (f" → … → {base[name]}" if base[name] != shown[-1] else "")
        yield error_at(
            docs[name],
            ("extends",),
            CODE,
            f"the extends chain {chain} holds more than {limit} profiles "
            f"(limit {limit}: limits.extends_depth)",
            "flatten the chain (merge profiles into their parents); "
            + ctx.limits.hint("extends_depth"),
        )
