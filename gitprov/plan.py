"""What a publish would change, per root: add, change, remove, and files we did not write.

The manifest (state dir, outside the served roots) records what the last publish wrote and,
per root, which commit that root holds completely; the roots themselves are read too, so
a file edited or deleted by hand is rewritten (and reported as drift).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
BOOTSTRAP_KEY = "bootstrap/"  # an option-66 file's key in Manifest.served: this + its name
MANIFEST_FORMAT = 2
TMP_PREFIX = ".gitprov-"
TMP_SUFFIX = ".tmp"


class Action(enum.StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


class Kind(enum.StrEnum):
    DEVICE = "device"  # a per-MAC file
    BOOTSTRAP = "bootstrap"  # a model's option-66 Config File Name file
    FIRMWARE = "firmware"  # a model's firmware image, copied from the firmware dir


@dataclass(frozen=True)
class ManifestEntry:
    mac: str
    model: str
    version: int
    set_by: str
    sha256_plain: str
    sha256_data: str
    kind: str = Kind.DEVICE
    # sha256 of the plaintext without its version line: tells a content change from a
    # version change when a publish must never lower or reuse a version (--force).
    sha256_body: str = ""


@dataclass(frozen=True)
class RootState:
    """What one root holds. `commit` is the last commit published there completely (None
    if none was); `error` says why the last attempt failed ("" when it is at the manifest's
    commit); `stale` names files gitprov wrote there that later commits no longer have
    and that are not removed yet (a failed root keeps them until it converges)."""

    commit: str | None
    error: str = ""
    stale: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Manifest:
    commit: str
    published_at: str
    roots: Mapping[str, RootState]
    files: Mapping[str, ManifestEntry]  # file name -> entry, the same in every root
    # Version key (MAC, or bootstrap/NAME) -> (the highest version ever served under it,
    # that file's body sha256). Kept for removed devices too: a device that comes back
    # (or a --force publish) never gets a number it was already given.
    served: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    def owned(self, root: str) -> set[str]:
        """Names gitprov may have written into `root` (what prune may remove)."""
        state = self.roots.get(root)
        if state is None:
            return set()
        return set(self.files) | set(state.stale)

    def converged(self, root: str) -> bool:
        state = self.roots.get(root)
        return state is not None and state.ok and state.commit == self.commit

    def lagging(self) -> tuple[str, ...]:
        return tuple(r for r in self.roots if not self.converged(r))

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": MANIFEST_FORMAT,
                    "commit": self.commit,
                    "published_at": self.published_at,
                    "roots": {
                        r: {"commit": s.commit, "error": s.error, "stale": list(s.stale)}
                        for r, s in sorted(self.roots.items())
                    },
                    "files": {name: vars(e) for name, e in sorted(self.files.items())},
                    "served": {
                        k: {"version": v, "sha256_body": b}
                        for k, (v, b) in sorted(self.served.items())
                    },
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )


def served_versions(manifest: Manifest | None) -> dict[str, tuple[int, str]]:
    """Version key -> (highest version served, body sha256): the manifest's record, and
    the files it lists (a manifest written before the record existed has only those)."""
    if manifest is None:
        return {}
    out = dict(manifest.served)
    for name, e in manifest.files.items():
        key = version_key(name, e)
        if key is not None and e.version >= out.get(key, (0, ""))[0]:
            out[key] = (e.version, e.sha256_body)
    return out


def version_key(name: str, e: ManifestEntry) -> str | None:
    """The key of `served` a file's number is recorded under (firmware has none)."""
    if e.kind == Kind.DEVICE and e.mac:
        return e.mac
    if e.kind == Kind.BOOTSTRAP:
        return BOOTSTRAP_KEY + name
    return None


