"""The MAC's letter case in requested names (issue 13, acceptance 7, the embedded servers).

The vendor overview's own example publishes `fv0021f2011b19.conf` and writes the Profile
Rule `fv$(MAU).conf`, which a device expands to `fv0021F2011B19.conf`. Both spellings of the
MAC (all lower, $MA; all upper, $MAU) fetch the same published file over HTTP and TFTP, with
real clients (curl, tftp-hpa, busybox) and the test's own TFTP client; a mixed-case MAC, any
other change of case, and another MAC's file are not found. The servers are
tests/tools/conftest.py's `http` and `tftp`, over this file's `root`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gitprov.tools.serve import (
    HttpServer,
    TftpServer,
    mac_part,
    open_request,
    other_mac_spelling,
)
from tests.fixtures.serve_clients import Events, busybox_get, curl_get, tftp_get, tftp_hpa

MAC = "0021f2011b19"
DEVICE = os.urandom(1500)  # three TFTP blocks: the spelling holds past the first one
OTHER = b"DBID_DBASE_VERSION=1001\n"  # 0021f2011b20's file
UPPER = b"published with file_name spa$(MAU).cfg\n"
BOOTSTRAP = b"DBID_DBASE_VERSION=999\n"

# Who asks for what, and what they get: the published file's bytes, or None (not found).
SPELLINGS: list[tuple[str, bytes | None]] = [
    (f"fv{MAC}.conf", DEVICE),  # $MA
    (f"fv{MAC.upper()}.conf", DEVICE),  # $MAU, the overview's example
    ("/fv0021F2011B19.conf", DEVICE),
    ("fv0021F2011b19.conf", None),  # mixed case: no macro spells a MAC so
    ("fv0021f2011B19.conf", None),
    ("FV0021F2011B19.conf", None),  # only the MAC's case, never the rest of the name
    ("fv0021F2011B19.CONF", None),
    ("FV0021f2011b19.conf", None),
    ("fv0021F2011B21.conf", None),  # another MAC, unpublished
    ("fv0021f2011b21.conf", None),
    ("fv0021F2011B20.conf", OTHER),  # another MAC, published: its own file
    # A file published with upper-case MACs is found with the lower-case spelling too.
    ("spa0021F2011B19.cfg", UPPER),
    ("spa0021f2011b19.cfg", UPPER),
    ("spa0021f2011B19.cfg", None),
    ("IP542N.conf", BOOTSTRAP),
    ("ip542n.conf", None),
    # The path policy holds for the other spelling: no dot-files.
    (".gitprov-fv0021F2011B19.conf.0badc0de.tmp", None),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    published = tmp_path / "root"
    published.mkdir()
    (published / f"fv{MAC}.conf").write_bytes(DEVICE)
    (published / "fv0021f2011b20.conf").write_bytes(OTHER)
    (published / "spa0021F2011B19.cfg").write_bytes(UPPER)
    (published / "IP542N.conf").write_bytes(BOOTSTRAP)
    (published / ".gitprov-fv0021f2011b19.conf.0badc0de.tmp").write_bytes(b"half-written")
    return published


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("fv0021F2011B19.conf", (2, 14)),
        ("fv0021f2011b19.conf", (2, 14)),
        ("/cpe/CW0021F2011B19.conf", (7, 19)),
        # A prefix ending in hex letters runs into the MAC: the MAC is the run's last 12.
        ("spa0021f2011b19.cfg", (3, 15)),
        ("cafe0021f2011b19.cfg", (4, 16)),
        # The last MAC-sized run names the MAC.
        ("0021f2011b20/fv0021f2011b19.conf", (15, 27)),
        ("IP542N.conf", None),
        ("fv0021f2011b1.conf", None),  # 11 digits
        ("fw-" + "ab" * 20 + ".bin", None),  # a hash is no MAC
        ("", None),
    ],
)
def test_mac_part(name: str, where: tuple[int, int] | None) -> None:
    assert mac_part(name) == where


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("fv0021F2011B19.conf", "fv0021f2011b19.conf"),
        ("fv0021f2011b19.conf", "fv0021F2011B19.conf"),
        ("FV0021F2011B19.CONF", "FV0021f2011b19.CONF"),
        ("fv0021F2011b19.conf", None),
        ("fv002100110019.conf", None),  # digits only: one spelling
        ("IP542N.conf", None),
    ],
)
def test_other_mac_spelling(name: str, other: str | None) -> None:
    assert other_mac_spelling(name) == other


@pytest.mark.parametrize(("name", "content"), SPELLINGS)
def test_open_request(root: Path, name: str, content: bytes | None) -> None:
    opened = open_request(root, name)
    if content is None:
        assert opened is None
        return
    assert opened is not None
    with opened.file:
        assert opened.file.read() == content
    assert opened.size == len(content)
    assert (root / opened.name).read_bytes() == content


@pytest.mark.parametrize(("name", "content"), SPELLINGS)
def test_http(http: HttpServer, name: str, content: bytes | None) -> None:
    code, body = curl_get("--path-as-is", f"{http.url}/{name.lstrip('/')}")
    if content is None:
        assert code == 404
    else:
        assert (code, body) == (200, content)


@pytest.mark.parametrize(("name", "content"), SPELLINGS)
def test_tftp(tftp: TftpServer, name: str, content: bytes | None) -> None:
    got = tftp_get(tftp.port, name)
    if content is None:
        assert got.error == (1, "File not found")
        assert got.data == b""
    else:
        assert (got.error, got.data) == (None, content)


def test_tftp_with_real_clients(tftp: TftpServer, tmp_path: Path) -> None:
    for name in (f"fv{MAC}.conf", f"fv{MAC.upper()}.conf"):
        result = tftp_hpa(tftp.port, tmp_path, name, "hpa")
        assert result.stdout + result.stderr == b""
        assert (tmp_path / "hpa").read_bytes() == DEVICE
        result = busybox_get(tftp.port, name, tmp_path / "busybox")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "busybox").read_bytes() == DEVICE
    result = tftp_hpa(tftp.port, tmp_path, "fv0021F2011b19.conf", "mixed")
    assert b"File not found" in result.stdout + result.stderr


def test_events_name_the_file_served(http: HttpServer, tftp: TftpServer, events: Events) -> None:
    curl_get(f"{http.url}/fv{MAC.upper()}.conf")
    tftp_get(tftp.port, f"fv{MAC.upper()}.conf")
    curl_get(f"{http.url}/fv0021F2011b19.conf")
    seen = events.wait_for(3)
    whole = hashlib.sha256(DEVICE).hexdigest()
    # Sorted: a client may be done before the server has emitted its event.
    assert sorted((e.protocol, e.path, e.file, e.status, e.sha256) for e in seen) == sorted(
        [
            ("http", f"/fv{MAC.upper()}.conf", f"fv{MAC}.conf", 200, whole),
            ("tftp", f"fv{MAC.upper()}.conf", f"fv{MAC}.conf", 200, whole),
            ("http", "/fv0021F2011b19.conf", None, 404, None),
        ],
        key=str,
    )
