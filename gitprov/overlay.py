"""Fleet-sized maps that a publish by change reads a few keys of and changes a few.

A manifest's versions record holds a value per device: at 100,000 devices, making it a
dict from the index's columns costs 50 ms, copying it for the next manifest and finding
what that one changed 20 ms more, for a publish that looks up and changes a handful.
`Sorted` is such a map as the index holds it (its keys sorted, a column per part of the
value), looked up by bisection; `Overlay` is a map made from another by a few changes,
which knows them (`changes_from`). Each becomes a dict, once, when it is iterated.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from array import array
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    Sequence,
    ValuesView,
)
from typing import Any, Generic, TypeVar, cast, overload

_V = TypeVar("_V")


# Past this many lookups, a map of this module's kind makes its dict: a publish by change
# that reaches a fleet's fifth looks up that many keys, each in Python.
LOOKUPS_MAX = 2048


class Counted:
    """A map looked up in Python, key by key, until its lookups are many (LOOKUPS_MAX),
    then from the dict it makes once in C (its `whole`): a few lookups cost no dict, a
    fleet's fifth of them no bisection each."""

    _asked = 0

    def _many(self) -> bool:
        self._asked += 1
        return self._asked > LOOKUPS_MAX


class _Views(Generic[_V]):
    """keys(), items() and values() of the dict a map makes of itself once (its
    `whole`): what a pass over a fleet's items asks for, then in C."""

    def whole(self) -> dict[str, _V]:
        raise NotImplementedError

    def keys(self) -> KeysView[str]:
        return self.whole().keys()

    def items(self) -> ItemsView[str, _V]:
        return self.whole().items()

    def values(self) -> ValuesView[_V]:
        return self.whole().values()


def apply_changes(target: MutableMapping[str, Any], changes: Mapping[str, Any]) -> None:
    """Set each of `changes` in `target`, None removing the key (a change log's form)."""
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


