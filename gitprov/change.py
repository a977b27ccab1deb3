"""What a publish builds when the roots hold an earlier commit of the same line: only the
devices the commit changed since, every other device's files taken over as the manifest
records them, without a look at the device (gitprov.publish decides when it may).

Two things tell which devices changed between the published commit P and the commit C
being published, without a pass over the fleet:

- the version deltas (gitprov.version) of the first-parent commits after P up to C: the
  keys whose (digest, count, commit) entry changed on the way. With the same floor and
  no change to the bootstrap's entry, every other device has the number it had at P;
- the tree diff P..C: the device files added, changed or removed. A device's bytes
  depend on its file, its model, its profiles, the fleet settings and the sealed secrets
  (Builder._keys): when only device files changed, every other device's inputs are
  those P's build had.

A device changed either way is built; one the version deltas name that is gone at C is
removed. Anything else (a changed profile, model or setting, a version changed without a
changed file, such as an edit reverted in between, a history that is not a first-parent
line from P) returns None: the publish builds every device, as a fresh clone would.
"""

from __future__ import annotations

from dataclasses import dataclass

import pygit2

from gitprov.inventory import DEVICE, Documents, Inventory, build_inventory, kind_of
from gitprov.pipeline import Loaded, Pipeline
from gitprov.plan import Kind, Manifest, ManifestEntry
from gitprov.version import ABSENT, BOOTSTRAP, State
from gitprov.yamldoc import Document

# How many first-parent commits back the published commit is looked for: beyond, a full
# build (which carries unchanged devices over by their recorded inputs) is as cheap.
DEPTH = 64


@dataclass(frozen=True)
class Change:
    """A commit's change from the published one, as a publish needs it."""

    # The commit's settings, profiles and models, and only the devices to build.
    inventory: Inventory
    # The published files of every other device: file name -> the manifest's entry.
    carried: dict[str, ManifestEntry]
    gone: frozenset[str]  # MACs of published devices the commit removed

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
    if previous.commit == cid or state.floor != floor or pipeline.repo is None:
        return None
    versions = _changed_keys(pipeline, cid, previous.commit)
    if versions is None or BOOTSTRAP in versions:
        return None  # the bootstrap's count lifts every device's number
    try:
        old = pipeline.repo.get(previous.commit)
    except (ValueError, pygit2.GitError):
        return None
    if not isinstance(old, pygit2.Commit):
        return None
    docs = loaded.docs
    changed: list[Document] = []
    for path, oid in pipeline.changes(old, commit).items():
        kind = kind_of(path, pipeline.inventory_dir)
        if kind is None:
            continue  # not an inventory file: nothing is built from it
        if kind != DEVICE:
            return None
        if oid is None:
            continue  # removed: its MAC's entry is among the changed versions
        doc = docs.document(path)
        if doc is None:
            return None
        changed.append(doc)
    changed.sort(key=lambda d: d.path)
    part = Documents(
        docs.inventory_dir,
        {k: docs.of(k) for k in docs.kinds() if k != DEVICE} | {DEVICE: tuple(changed)},
        {},
    )
    inventory = build_inventory(part)
    built = {d.mac for d in inventory.devices}
    gone = set()
    for key in versions - built:
        if state.entry(key)[0] != ABSENT:
            return None  # a number changed, the file did not (an edit reverted since P)
        gone.add(key)
    affected = built | gone
    carried = {
        name: e
        for name, e in previous.files.items()
        if e.kind == Kind.DEVICE and e.mac not in affected
    }
    return Change(inventory, carried, frozenset(gone))


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
