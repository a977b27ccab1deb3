"""DBID_DBASE_VERSION from the commit graph alone (docs/design.md, invariant 2; docs/versions.md).

Per key k (a device's MAC, or BOOTSTRAP for the option-66 files) and commit X, with c(X)
the key's content digest at X ("" when X has no such file):

    n(X) = max over the parents P of X of:  n(P)      if c(P) == c(X)
                                            n(P) + 1  if c(P) != c(X)
    a root commit has one virtual parent with c = "" and n = 0
    floor(X) = max(version_floor at X, floor(P) for every parent P)
    version(X) = floor(X) + lift(X) + n(X) + s(X)    for a device
    version(X) = floor(X) + lift(X)                  for the option-66 bootstrap files
    lift(X) = max(n_BOOTSTRAP(X) - 1, 0)      (0 in a fleet that never used option 66)
    s(X) = 1 when X's bootstrap leads to per-MAC stage files (key delivery), else 0

Every edge parent → child is non-decreasing and strictly increasing where the content
changes, so every path is too: whatever commit was published, any descendant gives each
device a number at least as high, and higher when its content differs. First-parent
depth has no such property (a fast-forward changes which chain is the first-parent one).

A commit that fails validation was never published: its contents are its first parent's
(`floor` still takes the maximum over all parents). Removal is a content change like any
other, so a re-added device continues above every number it had.

No shared mutable state: CI and every server compute the same numbers from the history.
A cache saves work; it is never the truth, and deleting it changes no number. It keeps
each commit's state as a `Delta`, the entries that differ from its first parent's (a
commit changes a few devices, so a history of thousands of commits over thousands of
devices costs megabytes, not a full map per commit), and a full snapshot of the state at
the head of a computation that went SNAPSHOT_EVERY deltas, or deltas holding a
SNAPSHOT_SHARE-th of its entries, past the state it started from. A state is its
snapshot, or its first parent's state plus its delta, or else it is evaluated from its
parents' states. A device's history on the first-parent chain (`gitprov log`) is read
from the deltas alone. The deltas also tell a publish which devices' numbers changed
since the published commit (gitprov.change).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

import pygit2

from gitprov import statejson
from gitprov.errors import UsageError, missing_object
from gitprov.overlay import Fixed, Sorted, updated, whole

# Bumped whenever what the cache holds changes meaning or layout; `rule()` adds a digest
# of gitprov's code, so a changed rule, digest or validation never reads an older state.
CACHE_FORMAT = 3
ABSENT = ""  # the digest of a key a commit does not have
# The version key of the option-66 bootstrap files (all carry the same rule), or ABSENT
# when the inventory publishes none. Device keys are MACs: 12 hex digits, never this.
BOOTSTRAP = "bootstrap"
# The bootstrap's digest starts with this when it leads devices to per-MAC stage files
# (gitprov.stage): each device's number then sits one higher, leaving its stage file the
# number between the bootstrap's and its own.
STAGED = "staged:"

# (content digest or ABSENT, n, id of the commit that set this (digest, n) pair)
Entry = tuple[str, int, str]
_NONE: Entry = (ABSENT, 0, "")

# A run writes its new deltas every this many evaluated commits, so an interrupted run
# keeps what it did; more packs than MAX_PACKS are merged into one; the newest
# MAX_SNAPSHOTS snapshots are kept (any state can be rebuilt from the deltas).
PACK_EVERY = 1000
# A computation's head gets a snapshot when this many deltas separate it from the state it
# started from (a snapshot, or nothing), or when those deltas hold at least a
# SNAPSHOT_SHARE-th of the state's entries: a child of a snapshot's commit is that snapshot
# plus a small delta, and writing 100,000 entries for it would cost a publish more than
# reading the delta costs the next one; a state built from a history's first commits (each
# device added once) is read faster as a snapshot than as those deltas.
SNAPSHOT_EVERY = 16
SNAPSHOT_SHARE = 8
MAX_PACKS = 16
MAX_SNAPSHOTS = 8


@functools.cache
def rule() -> str:
    """What the numbers depend on in gitprov itself, for the cache's salt: the cache's
    format and a digest of gitprov's code (the rule, the content digests and which
    commits validate all live there). A release changes it, and so does any edit of a
    development checkout: a stale state is never read, at the price of computing again."""
    return f"rule-{CACHE_FORMAT}-{code_digest(Path(__file__).resolve().parent)[:16]}"


def code_digest(package: Path) -> str:
    """The sha256 of every .py file under `package`, with their relative paths."""
    digest = hashlib.sha256()
    try:
        for top, dirs, files in os.walk(package):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    path = Path(top, name)
                    digest.update(str(path.relative_to(package)).encode() + b"\0")
                    digest.update(path.read_bytes())
    except OSError:
        pass  # not installed as files: the version string in the salt still names it
    return digest.hexdigest()


class VersionInfo(NamedTuple):
    version: int
    n: int  # the rule's count for this key: version - floor
    commit: str  # the commit that set this number


class Evaluated(NamedTuple):
    """What one valid commit holds: each key's content digest and its declared floor.

    `changed`, when the evaluator knows it, holds the digests that differ from those of
    the commit's first parent's own evaluation (ABSENT for a key gone); the rule then
    looks at those keys only, instead of comparing the whole fleet."""

    digests: Mapping[str, str]  # never changed by the evaluator once returned
    floor: int
    changed: Mapping[str, str] | None = None


@dataclass(frozen=True)
class State:
    """The rule's result at one commit. `keys` keeps removed keys too (digest ABSENT),
    so a key that comes back continues above every number it had."""

    floor: int = 0
    floor_by: str = ""  # the commit whose version_floor is `floor` ("" if none)
    keys: Mapping[str, Entry] = field(default_factory=dict)
    valid: bool = False  # whether this commit itself validated

    def entry(self, key: str) -> Entry:
        return self.keys.get(key, _NONE)

    def present(self) -> Iterable[str]:
        return (k for k, e in self.keys.items() if e[0] != ABSENT)

    def info(self, key: str) -> VersionInfo | None:
        digest, n, by = self.entry(key)
        if digest == ABSENT:
            return None
        return VersionInfo(self._number(key, n), n, by)

    def versions(self) -> dict[str, VersionInfo]:
        return {
            k: VersionInfo(self._number(k, n), n, by)
            for k, (digest, n, by) in self.keys.items()
            if digest != ABSENT
        }

    def versions_of(self, keys: Iterable[str]) -> dict[str, VersionInfo]:
        """`versions()` of these keys alone (those present): a build of a few devices
        of a fleet asks for theirs, not for every device's."""
        out = {}
        for k in keys:
            info = self.info(k)
            if info is not None:
                out[k] = info
        return out

    def _number(self, key: str, n: int) -> int:
        boot = self.entry(BOOTSTRAP)
        return number(key, self.floor, boot[1], n, staged=boot[0].startswith(STAGED))


