"""GP111 unknown-macro (warning): a template names a macro the device does not know.

Templates are the fleet's `file_name`, its `provisioning.url` and URL-typed parameters.
A name the device does not know stays in the text as written (`$STRANGE`), and so does a
malformed `$(…)`; that is rarely what was meant. In `file_name`, gitprov itself expands
the macros when it names each published file, and it only knows MA, MAU, MAC, PN and SN:
a device asking for `$IP` would ask for a file that was never written. Nor can it expand
`$SN` for a device without a `serial:`: that file is published with `$SN` in its name,
while the device, which knows its serial, asks for another.

Fails:   `file_name: "fv$(MACADDR).conf"` or `file_name: "fv$(MA:x).conf"`, or
         `file_name: "fv$(MA)-$SN.conf"` with a device that sets no `serial:`, or
         `provisioning: {url: "http://prov.example.com/$(EXTIP)"}` (a macro of the SPA
         family the overview does not list: section 3 names MA, MAU, MAC, PN, SN, IP,
         SWVER and HWVER, and the overview wins where the two differ), or
         `provisioning: {url: "http://prov.example.com/a$$MAU"}` (`$$`, which the
         overview expands to `$` and the MAC in one place, to `$MAU` in another)
Passes:  `file_name: "fv$(MA).conf"`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import DEVICE, FLEET
from gitprov.macros import KNOWN, OVERVIEW, malformed_references, unknown_names
from gitprov.rules import DocContext, RuleContext, get, warning_at
from gitprov.rules.rule_url import url_params
from gitprov.yamldoc import Document, Path_

CODE = "GP111"
NAME = "unknown-macro"

# What gitprov can expand when it names a device's file (macros.device_variables).
FILE_NAME_MACROS = frozenset({"MA", "MAU", "MAC", "PN", "SN"})


def _template(doc: Document, path: Path_, text: str, known: frozenset[str]) -> Iterator[Problem]:
    where = ".".join(str(p) for p in path)
    twice = text.find("$$")
    if twice >= 0 and known is OVERVIEW:
        # (in file_name, GP107 refuses the `$` that `$$` leaves in the published name)
        yield warning_at(
            doc,
            path,
            CODE,
            f"{where}: '$$' (character {twice + 1}) is read two ways by the overview: "
            "'$$MAU' as '$' and the MAC in one place, as '$MAU' in another; the device "
            "may ask the server for either",
            "leave '$' out of URLs",
        )
    for offset, name in unknown_names(text, known):
        if name in KNOWN and known is FILE_NAME_MACROS:
            message = f"{where}: ${name} cannot be expanded when gitprov names the file"
            hint = "use MA, MAU, MAC, PN or SN in file_name"
        elif name in KNOWN:
            message = (
                f"{where}: ${name} (character {offset + 1}) is a macro of the SPA family "
                "that the Flying Voice overview does not list: the device may leave it as "
                "written"
            )
            hint = "the overview's macros: MA, MAU, MAC, PN, SN, IP, SWVER, HWVER"
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
        for at in (("file_name",), ("encryption", "previous", "file_name")):
            template = get(doc.data, *at)
            if isinstance(template, str):
                yield from _template(doc, at, template, FILE_NAME_MACROS)
        url = get(doc.data, "provisioning", "url")
        if isinstance(url, str):
            yield from _template(doc, ("provisioning", "url"), url, OVERVIEW)
    for path, value, _ in url_params(dctx):
        yield from _template(doc, path, value, OVERVIEW)


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    template = ctx.file_name_env[0]
    # ($PN always has a value: the model's name when it sets no product_name.)
    if fleet is None or "SN" not in {name for _, name in unknown_names(template, ())}:
        return

    def no_serial(doc: Document) -> Iterator[tuple[str, str]]:
        serial = get(doc.data, "serial")
        if ctx.mac_of(doc) is not None and not (isinstance(serial, str) and serial):
            yield "SN", doc.path

    index = ctx.index(NAME + "-serial", (DEVICE,), ctx.file_name_env, no_serial)
    count = index.count("SN")
    if count:
        first = index.first("SN")[1]
        doc = ctx.docs.document(first) if count == 1 else None
        named = ctx.file_name_of(doc) if doc is not None else None
        shown = f" as {named[1]!r}" if named is not None else ""
        yield warning_at(
            fleet,
            ("file_name",),
            CODE,
            f"file_name: $SN cannot be expanded for {count} device(s) without a serial "
            f"(first: {first}): published{shown} with '$SN' in the name, while the device "
            "asks for its own serial's name",
            "set `serial:` in those devices, or drop $SN from file_name",
        )
