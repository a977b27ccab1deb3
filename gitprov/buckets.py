"""A dict pickled in buckets, each unpacked when one of its keys is first asked for.

A kept snapshot of a 100,000-device fleet (see gitprov.checkcache) holds a dozen maps of
100,000 entries: the rules' indexes by key and by path, each device's facts. Validating a
child commit asks each of them for the few keys its changed files touch; unpickled whole
they cost most of a second in a fresh process, pickled as `Buckets` a few buckets of a few
hundred entries each (each its own pickle, compressed).

A key's bucket must be the same in every process, so it is not `hash()` (salted per
process for strings): strings and bytes go by CRC-32, integers by value (and a number
equal to an integer with it: `1`, `1.0` and `True` are one dict key), tuples by their
items. Any other key goes to bucket 0: still found, only never lazily.

Not thread-safe, like the dict it stands for.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Hashable, ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from typing import Any, TypeVar, cast

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Entries per bucket when a dict is split: a child's few keys unpickle a few hundred
# entries each (tens of microseconds), and a fleet's map is a few hundred buckets.
PER_BUCKET = 256
MAX_BUCKETS = 1 << 12

_MISSING: Any = object()
_crc32 = zlib.crc32


def code(key: object) -> int:
    """A number for `key`, the same in every process and for keys a dict finds equal."""
    kind = type(key)
    if kind is str:
        return _crc32(cast(str, key).encode("utf-8", "surrogatepass"))
    if kind is tuple:
        out = 0x345678
        for item in cast(tuple[object, ...], key):
            out = ((out * 1000003) ^ code(item)) & 0xFFFFFFFFFFFF
        return out
    if kind is int or kind is bool:
        return cast(int, key)
    if kind is bytes:
        return _crc32(cast(bytes, key))
    hash(key)  # an unhashable key fails as a dict's would
    if isinstance(key, str):
        return code(str.__str__(key))
    if isinstance(key, (bytes, memoryview)):  # a hashable view equals the bytes it shows
        return code(bytes(key))
    if isinstance(key, tuple):
        return code(tuple(key))
    try:
        whole = int(cast(Any, key))
        if whole == key:
            return whole
    except (TypeError, ValueError, OverflowError):
        pass
    return 0


class Buckets(MutableMapping[K, V]):
    """A mapping over buckets, each a dict or the compressed pickle of one (bytes, or a
    view into the file it was read from), unpacked when one of its keys is first asked
    for."""

    __slots__ = ("_len", "_parts")

    def __init__(self, parts: list[dict[K, V] | bytes | memoryview], length: int) -> None:
        self._parts = parts
        self._len = length

    def copy(self) -> Buckets[K, V]:
        """A copy that shares the buckets still pickled (immutable)."""
        parts = [dict(p) if isinstance(p, dict) else p for p in self._parts]
        return Buckets(parts, self._len)

    def _unpacked(self, i: int) -> dict[K, V]:
        part = self._parts[i]
        if not isinstance(part, dict):
            part = self._parts[i] = _unpack(part)
        return part

    def _part(self, key: object) -> dict[K, V]:
        return self._unpacked(code(key) % len(self._parts))

    def _each(self) -> Iterator[dict[K, V]]:
        for i in range(len(self._parts)):
            yield self._unpacked(i)

    @property
    def loaded(self) -> int:
        """How many buckets were unpickled (or never pickled)."""
        return sum(isinstance(p, dict) for p in self._parts)

    def __getitem__(self, key: K) -> V:
        return self._part(key)[key]

    def get(self, key: K, default: Any = None) -> Any:
        return self._part(key).get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._part(key)

    def __setitem__(self, key: K, value: V) -> None:
        part = self._part(key)
        if key not in part:
            self._len += 1
        part[key] = value

    def __delitem__(self, key: K) -> None:
        del self._part(key)[key]
        self._len -= 1

    def pop(self, key: K, default: Any = _MISSING) -> Any:
        part = self._part(key)
        if key in part:
            self._len -= 1
            return part.pop(key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        for part in self._each():
            yield from part

    def items(self) -> ItemsView[K, V]:
        return _Items(self)

    def values(self) -> ValuesView[V]:
        return _Values(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return Packed(self).__reduce__()

    def __repr__(self) -> str:
        return f"Buckets({len(self)} entries, {self.loaded}/{len(self._parts)} buckets read)"


class _Items(ItemsView[K, V]):
    """A bucket at a time: the mixin's would look each key up again."""

    _mapping: Buckets[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        for part in self._mapping._each():
            yield from part.items()


class _Values(ValuesView[V]):
    _mapping: Buckets[Any, V]

    def __iter__(self) -> Iterator[V]:
        for part in self._mapping._each():
            yield from part.values()


class Packed(Mapping[K, V]):
    """A map to be pickled in buckets, each pickled on its own, unpickled as `Buckets`.
    A writer that knows it (gitprov.checkcache) streams the buckets one at a time
    (`parts`) instead of holding every bucket's pickle; a plain pickle holds them.
    Until then, a read-only view of the map."""

    __slots__ = ("entries",)

    def __init__(self, entries: Mapping[K, V]) -> None:
        self.entries = entries

    def __getitem__(self, key: K) -> V:
        return self.entries[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self.entries)

    def count(self) -> int:
        """The number of buckets."""
        if isinstance(self.entries, Buckets):
            return len(self.entries._parts)
        return min(max(len(self.entries) // PER_BUCKET, 1), MAX_BUCKETS)

    def parts(self) -> Iterator[bytes | memoryview]:
        """Each bucket packed, in order: a bucket never unpacked as it was read."""
        entries = self.entries
        if isinstance(entries, Buckets):
            for part in entries._parts:
                yield _pack(part) if isinstance(part, dict) else part
            return
        count = self.count()
        slots: list[list[Any]] = [[] for _ in range(count)]
        for key in entries:
            slots[code(key) % count].append(key)
        for slot in slots:
            yield _pack({k: entries[k] for k in slot})

    def __len__(self) -> int:
        return len(self.entries)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Buckets, ([bytes(p) for p in self.parts()], len(self.entries)))


def _pack(part: dict[Any, Any]) -> bytes:
    # Compressed: a fleet's paths repeat in every index (each bucket is its own pickle,
    # with none of the others' strings), and level 1 makes 118 MB of buckets 19 MB for
    # a second of a cold validation; a bucket unpacks in about 60 us.
    return zlib.compress(pickle.dumps(part, pickle.HIGHEST_PROTOCOL), 1)


def _unpack(part: bytes | memoryview) -> dict[Any, Any]:
    return cast(dict[Any, Any], pickle.loads(zlib.decompress(part)))
