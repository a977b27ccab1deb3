"""`gitprov validate`: every problem of the inventory at once, located."""

from __future__ import annotations

import argparse

from gitprov.cli.common import Output, Subparsers, add_command, add_rev, session


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "validate",
        run,
        help="check the inventory: every problem, located",
        description="Validate the inventory against the JSON Schemas and the semantic "
        "rules; every problem at once as file:line:col, with a hint. Exit 1 when there "
        "is an error (warnings alone exit 0).",
        examples=(
            ("gitprov validate --worktree", "the files you are editing, before you commit them"),
            (
                "gitprov validate --rev origin/main --strict",
                "a commit, with unknown DBID keys as errors",
            ),
            (
                "gitprov validate --format github",
                "annotations on a pull request's lines (GitHub Actions)",
            ),
        ),
    )
    add_rev(p)
    p.add_argument(
        "--format",
        choices=["text", "json", "github"],
        default="text",
        help="text; json (its schema: `gitprov schema validate-output`); github "
        "(workflow annotations)",
    )
    p.add_argument(
        "--strict", action="store_true", help="unknown DBID_* keys (GP114) are errors, not warnings"
    )


def run(args: argparse.Namespace, out: Output) -> int:
    with out.working("validate"):
        loaded = session(args, out).validate(args.rev, args.worktree)
    out.problems(loaded.problems, args.format)
    if args.format == "text" and not loaded.problems:
        n = loaded.docs.count()
        out.info(f"ok: {n} file(s), no problems")
    return 1 if loaded.errors else 0
