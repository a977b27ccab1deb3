"""`gitprov secrets`: key pairs and sealed values (inventory/secrets.yaml)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from gitprov.cli.common import Output, Subparsers, add_command, common_parent, session
from gitprov.errors import UsageError


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "secrets",
        run,
        help="sealed secrets: keygen, set, list, rotate",
        description="Secrets are sealed one by one to the repository's public key in "
        "inventory/secrets.yaml: anyone can add one; only the publisher's private key "
        "opens them (docs/keys.md).",
    )
    ss = p.add_subparsers(dest="secrets_cmd", metavar="ACTION", required=True)
    parents = [common_parent()]
    k = ss.add_parser("keygen", help="make a key pair", parents=parents)
    k.add_argument("--out", required=True, help="file for the private key (created, mode 0600)")
    s = ss.add_parser(
        "set", help="seal a value (from stdin, or a prompt on a terminal) as NAME", parents=parents
    )
    s.add_argument("name", help="the secret's name; refer to it as !secret NAME")
    ss.add_parser("list", help="names and digests of the sealed secrets", parents=parents)
    r = ss.add_parser("rotate", help="re-seal everything to a new public key", parents=parents)
    r.add_argument("--new-public-key", required=True, help="gitprov-pk-… of the new key pair")


def run(args: argparse.Namespace, out: Output) -> int:
    if args.secrets_cmd == "keygen":
        from gitprov.app import keygen

        public = keygen(Path(args.out))
        out.info(f"private key written to {args.out} (mode 600; keep it off git)")
        out.data(f"public key: {public}")
        out.info(
            "put the public key into inventory/secrets.yaml (public_key:) or run "
            "`gitprov secrets rotate --new-public-key …`"
        )
        return 0
    s = session(args, out)
    if args.secrets_cmd == "list":
        for name, digest in s.secrets_list():
            out.data(f"{name}  {digest}")
        return 0
    if args.secrets_cmd == "set":
        path = s.secrets_set(args.name, _read_value(args.name))
        out.info(f"sealed {args.name} into {path}; refer to it as !secret {args.name}")
        return 0
    count = s.secrets_rotate(args.new_public_key)
    out.info(f"re-sealed {count} secret(s) to the new public key in {s.secrets_path()}")
    return 0


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"value of {name}: ")
    raw = getattr(sys.stdin, "buffer", None)  # (a text stream given in its place has none)
    if raw is None:
        return sys.stdin.read().rstrip("\n")
    data: bytes = raw.read()
    try:
        return data.decode("utf-8").rstrip("\n")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"the value of {name} on stdin is not UTF-8 text (byte {exc.start + 1})",
            hint="a secret is text; for binary data, seal its base64 "
            "(`base64 -w0 FILE | gitprov secrets set NAME`)",
        ) from None
