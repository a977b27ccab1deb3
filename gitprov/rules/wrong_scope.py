"""GP123 wrong-scope: a per-line DBID key under `params:`, or a global one in `lines:`.

A per-line key under `params:` would be written twice (once from params, once from the
lines) with different values; a global key inside a `lines:` item would be written as a
TAB-separated row the device does not expect.

Fails:   `params: {DBID_SIP_ACCOUNT: "2001"}` or `lines: [{DBID_WEB_SIP_SERVER: sip.example.net}]`
Passes:  `lines: [{account: "2001"}]` and `params: {sip.server: sip.example.net}`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.rules import DocContext, error_at

CODE = "GP123"
NAME = "wrong-scope"


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    for key, _ in dctx.params():
        p = dctx.catalog.by_key(key)
        if p is not None and p.per_line:
            yield error_at(
                doc,
                ("params", key),
                CODE,
                f"{key} is per-line and cannot be set under params",
                f"write it as `{p.short_name}:` in each item of `lines:`",
                key=True,
            )
    for slot, item in dctx.line_items():
        for key in item:
            p = dctx.catalog.by_key(key)
            if p is not None and not p.per_line:
                yield error_at(
                    doc,
                    ("lines", slot, key),
                    CODE,
                    f"{key} is a global parameter, not a per-line one",
                    f"write it as `{p.name}:` under `params:`",
                    key=True,
                )
