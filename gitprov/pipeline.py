"""The stages wired together for one repository, with the caches that make a new commit
cost what it changed (parse by blob id, schema problems by blob id, device digests by the
blob ids of everything the device inherits).

    source → documents → validate → inventory → compile → render → version → encrypt
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2

from gitprov import version as versioning
from gitprov.catalog import Catalog, load_catalog
from gitprov.compile import DeviceConfig, SecretResolver, compile_device, placeholder_resolver
from gitprov.crypto import Cipher, Mode
from gitprov.errors import GitprovError, InvalidInventory, Problem
from gitprov.formats import flyingvoice, render
from gitprov.inventory import (
    FLEET,
    SECRETS,
    Device,
    Documents,
    Inventory,
    ParseCache,
    build_inventory,
    load_documents,
)
from gitprov.secrets import SecretError, unseal
from gitprov.source import DEFAULT_INVENTORY_DIR, CommitSource, FileRef, Source
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
class DeviceFile:
    mac: str
    name: str  # file name in every root
    plaintext: bytes
    data: bytes  # what is published: the encrypted file, or the plaintext when mode is none
    version: int
    set_by: str  # commit id that set this version
    model: str
    # "current", or "previous": the old path of a key rotation, same content, old key.
    role: str = "current"
    redacted: bytes = b""  # the plaintext with secrets replaced, for humans
    body_sha256: str = ""  # sha256 of the plaintext without the version line


@dataclass(frozen=True)
class Build:
    commit: str
    inventory: Inventory
    files: tuple[DeviceFile, ...]  # sorted by MAC


@dataclass(frozen=True)
class _Snapshot:
    """What `evaluate` learned about one commit, kept for its first child."""

    commit: str
    refs: list[FileRef]
    docs: Documents
    digests: Mapping[str, str] | None


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
        self._digests: dict[tuple[str, ...], str] = {}
        self._evaluated: dict[str, Mapping[str, str] | None] = {}
        self._snapshot: _Snapshot | None = None
        self._built: dict[tuple[object, ...], list[DeviceFile]] = {}
        salt = hashlib.sha256(f"{self.catalog.digest}:{RENDER_FORMAT}".encode()).hexdigest()
        self.version_cache = (
            versioning.VersionCache(cache_dir, salt) if cache_dir is not None else None
        )

    # -- load and validate -------------------------------------------------------------
    def source(self, commit: pygit2.Commit) -> CommitSource:
        assert self.repo is not None
        return CommitSource(self.repo, commit, self.inventory_dir)

    def load(self, source: Source, parent: Source | None = None) -> Loaded:
        docs, problems = load_documents(source, self.parse_cache)
        parent_docs = load_documents(parent, self.parse_cache)[0] if parent else None
        found = validate(docs, self.catalog, self.options, parent_docs, problems, self.schema_cache)
        inv = None if any(p.is_error for p in found) else build_inventory(docs)
        return Loaded(docs, tuple(found), inv)

    def load_commit(self, commit: pygit2.Commit) -> Loaded:
        parent = self.source(commit.parents[0]) if commit.parents else None
        return self.load(self.source(commit), parent)

    # -- compile -----------------------------------------------------------------------
    def compile(self, inv: Inventory, device: Device, resolve: SecretResolver) -> DeviceConfig:
        return compile_device(device, inv, self.catalog, resolve)

    def digests(self, inv: Inventory) -> dict[str, str]:
        """Each device's content digest (version line excluded, secrets as sealed digests)."""
        resolve = placeholder_resolver(inv.sealed)
        fleet_oid = inv.fleet.doc.oid
        secrets_oid = self._secrets_oid(inv)
        out = {}
        chains: dict[str | None, tuple[str, ...]] = {}
        for device in inv.devices:
            model = inv.models[device.model]
            chain = chains.get(device.profile)
            if chain is None:
                chain = tuple(p.doc.oid for p in inv.profile_chain(device.profile))
                chains[device.profile] = chain
            key = (device.doc.path, device.doc.oid, model.doc.oid, fleet_oid, secrets_oid, *chain)
            digest = self._digests.get(key)
            if digest is None:
                cfg = self.compile(inv, device, resolve)
                # Everything that decides the published bytes, bar the version line.
                text = (
                    f"{cfg.file_name}\0{cfg.previous}\0{cfg.cipher.mode}:"
                    f"{cfg.cipher.iterations}:{cfg.cipher.gzip}\0".encode()
                    + flyingvoice.body(cfg)
                )
                digest = hashlib.sha256(text).hexdigest()
                self._digests[key] = digest
            out[device.mac] = digest
        return out

    @staticmethod
    def _secrets_oid(inv: Inventory) -> str:
        return hashlib.sha256(repr(sorted(inv.sealed.items())).encode()).hexdigest()

    # -- versions ----------------------------------------------------------------------
    def evaluate(self, commit: pygit2.Commit) -> Mapping[str, str] | None:
        """Each device's digest at `commit`, or None if the commit is invalid.

        Called root first along a first-parent chain: the previous snapshot and a tree diff
        give this commit's files, so unchanged files are neither listed, parsed nor
        validated again, and only devices whose inputs changed are compiled again."""
        cid = str(commit.id)
        if cid in self._evaluated:
            return self._evaluated[cid]
        prev = self._snapshot
        parent_id = str(commit.parents[0].id) if commit.parents else None
        refs: list[FileRef] | None = None
        changed: set[str] | None = None
        if prev is not None and parent_id == prev.commit:
            changed = self._changed_paths(commit.parents[0], commit)
            if not changed:
                snap = _Snapshot(cid, prev.refs, prev.docs, prev.digests)
                self._remember(snap)
                return snap.digests
            refs = _apply(prev.refs, changed, commit, self.inventory_dir)
        source = self.source(commit)
        docs, problems = load_documents(source, self.parse_cache, refs)
        parent_docs = prev.docs if prev is not None and parent_id == prev.commit else None
        if parent_docs is None and commit.parents:
            parent_docs = load_documents(self.source(commit.parents[0]), self.parse_cache)[0]
        found = validate(docs, self.catalog, self.options, parent_docs, problems, self.schema_cache)
        digests = None
        if not any(p.is_error for p in found):
            digests = self.digests(build_inventory(docs))
        self._remember(_Snapshot(cid, list(docs.refs), docs, digests))
        return digests

    def floor_at(self, commit: pygit2.Commit) -> int | None:
        """`version_floor` at a commit `evaluate` just saw valid (None if invalid)."""
        snap = self._snapshot
        if snap is None or snap.commit != str(commit.id):
            self.evaluate(commit)
            snap = self._snapshot
        assert snap is not None
        if snap.digests is None:
            return None
        return int(snap.docs.of(FLEET)[0].data["version_floor"])

    def _remember(self, snap: _Snapshot) -> None:
        self._snapshot = snap
        self._evaluated[snap.commit] = snap.digests

    def _changed_paths(self, parent: pygit2.Commit, commit: pygit2.Commit) -> set[str]:
        assert self.repo is not None
        prefix = self.inventory_dir.rstrip("/") + "/" if self.inventory_dir else ""
        diff = parent.tree.diff_to_tree(commit.tree)
        out = set()
        for delta in diff.deltas:
            for path in (delta.old_file.path, delta.new_file.path):
                if path.startswith(prefix):
                    out.add(path)
        return out

    def versions(self, commit: pygit2.Commit, inv: Inventory) -> dict[str, versioning.VersionInfo]:
        state = versioning.compute_states(commit, self.evaluate, self.version_cache)
        return versioning.versions(state, inv.fleet.version_floor)

    # -- build -------------------------------------------------------------------------
    def build(
        self,
        commit: pygit2.Commit,
        private_key: str | None,
        published: Mapping[str, tuple[int, str]] | None = None,
        loaded: Loaded | None = None,
    ) -> Build:
        """Compile, render and encrypt every device of `commit`.

        `published` (MAC -> (version, body sha256) from the manifest) is a safety net for
        what history alone cannot see: a `--force` publish of a commit that does not
        descend from the published one, or a new gitprov that renders differently. A
        device never gets a lower version, nor new content under its old version."""
        loaded = loaded or self.load_commit(commit)
        if loaded.inventory is None:
            raise InvalidInventory(
                f"commit {str(commit.id)[:12]} has {len(loaded.errors)} error(s)",
                hint="fix them and commit again; nothing was published",
                problems=loaded.problems,
            )
        inv = loaded.inventory
        vers = self.versions(commit, inv)
        digests = self.digests(inv)
        resolve = secret_resolver(inv, private_key)
        key_id = hashlib.sha256((private_key or "").encode()).hexdigest()
        files: list[DeviceFile] = []
        built: dict[tuple[object, ...], list[DeviceFile]] = {}
        for device in inv.devices:
            info = vers[device.mac]
            # Same digest (content, file name, cipher, sealed secrets), version and manifest
            # entry give the same bytes: a watcher re-renders only what changed.
            key = (
                device.mac,
                digests[device.mac],
                info.version,
                info.commit,
                key_id,
                published.get(device.mac) if published else None,
            )
            hit = self._built.get(key)
            if hit is None:
                hit = self._build_device(inv, device, resolve, info, published)
            built[key] = hit
            files.extend(hit)
        self._built = built
        return Build(str(commit.id), inv, tuple(files))

    def _build_device(
        self,
        inv: Inventory,
        device: Device,
        resolve: SecretResolver,
        info: versioning.VersionInfo,
        published: Mapping[str, tuple[int, str]] | None,
    ) -> list[DeviceFile]:
        cfg = self.compile(inv, device, resolve)
        body_sha = hashlib.sha256(flyingvoice.body(cfg)).hexdigest()
        version = info.version
        if published and device.mac in published:
            version = _never_lower(version, body_sha, *published[device.mac])
        plain = render(cfg, version)
        shown = flyingvoice.render(cfg, version, redact=True)
        data = _encrypt(cfg.cipher, plain, cfg.key, device.mac)
        out = [
            DeviceFile(
                device.mac,
                cfg.file_name,
                plain,
                data,
                version,
                info.commit,
                cfg.model,
                redacted=shown,
                body_sha256=body_sha,
            )
        ]
        if cfg.previous is not None:
            old_name, old_key = cfg.previous
            out.append(
                DeviceFile(
                    device.mac,
                    old_name,
                    plain,
                    _encrypt(cfg.cipher, plain, old_key, device.mac),
                    version,
                    info.commit,
                    cfg.model,
                    "previous",
                    shown,
                    body_sha,
                )
            )
        return out


