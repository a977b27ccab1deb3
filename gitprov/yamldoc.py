"""YAML documents that remember where every node came from.

Reading uses libyaml's composer (PyYAML's C binding) rather than ruamel's round-trip
loader: it yields a mark for every node at ~40 µs per device file instead of ~10 ms, and
one reader for every path means a fast path and an error path can never read a document
differently. ruamel stays the tool for round-trip edits of files we write back.

Scalars resolve with YAML 1.1 rules on purpose: that is what most YAML tools (PyYAML,
many editors and CI linters) do, so `yes`, `0123` or `10:21:52:01:13:19` written unquoted
become booleans or numbers, and the schema catches them with a hint to quote them.
Some unquoted scalars are strings here only by luck: YAML 1.2 tools read `0129` or `1e3`
as numbers, and `00:21:52:01:13:19` is one digit away from a base-60 number. Those are
recorded too (`Document.ambiguous`), so that validation can ask for quotes before another
tool, or the next MAC, reads them differently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gitprov.errors import Problem, error

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


@dataclass(frozen=True)
class Document:
    path: str
    oid: str
    data: Any
    positions: Mapping[Path_, tuple[int, int]] = field(default_factory=dict)
    key_positions: Mapping[Path_, tuple[int, int]] = field(default_factory=dict)
    # Source text of unquoted scalars that did not resolve to a string, for quoting hints.
    raw: Mapping[Path_, str] = field(default_factory=dict)
    # Unquoted scalars that resolved to a string here but not in other common YAML readings.
    ambiguous: Mapping[Path_, str] = field(default_factory=dict)

    def pos(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the node at `path`, or of its nearest ancestor."""
        p = tuple(path)
        if key and p in self.key_positions:
            return self.key_positions[p]
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), (1, 1))


class _Builder:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.key_positions: dict[Path_, tuple[int, int]] = {}
        self.raw: dict[Path_, str] = {}
        self.ambiguous: dict[Path_, str] = {}
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def _at(self, node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.positions[path] = self._at(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.tag == SECRET_TAG:
            return SecretRef(node.value.strip())
        if node.tag.startswith("!"):
            line, col = self._at(node)
            self.problems.append(
                error(
                    self.path,
                    line,
                    col,
                    "GP002",
                    f"unknown tag {node.tag}",
                    "the only tag gitprov knows is !secret NAME",
                )
            )
            return node.value
        value = self._constructor.construct_object(node, deep=True)
        if not node.style:
            if not isinstance(value, str):
                self.raw[path] = node.value
            elif value[:1] in _AMBIGUOUS_FIRST and _AMBIGUOUS.fullmatch(value):
                self.ambiguous[path] = node.value
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line, col = self._at(key_node)
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(
                    error(
                        self.path,
                        line,
                        col,
                        "GP003",
                        "YAML merge keys (<<) are not supported",
                        "use a profile with `extends:` to share settings",
                    )
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    error(self.path, line, col, "GP003", "a mapping key must be a plain string")
                )
                continue
            key = key_node.value
            if key in out:
                first = self.key_positions[(*path, key)]
                self.problems.append(
                    error(
                        self.path,
                        line,
                        col,
                        "GP004",
                        f"duplicate key {key!r} (first at line {first[0]})",
                        "YAML keeps only the last one; remove one of them",
                    )
                )
                continue
            self.key_positions[(*path, key)] = (line, col)
            out[key] = self.build(value_node, (*path, key))
        return out


def parse(path: str, oid: str, data: bytes) -> tuple[Document | None, list[Problem]]:
    """Parse one YAML file. Returns the document (None if unreadable) and its problems."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            error(
                path,
                1,
                1,
                "GP001",
                f"not UTF-8: {exc.reason} at byte {exc.start}",
                "save the file as UTF-8",
            )
        ]
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or "invalid YAML"
        return None, [
            error(
                path,
                line,
                col,
                "GP001",
                f"YAML syntax: {what}",
                "fix the YAML syntax (indentation, quotes, colons)",
            )
        ]
    except yaml.YAMLError as exc:
        return None, [error(path, 1, 1, "GP001", f"YAML syntax: {exc}", "fix the YAML syntax")]
    if len(nodes) > 1:
        return None, [
            error(
                path,
                1,
                1,
                "GP001",
                "more than one YAML document in the file",
                "keep one document per file (remove the extra ---)",
            )
        ]
    builder = _Builder(path, text)
    value = builder.build(nodes[0], ()) if nodes else {}
    if value is None:
        value = {}
    doc = Document(
        path,
        oid,
        value,
        builder.positions,
        builder.key_positions,
        builder.raw,
        builder.ambiguous,
    )
    return doc, builder.problems
