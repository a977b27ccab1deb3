"""The device emulator against the real embedded servers (gitprov.tools.serve) on 127.0.0.1.

Files are written here with gitprov.crypto and render_lines; every expected value
(URLs, keys, versions, stored parameters) is spelled out by hand.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import json
import os
import socket
import ssl
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gitprov.cli import build_parser
from gitprov.cli.common import Output
from gitprov.cli.serve import run_probe
from gitprov.crypto import Cipher, Mode
from gitprov.errors import GitprovError, UsageError
from gitprov.formats.flyingvoice import render_lines
from gitprov.rule_url import RuleUrl, parse_rule
from gitprov.tools.device import (
    Device,
    DeviceState,
    Event,
    FetchError,
    HttpFetcher,
    MultiFetcher,
    ParamFileError,
    SettingKeys,
    TftpFetcher,
    display_url,
    load_state,
    parse_option66_server,
    parse_param_file,
)
from gitprov.tools.serve import HttpServer, TftpServer, make_tls_context
from tests.fixtures import serve_clients

HOST = "127.0.0.1"
MAC = "0021f2011b19"
KEY = "s3cret-Key_9"
CIPHER = Cipher(Mode.OPENSSL_MD5)

V7 = [
    ("DBID_DBASE_VERSION", "7"),
    ("DBID_SIP_ENABLE", "1\t0\t0\t0"),
    ("DBID_WEB_SIP_SERVER", "192.168.10.200"),
    ("DBID_SIP_PASSWORD", "pw-23103"),
]
FACTORY = {"DBID_PRV_OPTION66_ENABLED": "1", "DBID_PROFILE_RULE": ""}


def encrypted(pairs: list[tuple[str, str]], key: str) -> bytes:
    return CIPHER.encrypt(render_lines(pairs), key)


class Events(serve_clients.Events):
    def paths(self, count: int) -> list[tuple[str, str, int]]:
        return [(e.protocol, e.path, e.status) for e in self.wait_for(count)]


@dataclass
class Servers:
    root: Path
    http: int
    tftp: int
    events: Events

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    root = tmp_path / "root"
    root.mkdir()
    events = Events()
    with (
        HttpServer(root, HOST, 0, events) as http,
        TftpServer(root, HOST, 0, events, timeout=0.2, retries=2) as tftp,
    ):
        yield Servers(root, http.port, tftp.port, events)


def fetcher(**override: tuple[str, int]) -> MultiFetcher:
    return MultiFetcher.standard(timeout=2.0, host_override=override)


def rule_device(rule: str, **kwargs: str) -> DeviceState:
    """A device told to use its Profile Rule (option 66 off), as in the overview 4.1 ⑥."""
    params = {"DBID_PRV_OPTION66_ENABLED": "0", "DBID_PROFILE_RULE": rule, **kwargs}
    return DeviceState(MAC, params=params)


# --- resync over HTTP and TFTP -----------------------------------------------------------


def test_http_with_key(servers: Servers) -> None:
    servers.write("cfg/fv0021f2011b19.conf", encrypted(V7, KEY))
    rule = f"[--key {KEY}]http://127.0.0.1:{servers.http}/cfg/fv0021f2011b19.conf"
    state = rule_device(rule)
    result = Device(state).resync(fetcher())

    assert result.status == "applied"
    assert result.source == "profile-rule"
    assert result.url == (
        f"[--key <redacted>]http://127.0.0.1:{servers.http}/cfg/fv0021f2011b19.conf"
    )
    assert (result.version_before, result.version_after, result.version_offered) == (
        None,
        "7",
        "7",
    )
    assert result.changed == (
        "DBID_DBASE_VERSION",
        "DBID_SIP_ENABLE",
        "DBID_SIP_PASSWORD",
        "DBID_WEB_SIP_SERVER",
    )
    assert state.params == {
        "DBID_PRV_OPTION66_ENABLED": "0",
        "DBID_PROFILE_RULE": rule,
        "DBID_DBASE_VERSION": "7",
        "DBID_SIP_ENABLE": "1\t0\t0\t0",
        "DBID_WEB_SIP_SERVER": "192.168.10.200",
        "DBID_SIP_PASSWORD": "pw-23103",
    }
    assert [e.kind for e in state.history] == ["resync", "applied", "reboot"]
    assert servers.events.paths(1) == [("http", "/cfg/fv0021f2011b19.conf", 200)]


def test_tftp_with_key(servers: Servers) -> None:
    servers.write("fv0021f2011b19.conf", encrypted(V7, KEY))
    state = rule_device(f"[--key {KEY}]tftp://127.0.0.1:{servers.tftp}/fv0021f2011b19.conf")
    result = Device(state).resync(fetcher())

    assert result.status == "applied"
    assert result.url == f"[--key <redacted>]tftp://127.0.0.1:{servers.tftp}/fv0021f2011b19.conf"
    assert state.version == "7"
    assert state.params["DBID_SIP_ENABLE"] == "1\t0\t0\t0"
    # RFC 3617: the file name is the path without its leading slash.
    assert servers.events.paths(1) == [("tftp", "fv0021f2011b19.conf", 200)]


def test_option66_bootstrap_then_profile_rule_until_stable(servers: Servers) -> None:
    # The overview 4.3.2: a factory-default device gets its model's file from the option-66
    # server; that file turns option 66 off and names a per-MAC file on the same server.
    rule = "[--key boot-key]/fv$(MA).conf"
    servers.write(
        "IP542N.conf",
        render_lines(
            [
                ("DBID_DBASE_VERSION", "1"),
                ("DBID_PRV_OPTION66_ENABLED", "0"),
                ("DBID_PROFILE_RULE", rule),
            ]
        ),
    )
    servers.write(
        "fv0021f2011b19.conf",
        encrypted([("DBID_DBASE_VERSION", "5"), ("DBID_PROFILE_RULE", rule), *V7[1:]], "boot-key"),
    )
    state = DeviceState(MAC, option66_server=f"127.0.0.1:{servers.tftp}")
    assert state.params == FACTORY
    assert state.config_file_name == "IP542N.conf"

    results = Device(state).resync_until_stable(fetcher())

    assert [(r.status, r.source, r.url) for r in results] == [
        ("applied", "option66", f"tftp://127.0.0.1:{servers.tftp}/IP542N.conf"),
        (
            "applied",
            "profile-rule",
            f"[--key <redacted>]tftp://127.0.0.1:{servers.tftp}/fv0021f2011b19.conf",
        ),
        (
            "unchanged",
            "profile-rule",
            f"[--key <redacted>]tftp://127.0.0.1:{servers.tftp}/fv0021f2011b19.conf",
        ),
    ]
    assert [(r.version_before, r.version_after) for r in results] == [
        (None, "1"),
        ("1", "5"),
        ("5", "5"),
    ]
    assert state.params == {
        "DBID_PRV_OPTION66_ENABLED": "0",
        "DBID_PROFILE_RULE": "[--key boot-key]/fv$(MA).conf",
        "DBID_DBASE_VERSION": "5",
        "DBID_SIP_ENABLE": "1\t0\t0\t0",
        "DBID_WEB_SIP_SERVER": "192.168.10.200",
        "DBID_SIP_PASSWORD": "pw-23103",
    }
    # A fetch is logged when its transfer ends, and one that ends while the server thread
    # is not scheduled may be logged after the next: the order is the results' to show.
    assert sorted(name for _, name, _ in servers.events.paths(3)) == [
        "IP542N.conf",
        "fv0021f2011b19.conf",
        "fv0021f2011b19.conf",
    ]


def test_option66_enabled_without_a_dhcp_server_ignores_the_profile_rule(
    servers: Servers,
) -> None:
    # The overview 2.1: "If enable, the parameter 'Profile Rule' has no effect." No
    # fallback to the rule when DHCP gave no option 66: nothing is fetched.
    servers.write("fv0021f2011b19.conf", render_lines(V7))
    state = DeviceState(
        MAC,
        params={
            "DBID_PRV_OPTION66_ENABLED": "1",
            "DBID_PROFILE_RULE": f"http://127.0.0.1:{servers.http}/fv$(MA).conf",
        },
    )
    before = dict(state.params)
    result = Device(state).resync(fetcher())
    assert (result.status, result.source, result.url) == ("rule-failed", None, "")
    assert result.detail == (
        "option 66 is enabled (the Profile Rule has no effect) and DHCP gave no option-66 server"
    )
    assert state.params == before
    # With option 66 off, the same rule is fetched.
    state.params["DBID_PRV_OPTION66_ENABLED"] = "0"
    result = Device(state).resync(fetcher())
    assert (result.status, result.source) == ("applied", "profile-rule")
    assert servers.events.paths(1) == [("http", "/fv0021f2011b19.conf", 200)]


def test_option66_enabled_with_a_server_wins_over_the_profile_rule(servers: Servers) -> None:
    # 4.3.3: "the priority of Option 66 is higher than Profile Rule".
    servers.write("IP542N.conf", render_lines([("DBID_DBASE_VERSION", "3")]))
    servers.write("fv0021f2011b19.conf", render_lines(V7))
    state = DeviceState(
        MAC,
        option66_server=f"127.0.0.1:{servers.tftp}",
        params={
            "DBID_PRV_OPTION66_ENABLED": "1",
            "DBID_PROFILE_RULE": f"http://127.0.0.1:{servers.http}/fv$(MA).conf",
        },
    )
    result = Device(state).resync(fetcher())
    assert (result.status, result.source, result.version_after) == ("applied", "option66", "3")
    assert servers.events.paths(1) == [("tftp", "IP542N.conf", 200)]


def test_same_version_applies_nothing(servers: Servers) -> None:
    changed_content = [*V7[:3], ("DBID_SIP_PASSWORD", "new-password")]
    servers.write("fv.conf", encrypted(changed_content, KEY))
    state = rule_device(
        f"[--key {KEY}]http://127.0.0.1:{servers.http}/fv.conf",
        DBID_DBASE_VERSION="7",
        DBID_SIP_PASSWORD="old-password",
    )
    before = dict(state.params)
    result = Device(state).resync(fetcher())

    assert result.status == "unchanged"
    assert result.ok
    assert (result.version_before, result.version_after, result.version_offered) == (
        "7",
        "7",
        "7",
    )
    assert result.changed == ()
    assert result.detail == "version 7 is the same as the stored 7"
    assert state.params == before
    assert state.params["DBID_SIP_PASSWORD"] == "old-password"
    assert [e.kind for e in state.history] == ["resync", "unchanged"]


def test_wrong_key_is_decrypt_failed_and_changes_nothing(servers: Servers) -> None:
    servers.write("fv.conf", encrypted(V7, KEY))
    state = rule_device(
        f"[--key not-the-key]http://127.0.0.1:{servers.http}/fv.conf", DBID_DBASE_VERSION="3"
    )
    before = dict(state.params)
    result = Device(state).resync(fetcher())

    assert result.status == "decrypt-failed"
    assert not result.ok
    assert result.detail == "bad decrypt: wrong key or wrong encryption mode"
    assert (result.version_before, result.version_after) == ("3", "3")
    assert state.params == before


def test_wrong_key_that_passes_the_padding_check_is_decrypt_failed(servers: Servers) -> None:
    # CBC+PKCS#7 has no MAC: about 1 wrong key in 256 "decrypts" into garbage, which was
    # reported as a file that does not parse ("not UTF-8 (byte 3)"), not as the wrong key.
    data = encrypted(V7, KEY)
    lucky = next(key for key in (f"wrong-{i}" for i in range(5000)) if _decrypts(CIPHER, data, key))
    servers.write("fv.conf", data)
    state = rule_device(f"[--key {lucky}]http://127.0.0.1:{servers.http}/fv.conf")
    before = dict(state.params)
    result = Device(state).resync(fetcher())

    assert result.status == "decrypt-failed"
    assert "wrong key" in result.detail and lucky not in result.detail, result.detail
    assert state.params == before


def _decrypts(cipher: Cipher, data: bytes, key: str) -> bool:
    try:
        cipher.decrypt(data, key)
    except GitprovError:
        return False
    return True


def test_an_encrypted_file_under_a_rule_without_a_key_is_parse_failed_and_says_why(
    servers: Servers,
) -> None:
    servers.write("fv.conf", encrypted(V7, KEY))
    state = rule_device(f"http://127.0.0.1:{servers.http}/fv.conf", DBID_DBASE_VERSION="3")
    before = dict(state.params)
    result = Device(state).resync(fetcher())
    assert result.status == "parse-failed"
    assert "encrypted (it starts with Salted__)" in result.detail, result.detail
    assert "[--key KEY]" in result.detail and KEY not in result.detail
    assert state.params == before


def test_plaintext_file_under_a_key_rule_is_decrypt_failed(servers: Servers) -> None:
    servers.write("fv.conf", render_lines(V7))
    state = rule_device(f"[--key {KEY}]http://127.0.0.1:{servers.http}/fv.conf")
    assert Device(state).resync(fetcher()).status == "decrypt-failed"


def test_encrypted_file_without_a_key_is_parse_failed(servers: Servers) -> None:
    servers.write("fv.conf", encrypted(V7, KEY))
    state = rule_device(f"http://127.0.0.1:{servers.http}/fv.conf")
    assert Device(state).resync(fetcher()).status == "parse-failed"


@pytest.mark.parametrize("scheme", ["http", "tftp"])
def test_missing_file_is_fetch_failed(servers: Servers, scheme: str) -> None:
    port = servers.http if scheme == "http" else servers.tftp
    state = rule_device(f"[--key {KEY}]{scheme}://127.0.0.1:{port}/nothing.conf")
    before = dict(state.params)
    result = Device(state).resync(fetcher())

    assert result.status == "fetch-failed"
    expected = "HTTP 404 Not Found" if scheme == "http" else "TFTP error 1: File not found"
    assert result.detail == (
        f"[--key <redacted>]{scheme}://127.0.0.1:{port}/nothing.conf: {expected}"
    )
    assert state.params == before
    assert [e.kind for e in state.history] == ["resync", "fetch-failed"]


def test_macros_in_path_and_key(servers: Servers) -> None:
    # $(MAU:4) of 0021F2011B19 is F2011B19 (the overview's own example); $SN and $PN whole.
    servers.write("IP542N/fv0021f2011b19.conf", encrypted(V7, "F2011B19-E3C08109000051"))
    state = DeviceState(
        MAC,
        serial="E3C08109000051",
        params={
            "DBID_PRV_OPTION66_ENABLED": "0",
            "DBID_PROFILE_RULE": (
                f"[--key $(MAU:4)-$SN]http://127.0.0.1:{servers.http}/$PN/fv$(MA).conf"
            ),
        },
    )
    result = Device(state).resync(fetcher())

    assert result.status == "applied"
    assert (
        result.url
        == f"[--key <redacted>]http://127.0.0.1:{servers.http}/IP542N/fv0021f2011b19.conf"
    )
    assert servers.events.paths(1) == [("http", "/IP542N/fv0021f2011b19.conf", 200)]
    _, url = Device(state).source()
    assert url.key == "F2011B19-E3C08109000051"


def test_macros_in_a_tftp_rule_without_server_use_option66(servers: Servers) -> None:
    servers.write("cpe/CW0021F2011B19.conf", encrypted(V7, "key-1b"))
    state = DeviceState(
        MAC,
        option66_server=f"127.0.0.1:{servers.tftp}",
        params={
            "DBID_PRV_OPTION66_ENABLED": "0",
            "DBID_PROFILE_RULE": "[--key key-$(MA:8:2)]/cpe/CW$MAU.conf",
        },
    )
    result = Device(state).resync(fetcher())
    assert result.status == "applied"
    assert (
        result.url == f"[--key <redacted>]tftp://127.0.0.1:{servers.tftp}/cpe/CW0021F2011B19.conf"
    )


def test_key_rotation_chain_ends_on_the_new_key(servers: Servers) -> None:
    # The old file (old key) hands out a rule to a new path under a new key; the device
    # follows it and settles on the new file. The rule names a host, as in production;
    # the host override plays /etc/hosts.
    old_rule = "[--key old-key-1]http://prov.example.net/old/fv$(MA).conf"
    new_rule = "[--key new-key-2]http://prov.example.net/new/fv$(MA).conf"
    servers.write(
        "old/fv0021f2011b19.conf",
        encrypted([("DBID_DBASE_VERSION", "10"), ("DBID_PROFILE_RULE", new_rule)], "old-key-1"),
    )
    servers.write(
        "new/fv0021f2011b19.conf",
        encrypted(
            [("DBID_DBASE_VERSION", "11"), ("DBID_PROFILE_RULE", new_rule), *V7[1:]],
            "new-key-2",
        ),
    )
    state = rule_device(old_rule, DBID_DBASE_VERSION="9")
    results = Device(state).resync_until_stable(
        fetcher(**{"prov.example.net": (HOST, servers.http)})
    )

    assert [(r.status, r.url, r.version_after) for r in results] == [
        ("applied", "[--key <redacted>]http://prov.example.net/old/fv0021f2011b19.conf", "10"),
        ("applied", "[--key <redacted>]http://prov.example.net/new/fv0021f2011b19.conf", "11"),
        ("unchanged", "[--key <redacted>]http://prov.example.net/new/fv0021f2011b19.conf", "11"),
    ]
    assert state.params["DBID_PROFILE_RULE"] == new_rule
    assert state.version == "11"
    assert state.params["DBID_SIP_PASSWORD"] == "pw-23103"
    assert sorted(p for _, p, _ in servers.events.paths(3)) == [
        "/new/fv0021f2011b19.conf",
        "/new/fv0021f2011b19.conf",
        "/old/fv0021f2011b19.conf",
    ]


@pytest.mark.parametrize(
    ("compare", "status", "version"),
    [("!=", "applied", "7"), (">", "unchanged", "10")],
)
def test_lower_version_under_each_comparison(
    servers: Servers, compare: str, status: str, version: str
) -> None:
    servers.write("fv.conf", encrypted(V7, KEY))
    state = rule_device(
        f"[--key {KEY}]http://127.0.0.1:{servers.http}/fv.conf", DBID_DBASE_VERSION="10"
    )
    device = Device(state, compare="!=" if compare == "!=" else ">")
    result = device.resync(fetcher())
    assert (result.status, result.version_offered, state.version) == (status, "7", version)
    if compare == ">":
        assert result.detail == "version 7 is not higher than the stored 10"


def test_higher_version_under_greater_than(servers: Servers) -> None:
    servers.write("fv.conf", encrypted(V7, KEY))
    state = rule_device(
        f"[--key {KEY}]http://127.0.0.1:{servers.http}/fv.conf", DBID_DBASE_VERSION="6"
    )
    assert Device(state, compare=">").resync(fetcher()).status == "applied"
    assert state.version == "7"


def test_until_stable_stops_after_max_rounds(servers: Servers) -> None:
    # Two files that point at each other with different versions never settle under "!=".
    rule_a = f"http://127.0.0.1:{servers.http}/a.conf"
    rule_b = f"http://127.0.0.1:{servers.http}/b.conf"
    servers.write(
        "a.conf", render_lines([("DBID_DBASE_VERSION", "1"), ("DBID_PROFILE_RULE", rule_b)])
    )
    servers.write(
        "b.conf", render_lines([("DBID_DBASE_VERSION", "2"), ("DBID_PROFILE_RULE", rule_a)])
    )
    results = Device(rule_device(rule_a)).resync_until_stable(fetcher(), max_rounds=3)
    assert [(r.status, r.version_after) for r in results] == [
        ("applied", "1"),
        ("applied", "2"),
        ("applied", "1"),
    ]
    with pytest.raises(ValueError, match="max_rounds"):
        Device(rule_device(rule_a)).resync_until_stable(fetcher(), max_rounds=0)


def test_until_stable_stops_at_a_failure(servers: Servers) -> None:
    rule = f"http://127.0.0.1:{servers.http}/gone.conf"
    servers.write(
        "a.conf", render_lines([("DBID_DBASE_VERSION", "1"), ("DBID_PROFILE_RULE", rule)])
    )
    state = rule_device(f"http://127.0.0.1:{servers.http}/a.conf")
    results = Device(state).resync_until_stable(fetcher())
    assert [r.status for r in results] == ["applied", "fetch-failed"]
    assert state.version == "1"


# --- nothing to fetch --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "option66", "detail"),
    [
        (
            {},
            None,
            "option 66 is enabled (the Profile Rule has no effect) and DHCP gave no "
            "option-66 server",
        ),
        (
            {"DBID_PRV_OPTION66_ENABLED": "1", "DBID_PROFILE_RULE": "http://h/f"},
            None,
            "option 66 is enabled (the Profile Rule has no effect) and DHCP gave no "
            "option-66 server",
        ),
        (
            {"DBID_PRV_OPTION66_ENABLED": "0"},
            "127.0.0.1:69",
            "option 66 is disabled and the Profile Rule is empty",
        ),
        (
            {"DBID_PRV_OPTION66_ENABLED": "0", "DBID_PROFILE_RULE": "/fv$MA.conf"},
            None,
            "the Profile Rule names no server and DHCP gave no option 66",
        ),
        (
            {"DBID_PRV_OPTION66_ENABLED": "0", "DBID_PROFILE_RULE": "ftp://h/f"},
            None,
            "the Profile Rule does not parse: unsupported scheme 'ftp'; write tftp://, "
            "http:// or https:// (character 1)",
        ),
        (
            {"DBID_PRV_OPTION66_ENABLED": "0", "DBID_PROFILE_RULE": "[--key my secret]http://h/f"},
            None,
            "the Profile Rule does not parse: error at character 11 (message withheld: "
            "the rule holds a secret)",
        ),
        ({}, "host:port", "option-66 server 'host:port': the port must be 1..65535"),
    ],
)
def test_nothing_to_fetch_is_rule_failed(
    params: dict[str, str], option66: str | None, detail: str
) -> None:
    state = DeviceState(MAC, params=params, option66_server=option66)

    class Unreachable:
        def fetch(self, url: RuleUrl) -> bytes:
            raise AssertionError("nothing should be fetched")

    result = Device(state).resync(Unreachable())
    assert (result.status, result.source, result.url, result.detail) == (
        "rule-failed",
        None,
        "",
        detail,
    )
    assert state.history == [Event("rule-failed", detail)]
    with pytest.raises(GitprovError):
        Device(state).source()


def test_provision_disabled_fetches_nothing(servers: Servers) -> None:
    servers.write("fv.conf", render_lines(V7))
    state = rule_device(f"http://127.0.0.1:{servers.http}/fv.conf", DBID_PROVISION_ENABLE="0")
    before = dict(state.params)
    result = Device(state).resync(fetcher())
    assert (result.status, result.ok, result.detail) == (
        "disabled",
        False,
        "Provision Enable is off (DBID_PROVISION_ENABLE=0)",
    )
    assert state.params == before
    assert servers.events.seen == []
    # Under another key (a model binding), the placeholder key means nothing.
    keys = SettingKeys(provision_enable="DBID_PRV_ENABLE")
    assert Device(state, keys=keys).resync(fetcher()).status == "applied"


# --- the fetchers on their own -----------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "blksize"),
    [(0, 512), (511, 512), (512, 512), (5000, 512), (1428 * 2, 1428), (5000, 1428), (70, 8)],
)
def test_tftp_fetcher_block_boundaries(servers: Servers, size: int, blksize: int) -> None:
    content = bytes(i % 251 for i in range(size))
    servers.write("blob.bin", content)
    url = parse_rule(f"tftp://127.0.0.1:{servers.tftp}/blob.bin")
    assert TftpFetcher(blksize=blksize).fetch(url) == content


def test_tftp_fetcher_limits_size(servers: Servers) -> None:
    servers.write("big.bin", bytes(3000))
    url = parse_rule(f"tftp://127.0.0.1:{servers.tftp}/big.bin")
    with pytest.raises(FetchError, match="larger than 2000 bytes"):
        TftpFetcher(max_bytes=2000).fetch(url)


def test_tftp_fetcher_times_out_on_silence() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((HOST, 0))
        url = parse_rule(f"tftp://127.0.0.1:{silent.getsockname()[1]}/x.conf")
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"no answer from the TFTP server \(3 tries"):
            TftpFetcher(timeout=0.1, retries=2).fetch(url)
        assert time.monotonic() - started < 2
        # The request was sent each time: RRQ, octet, blksize 1428.
        silent.settimeout(1)
        packet, _ = silent.recvfrom(1000)
        assert packet == b"\x00\x01x.conf\x00octet\x00blksize\x001428\x00"


def test_http_fetcher_limits_size(servers: Servers) -> None:
    servers.write("big.bin", bytes(3000))
    url = parse_rule(f"http://127.0.0.1:{servers.http}/big.bin")
    with pytest.raises(FetchError, match="larger than 2000 bytes"):
        HttpFetcher(max_bytes=2000).fetch(url)


def test_http_fetcher_timeout_bounds_the_whole_fetch_not_each_read() -> None:
    """A server that answers, then drips its body a byte every 0.2 s, never lets a read
    wait for the socket's timeout: the fetch's own deadline ends it."""
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(1)

        def drip() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.is_set():
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        return
                    time.sleep(0.2)

        server = threading.Thread(target=drip, daemon=True)
        server.start()
        url = parse_rule(f"http://127.0.0.1:{listener.getsockname()[1]}/f.conf")
        started = time.monotonic()
        try:
            with pytest.raises(
                FetchError, match="not fetched within 1 s: timed out reading the body"
            ):
                HttpFetcher(timeout=1).fetch(url)
        finally:
            stop.set()
        assert time.monotonic() - started < 3
        server.join(5)


# --- hostile servers: each answers as told, on 127.0.0.1, until the test is done --------

Talk = Callable[[socket.socket, threading.Event], None]


@contextlib.contextmanager
def hostile_tcp(talk: Talk, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A TCP server (TLS with `tls`) that reads each request, then lets `talk` answer it;
    yields its port. `talk` is told to stop (its Event) when the block ends."""
    stop = threading.Event()
    listener = socket.create_server((HOST, 0))
    listener.settimeout(0.05)  # (to see `stop`: closing it would not wake accept())

    def answer(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            peer = tls.wrap_socket(conn, server_side=True) if tls is not None else conn
            with peer:
                peer.recv(65536)
                talk(peer, stop)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def drip(data: bytes, for_at_most: float = 2.5) -> Talk:
    """Sends `data` a byte every 50 ms (each well within any socket timeout), for at most
    `for_at_most` seconds, then hangs up: a fetch without a deadline of its own takes
    that long, and fails for another reason."""

    def talk(conn: socket.socket, stop: threading.Event) -> None:
        end = time.monotonic() + for_at_most
        for byte in data:
            if time.monotonic() > end:
                return
            conn.sendall(bytes([byte]))
            if stop.wait(0.05):
                return

    return talk


def send(data: bytes) -> Talk:
    def talk(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(data)

    return talk


@dataclass
class HostileTftp:
    port: int
    received: list[bytes]  # what came to its transfer ID (the client's ACKs, an ERROR)


@contextlib.contextmanager
def hostile_tftp(
    answer: Callable[[socket.socket, tuple[str, int], threading.Event], None],
) -> Iterator[HostileTftp]:
    """A TFTP "server" that lets `answer` reply to each RRQ, one at a time, from a
    transfer ID of its own (a new port, as RFC 1350 has it); what comes back to that port
    is kept."""
    stop = threading.Event()
    received: list[bytes] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind((HOST, 0))
    listener.settimeout(0.05)  # (to see `stop`)

    def serve() -> None:
        while not stop.is_set():
            try:
                _, client = listener.recvfrom(65536)
            except TimeoutError:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tid:
                tid.bind((HOST, 0))
                answer(tid, client, stop)
                tid.settimeout(0.2)
                with contextlib.suppress(OSError):
                    while True:
                        received.append(tid.recvfrom(65536)[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield HostileTftp(listener.getsockname()[1], received)
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def drip_blocks(tid: socket.socket, client: tuple[str, int], stop: threading.Event) -> None:
    """Full 512-byte blocks, one every 50 ms (each well within the per-packet timeout),
    for at most 2.5 s: without a deadline for the whole transfer, the fetch lasts as long."""
    end = time.monotonic() + 2.5
    number = 1
    while time.monotonic() < end and not stop.is_set():
        tid.sendto(struct.pack("!HH", 3, number) + bytes(512), client)
        number += 1
        stop.wait(0.05)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_fetcher_timeout_bounds_dripped_headers(tmp_path: Path, scheme: str) -> None:
    """Headers a byte every 50 ms never let a read wait for the socket's timeout: the
    fetch's deadline ends it, and says what it was waiting for."""
    tls = trust = None
    if scheme == "https":
        cert, key = _self_signed(tmp_path, "prov.example.net")
        tls, trust = make_tls_context(cert, key), ssl.create_default_context(cafile=str(cert))
    with hostile_tcp(drip(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000), tls) as port:
        url = parse_rule(f"{scheme}://prov.example.net/f.conf")
        fetcher = HttpFetcher(
            timeout=0.5, ssl_context=trust, host_override={"prov.example.net": (HOST, port)}
        )
        started = time.monotonic()
        with pytest.raises(FetchError) as caught:
            fetcher.fetch(url)
        assert time.monotonic() - started < 1.5
    assert caught.value.message == (
        f"{scheme}://prov.example.net/f.conf: not fetched within 0.5 s: "
        "timed out waiting for the response headers"
    )
    assert "--timeout" in caught.value.hint


def test_http_fetcher_connection_refused() -> None:
    with socket.socket() as closed:
        closed.bind((HOST, 0))
        port = closed.getsockname()[1]
    with pytest.raises(FetchError, match=f"http://127.0.0.1:{port}/f.conf: .*refused"):
        HttpFetcher(timeout=1).fetch(parse_rule(f"http://127.0.0.1:{port}/f.conf"))


def test_https_needs_an_ssl_context() -> None:
    with pytest.raises(FetchError, match="https needs an SSL context"):
        HttpFetcher().fetch(parse_rule("https://prov.example.net/f.conf"))


def test_https_with_host_override_checks_the_certificate_of_the_name(
    tmp_path: Path, servers: Servers
) -> None:
    cert, key = _self_signed(tmp_path, "prov.example.net")
    servers.write("fv0021f2011b19.conf", encrypted(V7, KEY))
    trust = ssl.create_default_context(cafile=str(cert))
    with HttpServer(servers.root, HOST, 0, tls=make_tls_context(cert, key)) as https:
        override = {"prov.example.net": (HOST, https.port)}
        state = rule_device(f"[--key {KEY}]https://prov.example.net/fv$(MA).conf")
        multi = MultiFetcher.standard(timeout=2, ssl_context=trust, host_override=override)
        assert Device(state).resync(multi).status == "applied"

        # The same server under another name: the certificate does not match.
        other = {"other.example.net": (HOST, https.port)}
        state = rule_device(f"[--key {KEY}]https://other.example.net/fv$(MA).conf")
        multi = MultiFetcher.standard(timeout=2, ssl_context=trust, host_override=other)
        result = Device(state).resync(multi)
        assert result.status == "fetch-failed"
        assert "certificate" in result.detail.lower()


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_multi_fetcher_refuses_unknown_schemes() -> None:
    with pytest.raises(FetchError, match="no fetcher for tftp"):
        MultiFetcher({}).fetch(parse_rule("tftp://h/f"))


# --- pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"DBID_DBASE_VERSION=7\n", {"DBID_DBASE_VERSION": "7"}),
        (b"DBID_DBASE_VERSION=7", {"DBID_DBASE_VERSION": "7"}),
        (
            b"DBID_DBASE_VERSION=7\nDBID_SIP_ENABLE=1\t0\t0\t0\nDBID_X=a=b\nDBID_E=\n",
            {
                "DBID_DBASE_VERSION": "7",
                "DBID_SIP_ENABLE": "1\t0\t0\t0",
                "DBID_X": "a=b",
                "DBID_E": "",
            },
        ),
        (
            "DBID_DBASE_VERSION=7\nDBID_SIP_DIS_NAME=Zoë\n".encode(),
            {"DBID_DBASE_VERSION": "7", "DBID_SIP_DIS_NAME": "Zoë"},
        ),
    ],
)
def test_parse_param_file_accepts(data: bytes, expected: dict[str, str]) -> None:
    assert parse_param_file(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\xff\xfe", "not UTF-8 (byte 0)"),
        (b"DBID_DBASE_VERSION=7\n\nDBID_A=1\n", "line 2 is not DBID_NAME=value"),
        (b"DBID_DBASE_VERSION=7\r\n", "line 1 (DBID_DBASE_VERSION) holds a control character"),
        (b"DBID_DBASE_VERSION=7\nDBID_A=\x01\n", "line 2 (DBID_A) holds a control character"),
        (b"DBID_DBASE_VERSION=7\ndbid_a=1\n", "line 2 is not DBID_NAME=value"),
        (b"DBID_DBASE_VERSION=7\nDBID_A 1\n", "line 2 is not DBID_NAME=value"),
        (b"# comment\nDBID_DBASE_VERSION=7\n", "line 1 is not DBID_NAME=value"),
        (b"DBID_A=1\nDBID_A=2\nDBID_DBASE_VERSION=7\n", "line 2: DBID_A is given twice"),
        (b"DBID_A=1\n", "no DBID_DBASE_VERSION line"),
        (b"DBID_DBASE_VERSION=v7\n", "DBID_DBASE_VERSION is not a decimal number"),
        (b"DBID_DBASE_VERSION=\n", "DBID_DBASE_VERSION is not a decimal number"),
        (b"Salted__\x8f\x01\x02\x03\x04\x05\x06\x07", "not UTF-8 (byte 8)"),
    ],
)
def test_parse_param_file_refuses(data: bytes, message: str) -> None:
    with pytest.raises(ParamFileError) as caught:
        parse_param_file(data)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.168.20.151", ("192.168.20.151", 69)),
        ("127.0.0.1:6969", ("127.0.0.1", 6969)),
        ("tftp.example.net", ("tftp.example.net", 69)),
        ("[::1]:6969", ("::1", 6969)),
        ("[::1]", ("::1", 69)),
        ("fe80::1", ("fe80::1", 69)),
    ],
)
def test_parse_option66_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_option66_server(text) == expected


