"""The fetch log of `gitprov serve`: one JSON object per request, one line each.

Each `FetchEvent` of the embedded servers becomes a line such as

    {"time":"2024-05-01T12:00:00.123Z","protocol":"tftp","client":"192.0.2.7",
     "path":"fv0021F2011B19.conf","file":"fv0021f2011b19.conf","mac":"0021f2011b19",
     "kind":"device","version":1002,"status":200,"bytes":1568}

(on one line). docs/fleet-status.md, "Fetch log", defines every field for the readers of
the log (`gitprov fleet`); `FIELDS` lists them in the order written.

The version a device got comes from the publisher's manifest in the state dir, and only
when the bytes sent are the bytes the manifest lists for that file: a root that lags
behind the manifest, or a file replaced between the manifest and the fetch, gives
`"version": null` rather than a version the device never saw.

Lines are appended with one `write` each to a file opened with O_APPEND, under a lock:
concurrent transfers (threads) and other processes appending to the same file never
interleave within a line. Nothing secret is written: request paths, addresses, MACs and
version numbers only (the files served are encrypted; their keys are never known here).
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from gitprov.errors import UsageError
from gitprov.macros import normalise_mac
from gitprov.plan import MANIFEST, Kind, Manifest, ManifestEntry, load_manifest
from gitprov.tools.serve import PATH_SHOWN, FetchEvent, mac_part

__all__ = ["FIELDS", "FetchLog", "ServedVersions", "mac_of_path", "record"]

log = logging.getLogger("gitprov.serve")

FIELDS = ("time", "protocol", "client", "path", "file", "mac", "kind", "version", "status", "bytes")
"""The keys of every line, in the order written; every key is always present."""

_MODE = 0o640  # the MACs of a fleet are not for every local user


def mac_of_path(path: str) -> str | None:
    """The MAC a requested path names (`serve.mac_part`), 12 lower-case hex digits."""
    where = mac_part(path)
    return None if where is None else path[where[0] : where[1]].lower()


class ServedVersions:
    """The publisher's manifest (`STATE_DIR/manifest.json`), read again whenever it changes.

    Thread-safe: the servers' threads ask at once.
    """

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / MANIFEST
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._manifest: Manifest | None = None

    def entry(self, name: str | None, sha256: str | None) -> ManifestEntry | None:
        """The manifest's entry for file `name` if the bytes served (`sha256`) are the ones
        it lists; else None."""
        if name is None or sha256 is None:
            return None
        manifest = self._current()
        entry = manifest.files.get(name) if manifest is not None else None
        if entry is None or entry.sha256_data != sha256:
            return None
        return entry

    def _current(self) -> Manifest | None:
        try:
            info = os.stat(self._path)
            seen: tuple[int, int, int] | None = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            seen = None
        with self._lock:
            if seen != self._seen:
                # The publisher replaces the manifest with one rename: a read sees a whole
                # one (or none, when it is missing or foreign).
                self._manifest = load_manifest(self._path.parent) if seen is not None else None
                self._seen = seen
            return self._manifest


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _rfc3339(at: datetime.datetime) -> str:
    utc = at.astimezone(datetime.UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(path: str) -> str:
    # The servers decode requests with surrogateescape; bytes that were not UTF-8 are
    # written as the four characters \xNN, so every line is valid UTF-8 (and ASCII).
    if len(path) > PATH_SHOWN:  # (see PATH_SHOWN)
        path = path[:PATH_SHOWN] + "…"
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return path.encode("utf-8", "backslashreplace").decode("ascii")
    return raw.decode("utf-8", "backslashreplace")


def record(
    event: FetchEvent, entry: ManifestEntry | None, at: datetime.datetime
) -> dict[str, object]:
    """One line's object, keys in `FIELDS` order."""
    if entry is None:
        mac = mac_of_path(event.path)
    elif entry.kind in (Kind.BOOTSTRAP, Kind.FIRMWARE):
        mac = None  # whoever fetched it, a bootstrap's or an image's name is no MAC
    else:
        mac = normalise_mac(entry.mac) or mac_of_path(event.path)  # (a device's, a stage's)
    # (an image carries no DBID_DBASE_VERSION: the manifest's 0 is no version)
    version = None if entry is None or entry.kind == Kind.FIRMWARE else entry.version
    return {
        "time": _rfc3339(at),
        "protocol": event.protocol,
        "client": event.client,
        "path": _text(event.path),
        "file": event.file,
        "mac": mac,
        "kind": None if entry is None else str(entry.kind),
        "version": version,
        "status": event.status,
        "bytes": event.size,
    }


class FetchLog:
    """A `FetchCallback` appending one line per fetch to `path` (created 0640 if missing).

    `versions` (the publisher's state dir) fills in `kind` and `version`; without it they
    are null. A write that fails (a full disk) is reported once as a warning on logger
    `gitprov.serve`, and serving goes on.
    """

    def __init__(
        self,
        path: Path,
        versions: ServedVersions | None = None,
        *,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        try:
            # (O_NONBLOCK: a fifo nothing reads blocked the open for ever, and serve with
            # it, deaf to SIGTERM; one a reader holds is opened, and written as ever)
            fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, _MODE
            )
        except OSError as exc:
            why = "a fifo nothing reads" if exc.errno == errno.ENXIO else exc.strerror
            raise UsageError(  # (the operator's path: an environment error, exit 2)
                f"cannot open the fetch log {path}: {why}",
                hint="give --fetch-log a file in a writable directory, or --no-fetch-log",
            ) from exc
        os.set_blocking(fd, True)
        self._fd: int | None = fd
        self.path = path
        self._versions = versions
        self._clock = clock
        self._lock = threading.Lock()
        self._failing = False

    def __call__(self, event: FetchEvent) -> None:
        entry = None if self._versions is None else self._versions.entry(event.file, event.sha256)
        line = json.dumps(record(event, entry, self._clock()), separators=(",", ":")) + "\n"
        self._append(line.encode("ascii"))

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self._fd is None:
                return
            try:
                # One write: with O_APPEND the kernel puts it at the end in one piece, also
                # against other processes appending to the same file.
                written = os.write(self._fd, data)
                while written < len(data):  # only a full disk cuts a write short
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                if not self._failing:
                    log.warning("cannot append to the fetch log %s: %s", self.path, exc.strerror)
                self._failing = True
                return
            self._failing = False

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
