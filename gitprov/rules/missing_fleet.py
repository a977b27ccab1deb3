"""GP100 missing-fleet: the inventory has no gitprov.yaml.

Fails: an inventory/ with devices/ but no gitprov.yaml.
Passes: inventory/gitprov.yaml with at least `version_floor: 1000`.
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import FLEET_FILE
from gitprov.rules import RuleContext
from gitprov.source import GITLINK

CODE = "GP100"
NAME = "missing-fleet"


def check(ctx: RuleContext) -> Iterator[Problem]:
    path = f"{ctx.docs.inventory_dir}/{FLEET_FILE}".lstrip("/")
    # A gitprov.yaml that is there but unreadable (a syntax error, over a limit) has its
    # own problem at its place; "missing" would send its author looking for a lost file.
    # A submodule in its place is missing too (its own warning, GP005, says what it is).
    # (The refs are a fleet's: looked at only when the settings were not read.)
    if ctx.fleet is None and not any(
        ref.path == path and not ref.oid.startswith(GITLINK) for ref in ctx.docs.refs
    ):
        hint = f"create {path} with at least `version_floor: 1000`"
        if not ctx.docs.refs:
            # Not one file of an inventory: a repository that has none yet, or the wrong
            # --inventory-dir.
            where = f"{ctx.docs.inventory_dir}/" if ctx.docs.inventory_dir else "the repository"
            hint = (
                f"nothing is in {where}: `gitprov init .` writes a new one into inventory/; if "
                "yours lives elsewhere in the repository, pass --inventory-dir DIR before "
                "the command"
            )
        yield error(path, 0, 0, CODE, "the fleet settings file is missing", hint)
