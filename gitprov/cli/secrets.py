"""`gitprov secrets`: key pairs and sealed values (inventory/secrets.yaml)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path

from gitprov import DOCS_URL
from gitprov.cli.common import (
    Example,
    Output,
    Subparsers,
    add_action,
    add_command,
    session,
)
from gitprov.errors import GitprovError, UsageError
from gitprov.unsafe import line_safe


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "secrets",
        run,
        help="sealed secrets: keygen, set, list, rotate",
        description="Secrets are sealed one by one to the repository's public key in "
        "inventory/secrets.yaml: anyone can add one; only the publisher's private key "
        f"opens them ({DOCS_URL}/keys.md).",
        examples=(
            (
                "gitprov secrets keygen --out /etc/gitprov/private-key",
                "a key pair: the private key into FILE, the public key printed",
            ),
            (
                "gitprov secrets set sip_2001",
                "seal a value read from stdin (or asked for) as sip_2001",
            ),
            ("gitprov secrets list", "the sealed secrets' names and digests"),
        ),
    )
    ss = p.add_subparsers(dest="secrets_cmd", metavar="ACTION", required=True)

    def action(
        name: str, help: str, description: str, examples: Sequence[Example]
    ) -> argparse.ArgumentParser:
        return add_action(ss, name, help=help, description=description, examples=examples)

    k = action(
        "keygen",
        "make a key pair",
        "Write a new private key into FILE (mode 0600; keep it off git, on the publisher "
        "only: a FILE inside a git work tree is refused) and print its public key "
        "(gitprov-pk-…), which goes into "
        "inventory/secrets.yaml with `gitprov secrets rotate --new-public-key …`. Needs no "
        "repository. E.g. `gitprov secrets keygen --out /etc/gitprov/private-key`.",
        (
            (
                "gitprov secrets keygen --out /etc/gitprov/private-key",
                "the private key into FILE (mode 0600), its public key printed",
            ),
        ),
    )
    k.add_argument(
        "--out", required=True, metavar="FILE", help="file for the private key (created, mode 0600)"
    )
    s = action(
        "set",
        "seal a value (from stdin, or a prompt on a terminal) as NAME",
        "Seal a value to the public key of inventory/secrets.yaml (in the work tree; commit "
        "it) as NAME, replacing one of that name. The value is read from stdin (trailing "
        "newlines dropped), or asked for without echo on a terminal. Needs no private key. "
        "E.g. `printf %s 'p4ss' | gitprov secrets set sip_2001`, then `password: !secret "
        "sip_2001` in a device file.",
        (
            (
                "gitprov secrets set sip_2001",
                "seal the value typed (or piped: printf %s 'p4ss' | …) as sip_2001",
            ),
        ),
    )
    s.add_argument("name", help="the secret's name; refer to it as !secret NAME")
    action(
        "list",
        "names and digests of the sealed secrets",
        "Print each secret of inventory/secrets.yaml (in the work tree) with a digest of "
        "its sealed text, which changes when the value is set or rotated; never a value.",
        (("gitprov secrets list", "each sealed secret's name and digest, never its value"),),
    )
    r = action(
        "rotate",
        "re-seal everything to a new public key",
        "Open every secret of inventory/secrets.yaml with the current private key "
        "(--private-key-file before the command, or $GITPROV_PRIVATE_KEY(_FILE)) and seal "
        "it again to NEW_PUBLIC_KEY, which replaces public_key: (in the work tree; commit "
        "it, then give the publisher the new private key). E.g. `gitprov secrets keygen "
        "--out ~/new.key` (a private key is never written into the repository), then "
        "`gitprov --private-key-file ~/old.key secrets rotate --new-public-key "
        f"gitprov-pk-…` ({DOCS_URL}/keys.md, 'Sealed secrets'). Every device "
        "that uses a secret gets a new version once.",
        (
            (
                "gitprov secrets rotate --new-public-key gitprov-pk-KEY",
                "re-seal every secret to a new key pair's public key",
            ),
        ),
    )
    r.add_argument(
        "--new-public-key",
        required=True,
        help="gitprov-pk-… of the new key pair",
    )


def run(args: argparse.Namespace, out: Output) -> int:
    if args.secrets_cmd == "keygen":
        from gitprov.app import keygen

        public = keygen(Path(args.out))
        out.info(line_safe(f"private key written to {args.out} (mode 600; keep it off git)"))
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
        from gitprov.secrets import SecretError, check_name, yaml_name  # (cryptography)

        try:
            check_name(args.name)
        except SecretError as exc:
            # (the name is the operator's argument: refused before a value is asked for)
            raise UsageError(exc.message, hint=exc.hint) from None
        known: set[str] = set()
        with contextlib.suppress(GitprovError):  # (setting one says what is wrong)
            known = {name for name, _ in s.secrets_list()}
        path = s.secrets_set(args.name, _read_value(args.name))
        if args.name in known:
            # (a new master key gives every device that uses it a new key and version)
            out.info(
                line_safe(
                    f"replaced {args.name} in {path}: every device that uses it gets a new "
                    "file and version at the next publish"
                )
            )
        else:
            named = yaml_name(args.name)
            out.info(line_safe(f"sealed {args.name} into {path}; refer to it as !secret {named}"))
        return 0
    _check_public_key(args.new_public_key)
    count = s.secrets_rotate(args.new_public_key)
    out.info(line_safe(f"re-sealed {count} secret(s) to the new public key in {s.secrets_path()}"))
    return 0


def _read_value(name: str) -> str:
    # (the bound of a value is also that of what is read: /dev/zero never ends)
    from gitprov.secrets import VALUE_MAX

    if sys.stdin is None:  # (closed: `<&-`)
        raise UsageError(
            f"no value of {name}: stdin is closed",
            hint=f"pipe the value in (`printf %s VALUE | gitprov secrets set {name}`), or "
            "run it on a terminal to be asked",
        )
    if sys.stdin.isatty():
        try:
            return getpass.getpass(f"value of {name}: ")
        except EOFError:  # (Ctrl-D at the prompt)
            raise UsageError(
                f"no value of {name} was typed: nothing was sealed",
                hint="type the value at the prompt (it is not shown), or pipe it in",
            ) from None
    raw = getattr(sys.stdin, "buffer", None)  # (a text stream given in its place has none)
    data: bytes | str = (
        raw.read(VALUE_MAX + 1) if raw is not None else sys.stdin.read(VALUE_MAX + 1)
    )
    if len(data) > VALUE_MAX:
        raise UsageError(
            f"the value of {name} on stdin is longer than {VALUE_MAX // 2**20} MiB: not a secret",
            hint="a secret is a password, a key or a certificate: pipe in just that",
        )
    if isinstance(data, str):
        return data.rstrip("\r\n")
    try:
        # (a value piped from a Windows tool ends in CRLF: neither is part of it)
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"the value of {name} on stdin is not UTF-8 text (byte {exc.start + 1})",
            hint="a secret is text; for binary data, seal its base64 "
            "(`base64 -w0 FILE | gitprov secrets set NAME`)",
        ) from None


def _check_public_key(text: str) -> None:
    """A usage error (exit 2) for a --new-public-key that is none, never shown: a private
    key pasted there is a secret."""
    from gitprov.secrets import is_public_key

    if is_public_key(text):
        return
    what = "a private key" if text.startswith("gitprov-sk-") else "not a gitprov public key"
    raise UsageError(
        f"argument --new-public-key: {what}",
        hint="give the gitprov-pk-… key that `gitprov secrets keygen` printed",
    )
