"""The parameter catalog (schemas/params.yaml): data, not code.

It maps readable names to DBID keys, gives each parameter a type, and yields the JSON
Schemas for `params:` and `lines:` blocks, so the schema and the renderer can never
disagree about a parameter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gitprov.errors import GitprovError, UsageError


def _schemas_dir() -> Path:
    # Installed from a wheel, schemas/ ships inside the package; in a checkout (and an
    # editable install) it is beside the package.
    here = Path(__file__).resolve().parent
    packaged = here / "_schemas"
    return packaged if (packaged / "params.yaml").is_file() else here.parent / "schemas"


SCHEMAS_DIR = _schemas_dir()

LINE_PREFIX = "line."
DBID_PATTERN = r"^DBID_[A-Z0-9_]+$"

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?"
IPV4_PATTERN = f"^{_IPV4}$"
HOSTNAME_PATTERN = f"^{_HOSTNAME}$"
HOST_PATTERN = f"^({_IPV4}|{_HOSTNAME})$"


# A raw key the catalog does not know is taken for a secret when a word of its name says
# so: the vendor dictionary is not public, and an admin password must not reach git.
SECRET_WORDS = frozenset({"PASSWORD", "PASSWD", "PWD", "PASS", "PASSPHRASE", "SECRET", "PIN"})


def secret_like(key: str) -> bool:
    """Whether a word of raw key `key` (after DBID_) says password, secret or PIN."""
    return any(word in SECRET_WORDS for word in key.split("_")[1:])


TYPES = ("bool", "int", "port", "seconds", "ipv4", "hostname", "host", "enum", "string", "url")
SCOPES = ("global", "line")


class _Typed:
    """What published and unpublished catalog entries share (the dataclasses hold it)."""

    name: str
    label: str
    scope: str
    description: str
    source: str
    default: Any
    unit: str
    type: str
    min: int | None
    max: int | None
    max_length: int | None
    values: tuple[str, ...]

    def value_schema(self) -> dict[str, Any]:
        """JSON Schema of a value in a layer; null unsets an inherited value."""
        t = self.type
        if t == "bool":
            return {"type": ["boolean", "integer", "null"], "enum": [True, False, 0, 1, None]}
        if t in ("int", "port", "seconds"):
            # A port's range is TCP's and UDP's; seconds count a wait (the overview: 0
            # disables it), with no upper bound published. Other ranges: the catalog's.
            lo, hi = {"port": (1, 65535), "seconds": (0, None)}.get(t, (self.min, self.max))
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
class Param(_Typed):
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
    label: str = ""
    unit: str = ""

    @property
    def per_line(self) -> bool:
        return self.scope == "line"

    @property
    def short_name(self) -> str:
        """The name inside a `lines:` item (without `line.`)."""
        return self.name.removeprefix(LINE_PREFIX)


@dataclass(frozen=True)
class Unpublished(_Typed):
    """A parameter the reference names whose DBID key the vendor has not published.

    It has no `key` field on purpose: nothing can render it, so gitprov cannot invent one.
    """

    name: str
    type: str
    label: str
    description: str = ""
    source: str = ""
    default: Any = None
    min: int | None = None
    max: int | None = None
    max_length: int | None = None
    values: tuple[str, ...] = ()
    unit: str = ""
    scope: str = "global"


@dataclass(frozen=True)
class Catalog:
    params: tuple[Param, ...]
    digest: str
    unpublished: tuple[Unpublished, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {p.key: p for p in self.params})
        object.__setattr__(self, "_by_name", {p.name: p for p in self.params})
        object.__setattr__(self, "_order", {p.key: i for i, p in enumerate(self.params)})
        object.__setattr__(self, "_by_short", {p.short_name: p for p in self.params if p.per_line})
        object.__setattr__(self, "_unpublished", {u.name: u for u in self.unpublished})

    def by_key(self, key: str) -> Param | None:
        return self._by_key.get(key)  # type: ignore[attr-defined,no-any-return]

    def lookup(self, name: str) -> Param | None:
        """A global parameter by readable name or DBID key."""
        return self._by_name.get(name) or self._by_key.get(name)  # type: ignore[attr-defined,no-any-return]

    def lookup_line(self, name: str) -> Param | None:
        """A per-line parameter by its short name (`account`) or DBID key."""
        p = self._by_short.get(name) or self._by_key.get(name)  # type: ignore[attr-defined]
        return p if p is not None and p.per_line else None

    def unpublished_named(self, name: str) -> Unpublished | None:
        """A parameter the reference names but whose DBID key is not public."""
        return self._unpublished.get(name)  # type: ignore[attr-defined,no-any-return]

    def global_names(self) -> list[str]:
        """Readable names a `params:` block may hold."""
        names = [p.name for p in self.params if not p.per_line and not p.managed]
        return names + [u.name for u in self.unpublished]

    def line_names(self) -> list[str]:
        """Short names a `lines:` item may hold."""
        return [p.short_name for p in self.params if p.per_line and not p.managed]

    def sort_key(self, key: str) -> tuple[int, str]:
        order: dict[str, int] = self._order  # type: ignore[attr-defined]
        return (order.get(key, len(order)), key)

    def params_schema(self) -> dict[str, Any]:
        """Schema of a `params:` block: readable names are closed (a typo is an error);
        raw DBID_* keys are open (the vendor dictionary is not public). Unpublished and
        managed names are type-checked here; rules GP116 (where no model binds the key) and
        GP117 then refuse them."""
        props: dict[str, Any] = {}
        for p in self.params:
            if p.per_line:
                continue
            # Managed names are accepted here so that GP117 alone says "gitprov computes it".
            schema = {**p.value_schema(), "description": p.description}
            props[p.name] = schema
            props[p.key] = schema
        for u in self.unpublished:
            props[u.name] = {
                **u.value_schema(),
                "description": f"{u.label} (DBID key not published by the vendor; set by "
                "this name only for devices whose model binds its key: `bindings:` in "
                f"models/NAME.yaml). {u.description}",
            }
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


def _common(entry: dict[str, Any], where: str) -> dict[str, Any]:
    t = entry.get("type")
    if t not in TYPES:
        raise GitprovError(f"{where}: unknown type {t!r}", hint=f"types: {', '.join(TYPES)}")
    scope = entry.get("scope", "global")
    if scope not in SCOPES:
        raise GitprovError(f"{where}: unknown scope {scope!r}", hint="global or line")
    if t == "enum" and not entry.get("values"):
        raise GitprovError(f"{where}: an enum needs `values:`")
    source = entry.get("source")
    if not isinstance(source, str) or not source.strip():
        # A type, a range or a key nobody can trace back is how wrong facts get in.
        raise GitprovError(f"{where}: no `source:`", hint="say where the parameter is named")
    return {
        "type": t,
        "scope": scope,
        "description": " ".join(str(entry.get("description", "")).split()),
        "source": " ".join(source.split()),
        "default": entry.get("default"),
        "min": entry.get("min"),
        "max": entry.get("max"),
        "max_length": entry.get("max_length"),
        "values": tuple(entry.get("values", ())),
        "label": entry.get("label", ""),
        "unit": entry.get("unit", ""),
    }


def _param(entry: dict[str, Any]) -> Param:
    where = f"params.yaml: {entry.get('key')}"
    key = entry.get("key")
    if not isinstance(key, str) or not re.fullmatch(DBID_PATTERN, key):
        raise GitprovError(
            f"{where}: not a DBID key",
            hint="a parameter whose key is not published belongs under `unpublished:`",
        )
    fields = _common(entry, where)
    name = entry["name"]
    if (fields["scope"] == "line") != name.startswith(LINE_PREFIX):
        raise GitprovError(f"{where}: per-line names, and only they, start with {LINE_PREFIX!r}")
    return Param(
        key=key,
        name=name,
        managed=bool(entry.get("managed", False)),
        secret=bool(entry.get("secret", False)),
        **fields,
    )


def _unpublished(entry: dict[str, Any]) -> Unpublished:
    where = f"params.yaml: {entry.get('name')}"
    if "key" in entry:
        raise GitprovError(f"{where}: an unpublished parameter has no key")
    fields = _common(entry, where)
    if fields["scope"] != "global":
        raise GitprovError(f"{where}: unpublished parameters are global")
    return Unpublished(name=entry["name"], **fields)


def load_catalog(path: Path | None = None) -> Catalog:
    return _load(str(path or SCHEMAS_DIR / "params.yaml"))


@cache
def _load(path: str) -> Catalog:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(
            f"{path}: cannot read the parameter catalog: {exc.strerror}",
            hint="gitprov's installation is incomplete: reinstall it",
        ) from exc
    # libyaml's loader: every command reads the catalog, and the pure-Python one took a
    # third of a second of each warm run (the same data either way).
    data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    params = tuple(_param(e) for e in data["params"])
    unpublished = tuple(_unpublished(e) for e in data.get("unpublished") or ())
    names = [p.name for p in params] + [u.name for u in unpublished]
    keys = [p.key for p in params]
    for what, seen in (("name", names), ("key", keys)):
        dup = sorted({x for x in seen if seen.count(x) > 1})
        if dup:
            raise GitprovError(f"{path}: duplicate parameter {what}(s): {', '.join(dup)}")
    return Catalog(params, hashlib.sha256(raw).hexdigest(), unpublished)
