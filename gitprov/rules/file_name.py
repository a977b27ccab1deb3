"""GP107 bad-file-name: a published file's name would not be a plain, visible file name.

Every name gitprov publishes into the roots must be one path component that nginx and
tftpd serve: the fleet's `file_name` template expanded with each device's macro variables,
and each model's `config_file_name` (the option-66 bootstrap) and `firmware.file`. No `/`,
no `.` or `..`, no leading dot (servers deny dot-files, and gitprov's own temp files are
dot-files it deletes), no NUL or control character, no `%`, `?` or `#` (the device asks
for the name inside a URL, where they mean an escape, a query and a fragment), no
whitespace (it ends the URL of a Profile Rule), no `$` (the device expands macros in the
URL it fetches by), none of `|"<>^`{}[]` (no URL carries them unencoded; `|` separates a
rule's alternative URLs), at most 255 bytes.

Fails:   `file_name: "../fv$(MA).conf"` or `file_name: "cfg/$MA.conf"` (or such an
         `encryption.previous.file_name`, the old names of a key rotation), or in a model
         `config_file_name: .IP542N.conf` or `firmware: {file: ..}`; `file_name:
         "fv$(PN)-$(MA).conf"` for a model whose product_name is `VOIP ATA` or
         `G502N|FXS`, and `file_name: "fv$$MA.conf"` (a literal `$`)
Passes:  `file_name: "fv$(MA).conf"`, `config_file_name: IP542N.conf`
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.formats.flyingvoice import UNSAFE
from gitprov.inventory import DEVICE, MODEL, stem
from gitprov.plan import is_temp
from gitprov.rules import DocContext, RuleContext, error_at, get
from gitprov.yamldoc import Document, Path_

CODE = "GP107"
NAME = "bad-file-name"


# Letters, digits, `_`, `-` and `.` with no leading dot: none of the reasons below can
# apply but `..` and the length. Every device file's name is one (a publish asks twice per
# file, a fleet's worth of names).
_PLAIN = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z_.-]{0,254}")


def unsafe_reason(name: str) -> str | None:
    """Why `name` cannot be published as a file of the roots, or None if it can."""
    if _PLAIN.fullmatch(name) and ".." not in name:
        return None
    return _reason(name)


def _reason(name: str) -> str | None:
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", ".."):
        return "it names a directory, not a file"
    if ".." in name:
        return "it contains '..'"
    if is_temp(name):
        return "it looks like gitprov's own temp files, which a publish deletes"
    if name.startswith("."):
        return "it starts with '.', and dot-files are never served"
    if "\t" in name or UNSAFE.search(name):
        return "it contains a control character, NUL or an invisible Unicode control"
    if len(name.encode("utf-8")) > 255:
        return "it is longer than 255 bytes"
    if any(c.isspace() for c in name):
        # A rule's URL ends at whitespace (the device's and gitprov's reading alike).
        return (
            "it contains whitespace, which ends the URL of the device's Profile Rule: "
            "the device would ask for another name"
        )
    if "$" in name:
        # The device expands macros in the rule it fetches by; the vendor's text reads
        # `$$` both as a literal `$` and as an escape of the next macro.
        return (
            "it contains '$', which the device reads as the start of a macro in the URL "
            "it fetches by; the vendor's text reads the escape `$$` two ways (one '$'; "
            "a '$' and then the macro after it), so no rule names such a file for certain"
        )
    url = sorted({c for c in name if c in _URL_SYNTAX})
    if url:
        # The device fetches the name inside a URL (its Profile Rule, its Upgrade Rule):
        # the server decodes %2e to '.', and the device sends nothing from '?' or '#'
        # on as the path. The file served would never be the one asked for.
        return (
            f"it contains {' and '.join(repr(c) for c in url)}, which a URL reads as an "
            "escape, a query or a fragment: the device would ask for another name"
        )
    bare = sorted({c for c in name if c in _NOT_IN_A_URL})
    if bare:
        # RFC 3986 has none of these in a path unencoded, and a name cannot be encoded
        # (`%` above). `|` separates a rule's alternative URLs in the SPA rule syntax the
        # vendor's follows, so a `product_name` of `G502N|FXS` through `$(PN)` made every
        # Profile Rule two URLs.
        return (
            f"it contains {' and '.join(repr(c) for c in bare)}, which a URL cannot carry "
            "unencoded (and '|' separates alternative URLs in a rule): the device would "
            "ask for another name, or none"
        )
    return None


_URL_SYNTAX = "%?#"
_NOT_IN_A_URL = '|"<>^`{}[]'


def check_document(dctx: DocContext) -> Iterator[Problem]:
    if dctx.kind != MODEL:
        return
    doc = dctx.doc
    named: list[tuple[Path_, object, str]] = [
        (("config_file_name",), get(doc.data, "config_file_name"), "config_file_name"),
        (("firmware", "file"), get(doc.data, "firmware", "file"), "firmware.file"),
    ]
    if named[0][1] is None:
        # Unset, the bootstrap is named after the product (the model file's name when it
        # sets none): models/.x.yaml gives .x.conf, product_name `VOIP ATA` a space.
        product = get(doc.data, "product_name")
        if isinstance(product, str):
            named[0] = (("product_name",), f"{product}.conf", "the default config_file_name")
        else:
            named[0] = ((), f"{stem(doc.path)}.conf", "the default config_file_name")
    for path, value, what in named:
        reason = unsafe_reason(value) if isinstance(value, str) else None
        if reason:
            yield _model_error(doc, path, what, value, reason)


def _model_error(doc: Document, path: Path_, what: str, value: object, reason: str) -> Problem:
    return error_at(
        doc,
        path,
        CODE,
        f"{what} {value!r} cannot be published: {reason}",
        "name a plain file that servers serve, e.g. IP542N.conf or IP542N_F107.bin "
        "(letters, digits, '_', '-', '.'; not starting with '.')",
    )


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None:
        return
    # The names a publish writes: the file_name's, and during a key rotation the old
    # names too (encryption.previous.file_name), for the devices that still ask for them.
    templates: list[tuple[Path_, str]] = [(("file_name",), ctx.file_name_env[0])]
    previous = get(fleet.data, "encryption", "previous", "file_name")
    if isinstance(previous, str):
        templates.append((("encryption", "previous", "file_name"), previous))
    for where, template in templates:
        yield from _unsafe_names(ctx, fleet, where, template)


def _unsafe_names(
    ctx: RuleContext, fleet: Document, where: Path_, template: str
) -> Iterator[Problem]:
    def unsafe(doc: Document) -> Iterator[tuple[str, tuple[str, str]]]:
        named = ctx.file_name_of(doc, template)
        reason = unsafe_reason(named[1]) if named is not None else None
        if named is not None and reason:
            yield reason, named

    setting = ".".join(map(str, where))
    name = NAME if setting == "file_name" else f"{NAME}:{setting}"
    index = ctx.index(name, (DEVICE,), (template, ctx.file_name_env), unsafe)
    # One problem per reason, for the first device it concerns.
    for reason in list(index.keys()):
        _, (mac, expanded) = index.first(reason)
        yield error_at(
            fleet,
            where,
            CODE,
            f"{setting} expands to {expanded!r} for {mac}: {reason}",
            'use a single file name with macros, e.g. "fv$(MA).conf"',
        )
