"""Semantic rules: one module each, a stable code, a docstring with a failing and a passing
example, and this registry. A new check is a new module listed in `RULES`, nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from gitprov.catalog import Catalog
from gitprov.errors import Problem
from gitprov.inventory import DEVICE, FLEET, MODEL, PROFILE, SECRETS, Documents, stem
from gitprov.yamldoc import Document

# Module names under gitprov.rules, in code order.
RULES = (
    "missing_fleet",
    "duplicate_mac",
    "unknown_model",
    "unknown_profile",
    "extends_cycle",
    "duplicate_path",
    "file_name",
    "value_injection",
    "unknown_secret",
    "managed_param",
)


class Rule(Protocol):
    CODE: str
    NAME: str

    def check(self, ctx: RuleContext) -> Iterator[Problem]: ...


@dataclass(frozen=True)
class RuleContext:
    docs: Documents
    catalog: Catalog
    strict: bool = False
    parent: Documents | None = None  # the first parent commit's documents, when known
    schema_broken: frozenset[str] = frozenset()

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


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"gitprov.rules.{name}") for name in RULES]


def run_rules(ctx: RuleContext) -> list[Problem]:
    problems: list[Problem] = []
    for mod in modules():
        problems.extend(mod.check(ctx))
    return problems
