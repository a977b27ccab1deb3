"""The JSON Schemas of every inventory file kind, loaded by name from schemas/.

`params.schema.json` and `line.schema.json` are generated from the parameter catalog, so
`gitprov schema` can write them out for editors and they never drift from the renderer.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gitprov.catalog import SCHEMAS_DIR, Catalog, load_catalog
from gitprov.inventory import DEVICE, FLEET, MODEL, PROFILE, SECRETS

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
        out[name] = json.loads((SCHEMAS_DIR / name).read_text())
    out.update(generated(catalog or load_catalog()))
    return out


@cache
def _validators(catalog: Catalog) -> dict[str, Draft202012Validator]:
    schemas = all_schemas(catalog)
    registry: Registry = Registry().with_resources(
        (BASE + name, Resource.from_contents(s, default_specification=DRAFT202012))
        for name, s in schemas.items()
    )
    return {
        kind: Draft202012Validator(schemas[name], registry=registry)
        for kind, name in KIND_FILES.items()
    }


def validator_for(kind: str, catalog: Catalog | None = None) -> Draft202012Validator:
    return _validators(catalog or load_catalog())[kind]
