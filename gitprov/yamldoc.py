"""YAML documents that remember where every node came from.

Reading uses libyaml's composer (PyYAML's C binding) rather than ruamel's round-trip
loader: it yields a mark for every node at ~40 µs per device file instead of ~10 ms, and
one reader for every path means a fast path and an error path can never read a document
differently. ruamel stays the tool for round-trip edits of files we write back.

The reader works on libyaml's event stream instead of its composed node graph, so that
every bound of `gitprov.limits` is checked before the work it bounds is done: an alias
is refused by the size of what it names before a node of it is built (a few hundred bytes
of nested aliases name billions of nodes), a collection by its depth before it is opened,
an integer by its digits before it is converted. A file that crosses a limit is refused
as a whole, like a syntax error. Only plain data is ever built: a tag other than
`!secret NAME`, on any node, is a located error, and no constructor that could build a
Python object is reachable.

Scalars resolve with YAML 1.1 rules on purpose: that is what most YAML tools (PyYAML,
many editors and CI linters) do, so `yes`, `0123` or `10:21:52:01:13:19` written unquoted
become booleans or numbers, and the schema catches them with a hint to quote them.
Some unquoted scalars are strings here only by luck: YAML 1.2 tools read `0129` or `1e3`
as numbers, and `00:21:52:01:13:19` is one digit away from a base-60 number. Those are
recorded too (`Document.ambiguous`), so that validation can ask for quotes before another
tool, or the next MAC, reads them differently.
"""

from __future__ import annotations

import array
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from gitprov import DOCS_URL
from gitprov.errors import Problem, error
from gitprov.limits import DEFAULT, Limits
from gitprov.unsafe import describe

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - wheels ship libyaml; this is the pure fallback
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path_ = tuple[str | int, ...]

# Plain scalars that PyYAML (YAML 1.1) keeps as strings but other readings do not: YAML 1.2
# integers with leading zeros and 0o octals, 1.2 floats without a dot (`1e3`), base-60
# look-alikes starting with 0 (`00:21:52:01:13:19`), and the 1.1 spec's y / n booleans.
_AMBIGUOUS = re.compile(
    r"[-+]?[0-9]+"
    r"|0o[0-7]+"
    r"|[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
    r"|[0-9]+(:[0-9]{1,2})+"
    r"|[yYnN]"
)
_AMBIGUOUS_FIRST = frozenset("0123456789+-.yYnN")

SECRET_TAG = "!secret"


class SecretRef(str):
    """A value written as `!secret NAME`; the string is the secret's name, never its value."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"SecretRef({str(self)!r})"


def leaves(data: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """(path, value) of every scalar below `data`, in document order."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from leaves(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from leaves(v, (*path, i))
    else:
        yield path, data


