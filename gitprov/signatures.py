"""Publish only commits signed by a key the operator allows, as Flux verifies them.

The signature is read with pygit2 only to tell its kind; whether it is good, and by whom,
is git's own verdict (`git verify-commit --raw`), run with the operator's key list: an SSH
allowed-signers file (`gpg.ssh.allowedSignersFile`) and/or an OpenPGP keyring directory
(`GNUPGHOME`) holding only the allowed public keys. A kind the operator gave no key list
for is refused, so a key that happens to sit in the service user's own keyring never
counts. The operator's lists are never taken from the repository being verified.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pygit2

from gitprov.errors import GitprovError, UsageError

SSH = "ssh"
OPENPGP = "openpgp"
X509 = "x509"
_ARMOR = {
    b"-----BEGIN SSH SIGNATURE-----": SSH,
    b"-----BEGIN PGP SIGNATURE-----": OPENPGP,
    b"-----BEGIN PGP MESSAGE-----": OPENPGP,
    b"-----BEGIN SIGNED MESSAGE-----": X509,
}
TIMEOUT = 60.0


class UnsignedCommit(GitprovError):
    """The commit is not signed by an allowed key: it is not published."""


@dataclass(frozen=True)
class SignaturePolicy:
    """Whose signatures count: the operator's lists, never the repository's."""

    allowed_signers: Path | None = None  # SSH: git's allowed-signers file format
    gpg_home: Path | None = None  # OpenPGP: a GnuPG home holding the allowed public keys

    def __post_init__(self) -> None:
        if self.allowed_signers is None and self.gpg_home is None:
            raise UsageError(
                "signed commits are required but no allowed key is given",
                hint="pass --allowed-signers FILE (SSH keys) and/or --gpg-home DIR "
                "(an OpenPGP keyring), or set them in the publisher config",
            )


class Verified(NamedTuple):
    commit: str
    kind: str  # SSH or OPENPGP
    signer: str  # what git says of the signer: a principal or a key id and user id


def signature_kind(commit: pygit2.Commit) -> str | None:
    """SSH, OPENPGP or X509 by the signature's armour; None for an unsigned commit."""
    signature, _ = commit.gpg_signature
    if not signature:
        return None
    head = bytes(signature).lstrip()
    for armour, kind in _ARMOR.items():
        if head.startswith(armour):
            return kind
    return "unknown"


def verify_commit(
    repo: pygit2.Repository,
    commit: pygit2.Commit,
    policy: SignaturePolicy,
    env: Mapping[str, str] | None = None,
) -> Verified:
    """The commit's good signature by an allowed key, or UnsignedCommit naming its
    committer; UsageError when git cannot be run."""
    kind = signature_kind(commit)
    if kind is None:
        raise _refused(commit, "it is not signed")
    if kind == SSH and policy.allowed_signers is None:
        raise _refused(commit, "it is signed with an SSH key, and no --allowed-signers is given")
    if kind == OPENPGP and policy.gpg_home is None:
        raise _refused(commit, "it is signed with an OpenPGP key, and no --gpg-home is given")
    if kind not in (SSH, OPENPGP):
        raise _refused(commit, f"its signature is of a kind gitprov does not verify ({kind})")
    git = shutil.which("git")
    if git is None:
        raise UsageError(
            "checking commit signatures needs the git program", hint="install git (Debian: git)"
        )
    run_env = dict(os.environ if env is None else env)
    run_env["LC_ALL"] = "C"  # git's and gpg's messages are quoted in the refusal
    args = [git, "--git-dir", str(repo.path)]
    if kind == SSH:
        assert policy.allowed_signers is not None
        args += ["-c", f"gpg.ssh.allowedSignersFile={policy.allowed_signers.absolute()}"]
    else:
        assert policy.gpg_home is not None
        run_env["GNUPGHOME"] = str(policy.gpg_home.absolute())
    args += ["verify-commit", "--raw", str(commit.id)]
    try:
        done = subprocess.run(
            args, env=run_env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot run git verify-commit: {exc}") from exc
    said = done.stderr + done.stdout
    if done.returncode != 0:
        raise _refused(commit, f"git verify-commit says: {_reason(said, kind)}")
    return Verified(str(commit.id), kind, _signer(said, kind))


def _refused(commit: pygit2.Commit, why: str) -> UnsignedCommit:
    who = commit.committer
    return UnsignedCommit(
        f"commit {str(commit.id)[:12]} (committer {who.name} <{who.email}>) is not "
        f"signed by an allowed key: {why}; nothing was published, the last good files stay",
        hint="sign the commit with an allowed key (git commit -S) and push it; the "
        "operator keeps the allowed keys (--allowed-signers FILE, --gpg-home DIR)",
    )


def _reason(output: str, kind: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if kind == OPENPGP:
        status = {ln.split()[1]: ln for ln in lines if ln.startswith("[GNUPG:] ") and " " in ln}
        if "NO_PUBKEY" in status or "ERRSIG" in status:
            return "signed by a key that is not in the allowed keyring"
        if "BADSIG" in status:
            return "the signature does not match the commit"
        if "EXPKEYSIG" in status or "REVKEYSIG" in status:
            return "signed by an expired or revoked key"
        lines = [ln for ln in lines if not ln.startswith("[GNUPG:]")]
    if not lines:
        return "no good signature"
    return "; ".join(lines[-2:])[:300]


def _signer(output: str, kind: str) -> str:
    for ln in output.splitlines():
        if kind == SSH and ln.startswith('Good "git" signature for '):
            return ln.removeprefix('Good "git" signature for ').strip()
        if kind == OPENPGP and ln.startswith("[GNUPG:] GOODSIG "):
            return ln.removeprefix("[GNUPG:] GOODSIG ").strip()
    return ""
