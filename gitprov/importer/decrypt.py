"""Opening a param.conf as the old server stored it: plaintext, gzip, or encrypted the way
`openssl enc -aes-256-cbc -k KEY` writes it (`Salted__`), with the key given for its MAC.

The cipher is found by trying: which modes and keys open the file, and whether what comes
out is a param.conf. `Opened` records what was found, so that a later check can refuse an
import whose devices read another cipher than gitprov would write.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gitprov.crypto import (
    GZIP_MAGIC,
    MAGIC,
    Cipher,
    DecryptError,
    Mode,
    TooLarge,
    WrongKey,
    gunzip,
)
from gitprov.errors import Problem, error
from gitprov.importer.problems import DECRYPT
from gitprov.importer.values import Opened
from gitprov.paramconf import is_param_file

# A param.conf decompressed: the bound of the files read (read_conf.MAX_FILE_BYTES).
MAX_PLAIN_BYTES = 1 << 20
# `--mode auto`: openssl before 1.1 (and SPA-style firmware) derives the key with MD5,
# later openssl with SHA-256.
AUTO_MODES = (Mode.OPENSSL_MD5, Mode.OPENSSL_SHA256)


def _gunzip(data: bytes) -> bytes | None:
    """The file decompressed; None when it is no gzip, or expands past a param.conf's
    bound (a gzip bomb: the 1 MiB file cap alone let one megabyte become a gigabyte)."""
    try:
        return gunzip(data, MAX_PLAIN_BYTES)
    except (OSError, EOFError, zlib.error, TooLarge):
        return None


@dataclass(frozen=True)
class Keys:
    """The keys given for encrypted files: per MAC (the key file), and one for the others."""

    by_mac: Mapping[str, str]
    default: str | None
    default_from: str

    def for_mac(self, mac: str | None) -> list[tuple[str, str]]:
        out = []
        if mac is not None and mac in self.by_mac:
            out.append((self.by_mac[mac], "the key file"))
        if self.default is not None:
            out.append((self.default, self.default_from))
        return out


def open_conf(
    data: bytes, mac: str | None, keys: Keys, modes: Sequence[Mode], iterations: int
) -> tuple[bytes | None, Opened | None, str]:
    """(plaintext, how, "" or why it did not open)."""
    if not data.startswith(MAGIC):
        if data.startswith(GZIP_MAGIC):
            plain = _gunzip(data)
            if plain is None:
                return None, None, "starts like gzip but does not decompress (within 1 MiB)"
            return plain, Opened(Mode.NONE, True, iterations), ""
        return data, Opened(Mode.NONE, False, iterations), ""
    candidates = keys.for_mac(mac)
    if not candidates:
        return None, None, "no key"
    structural = ""
    for mode in modes:
        cipher = Cipher(mode, iterations)
        for key, source in candidates:
            try:
                payload = cipher.decrypt(data, key)
            except DecryptError as exc:
                if not isinstance(exc, WrongKey):
                    structural = exc.message  # the same for every key: say it once
                continue
            zipped = payload.startswith(GZIP_MAGIC)
            if zipped:
                unzipped = _gunzip(payload)
                if unzipped is None:
                    continue
                payload = unzipped
            if is_param_file(payload):
                return payload, Opened(mode, zipped, iterations, key, source), ""
    return None, None, structural or "wrong key"


def decrypt_problem(shown: str, mac: str, why: str, modes: Sequence[Mode]) -> Problem:
    if why == "no key":
        return error(
            shown,
            1,
            1,
            DECRYPT,
            f"encrypted, and no key for {mac}",
            "add `MAC KEY` for it to the --key-file, or give --key",
        )
    if why == "wrong key":
        tried = " and ".join(m.value for m in modes)
        return error(
            shown,
            1,
            1,
            DECRYPT,
            f"does not decrypt with the key given for {mac} ({tried})",
            "check the key; files made with `openssl enc -pbkdf2` need --mode "
            "openssl-pbkdf2 and the right --iterations",
        )
    return error(
        shown,
        1,
        1,
        DECRYPT,
        f"damaged: {why}",
        "copy the file again from the server; it is not a complete encrypted file",
    )
