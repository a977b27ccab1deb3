"""Sealed secrets: values in git that only the publisher can read.

Each value is sealed on its own to the repository's public key (X25519 → HKDF-SHA256 →
ChaCha20-Poly1305), so anyone can add or change one secret in a pull request without
being able to read the others, and two pull requests that touch different secrets change
different lines of `secrets.yaml` and merge cleanly. The secret's name is bound into the
key derivation and the AEAD, so a sealed value copied to another name does not unseal.

Nothing here logs, and no message or repr carries a value or a key: names only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gitprov.errors import GitprovError, Problem, error
from gitprov.smallfile import NotAFile, read_small
from gitprov.unsafe import echoed

if TYPE_CHECKING:
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import MarkedYAMLError

__all__ = [
    "PRIVATE_KEY_ENV",
    "PRIVATE_KEY_FILE_ENV",
    "SecretError",
    "SecretsFile",
    "check_name",
    "dump_secrets_file",
    "generate_keypair",
    "load_private_key",
    "load_secrets_file",
    "public_key_of",
    "rewrite_secrets_file",
    "rotate",
    "seal",
    "sealed_digest",
    "unseal",
    "unseal_all",
    "yaml_name",
]

PRIVATE_KEY_ENV = "GITPROV_PRIVATE_KEY"
PRIVATE_KEY_FILE_ENV = "GITPROV_PRIVATE_KEY_FILE"

_SK_PREFIX = "gitprov-sk-"
_PK_PREFIX = "gitprov-pk-"
_SEALED_PREFIX = "v1:"
_CONTEXT = b"gitprov secret v1\0"
_RAW_KEY_LEN = 32
_NONCE_LEN = 12
_TAG_LEN = 16
_B64URL = r"[A-Za-z0-9_-]"
_KEY_TEXT_LEN = 43  # base64url of 32 bytes, unpadded
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A secret's value is at most this many bytes (secrets.yaml as a whole is bounded at
# 16 MiB): `secrets set` seals no more, and a build uses no more.
VALUE_MAX = 2**20
_KEY_BODY_RE = re.compile(_B64URL + f"{{{_KEY_TEXT_LEN}}}")
# (padded or not: the schema, which validate checks, takes both)
_SEALED_RE = re.compile(re.escape(_SEALED_PREFIX) + _B64URL + "+={0,2}")
_PUBLIC_RE = re.compile(re.escape(_PK_PREFIX) + _B64URL + f"{{{_KEY_TEXT_LEN}}}")
# Names that YAML would read as something other than the same string unless quoted
# (booleans and null in YAML 1.1 or 1.2, numbers, `.inf`, a leading `-`).
_PLAIN_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n", "null"})
_LEADING_COMMENTS = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\n)*")
_COMMENT = re.compile(r"#[^\n]*")
_HEADER = "# gitprov sealed secrets: one line per secret, sealed to public_key.\n"


class SecretError(GitprovError):
    """A secret could not be sealed, unsealed or read. Names the secret, never its value."""


def is_public_key(text: str) -> bool:
    """Whether `text` is written as a repository public key (gitprov-pk-…)."""
    return _PUBLIC_RE.fullmatch(text) is not None


def generate_keypair() -> tuple[str, str]:
    """A new repository key pair as text: (`gitprov-sk-…`, `gitprov-pk-…`)."""
    private = X25519PrivateKey.generate()
    return (
        _SK_PREFIX + _b64encode(private.private_bytes_raw()),
        _PK_PREFIX + _b64encode(private.public_key().public_bytes_raw()),
    )


def write_key_file(path: str | os.PathLike[str], text: str) -> None:
    """`text` (a private key, with its comment lines) as the new file `path`, mode 0600,
    durable on return: secrets sealed to its public key once the file was lost to a
    power cut could never be opened. Never over a file that exists (FileExistsError);
    on any other failure nothing is left, since an empty or cut-short key file would be
    refused as existing by the next try and read as a malformed key by the publisher."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def public_key_of(private_key: str) -> str:
    """The public key text that belongs to `private_key` (to check a key matches a file)."""
    raw = _parse_private(private_key).public_key().public_bytes_raw()
    return _PK_PREFIX + _b64encode(raw)