@pytest.mark.parametrize(
    "text", ["", "host:", "host:0", "host:70000", "[::1", "[::1]x", "[::1]:", "tftp://h/"]
)
def test_parse_option66_server_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="option-66 server"):
        parse_option66_server(text)


def test_display_url_redacts_key_and_password() -> None:
    url = parse_rule("[--key 'a b' --uid u --pwd p]http://h:8080/f.conf")
    assert display_url(url) == "[--key <redacted> --uid u --pwd <redacted>]http://h:8080/f.conf"


def test_state_defaults_and_repr_hide_secrets() -> None:
    state = DeviceState(
        "00:21:F2:01:1B:19",
        product_name="G502N",
        params={"DBID_SIP_PASSWORD": "hunter2", "DBID_PROFILE_RULE": f"[--key {KEY}]/f"},
    )
    assert state.mac == MAC
    assert state.config_file_name == "G502N.conf"
    assert state.variables() == {
        "MA": "0021f2011b19",
        "MAU": "0021F2011B19",
        "MAC": "00:21:f2:01:1b:19",
        "PN": "G502N",
    }
    text = repr(state)
    assert "hunter2" not in text and KEY not in text
    with pytest.raises(ValueError, match="not a MAC"):
        DeviceState("0021f2011b1")
    with pytest.raises(ValueError, match="compare"):
        Device(state, compare="<")  # type: ignore[arg-type]


