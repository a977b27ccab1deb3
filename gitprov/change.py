"""What a publish builds when the roots hold an earlier commit of the same line: only the
devices whose files change, every other device's files taken over as the manifest records
them, without a look at the device (gitprov.publish decides when it may).

A device's bytes are its version line and what its content digest covers (gitprov.builder
`Template.digest`: the body, the file name, the cipher and the keys, each secret by its
sealed text), encrypted with the private key the build record names. So between the
published commit P and the commit C being published, with the same private key and the
same inputs, a device's file changes only if its version entry does: the version deltas
(gitprov.version) of the first-parent commits after P up to C name every such device, as
long as the floor and the option-66 bootstrap's entry (whose count lifts every number)
did not move. The devices whose file changed in the tree diff are built too (a new blob
may make the same bytes, or move the device to another model), and a device the deltas
name that is gone at C is removed.

Anything else returns None, and the publish builds every device, as a fresh clone would:
another floor, a bootstrap that changed, a history that is not a first-parent line from
P within DEPTH commits, a delta the cache does not have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import pygit2

from gitprov.inventory import DEVICE, Inventory, build_inventory, kind_of
from gitprov.pipeline import Loaded, Pipeline
from gitprov.plan import EntryTable, Kind, Manifest, ManifestEntry
from gitprov.version import ABSENT, BOOTSTRAP, State
from gitprov.yamldoc import Document

# How many first-parent commits back the published commit is looked for: beyond, a full
# build (which carries unchanged devices over by their recorded inputs) is as cheap.
DEPTH = 64


class Change(NamedTuple):
    """A commit's change from the published one, as a publish needs it."""

    # The commit's settings, profiles and models, and only the devices to build.
    inventory: Inventory
    # The published files of every other device: file name -> the manifest's entry.
    carried: Mapping[str, ManifestEntry]
    gone: frozenset[str]  # MACs of published devices the commit removed
    # Every device's build inputs (see Builder.input_keys) when files other than devices'
    # changed (None: those of the devices taken over did not change).
    keys: dict[str, tuple[str, ...]] | None = None

    @property
    def affected(self) -> frozenset[str]:
        """The MACs whose published files this publish does not take over."""
        return frozenset(d.mac for d in self.inventory.devices) | self.gone


def change_since(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    loaded: Loaded,
    state: State,
    previous: Manifest,
    floor: int,
) -> Change | None:
    """The change of `commit` (validated: `loaded`, its version `state`) from the
    commit `previous` names, whose build had the version floor `floor` and numbered
    every device by the rule; None when it cannot be told without a full build."""
    cid = str(commit.id)
    if previous.commit == cid or state.floor != floor:
        return None
    versions = _changed_keys(pipeline, cid, previous.commit)
    if versions is None or BOOTSTRAP in versions:
        return None  # the bootstrap's count lifts every device's number
    old = pipeline.commit(previous.commit)
    if old is None:
        return None
    docs = loaded.docs
    changed: list[Document] = []
    others = False  # whether a file other than a device's changed: a profile, a model...
    for path, oid in pipeline.changes(old, commit).items():
        kind = kind_of(path, pipeline.inventory_dir)
        others = others or kind not in (DEVICE, None)
        if kind != DEVICE or oid is None:
            continue  # a removed device's MAC is among the changed versions
        doc = docs.document(path)
        if doc is None:
            return None
        changed.append(doc)
    inventory = build_inventory(docs.with_devices(changed))
    built = {d.mac for d in inventory.devices}
    # Numbers that changed without their device's file: a profile, a model, a setting or
    # a secret it uses changed, or an edit was reverted since.
    more = {key for key in versions - built if state.entry(key)[0] != ABSENT}
    gone = versions - built - more
    keys = None
    if more or others:
        whole = build_inventory(docs)  # every device, from its facts: read if compiled
        if more:
            wanted = built | more
            devices = tuple(d for d in whole.devices if d.mac in wanted)
            if len(devices) != len(wanted):
                return None
            inventory = dataclasses.replace(inventory, devices=devices)
            built = wanted
        if others:
            # The devices taken over keep their bytes, not their inputs' blob ids.
            keys = pipeline.builder.input_keys(whole)
    affected = built | gone
    files = previous.files
    carried: Mapping[str, ManifestEntry]
    if isinstance(files, EntryTable):
        # (a manifest read from its index: the entries taken over are never made)
        dropped = files.names_other_than("kind", Kind.DEVICE)
        dropped += files.names_with("mac", affected)
        carried = files.without(dropped)
    else:
        carried = {
            n: e for n, e in files.items() if e.kind == Kind.DEVICE and e.mac not in affected
        }
    return Change(inventory, carried, frozenset(gone), keys)


def _changed_keys(pipeline: Pipeline, cid: str, since: str) -> set[str] | None:
    """The version keys whose entry changed on the first-parent line from `since`
    (excluded) to `cid`, from the version cache's deltas; None when `since` is not on
    that line within DEPTH commits or a delta is not at hand."""
    keys: set[str] = set()
    at = cid
    for _ in range(DEPTH):
        delta = pipeline.version_cache.delta(at)
        if delta is None or not delta.parents:
            return None
        keys.update(delta.changed)
        at = delta.parents[0]
        if at == since:
            return keys
    return None
