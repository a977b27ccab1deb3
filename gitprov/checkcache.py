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
format), written to a temp file and renamed behind the sha256 of their body, ignored
when unreadable, damaged or from another format, and deleting it changes no output.
Files are pickles: as trusted as the git directory they sit in (whose hooks run anyway).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gitprov.errors import Problem

FORMAT = 4
# Snapshots kept: each is about the fleet's size (tens of MB at 100k devices).
KEEP = 4


@dataclass
class Kept:
    """One commit's snapshot as stored."""

    commit: str
    files: dict[str, str]  # every file of the inventory directory: path -> blob id
    oids: dict[str, dict[str, str]]  # kind -> path -> blob id of each document read
    problems: dict[str, tuple[Problem, ...]]  # problems of reading each file
    indexes: dict[str, Any]  # name -> gitprov.rules._facts.Index, up to date with them
    digests: dict[str, str] | None = None  # version key -> content digest (valid commits)
    macs: dict[str, str] | None = None  # device path -> MAC (with digests)
    # device path -> gitprov.inventory.DeviceFacts (None: that document has none).
    devices: dict[str, Any] | None = None


class CheckCache:
    def __init__(self, directory: Path, salt: str) -> None:
        self.directory = directory / "checks" / salt[:16]

    def _file(self, commit_id: str, ext: str) -> Path:
        return self.directory / f"{commit_id}.{ext}"

    def has(self, commit_id: str) -> bool:
        return self._file(commit_id, "pickle").is_file()

    def load(self, commit_id: str) -> Kept | None:
        raw = self._read(self._file(commit_id, "pickle"))
        if raw is None:
            return None
        try:
            head, kept = pickle.loads(raw)
            if head != (FORMAT, commit_id) or not isinstance(kept, Kept):
                return None
        except Exception:
            return None
        if kept.digests is None:
            kept.digests, kept.macs = self._digests(commit_id)
        return kept

    def store_digests(self, commit_id: str, digests: dict[str, str], macs: dict[str, str]) -> None:
        """The version digests of a commit whose snapshot is stored without them: a
        publish keeps the snapshot as soon as the commit is validated (its indexes are
        let go before the devices are compiled) and the digests once they are derived."""

        def fill(out: _Digesting) -> None:
            body = ((FORMAT, commit_id), digests, macs)
            pickle.dump(body, out, protocol=pickle.HIGHEST_PROTOCOL)

        with contextlib.suppress(OSError):  # a cache that cannot be written costs time
            self._write(self._file(commit_id, "digests"), fill)

    def _digests(self, commit_id: str) -> tuple[dict[str, str] | None, dict[str, str] | None]:
        raw = self._read(self._file(commit_id, "digests"))
        if raw is None:
            return None, None
        try:
            head, digests, macs = pickle.loads(raw)
        except Exception:
            return None, None
        whole = isinstance(digests, dict) and isinstance(macs, dict)
        if head != (FORMAT, commit_id) or not whole:
            return None, None
        return digests, macs

    def store(self, kept: Kept) -> None:
        def fill(out: _Digesting) -> None:
            pickle.dump(((FORMAT, kept.commit), kept), out, protocol=pickle.HIGHEST_PROTOCOL)

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
            raw = json.loads(bytes(body))
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
        """The body of a file `_write` wrote, or None if it is missing or damaged. A view,
        not a copy: a 100,000-device snapshot is 60 MB."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        body = memoryview(raw)[DIGEST + 1 :]
        if raw[DIGEST : DIGEST + 1] != b"\n":
            return None
        return body if raw[:DIGEST] == hashlib.sha256(body).hexdigest().encode() else None

    def _write(self, path: Path, fill: Callable[[_Digesting], object]) -> None:
        """The file `fill` writes, behind the sha256 of what it wrote: a damaged file is
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
                f.write(out.sha.hexdigest().encode())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


# The length of the hex sha256 that starts each file.
DIGEST = 64


class _Digesting:
    """A file to write to that keeps the sha256 of what went through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.out.write(data)