# --- gitprov probe -----------------------------------------------------------------------


def probe(*argv: str) -> tuple[int, str]:
    """`gitprov probe ARGV` as the CLI parses it; errors raised, not rendered."""
    args = build_parser().parse_args(["probe", *argv])
    out = io.StringIO()
    code = args.run(args, Output(stdout=out))
    assert args.run is run_probe
    return code, out.getvalue()


def test_probe_prints_each_step_without_the_key(servers: Servers, tmp_path: Path) -> None:
    servers.write(
        "IP542N.conf",
        render_lines([("DBID_DBASE_VERSION", "1"), ("DBID_PRV_OPTION66_ENABLED", "0")]),
    )
    servers.write("fv0021f2011b19.conf", encrypted(V7, KEY))
    state_file = tmp_path / "device.json"
    code, out = probe(
        "00:21:f2:01:1b:19",
        "--url",
        f"http://127.0.0.1:{servers.http}/fv$(MA).conf",
        "--key",
        KEY,
        "--option66",
        f"127.0.0.1:{servers.tftp}",
        "--state",
        str(state_file),
        "--until-stable",
    )
    assert code == 0
    http = f"http://127.0.0.1:{servers.http}/fv0021f2011b19.conf"
    assert out == (
        f"round 1: option66  tftp://127.0.0.1:{servers.tftp}/IP542N.conf\n"
        "  applied: version (none) -> 1, 2 parameter(s) changed; the device reboots\n"
        "  changed: DBID_DBASE_VERSION, DBID_PRV_OPTION66_ENABLED\n"
        f"round 2: profile-rule  [--key <redacted>]{http}\n"
        "  applied: version 1 -> 7, 4 parameter(s) changed; the device reboots\n"
        "  changed: DBID_DBASE_VERSION, DBID_SIP_ENABLE, DBID_SIP_PASSWORD, "
        "DBID_WEB_SIP_SERVER\n"
        f"round 3: profile-rule  [--key <redacted>]{http}\n"
        "  unchanged: version 7 is the same as the stored 7\n"
    )
    assert KEY not in out
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    saved = json.loads(state_file.read_text())
    assert saved["params"]["DBID_PROFILE_RULE"] == (
        f"[--key {KEY}]http://127.0.0.1:{servers.http}/fv$(MA).conf"
    )
    assert saved["params"]["DBID_DBASE_VERSION"] == "7"
    assert KEY not in json.dumps(saved["history"])

    # The saved device resyncs on its own stored rule; nothing new.
    code, out = probe(MAC, "--state", str(state_file), "--format", "json")
    assert code == 0
    assert [(r["status"], r["version_after"]) for r in json.loads(out)] == [("unchanged", "7")]
    assert load_state(state_file).history[-2:] == [
        Event("resync", f"profile-rule [--key <redacted>]{http}"),
        Event("unchanged", "version 7 is the same as the stored 7"),
    ]


