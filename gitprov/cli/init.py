"""`gitprov init`: start a new inventory repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from gitprov.cli.common import Output, Subparsers, add_command
from gitprov.init import init_inventory


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "init",
        run,
        help="start a new inventory repository",
        description="Write a new inventory into DIR (a git repository is created if "
        "needed): fleet settings with comments, a file per supported model, a base "
        "profile, sealed secrets with a fresh key pair, a pre-commit hook, editor settings "
        "and schemas, a README. It validates as it is; nothing is committed.",
    )
    p.add_argument("dir", nargs="?", default=".", help="where to create it")
    p.add_argument("--name", help="the fleet's name (default: the directory's name)")
    p.add_argument(
        "--private-key-out",
        metavar="FILE",
        help="where to write the private key, outside the repository "
        "(default ~/.config/gitprov/NAME.key, mode 0600)",
    )


def run(args: argparse.Namespace, out: Output) -> int:
    top = Path(args.dir).absolute()
    name = args.name or top.name
    key = (
        Path(args.private_key_out)
        if args.private_key_out
        else Path.home() / ".config" / "gitprov" / f"{name}.key"
    )
    done = init_inventory(top, key, name)
    out.info(f"created {len(done.files)} file(s) in {done.top}")
    out.data(f"private key: {done.private_key_file} (mode 600; give it to the publisher only)")
    out.info(f"public key: {done.public_key}")
    out.info(
        "next: gitprov validate --worktree; add devices under inventory/devices/; "
        f"then git add -A && git commit (publish with GITPROV_PRIVATE_KEY_FILE={key})"
    )
    return 0
