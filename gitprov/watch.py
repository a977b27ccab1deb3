"""Publish each new commit of a branch: inotify (watchdog) as a hint, git as the truth.

Events under refs/ and on packed-refs only wake the loop; after a short debounce the branch
is re-resolved with pygit2 and compared with the last commit handled. So a `git gc` that
deletes a loose ref is not a branch deletion, a burst of pushes publishes only the newest
head, and when inotify is unavailable the loop still polls every `interval` seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pygit2

log = logging.getLogger("gitprov.watch")

Handler = Callable[[pygit2.Repository, pygit2.Commit], None]


@dataclass(frozen=True)
class WatchOptions:
    branch: str = "main"
    interval: float = 2.0  # polling period; also the fallback when inotify is missing
    debounce: float = 0.1
    inotify: bool = True


def resolve_branch(repo_path: Path, branch: str) -> tuple[pygit2.Repository, pygit2.Commit] | None:
    # A fresh Repository each time: libgit2 caches packed-refs, and pushes happen in
    # another process.
    repo = pygit2.Repository(str(repo_path))
    ref = repo.references.get(f"refs/heads/{branch}")
    if ref is None:
        return None
    commit = repo.get(ref.resolve().target)
    return (repo, commit) if isinstance(commit, pygit2.Commit) else None


class _Hint:
    def __init__(self) -> None:
        self.event = threading.Event()

    def dispatch(self, event: object) -> None:
        src = str(getattr(event, "src_path", ""))
        dest = str(getattr(event, "dest_path", "") or "")
        kind = getattr(event, "event_type", "")
        if kind in ("opened", "closed_no_write"):
            return  # git reads refs constantly; only writes matter
        if (
            "refs" in src
            or "refs" in dest
            or src.endswith("packed-refs")
            or dest.endswith("packed-refs")
        ):
            self.event.set()


def _start_observer(git_dir: Path, hint: _Hint) -> object | None:
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:  # pragma: no cover - watchdog is a dependency
        return None

    class _H(FileSystemEventHandler):
        def on_any_event(self, event: object) -> None:
            hint.dispatch(event)

    try:
        observer = Observer()
        observer.schedule(_H(), str(git_dir), recursive=True)
        observer.start()
    except OSError as exc:
        log.warning("inotify unavailable (%s); polling only", exc)
        return None
    return observer


def watch(
    repo_path: Path,
    handler: Handler,
    stop: threading.Event,
    options: WatchOptions = WatchOptions(),
    last: str | None = None,
) -> None:
    """Call `handler` for each new head of the branch until `stop` is set."""
    git_dir = Path(pygit2.Repository(str(repo_path)).path)
    hint = _Hint()
    observer = _start_observer(git_dir, hint) if options.inotify else None
    try:
        while not stop.is_set():
            found = resolve_branch(repo_path, options.branch)
            if found is not None and str(found[1].id) != last:
                repo, commit = found
                last = str(commit.id)
                handler(repo, commit)
                continue  # the branch may have moved meanwhile: look again at once
            if hint.event.wait(options.interval):
                hint.event.clear()
                stop.wait(options.debounce)
                hint.event.clear()
    finally:
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join()  # type: ignore[attr-defined]
