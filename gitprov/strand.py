"""What a commit changes that devices cannot follow: the file name and the key in the
Profile Rule each device holds.

A device fetches its next file by the rule its last file gave it: `[--key KEY]URL/FILE`,
FILE the fleet's `file_name` as it expands for the device and KEY derived from
`encryption.master_key`. A commit that changes either publishes each device's new file
where no device looks, or under a key no device holds, unless it keeps what the devices
hold under `encryption.previous` (docs/keys.md): the devices then keep their last file
until a factory reset or option 66. A publisher refuses such a commit unless told
(`--allow-stranding`).

Dropping `encryption.previous` (a rotation's last step) is not stranding: the devices
that moved hold the new rule, and the grace period was for the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from gitprov.inventory import Fleet
from gitprov.macros import device_variables, expand

# One device's variables, each macro a different value: two templates that expand alike
# for it name every device's file alike (`fv$(MA).conf` and `fv$MA.conf`).
_SAMPLE = device_variables(
    "0021f2a1b2c3", product_name="PN1", serial="SN1", ip="192.0.2.1", swver="SW1", hwver="HW1"
)


class Stranding(NamedTuple):
    """A setting the devices' rule holds that a commit changes without keeping it."""

    setting: str  # file_name or encryption.master_key
    old: str  # as the published commit writes it (a secret by its name)
    new: str

    def describe(self) -> str:
        return f"{self.setting} changes from {self.old!r} to {self.new!r}"


# Whether the published commit's secret (by name) and this commit's hold the same value:
# True, False, or None when it cannot be told (no private key, or one that cannot open
# the old sealed text).
SameSecret = Callable[[str, str], bool | None]


def stranding(published: Fleet, new: Fleet, same: SameSecret) -> tuple[Stranding, ...]:
    """What devices holding `published`'s rule could no longer fetch or read under
    `new`: () when every device finds its file under its name and key, as the new file
    or as the `encryption.previous` one. A secret whose sameness cannot be told is taken
    as the same (a repository key rotated re-seals every secret)."""
    old_key = published.encryption.master_key if published.encryption.mode != "none" else None
    old_name = _expanded(published.file_name)
    enc = new.encryption
    new_key = None if enc.master_key is None else enc.master_key.name
    # (the previous name's file is encrypted with the previous key, else the new one)
    served = [("encryption.master_key", new.file_name, new_key)]
    if enc.previous_file_name is not None:
        previous = new_key if enc.previous_master_key is None else enc.previous_master_key.name
        served.append(("encryption.previous.master_key", enc.previous_file_name, previous))
    named = [(setting, key) for setting, name, key in served if _expanded(name) == old_name]
    if not named:
        return (Stranding("file_name", published.file_name, new.file_name),)
    for _, key in named:
        if old_key is None or key is None or same(old_key.name, key) is not False:
            return ()
    setting, key = named[0]
    assert old_key is not None and key is not None
    return (Stranding(setting, old_key.name, key),)


def _expanded(template: str) -> str:
    return expand(template, _SAMPLE)
