"""Read-only views of the inventory: at one commit (pygit2, no checkout) or in the work tree.

Every file comes with its git blob id, so that anything derived from it can be cached by
what it was derived from (docs/design.md, "What things cost").
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple, Protocol

import pygit2

from gitprov import loose, paths
from gitprov.errors import UsageError, missing_object
from gitprov.limits import CEILINGS
from gitprov.unsafe import echoed, printable

DEFAULT_INVENTORY_DIR = "inventory"
# A gitlink (a submodule: a commit of another repository) is listed with its id under
# this prefix: never read (that commit is not here), reported by the inventory (GP005).
GITLINK = "gitlink:"


class FileRef(NamedTuple):
    path: str  # repository-relative, '/'-separated
    oid: str  # git blob id of the content


class TooLarge(Exception):
    """The file holds more than the bytes the reader would take (it was not read)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def within(data: bytes, limit: int | None) -> bytes:
    """`data`, or TooLarge when it holds more than `limit` bytes: what a source that holds
    a file's bytes already says in `read`."""
    if limit is not None and len(data) > limit:
        raise TooLarge(len(data))
    return data


class Source(Protocol):
    """What the pipeline reads: inventory files under one directory."""

    @property
    def label(self) -> str: ...

    @property
    def inventory_dir(self) -> str: ...

    def files(self) -> list[FileRef]: ...

    def read(self, ref: FileRef, limit: int | None = None) -> bytes:
        """The file's bytes; TooLarge, without reading them, when it holds more than
        `limit` (a hostile commit's blob of gigabytes is never in memory)."""
        ...

    def is_link(self, ref: FileRef) -> bool:
        """Whether the file is a symbolic link (its bytes are the link's target text).
        Asked only of a file that failed to read as YAML: an answer may cost a pass
        over its directory."""
        ...


def open_repo(path: str | Path) -> pygit2.Repository:
    _trust_stored_objects()
    # (libgit2 says a loop or a name too long as an OSError without a number)
    paths.kind(path, "the repository")
    found = pygit2.discover_repository(str(path))
    if found is None:
        raise UsageError(
            f"{path}: not a git repository",
            hint="run gitprov inside the inventory repository or pass --repo PATH",
        )
    try:
        repo = pygit2.Repository(found)
    except pygit2.GitError as exc:
        if "not owned by current user" in str(exc):
            raise UsageError(
                f"{found}: the repository belongs to another user, and git does not trust it",
                hint="if you trust it, run as the user gitprov runs as: "
                f"git config --global --add safe.directory {found.rstrip('/')}",
            ) from None
        # (a config or shallow file libgit2 cannot parse, an extension it does not know:
        # said with no hint, the one line an environment error must not lack)
        why = printable(str(exc).removeprefix(f"{found}: "))
        raise UsageError(
            f"{found}: cannot open the repository: {why}",
            hint=f"`git -C {found.rstrip('/')} fsck` says what git makes of it: a damaged "
            "config or shallow file is restored from a good copy (or the repository cloned "
            f"afresh); a format git reads but libgit2 {pygit2.LIBGIT2_VERSION} does not "
            "needs a gitprov built on a newer one",
        ) from None
    _add_quarantine(repo)
    _check_packed_refs(repo, found)
    loose.check(repo, Path(repo.path) / "gitprov-cache")
    return repo


def _check_packed_refs(repo: pygit2.Repository, found: str) -> None:
    """libgit2 says a packed-refs file it cannot parse is corrupt once, at its first
    read, and from then on reads it as empty: what asked first (HEAD's unborn check)
    swallowed the error, and every command said `unknown revision 'HEAD'` or that the
    repository has no commit. Looking up a ref that is not there reads the file first."""
    probe = "refs/gitprov/none"
    try:
        repo.lookup_reference(probe)
    except pygit2.GitError as exc:
        if type(exc) is pygit2.GitError:  # (not NotFoundError: the lookup's usual answer)
            why = printable(str(exc).removeprefix(f"{probe}: "))
            raise UsageError(
                f"{found}: cannot read the repository's references: {why}",
                hint="its packed-refs file is damaged (`git fsck` says so): restore it from "
                "a good copy, or clone afresh",
            ) from None


