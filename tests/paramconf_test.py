"""gitprov.paramconf: what a param.conf's bytes can be, for the checks after a decryption."""

from __future__ import annotations

import random

import pytest

from gitprov.formats import flyingvoice
from gitprov.paramconf import is_param_file


@pytest.mark.parametrize(
    "data",
    [
        flyingvoice.render_lines([("DBID_DBASE_VERSION", "1002"), ("DBID_SIP_ENABLE", "1\t0")]),
        flyingvoice.render_lines([("DBID_DBASE_VERSION", "1")]),
        flyingvoice.render_bootstrap(1000, "[--key k]tftp://10.203.0.1/fv$(MA).conf"),
        b"DBID_DBASE_VERSION=7",  # (no last LF)
        b"DBID_SIP_DISPLAY_NAME=Empfang Z\xc3\xbcrich\n",
        "\ufeffDBID_DBASE_VERSION=7\r\n".encode(),
        b"# exported by the old server\n\n  \nDBID_DBASE_VERSION=7\n",
    ],
)
def test_every_file_gitprov_writes_or_imports_is_a_param_file(data: bytes) -> None:
    assert is_param_file(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n\n# only comments\n",
        b"<<VOIP CONFIG FILE>>\nDBID_DBASE_VERSION=7\n",
        b"dbid_dbase_version=7\n",
        b"DBID_DBASE_VERSION\n",
        b"DBID_DBASE_VERSION=7\n\xff\n",  # (UTF-8 to the end)
        b"\x1f\x8b\x08\x00" + bytes(16),  # gzip, not yet gunzipped
        b"Salted__" + bytes(24),
    ],
)
def test_what_no_device_file_is_is_not_a_param_file(data: bytes) -> None:
    assert not is_param_file(data)


def test_random_bytes_are_never_a_param_file() -> None:
    """What a wrong key decrypts to: random bytes of every length a device's file has."""
    rng = random.Random(66)
    for _ in range(100_000):
        assert not is_param_file(rng.randbytes(rng.randrange(1, 200)))
