"""What validating a commit learned, kept on disk for the next process.

A fresh process that validates a child of a commit validated before (CI on a merge, a
publish after the last one) starts from that commit's snapshot: its files (path -> blob
id), the problems of reading each, the cross-file rules' indexes (plain facts, see
gitprov.rules._facts) and, once its versions were evaluated, each device's MAC and
content digest. A tree diff then says which files to read; the unchanged ones are not
read at all.

And per commit, the highest version_floor of its history (GP113 needs it for every
child), so that validating a child does not evaluate the parent's versions.

Everything here is a cache: keyed by commit id under a salt naming everything else a
result depends on (gitprov's version, the catalog, the inventory directory, this
format), written to a temp file and renamed behind the CRC-32 of their body, ignored
when unreadable, damaged or from another format, and deleting it changes no output.
Files are pickles: as trusted as the git directory they sit in (whose hooks run anyway).
A snapshot's maps of a fleet's size (the indexes by key and by path, the device facts)
follow its pickle in compressed buckets (gitprov.buckets), read by lookup: a child's
validation reads the buckets of what it changed, not the fleet. Its maps of text (paths
and blob ids, digests, MACs) are gitprov.overlay.TextMaps: two strings each, looked up
in place, changed through an Overlay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import mmap
import os
import pickle
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from gitprov import statejson
from gitprov.buckets import MAX_BUCKETS, Buckets, Packed
from gitprov.errors import Problem
from gitprov.overlay import TextMap, whole

FORMAT = 7
# Snapshots kept: each is about the fleet's size (tens of MB at 100k devices).
KEEP = 4


@dataclass
class Kept:
    """One commit's snapshot as stored."""

    commit: str
    # Maps of text to text are stored as gitprov.overlay.TextMap (two strings, loaded
    # three times faster than a dict and split when first looked up) when they can be.
    files: Mapping[str, str]  # every file of the inventory directory: path -> blob id
    oids: Mapping[str, Mapping[str, str]]  # kind -> path -> blob id of each document read
    problems: dict[str, tuple[Problem, ...]]  # problems of reading each file
    # name -> gitprov.rules._facts.Index, up to date with them: pickled with its maps in
    # buckets (gitprov.buckets), so a child's validation unpickles only what it touches.
    indexes: dict[str, Any]
    digests: Mapping[str, str] | None = None  # version key -> content digest (valid commits)
    macs: Mapping[str, str] | None = None  # device path -> MAC (with digests)
    # device path -> gitprov.inventory.DeviceFacts (None: that document has none), a
    # gitprov.buckets.Buckets when written by this version.
    devices: Mapping[str, Any] | None = None