def _trust_stored_objects() -> None:
    """Read objects without hashing each one again (libgit2's strict hash verification,
    which git itself does not do on reads). An object's name was checked when it came in
    (a commit, or a fetch's index-pack hashes every object it receives), and its bytes are
    zlib streams whose checksums catch a damaged file; `git fsck` is what checks the names
    again. Hashing them on every read is what a fleet's tree costs most: SHA-1 with
    collision detection over a flat directory of 100,000 devices (4.5 MB a tree, two trees
    a diff) is 0.04 s of each publish's tree diff. Process-wide, as libgit2's option is."""
    pygit2.option(pygit2.enums.Option.ENABLE_STRICT_HASH_VERIFICATION, False)


def _add_quarantine(repo: pygit2.Repository) -> None:
    """In a pre-receive hook, the pushed objects are not in the repository yet but in the
    quarantine directory git names in GIT_QUARANTINE_PATH; libgit2 does not read that
    variable, so a hook's `gitprov validate --rev NEW` would not find the pushed commit.
    Only a quarantine inside this repository's own object store is added: the variable
    leaks into every child of the hook, and another repository's objects are not ours."""
    quarantine = os.environ.get("GIT_QUARANTINE_PATH")
    if not quarantine:
        return
    objects = Path(repo.path, "objects").resolve()
    here = paths.usable(quarantine, "GIT_QUARANTINE_PATH")
    if here.is_dir() and here.is_relative_to(objects):
        repo.odb.add_disk_alternate(str(here))


def work_tree_of(path: Path) -> Path | None:
    """The top of the git work tree `path` (a file or a directory, there or to be made)
    is or would be in, resolved; None outside any, or in a bare repository (none).
    UnusablePath when `path` cannot be (a symlink loop, a name too long)."""
    real = paths.usable(path)
    where = path.absolute()
    while not where.is_dir() and where != where.parent:
        where = where.parent
    try:
        found = pygit2.discover_repository(str(where))
        workdir = pygit2.Repository(found).workdir if found is not None else None
    except (pygit2.GitError, OSError, ValueError):
        return None
    if not workdir:
        return None
    tree = Path(workdir).resolve()
    return tree if real.is_relative_to(tree) else None


class BadRevision(UsageError):
    """A name that names no commit here (a typo, a branch not fetched, a tree's id), as
    opposed to one that names what the repository cannot read (damage, a shallow
    clone's edge), whose hint says what to do about the repository."""


def resolve_commit(repo: pygit2.Repository, rev: str) -> pygit2.Commit:
    hint = "pass a branch, tag or commit id that exists in this repository (git log)"
    if repo.head_is_unborn and rev == "HEAD":
        if next(iter(repo.branches.local), None) is None:
            raise UsageError("the repository has no commit yet", hint="commit the inventory first")
        branch = repo.references["HEAD"].target
        branch = branch.removeprefix("refs/heads/") if isinstance(branch, str) else "HEAD"
        raise UsageError(
            f"HEAD is on branch {branch!r}, which has no commit yet (other branches have)",
            hint="commit on it, switch to a branch that has commits, or pass --rev BRANCH",
        )
    # (as an argument is shown back: a hook's 5,000-character one is not a screenful)
    shown = echoed(rev)
    try:
        obj = repo.revparse_single(rev)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        if isinstance(exc, pygit2.InvalidError) or type(exc) is pygit2.GitError:
            # Not a name that is missing (NotFoundError) or that cannot be parsed
            # (InvalidSpecError, AmbiguousError): something on the way it cannot read. A
            # commit git took in without a check (`hash-object --literally`, a fetch
            # without fsck), an object file that does not inflate, a ref file of garbage,
            # a symbolic ref that names itself: damage, not a typo.
            why = printable(str(exc).removeprefix(f"{rev}: "))
            raise UsageError(
                f"cannot read revision {shown}: {why}",
                hint="a reference or an object in the repository is corrupt: `git fsck` names it",
            ) from exc
        named = _named_by_ref(repo, rev)
        if named is not None and named not in repo:
            # (a branch or tag that names an object the store lacks: damage, not a typo)
            raise missing_object(str(named), f"the commit {shown} names") from exc
        broken = _broken_step(repo, rev, shown)
        if broken is not None:
            raise broken from exc
        raise BadRevision(f"unknown revision {shown}", hint=_near(repo, rev) or hint) from exc
    try:
        commit = obj.peel(pygit2.Commit)
    except (ValueError, pygit2.GitError, pygit2.InvalidSpecError) as exc:
        if _on_a_branch(repo, rev):
            # git writes only a commit to a branch (HEAD is on one): anything else there
            # is an object file replaced, or a ref file written by hand, not a bad name.
            what = f"the commit {shown} names"
            raise missing_object(str(obj.id), what, f"a {obj.type_str}, not a commit") from exc
        raise BadRevision(f"{shown} names a {obj.type_str}, not a commit", hint=hint) from exc
    if not isinstance(commit, pygit2.Commit):
        raise BadRevision(f"{shown} is not a commit", hint=hint)
    return commit


