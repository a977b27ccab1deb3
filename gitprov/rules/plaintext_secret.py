"""GP124 plaintext-secret: a password or key written in plain text instead of `!secret`.

SIP passwords and keys never appear in git in plaintext (docs/design.md, invariant 5): they are
sealed into secrets.yaml and referred to by name. This message never repeats the value.

A key (encryption.master_key, a device's `key` or `previous_key`) written as "" is an
error too: a password may be empty (no password), a key never is; without this, an empty
master key passed validation and the build had no key to derive from.

Fails:   `lines: [{password: "s3cret"}]`, `encryption: {master_key: "hunter2"}`,
         `encryption: {master_key: ""}`, `previous_key: "old"` in a device file
Passes:  `lines: [{password: !secret sip_2001}]` after `gitprov secrets set sip_2001`
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gitprov.catalog import secret_like
from gitprov.errors import Problem
from gitprov.inventory import DEVICE
from gitprov.rules import DocContext, error_at, get, warning_at
from gitprov.yamldoc import Document, Path_, SecretRef

CODE = "GP124"
NAME = "plaintext-secret"

MASTER_KEYS: tuple[Path_, ...] = (
    ("encryption", "master_key"),
    ("encryption", "previous", "master_key"),  # during a key rotation
)
DEVICE_KEYS = ("key", "previous_key")


def _plain(value: Any) -> bool:
    return value is not None and value != "" and not isinstance(value, SecretRef)


def _problem(doc: Document, path: Path_, *, empty: bool = False) -> Problem:
    where = ".".join(str(p) for p in path)
    if empty:
        message = f"{where} is empty: a key is a sealed secret"
        hint = (
            "seal one: `gitprov secrets set NAME` (value on stdin), then write "
            f"`{path[-1]}: !secret NAME`"
        )
    else:
        message = f"{where} is a secret written in plain text"
        hint = (
            "seal it: `gitprov secrets set NAME` (value on stdin), then write `!secret NAME`; "
            "the plain value stays in git history, so change it too"
        )
    return error_at(doc, path, CODE, message, hint)


def _key_problems(doc: Document, path: Path_) -> Iterator[Problem]:
    value = get(doc.data, *path)
    if value == "" or _plain(value):
        yield _problem(doc, path, empty=value == "")


def _looks_secret(value: Any) -> bool:
    """A plain value a password could be: not a switch (a boolean, 0 or 1)."""
    return _plain(value) and not isinstance(value, bool) and str(value) not in ("0", "1")


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    for name, value in dctx.params():
        p = dctx.catalog.lookup(name)
        if p is not None and p.secret and not p.managed and _plain(value):
            yield _problem(doc, ("params", name))
        elif p is None and secret_like(name) and _looks_secret(value):
            # A warning, the name alone saying so (DBID_PIN_LENGTH: 4 is no secret), but
            # a value `gitprov import` would have sealed, and that show and plan print.
            yield warning_at(
                doc,
                ("params", name),
                CODE,
                f"params.{name} reads as a secret (its name says so) written in plain text",
                "if it is one, seal it: `gitprov secrets set NAME` (value on stdin), then "
                "write `!secret NAME`; show, plan and blame print a plain value",
            )
    for slot, item in dctx.line_items():
        for name, value in item.items():
            p = dctx.catalog.lookup_line(name)
            if p is not None and p.secret and _plain(value):
                yield _problem(doc, ("lines", slot, name))
    for path in MASTER_KEYS:
        yield from _key_problems(doc, path)
    if dctx.kind == DEVICE:
        for name in DEVICE_KEYS:
            yield from _key_problems(doc, (name,))
