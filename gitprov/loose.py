"""Loose objects cut short, found before libgit2 reads one.

A loose object is one zlib stream in a file of its own (`objects/ab/cdef…`): what a
commit writes, and what a fetch or a push of fewer than a hundred objects leaves. libgit2
1.9 (in pygit2 1.21) loops for ever, at full CPU, on a stream that ends before its data
does (libgit2 issue 7342, fixed after that release): a disk that filled up during a
fetch, a copy cut short, and every command reading that object hung, a watcher with the
publish lock held. git itself says `unable to unpack` at once.

So each loose object is inflated once here (Python's zlib says where a stream ends)
before libgit2 is asked for any object. What was found whole is remembered by name, size
and mtime, in the process and in the version cache's directory, so a fresh process looks
only at the objects that are new since: listing the object directories is all that
remains (a repository from a clone or a gc has none at all). A file changed since it was
checked is checked again."""

from __future__ import annotations

import contextlib
import os
import stat
import zlib
from pathlib import Path

import pygit2

from gitprov.errors import UsageError, missing_object

# Where a repository's checked loose objects are listed (in its gitprov-cache).
LISTED = "loose-objects"
# Inflated this much at a time: a stream of zeros is a thousand times its size.
_STEP = 1 << 20
_HEX = frozenset("0123456789abcdef")

# Per objects directory: each loose object checked whole, by its path in the directory,
# with its file's (size, mtime_ns) then.
_CHECKED: dict[str, dict[str, tuple[int, int]]] = {}


def check(repo: pygit2.Repository, cache_dir: Path | None = None) -> None:
    """Raise UsageError (exit 2: the repository is damaged) for the first loose object
    of `repo` (its own object directory and the alternates it reads) whose stream is
    cut short. `cache_dir` keeps what was found whole for the next process."""
    for objects in _object_dirs(repo):
        _check_dir(objects, cache_dir)


def _object_dirs(repo: pygit2.Repository) -> list[Path]:
    """The repository's object directory and those named in its info/alternates (a
    `clone --shared`, a pre-receive quarantine), each once."""
    own = _common_dir(Path(repo.path)) / "objects"
    found = [own]
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (own / "info" / "alternates").read_text().splitlines():
            if line and not line.startswith("#"):
                found.append((own / line) if not os.path.isabs(line) else Path(line))
    quarantine = os.environ.get("GIT_QUARANTINE_PATH")
    if quarantine:
        found.append(Path(quarantine))
    out: list[Path] = []
    for d in found:
        with contextlib.suppress(OSError):
            d = d.resolve()
            if d.is_dir() and d not in out:
                out.append(d)
    return out


def _common_dir(git_dir: Path) -> Path:
    """The git directory that holds the objects: a linked work tree's own directory
    (`.git/worktrees/NAME`) names it in its `commondir` file."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        named = (git_dir / "commondir").read_text().strip()
        if named:
            return (git_dir / named).resolve()
    return git_dir


def _check_dir(objects: Path, cache_dir: Path | None) -> None:
    checked = _CHECKED.get(str(objects))
    if checked is None:
        checked = _CHECKED[str(objects)] = _read_listed(cache_dir, objects)
    seen: dict[str, tuple[int, int]] = {}
    new = False
    try:
        subdirs = [e for e in os.scandir(objects) if len(e.name) == 2 and _is_hex(e.name)]
    except OSError:
        return  # (libgit2 says what is wrong with the directory itself)
    for sub in subdirs:
        try:
            entries = list(os.scandir(sub.path))
        except OSError:
            continue
        for e in entries:
            if len(e.name) != 38 or not _is_hex(e.name):
                continue  # (git's temp files, tmp_obj_*)
            name = f"{sub.name}/{e.name}"
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            if checked.get(name) != key:
                kind = _not_a_file(e.path)
                if kind:
                    raise _damaged(
                        sub.name + e.name,
                        f"its file {e.path} is a {kind}, not a file (git writes each object "
                        "as a file: the repository is damaged, or was tampered with)",
                    )
                if not _whole(e.path):
                    raise _damaged(
                        sub.name + e.name,
                        f"its file {e.path} ends before its zlib stream does "
                        "(cut short or damaged)",
                    )
                new = True
            seen[name] = key
    if new or len(seen) != len(checked):
        _CHECKED[str(objects)] = seen
        _write_listed(cache_dir, objects, seen)


def _is_hex(text: str) -> bool:
    return _HEX.issuperset(text)


def _damaged(oid: str, detail: str) -> UsageError:
    """A loose object no command may read. It is refused whether or not the command needs
    it: libgit2 would hang on it, and it reads objects of its own accord (a revision walk,
    a tree diff), so which ones a command reads is not known before. The hint says how to
    tell an object nothing needs (a `git add` the disk cut short) and be rid of it."""
    found = missing_object(oid, "a loose object", detail)
    found.hint = (
        "run `git fsck --full`: if it says `missing blob|tree|commit` of this id, a commit "
        "needs it: fetch again, or clone afresh from a good copy; if not, nothing needs "
        "it: delete the file"
    )
    return found


def _not_a_file(path: str) -> str | None:
    """What `path` (followed, as libgit2 follows a link) is when it is not a regular file
    or a directory: opening a fifo waits for a writer, for ever, here and in libgit2 (a
    command hung with the publish lock held); a device may never end. None otherwise (a
    directory, or a path that cannot be looked at, libgit2 says is missing)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "socket" if stat.S_ISSOCK(mode) else "device"