class Document:
    """One parsed YAML file: its data, and the line and column (1-based) of every node
    (`positions`) and of every mapping key (`key_positions`), by node path.

    Held for every file of a fleet, so the positions are kept compactly: the node paths
    of documents shaped alike (every device file of a fleet has nearly the same keys)
    are one shared `_Shape`, and each document keeps only its numbers, in an array.
    Instead of two dictionaries of (line, col) tuples per document, that is ~1.2 KB less
    per device file (120 MB of a 100,000-device publish). Immutable, like its data."""

    __slots__ = ("_at", "_shape", "ambiguous", "data", "oid", "path", "raw")

    path: str
    oid: str
    data: Any
    # Source text of unquoted scalars that did not resolve to a string, for quoting hints.
    raw: Mapping[Path_, str]
    # Unquoted scalars that resolved to a string here but not in other common YAML readings.
    ambiguous: Mapping[Path_, str]
    _shape: _Shape
    _at: array.array[int]  # line, col of each of the shape's paths, then of its keys

    def __init__(
        self,
        path: str,
        oid: str,
        data: Any,
        positions: Mapping[Path_, tuple[int, int]] | None = None,
        key_positions: Mapping[Path_, tuple[int, int]] | None = None,
        raw: Mapping[Path_, str] | None = None,
        ambiguous: Mapping[Path_, str] | None = None,
    ) -> None:
        positions = positions or {}
        key_positions = key_positions or {}
        shape = _shape_of(tuple(positions), tuple(key_positions))
        numbers = chain.from_iterable(chain(positions.values(), key_positions.values()))
        _init(self, path, oid, data, shape, _numbers(numbers), raw, ambiguous)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Document is immutable (setting {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Document is immutable (deleting {name!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        # To a forked worker's parent: the shape's paths travel once per batch (the
        # pickler's memo), and the parent shares one shape among its documents again.
        shape = self._shape
        texts = (self.raw or None, self.ambiguous or None)  # the shared empty one is no dict
        return _rebuild, (self.path, self.oid, self.data, shape.paths, shape.keys, self._at, *texts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Document):
            return NotImplemented
        return (
            self.path == other.path
            and self.oid == other.oid
            and self.data == other.data
            and self.positions == other.positions
            and self.key_positions == other.key_positions
            and self.raw == other.raw
            and self.ambiguous == other.ambiguous
        )

    __hash__ = None  # type: ignore[assignment]  # its data is a dict

    def __repr__(self) -> str:
        return f"Document(path={self.path!r}, oid={self.oid!r}, data={self.data!r})"

    @property
    def positions(self) -> dict[Path_, tuple[int, int]]:
        """Node path -> (line, col) of every node, in document order (made on each call)."""
        at = self._at
        return {p: (at[2 * i], at[2 * i + 1]) for i, p in enumerate(self._shape.paths)}

    @property
    def key_positions(self) -> dict[Path_, tuple[int, int]]:
        """Node path -> (line, col) of the mapping key that names it (made on each call)."""
        at, base = self._at, 2 * len(self._shape.paths)
        return {p: (at[base + 2 * i], at[base + 2 * i + 1]) for i, p in enumerate(self._shape.keys)}

    def pos(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the node at `path`, or of its nearest ancestor."""
        p = tuple(path)
        shape, at = self._shape, self._at
        if key:
            i = shape.key_index().get(p)
            if i is not None:
                i += len(shape.paths)
                return at[2 * i], at[2 * i + 1]
        index = shape.index()
        while p:
            i = index.get(p)
            if i is not None:
                return at[2 * i], at[2 * i + 1]
            p = p[:-1]
        i = index.get(())
        return (at[2 * i], at[2 * i + 1]) if i is not None else (1, 1)


class _Shape:
    """The node paths (and key paths) of documents shaped alike, in document order, and
    where each is in their arrays of numbers (made when first asked)."""

    __slots__ = ("_index", "_key_index", "keys", "paths")

    def __init__(self, paths: tuple[Path_, ...], keys: tuple[Path_, ...]) -> None:
        self.paths = paths
        self.keys = keys
        self._index: dict[Path_, int] | None = None
        self._key_index: dict[Path_, int] | None = None

    def index(self) -> dict[Path_, int]:
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self.paths)}
        return self._index

    def key_index(self) -> dict[Path_, int]:
        if self._key_index is None:
            self._key_index = {p: i for i, p in enumerate(self.keys)}
        return self._key_index


# Shapes seen, to share: a fleet has a few dozen. Bounded: a repository of files shaped
# each its own way only refills it (each document keeps its shape).
_SHAPES: dict[tuple[tuple[Path_, ...], tuple[Path_, ...]], _Shape] = {}
_SHAPES_MAX = 1 << 14
_NO_TEXT: Mapping[Path_, str] = MappingProxyType({})
_SET = object.__setattr__


def _shape_of(paths: tuple[Path_, ...], keys: tuple[Path_, ...]) -> _Shape:
    hit = _SHAPES.get((paths, keys))
    if hit is None:
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        hit = _SHAPES[(paths, keys)] = _Shape(paths, keys)
    return hit


def _numbers(values: Iterable[int]) -> array.array[int]:
    values = tuple(values)
    try:
        return array.array("I", values)
    except OverflowError:  # past 4 G lines or columns: not from a file within the limits
        return array.array("q", values)


def _init(
    doc: Document,
    path: str,
    oid: str,
    data: Any,
    shape: _Shape,
    at: array.array[int],
    raw: Mapping[Path_, str] | None,
    ambiguous: Mapping[Path_, str] | None,
) -> None:
    _SET(doc, "path", path)
    _SET(doc, "oid", oid)
    _SET(doc, "data", data)
    _SET(doc, "_shape", shape)
    _SET(doc, "_at", at)
    _SET(doc, "raw", raw or _NO_TEXT)
    _SET(doc, "ambiguous", ambiguous or _NO_TEXT)


def _rebuild(
    path: str,
    oid: str,
    data: Any,
    paths: tuple[Path_, ...],
    keys: tuple[Path_, ...],
    at: array.array[int],
    raw: Mapping[Path_, str] | None,
    ambiguous: Mapping[Path_, str] | None,
) -> Document:
    doc = object.__new__(Document)
    _init(doc, path, oid, data, _shape_of(paths, keys), at, raw, ambiguous)
    return doc


_YAML_TAG = "tag:yaml.org,2002:"
_STR = _YAML_TAG + "str"
_NULL = _YAML_TAG + "null"
_BOOL = _YAML_TAG + "bool"
_INT = _YAML_TAG + "int"
# What else a plain scalar can resolve to; YAML 1.1's merge (`<<`), value (`=`) and yaml
# (`!`, `&`, `*`) types have no data of their own, so outside a key they stay text.
_CONSTRUCTED = frozenset({_YAML_TAG + "float", _YAML_TAG + "timestamp"})
_SHOWN_TAG_LENGTH = 60

# The reader keeps each parser event as a plain tuple: (kind, text, tag, plain, quoted,
# line, col, anchor). Anchored events are kept until the end of the file, for aliases
# to build them again; plain tuples of strings cost a third of PyYAML's event objects
# and nothing to the garbage collector.
_SCALAR, _ALIAS, _MAPPING, _SEQUENCE, _END, _DOCUMENT, _STREAM_END, _OTHER = range(8)
_KIND: Final = 0
_TEXT: Final = 1
_TAG: Final = 2
_PLAIN: Final = 3
_QUOTED: Final = 4
_LINE: Final = 5
_COL: Final = 6
_ANCHOR: Final = 7
Ev = tuple[int, str, str | None, bool, bool, int, int, str | None]
Pull = Callable[[], Ev]
_KINDS = {
    ScalarEvent: _SCALAR,
    AliasEvent: _ALIAS,
    MappingStartEvent: _MAPPING,
    SequenceStartEvent: _SEQUENCE,
    MappingEndEvent: _END,
    SequenceEndEvent: _END,
    DocumentStartEvent: _DOCUMENT,
    StreamEndEvent: _STREAM_END,
}


# Node paths repeat from one document to the next (every device file has
# `("lines", 0, "DBID_SIP_ACCOUNT")`): one shared tuple for each, which the shapes of
# documents (see Document) then hold. Bounded: a hostile repository only refills it.
# Only a document's first nodes are shared: past those, a file is one of a kind (a huge
# list's paths repeat nowhere) and sharing would only cost time.
_SHARED: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_SHARED_MAX = 1 << 18
_SHARED_NODES = 1024
_T = TypeVar("_T", bound=tuple[Any, ...])


def _shared(value: _T) -> _T:
    hit = _SHARED.get(value)
    if hit is not None:
        return cast(_T, hit)
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    _SHARED[value] = value
    return value


class _Refused(Exception):
    """The file crosses a limit or cannot be read: it is refused as a whole."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(slots=True)
class _Anchor:
    """Where an anchored node's events are in the reader's log, to build it again
    wherever an alias names it."""

    start: int
    base: int  # the reader's running node count when the node began
    depth: int  # collections open around it
    end: int = -1  # -1 while the node is still being read
    size: int = 0  # the nodes it expands to, its aliases expanded (capped: see _close)


def _shown(tag: str) -> str:
    shown = "!!" + tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else tag
    if len(shown) > _SHOWN_TAG_LENGTH:
        shown = shown[:_SHOWN_TAG_LENGTH] + "…"
    return shown


class _Reader:
    """Builds one document's data from the parser's events, with the positions of every
    node and every limit checked before what it bounds."""

    def __init__(self, path: str, loader: Any, limits: Limits, fleet_file: bool) -> None:
        self.path = path
        self.loader = loader
        self.limits = limits
        self.fleet_file = fleet_file
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.key_positions: dict[Path_, tuple[int, int]] = {}
        self.raw: dict[Path_, str] = {}
        self.ambiguous: dict[Path_, str] = {}
        self.problems: list[Problem] = []
        self.anchors: dict[str, _Anchor] = {}
        self._log: list[Ev] = []  # the events of anchored nodes
        self._open: list[_Anchor] = []  # anchored collections being read, innermost last
        self._depth = 0  # collections open in the text
        self._counted = 0  # nodes logged so far, aliases expanded (capped)
        self._start: Any = None  # the document's start event: its directives
        self.nodes = 0  # values and keys built
        self._max_nodes = limits.nodes
        self.aliases = 0  # alias uses in the text
        self.alias_nodes = 0  # nodes built through aliases
        self._replaying = 0

    # -- problems ----------------------------------------------------------------------
    def _problem(self, ev: Ev, code: str, message: str, hint: str = "") -> None:
        self.problems.append(error(self.path, ev[_LINE], ev[_COL], code, message, hint))

    def _refuse(self, ev: Ev, code: str, message: str, hint: str = "") -> _Refused:
        return _Refused(error(self.path, ev[_LINE], ev[_COL], code, message, hint))

    def _over(self, ev: Ev, code: str, name: str, message: str) -> _Refused:
        limit = getattr(self.limits, name)
        return self._refuse(
            ev,
            code,
            f"{message} (limit {limit}: limits.{name})",
            self.limits.hint(name, fleet_file=self.fleet_file),
        )

    # -- the event stream --------------------------------------------------------------
    def _next(self) -> Ev:
        """The next event of the file: aliases checked, anchored nodes logged."""
        raw = self.loader.get_event()
        kind = _KINDS.get(type(raw), _OTHER)
        mark = raw.start_mark
        if kind == _SCALAR:
            plain, quoted = raw.implicit
            ev: Ev = (
                _SCALAR, raw.value, raw.tag, plain, quoted, mark.line + 1, mark.column + 1,
                raw.anchor,
            )  # fmt: skip
            if ev[_ANCHOR] is None and not self._open:
                return ev  # most events: nothing to define, log or count
        elif kind in (_MAPPING, _SEQUENCE):
            ev = (kind, "", raw.tag, False, False, mark.line + 1, mark.column + 1, raw.anchor)
            if ev[_ANCHOR] is None and not self._open:
                self._depth += 1
                return ev
        elif kind == _END and not self._open:
            self._depth -= 1
            return (_END, "", None, False, False, mark.line + 1, mark.column + 1, None)
        elif kind == _ALIAS:
            ev = (_ALIAS, raw.anchor, None, False, False, mark.line + 1, mark.column + 1, None)
        else:
            if kind == _DOCUMENT:
                self._start = raw
            ev = (kind, "", None, False, False, mark.line + 1, mark.column + 1, None)
        grow = 0
        if kind == _ALIAS:
            grow = min(self._alias_used(ev).size, self.limits.alias_nodes + 1)
        elif kind <= _SEQUENCE:
            grow = 1
        name = ev[_ANCHOR]
        defined = None
        if name is not None:
            if name in self.anchors:
                raise self._refuse(
                    ev,
                    "GP001",
                    f"YAML syntax: anchor &{name} is defined twice",
                    "give each anchor its own name",
                )
            defined = self.anchors[name] = _Anchor(len(self._log), self._counted, self._depth)
        if self._open or defined is not None:
            self._log.append(ev)
            self._counted += grow
        if kind in (_MAPPING, _SEQUENCE):
            self._depth += 1
            if defined is not None:
                self._open.append(defined)
        elif kind == _END:
            self._depth -= 1
            while self._open and self._open[-1].depth == self._depth:
                self._close(self._open.pop())
        elif defined is not None:
            self._close(defined)
        return ev

    def _close(self, anchor: _Anchor) -> None:
        anchor.end = len(self._log)
        # Sizes stop growing past the limit: an anchor that big can never be used, and
        # nested aliases would otherwise make sizes numbers of thousands of digits.
        anchor.size = min(self._counted - anchor.base, self.limits.alias_nodes + 1)

    def _alias_used(self, ev: Ev) -> _Anchor:
        name = ev[_TEXT]
        anchor = self.anchors.get(name)
        if anchor is None:
            raise self._refuse(
                ev,
                "GP001",
                f"YAML syntax: alias *{name} names no anchor",
                f"define &{name} on a node before *{name}",
            )
        if anchor.end < 0:
            raise self._refuse(
                ev,
                "GP007",
                f"alias *{name} is inside the node &{name} names: it would never end",
                "an alias may only name a node that is complete",
            )
        self.aliases += 1
        if self.aliases > self.limits.aliases:
            raise self._over(ev, "GP007", "aliases", "too many aliases (*name) in one file")
        return anchor

    # -- building ----------------------------------------------------------------------
    def document(self) -> Any:
        self._next()  # the stream's start
        start = self._next()
        if start[_KIND] == _STREAM_END:
            return None
        if self._start.tags:
            handles = ", ".join(sorted(self._start.tags))
            self._problem(
                start,
                "GP002",
                f"a %TAG directive ({handles}): tags are not supported",
                "remove the directive; the only tag gitprov knows is !secret NAME",
            )
        version = self._start.version
        if version is not None:
            self._problem(
                start,
                "GP001",
                f"a %YAML {version[0]}.{version[1]} directive",
                "remove the directive: gitprov reads every file with YAML 1.1 rules "
                f"({DOCS_URL}/inventory.md, quote what is not a number)",
            )
        value = self.node(self._next(), (), self._next, 0)
        self._next()  # the document's end
        after = self._next()
        if after[_KIND] == _DOCUMENT:
            raise self._refuse(
                after,
                "GP001",
                "more than one YAML document in the file",
                "keep one document per file (remove the extra ---)",
            )
        return value

    def _too_many(self, ev: Ev) -> _Refused:
        return self._over(ev, "GP006", "nodes", "the file holds too many values and keys")

    def node(self, ev: Ev, path: Path_, pull: Pull, depth: int) -> Any:
        at = (ev[_LINE], ev[_COL])
        self.positions[path] = at
        kind = ev[_KIND]
        if kind == _ALIAS:
            return self._alias(ev, path, depth)
        self.nodes += 1
        if self.nodes > self._max_nodes:
            raise self._too_many(ev)
        if kind == _SCALAR:
            return self._scalar(ev, path)
        depth += 1
        if depth > self.limits.depth:
            raise self._over(ev, "GP008", "depth", "mappings and lists nested too deep")
        tag = ev[_TAG]
        if tag is not None:
            self._unknown_tag(ev, tag)
        if kind == _MAPPING:
            return self._mapping(path, pull, depth)
        out: list[Any] = []
        while True:
            item = pull()
            if item[_KIND] == _END:
                return out
            out.append(self.node(item, (*path, len(out)), pull, depth))

    def _alias(self, ev: Ev, path: Path_, depth: int) -> Any:
        anchor = self.anchors[ev[_TEXT]]
        if not self._replaying:
            # An anchor's size counts the aliases inside it: checked once, here, before
            # anything of it is built.
            if self.alias_nodes + anchor.size > self.limits.alias_nodes:
                raise self._over(
                    ev,
                    "GP007",
                    "alias_nodes",
                    "the aliases of this file expand to too many nodes",
                )
            self.alias_nodes += anchor.size
        events = iter(self._log[anchor.start : anchor.end])
        self._replaying += 1
        try:
            value = self.node(next(events), path, events.__next__, depth)
        finally:
            self._replaying -= 1
        at = (ev[_LINE], ev[_COL])
        self.positions[path] = at
        return value

    def _mapping(self, path: Path_, pull: Pull, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            kev = pull()
            if kev[_KIND] == _END:
                return out
            key = self._key(kev, pull)
            if key is None:
                self._skip(pull(), pull)
                continue
            if key in out:
                first = self.key_positions[(*path, key)]
                self._problem(
                    kev,
                    "GP004",
                    f"duplicate key {key!r} (first at line {first[0]})",
                    "YAML keeps only the last one; remove one of them",
                )
                self._skip(pull(), pull)
                continue
            # One path tuple for the key's and the value's position, and one for every
            # document with that node (a document's positions are numbers in an array).
            child: tuple[Any, ...] = (*path, key)
            if self.nodes < _SHARED_NODES:
                child = _shared(child)
                # The shared path's key: one str for every document's "params", "lines"…
                # (the loader makes a new one per key read: 100,000 devices held about a
                # kilobyte of key text each).
                key = child[-1]
            self.key_positions[child] = (kev[_LINE], kev[_COL])
            out[key] = self.node(pull(), child, pull, depth)

    def _key(self, kev: Ev, pull: Pull) -> str | None:
        """A mapping key's text, or None (reported) for a key that is not a string."""
        self.nodes += 1
        if self.nodes > self._max_nodes:
            raise self._too_many(kev)
        kind = kev[_KIND]
        if kind == _ALIAS:
            anchor = self.anchors[kev[_TEXT]]
            first = self._log[anchor.start]
            if anchor.end - anchor.start == 1 and first[_KIND] == _SCALAR:
                if not self._replaying:
                    if self.alias_nodes + 1 > self.limits.alias_nodes:
                        raise self._over(
                            kev,
                            "GP007",
                            "alias_nodes",
                            "the aliases of this file expand to too many nodes",
                        )
                    self.alias_nodes += 1
                return first[_TEXT]
        elif kind == _SCALAR:
            tag = kev[_TAG]
            if tag is None and kev[_PLAIN] and kev[_TEXT] == "<<":
                self._problem(
                    kev,
                    "GP003",
                    "YAML merge keys (<<) are not supported",
                    "use a profile with `extends:` to share settings",
                )
                return None
            if tag is not None:
                self._unknown_tag(kev, tag)
            return kev[_TEXT]
        self._problem(
            kev,
            "GP003",
            "a mapping key must be a plain string",
            "write the key as text (quoted if it holds ':', '[' or '{')",
        )
        self._skip(kev, pull)
        return None

    def _skip(self, ev: Ev, pull: Pull) -> None:
        """Reads past a node that is not built (its anchors are still defined)."""
        open_ = int(ev[_KIND] in (_MAPPING, _SEQUENCE))
        while open_:
            kind = pull()[_KIND]
            if kind in (_MAPPING, _SEQUENCE):
                open_ += 1
            elif kind == _END:
                open_ -= 1

    def _unknown_tag(self, ev: Ev, tag: str) -> None:
        if tag == SECRET_TAG:
            what = "a key" if ev[_KIND] == _SCALAR else "a mapping or a list"
            self._problem(
                ev,
                "GP002",
                f"!secret on {what}",
                "!secret names one secret: write it on a value, as `!secret NAME`",
            )
            return
        hint = "the only tag gitprov knows is !secret NAME"
        if tag == _STR:
            hint = "quote the value instead of tagging it !!str"
        self._problem(ev, "GP002", f"unknown tag {_shown(tag)}", hint)

    def _scalar(self, ev: Ev, path: Path_) -> Any:
        value = ev[_TEXT]
        tag = ev[_TAG]
        if tag is not None:
            if tag == SECRET_TAG:
                return SecretRef(value.strip())
            self._unknown_tag(ev, tag)
            return value
        plain = ev[_PLAIN]
        resolved = self.loader.resolve(yaml.ScalarNode, value, (plain, ev[_QUOTED]))
        if resolved == _STR or not plain:
            if plain and value[:1] in _AMBIGUOUS_FIRST and _AMBIGUOUS.fullmatch(value):
                self.ambiguous[path] = value
            return value
        if resolved == _NULL:
            result: Any = None
        elif resolved == _BOOL:
            result = self.loader.bool_values[value.lower()]
        elif resolved == _INT:
            result = self._int(ev, value)
        elif resolved in _CONSTRUCTED:
            result = self._construct(ev, resolved, value)
        else:
            return value
        self.raw[path] = value
        return result

    def _int(self, ev: Ev, value: str) -> Any:
        limit = self.limits.integer_digits
        # Counted on the text before converting it (decimal conversion is quadratic, and
        # Python refuses more than 4,300 digits), and on the value after (hex digits).
        if len(value) > limit and sum(c.isalnum() for c in value) > limit + 1:
            raise self._over(ev, "GP009", "integer_digits", "an integer with too many digits")
        result = self._construct(ev, _INT, value)
        if isinstance(result, int) and abs(result) >= self.limits.integer_bound:
            raise self._over(ev, "GP009", "integer_digits", "an integer with too many digits")
        return result

    def _construct(self, ev: Ev, tag: str, value: str) -> Any:
        node = yaml.ScalarNode(tag, value)
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            what = {_INT: "an integer", _YAML_TAG + "timestamp": "a date"}.get(tag, "a number")
            self._problem(
                ev,
                "GP013",
                f"unquoted {value[:40]} looks like {what} to YAML, but is not a valid one",
                f'quote it: "{value[:40]}"',
            )
            return value


def too_large(path: str, size: int, limits: Limits, *, fleet_file: bool = False) -> Problem:
    """GP006 for a file of `size` bytes, past `limits.document_bytes`."""
    return error(
        path,
        1,
        1,
        "GP006",
        f"the file is too large: {size} bytes (limit {limits.document_bytes}: "
        "limits.document_bytes)",
        limits.hint("document_bytes", fleet_file=fleet_file),
    )


def parse(
    path: str,
    oid: str,
    data: bytes,
    limits: Limits = DEFAULT,
    *,
    fleet_file: bool = False,
) -> tuple[Document | None, list[Problem]]:
    """Parse one YAML file within `limits`. Returns the document (None if unreadable or
    refused) and its problems. `fleet_file`: the file is gitprov.yaml, read within the
    defaults whatever it asks for (hints say so)."""
    if len(data) > limits.document_bytes:
        return None, [too_large(path, len(data), limits, fleet_file=fleet_file)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Everything before the bad byte decoded: its line and column are the place.
        before = data[: exc.start].decode("utf-8")
        return _unreadable(
            path,
            *_line_col(before, len(before)),
            f"not UTF-8: {exc.reason} at byte {exc.start}",
            "save the file as UTF-8",
        )
    hidden = _HIDDEN_BREAK.search(text) if _may_hide_a_break(text) else None
    if hidden is not None:
        return None, [_hidden_break(path, text, hidden.start())]
    # A byte order mark belongs at the very start of the file, where it is skipped; one
    # inside (two files joined, a paste from a Windows editor) is an invisible character
    # that libyaml reports as a missing key, a column past it.
    stray = text.find("\ufeff", 1)
    if stray != -1:
        return _unreadable(
            path,
            *_line_col(text, stray),
            "a byte order mark (U+FEFF) inside the file: YAML allows one only at its very start",
            "remove it (it is invisible in most editors: delete the character before the "
            "first one shown there, or retype the line)",
        )
    loader = _Loader(text)
    reader = _Reader(path, loader, limits, fleet_file)
    try:
        value = reader.document()
    except _Refused as exc:
        return None, [exc.problem]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if mark is not None and "maximum nesting depth" in str(exc.problem):
            deeper = _depth_crossing(path, text[: mark.index], limits, fleet_file)
            if deeper is not None:
                return None, [deeper]
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        key_at = _long_key(text, mark) if mark is not None else None
        if key_at is not None:
            return _unreadable(
                path,
                line,
                key_at,
                f"YAML syntax: a key of {col - key_at:,} characters; YAML reads a key of at "
                "most 1024 without a `? ` before it",
                "shorten the key (no parameter name is that long)",
            )
        return _unreadable(
            path,
            line,
            col,
            f"YAML syntax: {exc.problem or 'invalid YAML'}",
            "fix the YAML syntax (indentation, quotes, colons)",
        )
    except yaml.reader.ReaderError as exc:
        return _unreadable(
            path,
            *_line_col(text, exc.position),
            f"YAML syntax: character U+{exc.character:04X} is not allowed in YAML"
            if isinstance(exc.character, int)
            else f"YAML syntax: {exc.reason}",
            "write it as an escape in a double-quoted string, or remove it",
        )
    except yaml.YAMLError as exc:
        return _unreadable(path, 1, 1, f"YAML syntax: {exc}", "fix the YAML syntax")
    finally:
        loader.dispose()
    if value is None:
        value = {}
    doc = Document(
        path,
        oid,
        value,
        reader.positions,
        reader.key_positions,
        reader.raw,
        reader.ambiguous,
    )
    return doc, reader.problems


# Line breaks to YAML that git, diffs and most editors do not show as one: a CR not
# followed by LF, NEL, and the Unicode line and paragraph separators. After one, libyaml
# starts a new line, so `# reviewed<U+2028>  sip.server: evil` reads as a comment in a
# review and as a key to gitprov; and every position after it would be a line that git
# (blame, GitHub's annotations) does not have.
_HIDDEN_BREAK = re.compile("\r(?!\n)|[\x85\u2028\u2029]")


def _may_hide_a_break(text: str) -> bool:
    # Most files hold none of them: four scans at memory speed, no regular expression.
    return "\r" in text or "\x85" in text or "\u2028" in text or "\u2029" in text


def _unreadable(
    path: str, line: int, col: int, message: str, hint: str
) -> tuple[None, list[Problem]]:
    """What `parse` returns for a file it cannot read as YAML: no document, one GP001."""
    return None, [error(path, line, col, "GP001", message, hint)]


def _long_key(text: str, mark: yaml.Mark) -> int | None:
    """The column where a key starts when libyaml stopped at its `:` because the key is
    longer than an implicit key may be (1024 characters): it then says "mapping values
    are not allowed here", which sends the reader looking for a stray colon."""
    start = text.rfind("\n", 0, mark.index) + 1
    before = text[start : mark.index]
    key = before.lstrip(" -")
    if len(key.rstrip()) <= 1024 or text[mark.index : mark.index + 1] != ":":
        return None
    return len(before) - len(key) + 1


def _hidden_break(path: str, text: str, at: int) -> Problem:
    line, col = _line_col(text, at)
    char = text[at]
    what = "a carriage return not followed by a line feed" if char == "\r" else describe(char)
    return error(
        path,
        line,
        col,
        "GP001",
        f"{what}: YAML starts a new line there, git and reviews do not",
        "remove it: save the file with LF (or CRLF) line endings and no other line breaks",
    )


def _depth_crossing(path: str, text: str, limits: Limits, fleet_file: bool) -> Problem | None:
    """Where `limits.depth` is crossed in `text`, the part of a file libyaml read before
    it stopped at its own nesting limit (1000). Its scanner looks ahead through a flow
    collection (`[[[[…`) before the reader sees the first of its events, so a nesting bomb
    stops libyaml first; read again up to there, the reader meets the limit it checks,
    which is always lower (at most 100), at the place it is crossed."""
    try:
        _Reader(path, _Loader(text), limits, fleet_file).document()
    except _Refused as exc:
        return exc.problem if exc.problem.code == "GP008" else None
    except yaml.YAMLError:
        return None
    return None


def _line_col(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1
