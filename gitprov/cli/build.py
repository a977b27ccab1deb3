"""`gitprov build`, `show`, `key`, `decrypt`: a commit's files, one device's file, its key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gitprov.cli.common import (
    Output,
    Subparsers,
    add_command,
    add_format,
    add_rev,
    add_workers,
    iterations,
    mac,
    passphrase,
    readable_file,
    session,
    utf8_text,
)
from gitprov.cli.defaults import ITERATIONS, MODES
from gitprov.errors import GitprovError, UsageError
from gitprov.smallfile import NotAFile, read_small
from gitprov.unsafe import line_safe


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "build",
        run_build,
        help="compile a commit into DIR (no publish)",
        description="Write DIR/plain/ (the files as text, secrets redacted unless "
        "--reveal) and DIR/encrypted/ (what publish would serve). Reproducible: the same "
        "commit and keys give the same bytes.",
        examples=(
            (
                "gitprov build --out /tmp/fleet",
                "HEAD's files into /tmp/fleet/plain (secrets redacted) and /tmp/fleet/encrypted",
            ),
            (
                "gitprov build --rev v2.1 --out build --format json",
                "a tag's files, and a JSON summary on stdout",
            ),
        ),
    )
    p.add_argument("--rev", default="HEAD", help="the commit, branch or tag to build")
    p.add_argument(
        "--out", required=True, metavar="DIR", type=_out_dir, help="output directory (created)"
    )
    p.add_argument(
        "--reveal", action="store_true", help="write plain/ with the real secrets (mode 0600)"
    )
    add_workers(p)
    add_format(p)

    p = add_command(
        sub,
        "show",
        run_show,
        help="one device's rendered file, secrets redacted",
        description="Print one device's param.conf as it is rendered (before encryption), "
        "with DBID_DBASE_VERSION (not with --worktree: uncommitted files have none yet).",
        examples=(
            (
                "gitprov show 0021f2011b19",
                "a device's file at HEAD, as it renders before encryption",
            ),
            (
                "gitprov show 00:21:F2:01:1B:19 --worktree",
                "as your uncommitted files render it (any spelling of the MAC)",
            ),
        ),
    )
    p.add_argument("mac", type=mac, help="the device's MAC, any spelling")
    add_rev(p)
    p.add_argument(
        "--reveal", action="store_true", help="print the secrets too (needs the private key)"
    )
    add_format(p)

    p = add_command(
        sub,
        "key",
        run_key,
        help="print one device's encryption key (a secret!)",
        description="Print the passphrase a device's file is encrypted with (what its "
        "Profile Rule's [--key …] holds). Needs the private key.",
        examples=(
            (
                "gitprov key 0021f2011b19",
                "the passphrase of the device's Profile Rule [--key …] (needs the private key)",
            ),
        ),
    )
    p.add_argument("mac", type=mac, help="the device's MAC, any spelling")
    add_rev(p)
    add_format(p)

    p = add_command(
        sub,
        "decrypt",
        run_decrypt,
        help="decrypt a device file (- for stdin)",
        description="Decrypt a published device file as the device does, e.g. "
        "`curl -s http://HOST/fv0021f2011b19.conf | gitprov decrypt - --key KEY`.",
        examples=(
            (
                "gitprov decrypt var/http/fv0021f2011b19.conf --key KEY",
                "a served file, as the device decrypts it",
            ),
            (
                "gitprov decrypt - --key KEY",
                "from stdin: curl -s http://HOST/fv0021f2011b19.conf | gitprov decrypt - --key KEY",
            ),
        ),
    )
    p.add_argument("file", type=readable_file, help="the encrypted file, or - for stdin")
    p.add_argument(
        "--key",
        required=True,
        type=passphrase,
        help="the device's passphrase (`gitprov key MAC`)",
    )
    p.add_argument(
        "--mode",
        default="openssl-md5",
        choices=list(MODES),
        help="the model's cipher",
    )
    p.add_argument(
        "--iterations",
        type=iterations,
        default=ITERATIONS,
        help="PBKDF2 iterations (openssl-pbkdf2)",
    )
    p.add_argument("--gzip", action="store_true", help="gunzip after decrypting")


def run_build(args: argparse.Namespace, out: Output) -> int:
    with out.working("build"):
        built = session(args, out).build(args.rev, Path(args.out), args.reveal)
    if args.format == "json":
        out.json(
            {
                "version": 1,
                "commit": built.commit,
                "out": str(built.out),
                "files": built.files,
                "revealed": built.revealed,
                "stale": list(built.stale),
            }
        )
        return 0
    note = "plain/ holds secrets: keep it private" if built.revealed else "plain/ is redacted"
    out.info(
        line_safe(
            f"built {built.files} device file(s) of {built.commit[:12]} into {built.out}/"
            f"{{plain,encrypted}}/ ({note})"
        )
    )
    for name in built.stale:
        out.info(
            line_safe(f"note: {built.out}/{name} was not written by this build (left from before)")
        )
    return 0


def run_show(args: argparse.Namespace, out: Output) -> int:
    shown = session(args, out).show(args.mac, args.rev, args.worktree, args.reveal)
    if args.format == "json":
        out.json(
            {
                "version": 1,
                "mac": shown.mac,
                "file": shown.file_name,
                "dbase_version": shown.version,
                "revealed": args.reveal,
                "text": shown.text,
            }
        )
        return 0
    out.stdout.write(shown.text)
    return 0


def run_key(args: argparse.Namespace, out: Output) -> int:
    key = session(args, out).key(args.mac, args.rev, args.worktree)
    if args.format == "json":
        out.json({"version": 1, "mac": args.mac, "key": key})
    else:
        out.data(key)
    return 0


# What `decrypt` reads at most: a device's file is kilobytes; /dev/zero or a stray pipe
# would otherwise be read until memory runs out.
DECRYPT_MAX = 16 * 2**20


def run_decrypt(args: argparse.Namespace, out: Output) -> int:
    from gitprov.crypto import Cipher, DecryptError, Mode, WrongKey
    from gitprov.paramconf import is_param_file

    try:
        if args.file == "-":
            if sys.stdin is None:  # (closed: `<&-`)
                raise UsageError(
                    "no file to decrypt: stdin is closed",
                    hint="give FILE, or pipe the file in (`gitprov decrypt - < FILE`)",
                )
            data = sys.stdin.buffer.read(DECRYPT_MAX + 1)
        else:
            # (bounded, and a fifo nothing writes to refused: open() waited for a writer
            # for ever; `<(curl …)`, a pipe a command writes into, is read)
            data = read_small(args.file, DECRYPT_MAX)
    except NotAFile as exc:
        raise UsageError(
            f"{args.file} is {exc.what}, not a file",
            hint="give the file a device fetched, or pipe it in (`gitprov decrypt - < FILE`)",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    if len(data) > DECRYPT_MAX:
        raise UsageError(
            f"{'stdin' if args.file == '-' else args.file} holds more than "
            f"{DECRYPT_MAX // 2**20} MiB: not a device's configuration file",
            hint="give the file a device fetched (a param.conf is a few kilobytes)",
        )
    where = "stdin" if args.file == "-" else args.file
    cipher = Cipher(Mode(args.mode), args.iterations, args.gzip)
    try:
        # What comes out must be a device's file: the padding check alone let about one
        # wrong key in 256 through, and printed its garbage with exit 0.
        plain = cipher.decrypt(data, args.key, expect=is_param_file)
    except WrongKey as exc:
        raise GitprovError(
            f"{where}: {exc.message}",
            hint=f"`gitprov key {_mac_of(args.file)}` prints the key of the device's file; "
            "--mode, --iterations and --gzip must be its model's encryption settings",
        ) from None
    except DecryptError as exc:
        raise GitprovError(f"{where}: {exc.message}", hint=exc.hint) from None
    out.stdout.flush()
    sys.stdout.buffer.write(plain)
    return 0


def _mac_of(file: str) -> str:
    """The MAC in a device file's name, as `gitprov key` takes it; else `MAC`."""
    from gitprov.tools.serve import mac_part

    name = Path(file).name
    found = mac_part(name) if file != "-" else None
    return name[found[0] : found[1]].lower() if found else "MAC"


def _out_dir(text: str) -> str:
    """--out: an empty one meant the current directory, with --reveal plaintext
    secrets in a checkout that `git add -A` takes."""
    if not text:
        raise argparse.ArgumentTypeError("is empty: give the directory to write into")
    return utf8_text(text)
