"""GP128 binding-source: a model binds a key without saying where it was read.

A key nobody can trace back cannot be checked when a firmware update renames it, and a
guessed key is silently ignored by the device. `source:` says where it comes from: a
configuration exported by a device (model and firmware version), its web page, a vendor
document.

Fails:   `bindings: {provision.resync_periodic: {key: DBID_RESYNC_PERIODIC}}`
Passes:  `bindings: {provision.resync_periodic: {key: DBID_RESYNC_PERIODIC,
          source: "exported configuration of an IP542N, firmware v1.0.7"}}`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import MODEL
from gitprov.rules import DocContext, error_at, get

CODE = "GP128"
NAME = "binding-source"


def check_document(dctx: DocContext) -> Iterator[Problem]:
    bindings = get(dctx.doc.data, "bindings")
    if dctx.kind != MODEL or not isinstance(bindings, dict):
        return
    for name, binding in bindings.items():
        if not isinstance(binding, dict):
            continue
        source = binding.get("source")
        if isinstance(source, str) and source.strip():
            continue
        if source is not None and not isinstance(source, str):
            continue  # the schema says so (GP010)
        path = ("bindings", name, "source") if source is not None else ("bindings", name)
        yield error_at(
            dctx.doc,
            path,
            CODE,
            f"{name}: the binding does not say where its key was read",
            'add source: "…", e.g. "exported configuration of an IP542N, firmware v1.0.7"',
        )