# A revision that walks back from a commit: BASE~N, BASE^N, and chains of them.
_STEPS = re.compile(r"(.+?)((?:[~^][0-9]*)+)")
_STEP = re.compile(r"([~^])([0-9]*)")


def _broken_step(repo: pygit2.Repository, rev: str, shown: str) -> UsageError | None:
    """Why `rev` (HEAD~1, main^2~3) is not found when its base is: a commit on the way
    that the store lacks (damage), or the end of a shallow clone's history. libgit2 says
    only "not found", and `unknown revision 'HEAD~1'` sent the user looking for a typo.
    None when the walk runs out of parents where the history really ends."""
    found = _STEPS.fullmatch(rev)
    if found is None:
        return None
    base = found.group(1)
    what = f"the commit {echoed(base)} names, on the way to {shown}"
    try:
        obj = repo.revparse_single(base)
    except (KeyError, ValueError, pygit2.GitError):
        named = _named_by_ref(repo, base)
        return missing_object(str(named), what) if named and named not in repo else None
    try:
        at = obj.peel(pygit2.Commit)
    except (ValueError, pygit2.GitError):
        # (a branch naming no commit: damage, as resolve_commit says of the branch itself)
        if _on_a_branch(repo, base):
            return missing_object(str(obj.id), what, f"a {obj.type_str}, not a commit")
        return None
    for op, count in _STEP.findall(found.group(2)):
        n = int(count) if count else 1
        # (~N: N first parents; ^N: the Nth parent, ^0 the commit itself)
        for index in (0 for _ in range(n)) if op == "~" else [n - 1] if n else []:
            parents = at.parent_ids
            if index >= len(parents):
                if parents or not repo.is_shallow:
                    return None
                return UsageError(
                    f"unknown revision {shown}: the history of this shallow clone ends at "
                    f"commit {str(at.id)[:12]}",
                    hint="fetch the whole history: `git fetch --unshallow`",
                )
            parent = parents[index]
            what = f"a parent of commit {str(at.id)[:12]}, on the way to {shown}"
            try:
                obj = repo[parent]
            except KeyError:
                return missing_object(str(parent), what)
            except (ValueError, pygit2.GitError) as exc:
                return missing_object(str(parent), what, exc)
            if not isinstance(obj, pygit2.Commit):
                return missing_object(str(parent), what, f"a {obj.type_str}, not a commit")
            at = obj
    return None


def _named_by_ref(repo: pygit2.Repository, rev: str) -> pygit2.Oid | None:
    """The object the reference `rev` (HEAD, a branch, a tag) names, found or not."""
    try:
        ref = repo.lookup_reference_dwim(rev).resolve()
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        return None
    target = ref.target
    return target if isinstance(target, pygit2.Oid) else None


def _on_a_branch(repo: pygit2.Repository, rev: str) -> bool:
    """Whether `rev` is a branch, or HEAD on one (not a tag: a tag may name a tree)."""
    try:
        return repo.lookup_reference_dwim(rev).resolve().name.startswith("refs/heads/")
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        return False


def _near(repo: pygit2.Repository, rev: str) -> str | None:
    """A hint naming the branch or tag `rev` comes closest to (a typo: `mian`), or None."""
    import difflib  # (an error's path only)

    try:
        names = [
            *repo.branches.local,
            *(r[len("refs/tags/") :] for r in repo.references if r.startswith("refs/tags/")),
        ]
    except pygit2.GitError:
        return None
    close = difflib.get_close_matches(rev, names, n=1, cutoff=0.75)
    if not close:
        return None
    return f"did you mean {close[0]!r}? (a branch, tag or commit id that exists: git log)"


