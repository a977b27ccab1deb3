"""GP107 bad-file-name: a device's published file name would not be a safe file name.

The fleet's `file_name` template is expanded with each device's macro variables; the result
must be one path component: no `/`, no `..`, no NUL or control character, at most 255 bytes.

Fails:   `file_name: "../fv$(MA).conf"` or `file_name: "cfg/$MA.conf"`
Passes:  `file_name: "fv$(MA).conf"`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import DEVICE
from gitprov.rules import RuleContext, error_at
from gitprov.yamldoc import Document

CODE = "GP107"
NAME = "bad-file-name"


def unsafe_reason(name: str) -> str | None:
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", "..") or ".." in name:
        return "it contains '..'"
    if name.startswith("."):
        return "it starts with '.', and dot-files are never served"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it contains a control character or NUL"
    if len(name.encode("utf-8")) > 255:
        return "it is longer than 255 bytes"
    return None


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None:
        return

    def unsafe(doc: Document) -> Iterator[tuple[str, tuple[str, str]]]:
        named = ctx.file_name_of(doc)
        reason = unsafe_reason(named[1]) if named is not None else None
        if named is not None and reason:
            yield reason, named

    index = ctx.index(NAME, (DEVICE,), ctx.file_name_env, unsafe)
    # One problem per reason, for the first device it concerns.
    for reason in list(index.keys()):
        _, (mac, name) = index.first(reason)
        yield error_at(
            fleet,
            ("file_name",),
            CODE,
            f"file_name expands to {name!r} for {mac}: {reason}",
            'use a single file name with macros, e.g. "fv$(MA).conf"',
        )
