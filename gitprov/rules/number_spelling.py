"""GP121 number-spelling: an unquoted number that YAML reads as a different number.

YAML 1.1, which most YAML tools follow, reads `0123` as octal 83, `0x1F` as 31,
`1_000` as 1000 and `1:30` as 90 (base 60). Where a number is welcome (a port, a raw
DBID_* value) that is silently another number. Where a string is expected the schema
already says "quote it" (GP013), so this rule stays quiet there.

Fails:   `sip.server_port: 05060` (read as 2608)
Passes:  `sip.server_port: 5060`, or `DBID_VENDOR_PIN: "0123"` quoted
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from gitprov.errors import Problem
from gitprov.rules import DocContext, error_at, get
from gitprov.yamldoc import Path_

CODE = "GP121"
NAME = "number-spelling"

_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)")
_DIGITS = re.compile(r"[-+]?[0-9]+")


def _at(data: Any, path: Path_) -> Any:
    return get(data, *path) if path else data


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    for path, raw in doc.raw.items():
        value = _at(doc.data, path)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        text = raw.strip()
        if _DECIMAL.fullmatch(text) or dctx.is_flagged(path):
            continue
        if _DIGITS.fullmatch(text) and int(text, 10) == value:
            continue  # `02`: octal or decimal, every reading agrees
        where = ".".join(str(p) for p in path)
        yield error_at(
            doc,
            path,
            CODE,
            f"{where}: unquoted {raw} is read as the number {value}",
            f'write {value} if you mean that number; quote it ("{raw}") if you mean text',
        )