_BLOB_MODES = (
    pygit2.GIT_FILEMODE_BLOB,
    pygit2.GIT_FILEMODE_BLOB_EXECUTABLE,
    pygit2.GIT_FILEMODE_LINK,
)
_GITLINK_MODE = pygit2.GIT_FILEMODE_COMMIT
# Only which files differ is asked, never their text: libgit2 need not read a changed
# blob to tell whether it is binary (a tenth of a history's tree diffs).
_DIFF_FLAGS = pygit2.enums.DiffOption.SKIP_BINARY_CHECK


# Path -> blob id (None: gone) of each inventory file that differs between two commits.
Changes = dict[str, str | None]


def tree_changes(old: pygit2.Tree, new: pygit2.Tree, inventory_dir: str) -> Changes:
    """Path -> blob id (None: gone) of every file under `inventory_dir` that differs
    between the two trees, and of a link, file or submodule in the directory's place (as
    CommitSource.files lists it). When both have the inventory directory, only it is
    compared (and not at all when its tree is the same: a commit outside the inventory)."""
    inv = inventory_dir.strip("/")
    prefix = inv + "/" if inv else ""
    itself = inv or None
    here, there = _subtree(old, inv), _subtree(new, inv)
    if here is not None and there is not None:
        if here.id == there.id:
            return {}
        diff, base = here.diff_to_tree(there, flags=_DIFF_FLAGS), prefix
    else:
        diff, base = old.diff_to_tree(new, flags=_DIFF_FLAGS), ""
    out: Changes = {}
    for delta in diff.deltas:
        gone, now = delta.old_file, delta.new_file
        if gone.mode in _BLOB_MODES or gone.mode == _GITLINK_MODE:
            path = base + gone.path
            if path.startswith(prefix) or path == itself:
                out.setdefault(path, None)
        if now.mode in _BLOB_MODES or now.mode == _GITLINK_MODE:
            path = base + now.path
            if path.startswith(prefix) or path == itself:
                # (a gitlink as CommitSource.files lists it)
                out[path] = (GITLINK if now.mode == _GITLINK_MODE else "") + str(now.id)
    return out


def _subtree(tree: pygit2.Tree, path: str) -> pygit2.Tree | None:
    """The tree at `path` ("" is `tree` itself), None when there is none."""
    if not path:
        return tree
    try:
        found = tree[path]
    except KeyError:
        return None
    return found if isinstance(found, pygit2.Tree) else None


class CommitSource:
    """The inventory as it is in one commit's tree."""

    def __init__(
        self,
        repo: pygit2.Repository,
        commit: pygit2.Commit,
        inventory_dir: str = DEFAULT_INVENTORY_DIR,
    ) -> None:
        self.repo = repo
        self.commit = commit
        self._dir = inventory_dir.strip("/")
        self._links: dict[str, frozenset[str]] = {}

    @property
    def label(self) -> str:
        return str(self.commit.id)[:12]

    @property
    def inventory_dir(self) -> str:
        return self._dir

    def files(self) -> list[FileRef]:
        try:
            root = self.commit.tree
        except pygit2.GitError as exc:
            what = f"the tree of commit {str(self.commit.id)[:12]}"
            raise missing_object(str(self.commit.tree_id), what, exc) from None
        try:
            entry = root[self._dir] if self._dir else root
        except KeyError:
            return []
        if self._dir and entry.type_str != "tree":
            # A link, a file or a submodule where the directory belongs: listed as itself,
            # for validation to say what it is (GP010) rather than that nothing is there.
            gitlink = entry.filemode == pygit2.GIT_FILEMODE_COMMIT
            return [FileRef(self._dir, (GITLINK if gitlink else "") + str(entry.id))]
        tree = read_tree(self.repo, entry.id, self._dir or "/")
        return sorted(_walk(self.repo, tree, self._dir), key=lambda r: r.path)

    def read(self, ref: FileRef, limit: int | None = None) -> bytes:
        if limit is not None:
            try:
                size = self.repo.odb.read_header(ref.oid)[1]  # (the blob is not inflated)
            except (KeyError, ValueError, pygit2.GitError):
                size = 0  # missing: read_object says so
            if size > limit:
                damaged = loose.not_zlib(self.repo, ref.oid)
                if damaged is not None:
                    what = f"its file {damaged} is not a zlib stream (damaged)"
                    raise missing_object(ref.oid, ref.path, what)
                raise TooLarge(size)
        blob = read_object(self.repo, ref.oid, ref.path)
        if not isinstance(blob, pygit2.Blob):
            raise missing_object(ref.oid, ref.path, f"a {blob.type_str}, not a file")
        data = bytes(blob.data)
        # Objects are read without hashing them again (see `_trust_stored_objects`): a
        # loose object whose header says more bytes than it holds reads padded with
        # NULs, which validation then blamed on the file's text (GP001, exit 1). A NUL
        # is in no inventory file anyone wrote, so only such bytes are hashed.
        if b"\0" in data and str(pygit2.hash(data)) != ref.oid:
            raise missing_object(
                ref.oid, ref.path, "its bytes are not the ones its name was made from (damaged)"
            )
        return data

    def is_link(self, ref: FileRef) -> bool:
        # One pass over the file's directory, kept: a lookup by path walks a tree of
        # 100,000 entries each time, and a broken commit may hold as many links.
        folder, _, name = ref.path.rpartition("/")
        links = self._links.get(folder)
        if links is None:
            try:
                tree = self.commit.tree[folder] if folder else self.commit.tree
                entries = read_object(self.repo, tree.id, f"the tree {folder or '/'}")
            except KeyError:
                entries = None
            links = frozenset(
                str(e.name)
                for e in (entries if isinstance(entries, pygit2.Tree) else ())
                if e.filemode == pygit2.GIT_FILEMODE_LINK
            )
            self._links[folder] = links
        return name in links


