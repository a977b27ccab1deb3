"""`gitprov publish`: a commit's files into the HTTP and TFTP roots, atomically."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gitprov.cli.common import (
    Output,
    Subparsers,
    add_command,
    add_format,
    add_targets,
    add_workers,
    publisher_config_of,
    session,
    wait_seconds,
)
from gitprov.unsafe import line_safe

if TYPE_CHECKING:
    from gitprov.headstart import HeadStart


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "publish",
        run,
        help="write a commit's files into the roots, atomically",
        description="Build the commit and apply it to the HTTP and TFTP roots: changed "
        "files are replaced atomically, removed devices' files deleted, the manifest "
        "written last. Idempotent: a file is written only when its bytes change, or when "
        "its size, mtime or inode is not what the manifest recorded (it was edited, "
        "deleted or touched by hand: drift, restored); the commit the manifest names, "
        "into roots found intact, is not even built. A commit that does not descend "
        "from the published one is refused, and so is one that would give a device a "
        "version it already passed (the error names the version_floor to set), one that "
        "removes more devices than publish.max_removal allows, one that moves where files "
        "go, and, with --require-signed, one not signed by an allowed key: exit 1, "
        "nothing written.",
        examples=(
            ("gitprov publish --rev main", "main's files into the roots the fleet settings name"),
            (
                "gitprov publish --rev main --http-root /srv/http --tftp-root /srv/tftp "
                "--state-dir /var/lib/gitprov",
                "into the publisher's own directories",
            ),
            (
                "gitprov publish --rev main --require-signed --allowed-signers allowed_signers",
                "only if main's commit is signed by one of these SSH keys",
            ),
        ),
    )
    p.add_argument("--rev", default="HEAD", help="the commit, branch or tag to publish")
    add_targets(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="publish a commit that does not descend from the published one (versions "
        "still never go down)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="read every served file and compare its SHA-256 with the manifest instead "
        "of trusting its size, mtime and inode; rewrite those that differ",
    )
    p.add_argument(
        "--wait",
        type=wait_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another publish to finish (0: fail at once)",
    )
    add_workers(p)
    add_format(p)


def run(args: argparse.Namespace, out: Output) -> int:
    # Before anything else is imported: the lock, and the survey of the served files
    # forked off while the rest of gitprov loads (see gitprov.headstart).
    from gitprov.headstart import DiffAsked, head_start

    diff = DiffAsked(args.repo, args.rev, args.inventory_dir)
    with head_start(None if args.verify else args.state_dir, diff) as head:
        return _run(args, out, head)


def _run(args: argparse.Namespace, out: Output, head: HeadStart | None) -> int:
    config = publisher_config_of(args)
    with out.working("publish"):
        s = session(args, out)
        s.pipeline.one_commit = True  # this process publishes one commit and exits
        result = s.publish(
            args.rev,
            config,
            force=args.force,
            wait=args.wait,
            prune_unknown=args.prune_unknown,
            allow_mass_removal=args.allow_mass_removal,
            allow_target_change=args.allow_target_change,
            allow_stranding=args.allow_stranding,
            verify=args.verify,
            head=head,
        )
    entries = result.manifest.files
    changed = sorted({a.name for a in result.written})
    if args.format == "json":
        out.json(
            {
                "version": 1,
                "commit": result.commit,
                "previous": result.previous,
                "already_published": result.already_published,
                "roots": list(result.manifest.roots),
                "written": [
                    {
                        "name": n,
                        "kind": str(entries[n].kind),
                        "mac": entries[n].mac or None,
                        "version": entries[n].version or None,
                    }
                    for n in changed
                ],
                "removed": sorted({a.name for a in result.removed}),
                "unchanged": result.plan.unchanged,
                "drift": [{"root": d.root, "name": d.name, "kind": d.kind} for d in result.drift],
                "failures": dict(sorted(result.failures.items())),
                "notes": list(result.notes),
            }
        )
        return 1 if result.failures else 0
    short = result.commit[:12]
    for note in result.notes:
        out.info(f"note: {note}")
    if result.already_published:
        out.info(f"{short} is already published; nothing to write")
        return 0
    out.info(
        f"published {short}: {len(result.written)} file(s) written, "
        f"{len(result.removed)} removed, {result.plan.unchanged} unchanged "
        f"in {line_safe(', '.join(result.manifest.roots))}"
    )
    for name in changed[:20]:
        e = entries[name]
        out.info(f"  {name}  {e.mac}  version {e.version}" if e.mac else f"  {name}  {e.kind}")
    if len(changed) > 20:
        out.info(f"  … and {len(changed) - 20} more")
    for d in result.drift:
        # (a root that failed keeps what it had: the drift stays until a publish that works)
        done = "not restored: the root failed" if d.root in result.failures else "restored"
        out.info(line_safe(f"  drift: {d.root}/{d.name} was {d.kind} by hand; {done}"))
    for root, name in result.plan.unknown:
        done = "removed (--prune-unknown)" if args.prune_unknown else "left alone"
        # (a name anyone who writes into the root chose)
        out.info(line_safe(f"  note: {root}/{name} was not written by gitprov; {done}"))
    for root, why in sorted(result.failures.items()):
        out.warn(
            f"gitprov: error: {line_safe(root)}: {why}; it keeps its last good files "
            "(the other roots are published); publish again to retry"
        )
    return 1 if result.failures else 0
