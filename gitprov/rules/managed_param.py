"""GP117 managed-param: the inventory sets a parameter that gitprov computes.

DBID_DBASE_VERSION comes from git history; DBID_PROFILE_RULE from the fleet's
`provisioning.url`, the device's key and its file name.

Fails:   `params: {DBID_DBASE_VERSION: 2208}`
Passes:  `version_floor: 2207` in gitprov.yaml
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get

CODE = "GP117"
NAME = "managed-param"

_HINTS = {
    "DBID_DBASE_VERSION": "remove it; raise version_floor in gitprov.yaml to move versions up",
    "DBID_PROFILE_RULE": "remove it; set provisioning.url in gitprov.yaml instead",
}


def check(ctx: RuleContext) -> Iterator[Problem]:
    for doc in ctx.docs.all():
        params = get(doc.data, "params")
        if not isinstance(params, dict):
            continue
        for key in params:
            p = ctx.catalog.by_key(key) if isinstance(key, str) else None
            if p is not None and p.managed:
                line, col = doc.pos(("params", key), key=True)
                yield error(
                    doc.path,
                    line,
                    col,
                    CODE,
                    f"{key} is computed by gitprov",
                    _HINTS.get(key, "remove it"),
                )
