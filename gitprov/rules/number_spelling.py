"""GP121 number-spelling: an unquoted number that YAML reads as a different number.

YAML 1.1, which most YAML tools follow, reads `0123` as octal 83, `0x1F` as 31,
`1_000` as 1000 and `1:30` as 90 (base 60). Where a number is welcome (a port, a raw
DBID_* value) that is silently another number. Where a string is expected the schema
already says "quote it" (GP013), so this rule stays quiet there.

A number with a fraction or an exponent is a binary float to YAML: one written with more
digits than a float keeps (`99.99999999999999999`, read as 100.0) or past its range
(`1e-400`, read as 0.0) is another number too, and so is a float in base 60 (`1:30.5`,
90.5). A rollout's percent chooses devices by that number, not by the text.

Fails:   `sip.server_port: 05060` (read as 2608); `percent: 99.99999999999999999`
Passes:  `sip.server_port: 5060`, or `DBID_VENDOR_PIN: "0123"` quoted; `percent: 12.5`
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from gitprov.errors import Problem
from gitprov.rules import DocContext, error_at, get
from gitprov.yamldoc import Document, Path_

CODE = "GP121"
NAME = "number-spelling"

_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)")
_DIGITS = re.compile(r"[-+]?[0-9]+")
# A float as YAML 1.2 and JSON read it too (no `_`, no base 60).
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _at(data: Any, path: Path_) -> Any:
    return get(data, *path) if path else data


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    for path, raw in doc.raw.items():
        value = _at(doc.data, path)
        if isinstance(value, float):
            if _same_float(raw.strip(), value) or dctx.is_flagged(path):
                continue
            yield _read_as(doc, path, raw, repr(value))
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        text = raw.strip()
        if _DECIMAL.fullmatch(text) or dctx.is_flagged(path):
            continue
        if _DIGITS.fullmatch(text) and int(text, 10) == value:
            continue  # `02`: octal or decimal, every reading agrees
        yield _read_as(doc, path, raw, str(value))


def _same_float(text: str, value: float) -> bool:
    """Whether `text` is a plain decimal worth exactly what the float `value` prints as
    (`12.50` is 12.5). `.inf` and `.nan` are GP010's; `1e999`, read as inf, is not."""
    if _FLOAT.fullmatch(text) is None:
        return not math.isfinite(value)
    return math.isfinite(value) and Decimal(text) == Decimal(repr(value))


def _read_as(doc: Document, path: Path_, raw: str, value: str) -> Problem:
    where = ".".join(str(p) for p in path)
    # (a float's text has no length limit, as an integer's has: GP009)
    raw = raw if len(raw) <= 40 else raw[:40] + "…"
    return error_at(
        doc,
        path,
        CODE,
        f"{where}: unquoted {raw} is read as the number {value}",
        f'write {value} if you mean that number; quote it ("{raw}") if you mean text',
    )
