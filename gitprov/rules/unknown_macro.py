"""GP111 unknown-macro (warning): a template names a macro the device does not know.

Templates are the fleet's `file_name`, its `provisioning.url` and URL-typed parameters.
A name the device does not know stays in the text as written (`$STRANGE`), and so does a
malformed `$(…)`; that is rarely what was meant. In `file_name`, gitprov itself expands
the macros when it names each published file, and it only knows MA, MAU, MAC, PN and SN:
a device asking for `$IP` would ask for a file that was never written.

Fails:   `file_name: "fv$(MACADDR).conf"` or `file_name: "fv$(MA:x).conf"`
Passes:  `file_name: "fv$(MA).conf"`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import FLEET
from gitprov.macros import KNOWN, malformed_references, unknown_names
from gitprov.rules import DocContext, get, warning_at
from gitprov.rules.rule_url import url_params
from gitprov.yamldoc import Document, Path_

CODE = "GP111"
NAME = "unknown-macro"

# What gitprov can expand when it names a device's file (macros.device_variables).
FILE_NAME_MACROS = frozenset({"MA", "MAU", "MAC", "PN", "SN"})


def _template(doc: Document, path: Path_, text: str, known: frozenset[str]) -> Iterator[Problem]:
    where = ".".join(str(p) for p in path)
    for offset, name in unknown_names(text, known):
        if name in KNOWN:
            message = f"{where}: ${name} cannot be expanded when gitprov names the file"
            hint = "use MA, MAU, MAC, PN or SN in file_name"
        else:
            message = f"{where}: ${name} (character {offset + 1}) is not a macro the device knows"
            hint = "it stays as written; known: MA, MAU, MAC, PN, SN, IP, SWVER, HWVER"
        yield warning_at(doc, path, CODE, message, hint)
    for offset, written in malformed_references(text):
        yield warning_at(
            doc,
            path,
            CODE,
            f"{where}: {written!r} (character {offset + 1}) is not a valid macro; the device "
            "leaves it as written",
            "write $(NAME), $(NAME:p) or $(NAME:p:q), e.g. $(MAU:4)",
        )


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    if dctx.kind == FLEET:
        template = get(doc.data, "file_name")
        if isinstance(template, str):
            yield from _template(doc, ("file_name",), template, FILE_NAME_MACROS)
        url = get(doc.data, "provisioning", "url")
        if isinstance(url, str):
            yield from _template(doc, ("provisioning", "url"), url, KNOWN)
    for path, value, _ in url_params(dctx):
        yield from _template(doc, path, value, KNOWN)
