"""GP134 unnamable-file (warning): a profile or model file whose name no device can give.

A device names its profile and its model, and a profile the one it extends, by a name
the schemas allow only letters, digits, `_`, `-` and `.` in. A file named otherwise
defines what nothing can use, silently: `profiles/оffice.yaml` with a Cyrillic `о`
reads as the office profile in a review, while every device keeps the Latin one.

Fails:   profiles/оffice.yaml (U+043E, a Cyrillic letter), models/G502N ATA.yaml
Passes:  profiles/office.yaml, models/G502N.yaml, profiles/site-2.east.yaml
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from functools import cache

from gitprov.errors import Problem, warning
from gitprov.inventory import DEVICE, MODEL, PROFILE, stem
from gitprov.rules import DocContext
from gitprov.schemas import validator_for

CODE = "GP134"
NAME = "unnamable-file"


@cache
def _pattern(kind: str) -> re.Pattern[str]:
    """What a device's `profile:` or `model:` must match, from the device schema (one
    definition: the schema is what refuses a device naming anything else)."""
    schema = validator_for(DEVICE).schema
    assert isinstance(schema, Mapping)
    return re.compile(schema["properties"][kind]["pattern"])


def check_document(dctx: DocContext) -> Iterator[Problem]:
    if dctx.kind not in (PROFILE, MODEL):
        return
    name = stem(dctx.doc.path)
    pattern = _pattern(dctx.kind)
    if pattern.search(name):
        return
    odd = next((c for c in name if not pattern.search(c)), None)
    why = "it is empty" if odd is None else f"it holds {_character(odd)}"
    field = "profile: (or a profile's extends:)" if dctx.kind == PROFILE else "model:"
    yield warning(
        dctx.doc.path,
        1,
        1,
        CODE,
        f"no device can name the {dctx.kind} {name!r}: {why}, and a device's {field} "
        "takes only letters A-Z and a-z, digits, '_', '-' and '.'",
        "rename the file with those characters only (retype the name: a letter that "
        "looks Latin may not be one), or remove it if no device is meant to use it",
    )


def _character(char: str) -> str:
    name = unicodedata.name(char, "")
    code = f"U+{ord(char):04X}"
    return f"{char!r} ({code} {name})" if name else code
