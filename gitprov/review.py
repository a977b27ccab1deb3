"""What merging a change would do to each device: the review plan of a pull request.

Both sides are rendered with secrets stood in by digests of their sealed text, so a plan
can say "secret changed" and never what it changed to; no private key is needed.

Besides the devices, a plan shows what a publisher would refuse: a change of where files
are published (`publish.http_root`, `tftp_root`, `state_dir`, `firmware_dir`), and the
share of the base's devices the change removes against `publish.max_removal`.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
from collections.abc import Set
from dataclasses import dataclass
from fractions import Fraction

import pygit2

from gitprov.compile import placeholder_resolver
from gitprov.errors import InvalidInventory
from gitprov.firmware import RolloutCount, rollouts, same_rule, upgrades_by_model
from gitprov.formats import flyingvoice
from gitprov.inventory import Fleet, Inventory
from gitprov.pipeline import Loaded, Pipeline
from gitprov.strand import Stranding, stranding, stranding_of
from gitprov.version import Evaluated, State, step


class Change(enum.StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


@dataclass(frozen=True)
class DeviceChange:
    mac: str
    change: Change
    file_name: str
    old_version: int | None
    new_version: int | None  # the version if this were the next commit on the base branch
    diff: tuple[str, ...]  # unified diff lines of the redacted rendering


@dataclass(frozen=True)
class Renumbered:
    """A device whose file keeps its settings but gets another version: a history on
    the branch that changed it and changed it back. Its devices fetch the file again."""

    mac: str
    file_name: str
    old_version: int
    new_version: int


@dataclass(frozen=True)
class TargetChange:
    """A publish path the change sets differently, as written ("" when unset)."""

    setting: str  # e.g. publish.http_root
    old: str
    new: str


@dataclass(frozen=True)
class Review:
    base: str
    head: str
    changes: tuple[DeviceChange, ...]
    unchanged: int
    devices_before: int | None = None  # the base's devices (None: a plan saved without)
    # The publish.max_removal a publisher applies: the stricter of both sides'.
    max_removal: Fraction | None = None
    target_changes: tuple[TargetChange, ...] = ()
    # Per model whose firmware tells devices to upgrade: how many of its devices, and how
    # many the base told to upgrade to the same version.
    upgrades: tuple[RolloutCount, ...] = ()
    # Of the unchanged devices, those whose version still changes.
    renumbered: tuple[Renumbered, ...] = ()
    # What the devices' Profile Rule holds that the change does not keep (gitprov.strand);
    # a key by its sealed text: the plan has no private key to tell a value sealed again.
    stranding: tuple[Stranding, ...] = ()

    @property
    def removed(self) -> int:
        return sum(c.change is Change.REMOVE for c in self.changes)

    @property
    def removal_share(self) -> Fraction | None:
        if not self.devices_before:
            return None
        return Fraction(self.removed, self.devices_before)

    @property
    def mass_removal(self) -> bool:
        """What a publisher refuses without --allow-mass-removal (one device never is)."""
        share = self.removal_share
        return (
            self.removed > 1
            and share is not None
            and self.max_removal is not None
            and share > self.max_removal
        )


_PATHS = ("http_root", "tftp_root", "state_dir", "firmware_dir")


def target_changes(base: Fleet, head: Fleet) -> tuple[TargetChange, ...]:
    def written(fleet: Fleet, name: str) -> str:
        if name == "http_root":
            return ", ".join(fleet.http_roots)
        if name == "tftp_root":
            return ", ".join(fleet.tftp_roots)
        value = fleet.state_dir if name == "state_dir" else fleet.firmware_dir
        return value or ""

    return tuple(
        TargetChange(f"publish.{name}", old, new)
        for name in _PATHS
        if (old := written(base, name)) != (new := written(head, name))
    )


def _rendered(
    p: Pipeline, loaded: Loaded, macs: Set[str] | None = None
) -> dict[str, tuple[str, str]]:
    """Each device's file name and text, secrets redacted (only those of `macs`)."""
    inv = loaded.inventory
    assert inv is not None
    resolve = placeholder_resolver(inv.sealed)
    out = {}
    for d in inv.devices:
        if macs is not None and d.mac not in macs:
            continue
        cfg = p.compile(inv, d, resolve)
        lines = []
        for e in cfg.entries:
            value = e.value
            if e.key == "DBID_PROFILE_RULE" and value.startswith("[--key "):
                # The key was derived from a stand-in of the sealed secret: not the real key,
                # but still better not printed; its hash shows that it changed.
                tag = hashlib.sha256(value.encode()).hexdigest()[:8]
                value = f"[--key <key {tag}>" + value[value.index("]") :]
            lines.append((e.key, value))
        out[d.mac] = (cfg.file_name, flyingvoice.render_lines(lines).decode())
    return out


