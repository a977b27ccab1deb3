"""`gitprov versions`, `log`, `blame`: for auditors, what each device got and from whom."""

from __future__ import annotations

import argparse

from gitprov import DOCS_URL
from gitprov.cli.common import Output, Subparsers, add_command, add_format, mac, session
from gitprov.unsafe import printable


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "versions",
        run_versions,
        help="each device's version and the commit that last changed its file",
        description="Each device's DBID_DBASE_VERSION at a commit and the commit that last "
        "changed the device's file (a version_floor raised since renumbers it without a "
        f"change: `gitprov log MAC` lists that as renumbered; {DOCS_URL}/versions.md: the "
        "rule, and why it never goes down).",
        examples=(
            (
                "gitprov versions",
                "every device's DBID_DBASE_VERSION at HEAD and the commit that last "
                "changed its file",
            ),
            (
                "gitprov versions 0021f2011b19 --rev main --format json",
                "one device at main, for a program",
            ),
        ),
    )
    p.add_argument("macs", nargs="*", metavar="MAC", type=mac, help="only these devices")
    p.add_argument("--rev", default="HEAD", help="the commit, branch or tag")
    add_format(p)

    p = add_command(
        sub,
        "log",
        run_log,
        help="every version a device was given: when, by whom, why",
        description="Every version one device had on the first-parent history of REV, "
        "newest first, with the commit that set it (for a merge: the branch commit, and "
        "the merge that brought it).",
        examples=(
            (
                "gitprov log 0021f2011b19",
                "every version the device was given, newest first: when, by whom, why",
            ),
            (
                "gitprov log 00-21-F2-01-1B-19 --rev main --format json",
                "on main's history, for a program",
            ),
        ),
    )
    p.add_argument("mac", type=mac, help="the device's MAC, any spelling")
    p.add_argument("--rev", default="HEAD", help="the commit, branch or tag")
    add_format(p)

    p = add_command(
        sub,
        "blame",
        run_blame,
        help="where each value of a device's file comes from",
        description="Each rendered parameter with the YAML line that set it (after "
        "layering) and the commit and author that last changed that line.",
        examples=(
            (
                "gitprov blame 0021f2011b19",
                "each value of the device's file: the YAML line and the commit behind it",
            ),
            (
                "gitprov blame 0021f2011b19 sip.server",
                "one parameter only (its DBID key or readable name)",
            ),
        ),
    )
    p.add_argument("mac", type=mac, help="the device's MAC, any spelling")
    p.add_argument("param", nargs="?", type=_param, help="only this DBID key or readable name")
    p.add_argument("--rev", default="HEAD", help="the commit, branch or tag")
    add_format(p)


def run_versions(args: argparse.Namespace, out: Output) -> int:
    with out.working("versions"):
        rows = session(args, out).versions(args.rev, args.macs)
    if args.format == "json":
        out.json([{"mac": r.mac, "version": r.version, "commit": r.commit} for r in rows])
        return 0
    out.data(f"{'MAC':<14} {'VERSION':>9}  CHANGED BY")
    for r in rows:
        out.data(f"{r.mac:<14} {r.version:>9}  {r.commit[:12]} {printable(r.summary[:50])}")
    return 0


def run_log(args: argparse.Namespace, out: Output) -> int:
    with out.working("log"):
        changes = session(args, out).log(args.mac, args.rev)
    if args.format == "json":
        out.json(
            {
                "version": 1,
                "mac": args.mac,
                "changes": [
                    {
                        "commit": c.commit,
                        "set_by": c.set_by,
                        "event": c.event,
                        "dbase_version": c.version or None,
                        "author": c.author,
                        "when": c.when,
                        "summary": c.summary,
                    }
                    for c in reversed(changes)
                ],
            }
        )
        return 0
    for c in reversed(changes):
        version = f"version {c.version}" if c.event != "removed" else "removed"
        via = f"  (merged by {c.commit[:12]})" if c.set_by != c.commit else ""
        # (an author or a subject is any text a committer wrote: ESC would drive the
        # reader's terminal, a newline fake a line)
        who, what = printable(c.author), printable(c.summary)
        out.data(f"{c.set_by[:12]}  {c.when}  {version:<14} {c.event:<10} {who}: {what}{via}")
    return 0


def run_blame(args: argparse.Namespace, out: Output) -> int:
    with out.working("blame"):
        lines = session(args, out).blame(args.mac, args.rev, args.param)
    if args.format == "json":
        out.json(
            {
                "version": 1,
                "mac": args.mac,
                "params": [
                    {
                        "key": b.key,
                        "value": b.value,
                        "origin": b.origin,
                        "commit": b.commit,
                        "author": b.author,
                    }
                    for b in lines
                ],
            }
        )
        return 0
    for b in lines:
        who = f"{b.commit[:12]} {printable(b.author)}" if b.commit and b.author else "-"
        out.data(f"{b.key}={b.value}\n    from {b.origin}  ({who})")
    return 0


def _param(text: str) -> str:
    # (an empty one read as none: every parameter, where one was asked for)
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a DBID key or a readable name")
    return text
