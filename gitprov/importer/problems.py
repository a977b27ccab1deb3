"""The import's problem codes, GP401-GP413, and the hints and refusal several readers share.

Every code is documented in docs/inventory.md ("Importing a fleet"), which a test checks
against the codes the package exports. A problem is collected, never raised alone: the
readers gather them all, and `refused` turns the lot into one `ImportRefused`.
"""

from __future__ import annotations

import difflib

from gitprov.catalog import Param
from gitprov.errors import GitprovError, Problem
from gitprov.inventory import Inventory

UNREADABLE = "GP401"
MALFORMED = "GP402"
DECRYPT = "GP403"
MAC = "GP404"
MODEL = "GP405"
VALUE = "GP406"
VERSION = "GP407"
RULE = "GP408"
CIPHER = "GP409"
CSV = "GP410"
TABLE = "GP411"
TAKEN = "GP412"
RESULT = "GP413"


class ImportRefused(GitprovError):
    """The input has problems (all of them in `problems`); nothing was written."""


def refused(problems: list[Problem]) -> ImportRefused:
    found = sorted(set(problems))
    return ImportRefused(
        f"the input has {sum(p.is_error for p in found)} error(s); nothing was written",
        hint="fix them and run the import again",
        problems=tuple(found),
    )


def models_hint(inv: Inventory, name: str = "") -> str:
    models = sorted(inv.models)
    close = difflib.get_close_matches(name, models, n=1) if name else []
    return (f"did you mean {close[0]!r}? " if close else "") + (
        f"models: {', '.join(models)} (add a file to models/ for another)"
    )


def value_hint(param: Param) -> str:
    what = {
        "bool": "1 or 0",
        "int": "a whole number" + (f" {param.min}..{param.max}" if param.max is not None else ""),
        "port": "a port 1..65535",
        "seconds": "a whole number of seconds",
        "ipv4": "a dotted quad such as 192.0.2.10",
        "hostname": "a host name such as sip.example.net",
        "host": "an IPv4 address or a host name",
        "enum": "one of " + ", ".join(param.values),
    }.get(param.type, f"text of at most {param.max_length} characters")
    return f"{param.name} ({param.key}) takes {what}; fix the file and import again"
