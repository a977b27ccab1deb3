"""GP114 unknown-dbid-key (warning; an error with --strict): a raw DBID_* key that the
parameter catalog does not know.

The vendor's full dictionary is not public, so unknown keys are allowed and written to
param.conf as given; but a misspelt key is silently ignored by the device, so each one
is pointed out. `--strict` makes them errors (for fleets whose keys are all catalogued).
A key a model binds (`bindings:` in models/NAME.yaml) is known: it is checked as the
parameter it is bound to (GP129).

Fails:   `params: {DBID_WEB_SIP_SEVRER: sip.example.net}` (did you mean DBID_WEB_SIP_SERVER?)
Passes:  `params: {DBID_WEB_SIP_SERVER: sip.example.net}` or `params: {sip.server: …}`
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gitprov.catalog import DBID_PATTERN
from gitprov.errors import Level, Problem
from gitprov.rules import CloseNames, DocContext, RuleContext
from gitprov.rules._bindings import LAYER_KINDS, bound_keys
from gitprov.yamldoc import Document, Path_

CODE = "GP114"
NAME = "unknown-dbid-key"

_DBID = re.compile(DBID_PATTERN)


def _problem(dctx: DocContext, path: Path_, key: str, closest: CloseNames) -> Problem:
    doc = dctx.doc
    line, col = doc.pos(path, key=True)
    close = closest(key, lambda: [p.key for p in dctx.catalog.params], cutoff=0.8)
    hint = f"did you mean {close}? " if close else ""
    hint += "check it against `gitprov params`; it is written to param.conf as given"
    return Problem(
        doc.path,
        line,
        col,
        CODE,
        Level.ERROR if dctx.strict else Level.WARNING,
        f"{key} is not in the parameter catalog",
        hint,
    )


def _document(dctx: DocContext, bound: frozenset[str]) -> Iterator[Problem]:
    closest = CloseNames()
    for key, _ in dctx.params():
        if _DBID.match(key) and dctx.catalog.by_key(key) is None and key not in bound:
            yield _problem(dctx, ("params", key), key, closest)
    for slot, item in dctx.line_items():
        for key in item:
            if _DBID.match(key) and dctx.catalog.by_key(key) is None:
                yield _problem(dctx, ("lines", slot, key), key, closest)


def check(ctx: RuleContext) -> Iterator[Problem]:
    # Across files: whether a key is known depends on every model's bindings.
    bound = frozenset(bound_keys(ctx))

    def problems(doc: Document) -> Iterator[tuple[str, Problem]]:
        dctx = DocContext(doc, "", ctx.catalog, ctx.strict)
        for problem in _document(dctx, bound):
            yield doc.path, problem

    env = (ctx.catalog.digest, ctx.strict, tuple(sorted(bound)))
    yield from ctx.index(NAME, LAYER_KINDS, env, problems).all_items()