def seal(public_key: str, name: str, value: str) -> str:
    """Seal `value` for secret `name` to `public_key`: `v1:<base64url(epk||nonce||ct)>`.

    Randomised (fresh ephemeral key and nonce): sealing the same value twice gives two
    different texts. That is fine, it is the sealed file, not a device file.
    """
    check_name(name)
    recipient = _parse_public(public_key)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError:
        # (a low-order point, all zeros say: no key pair has it, and nothing sealed to it
        # could be opened)
        raise SecretError(
            "the public key is no usable key (a low-order X25519 point): nothing can be "
            "sealed to it",
            hint="use the public key `gitprov secrets keygen` printed",
        ) from None
    aead = _aead(shared, ephemeral_pub, recipient, name)
    nonce = os.urandom(_NONCE_LEN)
    ciphertext = aead.encrypt(nonce, value.encode("utf-8"), _aad(name))
    return _SEALED_PREFIX + _b64encode(ephemeral_pub + nonce + ciphertext)


def unseal(private_key: str, name: str, sealed: str) -> str:
    """Open a value sealed by `seal` for the same name; `SecretError` if it does not open."""
    check_name(name)
    private = _parse_private(private_key)
    raw = _decode_sealed(name, sealed)
    ephemeral_raw = raw[:_RAW_KEY_LEN]
    nonce = raw[_RAW_KEY_LEN : _RAW_KEY_LEN + _NONCE_LEN]
    ciphertext = raw[_RAW_KEY_LEN + _NONCE_LEN :]
    failure = SecretError(
        f"cannot unseal secret {name!r}: wrong private key, or the sealed value was "
        "altered or copied from another secret",
        hint=f"check that the private key belongs to the file's public_key; "
        f"if it does, seal {name!r} again",
    )
    try:
        ephemeral = X25519PublicKey.from_public_bytes(ephemeral_raw)
        # A low-order ephemeral key (only a forger would send one) makes exchange() fail.
        shared = private.exchange(ephemeral)
        aead = _aead(shared, ephemeral_raw, private.public_key(), name)
        plaintext = aead.decrypt(nonce, ciphertext, _aad(name))
    except (InvalidTag, ValueError):
        raise failure from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise failure from None


def sealed_size(sealed: str) -> int:
    """How many bytes of value a text of the form `v1:<base64url>` seals, from its length
    alone (no key needed): what `unseal` would return, were it to open."""
    body = len(sealed[len(_SEALED_PREFIX) :].rstrip("="))
    return body * 3 // 4 - (_RAW_KEY_LEN + _NONCE_LEN + _TAG_LEN)