def test_probe_failure_exit_code_and_resolve(servers: Servers) -> None:
    servers.write("fv0021f2011b19.conf", encrypted(V7, KEY))
    code, out = probe(
        MAC,
        "--url",
        "http://prov.example.net/fv$(MA).conf",
        "--key",
        "wrong key",
        "--resolve",
        f"prov.example.net=127.0.0.1:{servers.http}",
    )
    assert code == 1
    assert out == (
        "round 1: profile-rule  [--key <redacted>]http://prov.example.net/fv0021f2011b19.conf\n"
        "  decrypt-failed: bad decrypt: wrong key or wrong encryption mode "
        "(version stays (none))\n"
    )
    assert "wrong key]" not in out


def test_probe_not_stable_is_exit_1(servers: Servers) -> None:
    rule_a = f"http://127.0.0.1:{servers.http}/a.conf"
    rule_b = f"http://127.0.0.1:{servers.http}/b.conf"
    servers.write(
        "a.conf", render_lines([("DBID_DBASE_VERSION", "1"), ("DBID_PROFILE_RULE", rule_b)])
    )
    servers.write(
        "b.conf", render_lines([("DBID_DBASE_VERSION", "2"), ("DBID_PROFILE_RULE", rule_a)])
    )
    code, out = probe(MAC, "--url", rule_a, "--until-stable", "--max-rounds", "2")
    assert code == 1
    assert out.endswith("not stable after 2 round(s)\n")


