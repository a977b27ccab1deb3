"""Are the served roots byte for byte what a commit produces? (`gitprov verify`)

The commit is built in memory exactly as `publish_commit` would build it: the same
validation, the same private key, the versions continued from the state dir's manifest
and a publish that did not finish (`publish.served_before`), the same files
(`publish.artifacts`: device files, option-66 bootstraps, firmware images, stage files).
Builds are reproducible (the encryption salt is
derived from the key and the plaintext, see gitprov.crypto), so the bytes can be compared
with what each root holds: every wanted file missing or different, and every file the
commit does not produce, is a difference. Nothing is written, and no lock is taken: an
auditor's read access is enough. A publish that runs meanwhile is noticed (the manifest
changed) and said.

What the manifest says is not trusted here: `publish --verify` compares the roots with
the manifest; this compares them with the commit.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2

from gitprov.builder import VersionConflict
from gitprov.errors import GitprovError, InvalidInventory, UsageError
from gitprov.pipeline import Pipeline
from gitprov.plan import MANIFEST, Manifest, load_manifest
from gitprov.publish import (
    KeyFor,
    Targets,
    TargetsFor,
    artifacts,
    needs_stage_root,
    served_before,
    stage_build,
)

MISSING = "missing"  # the commit produces it; the root does not hold it
EXTRA = "extra"  # the root holds it; the commit does not produce it
DIFFERS = "differs"  # both, with other bytes
NOT_A_FILE = "not-a-file"  # the commit produces a file; the root holds a link, a directory, …


@dataclass(frozen=True, order=True)
class Difference:
    root: str
    name: str  # relative to the root, `/`-separated
    kind: str
    expected_sha256: str | None = None  # what the commit produces (None: nothing)
    found_sha256: str | None = None  # what the root holds (None: nothing readable)


@dataclass(frozen=True)
class Verification:
    commit: str
    manifest_commit: str | None  # what the state dir's manifest says is published
    roots: tuple[str, ...]
    compared: int  # files the commit produces, summed over the roots
    differences: tuple[Difference, ...]
    notes: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return not self.differences


def verify_commit(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    targets: Targets | TargetsFor,
    private_key: str | KeyFor | None,
) -> Verification:
    """Build `commit` as a publish would and compare it with the roots `targets` names
    (the publisher's, or the commit's fleet settings'). Raises what a publish raises
    before it writes: InvalidInventory, VersionConflict (the commit is older than what
    the roots served: publishing it would be refused too; exit 1), IncompleteHistory,
    UsageError."""
    loaded = pipeline.load_commit(commit)
    if loaded.inventory is None:
        raise InvalidInventory(
            f"commit {str(commit.id)[:12]} has {len(loaded.errors)} error(s)",
            hint="it was never published: a publish refuses an invalid commit",
            problems=loaded.problems,
        )
    key = private_key(loaded.inventory) if callable(private_key) else private_key
    where = targets(loaded.inventory.fleet) if callable(targets) else targets
    # (os.path's tests say False for any error: a name too long is not this case)
    if os.path.exists(where.state_dir) and not os.path.isdir(where.state_dir):
        # (read as an empty state dir, it said "no manifest": as if nothing was published)
        raise UsageError(
            f"{where.state_dir}: the state dir is not a directory",
            hint="give the publisher's state dir (--state-dir, or publish.state_dir)",
        )
    before = _stamp(where.state_dir)
    manifest = load_manifest(where.state_dir)
    # The published commit itself may have been published with --force (an older commit
    # put back): its files then carry the numbers the roots had served, which a forced
    # build gives again (the served number for content served under it, above it for
    # new content). Any other commit is built as a plain publish would build it.
    forced = manifest is not None and manifest.commit == str(commit.id)
    try:
        # (with the versions of a publish that did not finish: publish.PENDING)
        build = pipeline.build(
            commit,
            key,
            served_before(where.state_dir, manifest),
            loaded,
            keep_plaintext=False,
            force=forced,
        )
    except VersionConflict as exc:
        raise _older(str(commit.id), manifest, exc) from None
    files, notes = artifacts(build, where.firmware_dir)
    wanted: dict[Path, dict[str, bytes]] = {
        root: {a.name: a.data for a in files} for root in where.roots
    }
    needs_stage_root(build, where)
    if where.stage_root is not None:
        staged, _ = artifacts(stage_build(build), None)
        wanted[where.stage_root] = {a.name: a.data for a in staged}
    differences: list[Difference] = []
    compared = 0
    for root, expected in wanted.items():
        compared += len(expected)
        differences += compare_root(root, expected)
    cid = str(commit.id)
    if manifest is None:
        notes.append(f"no manifest in {where.state_dir}: versions are those of a first publish")
    elif manifest.commit != cid:
        notes.append(
            f"the manifest in {where.state_dir} says {manifest.commit[:12]} is published, "
            f"not {cid[:12]}"
        )
    if _stamp(where.state_dir) != before:
        notes.append(
            "a publish changed the manifest while verify was reading: its differences may "
            "be that publish's; run verify again"
        )
    return Verification(
        cid,
        manifest.commit if manifest is not None else None,
        tuple(str(r) for r in wanted),
        compared,
        tuple(sorted(differences)),
        tuple(notes),
    )


def _older(commit: str, manifest: Manifest | None, exc: VersionConflict) -> GitprovError:
    """The roots already served higher versions than `commit` gives: they cannot hold its
    files, and a publish of it is refused. Said as such, not as advice to publish."""
    worst = max(exc.conflicts, key=lambda c: c.served - c.computed)
    # (a conflict needs served versions, so a manifest; and the manifest's own commit is
    # built as publish --force would, which never conflicts: it names another commit)
    published = (
        f"verify the published commit: gitprov verify --rev {manifest.commit[:12]}"
        if manifest is not None
        else ""
    )
    return GitprovError(
        f"the roots cannot hold what {commit[:12]} produces: they already served "
        f"{len(exc.conflicts)} of its file(s) a higher version ({worst.key}: served "
        f"{worst.served}, {commit[:12]} gives {worst.computed}); a publish of it is refused",
        hint=published,
    )


def _stamp(state_dir: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(state_dir / MANIFEST)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def compare_root(root: Path, wanted: Mapping[str, bytes]) -> list[Difference]:
    """Every difference between `root` and the files `wanted` (name -> bytes): what
    nginx or tftpd would serve from it, so subdirectories count too; names starting
    with a dot are never served (gitprov's temps among them) and are not looked at."""
    key = str(root)
    out: list[Difference] = []
    present = _served_names(root)
    for name in sorted(wanted.keys() | present.keys()):
        data = wanted.get(name)
        expected = _sha(data) if data is not None else None
        kind = present.get(name)
        if kind is None:
            out.append(Difference(key, name, MISSING, expected))
            continue
        path = root / name
        found = _read(path)
        if data is None:
            out.append(
                Difference(key, name, EXTRA, None, _sha(found) if found is not None else None)
            )
        elif kind != "file":
            out.append(Difference(key, name, NOT_A_FILE, expected, _sha(found) if found else None))
        elif found is None:
            out.append(Difference(key, name, MISSING, expected))
        elif found != data:
            out.append(Difference(key, name, DIFFERS, expected, _sha(found)))
    return out


def _served_names(root: Path) -> dict[str, str]:
    """Relative name -> "file" (a regular file) or "other" (a link, a fifo, a directory
    link...) of everything below `root` a server could send; dot-names skipped."""
    out: dict[str, str] = {}
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            return out
    except (OSError, ValueError):  # (gone, or a path no filesystem takes: nothing served)
        return out
    todo = [""]
    while todo:
        prefix = todo.pop()
        try:
            entries = list(os.scandir(root / prefix if prefix else root))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            rel = f"{prefix}{e.name}"
            try:
                mode = e.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                todo.append(f"{rel}/")
            else:
                out[rel] = "file" if stat.S_ISREG(mode) else "other"
    return out


def _read(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None  # a fifo or a device: never read
        try:
            return f.read()
        except OSError:
            return None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["Difference", "Verification", "compare_root", "verify_commit"]
