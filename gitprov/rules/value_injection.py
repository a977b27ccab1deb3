"""GP108 value-injection: a value holds a newline, carriage return or NUL.

param.conf is one `DBID_NAME=value` per line: a newline inside a value would inject lines
(for example a second DBID_SIP_PASSWORD) into the device's file.

Fails:   `display_name: "Alice\\nDBID_SIP_PASSWORD=x"` or a `|` block scalar
Passes:  `display_name: "Alice"`
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext
from gitprov.yamldoc import Document

CODE = "GP108"
NAME = "value-injection"

_BAD = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte"}


def _walk(data: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(k, str) and any(c in k for c in _BAD):
                yield (*path, k), k
            yield from _walk(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _walk(v, (*path, i))
    elif isinstance(data, str):
        yield path, data


def check(ctx: RuleContext) -> Iterator[Problem]:
    docs: list[Document] = list(ctx.docs.all())
    for doc in docs:
        for path, text in _walk(doc.data, ()):
            bad = [name for ch, name in _BAD.items() if ch in text]
            if bad:
                line, col = doc.pos(path)
                yield error(
                    doc.path,
                    line,
                    col,
                    CODE,
                    f"{'.'.join(map(str, path))}: the value contains {' and '.join(bad)}",
                    "write the value on one line; it would inject lines into param.conf",
                )
