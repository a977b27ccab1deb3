"""YAML files of one source → documents (with positions) → a typed Inventory.

`load_documents` never fails on bad input: it returns what it could read and the problems.
`build_inventory` assumes the documents passed validation.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NamedTuple

from gitprov.catalog import DBID_PATTERN
from gitprov.errors import GitprovError, Problem, error, warning
from gitprov.limits import DEFAULT, Limits, of_fleet
from gitprov.macros import normalise_mac
from gitprov.overlay import editable
from gitprov.parallel import can_fork, forked_map, parts, usable_cpus
from gitprov.source import GITLINK, FileRef, Source, TooLarge
from gitprov.unsafe import UNSHOWN, describe, shown
from gitprov.yamldoc import Document, SecretRef, parse, too_large

FLEET = "fleet"
PROFILE = "profile"
MODEL = "model"
DEVICE = "device"
SECRETS = "secrets"

FLEET_FILE = "gitprov.yaml"
SECRETS_FILE = "secrets.yaml"
DEFAULT_FILE_NAME = "fv$(MA).conf"
DEFAULT_MAX_REMOVAL = Fraction(1, 10)
DBID_KEY = re.compile(DBID_PATTERN)


_KIND_BY_DIR = {"profiles": PROFILE, "models": MODEL, "devices": DEVICE}


@functools.cache
def _prefix(inventory_dir: str) -> str:
    """What every inventory path starts with ("" for the repository root)."""
    norm = posixpath.normpath(inventory_dir) if inventory_dir else "."
    return "" if norm == "." else norm + "/"


def kind_of(path: str, inventory_dir: str) -> str | None:
    # A prefix check, not posixpath.relpath: this runs for every file of every commit.
    prefix = _prefix(inventory_dir)
    if not path.startswith(prefix):
        return None
    rel = path[len(prefix) :]
    if rel == FLEET_FILE:
        return FLEET
    if rel == SECRETS_FILE:
        return SECRETS
    head, _, name = rel.partition("/")
    if not name.endswith((".yaml", ".yml")):
        return None
    if "/" in name:
        # Devices may sit in directories at any depth (devices/<site>/<mac>.yaml): a tree
        # diff then skips every unchanged site by its tree id. Profiles and models stay
        # flat, their file names are their names. A dot-directory is not read, as in the
        # work tree (WorktreeSource skips it).
        if head != "devices" or "/." in "/" + name.rpartition("/")[0]:
            return None
        return DEVICE
    return _KIND_BY_DIR.get(head)


def stem(path: str) -> str:
    name = posixpath.basename(path)
    return name.rsplit(".", 1)[0]


class ParseCache:
    """Parsed documents by git blob id: unchanged files are never parsed twice."""

    def __init__(self) -> None:
        self._docs: dict[tuple[str, str, Limits], tuple[Document | None, tuple[Problem, ...]]] = {}
        self._kinds: dict[str, dict[str, str | None]] = {}
        # Files read and parsed (a miss): what a validation from a kept snapshot saves.
        self.misses = 0
        # Processes that parse a whole inventory (see `parse_ahead`): 1 keeps it here.
        self.workers = usable_cpus()

    def kinds(self, inventory_dir: str) -> dict[str, str | None]:
        """`kind_of` by path for one inventory directory, filled by the caller."""
        return self._kinds.setdefault(inventory_dir, {})

    def kind(self, path: str, inventory_dir: str) -> str | None:
        """`kind_of(path, inventory_dir)`, worked out once per path."""
        kinds = self.kinds(inventory_dir)
        try:
            return kinds[path]
        except KeyError:
            kind = kinds[path] = kind_of(path, inventory_dir)
            return kind

    def get(
        self, ref: FileRef, source: Source, limits: Limits = DEFAULT, *, fleet_file: bool = False
    ) -> tuple[Document | None, tuple[Problem, ...]]:
        # The path is part of the key: positions and problems name the file; and so are the
        # limits it was read within.
        key = (ref.path, ref.oid, limits)
        hit = self._docs.get(key)
        if hit is None:
            self.misses += 1
            try:
                data = source.read(ref, limits.document_bytes)
            except TooLarge as exc:
                hit = None, (too_large(ref.path, exc.size, limits, fleet_file=fleet_file),)
            else:
                hit = _parsed(ref, data, limits, fleet_file)
            self._docs[key] = hit
        return hit

    def parse_ahead(self, refs: list[FileRef], source: Source, limits: Limits) -> None:
        """Parses the inventory files among `refs` that are not parsed yet over forked
        workers, when there are enough of them to pay for it: `read_file` then finds
        each here. The blobs are read here first (a worker never touches the
        repository); parts go to whichever worker is free, and the documents are the
        ones this process would make."""
        if self.workers < 2 or len(refs) < PARSE_PARALLEL_MIN or not can_fork():
            return
        todo: list[tuple[tuple[str, str, Limits], FileRef, bool]] = []
        for ref in refs:
            # What read_file reads (the rest it reports, or skips): GP108 first.
            if _unsafe_path(ref.path):
                continue
            kind = self.kind(ref.path, source.inventory_dir)
            if kind is None:
                continue
            fleet_file = kind == FLEET
            key = (ref.path, ref.oid, DEFAULT if fleet_file else limits)
            if key not in self._docs:
                todo.append((key, ref, fleet_file))
        if len(todo) < PARSE_PARALLEL_MIN:
            return
        blobs: list[bytes] = []
        readable = []
        for key, ref, fleet_file in todo:
            try:
                blobs.append(source.read(ref, key[2].document_bytes))
            except TooLarge:
                continue  # (`get` reports it: never read)
            readable.append((key, ref, fleet_file))
        todo = readable

        def job(part: Sequence[int]) -> list[tuple[Document | None, tuple[Problem, ...]]]:
            return [_parsed(todo[i][1], blobs[i], todo[i][0][2], todo[i][2]) for i in part]

        chunks = parts(len(todo), self.workers, PARSE_CHUNK_MIN)
        for part, results in zip(chunks, forked_map(job, chunks, self.workers), strict=True):
            for i, hit in zip(part, results, strict=True):
                self._docs[todo[i][0]] = hit
        self.misses += len(todo)


# A whole inventory is parsed over forked workers from this many files on (below, forking
# and moving documents through a pipe cost more than they save); in parts of at least so
# many files.
PARSE_PARALLEL_MIN = 2000
PARSE_CHUNK_MIN = 250


def _parsed(
    ref: FileRef, data: bytes, limits: Limits, fleet_file: bool
) -> tuple[Document | None, tuple[Problem, ...]]:
    doc, problems = parse(ref.path, ref.oid, data, limits, fleet_file=fleet_file)
    return doc, tuple(problems)


class _Lazy:
    """A kind's documents not read yet: `load()` reads them as some earlier commit had
    them, `changes` (path -> document, None: removed) brings them to this one.

    For devices, `facts` (path -> DeviceFacts of each document `load` reads, None for one
    that gives none) and `read_one(path, oid)` let an inventory be built without reading
    the unchanged ones: each is read when something needs its settings (compiling it)."""

    __slots__ = ("changes", "count", "facts", "load", "read_one")

    def __init__(
        self,
        load: Callable[[], tuple[Document, ...]],
        changes: Mapping[str, Document | None],
        count: int,
        facts: Mapping[str, DeviceFacts | None] | None = None,
        read_one: Callable[[str, str], Document | None] | None = None,
    ) -> None:
        self.load = load
        self.changes = changes
        self.count = count
        self.facts = facts
        self.read_one = read_one

    def resolve(self) -> tuple[Document, ...]:
        return _applied(self.load(), self.changes)


# A lazy kind whose changes grow past this is read: the changes are kept in memory.
_LAZY_CHANGES = 4096
_serial = itertools.count(1)


def _applied(
    docs: tuple[Document, ...], changes: Mapping[str, Document | None]
) -> tuple[Document, ...]:
    """`docs` (sorted by path) with `changes` applied, still sorted: a copy of the
    sequence and a binary search per change, not a pass in Python over every document."""
    if not changes:
        return docs
    out = list(docs)
    for path, doc in sorted(changes.items()):
        at = bisect.bisect_left(out, path, key=_path)
        here = at < len(out) and out[at].path == path
        if doc is None:
            if here:
                del out[at]
        elif here:
            out[at] = doc
        else:
            out.insert(at, doc)
    return tuple(out)


def _path(doc: Document) -> str:
    return doc.path


class Documents:
    """Every inventory file of one source, by kind (each kind sorted by path).

    A kind may be lazy: the documents of a snapshot kept on disk (gitprov.checkcache) are
    read only when something asks for them, so that checking a child commit reads only
    the files it changed. `changed` and `removed` say what differs from the documents
    `base` (a serial number, see `serial`) when this one was derived from those: whoever
    keeps facts about documents updates them from these alone."""

    def __init__(
        self,
        inventory_dir: str,
        by_kind: Mapping[str, tuple[Document, ...] | _Lazy],
        refs: Iterable[FileRef] | Mapping[str, str],
        *,
        oids: Mapping[str, str] | None = None,
        base: int = 0,
        changed: tuple[tuple[str, Document], ...] = (),
        removed: tuple[str, ...] = (),
    ) -> None:
        self.inventory_dir = inventory_dir
        self._kinds: dict[str, tuple[Document, ...] | _Lazy] = dict(by_kind)
        self.files: Mapping[str, str] = (
            refs if isinstance(refs, Mapping) else {r.path: r.oid for r in refs}
        )
        # path -> blob id of every document (files that did not parse have none).
        self.oids: Mapping[str, str] = (
            oids
            if oids is not None
            else {d.path: d.oid for k in self._kinds.values() if isinstance(k, tuple) for d in k}
        )
        self.serial = next(_serial)
        self.base = base
        self.changed = changed
        self.removed = removed
        self._inventory: Inventory | None = None  # see build_inventory

    @property
    def by_kind(self) -> Mapping[str, tuple[Document, ...]]:
        return {kind: self.of(kind) for kind in list(self._kinds)}

    @property
    def refs(self) -> tuple[FileRef, ...]:
        return tuple(FileRef(p, o) for p, o in sorted(self.files.items()))

    def kinds(self) -> list[str]:
        return list(self._kinds)

    def of(self, kind: str) -> tuple[Document, ...]:
        docs = self._kinds.get(kind, ())
        if isinstance(docs, _Lazy):
            docs = self._kinds[kind] = docs.resolve()
        return docs

    def is_read(self, kind: str) -> bool:
        return not isinstance(self._kinds.get(kind), _Lazy)

    def lazy(self, kind: str) -> _Lazy | None:
        docs = self._kinds.get(kind)
        return docs if isinstance(docs, _Lazy) else None

    def count(self) -> int:
        """How many documents, without reading lazy ones."""
        return sum(d.count if isinstance(d, _Lazy) else len(d) for d in self._kinds.values())

    def all(self) -> Iterable[Document]:
        for kind in list(self._kinds):
            yield from self.of(kind)

    def with_devices(self, devices: Iterable[Document]) -> Documents:
        """These documents with only `devices` for devices (the other kinds as they are):
        an inventory of a few devices of a fleet, without listing the rest."""
        others = {k: self.of(k) for k in self.kinds() if k != DEVICE}
        return Documents(
            self.inventory_dir, others | {DEVICE: tuple(sorted(devices, key=_path))}, {}
        )

    def document(self, path: str) -> Document | None:
        """The document at `path`: of a lazy kind, only that one is read."""
        found = self.located(path)
        return found[1] if found is not None else None

    def located(self, path: str) -> tuple[str, Document] | None:
        """The kind and document at `path`: of a lazy kind that knows its paths (its
        facts), only that one is read; of the others, by a binary search (a few paths
        of a fleet: no map of the fleet built for them). A lazy kind read whole for one
        path would parse a fleet: a commit published two ahead of the last one compares
        the documents of the commit between, 13 s at 100,000 devices."""
        oid = self.oids.get(path)
        if oid is None:
            return None
        for kind in list(self._kinds):
            lazy = self.lazy(kind)
            if lazy is not None and lazy.read_one is not None and lazy.facts is not None:
                if path in lazy.changes:
                    doc = lazy.changes[path]
                elif path in lazy.facts:
                    doc = lazy.read_one(path, oid)
                else:
                    continue
                return None if doc is None else (kind, doc)
            docs = self.of(kind)
            at = bisect.bisect_left(docs, path, key=_path)
            if at < len(docs) and docs[at].path == path:
                return kind, docs[at]
        return None


def _gp108(path: str, bad: str) -> Problem:
    # Printed as it is, a newline in a name would start an output line that looks like
    # another file's problem (or a CI annotation), an ESC sequence would rewrite the
    # reviewer's terminal: the name is shown escaped, the file unread.
    return error(
        shown(path),
        1,
        1,
        "GP108",
        f"the file name holds {describe(bad)}",
        "rename the file: inventory file names are plain, visible UTF-8 text",
    )


def _gp005(path: str) -> Problem:
    # At 1:1, as every problem is somewhere: the file as a whole is what is ignored.
    return warning(
        path,
        1,
        1,
        "GP005",
        "file is not part of the inventory and is ignored",
        "inventory files are gitprov.yaml, secrets.yaml, profiles/*.yaml, "
        "models/*.yaml and devices/**/*.yaml (devices in directories at "
        "any depth); profiles, models and devices may end in .yml too",
    )


def _gitlink(path: str) -> Problem:
    return warning(
        path,
        1,
        1,
        "GP005",
        "a git submodule: gitprov reads only this repository's files, so nothing in it "
        "is validated or published",
        "commit the files themselves in this repository (devices may sit in directories "
        "at any depth: devices/SITE/MAC.yaml)",
    )


def _submodule_device(path: str) -> Problem:
    return error(
        path,
        1,
        1,
        "GP010",
        "a git submodule under devices/: gitprov reads only this repository's files, so "
        "the devices in it would be taken as removed and their files deleted from the roots",
        "commit the device files themselves in this repository (devices/SITE/MAC.yaml at "
        "any depth)",
    )


def _not_a_directory(path: str, what: str) -> Problem:
    # Read as "not part of the inventory" (a warning), a `devices` link or submodule made
    # every device vanish from a commit that still validated.
    name = posixpath.basename(path)
    return error(
        path,
        1,
        1,
        "GP010",
        f"{name}/ must be a directory of this repository's files; this is {what}, whose "
        "files gitprov does not read (git stores a link as its target's name, a submodule "
        "as another repository's commit)",
        f"commit the files themselves under {name}/ (devices may sit in directories "
        "at any depth: devices/SITE/MAC.yaml)",
    )


def _not_a_file(path: str, name: str, what: str) -> Problem:
    # Read as "not part of the inventory" (a warning), a secrets.yaml directory showed as
    # every secret unknown, a gitprov.yaml one as the settings missing: neither said why.
    return error(
        path,
        1,
        1,
        "GP010",
        f"{name} must be a file of this repository; this is {what}, which gitprov does not read",
        f"commit {name} itself as a file in its place",
    )


def _link(path: str) -> Problem:
    # Git stores a link as its target's text, which then reads as a YAML scalar: "must
    # be a mapping" would send the reader looking in a file that is not there. The code
    # stays GP010 (the file is not the mapping it must be), which scripts already match.
    return error(
        path,
        1,
        1,
        "GP010",
        "the file is a symbolic link: git stores the link, not the file it points to, "
        "and gitprov does not follow it",
        "commit the file itself in its place (git rm the link, copy the file in)",
    )


def _limits(refs: Mapping[str, str], source: Source, cache: ParseCache) -> Limits:
    """The limits every file but gitprov.yaml is read within: the fleet settings set them,
    and are read within the defaults themselves (gitprov.limits)."""
    fleet_path = _prefix(source.inventory_dir) + FLEET_FILE
    oid = refs.get(fleet_path)
    if oid is not None and not oid.startswith(GITLINK):  # (a submodule: GP005, GP100)
        fleet_doc = cache.get(FileRef(fleet_path, oid), source, fleet_file=True)[0]
        if fleet_doc is not None:
            return of_fleet(fleet_doc.data)
    return DEFAULT


def _unsafe_path(path: str) -> re.Match[str] | None:
    """The first character that makes a path unsafe to show or to read (GP108): one
    UNSAFE, a TAB, or a byte that is not UTF-8 (the manifest, the journal and the JSON
    outputs hold text; such a name once passed validation and then stopped a publish
    after its files were written)."""
    return UNSHOWN.search(path)


def read_file(
    ref: FileRef, source: Source, cache: ParseCache, limits: Limits
) -> tuple[str | None, Document | None, tuple[Problem, ...]]:
    """One file of the source: its kind (None: not an inventory file), its document (None
    if it cannot be read) and its problems."""
    bad = _unsafe_path(ref.path)
    if bad:
        return None, None, (_gp108(ref.path, bad.group()),)
    inventory_dir = source.inventory_dir
    gitlink = ref.oid.startswith(GITLINK)
    prefix = _prefix(inventory_dir)
    # (the inventory directory's own place, or that of devices/, profiles/ or models/)
    if (prefix and ref.path == prefix[:-1]) or (
        ref.path.startswith(prefix) and ref.path[len(prefix) :] in _KIND_BY_DIR
    ):
        what = "a git submodule" if gitlink else "a symbolic link" if source.is_link(ref) else ""
        return None, None, (_not_a_directory(ref.path, what or "a file"),)
    kind = None if gitlink else cache.kind(ref.path, inventory_dir)
    if kind is None:
        rel = ref.path[len(prefix) :] if ref.path.startswith(prefix) else ""
        top, sep, _ = rel.partition("/")
        if top in (FLEET_FILE, SECRETS_FILE) and (sep or gitlink):
            what = "a directory" if sep else "a git submodule"
            return None, None, (_not_a_file(ref.path, top, what),)
        under_devices = ref.path.startswith(f"{prefix}devices/")
        if under_devices and gitlink and "/." not in "/" + ref.path[len(prefix) :]:
            # (a device's file or a site's directory turned submodule: its devices would
            # vanish with a warning, and be removed from the roots by the next publish)
            return None, None, (_submodule_device(ref.path),)
        if not gitlink and under_devices and source.is_link(ref):
            # (a link to a site's directory, whose devices would vanish with a warning)
            return None, None, (_link(ref.path),)
        if "/." not in "/" + ref.path[len(prefix) :] and not ref.path.endswith(".md"):
            return None, None, (_gitlink(ref.path) if gitlink else _gp005(ref.path),)
        return None, None, ()
    if kind == FLEET:
        doc, problems = cache.get(ref, source, fleet_file=True)
    else:
        doc, problems = cache.get(ref, source, limits)
    # A link's bytes are its target's path: a scalar, or text YAML cannot read.
    unread = doc is None or not isinstance(doc.data, dict) or any(p.is_error for p in problems)
    if unread and source.is_link(ref):
        return kind, None, (_link(ref.path),)
    return kind, doc, problems


# The problems of reading each file, by its path (only files that have some).
FileProblems = Mapping[str, tuple[Problem, ...]]


def read_documents(
    source: Source, cache: ParseCache | None = None, refs: list[FileRef] | None = None
) -> tuple[Documents, dict[str, tuple[Problem, ...]]]:
    """Every file of the source, and the problems of reading each (by path)."""
    cache = cache or ParseCache()
    if refs is None:
        refs = source.files()
    files = {r.path: r.oid for r in refs}
    limits = _limits(files, source, cache)
    cache.parse_ahead(refs, source, limits)
    by_kind: dict[str, list[Document]] = {}
    problems: dict[str, tuple[Problem, ...]] = {}
    for ref in refs:
        kind, doc, found = read_file(ref, source, cache, limits)
        if found:
            problems[ref.path] = found
        if kind is not None and doc is not None:
            by_kind.setdefault(kind, []).append(doc)
    docs = Documents(source.inventory_dir, {k: tuple(v) for k, v in by_kind.items()}, files)
    return docs, problems


def load_documents(
    source: Source, cache: ParseCache | None = None, refs: list[FileRef] | None = None
) -> tuple[Documents, list[Problem]]:
    """`refs` (sorted by path) saves walking the tree when the caller knows them."""
    docs, problems = read_documents(source, cache, refs)
    return docs, [p for found in problems.values() for p in found]


def update_documents(
    base: Documents,
    base_problems: FileProblems,
    changes: Mapping[str, str | None],
    source: Source,
    cache: ParseCache,
) -> tuple[Documents, dict[str, tuple[Problem, ...]]]:
    """The documents of `source` from those of an earlier commit (`base`, with the
    problems of reading its files) and what changed since (path -> blob id, None: gone,
    from a tree diff): only the changed files are read. When gitprov.yaml's limits
    change, every file is read again (within the new ones)."""
    files = editable(base.files)  # (a snapshot's as it was read, and a few changes)
    for path, oid in changes.items():
        if oid is None:
            files.pop(path, None)
        else:
            files[path] = oid
    limits = _limits(files, source, cache)
    if limits != _limits(base.files, source, cache):
        refs = [FileRef(p, o) for p, o in sorted(files.items())]
        return read_documents(source, cache, refs)
    problems = dict(base_problems)
    oids = editable(base.oids)
    by_kind_changes: dict[str, dict[str, Document | None]] = {}
    changed: list[tuple[str, Document]] = []
    removed: list[str] = []
    inventory_dir = source.inventory_dir
    for path in sorted(changes):
        oid = changes[path]
        problems.pop(path, None)
        was = path in oids
        found: tuple[Problem, ...] = ()
        if oid is None:
            kind, doc = kind_of(path, inventory_dir), None
        else:
            kind, doc, found = read_file(FileRef(path, oid), source, cache, limits)
        if found:
            problems[path] = found
        if kind is None:
            continue
        by_kind_changes.setdefault(kind, {})[path] = doc
        if doc is None:
            if was:
                del oids[path]
                removed.append(path)
        else:
            oids[path] = doc.oid
            changed.append((kind, doc))
    by_kind: dict[str, tuple[Document, ...] | _Lazy] = {}
    for kind in [*base.kinds(), *(k for k in by_kind_changes if k not in base.kinds())]:
        kind_changes = by_kind_changes.get(kind, {})
        lazy = base.lazy(kind)
        if lazy is None:
            applied = _applied(base.of(kind), kind_changes)
            if applied:
                by_kind[kind] = applied
            continue
        count = lazy.count + sum(
            (doc is not None) - (path in base.oids) for path, doc in kind_changes.items()
        )
        merged = {**lazy.changes, **kind_changes}
        pending = _Lazy(lazy.load, merged, count, lazy.facts, lazy.read_one)
        by_kind[kind] = pending.resolve() if len(merged) > _LAZY_CHANGES else pending
    docs = Documents(
        inventory_dir,
        by_kind,
        files,
        oids=oids,
        base=base.serial,
        changed=tuple(changed),
        removed=tuple(removed),
    )
    return docs, problems


class Layer(NamedTuple):
    """One level of settings: its `params:` and `lines:` blocks and where they are."""

    doc: Document
    params: Mapping[str, Any]
    lines: tuple[Mapping[str, Any] | None, ...]

    @staticmethod
    def of(doc: Document) -> Layer:
        data = doc.data
        return Layer(doc, dict(data.get("params") or {}), tuple(data.get("lines") or ()))


class Encryption(NamedTuple):
    mode: str = "openssl-md5"
    iterations: int = 10000
    gzip: bool = False
    master_key: SecretRef | None = None
    # During a key rotation: what devices hold now (see docs/keys.md).
    previous_master_key: SecretRef | None = None
    previous_file_name: str | None = None

    def merged(self, over: Mapping[str, Any] | None) -> Encryption:
        if not over:
            return self
        previous = over.get("previous")
        return Encryption(
            mode=over.get("mode", self.mode),
            iterations=over.get("iterations", self.iterations),
            gzip=over.get("gzip", self.gzip),
            master_key=over.get("master_key", self.master_key),
            previous_master_key=previous.get("master_key")
            if previous
            else self.previous_master_key,
            previous_file_name=previous.get("file_name") if previous else self.previous_file_name,
        )


class Fleet(NamedTuple):
    doc: Document
    name: str
    version_floor: int
    file_name: str
    provisioning_url: str | None
    http_root: str | None
    tftp_root: str | None
    state_dir: str | None
    encryption: Encryption
    layer: Layer
    # publish: each of http_root / tftp_root may list several directories (edge servers);
    # http_root / tftp_root above are the first of each.
    http_roots: tuple[str, ...] = ()
    tftp_roots: tuple[str, ...] = ()
    firmware_dir: str | None = None
    option66: bool | tuple[str, ...] = False  # True: every model; or the models named
    # The largest share of the published devices one publish may remove (publish.max_removal).
    max_removal: Fraction = DEFAULT_MAX_REMOVAL
    # How a device arriving by option 66 learns its key (gitprov.stage): publish.key_delivery,
    # provisioning.stage_url (https-stage) and publish.stage_root.
    key_delivery: str = "manual"
    stage_url: str | None = None
    stage_root: str | None = None


class Profile(NamedTuple):
    name: str
    doc: Document
    extends: str | None
    layer: Layer


@dataclass(frozen=True)
class Model:
    name: str
    doc: Document
    family: str
    product_name: str
    config_file_name: str
    line_count: int
    firmware: Mapping[str, Any]  # file, version, rule, rollout (gitprov.firmware reads it)
    encryption: Mapping[str, Any] | None
    layer: Layer
    # Catalog name -> the DBID key this model's devices use for it (`bindings:`).
    bindings: Mapping[str, str] = field(default_factory=dict)


# What an inventory needs of a device file without its settings: blob id, MAC, model,
# profile, serial, key and previous_key secret names. Plain values, kept on disk with a
# validated snapshot (gitprov.checkcache) so that unchanged devices are not read again.
DeviceFacts = tuple[str, str, str, str | None, str, str | None, str | None]


class UnreadableDevice(GitprovError):
    """A device file an inventory was built from can no longer be read."""


@dataclass(frozen=True)
class Device:
    mac: str  # 12 lower-case hex
    path: str
    oid: str
    model: str
    profile: str | None
    serial: str
    key: SecretRef | None
    # The document, or how to read it: a device of a kept snapshot that did not change
    # is read only when it is compiled (see DeviceFacts).
    origin: Document | Callable[[], Document | None] = field(repr=False, compare=False)
    previous_key: SecretRef | None = None

    @functools.cached_property
    def doc(self) -> Document:
        origin = self.origin
        if isinstance(origin, Document):
            return origin
        doc = origin()
        if doc is None:
            raise UnreadableDevice(
                f"{self.path}: blob {self.oid[:12]} no longer reads as a device file",
                hint="the cache in the git directory's gitprov-cache/ may be damaged: "
                "delete it and run the command again",
            )
        return doc

    @functools.cached_property
    def layer(self) -> Layer:
        return Layer.of(self.doc)

    @property
    def facts(self) -> DeviceFacts:
        return (
            self.oid,
            self.mac,
            self.model,
            self.profile,
            self.serial,
            None if self.key is None else str(self.key),
            None if self.previous_key is None else str(self.previous_key),
        )


@dataclass(frozen=True)
class Inventory:
    fleet: Fleet
    profiles: Mapping[str, Profile]
    models: Mapping[str, Model]
    devices: tuple[Device, ...]  # sorted by MAC
    sealed: Mapping[str, str] = field(default_factory=dict)  # secret name -> sealed text
    public_key: str | None = None
    public_key_at: str = ""  # "file:line:col" of public_key, for messages
    sealed_at: Mapping[str, str] = field(default_factory=dict)  # name -> "file:line:col"
    _chains: dict[str, tuple[Profile, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def device(self, mac: str) -> Device | None:
        for d in self.devices:
            if d.mac == mac:
                return d
        return None

    def profile_chain(self, name: str | None) -> list[Profile]:
        """The profile and its ancestors, base first. Resolved once per profile, not once
        per device (validation bounds its length: limits.extends_depth)."""
        if not name:
            return []
        hit = self._chains.get(name)
        if hit is None:
            chain: list[Profile] = []
            seen: set[str] = set()
            node: str | None = name
            while node and node not in seen and node in self.profiles:
                seen.add(node)
                chain.append(self.profiles[node])
                node = self.profiles[node].extends
            hit = self._chains[name] = tuple(reversed(chain))
        return list(hit)


def _dirs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def _option66(value: Any) -> bool | tuple[str, ...]:
    if isinstance(value, bool) or value is None:
        return bool(value)
    return tuple(str(v) for v in value)


def _share(value: Any) -> Fraction:
    """publish.max_removal ("10%", its form checked by the schema) as an exact share, so
    that 10 of 100 devices is not over 10%."""
    if not isinstance(value, str):
        return DEFAULT_MAX_REMOVAL
    return Fraction(value.removesuffix("%")) / 100


# Devices by (path, blob id): the same bytes at the same path give the same Device, so a
# long history builds each device once, not once per commit.
_DEVICES: dict[tuple[str, str], Device] = {}
_DEVICES_MAX = 500_000


def device_facts(d: Document) -> DeviceFacts | None:
    """What an inventory needs of a device document besides its settings; None when it
    does not have that shape (such a document never passes validation)."""
    data = d.data
    if not isinstance(data, dict):
        return None
    mac = data.get("mac")
    mac = normalise_mac(mac) if isinstance(mac, str) else None
    model, profile = data.get("model"), data.get("profile")
    if mac is None or not isinstance(model, str):
        return None
    if profile is not None and not isinstance(profile, str):
        return None
    key, previous_key = data.get("key"), data.get("previous_key")
    return (
        d.oid,
        mac,
        model,
        profile,
        str(data.get("serial", "")),
        str(key) if isinstance(key, SecretRef) else None,
        str(previous_key) if isinstance(previous_key, SecretRef) else None,
    )


def known_facts(d: Document) -> DeviceFacts | None:
    """`device_facts`, from the device already built of `d` when there is one."""
    hit = _DEVICES.get((d.path, d.oid))
    return hit.facts if hit is not None else device_facts(d)


def _from_facts(
    path: str, facts: DeviceFacts, origin: Document | Callable[[], Document | None]
) -> Device:
    oid, mac, model, profile, serial, key, previous_key = facts
    return Device(
        mac=mac,
        path=path,
        oid=oid,
        model=model,
        profile=profile,
        serial=serial,
        key=None if key is None else SecretRef(key),
        origin=origin,
        previous_key=None if previous_key is None else SecretRef(previous_key),
    )


def _device(d: Document) -> Device:
    hit = _DEVICES.get((d.path, d.oid))
    if hit is not None:
        return hit
    facts = device_facts(d)
    assert facts is not None, "validated"
    device = _from_facts(d.path, facts, d)
    if len(_DEVICES) >= _DEVICES_MAX:
        _DEVICES.clear()
    _DEVICES[(d.path, d.oid)] = device
    return device


def _devices(docs: Documents) -> list[Device]:
    """The devices of validated documents: those of a lazy kind with facts from their
    facts (read when compiled), the rest from their documents."""
    lazy = docs.lazy(DEVICE)
    if lazy is None or lazy.facts is None or lazy.read_one is None:
        return [_device(d) for d in docs.of(DEVICE)]
    facts, changes, read_one = lazy.facts, lazy.changes, lazy.read_one
    if any(f is None for path, f in facts.items() if path not in changes):
        return [_device(d) for d in docs.of(DEVICE)]
    out = []
    for path, f in facts.items():
        if path in changes or f is None:
            continue
        hit = _DEVICES.get((path, f[0]))
        out.append(hit or _from_facts(path, f, functools.partial(read_one, path, f[0])))
    out.extend(_device(doc) for doc in changes.values() if doc is not None)
    return out


def bindings_of(model: Mapping[str, Any]) -> dict[str, str]:
    """A model file's `bindings:` as catalog name -> DBID key (what rules GP126-GP128
    accept; a broken entry is left out, so nothing invents a key from it)."""
    raw = model.get("bindings")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for name, b in raw.items():
        key = b.get("key") if isinstance(b, dict) else None
        if isinstance(key, str) and DBID_KEY.fullmatch(key):
            out[name] = key
    return out


def build_inventory(docs: Documents) -> Inventory:
    """The inventory of validated documents (built once per Documents: a publish asks
    for it from several places)."""
    if docs._inventory is None:
        docs._inventory = _build_inventory(docs)
    return docs._inventory


def _build_inventory(docs: Documents) -> Inventory:
    fleet_docs = docs.of(FLEET)
    fdoc = fleet_docs[0]
    f = fdoc.data
    publish = f.get("publish") or {}
    fleet = Fleet(
        doc=fdoc,
        name=str(f.get("fleet", "")),
        version_floor=int(f["version_floor"]),
        file_name=f.get("file_name", DEFAULT_FILE_NAME),
        provisioning_url=(f.get("provisioning") or {}).get("url"),
        http_root=next(iter(_dirs(publish.get("http_root"))), None),
        tftp_root=next(iter(_dirs(publish.get("tftp_root"))), None),
        state_dir=publish.get("state_dir"),
        encryption=Encryption().merged(f.get("encryption")),
        layer=Layer.of(fdoc),
        http_roots=_dirs(publish.get("http_root")),
        tftp_roots=_dirs(publish.get("tftp_root")),
        firmware_dir=publish.get("firmware_dir"),
        option66=_option66(publish.get("option66")),
        max_removal=_share(publish.get("max_removal")),
        key_delivery=str(publish.get("key_delivery", "manual")),
        stage_url=(f.get("provisioning") or {}).get("stage_url"),
        stage_root=publish.get("stage_root"),
    )
    profiles = {
        stem(d.path): Profile(stem(d.path), d, d.data.get("extends"), Layer.of(d))
        for d in docs.of(PROFILE)
    }
    models = {}
    for d in docs.of(MODEL):
        m = d.data
        name = stem(d.path)
        product = m.get("product_name", name)
        models[name] = Model(
            name=name,
            doc=d,
            family=m["family"],
            product_name=product,
            # The device's own default Config File Name is its product's (vendor text
            # 2.1, 4.3.2: "IP542N.conf"), whatever the model file is called.
            config_file_name=m.get("config_file_name", f"{product}.conf"),
            line_count=int(m["line_count"]),
            firmware=dict(m.get("firmware") or {}),
            encryption=m.get("encryption"),
            layer=Layer.of(d),
            bindings=bindings_of(m),
        )
    devices = _devices(docs)
    devices.sort(key=lambda dev: dev.mac)
    sealed: dict[str, str] = {}
    sealed_at: dict[str, str] = {}
    public_key, public_key_at = None, ""
    for d in docs.of(SECRETS):
        public_key = d.data.get("public_key")
        line, col = d.pos(("public_key",))
        public_key_at = f"{d.path}:{line}:{col}"
        sealed.update(d.data.get("secrets") or {})
        for name in d.data.get("secrets") or {}:
            line, col = d.pos(("secrets", name))
            sealed_at[name] = f"{d.path}:{line}:{col}"
    return Inventory(
        fleet,
        profiles,
        models,
        tuple(devices),
        sealed,
        public_key,
        public_key_at,
        sealed_at=sealed_at,
    )
