"""The stages wired together for one repository, with the caches that make a new commit
cost what it changed (parse by blob id, schema problems by blob id, device digests by the
blob ids of everything the device inherits).

    source → documents → validate → inventory → compile → render → version → encrypt
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pygit2

from gitprov import __version__
from gitprov import version as versioning
from gitprov.builder import BOOTSTRAP as BOOTSTRAP
from gitprov.builder import BootstrapFile as BootstrapFile
from gitprov.builder import Build as Build
from gitprov.builder import Builder
from gitprov.builder import Conflict as Conflict
from gitprov.builder import DeviceFile as DeviceFile
from gitprov.builder import Served as Served
from gitprov.builder import VersionConflict as VersionConflict
from gitprov.builder import _served_version as _served_version
from gitprov.builder import bootstrap_files as bootstrap_files
from gitprov.builder import secret_resolver as secret_resolver
from gitprov.catalog import Catalog, load_catalog
from gitprov.compile import DeviceConfig, SecretResolver
from gitprov.errors import InvalidInventory, Problem
from gitprov.inventory import (
    FLEET,
    Device,
    Documents,
    Inventory,
    ParseCache,
    build_inventory,
    load_documents,
)
from gitprov.rules import HistoryFloor
from gitprov.source import DEFAULT_INVENTORY_DIR, CommitSource, FileRef, Source, missing_object
from gitprov.validate import Options, SchemaCache, validate

RENDER_FORMAT = "flyingvoice-1"


@dataclass(frozen=True)
class Loaded:
    docs: Documents
    problems: tuple[Problem, ...]
    inventory: Inventory | None  # None when any problem is an error

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)


@dataclass(frozen=True)
class _Snapshot:
    """What `evaluate` learned about one commit, kept for its children."""

    commit: str
    refs: list[FileRef]
    docs: Documents
    result: versioning.Evaluated | None


def _apply(
    refs: list[FileRef], changed: set[str], commit: pygit2.Commit, inventory_dir: str
) -> list[FileRef]:
    """The parent's file list with the changed paths re-read from `commit`'s tree."""
    kept = [r for r in refs if r.path not in changed]
    for path in changed:
        try:
            entry = commit.tree[path]
        except KeyError:
            continue  # deleted
        if entry.type_str == "blob":
            kept.append(FileRef(path, str(entry.id)))
    kept.sort(key=lambda r: r.path)
    return kept


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

    # -- load and validate -------------------------------------------------------------
    def source(self, commit: pygit2.Commit) -> CommitSource:
        assert self.repo is not None
        return CommitSource(self.repo, commit, self.inventory_dir)

    def load(self, source: Source, history_floor: HistoryFloor | None = None) -> Loaded:
        docs, problems = load_documents(source, self.parse_cache)
        found = validate(
            docs, self.catalog, self.options, history_floor, problems, self.schema_cache
        )
        inv = None if any(p.is_error for p in found) else build_inventory(docs)
        return Loaded(docs, tuple(found), inv)

    def load_commit(self, commit: pygit2.Commit) -> Loaded:
        """The commit's inventory, validated against its history (GP113 needs the highest
        version_floor of every ancestor)."""
        return self.load(self.source(commit), self.history_floor(list(commit.parent_ids)))

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
                    raise versioning.IncompleteHistory(f"commit {str(pid)[:12]} is missing")
                state = self.state(commit)
                if state.floor > best.floor:
                    best = state
            return HistoryFloor(best.floor, best.floor_by)
        except versioning.IncompleteHistory:
            # A shallow commit may show no parents at all (its parents are cut off).
            parent = self.repo.get(parents[0]) if parents else None
            if not isinstance(parent, pygit2.Commit):
                return HistoryFloor(0, "", complete=False)
            docs = load_documents(self.source(parent), self.parse_cache)[0]
            fleet = docs.of(FLEET)
            data = fleet[0].data if fleet else None
            value = data.get("version_floor") if isinstance(data, dict) else None
            if not isinstance(value, int) or isinstance(value, bool):
                value = 0
            return HistoryFloor(value, str(parent.id), complete=False)

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
        cid = str(commit.id)
        parent_id = str(commit.parent_ids[0]) if commit.parent_ids else None
        prev = self._snapshots.get(parent_id) if parent_id is not None else None
        refs: list[FileRef] | None = None
        if prev is not None:
            changed = self._changed_paths(commit.parents[0], commit)
            if not changed and (prev.result is None or prev.result.floor >= floor_min):
                # The same files validate the same way: only GP113 looks at the history.
                self._remember(_Snapshot(cid, prev.refs, prev.docs, prev.result))
                return prev.result
            refs = _apply(prev.refs, changed, commit, self.inventory_dir)
        docs, problems = load_documents(self.source(commit), self.parse_cache, refs)
        history = HistoryFloor(floor_min, "") if commit.parent_ids else None
        found = validate(docs, self.catalog, Options(), history, problems, self.schema_cache)
        result = None
        if not any(p.is_error for p in found):
            inv = build_inventory(docs)
            result = versioning.Evaluated(self.digests(inv), inv.fleet.version_floor)
        self._remember(_Snapshot(cid, list(docs.refs), docs, result))
        return result

    def _remember(self, snap: _Snapshot, keep: int = 8) -> None:
        self._snapshots[snap.commit] = snap
        self._snapshots.move_to_end(snap.commit)
        while len(self._snapshots) > keep:
            self._snapshots.popitem(last=False)

    def _changed_paths(self, parent: pygit2.Commit, commit: pygit2.Commit) -> set[str]:
        assert self.repo is not None
        prefix = self.inventory_dir.rstrip("/") + "/" if self.inventory_dir else ""
        try:
            diff = parent.tree.diff_to_tree(commit.tree)
        except pygit2.GitError as exc:
            raise missing_object(
                f"{commit.tree_id} or {parent.tree_id}",
                f"the trees of commit {str(commit.id)[:12]} and its parent",
                exc,
            ) from None
        out = set()
        for delta in diff.deltas:
            for path in (delta.old_file.path, delta.new_file.path):
                if path.startswith(prefix):
                    out.add(path)
        return out

    def state(
        self, commit: pygit2.Commit, observe: versioning.Observe | None = None
    ) -> versioning.State:
        """The version state at `commit` (docs/versions.md). Raises IncompleteHistory in a
        shallow or partial clone."""
        assert self.repo is not None
        return versioning.compute_state(
            self.repo,
            commit,
            self.evaluate,
            self.version_cache,
            observe=observe,
            progress=self.progress,
        )

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
    ) -> Build:
        """Compile, render and encrypt every device and option-66 file of `commit`
        (see Builder.build); an invalid commit is InvalidInventory."""
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
        )
