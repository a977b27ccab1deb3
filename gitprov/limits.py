"""How much reading one inventory may cost: the bounds of the YAML reader and of `extends`.

A pull request is untrusted input: a few hundred bytes of YAML aliases expand to billions
of nodes, a 5,000-digit integer cannot even be printed, and a long `extends` chain makes
every device walk it. Each bound here turns such input into a located problem before
the work is done.

The limits are a fleet setting (`limits:` in gitprov.yaml), not an option of whoever runs
gitprov: which commits validate decides every device's DBID_DBASE_VERSION, so the limits
must come with the commit for two servers to agree (docs/design.md, invariant 2), and a change
of them is reviewed like any other. gitprov.yaml itself is always read with the defaults
(it cannot raise the bounds it is read under), and no fleet can go beyond `CEILINGS`,
which keep the worst case of a hostile pull request to seconds and megabytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Limits:
    # A secrets.yaml with a key per device holds ~120 bytes a secret: 16 MiB is ~130k.
    document_bytes: int = 16 * 2**20
    # Values and keys built from one file, aliases expanded: each costs ~250 bytes of
    # memory and ~1 µs, so a file of `[a,a,a,…]` costs 130 times its size without it.
    nodes: int = 1_000_000
    # Nested mappings and lists; an inventory file needs 4 (encryption.previous.master_key).
    depth: int = 20
    # Alias uses (`*name`) in one file, and the nodes they expand to in all.
    aliases: int = 1_000
    alias_nodes: int = 10_000
    # Digits of an integer; 19 hold any 64-bit number.
    integer_digits: int = 32
    # Profiles in one `extends` chain, the device's own profile included.
    extends_depth: int = 32

    @cached_property
    def integer_bound(self) -> int:
        """The smallest integer with more than `integer_digits` digits."""
        bound: int = 10**self.integer_digits
        return bound

    def hint(self, name: str, *, fleet_file: bool = False) -> str:
        """How to raise one limit, for a problem's hint."""
        if fleet_file:
            return (
                f"gitprov.yaml itself is always read within the default limits "
                f"({name}: {getattr(DEFAULT, name)}); keep it small"
            )
        return (
            f"if a real fleet needs more, raise it in gitprov.yaml: `limits: {{{name}: N}}` "
            f"(at most {getattr(CEILINGS, name)})"
        )


DEFAULT = Limits()
# How far a fleet may raise each limit: about 4 GB and a few seconds for the largest file
# a hostile pull request could send (bytes: ~16 of memory each; nodes: ~250), recursion
# well within Python's stack, and aliases that expand a file at most as much as a large
# device file costs anyway.
CEILINGS = Limits(
    document_bytes=256 * 2**20,
    nodes=4_000_000,
    depth=100,
    aliases=100_000,
    alias_nodes=100_000,
    integer_digits=4_000,  # Python prints at most 4,300 digits (sys.int_max_str_digits)
    extends_depth=1_000,
)
NAMES = tuple(f.name for f in fields(Limits))


def of_fleet(data: Any) -> Limits:
    """The limits the fleet settings (gitprov.yaml's data) ask for. A value that is not a
    whole number from 1 to its ceiling keeps the default: the schema reports it (GP010)."""
    block = data.get("limits") if isinstance(data, Mapping) else None
    if not isinstance(block, Mapping) or not block:
        return DEFAULT
    chosen: dict[str, int] = {}
    for name in NAMES:
        value = block.get(name)
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and 1 <= value <= getattr(CEILINGS, name)
        ):
            chosen[name] = value
    return Limits(**chosen) if chosen else DEFAULT