def number(key: str, floor: int, bootstrap_n: int, n: int, *, staged: bool = False) -> int:
    """A key's version from the floor, the bootstrap's count and its own count;
    `staged` when the bootstrap's digest says it leads to stage files (`STAGED`)."""
    # The option-66 file leads a new device to its own file, which it applies only if
    # that number is higher: the bootstrap sits one below the floor's share of the
    # device numbers, and each of its changes lifts every device number with it.
    lift = max(bootstrap_n - 1, 0)
    if key == BOOTSTRAP:
        return floor + lift
    # A stage file sits between the bootstrap and the device (its number is the device's
    # minus one), so staging lifts the devices by one. Turning staging on or off changes
    # the bootstrap's digest, whose count lifts every device by one again: no number
    # goes down when staging stops.
    return floor + lift + n + (1 if staged else 0)


class Delta(NamedTuple):
    """One commit's state as the change from its first parent's state (from nothing, for a
    root): the entries that differ, and the state's floor and validity. Entries are never
    dropped along an edge (a removed key keeps its count), so nothing else is needed."""

    commit: str
    parents: tuple[str, ...]
    floor: int
    floor_by: str
    valid: bool
    changed: Mapping[str, Entry]


class IncompleteHistory(UsageError):
    """Versions need every ancestor: a shallow or partial clone cannot compute them."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the history is incomplete ({detail}): versions are computed from every "
            "ancestor commit and cannot be guessed",
            hint="fetch the whole history: `git fetch --unshallow` (in GitHub Actions: "
            "actions/checkout with `fetch-depth: 0`)",
        )


class Evaluator(Protocol):
    def __call__(self, commit: pygit2.Commit, floor_min: int) -> Evaluated | None:
        """The commit's digests and floor, or None if it fails validation, given the
        highest floor of its parents (a lower version_floor makes it invalid)."""
        ...


# Told each evaluated commit and its state, parents before children; the state's map may
# be reused for a child afterwards, so read it during the call.
Observe = Callable[[pygit2.Commit, State], None]
# Told, before a history is evaluated, the (first parent, commit) pairs in the order they
# will be evaluated: the evaluator may work out their tree diffs ahead meanwhile (see
# Pipeline.diffs_ahead).
Ahead = Callable[[list[tuple[str, str]]], contextlib.AbstractContextManager[None]]


def first_parent_chain(commit: pygit2.Commit) -> list[pygit2.Commit]:
    """The commit and its first-parent ancestors, root first."""
    chain = [commit]
    while chain[-1].parent_ids:
        chain.append(chain[-1].parents[0])
    chain.reverse()
    return chain


def missing_commit(repo: pygit2.Repository, oid: str) -> UsageError:
    """What to say of a commit of the history the repository does not hold: a shallow
    clone's edge (fetch the rest), else a damaged repository (git fsck says what else is
    gone): `git fetch --unshallow` was the advice for both, and a full clone has nothing
    to unshallow."""
    if repo.is_shallow:
        return IncompleteHistory(f"commit {oid[:12]} is missing")
    return missing_object(oid, "a commit of the history")


def require_complete(repo: pygit2.Repository) -> None:
    if repo.is_shallow:
        raise IncompleteHistory("shallow clone")


# -- the rule, one commit at a time -------------------------------------------------------
def step(cid: str, parents: list[State], result: Evaluated | None) -> State:
    """The state of commit `cid` from its parents' states and what it holds."""
    floor, floor_by = _floor(cid, parents, result)
    changed = _changes(cid, parents, result)
    keys: Mapping[str, Entry] = parents[0].keys if parents else {}
    if changed:
        keys = updated(keys, changed)
    return State(floor, floor_by, keys, result is not None)