def commit_message(commit: pygit2.Commit) -> str:
    """The commit's message as text whatever its bytes: in the encoding its header
    names when Python knows it, else UTF-8, a byte neither reads replaced. pygit2's
    `message` raises on an encoding it does not know and on bytes that are not that
    encoding, both of which a fetch takes in without a check."""
    return _text(commit.raw_message, commit.message_encoding)


def author_name(commit: pygit2.Commit) -> str:
    """The commit author's name as text, as `commit_message` reads the message."""
    return _text(commit.author.raw_name, commit.message_encoding)


def author_email(commit: pygit2.Commit) -> str:
    return _text(commit.author.raw_email, commit.message_encoding)


def git_time(seconds: int, offset_minutes: int = 0) -> str:
    """A git time (seconds since the epoch, its zone's offset in minutes) in RFC 3339.
    Git takes any number; one that no date of Python's holds (past the year 9999, before
    the year 1, an offset of a day or more) is written as git writes it: `@SECONDS +HHMM`."""
    try:
        zone = timezone(timedelta(minutes=offset_minutes))
        return datetime.fromtimestamp(seconds, zone).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        m = abs(offset_minutes)
        return f"@{seconds} {'-' if offset_minutes < 0 else '+'}{m // 60:02}{m % 60:02}"


def _text(raw: bytes, encoding: str | None) -> str:
    if encoding:
        try:
            return raw.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            pass
    return raw.decode("utf-8", "replace")


def read_object(repo: pygit2.Repository, oid: str | pygit2.Oid, what: str) -> pygit2.Object:
    try:
        obj = repo.get(oid)
    except pygit2.GitError as exc:
        raise missing_object(str(oid), what, exc) from None
    if obj is None:
        raise missing_object(str(oid), what)
    return obj


def read_tree(repo: pygit2.Repository, oid: str | pygit2.Oid, path: str) -> pygit2.Tree:
    """The tree a tree entry names at `path`. An object of another type under that id is
    damage (an object file replaced: libgit2 does not hash what it reads, see
    _trust_stored_objects), and refused: skipped, it was a directory with nothing in it,
    and a commit whose devices/ reads so would publish an empty fleet, exit 0."""
    tree = read_object(repo, oid, f"the tree {path}")
    if not isinstance(tree, pygit2.Tree):
        raise missing_object(str(oid), f"the tree {path}", f"a {tree.type_str}, not a tree")
    return tree


