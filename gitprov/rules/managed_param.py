"""GP117 managed-param: the inventory sets a parameter that gitprov computes.

DBID_DBASE_VERSION comes from git history; DBID_PROFILE_RULE from the fleet's
`provisioning.url`, the device's key and its file name.

Fails:   `params: {DBID_DBASE_VERSION: 2208}`
Passes:  `version_floor: 2207` in gitprov.yaml
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.rules import DocContext, error_at

CODE = "GP117"
NAME = "managed-param"

_HINTS = {
    "DBID_DBASE_VERSION": "remove it; raise version_floor in gitprov.yaml to move versions up",
    "DBID_PROFILE_RULE": "remove it; set provisioning.url in gitprov.yaml instead",
}


def check_document(dctx: DocContext) -> Iterator[Problem]:
    for key, _ in dctx.params():
        p = dctx.catalog.lookup(key)
        if p is not None and p.managed:
            yield error_at(
                dctx.doc,
                ("params", key),
                CODE,
                f"{p.key} is computed by gitprov",
                _HINTS.get(p.key, "remove it"),
                key=True,
            )
