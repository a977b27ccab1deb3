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

from gitprov import DOCS_URL
from gitprov.inventory import Device, Fleet
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
        if self.old == self.new:  # (a secret of the same name given another value)
            return f"{self.setting}: the value of secret {self.old!r} changes"
        return f"{self.setting} changes from {self.old!r} to {self.new!r}"


def who(found: tuple[Stranding, ...] | list[Stranding]) -> str:
    """Whom `found` strands, for a message: every device (the fleet's name or key), else
    the devices whose own key it is."""
    if any(not f.setting.endswith("'s key") for f in found):
        return "every device"
    return "1 device" if len(found) == 1 else f"{len(found)} devices"


# What keeps them, for a message's hint.
KEEP = (
    f"encryption.previous keeps what they hold ({DOCS_URL}/keys.md: for a device's own key, a "
    "new file_name with the old one under encryption.previous, and the old key under its "
    "previous_key:)"
)


# Whether the published commit's secret (by name) and this commit's hold the same value:
# True, False, or None when it cannot be told (no private key, or one that cannot open
# the old sealed text).
SameSecret = Callable[[str, str], bool | None]


def stranding(published: Fleet, new: Fleet, same: SameSecret) -> tuple[Stranding, ...]:
    """What devices holding `published`'s rule could no longer fetch or read under
    `new`: () when every device finds its file under its name and key, as the new file
    or as the `encryption.previous` one. A secret whose sameness cannot be told is taken
    as the same (a repository key rotated re-seals every secret).

    During a rotation's grace period, the devices that have not moved hold the previous
    rule: dropping `previous` retires it (docs/keys.md), but keeping its name under
    another key strands them as surely."""
    enc = new.encryption
    new_key = None if enc.master_key is None else enc.master_key.name
    served = [("encryption.master_key", new.file_name, new_key)]
    if enc.previous_file_name is not None:
        # (the previous name's file is encrypted with the previous key, else the new one)
        previous = new_key if enc.previous_master_key is None else enc.previous_master_key.name
        served.append(("encryption.previous.master_key", enc.previous_file_name, previous))
    old = published.encryption
    encrypted = old.mode != "none"
    old_key = old.master_key.name if encrypted and old.master_key is not None else None
    found = _held(published.file_name, old_key, served, same)
    if found is not None:
        return (found,)
    if old.previous_file_name is not None and enc.previous_file_name is not None:
        held = old_key if old.previous_master_key is None else old.previous_master_key.name
        kept = [entry for entry in served[1:] if _alike(entry[1], old.previous_file_name)]
        if kept:  # (the previous name kept: under the key those devices hold)
            found = _held(old.previous_file_name, held if encrypted else None, kept, same)
            if found is not None:
                return (found,)
    return ()


def _held(
    file_name: str,
    key: str | None,
    served: list[tuple[str, str, str | None]],
    same: SameSecret,
) -> Stranding | None:
    """Why devices holding a rule to `file_name` under the key `key` find no file they
    can read among `served` (each a setting, a name and its key), or None."""
    named = [(setting, k) for setting, name, k in served if _alike(name, file_name)]
    if not named:
        return Stranding("file_name", file_name, served[0][1])
    for _, k in named:
        if key is None or k is None or same(key, k) is not False:
            return None
    setting, k = named[0]
    assert key is not None and k is not None  # (else the loop returned)
    return Stranding(setting, key, k)


def _alike(a: str, b: str) -> bool:
    """Whether two file name templates name every device's file alike."""
    return _expanded(a) == _expanded(b)


def _expanded(template: str) -> str:
    return expand(template, _SAMPLE)


def device_stranding(
    device: str,
    held: str | None,
    key: str | None,
    previous_key: str | None,
    published: Fleet,
    new: Fleet,
    same: SameSecret,
) -> Stranding | None:
    """Why a device whose own key (`key:`, a secret's name; None: one derived from the
    fleet's master key) was `held` at the published commit, and is `key` now (with its
    `previous_key:`), finds no file it can read, or None. Its own key is its own: a
    change of it is kept only under `encryption.previous` with `previous_key:`."""
    if (held is None and key is None) or published.encryption.mode == "none":
        return None  # (the fleet's master key: see `stranding`)
    master = new.encryption.master_key
    old = published.encryption.master_key
    holds = ("key", held) if held is not None else ("master", old.name if old else None)
    primary = ("key", key) if key is not None else ("master", master.name if master else None)
    served = []
    if _alike(new.file_name, published.file_name):
        served.append(primary)
    previous_name = new.encryption.previous_file_name
    if previous_name is not None and _alike(previous_name, published.file_name):
        previous_master = new.encryption.previous_master_key
        if previous_key is not None:
            served.append(("key", previous_key))
        elif previous_master is not None:
            served.append(("master", previous_master.name))
        else:
            served.append(primary)
    for kind, name in served:
        if kind == holds[0] and (
            name is None or holds[1] is None or same(holds[1], name) is not False
        ):
            return None
    if not served:
        return None  # (the name is not kept: `stranding` says so)
    shown = [name or "(none)" for _, name in (holds, served[0])]
    return Stranding(f"{device}'s key", *shown)


def stranding_of(
    device: Device, held: str | None, published: Fleet, new: Fleet, same: SameSecret
) -> Stranding | None:
    """`device_stranding` of an inventory's device, whose own key was `held`."""
    key, previous = device.key, device.previous_key
    return device_stranding(
        device.mac,
        held,
        None if key is None else str(key),
        None if previous is None else str(previous),
        published,
        new,
        same,
    )