def _never_lower(computed: int, body_sha: str, old_version: int, old_body: str) -> int:
    if computed > old_version:
        return computed
    if body_sha == old_body or not old_body:
        return old_version  # same content: same version, the device does nothing
    return old_version + 1  # new content must carry a new, higher version


def _encrypt(cipher: Cipher, plain: bytes, key: str | None, mac: str) -> bytes:
    if cipher.mode is Mode.NONE:
        return cipher.encrypt(plain, "")
    if key is None:
        # Validation reports a missing key source; never fall back to plaintext.
        raise GitprovError(
            f"{mac}: no encryption key",
            hint="set encryption.master_key in gitprov.yaml or key: on the device",
        )
    return cipher.encrypt(plain, key)


def secret_resolver(inv: Inventory, private_key: str | None) -> SecretResolver:
    cache: dict[str, str] = {}

    def resolve(name: str) -> str:
        if name not in cache:
            if private_key is None:
                raise GitprovError(
                    f"secret {name!r} is needed to build device files",
                    hint="give the repository private key: GITPROV_PRIVATE_KEY, "
                    "GITPROV_PRIVATE_KEY_FILE or --private-key-file",
                )
            try:
                cache[name] = unseal(private_key, name, inv.sealed[name])
            except SecretError as exc:
                raise GitprovError(
                    exc.message, hint=f"is this the private key of {SECRETS}.yaml's public_key?"
                ) from None
        return cache[name]

    return resolve
