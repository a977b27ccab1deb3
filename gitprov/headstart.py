"""A publish's head start: the publish lock taken, and the survey of the served files
begun in a forked process, before the modules a publish needs are imported.

At 100,000 devices, publishing the published commit again is a stat of each served
file (about 0.55 s of one core here) and a fresh process's imports (about 0.25 s): the
stats made meanwhile are off its path. Only where the state dir is given on the
command line (the fleet settings that could name another need git and YAML to read),
a publish was made there before (its manifest is there: nothing is created), and the
lock is free: otherwise the publish takes its lock and surveys as it would anyway.

Before it surveys, that process also works out the tree diff a publish by change asks
for first, of the published commit and the one to publish (0.07-0.09 s for a flat
directory of 100,000 devices): the survey is asked for only once the commit is read and
built, and the diff right after the imports. The publish takes the diff only when it
asks for that very one (the same two commits, the same inventory directory)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

from gitprov import paths
from gitprov.plan import MANIFEST, SurveyAhead, manifest_commit

if TYPE_CHECKING:  # (gitprov.source imports pygit2: never before the head start)
    from gitprov.source import Changes

LOCK = "publish.lock"


class DiffAsked(NamedTuple):
    """The tree diff to work out ahead: the repository (as --repo names it), the
    revision to publish and the inventory directory."""

    repo: str
    rev: str
    inventory_dir: str


@dataclass(frozen=True)
class HeadStart:
    """A state dir whose publish lock this process holds, and the survey made ahead of
    its served files (None: not worth a process, see SurveyAhead.start). `diff_of`: the
    published commit and the inventory directory whose tree diff the survey's process
    works out first (see `diff`)."""

    state_dir: Path
    survey: SurveyAhead | None
    diff_of: tuple[str, str] | None = None

    def diff(self, old: str, new: str, inventory_dir: str) -> Changes | None:
        """The changes from commit `old` to `new` under `inventory_dir`, when they are
        the ones worked out ahead (waited for); None otherwise, or when that failed."""
        if self.survey is None or self.diff_of != (old, inventory_dir):
            return None
        got = self.survey.first()
        if not (isinstance(got, tuple) and len(got) == 2 and got[0] == new):
            return None  # (the revision named another commit by then)
        return cast("Changes", got[1])


def _tree_diff(asked: DiffAsked, published: str) -> tuple[str, Changes] | None:
    """In the survey's process: the commit `asked.rev` names and its changes from
    `published`; None when either is not a commit here."""
    import pygit2

    from gitprov.source import open_repo, resolve_commit, tree_changes

    repo = open_repo(asked.repo)
    new = resolve_commit(repo, asked.rev)
    old = repo.get(published)
    if not isinstance(old, pygit2.Commit):
        return None
    return str(new.id), tree_changes(old.tree, new.tree, asked.inventory_dir)


@contextlib.contextmanager
def head_start(state_dir: str | None, diff: DiffAsked | None = None) -> Iterator[HeadStart | None]:
    """The lock of `state_dir` held and its survey started (after the tree diff `diff`
    asks for, from the published commit), until the block ends; None when there is no
    head start to take (see the module)."""
    if not state_dir:
        yield None
        return
    path = paths.absolute(state_dir, "the state dir")
    fd = None
    # (no lock file made: a state dir without a manifest is the publish's to set up)
    with contextlib.suppress(OSError, ValueError):
        if (path / MANIFEST).is_file():
            fd = os.open(path / LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # (the publish says what is wrong)
                os.close(fd)
                fd = None
    if fd is None:
        yield None
        return
    with contextlib.ExitStack() as held:
        held.callback(os.close, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            # (busy: the publish waits for it, or says who holds it, as it would)
            held.close()
            yield None
            return
        published = manifest_commit(path) if diff is not None else None
        first, diff_of = None, None
        if diff is not None and published is not None:
            first = functools.partial(_tree_diff, diff, published)
            diff_of = (published, diff.inventory_dir)
        survey = SurveyAhead.start(path, first)
        if survey is not None:
            held.callback(survey.close)
        yield HeadStart(path, survey, diff_of)