def _floor(cid: str, parents: list[State], result: Evaluated | None) -> tuple[int, str]:
    floor, floor_by = 0, ""
    for p in parents:
        if p.floor > floor:
            floor, floor_by = p.floor, p.floor_by
    if result is not None and result.floor > floor:
        floor, floor_by = result.floor, cid
    return floor, floor_by


def _changes(
    cid: str,
    parents: list[State],
    result: Evaluated | None,
    first_digests: Mapping[str, str] | None = None,
) -> dict[str, Entry]:
    """The entries of `cid` that differ from its first parent's (from nothing, for a
    root). Only keys whose digest changed, or on which the parents disagree, can.
    `first_digests` is the first parent's `digest_map`, when the caller has it."""
    first = parents[0].keys if parents else {}
    # The digests at cid: `digest(k)`, and the keys where they may differ from first's.
    overlay: Mapping[str, str]
    if result is None:
        overlay = {}  # an invalid commit holds its first parent's contents
    elif result.changed is not None and parents and parents[0].valid:
        # A valid first parent's state holds exactly the digests of its own evaluation.
        overlay = result.changed
    else:
        digests = result.digests
        if first_digests is None:
            first_digests = digest_map(first)
        # Set operations on the items run in C: a few times faster than a loop here.
        overlay = {k: digests.get(k, ABSENT) for k, _ in digests.items() ^ first_digests.items()}

    def digest(k: str) -> str:
        d = overlay.get(k)
        return d if d is not None else first.get(k, _NONE)[0]

    changed: dict[str, Entry] = {}
    if len(parents) <= 1:
        for k, d in overlay.items():
            e = first.get(k, _NONE)
            if e[0] != d:
                changed[k] = (d, e[1] + 1, cid)
        return changed
    # A merge: a key the parents agree on, with an unchanged digest, keeps the first
    # parent's entry (every parent offers that same pair).
    names: set[str] = set(overlay)
    for p in parents[1:]:
        names.update(k for k, _ in p.keys.items() ^ first.items())
    for k in sorted(names):
        d = digest(k)
        best: Entry | None = None
        for p in parents:
            pd, pn, pby = p.keys.get(k, _NONE)
            # On a tie the inherited pair wins: that content already had that number.
            cand = (d, pn, pby) if pd == d else (d, pn + 1, cid)
            if (
                best is None
                or cand[1] > best[1]
                or (cand[1] == best[1] and best[2] == cid and cand[2] != cid)
            ):
                best = cand
        assert best is not None
        if best != _NONE and best != first.get(k, _NONE):
            changed[k] = best
    return changed


