"""`gitprov plan`: what merging a change would do to each device, for a pull request."""

from __future__ import annotations

import argparse

from gitprov.cli.common import Output, Subparsers, add_command, session


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "plan",
        run,
        help="what merging a change would do to each device",
        description="Render both sides with secrets redacted and show, per device, the "
        "diff of its file and its version bump. No private key needed. For pull "
        "requests: gitprov plan --base origin/main --format markdown",
    )
    p.add_argument("--base", default="main", help="the branch the change goes into")
    p.add_argument("--rev", default="HEAD", help="the change")
    p.add_argument(
        "--format",
        choices=["text", "json", "markdown"],
        default="text",
        help="text; json (schemas/output/plan-output.schema.json); markdown (a PR comment)",
    )


def run(args: argparse.Namespace, out: Output) -> int:
    result = session(args, out).plan(args.base, args.rev)
    if args.format == "json":
        out.json(
            {
                "version": 1,
                "base": result.base,
                "head": result.head,
                "unchanged": result.unchanged,
                "devices": [
                    {
                        "mac": c.mac,
                        "change": str(c.change),
                        "file": c.file_name,
                        "old_version": c.old_version,
                        "new_version": c.new_version,
                        "diff": list(c.diff),
                    }
                    for c in result.changes
                ],
            }
        )
        return 0
    md = args.format == "markdown"
    title = f"gitprov plan {result.base[:12]}..{result.head[:12]}"
    out.data(f"### {title}\n" if md else title)
    if not result.changes:
        out.data(f"no device changes ({result.unchanged} unchanged)")
        return 0
    if md:
        out.data("| device | change | file | version |\n|---|---|---|---|")
    for c in result.changes:
        ver = f"{c.old_version or '-'} → {c.new_version or '-'}"
        if md:
            out.data(f"| `{c.mac}` | {c.change} | `{c.file_name}` | {ver} |")
        else:
            out.data(f"  {c.change:<7} {c.mac}  {c.file_name}  version {ver}")
    out.data(
        f"\n{len(result.changes)} device(s) change, {result.unchanged} unchanged; new "
        "versions as merging it into the base gives them (a fast-forward gives the same)"
    )
    for c in result.changes:
        if md:
            out.data(f"\n<details><summary>{c.mac}</summary>\n\n```diff")
        else:
            out.data()
        out.data("\n".join(c.diff))
        if md:
            out.data("```\n</details>")
    return 0
