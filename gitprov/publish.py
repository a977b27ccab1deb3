"""Apply a build to the served roots atomically (DESIGN.md invariant 3).

Every new file is first written in full to a dot-named temp file in its target directory
(never served: the embedded servers refuse dot-files) and fsynced; only when every temp of
every root is durable are they renamed over their targets, one `os.replace` each, so a
reader always sees a complete old or a complete new file. Removals follow; the manifest
is written last, in the state dir outside the roots. A crash at any moment leaves each
served file whole, and publishing again converges.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gitprov.errors import GitprovError
from gitprov.pipeline import Build
from gitprov.plan import (
    MANIFEST,
    TMP_PREFIX,
    TMP_SUFFIX,
    Action,
    FileAction,
    Manifest,
    ManifestEntry,
    Plan,
    load_manifest,
    plan,
)

Progress = Callable[[str, int, int], None]
IsDescendant = Callable[[str, str], bool]
LOCK = "publish.lock"


@dataclass(frozen=True)
class Targets:
    roots: tuple[Path, ...]
    state_dir: Path

    def __post_init__(self) -> None:
        for root in self.roots:
            if _inside(self.state_dir, root):
                raise GitprovError(
                    f"the state dir {self.state_dir} is inside the served root {root}",
                    hint="the manifest lists every MAC: keep the state dir beside the roots",
                )


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class PublishResult:
    commit: str
    previous: str | None
    already_published: bool
    plan: Plan
    manifest: Manifest

    @property
    def written(self) -> tuple[FileAction, ...]:
        return tuple(a for a in self.plan.actions if a.action is not Action.REMOVE)

    @property
    def removed(self) -> tuple[FileAction, ...]:
        return tuple(a for a in self.plan.actions if a.action is Action.REMOVE)


@contextlib.contextmanager
def publish_lock(state_dir: Path, wait: float = 0.0) -> Iterator[None]:
    """One publisher at a time per state dir (and so per set of roots)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise GitprovError(
                        f"another publish is running on {state_dir} (pid {holder})",
                        hint="wait for it to finish, or pass --wait SECONDS",
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def clean_temps(roots: tuple[Path, ...]) -> int:
    """Remove temp files a crashed publish left behind (they were never served)."""
    removed = 0
    for root in roots:
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.name.startswith(TMP_PREFIX) and e.name.endswith(TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                    removed += 1
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, name: str, data: bytes) -> Path:
    tmp = directory / f"{TMP_PREFIX}{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        # nginx and tftpd drop privileges: files must be world-readable whatever the umask.
        os.fchmod(fd, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path.parent, path.name, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _space_error(exc: OSError, where: Path) -> GitprovError:
    what = "no space left" if exc.errno == errno.ENOSPC else exc.strerror
    return GitprovError(
        f"cannot write into {where}: {what}; nothing was changed, the last good files stay",
        hint="free space (or fix permissions) and publish again",
    )


def publish(
    build: Build,
    targets: Targets,
    *,
    is_descendant: IsDescendant | None = None,
    force: bool = False,
    progress: Progress | None = None,
    lock_wait: float = 0.0,
) -> PublishResult:
    roots = targets.roots
    with publish_lock(targets.state_dir, lock_wait):
        previous = load_manifest(targets.state_dir)
        if (
            previous is not None
            and previous.commit != build.commit
            and is_descendant is not None
            and not is_descendant(build.commit, previous.commit)
            and not force
        ):
            raise GitprovError(
                f"{build.commit[:12]} is not a descendant of the published {previous.commit[:12]}",
                hint="to roll back, `git revert` the bad commits and publish the result "
                "(versions must keep going up); --force publishes anyway",
            )
        for root in roots:
            root.mkdir(parents=True, exist_ok=True)
        clean_temps(roots)
        wanted = {f.name: f.data for f in build.files}
        the_plan = plan(wanted, list(roots), previous)
        manifest = Manifest(
            commit=build.commit,
            published_at=datetime.now(UTC).isoformat(timespec="seconds"),
            roots=tuple(str(r) for r in roots),
            files={
                f.name: ManifestEntry(
                    f.mac,
                    f.model,
                    f.version,
                    f.set_by,
                    _sha(f.plaintext),
                    _sha(f.data),
                )
                for f in build.files
            },
        )
        already = the_plan.empty and previous is not None and previous.commit == build.commit
        if already:
            return PublishResult(
                build.commit,
                previous.commit if previous else None,
                True,
                the_plan,
                previous or manifest,
            )
        _apply(the_plan, wanted, progress)
        write_atomic(targets.state_dir / MANIFEST, manifest.to_json().encode())
        return PublishResult(
            build.commit, previous.commit if previous else None, False, the_plan, manifest
        )


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _apply(the_plan: Plan, wanted: Mapping[str, bytes], progress: Progress | None) -> None:
    writes = [a for a in the_plan.actions if a.action is not Action.REMOVE]
    temps: list[tuple[Path, Path]] = []
    try:
        for i, a in enumerate(writes):
            root = Path(a.root)
            try:
                tmp = _write_temp(root, a.name, wanted[a.name])
            except OSError as exc:
                raise _space_error(exc, root) from exc
            temps.append((tmp, root / a.name))
            if progress:
                progress("write", i + 1, len(writes))
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    # Batch durability: all temps are synced; now the renames, then one sync per directory.
    for tmp, target in temps:
        os.replace(tmp, target)
    for root in {Path(a.root) for a in the_plan.actions}:
        _fsync_dir(root)
    removes = [a for a in the_plan.actions if a.action is Action.REMOVE]
    for a in removes:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(a.root) / a.name)
    for root in {Path(a.root) for a in removes}:
        _fsync_dir(root)
