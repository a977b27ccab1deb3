"""yamllint-style rule tests: a minimal valid inventory, a snippet laid over it, and the
exact `(code, line, col)` set that validation must report.

    check("GP101", {"devices/0021f2011b21.yaml": 'mac: "0021F2011B19"'}, (1, 6))

Keys of the overlay are paths under inventory/; None deletes a file. Expected problems
are the `(line, col)` of one rule's problems in the first file of the overlay, or
`(file, line, col)`; problems of other rules are not compared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pygit2

from gitprov.errors import Problem
from gitprov.pipeline import Pipeline
from gitprov.rules import HistoryFloor
from gitprov.source import FileRef, within
from gitprov.validate import Options

# Not the demo key (that one warns, GP119): a well-formed key nobody holds.
PUBLIC_KEY = "gitprov-pk-" + "Q" * 43
SEALED = "v1:" + "A" * 80

FLEET = """\
version_floor: 1000
file_name: "fv$(MA).conf"
provisioning:
  url: "http://prov.example.com"
encryption:
  mode: openssl-md5
  master_key: !secret fleet_master_key
"""
SECRETS = f"""\
public_key: {PUBLIC_KEY}
secrets:
  fleet_master_key: {SEALED}
  sip_2001: {SEALED}
  sip_2002: {SEALED}
"""
IP542N = """\
family: flyingvoice
product_name: IP542N
config_file_name: IP542N.conf
line_count: 4
"""
G502N = """\
family: flyingvoice
product_name: G502N
config_file_name: G502N.conf
line_count: 2
"""
BASE_PROFILE = """\
params:
  sip.server: sip.example.net
  sip.server_port: 5060
"""
DEVICE = """\
mac: "00:21:f2:01:1b:19"
model: IP542N
profile: base
lines:
  - enabled: true
    account: "2001"
    password: !secret sip_2001
"""
DEVICE_2 = """\
mac: "00:21:f2:01:1b:20"
model: G502N
profile: base
lines:
  - enabled: true
    account: "2002"
    password: !secret sip_2002
"""

BASE: dict[str, str] = {
    "gitprov.yaml": FLEET,
    "secrets.yaml": SECRETS,
    "models/IP542N.yaml": IP542N,
    "models/G502N.yaml": G502N,
    "profiles/base.yaml": BASE_PROFILE,
    "devices/0021f2011b19.yaml": DEVICE,
    "devices/0021f2011b20.yaml": DEVICE_2,
}


class MemorySource:
    """An inventory held in a dict, path -> text (paths under `inventory/`)."""

    def __init__(self, files: Mapping[str, str | bytes], inventory_dir: str = "inventory"):
        self._dir = inventory_dir
        self._data: dict[str, bytes] = {}
        self._refs: list[FileRef] = []
        for rel, text in sorted(files.items()):
            data = text.encode() if isinstance(text, str) else text
            path = f"{inventory_dir}/{rel}"
            oid = str(pygit2.hash(data))
            self._data[oid] = data
            self._refs.append(FileRef(path, oid))

    @property
    def label(self) -> str:
        return "memory"

    @property
    def inventory_dir(self) -> str:
        return self._dir

    def files(self) -> list[FileRef]:
        return list(self._refs)

    def read(self, ref: FileRef, limit: int | None = None) -> bytes:
        return within(self._data[ref.oid], limit)

    def is_link(self, ref: FileRef) -> bool:
        return False


def inventory(overlay: Mapping[str, str | None] | None = None) -> dict[str, str]:
    files = dict(BASE)
    for path, text in (overlay or {}).items():
        if text is None:
            files.pop(path, None)
        else:
            files[path] = text
    return files


def problems(
    overlay: Mapping[str, str | None] | None = None,
    *,
    parent: Mapping[str, str | None] | None = None,
    strict: bool = False,
) -> list[Problem]:
    pipeline = Pipeline(None, options=Options(strict=strict))
    floor = None
    if parent is not None:
        # The history's highest version_floor, as a commit's parents would give it.
        text = inventory(parent).get("gitprov.yaml") or ""
        found = re.search(r"^version_floor: (\d+)", text, re.M)
        floor = HistoryFloor(int(found.group(1)) if found else 0, "")
    return list(pipeline.load(MemorySource(inventory(overlay)), floor).problems)


Where = tuple[int, int] | tuple[str, int, int]


def check(
    code: str,
    overlay: Mapping[str, str | None],
    *where: Where,
    parent: Mapping[str, str | None] | None = None,
    strict: bool = False,
) -> list[Problem]:
    """Assert that rule `code` reports exactly at `where` ((line, col) in the first file of
    the overlay, or (file, line, col)); returns those problems for further checks."""
    default_file = f"inventory/{next(iter(overlay))}" if overlay else ""
    want: set[tuple[str, int, int]] = set()
    for w in where:
        if len(w) == 2:
            want.add((default_file, w[0], w[1]))
        else:
            want.add((f"inventory/{w[0]}", w[1], w[2]))
    found = problems(overlay, parent=parent, strict=strict)
    mine = [p for p in found if p.code == code]
    got = {(p.file, p.line, p.col) for p in mine}
    assert got == want, "\n".join(f"{p.where()} {p.code} {p.message}" for p in found)
    return mine
