"""Schema and semantic validation: documents → every problem at once, each located.

Schema errors of jsonschema are mapped back to the YAML node they concern and rewritten
into messages that say what to do; semantic checks are rules (gitprov/rules/).
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from gitprov.catalog import LINE_PREFIX, Catalog, load_catalog
from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE, SECRETS, Documents
from gitprov.macros import normalise_mac
from gitprov.parallel import can_fork, forked_map, parts, usable_cpus
from gitprov.rule_url import redact_text
from gitprov.rules import (
    CloseNames,
    DocContext,
    HistoryFloor,
    RuleContext,
    document_key,
    modules,
    run_rules,
)
from gitprov.rules._facts import Facts
from gitprov.schemas import bounds_for, checker_for, validator_for, within_bounds
from gitprov.yamldoc import Document, SecretRef, leaves

if TYPE_CHECKING:
    from jsonschema import ValidationError

SCHEMA = "GP010"
UNKNOWN_KEY = "GP011"
MISSING_KEY = "GP012"
QUOTE = "GP013"


class Options(NamedTuple):
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


# A message shows this much of a value: a hostile file's 10 MB value would otherwise be
# a 10 MB line of the CI log (or of the annotation, or the JSON output).
SHOWN_CHARS = 100


def _shown_value(value: Any) -> str:
    """A value as a message shows it: a secret as `!secret NAME` (its name, never its
    value), a long string cut with its length said."""
    if isinstance(value, SecretRef):
        return f"!secret {value.name}"[:SHOWN_CHARS]
    if isinstance(value, str):
        shown = redact_text(value)  # (a URL's password, a rule's --key)
        if len(shown) > SHOWN_CHARS:
            return f"{shown[:SHOWN_CHARS]!r}… ({len(value):,} characters)"
        return repr(shown)
    return repr(value)


def _types(schema_type: Any) -> list[str]:
    names = schema_type if isinstance(schema_type, list) else [schema_type]
    return [n for n in names if n != "null"]


def _schema_problem(
    kind: str, doc: Document, err: ValidationError, catalog: Catalog, closest: CloseNames
) -> list[Problem]:
    path = tuple(err.absolute_path)
    where = ".".join(str(p) for p in path) or "the document"
    line, col = doc.pos(path)

    def here(code: str, message: str, hint: str = "") -> Problem:
        return error(doc.path, line, col, code, message, hint)

    kw = err.validator
    inst: Any = err.instance
    schema: dict[str, Any] = dict(err.schema) if isinstance(err.schema, dict) else {}
    if kind == SECRETS and path == ("secrets",) and kw == "pattern" and isinstance(inst, str):
        # A name, not a value: device files name it in `!secret NAME`. (propertyNames
        # reports the key at its object's path: located here at the key itself.)
        kline, kcol = doc.pos((*path, inst), key=True)
        return [
            error(
                doc.path,
                kline,
                kcol,
                SCHEMA,
                f"secrets: {_shown_value(inst)} cannot be a secret's name",
                "use 1-64 letters, digits, '_', '.' or '-' (and the same name in the "
                "`!secret NAME` that reads it)",
            )
        ]
    if kind == SECRETS and path and path[0] in ("public_key", "secrets") and kw != "required":
        # A value of secrets.yaml that is not what it should be may be a private key
        # pasted as public_key, or a password pasted where its sealed text belongs.
        return [
            here(
                SCHEMA,
                f"{where}: not a valid value (not shown: it may be a secret)",
                "public_key is the gitprov-pk-… key, each secret a v1:… value written by "
                "`gitprov secrets set NAME`; a private key or a password pasted here is in "
                "git history now: change it",
            )
        ]
    if _is_secret_path(path, catalog) and kw not in ("additionalProperties", "required"):
        # Never repeat a secret, not even a malformed one, in a message or a CI log.
        return [
            here(
                SCHEMA,
                f"{where}: not a valid value (not shown: it is a secret)",
                "write it as !secret NAME (see `gitprov secrets set`)",
            )
        ]
    if kw == "additionalProperties" and isinstance(inst, dict):
        properties = schema.get("properties", {})
        known = sorted(properties)
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        out = []
        for key in inst:
            if key in properties or any(p.search(key) for p in patterns):
                continue
            kline, kcol = doc.pos((*path, key), key=True)
            hint = _param_key_hint(path, key, catalog, closest)
            if hint is None:
                close = closest(key, known) if known else None
                hint = (
                    f"did you mean {close!r}?"
                    if close
                    else f"allowed here: {', '.join(known[:12])}"
                    + (" …" if len(known) > 12 else "")
                )
            out.append(error(doc.path, kline, kcol, UNKNOWN_KEY, f"unknown key {key!r}", hint))
            if len(out) > SCHEMA_ERRORS_SHOWN:
                break  # _document_problems shows no more (and says so)
        return out
    if kw == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return [
            here(
                MISSING_KEY,
                f"missing required key {missing!r}",
                f"add `{missing}:` to {where if path else 'the file'}",
            )
        ]
    if kw == "type":
        expected = " or ".join(_types(err.validator_value))
        raw = doc.raw.get(path)
        if raw == "" and inst is None:
            # `model:` with nothing after it: nothing was written, so nothing to quote
            return [
                here(
                    QUOTE,
                    f"{where}: no value (YAML reads a key with nothing after it as null)",
                    f"write the value after `{path[-1]}:`" if path else "write the value",
                )
            ]
        if raw is not None and "string" in _types(err.validator_value):
            return [
                here(
                    QUOTE,
                    f"{where}: expected a string, but unquoted {raw} is read as {_describe(inst)}",
                    f"quote it: {_quoted(path, raw)}",
                )
            ]
        return [
            here(
                SCHEMA,
                f"{where}: expected {expected}, got {_describe(inst)}",
                _type_hint(expected),
            )
        ]
    if kw == "enum":
        # (as YAML writes them: true, not Python's True)
        allowed = ", ".join(
            json.dumps(v, ensure_ascii=False) for v in schema.get("enum", []) if v is not None
        )
        raw = doc.raw.get(path)
        hint = f"use one of: {allowed}"
        if raw is not None and isinstance(inst, bool | int | float):
            hint += f" (unquoted {raw} is read as {_describe(inst)}; quote it if you meant text)"
        return [here(SCHEMA, f"{where}: {_describe(inst)} is not allowed", hint)]
    if kw in ("oneOf", "anyOf") and err.context:
        # "is not valid under any of the given schemas" says nothing. An alternative of
        # the value's own type failed on its form, its length, …: that one says what is
        # wrong; every alternative is of another type: the types, all of them.
        from jsonschema.exceptions import best_match

        formed = [e for e in err.context if e.validator != "type"]
        if formed:
            closest_error = best_match(formed)
            if closest_error is not None and closest_error.validator not in ("oneOf", "anyOf"):
                return _schema_problem(kind, doc, closest_error, catalog, closest)
        else:
            expected = " or ".join(
                dict.fromkeys(t for e in err.context for t in _types(e.validator_value))
            )
            return [
                here(
                    SCHEMA,
                    f"{where}: expected {expected}, got {_describe(inst)}",
                    _type_hint(expected),
                )
            ]
    said = _keyword_said(err, path, schema)
    if said is not None:
        return [here(SCHEMA, f"{where}: {said[0]}", said[1])]
    return [here(SCHEMA, f"{where}: {err.message}")]


def _keyword_said(
    err: ValidationError, path: tuple[Any, ...], schema: dict[str, Any]
) -> tuple[str, str] | None:
    """What a failed schema keyword says of the value, and what to do, for the keywords
    whose message is the value's and the limit's alone; None for the others."""
    kw, limit = err.validator, err.validator_value
    inst: Any = err.instance
    if kw == "pattern":
        return f"{_shown_value(inst)} has the wrong form", _pattern_hint(path, schema)
    if kw in ("minimum", "maximum"):
        return f"{inst} is out of range", f"use a value {'>=' if kw == 'minimum' else '<='} {limit}"
    if kw == "maxLength":
        return f"{len(inst)} characters is too long", f"use at most {limit} characters"
    if kw == "minLength" and isinstance(inst, str):
        short = "empty" if not inst else f"{len(inst)} character(s) is too short"
        return short, f"write at least {limit} character(s), or remove the setting"
    if kw == "maxItems":
        return "too many items", f"use at most {limit}"
    if kw == "propertyNames":
        return err.message, "names may use letters, digits, '.', '_' and '-'"
    if kw == "minItems" and isinstance(inst, list):
        few = "an empty list" if not inst else f"{len(inst)} item(s)"
        return few, f"give at least {limit}, or remove the setting"
    if kw == "uniqueItems" and isinstance(inst, list):
        twice = next((x for i, x in enumerate(inst) if x in inst[:i]), None)
        what = _shown_value(twice) if isinstance(twice, str | int) else "an item"
        return f"{what} is listed twice", "list each once"
    return None


def _is_secret_path(path: tuple[Any, ...], catalog: Catalog) -> bool:
    if path in (("key",), ("encryption", "master_key"), ("encryption", "previous", "master_key")):
        return True
    if len(path) == 2 and path[0] == "params" and isinstance(path[1], str):
        p = catalog.lookup(path[1])
        return p is not None and p.secret
    if len(path) == 3 and path[0] == "lines" and isinstance(path[2], str):
        p = catalog.lookup_line(path[2])
        return p is not None and p.secret
    return False


def _param_key_hint(
    path: tuple[Any, ...], key: str, catalog: Catalog, closest: CloseNames
) -> str | None:
    """A better hint for an unknown key inside `params:` or a `lines:` item."""
    in_params = bool(path) and path[-1] == "params"
    in_line = len(path) >= 2 and path[-2] == "lines"
    if not (in_params or in_line):
        return None
    if in_params:
        short = key.removeprefix(LINE_PREFIX)
        if catalog.lookup_line(short) is not None:
            return f"{short} is a per-line parameter: write it under `lines:` (one item per line)"
        if key.upper().startswith("DBID_"):
            return "raw keys are written in capitals: DBID_NAME (letters, digits, _)"
    if in_line:
        p = catalog.lookup(LINE_PREFIX + key) or catalog.lookup(key)
        if p is not None and not p.per_line:
            return f"{p.name} is not per-line: write it under `params:`"
    close = closest(
        key, lambda: sorted(catalog.line_names() if in_line else catalog.global_names())
    )
    if close:
        return f"did you mean {close!r}? (raw DBID_* keys are accepted too)"
    return "not a parameter name: see `gitprov params`, or write a raw DBID_* key"


def _type_hint(expected: str) -> str:
    if " or " in expected and "array" not in expected and "object" not in expected:
        # (a raw DBID_* key takes any scalar: "write true or false" sent a list's author
        # looking for a boolean)
        return f"write one value ({expected}), not a list or a mapping"
    if "boolean" in expected:
        return "write true or false"
    if "integer" in expected:
        return "write a whole number without quotes"
    if "object" in expected:
        return "write a mapping (key: value lines indented below)"
    if expected == "string":
        return "write one text value (quoted when it could read as a number, a date or true)"
    if expected == "number":
        return "write a number without quotes, such as 5 or 0.5"
    if expected == "string or array":
        return "write a quoted text, or a list of them (lines starting with '- ')"
    if "array" in expected:
        return "write a list (lines starting with '- ')"
    return f"write {expected}"


def _pattern_hint(path: tuple[Any, ...], schema: dict[str, Any]) -> str:
    last = path[-1] if path else ""
    if last == "mac":
        return "write a MAC like \"00:21:f2:01:1b:19\" (quoted; ':' '-' '.' or no separators)"
    desc = schema.get("description", "")
    return desc or f"it must match {schema.get('pattern')}"


# A whole inventory is checked over forked workers from this many documents on (below,
# forking costs more than it saves); in parts of at least so many documents.
# Schema errors of one document that are shown (each costs ~50 µs and a few log lines);
# past them the rest are said to exist, not sought.
SCHEMA_ERRORS_SHOWN = 1000
CHECK_PARALLEL_MIN = 2000
CHECK_CHUNK_MIN = 250


class SchemaCache:
    """Per-file results by (kind, path, blob id, catalog): schema problems and the problems
    of single-document rules; and the facts rules keep between validations (`Facts`), so
    that validating a commit after its parent costs what the commit changed. Delete it
    any time."""

    def __init__(self, workers: int | None = None) -> None:
        self._hits: dict[tuple[str, str, str, str], tuple[Problem, ...]] = {}
        self._rules: dict[tuple[str, ...], tuple[Problem, ...]] = {}
        self.facts = Facts()
        # Processes that check a whole inventory (see `check_ahead`): 1 keeps it here.
        self.workers = usable_cpus() if workers is None else workers

    def check_ahead(
        self, docs: Documents, catalog: Catalog, strict: bool, extra: Iterable[Problem]
    ) -> None:
        """The schema problems and single-document rule problems of every document, over
        forked workers, when the rules' indexes are about to be built from scratch (a
        fresh process, no kept snapshot) over enough documents to pay for it: the
        validation that follows finds each here. The same functions on the same
        documents: the answers are the ones this process would give."""
        if self.workers < 2 or not can_fork() or self.facts.has("schema"):
            return
        todo = [
            (kind, doc)
            for kind in docs.kinds()
            for doc in docs.of(kind)
            if _schema_key(kind, doc, catalog) not in self._hits
        ]
        if len(todo) < CHECK_PARALLEL_MIN:
            return
        # What the workers would each make again: the checkers, the rule modules.
        for kind in {kind for kind, _ in todo}:
            checker_for(kind, catalog)
        per_document = [m for m in modules() if hasattr(m, "check_document")]
        read_errors: dict[str, list[tuple[int, int]]] = {}
        for p in extra:
            if p.is_error:
                read_errors.setdefault(p.file, []).append((p.line, p.col))

        def job(part: Sequence[int]) -> list[tuple[tuple[Problem, ...], tuple[Problem, ...]]]:
            out = []
            for i in part:
                kind, doc = todo[i]
                schema = tuple(_document_problems(kind, doc, catalog))
                # As run_rules flags them: the errors of reading and of the schema, by place.
                flagged = frozenset(
                    (
                        *read_errors.get(doc.path, ()),
                        *((p.line, p.col) for p in schema if p.is_error),
                    )
                )
                dctx = DocContext(doc, kind, catalog, strict, flagged)
                out.append((schema, tuple(p for m in per_document for p in m.check_document(dctx))))
            return out

        chunks = parts(len(todo), self.workers, CHECK_CHUNK_MIN)
        for part, results in zip(chunks, forked_map(job, chunks, self.workers), strict=True):
            for i, (schema, rules) in zip(part, results, strict=True):
                kind, doc = todo[i]
                self._hits[_schema_key(kind, doc, catalog)] = schema
                self._rules[document_key(kind, doc, catalog, strict)] = rules

    def rule_problems(
        self, key: tuple[str, ...], compute: Callable[[], list[Problem]]
    ) -> tuple[Problem, ...]:
        hit = self._rules.get(key)
        if hit is None:
            hit = tuple(compute())
            self._rules[key] = hit
        return hit

    def problems(self, kind: str, doc: Document, catalog: Catalog) -> tuple[Problem, ...]:
        key = _schema_key(kind, doc, catalog)
        hit = self._hits.get(key)
        if hit is None:
            hit = tuple(_document_problems(kind, doc, catalog))
            self._hits[key] = hit
        return hit


def _schema_key(kind: str, doc: Document, catalog: Catalog) -> tuple[str, str, str, str]:
    """What a document's schema problems are kept under in SchemaCache."""
    return (kind, doc.path, doc.oid, catalog.digest)


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
    fast = checker_for(kind, catalog)
    data: Any = doc.data
    cut: list[tuple[tuple[str | int, ...], int, int]] = []
    passed = fast is not None and fast(data)
    if not passed:
        # A list past its bound is said by its length, and the schema checks its first
        # `maxItems` items only: jsonschema would otherwise walk every item (~35 µs each).
        # (A document the fast check passes has none: it tests maxItems before items.)
        data, cut = within_bounds(bounds_for(kind, catalog), doc.data)
        passed = bool(cut) and fast is not None and fast(data)
    for path, length, limit in cut:
        line, col = doc.pos(path)
        where = ".".join(str(p) for p in path)
        out.append(
            error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"{where}: too many items ({length:,})",
                f"use at most {limit} (the items after the first {limit} were not checked)",
            )
        )
    if not passed:
        closest = CloseNames()
        # Lazily, and no further than SCHEMA_ERRORS_SHOWN: a file of 500,000 wrong values
        # would otherwise cost 500,000 located problems (and as many log lines).
        found = validator_for(kind, catalog).iter_errors(data)
        errors = list(itertools.islice(found, SCHEMA_ERRORS_SHOWN + 1))
        more = errors.pop() if len(errors) > SCHEMA_ERRORS_SHOWN else None
        # A value of the wrong type is also outside an enum of that place: one problem
        # (the type's, which says what to write) is enough for one value.
        typed = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
        said: list[Problem] = []
        for err in errors:
            if err.validator == "enum" and tuple(err.absolute_path) in typed:
                continue
            said.extend(_schema_problem(kind, doc, err, catalog, closest))
            if len(said) > SCHEMA_ERRORS_SHOWN:
                break  # (one error may say many: each unknown key of a mapping)
        if len(said) > SCHEMA_ERRORS_SHOWN or more is not None:
            line, col = (
                (said[SCHEMA_ERRORS_SHOWN].line, said[SCHEMA_ERRORS_SHOWN].col)
                if len(said) > SCHEMA_ERRORS_SHOWN
                else doc.pos(tuple(more.absolute_path) if more is not None else ())
            )
            del said[SCHEMA_ERRORS_SHOWN:]
            said.append(
                error(
                    doc.path,
                    line,
                    col,
                    SCHEMA,
                    f"more schema errors from here on: this file's check stopped after "
                    f"{SCHEMA_ERRORS_SHOWN}",
                    "fix the errors shown and validate again",
                )
            )
        out += said
    taken = {(p.line, p.col) for p in out}
    out += [p for p in _not_finite(doc) if (p.line, p.col) not in taken]
    out += [p for p in _same_parameter_twice(doc, data, catalog) if (p.line, p.col) not in taken]
    unusable = _unusable_mac(doc) if kind == DEVICE and isinstance(doc.data, dict) else None
    if unusable is not None and (unusable.line, unusable.col) not in taken:
        out.append(unusable)
    if kind == SECRETS:
        taken = {(p.line, p.col) for p in out}
        out += [p for p in _sealed_too_long(doc) if (p.line, p.col) not in taken]
    else:
        taken = {(p.line, p.col) for p in out}
        for path, value in _secret_refs(kind, data):
            if not _secret_place(path):
                line, col = doc.pos(path)
                if (line, col) not in taken:
                    out.append(_misplaced_secret(doc, path, value))
    if doc.ambiguous:
        taken = {(p.line, p.col) for p in out}
        for path, raw in doc.ambiguous.items():
            line, col = doc.pos(path)
            if (line, col) not in taken:
                out.append(_ambiguous_problem(doc, path, raw, catalog))
    return out


