"""What the bindings rules (GP114, GP116, GP126-GP130, and GP110/GP120 on bound keys)
share: each model's bindings, which raw keys they bind, and where bound values are written.

A model binds a catalog name whose DBID key the vendor has not published to the key its
devices use (`bindings:` in models/NAME.yaml). A raw key some model binds is that
parameter wherever it is written, so its value gets the parameter's checks in every file
(a profile shared by two models is checked once, by the stricter reading).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gitprov.catalog import Unpublished
from gitprov.firmware import default_rule
from gitprov.inventory import DEVICE, FLEET, MODEL, PROFILE, bindings_of, stem
from gitprov.rules import RuleContext, get
from gitprov.yamldoc import Document, Path_

LAYER_KINDS = (FLEET, PROFILE, MODEL, DEVICE)


def model_bindings(ctx: RuleContext) -> dict[str, dict[str, str]]:
    """Model name -> its well-formed bindings (catalog name -> DBID key)."""
    out: dict[str, dict[str, str]] = {}
    for doc in ctx.models:
        out[stem(doc.path)] = ctx.facts.memo(("bindings", doc.path, doc.oid), _reader(doc))
    return out


def _reader(doc: Document) -> Callable[[], dict[str, str]]:
    return lambda: bindings_of(doc.data) if isinstance(doc.data, dict) else {}


def bound_keys(ctx: RuleContext) -> dict[str, tuple[Unpublished, ...]]:
    """DBID key -> the catalog entries some model binds it to (usually one)."""
    out: dict[str, set[str]] = {}
    for bindings in model_bindings(ctx).values():
        for name, key in bindings.items():
            if ctx.catalog.unpublished_named(name) is not None:
                out.setdefault(key, set()).add(name)
    return {
        key: tuple(u for n in sorted(names) if (u := ctx.catalog.unpublished_named(n)))
        for key, names in out.items()
    }


def env(ctx: RuleContext) -> tuple[Any, ...]:
    """What the bound-key checks depend on besides the document checked."""
    return (
        ctx.catalog.digest,
        tuple(sorted((k, tuple(u.name for u in v)) for k, v in bound_keys(ctx).items())),
    )


@dataclass(frozen=True)
class BoundValue:
    """A raw key some model binds, as a layer writes it."""

    doc: Document
    path: Path_
    key: str
    value: Any
    entries: tuple[Unpublished, ...]


def bound_values(ctx: RuleContext, name: str) -> Iterator[BoundValue]:
    """Every value written under a bound raw key in a `params:` block, file by file
    (kept by `ctx.index` under `name`: a new commit re-reads only the files it changed)."""
    keys = bound_keys(ctx)

    def found(doc: Document) -> Iterator[tuple[str, BoundValue]]:
        params = get(doc.data, "params")
        if not isinstance(params, dict):
            return
        for key, value in params.items():
            entries = keys.get(key)
            if entries and value is not None:
                yield key, BoundValue(doc, ("params", key), key, value, entries)

    yield from ctx.index(name, LAYER_KINDS, env(ctx), found).all_items()


@dataclass(frozen=True)
class FirmwareRule:
    """A model's Upgrade Rule as its firmware section gives it (or its default)."""

    doc: Document
    path: Path_
    rule: str
    given: bool  # False: the default, provisioning.url/FILE


def firmware_rules(ctx: RuleContext) -> Iterator[FirmwareRule]:
    """The Upgrade Rule of every model whose firmware names an image and that binds an
    Upgrade Rule key (the models gitprov writes the rule for)."""
    fleet = ctx.fleet
    url = get(fleet.data, "provisioning", "url") if fleet is not None else None
    bindings = model_bindings(ctx)
    for doc in ctx.models:
        file = get(doc.data, "firmware", "file")
        if not isinstance(file, str) or "provision.upgrade_rule" not in bindings[stem(doc.path)]:
            continue
        rule = get(doc.data, "firmware", "rule")
        if isinstance(rule, str):
            yield FirmwareRule(doc, ("firmware", "rule"), rule, True)
            continue
        default = default_rule(url if isinstance(url, str) else None, file)
        if default is not None:
            yield FirmwareRule(doc, ("firmware",), default, False)
