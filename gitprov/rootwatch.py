"""Which files of a served root were touched since the last publish: inotify, for a
process that publishes again and again (the watcher).

A publish leaves most of a fleet's files alone and checks that each is as it recorded it:
an lstat per file, 200,000 at 100,000 devices in two roots, about 0.5 s of one core that
a watcher (its threads rule out forking the work) spent on every merge before the new
files were served. The kernel knows sooner: a watch on a root's directory reports each
file created, written, changed in its attributes (a touch, a chmod), moved or removed
through it, queued at the very system call. So a watcher's publish takes the names
touched since its last publish and looks at those alone; every other file is as that
publish found or wrote it.

Trusted only while that holds: the previous manifest is the one this process's last
publish wrote (or found right) with the watch already on, no event was dropped (a full
kernel queue), the root is the directory watched (not replaced or moved), the publish in
between did not fail. Otherwise the publish surveys every file, and the next one can
trust the watch again.

The roots of one filesystem share their files (a publish links each into every root):
a name touched in one root is taken as touched in all, and a root whose touches are not
known makes them unknown in all.

What a watch does not see, and so what the watcher's reconcile (every file's stat, or
every byte with `--verify`) is still for: a write through a memory map, a file changed
through a hard link from outside the roots, a root on a network filesystem changed from
another host."""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

# <sys/inotify.h>
_MODIFY, _ATTRIB, _CLOSE_WRITE = 0x2, 0x4, 0x8
_MOVED_FROM, _MOVED_TO, _CREATE, _DELETE = 0x40, 0x80, 0x100, 0x200
_DELETE_SELF, _MOVE_SELF, _UNMOUNT, _Q_OVERFLOW, _IGNORED = 0x400, 0x800, 0x2000, 0x4000, 0x8000
_ONLYDIR = 0x01000000
_MASK = (
    _MODIFY
    | _ATTRIB
    | _CLOSE_WRITE
    | _MOVED_FROM
    | _MOVED_TO
    | _CREATE
    | _DELETE
    | _DELETE_SELF
    | _MOVE_SELF
    | _ONLYDIR
)
_ROOT_GONE = _DELETE_SELF | _MOVE_SELF | _UNMOUNT | _IGNORED
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
# State dirs watched by one process at once (a watcher has one); an inotify instance each,
# the oldest closed beyond (the system allows 128 a user by default).
MAX_WATCHED = 8


@dataclass
class _Root:
    wd: int
    identity: tuple[int, int]  # the directory watched: (device, inode)
    touched: set[str] = field(default_factory=set)
    lost: bool = False  # events dropped, or the directory is gone: survey it all


class Touched(NamedTuple):
    """What one publish takes from a watch: per root, the names touched since the last
    publish, or None where they are not known (see the module). A `plan.Survey`."""

    names: dict[str, set[str] | None]

    def off(self, key: str, names: Iterable[str]) -> tuple[list[str], list[str]] | None:
        """None when root `key` must be surveyed whole; else none of `names` is known to be
        off, and those touched are for the caller to look at."""
        touched = self.names.get(key)
        if touched is None:
            return None
        return [], ([n for n in names if n in touched] if touched else [])

    def listing(self, key: str, wanted: Set[str]) -> tuple[set[str], list[str]] | None:
        """None: a watch does not keep a root's names (the caller lists it)."""
        return None