def sealed_digest(sealed: str) -> str:
    """First 12 hex digits of SHA-256 of the sealed text, for plans ("secret changed").

    Not a hash of the value: a SIP PIN or a 6-digit password has so little entropy that
    anyone could hash every candidate and find it. The sealed text is already public (it is
    in git), so its digest reveals nothing more, yet it changes whenever the secret is
    re-sealed. Because sealing is randomised, re-sealing an unchanged value also shows as a
    change; only the holder of the private key can tell those apart.
    """
    return hashlib.sha256(sealed.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class SecretsFile:
    """`secrets.yaml`: the repository public key and the sealed values by name."""

    public_key: str
    sealed: Mapping[str, str]

    def __post_init__(self) -> None:
        if not _PUBLIC_RE.fullmatch(self.public_key):
            raise SecretError("public_key is not a gitprov public key (gitprov-pk-…)")
        for name, value in self.sealed.items():
            check_name(name)
            if not _SEALED_RE.fullmatch(value):
                raise SecretError(f"secret {name!r} is not a sealed value (v1:…)")
        # A read-only sorted copy: the caller's dict cannot change it afterwards, and
        # iteration order is the file order.
        frozen = MappingProxyType(dict(sorted(self.sealed.items())))
        object.__setattr__(self, "sealed", frozen)


def load_secrets_file(text: str, *, source: str = "secrets.yaml") -> SecretsFile:
    """Parse `secrets.yaml`; every problem is reported at once, with its position.

    Raises `SecretError` whose `problems` holds them. Messages never quote values: a value
    that is not sealed may be a plaintext password somebody pasted by mistake.
    """
    # Here, not at the top: a publish unseals secrets but never reads this file so.
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.parser import ParserError
    from ruamel.yaml.scanner import ScannerError

    try:
        doc = YAML(typ="rt").load(_without_leading_comments(text))
    except (ScannerError, ParserError) as exc:
        # These describe tokens ("mapping values are not allowed here"), not content.
        line, col = _mark(exc)
        problem = error(source, line, col, "secrets-syntax", f"YAML syntax error: {exc.problem}")
        raise _problems_error(source, [problem]) from None
    except YAMLError as exc:
        # Constructor errors (duplicate keys among them) quote the values, so say less.
        line, col = _mark(exc) if isinstance(exc, MarkedYAMLError) else (0, 0)
        problem = error(
            source,
            line,
            col,
            "secrets-syntax",
            "invalid YAML (duplicate key or unsupported construct)",
            hint="each secret name may appear once",
        )
        raise _problems_error(source, [problem]) from None

    problems: list[Problem] = []
    if not isinstance(doc, CommentedMap):
        problems.append(
            error(
                source,
                1,
                1,
                "secrets-schema",
                "expected a mapping with public_key and secrets",
            )
        )
        raise _problems_error(source, problems)

    for key in doc:
        if key not in ("public_key", "secrets"):
            line, col = _key_pos(doc, key)
            problems.append(
                error(
                    source,
                    line,
                    col,
                    "secrets-schema",
                    f"unknown key {echoed(str(key), 80)}",
                    hint="only public_key and secrets belong here",
                )
            )

    public_key = doc.get("public_key")
    if public_key is None:
        problems.append(error(source, 1, 1, "secrets-schema", "public_key is missing"))
    elif not isinstance(public_key, str) or not _PUBLIC_RE.fullmatch(public_key):
        line, col = _value_pos(doc, "public_key")
        problems.append(
            error(
                source,
                line,
                col,
                "secrets-public-key",
                "public_key is not a gitprov public key (gitprov-pk- and 43 base64url chars)",
                hint="it must be the public half; never put the private key (gitprov-sk-) here",
            )
        )

    sealed: dict[str, str] = {}
    section = doc.get("secrets")
    if section is not None and not isinstance(section, CommentedMap):
        line, col = _value_pos(doc, "secrets")
        problems.append(
            error(source, line, col, "secrets-schema", "secrets must be a mapping NAME: v1:…")
        )
    elif section is not None:
        for name, value in section.items():
            line, col = _key_pos(section, name)
            if not isinstance(name, str):
                problems.append(
                    error(
                        source,
                        line,
                        col,
                        "secret-name",
                        "secret name is not a string",
                        hint="quote names that YAML reads as numbers or booleans",
                    )
                )
            elif not NAME_RE.fullmatch(name):
                problems.append(
                    error(
                        source,
                        line,
                        col,
                        "secret-name",
                        f"invalid secret name {echoed(name, 80)}",
                        hint="use 1-64 letters, digits, '_', '.' or '-'",
                    )
                )
            elif not isinstance(value, str) or not _SEALED_RE.fullmatch(value):
                vline, vcol = _value_pos(section, name)
                problems.append(
                    error(
                        source,
                        vline,
                        vcol,
                        "secret-not-sealed",
                        f"secret {name!r} is not a sealed value (v1:…)",
                        hint="seal it with the repository public key; never commit a plaintext",
                    )
                )
            else:
                sealed[name] = value

    if problems:
        raise _problems_error(source, problems)
    assert isinstance(public_key, str)  # no problems means it was checked above
    return SecretsFile(public_key, sealed)


def dump_secrets_file(sf: SecretsFile) -> str:
    """Stable text: a fixed header, public_key, then one `NAME: v1:…` line per secret, sorted.

    Written by hand rather than through a YAML emitter so that the layout can never change
    with an emitter's version or settings: adding or re-sealing a secret is a one-line diff.
    """
    lines = [_HEADER, f"public_key: {sf.public_key}\n"]
    if not sf.sealed:
        lines.append("secrets: {}\n")
    else:
        lines.append("secrets:\n")
        lines.extend(f"  {yaml_name(name)}: {value}\n" for name, value in sf.sealed.items())
    return "".join(lines)


def rewrite_secrets_file(text: str, old: SecretsFile, new: SecretsFile) -> str:
    """`new` as the text of the file that held `old` as `text`, its comments kept.

    `set` and `rotate` wrote `dump_secrets_file(new)` over the file, which dropped every
    comment a person had added (who owns a SIP account, why a key is kept). When `text`
    is the standard layout plus whole-line comments and blank lines, each of those lines
    stays where it was, next to the secret it sits by; a new secret's line goes in its
    sorted place. Any other layout is written anew in the standard one.
    """
    lines = text.splitlines(keepends=True)
    body = [i for i, line in enumerate(lines) if not _is_comment_line(line)]
    standard = dump_secrets_file(old).splitlines(keepends=True)
    if [lines[i] for i in body] != [ln for ln in standard if not _is_comment_line(ln)]:
        return dump_secrets_file(new)
    fresh = dict(new.sealed)
    pending = sorted(name for name in fresh if name not in old.sealed)
    names = list(old.sealed)
    # (a new line goes right after the secret before it, above the comments that
    # belong to the secret after it)
    after = {body[1]: names[0] if names else None}
    after.update((i, names[k + 1] if k + 1 < len(names) else None) for k, i in enumerate(body[2:]))
    secret_at = dict(zip(body[2:], names, strict=True))
    out: list[str] = []
    for i, line in enumerate(lines):
        if i == body[0]:
            out.append(f"public_key: {new.public_key}\n")
        elif i == body[1]:
            out.append("secrets:\n" if fresh else "secrets: {}\n")
        elif i in secret_at:
            name = secret_at[i]
            if name in fresh:
                out.append(f"  {yaml_name(name)}: {fresh[name]}\n")
        else:
            out.append(line)
        if i in after:
            bound = after[i]
            while pending and (bound is None or pending[0] < bound):
                name = pending.pop(0)
                out.append(f"  {yaml_name(name)}: {fresh[name]}\n")
    return "".join(out)


def _is_comment_line(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def unseal_all(sf: SecretsFile, private_key: str) -> dict[str, str]:
    """Every secret in the file, unsealed. For the publisher only."""
    _check_belongs(sf, private_key)
    return {name: unseal(private_key, name, value) for name, value in sf.sealed.items()}


def rotate(sf: SecretsFile, old_private: str, new_public: str) -> SecretsFile:
    """Re-seal every secret to `new_public` (after a key leak or a publisher change)."""
    _check_belongs(sf, old_private)
    _parse_public(new_public)
    resealed = {
        name: seal(new_public, name, unseal(old_private, name, value))
        for name, value in sf.sealed.items()
    }
    return SecretsFile(new_public, resealed)


def load_private_key(env: Mapping[str, str], path: str | None) -> str | None:
    """The publisher's private key: `--private-key-file` PATH, else $GITPROV_PRIVATE_KEY
    (the key text), else $GITPROV_PRIVATE_KEY_FILE; None if none is given.

    An empty variable counts as unset: CI systems expand an undefined secret to "".
    A key file holds the key on one line; blank lines and `#` comments are ignored.
    """
    if path is not None:
        return _read_key_file(path, "--private-key-file")
    text = env.get(PRIVATE_KEY_ENV)
    if text:
        return _checked_private_text(text.strip(), f"${PRIVATE_KEY_ENV}")
    file_path = env.get(PRIVATE_KEY_FILE_ENV)
    if file_path:
        return _read_key_file(file_path, f"${PRIVATE_KEY_FILE_ENV}")
    return None


# --- internals ---------------------------------------------------------------------------


def _aead(
    shared: bytes, ephemeral_pub: bytes, recipient: X25519PublicKey, name: str
) -> ChaCha20Poly1305:
    # Both public keys go into the salt (as in libsodium's sealed boxes) so the derived key
    # is bound to this exchange; the name goes into info so the key differs per secret.
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_pub + recipient.public_bytes_raw(),
        info=_CONTEXT + name.encode("utf-8"),
    ).derive(shared)
    return ChaCha20Poly1305(key)


def _aad(name: str) -> bytes:
    # Redundant with the HKDF info, but makes "moved to another name" fail in the AEAD
    # itself should the derivation ever change.
    return _CONTEXT + name.encode("utf-8")


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        # (shown back, but not a screenful of it: a name is at most 64 characters)
        raise SecretError(
            f"invalid secret name {echoed(name, 80)}",
            hint="use 1-64 letters, digits, '_', '.' or '-'",
        )


def _check_belongs(sf: SecretsFile, private_key: str) -> None:
    if public_key_of(private_key) != sf.public_key:
        raise SecretError(
            "the private key does not belong to the secrets file's public_key",
            hint=f"use the key pair the secrets were sealed to (--private-key-file, "
            f"${PRIVATE_KEY_ENV} or ${PRIVATE_KEY_FILE_ENV})",
        )


def _decode_sealed(name: str, sealed: str) -> bytes:
    malformed = SecretError(
        f"secret {name!r} is not a sealed value (v1:…)",
        hint="seal it with the repository public key",
    )
    if not _SEALED_RE.fullmatch(sealed):
        raise malformed
    try:
        raw = _b64decode(sealed[len(_SEALED_PREFIX) :])
    except ValueError:
        raise malformed from None
    if len(raw) < _RAW_KEY_LEN + _NONCE_LEN + _TAG_LEN:
        raise malformed
    return raw


def _parse_private(text: str) -> X25519PrivateKey:
    text = text.strip()
    if text.startswith(_PK_PREFIX):
        raise SecretError(
            "a public key (gitprov-pk-) was given where the private key is needed",
            hint="the private key starts with gitprov-sk-",
        )
    raw = _parse_key_text(text, _SK_PREFIX)
    if raw is None:
        raise SecretError(
            "malformed private key: expected gitprov-sk- and 43 base64url characters",
            hint="give the whole line `gitprov secrets keygen` wrote into its --out file, "
            "nothing cut off or added",
        )
    return X25519PrivateKey.from_private_bytes(raw)


def _parse_public(text: str) -> X25519PublicKey:
    raw = _parse_key_text(text.strip(), _PK_PREFIX)
    if raw is None and text.strip().startswith(_SK_PREFIX):
        raise SecretError(
            "that is a private key (gitprov-sk-…), not a public one (not shown)",
            hint="give the public key (gitprov-pk-…, printed by `gitprov secrets keygen`); "
            "the private key goes to the publisher only: if it was pasted somewhere "
            "others see, make a new pair",
        )
    if raw is None:
        raise SecretError("malformed public key: expected gitprov-pk- and 43 base64url characters")
    return X25519PublicKey.from_public_bytes(raw)


def _parse_key_text(text: str, prefix: str) -> bytes | None:
    body = text[len(prefix) :]
    if not text.startswith(prefix) or not _KEY_BODY_RE.fullmatch(body):
        return None
    try:
        raw = _b64decode(body)
    except ValueError:
        return None
    return raw if len(raw) == _RAW_KEY_LEN else None


def _checked_private_text(text: str, origin: str) -> str:
    try:
        _parse_private(text)
    except SecretError as exc:
        # Say where the key came from; the content is never echoed.
        raise SecretError(f"private key from {origin}: {exc.message}", hint=exc.hint) from None
    return text


# A key file holds one line of 54 characters, and comments: anything larger is some other
# file (a pipe of `yes`). Read as a stream, so that a key given through a pipe
# (`<(pass show gitprov)`) still works; a device (/dev/zero was read until memory ran
# out) or a fifo nothing writes to (it blocked for ever) is refused.
KEY_FILE_MAX = 64 * 1024


def _read_key_file(path: str, origin: str) -> str:
    try:
        data = read_small(path, KEY_FILE_MAX)
    except NotAFile as exc:
        raise SecretError(
            f"the private key file {path} (from {origin}) is {exc.what}, not a file",
            hint="give the key file itself (or a pipe a command writes the key into: "
            "<(pass show gitprov))",
        ) from None
    except OSError as exc:
        raise SecretError(
            f"cannot read the private key file {path} (from {origin}): {exc.strerror}",
            hint="check the path and that this user may read it",
        ) from None
    if len(data) > KEY_FILE_MAX:
        raise SecretError(
            f"private key file {path} (from {origin}) is larger than {KEY_FILE_MAX // 1024} "
            "KiB: not a key file",
            hint="it should hold one line: gitprov-sk-…",
        )
    try:
        # (-sig: Notepad starts a file it saves as UTF-8 with a BOM, and the key line
        # then read as malformed though it looked whole)
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SecretError(
            f"private key file {path} (from {origin}) is not text",
            hint="it should hold one line: gitprov-sk-…",
        ) from None
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    if len(lines) != 1:
        raise SecretError(
            f"private key file {path} (from {origin}) must hold exactly one key line, "
            f"found {len(lines)}",
            hint="it should hold one line: gitprov-sk-…",
        )
    return _checked_private_text(lines[0], f"{origin} {path}")


def yaml_name(name: str) -> str:
    """A secret's name as YAML reads it back as that name: plain when it can be, else
    quoted (`!secret -` is a syntax error, `!secret "-"` the secret named -)."""
    if _PLAIN_NAME_RE.fullmatch(name) and name.lower() not in _YAML_WORDS:
        return name
    # NAME_RE excludes quotes and backslashes, so plain double quotes need no escaping.
    return f'"{name}"'


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def _without_leading_comments(text: str) -> str:
    # ruamel reads the comments before the first node in time quadratic in their length
    # (a 400 KB comment line took 3 s, one of 16 MiB would take hours; after a node they
    # cost nothing): none matters to what is read here, so each is read as the blank line
    # it could be, which keeps every line and column where it was. Only those: further
    # down, a `#` line may be part of a block scalar's value.
    head = _LEADING_COMMENTS.match(text)
    assert head is not None  # (it matches the empty string)
    return _COMMENT.sub("", head.group()) + text[head.end() :]


def _mark(exc: MarkedYAMLError) -> tuple[int, int]:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return 0, 0
    return mark.line + 1, mark.column + 1


def _key_pos(mapping: CommentedMap, key: object) -> tuple[int, int]:
    line, col = mapping.lc.key(key)
    return line + 1, col + 1


def _value_pos(mapping: CommentedMap, key: object) -> tuple[int, int]:
    line, col = mapping.lc.value(key)
    return line + 1, col + 1


def _problems_error(source: str, problems: list[Problem]) -> SecretError:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return SecretError(
        f"{first.where()}: {first.message}{more}", hint=first.hint, problems=tuple(problems)
    )
