"""gitprov.crypto against the real `openssl enc`, both ways, for every mode."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import random
import re
import shutil
import subprocess
import zlib
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher as AesCipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from gitprov import crypto
from gitprov.crypto import (
    MAX_ITERATIONS,
    Cipher,
    DecryptError,
    Mode,
    WrongKey,
    derive_device_key,
)
from gitprov.errors import GitprovError
from gitprov.formats import flyingvoice
from gitprov.paramconf import is_param_file
from tests.fixtures.gitrepo import ROOT

OPENSSL = shutil.which("openssl")
GUNZIP = shutil.which("gunzip")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="needs the openssl binary (Debian package `openssl`)"
)
needs_gzip = pytest.mark.skipif(
    GUNZIP is None, reason="needs the gzip/gunzip binaries (Debian package `gzip`)"
)

KEY = "s3cr3t-Key_01"
SIZES = [0, 1, 15, 16, 17, 4096, 100_000]


@dataclass(frozen=True)
class Case:
    id: str
    cipher: Cipher
    openssl_args: tuple[str, ...]


CASES = [
    Case("md5", Cipher(Mode.OPENSSL_MD5), ("-md", "md5")),
    Case("sha256", Cipher(Mode.OPENSSL_SHA256), ("-md", "sha256")),
    Case("pbkdf2", Cipher(Mode.OPENSSL_PBKDF2), ("-pbkdf2", "-iter", "10000")),
    Case(
        "pbkdf2-iter",
        Cipher(Mode.OPENSSL_PBKDF2, iterations=2500),
        ("-pbkdf2", "-iter", "2500"),
    ),
]
GZIP_CASE = Case("md5-gzip", Cipher(Mode.OPENSSL_MD5, gzip=True), ("-md", "md5"))


def plaintext(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def openssl(*args: str, data: bytes = b"") -> bytes:
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, "enc", "-aes-256-cbc", *args], input=data, capture_output=True, check=False
    )
    # openssl warns about the deprecated key derivation on stderr; only rc matters.
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@needs_openssl
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_openssl_decrypts_gitprov_output(case: Case, size: int) -> None:
    data = plaintext(size)
    encrypted = case.cipher.encrypt(data, KEY)
    assert encrypted.startswith(b"Salted__")
    assert openssl("-d", *case.openssl_args, "-k", KEY, data=encrypted) == data


@needs_openssl
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gitprov_decrypts_openssl_output(case: Case, size: int) -> None:
    data = plaintext(size)
    encrypted = openssl(*case.openssl_args, "-k", KEY, data=data)
    assert case.cipher.decrypt(encrypted, KEY) == data


@needs_openssl
@needs_gzip
@pytest.mark.parametrize("size", SIZES)
def test_gzip_mode_is_openssl_then_gunzip(size: int) -> None:
    assert GUNZIP is not None
    data = plaintext(size)
    encrypted = GZIP_CASE.cipher.encrypt(data, KEY)
    gzipped = openssl("-d", *GZIP_CASE.openssl_args, "-k", KEY, data=encrypted)
    gunzipped = subprocess.run([GUNZIP, "-c"], input=gzipped, capture_output=True, check=True)
    assert gunzipped.stdout == data


@needs_openssl
@needs_gzip
@pytest.mark.parametrize("size", SIZES)
def test_gzip_mode_decrypts_gzip_then_openssl(size: int) -> None:
    gzip_bin = shutil.which("gzip")
    assert gzip_bin is not None
    data = plaintext(size)
    gzipped = subprocess.run([gzip_bin, "-c", "-n"], input=data, capture_output=True, check=True)
    encrypted = openssl(*GZIP_CASE.openssl_args, "-k", KEY, data=gzipped.stdout)
    assert GZIP_CASE.cipher.decrypt(encrypted, KEY) == data


@needs_openssl
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_key_and_iv_match_openssl_print(case: Case) -> None:
    # Decrypt gitprov's output with the key and IV `openssl enc -P` derives for its salt.
    data = plaintext(100)
    encrypted = case.cipher.encrypt(data, KEY)
    salt = encrypted[8:16]
    printed = openssl(*case.openssl_args, "-k", KEY, "-S", salt.hex(), "-P").decode()
    fields = dict(re.findall(r"^(\w+)\s*=\s*([0-9A-Fa-f]+)$", printed, re.MULTILINE))
    assert fields["salt"].lower() == salt.hex()
    dec = AesCipher(
        algorithms.AES(bytes.fromhex(fields["key"])), modes.CBC(bytes.fromhex(fields["iv"]))
    ).decryptor()
    padded = dec.update(encrypted[16:]) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    assert unpadder.update(padded) + unpadder.finalize() == data


@needs_openssl
def test_utf8_key_reaches_openssl_as_utf8() -> None:
    key = "pässwörd-ключ"
    data = b"DBID_DBASE_VERSION=1\n"
    assert openssl("-d", "-md", "md5", "-k", key, data=crypto.encrypt(data, key)) == data


def test_module_functions_are_the_md5_default() -> None:
    data = b"DBID_SIP_ENABLE=1\t0\t0\t0\n"
    assert crypto.encrypt(data, KEY) == Cipher(Mode.OPENSSL_MD5).encrypt(data, KEY)
    assert crypto.decrypt(crypto.encrypt(data, KEY), KEY) == data


@pytest.mark.parametrize("cipher", [*(c.cipher for c in CASES), GZIP_CASE.cipher])
def test_deterministic_salt(cipher: Cipher) -> None:
    data = b"DBID_DBASE_VERSION=7\n" * 10
    first = cipher.encrypt(data, KEY)
    assert cipher.encrypt(data, KEY) == first
    assert cipher.decrypt(first, KEY) == data
    # What was encrypted: the gzip stream when gzip is on.
    encrypted_bytes = Cipher(cipher.mode, cipher.iterations).decrypt(first, KEY)
    # Salt = first 8 bytes of HMAC-SHA256(key, the bytes that get encrypted).
    expected = hmac.new(KEY.encode(), encrypted_bytes, hashlib.sha256).digest()[:8]
    assert first[8:16] == expected
    assert cipher.encrypt(data, "other-key")[8:16] != first[8:16]
    assert cipher.encrypt(data + b"x", KEY)[8:16] != first[8:16]


def test_gzip_header_is_machine_independent() -> None:
    data = b"DBID_DBASE_VERSION=1\n" * 50
    cipher = Cipher(gzip=True)
    gz = Cipher().decrypt(cipher.encrypt(data, KEY), KEY)
    assert gz[:2] == b"\x1f\x8b"
    assert gz[4:8] == b"\0\0\0\0"  # mtime
    assert gz[3] == 0  # no file name, no comment
    assert gz[9] == 255  # OS "unknown"
    assert gzip.decompress(gz) == data


def test_none_mode_is_plaintext_or_gzip() -> None:
    data = b"DBID_DBASE_VERSION=1\n"
    assert Cipher(Mode.NONE).encrypt(data, KEY) == data
    assert Cipher(Mode.NONE).decrypt(data, KEY) == data
    gz = Cipher(Mode.NONE, gzip=True)
    assert gzip.decompress(gz.encrypt(data, KEY)) == data
    assert gz.decrypt(gz.encrypt(data, KEY), KEY) == data


@pytest.mark.parametrize("cipher", [c.cipher for c in CASES], ids=[c.id for c in CASES])
def test_wrong_key_raises_without_the_key(cipher: Cipher) -> None:
    encrypted = cipher.encrypt(b"DBID_SIP_PASSWORD=1234\n", "right-key-123")
    with pytest.raises(DecryptError) as info:
        cipher.decrypt(encrypted, "wrong-key-456")
    for text in (str(info.value), repr(info.value), info.value.hint):
        assert "wrong-key-456" not in text
        assert "right-key-123" not in text


def test_derived_salt_check_catches_the_one_in_256_false_success() -> None:
    data = b"DBID_SIP_PASSWORD=1234\n"
    encrypted = crypto.encrypt(data, KEY)
    # Without a MAC, some wrong key passes the padding check (about 1 in 256).
    for attempt in range(10_000):
        wrong = f"wrong-{attempt}"
        try:
            garbage = crypto.decrypt(encrypted, wrong)
        except DecryptError:
            continue
        assert garbage != data
        with pytest.raises(DecryptError) as info:
            Cipher().decrypt(encrypted, wrong, expect_derived_salt=True)
        assert wrong not in str(info.value)
        break
    else:
        pytest.fail("no false success in 10000 wrong keys")
    assert Cipher().decrypt(encrypted, KEY, expect_derived_salt=True) == data


# Every shape of plaintext a device's file has: what the renderer writes (a device's file,
# the smallest one, the option-66 bootstrap, a stage file) and what `import conf` reads
# from the server gitprov replaces (a BOM, comments, blank lines, CR LF).
DEVICE_FILE = flyingvoice.render_lines(
    [
        ("DBID_DBASE_VERSION", "1002"),
        ("DBID_SIP_ENABLE", "1\t0\t0\t0"),
        ("DBID_SIP_DISPLAY_NAME", "Empfang Zürich"),
        ("DBID_SIP_PASSWORD", "pw=23;103"),
    ]
)
SHAPES = [
    DEVICE_FILE,
    flyingvoice.render_lines([("DBID_DBASE_VERSION", "1")]),
    flyingvoice.render_bootstrap(1000, "tftp://10.203.0.1/stage-fv$(MA).conf"),
    flyingvoice.render_lines(
        [
            ("DBID_DBASE_VERSION", "1001"),
            ("DBID_PRV_OPTION66_ENABLED", "0"),
            ("DBID_PROFILE_RULE", "[--key wz73ruqo4lmlw3qlxsipynyb]tftp://10.203.0.1/fv.conf"),
        ]
    ),
    "\ufeff# exported 2024-05-01\r\n\r\nDBID_DBASE_VERSION=7\r\nDBID_SIP_ENABLE=1\r\n".encode(),
]
# (PBKDF2 with 1 iteration: the derivation's shape is what counts here, not its cost)
EVERY_CIPHER = [Cipher(mode, 1, gzip) for mode in Mode for gzip in (False, True)]


@pytest.mark.parametrize("cipher", EVERY_CIPHER, ids=lambda c: f"{c.mode}-gzip{c.gzip:d}")
def test_the_right_key_opens_every_shape_of_device_file(cipher: Cipher) -> None:
    for shape in SHAPES:
        encrypted = cipher.encrypt(shape, KEY)
        assert cipher.decrypt(encrypted, KEY, expect=is_param_file) == shape, shape


@pytest.mark.parametrize(
    "cipher",
    [c for c in EVERY_CIPHER if c.mode is not Mode.NONE],
    ids=lambda c: f"{c.mode}-gzip{c.gzip:d}",
)
def test_no_wrong_key_opens_a_device_file_not_even_past_the_padding_check(cipher: Cipher) -> None:
    """CBC with PKCS#7 has no MAC: about 1 wrong key in 256 passes the padding check, and
    its garbage was taken for the file. With what a device file must be, none is."""
    encrypted = cipher.encrypt(DEVICE_FILE, KEY)
    padding_only = Cipher(cipher.mode, cipher.iterations)
    lucky = 0
    for attempt in range(3000):
        wrong = f"wrong-{attempt}"
        try:
            padding_only.decrypt(encrypted, wrong)
            lucky += 1
        except WrongKey:
            pass
        with pytest.raises(WrongKey) as info:
            cipher.decrypt(encrypted, wrong, expect=is_param_file)
        assert wrong not in str(info.value) and wrong not in info.value.hint
    assert lucky > 0  # (the loop did meet the keys the padding check lets through)


def test_a_gzip_setting_that_does_not_match_is_said_and_no_wrong_key() -> None:
    """A right key with the wrong gzip setting opens the file all the same: say which
    setting, never "wrong key"."""
    plain = Cipher().encrypt(DEVICE_FILE, KEY)
    with pytest.raises(DecryptError) as info:
        Cipher(gzip=True).decrypt(plain, KEY, expect=is_param_file)
    assert not isinstance(info.value, WrongKey) and "not gzipped" in info.value.message
    zipped = Cipher(gzip=True).encrypt(DEVICE_FILE, KEY)
    with pytest.raises(DecryptError) as info:
        Cipher().decrypt(zipped, KEY, expect=is_param_file)
    assert not isinstance(info.value, WrongKey) and "gzipped" in info.value.message
    with pytest.raises(DecryptError) as info:
        Cipher(Mode.NONE).decrypt(plain, KEY, expect=is_param_file)
    assert not isinstance(info.value, WrongKey) and "it is encrypted" in info.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Salted__",
        b"Salted__12345678",
        b"NotSalt_12345678" + bytes(16),
        b"Salted__" + bytes(25),
    ],
)
def test_malformed_data_raises(data: bytes) -> None:
    with pytest.raises(DecryptError):
        crypto.decrypt(data, KEY)


def test_gzip_setting_mismatch_raises() -> None:
    encrypted = Cipher().encrypt(b"not gzipped", KEY)
    with pytest.raises(DecryptError):
        Cipher(gzip=True).decrypt(encrypted, KEY)


def test_empty_key_is_refused() -> None:
    with pytest.raises(GitprovError):
        crypto.encrypt(b"x", "")


def test_cipher_settings() -> None:
    assert Cipher("openssl-pbkdf2").mode is Mode.OPENSSL_PBKDF2  # type: ignore[arg-type]
    assert str(Mode.OPENSSL_MD5) == "openssl-md5"
    with pytest.raises(GitprovError, match="unknown encryption mode"):
        Cipher("aes-xts")  # type: ignore[arg-type]
    with pytest.raises(GitprovError, match="iterations"):
        Cipher(Mode.OPENSSL_PBKDF2, iterations=0)
    # Past what the inventory's schema allows (past 2**31 - 1 hashlib cannot derive a
    # key at all): the same error, not an OverflowError from the derivation.
    for too_many in (MAX_ITERATIONS + 1, 2**31, 99_999_999_999_999):
        with pytest.raises(GitprovError, match="iterations must be from 1 to 10,000,000"):
            Cipher(Mode.OPENSSL_PBKDF2, iterations=too_many)
    Cipher(Mode.OPENSSL_PBKDF2, iterations=MAX_ITERATIONS)
    assert _iterations_maximum(
        json.loads((ROOT / "schemas" / "fleet.schema.json").read_text())
    ) == {MAX_ITERATIONS}


def _iterations_maximum(node: object) -> set[object]:
    """The maximum of every `iterations` property in a schema."""
    if isinstance(node, list):
        return set().union(*map(_iterations_maximum, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = (
        {node["iterations"].get("maximum")} if isinstance(node.get("iterations"), dict) else set()
    )
    return found.union(*map(_iterations_maximum, node.values()))


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869, written out here so the test does not trust the code under test."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def expected_device_key(master: str, mac_hex: str, length: int) -> str:
    okm = hkdf_sha256(master.encode(), b"gitprov device key v1", mac_hex.encode(), 80)
    return base64.b32encode(okm).decode().lower().rstrip("=")[:length]


def test_derive_device_key_known_answer() -> None:
    key = derive_device_key("fleet master secret", "00:21:F2:01:1B:19")
    assert key == expected_device_key("fleet master secret", "0021f2011b19", 24)
    # Pinned: a change here re-keys every device in the field.
    assert key == "jqkk5wrq3vlwit4zdhpbqclx"
    long_key = derive_device_key("fleet master secret", "0021f2011b19", length=40)
    assert long_key == expected_device_key("fleet master secret", "0021f2011b19", 40)


def test_derive_device_key_per_mac_and_printable() -> None:
    master = "fleet master secret"
    a = derive_device_key(master, "0021f2011b19")
    assert a == derive_device_key(master, "00-21-f2-01-1b-19")
    assert a == derive_device_key(master, "0021.F201.1B19")
    assert a != derive_device_key(master, "0021f2011b1a")
    assert a != derive_device_key(master + "!", "0021f2011b19")
    assert re.fullmatch(r"[a-z2-7]{24}", a)
    assert re.fullmatch(r"[a-z2-7]{16}", derive_device_key(master, "0021f2011b19", length=16))


@pytest.mark.parametrize("mac", ["", "0021f2011b1", "0021f2011b1g", "00:21:f2:01:1b:19:00"])
def test_derive_device_key_rejects_bad_mac(mac: str) -> None:
    with pytest.raises(GitprovError) as info:
        derive_device_key("fleet master secret", mac)
    assert "fleet master secret" not in str(info.value)


def test_derive_device_key_rejects_bad_input() -> None:
    with pytest.raises(GitprovError):
        derive_device_key("", "0021f2011b19")
    with pytest.raises(GitprovError):
        derive_device_key("m", "0021f2011b19", length=8)


def test_derive_device_key_is_cryptography_hkdf_at_every_length() -> None:
    # The PRK is cached per master: a second master, and the first again, must not mix.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    for master in ("fleet master secret", "another master", "fleet master secret", "ü" * 99):
        for length in (16, 24, 51, 52, 103, 128):
            okm = HKDF(
                algorithm=hashes.SHA256(),
                length=(length * 5 + 7) // 8,
                salt=b"gitprov device key v1",
                info=b"0021f2011b19",
            ).derive(master.encode())
            want = base64.b32encode(okm).decode().rstrip("=").lower()[:length]
            assert derive_device_key(master, "00:21:f2:01:1b:19", length=length) == want


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # (the same bytes in every test process)


_GZIP_CASES = {
    "empty": b"",
    "one member": _gz(b"DBID_X=1\n"),
    "two members": _gz(b"a" * 5000) + _gz(b"second member\n"),
    "cut short": _gz(b"cut short" * 100)[:-5],
    "zeros after": _gz(b"trailing bytes") + b"\0\0",
    "no gzip": b"not gzip at all",
    "a header, then garbage": b"\x1f\x8b\x08\x00garbage",
}


@pytest.mark.parametrize("data", list(_GZIP_CASES.values()), ids=list(_GZIP_CASES))
def test_the_bounded_gunzip_is_gzip_decompress_within_its_bound(data: bytes) -> None:
    try:
        expected: bytes | type[BaseException] = gzip.decompress(data)
    except Exception as exc:  # (what gzip raises is what the callers catch)
        expected = type(exc)
    if isinstance(expected, bytes):
        assert crypto.gunzip(data) == expected
        if expected:
            with pytest.raises(crypto.TooLarge):
                crypto.gunzip(data, len(expected) - 1)
            assert crypto.gunzip(data, len(expected)) == expected
    else:
        with pytest.raises((OSError, EOFError, zlib.error)):
            crypto.gunzip(data)


def test_a_gzip_bomb_is_refused_before_it_takes_the_memory_it_asks_for() -> None:
    bomb = gzip.compress(bytes(64 * 2**20))  # 64 MiB of zeros in 64 KiB
    assert len(bomb) < 2**17
    with pytest.raises(crypto.TooLarge):
        crypto.gunzip(bomb)
    key = "k" * 16
    sealed = Cipher(Mode.OPENSSL_MD5).encrypt(bomb, key)  # (the payload of a gzip model)
    with pytest.raises(DecryptError, match="expands past 16 MiB"):
        Cipher(Mode.OPENSSL_MD5, gzip=True).decrypt(sealed, key)
