"""Publish each new commit of a branch, unattended: inotify or polling as a hint, git as
the truth, the served roots kept equal to the last good commit.

- A local repository (typically a bare one that receives pushes): events under refs/ and
  on packed-refs only wake the loop; after a short debounce the branch is re-resolved with
  pygit2 and compared with the last commit handled. A `git gc` that deletes a loose ref is
  therefore not a branch deletion, a burst of pushes publishes only the newest head, and
  without inotify the loop still polls every `interval` seconds.
- A remote (`RemoteBranch`): the branch is fetched with pygit2 into a local bare mirror
  every `interval` seconds.
- A commit that fails validation is reported with its locations and skipped; the last good
  files keep being served; the next good commit publishes. A publish that could not write
  (full disk, a root gone) is retried every `retry` seconds.
- A valid commit the operator's guards refuse (not signed by an allowed key, removing more
  devices than publish.max_removal, moving the roots) is reported as refused and not
  retried; the last good files stay, and the next head is judged against them again.
- Every `reconcile` seconds (and once at start, which also repairs a crash mid-publish) the
  roots are compared with the manifest, by each file's size, mtime and inode (`verify`:
  by reading it); a file changed, deleted or touched by hand is restored and reported as
  drift.

`Watcher` is the loop; it takes a `BranchSource` and a `Publisher` and reports each
`Outcome` to observers (the CLI's printer, the status file, the JSON log, the metrics).
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pygit2
from pygit2.enums import FetchPrune

from gitprov import loose
from gitprov.errors import GitprovError, InvalidInventory, Problem, UsageError
from gitprov.pipeline import Pipeline
from gitprov.plan import Drift
from gitprov.publish import Guards, PublishError, Targets, TargetsFor, inspect, publish_commit
from gitprov.unsafe import echoed, printable

log = logging.getLogger("gitprov.watch")

Head = tuple[pygit2.Repository, pygit2.Commit]


@dataclass(frozen=True)
class WatchOptions:
    branch: str = "main"
    interval: float = 2.0  # polling period; also the fallback when inotify is missing
    debounce: float = 0.1
    inotify: bool = True
    reconcile: float = 300.0  # compare the roots with the manifest this often
    retry: float = 30.0  # retry a publish that failed to write after this long


def check_branch(name: str) -> str:
    """The branch a --branch names, by its short name (`refs/heads/main` is main); a
    UsageError for one that names no branch git could have: it polled and failed for ever
    (`main..x`, `''`, `HEAD`, `refs/tags/v1`: "no branch … waiting for it"), crashed
    past a length (exit 3), fetched every branch (`*`) or put lines into the log (a
    newline)."""
    full = name.removeprefix("refs/heads/")
    if full != name and full:
        name = full
    elif name == "HEAD" or name.startswith("refs/"):
        # (git makes no branch by either name: `git branch HEAD` is refused, and one
        # named refs/… would be found as refs/heads/refs/…, which nobody means)
        raise UsageError(
            f"--branch {echoed(name, 80)} is not a branch's name but a ref's",
            hint="give the branch's short name as `git branch` lists it, e.g. --branch main "
            "(refs/heads/main is taken as main)",
        )
    valid = False
    if name and len(name) <= 255 and name.isprintable():
        try:
            valid = pygit2.reference_is_valid_name(f"refs/heads/{name}")
        except (ValueError, pygit2.GitError):
            valid = False
    if not valid or any(c in name for c in "*?[\\"):
        raise UsageError(
            f"--branch {echoed(name, 80)} is not a branch name",
            hint="give the branch to follow as git names it, e.g. --branch main",
        )
    return name


# Per repository, the branch head whose loose objects were looked at last.
_LOOKED_AT: dict[str, str] = {}


def resolve_branch(repo_path: Path, branch: str) -> Head | None:
    # A fresh Repository each time: libgit2 caches packed-refs, and pushes happen in
    # another process.
    repo = pygit2.Repository(str(repo_path))
    ref = repo.references.get(f"refs/heads/{branch}")
    if ref is None:
        return None
    target = ref.resolve().target
    # A push or a fetch leaves loose objects, and one cut short would hang the watcher:
    # looked at when the branch moves (not at every poll: a listing of every loose object
    # of the repository), before its commit is read.
    if _LOOKED_AT.get(str(repo_path)) != str(target):
        loose.check(repo, Path(repo.path) / "gitprov-cache")
        _LOOKED_AT[str(repo_path)] = str(target)
    commit = repo.get(target)
    return (repo, commit) if isinstance(commit, pygit2.Commit) else None


# -- where new commits come from ----------------------------------------------------------
class BranchSource(Protocol):
    @property
    def label(self) -> str:
        """The branch and where it is, for messages ("main of /srv/inventory.git")."""

    def head(self) -> Head | None:
        """The branch's current commit (a remote source fetches first)."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Return after `timeout`, when `stop` is set, or earlier on a hint."""

    def close(self) -> None: ...