def _same_parameter_twice(doc: Document, data: Any, catalog: Catalog) -> Iterator[Problem]:
    """GP004 for a parameter set twice in one mapping under its two names (`sip.server`
    and `DBID_WEB_SIP_SERVER`, `account` and `DBID_SIP_ACCOUNT` in one line): YAML keeps
    both keys, and one of the values was written, the other dropped without a word.
    (`data` is doc.data with its overlong lists cut, see _document_problems.)"""
    if not isinstance(data, dict):
        return
    blocks: list[tuple[tuple[str | int, ...], Any, Callable[[str], Any]]] = [
        (("params",), data.get("params"), catalog.lookup)
    ]
    lines = data.get("lines")
    if isinstance(lines, list):
        blocks += [(("lines", i), item, catalog.lookup_line) for i, item in enumerate(lines)]
    for where, block, lookup in blocks:
        # (two readable names never share a key: a clash needs a raw key, rarely written)
        if not isinstance(block, dict) or not any(
            isinstance(k, str) and k.startswith("DBID_") for k in block
        ):
            continue
        first: dict[str, str] = {}
        for name in block:
            if not isinstance(name, str):
                continue
            param = lookup(name)
            key = param.key if param is not None else name
            if key not in first:
                first[key] = name
                continue
            line, col = doc.pos((*where, name), key=True)
            other_line, _ = doc.pos((*where, first[key]), key=True)
            yield error(
                doc.path,
                line,
                col,
                "GP004",
                f"{'.'.join(map(str, where))}: {name!r} and {first[key]!r} (line {other_line}) "
                f"are one parameter, {key}: one of the two values would be dropped",
                "keep one of them",
            )


