"""`gitprov import conf DIR`, `gitprov import csv FILE`: bring an existing fleet in."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gitprov import DOCS_URL
from gitprov.cli.common import (
    Output,
    Subparsers,
    add_action,
    add_command,
    iterations,
    passphrase,
    session,
)
from gitprov.cli.defaults import IMPORT_PREFIX, IMPORT_THRESHOLD, ITERATIONS, MODES, NO_ENCRYPTION

if TYPE_CHECKING:
    from gitprov.importer import ImportResult

THRESHOLD_HELP = (
    "a value goes into a profile when more than PERCENT%% of the devices (and at least "
    "two) share it: PREFIX over all devices, PREFIX-MODEL over each model's; device files "
    "keep what differs. A value in a profile costs one line there and one in each device "
    "that differs, so from 50 (a majority) on it saves lines; higher keeps profiles to "
    "what nearly every device shares (50..99)"
)


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "import",
        run,
        help="bring an existing fleet into the inventory (param.conf files or a CSV)",
        description="Write device files, profiles and sealed secrets into the inventory "
        "(work tree) from the param.conf files of the provisioning server gitprov replaces, "
        "or from a spreadsheet. Everything is checked first: any problem is reported with "
        "its place and nothing is written; nothing is committed either. See "
        f"{DOCS_URL}/inventory.md, "
        '"Importing a fleet".',
        examples=(
            (
                "gitprov import conf /srv/tftp --model IP542N --dry-run",
                "report what importing a server's plaintext files would write; write nothing",
            ),
            ("gitprov import csv devices.csv", "one device file per row of a spreadsheet"),
        ),
    )
    ss = p.add_subparsers(dest="source_kind", metavar="SOURCE", required=True)
    c = add_action(
        ss,
        "conf",
        help="a directory of param.conf files, plaintext or encrypted",
        description="Import DIR's param.conf files, one per device, named after its MAC in "
        "any spelling (fv0021f2011b19.conf, 0021F2011B19.cfg, 00-21-f2-01-1b-19.cfg); a "
        "file without one in its name is taken when its Profile Rule holds one. Encrypted "
        "files (openssl enc's Salted__ format) open with --key-file or --key. Each device "
        "keeps the key it holds (its Profile Rule's, else its file's) as its own `key:`, "
        "sealed like every password. version_floor is raised above the highest "
        "DBID_DBASE_VERSION read, so that the devices apply the first published file.",
        examples=(
            (
                "gitprov import conf /srv/tftp --model IP542N --dry-run",
                "check every file and report what would be written; write nothing",
            ),
            (
                "gitprov import conf /srv/tftp --key-file keys.txt --models models.txt",
                "encrypted files: each device's key and model from a `MAC VALUE` list",
            ),
        ),
    )
    c.add_argument("dir", help="the directory of param.conf files (not searched recursively)")
    c.add_argument(
        "--model", metavar="NAME", help="the model of every device the --models file does not name"
    )
    c.add_argument(
        "--models",
        metavar="FILE",
        help="the model of each device: `MAC MODEL` per line (or MAC,MODEL; `*` for every "
        "other MAC)",
    )
    c.add_argument(
        "--key-file",
        metavar="FILE",
        help="keys of encrypted files: `MAC KEY` per line (or MAC,KEY CSV; `*` for every "
        "other MAC; # comments)",
    )
    c.add_argument(
        "--key",
        metavar="KEY",
        type=passphrase,
        help="the key of every encrypted file the key file does not name (other users can "
        "see a command line: prefer a `* KEY` line in --key-file)",
    )
    c.add_argument(
        "--mode",
        default="auto",
        choices=["auto", *(m for m in MODES if m != NO_ENCRYPTION)],
        help="how the files were encrypted; auto tries openssl-md5, then openssl-sha256",
    )
    c.add_argument(
        "--iterations",
        type=iterations,
        default=ITERATIONS,
        help="PBKDF2 iterations (openssl-pbkdf2)",
    )
    c.add_argument(
        "--threshold", type=int, default=IMPORT_THRESHOLD, metavar="PERCENT", help=THRESHOLD_HELP
    )
    c.add_argument(
        "--profile-prefix",
        default=IMPORT_PREFIX,
        metavar="PREFIX",
        help="name of the profiles the import writes",
    )
    c.add_argument(
        "--version-floor",
        type=int,
        metavar="N",
        help="set version_floor to N (above the highest DBID_DBASE_VERSION read), e.g. "
        "with a margin for devices that may hold more than their files say",
    )
    _common(c)
    v = add_action(
        ss,
        "csv",
        help="a spreadsheet: one device per row",
        description="Import FILE (UTF-8; comma, semicolon or TAB, as the header row uses): a "
        "header row, then one device per row. Columns: mac and model (required), profile, "
        "serial, description, lineN.FIELD for line N (line1.account, line1.password, "
        "line2.display_name, ...), and parameter names (sip.server) or raw DBID_* keys. An "
        "empty cell sets nothing; a line with an account is enabled unless its "
        "lineN.enabled cell says 0. Passwords are sealed.",
        examples=(
            (
                "gitprov import csv devices.csv --dry-run",
                "check every row and report what would be written; write nothing",
            ),
            ("gitprov import csv devices.csv --force", "also replace the device files that exist"),
        ),
    )
    v.add_argument("file", help="the CSV file")
    _common(v)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force", action="store_true", help="replace device files that exist (default: skip them)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="check and report everything, write nothing"
    )


def run(args: argparse.Namespace, out: Output) -> int:
    from gitprov.importer import ConfOptions, ImportRefused, import_conf, import_csv

    s = session(args, out)
    try:
        if args.source_kind == "conf":
            options = ConfOptions(
                Path(args.dir),
                model=args.model,
                models_file=Path(args.models) if args.models else None,
                key=args.key,
                key_file=Path(args.key_file) if args.key_file else None,
                mode=args.mode,
                iterations=args.iterations,
                threshold=args.threshold,
                prefix=args.profile_prefix,
                version_floor=args.version_floor,
                force=args.force,
                dry_run=args.dry_run,
            )
            result = import_conf(s, options, out.progress())
        else:
            result = import_csv(
                s, Path(args.file), force=args.force, dry_run=args.dry_run, progress=out.progress()
            )
    except ImportRefused as exc:
        out.problems(exc.problems, "text", out.stderr)
        out.warn(f"gitprov: import refused: {exc.message}")
        if exc.hint:
            out.warn(f"    hint: {exc.hint}")
        return 1
    _render(result, out)
    return 0


def _render(result: ImportResult, out: Output) -> None:
    for f in result.files:
        if f.action == "skipped":
            out.data(f"skipped   {f.source}: {f.detail}")
        else:
            out.data(f"{f.action:<9} {f.source} -> {f.written} ({f.detail})")
    if result.warnings:
        out.problems(result.warnings, "text", out.stderr)
    verb = "would import" if result.dry_run else "imported"
    out.info(f"{verb} {result.imported} device(s), skipped {result.skipped}")
    if result.profiles:
        out.info(f"profiles: {', '.join(result.profiles)}")
    if result.secrets:
        out.info(f"sealed {result.secrets} secret(s) to the repository's public key")
    if result.version_floor is not None:
        before, after = result.version_floor
        out.info(
            f"version_floor: {before} -> {after} (the highest DBID_DBASE_VERSION read: "
            f"{result.highest_version}); devices get {after + 1} or more"
        )
    if result.unknown_keys:
        out.info(
            "kept as raw keys, not in the parameter catalog (GP114 warnings in validate): "
            + ", ".join(result.unknown_keys)
        )
    if result.dry_run:
        out.info("dry run: nothing was written")
    elif result.imported:
        out.info(
            "next: review `git status` and `git diff`, run `gitprov validate --worktree`, "
            "then commit"
        )