def _walk(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str) -> Iterator[FileRef]:
    # A stack, not recursion: a commit may nest directories thousands deep.
    stack = [(tree, prefix)]
    while stack:
        tree, prefix = stack.pop()
        for entry in tree:
            path = f"{prefix}/{entry.name}" if prefix else str(entry.name)
            if entry.type_str == "tree":
                stack.append((read_tree(repo, entry.id, path), path))
            elif entry.type_str == "blob":
                yield FileRef(path, str(entry.id))
            elif entry.filemode == pygit2.GIT_FILEMODE_COMMIT:
                yield FileRef(path, GITLINK + str(entry.id))


def _worktree_files(base: Path) -> list[Path]:
    """The files under `base` as git would commit them (a link to a directory is listed,
    as the link git stores, and not walked; dot-directories are skipped), sorted by
    path: a stack, not os.walk's recursion, which a directory nested a thousand deep
    exhausts."""
    found: list[Path] = []
    stack = [base]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError:
            continue  # (as os.walk: gone, or not a directory this process may list)
        for entry in listed:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir or entry.is_symlink():
                # (a link to a directory is a link, as git commits it: not walked)
                found.append(Path(entry.path))
            elif not entry.name.startswith("."):
                stack.append(Path(entry.path))
    return sorted(found)


class WorktreeSource:
    """The inventory as it is on disk now, for editing before a commit (`--worktree`)."""

    def __init__(self, top: Path, inventory_dir: str = DEFAULT_INVENTORY_DIR) -> None:
        self.top = top
        self._dir = inventory_dir.strip("/")
        self._cache: dict[str, bytes] = {}

    @property
    def label(self) -> str:
        return "worktree"

    @property
    def inventory_dir(self) -> str:
        return self._dir

    def files(self) -> list[FileRef]:
        refs: list[FileRef] = []
        if self._dir and (self.top / self._dir).is_symlink():
            # What git commits is the link, which the commit's read does not follow: the
            # work tree says so too (GP010), not pass where CI then fails.
            target = os.readlink(self.top / self._dir).encode("utf-8", "surrogateescape")
            return [FileRef(self._dir, str(pygit2.hash(target)))]
        base = self.top / self._dir
        # (a file in the directory's place: listed as itself, as a commit lists it)
        for full in [base] if self._dir and base.is_file() else _worktree_files(base):
            rel = full.relative_to(self.top).as_posix()
            size = _regular_size(full)
            if size > CEILINGS.document_bytes:
                # Past what any fleet may allow: named by its size, never read.
                refs.append(FileRef(rel, f"{_LARGE}{size}"))
                continue
            data = _worktree_bytes(full, rel)
            oid = str(pygit2.hash(data))
            self._cache[oid] = data
            refs.append(FileRef(rel, oid))
        return sorted(refs, key=lambda r: r.path)

    def read(self, ref: FileRef, limit: int | None = None) -> bytes:
        if ref.oid.startswith(_LARGE):
            raise TooLarge(int(ref.oid.removeprefix(_LARGE)))
        data = self._cache.get(ref.oid)
        if data is None:
            data = _worktree_bytes(self.top / ref.path, ref.path)
        return within(data, limit)

    def is_link(self, ref: FileRef) -> bool:
        return (self.top / ref.path).is_symlink()


# The id of a work-tree file too large to read (see WorktreeSource.files): this + its size.
_LARGE = "large:"


def _regular_size(path: Path) -> int:
    """A regular file's size; 0 for anything else (read, or refused, as git would)."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _worktree_bytes(path: Path, rel: str) -> bytes:
    """A work-tree file as git would commit it: a regular file's bytes, a symbolic link's
    target text (git stores the link, not what it points to: a link to /dev/zero or to a
    file outside the repository must not be read). Anything else (a fifo, a socket, a
    device) git cannot commit, and reading it could block forever: a usage error."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            return os.fsencode(os.readlink(path))
        if stat.S_ISREG(st.st_mode):
            with path.open("rb") as f:
                return f.read()
    except OSError as exc:
        raise UsageError(f"{rel}: cannot read it: {exc.strerror}") from None
    kinds = {stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFDIR: "directory"}
    kind = kinds.get(stat.S_IFMT(st.st_mode), "device")
    raise UsageError(
        f"{rel} is a {kind}, not a file: git cannot commit it, and gitprov does not read it",
        hint="remove it from the inventory directory",
    )