def _not_finite(doc: Document) -> Iterator[Problem]:
    """GP010 for each .nan or .inf: numbers to YAML and to jsonschema (NaN passes every
    minimum and maximum), while no setting of gitprov's or of a device's is one. (doc.raw
    holds the text of every scalar that is not a string: a few per file.)"""
    for path, raw in doc.raw.items():
        if raw[-3:].lower() in ("nan", "inf") and raw.lstrip("+-")[:1] == ".":
            line, col = doc.pos(path)
            yield error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"{'.'.join(map(str, path)) or 'the document'}: {raw} is not a number "
                "gitprov can use",
                "write a finite number (a quoted value if you mean text)",
            )


# A sealed text shorter than this seals less than secrets.VALUE_MAX: not looked at
# closer (gitprov.secrets imports the cryptography a validation never needs).
_SEALED_LONG = 2**20


def _sealed_too_long(doc: Document) -> Iterator[Problem]:
    """GP010 for a sealed value longer than a build takes (secrets.VALUE_MAX): its
    length says so without the private key, which only the publisher holds. Without it,
    `validate` in CI passed what every publish then refused."""
    data = doc.data
    sealed = data.get("secrets") if isinstance(data, dict) else None
    if not isinstance(sealed, dict):
        return
    for name, value in sealed.items():
        if not isinstance(value, str) or len(value) <= _SEALED_LONG:
            continue
        from gitprov.secrets import VALUE_MAX, sealed_size

        if sealed_size(value) > VALUE_MAX:
            line, col = doc.pos(("secrets", name))
            yield error(
                doc.path,
                line,
                col,
                SCHEMA,
                f"secrets.{name}: seals a value of more than {VALUE_MAX // 2**20} MiB, "
                "longer than any device setting (not shown: it is a secret)",
                "seal the value the device needs: `gitprov secrets set NAME`",
            )