def load_manifest(state_dir: Path) -> Manifest | None:
    try:
        raw: dict[str, Any] = json.loads((state_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a torn or foreign manifest: publish from scratch, files are compared
    try:
        return _from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _from_json(raw: dict[str, Any]) -> Manifest | None:
    fmt = raw.get("format")
    commit = raw["commit"]
    if fmt == 1:
        # Format 1 listed roots only, as given (relative to the current directory);
        # every root held the manifest's commit.
        roots = {str(Path(r).absolute()): RootState(commit) for r in raw.get("roots", ())}
    elif fmt == MANIFEST_FORMAT:
        roots = {
            str(r): RootState(s.get("commit"), s.get("error", ""), tuple(s.get("stale", ())))
            for r, s in raw.get("roots", {}).items()
        }
    else:
        return None
    return Manifest(
        commit=commit,
        published_at=raw.get("published_at", ""),
        roots=roots,
        files={name: ManifestEntry(**e) for name, e in raw.get("files", {}).items()},
        served={
            str(k): (int(v["version"]), str(v.get("sha256_body", "")))
            for k, v in raw.get("served", {}).items()
        },
    )


def sha256_file(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


@dataclass(frozen=True)
class FileAction:
    root: str
    name: str
    action: Action


@dataclass(frozen=True, order=True)
class Drift:
    """A file the manifest says gitprov wrote, found changed or missing in a root."""

    root: str
    name: str
    kind: str  # "changed" or "deleted"


@dataclass(frozen=True)
class Plan:
    actions: tuple[FileAction, ...]
    unchanged: int
    unknown: tuple[tuple[str, str], ...] = field(default=())  # (root, name) we did not write
    drift: tuple[Drift, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.actions


def plan(
    wanted: Mapping[str, bytes],
    roots: Sequence[Path],
    previous: Manifest | None,
    *,
    prune_unknown: bool = False,
) -> Plan:
    """Compare the wanted files (name -> bytes, the same in every root) with each root on
    disk. Files of ours that are no longer wanted are removed; files we never wrote are
    listed as unknown, and removed too only with `prune_unknown`."""
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in wanted.items()}
    actions: list[FileAction] = []
    unchanged = 0
    unknown: list[tuple[str, str]] = []
    drift: list[Drift] = []
    for root in roots:
        key = str(root)
        present = _listing(root)
        ours = previous.owned(key) if previous else set()
        recorded = previous.files if previous and previous.converged(key) else {}
        for name in sorted(wanted):
            on_disk = sha256_file(root / name) if name in present else None
            entry = recorded.get(name)
            if entry is not None and on_disk != entry.sha256_data:
                drift.append(Drift(key, name, "deleted" if on_disk is None else "changed"))
            if on_disk is None:
                actions.append(FileAction(key, name, Action.ADD))
            elif on_disk != digests[name]:
                actions.append(FileAction(key, name, Action.CHANGE))
            else:
                unchanged += 1
        for name in sorted(present - set(wanted)):
            if name in ours:
                actions.append(FileAction(key, name, Action.REMOVE))
            else:
                unknown.append((key, name))
                if prune_unknown:
                    actions.append(FileAction(key, name, Action.REMOVE))
    return Plan(tuple(actions), unchanged, tuple(unknown), tuple(drift))


def check_drift(manifest: Manifest) -> tuple[Drift, ...]:
    """Drift in the roots that hold the manifest's commit, from the manifest alone (no
    build): what a reconcile looks at before deciding to republish."""
    found: list[Drift] = []
    for key in manifest.roots:
        if not manifest.converged(key):
            continue
        root = Path(key)
        for name, entry in sorted(manifest.files.items()):
            on_disk = sha256_file(root / name)
            if on_disk != entry.sha256_data:
                found.append(Drift(key, name, "deleted" if on_disk is None else "changed"))
    return tuple(found)


def _listing(root: Path) -> set[str]:
    try:
        with os.scandir(root) as it:
            return {e.name for e in it if e.is_file() and not e.name.startswith(".")}
    except (FileNotFoundError, NotADirectoryError):
        return set()