def _is_ref_event(event: Any) -> bool:
    kind = getattr(event, "event_type", "")
    if kind in ("opened", "closed_no_write"):
        return False  # git reads refs constantly; only writes matter
    for path in (getattr(event, "src_path", ""), getattr(event, "dest_path", "") or ""):
        text = path.decode() if isinstance(path, bytes) else str(path)
        if "/refs/" in text or text.endswith(("/refs", "packed-refs")):
            return True
    return False


class LocalBranch:
    """A branch of a repository on this machine, woken by inotify on refs/ and
    packed-refs (a hint only: the branch is always re-resolved)."""

    def __init__(
        self, repo_path: Path, branch: str, *, inotify: bool = True, debounce: float = 0.1
    ) -> None:
        self.repo_path = repo_path
        self.branch = branch
        self.debounce = debounce
        self.hint = threading.Event()
        self._observer: Any = None
        if inotify:
            self._observer = self._start_observer(Path(pygit2.Repository(str(repo_path)).path))

    @property
    def label(self) -> str:
        return f"{self.branch} of {self.repo_path}"

    def _start_observer(self, git_dir: Path) -> Any:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        hint = self.hint

        class _OnRefs(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if _is_ref_event(event):
                    hint.set()

        try:
            observer = Observer()
            # packed-refs sits in the git dir itself; loose refs below refs/.
            observer.schedule(_OnRefs(), str(git_dir), recursive=False)
            (git_dir / "refs").mkdir(exist_ok=True)
            observer.schedule(_OnRefs(), str(git_dir / "refs"), recursive=True)
            observer.start()
        except OSError as exc:
            log.warning("inotify unavailable (%s); polling only", exc)
            return None
        return observer

    def head(self) -> Head | None:
        return resolve_branch(self.repo_path, self.branch)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.hint.wait(min(remaining, 0.25)):
                # A push writes several refs (and a gc many): let the burst settle.
                stop.wait(self.debounce)
                self.hint.clear()
                return

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None


# Set in the config of a mirror gitprov made: the one kind of repository a fetch of
# `+refs/heads/B:refs/heads/B` may overwrite the branches of.
MIRROR_KEY = "gitprov.mirror"


def _mirror(path: Path, url: str) -> pygit2.Repository:
    """The bare mirror at `path`: made there when nothing is (or an empty directory),
    else one gitprov made, or a bare repository whose origin is `url` already (a mirror
    of an older gitprov). Anything else is refused before anything is written: a clone
    with its work tree, a directory of other files, another bare repository, whose
    branches the fetch would overwrite (a UsageError naming it)."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        path.mkdir(parents=True, exist_ok=True)
        repo = pygit2.init_repository(str(path), bare=True)
        repo.config[MIRROR_KEY] = "true"
        return repo
    hint = (
        "give --repo a new path (or an empty directory): gitprov makes its own bare mirror "
        "there and fetches into it; it never fetches into a repository of yours"
    )
    try:
        repo = pygit2.Repository(str(path), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, KeyError, ValueError):
        raise UsageError(
            f"--repo {path} is not a repository, and not empty: a mirror there would mix "
            "git's files with those in it",
            hint=hint,
        ) from None
    if not repo.is_bare:
        raise UsageError(
            f"--repo {path} is a clone with a work tree: fetching into it would move its "
            "checked-out branch from under its work, and its own commits with it",
            hint=hint,
        )
    origin = repo.remotes["origin"].url if "origin" in repo.remotes.names() else None
    if not _is_mirror(repo) and origin != url:
        raise UsageError(
            f"--repo {path} is a bare repository gitprov did not make (its origin is "
            f"{origin or 'unset'}): fetching {url} into it would overwrite its branches",
            hint=hint,
        )
    if not _is_mirror(repo):
        repo.config[MIRROR_KEY] = "true"  # (a mirror of this URL that an older gitprov made)
    return repo


def _is_mirror(repo: pygit2.Repository) -> bool:
    try:
        return repo.config.get_bool(MIRROR_KEY)
    except (KeyError, pygit2.GitError, ValueError):
        return False


def _local_path(url: str) -> bool:
    """Whether a remote URL names a local path (not scheme://, not scp's host:path)."""
    if "://" in url:
        return False
    head = url.split("/", 1)[0]
    return ":" not in head


# How long a fetch waits to connect, and then for each read or write, before it fails.
# libgit2 waits for ever by default: a remote that accepted the connection and said
# nothing (a stuck server, a black-holed route) held the watcher in its fetch for good,
# reconciling nothing and reporting nothing while its status still read as fine.
FETCH_IDLE_SECONDS = 60.0  # (watch --remote's help names it)
# What a failed fetch's message keeps of the reason libgit2 gives.
FETCH_ERROR_CHARS = 1000


class RemoteBranch:
    """A branch of a remote repository, fetched with pygit2 into a local bare mirror;
    a fetch fails when the remote is silent for `idle` seconds."""

    def __init__(
        self, mirror: Path, url: str, branch: str, *, idle: float = FETCH_IDLE_SECONDS
    ) -> None:
        self.mirror = mirror
        self.url = url
        self.branch = branch
        self.idle = idle
        try:
            repo = _mirror(mirror, url)
            if "origin" in repo.remotes.names():
                if repo.remotes["origin"].url != url:
                    repo.remotes.set_url("origin", url)
            else:
                repo.remotes.create("origin", url)
        except (pygit2.GitError, OSError) as exc:
            raise GitprovError(
                f"cannot prepare the mirror {mirror} for {url}: {exc}",
                hint="pass --repo PATH: a bare repository gitprov may write, or a new path",
            ) from exc

    @property
    def label(self) -> str:
        return f"{self.branch} of {self.url} (mirror {self.mirror})"

    def fetch(self) -> None:
        repo = pygit2.Repository(str(self.mirror))
        spec = f"+refs/heads/{self.branch}:refs/heads/{self.branch}"
        # (libgit2's settings are the process's: this fetch is the only one gitprov makes)
        millis = max(1, round(self.idle * 1000))
        pygit2.settings.server_connect_timeout = millis
        pygit2.settings.server_timeout = millis
        try:
            # Pruned: a branch deleted on the remote goes from the mirror too, and the
            # watcher says so (see Watcher._head) instead of serving on in silence.
            repo.remotes["origin"].fetch([spec], prune=FetchPrune.PRUNE)
        except (pygit2.GitError, KeyError, ValueError) as exc:
            # The remote's own words ("remote error: …", a pkt-line of up to 64 KiB): an
            # ESC or a newline in them rewrote the operator's terminal or forged lines
            # of the watcher's log.
            why = printable(str(exc))
            if len(why) > FETCH_ERROR_CHARS:
                why = why[:FETCH_ERROR_CHARS] + "…"
            if _local_path(self.url) and not os.path.exists(self.url):
                # (libgit2 says "unsupported URL protocol" of a path that is not there)
                why = "no such directory (a local path: is the repository gone or moved?)"
            elif _local_path(self.url) and not os.path.isdir(self.url):
                # (and of a file, a FIFO or a socket there)
                why = "not a directory (a local path: a repository is a directory)"
            raise GitprovError(
                f"fetch of {self.branch} from {self.url} failed: {why}",
                hint="check the URL and the network; the last good files stay",
            ) from exc

    def resolve(self) -> Head | None:
        return resolve_branch(self.mirror, self.branch)

    def head(self) -> Head | None:
        self.fetch()
        return self.resolve()

    def wait(self, timeout: float, stop: threading.Event) -> None:
        stop.wait(timeout)

    def close(self) -> None:
        pass


# -- what happened ------------------------------------------------------------------------
class Kind(enum.StrEnum):
    PUBLISHED = "published"  # new files are served in every root
    UNCHANGED = "unchanged"  # the commit was already published; nothing written
    PARTIAL = "partial"  # some roots are published, others failed and will be retried
    REPAIRED = "repaired"  # reconcile restored drift or a lagging root
    CLEAN = "clean"  # reconcile found the roots equal to the manifest
    INVALID = "invalid"  # the commit fails validation: skipped, the last good files stay
    FAILED = "failed"  # could not write (disk, permissions): retried
    REFUSED = "refused"  # will not publish this commit (not a descendant, unsigned, a guard…)
    FETCH_FAILED = "fetch-failed"  # the remote could not be fetched: retried next poll


# The outcomes after which the roots serve the commit published (in part: PARTIAL).
SERVED = frozenset({Kind.PUBLISHED, Kind.UNCHANGED, Kind.PARTIAL, Kind.REPAIRED})


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    commit: str  # "" when there is none
    message: str
    at: float = field(default_factory=time.time)  # wall clock, when it ended
    trigger: str = "push"  # "push", "retry", "reconcile" or "fallback"
    duration: float = 0.0
    problems: tuple[Problem, ...] = ()
    files_written: int = 0
    files_removed: int = 0
    devices_changed: int = 0
    drift: tuple[Drift, ...] = ()  # found and restored
    failed_roots: tuple[tuple[str, str], ...] = ()  # (root, why)
    unknown: tuple[tuple[str, str], ...] = ()  # (root, name) gitprov did not write
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.kind in (Kind.PUBLISHED, Kind.UNCHANGED, Kind.REPAIRED, Kind.CLEAN)

    @property
    def retry(self) -> bool:
        return self.kind in (Kind.FAILED, Kind.PARTIAL)


Observer = Callable[[Outcome], None]


class Publisher(Protocol):
    def publish(self, repo: pygit2.Repository, commit: pygit2.Commit, trigger: str) -> Outcome:
        """Build and publish one commit; failures are outcomes, never exceptions."""

    def reconcile(self) -> Outcome | None:
        """Compare the roots with the manifest and restore them; None: nothing published."""


class CommitPublisher:
    """The `Publisher` of the CLI: pipeline → build → publish into the fleet's targets."""

    def __init__(
        self,
        pipeline: Pipeline,
        private_key: str | None,
        targets_for: Targets | TargetsFor,
        *,
        prune_unknown: bool = False,
        lock_wait: float = 30.0,
        state_dir: Path | None = None,
        renew: Callable[[pygit2.Repository], Pipeline] | None = None,
        renew_every: int = 200,
        guards: Guards | None = None,
        verify: bool = False,
        watch_roots: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.private_key = private_key
        self.targets_for = targets_for
        self.prune_unknown = prune_unknown
        self.lock_wait = lock_wait
        self.state_dir = state_dir
        self.guards = guards or Guards()
        # Reconcile by reading every served file, not by stat (--verify).
        self.verify = verify
        # Between reconciles, check only the served files an inotify watch saw touched
        # (gitprov.rootwatch); without, every file's stat at each publish.
        self.watch_roots = watch_roots
        # The pipeline's in-memory caches grow with every commit evaluated; a watcher runs
        # for months, so it starts a fresh one now and then (the version cache is on disk).
        self.renew = renew
        self.renew_every = renew_every
        self._builds = 0

    def publish(
        self, repo: pygit2.Repository, commit: pygit2.Commit, trigger: str = "push"
    ) -> Outcome:
        cid = str(commit.id)
        short = cid[:12]
        started = time.monotonic()

        def done(kind: Kind, message: str, **more: Any) -> Outcome:
            return Outcome(
                kind,
                cid,
                message,
                trigger=trigger,
                duration=time.monotonic() - started,
                **more,
            )

        self._builds += 1
        if self.renew is not None and self._builds % self.renew_every == 0:
            self.pipeline = self.renew(repo)
        self.pipeline.repo = repo
        try:
            result = publish_commit(
                self.pipeline,
                commit,
                self.targets_for,
                self.private_key,
                lock_wait=self.lock_wait,
                prune_unknown=self.prune_unknown,
                guards=self.guards,
                verify=self.verify and trigger == "reconcile",
                full_survey=trigger == "reconcile" or not self.watch_roots,
            )
        except InvalidInventory as exc:
            return done(
                Kind.INVALID,
                f"{short}: not published: {exc.message}; the last good files stay",
                problems=exc.problems,
            )
        except PublishError as exc:
            return done(Kind.FAILED, f"{short}: not published: {exc.message}")
        except GitprovError as exc:
            # The hint names what lets it through (a flag, a signature): the log needs it.
            hint = f" ({exc.hint})" if exc.hint else ""
            return done(Kind.REFUSED, f"{short}: not published: {exc.message}{hint}")
        self.state_dir = result.state_dir or self.state_dir
        common: dict[str, Any] = {
            "files_written": len(result.written),
            "files_removed": len(result.removed),
            "devices_changed": len(result.changed_macs()),
            "drift": tuple(d for d in result.drift if d.root not in result.failures),
            "failed_roots": tuple(sorted(result.failures.items())),
            "unknown": result.plan.unknown,
            "notes": result.notes,
        }
        if result.already_published:
            return done(Kind.UNCHANGED, f"{short} is already published; nothing to write", **common)
        summary = (
            f"{common['files_written']} file(s) written, {common['files_removed']} removed, "
            f"{common['devices_changed']} device(s) changed"
        )
        if result.failures:
            failed = "; ".join(f"{root}: {why}" for root, why in sorted(result.failures.items()))
            return done(
                Kind.PARTIAL,
                f"published {short} except in {len(result.failures)} root(s) ({failed}); "
                f"they keep their last good files and will be retried; {summary}",
                **common,
            )
        return done(Kind.PUBLISHED, f"published {short}: {summary}", **common)

    def reconcile(self) -> Outcome | None:
        if self.state_dir is None:
            return None
        started = time.monotonic()
        try:
            found = inspect(self.state_dir, self.lock_wait, verify=self.verify)
        except GitprovError as exc:
            return Outcome(Kind.FAILED, "", f"reconcile: {exc.message}", trigger="reconcile")
        manifest = found.manifest
        if manifest is None:
            return None
        if found.clean:
            temps = found.temps_removed
            return Outcome(
                Kind.CLEAN,
                manifest.commit,
                f"roots match the manifest of {manifest.commit[:12]}"
                + (f"; removed {temps} temp file(s) of an interrupted publish" if temps else ""),
                trigger="reconcile",
                duration=time.monotonic() - started,
            )
        repo = self.pipeline.repo
        commit = repo.get(manifest.commit) if repo is not None else None
        if not isinstance(commit, pygit2.Commit):
            return Outcome(
                Kind.REFUSED,
                manifest.commit,
                f"reconcile: the published commit {manifest.commit[:12]} is not in the "
                "repository; cannot restore drift",
                trigger="reconcile",
            )
        outcome = self.publish(repo, commit, "reconcile")
        if outcome.kind is not Kind.PUBLISHED:
            return outcome
        what = []
        if outcome.drift:
            what.append(f"restored {len(outcome.drift)} file(s) changed or deleted by hand")
        if found.lagging:
            what.append(f"caught up {len(found.lagging)} lagging root(s)")
        return replace(
            outcome,
            kind=Kind.REPAIRED,
            message=f"reconcile {commit.id!s:.12}: " + ", ".join(what or ["restored the roots"]),
        )


# -- the loop -----------------------------------------------------------------------------
# How far back a burst ending on an invalid commit is searched for one that validates.
FALLBACK_DEPTH = 20


class Watcher:
    """Publish each new head of a branch until `stop` is set (see the module docstring)."""

    def __init__(
        self,
        source: BranchSource,
        publisher: Publisher,
        options: WatchOptions = WatchOptions(),
        *,
        last: str | None = None,
        observers: Sequence[Observer] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.options = options
        self.last = last  # the last commit handled (published or rejected)
        self.served = last  # the last commit published (what the roots serve)
        self.observers = list(observers)
        self.clock = clock
        self._pending: tuple[pygit2.Repository, pygit2.Commit, float] | None = None
        self._next_reconcile = clock()  # at start: repairs a crash and drift at once
        self._fetch_error = ""

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.step():
                continue  # the branch may have moved meanwhile: look again at once
            self.source.wait(self._timeout(), stop)

    def _timeout(self) -> float:
        now = self.clock()
        until = [self.options.interval, self._next_reconcile - now]
        if self._pending is not None:
            until.append(self._pending[2] - now)
        return max(0.0, min(until))

    def step(self) -> bool:
        """One look at the branch, then a due retry or reconcile. True when a new head
        was handled."""
        found = self._head()
        if found is not None and str(found[1].id) != self.last:
            repo, commit = found
            previous, self.last = self.last, str(commit.id)
            outcome = self._publish(repo, commit, "push")
            if outcome.kind is Kind.INVALID:
                commit, outcome = self._newest_valid(repo, commit, previous, outcome)
            self._pending = (
                (repo, commit, self.clock() + self.options.retry) if outcome.retry else None
            )
            return True
        now = self.clock()
        if self._pending is not None and now >= self._pending[2]:
            repo, commit, _ = self._pending
            outcome = self._publish(repo, commit, "retry")
            self._pending = (
                (repo, commit, self.clock() + self.options.retry) if outcome.retry else None
            )
        if now >= self._next_reconcile:
            outcome_or_none = self._guard(self.publisher.reconcile, "", "reconcile")
            again = outcome_or_none is not None and outcome_or_none.retry
            # A root that is still lagging is retried sooner than the next reconcile.
            self._next_reconcile = self.clock() + (
                min(self.options.retry, self.options.reconcile) if again else self.options.reconcile
            )
        return False

    def _newest_valid(
        self,
        repo: pygit2.Repository,
        commit: pygit2.Commit,
        previous: str | None,
        outcome: Outcome,
    ) -> tuple[pygit2.Commit, Outcome]:
        """A burst that ends on a broken commit still holds good merges before it: publish
        the newest one that validates, back to the last commit already handled."""
        for _ in range(FALLBACK_DEPTH):
            if not commit.parents or str(commit.parents[0].id) == previous:
                break
            commit = commit.parents[0]
            outcome = self._publish(repo, commit, "fallback")
            if outcome.kind is not Kind.INVALID:
                break
        return commit, outcome

    def _head(self) -> Head | None:
        try:
            found = self.source.head()
        except (GitprovError, pygit2.GitError, OSError) as exc:
            # A remote that is down, or a repository caught mid-gc: try again next poll.
            message = (
                exc.message if isinstance(exc, GitprovError) else f"cannot read the branch: {exc}"
            )
            self._report(message)
            return None
        if found is None:
            # Deleted, renamed, never pushed, or pointing at a tag or tree: the roots keep
            # what they serve, and the operator hears it once rather than nothing at all.
            self._report(
                f"no branch {self.source.label}, or it names no commit: waiting for it; "
                + (f"{self.served[:12]} stays served" if self.served else "nothing is published")
            )
            return None
        if self._fetch_error:
            self._fetch_error = ""
            if str(found[1].id) == self.last:
                # Back where it was: nothing to publish, and without a word the status
                # would say the failure for ever (a new commit is published as usual).
                self._emit(
                    Outcome(
                        Kind.UNCHANGED,
                        self.last,
                        f"{self.source.label} can be read again: "
                        + (
                            f"{self.served[:12]} stays served"
                            if self.served
                            else "nothing is published"
                        ),
                        trigger="poll",
                    )
                )
        return found

    def _report(self, message: str) -> None:
        if message != self._fetch_error:  # report a failure once, not every poll
            self._fetch_error = message
            self._emit(Outcome(Kind.FETCH_FAILED, self.last or "", message, trigger="poll"))

    def _publish(self, repo: pygit2.Repository, commit: pygit2.Commit, trigger: str) -> Outcome:
        outcome = self._guard(
            lambda: self.publisher.publish(repo, commit, trigger), str(commit.id), trigger
        )
        assert outcome is not None
        if outcome.kind in SERVED:
            self.served = str(commit.id)
        return outcome

    def _guard(
        self, call: Callable[[], Outcome | None], commit: str, trigger: str
    ) -> Outcome | None:
        # The watcher runs for months: a bug in one publish must not end it.
        try:
            outcome = call()
        except Exception as exc:
            log.exception("internal error while publishing")
            outcome = Outcome(
                Kind.FAILED,
                commit,
                f"{commit[:12]}: internal error: {type(exc).__name__}: {exc}",
                trigger=trigger,
            )
        if outcome is not None:
            self._emit(outcome)
        return outcome

    def _emit(self, outcome: Outcome) -> None:
        for observer in self.observers:
            try:
                observer(outcome)
            except Exception:
                log.exception("an outcome observer failed")