def _unusable_mac(doc: Document) -> Problem | None:
    """GP010 for a MAC of the right form that no device has: a group (multicast) address,
    the broadcast address among them, or all zeros. A typo of one digit in the first octet
    makes one; its file would be published under a name no device ever asks for."""
    raw = doc.data.get("mac")
    mac = normalise_mac(raw) if isinstance(raw, str) else None
    if mac is None:
        return None
    if mac == "000000000000":
        what = "all zeros"
    elif int(mac[1], 16) & 1:
        what = (
            "the broadcast address"
            if mac == "ffffffffffff"
            else "a group (multicast) address: the lowest bit of its first octet is set"
        )
    else:
        return None
    line, col = doc.pos(("mac",))
    return error(
        doc.path,
        line,
        col,
        SCHEMA,
        f"mac: {_shown_value(raw)} is {what}; no device has it",
        "copy the MAC from the device's label or its web page (the first octet of a "
        "device's MAC is even, e.g. 00:21:f2:01:1b:19)",
    )


# Where `!secret NAME` is read as a secret (its value compiled into a file, or a key):
# anywhere else it would be taken as the text NAME (a serial, a description, a setting).
_SECRET_SETTINGS = frozenset(
    {
        ("key",),
        ("previous_key",),
        ("encryption", "master_key"),
        ("encryption", "previous", "master_key"),
    }
)


