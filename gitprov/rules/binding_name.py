"""GP127 binding-name: a model binds a name that is not a catalog parameter without a
published key: a typo, a parameter whose key is published already (it needs no binding),
or the Config File Name (a model setting of its own).

Fails:   `bindings: {provision.resync_period: {key: DBID_RESYNC_PERIODIC, source: "…"}}`
         (did you mean provision.resync_periodic?)
Passes:  `bindings: {provision.resync_periodic: {key: DBID_RESYNC_PERIODIC, source: "…"}}`
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import MODEL
from gitprov.rules import DocContext, error_at, get

CODE = "GP127"
NAME = "binding-name"

CONFIG_FILE_NAME = "provision.config_file_name"


def check_document(dctx: DocContext) -> Iterator[Problem]:
    bindings = get(dctx.doc.data, "bindings")
    if dctx.kind != MODEL or not isinstance(bindings, dict):
        return
    catalog = dctx.catalog
    bindable = [u.name for u in catalog.unpublished if u.name != CONFIG_FILE_NAME]
    for name in bindings:
        path = ("bindings", name)
        if name == CONFIG_FILE_NAME:
            yield error_at(
                dctx.doc,
                path,
                CODE,
                f"{name} is not bound: it is this model's `config_file_name:`, the name "
                "of its option-66 file",
                "remove the binding and set config_file_name: in this file",
                key=True,
            )
            continue
        if catalog.unpublished_named(name) is not None:
            continue
        published = catalog.lookup(name)
        if published is not None:
            yield error_at(
                dctx.doc,
                path,
                CODE,
                f"{name} has a published key, {published.key}: it needs no binding",
                f"remove the binding; set {published.name} by name",
                key=True,
            )
            continue
        close = difflib.get_close_matches(str(name), bindable, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        yield error_at(
            dctx.doc,
            path,
            CODE,
            f"{name} is not a parameter of the catalog without a published key",
            hint + "bindable: " + ", ".join(bindable),
            key=True,
        )
