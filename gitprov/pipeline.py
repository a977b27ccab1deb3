"""The stages wired together for one repository, with the caches that make a new commit
cost what it changed (parse by blob id, schema problems by blob id, device digests by the
blob ids of everything the device inherits).

    source → documents → validate → inventory → compile → render → version → encrypt
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import posixpath
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path

import pygit2

from gitprov import __version__, checkcache
from gitprov import version as versioning
from gitprov.buckets import Buckets
from gitprov.builder import BOOTSTRAP as BOOTSTRAP
from gitprov.builder import BootstrapFile as BootstrapFile
from gitprov.builder import Build as Build
from gitprov.builder import Builder, Prior
from gitprov.builder import Conflict as Conflict
from gitprov.builder import DeviceFile as DeviceFile
from gitprov.builder import Served as Served
from gitprov.builder import VersionConflict as VersionConflict
from gitprov.builder import _served_version as _served_version
from gitprov.builder import bootstrap_files as bootstrap_files
from gitprov.builder import secret_resolver as secret_resolver
from gitprov.catalog import Catalog, load_catalog
from gitprov.checkcache import CheckCache, Kept
from gitprov.compile import DeviceConfig, SecretResolver
from gitprov.errors import InvalidInventory, Problem, missing_object
from gitprov.inventory import (
    DEVICE,
    FLEET,
    FLEET_FILE,
    MODEL,
    PROFILE,
    Device,
    DeviceFacts,
    Documents,
    Inventory,
    ParseCache,
    _Lazy,
    _limits,
    build_inventory,
    device_facts,
    kind_of,
    known_facts,
    load_documents,
    read_documents,
    update_documents,
)
from gitprov.limits import Limits
from gitprov.overlay import editable
from gitprov.parallel import Ahead, can_fork
from gitprov.rules import HistoryFloor
from gitprov.source import (
    DEFAULT_INVENTORY_DIR,
    CommitSource,
    FileRef,
    Source,
)

# (named here, as the pipeline looks it up: a test counts the diffs made in this process)
from gitprov.source import tree_changes as tree_changes
from gitprov.validate import Options, SchemaCache, validate
from gitprov.yamldoc import Document, parse

RENDER_FORMAT = "flyingvoice-1"


class Loaded:
    """A validated inventory. `inventory` (None when any problem is an error) is built on
    first use: validating from a kept snapshot reads only the changed files, and only
    what needs every device (building, showing) reads the rest."""

    def __init__(
        self, docs: Documents, problems: tuple[Problem, ...], inventory: Inventory | None = None
    ) -> None:
        self.docs = docs
        self.problems = problems
        self._inventory = inventory

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)

    @property
    def inventory(self) -> Inventory | None:
        if self._inventory is None and not self.errors:
            self._inventory = build_inventory(self.docs)
        return self._inventory

    def settings(self) -> Inventory:
        """The inventory for its settings, profiles, models and secrets: the whole one
        when it is built already, else one without devices (listing 100,000 devices
        from their facts is most of a one-device publish that builds one). Only for a
        commit without errors."""
        if self._inventory is not None:
            return self._inventory
        return build_inventory(self.docs.with_devices(()))


class _Snapshot:
    """What validating one commit read, kept for its children (and on disk, see
    gitprov.checkcache)."""

    def __init__(
        self,
        commit: str,
        docs: Documents,
        problems: dict[str, tuple[Problem, ...]],
        base: _Snapshot | None = None,
        changes: Mapping[str, str | None] | None = None,
        distance: int | None = 0,
    ) -> None:
        self.commit = commit
        self.docs = docs
        self.problems = problems  # the problems of reading each file, by path
        # The snapshot this one was derived from and the tree diff since (for digests).
        self.base = base
        self.changes = changes
        # Commits and changed files since the nearest snapshot kept on disk (None: none).
        self.distance = distance
        self.digests: Mapping[str, str] | None = None  # version key -> digest (valid only)
        self.macs: Mapping[str, str] | None = None  # device path -> MAC, with digests
        # The digests that differ from those of the snapshot of commit `changed_since`
        # (ABSENT: gone), when `_digest` derived them from it (see versioning.Evaluated).
        self.changed: dict[str, str] | None = None
        self.changed_since = ""
        self.kept_digests = False  # whether the disk copy holds the digests


# A snapshot is written to disk when this many commits plus changed files separate it
# from the last one written: a child of a kept commit then reads only what changed since.
_KEEP_EVERY = 64

# How far back along first parents a kept snapshot is looked for.
_LOOK_BACK = 32


def _far(snap: _Snapshot) -> bool:
    """Whether the snapshot is far enough from the last one written to be written."""
    return snap.distance is None or snap.distance >= _KEEP_EVERY


class Pipeline:
    def __init__(
        self,
        repo: pygit2.Repository | None,
        inventory_dir: str = DEFAULT_INVENTORY_DIR,
        catalog: Catalog | None = None,
        options: Options | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.repo = repo
        self.inventory_dir = inventory_dir
        self.catalog = catalog or load_catalog()
        self.options = options or Options()
        self.parse_cache = ParseCache()
        self.schema_cache = SchemaCache()
        self.builder = Builder(self.catalog)
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        # Told (stage, done, total) on long work: history evaluation, building devices.
        self.progress: Callable[[str, int, int], None] | None = None
        # Everything a version state depends on besides the commit (which names its whole
        # history): a state computed for another inventory directory, catalog, renderer,
        # rule or gitprov (whose validation decides which commits count) is never read.
        salt = hashlib.sha256(
            "\0".join(
                (
                    __version__,
                    self.catalog.digest,
                    RENDER_FORMAT,
                    self.inventory_dir.strip("/"),
                    versioning.rule(),
                )
            ).encode()
        ).hexdigest()
        self.version_cache = versioning.VersionCache(cache_dir, salt)
        check_salt = hashlib.sha256(f"{salt}\0checks-{checkcache.FORMAT}".encode()).hexdigest()
        self.checks = CheckCache(cache_dir, check_salt) if cache_dir is not None else None
        self._floors: dict[str, tuple[int, str]] = {}  # commit -> (floor, floor_by)
        self._ahead: Ahead[tuple[str, str], dict[str, str | None]] | None = None
        self._last_diff: tuple[tuple[str, str], dict[str, str | None]] | None = None
        # Tree diffs worked out by another process (see gitprov.headstart): (old commit,
        # new commit, inventory directory) -> the changes, or None when it has not that one.
        self.known_diff: Callable[[str, str, str], dict[str, str | None] | None] | None = None
        # A process that publishes one commit and exits (`gitprov publish`): what
        # validation keeps for a next commit is let go once the commit's snapshot is on
        # disk. Everything here is a cache: this changes what is held, never an answer.
        self.one_commit = False

    def commit(self, cid: str | pygit2.Oid) -> pygit2.Commit | None:
        """The commit `cid` names, None when the repository has no such commit (another
        repository's, a damaged one, or no repository)."""
        if self.repo is None:
            return None
        try:
            found = self.repo.get(cid)
        except (ValueError, pygit2.GitError):
            return None
        return found if isinstance(found, pygit2.Commit) else None

    # -- load and validate -------------------------------------------------------------
    def source(self, commit: pygit2.Commit) -> CommitSource:
        assert self.repo is not None
        return CommitSource(self.repo, commit, self.inventory_dir)

    def load(self, source: Source, history_floor: HistoryFloor | None = None) -> Loaded:
        docs, problems = load_documents(source, self.parse_cache)
        found = validate(
            docs, self.catalog, self.options, history_floor, problems, self.schema_cache
        )
        return Loaded(docs, tuple(found))

    def load_commit(self, commit: pygit2.Commit) -> Loaded:
        """The commit's inventory, validated against its history (GP113, see
        `head_floor`). From the nearest earlier snapshot (in memory, or kept on disk by
        an earlier process) and a tree diff when there is one: only the files the commit
        changed are read.

        The snapshot is written to disk for the next process when it is far from the
        last one written (`state` adds the version digests to it once it derives them)."""
        history = self.head_floor(commit)
        snap, found = self._check(commit, self.options, history, keep=True)
        return Loaded(snap.docs, tuple(found))

    def head_floor(self, head: pygit2.Commit) -> HistoryFloor | None:
        """What GP113 compares head's version_floor with, as exact as validating head
        needs: the parents' floors when known (in memory, kept, or from their version
        states); else, when head declares at least the highest version_floor any
        ancestor declares (the history's floor can only be lower: it counts valid
        commits only), that bound; else the exact floor from the whole history
        (`history_floor`, which validates every ancestor not known). A fresh clone's
        `validate` then reads one gitprov.yaml per ancestor, not every commit's files."""
        repo = self.repo
        assert repo is not None
        parents = list(head.parent_ids)
        if not parents or repo.is_shallow:
            return self.history_floor(parents)
        known = [self._known_floor(str(pid)) for pid in parents]
        if all(k is not None for k in known):
            value, by = max((k for k in known if k is not None), key=lambda k: k[0])
            return HistoryFloor(value, by)
        path = posixpath.join(self.inventory_dir, FLEET_FILE) if self.inventory_dir else FLEET_FILE
        floors: dict[str, int | None] = {}

        def declared(commit: pygit2.Commit) -> int | None:
            try:
                oid = str(commit.tree[path].id)
            except KeyError:
                return None
            if oid not in floors:
                blob = repo.get(oid)
                raw = blob.data if isinstance(blob, pygit2.Blob) else b""
                floors[oid] = _version_floor(parse(path, oid, raw, fleet_file=True)[0])
            return floors[oid]

        try:
            own = declared(head)
            bound = 0
            for commit in repo.walk(head.id):
                if commit.id != head.id:
                    bound = max(bound, declared(commit) or 0)
        except (pygit2.GitError, KeyError, ValueError):
            return self.history_floor(parents)  # says what is missing
        if own is None or own >= bound:
            return HistoryFloor(bound, "")
        return self.history_floor(parents)

    def _known_floor(self, cid: str) -> tuple[int, str] | None:
        """The version rule's floor at `cid` when known without validating anything."""
        hit = self._floors.get(cid)
        if hit is None and self.checks is not None:
            hit = self.checks.floor(cid)
        if hit is None:
            state = self.version_cache.state(cid)
            if state is not None:
                hit = (state.floor, state.floor_by)
        return hit

    def history_floor(self, parents: list[pygit2.Oid]) -> HistoryFloor | None:
        """The highest version_floor of the given commits and their ancestors.

        In a shallow clone that cannot be known: the first parent's own floor stands in,
        and GP113 says so (validation must still work in a CI checkout of depth 1)."""
        assert self.repo is not None
        if not parents and not self.repo.is_shallow:
            return None
        try:
            versioning.require_complete(self.repo)
            best = versioning.State()
            for pid in parents:
                commit = self.repo.get(pid)
                if not isinstance(commit, pygit2.Commit):
                    raise versioning.missing_commit(self.repo, str(pid))
                floor, floor_by = self._floor(commit)
                if floor > best.floor:
                    best = versioning.State(floor, floor_by)
            return HistoryFloor(best.floor, best.floor_by)
        except versioning.IncompleteHistory:
            # A shallow commit may show no parents at all (its parents are cut off).
            parent = self.repo.get(parents[0]) if parents else None
            if not isinstance(parent, pygit2.Commit):
                return HistoryFloor(0, "", complete=False)
            docs = load_documents(self.source(parent), self.parse_cache)[0]
            fleet = docs.of(FLEET)
            value = _version_floor(fleet[0] if fleet else None) or 0
            return HistoryFloor(value, str(parent.id), complete=False)

    def _floor(self, head: pygit2.Commit) -> tuple[int, str]:
        """The version rule's floor at `head` and the commit that set it (`State.floor`,
        `State.floor_by`) without the rest of the version state: it needs only which
        commits validate and what they declare, not any device's digest. Commits not
        known (in memory, as a kept floor or version state) are validated, parents first."""
        assert self.repo is not None
        known: dict[str, versioning.State] = {}

        def cached(cid: str) -> versioning.State | None:
            hit = self._known_floor(cid)
            return versioning.State(*hit) if hit is not None else None

        order: list[pygit2.Commit] = []
        stack: list[tuple[pygit2.Commit, bool]] = [(head, False)]
        parents_of: dict[str, list[str]] = {}
        while stack:
            commit, expanded = stack.pop()
            cid = str(commit.id)
            if expanded:
                order.append(commit)
                continue
            if cid in known or cid in parents_of:
                continue
            hit = cached(cid)
            if hit is not None:
                known[cid] = hit
                continue
            parents: list[pygit2.Commit] = []
            for pid in commit.parent_ids:
                parent = self.repo.get(pid)
                if not isinstance(parent, pygit2.Commit):
                    raise versioning.missing_commit(self.repo, str(pid))
                parents.append(parent)
            parents_of[cid] = [str(p.id) for p in parents]
            stack.append((commit, True))
            stack.extend((p, False) for p in reversed(parents))
        for i, commit in enumerate(order):
            cid = str(commit.id)
            parent_states = [known[pid] for pid in parents_of[cid]]
            floor_min = max((s.floor for s in parent_states), default=0)
            history = HistoryFloor(floor_min, "") if commit.parent_ids else None
            snap, found = self._check(commit, Options(), history)
            result = None
            if not any(p.is_error for p in found):
                result = versioning.Evaluated({}, _declared_floor(snap.docs))
            state = versioning.step(cid, parent_states, result)
            known[cid] = versioning.State(state.floor, state.floor_by)
            self._floors[cid] = (state.floor, state.floor_by)
            if self.checks is not None:
                self.checks.store_floor(cid, state.floor, state.floor_by)
            if self.progress is not None:
                self.progress("history", i + 1, len(order))
        state = known[str(head.id)]
        return state.floor, state.floor_by

    def _check(
        self,
        commit: pygit2.Commit,
        options: Options,
        history: HistoryFloor | None,
        *,
        keep: bool = False,
    ) -> tuple[_Snapshot, list[Problem]]:
        """The commit's snapshot and its problems under `options` and `history`; with
        `keep`, the snapshot is written to disk unless one close to it is there (a
        history walk keeps none: only what a command asked about is worth a file)."""
        snap = self._snapshot(commit)
        found = validate(
            snap.docs,
            self.catalog,
            options,
            history,
            [p for ps in snap.problems.values() for p in ps],
            self.schema_cache,
        )
        if keep and _far(snap):
            self._keep(snap)
        return snap, found

    def _snapshot(self, commit: pygit2.Commit) -> _Snapshot:
        """The files of `commit`, read: from the nearest snapshot of a first-parent
        ancestor (in memory, else kept on disk) and a tree diff, or else every file."""
        cid = str(commit.id)
        hit = self._snapshots.get(cid)
        if hit is not None:
            self._snapshots.move_to_end(cid)
            return hit
        base: _Snapshot | None = None
        at = commit
        for steps in range(_LOOK_BACK + 1):
            if steps:
                base = self._snapshots.get(str(at.id))
            if base is None:
                base = self._kept(at)
            if base is not None or not at.parent_ids:
                break
            try:
                at = at.parents[0]
            except (KeyError, pygit2.GitError):
                break
        source = self.source(commit)
        if base is None:
            docs, problems = read_documents(source, self.parse_cache)
            snap = _Snapshot(cid, docs, problems, distance=None)
        elif base.commit == cid:
            snap = base
        else:
            changes = self.changes(at, commit)
            docs, problems = update_documents(
                base.docs, base.problems, changes, source, self.parse_cache
            )
            base.base = None  # one level: a chain of snapshots would keep every one
            distance = None if base.distance is None else base.distance + steps + len(changes)
            snap = _Snapshot(cid, docs, problems, base, changes, distance)
        self._remember(snap)
        return snap

    def _kept(self, commit: pygit2.Commit) -> _Snapshot | None:
        """The snapshot an earlier process kept for `commit`, ready to be updated."""
        if self.checks is None:
            return None
        kept = self.checks.load(str(commit.id))
        if kept is None:
            return None
        source = self.source(commit)
        files = kept.files
        limits = _limits(files, source, self.parse_cache)
        by_kind: dict[str, tuple[Document, ...] | _Lazy] = {}
        # Every kind's blob ids in one map: the largest kind's (a fleet's devices, as it
        # was read: no dict made of it) with the others' few set over it.
        kinds = sorted(kept.oids.items(), key=lambda item: len(item[1]), reverse=True)
        oids = editable(kinds[0][1]) if kinds else {}
        for _, paths in kinds[1:]:
            oids.update(paths)
        for kind, paths in kept.oids.items():
            if kind == DEVICE:
                # `_keep` wrote the facts from the documents it wrote `paths` from: each
                # fact's blob id is its path's, and the file is read only when its CRC
                # says it is whole. A pass over a fleet's facts to check it would cost a
                # tenth of validating a child and unpack every bucket (gitprov.buckets).
                facts = kept.devices
                if facts is not None and len(facts) != len(paths):
                    facts = None
                by_kind[kind] = _Lazy(
                    self._reader(source, paths, limits),
                    {},
                    len(paths),
                    facts,
                    self._read_one(source, limits),
                )
            else:
                by_kind[kind] = self._reader(source, paths, limits)()
        docs = Documents(self.inventory_dir, by_kind, files, oids=oids)
        self.schema_cache.facts.restore(docs, kept.indexes)
        snap = _Snapshot(kept.commit, docs, dict(kept.problems), distance=0)
        snap.digests, snap.macs = kept.digests, kept.macs
        snap.kept_digests = kept.digests is not None
        self._remember(snap)
        return snap

    def _reader(
        self, source: Source, paths: Mapping[str, str], limits: Limits
    ) -> Callable[[], tuple[Document, ...]]:
        """Reads the files `paths` names (path -> blob id), sorted by path, when called:
        a lazy kind's never are when nothing asks for them."""
        cache = self.parse_cache

        def read() -> tuple[Document, ...]:
            refs = [FileRef(p, o) for p, o in sorted(paths.items())]
            docs = [cache.get(ref, source, limits)[0] for ref in refs]
            return tuple(d for d in docs if d is not None)

        return read

    def _read_one(self, source: Source, limits: Limits) -> Callable[[str, str], Document | None]:
        cache = self.parse_cache

        def read(path: str, oid: str) -> Document | None:
            return cache.get(FileRef(path, oid), source, limits)[0]

        return read

    def _keep(self, snap: _Snapshot) -> None:
        """Write the snapshot to disk (the facts must be up to date with its documents)."""
        if self.checks is None:
            return
        indexes = self.schema_cache.facts.export(snap.docs)
        if indexes is None:
            return
        oids: dict[str, dict[str, str]] = {}
        for kind in snap.docs.kinds():
            if snap.docs.is_read(kind):
                oids[kind] = {d.path: d.oid for d in snap.docs.of(kind)}
        unread = [k for k in snap.docs.kinds() if not snap.docs.is_read(k)]
        if unread:
            # Not read in this process: their paths are among every document's.
            for path, oid in snap.docs.oids.items():
                of = kind_of(path, self.inventory_dir)
                if of is not None and of in unread:
                    oids.setdefault(of, {})[path] = oid
        kept = Kept(
            snap.commit,
            dict(snap.docs.files),
            oids,
            snap.problems,
            indexes,
            snap.digests,
            snap.macs,
            _device_facts(snap.docs),
        )
        self.checks.store(kept)
        snap.distance = 0
        snap.kept_digests = snap.digests is not None

    def changes(self, old: pygit2.Commit, new: pygit2.Commit) -> dict[str, str | None]:
        """Path -> blob id (None: gone) of every inventory file that differs between the
        two commits' trees (see `tree_changes`), from `diffs_ahead` when it has it."""
        if self._ahead is not None:
            got = self._ahead.get((str(old.id), str(new.id)))
            if got is not None:
                return got
        # The last diff again: a publish diffs the published commit's tree with the new
        # one's to validate it from its snapshot, then to tell what to build (a flat
        # directory of 100,000 devices: 0.1 s each).
        trees = (str(old.tree_id), str(new.tree_id))
        if self._last_diff is not None and self._last_diff[0] == trees:
            return dict(self._last_diff[1])
        known = (
            self.known_diff(str(old.id), str(new.id), self.inventory_dir)
            if self.known_diff
            else None
        )
        if known is not None:
            self._last_diff = (trees, known)
            return dict(known)
        try:
            found = tree_changes(old.tree, new.tree, self.inventory_dir)
        except pygit2.GitError as exc:
            raise missing_object(
                f"{new.tree_id} or {old.tree_id}",
                f"the trees of commit {str(new.id)[:12]} and {str(old.id)[:12]}",
                exc,
            ) from None
        self._last_diff = (trees, found)
        return dict(found)

    @contextlib.contextmanager
    def diffs_ahead(self, pairs: Sequence[tuple[str, str]]) -> Iterator[None]:
        """While in this context, the tree diffs of `pairs` (parent, child commit ids, in
        the order they will be asked for) are worked out in a forked process, on the
        second core, while this one evaluates: a quarter of a history's evaluation at
        10,000 devices in one flat directory. Fewer than `DIFFS_AHEAD_MIN`, or one
        core: nothing is started."""
        if (
            self.repo is None
            or self._ahead is not None
            or len(pairs) < DIFFS_AHEAD_MIN
            or self.parse_cache.workers < 2
            or not can_fork()
        ):
            yield
            return
        path, inventory_dir = self.repo.path, self.inventory_dir
        opened: list[pygit2.Repository] = []

        def job(pair: tuple[str, str]) -> dict[str, str | None]:  # in the forked process
            # Its own repository: this process's open pack files are this one's.
            if not opened:
                opened.append(pygit2.Repository(path))
            repo = opened[0]
            old, new = repo[pair[0]], repo[pair[1]]
            assert isinstance(old, pygit2.Commit) and isinstance(new, pygit2.Commit)
            return tree_changes(old.tree, new.tree, inventory_dir)

        with Ahead(job, pairs) as ahead:
            self._ahead = ahead
            try:
                yield
            finally:
                self._ahead = None

    # -- compile -----------------------------------------------------------------------
    def compile(self, inv: Inventory, device: Device, resolve: SecretResolver) -> DeviceConfig:
        return self.builder.compile(inv, device, resolve)

    def digests(self, inv: Inventory) -> dict[str, str]:
        """Each version key's content digest (see Builder.digests)."""
        return self.builder.digests(inv)

    # -- versions ----------------------------------------------------------------------
    def evaluate(self, commit: pygit2.Commit, floor_min: int) -> versioning.Evaluated | None:
        """Each version key's digest at `commit` and its floor, or None if the commit is
        invalid, given the highest floor of its parents.

        Called parents first: the first parent's snapshot and a tree diff give this
        commit's files, so unchanged files are neither listed, parsed nor validated
        again, and only devices whose inputs changed are compiled again."""
        history = HistoryFloor(floor_min, "") if commit.parent_ids else None
        snap, found = self._check(commit, Options(), history)
        if any(p.is_error for p in found):
            return None
        if snap.digests is None:
            self._digest(snap)
        assert snap.digests is not None
        first = str(commit.parent_ids[0]) if commit.parent_ids else None
        changed = snap.changed if first is not None and snap.changed_since == first else None
        return versioning.Evaluated(snap.digests, _declared_floor(snap.docs), changed)

    def _digest(self, snap: _Snapshot) -> None:
        """The snapshot's digests: when only devices, profiles and models changed since a
        snapshot whose digests are known, those of the devices whose inputs changed (the
        device file, its model or a profile of its chain: what Builder._keys names) and
        the rest as they were."""
        base, changes = snap.base, snap.changes
        kinds = (
            {kind_of(p, self.inventory_dir) for p in changes} - {None}
            if changes is not None
            else None
        )
        if (
            base is None
            or base.digests is None
            or base.macs is None
            or kinds is None
            or not kinds <= {DEVICE, PROFILE, MODEL}
        ):
            inv = build_inventory(snap.docs)
            snap.digests = self.digests(inv)
            snap.macs = {d.path: d.mac for d in inv.devices}
            snap.base = None
            return
        assert changes is not None
        docs = snap.docs
        if kinds <= {DEVICE}:
            # What update_documents read for the changed paths (devices left unread stay so).
            read = tuple(d for kind, d in docs.changed if kind == DEVICE)
            inv = build_inventory(docs.with_devices(read))
        else:
            # Every device is listed (from the snapshot's facts, unread); those that
            # inherit no changed layer keep their digest.
            whole = build_inventory(docs)
            profiles = {n for n, p in whole.profiles.items() if p.doc.path in changes}
            models = {n for n, m in whole.models.items() if m.doc.path in changes}
            reached = tuple(
                d
                for d in whole.devices
                if d.path in changes
                or d.model in models
                or any(p.name in profiles for p in whole.profile_chain(d.profile))
            )
            inv = dataclasses.replace(whole, devices=reached)
        digests = editable(base.digests)  # (an Overlay of a few changes over a kept map)
        now_macs = {d.path: d.mac for d in inv.devices}
        changed: dict[str, str] = {}
        for path in changes:
            mac = base.macs.get(path)
            if mac is not None and now_macs.get(path) != mac:
                digests.pop(mac, None)
                changed[mac] = versioning.ABSENT
        # Shared with the base when no device came, went or changed its MAC (most commits
        # of a history): never changed in place once a snapshot holds it.
        macs = base.macs
        if any(base.macs.get(p) != m for p, m in now_macs.items()) or any(
            p in base.macs and p not in now_macs for p in changes
        ):
            macs = {p: m for p, m in base.macs.items() if p not in changes} | now_macs
        now = self.digests(inv)
        if snap.distance is not None:
            # What a later process would compile again from the same base: a profile
            # reaching 20,000 devices is one changed file, but it is far enough to keep.
            snap.distance += len(inv.devices)
        if BOOTSTRAP not in now and digests.pop(BOOTSTRAP, None) is not None:
            changed[BOOTSTRAP] = versioning.ABSENT  # (a model change may leave none)
        digests.update(now)
        changed.update(now)
        snap.changed, snap.changed_since = changed, base.commit
        snap.digests, snap.macs, snap.base = digests, macs, None

    def known_device(self, commit_id: str, path: str) -> tuple[DeviceFacts | None] | None:
        """The facts of the device file at `path` in commit `commit_id` (None in the
        tuple: no device there), from a snapshot this process holds of that commit
        without reading the file; None when it holds none that knows them. A publish
        asks what the published commit's device held (its own key) of the snapshot its
        validation of the next commit started from."""
        for snap in reversed(self._snapshots.values()):
            for at in (snap, snap.base):
                if at is None or at.commit != commit_id:
                    continue
                docs = at.docs
                lazy = docs.lazy(DEVICE)
                if lazy is None or lazy.facts is None:
                    return None
                if path in lazy.changes:
                    doc = lazy.changes[path]
                    return (device_facts(doc) if doc is not None else None,)
                if path not in docs.oids:
                    return (None,)
                return (lazy.facts.get(path),)
        return None

    def _remember(self, snap: _Snapshot, keep: int = 8) -> None:
        self._snapshots[snap.commit] = snap
        self._snapshots.move_to_end(snap.commit)
        while len(self._snapshots) > keep:
            self._snapshots.popitem(last=False)

    def _changed_paths(self, parent: pygit2.Commit, commit: pygit2.Commit) -> set[str]:
        """Every inventory path the commit changed (added, removed or modified)."""
        return set(self.changes(parent, commit))

    def state(
        self, commit: pygit2.Commit, observe: versioning.Observe | None = None
    ) -> versioning.State:
        """The version state at `commit` (docs/versions.md). Raises IncompleteHistory in a
        shallow or partial clone."""
        assert self.repo is not None
        state = versioning.compute_state(
            self.repo,
            commit,
            self.evaluate,
            self.version_cache,
            observe=observe,
            progress=self.progress,
            ahead=self.diffs_ahead,
        )
        cid = str(commit.id)
        self._floors[cid] = (state.floor, state.floor_by)
        if self.checks is not None:
            if self.checks.floor(cid) is None:
                self.checks.store_floor(cid, state.floor, state.floor_by)
            snap = self._snapshots.get(cid)
            # The digests make the next process's evaluation of a child cost its change.
            if snap is not None and not snap.kept_digests and (_far(snap) or snap.distance == 0):
                if snap.digests is None and state.valid:
                    # The version cache gave the state (no evaluation derived them): what a
                    # snapshot without them would make every later process derive again.
                    self._digest(snap)
                if snap.digests is None:
                    return state  # invalid: no digests (load_commit keeps it as it is)
                if snap.distance == 0 and snap.macs is not None and self.checks.has(cid):
                    # On disk without them (load_commit kept it): the digests alone. The
                    # indexes were pickled before the devices were compiled, not beside
                    # a fleet's templates (100 MB less at the peak of 100,000 devices).
                    self.checks.store_digests(cid, snap.digests, snap.macs)
                    snap.kept_digests = True
                else:
                    if self.schema_cache.facts.export(snap.docs) is None:
                        self._check(commit, Options(), None)  # bring the facts back to it
                    self._keep(snap)
                if self.one_commit:
                    # On disk now; this process validates nothing after it. Let go of the
                    # rules' indexes before the build: at 100,000 devices they are about
                    # 200 MB, and the build and the publish that follow reuse that memory.
                    self.schema_cache = SchemaCache(self.schema_cache.workers)
        return state

    def versions(self, commit: pygit2.Commit) -> dict[str, versioning.VersionInfo]:
        """Each version key's number at `commit` (devices by MAC, the option-66 files
        as BOOTSTRAP)."""
        return self.state(commit).versions()

    # -- build -------------------------------------------------------------------------
    def build(
        self,
        commit: pygit2.Commit,
        private_key: str | None,
        served: Served | None = None,
        loaded: Loaded | None = None,
        *,
        force: bool = False,
        keep_plaintext: bool = True,
        prior: Prior | None = None,
    ) -> Build:
        """Compile, render and encrypt every device and option-66 file of `commit`
        (see Builder.build, also for `prior`); an invalid commit is InvalidInventory."""
        loaded = loaded or self.load_commit(commit)
        if loaded.inventory is None:
            raise InvalidInventory(
                f"commit {str(commit.id)[:12]} has {len(loaded.errors)} error(s)",
                hint="fix them and commit again; nothing was published",
                problems=loaded.problems,
            )
        return self.builder.build(
            str(commit.id),
            loaded.inventory,
            self.state(commit),
            private_key,
            served,
            force=force,
            progress=self.progress,
            keep_plaintext=keep_plaintext,
            prior=prior,
        )


# A history evaluation diffs trees in a forked process from this many commits on (below,
# the fork costs more than the diffs).
DIFFS_AHEAD_MIN = 32


def _device_facts(docs: Documents) -> MutableMapping[str, DeviceFacts | None] | None:
    """Each device document's facts, for a later process to build an inventory without
    reading the unchanged ones (None: not known without reading every device)."""
    lazy = docs.lazy(DEVICE)
    if lazy is None:
        return {d.path: known_facts(d) for d in docs.of(DEVICE)}
    facts = lazy.facts
    if facts is None:
        return None
    # Kept facts are read in buckets (see CheckCache): a copy shares those not read.
    out = facts.copy() if isinstance(facts, Buckets) else dict(facts)
    for path, doc in lazy.changes.items():
        if doc is None:
            out.pop(path, None)
        else:
            out[path] = device_facts(doc)
    return out


def _version_floor(fleet: Document | None) -> int | None:
    """The version_floor a gitprov.yaml declares, None when it declares none (or no
    integer: validation says so)."""
    data = fleet.data if fleet is not None else None
    value = data.get("version_floor") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _declared_floor(docs: Documents) -> int:
    """The version_floor of a valid inventory's gitprov.yaml."""
    return int(docs.of(FLEET)[0].data["version_floor"])