class RootWatch:
    """The watches on one state dir's roots, with what its last publish vouched for."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._roots: dict[str, _Root] = {}
        self._wds: dict[int, str] = {}
        self._covered: frozenset[str] = frozenset()  # roots watched before the last take
        self._pending: frozenset[str] = frozenset()
        self._vouched: object | None = None  # the manifest the last publish left

    def take(self, roots: Sequence[str], previous: object | None) -> Touched:
        """The names touched in each root since the publish that left `previous` (None
        for a root where that is not known), and the watch on for the next publish: it
        trusts this one's record only once `vouch`ed."""
        self._drain()
        trusted = previous is not None and previous is self._vouched
        out: dict[str, set[str] | None] = {}
        for key in roots:
            known = self._roots.get(key)
            now = self._arm(key)
            ok = trusted and key in self._covered and known is not None and known is now
            out[key] = now.touched if ok and now is not None and not now.lost else None
            if now is not None:
                now.touched = set()
                now.lost = False
        # A publish links one file into every root on a filesystem (see
        # publish._link_source): a write through one root's name is a write to the
        # others', which their watches do not see. A name touched in one root is looked
        # at in all of them (normally a handful of names), and where one root's touches
        # are not known, no root's are.
        if any(t is None for t in out.values()):
            out = dict.fromkeys(out)
        else:
            anywhere = set().union(*(t for t in out.values() if t is not None))
            out = {key: set(anywhere) for key in out}
        self._covered, self._vouched = frozenset(), None
        self._pending = frozenset(k for k in roots if k in self._roots)
        return Touched(out)

    def vouch(self, manifest: object) -> None:
        """The publish that took last is done, and `manifest` records every root's files
        as it found or wrote them."""
        self._covered, self._vouched = self._pending, manifest

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _arm(self, key: str) -> _Root | None:
        """The watch on root `key`, added (or added again: the root was replaced, lost, or
        not watched yet) so that it sees everything from now on; None if it cannot be."""
        try:
            st = os.stat(key)
            identity = (st.st_dev, st.st_ino)
        except OSError:
            identity = None
        known = self._roots.get(key)
        if known is not None and known.identity == identity and not known.lost:
            return known
        if known is not None:
            self._forget(key)
        if identity is None:
            return None
        wd = _add_watch(self._fd, key)
        if wd is None or wd in self._wds:  # (a second name of a root watched: surveyed)
            return None
        with contextlib.suppress(OSError):
            if os.stat(key).st_ino != identity[1]:  # replaced meanwhile
                _rm_watch(self._fd, wd)
                return None
        root = _Root(wd, identity)
        self._roots[key] = root
        self._wds[wd] = key
        return root

    def _forget(self, key: str) -> None:
        root = self._roots.pop(key)
        if self._wds.get(root.wd) == key:
            del self._wds[root.wd]
            _rm_watch(self._fd, root.wd)

    def _drain(self) -> None:
        """Every event queued since the last drain, into the roots' touched names."""
        while True:
            try:
                data = os.read(self._fd, 1 << 20)
            except BlockingIOError:
                return
            except OSError:
                for root in self._roots.values():
                    root.lost = True
                return
            if not data:
                return
            at = 0
            while at + _EVENT.size <= len(data):
                wd, mask, _, size = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size : at + _EVENT.size + size].rstrip(b"\0")
                at += _EVENT.size + size
                if mask & _Q_OVERFLOW:
                    for root in self._roots.values():
                        root.lost = True
                    continue
                key = self._wds.get(wd)
                watched = self._roots.get(key) if key is not None else None
                if watched is None:
                    continue
                if mask & _ROOT_GONE:
                    watched.lost = True
                    if mask & _IGNORED:  # the kernel dropped the watch
                        del self._wds[wd]
                elif name:
                    watched.touched.add(os.fsdecode(name))


_WATCHES: OrderedDict[str, RootWatch] = OrderedDict()
_LOCK = threading.Lock()


def watch_for(state_dir: Path) -> RootWatch | None:
    """This process's watch of the roots `state_dir` records; None without inotify (not
    Linux, or the system's limit of instances reached)."""
    key = str(state_dir)
    with _LOCK:
        if key in _WATCHES:
            _WATCHES.move_to_end(key)
            return _WATCHES[key]
        fd = _inotify()
        if fd is None:
            return None
        while len(_WATCHES) >= MAX_WATCHED:
            _WATCHES.popitem(last=False)[1].close()
        _WATCHES[key] = watch = RootWatch(fd)
        return watch


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _inotify() -> int | None:
    if _LIBC is None or not hasattr(_LIBC, "inotify_init1"):
        return None
    fd = int(_LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    return fd if fd >= 0 else None


def _add_watch(fd: int, path: str) -> int | None:
    assert _LIBC is not None
    wd = int(_LIBC.inotify_add_watch(fd, os.fsencode(path), ctypes.c_uint32(_MASK)))
    return wd if wd >= 0 else None


def _rm_watch(fd: int, wd: int) -> None:
    assert _LIBC is not None
    _LIBC.inotify_rm_watch(fd, wd)  # (fails only for a watch the kernel dropped already)