def _whole(path: str) -> bool:
    """Whether the loose object at `path` is a zlib stream that ends (or a file this
    cannot tell of, which libgit2 reads or refuses without hanging: unreadable, or not
    zlib: the format git wrote before 2006)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            if not _zlib_head(head):
                return len(head) >= 2  # (empty or one byte: cut short)
            stream = zlib.decompressobj()
            data = head + f.read(_STEP)
            while data:
                stream.decompress(data, _STEP)
                while stream.unconsumed_tail:
                    stream.decompress(stream.unconsumed_tail, _STEP)
                if stream.eof:
                    return True
                data = f.read(_STEP)
            return stream.eof
    except zlib.error:
        return True  # (damaged, not cut short: libgit2 refuses it with an error)
    except OSError:
        return True


def _zlib_head(head: bytes) -> bool:
    """Whether the first two bytes of a file are a zlib stream's header (RFC 1950)."""
    return len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


def not_zlib(repo: pygit2.Repository, oid: str) -> str | None:
    """The file of the loose object `oid` when it is not a zlib stream (garbage: a
    damaged disk's block, a file copied over it), else None (whole, packed, or not
    here). libgit2 reads the header of such a file as the loose format git wrote before
    2006 and answers a size of whatever its bytes say, hundreds of megabytes: a file
    refused as too large (an inventory error, exit 1) where the repository is damaged."""
    for objects in _object_dirs(repo):
        path = objects / oid[:2] / oid[2:]
        try:
            with open(path, "rb") as f:
                head = f.read(2)
        except OSError:
            continue
        return None if _zlib_head(head) else str(path)
    return None


def _read_listed(cache_dir: Path | None, objects: Path) -> dict[str, tuple[int, int]]:
    if cache_dir is None:
        return {}
    out: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        lines = (cache_dir / LISTED).read_text().splitlines()
        if not lines or lines[0] != str(objects):
            return {}
        for line in lines[1:]:
            name, size, mtime = line.split(" ")
            out[name] = (int(size), int(mtime))
    return out


def _write_listed(cache_dir: Path | None, objects: Path, seen: dict[str, tuple[int, int]]) -> None:
    """Best effort: a cache that cannot be written costs the next process a look."""
    if cache_dir is None or objects != _own(cache_dir):
        return  # (an alternate's objects: listed in its own repository, not here)
    text = "".join(f"{n} {s} {m}\n" for n, (s, m) in sorted(seen.items()))
    tmp = cache_dir / f".{LISTED}.{os.getpid()}.tmp"
    try:
        cache_dir.mkdir(exist_ok=True)
        tmp.write_text(f"{objects}\n{text}")
        os.replace(tmp, cache_dir / LISTED)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _own(cache_dir: Path) -> Path:
    """The object directory of the repository whose gitprov-cache `cache_dir` is."""
    objects = _common_dir(cache_dir.parent) / "objects"
    with contextlib.suppress(OSError):
        return objects.resolve()
    return objects