def test_probe_timeout_bounds_dripped_headers() -> None:
    with hostile_tcp(drip(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000)) as port:
        started = time.monotonic()
        code, out = probe(MAC, "--url", f"http://127.0.0.1:{port}/f.conf", "--timeout", "0.5")
        assert time.monotonic() - started < 1.5
    assert code == 1
    assert out == (
        f"round 1: profile-rule  http://127.0.0.1:{port}/f.conf\n"
        f"  fetch-failed: http://127.0.0.1:{port}/f.conf: not fetched within 0.5 s: timed out "
        "waiting for the response headers (version stays (none))\n"
        "    hint: the server (or the network to it) is too slow, or it stalls; check it, or "
        "allow more time (probe: --timeout)\n"
    )


def test_probe_timeout_bounds_a_tftp_transfer_of_dripped_blocks() -> None:
    with hostile_tftp(drip_blocks) as server:
        started = time.monotonic()
        code, out = probe(MAC, "--option66", f"127.0.0.1:{server.port}", "--timeout", "0.5")
        assert time.monotonic() - started < 1.5
    assert code == 1
    url = f"tftp://127.0.0.1:{server.port}/IP542N.conf"
    assert out.startswith(
        f"round 1: option66  {url}\n"
        f"  fetch-failed: {url}: not fetched within 0.5 s: timed out waiting for block "
    )
    assert out.endswith(
        "    hint: the server (or the network to it) is too slow, or it stalls; "
        "check it, or allow more time (probe: --timeout)\n"
    )
    # The server was told to stop sending.
    assert server.received[-1] == b"\x00\x05\x00\x00Transfer timed out\x00"


