"""A publish's head start: the publish lock taken, and the survey of the served files
begun in a forked process, before the modules a publish needs are imported.

At 100,000 devices, publishing the published commit again is a stat of each served
file (about 0.55 s of one core here) and a fresh process's imports (about 0.25 s): the
stats made meanwhile are off its path. Only where the state dir is given on the
command line (the fleet settings that could name another need git and YAML to read),
a publish was made there before (its manifest is there: nothing is created), and the
lock is free: otherwise the publish takes its lock and surveys as it would anyway."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gitprov.plan import MANIFEST, SurveyAhead

LOCK = "publish.lock"


@dataclass(frozen=True)
class HeadStart:
    """A state dir whose publish lock this process holds, and the survey made ahead of
    its served files (None: not worth a process, see SurveyAhead.start)."""

    state_dir: Path
    survey: SurveyAhead | None


@contextlib.contextmanager
def head_start(state_dir: str | None) -> Iterator[HeadStart | None]:
    """The lock of `state_dir` held and its survey started, until the block ends; None
    when there is no head start to take (see the module)."""
    if not state_dir:
        yield None
        return
    path = Path(state_dir).absolute()
    fd = None
    # (no lock file made: a state dir without a manifest is the publish's to set up)
    with contextlib.suppress(OSError, ValueError):
        if (path / MANIFEST).is_file():
            fd = os.open(path / LOCK, os.O_RDWR)
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
        survey = SurveyAhead.start(path)
        if survey is not None:
            held.callback(survey.close)
        yield HeadStart(path, survey)
