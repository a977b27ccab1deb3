"""The parameter catalog (schemas/params.yaml): data, not code.

It maps readable names to DBID keys, gives each parameter a type, and yields the JSON
Schemas for `params:` and `lines:` blocks, so the schema and the renderer can never
disagree about a parameter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gitprov.errors import GitprovError

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

LINE_PREFIX = "line."
DBID_PATTERN = r"^DBID_[A-Z0-9_]+$"

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?"
IPV4_PATTERN = f"^{_IPV4}$"
HOSTNAME_PATTERN = f"^{_HOSTNAME}$"
HOST_PATTERN = f"^({_IPV4}|{_HOSTNAME})$"


@dataclass(frozen=True)
class Param:
    key: str
    name: str
    type: str
    scope: str
    description: str = ""
    source: str = ""
    default: Any = None
    managed: bool = False
    secret: bool = False
    min: int | None = None
    max: int | None = None
    max_length: int | None = None
    values: tuple[str, ...] = ()

    @property
    def per_line(self) -> bool:
        return self.scope == "line"

    @property
    def short_name(self) -> str:
        """The name inside a `lines:` item (without `line.`)."""
        return self.name.removeprefix(LINE_PREFIX)

    def value_schema(self) -> dict[str, Any]:
        """JSON Schema of a value in a layer; null unsets an inherited value."""
        t = self.type
        if t == "bool":
            return {"type": ["boolean", "integer", "null"], "enum": [True, False, 0, 1, None]}
        if t in ("int", "port", "seconds"):
            lo, hi = {"port": (1, 65535), "seconds": (0, 2**31 - 1)}.get(t, (self.min, self.max))
            s: dict[str, Any] = {"type": ["integer", "null"]}
            if lo is not None:
                s["minimum"] = lo
            if hi is not None:
                s["maximum"] = hi
            return s
        if t == "enum":
            return {"enum": [*self.values, None]}
        s = {"type": ["string", "null"]}
        pattern = {"ipv4": IPV4_PATTERN, "hostname": HOSTNAME_PATTERN, "host": HOST_PATTERN}.get(t)
        if pattern:
            s["pattern"] = pattern
        if self.max_length is not None:
            s["maxLength"] = self.max_length
        return s


@dataclass(frozen=True)
class Catalog:
    params: tuple[Param, ...]
    digest: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {p.key: p for p in self.params})
        object.__setattr__(self, "_by_name", {p.name: p for p in self.params})
        object.__setattr__(self, "_order", {p.key: i for i, p in enumerate(self.params)})
        object.__setattr__(self, "_by_short", {p.short_name: p for p in self.params if p.per_line})

    def by_key(self, key: str) -> Param | None:
        return self._by_key.get(key)  # type: ignore[attr-defined,no-any-return]

    def lookup(self, name: str) -> Param | None:
        """A global parameter by readable name or DBID key."""
        return self._by_name.get(name) or self._by_key.get(name)  # type: ignore[attr-defined,no-any-return]

    def lookup_line(self, name: str) -> Param | None:
        """A per-line parameter by its short name (`account`) or DBID key."""
        p = self._by_short.get(name) or self._by_key.get(name)  # type: ignore[attr-defined]
        return p if p is not None and p.per_line else None

    def sort_key(self, key: str) -> tuple[int, str]:
        order: dict[str, int] = self._order  # type: ignore[attr-defined]
        return (order.get(key, len(order)), key)

    def params_schema(self) -> dict[str, Any]:
        """Schema of a `params:` block: readable names are closed (a typo is an error);
        raw DBID_* keys are open (the vendor dictionary is not public)."""
        props: dict[str, Any] = {}
        for p in self.params:
            if p.managed or p.per_line:
                continue
            schema = {**p.value_schema(), "description": p.description}
            props[p.name] = schema
            props[p.key] = schema
        return {
            "type": "object",
            "properties": props,
            "patternProperties": {DBID_PATTERN: {"type": ["string", "integer", "boolean", "null"]}},
            "additionalProperties": False,
        }

    def line_schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for p in self.params:
            if not p.per_line or p.managed:
                continue
            schema = {**p.value_schema(), "description": p.description}
            props[p.short_name] = schema
            props[p.key] = schema
        return {
            "type": ["object", "null"],
            "properties": props,
            "patternProperties": {DBID_PATTERN: {"type": ["string", "integer", "boolean", "null"]}},
            "additionalProperties": False,
        }


def _param(entry: dict[str, Any]) -> Param:
    return Param(
        key=entry["key"],
        name=entry["name"],
        type=entry["type"],
        scope=entry.get("scope", "global"),
        description=" ".join(str(entry.get("description", "")).split()),
        source=entry.get("source", ""),
        default=entry.get("default"),
        managed=bool(entry.get("managed", False)),
        secret=bool(entry.get("secret", False)),
        min=entry.get("min"),
        max=entry.get("max"),
        max_length=entry.get("max_length"),
        values=tuple(entry.get("values", ())),
    )


def load_catalog(path: Path | None = None) -> Catalog:
    return _load(str(path or SCHEMAS_DIR / "params.yaml"))


@cache
def _load(path: str) -> Catalog:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise GitprovError(f"{path}: cannot read the parameter catalog: {exc.strerror}") from exc
    data = yaml.safe_load(raw)
    params = tuple(_param(e) for e in data["params"])
    return Catalog(params, hashlib.sha256(raw).hexdigest())
