"""JSON for the state files a publish writes whole: the manifest, its index, the build
record. At 100,000 devices the manifest is 60 MB, and the standard library encodes it in
over a second; orjson does it in a tenth of that, byte for byte the same text (compact,
keys sorted on request). What orjson refuses (an integer past 64 bits, a key that is not
a string) goes to the standard library, so the file says what it would have said.

Reading stays with the standard library: orjson reads an integer past 64 bits as a
float, and decodes a manifest only a third faster."""

from __future__ import annotations

import errno
import json
import mmap
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from io import BufferedReader
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from gitprov.overlay import Counted


class NotRegular(OSError):
    """A state file that is no regular file: a fifo, a device, a directory."""


def open_state(path: Path | str) -> BufferedReader:
    """The state file at `path` opened for reading (links followed, as a state dir's
    operator may link one). OSError when it cannot be, NotRegular when it is no regular
    file: a fifo put in its place would block the read for ever, and a link to /dev/zero
    never end it. Callers read either as a torn file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise NotRegular(errno.EINVAL, "not a regular file", str(path))
    return open(fd, "rb")  # (O_NONBLOCK means nothing to a regular file's reads)


def read_state(path: Path | str) -> bytes:
    """The bytes of the state file at `path` (see `open_state`)."""
    with open_state(path) as f:
        return f.read()


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


class Converted(NamedTuple):
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


# -- a map's text, read and changed in place ----------------------------------------------
# The state files' maps of a fleet's size (a manifest's entries and stats, the build
# record's devices) are written by `chunks`: compact, keys sorted, each value a flat
# object or an array. A process that changes a few of their keys finds those in the text
# by bisection and writes the rest of it back as it was read, never decoding it whole.

# An entry's key, from its opening quote: any JSON string, then the colon.
_KEY = re.compile(rb'"((?:[^"\\]|\\.)*)":')
_CONTROL = re.compile(rb"[\x00-\x1f]")


class FileText:
    """A file's bytes read a window at a time, as `map_end` and a scan for a map's key
    ask for them (`find`, slices, `len`): a scan of a 60 MB manifest just written that
    adds a window, not the file, to the process's resident memory (a mapping's pages
    count in it, read or not again: at a cold publish's peak of memory, 25 MB more)."""

    WINDOW = 4 << 20

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice) -> bytes:
        start, stop, _ = key.indices(self._size)
        return os.pread(self._fd, max(0, stop - start), start) if stop > start else b""

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        end = self._size if end is None else min(end, self._size)
        at = max(start, 0)
        while at < end:
            stop = min(at + self.WINDOW, end)
            # (each window reaches len(sub) - 1 into the next: a match across the two)
            chunk = os.pread(self._fd, min(stop + len(sub) - 1, end) - at, at)
            found = chunk.find(sub)
            if found >= 0:
                return at + found
            at = stop
        return -1


# A text read as bytes, or mapped (a manifest to splice: not copied out of the page cache).
Text = bytes | mmap.mmap
# Or read a window at a time, for a scan of it (map_end).
Scanned = Text | FileText


def map_end(old: Scanned, lo: int, close: bytes, then: bytes) -> int:
    """Where the map whose entries start at `lo` in `old` ends (at its closing brace):
    after the last entry's `close` (`}` or `]`), where the brace is followed by `then`
    (what follows the map up to the next key's quote, which no string holds unescaped;
    or up to the end of the text). ValueError when it is not there."""
    quoted = b'"' in then
    empty = b"}" + then
    if old[lo : lo + len(empty)] == empty and (quoted or len(old) == lo + len(empty)):
        return lo  # an empty map
    if quoted:
        found = old.find(close + b"}" + then, lo)
        if found < 0:
            raise ValueError("not the map's end")
        return found + len(close)
    last = close + b"}" + then
    if old[len(old) - len(last) :] != last or len(old) - len(then) - 1 <= lo:
        raise ValueError("not the map's end")
    return len(old) - len(then) - 1


# Past this many changes, splicing a map's text costs more than making it: each change
# is found by a bisection that decodes a score of keys in Python (a fifth of a
# 100,000-device fleet: seconds), where the whole text is made in C.
SPLICE_MAX = 4096
# Nor past one change in this many of the map's entries, once there are more than
# SPLICE_FEW: a fifth of 1,000 devices' manifest took 15 ms spliced, 3 ms made whole.
SPLICE_SHARE = 25
SPLICE_FEW = 16


def splice_pays(changes: int, entries: int) -> bool:
    """Whether `changes` to maps of `entries` in all are put in place in their old text,
    rather than the text made whole."""
    return changes <= SPLICE_MAX and (changes <= SPLICE_FEW or changes * SPLICE_SHARE <= entries)