def test_probe_tftp_silence_still_ends_within_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((HOST, 0))
        port = silent.getsockname()[1]
        started = time.monotonic()
        code, out = probe(MAC, "--option66", f"127.0.0.1:{port}", "--timeout", "0.5")
        assert time.monotonic() - started < 0.9
    assert code == 1
    assert (
        f"fetch-failed: tftp://127.0.0.1:{port}/IP542N.conf: not fetched within 0.5 s: "
        "timed out waiting for an answer from the TFTP server (5 tries)"
    ) in out


def _tftp_error(tid: socket.socket, client: tuple[str, int], stop: threading.Event) -> None:
    tid.sendto(b"\x00\x05\x00\x01no \x1b]0;owned\x07such\r\x1b[2K file\x00", client)


def test_probe_escapes_what_the_server_says(servers: Servers) -> None:
    """An HTTP reason phrase, a TFTP error and a Profile Rule the server gave, each with
    terminal controls: the text output escapes them; JSON keeps them (escaped by JSON)."""
    reason = b"HTTP/1.1 404 Not\x1b[2J\rFound\x9b31m\r\nContent-Length: 0\r\n\r\n"
    # (by hand: gitprov's own renderer refuses to write a bidi control)
    rule = f"http://127.0.0.1:{servers.http}/\u202eb.conf"
    servers.write("a.conf", f"DBID_DBASE_VERSION=1\nDBID_PROFILE_RULE={rule}\n".encode())
    with hostile_tcp(send(reason)) as port, hostile_tftp(_tftp_error) as tftp:
        argvs = [
            ["--url", f"http://127.0.0.1:{port}/f.conf"],
            ["--option66", f"127.0.0.1:{tftp.port}"],
            ["--url", f"http://127.0.0.1:{servers.http}/a.conf", "--until-stable"],
        ]
        texts = [probe(MAC, *argv)[1] for argv in argvs]
        docs = [probe(MAC, *argv, "--format", "json")[1] for argv in argvs]
    for out in texts + docs:
        assert not any(c in out for c in "\x1b\r\x07\x9b\u202e"), repr(out)
    assert "/f.conf: HTTP 404 Not\\x1b[2J\\x0dFound\\x9b31m (version stays" in texts[0]
    assert "TFTP error 1: no \\x1b]0;owned\\x07such\\x0d\\x1b[2K file (version" in texts[1]
    assert f"round 2: profile-rule  http://127.0.0.1:{servers.http}/\\u202eb.conf\n" in texts[2]
    details = [json.loads(doc)[-1]["detail"] for doc in docs]
    assert "HTTP 404 Not\x1b[2J\rFound\x9b31m" in details[0]
    assert details[1].endswith("TFTP error 1: no \x1b]0;owned\x07such\r\x1b[2K file")
    assert json.loads(docs[2])[-1]["url"] == rule


