"""Semantic rules: one module each, a stable code, a docstring with a failing and a passing
example, and this registry. A new check is a new module listed in `RULES`, nothing else.

A rule has one of two shapes:
- `check_document(dctx: DocContext)`: looks at one file only. Its problems are cached by
  the file's blob id, so a new commit re-checks only the files it changed.
- `check(ctx: RuleContext)`: looks across files (duplicates, references, layering).
  What it derives from each file goes into an index (`ctx.index`), which keeps it from
  one validation to the next: checking commit N+1 after commit N re-reads the files the
  commit changed, and the check combines the entries grouped by key (see `_facts`).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from types import ModuleType
from typing import Any, NamedTuple, Protocol, TypeVar

from gitprov.catalog import Catalog
from gitprov.errors import Level, Problem
from gitprov.inventory import (
    DEFAULT_FILE_NAME,
    DEVICE,
    FLEET,
    MODEL,
    PROFILE,
    SECRETS,
    Documents,
    stem,
)
from gitprov.limits import DEFAULT, Limits, of_fleet
from gitprov.macros import device_variables, expand, normalise_mac
from gitprov.rules._facts import Facts, Index
from gitprov.yamldoc import Document, Path_

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Module names under gitprov.rules, in code order.
RULES = (
    "missing_fleet",  # GP100
    "duplicate_mac",  # GP101
    "unknown_model",  # GP102
    "unknown_profile",  # GP103
    "extends_cycle",  # GP104
    "duplicate_account",  # GP105
    "duplicate_path",  # GP106
    "file_name",  # GP107
    "value_injection",  # GP108
    "tab_in_value",  # GP109
    "rule_url",  # GP110
    "unknown_macro",  # GP111
    "device_file_name",  # GP112
    "version_floor",  # GP113
    "unknown_dbid_key",  # GP114
    "unknown_secret",  # GP115
    "unpublished_param",  # GP116
    "managed_param",  # GP117
    "no_key_source",  # GP118
    "demo_key",  # GP119
    "upgrade_https",  # GP120
    "number_spelling",  # GP121
    "too_many_lines",  # GP122
    "wrong_scope",  # GP123
    "plaintext_secret",  # GP124
    "extends_depth",  # GP125
    "binding_key",  # GP126
    "binding_name",  # GP127
    "binding_source",  # GP128
    "bound_value",  # GP129
    "firmware_upgrade",  # GP130
    "key_delivery",  # GP131
    "duplicate_name",  # GP132
    "option66_over_rule",  # GP133
    "unnamable_file",  # GP134
    "option66_model",  # GP301
    "option66_url",  # GP302
)


class Rule(Protocol):
    CODE: str
    NAME: str

    def check(self, ctx: RuleContext) -> Iterator[Problem]: ...


class DocumentRule(Protocol):
    CODE: str
    NAME: str

    def check_document(self, dctx: DocContext) -> Iterator[Problem]: ...


class DocContext(NamedTuple):
    """What a single-document rule may look at: the document, its kind, the catalog."""

    doc: Document
    kind: str
    catalog: Catalog
    strict: bool = False
    flagged: frozenset[tuple[int, int]] = frozenset()  # (line, col) of its schema errors

    def is_flagged(self, path: Path_) -> bool:
        return self.doc.pos(path) in self.flagged

    def params(self) -> Iterator[tuple[str, Any]]:
        params = get(self.doc.data, "params")
        if isinstance(params, dict):
            yield from params.items()

    def line_items(self) -> Iterator[tuple[int, dict[str, Any]]]:
        lines = get(self.doc.data, "lines")
        if isinstance(lines, list):
            for slot, item in enumerate(lines):
                if isinstance(item, dict):
                    yield slot, item


class HistoryFloor(NamedTuple):
    """What GP113 compares `version_floor` with."""

    value: int
    commit: str  # the commit whose version_floor it is ("" if unknown)
    complete: bool = True  # False in a shallow clone: only the parent was seen


@dataclass(frozen=True)
class RuleContext:
    docs: Documents
    catalog: Catalog
    strict: bool = False
    # The highest version_floor of the history before this inventory, and the commit that
    # set it; None when there is no history (a first commit) or it cannot be read.
    history_floor: HistoryFloor | None = None
    schema_broken: frozenset[str] = frozenset()  # files with a schema or parse error
    # (file, line, col) of every schema error, so that a rule about the same node can stay
    # quiet instead of saying the same thing twice.
    flagged: frozenset[tuple[str, int, int]] = frozenset()
    # What earlier validations derived, for `index` and `memo`; a fresh one starts over.
    facts: Facts = field(default_factory=Facts, compare=False, repr=False)

    def index(
        self,
        name: str,
        kinds: tuple[str, ...] | None,
        env: Hashable,
        entries: Callable[[Document], Iterable[tuple[K, V]]],
        depends: Callable[[Document], Hashable] | None = None,
        version: Callable[[Hashable], Hashable] | None = None,
    ) -> Index[K, V]:
        """The entries `entries(doc)` of every document of `kinds` (None: all), grouped
        by key. `env` and the version of `depends(doc)` (see Facts.index) must name
        everything besides the document that entries depend on: only documents that
        changed since the last validation, or whose dependency did, are read again."""
        return self.facts.index(
            self.docs, name, kinds, env, lambda _kind, doc: entries(doc), depends, version
        )

    @cached_property
    def layer_env(self) -> tuple[Hashable, ...]:
        """What a device's layers can depend on besides the device: every fleet, profile
        and model file, and the catalog (for parameter names)."""
        return (
            self.catalog.digest,
            *((d.path, d.oid) for kind in (FLEET, PROFILE, MODEL) for d in self.docs.of(kind)),
        )

    def of(self, kind: str) -> tuple[Document, ...]:
        return self.docs.of(kind)

    @property
    def fleet(self) -> Document | None:
        f = self.docs.of(FLEET)
        return f[0] if f else None

    def names(self, kind: str) -> set[str]:
        return {stem(d.path) for d in self.docs.of(kind)}

    @property
    def devices(self) -> tuple[Document, ...]:
        return self.docs.of(DEVICE)

    @property
    def profiles(self) -> tuple[Document, ...]:
        return self.docs.of(PROFILE)

    @property
    def models(self) -> tuple[Document, ...]:
        return self.docs.of(MODEL)

    @property
    def secrets(self) -> tuple[Document, ...]:
        return self.docs.of(SECRETS)

    @cached_property
    def profile_docs(self) -> dict[str, Document]:
        return {stem(d.path): d for d in self.profiles}

    @cached_property
    def model_docs(self) -> dict[str, Document]:
        return {stem(d.path): d for d in self.models}

    def model_of(self, device: Document) -> Document | None:
        name = get(device.data, "model")
        return self.model_docs.get(name) if isinstance(name, str) else None

    @cached_property
    def limits(self) -> Limits:
        """The limits the fleet settings set (`extends_depth` is the rules' concern)."""
        fleet = self.fleet
        return of_fleet(fleet.data) if fleet is not None else DEFAULT

    @cached_property
    def _chains(self) -> dict[str, tuple[Document, ...]]:
        return {}

    def profile_chain(self, name: str) -> tuple[Document, ...]:
        """A profile and the profiles it extends, the profile first. Unknown names end the
        chain, a loop goes round once (GP103, GP104), and it stops after
        `limits.extends_depth + 1` profiles (GP125). Each profile's chain is resolved once,
        from the chain of its parent: a fleet of long chains costs their length, not its
        square."""
        memo = self._chains
        hit = memo.get(name)
        if hit is not None:
            return hit
        docs = self.profile_docs
        cap = self.limits.extends_depth + 1
        walk: list[str] = []
        at: dict[str, int] = {}
        node: Any = name
        while isinstance(node, str) and node in docs and node not in memo and node not in at:
            at[node] = len(walk)
            walk.append(node)
            node = get(docs[node].data, "extends")
        tail: tuple[Document, ...] = ()
        if isinstance(node, str) and node in at:
            ring = walk[at[node] :]
            for k, member in enumerate(ring):
                memo[member] = tuple(
                    docs[ring[(k + i) % len(ring)]] for i in range(min(cap, len(ring)))
                )
            walk = walk[: at[node]]
            tail = memo[ring[0]]
        elif isinstance(node, str):
            tail = memo.get(node, ())
        for member in reversed(walk):
            tail = (docs[member], *tail[: cap - 1])
            memo[member] = tail
        return memo.get(name, ())

    def layers(self, device: Document) -> list[Document]:
        """The documents a device inherits from, in layering order: fleet → profile chain
        (base first) → model → the device itself. Unknown names and cycles end the chain
        (other rules report them)."""
        name = get(device.data, "profile")
        chain = self.profile_chain(name) if isinstance(name, str) else ()
        out = [self.fleet] if self.fleet is not None else []
        out += reversed(chain)
        model = self.model_of(device)
        if model is not None:
            out.append(model)
        out.append(device)
        return out

    def is_flagged(self, doc: Document, path: Path_) -> bool:
        """Whether a schema error was already reported at this node."""
        line, col = doc.pos(path)
        return (doc.path, line, col) in self.flagged

    def mac_of(self, device: Document) -> str | None:
        """The device's MAC as 12 lower-case hex digits, or None if it has no valid one."""
        return self.facts.memo(("mac", device.path, device.oid), lambda: _mac(device))

    @cached_property
    def product_names(self) -> dict[str, str]:
        """Model name -> product name, for the $PN macro: the model's name when it sets
        none, as the compiler has it (a name checked here must be the one published)."""
        out: dict[str, str] = {}
        for name, m in self.model_docs.items():
            pn = get(m.data, "product_name")
            out[name] = pn if isinstance(pn, str) else name
        return out

    @cached_property
    def file_name_env(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """What devices' file names depend on besides the device: the fleet's `file_name`
        template and the models' product names."""
        fleet = self.fleet
        template = get(fleet.data, "file_name") if fleet is not None else None
        if not isinstance(template, str):
            template = DEFAULT_FILE_NAME
        return template, tuple(sorted(self.product_names.items()))

    def file_name_of(self, device: Document, template: str | None = None) -> tuple[str, str] | None:
        """(MAC, expanded file name) of a device with a valid MAC, the way gitprov names its
        published files (the fleet's `file_name` template, or `template`)."""
        template = self.file_name_env[0] if template is None else template
        model = get(device.data, "model")
        product = self.product_names.get(model, "") if isinstance(model, str) else ""

        def name() -> tuple[str, str] | None:
            mac = self.mac_of(device)
            if mac is None:
                return None
            serial = get(device.data, "serial")
            variables = device_variables(
                mac, product_name=product, serial=serial if isinstance(serial, str) else ""
            )
            return mac, expand(template, variables)

        return self.facts.memo(("file-name", device.path, device.oid, template, product), name)


def _mac(device: Document) -> str | None:
    raw = get(device.data, "mac")
    return normalise_mac(raw) if isinstance(raw, str) else None


class Found(NamedTuple):
    """An effective value and where it was written."""

    value: Any
    doc: Document
    path: Path_

    def pos(self) -> tuple[int, int]:
        return self.doc.pos(self.path)


def _last(block: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """Which of `names` (aliases of one parameter) counts in one block: the last written,
    as the compiler reads it."""
    hits = [n for n in names if n in block]
    if len(hits) > 1:
        order = {k: i for i, k in enumerate(block)}
        hits.sort(key=order.__getitem__)
    return hits[-1] if hits else None


def effective(layers: list[Document], names: tuple[str, ...]) -> Found | None:
    """The value a global parameter ends up with (any of `names`: readable name or DBID
    key), the last layer winning; None if unset or unset again with `null`."""
    for doc in reversed(layers):
        params = get(doc.data, "params")
        name = _last(params, names) if isinstance(params, dict) else None
        if name is not None:
            value = params[name]
            return None if value is None else Found(value, doc, ("params", name))
    return None


def effective_line(layers: list[Document], names: tuple[str, ...], slot: int) -> Found | None:
    """Like `effective`, for one slot (0-based) of a per-line parameter."""
    for doc in reversed(layers):
        item = get(doc.data, "lines", slot)
        name = _last(item, names) if isinstance(item, dict) else None
        if name is not None:
            value = item[name]
            return None if value is None else Found(value, doc, ("lines", slot, name))
    return None


def get(data: Any, *keys: str | int) -> Any:
    """`data[k1][k2]…` or None, whatever shape a broken document has."""
    for k in keys:
        if isinstance(k, int):
            if not isinstance(data, list) or k >= len(data):
                return None
            data = data[k]
        elif not isinstance(data, dict) or k not in data:
            return None
        else:
            data = data[k]
    return data


# A hint lists this many known names at most; and a check looks for a close name (by
# difflib, which compares with every known name) for this many unknown names at most:
# a pull request of thousands of profiles and as many devices naming others would cost
# one comparison per pair (minutes), and hints of every name (gigabytes).
NAMES_SHOWN = 12
CLOSE_NAMES_SOUGHT = 100


class CloseNames:
    """The closest known name (difflib) for at most CLOSE_NAMES_SOUGHT unknown names,
    then none: one per unknown key of a document, whose hostile version holds a million
    of them (a search compares with every known name, ~0.3 ms against the catalog)."""

    def __init__(self) -> None:
        self.left = CLOSE_NAMES_SOUGHT

    def __call__(
        self,
        name: str,
        known: Sequence[str] | Callable[[], Sequence[str]],
        cutoff: float = 0.6,
    ) -> str | None:
        """`known` may be a callable: the names are made only for a search (past the
        budget, making a catalog's sorted names costs more than the check)."""
        if self.left <= 0:
            return None
        self.left -= 1
        names = known() if callable(known) else known
        close = difflib.get_close_matches(name, names, n=1, cutoff=cutoff)
        return close[0] if close else None


class NameHints:
    """Hints for names that name nothing: the close known name, else some known names.
    Each unknown name's hint is worked out once; past CLOSE_NAMES_SOUGHT of them, no
    close name is looked for."""

    def __init__(self, known: Iterable[str], kind: str, add: Callable[[str], str]) -> None:
        self.known = sorted(known)
        self.kind = kind
        self.add = add
        self._hints: dict[str, str] = {}
        self._closest = CloseNames()

    def __call__(self, name: str) -> str:
        hint = self._hints.get(name)
        if hint is None:
            close = self._closest(name, self.known)
            if close and close.isascii() != name.isascii():
                # (`оffice` with a Cyrillic о for `office`: the two print alike, and a
                # hint that shows them alike sends the reader to a fix that changes nothing)
                hint = f"did you mean {close!r}? It is written {close!a}"
            elif close:
                hint = f"did you mean {close!r}?"
            else:
                shown = ", ".join(self.known[:NAMES_SHOWN]) or "none"
                more = len(self.known) - NAMES_SHOWN
                shown += f" and {more:,} more" if more > 0 else ""
                hint = f"known {self.kind}: {shown}; {self.add(name)}"
            self._hints[name] = hint
        return hint


def error_at(
    doc: Document, path: Path_, code: str, message: str, hint: str = "", *, key: bool = False
) -> Problem:
    """An error located at the node `path` of `doc` (its key, with `key=True`)."""
    line, col = doc.pos(path, key=key)
    return Problem(doc.path, line, col, code, Level.ERROR, message, hint)


def warning_at(
    doc: Document, path: Path_, code: str, message: str, hint: str = "", *, key: bool = False
) -> Problem:
    line, col = doc.pos(path, key=key)
    return Problem(doc.path, line, col, code, Level.WARNING, message, hint)


@cache
def modules() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(f"gitprov.rules.{name}") for name in RULES)


class DocumentCache(Protocol):
    """Where single-document rule results are kept between runs (by blob id)."""

    def rule_problems(
        self, key: tuple[str, ...], compute: Callable[[], list[Problem]]
    ) -> tuple[Problem, ...]: ...


def document_key(kind: str, doc: Document, catalog: Catalog, strict: bool) -> tuple[str, ...]:
    """What a document's single-document rule problems are kept under (DocumentCache):
    everything they depend on but the places its schema errors flag, which its blob id
    and the catalog decide."""
    return (kind, doc.path, doc.oid, catalog.digest, str(strict))


def run_rules(ctx: RuleContext, cache: DocumentCache | None = None) -> list[Problem]:
    per_document = [m for m in modules() if hasattr(m, "check_document")]
    flagged: dict[str, set[tuple[int, int]]] = {}
    for file, line, col in ctx.flagged:
        flagged.setdefault(file, set()).add((line, col))

    def document_problems(kind: str, doc: Document) -> Iterator[tuple[str, tuple[Problem, ...]]]:
        dctx = DocContext(doc, kind, ctx.catalog, ctx.strict, frozenset(flagged.get(doc.path, ())))

        def compute() -> list[Problem]:
            return [p for m in per_document for p in m.check_document(dctx)]

        if cache is None:
            found = tuple(compute())
        else:
            found = cache.rule_problems(document_key(kind, doc, ctx.catalog, ctx.strict), compute)
        if found:
            yield doc.path, found

    env = (ctx.catalog.digest, ctx.strict)
    index = ctx.facts.index(ctx.docs, "document-rules", None, env, document_problems)
    problems = [p for found in index.all_items() for p in found]
    for mod in modules():
        if hasattr(mod, "check"):
            problems.extend(mod.check(ctx))
    return problems
