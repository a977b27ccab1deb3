"""The publish journal: what was served, and when (`STATE_DIR/journal.jsonl`).

Every publish that changes what the roots serve appends one JSON line: when (UTC), the
commit, its author, committer time and summary, the commit it replaced, and per group of
roots the files added, changed and removed with their sha256 and version. The manifest
says what is served now; the journal says what was served at any moment since, which the
manifest cannot: it is rewritten by every publish. The journal is never rewritten: it is
opened with O_APPEND, each entry is one `write`, and it is fsynced before the publish
returns.

Order of a publish: the roots, then the manifest, then the journal. A crash after the
manifest and before the journal entry leaves the roots and the manifest at the new commit
and the journal one entry behind. The next publish notices (the manifest's commit, and in
a publish that builds also when the manifest was written and, if only that differs, the
sha256 of the served state it records, are not those of the journal's last entry) and
first appends the missing entry, from the difference
between the journal's own replay and that manifest, marked `"recovered": true` and dated
when that manifest was written. A crash in the middle of an append leaves a last line
without its newline: the next append starts on a new line and says so
(`"after_torn_line": true`), and readers skip the torn fragment (its entry is recovered).

Nothing secret goes in: commit ids, names, e-mail addresses, paths, file names, MACs,
versions and sha256 digests only. Text from commits (summary, author) has its control and
format characters escaped (`printable`), so a hostile commit message cannot start a line
of its own in the journal or in a terminal.
"""

from __future__ import annotations

import bisect
import errno
import functools
import hashlib
import json
import mmap
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

import pygit2

from gitprov import statejson
from gitprov.errors import UsageError
from gitprov.plan import (
    BOOTSTRAP_KEY,
    Drift,
    EntryTable,
    Kind,
    Manifest,
    ManifestEntry,
    recorded_sha256,
    sorted_fields,
)
from gitprov.source import author_email, author_name, commit_message, git_time
from gitprov.unsafe import echoed, printable

JOURNAL = "journal.jsonl"
JOURNAL_FORMAT = 1
SUMMARY_MAX = 200  # characters of a commit's first line kept

Clock = Callable[[], datetime]


class JournalError(UsageError):
    """The journal cannot be read: a line gitprov did not write (exit 2)."""


# -- text from commits (shown through gitprov.unsafe.printable) ------------------------


class CommitInfo(NamedTuple):
    """What the journal says of a commit besides its id (all of it `printable`)."""

    commit: str
    author_name: str
    author_email: str
    committed_at: str  # RFC 3339, with the committer's offset
    summary: str  # the first line of the message, at most SUMMARY_MAX characters


Describe = Callable[[str], "CommitInfo | None"]


def commit_info(commit: pygit2.Commit) -> CommitInfo:
    # (in the encoding the commit names, as `log` reads it)
    first = commit_message(commit).split("\n", 1)[0]
    summary = printable(first[:SUMMARY_MAX]) + ("…" if len(first) > SUMMARY_MAX else "")
    when = git_time(commit.commit_time, commit.commit_time_offset)
    return CommitInfo(
        str(commit.id),
        printable(author_name(commit)),
        printable(author_email(commit)),
        when,
        summary,
    )


def describer(repo: pygit2.Repository | None) -> Describe:
    """The CommitInfo of any commit of `repo` by id (None when it is not there)."""

    def describe(commit_id: str) -> CommitInfo | None:
        if repo is None:
            return None
        try:
            found = repo.get(commit_id)
        except (ValueError, KeyError, pygit2.GitError):
            return None
        return commit_info(found) if isinstance(found, pygit2.Commit) else None

    return describe


class Recorder(NamedTuple):
    """What a publish needs to write its journal entry: the commit being published, how
    to describe another (for a recovered entry), and the clock (tests set it)."""

    info: CommitInfo | None = None
    describe: Describe | None = None
    clock: Clock | None = None

    def now(self) -> datetime:
        found = self.clock() if self.clock is not None else datetime.now(UTC)
        if found.tzinfo is None:
            raise ValueError("the journal's clock must give an aware datetime")
        return found.astimezone(UTC)


# -- entries ------------------------------------------------------------------------------
class FileRecord(NamedTuple):
    """One served file as the journal records it (a tuple: a fleet-wide change makes one
    per device, and a frozen dataclass costs five times as much to make)."""

    name: str
    kind: str
    mac: str | None
    version: int | None
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "mac": self.mac,
            "version": self.version,
            "sha256": self.sha256,
        }

    def version_key(self) -> str | None:
        """The key of the manifest's served versions (MAC, or bootstrap/NAME)."""
        if self.kind == Kind.DEVICE and self.mac:
            return self.mac
        if self.kind == Kind.BOOTSTRAP:
            return BOOTSTRAP_KEY + self.name
        return None


