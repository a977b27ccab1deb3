"""GP108 value-injection: a value or key holds a line break, a control character or an
invisible Unicode control.

param.conf is one `DBID_NAME=value` per line: a newline, carriage return or NUL inside a
value would inject lines (for example a second DBID_SIP_PASSWORD) into the device's file.
Other control characters (ESC, VT, FF, DEL, the C1 controls such as NEL U+0085), the
Unicode line and paragraph separators (U+2028, U+2029) and the bidi controls (U+200E,
U+200F, U+202A-U+202E, U+2066-U+2069, U+061C) are invisible in a review, and a device's
parser may read them as line ends or keep them in the value: none has a place in a device
file. Nor have the characters that show as nothing (a zero-width space U+200B, a word
joiner U+2060, a soft hyphen U+00AD, a byte order mark U+FEFF inside a value …): pasted
into a password or an account, they make it another than the one reviewed.

Every string of every file is checked, keys included. A TAB is GP109's.

Fails:   `display_name: "Alice\\nDBID_SIP_PASSWORD=x"`, a `|` block scalar, `"Desk\\u202e"`
Passes:  `display_name: "Alice"`, `display_name: "Zoë"`
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gitprov.errors import Problem
from gitprov.formats.flyingvoice import UNSAFE, describe
from gitprov.rules import DocContext, error_at
from gitprov.unsafe import LINE_BREAKS, printable, unsafe_hint

CODE = "GP108"
NAME = "value-injection"


def _walk(data: Any) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """(path, text, is a key) of every string that holds an unsafe character."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and UNSAFE.search(k):
                    yield (*path, k), k, True
                stack.append(((*path, k), v))
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in enumerate(node))
        elif isinstance(node, str) and UNSAFE.search(node):
            yield path, node, False


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    for path, text, is_key in _walk(doc.data):
        found = sorted(set(UNSAFE.findall(text)), key=text.index)
        what = " and ".join(describe(c) for c in found[:3]) + (" …" if len(found) > 3 else "")
        breaks = [c for c in found if c in LINE_BREAKS]
        hint = unsafe_hint(breaks[0] if breaks else found[0])
        if path[:1] in (("publish",), ("description",)):
            # (no value of param.conf: a path, a note; shown in output and logs, where
            # the character would forge lines or hide text)
            hint = "remove it: shown in output and logs, it would forge or hide text there"
        yield error_at(
            doc,
            path,
            CODE,
            f"{printable('.'.join(map(str, path)))}: the {'key' if is_key else 'value'} "
            f"contains {what}",
            hint,
            key=is_key,
        )
