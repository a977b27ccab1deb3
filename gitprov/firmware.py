"""Firmware upgrades: which devices of a model are told to upgrade, and with what rule.

A model's `firmware:` names an image (`file`, published into every root) and its
`version`. The device upgrades when its file carries an Upgrade Rule (vendor overview 2.1:
"a firmware upgrade script with the same syntax as Profile Rule"), so gitprov writes the
rule, under the key the model binds `provision.upgrade_rule` to, into the files of the
devices the rollout selects, and `provision.upgrade_enable` = 1 when that is bound too.
A model that binds no Upgrade Rule key tells no device to upgrade: gitprov never invents
a key.

The rollout is decided per device, from the device and its model alone: a device is
selected when its MAC is listed, or when its point — the first 8 bytes of
SHA-256("VERSION/MAC") read as a fraction of 2**64 — is below the percent. So the choice
does not depend on the other devices or their order, stays the same from commit to
commit, raising the percent only adds devices, and a new version picks its own first
devices. The device itself compares: after the upgrade its `$SWVER` is the new version,
and it does not retry an Upgrade Rule whose expanded URL did not change
(the SPA model; docs/device-checklist.md, U3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

from gitprov.macros import normalise_mac
from gitprov.rule_url import joined

if TYPE_CHECKING:
    from gitprov.inventory import Inventory

UPGRADE_RULE = "provision.upgrade_rule"
UPGRADE_ENABLE = "provision.upgrade_enable"


def rollout_point(mac: str, version: str) -> Fraction:
    """Where a device (12 lower-case hex digits) falls in [0, 1) for `version`."""
    digest = hashlib.sha256(f"{version}/{mac}".encode()).digest()
    return Fraction(int.from_bytes(digest[:8], "big"), 2**64)


class Rollout(NamedTuple):
    """Which devices get the upgrade: all of them when `everyone`, else those listed in
    `macs` and those whose point is below `share`."""

    everyone: bool = True
    share: Fraction = Fraction(0)
    macs: frozenset[str] = frozenset()

    def selects(self, mac: str, version: str) -> bool:
        if self.everyone or mac in self.macs:
            return True
        return self.share > 0 and rollout_point(mac, version) < self.share


def rollout_of(firmware: Mapping[str, Any]) -> Rollout:
    raw = firmware.get("rollout")
    if not isinstance(raw, dict):
        return Rollout()
    percent = raw.get("percent")
    share = Fraction(0)
    if isinstance(percent, int | float) and not isinstance(percent, bool):
        # Through its decimal text: 0.1 is a tenth, not the binary float next to it.
        # That text is what the YAML says: validation refuses a percent written with
        # digits the float lost (GP121: 99.99999999999999999 is 100.0 here).
        share = min(max(Fraction(str(percent)) / 100, Fraction(0)), Fraction(1))
    macs = raw.get("macs")
    listed = (
        frozenset(
            m for m in (normalise_mac(x) for x in macs if isinstance(x, str)) if m is not None
        )
        if isinstance(macs, list)
        else frozenset()
    )
    return Rollout(everyone=False, share=share, macs=listed)


class Upgrade(NamedTuple):
    """A model's upgrade as its devices' files carry it."""

    model: str
    version: str
    file: str
    rule: str  # the Upgrade Rule, macros kept: the device expands them
    rule_key: str
    enable_key: str | None
    rollout: Rollout

    def selects(self, mac: str) -> bool:
        return self.rollout.selects(mac, self.version)


def default_rule(provisioning_url: str | None, file: str) -> str | None:
    """The Upgrade Rule when the model gives none: the image is published in every root,
    beside the devices' files, so it is where the Profile Rule points."""
    if not provisioning_url:
        return None
    return joined(provisioning_url, file)


def upgrade_of(
    name: str,
    firmware: Mapping[str, Any],
    bindings: Mapping[str, str],
    provisioning_url: str | None,
) -> Upgrade | None:
    """The upgrade a model tells its devices about, or None: no image, no version, no
    bound Upgrade Rule key, or no rule (validation, GP130, says which)."""
    file, version = firmware.get("file"), firmware.get("version")
    rule_key = bindings.get(UPGRADE_RULE)
    if not isinstance(file, str) or not isinstance(version, str) or rule_key is None:
        return None
    rule = firmware.get("rule")
    if not isinstance(rule, str):
        rule = default_rule(provisioning_url, file)
    if not rule:
        return None
    return Upgrade(
        name, version, file, rule, rule_key, bindings.get(UPGRADE_ENABLE), rollout_of(firmware)
    )


class RolloutCount(NamedTuple):
    """How many of a model's devices a commit tells to upgrade (for plans)."""

    model: str
    version: str
    selected: int
    devices: int
    selected_before: int = 0  # of the same version, in the commit compared with
    # The version the commit compared with told the model's devices to upgrade to by this
    # very Upgrade Rule ("" when none did): see `same_rule`.
    same_rule_as: str = ""


def rollouts(inv: Inventory) -> list[RolloutCount]:
    """Per model that tells devices to upgrade, how many of its devices it tells."""
    macs: dict[str, list[str]] = {}
    for d in inv.devices:
        macs.setdefault(d.model, []).append(d.mac)
    out = []
    for name, up in sorted(upgrades_by_model(inv).items()):
        mine = macs.get(name, [])
        out.append(RolloutCount(name, up.version, sum(map(up.selects, mine)), len(mine)))
    return out


def upgrades_by_model(inv: Inventory) -> dict[str, Upgrade]:
    """The upgrade each model tells its devices about (those that tell one)."""
    url = inv.fleet.provisioning_url
    found = {name: upgrade_of(name, m.firmware, m.bindings, url) for name, m in inv.models.items()}
    return {name: up for name, up in found.items() if up is not None}


def same_rule(before: Upgrade, after: Upgrade) -> bool:
    """Whether `after`, another version of `before`'s model, tells devices to upgrade
    by the same Upgrade Rule: a device does not fetch an Upgrade Rule again whose
    expanded URL has not changed (the SPA model the overview copies), so the devices
    that took `before`'s image never fetch the new one. A rule holding $SWVER expands
    anew after each upgrade, so it is not the same rule."""
    return (
        before.model == after.model
        and before.version != after.version
        and before.rule == after.rule
        and "SWVER" not in after.rule
    )
