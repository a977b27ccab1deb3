"""What both imports share: the inventory they import into (`Context`), where each
device's file goes, and what they report (`FileReport`, `ImportResult`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from gitprov.app import Session
from gitprov.catalog import Catalog
from gitprov.errors import InvalidInventory, Problem
from gitprov.inventory import Inventory


@dataclass(frozen=True)
class FileReport:
    """What happened to one input file (or CSV row)."""

    source: str
    mac: str | None
    action: str  # imported | replaced | skipped
    detail: str  # what was imported, or why it was skipped
    written: str | None = None  # the device file, repository-relative


@dataclass(frozen=True)
class ImportResult:
    files: tuple[FileReport, ...]
    written: tuple[str, ...]  # every file written (or, with dry_run, that would be)
    profiles: tuple[str, ...]
    secrets: int  # sealed values written
    version_floor: tuple[int, int] | None  # (before, after) when raised
    highest_version: int | None  # the highest DBID_DBASE_VERSION read
    unknown_keys: tuple[str, ...]  # raw DBID keys the catalog does not know
    warnings: tuple[Problem, ...]
    dry_run: bool

    @property
    def imported(self) -> int:
        return sum(f.action != "skipped" for f in self.files)

    @property
    def skipped(self) -> int:
        return sum(f.action == "skipped" for f in self.files)


@dataclass
class Context:
    """The inventory an import writes into, as the work tree has it now."""

    session: Session
    inv: Inventory
    catalog: Catalog
    public_key: str
    sealed: dict[str, str]  # secrets.yaml as it is

    def path(self, *parts: str) -> str:
        return posixpath.join(self.session.inventory_dir.strip("/"), *parts)


def load_context(session: Session) -> Context:
    loaded, _ = session.load("HEAD", worktree=True)
    if loaded.inventory is None:
        raise InvalidInventory(
            f"the inventory has {len(loaded.errors)} error(s); import into a valid one",
            hint="run `gitprov validate --worktree` and fix them first",
            problems=loaded.errors,
        )
    sf = session.secrets_file()
    return Context(
        session, loaded.inventory, session.pipeline.catalog, sf.public_key, dict(sf.sealed)
    )


def target_for(ctx: Context, mac: str, force: bool) -> tuple[str | None, str | None]:
    """(the path to write for `mac`, or None to skip it; why it is skipped)."""
    old = ctx.inv.device(mac)
    if old is None:
        return ctx.path("devices", f"{mac}.yaml"), None
    if not force:
        return None, f"{old.doc.path} exists (--force replaces it)"
    return old.doc.path, None
