"""GP126 binding-key: a model binds a parameter to something that is not a DBID key of its
own: no `key:`, a key not spelt `DBID_[A-Z0-9_]+`, a key the catalog has for another
parameter, or one key bound to two parameters in one model.

A binding is written into every file of the model's devices under its key; a key the
device does not have is silently ignored by it, and one it has for something else sets
that instead.

Fails:   `bindings: {provision.resync_periodic: {key: dbid_resync, source: "…"}}`
Passes:  `bindings: {provision.resync_periodic: {key: DBID_RESYNC_PERIODIC, source: "…"}}`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import DBID_KEY, MODEL
from gitprov.rules import DocContext, error_at, get

CODE = "GP126"
NAME = "binding-key"

_HINT = (
    "write the key as the device's own configuration spells it (e.g. a file exported by "
    "the device): DBID_ followed by capital letters, digits and '_'"
)


def check_document(dctx: DocContext) -> Iterator[Problem]:
    bindings = get(dctx.doc.data, "bindings")
    if dctx.kind != MODEL or not isinstance(bindings, dict):
        return
    doc = dctx.doc
    taken: dict[str, str] = {}
    for name, binding in bindings.items():
        if not isinstance(binding, dict):
            continue  # the schema says so (GP010)
        key = binding.get("key")
        if key is None:
            yield error_at(doc, ("bindings", name), CODE, f"{name}: the binding has no key", _HINT)
            continue
        if not isinstance(key, str) or dctx.is_flagged(("bindings", name, "key")):
            continue
        path = ("bindings", name, "key")
        if not DBID_KEY.fullmatch(key):
            yield error_at(doc, path, CODE, f"{name}: {key!r} is not a DBID key", _HINT)
            continue
        other = dctx.catalog.by_key(key)
        if other is not None:
            yield error_at(
                doc,
                path,
                CODE,
                f"{name}: {key} is the key of {other.name}",
                "bind the key the device uses for this parameter; read it from a "
                "configuration exported by a device of this model",
            )
            continue
        if key in taken:
            yield error_at(
                doc,
                path,
                CODE,
                f"{name}: {key} is bound to {taken[key]} already",
                "one key is one parameter: keep the binding the source says",
            )
            continue
        taken[key] = str(name)