def digest_map(keys: Mapping[str, Entry]) -> dict[str, str]:
    """The digests of the keys present: what an evaluation of the same commit gives."""
    return {k: e[0] for k, e in keys.items() if e[0] != ABSENT}


# -- the cache ------------------------------------------------------------------------------
class VersionCache:
    """Version states by commit id: recent states in memory and, given a directory, deltas
    and snapshots on disk. Safe to delete at any time; a file that cannot be read, or
    that fails its checksum, is ignored.

    A commit id names its whole history; `salt` names everything else a state depends on
    (gitprov's code and catalog, the renderer, the inventory directory). On disk, in
    `directory/<salt>/`:

    - `<commit>.snap`: the full state at a commit (the head of a computation);
    - `<name>.pack`: the deltas of many commits, one JSON document a line after a header
      line listing their ids, so that finding out which commits a pack holds does not
      parse the deltas.

    Every file starts with a header line holding the format and the sha256 of the rest,
    and is written to a temporary name and renamed: a reader sees a whole file or none.
    """

    def __init__(self, directory: Path | None, salt: str, keep: int = 16) -> None:
        self.directory = directory / salt[:16] if directory is not None else None
        self.keep = keep
        self._memory: OrderedDict[str, State] = OrderedDict()
        self._deltas: dict[str, Delta] = {}
        self._unwritten: list[Delta] = []
        self._snapshots: set[str] | None = None  # ids with a snapshot file (listed once)
        self._index: dict[str, tuple[Path, int]] | None = None  # id -> (pack, line)
        self._packs: dict[Path, list[bytes] | None] = {}  # verified lines, None if bad

    # -- reading --------------------------------------------------------------------------
    def state(self, commit_id: str) -> State | None:
        """The full state at a commit, if kept in memory or as a snapshot."""
        hit = self._memory.get(commit_id)
        if hit is not None:
            self._memory.move_to_end(commit_id)
            return hit
        if self.directory is None or commit_id not in self._listed_snapshots():
            return None
        state = _read_snapshot(self.directory / f"{commit_id}.snap", commit_id)
        if state is not None:
            self.remember(commit_id, state)
        return state

    def delta(self, commit_id: str) -> Delta | None:
        """The commit's delta, if computed in this process or kept in a pack."""
        hit = self._deltas.get(commit_id)
        if hit is not None or self.directory is None:
            return hit
        where = self._pack_index().get(commit_id)
        if where is None:
            return None
        pack, line = where
        lines = self._pack_lines(pack)
        if lines is None or line >= len(lines):
            return None
        delta = _decode_delta(lines[line], commit_id)
        if delta is not None:
            self._deltas[commit_id] = delta
        return delta

    # -- remembering ------------------------------------------------------------------------
    def remember(self, commit_id: str, state: State) -> None:
        self._memory[commit_id] = state
        self._memory.move_to_end(commit_id)
        while len(self._memory) > self.keep:
            self._memory.popitem(last=False)

    def add(self, delta: Delta) -> None:
        self._deltas[delta.commit] = delta
        self._unwritten.append(delta)

    def flush(self) -> None:
        """Write the deltas computed since the last flush as one pack."""
        if self.directory is None or not self._unwritten:
            self._unwritten.clear()
            return
        deltas, self._unwritten = self._unwritten, []
        ids = [d.commit for d in deltas]
        name = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
        path = self.directory / f"{name}.pack"
        lines = [_encode_delta(d) for d in deltas]
        if write_file(path, {"ids": ids}, lines) and self._index is not None:
            for i, cid in enumerate(ids):
                self._index[cid] = (path, i)
            self._packs[path] = lines
        self._compact()

    def store_snapshot(self, commit_id: str, state: State) -> None:
        self.remember(commit_id, state)
        if self.directory is None:
            return
        # Columns, not a map of lists: JSON reads arrays of plain values several times
        # faster, and at 100k devices a publish reads the last snapshot every time.
        commits: dict[str, int] = {}
        columns: dict[str, list[Any]] = {"keys": [], "digests": [], "n": [], "by": []}
        for k, (d, n, by) in sorted(whole(state.keys).items()):  # (read as a Sorted)
            columns["keys"].append(k)
            columns["digests"].append(d)
            columns["n"].append(n)
            columns["by"].append(commits.setdefault(by, len(commits)))
        head: dict[str, Any] = {
            "commit": commit_id,
            "floor": state.floor,
            "floor_by": state.floor_by,
            "valid": state.valid,
            "commits": list(commits),
        }
        blocks = _blocks(columns)
        if blocks is not None:
            head["blocks"] = [len(b) for b in blocks]
            head["count"] = len(columns["keys"])
            head["byteorder"] = sys.byteorder
            body = b"".join(blocks)
        else:  # (text no block can hold: JSON, as before)
            body = json.dumps(columns, separators=(",", ":")).encode()
        if write_file(self.directory / f"{commit_id}.snap", head, [body]):
            if self._snapshots is not None:
                self._snapshots.add(commit_id)
            self._prune_snapshots()

    # -- the files ------------------------------------------------------------------------
    def _listed_snapshots(self) -> set[str]:
        if self._snapshots is None:
            self._snapshots = set()
            if self.directory is not None:
                try:
                    names = os.listdir(self.directory)
                except OSError:
                    names = []
                self._snapshots = {n[:-5] for n in names if n.endswith(".snap")}
        return self._snapshots

    def _pack_files(self) -> list[Path]:
        assert self.directory is not None
        try:
            return sorted(self.directory.glob("*.pack"))
        except OSError:
            return []

    def _pack_index(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            self._index = {}
            for pack in self._pack_files():
                ids = _read_pack_ids(pack)
                for i, cid in enumerate(ids):
                    self._index.setdefault(cid, (pack, i))
        return self._index

    def _pack_lines(self, pack: Path) -> list[bytes] | None:
        if pack not in self._packs:
            self._packs[pack] = _read_lines(pack)
        return self._packs[pack]

    def _compact(self) -> None:
        """Merge every pack into one when there are more than MAX_PACKS: a server that
        publishes each commit writes a small pack each time."""
        assert self.directory is not None
        packs = self._pack_files()
        if len(packs) <= MAX_PACKS:
            return
        ids: list[str] = []
        lines: list[bytes] = []
        seen: set[str] = set()
        for pack in packs:
            header = _read_pack_ids(pack)
            body = self._pack_lines(pack)
            if body is None or len(body) != len(header):
                continue
            for cid, line in zip(header, body, strict=True):
                if cid not in seen:
                    seen.add(cid)
                    ids.append(cid)
                    lines.append(line)
        name = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
        merged = self.directory / f"{name}.pack"
        if not write_file(merged, {"ids": ids}, lines):
            return
        for pack in packs:
            if pack != merged:
                # A reader that listed it a moment ago finds it gone: it computes again.
                with _ignored():
                    pack.unlink()
        self._index = None
        self._packs = {merged: lines}

    def _prune_snapshots(self) -> None:
        assert self.directory is not None
        try:
            snaps = sorted(
                self.directory.glob("*.snap"), key=lambda p: p.stat().st_mtime, reverse=True
            )
        except OSError:
            return
        for old in snaps[MAX_SNAPSHOTS:]:
            with _ignored():
                old.unlink()
            if self._snapshots is not None:
                self._snapshots.discard(old.name[:-5])


# A cache file that cannot be written or removed only costs time.
_ignored = functools.partial(contextlib.suppress, OSError)


def write_file(path: Path, head: dict[str, Any], lines: list[bytes]) -> bool:
    """Write a cache file: a header line (the format, the sha256 of the rest, `head`),
    then `lines`; to a temporary name, then renamed. False if it could not be written."""
    body = b"".join(line + b"\n" for line in lines)
    header = {"format": CACHE_FORMAT, "sha256": hashlib.sha256(body).hexdigest(), **head}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(json.dumps(header, separators=(",", ":")).encode() + b"\n" + body)
        os.replace(tmp, path)
        return True
    except OSError:
        with _ignored():
            tmp.unlink()
        return False


def _read_header(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    head, sep, body = raw.partition(b"\n")
    if not sep:
        return None
    try:
        header = statejson.loads(head)
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
        return None
    return header, body


def read_file(path: Path) -> tuple[dict[str, Any], bytes] | None:
    """A cache file's header and the rest, or None if it is missing, of another format or
    fails its checksum."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    found = _read_header(raw)
    if found is None or hashlib.sha256(found[1]).hexdigest() != found[0].get("sha256"):
        return None
    return found


def _read_view(path: Path) -> tuple[dict[str, Any], memoryview] | None:
    """`read_file`, the rest as a view of the bytes read (not a copy of 10 MB)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    end = raw.find(b"\n")
    found = _read_header(raw[: end + 1]) if end >= 0 else None
    if found is None:
        return None
    body = memoryview(raw)[end + 1 :]
    if hashlib.sha256(body).hexdigest() != found[0].get("sha256"):
        return None
    return found[0], body


def _read_pack_ids(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            head = f.readline()
    except OSError:
        return []
    found = _read_header(head + b"\n")
    ids = found[0].get("ids") if found is not None else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return []
    return ids


def _read_lines(path: Path) -> list[bytes] | None:
    found = read_file(path)
    if found is None:
        return None
    lines = found[1].split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    ids = found[0].get("ids")
    if not isinstance(ids, list) or len(ids) != len(lines):
        return None
    return lines


def _encode_delta(d: Delta) -> bytes:
    # The commit that set an entry is most often the delta's own: written as "".
    changed = {k: [dg, n, "" if by == d.commit else by] for k, (dg, n, by) in d.changed.items()}
    row = [d.commit, list(d.parents), d.floor, d.floor_by, d.valid, changed]
    return json.dumps(row, separators=(",", ":")).encode()


def _decode_delta(line: bytes, commit_id: str) -> Delta | None:
    try:
        cid, parents, floor, floor_by, valid, changed = statejson.loads(line)
        if cid != commit_id:
            return None
        entries = {str(k): (str(dg), int(n), str(by) or cid) for k, (dg, n, by) in changed.items()}
        return Delta(
            cid, tuple(str(p) for p in parents), int(floor), str(floor_by), bool(valid), entries
        )
    except (ValueError, TypeError, AttributeError):
        return None


def _blocks(columns: Mapping[str, list[Any]]) -> list[bytes] | None:
    """A snapshot's columns as blocks: the keys and the digests each NUL-joined, the
    numbers and the commits' places as 64-bit integers. A fleet's snapshot is read by
    every publish, and splitting two blocks takes a third of the time JSON's parse of
    the columns does (at 100,000 devices, 15 ms against 35). None when a key or a digest
    is no text without a NUL, or a number is past 64 bits (the columns are then JSON)."""
    out: list[bytes] = []
    count = len(columns["keys"])
    for name in ("keys", "digests"):
        values = columns[name]
        if not all(type(v) is str for v in values):
            return None
        text = "\0".join(values)
        if text.count("\0") != max(count - 1, 0):
            return None
        try:
            out.append(text.encode())
        except UnicodeEncodeError:  # (a lone surrogate)
            return None
    for name in ("n", "by"):
        try:
            out.append(array("q", columns[name]).tobytes())
        except (OverflowError, TypeError):
            return None
    return out


def _from_blocks(header: Mapping[str, Any], body: memoryview) -> dict[str, Any]:
    """The columns `_blocks` wrote (ValueError when the header does not describe the
    body: the checksum says the body is as written, not that the header is its own)."""
    sizes, count = [int(s) for s in header["blocks"]], int(header["count"])
    if header["byteorder"] != sys.byteorder or len(sizes) != 4 or min(sizes) < 0 or count < 0:
        raise ValueError("blocks of another machine or shape")
    if sum(sizes) + 1 != len(body):  # (and the line's end)
        raise ValueError("blocks of another length")
    out: dict[str, Any] = {}
    at = 0
    raw = body.obj if isinstance(body.obj, bytes) else None
    for name, size in zip(("keys", "digests", "n", "by"), sizes, strict=True):
        block = body[at : at + size]
        at += size
        # The digests, of one width: sliced when looked up (see Fixed); a publish by
        # change looks up a few, and a split of 100,000 costs 15 ms.
        fixed = None
        if name == "digests" and raw is not None:
            start = len(raw) - len(body) + at - size
            fixed = Fixed.of(raw, start, start + size, count)
        values: Any
        if fixed is not None:
            values = fixed
        elif name in ("keys", "digests"):
            values = str(block, "utf-8").split("\0") if count else []
        else:
            values = array("q")
            values.frombytes(block)
        if len(values) != count:
            raise ValueError("a column of another length")
        out[name] = values
    out["n"] = out["n"].tolist()
    return out


def _read_snapshot(path: Path, commit_id: str) -> State | None:
    found = _read_view(path)
    if found is None:
        return None
    header, body = found
    try:
        if header["commit"] != commit_id:
            return None
        commits = [str(c) for c in header["commits"]]
        raw = _from_blocks(header, body) if "blocks" in header else statejson.loads(bytes(body))
        keys_, digests, ns, bys = raw["keys"], raw["digests"], raw["n"], raw["by"]
        # The checksum says these are the columns as written; zip(strict) still refuses
        # columns of different lengths rather than cut one short.
        if not len(keys_) == len(digests) == len(ns) == len(bys):
            return None
        columns = (digests, ns, list(map(commits.__getitem__, bys)))
        keys: Mapping[str, Entry]
        if Sorted.ordered(keys_):
            # A publish by change looks up a few keys and changes fewer: a dict of the
            # fleet (40 ms at 100,000 devices) is made only if it is iterated.
            keys = cast("Mapping[str, Entry]", Sorted(keys_, columns))
        else:  # (a snapshot written before they were sorted)
            keys = dict(zip(keys_, zip(*columns, strict=True), strict=True))
        return State(int(header["floor"]), str(header["floor_by"]), keys, bool(header["valid"]))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


# -- computing states ---------------------------------------------------------------------
def _commit(repo: pygit2.Repository, cid: str) -> pygit2.Commit:
    try:
        commit = repo.get(cid)
    except (ValueError, pygit2.GitError):
        commit = None
    if not isinstance(commit, pygit2.Commit):
        raise missing_commit(repo, cid)
    return commit


def _solve(
    repo: pygit2.Repository,
    targets: list[str],
    evaluate: Evaluator,
    cache: VersionCache,
    *,
    must_evaluate: frozenset[str] = frozenset(),
    observe: Observe | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    ahead: Ahead | None = None,
    depths: dict[str, tuple[int, int]] | None = None,
) -> dict[str, State]:
    """The states of `targets` (the ones no later target needs are dropped on the way):
    each from a cached state, else its first parent's state plus its cached delta, else
    evaluated from its parents' states. `must_evaluate` are evaluated in any case (their
    deltas are wanted); with `observe`, every ancestor is. `depths` gets each target's
    count of first-parent steps from the cached state it was derived from, and the count
    of entries the deltas of those steps changed."""
    require_complete(repo)
    states: dict[str, State] = {}
    deltas: dict[str, Delta | None] = {}  # how each state is made: a delta, or None: evaluate
    needs: dict[str, list[str]] = {}
    commits: dict[str, pygit2.Commit] = {}
    order: list[str] = []  # parents before children
    # Iterative post-order walk: first parents first, so a chain is evaluated in a row and
    # the evaluator finds each commit's first parent at hand.
    stack: list[tuple[str, bool]] = [(t, False) for t in reversed(targets)]
    while stack:
        cid, expanded = stack.pop()
        if expanded:
            order.append(cid)
            continue
        if cid in deltas or cid in states:
            continue
        if observe is None and cid not in must_evaluate:
            hit = cache.state(cid)
            if hit is not None:
                states[cid] = hit
                continue
            delta = cache.delta(cid)
            if delta is not None:
                deltas[cid] = delta
                needs[cid] = list(delta.parents[:1])
                stack.append((cid, True))
                stack.extend((p, False) for p in needs[cid])
                continue
        commits[cid] = _commit(repo, cid)
        deltas[cid] = None
        needs[cid] = [str(p) for p in commits[cid].parent_ids]
        stack.append((cid, True))
        stack.extend((p, False) for p in reversed(needs[cid]))
    # Keep each state only until its last child in this walk is done.
    remaining: dict[str, int] = {}
    for cid in order:
        for pid in needs[cid]:
            remaining[pid] = remaining.get(pid, 0) + 1
    total = sum(1 for d in deltas.values() if d is None)
    done = 0
    # The digests of the states at hand, when known without building them: what an
    # evaluation gave, shared down a chain of commits that changed nothing.
    maps: dict[str, Mapping[str, str]] = {}
    depth: dict[str, tuple[int, int]] = dict.fromkeys(states, (0, 0))
    pairs = [(needs[c][0], c) for c in order if deltas[c] is None and needs[c]]
    with ahead(pairs) if ahead is not None else contextlib.nullcontext():
        for cid in order:
            parents = [states[pid] for pid in needs[cid]]
            delta = deltas[cid]
            commit = commits.pop(cid, None)
            if delta is None:
                assert commit is not None
                result = evaluate(commit, max((s.floor for s in parents), default=0))
                floor, floor_by = _floor(cid, parents, result)
                first_map = maps.get(needs[cid][0]) if parents else None
                if result is not None:
                    maps[cid] = result.digests
                elif first_map is not None:
                    maps[cid] = first_map
                changed = _changes(cid, parents, result, first_map)
                delta = Delta(cid, tuple(needs[cid]), floor, floor_by, result is not None, changed)
                cache.add(delta)
                done += 1
                if progress is not None:
                    progress("history", done, total)
                if done % PACK_EVERY == 0:
                    cache.flush()
            keys: Mapping[str, Entry] = parents[0].keys if parents else {}
            if delta.changed:
                keys = updated(keys, delta.changed)  # (no copy of a fleet's for a few)
            state = State(delta.floor, delta.floor_by, keys, delta.valid)
            states[cid] = state
            steps, entries = depth.get(needs[cid][0], (0, 0)) if needs[cid] else (0, 0)
            depth[cid] = (steps + 1, entries + len(delta.changed))
            if observe is not None:
                observe(commit or _commit(repo, cid), state)
            for pid in needs[cid]:
                remaining[pid] -= 1
                if remaining[pid] == 0:
                    states.pop(pid, None)
                    maps.pop(pid, None)
    cache.flush()
    if depths is not None:
        depths.update((t, depth.get(t, (0, 0))) for t in targets)
    return states


def compute_state(
    repo: pygit2.Repository,
    head: pygit2.Commit,
    evaluate: Evaluator,
    cache: VersionCache | None = None,
    *,
    observe: Observe | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    ahead: Ahead | None = None,
) -> State:
    """The state at `head`, evaluating every ancestor whose state no cached state or delta
    gives. The state at `head` is kept in memory, and as a snapshot when SNAPSHOT_EVERY
    deltas or more separate it from the state it was derived from.

    With `observe`, every ancestor is evaluated (the cache is written, not read) and
    `observe(commit, state)` is called for each, parents before children."""
    cache = cache if cache is not None else VersionCache(None, "")
    hid = str(head.id)
    # A parent missing from the object store (a damaged or cut repository) is an error
    # whether or not a cache holds the states it would give: deleting the cache must
    # change no output.
    for pid in head.parent_ids:
        if pid not in repo:
            raise missing_commit(repo, str(pid))
    if observe is None:
        hit = cache.state(hid)
        if hit is not None:
            return hit
    depths: dict[str, tuple[int, int]] = {}
    state = _solve(
        repo,
        [hid],
        evaluate,
        cache,
        observe=observe,
        progress=progress,
        ahead=ahead,
        depths=depths,
    )[hid]
    steps, entries = depths.get(hid, (0, 0))
    if steps >= SNAPSHOT_EVERY or entries * SNAPSHOT_SHARE >= max(len(state.keys), 1):
        cache.store_snapshot(hid, state)
    else:
        cache.remember(hid, state)
    return state


def first_parent_deltas(
    repo: pygit2.Repository,
    head: pygit2.Commit,
    evaluate: Evaluator,
    cache: VersionCache | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    ahead: Ahead | None = None,
) -> list[Delta]:
    """The delta of every commit on head's first-parent chain, root first: read from the
    cache, the missing ones evaluated (with whatever their parents need)."""
    require_complete(repo)
    cache = cache if cache is not None else VersionCache(None, "")
    chain: list[str] = []
    missing: list[str] = []
    cid: str | None = str(head.id)
    while cid is not None:
        chain.append(cid)
        delta = cache.delta(cid)
        if delta is not None:
            parents: list[str] = list(delta.parents)
        else:
            missing.append(cid)
            parents = [str(p) for p in _commit(repo, cid).parent_ids]
        cid = parents[0] if parents else None
    chain.reverse()
    if missing:
        hid = str(head.id)
        states = _solve(
            repo,
            list(reversed(missing)),
            evaluate,
            cache,
            must_evaluate=frozenset(missing),
            progress=progress,
            ahead=ahead,
        )
        if hid in states:
            cache.store_snapshot(hid, states[hid])
    out = []
    for cid in chain:
        delta = cache.delta(cid)
        assert delta is not None  # evaluated just now, or read from the cache before
        out.append(delta)
    return out