def review(p: Pipeline, base: pygit2.Commit, head: pygit2.Commit) -> Review:
    assert p.repo is not None
    asked = head
    if head.id != base.id and p.repo.descendant_of(base.id, head.id):
        head = base  # (merging an ancestor into the base changes nothing)
    base_loaded = p.load_commit(base)
    head_loaded = p.load_commit(head)
    for side in (base_loaded, head_loaded):
        if side.inventory is None:
            raise InvalidInventory(
                f"the inventory has {len(side.errors)} error(s)",
                hint="fix them first: `gitprov validate`",
                problems=side.problems,
            )
    assert base_loaded.inventory is not None and head_loaded.inventory is not None
    # A device built from the same blobs on both sides (its file, model, profiles, the
    # fleet settings and secrets) renders the same: only the others are rendered, twice
    # (at 100,000 devices, a one-device change took 33 s, every device rendered twice).
    before_keys = p.builder.input_keys(base_loaded.inventory)
    after_keys = p.builder.input_keys(head_loaded.inventory)
    same = {mac for mac, key in after_keys.items() if before_keys.get(mac) == key}
    differ = (set(before_keys) | set(after_keys)) - same
    old = _rendered(p, base_loaded, differ)
    new = _rendered(p, head_loaded, differ)
    base_state = p.state(base)
    head_state = p.state(head)
    old_versions = base_state.versions()
    # As merging head into base numbers it (a fast-forward, where head descends from base,
    # gives the same: head's own numbers are never lower than base's).
    merged = step(
        "merge",
        [base_state, head_state],
        Evaluated({k: head_state.entry(k)[0] for k in head_state.present()}, head_state.floor),
    )
    changes = []
    renumbered = []
    unchanged = len(same)
    # An unchanged device whose number changes anyway (see Renumbered): rendered for its
    # file name (a branch that changed it and changed it back: a few at most).
    moved = [
        mac
        for mac in same
        if mac in old_versions and _version(merged, mac) not in (None, old_versions[mac].version)
    ]
    if moved:
        names = _rendered(p, head_loaded, set(moved))
        for mac in sorted(moved):
            new_v = _version(merged, mac)
            assert new_v is not None
            renumbered.append(Renumbered(mac, names[mac][0], old_versions[mac].version, new_v))
    for mac in sorted(set(old) | set(new)):
        before, after = old.get(mac), new.get(mac)
        old_v = old_versions[mac].version if mac in old_versions else None
        if before == after:
            unchanged += 1
            new_v = _version(merged, mac) if after is not None else None
            if after is not None and old_v is not None and new_v is not None and new_v != old_v:
                renumbered.append(Renumbered(mac, after[0], old_v, new_v))
            continue
        kind = Change.ADD if before is None else Change.REMOVE if after is None else Change.CHANGE
        name = (after or before or ("", ""))[0]
        diff = tuple(
            difflib.unified_diff(
                (before[1] if before else "").splitlines(),
                (after[1] if after else "").splitlines(),
                f"a/{before[0]}" if before else "/dev/null",
                f"b/{after[0]}" if after else "/dev/null",
                lineterm="",
            )
        )
        changes.append(
            DeviceChange(mac, kind, name, old_v, _version(merged, mac) if after else None, diff)
        )
    old_fleet, new_fleet = base_loaded.inventory.fleet, head_loaded.inventory.fleet
    return Review(
        str(base.id),
        str(asked.id),
        tuple(changes),
        unchanged,
        devices_before=len(base_loaded.inventory.devices),
        max_removal=min(old_fleet.max_removal, new_fleet.max_removal),
        target_changes=target_changes(old_fleet, new_fleet),
        upgrades=upgrades(base_loaded.inventory, head_loaded.inventory),
        renumbered=tuple(sorted(renumbered, key=lambda r: r.mac)),
        stranding=_stranding(base_loaded.inventory, head_loaded.inventory),
    )


def _stranding(base: Inventory, head: Inventory) -> tuple[Stranding, ...]:
    """What a publisher would refuse as stranding (gitprov.publish): the fleet's file name
    and key, else each device's own key given, changed or taken away."""

    # A rotated repository key re-seals every value (`secrets rotate`): without the
    # private key a value re-sealed and one changed look alike, so neither is said. Under
    # one public key, a new sealed text is a value set anew.
    rotated = base.public_key != head.public_key

    def same(old: str, new: str) -> bool | None:
        before, now = base.sealed.get(old), head.sealed.get(new)
        if before is None or now is None:
            return None
        return True if before == now else (None if rotated else False)

    found = stranding(base.fleet, head.fleet, same)
    if found:
        return found
    before = {d.mac: d for d in base.devices}
    out = []
    for device in head.devices:
        was = before.get(device.mac)
        if was is None:
            continue  # (a new device holds nothing yet)
        held = None if was.key is None else str(was.key)
        one = stranding_of(device, held, base.fleet, head.fleet, same)
        if one is not None:
            out.append(one)
    return tuple(out)


def upgrades(base: Inventory, head: Inventory) -> tuple[RolloutCount, ...]:
    before = {(r.model, r.version): r.selected for r in rollouts(base)}
    old, new = upgrades_by_model(base), upgrades_by_model(head)
    out = []
    for r in rollouts(head):
        r = r._replace(selected_before=before.get((r.model, r.version), 0))
        was = old.get(r.model)
        if was is not None and same_rule(was, new[r.model]):
            r = r._replace(same_rule_as=was.version)
        out.append(r)
    return tuple(out)


def _version(state: State, key: str) -> int | None:
    info = state.info(key)
    return info.version if info is not None else None