@pytest.mark.parametrize(
    ("state", "message", "hint"),
    [
        ("missing/device.json", "its directory {tmp}/missing does not exist", "mkdir -p"),
        ("a-dir", "--state {tmp}/a-dir is a directory", "--state {tmp}/a-dir/device.json"),
        ("a-file/device.json", "{tmp}/a-file is not a directory", "name a file in a directory"),
    ],
    ids=["no directory", "a directory", "under a file"],
)
def test_probe_refuses_a_state_file_it_could_not_write_before_fetching(
    tmp_path: Path, state: str, message: str, hint: str
) -> None:
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "a-file").write_text("")
    with socket.create_server((HOST, 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/f.conf"
        with pytest.raises(UsageError) as caught:
            probe(MAC, "--url", url, "--state", str(tmp_path / state), "--timeout", "0.5")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came: refused before any fetch
    assert caught.value.exit_code == 2
    assert message.format(tmp=tmp_path) in caught.value.message
    assert hint.format(tmp=tmp_path) in caught.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir", "a-file"]


def test_probe_state_directory_gone_during_the_fetch_is_a_usage_error(tmp_path: Path) -> None:
    """Checked up front, the directory may still go while the server answers: the error
    then names the file and says the resync was not saved (no internal error)."""
    directory = tmp_path / "states"
    directory.mkdir()

    def remove_then_answer(conn: socket.socket, stop: threading.Event) -> None:
        directory.rmdir()
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    with hostile_tcp(remove_then_answer) as port, pytest.raises(UsageError) as caught:
        probe(MAC, "--url", f"http://127.0.0.1:{port}/f.conf", "--state", f"{directory}/d.json")
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(f"cannot write the device state {directory}/d.json: ")
    assert "not saved" in caught.value.hint


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any directory")
def test_probe_refuses_a_state_file_in_a_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(UsageError, match="cannot write in its directory"):
            probe(MAC, "--url", "http://127.0.0.1:9/f.conf", "--state", str(locked / "d.json"))
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([MAC], "nothing to fetch"),
        ([MAC, "--key", KEY], "--key needs --url"),
        ([MAC, "--url", "[--key a]http://h/f", "--key", KEY], "the key is given twice"),
        ([MAC, "--url", "ftp://h/f"], "--url: unsupported scheme 'ftp'"),
        ([MAC, "--url", "http://h/f", "--option66", "h:x"], "the port must be 1..65535"),
        ([MAC, "--url", "http://h/f", "--resolve", "h"], "--resolve 'h': write NAME=ADDR:PORT"),
        ([MAC, "--url", "http://h/f", "--max-rounds", "0"], "--max-rounds must be at least 1"),
        (
            [MAC, "--url", "http://h/f", "--setting-key", "nope=DBID_X"],
            "--setting-key unknown setting 'nope'",
        ),
        (
            [MAC, "--url", "http://h/f", "--setting-key", "resync_periodic=periodic"],
            "--setting-key setting resync_periodic: 'periodic' is not a DBID key",
        ),
        (
            [MAC, "--url", "http://h/f", "--setting-key", "upgrade_rule"],
            "--setting-key 'upgrade_rule': write NAME=DBID_KEY",
        ),
    ],
)
def test_probe_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        probe(*argv)
    assert message in caught.value.message
    assert KEY not in caught.value.message


