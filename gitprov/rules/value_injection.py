"""GP108 value-injection: a value holds a newline, carriage return or NUL.

param.conf is one `DBID_NAME=value` per line: a newline inside a value would inject lines
(for example a second DBID_SIP_PASSWORD) into the device's file.

Fails:   `display_name: "Alice\\nDBID_SIP_PASSWORD=x"` or a `|` block scalar
Passes:  `display_name: "Alice"`
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from gitprov.errors import Problem
from gitprov.rules import DocContext, error_at

CODE = "GP108"
NAME = "value-injection"

_BAD = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte"}
_FORBIDDEN = re.compile("[\n\r\x00]")


def _walk(data: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, text) of every string that holds a forbidden character, keys included."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and _FORBIDDEN.search(k):
                    yield (*path, k), k
                stack.append(((*path, k), v))
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in enumerate(node))
        elif isinstance(node, str) and _FORBIDDEN.search(node):
            yield path, node


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    for path, text in _walk(doc.data):
        bad = [name for ch, name in _BAD.items() if ch in text]
        if bad:
            yield error_at(
                doc,
                path,
                CODE,
                f"{'.'.join(map(str, path))}: the value contains {' and '.join(bad)}",
                "write the value on one line; it would inject lines into param.conf",
            )
