"""Schema and semantic validation: documents → every problem at once, each located.

Schema errors of jsonschema are mapped back to the YAML node they concern and rewritten
into messages that say what to do; semantic checks are rules (gitprov/rules/).
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import ValidationError

from gitprov.catalog import Catalog, load_catalog
from gitprov.errors import Problem, error
from gitprov.inventory import Documents
from gitprov.rules import RuleContext, run_rules
from gitprov.schemas import validator_for
from gitprov.yamldoc import Document, SecretRef

SCHEMA = "GP010"
UNKNOWN_KEY = "GP011"
MISSING_KEY = "GP012"
QUOTE = "GP013"


@dataclass(frozen=True)
class Options:
    strict: bool = False


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, SecretRef):
        return f"the secret {value.name}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _types(schema_type: Any) -> list[str]:
    names = schema_type if isinstance(schema_type, list) else [schema_type]
    return [n for n in names if n != "null"]


def _schema_problem(doc: Document, err: ValidationError) -> list[Problem]:
    path = tuple(err.absolute_path)
    where = ".".join(str(p) for p in path) or "the document"
    line, col = doc.pos(path)
    kw = err.validator
    inst: Any = err.instance
    schema: dict[str, Any] = dict(err.schema) if isinstance(err.schema, dict) else {}
    if kw == "additionalProperties" and isinstance(inst, dict):
        known = set(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        out = []
        for key in inst:
            if key in known or any(p.search(key) for p in patterns):
                continue
            kline, kcol = doc.pos((*path, key), key=True)
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else (
                    f"allowed here: {', '.join(sorted(known)[:12])}"
                    + (" …" if len(known) > 12 else "")
                )
            )
            if (path and path[-1] in ("params",)) or (len(path) >= 2 and path[-2] == "lines"):
                hint += " (raw DBID_* keys are accepted too)"
            out.append(error(doc.path, kline, kcol, UNKNOWN_KEY, f"unknown key {key!r}", hint))
        return out
    if kw == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return [
            error(
                doc.path,
                line,
                col,
                MISSING_KEY,
                f"missing required key {missing!r}",
                f"add `{missing}:` to {where if path else 'the file'}",
            )
        ]
    if kw == "type":
        expected = " or ".join(_types(err.validator_value))
        raw = doc.raw.get(path)
        if raw is not None and "string" in _types(err.validator_value):
            return [
                error(
                    doc.path,
                    line,
                    col,
                    QUOTE,
                    f"{where}: expected a string, but unquoted {raw} is read as {_describe(inst)}",
                    f'quote it: {path[-1] if path else "value"}: "{raw}"',
                )
            ]
        return [
            error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"{where}: expected {expected}, got {_describe(inst)}",
                _type_hint(expected),
            )
        ]
    if kw == "enum":
        allowed = ", ".join(repr(v) for v in schema.get("enum", []) if v is not None)
        raw = doc.raw.get(path)
        hint = f"use one of: {allowed}"
        if raw is not None and isinstance(inst, bool | int | float):
            hint += f" (unquoted {raw} is read as {_describe(inst)}; quote it if you meant text)"
        return [
            error(doc.path, line, col, SCHEMA, f"{where}: {_describe(inst)} is not allowed", hint)
        ]
    if kw == "pattern":
        return [
            error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"{where}: {inst!r} has the wrong form",
                _pattern_hint(path, schema),
            )
        ]
    if kw in ("minimum", "maximum"):
        return [
            error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"{where}: {inst} is out of range",
                f"use a value {'>=' if kw == 'minimum' else '<='} {err.validator_value}",
            )
        ]
    if kw == "maxLength":
        return [
            error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"{where}: {len(inst)} characters is too long",
                f"use at most {err.validator_value} characters",
            )
        ]
    if kw == "maxItems":
        return [
            error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"{where}: too many items",
                f"use at most {err.validator_value}",
            )
        ]
    if kw == "propertyNames":
        return [
            error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"{where}: {err.message}",
                "names may use letters, digits, '.', '_' and '-'",
            )
        ]
    return [error(doc.path, line, col, SCHEMA, f"{where}: {err.message}")]


def _type_hint(expected: str) -> str:
    if "boolean" in expected:
        return "write true or false"
    if "integer" in expected:
        return "write a whole number without quotes"
    if "object" in expected:
        return "write a mapping (key: value lines indented below)"
    if "array" in expected:
        return "write a list (lines starting with '- ')"
    return f"write {expected}"


def _pattern_hint(path: tuple[Any, ...], schema: dict[str, Any]) -> str:
    last = path[-1] if path else ""
    if last == "mac":
        return "write a MAC like \"00:21:f2:01:1b:19\" (quoted; ':' '-' '.' or no separators)"
    desc = schema.get("description", "")
    return desc or f"it must match {schema.get('pattern')}"


class SchemaCache:
    """Schema problems by (kind, path, blob id): a file is checked once per content."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str, str, str], tuple[Problem, ...]] = {}

    def problems(self, kind: str, doc: Document, catalog: Catalog) -> tuple[Problem, ...]:
        key = (kind, doc.path, doc.oid, catalog.digest)
        hit = self._hits.get(key)
        if hit is None:
            hit = tuple(_document_problems(kind, doc, catalog))
            self._hits[key] = hit
        return hit


def _document_problems(kind: str, doc: Document, catalog: Catalog) -> list[Problem]:
    if not isinstance(doc.data, dict):
        return [
            error(
                doc.path,
                1,
                1,
                SCHEMA,
                "the file must be a YAML mapping",
                "write key: value lines at the top level",
            )
        ]
    out: list[Problem] = []
    for err in validator_for(kind, catalog).iter_errors(doc.data):
        out.extend(_schema_problem(doc, err))
    return out


def schema_problems(
    docs: Documents, catalog: Catalog, cache: SchemaCache | None = None
) -> list[Problem]:
    cache = cache or SchemaCache()
    problems: list[Problem] = []
    for kind, kdocs in docs.by_kind.items():
        for doc in kdocs:
            problems.extend(cache.problems(kind, doc, catalog))
    return problems


def validate(
    docs: Documents,
    catalog: Catalog | None = None,
    options: Options = Options(),
    parent: Documents | None = None,
    extra: Iterable[Problem] = (),
    cache: SchemaCache | None = None,
) -> list[Problem]:
    """Every problem of the inventory, sorted and deduplicated."""
    catalog = catalog or load_catalog()
    problems = list(extra)
    problems += schema_problems(docs, catalog, cache)
    schema_broken = {p.file for p in problems if p.is_error}
    ctx = RuleContext(docs, catalog, options.strict, parent, frozenset(schema_broken))
    problems += run_rules(ctx)
    return sorted(set(problems))