class Sorted(Counted, _Views[tuple[Any, ...]], Mapping[str, tuple[Any, ...]]):
    """`keys` (strictly increasing, see `ordered`) -> the tuple of the `columns`' values
    at its place."""

    def __init__(self, keys: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
        self._keys = keys
        self._columns = columns
        self._whole: dict[str, tuple[Any, ...]] | None = None

    @staticmethod
    def ordered(keys: Sequence[str]) -> bool:
        """Whether `keys` may be a Sorted's: each one after the one before (a pass in C)."""
        return all(map(operator.lt, keys, itertools.islice(keys, 1, None)))

    def _at(self, key: object) -> int:
        if not isinstance(key, str):
            return -1
        i = bisect.bisect_left(self._keys, key)
        return i if i < len(self._keys) and self._keys[i] == key else -1

    def __getitem__(self, key: str) -> tuple[Any, ...]:
        if self._whole is not None or self._many():
            return self.whole()[key]
        i = self._at(key)
        if i < 0:
            raise KeyError(key)
        return tuple(c[i] for c in self._columns)

    def __contains__(self, key: object) -> bool:
        if self._whole is not None or self._many():
            return key in self.whole()
        return self._at(key) >= 0

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def whole(self) -> dict[str, tuple[Any, ...]]:
        """The dict of it, made once (what a pass over the items asks for)."""
        if self._whole is None:
            self._whole = dict(zip(self._keys, zip(*self._columns, strict=True), strict=True))
        return self._whole


class TextMap(Counted, _Views[str], Mapping[str, str]):
    """Text -> text as two NUL-joined strings, the keys in order, and where each key and
    each value starts: what a snapshot keeps of a fleet's paths and blob ids, or of its
    devices' digests. Pickled as those strings (three times faster to load than a
    dict), looked up by a bisection over slices of them (a few lookups split nothing:
    6 ms a block at 100,000 entries), made a dict once iterated."""

    def __init__(self, keys: str, values: str, count: int, starts: bytes = b"") -> None:
        # (counted in C: a damaged or forged set of blocks is refused whole, here)
        if count < 0 or any(
            (block.count("\0") + 1 if count else len(block) + 1) != max(count, 1)
            for block in (keys, values)
        ):
            raise ValueError("blocks of another length")
        at = array("q")
        if starts:
            at.frombytes(starts)
        else:  # (made here when not given: from a split, a pass over the blocks)
            for block in (keys, values):
                lengths = (len(x) + 1 for x in block.split("\0")) if count else ()
                at.extend(itertools.accumulate(itertools.chain((0,), lengths)))
                at.pop()
        if len(at) != 2 * count or (count and (at[0], at[count]) != (0, 0)):
            raise ValueError("starts of another length")
        for side, block in enumerate((keys, values)):
            # The last start, after the last NUL: the check a CRC-checked file needs (its
            # writer made the starts from the blocks), not a pass over every start.
            last = at[side * count + count - 1] if count else 0
            if count and (last > len(block) or block.rfind("\0") != last - 1):
                raise ValueError("starts not of their blocks")
        self._blocks = (keys, values)
        self._count = count
        self._starts = at
        self._whole: dict[str, str] | None = None

    @classmethod
    def of(cls, mapping: Mapping[str, str]) -> TextMap | None:
        """`mapping` as a TextMap (itself if it is one); None when a key or a value is
        not text or holds a NUL."""
        if isinstance(mapping, TextMap):
            return mapping
        items = sorted(whole(mapping).items())
        keys, values = [k for k, _ in items], [v for _, v in items]
        if not all(type(x) is str for x in (*keys, *values)):
            return None
        joined = "\0".join(keys), "\0".join(values)
        if any(block.count("\0") != max(len(items) - 1, 0) for block in joined):
            return None
        return cls(*joined, len(items))

    def __reduce__(self) -> tuple[type[TextMap], tuple[str, str, int, bytes]]:
        return TextMap, (*self._blocks, self._count, self._starts.tobytes())

    def _text(self, side: int, i: int) -> str:
        """The `i`th key (side 0) or value (side 1)."""
        block, count, at = self._blocks[side], self._count, self._starts
        start = at[side * count + i]
        end = at[side * count + i + 1] - 1 if i + 1 < count else len(block)
        return block[start:end]

    def _at(self, key: object) -> int:
        if not isinstance(key, str):
            return -1
        i = bisect.bisect_left(_Texts(self), key)
        return i if i < self._count and self._text(0, i) == key else -1

    def __getitem__(self, key: str) -> str:
        if self._whole is not None or self._many():
            return self.whole()[key]
        i = self._at(key)
        if i < 0:
            raise KeyError(key)
        return self._text(1, i)

    def __contains__(self, key: object) -> bool:
        if self._whole is not None or self._many():
            return key in self.whole()
        return self._at(key) >= 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return iter(self.whole())

    def whole(self) -> dict[str, str]:
        """The dict of it, made once (what a pass over the items asks for)."""
        if self._whole is None:
            keys, values = (b.split("\0") if self._count else [] for b in self._blocks)
            self._whole = dict(zip(keys, values, strict=True))
        return self._whole


class _Texts(Sequence[str]):
    """A TextMap's keys as a sequence, for `bisect` (each one sliced when asked)."""

    def __init__(self, of: TextMap) -> None:
        self._of = of

    def __len__(self) -> int:
        return len(self._of)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            raise TypeError("not sliced")
        return self._of._text(0, i)


class Fixed(Sequence[str]):
    """A NUL-separated column of text whose values are all `width` bytes, in place in
    `raw` from `lo`: a value is sliced when asked for, none of the others made; split
    whole when iterated."""

    def __init__(self, raw: bytes, lo: int, width: int, count: int) -> None:
        self._raw, self._lo, self._width, self._count = raw, lo, width, count
        self._list: list[str] | None = None

    @classmethod
    def of(cls, raw: bytes, lo: int, hi: int, count: int) -> Fixed | None:
        """The column raw[lo:hi] of `count` values when they are all of one width; None
        otherwise. Its separators are where that width puts them and nowhere else."""
        if count < 1:
            return None
        width = raw.find(b"\0", lo, hi) - lo if count > 1 else hi - lo
        if width < 0 or hi - lo != count * (width + 1) - 1:
            return None
        if raw[lo + width : hi : width + 1] != b"\0" * (count - 1):
            return None
        if raw.count(b"\0", lo, hi) != count - 1:
            return None
        return cls(raw, lo, width, count)

    def __len__(self) -> int:
        return self._count

    def rows_of(self, values: Iterable[object]) -> list[int]:
        """The rows holding one of `values`, in order: each value's bytes searched for in
        the column's (a MAC in 100,000 of them: half a millisecond). A value of the
        column's width and without a NUL is found only where a row holds it whole."""
        step, lo = self._width + 1, self._lo
        end = lo + self._count * step - 1
        rows: set[int] = set()
        for value in values:
            if not isinstance(value, str):
                continue  # (a column of text holds none: not even as b"" in one of width 0)
            try:
                raw = value.encode()
            except UnicodeEncodeError:  # (no row holds what UTF-8 cannot)
                continue
            if len(raw) != self._width or b"\0" in raw:
                continue
            at = self._raw.find(raw, lo, end)
            while at >= 0:
                if (at - lo) % step == 0:
                    rows.add((at - lo) // step)
                at = self._raw.find(raw, at + 1, end)
        return sorted(rows)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if self._list is not None or isinstance(i, slice):
            return self._whole()[i]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("a row past the column")
        at = self._lo + i * (self._width + 1)
        return self._raw[at : at + self._width].decode()

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole())

    def _whole(self) -> list[str]:
        if self._list is None:
            end = self._lo + self._count * (self._width + 1) - 1
            self._list = self._raw[self._lo : end].decode().split("\0")
        return self._list


def whole(mapping: Mapping[str, _V]) -> Mapping[str, _V]:
    """`mapping` as a dict to read (not to change: it may be `mapping` itself, or the
    dict a map that has a `whole` method made of itself), for a pass over a fleet's
    items in C rather than a lookup each in Python."""
    made = getattr(mapping, "whole", None)
    return mapping if made is None else cast("Mapping[str, _V]", made())


# Past this many changes an Overlay costs more than a dict: a change is set in Python,
# a dict is copied in C (a fifth of a 100,000-device fleet: 0.3 s more through Overlays).
OVERLAY_MAX = 4096


def editable(base: Mapping[str, _V]) -> MutableMapping[str, _V]:
    """A map to change that starts as `base`: an Overlay over it when it is read from its
    columns (a Sorted, a TextMap) or an Overlay of a few changes; else a dict (a copy)."""
    if isinstance(base, (Sorted, TextMap)) or (
        isinstance(base, Overlay) and len(base._changes) <= OVERLAY_MAX
    ):
        return Overlay(base)
    return dict(whole(base))


def updated(base: Mapping[str, _V], more: Mapping[str, _V]) -> Mapping[str, _V]:
    """`base` with the items of `more` set: when the changes are few (no fleet's copy), an
    Overlay of what `base` was made from when it is one, or over `base` when it is a
    Sorted (a map read from its columns); else a new dict."""
    out: Overlay[_V]
    if isinstance(base, (Sorted, TextMap)) and len(more) <= OVERLAY_MAX:
        out = Overlay(cast("Mapping[str, _V]", base))  # (a Sorted's values are its tuples)
    elif isinstance(base, Overlay) and len(base._changes) + len(more) <= OVERLAY_MAX:
        out = Overlay(base.base)
        out._changes = dict(base._changes)
        out._own = set(base._own)
    else:
        return {**whole(base), **more}
    out.update(more)
    return out


class Overlay(_Views[_V], MutableMapping[str, _V]):
    """`base` with a few keys set or deleted, which it knows: the base is not copied.
    Made over another Overlay, it holds that one's changes and what they were made over
    (not a chain of maps, one a publish, in a process that publishes for days)."""

    def __init__(self, base: Mapping[str, _V]) -> None:
        self.base = base  # (what `changes_from` compares with)
        # key -> value, or _GONE where deleted: over `_under`, and the keys changed here
        if isinstance(base, Overlay):
            self._under: Mapping[str, _V] = base._under
            self._changes: dict[str, Any] = dict(base._changes)
        else:
            self._under, self._changes = base, {}
        self._own: set[str] = set()
        self._whole: dict[str, _V] | None = None

    def __getitem__(self, key: str) -> _V:
        found = self._changes.get(key, _NONE)
        if found is _NONE:
            return self._under[key]
        if found is _GONE:
            raise KeyError(key)
        return found  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        found = self._changes.get(key, _NONE)  # type: ignore[call-overload]
        return key in self._under if found is _NONE else found is not _GONE

    def __setitem__(self, key: str, value: _V) -> None:
        self._changes[key] = value
        self._own.add(key)
        self._whole = None

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._changes[key] = _GONE
        self._own.add(key)
        self._whole = None

    def __len__(self) -> int:
        # From the changes: the size of a version state decides whether to snapshot it.
        if self._whole is not None:
            return len(self._whole)
        size = len(self._under)
        for key, value in self._changes.items():
            there = key in self._under
            size += -there if value is _GONE else not there
        return size

    def __iter__(self) -> Iterator[str]:
        return iter(self.whole())

    def whole(self) -> dict[str, _V]:
        """The dict of it, made once after each change (in C but for the changes)."""
        if self._whole is None:
            out = dict(whole(self._under))
            for key, value in self._changes.items():
                if value is _GONE:
                    out.pop(key, None)
                else:
                    out[key] = value
            self._whole = out
        return self._whole

    def changes_from(self, base: Mapping[str, _V]) -> dict[str, _V | None] | None:
        """Each key whose value differs from `base`'s, None for each `base` key gone;
        None when `base` is not the map this one was made from (then compare them)."""
        if base is not self.base:
            return None
        out: dict[str, _V | None] = {}
        for key in sorted(self._own):  # (in order: what is written from it is the same)
            was, now = base.get(key, _NONE), self._changes[key]
            if now is _GONE:
                if was is not _NONE:
                    out[key] = None
            elif was is _NONE or was != now:
                out[key] = now
        return out


_NONE: Any = object()  # not changed
_GONE: Any = object()  # deleted
