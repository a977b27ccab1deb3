"""JSON for the state files a publish writes whole: the manifest, its index, the build
record. At 100,000 devices the manifest is 60 MB, and the standard library encodes it in
over a second; orjson does it in a tenth of that, byte for byte the same text (compact,
keys sorted on request). What orjson refuses (an integer past 64 bits, a key that is not
a string) goes to the standard library, so the file says what it would have said.

Reading stays with the standard library: orjson reads an integer past 64 bits as a
float, and decodes a manifest only a third faster."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson


def dumps(
    obj: Any, *, sort_keys: bool = False, ascii_only: bool = False, newline: bool = False
) -> bytes:
    """Compact JSON as UTF-8 bytes: non-ASCII text as itself, or with `ascii_only` as
    \\u escapes (a log read in a terminal); with `newline`, a newline after it (made in
    place: adding it after would copy a 60 MB manifest once more)."""
    option = (orjson.OPT_SORT_KEYS if sort_keys else 0) | (
        orjson.OPT_APPEND_NEWLINE if newline else 0
    )
    try:
        out = orjson.dumps(obj, option=option)
        # The standard library's ASCII escapes DEL (0x7f) too; orjson leaves it as it is.
        if not ascii_only or (out.isascii() and b"\x7f" not in out):
            return out
    except TypeError:
        pass
    text = json.dumps(obj, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ascii_only)
    return (text + "\n" if newline else text).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """A state file (or a line of one) decoded with the standard library (see the module's
    docstring). A value nested past the parser's recursion limit is a ValueError like any
    other text that is no state gitprov wrote: each reader treats it as torn."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


@dataclass(frozen=True)
class Converted:
    """A mapping that `chunks` dumps as {key: convert(value)}: a manifest's 100,000 entries
    are converted a slice at a time, never into a whole converted copy."""

    mapping: Mapping[str, Any]
    convert: Callable[[Any], Any]


def chunks(obj: Mapping[str, Any], *, newline: bool = False, size: int = 4096) -> Iterator[bytes]:
    """`dumps(obj, sort_keys=True, newline=newline)` in pieces, to be written as they come:
    a top-level value that is a mapping of more than `size` entries is dumped in sorted
    slices of that many. A 100,000-device manifest's text (60 MB) is then never whole in
    memory, made at a publish's peak of it. A top-level value may be `Converted`."""
    for i, key in enumerate(sorted(obj)):
        yield (b"{" if i == 0 else b",") + dumps(key) + b":"
        value = obj[key]
        convert: Callable[[Any], Any] | None = None
        if isinstance(value, Converted):
            convert = value.convert
            value = value.mapping
        if not isinstance(value, Mapping) or len(value) <= size:
            if convert is not None:
                value = {k: convert(v) for k, v in value.items()}
            yield dumps(value, sort_keys=True)
            continue
        names = sorted(value)
        yield b"{"
        for start in range(0, len(names), size):
            if convert is None:
                part = {name: value[name] for name in names[start : start + size]}
            else:
                part = {name: convert(value[name]) for name in names[start : start + size]}
            inner = dumps(part, sort_keys=True)[1:-1]  # without its braces
            yield inner if start == 0 else b"," + inner
        yield b"}"
    yield (b"{}" if not obj else b"}") + (b"\n" if newline else b"")