def splice_map(
    old: Text, view: memoryview, lo: int, hi: int, changes: Mapping[str, Any], close: bytes
) -> list[bytes | memoryview]:
    """The entries of the map `old[lo:hi]` (sorted by key, each value ending in `close`),
    with each key of `changes` put in place with its value as JSON, or left out where
    that is None: runs of the old text (views of `view`, which is `old`'s) and new
    entries, to be joined by commas. Each key is found by bisection (see `entry_at`)."""
    runs: list[bytes | memoryview] = []
    at = lo
    for name in sorted(changes):
        found = _bisect_entries(old, at, hi, name, close)
        if found > at:  # the entries between, less the comma after them
            runs.append(view[at : found - 1 if found < hi else hi])
        at = found
        if found < hi and _key_at(old, found) == name:
            at = _next_entry(old, found + 1, hi, close)
        value = changes[name]
        if value is not None:
            runs.append(dumps({name: value}, sort_keys=True)[1:-1])
    if at < hi:
        runs.append(view[at:hi])
    return runs


def entry_at(old: bytes, lo: int, hi: int, name: str, close: bytes) -> tuple[int, int] | None:
    """Where the entry `name` of the map `old[lo:hi]` is (its key's quote, and the end of
    its value), None when the map has none. Found by bisection: `close` then `,"` is
    where an entry ends and the next begins, never inside a string (a quote is escaped
    there) nor inside a value: a flat object, or an array in which no array is followed
    by a string (the build record's `["id",[["name","role"]],[10,12]]`, a stat's
    `[size,mtime,inode]`). ValueError where the text is not such a map. (A map not
    sorted, edited by hand, may seem not to have it.)"""
    found = _bisect_entries(old, lo, hi, name, close)
    if found >= hi or _key_at(old, found) != name:
        return None
    end = _next_entry(old, found + 1, hi, close)
    return found, end - 1 if end < hi else hi


def _next_entry(old: Text, pos: int, hi: int, close: bytes) -> int:
    """Where the first entry starting at or after `pos` starts (`hi`: none does). A
    string that ends in `close` and a comma (a file name `x},`) is followed by its
    closing quote: the three look like an entry's start, but no key follows them (the
    text after a closing quote is never a quoted key and its colon)."""
    needle = close + b',"'
    at = pos - 2
    while True:
        found = old.find(needle, at, hi)
        if found < 0:
            return hi
        if _KEY.match(old, found + 2) is not None:
            return found + 2
        at = found + 1


def _key_at(old: Text, pos: int) -> str:
    match = _KEY.match(old, pos)
    if match is None:
        raise ValueError("no entry there")
    raw = match.group(1)
    # Most keys: no escape and no control character (which JSON refuses as they are),
    # the text is the key: 20 times faster than a JSON decode, a score of them a change.
    if b"\\" not in raw and _CONTROL.search(raw) is None:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ValueError("no entry there") from None
    key = json.loads(match.group(0)[:-1])
    if not isinstance(key, str):
        raise ValueError("no entry there")
    return key


def _bisect_entries(old: Text, lo: int, hi: int, name: str, close: bytes) -> int:
    """Where the first entry of `old[lo:hi]` (`lo` an entry's start) whose name is not
    before `name` starts; `hi` when none."""
    a, b = lo, hi
    while a < b:
        mid = _next_entry(old, (a + b) // 2, b, close) if (a + b) // 2 > a else a
        if mid >= b:  # no entry starts in the upper half: step through the few left
            while a < b and _key_at(old, a) < name:
                a = _next_entry(old, a + 1, b, close)
            return a
        if _key_at(old, mid) < name:
            a = _next_entry(old, mid + 1, b, close)
        else:
            b = mid
    return a


class MapText(Counted, Mapping[str, Any]):
    """The map `text[lo:hi]` (see `entry_at`; each value ending in `close`) as a mapping
    whose values are decoded when looked up, one entry at a time. A pass over it, or a
    lookup where the text is not such a map (edited by hand), decodes it whole; text
    that is no JSON then reads as an empty map."""

    def __init__(self, text: bytes, lo: int, hi: int, close: bytes) -> None:
        self.text, self.lo, self.hi, self.close = text, lo, hi, close
        self._whole: dict[str, Any] | None = None

    def __getitem__(self, name: str) -> Any:
        # (many lookups, a change reaching thousands of devices: decoded whole, not a
        # score of keys decoded each)
        if self._whole is None and type(name) is str and not self._many():
            try:
                found = entry_at(self.text, self.lo, self.hi, name, self.close)
                if found is None:
                    raise KeyError(name)
                entry = loads(b"{" + self.text[found[0] : found[1]] + b"}")
                if isinstance(entry, dict) and list(entry) == [name]:
                    return entry[name]
            except ValueError:
                pass
        return self.whole()[name]

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def whole(self) -> dict[str, Any]:
        if self._whole is None:
            try:
                whole = loads(b"{" + self.text[self.lo : self.hi] + b"}")
            except ValueError:
                whole = None
            self._whole = whole if isinstance(whole, dict) else {}
        return self._whole

    def __iter__(self) -> Iterator[str]:
        return iter(self.whole())

    def __len__(self) -> int:
        return len(self.whole())
