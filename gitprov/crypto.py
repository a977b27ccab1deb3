"""OpenSSL-compatible encryption of device files, with a derived (not random) salt.

The default output is byte-for-byte what `openssl enc -aes-256-cbc -md md5 -k KEY` would
write if it had picked our salt: `Salted__`, 8-byte salt, AES-256-CBC with PKCS#7 padding,
key and IV from EVP_BytesToKey. That is the SPA `[--key KEY]` format the devices decrypt
(the SPA model the devices follow; docs/device-checklist.md, E1 and E2).

The salt is the first 8 bytes of HMAC-SHA256(key, encrypted bytes), so the same commit and
the same keys give byte-identical files on every machine (docs/design.md, invariant 1).
The price is that equal plaintexts under one key give equal ciphertexts, which is exactly
the reproducibility we want and leaks nothing across devices, whose keys differ.

Keys are passphrases (`-k`), never logged, never put in exception messages or reprs: the
key is an argument of each call and is not stored on any object.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import hmac
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher as _AesCipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from gitprov.errors import GitprovError
from gitprov.macros import normalise_mac

__all__ = [
    "Cipher",
    "DecryptError",
    "Mode",
    "WrongKey",
    "decrypt",
    "derive_device_key",
    "encrypt",
]

MAGIC = b"Salted__"
GZIP_MAGIC = b"\x1f\x8b"
SALT_LEN = 8
_KEY_LEN = 32
_IV_LEN = 16
_BLOCK = 16
# gzip header byte 9 is the OS that wrote the file; zlib fills it from its build platform
# (3 on Linux, 19 on macOS), which would make "the same commit" differ between machines.
# 255 means "unknown" and is what RFC 1952 reserves for exactly this.
_GZIP_OS_BYTE = 9
_GZIP_OS_UNKNOWN = 255

DEVICE_KEY_SALT = b"gitprov device key v1"
_MIN_DEVICE_KEY_LEN = 16
_MAX_DEVICE_KEY_LEN = 128


class DecryptError(GitprovError):
    """Data did not decrypt: wrong key, wrong mode, or not an encrypted file.

    The message names what failed, never the key.
    """


class WrongKey(DecryptError):
    """An encrypted file that this key (with this mode's key derivation) does not open;
    not one that is damaged, or not encrypted at all."""


class Mode(StrEnum):
    """How a device file is encrypted; each maps to one `openssl enc` command line.

    A `str` enum (StrEnum is `str, Enum` with `str()` giving the value), so settings
    compare and serialise as their YAML spelling.
    """

    # `openssl enc -aes-256-cbc -md md5 -k KEY`: what SPA-style firmware (OpenSSL 0.9.7) reads.
    OPENSSL_MD5 = "openssl-md5"
    # `openssl enc -aes-256-cbc -k KEY` on OpenSSL >= 1.1 (EVP_BytesToKey with SHA-256).
    OPENSSL_SHA256 = "openssl-sha256"
    # `openssl enc -aes-256-cbc -pbkdf2 -iter N -k KEY` (PBKDF2-HMAC-SHA256).
    OPENSSL_PBKDF2 = "openssl-pbkdf2"
    # Plaintext (optionally gzipped): only where the operator chose it.
    NONE = "none"


# The most PBKDF2 iterations taken, as the inventory's schema allows: past it a key
# takes minutes to derive (and past 2**31 - 1 none can be derived at all).
MAX_ITERATIONS = 10_000_000


@dataclass(frozen=True)
class Cipher:
    """One encryption setting (per model: the vendor's exact algorithm is not public).

    `iterations` only matters for `openssl-pbkdf2`; `gzip` compresses before encrypting
    (and gunzips after decrypting), as SPA provisioning allows.
    """

    mode: Mode = Mode.OPENSSL_MD5
    iterations: int = 10000
    gzip: bool = False

    def __post_init__(self) -> None:
        # Settings arrive from YAML as plain strings; accept "openssl-md5" as well as the enum.
        try:
            mode = Mode(self.mode)
        except ValueError:
            raise GitprovError(
                f"unknown encryption mode {str(self.mode)!r}",
                hint="use one of: " + ", ".join(m.value for m in Mode),
            ) from None
        object.__setattr__(self, "mode", mode)
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise GitprovError("encryption iterations must be an integer")
        if mode is Mode.OPENSSL_PBKDF2 and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise GitprovError(
                f"PBKDF2 iterations must be from 1 to {MAX_ITERATIONS:,}, not {self.iterations:,}",
                hint="openssl's default is 10000; the device must be told the same -iter",
            )

    def encrypt(self, plaintext: bytes, key: str) -> bytes:
        """Encrypt deterministically: same plaintext, key and settings → same bytes."""
        payload = _gzip(plaintext) if self.gzip else plaintext
        if self.mode is Mode.NONE:
            return payload
        key_bytes = _key_bytes(key)
        salt = hmac.digest(key_bytes, payload, "sha256")[:SALT_LEN]  # derived_salt
        aes_key, iv = self._key_iv(key_bytes, salt)
        # PKCS#7 by hand: the padder object costs more than the AES of a device file.
        fill = _BLOCK - len(payload) % _BLOCK
        enc = _AesCipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
        return MAGIC + salt + enc.update(payload + bytes((fill,)) * fill) + enc.finalize()

    def decrypt(
        self,
        data: bytes,
        key: str,
        *,
        expect_derived_salt: bool = False,
        expect: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        """Decrypt what `encrypt` (or `openssl enc` with the same settings) produced.

        Raises `WrongKey` on a wrong key, `DecryptError` on malformed data. CBC with PKCS#7
        has no MAC: about 1 time in 256 a wrong key passes the padding check and this
        "succeeds" with garbage (the same holds for `openssl enc -d`). Two checks close
        that. `expect` says what the plaintext (gunzipped) must be, e.g.
        `gitprov.paramconf.is_param_file`: a wrong key's random bytes fail it; it works
        for any file, `openssl enc`'s too. For files gitprov itself wrote,
        `expect_derived_salt=True` also checks the salt against HMAC(key, payload), which
        turns that 1/256 into 1/2**64; files made by `openssl enc` have random salts and
        must be decrypted without it.
        """
        if self.mode is Mode.NONE:
            payload = data
        else:
            key_bytes = _key_bytes(key)
            if len(data) < len(MAGIC) + SALT_LEN + _BLOCK or not data.startswith(MAGIC):
                raise DecryptError(
                    f"not an encrypted file: expected {MAGIC.decode()!r} and a salt "
                    f"followed by at least one {_BLOCK}-byte block ({len(data)} bytes given)",
                    hint=f"is the file really encrypted with {self.mode.value}?",
                )
            salt = data[len(MAGIC) : len(MAGIC) + SALT_LEN]
            body = data[len(MAGIC) + SALT_LEN :]
            if len(body) % _BLOCK:
                raise DecryptError(
                    f"truncated encrypted file: ciphertext is {len(body)} bytes, "
                    f"not a multiple of {_BLOCK}"
                )
            aes_key, iv = self._key_iv(key_bytes, salt)
            dec = _AesCipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
            padded = dec.update(body) + dec.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            try:
                payload = unpadder.update(padded) + unpadder.finalize()
            except ValueError:
                raise WrongKey(
                    "bad decrypt: wrong key or wrong encryption mode",
                    hint=f"check the device key and that the file was made with {self.mode.value}",
                ) from None
            if expect_derived_salt and not hmac.compare_digest(salt, derived_salt(payload, key)):
                raise WrongKey(
                    "bad decrypt: the salt does not match the content (wrong key, "
                    "or the file was not written by gitprov)"
                )
        if expect is None:
            return _gunzip(payload) if self.gzip else payload
        return self._expected(payload, expect)

    def _expected(self, payload: bytes, expect: Callable[[bytes], bool]) -> bytes:
        """The plaintext of `payload` (gunzipped with `gzip`) when it is what `expect`
        takes. A gzip setting that does not match the file is said as such, so that a
        right key is never called wrong: the odds that garbage gunzips, or that it passes
        `expect`, are negligible."""
        encrypted = self.mode is not Mode.NONE
        plain = payload
        if self.gzip:
            try:
                plain = _gunzip(payload)
            except DecryptError:
                if expect(payload):
                    raise DecryptError(
                        "the data is a configuration, not gzip: the file was not gzipped",
                        hint="turn gzip off (`--gzip`; a model's encryption.gzip)",
                    ) from None
                if encrypted and not payload.startswith(GZIP_MAGIC):
                    raise WrongKey(
                        "bad decrypt: the decrypted data is neither gzip nor a configuration "
                        "(wrong key or wrong encryption mode)",
                        hint=f"check the device key and that the file was made with "
                        f"{self.mode.value}",
                    ) from None
                raise  # (gzip that is damaged: its own message)
        if expect(plain):
            return plain
        if not self.gzip and plain.startswith(GZIP_MAGIC) and _gunzips_to(plain, expect):
            raise DecryptError(
                "the data is a gzipped configuration: the file was gzipped",
                hint="turn gzip on (`--gzip`; a model's encryption.gzip)",
            )
        if encrypted:
            raise WrongKey(
                "bad decrypt: what the key decrypts is not a device's configuration "
                "(wrong key or wrong encryption mode)",
                hint=f"check the device key and that the file was made with {self.mode.value}",
            )
        raise DecryptError(
            "not a device's configuration"
            + (": it is encrypted (it starts with Salted__)" if payload.startswith(MAGIC) else ""),
            hint="give the encryption mode it was made with (`--mode`), and its key",
        )

    def _key_iv(self, key: bytes, salt: bytes) -> tuple[bytes, bytes]:
        if self.mode is Mode.OPENSSL_MD5:
            return _evp_bytes_to_key("md5", key, salt)
        if self.mode is Mode.OPENSSL_SHA256:
            return _evp_bytes_to_key("sha256", key, salt)
        return _pbkdf2_key_iv(key, salt, self.iterations)


_DEFAULT = Cipher()


def encrypt(plaintext: bytes, key: str) -> bytes:
    """`openssl enc -aes-256-cbc -md md5 -k KEY`, with the derived salt."""
    return _DEFAULT.encrypt(plaintext, key)


def decrypt(data: bytes, key: str) -> bytes:
    """Inverse of `encrypt`; see `Cipher.decrypt` for what a wrong key can do."""
    return _DEFAULT.decrypt(data, key)


def derived_salt(payload: bytes, key: str) -> bytes:
    """First 8 bytes of HMAC-SHA256(key, payload): the salt that makes output reproducible."""
    return hmac.new(key.encode("utf-8"), payload, hashlib.sha256).digest()[:SALT_LEN]


def derive_device_key(master: str, mac: str, *, length: int = 24) -> str:
    """A per-device passphrase: HKDF-SHA256(master, salt="gitprov device key v1", info=MAC).

    The MAC is normalised to 12 lower-case hex digits first, so `00:21:F2:01:1B:19` and
    `0021f2011b19` give the same key. Output is lower-case base32 without padding
    (alphabet a-z2-7): 5 bits per character (24 characters = 120 bits, hex would give 96),
    and none of the characters that mean something inside a Profile Rule (`$` starts a
    macro, space and `]` end the `[--key …]` option, quotes) or that a web UI or shell
    might alter; lower case so a UI that folds case cannot change the key.
    """
    if not master:
        raise GitprovError(
            "the master secret for device keys is empty",
            hint="seal a non-empty master secret in secrets.yaml",
        )
    if not _MIN_DEVICE_KEY_LEN <= length <= _MAX_DEVICE_KEY_LEN:
        raise GitprovError(
            f"device key length must be {_MIN_DEVICE_KEY_LEN}..{_MAX_DEVICE_KEY_LEN} "
            f"characters, not {length}",
            hint=f"{_MIN_DEVICE_KEY_LEN} base32 characters are 80 bits",
        )
    info = _mac12(mac).encode("ascii")
    okm = _hkdf_expand(_hkdf_extract(master.encode("utf-8")), info, (length * 5 + 7) // 8)
    return _base32(okm)[:length]


_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def _base32(data: bytes) -> str:
    """base64.b32encode lower-cased without its padding (which is pure Python in 3.11,
    and as slow as the rest of the derivation together)."""
    bits = len(data) * 8
    count = -(-bits // 5)
    number = int.from_bytes(data, "big") << (count * 5 - bits)
    return "".join(_B32[(number >> shift) & 31] for shift in range(count * 5 - 5, -1, -5))


# RFC 5869 in two steps, because the first depends on the master secret alone: a fleet's
# devices share one master, so its pseudo-random key is computed once instead of once per
# device (HKDF objects cost ~20 us each, one HMAC ~1 us). The cache holds derived keys
# keyed by the master, which lives as long in the resolver that handed it over; nothing
# here is ever in a repr or message. Bounded: masters are few (current and previous).
@functools.lru_cache(maxsize=64)
def _hkdf_extract(master: bytes) -> bytes:
    return hmac.digest(DEVICE_KEY_SALT, master, "sha256")


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


_MAC12 = re.compile("[0-9a-f]{12}")


def _mac12(mac: str) -> str:
    if _MAC12.fullmatch(mac):  # the inventory's own spelling
        return mac
    normal = normalise_mac(mac)
    if normal is None:
        raise GitprovError(
            f"not a MAC address: {mac!r}",
            hint="write 12 hex digits, optionally separated by ':' or '-'",
        )
    return normal


def _key_bytes(key: str) -> bytes:
    # `openssl enc -k ""` refuses an empty passphrase too; a NUL could not reach openssl's
    # argv, so such a key could never be given to the real tool for checking.
    if not key:
        raise GitprovError("encryption key is empty", hint="give every device a key")
    if "\0" in key:
        raise GitprovError("encryption key contains a NUL character")
    return key.encode("utf-8")


def _evp_bytes_to_key(digest: str, key: bytes, salt: bytes) -> tuple[bytes, bytes]:
    # EVP_BytesToKey with count=1: D_i = H(D_{i-1} || key || salt) until 48 bytes. Cheap
    # (a few hashes), so not cached: a cache lookup would cost about as much.
    out = b""
    block = b""
    while len(out) < _KEY_LEN + _IV_LEN:
        block = hashlib.new(digest, block + key + salt).digest()
        out += block
    return out[:_KEY_LEN], out[_KEY_LEN : _KEY_LEN + _IV_LEN]


# PBKDF2 costs ~8 ms per derivation, and its salt is an input, so with a per-plaintext
# salt "derive once per key" is impossible: every new file content needs a new derivation.
# What repeats is the same (key, salt) pair, i.e. the same payload: encrypt-then-verify in
# publish, `verify`/`plan` decrypting files just written, re-publishing unchanged devices
# after a cache wipe. Those hits are what this cache is for; it is bounded so a 100k-device
# publish does not keep 100k entries, and it keys on everything the result depends on
# (key, salt, iterations; the digest is fixed) so a hit can never be wrong. The key bytes
# live in the cache as long as the process does, which is no worse than the callers that
# hold them; they never appear in a repr or message.
@functools.lru_cache(maxsize=4096)
def _pbkdf2_key_iv(key: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    out = hashlib.pbkdf2_hmac("sha256", key, salt, iterations, _KEY_LEN + _IV_LEN)
    return out[:_KEY_LEN], out[_KEY_LEN:]


def _gzip(data: bytes) -> bytes:
    # mtime=0 and no file name make the header reproducible; the OS byte is normalised
    # (see _GZIP_OS_BYTE). The deflate stream itself comes from the zlib this Python links:
    # stock zlib is stable, but a drop-in like zlib-ng may compress differently.
    out = bytearray(gzip.compress(data, compresslevel=9, mtime=0))
    out[_GZIP_OS_BYTE] = _GZIP_OS_UNKNOWN
    return bytes(out)


def _gunzips_to(data: bytes, expect: Callable[[bytes], bool]) -> bool:
    try:
        return expect(gunzip(data))
    except (TooLarge, OSError, EOFError, zlib.error):
        return False


def _gunzip(data: bytes) -> bytes:
    try:
        return gunzip(data)
    except TooLarge:
        raise DecryptError(
            f"the decrypted data expands past {PLAIN_MAX // 2**20} MiB: not a device's "
            "configuration",
            hint="a param.conf is a few kilobytes; check where the file came from",
        ) from None
    except (OSError, EOFError, zlib.error):
        raise DecryptError(
            "decrypted data is not gzip: wrong key, or the file was not gzipped",
            hint="check the device key and the model's gzip setting",
        ) from None


# A device's configuration, decompressed, is a few kilobytes: past this it is something
# else (a kilobyte of gzip expands to a megabyte of zeros, a megabyte to a gigabyte).
PLAIN_MAX = 16 * 2**20


class TooLarge(ValueError):
    """Data that would expand past its bound."""


def gunzip(data: bytes, limit: int = PLAIN_MAX) -> bytes:
    """gzip.decompress(data), every member, refused (TooLarge) as soon as more than
    `limit` bytes come out, before they take the memory a bomb asks for. Other damage
    raises what gzip.decompress raises for it (OSError, EOFError, zlib.error)."""
    out = bytearray()
    while data:
        member = zlib.decompressobj(wbits=31)  # (31: a gzip header and trailer)
        out += member.decompress(data, limit + 1 - len(out))
        if len(out) > limit or member.unconsumed_tail:
            raise TooLarge(f"more than {limit} bytes")
        if not member.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        data = member.unused_data.lstrip(b"\0")  # (zeros pad members, as gzip reads them)
    return bytes(out)
