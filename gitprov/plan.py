"""What a publish would change, per root: add, change, remove, and files we did not write.

The manifest (state dir, outside the served roots) records what the last publish wrote and,
per root, which commit that root holds completely and each served file's size, mtime and
inode as written. A file whose stat still matches holds what the manifest says it does and
is not read again; one whose stat changed is read, rewritten and reported as drift (edited
or deleted by hand, or only touched). `verify` reads every file instead: an edit that kept
the size and put the mtime back is found only that way.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import errno
import hashlib
import itertools
import json
import mmap
import operator
import os
import re
import shutil
import sys
import threading
from array import array
from collections.abc import (
    Callable,
    Collection,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    Sequence,
    Set,
    ValuesView,
)
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import cached_property
from io import BufferedReader
from operator import attrgetter
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any, BinaryIO, NamedTuple, Protocol

from gitprov import dirmark, statejson
from gitprov.overlay import OVERLAY_MAX, Counted, Fixed, Overlay, Sorted, apply_changes, whole
from gitprov.parallel import Ahead, can_fork, forked_map, usable_cpus

# (size, mtime_ns, inode) of a served file: when all three are what the manifest recorded
# after writing it, its bytes are taken to be the ones written (--verify reads them).
Stat = tuple[int, int, int]

MANIFEST = "manifest.json"
BOOTSTRAP_KEY = "bootstrap/"  # an option-66 file's key in Manifest.served: this + its name
MANIFEST_FORMAT = 2
TMP_PREFIX = ".gitprov-"
TMP_SUFFIX = ".tmp"


class Action(enum.StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


class Kind(enum.StrEnum):
    DEVICE = "device"  # a per-MAC file
    BOOTSTRAP = "bootstrap"  # a model's option-66 Config File Name file
    FIRMWARE = "firmware"  # a model's firmware image, copied from the firmware dir
    STAGE = "stage"  # a device's stage file (publish.key_delivery, gitprov.stage)


@dataclass(frozen=True)
class ManifestEntry:
    mac: str
    model: str
    version: int
    set_by: str
    sha256_plain: str
    sha256_data: str
    kind: str = Kind.DEVICE
    # sha256 of the plaintext without its version line: tells a content change from a
    # version change when a publish must never lower or reuse a version (--force).
    sha256_body: str = ""


@dataclass(frozen=True)
class RootState:
    """What one root holds. `commit` is the last commit published there completely (None
    if none was); `error` says why the last attempt failed ("" when it is at the manifest's
    commit); `stale` names files gitprov wrote there that later commits no longer have
    and that are not removed yet (a failed root keeps them until it converges)."""

    commit: str | None
    error: str = ""
    stale: tuple[str, ...] = ()
    # File name -> its stat as written (or last found intact); only for a root that holds
    # the manifest's commit. A name missing here is read and hashed.
    stat: Mapping[str, Stat] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Manifest:
    commit: str
    published_at: str
    roots: Mapping[str, RootState]
    files: Mapping[str, ManifestEntry]  # file name -> entry, the same in every root
    # Version key (MAC, or bootstrap/NAME) -> (the highest version ever served under it,
    # that file's body sha256). Kept for removed devices too: a device that comes back
    # (or a --force publish) never gets a number it was already given.
    served: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    # What the files depend on besides the commit and the roots (gitprov's version, the
    # catalog, the inventory directory, the firmware dir, ...): publishing the same commit
    # with the same inputs into intact roots needs no build. Empty: not known.
    inputs: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what that publish told the operator (never secrets)
    # The sha256 of the file as read or written ("": not known): what a record written
    # beside it names (see gitprov.publish._keep_inputs).
    sha256: str = field(default="", compare=False, repr=False)

    @cached_property
    def served_record(self) -> dict[str, tuple[int, str]]:
        """`served` with the files this manifest lists (see `served_versions`): computed
        once per manifest, a publish asks twice."""
        out = dict(whole(self.served))
        files = self.files
        kinds, macs = values_of(files, "kind"), values_of(files, "mac")
        versions, bodies = values_of(files, "version"), values_of(files, "sha256_body")
        # Of a key's files, the highest (version, body): whatever order the entries come
        # in (a table read from the index lists the changed ones last), the same record.
        listed: dict[str, tuple[int, str]] = {}
        for name, kind in kinds.items():
            if kind == Kind.DEVICE and macs[name]:
                key = macs[name]
            elif kind == Kind.BOOTSTRAP:
                key = BOOTSTRAP_KEY + name
            else:
                continue  # (see version_key)
            got = (versions[name], bodies[name])
            had = listed.get(key)
            if had is None or got > had:
                listed[key] = got
        for key, got in listed.items():
            if got[0] >= out.get(key, (0, ""))[0]:
                out[key] = got
        return out

    def owned(self, root: str) -> set[str]:
        """Names gitprov may have written into `root` (what prune may remove)."""
        state = self.roots.get(root)
        if state is None:
            return set()
        return set(self.files) | set(state.stale)

    def converged(self, root: str) -> bool:
        state = self.roots.get(root)
        return state is not None and state.ok and state.commit == self.commit

    def lagging(self) -> tuple[str, ...]:
        return tuple(r for r in self.roots if not self.converged(r))

    def to_json(self) -> str:
        return self.to_bytes().decode("utf-8")

    def to_bytes(self) -> bytes:
        """The manifest file: compact (`jq . manifest.json` shows it indented), keys
        sorted (`manifest_commit` reads the commit from its first bytes)."""
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """`to_bytes` in pieces, to be written as they come (see statejson.chunks)."""
        return statejson.chunks(self._data(_files_json(self.files)), newline=True)

    def _data(self, files: Any, *, bare: bool = False) -> dict[str, Any]:
        """The manifest's JSON value, its entries `files`; with `bare`, its roots' stats
        and versions record left empty (see `_spliced`)."""
        return {
            "format": MANIFEST_FORMAT,
            "commit": self.commit,
            "published_at": self.published_at,
            "inputs": dict(self.inputs),
            "notes": list(self.notes),
            "roots": {
                r: {
                    "commit": s.commit,
                    "error": s.error,
                    "stale": list(s.stale),
                    "stat": {} if bare else dict(whole(s.stat)),
                }
                for r, s in self.roots.items()
            },
            "files": files,
            "served": {} if bare else statejson.Converted(whole(self.served), _served_json),
        }


def manifest_chunks(state_dir: Path, manifest: Manifest) -> Iterable[bytes | memoryview]:
    """`manifest.chunks()`, made from the manifest file in `state_dir` when `manifest` was
    made from it by change (see `_spliced`): at 100,000 devices the entries' text is two
    thirds of the file and 0.3 s to make, and a publish by change keeps all but a few."""
    spliced = _spliced(state_dir, manifest)
    return manifest.chunks() if spliced is None else spliced


def _spliced(state_dir: Path, manifest: Manifest) -> list[bytes | memoryview] | None:
    """The manifest's text made from the manifest file this process read (and the
    index's change log since), when `manifest`'s entries are that one's less and plus a
    few (the table a publish by change makes; see `_write_delta`): in each of its maps
    of a fleet's size (the entries, each root's stats, the versions record) each key
    whose value changed, or that is gone, is put in place or left out in the old text
    (see statejson.splice_map); the rest of the file is made as `chunks` makes it. None when
    there is no such file."""
    base = _BASES.get(str(state_dir))
    files = manifest.files
    path = state_dir / MANIFEST
    loaded = _LOADED.get(str(path))
    if (
        base is None
        or loaded is None
        or loaded[1] is not base.manifest
        or not isinstance(files, EntryTable)
        or files._columns is not base.columns
        or not isinstance(base.manifest.files, EntryTable)
        or sorted(manifest.roots) != sorted(base.manifest.roots)
    ):
        return None
    prev = base.manifest
    assert isinstance(prev.files, EntryTable)
    try:
        with statejson.open_state(path) as f:
            if file_identity(os.fstat(f.fileno())) != loaded[0]:
                return None
            # Mapped, not read: most of it goes to the new file and its sha256 as it is
            # (60 MB at 100,000 devices, a copy out of the page cache saved). A publish
            # replaces the file, never writes into it: the mapping stays as read.
            old = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # (ValueError: an empty file cannot be mapped)
        return None
    start = b'{"commit":' + statejson.dumps(prev.commit) + b',"files":{'
    if old[: len(start)] != start:
        return None
    names = files._extra.keys() | prev.files._extra.keys() | _removed(base, prev.files, files)
    entries = {n: files._extra.get(n) for n in names}
    diffs = _diffs(prev, manifest)
    # The maps in the order the file holds them (its keys, and each root's, sorted), each
    # with its changes as the JSON values to put in place (None: left out).
    versions = {k: v if v is None else _served_json(v) for k, v in diffs.served.items()}
    changed: list[Mapping[str, Any]] = [
        {n: None if e is None else vars(e) for n, e in entries.items()},
        *(diffs.stats[r] for r in sorted(manifest.roots)),
        versions,
    ]
    if not statejson.splice_pays(sum(map(len, changed)), len(prev.files) * len(changed)):
        return None  # (made whole)
    maps, skeleton = _maps_of(manifest), _skeleton(manifest)
    spans = _map_spans(old, skeleton, maps, _ends_of(state_dir, loaded[0]))
    if spans is None:
        return None
    view = memoryview(old)
    out = _Spliced()
    at = 0  # where the skeleton was left
    try:
        for (_, close), changes, (found, lo, hi) in zip(maps, changed, spans, strict=True):
            out.append(skeleton[at:found])
            at = found
            for i, run in enumerate(statejson.splice_map(old, view, lo, hi, changes, close)):
                if i:
                    out.append(b",")
                out.append(run)
            out.ends.append(sum(map(len, out)))
    except ValueError:
        return None
    out.append(skeleton[at:])
    return out


def _removed(base: _Base, before: EntryTable, after: EntryTable) -> set[str]:
    """The names `before` holds and `after` does not, both tables of `base`'s columns:
    of the names `after` no longer holds of `base`'s (from the rows it knows are gone),
    those `before` held, and the names given to `before` as such that `after` lacks. Not
    a set of each table's names (a fleet's each, 15 ms at 100,000 devices)."""
    return {n for n in _gone(base.names, after) if n in before} | {
        n for n in before._extra if n not in after
    }


def _maps_of(manifest: Manifest) -> list[tuple[bytes, bytes]]:
    """The manifest's maps of a fleet's size in the order its text holds them (its keys,
    and each root's, sorted): each one's key up to its brace, and how its values close."""
    stats = [(b'"stat":{', b"]")] * len(manifest.roots)
    return [(b'"files":{', b"}"), *stats, (b'"served":{', b"}")]


def _skeleton(manifest: Manifest) -> bytes:
    """The manifest's text with every one of those maps empty."""
    return b"".join(statejson.chunks(manifest._data({}, bare=True), newline=True))


class _Spliced(list[bytes | memoryview]):
    """A manifest's text spliced (see `_spliced`) and where each of its maps ends in it."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[int] = []


def _map_spans(
    old: statejson.Scanned,
    skeleton: bytes,
    maps: Sequence[tuple[bytes, bytes]],
    known: Sequence[int] | None,
) -> list[tuple[int, int, int]] | None:
    """For each of `maps` (its key's text up to its brace, and how its values close), in
    the order the text `old` holds them: where the map's entries go in `skeleton` (the
    text of the manifest with every map empty), and where they start and end in `old`.
    The ends `known` (MAP_ENDS) are taken where `old` bears them out; else each is found
    by a scan (60 MB at 100,000 devices: 35 ms). None where `old` is not such a text."""
    spans = []
    at = old_at = 0  # where the skeleton and the old text were left
    if known is not None and len(known) != len(maps):
        known = None
    try:
        for k, (marker, close) in enumerate(maps):
            found = skeleton.find(marker + b"}", at)
            lo = old.find(marker, old_at)
            if found < 0 or lo < 0:
                return None
            at = found + len(marker)
            # What follows the map in the skeleton, up to the next key's quote, follows it
            # in the old text too (the same roots): never inside a string, where a quote
            # is escaped, so it tells where the old map ends.
            quote = skeleton.find(b'"', at)
            then = skeleton[at + 1 : quote + 1 if quote >= 0 else len(skeleton)]
            lo += len(marker)
            end = known[k] if known is not None else -1
            if not _ends_at(old, lo, end, close, then):
                end = statejson.map_end(old, lo, close, then)
            spans.append((at, lo, end))
            old_at = end
    except ValueError:
        return None
    return spans


def _ends_at(old: statejson.Scanned, lo: int, end: int, close: bytes, then: bytes) -> bool:
    """Whether the map whose entries start at `lo` in `old` may end at `end`: its last
    value's `close` there (or nothing, for an empty map), then the brace and `then` (the
    end of the text when `then` holds no quote). Asked of ends recorded for this very
    file (MAP_ENDS): a check against a mistake, not a search."""
    tail = b"}" + then
    if end < lo or old[end : end + len(tail)] != tail:
        return False
    if b'"' not in then and end + len(tail) != len(old):
        return False
    return end == lo or old[end - len(close) : end] == close


# Beside the manifest: where each of its maps (files, each root's stats, the versions)
# ends in its text, for the file it names (size, mtime, inode). Best effort, never
# fsynced: a splice that finds it missing or wrong scans for the ends.
MAP_ENDS = "manifest.ends"
_ENDS_FORMAT = 1


def _ends_of(state_dir: Path, identity: tuple[int, ...]) -> list[int] | None:
    try:
        with statejson.open_state(state_dir / MAP_ENDS) as f:
            raw = statejson.loads(f.read(1 << 16))
        named = raw["manifest"]
        ends = raw["ends"]
        if raw["format"] != _ENDS_FORMAT or named != [identity[2], identity[3], identity[1]]:
            return None
        if not all(type(e) is int for e in ends):
            return None
        return list(ends)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_map_ends(state_dir: Path, manifest: Manifest, text: Iterable[Any]) -> None:
    """Record where the maps of the manifest file just written end (MAP_ENDS): known when
    `text` was spliced, else found in the file (a full write: a publish of the whole
    fleet, to which a scan adds little)."""
    path = state_dir / MAP_ENDS
    with contextlib.suppress(OSError):
        path.unlink()
    try:
        with statejson.open_state(state_dir / MANIFEST) as f:
            st = os.fstat(f.fileno())
            ends = text.ends if isinstance(text, _Spliced) else None
            if ends is None and st.st_size:
                data = statejson.FileText(f.fileno(), st.st_size)
                spans = _map_spans(data, _skeleton(manifest), _maps_of(manifest), None)
                ends = None if spans is None else [hi for _, _, hi in spans]
        if ends is None:
            return
        log = {
            "format": _ENDS_FORMAT,
            "manifest": [st.st_size, st.st_mtime_ns, st.st_ino],
            "ends": ends,
        }
        tmp = state_dir / f"{TMP_PREFIX}{MAP_ENDS}{TMP_SUFFIX}"
        with open(tmp, "wb") as out:
            out.write(statejson.dumps(log, newline=True))
        os.replace(tmp, path)
    except (OSError, ValueError):
        return


class _Diffs(NamedTuple):
    """What changed in the versions record and in each root's stats from one manifest to
    the next (None: gone): what the manifest's text and the index's change log need."""

    prev: Manifest
    manifest: Manifest
    served: dict[str, tuple[int, str] | None]
    stats: dict[str, dict[str, Stat | None]]


# The last _Diffs made: a publish makes the manifest's text, then the index's change log.
_DIFFED: list[_Diffs] = []


def _diffs(prev: Manifest, manifest: Manifest) -> _Diffs:
    """`_Diffs` from `prev` to `manifest` (which has `prev`'s roots): made once for both
    (a pass in C over each fleet-sized map, see `_diff_into`)."""
    for hit in _DIFFED:
        # (the manifest written is given its sha256 after: a copy, its maps the same)
        made = hit.manifest
        if (
            hit.prev is prev
            and made.served is manifest.served
            and made.roots.keys() == manifest.roots.keys()
            and all(made.roots[r].stat is s.stat for r, s in manifest.roots.items())
        ):
            return hit
    served: dict[str, tuple[int, str] | None] = {}
    _diff_into(served, prev.served, manifest.served)
    stats: dict[str, dict[str, Stat | None]] = {}
    for r, s in manifest.roots.items():
        stats[r] = {}
        _diff_into(stats[r], prev.roots[r].stat, s.stat)
    _DIFFED[:] = [_Diffs(prev, manifest, served, stats)]
    return _DIFFED[0]


def _files_json(files: Mapping[str, ManifestEntry]) -> statejson.Converted:
    # (an EntryTable's rows are made from its columns, without the entries)
    if isinstance(files, EntryTable):
        return statejson.Converted(files.rows(), _itself)
    return statejson.Converted(files, vars)


def _itself(value: Any) -> Any:
    return value


def sorted_fields(
    files: Mapping[str, ManifestEntry], *names: str
) -> tuple[list[str], list[Sequence[Any]]]:
    """The file names sorted, and the values of fields `names` of their entries in that
    order: from the columns of an EntryTable (no entry made)."""
    if isinstance(files, EntryTable):
        listed, found = files.sorted_of(names)
        columns: list[Sequence[Any]] = [*found]
        return listed, columns
    listed = sorted(files)
    entries = [files[n] for n in listed]
    return listed, [[getattr(e, n) for e in entries] for n in names]


def _served_json(served: tuple[int, str]) -> dict[str, Any]:
    return {"version": served[0], "sha256_body": served[1]}


def served_versions(manifest: Manifest | None) -> Overlay[tuple[int, str]]:
    """Version key -> (highest version served, body sha256): the manifest's record, and
    the files it lists (a manifest written before the record existed has only those).
    The caller's to change: the record's few changes over it, never a fleet's copy (a
    next manifest's `served`, whose changes `_diffs` then knows)."""
    return Overlay({} if manifest is None else manifest.served_record)


def values_of(files: Mapping[str, ManifestEntry], name: str) -> Mapping[str, Any]:
    """File name -> one field of its entry: from a column when the entries are an
    EntryTable (no entry made)."""
    if isinstance(files, EntryTable):
        return files.values_of(name)
    return {n: getattr(e, name) for n, e in files.items()}


def version_key(name: str, e: ManifestEntry) -> str | None:
    """The key of `served` a file's number is recorded under (firmware has none)."""
    if e.kind == Kind.DEVICE and e.mac:
        return e.mac
    if e.kind == Kind.BOOTSTRAP:
        return BOOTSTRAP_KEY + name
    return None


_HEAD = re.compile(rb'\{"commit":"([0-9a-f]{40,64})"')


def manifest_commit(state_dir: Path) -> str | None:
    """The commit the manifest names, from its first bytes (`to_json` sorts the keys, so
    it comes first): enough to tell a publish of another commit without reading a
    manifest of 100,000 files. None when it cannot be told so (none, another format)."""
    try:
        with statejson.open_state(state_dir / MANIFEST) as f:
            head = f.read(128)
    except OSError:
        return None
    found = _HEAD.match(head)
    return found.group(1).decode() if found else None


# A running watcher reads, at every publish, the manifest it wrote itself: the parsed one
# is kept while the file is the same one (device, inode, size, mtime and ctime: a write,
# a rename over it or a touch changes one of them). Manifests are never changed in place.
_LOADED: dict[str, tuple[tuple[int, ...], Manifest]] = {}
_LOADED_MAX = 8


def remember_manifest(state_dir: Path, manifest: Manifest) -> None:
    """`manifest` was just written into `state_dir` (under the publish lock): the next
    load_manifest of that same file gives it without reading it back."""
    path = state_dir / MANIFEST
    try:
        st = os.stat(path)
    except OSError:
        return
    _keep_loaded(path, st, manifest)


def load_manifest(state_dir: Path) -> Manifest | None:
    """The manifest in `state_dir`; None when there is none, or it is torn or foreign (a
    publish then starts from scratch and compares the files). Read from its index when
    the index names it and holds its entries (columns: a fraction of the JSON's parse),
    else from the JSON itself."""
    path = state_dir / MANIFEST
    try:
        with statejson.open_state(path) as f:
            st = os.fstat(f.fileno())
            hit = _LOADED.get(str(path))
            if hit is not None and hit[0] == file_identity(st):
                return hit[1]
            index = load_index(state_dir, st)
            indexed = index.manifest() if index is not None else None
            if indexed is not None:
                _keep_loaded(path, st, indexed)
                return indexed
            data = f.read()
            raw: dict[str, Any] = statejson.loads(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a torn or foreign manifest: publish from scratch, files are compared
    try:
        manifest = _from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if manifest is not None:
        manifest = replace(manifest, sha256=hashlib.sha256(data).hexdigest())
    if manifest is not None:
        _keep_loaded(path, st, manifest)
    return manifest


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """What tells a file from any other written, replaced or touched since: device,
    inode, size, mtime and ctime (state files are never changed in place)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _keep_loaded(path: Path, st: os.stat_result, manifest: Manifest) -> None:
    if len(_LOADED) >= _LOADED_MAX:
        _LOADED.clear()
    _LOADED[str(path)] = (file_identity(st), manifest)


def _from_json(raw: dict[str, Any]) -> Manifest | None:
    fmt = raw.get("format")
    commit = raw["commit"]
    if fmt == 1:
        # Format 1 listed roots only, as given (relative to the current directory);
        # every root held the manifest's commit.
        roots = {str(Path(r).absolute()): RootState(commit) for r in raw.get("roots", ())}
    elif fmt == MANIFEST_FORMAT:
        roots = {
            str(r): RootState(
                s.get("commit"),
                s.get("error", ""),
                tuple(s.get("stale", ())),
                _stats(s.get("stat", {})),
            )
            for r, s in raw.get("roots", {}).items()
        }
    else:
        return None
    files = raw.get("files", {})
    if not isinstance(commit, str) or not _typed(files):
        raise TypeError("not a manifest")
    return Manifest(
        commit=commit,
        published_at=str(raw.get("published_at", "")),
        roots=roots,
        files={name: _entry(e) for name, e in files.items()},
        served={
            str(k): (int(v["version"]), str(v.get("sha256_body", "")))
            for k, v in raw.get("served", {}).items()
        },
        inputs={str(k): str(v) for k, v in raw.get("inputs", {}).items()},
        notes=tuple(str(n) for n in raw.get("notes", ())),
    )


_ENTRY_FIELDS = frozenset(f.name for f in fields(ManifestEntry))
_ENTRY_DEFAULTS = {f.name: f.default for f in fields(ManifestEntry) if f.default is not MISSING}
_ENTRY_REQUIRED = _ENTRY_FIELDS - set(_ENTRY_DEFAULTS)
_ENTRY_COUNT = len(_ENTRY_FIELDS)
_new, _set = object.__new__, object.__setattr__


def _entry(raw: dict[str, Any]) -> ManifestEntry:
    """ManifestEntry(**raw), checked the same way, at a fraction of the cost: a manifest
    has an entry per served file, and a frozen dataclass's __init__ sets each field through
    object.__setattr__ (a second per 100,000 files). The entry takes `raw` itself as its
    attributes (the decoded manifest is not kept), a copy only to add missing defaults."""
    keys = raw.keys()
    if not (_ENTRY_REQUIRED <= keys <= _ENTRY_FIELDS):
        raise TypeError("not a manifest entry")
    if len(raw) != _ENTRY_COUNT:
        raw = {**_ENTRY_DEFAULTS, **raw}
    entry = _new(ManifestEntry)
    _set(entry, "__dict__", raw)
    return entry


def _typed(files: dict[str, Any]) -> bool:
    """Whether every entry's values are of their fields' types (an int version, text
    for the others), as a publish wrote them: a hand-edited or foreign manifest may hold
    anything, which the entries (taken as they are, see `_entry`) must not carry into a
    comparison or a sort. A pass per field, in C."""
    if not isinstance(files, dict) or not all(map(dict.__instancecheck__, files.values())):
        return False
    entries = files.values()
    if not {type(e.get("version")) for e in entries} <= {int}:
        return False
    return all({type(e.get(k, "")) for e in entries} <= {str} for k in _ENTRY_FIELDS - {"version"})


# The entry fields as the index keeps them: a text column each (every field but the
# version) and an int column of versions; an entry's row in this order.
_ENTRY_TEXT = tuple(sorted(_ENTRY_FIELDS - {"version"}))
_ENTRY_ROW = (*_ENTRY_TEXT, "version")


# Up to this many values, EntryTable.names_with searches a column's bytes for each.
_FEW = 64


class EntryTable(Mapping[str, ManifestEntry]):
    """A manifest's entries as read from its index: a column per field, an entry made
    only when one is asked for. At 100,000 devices, making every entry costs a third of
    a second; a publish by change asks for a handful, and for the rest for a column
    (`values_of`) or the names (`keys`).

    `at` maps each name held in the columns to its row; `extra` holds entries given as
    such (a publish's new ones, see `with_entries`), never a name of `at`. `gone`, when
    known, are the rows of the columns that `at` no longer names, sorted, and `at` is
    then in the order of its rows, which is the order of its names: the sorted columns
    are then the columns' runs between those rows (see `sorted_columns`)."""

    def __init__(
        self,
        columns: Mapping[str, Sequence[Any]],
        at: dict[str, int],
        extra: Mapping[str, ManifestEntry] | None = None,
        gone: tuple[int, ...] | None = None,
    ) -> None:
        self._columns = columns
        self._at = at
        self._extra = dict(extra or {})
        self._gone = gone
        self._keys: dict[str, None] | None = None
        self._whole: dict[str, ManifestEntry] | None = None
        self._sorted: tuple[list[str], list[list[Any]]] | None = None

    @classmethod
    def of(
        cls, names: Sequence[str], columns: Sequence[Sequence[Any]] | Mapping[str, Sequence[Any]]
    ) -> EntryTable:
        """The table of `names` with their columns in `_ENTRY_ROW` order (or by field)."""
        listed = list(names)
        by_field = (
            columns if isinstance(columns, Mapping) else dict(zip(_ENTRY_ROW, columns, strict=True))
        )
        return cls(
            by_field,
            dict(zip(listed, range(len(listed)), strict=True)),
            # (sorted already, as an index lists them: a pass in C to be sure)
            gone=() if sorted(listed) == listed else None,
        )

    def _row(self, i: int) -> dict[str, Any]:
        return {f: c[i] for f, c in self._columns.items()}

    def __getitem__(self, name: str) -> ManifestEntry:
        if self._whole is not None:
            return self._whole[name]
        found = self._extra.get(name)
        if found is not None:
            return found
        entry = _new(ManifestEntry)
        _set(entry, "__dict__", self._row(self._at[name]))
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._at or name in self._extra

    def __iter__(self) -> Iterator[str]:
        return itertools.chain(self._at, self._extra)

    def __len__(self) -> int:
        return len(self._at) + len(self._extra)

    def keys(self) -> KeysView[str]:
        """The names, as a set in C (for `a.keys() - b.keys()` on a fleet's names)."""
        if not self._extra:
            return self._at.keys()
        if self._keys is None:
            self._keys = {**dict.fromkeys(self._at), **dict.fromkeys(self._extra)}
        return self._keys.keys()

    def _made(self) -> dict[str, ManifestEntry]:
        # Every entry, made once: what a pass over the items asks for (in C, but for
        # the loop that drives the maps).
        if self._whole is None:
            columns = list(self._columns.values())
            if columns and len(self._at) != len(columns[0]):  # rows left out
                columns = [list(map(c.__getitem__, self._at.values())) for c in columns]
            rows = map(dict, map(zip, itertools.repeat(self._columns), zip(*columns, strict=True)))
            made = list(map(_new, itertools.repeat(ManifestEntry, len(self._at))))
            for _ in map(_set, made, itertools.repeat("__dict__"), rows):
                pass
            self._whole = {**dict(zip(self._at, made, strict=True)), **self._extra}
        return self._whole

    def items(self) -> ItemsView[str, ManifestEntry]:
        return self._made().items()

    def values(self) -> ValuesView[ManifestEntry]:
        return self._made().values()

    def value_of(self, name: str, field: str) -> Any:
        """One field of one entry: from its column alone (KeyError: no such name)."""
        found = self._extra.get(name)
        if found is not None:
            return getattr(found, field)
        columns = self._columns
        if isinstance(columns, _Columns):
            return columns.value(field, self._at[name])
        return columns[field][self._at[name]]

    def values_of(self, field: str) -> dict[str, Any]:
        """Name -> the value of one field of its entry, for every name: from a column."""
        column = self._columns[field]
        if len(self._at) == len(column):  # every row, in order (see `of`)
            out = dict(zip(self._at, column, strict=True))
        else:
            out = dict(zip(self._at, map(column.__getitem__, self._at.values()), strict=True))
        for name, e in self._extra.items():
            out[name] = getattr(e, field)
        return out

    def columns_for(self, names: Sequence[str]) -> list[list[Any]]:
        """The columns (in `_ENTRY_ROW` order) of `names`, each one of this table's."""
        if not self._extra:
            rows = list(map(self._at.__getitem__, names))
            return [list(map(c.__getitem__, rows)) for c in self._columns.values()]
        wanted = set(names)
        if not self.keys() >= wanted:
            raise KeyError("not a name of this table")
        # Row 0 stands for the given entries (few: a publish's new ones), then set.
        rows = [self._at.get(n, 0) for n in names]
        out = [
            list(map(c.__getitem__, rows)) if c else [None] * len(names)
            for c in self._columns.values()
        ]
        listed = list(names) if not isinstance(names, list) else names
        if len(self._extra) <= 8:  # a scan in C each
            where = {n: listed.index(n) for n in self._extra if n in wanted}
        else:  # (a profile's devices, thousands: one pass)
            where = {n: i for i, n in enumerate(listed) if n in self._extra}
        for name, i in where.items():
            e = self._extra[name]
            for column, f in zip(out, _ENTRY_ROW, strict=True):
                column[i] = getattr(e, f)
        return out

    def sorted_columns(self) -> tuple[list[str], list[list[Any]]]:
        """The names sorted and their columns: what the manifest's JSON and its index
        are written from (made once for both)."""
        if self._sorted is None:
            self._sorted = self._runs()
            if self._sorted is None:
                names = sorted(self)
                self._sorted = names, self.columns_for(names)
        return self._sorted

    def sorted_of(self, fields: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
        """`sorted_columns` of `fields` only (the others may never be read at all, see
        `_Columns`)."""
        if self._sorted is None:
            found = self._runs(fields)
            if found is not None:
                return found
        names, columns = self.sorted_columns()
        return names, [columns[_ENTRY_ROW.index(f)] for f in fields]

    # Above this many given entries `_runs` leaves the sorted columns to a sort; above
    # this many rows gone it copies the runs between them, not the columns less them.
    _RUNS_EXTRA = 64
    _RUNS_DELETED = 64

    def _runs(self, fields: Sequence[str] = _ENTRY_ROW) -> tuple[list[str], list[list[Any]]] | None:
        """The sorted columns of a table that is its columns less a few rows (`gone`)
        plus a few entries: each column copied whole, the entries put in place by
        bisection. A publish by change at 100,000 devices: 8 ms instead of 40."""
        gone = self._gone
        if gone is None or len(self._extra) > self._RUNS_EXTRA:
            return None
        names = list(self._at)
        size = len(names) + len(gone)
        if any(len(self._columns[f]) != size for f in fields):
            return None
        columns: list[list[Any]] = []
        cut = [-1, *gone, size]
        spans = [(a + 1, b) for a, b in itertools.pairwise(cut) if b > a + 1]
        for column in map(self._columns.__getitem__, fields):
            if len(gone) <= self._RUNS_DELETED:
                runs = list(column)  # (a copy in C, then the few rows gone taken out)
                for row in reversed(gone):
                    del runs[row]
            else:
                runs = []
                for a, b in spans:
                    runs += column[a:b]  # (each run copied in C, not an item at a time)
            columns.append(runs)
        for name in sorted(self._extra):
            at = bisect.bisect_left(names, name)
            names.insert(at, name)
            entry = self._extra[name]
            for column, f in zip(columns, fields, strict=True):
                column.insert(at, getattr(entry, f))
        return names, columns

    def rows(self) -> dict[str, dict[str, Any]]:
        """Name -> its entry's fields as a dict (what the manifest's JSON holds), every
        one made at once without the entry, in the order of the names."""
        names, columns = self.sorted_columns()
        rows = map(dict, map(zip, itertools.repeat(_ENTRY_ROW), zip(*columns, strict=True)))
        return dict(zip(names, rows, strict=True))

    def names_where(self, field: str, test: Callable[[Any], bool]) -> list[str]:
        """The names whose entry's `field` passes `test`, in the table's order: a pass
        over one column in C."""
        column: Iterable[Any] = self._columns[field]
        if len(self._at) != len(self._columns[field]):
            column = map(self._columns[field].__getitem__, self._at.values())
        found = list(itertools.compress(self._at, map(test, column)))
        return found + [n for n, e in self._extra.items() if test(getattr(e, field))]

    def names_with(self, field: str, values: Collection[object]) -> list[str]:
        """`names_where(field, values.__contains__)`: for a few values of a column of one
        width (the MACs a change reaches), the rows that hold them found by a search of
        the column's bytes, none of its values made (a split of it costs 15 ms at
        100,000 devices)."""
        columns = self._columns
        rows = (
            columns.rows_with(field, values)
            if isinstance(columns, _Columns) and len(values) <= _FEW and self._gone is not None
            else None
        )
        if rows is None:
            return self.names_where(field, values.__contains__)
        found = self._names_at(rows)
        return found + [n for n, e in self._extra.items() if getattr(e, field) in values]

    def names_other_than(self, field: str, value: str) -> list[str]:
        """`names_where(field, value.__ne__)`, the rows found in the column's bytes (see
        `_Columns.rows_other_than`): the files of another kind than a device's are few."""
        columns = self._columns
        rows = (
            columns.rows_other_than(field, value)
            if isinstance(columns, _Columns) and self._gone is not None
            else None
        )
        if rows is None:
            return self.names_where(field, value.__ne__)
        found = self._names_at(rows)
        return found + [n for n, e in self._extra.items() if getattr(e, field) != value]

    def _names_at(self, rows: list[int]) -> list[str]:
        """The names of `rows` (in order) that this table still holds, when `gone` is
        known (`at` is then in the order of its rows)."""
        names, held = list(self._at), list(self._at.values())
        found = []
        for row in rows:
            i = bisect.bisect_left(held, row)
            if i < len(held) and held[i] == row:
                found.append(names[i])
        return found

    def without(self, names: Iterable[str]) -> EntryTable:
        """This table less `names`, sharing its columns."""
        at, extra = dict(self._at), dict(self._extra)
        rows = []
        for name in names:
            row = at.pop(name, None)
            if row is not None:
                rows.append(row)
            extra.pop(name, None)
        return EntryTable(self._columns, at, extra, self._less(rows))

    def _less(self, rows: list[int]) -> tuple[int, ...] | None:
        # The rows gone once `rows` are too (None: not known, see `__init__`).
        if self._gone is None:
            return None
        return tuple(sorted((*self._gone, *rows))) if rows else self._gone

    def with_entries(self, entries: Mapping[str, ManifestEntry]) -> EntryTable:
        """This table with `entries` added, or put in place of the same names."""
        at, rows = self._at, []
        if not at.keys().isdisjoint(entries):
            at = dict(at)
            rows = [row for row in map(at.pop, entries, itertools.repeat(None)) if row is not None]
        return EntryTable(self._columns, at, {**self._extra, **entries}, self._less(rows))


def _stats(raw: dict[str, Any]) -> dict[str, Stat]:
    # Checked in bulk (a stat per served file per root): three ints each.
    out: dict[str, Stat] = dict(zip(raw, map(tuple, raw.values()), strict=True))
    if set(map(len, out.values())) - {3} or set(
        map(type, itertools.chain.from_iterable(out.values()))
    ) - {int}:
        raise TypeError("not a stat")
    return out


def sha256_file(path: Path | str) -> str | None:
    """The sha256 of the served file at `path`; None when there is none (see
    `_open_served`)."""
    f = _open_served(path)
    if f is None:
        return None
    with f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_served(path: Path | str) -> bytes | None:
    """The bytes of the served file at `path`; None when there is none (see
    `_open_served`)."""
    f = _open_served(path)
    if f is None:
        return None
    with f:
        return f.read()


def _open_served(path: Path | str) -> BufferedReader | None:
    """The regular file at `path`, opened; None when there is none: gone, or a link, a
    fifo, a device or a directory put in its place. Those are never followed nor read (a
    fifo or a link to /dev/zero would never end): a publish replaces them."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # (a symbolic link)
        raise
    try:
        regular = S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        return None
    return open(fd, "rb")  # (the caller closes it)


def stat_of(path: Path | str) -> Stat | None:
    """What the manifest records of a served file; None when it is gone. Not following a
    link: a link put where a file was is a change."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class FileAction(NamedTuple):
    root: str
    name: str
    action: Action


class Drift(NamedTuple):
    """A file the manifest says gitprov wrote, found changed or missing in a root."""

    root: str
    name: str
    kind: str  # "changed", "deleted", or "touched" (same bytes, but not the file written)


@dataclass(frozen=True)
class Plan:
    actions: tuple[FileAction, ...]
    unchanged: int
    unknown: tuple[tuple[str, str], ...] = field(default=())  # (root, name) we did not write
    drift: tuple[Drift, ...] = field(default=())
    # Root -> name -> stat of each wanted file found right and left alone (for the manifest).
    intact: Mapping[str, Mapping[str, Stat]] = field(default_factory=dict, repr=False)

    @property
    def empty(self) -> bool:
        return not self.actions


def _holds(path: Path, sha256: str | None) -> bool:
    """Whether the served file `path` holds the bytes of this sha256 (see sha256_file:
    a link, a fifo or a device in its place never does)."""
    return sha256 is not None and sha256_file(path) == sha256


def plan(
    wanted: Mapping[str, bytes] | Collection[str],
    roots: Sequence[Path],
    previous: Manifest | None,
    *,
    prune_unknown: bool = False,
    verify: bool = False,
    digests: Mapping[str, str] | None = None,
    clean: bool = False,
    as_recorded: Set[str] = frozenset(),
    surveyed: Survey | None = None,
    unrecorded: Mapping[str, str] | None = None,
) -> Plan:
    """Compare the wanted files (name -> bytes, the same in every root; only names with
    `digests`) with each root on disk. Files of ours that are no longer wanted are
    removed; files we never wrote are listed as unknown, and removed too only with
    `prune_unknown`. With `clean`, the temps a crashed publish left in a root are removed
    on the way (the root is listed once).

    A file whose stat is what the manifest recorded is taken to hold what the manifest
    says and is not read; one whose stat changed is rewritten (drift); `verify` reads
    every file and rewrites only those whose bytes differ. `digests` (name -> sha256 of
    the wanted bytes) saves hashing them again; `as_recorded` names wanted files known
    to be the bytes `previous` records (taken over from it: no digest compared).
    `surveyed`: the stats of `previous`'s files and the roots' listings, taken ahead
    (it must be the manifest the survey was made for). `unrecorded` (name -> sha256)
    names the files a publish that did not finish may have written: one found with
    those bytes is ours, removed when no longer wanted."""
    if digests is None:
        assert isinstance(wanted, Mapping)
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in wanted.items()}
    actions: list[FileAction] = []
    unchanged = 0
    unknown: list[tuple[str, str]] = []
    drift: list[Drift] = []
    intact: dict[str, MutableMapping[str, Stat]] = {}
    wanted_names = set(wanted)
    temps: list[str] = []
    fast = (
        _by_difference(roots, wanted_names, previous, digests, as_recorded, surveyed)
        if isinstance(surveyed, SurveyAhead) and previous is not None and not verify
        else {}
    )
    slow = [root for root in roots if str(root) not in fast]
    listings = []
    for root in roots:
        if str(root) in fast:
            temps += fast[str(root)].temps
            continue
        ahead = surveyed.listing(str(root), wanted_names) if surveyed is not None else None
        if ahead is None:
            listings.append(_listing(root, temps, wanted_names))
        else:
            listings.append(ahead[0])
            temps += ahead[1]
    if clean:
        _remove(temps)
    found_as_recorded = (
        [set[str]() for _ in slow]
        if verify
        else _unchanged(slow, wanted_names, listings, previous, digests, as_recorded, surveyed)
    )
    views = {
        str(root): _Found.of_sets(same, present, wanted_names)
        for root, present, same in zip(slow, listings, found_as_recorded, strict=True)
    }
    views.update(fast)
    for root in roots:
        key = str(root)
        view = views[key]
        # Ours to remove (see Manifest.owned): its files, and the stale ones of this root.
        owned = previous.roots.get(key) if previous else None
        ours: Mapping[str, Any] = previous.files if previous and owned is not None else {}
        stale = set(owned.stale) if owned is not None else set()
        converged = previous is not None and previous.converged(key)
        recorded = previous.files if previous is not None and converged else {}
        stats = previous.roots[key].stat if previous is not None and converged else {}
        # Most of a fleet, found as recorded: left alone, in one pass without a test each
        # (the recorded stats less the others, when they are the fewer: an Overlay, no
        # fleet's copy, whose changes the next manifest's text and index take as such).
        kept: MutableMapping[str, Stat]
        if view.same is None or len(view.same) > len(stats) // 2:
            off = view.dropped(stats)
            # (past a few thousand, a change in Python each costs more than a copy in C)
            kept = Overlay(stats) if len(off) <= OVERLAY_MAX else dict(whole(stats))
            for name in off:
                del kept[name]
        else:
            kept = {name: stats[name] for name in view.same}
        intact[key] = kept
        unchanged += view.count
        for name in sorted(view.todo):
            sha = recorded_sha256(recorded, name)
            found = (
                _found(f"{key}/{name}", sha, stats.get(name), verify)
                if view.present(name)
                else None
            )
            if found is None:
                if sha is not None:
                    drift.append(Drift(key, name, "deleted"))
                actions.append(FileAction(key, name, Action.ADD))
                continue
            on_disk, st, touched = found
            if sha is not None and on_disk == digests[name] and on_disk != sha:
                # Not what the manifest lists, but the very bytes wanted (read just now):
                # what a publish that renamed them and did not get to its manifest (see
                # publish.PENDING) left, no hand's doing to report. Written again all
                # the same: a copy by hand may have another mode or owner.
                actions.append(FileAction(key, name, Action.CHANGE))
                continue
            if sha is not None and on_disk != sha:
                drift.append(Drift(key, name, "changed"))
            elif touched:
                drift.append(Drift(key, name, "touched"))
            if touched or on_disk != digests[name]:
                actions.append(FileAction(key, name, Action.CHANGE))
            else:
                unchanged += 1
                kept[name] = st
        for name in sorted(view.extras):
            if name in ours or name in stale or _holds(root / name, (unrecorded or {}).get(name)):
                actions.append(FileAction(key, name, Action.REMOVE))
            else:
                unknown.append((key, name))
                if prune_unknown:
                    actions.append(FileAction(key, name, Action.REMOVE))
    return Plan(tuple(actions), unchanged, tuple(unknown), tuple(drift), intact)


@dataclass
class _Found:
    """What `plan` found in one root, by the files it leaves alone (`same`, or when None,
    by its count and the recorded names it does not hold: `drop`), the wanted files not
    found so (`todo`), the files there that are not wanted (`extras`) and whether a name
    is there (`present`)."""

    count: int
    same: Set[str] | None
    drop: Set[str]
    todo: Set[str]
    extras: Set[str]
    present: Callable[[str], bool]
    temps: list[str] = field(default_factory=list)

    @classmethod
    def of_sets(cls, same: set[str], present: set[str], wanted: set[str]) -> _Found:
        return cls(len(same), same, set(), wanted - same, present - wanted, present.__contains__)

    def dropped(self, stats: Mapping[str, Stat]) -> Set[str]:
        """The recorded names (those of `stats`) not left alone."""
        return stats.keys() - self.same if self.same is not None else self.drop


def _by_difference(
    roots: Sequence[Path],
    names: set[str],
    previous: Manifest,
    digests: Mapping[str, str],
    as_recorded: Set[str],
    surveyed: SurveyAhead,
) -> dict[str, _Found]:
    """What `_unchanged` and the listings find in each root surveyed ahead, from what
    differs: a publish by change leaves nearly every file alone, and a root's sets
    (wanted, listed, recorded, found as recorded) are then a fleet's names each, whose
    intersections cost 5 ms apiece, a dozen of them a root. Here they are made once for
    every root, and each root's from the few names that differ. Only for a root that
    holds the manifest's commit, whose stats are the survey's names every one, when the
    wanted files not known to be as recorded are few (`as_recorded`: a publish by change
    carries the rest) and most files are found as recorded; the others go `plan`'s way.
    """
    if not as_recorded:
        return {}
    unsure = names - as_recorded
    # (every name `as_recorded` wanted: what `plan` takes as sure is then those names)
    if len(unsure) > OVERLAY_MAX or len(names) - len(unsure) != len(as_recorded):
        return {}
    # Per set of recorded names (the roots of one index share it): the unsure names
    # recorded that hold what is wanted by their recorded sha256 (left alone too, as the
    # names `as_recorded`, once their stats compare), the recorded names not left alone
    # so, the wanted ones not left alone so, and the recorded ones no longer wanted.
    made: dict[int, tuple[set[str], Set[str], set[str], Set[str]] | None] = {}
    out: dict[str, _Found] = {}
    for root in roots:
        key = str(root)
        state = previous.roots.get(key)
        recorded = surveyed.names(key)
        if (
            state is None
            or recorded is None
            or not previous.converged(key)
            or not isinstance(state.stat, StatTable)
            or len(state.stat.names) != len(recorded)
            or not state.stat.every_recorded()
        ):
            continue
        got = surveyed.got(key)
        if got is None:
            continue
        if id(recorded) not in made:
            made[id(recorded)] = (
                None
                if not as_recorded <= recorded  # (a name carried but not recorded here)
                else _differences(recorded, names, unsure, previous.files, digests)
            )
        shared = made[id(recorded)]
        if shared is None:
            continue
        also, not_same, unwanted_same, unwanted = shared
        off = {name for name in got[0] if name in as_recorded or name in also}
        count = len(as_recorded) + len(also) - len(off)
        if count <= len(recorded) // 2:
            continue  # (a fleet's files not as recorded: `plan`'s way)
        # A recorded name no longer wanted is looked at (as SurveyAhead.listing does).
        gone = {n for n in unwanted if not os.path.isfile(os.path.join(key, n))}
        others = set(got[1])

        out[key] = _Found(
            count,
            None,
            not_same | off,
            unwanted_same | off,
            (unwanted - gone) | (others - names),
            _present(recorded, gone, others),
            list(got[2]),
        )
    return out


def _differences(
    recorded: Set[str],
    names: set[str],
    unsure: set[str],
    files: Mapping[str, ManifestEntry],
    digests: Mapping[str, str],
) -> tuple[set[str], Set[str], set[str], Set[str]]:
    """See `_by_difference`: `unsure` are the wanted names less the sure ones."""
    also = {n for n in unsure if n in recorded and recorded_sha256(files, n) == digests[n]}
    unwanted = recorded - names
    not_also = {n for n in unsure if n in recorded and n not in also}
    return also, unwanted | not_also, unsure - also, unwanted


def _present(recorded: Set[str], gone: set[str], others: set[str]) -> Callable[[str], bool]:
    """Whether a name is in a root listed as its recorded names less `gone`, plus `others`."""
    return lambda name: (name in recorded and name not in gone) or name in others


def _unchanged(
    roots: Sequence[Path],
    names: Set[str],
    listings: Sequence[set[str]],
    previous: Manifest | None,
    digests: Mapping[str, str],
    as_recorded: Set[str] = frozenset(),
    surveyed: Survey | None = None,
) -> list[set[str]]:
    """For each root, the names found as recorded (stat) holding the wanted bytes (the
    manifest's sha256 is the wanted one, or the name is `as_recorded`): what `plan`
    leaves alone without a look more. Most of a fleet: an lstat each and nothing else,
    every root at once."""
    # A root's names stay a set throughout: a fleet's of them meet other sets in C, and
    # only the names that are not sure are compared one by one.
    checks: list[tuple[Path | str, set[str], Mapping[str, Stat]]] = []
    for root, present in zip(roots, listings, strict=True):
        key = str(root)
        if previous is None or not previous.converged(key):
            checks.append((root, set(), {}))
            continue
        recorded, stats = previous.files, previous.roots[key].stat
        here = names & present
        sure = here & as_recorded if as_recorded else set()
        wanted = sure & stats.keys()
        wanted.update(
            name
            for name in (here - sure if sure else here)
            if name in stats and recorded_sha256(recorded, name) == digests[name]
        )
        checks.append((root, wanted, stats))
    # The roots surveyed ahead: only the names the survey did not cover are looked at.
    ahead = [surveyed.off(str(root), names) if surveyed else None for root, names, _ in checks]
    rest = [
        (root, list(names) if found is None else found[1], stats)
        for (root, names, stats), found in zip(checks, ahead, strict=True)
    ]
    off = [
        gone if found is None else found[0] + gone
        for found, gone in zip(ahead, _each_not_as_recorded(rest), strict=True)
    ]
    for (_, names, _), gone in zip(checks, off, strict=True):
        names.difference_update(gone)
    return [names for _, names, _ in checks]


def recorded_sha256(files: Mapping[str, ManifestEntry], name: str) -> str | None:
    """The sha256 a manifest records for `name` (None: not listed): of an EntryTable,
    from its one column (a few entries asked for split no other)."""
    if isinstance(files, EntryTable):
        return files.value_of(name, "sha256_data") if name in files else None
    entry = files.get(name)
    return None if entry is None else entry.sha256_data


class WantedDigests(Counted, Mapping[str, str]):
    """Name -> sha256 of each file a publish wants: the files it made, then the files it
    carried over (which hold what their entries record). Looked up one by one: a publish
    by change asks for those of a few names, and the carried ones' column is split only
    if one of them is asked for (a fleet's dict of it cost 40 ms at 100,000 devices);
    past LOOKUPS_MAX lookups, from the dict made once."""

    def __init__(self, made: Mapping[str, str], carried: Mapping[str, ManifestEntry]) -> None:
        self._made = made
        self._carried = carried
        self._whole: dict[str, str] | None = None

    def whole(self) -> dict[str, str]:
        if self._whole is None:
            self._whole = {**values_of(self._carried, "sha256_data"), **self._made}
        return self._whole

    def __getitem__(self, name: str) -> str:
        if self._whole is not None or self._many():
            return self.whole()[name]
        found = self._made.get(name)
        if found is not None:
            return found
        carried = recorded_sha256(self._carried, name)
        if carried is None:
            raise KeyError(name)
        return carried

    def __iter__(self) -> Iterator[str]:
        return itertools.chain(self._carried, (n for n in self._made if n not in self._carried))

    def __len__(self) -> int:
        # (the names made and carried are apart, see publish.NotAChange: counted so anyway)
        return len(self._carried) + sum(1 for n in self._made if n not in self._carried)


def _found(
    path: str, recorded: str | None, was: Stat | None, verify: bool
) -> tuple[str, Stat, bool] | None:
    """A served file's sha256 and stat, and whether its stat is not the one recorded
    (touched: rewritten even with the same bytes, unless `verify` read them). The sha256
    is the one recorded when the stat matches, unless `verify`. None: it is gone."""
    st = stat_of(path)  # before reading: a change after this shows in the next stat
    if st is None:
        return None
    if was is not None and recorded is not None and st == was and not verify:
        return recorded, st, False
    on_disk = sha256_file(path)
    if on_disk is None:
        # Gone since, or not a regular file (a link, a fifo put in its place): changed,
        # its sha256 none that a file has.
        return None if stat_of(path) is None else ("", st, True)
    return on_disk, st, was is not None and st != was and not verify


def check_drift(manifest: Manifest, *, verify: bool = False) -> tuple[Drift, ...]:
    """Drift in the roots that hold the manifest's commit, from the manifest alone (no
    build): what a reconcile looks at before deciding to republish. By stat, as `plan`
    judges it; `verify` reads every file."""
    found: list[Drift] = []
    for key, state in manifest.roots.items():
        if not manifest.converged(key):
            continue
        for name, entry in sorted(manifest.files.items()):
            seen = _found(f"{key}/{name}", entry.sha256_data, state.stat.get(name), verify)
            if seen is None:
                found.append(Drift(key, name, "deleted"))
            elif seen[0] != entry.sha256_data:
                found.append(Drift(key, name, "changed"))
            elif seen[2]:
                found.append(Drift(key, name, "touched"))
    return tuple(found)


def intact(
    roots: Mapping[str, RootState],
    commit: str,
    names: Set[str],
    digests: Mapping[str, str] | None = None,
    *,
    clean: bool = False,
    state_dir: Path | None = None,
    surveyed: SurveyAhead | None = None,
) -> tuple[tuple[str, str], ...] | None:
    """Whether every root holds `commit` with exactly the files `names` as written (by
    stat; with `digests`, name -> sha256, their bytes are read and compared too) and
    nothing it owes a removal: then the files of the same commit need no build. Returns
    the files gitprov did not write, (root, name), or None when anything is to be done (a
    file changed, touched or gone, a stale file left, a root lagging, a stat not
    recorded). With `clean`, the temps a crashed publish left in a root are removed on the
    way (they were never served).

    With `state_dir` (the roots being the manifest's there), a root whose directory is
    as gitprov.dirmark recorded it is not listed again, and each root found to list
    exactly `names` gets its directory's stat recorded for the next time; `surveyed`, a
    survey made ahead for that manifest, stands for this one's own."""
    if any(not state.ok or state.commit != commit for state in roots.values()):
        return None
    # The stats in the order of the index's stat columns when they are what was recorded
    # (no dict of a fleet's names per root to look them up).
    tables = [s.stat for s in roots.values()]
    first = tables[0] if tables else None
    listed_names: Sequence[str]
    if (
        isinstance(first, StatTable)
        and all(isinstance(t, StatTable) and t.names is first.names for t in tables)
        and _same_names(first.names, names)
    ):
        listed_names = first.names  # (a name whose stat is not recorded fails the check)
    elif any(not names <= state.stat.keys() for state in roots.values()):
        return None  # a stat not recorded
    else:
        listed_names = list(names)
    keys = list(roots)
    identity = _manifest_identity(state_dir) if state_dir and digests is None else None
    marked = dirmark.load(state_dir, identity) if state_dir and identity else {}
    ahead = (
        _surveyed_ahead(surveyed, keys, names)
        if surveyed is not None and identity is not None and surveyed.identity == identity
        else None
    )
    if ahead is not None:
        assert surveyed is not None
        off, listings, marks = ahead
        vouched = {i for i, key in enumerate(keys) if key in surveyed.vouched and key in marked}
    else:
        vouched = {
            i
            for i, key in enumerate(keys)
            if key in marked and not roots[key].stale and dirmark.same(marked[key], key) is not None
        }
        # Every root's listing and stats at once (forked workers for a big fleet). A name
        # gone fails its stat.
        off, listings, marks = _survey(
            [(key, listed_names, s.stat) for key, s in roots.items()], names, vouched=vouched
        )
    unknown: list[tuple[str, str]] = []
    for (key, state), (others, temps) in zip(roots.items(), listings, strict=True):
        if clean:
            _remove(temps)
        if not state.stale or set(state.stale).isdisjoint(others):
            unknown += [(key, n) for n in others]
        else:
            return None  # a file it owes a removal
    if any(off):
        return None  # (with `digests` too: a file whose bytes are right gets its stat)
    if digests is not None:
        for key in roots:
            for name in names:
                if sha256_file(f"{key}/{name}") != digests[name]:
                    return None
    if state_dir is not None and identity is not None and not unknown:
        # Each root listed exactly `names` (nothing else, no temp), each name the inode
        # recorded (its stat, or its twin's, said so): what its directory's stat vouches
        # for until it changes.
        found = {keys[i]: marked[keys[i]] for i in vouched}
        for key, mark, (others, temps) in zip(keys, marks, listings, strict=True):
            if mark is not None and not others and not temps and not roots[key].stale:
                found[key] = mark
        if found != marked:
            dirmark.save(state_dir, identity, found)
    return tuple(unknown)


# -- the index: what publishing the published commit again reads --------------------------
INDEX = "manifest.index"
INDEX_FORMAT = 3
# Format 1's file (JSON, a dict of stats per root): removed when an index is written.
_INDEX_1 = "manifest.index.json"
# What a name without a recorded stat has in its root's column.
_NO_STAT: Stat = (-1, 0, 0)
# The index's change log: what the manifests published since the index was written
# whole changed in it (see `_write_delta`).
INDEX_DELTA = "manifest.index.delta"
DELTA_FORMAT = 1
# A delta is written while it holds at most this many changed values (entries, versions
# and stats), or a twentieth of the files when more; past that, the index whole.
DELTA_MAX = 2000


class StatTable(Counted, Mapping[str, Stat]):
    """A root's recorded stats as the index keeps them: a column of (size, mtime, inode)
    in the order of a list of names (sorted) shared by every root, read as one block rather than
    as a tuple and a dict entry per file. A name without a recorded stat has size -1."""

    def __init__(self, names: Sequence[str], values: array[int]) -> None:
        if len(values) != 3 * len(names):
            raise ValueError("a stat column of another length")
        self.names = names
        self._values = values
        self._at: dict[str, int] | None = None
        self._whole: dict[str, Stat] | None = None
        self._every: bool | None = None

    def _positions(self) -> dict[str, int]:
        if self._at is None:
            if self.every_recorded():  # every name's stat recorded: no test per name
                self._at = dict(zip(self.names, range(len(self.names)), strict=True))
            else:
                sizes = self._values[0::3]
                self._at = {n: i for i, n in enumerate(self.names) if sizes[i] >= 0}
        return self._at

    def __getitem__(self, name: str) -> Stat:
        if self._whole is not None:
            return self._whole[name]
        if self._many():
            return self.whole()[name]
        i = 3 * self._find(name)
        if i < 0:
            raise KeyError(name)
        v = self._values
        return (v[i], v[i + 1], v[i + 2])

    def __contains__(self, name: object) -> bool:
        if self._whole is not None:
            return name in self._whole
        if self._at is None and self._many():
            self._positions()
        return isinstance(name, str) and self._find(name) >= 0

    def _find(self, name: str) -> int:
        """The position of `name` among the names, -1 when no stat of it is recorded: by
        bisection (the names are sorted) until the lookups are many, sparing a publish by
        change the dict of a fleet's names (20 ms a root at 100,000 devices)."""
        if self._at is not None:
            return self._at.get(name, -1)
        names = self.names
        i = bisect.bisect_left(names, name)
        if i < len(names) and names[i] == name and self._values[3 * i] >= 0:
            return i
        return -1

    def every_recorded(self) -> bool:
        """Whether every name has its stat (none of size -1): then its keys are `names`."""
        if self._every is None:
            self._every = min(self._values[0::3], default=0) >= 0
        return self._every

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions())

    def __len__(self) -> int:
        return len(self._positions())

    def keys(self) -> KeysView[str]:
        return self._positions().keys()  # a set in C, for `names <= stat.keys()`

    def whole(self) -> dict[str, Stat]:
        """The dict of it, made once: what a pass over the items asks for (see
        gitprov.overlay.whole)."""
        if self._whole is None:
            self._whole = _stat_dict(self)
        return self._whole

    def inodes(self) -> array[int]:
        """Every name's inode, in the order of `names` (0 where no stat is recorded)."""
        return self._values[2::3]

    def arrays(self) -> Columns:
        """`columns()` as arrays: a copy in C (a list of them makes an int object per
        value: 25 ms for 100,000 names)."""
        v = self._values
        return v[0::3], v[1::3], v[2::3]

    def columns(self, first: int = 0, end: int | None = None) -> Columns:
        """Every name's size, mtime and inode, in the order of `names` (size -1 where
        none is recorded); of names[first:end] only, when given."""
        v = self._values[3 * first : None if end is None else 3 * end].tolist()
        return v[0::3], v[1::3], v[2::3]


# Stats as three columns (sizes, mtimes, inodes), each in the order of a list of names.
Columns = tuple[Sequence[int], Sequence[int], Sequence[int]]


def _same_names(listed: Sequence[str], names: Set[str]) -> bool:
    """Whether `listed` names each of `names` once and nothing else."""
    if len(listed) != len(names):
        return False
    distinct = set(listed)
    return len(distinct) == len(listed) and distinct == names


def _columns(names: Sequence[str], recorded: Mapping[str, Stat]) -> Columns:
    if isinstance(recorded, StatTable) and recorded.names is names:
        return recorded.columns()
    stats = [recorded[n] for n in names]
    return [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats]


@dataclass(frozen=True)
class Index:
    """What publishing the manifest's commit again needs to know of it: the inputs, the
    roots with each file's stat, the file names and the firmware images' hashes; not the
    entries and versions (most of the manifest, which then is read only if asked for).
    Written beside the manifest after it, naming it by size, mtime and inode: an index
    that does not name the manifest there (an older gitprov wrote it, a crash came
    between the two, someone edited it) is not used."""

    commit: str
    published_at: str
    inputs: Mapping[str, str]
    notes: tuple[str, ...]
    roots: Mapping[str, RootState]  # each one's stat a StatTable (one list of names)
    names: frozenset[str]
    firmware: Mapping[str, str]  # firmware image name -> sha256
    # The rest of the manifest (entries, versions, its sha256), read only by `manifest`.
    rest: _Rest | None = field(default=None, compare=False, repr=False)

    def manifest(self) -> Manifest | None:
        """The manifest this index names, whole, from its columns; None when the index
        was written without them (see write_index) or they fail their check."""
        if self.rest is None:
            return None
        try:
            return self.rest.manifest(self)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            return None


@dataclass(frozen=True)
class _Rest:
    """The index's second part, read when asked for: the manifest's entries and
    versions."""

    names: Sequence[str]
    head: Mapping[str, Any]
    path: Path
    offset: int  # where the part starts in the file, and its size
    size: int
    identity: tuple[int, ...] = ()  # the index file's, when read
    first_sha256: str = ""  # the first part's
    firmware: Mapping[str, str] = field(default_factory=dict)  # the index's own
    delta: _Delta | None = None  # the change log applied to it (see `_write_delta`)

    def manifest(self, index: Index) -> Manifest | None:
        head = self.head
        try:
            with statejson.open_state(self.path) as f:
                f.seek(self.offset)
                body = memoryview(f.read(self.size + 1))
        except OSError:
            return None
        if len(body) != self.size:
            return None
        # The check on another thread while the columns are read (hashlib lets go of the
        # interpreter over a large buffer): at 100,000 devices 35 MB, 0.04 s of sha256.
        # Nothing read is kept unless it passes. (An index replaced since the first part
        # was read fails it.)
        digest: list[str] = []
        checking = threading.Thread(
            target=lambda: digest.append(hashlib.sha256(body).hexdigest()), name="gitprov-index"
        )
        checking.start()
        try:
            made = self._read(index, body)
        finally:
            checking.join()
        if made is None or digest != [head["sha256"]]:
            return None
        manifest, base = made
        if self.identity:
            _BASES[str(self.path.parent)] = base
        return manifest

    def _read(self, index: Index, body: memoryview) -> tuple[Manifest, _Base] | None:
        """The manifest from the columns in `body` (not yet checked), and the base a next
        change log is made from."""
        head = self.head
        sizes = [int(n) for n in head["sizes"]]
        if len(sizes) != len(_ENTRY_ROW) + 3 or sum(sizes) != len(body) or min(sizes) < 0:
            return None
        blocks, spans, at = [], [], 0
        for size in sizes:
            blocks.append(body[at : at + size])
            spans.append((at, at + size))
            at += size
        count, served_count = len(self.names), int(head["served"])
        columns = _Columns(
            body, dict(zip(_ENTRY_ROW, spans[: len(_ENTRY_ROW)], strict=True)), count
        )
        keys = _split(blocks[-3], served_count)
        if not Sorted.ordered(keys):  # (a key twice; written sorted)
            return None
        # Looked up by bisection until a pass over it needs the dict (see overlay).
        # (the body hashes, of one width, sliced when looked up: see Fixed)
        lo, hi = spans[-1]
        raw = body.obj
        assert isinstance(raw, bytes)
        bodies = Fixed.of(raw, lo, hi, served_count) or _split(blocks[-1], served_count)
        served: Mapping[str, Any] = Sorted(keys, (_int_column(blocks[-2], served_count), bodies))
        base = EntryTable.of(self.names, columns)
        if len(base) != count or not columns.complete():
            return None  # a name twice
        files, sha, is_record = base, str(head["manifest_sha256"]), head["served_is_record"]
        delta = self.delta
        if delta is not None:
            files = base.without(delta.files).with_entries(delta.entries())
            served = Overlay(served)
            apply_changes(served, delta.served)
            sha, is_record = delta.manifest_sha256, delta.served_is_record
        manifest = Manifest(
            commit=index.commit,
            published_at=index.published_at,
            # (each root's StatTable as it is: looked up, not made a dict; see `plan`)
            roots=dict(index.roots),
            files=files,
            served=served,
            inputs=index.inputs,
            notes=index.notes,
            sha256=sha,
        )
        if is_record is True:
            vars(manifest)["served_record"] = served
        made = _Base(
            self.identity,
            (self.first_sha256, str(head["sha256"])),
            self.names if self.identity else (),
            base._columns,
            self.firmware,
            manifest,
            delta or _Delta.empty(),
        )
        return manifest, made


class _Delta(NamedTuple):
    """The index's change log, as read or to be written: each file's entry (as a row in
    `_ENTRY_ROW` order), each version record's and each root's stat that differs from the
    index written whole, None where the index's is gone; and the head of the manifest it
    names (`_write_delta`)."""

    files: Mapping[str, list[Any] | None]
    served: Mapping[str, tuple[int, str] | None]
    stats: Mapping[str, Mapping[str, Stat | None]]
    manifest_sha256: str = ""
    served_is_record: bool = False

    @classmethod
    def empty(cls) -> _Delta:
        return cls({}, {}, {})

    def entries(self) -> dict[str, ManifestEntry]:
        out = {}
        for name, row in self.files.items():
            if row is not None:
                entry = _new(ManifestEntry)
                _set(entry, "__dict__", dict(zip(_ENTRY_ROW, row, strict=True)))
                out[name] = entry
        return out

    def size(self) -> int:
        return len(self.files) + len(self.served) + sum(map(len, self.stats.values()))


@dataclass(frozen=True)
class _Base:
    """An index written whole, as this process read it: what the next delta is computed
    from. `manifest` is the last one it described (itself, or with `delta` applied), whose
    `served` and stats the next manifest is compared with."""

    identity: tuple[int, ...]  # the index file's
    key: tuple[str, str]  # its two sha256s: what a delta names
    names: Sequence[str]  # its entries' names, by row of its columns
    columns: Mapping[str, Sequence[Any]]  # its entries' columns (an EntryTable's)
    firmware: Mapping[str, str]
    manifest: Manifest
    delta: _Delta


# The index each state dir's manifest was last read from, by this process.
_BASES: dict[str, _Base] = {}


class _Columns(Mapping[str, Sequence[Any]]):
    """The index's entry columns by field, each one split from its block when it is
    first asked for: a publish by change reads three or four of the eight (10 ms each
    at 100,000 devices). `complete` says whether every block holds `count` values (the
    blocks passed their sha256: what was written, by a writer that checked them)."""

    def __init__(self, body: memoryview, spans: Mapping[str, tuple[int, int]], count: int) -> None:
        self._body = body  # (a view of the bytes read: counted in place, never copied)
        self._spans = spans
        self._count = count
        self._made: dict[str, Sequence[Any]] = {}
        self._fixed: dict[str, Fixed | None] = {}

    def value(self, field_: str, i: int) -> Any:
        """The value at row `i` of one column: of a column whose values are all of one
        width (the hashes, the MACs, the commit ids), sliced from its bytes without
        splitting it (a publish by change asks for a few: 15-30 ms a split at 100,000
        devices)."""
        fixed = self._fixed_of(field_)
        return fixed[i] if fixed is not None else self[field_][i]

    def rows_with(self, field_: str, values: Iterable[object]) -> list[int] | None:
        """The rows whose value of one column is one of `values`, in order, when that
        column is of one width and not split yet (see `Fixed.rows_of`); else None."""
        fixed = self._fixed_of(field_)
        return fixed.rows_of(values) if fixed is not None else None

    def rows_other_than(self, field_: str, value: str) -> list[int] | None:
        """The rows whose value of text column `field_` is not `value`, in order, found in
        the column's bytes (a split of it costs 15-20 ms at 100,000 devices): once each
        `value` is taken out of them, a row that held it whole is empty, and the others
        are what is left. None when the column is split already, or when `value` is also
        found in another value, or a value is empty (then only a split tells)."""
        raw = self._body.obj
        if field_ in self._made or field_ == "version" or not isinstance(raw, bytes):
            return None
        lo, hi = self._spans[field_]
        block, token = raw[lo:hi], value.encode(errors="surrogatepass")
        if not token or b"\0" in token or not self._count:
            return None
        if b"\0\0" in block or block[:1] in (b"", b"\0") or block.endswith(b"\0"):
            return None  # (an empty value: it would pass for one `value` was taken out of)
        rest = block.replace(token, b"")
        left = [m.start() for m in re.finditer(rb"[^\0]+", rest)]
        if block.count(token) != self._count - len(left):
            return None
        rows, row, at = [], 0, 0
        for start in left:  # (each row's place: the NULs before it, counted once in all)
            row += rest.count(b"\0", at, start)
            at = start
            rows.append(row)
        return rows

    def _fixed_of(self, field_: str) -> Fixed | None:
        """Column `field_` as a Fixed, when it is of one width and not split yet."""
        if field_ in self._made or field_ == "version":
            return None
        if field_ not in self._fixed:
            lo, hi = self._spans[field_]
            raw = self._body.obj
            assert isinstance(raw, bytes)  # (see `complete`, asked before any value)
            self._fixed[field_] = Fixed.of(raw, lo, hi, self._count)
        return self._fixed[field_]

    def complete(self) -> bool:
        count, raw = self._count, self._body.obj
        if not isinstance(raw, bytes) or list(self._spans) != list(_ENTRY_ROW):
            return False
        for field_, (lo, hi) in self._spans.items():
            if field_ == "version":
                if hi - lo != 8 * count:
                    return False
            elif (raw.count(b"\0", lo, hi) + 1 if count else hi - lo) != count:
                return False
        return True

    def __getitem__(self, field_: str) -> Sequence[Any]:
        made = self._made.get(field_)
        if made is None:
            lo, hi = self._spans[field_]
            split = _int_column if field_ == "version" else _split
            made = self._made[field_] = split(self._body[lo:hi], self._count)
            if len(self._made) == len(self._spans):
                self._body = memoryview(b"")  # every column made: the bytes let go
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)


def _split(block: memoryview, count: int) -> list[str]:
    values = bytes(block).decode().split("\0") if count else []
    if len(values) != count:
        raise ValueError("a column of another length")
    return values


def _int_column(block: memoryview, count: int) -> list[int]:
    column = array("q")
    column.frombytes(block)
    if len(column) != count:
        raise ValueError("a column of another length")
    return column.tolist()


def _joined(values: Sequence[Any]) -> bytes | None:
    """Strings NUL-joined as UTF-8; None when one is not a string or holds a NUL (a
    manifest edited by hand: then the index holds no entries, the manifest is read)."""
    if not all(issubclass(t, str) for t in set(map(type, values))):  # (a StrEnum is text)
        return None
    text = "\0".join(values)
    if text.count("\0") != max(len(values) - 1, 0):
        return None
    try:
        return text.encode()
    except UnicodeEncodeError:
        return None


def _ints(values: Sequence[Any]) -> bytes | None:
    if not set(map(type, values)) <= {int}:
        return None
    try:
        return array("q", values).tobytes()
    except OverflowError:
        return None


def _entry_blocks(manifest: Manifest, names: Sequence[str]) -> Iterator[bytes | None]:
    """The index's second section, a block at a time: each entry field's column and the
    versions record. A None among them: the manifest holds what its columns cannot say
    exactly (a value of another type; write_index checks the stats), and the index then
    holds no entries (they are read from its JSON)."""
    files = manifest.files
    if isinstance(files, EntryTable):
        listed, columns = files.sorted_columns()
        if listed != names:
            columns = files.columns_for(names)
    else:
        entries = list(map(files.__getitem__, names))
        columns = [list(map(attrgetter(f), entries)) for f in _ENTRY_ROW]
    for column in columns[: len(_ENTRY_TEXT)]:
        yield _joined(column)
    yield _ints(columns[-1])
    record = whole(manifest.served)
    keys = sorted(record)
    served = list(map(record.__getitem__, keys))
    yield _joined(keys)
    yield _ints([v for v, _ in served])
    yield _joined([b for _, b in served])


def _write_entries(path: Path, manifest: Manifest, names: Sequence[str]) -> _Section | None:
    """The index's second section written into `path` as it is made, a block at a time
    (whole in memory, 35 MB at 100,000 devices, at a cold publish's peak), and its
    sha256 and sizes; None (and no file) when it cannot be written (see
    `_entry_blocks`)."""
    sha = hashlib.sha256()
    sizes: list[int] = []
    try:
        with open(path, "wb") as out:
            for block in _entry_blocks(manifest, names):
                if block is None:
                    raise _NoSection()
                sha.update(block)
                out.write(block)
                sizes.append(len(block))
    except _NoSection:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    return _Section(sha.hexdigest(), sizes)


class _NoSection(Exception):
    pass


class _Section(NamedTuple):
    sha256: str
    sizes: list[int]


def _append_file(out: BinaryIO, path: Path) -> None:
    """The bytes of `path` appended to `out`, copied within the kernel where it can."""
    out.flush()
    start = out.tell()
    with open(path, "rb") as src:
        try:
            while os.copy_file_range(src.fileno(), out.fileno(), 1 << 30):
                pass
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
        # (from the start again: whatever a refused copy may have left undone)
        src.seek(0)
        out.seek(start)
        out.truncate()
        shutil.copyfileobj(src, out)


def _stat_dict(table: StatTable) -> dict[str, Stat]:
    sizes, mtimes, inodes = table.columns()
    stats = zip(sizes, mtimes, inodes, strict=True)
    if min(sizes, default=0) >= 0:
        return dict(zip(table.names, stats, strict=True))
    return {n: st for n, st in zip(table.names, stats, strict=True) if st[0] >= 0}


def _served_is_record(manifest: Manifest) -> bool:
    """Whether `served` already holds every listed file's number. A publish says so by
    making the record its `served`; a manifest read from its JSON (a state dir copied,
    an index lost) is asked, once, here: else each later publish of another commit
    would derive the record again (0.2 s at 100,000 devices)."""
    known = vars(manifest).get("served_record")
    if known is not None:
        return known is manifest.served or known == manifest.served
    return manifest.served_record == manifest.served


def write_index(state_dir: Path, manifest: Manifest) -> None:
    """Best effort and never fsynced: an index lost or torn only costs the next publish
    a reading of the manifest (a torn one fails its sha256).

    A line of JSON (the header: what it names and its body's sha256), then the body: the
    file names, NUL-separated (no file name holds one), then per root, in the header's
    order, a column of native int64 (size, mtime_ns, inode) per name: a fifth of the
    manifest, what publishing its commit again reads.

    Then, when the manifest's values allow it (see `_entry_blocks`), a second section
    with its own sha256 (header "entries"): a NUL-separated column per text field of the
    entries and an int64 column of their versions, in the order of the names, then the
    versions record (keys, versions, body hashes). A publish of another commit reads
    the manifest from these columns: at 100,000 devices about a fifth of the time its
    JSON takes to parse, since no text is parsed per file.

    When the manifest was made from the one this process read from the index (its
    entries the index's columns, less and plus a few), the index stays as it is and its
    change log is written instead (`_write_delta`): a one-device publish at 100,000
    devices then writes a few kilobytes, not 40 MB."""
    if _write_delta(state_dir, manifest):
        return
    _DIFFED.clear()
    _BASES.pop(str(state_dir), None)
    path = state_dir / INDEX
    scratch = state_dir / f"{TMP_PREFIX}{INDEX}.entries{TMP_SUFFIX}"
    names = sorted(manifest.files)
    try:
        st = os.lstat(state_dir / MANIFEST)
        # The roots in the header's order (its keys are sorted).
        roots = sorted(manifest.roots.items())
        body = [("\0".join(names)).encode()]
        count, exact = len(names), True
        for _, s in roots:
            stat = whole(s.stat)
            # Every name's stat recorded (the usual case): looked up without a Python call.
            found = (
                map(stat.__getitem__, names)
                if isinstance(stat, dict) and len(stat) == len(names) and stat.keys() >= set(names)
                else (stat.get(n, _NO_STAT) for n in names)
            )
            column = array("q", itertools.chain.from_iterable(found))
            body.append(column.tobytes())
            # The column says exactly what the root records: no stat of a name the
            # manifest does not list, none of size -1 (see `_entry_blocks`).
            sizes = column[0::3]
            exact = exact and min(sizes, default=0) >= -1 and len(stat) + sizes.count(-1) == count
        sha = hashlib.sha256()
        for part in body:
            sha.update(part)
        section = None
        if exact and manifest.sha256:
            section = _write_entries(scratch, manifest, names)
        entries = None
        if section is not None:
            entries = {
                "sha256": section.sha256,
                "sizes": section.sizes,
                "served": len(manifest.served),
                # The record holds every file's number already: `served_record` needs no
                # pass over the entries next time (see `_served_is_record`).
                "served_is_record": _served_is_record(manifest),
                "manifest_sha256": manifest.sha256,
            }
        head = {
            "format": INDEX_FORMAT,
            "manifest": [st.st_size, st.st_mtime_ns, st.st_ino],
            "byteorder": sys.byteorder,
            "sha256": sha.hexdigest(),
            "count": len(names),
            "names_size": len(body[0]),
            **_described(manifest),
            "firmware": {
                n: manifest.files[n].sha256_data
                for n, kind in values_of(manifest.files, "kind").items()
                if kind == Kind.FIRMWARE
            },
            "entries": entries,
        }
        tmp = state_dir / f"{TMP_PREFIX}{INDEX}{TMP_SUFFIX}"
        with open(tmp, "wb") as f:
            f.write(json.dumps(head, sort_keys=True).encode() + b"\n")
            for part in body:
                f.write(part)
            if section is not None:
                _append_file(f, scratch)
        os.replace(tmp, path)
    except (OSError, OverflowError):
        with contextlib.suppress(OSError):
            os.unlink(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
    for stale in (_INDEX_1, INDEX_DELTA):
        with contextlib.suppress(OSError):
            os.unlink(state_dir / stale)


def _described(manifest: Manifest) -> dict[str, Any]:
    """What an index's head, or its change log, says of the manifest besides its files:
    the commit, the date, the inputs, the notes and each root's state but its stats."""
    return {
        "commit": manifest.commit,
        "published_at": manifest.published_at,
        "inputs": dict(manifest.inputs),
        "notes": list(manifest.notes),
        "roots": {
            r: {"commit": s.commit, "error": s.error, "stale": list(s.stale)}
            for r, s in sorted(manifest.roots.items())
        },
    }


def _gone(names: Sequence[str], files: EntryTable) -> Collection[str]:
    """Of `names` (an index's, by row of the columns `files` is a table of), those
    `files` no longer holds: from the rows it knows are gone (a publish by change, a few),
    else by a pass over them all (a set of a fleet's names: 30 ms at 100,000 devices)."""
    rows = files._gone
    if rows is None or len(files._at) + len(rows) != len(names):
        return frozenset(names).difference(files._at, files._extra)
    return [n for n in map(names.__getitem__, rows) if n not in files._extra]


def _write_delta(state_dir: Path, manifest: Manifest) -> bool:
    """Write the index's change log for `manifest` (just written): what differs from the
    index this process read, when the manifest's entries are that index's columns less
    and plus a few (the table a publish by change makes) and the index is still the file
    read. False when there is no such index, or the log would pass DELTA_MAX values:
    the index is then written whole. Best effort, as the index: a log lost or torn only
    costs the next publish a reading of the manifest."""
    base = _BASES.get(str(state_dir))
    files = manifest.files
    if (
        base is None
        or not manifest.sha256
        or not isinstance(files, EntryTable)
        or files._columns is not base.columns
        or list(manifest.roots) != list(base.manifest.roots)
    ):
        return False
    try:
        if file_identity(os.stat(state_dir / INDEX)) != base.identity:
            return False
        st = os.lstat(state_dir / MANIFEST)
    except OSError:
        return False
    prev = base.manifest
    changed = {n: [getattr(e, f) for f in _ENTRY_ROW] for n, e in files._extra.items()}
    gone = _gone(base.names, files)
    diffs = _diffs(prev, manifest)
    _DIFFED.clear()  # (it holds two manifests)
    served = {**base.delta.served, **diffs.served}
    stats = {r: {**base.delta.stats.get(r, {}), **diffs.stats[r]} for r in manifest.roots}
    delta = _Delta(
        {**changed, **dict.fromkeys(gone)},
        served,
        stats,
        manifest.sha256,
        _served_is_record(manifest),
    )
    if (
        delta.size() > max(DELTA_MAX, len(base.names) // 20)
        or not _exact(delta, files)
        # (a stat kept for a file no longer listed: the index's columns cannot say it)
        or any(name in s.stat for s in manifest.roots.values() for name in gone)
    ):
        return False
    firmware = dict(base.firmware)
    kind_at, data_at = _ENTRY_ROW.index("kind"), _ENTRY_ROW.index("sha256_data")
    for name, row in delta.files.items():
        if row is None or row[kind_at] != Kind.FIRMWARE:
            firmware.pop(name, None)
        else:
            firmware[name] = row[data_at]
    log = {
        "format": DELTA_FORMAT,
        "base": list(base.key),
        "manifest": [st.st_size, st.st_mtime_ns, st.st_ino],
        **_described(manifest),
        "firmware": firmware,
        "manifest_sha256": delta.manifest_sha256,
        "served_is_record": delta.served_is_record,
        "files": delta.files,
        "served": delta.served,
        "stats": {r: delta.stats[r] for r in sorted(manifest.roots)},
    }
    tmp = state_dir / f"{TMP_PREFIX}{INDEX_DELTA}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            f.write(statejson.dumps(log, sort_keys=True, newline=True))
        os.replace(tmp, state_dir / INDEX_DELTA)
    except (OSError, TypeError, ValueError):  # (ValueError: text JSON cannot hold)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    _BASES[str(state_dir)] = replace(base, manifest=manifest, delta=delta)
    return True


def _diff_into(out: dict[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Set in `out` each key whose value in `new` is not its value in `old`, None for
    each key `new` no longer has."""
    if new is old:
        return
    known = new.changes_from(old) if isinstance(new, Overlay) else None
    if known is not None:  # (made from `old` by a few changes, which it knows)
        out.update(known)
        return
    old, new = whole(old), whole(new)
    # (a fleet's worth of keys, the values mostly the very same objects: compared in C)
    differ = map(operator.ne, new.values(), map(old.get, new.keys()))
    for key in itertools.compress(new.keys(), differ):
        out[key] = new[key]
    for key in old.keys() - new.keys():
        out[key] = None


_INT64 = range(-(1 << 63), 1 << 63)


def _exact(delta: _Delta, files: Mapping[str, ManifestEntry]) -> bool:
    """Whether the change log says exactly what the manifest holds, as `_entry_blocks`
    and the stat columns ask of the index written whole: text fields of text, int64
    numbers, a stat only for a file listed."""
    for row in delta.files.values():
        if row is not None and (
            not all(isinstance(row[i], str) for i in _TEXT_AT)
            or type(row[-1]) is not int
            or row[-1] not in _INT64
        ):
            return False
    for got in delta.served.values():
        if got is not None and (type(got[0]) is not int or got[0] not in _INT64):
            return False
    for changes in delta.stats.values():
        for name, st in changes.items():
            if st is not None and (
                name not in files
                or not all(type(v) is int and v in _INT64 for v in st)
                or st[0] < 0  # (size -1 stands for no stat in the index's columns)
            ):
                return False
    return True


def load_index(state_dir: Path, manifest_stat: os.stat_result | None = None) -> Index | None:
    """The index, when it names the manifest in `state_dir` (or the one whose stat is
    `manifest_stat`) and its first section passes its check; the second is checked when
    `Index.manifest` reads it."""
    path = state_dir / INDEX
    try:
        st = manifest_stat or os.lstat(state_dir / MANIFEST)
        with statejson.open_state(path) as f:
            # (the delta's identity too: a change log written over the same index and
            # manifest changes what the index says)
            key = (
                file_identity(os.fstat(f.fileno())),
                file_identity(st),
                _identity_or_none(state_dir / INDEX_DELTA),
            )
            hit = _INDEXED.get(str(path))
            if hit is not None and hit[0] == key:
                return hit[1]
            line = f.readline()
            head = statejson.loads(line)
            entries = head["entries"]
            rest = sum(entries["sizes"]) if entries is not None else 0
            first = os.fstat(f.fileno()).st_size - len(line) - rest
            if not line.endswith(b"\n") or first < 0 or rest < 0:
                return None
            # (the second part is read when asked for: publishing the same commit again
            # needs only the first, a fifth of the file at 100,000 devices)
            body = memoryview(f.read(first))
            identity = key[0]
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return None
    try:
        # The manifest is the one the index was written for, or one its change log names.
        named = head["manifest"] == [st.st_size, st.st_mtime_ns, st.st_ino]
        delta = None if named else _read_delta(state_dir, st, head)
        if (
            head["format"] != INDEX_FORMAT
            or head["byteorder"] != sys.byteorder
            or len(body) != first
            or not (named or delta is not None)
            or hashlib.sha256(body).hexdigest() != head["sha256"]
        ):
            return None
        if delta is not None:
            changes, described = delta
        else:
            changes, described = _Delta.empty(), head
        count, size = int(head["count"]), int(head["names_size"])
        names = bytes(body[:size]).decode().split("\0") if count else []
        if len(names) != count:
            return None
        listed = _names_after(names, changes.files)
        roots = {}
        at = size
        for r, s in described["roots"].items():
            column = array("q")
            column.frombytes(body[at : at + 24 * count])
            at += 24 * count
            table = StatTable(names, column)
            if delta is not None:
                table = _patched(table, changes.stats[r], listed)
            roots[str(r)] = RootState(
                s["commit"], str(s["error"]), tuple(map(str, s["stale"])), table
            )
        if at != len(body) or list(described["roots"]) != list(head["roots"]):
            return None
        index = Index(
            commit=str(described["commit"]),
            published_at=str(described["published_at"]),
            inputs={str(k): str(v) for k, v in described["inputs"].items()},
            notes=tuple(str(n) for n in described["notes"]),
            roots=roots,
            names=frozenset(listed if listed is not None else names),
            firmware={str(k): str(v) for k, v in described["firmware"].items()},
            rest=(
                _Rest(
                    names,
                    dict(entries),
                    path,
                    len(line) + first,
                    rest,
                    identity,
                    str(head["sha256"]),
                    {str(k): str(v) for k, v in head["firmware"].items()},
                    changes if delta is not None else None,
                )
                if entries is not None
                else None
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError):
        return None
    if len(_INDEXED) >= _LOADED_MAX:
        _INDEXED.clear()
    _INDEXED[str(path)] = (key, index)
    return index


# The last index read in each state dir, by the identities of the files it was read
# from: a publish reads it twice under its lock (for the survey ahead, then for the
# manifest), 25 ms at 100,000 devices. An Index is not changed once made.
_INDEXED: dict[str, tuple[tuple[object, ...], Index]] = {}


def _identity_or_none(path: Path) -> tuple[int, ...] | None:
    try:
        return file_identity(os.lstat(path))
    except OSError:
        return None


def _names_after(names: list[str], files: Mapping[str, list[Any] | None]) -> list[str] | None:
    """The names (sorted) once a delta's file changes are applied to the index's `names`
    (sorted); None when they are the same."""
    if not files:
        return None
    listed = set(names)
    if all(row is not None for row in files.values()) and listed.issuperset(files):
        return None
    for name, row in files.items():
        if row is None:
            listed.discard(name)
        else:
            listed.add(name)
    return sorted(listed)


def _patched(
    table: StatTable, changes: Mapping[str, Stat | None], listed: list[str] | None
) -> StatTable:
    """`table` with a delta's stat changes; over the names `listed` when they changed."""
    names, values = table.names, table._values
    if listed is None:
        values = array("q", values)
        for name, st in changes.items():
            i = bisect.bisect_left(names, name)
            if i == len(names) or names[i] != name:
                raise ValueError("a stat of a name the index does not list")
            values[3 * i : 3 * i + 3] = array("q", st or _NO_STAT)
        return StatTable(names, values)
    rows = zip(values[0::3], values[1::3], values[2::3], strict=True)
    stats = dict(zip(names, rows, strict=True))
    for name, st in changes.items():
        stats[name] = st or _NO_STAT
    found = (stats.get(n, _NO_STAT) for n in listed)
    return StatTable(listed, array("q", itertools.chain.from_iterable(found)))


# A change log is small (at most DELTA_MAX values): one past this is no log gitprov wrote.
_DELTA_READ_MAX = 16 << 20


def _read_delta(
    state_dir: Path, st: os.stat_result, head: Mapping[str, Any]
) -> tuple[_Delta, Mapping[str, Any]] | None:
    """The index's change log and the head it gives the manifest, when it names the
    manifest whose stat is `st` and the index whose head is `head`; else None."""
    path = state_dir / INDEX_DELTA
    try:
        with statejson.open_state(path) as f:
            raw = statejson.loads(f.read(_DELTA_READ_MAX + 1))
    except (OSError, ValueError):
        return None
    try:
        entries = head["entries"]
        if (
            not isinstance(raw, dict)
            or raw["format"] != DELTA_FORMAT
            or entries is None
            or raw["manifest"] != [st.st_size, st.st_mtime_ns, st.st_ino]
            or raw["base"] != [head["sha256"], entries["sha256"]]
            or list(raw["roots"]) != list(head["roots"])
            or list(raw["stats"]) != list(head["roots"])
        ):
            return None
        files = {str(n): _row(r) for n, r in raw["files"].items()}
        served = {str(k): _served_value(v) for k, v in raw["served"].items()}
        stats = {
            str(r): {str(n): _stat_value(v) for n, v in got.items()}
            for r, got in raw["stats"].items()
        }
        sha, is_record = raw["manifest_sha256"], raw["served_is_record"]
        if not isinstance(sha, str) or not isinstance(is_record, bool):
            return None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return _Delta(files, served, stats, sha, is_record), raw


_TEXT_AT = tuple(range(len(_ENTRY_TEXT)))


def _row(raw: Any) -> list[Any] | None:
    """An entry's row from a change log, checked as the index's columns are."""
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or len(raw) != len(_ENTRY_ROW)
        or not all(type(raw[i]) is str for i in _TEXT_AT)
        or type(raw[-1]) is not int
    ):
        raise ValueError("not an entry")
    return raw


def _served_value(raw: Any) -> tuple[int, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError("not a version record")
    version, body = raw
    if type(version) is not int or type(body) is not str:
        raise ValueError("not a version record")
    return version, body


def _stat_value(raw: Any) -> Stat | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 3 or {type(v) for v in raw} != {int}:
        raise ValueError("not a stat")
    return raw[0], raw[1], raw[2]


def _each_not_as_recorded(
    checks: Sequence[tuple[Path | str, Sequence[str], Mapping[str, Stat]]],
) -> list[list[str]]:
    """For each (root, names, recorded stats), every name having a recorded stat: the
    names whose stat in the root is not the one recorded, or that are gone (all of them
    when the root is). See `_survey`."""
    return _survey(checks)[0]


def _survey(
    checks: Sequence[tuple[Path | str, Sequence[str], Mapping[str, Stat]]],
    listing: Set[str] | None = None,
    *,
    workers: int | None = None,
    vouched: Collection[int] = (),
) -> tuple[list[list[str]], list[tuple[list[str], list[str]]], list[dirmark.Mark | None]]:
    """`_each_not_as_recorded`, and with `listing` (the names a root should hold) each
    root's listing too: the served files in it besides those names, sorted, and the
    temps of a crashed publish (see `_listing`; ([], []) without `listing`).

    One lstat per file, relative to the root's descriptor (a fleet's worth of them). From
    `STAT_PARALLEL_MIN` names on, over forked workers, every root in one pool, the
    listings in it too: an lstat is mostly the Python around the system call, and one
    core does 200,000 in about 0.5 s.

    The roots at the indexes `vouched` are known to list exactly `listing`, each name
    with its recorded inode (gitprov.dirmark): neither listed nor, when every file is its
    twin's, scanned. Third, per root, the stat of its directory that a listing made
    here stands for (see `dirmark.mark`), or None."""
    fds: list[int | None] = []
    try:
        for root, _, _ in checks:
            try:
                fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY))
            except OSError:
                fds.append(None)
        off: list[list[str]] = [
            [] if fd is not None else list(names)
            for fd, (_, names, _) in zip(fds, checks, strict=True)
        ]
        listings: list[tuple[list[str], list[str]]] = [([], []) for _ in checks]
        count = sum(
            len(names) for fd, (_, names, _) in zip(fds, checks, strict=True) if fd is not None
        )
        # A StatTable's stat columns, in the order of its names; the others' are made by
        # each part from a mapping (in the workers: 0.1 s at 100,000 devices).
        tables = [
            recorded.arrays()
            if fd is not None and isinstance(recorded, StatTable) and recorded.names is names
            else None
            for fd, (_, names, recorded) in zip(fds, checks, strict=True)
        ]
        twins = _twins(
            [c[0] for c in checks], [t[2] if t else None for t in tables], [c[1] for c in checks]
        )
        marks: list[dirmark.Mark | None] = [None for _ in checks]
        if workers is None:
            workers = min(usable_cpus(), count // STAT_PARALLEL_MIN + 1)
        # A part is (check, first, end): a slice of one root's names, or with first -1
        # its listing (first: it is the longest), or with first -2 the scan of a root
        # with a twin (its listing too).
        step = -(-count // (workers * 4)) if count else 1
        parts = [
            (i, -1 if twins[i] is None else -2, -1)
            for i, fd in enumerate(fds)
            if fd is not None
            and (listing is not None or twins[i] is not None)
            and not (i in vouched and _vouched_whole(i, twins[i], tables))
        ] + [
            (i, first, min(first + step, len(names)))
            for i, (fd, (_, names, _)) in enumerate(zip(fds, checks, strict=True))
            if fd is not None and twins[i] is None
            for first in range(0, len(names), step)
        ]

        def job(part: Sequence[int]) -> list[_SurveyPart]:
            out: list[_SurveyPart] = []
            for k in part:
                i, first, end = parts[k]
                fd = fds[i]
                table, twin = tables[i], twins[i]
                assert fd is not None
                root = checks[i][0]
                if first == -2:
                    assert table is not None and twin is not None
                    twin_table = tables[twin]
                    assert twin_table is not None
                    scanned, seen = dirmark.around(
                        root, _scan, root, checks[i][1], table, twin_table[2], listing
                    )
                    out.append((i, first, *scanned, seen))
                elif first == -1:
                    assert listing is not None
                    temps: list[str] = []
                    found, seen = dirmark.around(root, _listing, Path(root), temps, listing)
                    out.append((i, first, [], sorted(found - listing), temps, seen))
                else:
                    names = checks[i][1][first:end]
                    if table is not None:
                        sizes, mtimes, inodes = (c[first:end] for c in table)
                    else:
                        sizes, mtimes, inodes = _columns(names, checks[i][2])
                    gone = _not_as_recorded(fd, names, sizes, mtimes, inodes)
                    out.append((i, first, gone, [], [], None))
            return out

        found: Iterable[list[_SurveyPart]]
        if workers < 2 or not can_fork():
            found = [job(range(len(parts)))]
        elif workers == 2:
            # One process forked, and this one the second worker, from the other end of
            # the parts (see Ahead.rest): no pool to start (its second fork began its
            # work 0.15 s after the first at 100,000 devices) and no core left waiting.
            with Ahead(lambda k: job([k]), range(len(parts))) as ahead:
                done = ahead.rest()
            found = [r if r is not None else job([k]) for k, r in done.items()]
        else:
            found = forked_map(job, [[k] for k in range(len(parts))], workers)
        for results in found:
            for i, first, names, others, temps, seen in results:
                off[i] += names
                if first < 0:
                    listings[i] = (others, temps)
                    marks[i] = seen
        for i, twin in enumerate(twins):
            if twin is not None:
                off[i] = _twin_off(checks[i][0], off[i], off[twin], checks[i][2])
        return off, listings, marks
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)


def _surveyed_ahead(
    surveyed: SurveyAhead, keys: Sequence[str], names: Set[str]
) -> tuple[list[list[str]], list[tuple[list[str], list[str]]], list[dirmark.Mark | None]] | None:
    """`_survey`'s answer for the roots `keys` and their `names`, from the survey made
    ahead; None when it did not survey them all, for those names."""
    off, listings, marks = [], [], []
    for key in keys:
        got = surveyed.got(key)
        if got is None or surveyed.names(key) != names:
            return None
        off.append(got[0])
        listings.append((got[1], got[2]))
        marks.append(surveyed.marks.get(key))
    return off, listings, marks


# Stats are checked over forked workers from this many files on, a worker per as many.
STAT_PARALLEL_MIN = 50_000

# What a part of `_survey` found: (check, first, names off, others, temps, the mark of
# the directory its listing stands for).
_SurveyPart = tuple[int, int, list[str], list[str], list[str], dirmark.Mark | None]


def _vouched_whole(i: int, twin: int | None, tables: Sequence[Columns | None]) -> bool:
    """Whether root `i`, vouched for (see gitprov.dirmark), needs neither a listing nor a
    scan: it has no twin (its names' stats are taken one by one), or each of its files
    is its twin's (the twin's stats are theirs; a name replaced since would have
    changed the directory)."""
    if twin is None:
        return True
    mine, theirs = tables[i], tables[twin]
    return mine is not None and theirs is not None and mine[2] == theirs[2]


class Survey(Protocol):
    """What a publish knows ahead of its plan of the served files' stats."""

    def off(self, key: str, names: Iterable[str]) -> tuple[list[str], list[str]] | None:
        """Of `names` (recorded in root `key`), those known not to be as recorded, and
        those to look at; None: look at them all."""

    def listing(self, key: str, wanted: Set[str]) -> tuple[set[str], list[str]] | None:
        """Root `key`'s served files and a crashed publish's temps in it, as
        `_listing(key, temps, wanted)` finds them; None: list it."""


class SurveyAhead:
    """The survey `plan` makes of the files a publish leaves alone (an lstat each: at
    100,000 devices about 0.5 s of one core) and the listing of each root, made
    meanwhile by one forked process from the index's names and stats, while this one
    reads the manifest, checks the versions and builds: the second core's work, off the
    publish's path.

    Started under the publish lock, so only a hand can change a root between it and the
    plan, as between any survey and the writes (the next publish sees such a change).
    Its answer stands for the manifest the index named when it started and no other:
    `matches` tells (the caller asks it after reading the manifest, still locked)."""

    def __init__(
        self,
        identity: tuple[int, ...],
        tables: Mapping[str, StatTable],
        vouched: Collection[str] = (),
        first: Callable[[], object] | None = None,
    ) -> None:
        self.identity = identity
        self._tables = tables
        self.vouched = frozenset(vouched)
        # Per root, the stat of its directory its listing here stands for (see
        # dirmark.mark), once the survey is got.
        self.marks: dict[str, dirmark.Mark | None] = {}
        # The names of each root as a set, made when first asked for, here and in the
        # survey's process (not before it is forked: the survey is what a one-device
        # publish at 100,000 devices waits for, and a set of its names takes 12 ms).
        self._names: dict[str, frozenset[str]] = {}

        # In parts, each root's listing first, then slices of its names: the process
        # works down them, and this one, once it needs the answer, works up from the
        # last part until the two meet (`Ahead.rest`). It was waiting for the survey: at
        # 100,000 devices a third of it was left when the plan asked.
        # A root that shares its files with another (see `_twins`) is one part, its scan.
        keys = list(tables)
        inodes = [tables[k].inodes() for k in keys]
        twins = _twins(keys, inodes, [tables[k].names for k in keys])
        self._twins = {
            key: keys[twin] for key, twin in zip(keys, twins, strict=True) if twin is not None
        }
        # A root gitprov.dirmark vouches for is not listed, and when each of its files is
        # its twin's, not scanned either (see `_vouched_whole`).
        parts: list[_Part] = []
        for i, (key, table) in enumerate(tables.items()):
            if key in self._twins:
                twin = twins[i]
                assert twin is not None
                if key not in vouched or inodes[i] != inodes[twin]:
                    parts.append((key, -2, -1))
                continue
            count = len(table.names)
            step = max(SURVEY_PART_MIN, -(-count // SURVEY_PARTS))
            if key not in vouched:
                parts.append((key, -1, -1))
            parts += [(key, first, min(first + step, count)) for first in range(0, count, step)]
        # Before the parts, `first`: work the process does for the caller while this one
        # still imports (see gitprov.headstart), never done here (see `_job`).
        self._first = first
        self._first_got: list[object] = []
        self._pid = os.getpid()
        self._parts = parts
        self._ahead: Ahead[_Part, Any] = Ahead(
            self._job, [_FIRST, *parts] if first is not None else parts
        )
        self._got: dict[str, _Surveyed | None] | None = None

    def _job(self, part: _Part) -> object:
        """A part's answer; of `_FIRST`, what `first` returns in the survey's process (in
        this one, None: the caller that asked for it does the same work itself)."""
        if part != _FIRST:
            return self._part(part)
        if self._first is None or os.getpid() == self._pid:
            return None
        try:
            return self._first()
        except Exception:  # (the caller does it itself; the survey goes on)
            return None

    def first(self) -> object:
        """What `first` (see `start`) returned in the survey's process, waited for;
        None when none was given or it failed."""
        if self._first is None:
            return None
        if not self._first_got:
            self._first_got.append(self._ahead.get(_FIRST, wait=True))
        return self._first_got[0]

    def _part(self, part: _Part) -> _PartFound:
        """One part's answer: a root's listing, as the files found besides the names
        recorded (normally none: 100,000 names are not sent back through a pipe) and
        the temps; or of a slice of its names, those not as recorded."""
        key, first, end = part
        table = self._tables[key]
        if first == -2:
            names = self.names(key)
            assert names is not None
            twin = self._tables[self._twins[key]].inodes().tolist()  # (a list compares to one)
            scanned, seen = dirmark.around(
                key, _scan, key, table.names, table.columns(), twin, names
            )
            return (*scanned, seen)
        if first == -1:
            temps: list[str] = []
            names = self.names(key)
            assert names is not None
            found, seen = dirmark.around(key, _listing, Path(key), temps, names)
            return [], sorted(found - names), temps, seen
        try:
            fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return list(table.names[first:end]), [], [], None  # (no root: every file is off)
        try:
            sizes, mtimes, inodes = table.columns(first, end)
            off = _not_as_recorded(fd, table.names[first:end], sizes, mtimes, inodes)
            return off, [], [], None
        finally:
            os.close(fd)

    @classmethod
    def start(
        cls, state_dir: Path, first: Callable[[], object] | None = None
    ) -> SurveyAhead | None:
        """None when there is nothing worth a process: no index naming the manifest, no
        root holding its commit, fewer files than `SURVEY_AHEAD_MIN`, or no fork. With
        `first`, the process calls it before it surveys (see `first`)."""
        if not can_fork():
            return None
        before = _manifest_identity(state_dir)
        index = load_index(state_dir)
        if index is None or before is None or _manifest_identity(state_dir) != before:
            return None
        tables = {
            key: s.stat
            for key, s in index.roots.items()
            if s.ok and s.commit == index.commit and isinstance(s.stat, StatTable)
        }
        if sum(len(t.names) for t in tables.values()) < SURVEY_AHEAD_MIN:
            return None
        vouched = dirmark.vouched(
            state_dir, before, [k for k in tables if not index.roots[k].stale]
        )
        return cls(before, tables, vouched, first)

    def matches(self, state_dir: Path) -> bool:
        """Whether the manifest is still the one the survey was made for."""
        return _manifest_identity(state_dir) == self.identity

    def _result(self, key: str) -> _Surveyed | None:
        if self._got is None:
            parts = self._ahead.rest()
            self._got = {}
            for root in self._tables:
                mine = [(p, parts.get(p)) for p in self._parts if p[0] == root]
                if any(found is None for _, found in mine):
                    self._got[root] = None  # (the caller makes its own)
                    continue
                off: list[str] = []
                others: list[str] = []
                temps: list[str] = []
                for (_, first, _), found in mine:
                    assert found is not None
                    off += found[0]
                    others += found[1]
                    temps += found[2]
                    if first < 0:
                        self.marks[root] = found[3]
                self._got[root] = (off, others, temps)
            for root, twin in self._twins.items():
                got, twin_got = self._got.get(root), self._got.get(twin)
                if got is not None and twin_got is None:
                    self._got[root] = None  # (its stats were the twin's to check)
                elif got is not None and twin_got is not None:
                    off = _twin_off(root, got[0], twin_got[0], self._tables[root])
                    self._got[root] = (off, got[1], got[2])
        return self._got.get(key)

    def names(self, key: str) -> frozenset[str] | None:
        """The names root `key` was surveyed for (None: not surveyed); one set for the
        roots that share the index's list of them."""
        table = self._tables.get(key)
        if table is None:
            return None
        made = self._names.get(key)
        if made is None:
            same = [n for k, n in self._names.items() if self._tables[k].names is table.names]
            made = self._names[key] = same[0] if same else frozenset(table.names)
        return made

    def got(self, key: str) -> _Surveyed | None:
        """What the survey of root `key` found (waited for); None if it failed."""
        return self._result(key)

    def off(self, key: str, names: Iterable[str]) -> tuple[list[str], list[str]] | None:
        """Of `names` (recorded in root `key`), those found not as recorded, and those
        the survey did not cover (the caller looks at them); None when the root was not
        surveyed or its survey failed (the caller makes its own)."""
        got = self._result(key)
        if got is None:
            return None
        asked = names if isinstance(names, Set) else set(names)
        # (what the survey found off is normally a handful; what it did not cover, none)
        recorded = self.names(key)
        assert recorded is not None  # (surveyed: a result was got)
        return [n for n in got[0] if n in asked], list(asked - recorded)

    def listing(self, key: str, wanted: Set[str]) -> tuple[set[str], list[str]] | None:
        """Root `key`'s served files and temps as `_listing(key, temps, wanted)` finds
        them: the recorded names, plus the others found. The survey took the recorded
        names without a look, as `_listing` takes those it knows: one gone that is still
        wanted fails its stat in the plan; those no longer `wanted` are looked at here,
        as `_listing` does (the names of removed devices: normally a few)."""
        got = self._result(key)
        if got is None:
            return None
        _, others, temps = got
        recorded = self.names(key)
        assert recorded is not None
        present = set(recorded)
        for name in present - wanted:
            if not os.path.isfile(os.path.join(key, name)):
                present.discard(name)
        present.update(others)  # (looked at by the survey)
        return present, list(temps)

    def close(self) -> None:
        self._ahead.close()


# What a survey ahead finds in a root: the names not as recorded, the served files found
# that were not recorded, and the temps.
_Surveyed = tuple[list[str], list[str], list[str]]
# A part of it: (root, first, end), a slice of the root's recorded names, or with first
# -1 its listing, with -2 its scan (see `_scan`); and what the part found: the names
# off, the others, the temps and (of a listing) the directory's mark.
_Part = tuple[str, int, int]
_PartFound = tuple[list[str], list[str], list[str], dirmark.Mark | None]
# The part that stands for the caller's `first` (no root is named "").
_FIRST: _Part = ("", -3, -3)
# Each root's names in about this many parts, of at least SURVEY_PART_MIN names: the two
# sides meet within a part (at 100,000 devices, about 20 ms of stats).
SURVEY_PARTS = 16
SURVEY_PART_MIN = 2_000

# The survey is made ahead from this many recorded files on (counted over the roots): a
# forked process costs a few milliseconds, 10,000 stats and two listings about 40 ms.
SURVEY_AHEAD_MIN = 10_000


def note_listed(state_dir: Path, manifest: Manifest) -> None:
    """After a publish that wrote much (the next one would list its roots, see
    gitprov.dirmark): list each root that holds `manifest` completely, and record the
    stat of its directory when the listing is exactly the manifest's names with their
    recorded inodes. A listing with inodes costs about 1.5 us a file; what it saves the
    next publish is a listing and, for a root of linked files, a scan."""
    identity = _manifest_identity(state_dir)
    if identity is None:
        return
    names = manifest.files.keys()
    found: dict[str, dirmark.Mark] = {}
    for key, state in manifest.roots.items():
        if not state.ok or state.commit != manifest.commit or state.stale:
            continue
        try:
            inodes, mark = dirmark.around(key, _inodes, key)
        except OSError:
            continue
        if mark is None or inodes.keys() != names:
            continue
        stats = state.stat
        if isinstance(stats, StatTable):
            same = list(map(inodes.__getitem__, stats.names)) == stats.inodes().tolist()
            same = same and len(stats.names) == len(inodes)
        else:
            same = stats.keys() == inodes.keys() and all(
                st[2] == inodes[n] for n, st in stats.items()
            )
        if same:
            found[key] = mark
    if _manifest_identity(state_dir) == identity:
        dirmark.save(state_dir, identity, found)


def _inodes(root: str) -> dict[str, int]:
    """Each name in `root` but the dot-files, with its inode (one scandir)."""
    with os.scandir(root) as entries:
        return {e.name: e.inode() for e in entries if not e.name.startswith(".")}


def _manifest_identity(state_dir: Path) -> tuple[int, ...] | None:
    try:
        return file_identity(os.lstat(state_dir / MANIFEST))
    except OSError:
        return None


def _not_as_recorded(
    fd: int,
    names: Sequence[str],
    sizes: Sequence[int],
    mtimes: Sequence[int],
    inodes: Sequence[int],
) -> list[str]:
    """Of `names` (each with its recorded size, mtime and inode, in the same order),
    those whose stat in the directory `fd` is not the recorded one, or that are gone."""
    off = []
    lstat = os.lstat
    for name, size, mtime, inode in zip(names, sizes, mtimes, inodes, strict=True):
        try:
            st = lstat(name, dir_fd=fd)
        except OSError:
            off.append(name)
            continue
        if st.st_size != size or st.st_mtime_ns != mtime or st.st_ino != inode:
            off.append(name)
    return off


def _twins(
    roots: Sequence[Path | str], inodes: Sequence[Sequence[int] | None], names: Sequence[object]
) -> list[int | None]:
    """Per root, the earlier root whose files it shares, or None: one on the same
    filesystem, with the same list of names, recording the same inode for at least
    `TWIN_MIN` of them (a publish links each file it writes into every root of a
    filesystem: see publish._link_source). A root with a twin is surveyed by `_scan`."""
    devices: list[int | None] = []
    for root in roots:
        try:
            devices.append(os.stat(root).st_dev)
        except OSError:
            devices.append(None)
    out: list[int | None] = []
    for i, mine in enumerate(inodes):
        twin = None
        for j in range(i):
            other = inodes[j]
            if (
                mine is not None
                and other is not None
                and out[j] is None
                and names[j] is names[i]
                and devices[i] is not None
                and devices[j] == devices[i]
                # (whole first: an array's comparison is a memcmp)
                and (mine == other or sum(map(operator.eq, mine, other)) >= TWIN_MIN * len(mine))
            ):
                twin = j
                break
        out.append(twin)
    return out


# The share of a root's files that must be its twin's for a survey by inode to pay: the
# names whose inode is another (a root repaired alone) are stat'ed one by one.
TWIN_MIN = 0.9


def _scan(
    root: Path | str,
    names: Sequence[str],
    columns: Columns,
    twin: Sequence[int],
    known: Collection[str] | None,
) -> tuple[list[str], list[str], list[str]]:
    """The survey of a root whose files are its twin's (`twin`: the twin's recorded
    inodes, in the order of `names`): the names not as recorded, and with `known` the
    served files besides those names and the temps (see `_listing`), from one listing.
    A name listed with the inode recorded for it in both roots is the twin's file, whose
    stat the twin's survey checks (and `_twin_off` looks at again where it is off); any
    other is stat'ed. A listing with inodes costs 1.5 us a name, a stat 3 to 5."""
    try:
        with os.scandir(root) as entries:
            found = {e.name: e.inode() for e in entries}
    except OSError:
        return list(names), [], []
    sizes, mtimes, inodes = columns
    # (lists: an array never equals a list)
    inodes = inodes.tolist() if isinstance(inodes, array) else inodes
    twin = twin.tolist() if isinstance(twin, array) else twin
    listed = list(map(found.get, names))
    # (compared whole first: in C, ten times the speed of a test per name)
    look = (
        []
        if listed == inodes and inodes == twin
        else [
            i
            for i, (inode, other, seen) in enumerate(zip(inodes, twin, listed, strict=True))
            if inode != other or seen != inode
        ]
    )
    off: list[str] = []
    if look:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            off = _not_as_recorded(
                fd,
                [names[i] for i in look],
                [sizes[i] for i in look],
                [mtimes[i] for i in look],
                [inodes[i] for i in look],
            )
        finally:
            os.close(fd)
    if known is None:
        return off, [], []
    temps: list[str] = []
    served = _served_among(root, set(found), temps, known)
    return off, sorted(served.difference(known)), temps


def _twin_off(
    root: Path | str, off: Sequence[str], twin_off: Iterable[str], recorded: Mapping[str, Stat]
) -> list[str]:
    """The names of a root surveyed by `_scan` not as recorded: `off`, and of the names its
    twin found off (normally none), those whose stat here is not the one recorded."""
    seen = set(off)
    ask = [n for n in twin_off if n not in seen and n in recorded]
    if not ask:
        return list(off)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return [*off, *ask]
    try:
        return [*off, *_not_as_recorded(fd, ask, *_columns(ask, recorded))]
    finally:
        os.close(fd)


def _listing(
    root: Path, temps: list[str] | None = None, known: Collection[str] = frozenset()
) -> set[str]:
    """The served files of a root (not dot-files); a crashed publish's temps go into
    `temps` when it is given (one listing of a directory of 100,000 files, not two).

    The names in `known` are taken for files without a look: the caller compares each
    one's stat with the one it recorded, or reads it, which a directory put in its place
    fails (served names never start with a dot). Only the others, normally none, are
    looked at (following links, as a served file is read): a listing of names is half
    the cost of a scan that types each entry."""
    try:
        found = set(os.listdir(root))
    except OSError:
        # Gone, or no directory this process may list (a name too long, no permission):
        # nothing served there; writing into it fails as the root's own error.
        return set()
    return _served_among(root, found, temps, known)


def _served_among(
    root: Path | str, found: set[str], temps: list[str] | None, known: Collection[str]
) -> set[str]:
    """`_listing` of the names `found` in `root` (the set itself, pruned)."""
    dots: list[str] = []
    for name in found - (known if isinstance(known, Set) else set(known)):
        if name.startswith("."):
            dots.append(name)
        elif not _servable(os.path.join(root, name)):
            found.discard(name)
    found.difference_update(dots)
    if temps is not None:
        temps += [os.path.join(root, n) for n in dots if is_temp(n)]
    return found


def _servable(path: str) -> bool:
    """Whether a server may answer a request with the entry at `path`: a file, or a link,
    a fifo or a device (nginx follows a link to /dev/zero), which are reported and pruned
    as any file gitprov did not write; not a directory, a link to one, or to nothing."""
    try:
        return not S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _remove(paths: Sequence[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def is_temp(name: str) -> bool:
    """Whether `name` is one of the temps a publish writes before its renames."""
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)