def _secret_place(path: tuple[Any, ...]) -> bool:
    if path and path[0] == "params":
        return len(path) == 2
    if path and path[0] == "lines":
        return len(path) == 3
    return path in _SECRET_SETTINGS


def _secret_refs(kind: str, data: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], SecretRef]]:
    """Each `!secret` of a document with its path. Of a device file only the top-level
    values are looked at (everything below `params:` and `lines:` may be a secret): a
    fleet's worth of files is validated, and this is per file."""
    if kind == DEVICE:
        for key, value in data.items():
            if isinstance(value, SecretRef):
                yield (key,), value
        return
    for path, value in leaves(data):
        if isinstance(value, SecretRef):
            yield path, value


def _misplaced_secret(doc: Document, path: tuple[Any, ...], value: SecretRef) -> Problem:
    line, col = doc.pos(path)
    where = ".".join(str(p) for p in path)
    return error(
        doc.path,
        line,
        col,
        SCHEMA,
        f"{where}: !secret {value.name} cannot go here: {where} is not a secret, and "
        f"would be read as the text {value.name!r}",
        "write the value itself; !secret is for passwords and keys (a parameter, a line "
        "setting, key, previous_key, encryption.master_key)",
    )


def _quoted(path: tuple[Any, ...], raw: str) -> str:
    """How the value looks quoted, as the user would write it."""
    if not path or isinstance(path[-1], int):
        return f'"{raw}"'
    return f'{path[-1]}: "{raw}"'


