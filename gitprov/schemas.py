"""The JSON Schemas of every inventory file kind, loaded by name from schemas/.

`params.schema.json` and `line.schema.json` are generated from the parameter catalog, so
`gitprov schema` can write them out for editors and they never drift from the renderer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from gitprov.catalog import SCHEMAS_DIR, Catalog, load_catalog
from gitprov.inventory import DEVICE, FLEET, MODEL, PROFILE, SECRETS

if TYPE_CHECKING:
    # Imported when a validator is first made (~0.12 s): publishing a commit already
    # published, or one that only changed devices' files already checked, needs none.
    from jsonschema import Draft202012Validator, TypeChecker

BASE = "https://gitprov.invalid/schemas/"
KIND_FILES = {
    FLEET: "fleet.schema.json",
    PROFILE: "profile.schema.json",
    MODEL: "model.schema.json",
    DEVICE: "device.schema.json",
    SECRETS: "secrets.schema.json",
}


def generated(catalog: Catalog) -> dict[str, dict[str, Any]]:
    params = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE + "params.schema.json",
        "title": "gitprov params block (generated from schemas/params.yaml)",
        **catalog.params_schema(),
    }
    line = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE + "line.schema.json",
        "title": "gitprov per-line params (generated from schemas/params.yaml)",
        **catalog.line_schema(),
    }
    return {"params.schema.json": params, "line.schema.json": line}


def all_schemas(catalog: Catalog | None = None) -> dict[str, dict[str, Any]]:
    """Every schema by file name, static and generated."""
    out: dict[str, dict[str, Any]] = {}
    for name in KIND_FILES.values():
        # The files hold no `$id` (as `gitprov schema --write` writes them: their `$ref`s
        # resolve next to each other, for an editor or a validator given the directory);
        # here each is the one its name says, where the others find it.
        raw = json.loads((SCHEMAS_DIR / name).read_text())
        out[name] = {"$schema": raw.get("$schema"), "$id": BASE + name, **raw}
    out.update(generated(catalog or load_catalog()))
    return out


def output_schemas() -> dict[str, dict[str, Any]]:
    """Schemas of gitprov's own machine-readable output (schemas/output/), by file name."""
    return {
        p.name: json.loads(p.read_text()) for p in sorted((SCHEMAS_DIR / "output").glob("*.json"))
    }


