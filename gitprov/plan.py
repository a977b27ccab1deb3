"""What a publish would change, per root: add, change, remove, and files we did not write.

The manifest (state dir, outside the served roots) records what the last publish wrote;
the roots themselves are checked too, so a file edited or deleted by hand is rewritten.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
TMP_PREFIX = ".gitprov-"
TMP_SUFFIX = ".tmp"


class Action(enum.StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


@dataclass(frozen=True)
class ManifestEntry:
    mac: str
    model: str
    version: int
    set_by: str
    sha256_plain: str
    sha256_data: str


@dataclass(frozen=True)
class Manifest:
    commit: str
    published_at: str
    roots: tuple[str, ...]
    files: Mapping[str, ManifestEntry]  # file name -> entry

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": MANIFEST_FORMAT,
                    "commit": self.commit,
                    "published_at": self.published_at,
                    "roots": list(self.roots),
                    "files": {name: vars(e) for name, e in sorted(self.files.items())},
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )


def load_manifest(state_dir: Path) -> Manifest | None:
    try:
        raw: dict[str, Any] = json.loads((state_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a torn or foreign manifest: publish from scratch, files are compared
    if raw.get("format") != MANIFEST_FORMAT:
        return None
    return Manifest(
        commit=raw["commit"],
        published_at=raw.get("published_at", ""),
        roots=tuple(raw.get("roots", ())),
        files={name: ManifestEntry(**e) for name, e in raw.get("files", {}).items()},
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


@dataclass(frozen=True)
class Plan:
    actions: tuple[FileAction, ...]
    unchanged: int
    unknown: tuple[tuple[str, str], ...] = field(default=())  # (root, name) we did not write

    @property
    def empty(self) -> bool:
        return not self.actions


def plan(
    wanted: Mapping[str, bytes],
    roots: list[Path],
    previous: Manifest | None,
) -> Plan:
    """Compare the wanted files (name -> bytes) with each root on disk."""
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in wanted.items()}
    ours = set(previous.files) if previous else set()
    actions: list[FileAction] = []
    unchanged = 0
    unknown: list[tuple[str, str]] = []
    for root in roots:
        present = _listing(root)
        for name in sorted(wanted):
            if name not in present:
                actions.append(FileAction(str(root), name, Action.ADD))
            elif sha256_file(root / name) != digests[name]:
                actions.append(FileAction(str(root), name, Action.CHANGE))
            else:
                unchanged += 1
        for name in sorted(present - set(wanted)):
            if name in ours:
                actions.append(FileAction(str(root), name, Action.REMOVE))
            else:
                unknown.append((str(root), name))
    return Plan(tuple(actions), unchanged, tuple(unknown))


def _listing(root: Path) -> set[str]:
    try:
        with os.scandir(root) as it:
            return {e.name for e in it if e.is_file() and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()