# YAML 1.1's sexagesimal integer (yaml.org/type/int.html): 1.1 readers such as PyYAML
# load it as a number, 1.2 readers (and gitprov) as a string.
_BASE60 = re.compile(r"[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+")


def _reading(raw: str) -> str:
    if raw in ("y", "Y", "n", "N"):
        return "a boolean (YAML 1.1 readers such as PyYAML: y/n are yes/no)"
    if _BASE60.fullmatch(raw):
        value = 0
        for part in raw.lstrip("+-").replace("_", "").split(":"):
            value = value * 60 + int(part)
        return (
            f"the number {'-' if raw.startswith('-') else ''}{value} (YAML 1.1 readers such as "
            "PyYAML: base 60; YAML 1.2 readers keep the string)"
        )
    if ":" in raw:
        return (
            "a base-60 number if its digits were a little different: YAML 1.1 reads "
            "10:21:52:01:13:19 as 8059396399 (every group after the first below 60, the "
            "first not starting with 0); this one stays a string only by luck"
        )
    return "a number (YAML 1.2 readers, and 1.1 ones)"


def _ambiguous_problem(doc: Document, path: tuple[Any, ...], raw: str, cat: Catalog) -> Problem:
    line, col = doc.pos(path)
    where = ".".join(str(p) for p in path) or "the document"
    shown = "this value" if _is_secret_path(path, cat) else f"unquoted {raw}"
    quoted = "the value" if _is_secret_path(path, cat) else _quoted(path, raw)
    return error(
        doc.path,
        line,
        col,
        QUOTE,
        f"{where}: {shown} is a string only by luck: other YAML tools read it as {_reading(raw)}",
        f"quote it: {quoted}",
    )


