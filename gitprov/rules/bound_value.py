"""GP129 bound-value: a raw DBID key that a model binds holds a value its parameter does
not take.

A bound key is the catalog parameter it is bound to wherever it is written, so
`DBID_RESYNC_PERIODIC: -1` is checked like `provision.resync_periodic: -1` (which the
schema refuses, GP010). Without this, the raw spelling would pass any value.

Fails:   `params: {DBID_RESYNC_PERIODIC: "hourly"}` where a model binds
         provision.resync_periodic to DBID_RESYNC_PERIODIC
Passes:  `params: {DBID_RESYNC_PERIODIC: 3600}`
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from gitprov.catalog import Unpublished
from gitprov.errors import Problem
from gitprov.rules import RuleContext, error_at
from gitprov.rules._bindings import bound_values
from gitprov.yamldoc import SecretRef

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

CODE = "GP129"
NAME = "bound-value"


@cache
def _validator(entry: Unpublished) -> Draft202012Validator:
    from gitprov.schemas import strict_validator

    validator: Draft202012Validator = strict_validator()(entry.value_schema())
    return validator


def _type_text(entry: Unpublished) -> str:
    return {
        "bool": "true or false",
        "seconds": "a whole number of seconds, 0 or more",
        "url": "a rule such as http://fw.example.com/IMAGE.bin",
    }.get(entry.type, f"a value of type {entry.type}")


def check(ctx: RuleContext) -> Iterator[Problem]:
    for found in bound_values(ctx, NAME):
        if isinstance(found.value, SecretRef) or ctx.is_flagged(found.doc, found.path):
            continue  # a secret's text is never shown; a flagged value is reported already
        for entry in found.entries:
            if _fits(entry, found.value):
                continue
            shown = repr(found.value)
            shown = shown if len(shown) <= 60 else shown[:59] + "…"
            yield error_at(
                found.doc,
                found.path,
                CODE,
                f"{found.key} is {entry.name} ({entry.label}), which takes "
                f"{_type_text(entry)}, not {shown}",
                f"write it as {entry.name} would be written; `gitprov params` lists its type",
            )


def _fits(entry: Unpublished, value: Any) -> bool:
    return _validator(entry).is_valid(value)
