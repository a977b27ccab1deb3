"""`gitprov history` and `gitprov verify`: for auditors, what the roots served and when,
and whether they hold what a commit produces."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gitprov.cli.common import (
    Output,
    Subparsers,
    add_command,
    add_format,
    add_state_dir,
    mac,
    publisher_config_of,
    readable_file,
    session,
)
from gitprov.cli.defaults import CONFIG_ENV
from gitprov.unsafe import printable

if TYPE_CHECKING:
    from gitprov import journal
    from gitprov.journal import Change, Entry, FileRecord


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "history",
        run_history,
        help="what the roots served, and when (the publish journal)",
        description="Read the publish journal (STATE_DIR/journal.jsonl: one entry per "
        "publish that changed what is served). Without options: every entry. --at DATE: "
        "what was live at that instant (the last entry at or before it). --mac MAC: every "
        "entry that gave that device a file, a new version, or removed it. Both: that "
        "device's file live at DATE. Reads the state dir only: no repository is needed "
        "with --state-dir.",
        examples=(
            ("gitprov history", "every publish that changed what is served"),
            (
                "gitprov history --at 2026-03-01T12:00:00Z --mac 0021f2011b19",
                "the device's file that was live at that instant",
            ),
        ),
    )
    p.add_argument(
        "--at",
        type=_instant,
        metavar="DATE",
        help="an instant: 2026-03-01 (00:00 UTC), 2026-03-01T12:00:00Z, "
        "2026-03-01T14:00:00+02:00; without an offset, UTC (never the local time zone)",
    )
    p.add_argument("--mac", type=mac, help="one device, any spelling of its MAC")
    add_state_dir(p)
    add_format(p)

    p = add_command(
        sub,
        "verify",
        run_verify,
        help="check the served roots hold byte for byte what a commit produces",
        description="Build the commit in memory as publish would (same private key, "
        "versions continued from the state dir's manifest) and compare every file with "
        "the roots: lists each file missing, extra (not produced by the commit, "
        "subdirectories included), or differing (with both SHA-256). Writes nothing. "
        "Exit 0 when the roots are identical, 1 when not.",
        examples=(
            ("gitprov verify", "the roots hold, byte for byte, what HEAD produces"),
            (
                "gitprov verify --rev main --http-root /srv/http --tftp-root /srv/tftp "
                "--state-dir /var/lib/gitprov",
                "the publisher's own directories, against main",
            ),
        ),
    )
    p.add_argument("--rev", default="HEAD", help="the commit, branch or tag to compare with")
    g = p.add_argument_group(
        "which roots (the publisher's, as for publish; else the fleet's publish: settings)"
    )
    g.add_argument(
        "--config",
        metavar="FILE",
        type=readable_file,
        help=f"the publisher's config file; default ${CONFIG_ENV}; options given here win",
    )
    g.add_argument("--http-root", action="append", metavar="DIR", default=[], help="an HTTP root")
    g.add_argument("--tftp-root", action="append", metavar="DIR", default=[], help="a TFTP root")
    g.add_argument("--state-dir", metavar="DIR", help="the publisher's state dir (its manifest)")
    g.add_argument("--firmware-dir", metavar="DIR", help="override publish.firmware_dir")
    g.add_argument("--stage-root", metavar="DIR", help="override publish.stage_root")
    g.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        default=[],
        help="an absolute directory the fleet settings' paths may point into",
    )
    p.set_defaults(require_signed=False, allowed_signers=None, gpg_home=None)
    add_format(p)


def _instant(text: str) -> datetime:
    from gitprov import journal

    try:
        return journal.parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- history ------------------------------------------------------------------------------
def run_history(args: argparse.Namespace, out: Output) -> int:
    from gitprov import journal

    config = publisher_config_of(args)
    read = session(args, out).read_journal(config)
    entries = read.entries
    if args.format == "json":
        doc: dict[str, Any] = {
            "version": 1,
            "journal": str(read.path),
            "at": journal.rfc3339(args.at) if args.at else None,
            "mac": args.mac,
            "live": None,
            "entries": [],
            "notes": list(read.notes),
        }
        if args.at is not None:
            live = journal.live_at(entries, args.at, args.mac)
            doc["live"] = _live_json(live) if live.entry is not None else None
        elif args.mac:
            doc["entries"] = [
                {**e.as_dict(), "changes": [c.as_dict() for c in mine]}
                for e, mine in journal.changes_of(entries, args.mac)
            ]
        else:
            doc["entries"] = [e.as_dict() for e in entries]
        out.json(doc)
        return 0
    for note in read.notes:
        out.warn(f"note: {printable(note)}")
    if args.at is not None:
        _print_live(out, journal.live_at(entries, args.at, args.mac), entries, args.mac)
    elif args.mac:
        found = journal.changes_of(entries, args.mac)
        for e, mine in found:
            for c in mine:
                for action, records in (
                    ("added", c.added),
                    ("changed", c.changed),
                    ("removed", c.removed),
                ):
                    for r in records:
                        out.data(_mac_line(e, c, action, r))
        if not found:
            out.info(f"{args.mac} never had a file in the journal ({printable(str(read.path))})")
    else:
        for e in entries:
            out.data(_entry_line(e))
        if not entries:
            out.info(f"the journal {printable(str(read.path))} has no entry yet")
    return 0


def _who(e: Entry) -> str:
    if e.info is None:
        return "(author not recorded)"
    i = e.info
    return f"{printable(i.author_name)} <{printable(i.author_email)}>: {printable(i.summary)}"


def _entry_line(e: Entry) -> str:
    added = sum(len(c.added) for c in e.changes)
    changed = sum(len(c.changed) for c in e.changes)
    removed = sum(len(c.removed) for c in e.changes)
    counts = f"+{added} ~{changed} -{removed}"
    flags = "".join(
        (
            " [recovered]" if e.recovered else "",
            f" [{len(e.failed_roots)} root(s) failed]" if e.failed_roots else "",
            f" [{len(e.repaired)} file(s) restored]" if e.repaired else "",
        )
    )
    return f"{e.time_text}  {printable(e.commit[:12])}  {counts:<14} {_who(e)}{flags}"


def _mac_line(e: Entry, c: Change, action: str, r: FileRecord) -> str:
    version = f"version {r.version}" if r.version is not None else "-"
    where = "" if set(c.roots) == set(e.roots) else f"  (in {_roots(c.roots)} only)"
    flag = " [recovered]" if e.recovered else ""
    return (
        f"{e.time_text}  {printable(e.commit[:12])}  {version:<14} {action:<8} "
        f"{printable(r.name)}  {_who(e)}{flag}{where}"
    )


def _roots(roots: tuple[str, ...]) -> str:
    return ", ".join(printable(r) for r in roots)


def _print_live(
    out: Output, live: journal.Live, entries: tuple[Entry, ...], only: str | None
) -> None:
    from gitprov import journal

    at = journal.rfc3339(live.at)
    e = live.entry
    if e is None:
        first = f" (its first entry is at {entries[0].time_text})" if entries else ""
        out.data(f"nothing was published at {at} by this journal{first}")
        return
    flag = " [recovered]" if e.recovered else ""
    out.data(f"live at {at}: {printable(e.commit)}, published {e.time_text}{flag}")
    if e.info is not None:
        out.data(f"  {_who(e)} (committed {printable(e.info.committed_at)})")
    for root, why in e.failed_roots.items():
        out.data(
            f"  {printable(root)} failed at that publish ({printable(why)}): it kept its files"
        )
    for roots, files in live.served:
        out.data(f"{_roots(roots)}:")
        for r in files:
            out.data("  " + _file_line(r))
        if not files:
            out.data(f"  (no file{' of ' + only if only else ''})")


def _file_line(r: FileRecord) -> str:
    parts = [printable(r.name), printable(r.kind)]
    if r.mac:
        parts.append(printable(r.mac))
    if r.version is not None:
        parts.append(f"version {r.version}")
    parts.append(f"sha256 {printable(r.sha256)}")
    return "  ".join(parts)


def _live_json(live: journal.Live) -> dict[str, Any]:
    assert live.entry is not None
    d = live.entry.as_dict()
    return {
        "time": d["time"],
        "commit": d["commit"],
        "previous": d["previous"],
        "recovered": d["recovered"],
        "author": d["author"],
        "committed_at": d["committed_at"],
        "summary": d["summary"],
        "failed_roots": d["failed_roots"],
        "served": [
            {"roots": list(roots), "files": [r.as_dict() for r in files]}
            for roots, files in live.served
        ],
    }


# -- verify -------------------------------------------------------------------------------
def run_verify(args: argparse.Namespace, out: Output) -> int:
    config = publisher_config_of(args)
    with out.working("verify"):
        result = session(args, out).verify(args.rev, config)
    if args.format == "json":
        out.json(
            {
                "version": 1,
                "commit": result.commit,
                "manifest_commit": result.manifest_commit,
                "identical": result.identical,
                "roots": list(result.roots),
                "compared": result.compared,
                "differences": [
                    {
                        "root": d.root,
                        "name": d.name,
                        "kind": d.kind,
                        "expected_sha256": d.expected_sha256,
                        "found_sha256": d.found_sha256,
                    }
                    for d in result.differences
                ],
                "notes": list(result.notes),
            }
        )
        return 0 if result.identical else 1
    short = result.commit[:12]
    for d in result.differences:
        path = printable(f"{d.root}/{d.name}")
        if d.kind == "differs":
            out.data(
                f"{path}: differs: expected sha256 {d.expected_sha256}, found {d.found_sha256}"
            )
        elif d.kind == "missing":
            out.data(f"{path}: missing (expected sha256 {d.expected_sha256})")
        elif d.kind == "extra":
            found = f"sha256 {d.found_sha256}" if d.found_sha256 else "unreadable"
            out.data(f"{path}: extra ({found}): {short} does not produce it")
        else:
            out.data(f"{path}: not a regular file (expected sha256 {d.expected_sha256})")
    for note in result.notes:
        out.info(f"note: {printable(note)}")
    roots = len(result.roots)
    if result.identical:
        out.info(
            f"verify: the roots hold exactly what {short} produces "
            f"({result.compared} file(s) in {roots} root(s))"
        )
        return 0
    out.warn(
        f"gitprov: {len(result.differences)} difference(s) between the served roots and "
        f"what {short} produces ({result.compared} file(s) expected in {roots} root(s))"
    )
    return 1
