"""`gitprov init`: start a new inventory repository."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from gitprov import REPOSITORY_URL, __version__
from gitprov.cli.common import Output, Subparsers, add_command
from gitprov.cli.defaults import RUNNER_LABEL
from gitprov.errors import UsageError
from gitprov.unsafe import UNSAFE, is_utf8, shown

if TYPE_CHECKING:
    from gitprov.init import ActionRef

# What gitprov.init.GITHUB_REPOSITORY is, without importing it (and pygit2) for --help.
GITHUB_REPOSITORY = REPOSITORY_URL.removeprefix("https://github.com/")


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "init",
        run,
        help="start a new inventory repository",
        description="Write a new inventory into DIR (a git repository is created there "
        "unless DIR is one's top; a DIR inside another repository is refused): fleet "
        "settings with comments, a file per supported model, a base profile, sealed "
        "secrets with a fresh key pair, a pre-commit hook, editor settings and schemas, "
        "GitHub workflows (validate and plan on pull requests, publish on main), a "
        "README. It validates as it is; nothing is committed.",
        examples=(
            (
                "gitprov init acme-fleet",
                "a new inventory in ./acme-fleet: settings, models, a profile, keys, CI workflows",
            ),
            (
                "gitprov init --name acme --no-workflows .",
                "here, in the repository you are in, without the GitHub workflows",
            ),
        ),
    )
    p.add_argument("dir", nargs="?", default=".", help="where to create it")
    p.add_argument("--name", help="the fleet's name (default: the directory's name)")
    p.add_argument(
        "--private-key-out",
        metavar="FILE",
        help="where to write the private key, outside the repository "
        "(default ~/.config/gitprov/NAME.key, mode 0600)",
    )
    g = p.add_argument_group("GitHub workflows")
    g.add_argument(
        "--action-ref",
        metavar="OWNER/NAME@SHA",
        help="the gitprov action the workflows use, pinned by its full commit id; add "
        "' # VERSION' to name its release (default: the commit of release tag "
        f"v{__version__} of {GITHUB_REPOSITORY}, asked of GitHub with git ls-remote; the "
        "release tag itself when GitHub cannot be reached)",
    )
    g.add_argument(
        "--runner-label",
        default=RUNNER_LABEL,
        help="the label of the provisioning server's self-hosted runner, which publishes",
    )
    g.add_argument(
        "--no-workflows",
        action="store_true",
        help="write no .github/ files (the inventory is not on GitHub)",
    )


def run(args: argparse.Namespace, out: Output) -> int:
    from gitprov import paths
    from gitprov.init import (
        check_target,
        github_files,
        init_inventory,
        parse_action_ref,
        release_action_ref,
        release_tag_ref,
    )

    if args.dir == "":
        raise UsageError(
            "an empty directory name", hint="give the directory to create, or . for this one"
        )
    for what, value in (("the directory", args.dir), ("--name", args.name or "")):
        if not is_utf8(value):
            # (the fleet is named after it, in files and a key written in UTF-8; and git
            # names its paths in UTF-8)
            raise UsageError(f"{what} '{shown(value)}' is not UTF-8", hint="give it in UTF-8")
        if "\t" in value or UNSAFE.search(value):
            # (printed in every line init writes, and the default key file is named so)
            raise UsageError(
                f"{what} '{shown(value)}' holds a control or invisible character",
                hint="give a name that reads as it is",
            )
    top = paths.absolute(args.dir, "the directory")
    name = args.name or top.name
    # The fleet's name is free text ("Acme / Berlin"); the key file's is one file name
    # in ~/.config/gitprov, never a path out of it.
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-") or "fleet"
    key = (
        Path(args.private_key_out)
        if args.private_key_out
        else Path.home() / ".config" / "gitprov" / f"{stem}.key"
    )
    check_target(top, key)  # an inventory already there is refused before GitHub is asked
    action: ActionRef | None = None
    if args.no_workflows:
        if args.action_ref:
            raise UsageError(
                "--action-ref and --no-workflows contradict each other", hint="give one"
            )
    else:
        if args.action_ref:
            action = parse_action_ref(args.action_ref)
        else:
            try:
                action = release_action_ref()
            except UsageError as exc:
                # Starting an inventory must not need GitHub; the tag works until the
                # commit is pinned.
                action = release_tag_ref()
                out.warn(
                    f"gitprov init: note: {exc.message}; the workflows use "
                    f"{action.uses} by tag: pin it by commit with --action-ref "
                    f"{GITHUB_REPOSITORY}@SHA (git ls-remote {REPOSITORY_URL} "
                    f"refs/tags/{action.version}) or edit .github/workflows/"
                )
        github_files(action, args.runner_label)  # a bad label fails before anything is written
    done = init_inventory(top, key, name, action, args.runner_label)
    out.info(f"created {len(done.files)} file(s) in {done.top}")
    out.data(f"private key: {done.private_key_file} (mode 600; give it to the publisher only)")
    out.info(f"public key: {done.public_key}")
    out.info(
        "next: gitprov validate --worktree; add devices under inventory/devices/ "
        "(MAC.yaml, or SITE/MAC.yaml at any depth); "
        f"then git add -A && git commit (publish with GITPROV_PRIVATE_KEY_FILE={key})"
    )
    return 0