def for_editors(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema as `gitprov schema --write` writes it: without `$id`, so that its relative
    `$ref`s resolve next to the written file instead of at an address nobody serves."""
    return {k: v for k, v in schema.items() if k != "$id"}


def _is_integer(_checker: TypeChecker, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def strict_validator() -> type[Draft202012Validator]:
    """Draft 2020-12 with gitprov's integers. JSON Schema counts 5060.0 as an integer
    ("a number with a zero fractional part"); gitprov would write it into param.conf as
    `5060.0`. An inventory's integer is one YAML reads as an int, nothing else (and a
    bool, which Python calls an int, is not)."""
    from jsonschema import Draft202012Validator, validators

    made: type[Draft202012Validator] = validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator,
        type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
    )
    return made


@cache
def _validators(catalog: Catalog) -> dict[str, Draft202012Validator]:
    # Without `$schema`: jsonschema picks the validator of a `$ref`erenced schema by its
    # `$schema`, which would be the stock draft 2020-12 one, not strict_validator().
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    schemas = {
        name: {k: v for k, v in s.items() if k != "$schema"}
        for name, s in all_schemas(catalog).items()
    }
    registry: Registry[Any] = Registry().with_resources(
        (BASE + name, Resource.from_contents(s, default_specification=DRAFT202012))
        for name, s in schemas.items()
    )
    return {
        kind: strict_validator()(schemas[name], registry=registry)
        for kind, name in KIND_FILES.items()
    }


def validator_for(kind: str, catalog: Catalog | None = None) -> Draft202012Validator:
    return _validators(catalog or load_catalog())[kind]


# -- the fast path ------------------------------------------------------------------------
# jsonschema costs ~0.1-2 ms per document; almost every document of a real fleet is valid.
# `checker_for` compiles the same schemas into plain closures that only answer "valid?".
# A document they accept is certainly valid; anything else goes through jsonschema, which
# also produces the located messages. So the answer can only ever be slower, never
# different: the closures are conservative (a keyword they do not know makes the whole
# schema fall back; a float where an integer is expected is left to jsonschema).
Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "title", "description", "default"})
_TYPE_TESTS: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class Unsupported(Exception):
    """The schema uses a keyword the fast path does not implement."""


def _same(a: Any, b: Any) -> bool:
    """JSON equality for enum members, strict about bool versus int (and conservative)."""
    for t in (bool, str, type(None)):
        if isinstance(a, t) or isinstance(b, t):
            return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return False


class _Compiler:
    def __init__(self, schemas: Mapping[str, Mapping[str, Any]]) -> None:
        self.schemas = schemas
        self.done: dict[tuple[str, str], Check] = {}

    def ref(self, base: str, ref: str) -> Check:
        doc, _, pointer = ref.partition("#")
        doc = doc or base
        key = (doc, pointer)
        if key not in self.done:
            node: Any = self.schemas[doc]
            for part in [p for p in pointer.split("/") if p]:
                node = node[part]
            # Late binding: a schema may refer to itself (not ours today, but cheap to allow).
            self.done[key] = lambda v: False
            check = self.compile(node, doc)
            self.done[key] = check
        cell = self.done
        return lambda v: cell[key](v)

    def compile(self, schema: Any, base: str) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, Mapping):
            raise Unsupported(repr(schema))
        unknown = set(schema) - _ANNOTATIONS - _KEYWORDS
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        checks: list[Check] = []
        if "$ref" in schema:
            checks.append(self.ref(base, schema["$ref"]))
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            tests = [_TYPE_TESTS[n] for n in names]
            checks.append(lambda v: any(t(v) for t in tests))
        if "enum" in schema:
            allowed = list(schema["enum"])
            checks.append(lambda v: any(_same(v, a) for a in allowed))
        if "pattern" in schema:
            rx = re.compile(schema["pattern"])
            checks.append(lambda v: not isinstance(v, str) or rx.search(v) is not None)
        if "minLength" in schema:
            lo = schema["minLength"]
            checks.append(lambda v: not isinstance(v, str) or len(v) >= lo)
        if "maxLength" in schema:
            hi = schema["maxLength"]
            checks.append(lambda v: not isinstance(v, str) or len(v) <= hi)
        if "minimum" in schema:
            mn = schema["minimum"]
            checks.append(lambda v: not _number(v) or v >= mn)
        if "maximum" in schema:
            mx = schema["maximum"]
            checks.append(lambda v: not _number(v) or v <= mx)
        if "maxItems" in schema:
            mi = schema["maxItems"]
            checks.append(lambda v: not isinstance(v, list) or len(v) <= mi)
        if "minItems" in schema:
            ni = schema["minItems"]
            checks.append(lambda v: not isinstance(v, list) or len(v) >= ni)
        if schema.get("uniqueItems"):
            # Strings only; anything else is left to jsonschema (bool-versus-int subtleties).
            checks.append(
                lambda v: (
                    not isinstance(v, list)
                    or (all(isinstance(x, str) for x in v) and len(set(v)) == len(v))
                )
            )
        if "const" in schema:
            const = schema["const"]
            checks.append(lambda v: _same(v, const))
        if "oneOf" in schema:
            checks.append(self._one_of(schema["oneOf"], base))
        if "items" in schema:
            item = self.compile(schema["items"], base)
            checks.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
        if "required" in schema:
            req = tuple(schema["required"])
            checks.append(lambda v: not isinstance(v, dict) or all(k in v for k in req))
        if "propertyNames" in schema:
            names_ok = self.compile(schema["propertyNames"], base)
            checks.append(lambda v: not isinstance(v, dict) or all(names_ok(k) for k in v))
        if {"properties", "patternProperties", "additionalProperties"} & set(schema):
            checks.append(self._object(schema, base))
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(c(v) for c in checks)

    def _one_of(self, branches: list[Any], base: str) -> Check:
        # The fast checks may say "no" where jsonschema says "yes", so "exactly one branch
        # passes" cannot be decided with them in general. With branches whose types
        # exclude each other, at most one can pass and oneOf is anyOf, which is safe.
        seen: set[str] = set()
        for b in branches:
            t = b.get("type") if isinstance(b, Mapping) else None
            names = set(t if isinstance(t, list) else [t]) if t is not None else set()
            if not names or None in names:
                raise Unsupported("oneOf without a type in every branch")
            if "integer" in names or "number" in names:
                names |= {"integer", "number"}
            if names & seen:
                raise Unsupported("oneOf with branches of overlapping types")
            seen |= names
        checks = [self.compile(b, base) for b in branches]
        return lambda v: any(c(v) for c in checks)

    def _object(self, schema: Mapping[str, Any], base: str) -> Check:
        props = {k: self.compile(s, base) for k, s in schema.get("properties", {}).items()}
        patterns = [
            (re.compile(p), self.compile(s, base))
            for p, s in schema.get("patternProperties", {}).items()
        ]
        extra_schema = schema.get("additionalProperties", True)
        extra = self.compile(extra_schema, base)

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, x in v.items():
                matched = False
                if k in props:
                    matched = True
                    if not props[k](x):
                        return False
                for rx, c in patterns:
                    if rx.search(k):
                        matched = True
                        if not c(x):
                            return False
                if not matched and not extra(x):
                    return False
            return True

        return check


_KEYWORDS = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "maxItems",
        "minItems",
        "uniqueItems",
        "const",
        "oneOf",
        "items",
        "required",
        "propertyNames",
        "properties",
        "patternProperties",
        "additionalProperties",
    }
)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# By catalog digest: hashing a Catalog (a tuple of dataclasses) per document costs more
# than the check itself.
_CHECKERS: dict[str, dict[str, Check | None]] = {}


def _checkers(catalog: Catalog) -> dict[str, Check | None]:
    found = _CHECKERS.get(catalog.digest)
    if found is None:
        found = _CHECKERS[catalog.digest] = _compile_checkers(catalog)
    return found


def _compile_checkers(catalog: Catalog) -> dict[str, Check | None]:
    schemas = all_schemas(catalog)
    compiler = _Compiler(schemas)
    out: dict[str, Check | None] = {}
    for kind, name in KIND_FILES.items():
        try:
            out[kind] = compiler.compile(schemas[name], name)
        except (Unsupported, KeyError):
            out[kind] = None
    return out


def checker_for(kind: str, catalog: Catalog | None = None) -> Check | None:
    """A fast "certainly valid?" test for documents of `kind`, or None (use jsonschema)."""
    return _checkers(catalog or load_catalog())[kind]


# -- list bounds, before the walk -------------------------------------------------------------
# jsonschema checks every item of a list before (or besides) its `maxItems`: a 990,000-item
# `lines:` (7 MB, within the reading limits; git packs it to 16 KB) costs it ~30 s and
# ~600 MB. `bounds_for` says, from the schemas themselves, where a list has a `maxItems`,
# so that validation can report an overlong list by its length and look at its first
# `maxItems` items only.
@dataclass(frozen=True)
class Bounds:
    max_items: int | None = None
    properties: Mapping[str, Bounds] = field(default_factory=dict)
    items: Bounds | None = None

    def empty(self) -> bool:
        return self.max_items is None and not self.properties and self.items is None


def _bounds(schemas: Mapping[str, Any], schema: Any, base: str, seen: frozenset[str]) -> Bounds:
    if not isinstance(schema, Mapping):
        return Bounds()
    ref = schema.get("$ref")
    if isinstance(ref, str):
        doc, _, pointer = ref.partition("#")
        doc = doc or base
        # Only whole-document references (all of ours); a cycle stops where it closes.
        if not pointer.strip("/") and doc in schemas and doc not in seen:
            return _bounds(schemas, schemas[doc], doc, seen | {doc})
        return Bounds()
    limit = schema.get("maxItems")
    props: dict[str, Bounds] = {}
    for key, sub in (schema.get("properties") or {}).items():
        found = _bounds(schemas, sub, base, seen)
        if not found.empty():
            props[key] = found
    items = _bounds(schemas, schema.get("items"), base, seen)
    return Bounds(
        limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        props,
        None if items.empty() else items,
    )


_BOUNDS: dict[str, dict[str, Bounds]] = {}


def bounds_for(kind: str, catalog: Catalog | None = None) -> Bounds:
    """Where the schema of `kind` bounds a list's length (`maxItems`), by property path."""
    catalog = catalog or load_catalog()
    found = _BOUNDS.get(catalog.digest)
    if found is None:
        schemas = all_schemas(catalog)
        found = _BOUNDS[catalog.digest] = {
            kind: _bounds(schemas, schemas[name], name, frozenset({name}))
            for kind, name in KIND_FILES.items()
        }
    return found[kind]


