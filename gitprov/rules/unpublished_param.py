"""GP116 unpublished-param: a parameter set by a readable name whose DBID key the vendor
has not published (Resync Periodic, Upgrade Rule, …; see `gitprov params`).

gitprov never invents a DBID key: a guessed key would be silently ignored by the device.
Once the key is known (for example from a configuration file exported by the device),
write it as a raw DBID_* key.

Fails:   `params: {provision.resync_periodic: 86400}`
Passes:  `params: {DBID_THE_REAL_KEY: 86400}` (a warning GP114 until it is catalogued)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.rules import DocContext, error_at

CODE = "GP116"
NAME = "unpublished-param"

_ELSEWHERE = {
    "provision.config_file_name": "set `config_file_name:` in models/NAME.yaml instead",
}


def check_document(dctx: DocContext) -> Iterator[Problem]:
    for name, _ in dctx.params():
        u = dctx.catalog.unpublished_named(name)
        if u is None:
            continue
        yield error_at(
            dctx.doc,
            ("params", name),
            CODE,
            f"{name} ({u.label}): the vendor has not published its DBID key, so gitprov "
            "cannot write it",
            _ELSEWHERE.get(
                name,
                "if you know the key (e.g. from a file exported by the device), "
                "write it as a raw DBID_* key",
            ),
            key=True,
        )