def test_probe_refuses_another_devices_state(tmp_path: Path) -> None:
    state_file = tmp_path / "device.json"
    state_file.write_text(
        json.dumps(
            {
                "format": 1,
                "mac": "0021f2aaaaaa",
                "product_name": "IP542N",
                "serial": "",
                "sw_version": "",
                "hw_version": "",
                "ip": "",
                "config_file_name": "IP542N.conf",
                "option66_server": None,
                "cipher": {"mode": "openssl-sha256", "iterations": 10000, "gzip": False},
                "params": {"DBID_PROFILE_RULE": "http://h/f"},
                "history": [],
            }
        )
    )
    assert load_state(state_file).cipher == Cipher(Mode.OPENSSL_SHA256)
    with pytest.raises(UsageError, match="is the state of 0021f2aaaaaa, not 0021f2011b19"):
        probe(MAC, "--state", str(state_file))
    state_file.write_text('{"format": 1}')
    with pytest.raises(UsageError, match="is not a device state file"):
        load_state(state_file)
    # A file argument that cannot be read is a usage error (exit 2), as the others are.
    state_file.write_text("{not json")
    with pytest.raises(UsageError, match="cannot read device state"):
        probe(MAC, "--state", str(state_file))


def test_ipv6_literal_in_a_rule(tmp_path: Path) -> None:
    # Only if the machine has ::1; the emulator must bracket it in the URL it requests.
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = HttpServer(tmp_path, "::1", 0)
        server.start()
    except GitprovError:
        pytest.skip("cannot listen on ::1")
    try:
        (tmp_path / "f.conf").write_bytes(render_lines(V7))
        url = parse_rule(f"http://[::1]:{server.port}/f.conf")
        assert HttpFetcher(timeout=2).fetch(url) == render_lines(V7)
        assert ipaddress.ip_address(url.host).version == 6
    finally:
        server.stop()