def within_bounds(
    bounds: Bounds, value: Any, path: tuple[str | int, ...] = ()
) -> tuple[Any, list[tuple[tuple[str | int, ...], int, int]]]:
    """`value` with every list longer than its `maxItems` cut to that many items (the
    value itself if none is), and where each cut list was: (path, length, maxItems).
    Looks only at the places `bounds` names, and at no item past a list's bound."""
    cut: list[tuple[tuple[str | int, ...], int, int]] = []
    return _within(bounds, value, path, cut), cut


def _within(
    bounds: Bounds,
    value: Any,
    path: tuple[str | int, ...],
    cut: list[tuple[tuple[str | int, ...], int, int]],
) -> Any:
    if isinstance(value, list):
        if bounds.max_items is not None and len(value) > bounds.max_items:
            cut.append((path, len(value), bounds.max_items))
            value = value[: bounds.max_items]
        if bounds.items is not None:
            new = [_within(bounds.items, x, (*path, i), cut) for i, x in enumerate(value)]
            if any(a is not b for a, b in zip(new, value, strict=True)):
                return new
        return value
    if isinstance(value, dict) and bounds.properties:
        changed = {}
        for key, sub in bounds.properties.items():
            if key in value:
                new = _within(sub, value[key], (*path, key), cut)
                if new is not value[key]:
                    changed[key] = new
        if changed:
            return {**value, **changed}
    return value