class CheckCache:
    def __init__(self, directory: Path, salt: str) -> None:
        self.directory = directory / "checks" / salt[:16]

    def _file(self, commit_id: str, ext: str) -> Path:
        return self.directory / f"{commit_id}.{ext}"

    def has(self, commit_id: str) -> bool:
        return self._file(commit_id, "pickle").is_file()

    def load(self, commit_id: str) -> Kept | None:
        body = self._read(self._file(commit_id, "pickle"))
        if body is None:
            return None
        try:
            reader = _Reader(body)
            head, kept = reader.load()
            if head != (FORMAT, commit_id) or not isinstance(kept, Kept) or not reader.rest():
                return None
        except Exception:
            return None
        if kept.digests is None:
            kept.digests, kept.macs = self._digests(commit_id)
        return kept

    def store_digests(
        self, commit_id: str, digests: Mapping[str, str], macs: Mapping[str, str]
    ) -> None:
        """The version digests of a commit whose snapshot is stored without them: a
        publish keeps the snapshot as soon as the commit is validated (its indexes are
        let go before the devices are compiled) and the digests once they are derived."""

        def fill(out: _Digesting) -> None:
            body = ((FORMAT, commit_id), _text(digests), _text(macs))
            pickle.dump(body, out, protocol=pickle.HIGHEST_PROTOCOL)

        with contextlib.suppress(OSError):  # a cache that cannot be written costs time
            self._write(self._file(commit_id, "digests"), fill)

    def _digests(self, commit_id: str) -> tuple[Mapping[str, str] | None, Mapping[str, str] | None]:
        raw = self._read(self._file(commit_id, "digests"))
        if raw is None:
            return None, None
        try:
            head, digests, macs = pickle.loads(raw)
        except Exception:
            return None, None
        whole = isinstance(digests, (dict, TextMap)) and isinstance(macs, (dict, TextMap))
        if head != (FORMAT, commit_id) or not whole:
            return None, None
        return digests, macs

    def store(self, kept: Kept) -> None:
        kept = dataclasses.replace(
            kept,
            files=_text(kept.files),
            oids={kind: _text(paths) for kind, paths in kept.oids.items()},
            digests=None if kept.digests is None else _text(kept.digests),
            macs=None if kept.macs is None else _text(kept.macs),
        )
        if kept.devices is not None:
            kept = dataclasses.replace(kept, devices=Packed(kept.devices))

        def fill(out: _Digesting) -> None:
            writer = _Writer(out)
            writer.dump(((FORMAT, kept.commit), kept))
            writer.rest()

        try:
            self._write(self._file(kept.commit, "pickle"), fill)
            snapshots = sorted(
                self.directory.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True
            )
            for old in snapshots[KEEP:]:
                old.unlink(missing_ok=True)
                old.with_suffix(".digests").unlink(missing_ok=True)
        except OSError:
            pass  # a cache that cannot be written only costs time

    def floor(self, commit_id: str) -> tuple[int, str] | None:
        """The highest version_floor of the commit's history and the commit that set it."""
        body = self._read(self._file(commit_id, "floor"))
        if body is None:
            return None
        try:
            raw = statejson.loads(bytes(body))
            if raw.get("format") != FORMAT:
                return None
            return int(raw["floor"]), str(raw["floor_by"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def store_floor(self, commit_id: str, floor: int, floor_by: str) -> None:
        body = json.dumps({"format": FORMAT, "floor": floor, "floor_by": floor_by})
        with contextlib.suppress(OSError):  # a cache that cannot be written costs time
            self._write(self._file(commit_id, "floor"), lambda out: out.write(body.encode()))

    @staticmethod
    def _read(path: Path) -> memoryview | None:
        """The body of a file `_write` wrote, or None if it is missing or damaged. A view
        of the file mapped, not a copy: most of a snapshot (the maps in buckets, see
        `_Reader`) is never unpacked by a child. A mapping stays valid as long as it is
        held: `_write` replaces a file, it never writes into one."""
        try:
            with open(path, "rb") as f:
                try:
                    source: mmap.mmap | bytes = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except OSError:  # a filesystem that cannot map files: a copy, then
                    source = f.read()
        except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
            return None
        whole = memoryview(source)
        body = whole[DIGEST + 1 :]
        if bytes(whole[DIGEST : DIGEST + 1]) != b"\n":
            return None
        return body if bytes(whole[:DIGEST]) == _crc(body) else None

    def _write(self, path: Path, fill: Callable[[_Digesting], object]) -> None:
        """The file `fill` writes, behind the CRC-32 of what it wrote: a damaged file is
        ignored, never read as other facts. Written as it is made (a snapshot is never
        whole in memory), the digest's place kept and filled at the end."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(b"0" * DIGEST + b"\n")
                out = _Digesting(f)
                fill(out)
                f.seek(0)
                f.write(b"%08x" % out.crc)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def _text(mapping: Mapping[str, str]) -> Mapping[str, str]:
    """`mapping` as a TextMap to pickle when it can be one, else as a dict."""
    made = TextMap.of(mapping)
    return made if made is not None else dict(whole(mapping))


# The length of the hex CRC-32 that starts each file. A check against damage (a file
# cut short, a flipped bit), not against an attacker: the cache is as trusted as the
# git directory it sits in. It reads a fleet's snapshot in a third of a sha256's time.
DIGEST = 8


def _crc(body: memoryview) -> bytes:
    return b"%08x" % zlib.crc32(body)


class _Writer(pickle.Pickler):
    """A snapshot's pickle, then its maps in buckets (`Packed`, `Buckets`; see
    gitprov.buckets): each bucket's pickle is made and written one at a time, after the
    pickle that names each map by its number, its count of buckets and its length.
    A bucket that was read as it is and never unpickled is written as it was read."""

    def __init__(self, out: _Digesting) -> None:
        super().__init__(out, protocol=pickle.HIGHEST_PROTOCOL)
        self.out = out
        self.maps: list[Packed[Any, Any]] = []
        # id() -> number: each map named is kept in `maps`, so no id is reused.
        self.numbers: dict[int, int] = {}

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is not Packed and kind is not Buckets:
            return None
        n = self.numbers.get(id(obj))
        if n is None:
            n = self.numbers[id(obj)] = len(self.maps)
            self.maps.append(obj if kind is Packed else Packed(obj))
        packed = self.maps[n]
        return (n, packed.count(), len(packed))

    def rest(self) -> None:
        for packed in self.maps:
            for part in packed.parts():
                self.out.write(len(part).to_bytes(8, "little"))
                self.out.write(part)


class _Reader(pickle.Unpickler):
    """What `_Writer` wrote: the maps it named are `Buckets` whose buckets are views
    into the file's bytes, unpickled when asked for."""

    def __init__(self, body: memoryview) -> None:
        # The file mapped (see CheckCache._read) is read as a file: nothing copied (nor
        # by a BytesIO over the bytes read where it could not be mapped).
        source = cast("mmap.mmap | bytes", body.obj)
        self.stream = io.BytesIO(source) if isinstance(source, bytes) else source
        self.start = len(source) - len(body)
        self.stream.seek(self.start)
        self.body = body
        super().__init__(self.stream)
        self.maps: list[Buckets[Any, Any]] = []

    def persistent_load(self, pid: Any) -> Any:
        if not (type(pid) is tuple and len(pid) == 3 and all(type(x) is int for x in pid)):
            raise pickle.UnpicklingError("not a map's name")
        n, count, length = pid
        if n < len(self.maps):
            return self.maps[n]
        if n != len(self.maps) or not 0 < count <= MAX_BUCKETS or length < 0:
            raise pickle.UnpicklingError("not a map's name")
        named: Buckets[Any, Any] = Buckets([b""] * count, length)
        self.maps.append(named)
        return named

    def rest(self) -> bool:
        """Point each map's buckets at their pickles; False if the file is not whole."""
        body, at = self.body, self.stream.tell() - self.start
        for named in self.maps:
            parts = named._parts
            for i in range(len(parts)):
                size = int.from_bytes(body[at : at + 8], "little")
                at += 8
                if at + size > len(body):
                    return False
                parts[i] = body[at : at + size]
                at += size
        return at == len(body)


class _Digesting:
    """A file to write to that keeps the CRC-32 of what went through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.crc = 0

    def write(self, data: bytes | memoryview) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.out.write(data)