def record_of(name: str, e: ManifestEntry) -> FileRecord:
    versioned = e.kind in (Kind.DEVICE, Kind.BOOTSTRAP, Kind.STAGE) and e.version
    return FileRecord(
        name, str(e.kind), e.mac or None, e.version if versioned else None, e.sha256_data
    )


class Change(NamedTuple):
    """What one publish changed in a group of roots (every root of the group alike)."""

    roots: tuple[str, ...]
    added: tuple[FileRecord, ...] = ()
    changed: tuple[FileRecord, ...] = ()
    removed: tuple[FileRecord, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def only(self, keep: Callable[[FileRecord], bool]) -> Change:
        return Change(
            self.roots,
            tuple(r for r in self.added if keep(r)),
            tuple(r for r in self.changed if keep(r)),
            tuple(r for r in self.removed if keep(r)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "roots": list(self.roots),
            "added": [r.as_dict() for r in self.added],
            "changed": [r.as_dict() for r in self.changed],
            "removed": [r.as_dict() for r in self.removed],
        }


@dataclass(frozen=True)
class Entry:
    """One line of the journal."""

    time: datetime  # UTC; never lower than the line before's
    commit: str
    previous: str | None  # the commit served before (None: nothing was)
    recovered: bool  # appended by a later publish: the one that served it was cut short
    info: CommitInfo | None  # None when the publisher did not know the commit
    roots: tuple[str, ...]  # every root of the publish
    changes: tuple[Change, ...]
    versions: Mapping[str, int]  # version key -> its version now, for the keys changed
    failed_roots: Mapping[str, str]  # root -> why it could not be written (it lags)
    repaired: tuple[Drift, ...]  # served files found edited by hand and restored
    state: str  # sha256 of the served state the manifest records after this entry
    manifest_time: str  # that manifest's published_at
    after_torn_line: bool = False  # the line before is a fragment of an interrupted append
    line: int = field(default=0, compare=False)  # in the journal read (1-based)

    @property
    def time_text(self) -> str:
        return rfc3339(self.time)

    def as_dict(self) -> dict[str, Any]:
        info = self.info
        # format, time, commit and state first: a writer reads them from the head of the
        # last line without parsing a fleet's worth of records (`Journal.tail`).
        out: dict[str, Any] = {
            "format": JOURNAL_FORMAT,
            "time": self.time_text,
            "commit": self.commit,
            "state": self.state,
            "manifest_time": self.manifest_time,
            "previous": self.previous,
            "recovered": self.recovered,
            "author": {"name": info.author_name, "email": info.author_email} if info else None,
            "committed_at": info.committed_at if info else None,
            "summary": info.summary if info else None,
            "roots": list(self.roots),
            "changes": [c.as_dict() for c in self.changes],
            "versions": dict(self.versions),
            "failed_roots": dict(self.failed_roots),
            "repaired": [{"root": d.root, "name": d.name, "kind": d.kind} for d in self.repaired],
        }
        if self.after_torn_line:
            out["after_torn_line"] = True
        return out

    def to_line(self) -> bytes:
        # ASCII: JSON escapes every control character and all beyond ASCII, so nothing in
        # an entry can end its line early.
        return statejson.dumps(self.as_dict(), ascii_only=True) + b"\n"


def rfc3339(when: datetime) -> str:
    """UTC with milliseconds and Z, as the fetch log writes it."""
    # (isoformat, not strftime: glibc's %Y writes the year 1 as "1", not "0001")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the served state ---------------------------------------------------------------------
Files = Mapping[str, FileRecord]
State = dict[str, dict[str, FileRecord]]  # root -> name -> record


def state_digest(
    m: Manifest,
    since: Manifest | None = None,
    changed: Set[str] | None = None,
    *,
    keep: bool = True,
) -> str:
    """sha256 of what the manifest says is served: per root whether it holds the
    manifest's commit, and each file's name, sha256 and version. Its stats, inputs and
    notes are left out: rewriting only those serves nothing new.

    `changed`, when known, names the only files whose entries differ between `since`
    and `m`: the lines of `since`'s other files are reused (a line a file, 100,000 at
    100,000 devices, when they were made for it in this process). With `keep`, `m`'s
    lines are kept for the next publish in this process."""
    h = hashlib.sha256(_head(m))
    files = m.files
    # Hashed a slice of lines at a time: the text of a fleet's lines whole, and its
    # bytes, were 22 MB at 100,000 files, at a cold publish's peak of memory.
    if not keep and (changed is None or since is None or since.sha256 not in _LINES):
        # Nothing to start from and nothing to keep: the lines alone, as they are made.
        for text in _line_texts(files):
            h.update(text)
    else:
        lines, step = _file_lines(m, since, changed, keep)[1], _DIGEST_LINES
        for i in range(0, len(lines), step):
            h.update("".join(lines[i : i + step]).encode())
    return h.hexdigest()


# The lines `state_digest` hashes at once: their text a few hundred kB.
_DIGEST_LINES = 4096


def _line_texts(files: Mapping[str, ManifestEntry]) -> Iterator[bytes]:
    """The text of the files' lines in name order, `_DIGEST_LINES` lines a piece."""
    names, (shas, versions) = sorted_fields(files, "sha256_data", "version")
    step = _DIGEST_LINES
    for i in range(0, len(names), step):
        j = i + step
        yield "".join(_lines(names[i:j], shas[i:j], versions[i:j])).encode()


def _head(m: Manifest) -> bytes:
    """What the state digest hashes before the files' lines: the format, the commit and
    per root whether it holds the commit."""
    out = [f"{JOURNAL_FORMAT}\0{m.commit}\n"]
    for root in sorted(m.roots):
        state = m.roots[root]
        held = m.commit if m.converged(root) else f"-{state.commit}"
        out.append(f"{root}\0{held}\n")
    return "".join(out).encode()


# -- the state's lines, kept in the state dir -----------------------------------------------
# A process that publishes once keeps the text of the files' lines it digested beside the
# manifest, for the next one: a publish by change then digests its state from those lines
# with its few changed (at 100,000 files, 11 MB read and hashed twice, about 30 ms, instead
# of 100,000 lines made, 0.1 s). Not fsynced: a file torn or lost fails its check and the
# lines are made again.
STATE_LINES = "state.lines"
_KEPT = re.compile(rb"gitprov state lines 1\0([0-9a-f]{64})\0([0-9a-f]{64})\n")


@dataclass(frozen=True)
class Digested:
    """A state digest, and the text of its files' lines in pieces."""

    digest: str
    lines: list[bytes | memoryview]

    def kept(self, manifest_sha256: str) -> list[bytes | memoryview]:
        """The text of STATE_LINES for these lines, of the manifest whose sha256 is given:
        the digest in its head is their check (the next publish digests that manifest's
        head and them again)."""
        head = f"gitprov state lines 1\0{manifest_sha256}\0{self.digest}\n"
        return [head.encode(), *self.lines]


def state_digest_kept(
    m: Manifest, since: Manifest | None, changed: Set[str] | None, state_dir: Path
) -> Digested:
    """`state_digest(m, since, changed, keep=False)`, made from the lines kept in
    `state_dir` (STATE_LINES) when they are `since`'s and `changed` is known, else from
    nothing; with the text of `m`'s lines, to keep for the next publish."""
    pieces = None
    if since is not None and since.sha256 and changed is not None:
        base = _kept_lines(state_dir / STATE_LINES, since)
        if base is not None:
            pieces = _patched(base, changed, m.files)
    if pieces is None:
        pieces = list(_line_texts(m.files))
    h = hashlib.sha256(_head(m))
    for piece in pieces:
        h.update(piece)
    return Digested(h.hexdigest(), pieces)


def _kept_lines(path: Path, since: Manifest) -> memoryview | None:
    """The text of the lines kept at `path` for `since`, when the file names its sha256
    and is whole (`since`'s head and the text digest to the digest it names); else
    None."""
    try:
        data = statejson.read_state(path)
    except OSError:
        return None
    found = _KEPT.match(data)
    if found is None or found.group(1).decode() != since.sha256:
        return None
    text = memoryview(data)[found.end() :]
    check = hashlib.sha256(_head(since))
    check.update(text)
    if check.hexdigest() != found.group(2).decode():
        return None
    return text


def _patched(
    text: memoryview, changed: Set[str], files: Mapping[str, ManifestEntry]
) -> list[bytes | memoryview] | None:
    """`text` (lines in name order) with the lines of `changed` put in place, added or
    left out as `files` holds them, in pieces; None when a name cannot be a line's."""
    raw = text.obj
    assert isinstance(raw, bytes)
    skip = len(raw) - len(text)  # (where the text starts in the file's bytes)
    out: list[bytes | memoryview] = []
    at = 0
    for name in sorted(changed):
        if "\n" in name or "\0" in name:
            return None
        try:
            key = name.encode()
        except UnicodeEncodeError:
            return None
        start, end = _line_of(raw, skip, key, skip + at)
        out.append(text[at : start - skip])
        e = files.get(name)
        if e is not None:
            out.append(f"{name}\0{e.sha256_data}\0{e.version}\n".encode())
        at = end - skip
    out.append(text[at:])
    return out


def _line_of(data: bytes, first: int, name: bytes, lo: int) -> tuple[int, int]:
    """Where the line of `name` is in `data` (lines from `first` on, in name order; none
    before `lo` is the one), as (start, end): an empty span where it would go when no
    line is `name`'s. By bisection, a line's start found back from the middle."""
    hi = len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        start = max(data.rfind(b"\n", lo, mid) + 1, lo)
        end = data.index(b"\n", start) + 1
        here = data[start : data.index(b"\0", start, end)]
        if here == name:
            return start, end
        if here < name:
            lo = end
        else:
            hi = start
    return lo, lo


# A file's line in the state digest: name, sha256 and version.
_LINE = "{}\0{}\0{}\n"


def _lines(names: Sequence[str], shas: Sequence[str], versions: Sequence[int]) -> list[str]:
    """The lines `_LINE` makes, a fleet's at once: an f-string each, a third of the
    time `_LINE.format` takes."""
    return [f"{n}\0{s}\0{v}\n" for n, s, v in zip(names, shas, versions, strict=True)]


# The sorted names and lines of the files of the last manifests whose state was digested
# (by their sha256): a publish digests the state it writes, the next one starts from it.
_LINES: dict[str, tuple[list[str], list[str]]] = {}


def _file_lines(
    m: Manifest, since: Manifest | None, changed: Set[str] | None, keep: bool
) -> tuple[list[str], list[str]]:
    files = m.files
    base = _LINES.get(since.sha256) if since is not None and since.sha256 else None
    if base is not None and changed is not None:
        names, lines = list(base[0]), list(base[1])
        for n in sorted(changed):
            at = bisect.bisect_left(names, n)
            here = at < len(names) and names[at] == n
            e = files.get(n)
            if e is None:
                if here:
                    del names[at], lines[at]
                continue
            line = f"{n}\0{e.sha256_data}\0{e.version}\n"
            if here:
                lines[at] = line
            else:
                names.insert(at, n)
                lines.insert(at, line)
    else:
        names, (shas, versions) = sorted_fields(files, "sha256_data", "version")
        lines = _lines(names, shas, versions)
    if m.sha256 and keep:
        if len(_LINES) >= 2:
            _LINES.pop(next(iter(_LINES)))
        _LINES[m.sha256] = (names, lines)
    return names, lines


def replay(entries: Iterable[Entry], state: State | None = None) -> State:
    """What each root served after `entries`, in order."""
    out: State = state if state is not None else {}
    for e in entries:
        apply(out, e)
    return out


def apply(state: State, e: Entry) -> None:
    for c in e.changes:
        for root in c.roots:
            files = state.setdefault(root, {})
            for r in c.added:
                files[r.name] = r
            for r in c.changed:
                files[r.name] = r
            for r in c.removed:
                files.pop(r.name, None)
    for root in e.roots:
        state.setdefault(root, {})
    for root in [r for r in state if r not in e.roots]:
        del state[root]  # no longer published there: gitprov does not know what it serves


_NOTHING: Mapping[str, Any] = {}


def _diff(
    roots: Sequence[str],
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    known: tuple[Mapping[str, Any], Mapping[str, Any], Set[str]] | None = None,
) -> tuple[Change, ...]:
    """Per group of roots that changed alike, the files added, changed and removed.
    Values are FileRecords or ManifestEntries (compared by the sha256 of their bytes);
    the same pair of mappings is compared once, however many roots share it (the usual
    case: every root held the previous manifest's files and holds the new ones). `known`
    (old, new, names): in that pair of mappings, only those names can differ."""
    found: dict[tuple[int, int], Files3] = {}
    groups: dict[tuple[int, int], list[str]] = {}
    for root in roots:
        old, new = before.get(root, _NOTHING), after.get(root, _NOTHING)
        if old is new:
            continue
        key = (id(old), id(new))
        if key not in found:
            hint = known[2] if known is not None and old is known[0] and new is known[1] else None
            found[key] = _compare(old, new, hint)
        if any(found[key]):
            groups.setdefault(key, []).append(root)
    merged: list[tuple[Files3, list[str]]] = []
    for key, rs in groups.items():
        same = next((m for m in merged if m[0] == found[key]), None)
        if same is None:
            merged.append((found[key], list(rs)))
        else:
            same[1].extend(rs)
    return tuple(Change(tuple(rs), *changes) for changes, rs in merged)


Files3 = tuple[tuple[FileRecord, ...], tuple[FileRecord, ...], tuple[FileRecord, ...]]


def _compare(
    old: Mapping[str, Any], new: Mapping[str, Any], only: Set[str] | None = None
) -> Files3:
    """One pass over the new files (or the names `only`, when the others are known to
    be the same), records made only for the files that differ: a one-device publish in
    a fleet of 100,000 compares 100,000 digests and makes one."""
    old_sha, new_sha = _sha_by_name(old), _sha_of(new)
    added: list[str] = []
    changed: list[str] = []
    names = new.keys() if only is None else [n for n in only if n in new]
    for name in names:
        was = old_sha(name)
        if was is None:
            added.append(name)
        # A version is in the file's bytes: a new version is a new sha256.
        elif was != new_sha(new[name]):
            changed.append(name)
    removed = [name for name in (old if only is None else only) if name in old and name not in new]
    return (
        tuple(_record(n, new[n]) for n in sorted(added)),
        tuple(_record(n, new[n]) for n in sorted(changed)),
        tuple(_record(n, old[n]) for n in sorted(removed)),
    )


def _sha_of(files: Mapping[str, Any]) -> Callable[[Any], str]:
    """How to read a value's sha256: FileRecords (a replay) or ManifestEntries."""
    if isinstance(files, EntryTable):
        return attrgetter("sha256_data")
    first = next(iter(files.values()), None)
    return attrgetter("sha256" if isinstance(first, FileRecord) else "sha256_data")


def _sha_by_name(files: Mapping[str, Any]) -> Callable[[str], str | None]:
    """A name's sha256 in `files` (None: not there): of an EntryTable, from its one
    column (plan.recorded_sha256: a whole entry would split every column)."""
    if isinstance(files, EntryTable):
        return functools.partial(recorded_sha256, files)
    sha = _sha_of(files)
    return lambda name: None if (value := files.get(name)) is None else sha(value)


def _record(name: str, value: Any) -> FileRecord:
    return value if isinstance(value, FileRecord) else record_of(name, value)


def _versions(changes: Sequence[Change]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in changes:
        for r in (*c.added, *c.changed):
            key = r.version_key()
            if key is not None and r.version is not None:
                out[key] = r.version
    return dict(sorted(out.items()))


def _served(m: Manifest, root: str, fallback: Mapping[str, Any]) -> Mapping[str, Any]:
    """What `root` serves by the manifest: its files when it holds the manifest's commit,
    else what was known before (a root that failed keeps its last files)."""
    return m.files if m.converged(root) else fallback


# -- writing ----------------------------------------------------------------------------
class Journal:
    """One journal file. Appends are made under the publish lock (one writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: Entry) -> Entry:
        """Write `entry` as one line with one `write` (O_APPEND) and fsync it; a torn
        last line (no newline) is ended first, and the entry says so."""
        existed = self.path.exists()
        # (O_NOFOLLOW: an append through a link wrote the entry into whatever file it
        # named, /etc/passwd as well, or made the file a dangling link names)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags, 0o640)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise statejson.NotRegular(
                    errno.ELOOP, "a symbolic link, not the journal", str(self.path)
                ) from exc
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                # (a fifo would take the entry and lose it, or block once full)
                raise statejson.NotRegular(errno.EINVAL, "not a regular file", str(self.path))
            size = st.st_size
            prefix = b""
            if size and os.pread(fd, 1, size - 1) != b"\n":
                entry = replace(entry, after_torn_line=True)
                prefix = b"\n"
            view = memoryview(prefix + entry.to_line())
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if not existed:
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return entry

    def tail(self) -> Tail | None:
        """The time, commit and state of the last complete entry, from the head of its
        line; None when there is none or it is not one gitprov wrote (a writer then
        treats the journal as behind and recovers)."""
        line = _last_line(self.path, _HEAD_MAX)
        found = _HEAD.match(line) if line is not None else None
        if found is None:
            return None
        time = _parse_time(found.group(1).decode())
        if time is None:
            return None
        try:
            manifest_time = json.loads(found.group(4))
        except ValueError:
            return None
        return Tail(time, found.group(2).decode(), found.group(3).decode(), str(manifest_time))

    def entries(self) -> list[Entry]:
        """Every entry a writer can read, skipping what it cannot (see `read_journal` for
        the strict reading)."""
        return [e for e in _read(self.path, strict=False, notes=[])]


def highest_versions(state_dir: Path) -> dict[str, int]:
    """Version key (MAC, or bootstrap/NAME) -> the highest version the journal says was
    ever served under it ({} when there is no journal, or it cannot be read): what a
    publish knows of the versions devices hold when the manifest's record is gone."""
    out: dict[str, int] = {}
    try:
        for e in Journal(state_dir / JOURNAL).entries():
            for key, version in _versions(e.changes).items():
                out[key] = max(version, out.get(key, 0))
    except (OSError, JournalError):
        return {}
    return out


class Tail(NamedTuple):
    time: datetime
    commit: str
    state: str
    manifest_time: str

    def follows(self, m: Manifest) -> bool:
        """Whether this entry is the record of what `m` serves: the same manifest (its
        commit and when it was written), else the same served state (the manifest was
        rewritten since without serving anything new: its stats or inputs)."""
        if self.commit != m.commit:
            return False
        return self.manifest_time == m.published_at or self.state == state_digest(m)


# What `_HEAD` can match, at most (the time, commit and state, and the manifest's date).
_HEAD_MAX = 4096
_HEAD = re.compile(
    rb'\{"format":1,"time":"([0-9T:.Z-]{24})","commit":"([0-9a-f]{40,64})",'
    rb'"state":"([0-9a-f]{64})","manifest_time":("(?:[^"\\]|\\.)*")'
)


def _last_line(path: Path, limit: int | None = None) -> bytes | None:
    """The last newline-terminated line (its first `limit` bytes, when given): what
    follows the last newline is the fragment of an interrupted append, not an entry.
    Found in a map of the file, from its end: a fleet-wide change makes a line of
    megabytes, which a head needs none of."""
    try:
        f = statejson.open_state(path)
    except FileNotFoundError:
        return None
    with f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # (an empty file cannot be mapped)
            return None
        with mapped:
            end = mapped.rfind(b"\n")
            if end < 0:
                return None
            start = mapped.rfind(b"\n", 0, end) + 1
            return mapped[start : end if limit is None else min(end, start + limit)]


def record(
    state_dir: Path,
    previous: Manifest | None,
    manifest: Manifest,
    recorder: Recorder,
    *,
    drift: Sequence[Drift] = (),
    failures: Mapping[str, str] | None = None,
    changed: Set[str] | None = None,
    keep: bool = True,
    state: str | Callable[[], str] | None = None,
) -> tuple[Entry, ...]:
    """After a publish wrote `manifest` (durable), over `previous`: append what it
    changed, first recovering the entry of `previous` when an interrupted publish left
    it out. Call under the publish lock. Returns the entries appended.

    `changed`, when the publish knows it, names the only files whose entries differ
    between `previous` and `manifest` (the others are the same entries): then only
    those are compared. Without `keep`, nothing is kept in memory for a
    next publish (a process that publishes once). `state`, when given, is the
    `state_digest` of `manifest` (made by the caller while it waited for the disk), or
    what makes it (called only when an entry is appended)."""
    journal = Journal(state_dir / JOURNAL)
    appended: list[Entry] = []
    tail = journal.tail()
    replayed: State | None = None
    if previous is not None and (tail is None or not tail.follows(previous)):
        replayed = replay(journal.entries())
        found = _recover(journal, previous, replayed, tail, recorder)
        if found is not None:
            appended.append(found)
            tail = Tail(found.time, found.commit, found.state, found.manifest_time)
            apply(replayed, found)
    if manifest is previous:
        return tuple(appended)
    roots = tuple(manifest.roots)
    before: dict[str, Mapping[str, Any]] = {}
    for root in dict.fromkeys((*roots, *(previous.roots if previous else ()))):
        if previous is not None and previous.converged(root):
            before[root] = previous.files
        else:
            if replayed is None:
                replayed = replay(journal.entries())
            before[root] = replayed.get(root, _NOTHING)
    after = {r: _served(manifest, r, before.get(r, _NOTHING)) for r in roots}
    known = (previous.files, manifest.files, changed) if previous and changed is not None else None
    changes = _diff(roots, before, after, known)
    failed = dict(sorted((failures or {}).items()))
    repaired = tuple(sorted(d for d in drift if d.root not in failed))
    was = previous.commit if previous is not None else tail.commit if tail is not None else None
    if not changes and not repaired and was == manifest.commit and set(roots) == set(before):
        return tuple(appended)
    if state is None:
        state = state_digest(manifest, previous, changed, keep=keep)
    elif not isinstance(state, str):
        state = state()
    now = recorder.now()
    entry = Entry(
        time=max(now, tail.time) if tail is not None else now,
        commit=manifest.commit,
        previous=was,
        recovered=False,
        info=recorder.info if recorder.info and recorder.info.commit == manifest.commit else None,
        roots=roots,
        changes=changes,
        versions=_versions(changes),
        failed_roots=failed,
        repaired=repaired,
        state=state,
        manifest_time=manifest.published_at,
    )
    appended.append(journal.append(entry))
    return tuple(appended)


def catch_up(state_dir: Path, manifest: Manifest, recorder: Recorder) -> Entry | None:
    """For a publish that found `manifest`'s commit already served: append its entry if
    an interrupted publish left it out (its commit is not the journal's last). By commit
    only, so as to cost one read of the journal's last line."""
    journal = Journal(state_dir / JOURNAL)
    tail = journal.tail()
    if tail is not None and tail.commit == manifest.commit:
        return None
    return _recover(journal, manifest, replay(journal.entries()), tail, recorder)


def _recover(
    journal: Journal,
    manifest: Manifest,
    replayed: State,
    tail: Tail | None,
    recorder: Recorder,
) -> Entry | None:
    """Append the entry an interrupted publish of `manifest` left out: the difference
    between the journal's replay and that manifest, dated when the manifest was written."""
    roots = tuple(manifest.roots)
    after = {r: _served(manifest, r, replayed.get(r, _NOTHING)) for r in roots}
    changes = _diff(roots, replayed, after)
    was = tail.commit if tail is not None else None
    if not changes and was == manifest.commit and set(roots) == set(replayed):
        return None
    when = _parse_time(manifest.published_at) or recorder.now()
    info = recorder.describe(manifest.commit) if recorder.describe is not None else None
    if info is None and recorder.info is not None and recorder.info.commit == manifest.commit:
        info = recorder.info
    entry = Entry(
        time=max(when, tail.time) if tail is not None else when,
        commit=manifest.commit,
        previous=was,
        recovered=True,
        info=info,
        roots=roots,
        changes=changes,
        versions=_versions(changes),
        failed_roots={r: s.error for r, s in sorted(manifest.roots.items()) if s.error},
        repaired=(),
        state=state_digest(manifest),
        manifest_time=manifest.published_at,
    )
    return journal.append(entry)


def _parse_time(text: str) -> datetime | None:
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        return None
    return found.astimezone(UTC) if found.tzinfo is not None else found.replace(tzinfo=UTC)


# -- reading ------------------------------------------------------------------------------
class Read(NamedTuple):
    """A journal as read: its entries, and notes for the reader (never errors)."""

    path: Path
    entries: tuple[Entry, ...]
    notes: tuple[str, ...]


def read_journal(state_dir: Path, manifest: Manifest | None = None) -> Read:
    """Every entry of `STATE_DIR/journal.jsonl`, in order. A line that is not an entry
    is a JournalError naming it (file:line), except the fragment an interrupted append
    leaves (skipped, with a note). With `manifest` (the state dir's), a note when the
    journal is behind it."""
    path = state_dir / JOURNAL
    try:
        os.stat(path)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError | NotADirectoryError):
            raise JournalError(
                f"{path}: cannot read the journal: {exc.strerror}",
                hint="give --state-dir the publisher's state dir (publish.state_dir)",
            ) from None
        raise JournalError(
            f"{path}: no journal",
            hint="a publish writes it; is this the publisher's state dir (--state-dir, "
            "or publish.state_dir)? publishes made before gitprov kept a journal are in it "
            "from the next publish on, as one recovered entry",
        ) from None
    notes: list[str] = []
    entries = tuple(_read(path, strict=True, notes=notes))
    if manifest is not None and (not entries or entries[-1].state != state_digest(manifest)):
        notes.append(
            f"the manifest's commit {manifest.commit[:12]} (written {manifest.published_at}) "
            "is not the journal's last entry: a publish was cut short between its manifest "
            "and its journal entry; the next publish appends it, marked recovered"
        )
    return Read(path, entries, tuple(notes))


def _read(path: Path, *, strict: bool, notes: list[str]) -> Iterator[Entry]:
    """The entries of the journal in order. Each line is held until the next is seen: an
    entry marked `after_torn_line` means the line before it is the fragment of an append
    cut short (skipped, even if it happens to parse). Otherwise a line that is not an
    entry is a JournalError when `strict`, and skipped when not."""
    try:
        f = statejson.open_state(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"{path}: cannot read the journal: {exc.strerror}") from None
    held: tuple[int, Entry | str] | None = None  # (line, its entry or why it is none)
    with f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                notes.append(
                    f"{path}:{lineno}: an incomplete last line (an append cut short); "
                    "skipped: the next publish appends its entry, marked recovered"
                )
                break
            found: Entry | str
            try:
                found = _entry(statejson.loads(raw), lineno)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                found = _why(exc)
            if held is not None:
                if isinstance(found, Entry) and found.after_torn_line:
                    notes.append(f"{path}:{held[0]}: the fragment of an append cut short; skipped")
                elif isinstance(held[1], Entry):
                    yield held[1]
                elif strict:
                    _corrupt(path, held[0], held[1])
            held = (lineno, found)
    if held is not None:
        if isinstance(held[1], Entry):
            yield held[1]
        elif strict:
            _corrupt(path, held[0], held[1])


def _why(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        # (a line that opens as UTF-16 would, BOM and all, is read as such and fails so)
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON at column {exc.colno}: {exc.msg}"
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r}"
    return str(exc) or type(exc).__name__


def _corrupt(path: Path, lineno: int, why: str) -> None:
    raise JournalError(
        f"{path}:{lineno}: not a journal entry ({why})",
        hint="gitprov only ever appends whole lines: this one was edited or damaged on "
        f"disk. Restore the journal from a backup (`sed -n {lineno}p {path}` shows the "
        "line); do not delete lines, the journal is the record of what was served",
    )


def _entry(raw: Any, lineno: int) -> Entry:
    if not isinstance(raw, dict):
        raise TypeError("not a JSON object")
    if raw["format"] != JOURNAL_FORMAT:
        raise ValueError(f"format {raw['format']!r}, not {JOURNAL_FORMAT}")
    time = _parse_time(_str(raw["time"]))
    if time is None:
        raise ValueError(f"time {raw['time']!r} is not RFC 3339")
    author = raw["author"]
    info = None
    if author is not None:
        info = CommitInfo(
            _str(raw["commit"]),
            _str(author["name"]),
            _str(author["email"]),
            _str(raw["committed_at"]),
            _str(raw["summary"]),
        )
    return Entry(
        time=time,
        commit=_str(raw["commit"]),
        previous=None if raw["previous"] is None else _str(raw["previous"]),
        recovered=_bool(raw["recovered"]),
        info=info,
        roots=tuple(_str(r) for r in _list(raw["roots"])),
        changes=tuple(_change(c) for c in _list(raw["changes"])),
        versions={_str(k): _int(v) for k, v in _dict(raw["versions"]).items()},
        failed_roots={_str(k): _str(v) for k, v in _dict(raw["failed_roots"]).items()},
        repaired=tuple(
            Drift(_str(d["root"]), _str(d["name"]), _str(d["kind"])) for d in _list(raw["repaired"])
        ),
        state=_str(raw["state"]),
        manifest_time=_str(raw["manifest_time"]),
        after_torn_line=_bool(raw.get("after_torn_line", False)),
        line=lineno,
    )


def _change(raw: Any) -> Change:
    d = _dict(raw)
    return Change(
        tuple(_str(r) for r in _list(d["roots"])),
        tuple(_file(r) for r in _list(d["added"])),
        tuple(_file(r) for r in _list(d["changed"])),
        tuple(_file(r) for r in _list(d["removed"])),
    )


def _file(raw: Any) -> FileRecord:
    d = _dict(raw)
    return FileRecord(
        _str(d["name"]),
        _str(d["kind"]),
        None if d["mac"] is None else _str(d["mac"]),
        None if d["version"] is None else _int(d["version"]),
        _str(d["sha256"]),
    )


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{v!r} is not a string")
    return v


def _int(v: Any) -> int:
    if type(v) is not int:
        raise TypeError(f"{v!r} is not an integer")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{v!r} is not true or false")
    return v


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise TypeError(f"{v!r} is not a list")
    return v


def _dict(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"{v!r} is not an object")
    return v


# -- questions ----------------------------------------------------------------------------
class Live(NamedTuple):
    """What was served at one instant: the last entry at or before it, and per group of
    roots that served the same files, those files."""

    at: datetime
    entry: Entry | None  # None: nothing had been published yet
    served: tuple[tuple[tuple[str, ...], tuple[FileRecord, ...]], ...]


def live_at(entries: Sequence[Entry], at: datetime, mac: str | None = None) -> Live:
    """What the roots served at `at` (aware), by the journal: the state after its last
    entry at or before `at`; with `mac`, only that device's files."""
    state: State = {}
    last: Entry | None = None
    for e in entries:
        if e.time > at:
            break  # times never go down (a writer keeps them so)
        apply(state, e)
        last = e
    groups: dict[tuple[FileRecord, ...], list[str]] = {}
    for root, files in state.items():
        kept = tuple(r for _, r in sorted(files.items()) if mac is None or r.mac == mac)
        groups.setdefault(kept, []).append(root)
    return Live(at, last, tuple((tuple(rs), files) for files, rs in groups.items()))


def changes_of(entries: Sequence[Entry], mac: str) -> list[tuple[Entry, tuple[Change, ...]]]:
    """Every entry that added, changed or removed a file of device `mac`, with just those
    changes."""
    out: list[tuple[Entry, tuple[Change, ...]]] = []
    for e in entries:
        mine = tuple(c for c in (c.only(lambda r: r.mac == mac) for c in e.changes) if not c.empty)
        if mine:
            out.append((e, mine))
    return out


# The forms `parse_instant` takes: a date, or a date and time (minutes at least, a
# fraction of seconds to microseconds), with Z or an offset or neither.
_INSTANT = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?",
    re.ASCII,
)


def parse_instant(text: str) -> datetime:
    """An instant given on the command line: an RFC 3339 / ISO 8601 date or date and
    time; UTC unless it carries an offset (never the local time zone). A date alone is
    its first instant, 00:00 UTC. ValueError says what is accepted."""
    raw = text.strip()
    try:
        # (fromisoformat alone reads far more: a week date, `20260301`, 500 ones)
        if not _INSTANT.fullmatch(raw):
            raise ValueError(raw)
        if len(raw) == 10:
            found = datetime.strptime(raw, "%Y-%m-%d")
        else:
            found = datetime.fromisoformat(raw.replace(" ", "T", 1) if " " in raw else raw)
    except ValueError:
        raise ValueError(
            f"{echoed(text)} is not a date: write 2026-03-01 (00:00 UTC), 2026-03-01T12:00:00Z, "
            "or 2026-03-01T14:00:00+02:00; without an offset, UTC"
        ) from None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


__all__ = [
    "JOURNAL",
    "Change",
    "CommitInfo",
    "Entry",
    "FileRecord",
    "Journal",
    "JournalError",
    "Live",
    "Read",
    "Recorder",
    "catch_up",
    "changes_of",
    "commit_info",
    "describer",
    "live_at",
    "parse_instant",
    "printable",
    "read_journal",
    "record",
]