def schema_problems(
    docs: Documents, catalog: Catalog, cache: SchemaCache | None = None
) -> list[Problem]:
    cache = cache or SchemaCache()

    def problems(kind: str, doc: Document) -> Iterator[tuple[str, tuple[Problem, ...]]]:
        found = cache.problems(kind, doc, catalog)
        if found:
            yield doc.path, found

    index = cache.facts.index(docs, "schema", None, catalog.digest, problems)
    return [p for found in index.all_items() for p in found]


def validate(
    docs: Documents,
    catalog: Catalog | None = None,
    options: Options = Options(),
    history_floor: HistoryFloor | None = None,
    extra: Iterable[Problem] = (),
    cache: SchemaCache | None = None,
) -> list[Problem]:
    """Every problem of the inventory, sorted and deduplicated."""
    catalog = catalog or load_catalog()
    cache = cache or SchemaCache()
    problems = list(extra)
    cache.check_ahead(docs, catalog, options.strict, problems)
    problems += schema_problems(docs, catalog, cache)
    errors = [p for p in problems if p.is_error]
    ctx = RuleContext(
        docs,
        catalog,
        options.strict,
        history_floor,
        frozenset(p.file for p in errors),
        frozenset((p.file, p.line, p.col) for p in errors),
        cache.facts,
    )
    problems += run_rules(ctx, cache)
    cache.facts.settle()
    return sorted(set(problems))
