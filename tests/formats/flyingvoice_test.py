"""The renderer against the vendor overview's own param.conf example (section 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitprov.catalog import load_catalog
from gitprov.compile import compile_device
from gitprov.formats import flyingvoice
from gitprov.pipeline import Pipeline, secret_resolver
from gitprov.source import WorktreeSource
from tests.fixtures.inventory import sealed_secrets, write_tree

# The overview's example, copied by hand from reference/flyingvoice-auto-provision.txt,
# section 5, in its order. The PDF rendered the TABs of DBID_SIP_ENABLE as spaces and
# dropped trailing TABs of the other per-line rows; see test_seed_per_line_rows.
SEED = [
    ("DBID_DBASE_VERSION", "2207"),
    ("DBID_IPMODE", "0"),
    ("DBID_FIXED_IP_ADDR", "192.168.10.207"),
    ("DBID_SUBNET_MASK", "255.255.255.0"),
    ("DBID_DFLT_GW_IP_ADDR", "192.168.10.1"),
    ("DBID_SIP_ENABLE", "1\t0\t0\t0"),
    ("DBID_WEB_SIP_SERVER", "192.168.10.200"),
    ("DBID_WEB_SIP_SERVER_PORT", "5060"),
    ("DBID_WEB_SIP_OUTBOUND", "192.168.10.201"),
    ("DBID_WEB_SIP_OUTBOUND_PORT", "5060"),
    ("DBID_WEB_SIP_OUTBOUND_BACKUP", "192.168.10.202"),
    ("DBID_WEB_SIP_OUTBOUND_BACKUP_PORT", "5060"),
    ("DBID_SIP_DIS_NAME", "23103_name"),
    ("DBID_SIP_PHONE_NUM", "23103"),
    ("DBID_SIP_ACCOUNT", "23103"),
    ("DBID_SIP_PASSWORD", "23103"),
    ("DBID_PRV_OPTION66_ENABLED", "0"),
]
PER_LINE_SINGLE = {
    "DBID_SIP_DIS_NAME",
    "DBID_SIP_PHONE_NUM",
    "DBID_SIP_ACCOUNT",
    "DBID_SIP_PASSWORD",
}

FLEET = """\
version_floor: 2206
encryption:
  mode: none
"""
MODEL = """\
family: flyingvoice
product_name: IP542N
config_file_name: IP542N.conf
line_count: 4
"""
# The same settings as the seed, written the way a reviewer reads them.
DEVICE = """\
mac: "00:21:f2:01:1b:19"
model: IP542N
params:
  network.ip_mode: 0
  network.ip_address: 192.168.10.207
  network.subnet_mask: 255.255.255.0
  network.gateway: 192.168.10.1
  sip.server: 192.168.10.200
  sip.server_port: 5060
  sip.outbound: 192.168.10.201
  sip.outbound_port: 5060
  sip.outbound_backup: 192.168.10.202
  sip.outbound_backup_port: 5060
  provision.option66: false
lines:
  - enabled: true
    display_name: 23103_name
    phone_number: "23103"
    account: "23103"
    password: !secret sip_23103
  - enabled: false
  - enabled: false
  - enabled: false
"""


@pytest.fixture
def seed_file(tmp_path: Path) -> bytes:
    private, secrets_yaml = sealed_secrets({"sip_23103": "23103"})
    write_tree(
        tmp_path,
        {
            "inventory/gitprov.yaml": FLEET,
            "inventory/models/IP542N.yaml": MODEL,
            "inventory/devices/0021f2011b19.yaml": DEVICE,
            "inventory/secrets.yaml": secrets_yaml,
        },
    )
    loaded = Pipeline(None).load(WorktreeSource(tmp_path))
    assert [p for p in loaded.problems if p.is_error] == []
    inv = loaded.inventory
    assert inv is not None
    cfg = compile_device(inv.devices[0], inv, load_catalog(), secret_resolver(inv, private))
    return flyingvoice.render(cfg, 2207)


def test_seed_keys_in_order(seed_file: bytes) -> None:
    lines = seed_file.decode().split("\n")
    assert [ln.split("=", 1)[0] for ln in lines if ln] == [k for k, _ in SEED]


def test_seed_values(seed_file: bytes) -> None:
    got = flyingvoice.parse(seed_file)
    for key, value in SEED:
        if key in PER_LINE_SINGLE:
            continue
        assert got[key] == value, key


def test_seed_per_line_rows(seed_file: bytes) -> None:
    # One value per line of the model, always: rendering "23103" alone would leave lines
    # 2-4 of a device at whatever they held before, so a cleared line would never clear.
    got = flyingvoice.parse(seed_file)
    for key, value in SEED:
        if key in PER_LINE_SINGLE:
            assert got[key] == f"{value}\t\t\t", key


def test_format_is_lf_terminated_utf8_without_cr(seed_file: bytes) -> None:
    assert seed_file.endswith(b"\n")
    assert b"\r" not in seed_file
    assert seed_file.startswith(b"DBID_DBASE_VERSION=2207\n")
    assert seed_file.count(b"\n") == len(SEED)


def test_renderer_refuses_line_breaks() -> None:
    with pytest.raises(ValueError):
        flyingvoice.render_lines([("DBID_SIP_DIS_NAME", "x\nDBID_SIP_PASSWORD=y")])
    with pytest.raises(ValueError):
        flyingvoice.render_lines([("DBID_SIP_DIS_NAME", "x\ry")])


@pytest.mark.parametrize("char", ["\x1b", "\x0b", "\x85", "\u2028", "\u202e", "\x7f", "\x9b"])
def test_renderer_refuses_control_characters_and_bidi_controls(char: str) -> None:
    with pytest.raises(ValueError):
        flyingvoice.render_lines([("DBID_SIP_DIS_NAME", f"Desk{char}")])
    with pytest.raises(ValueError):
        flyingvoice.render_lines([(f"DBID_X{char}", "1")])
    assert flyingvoice.UNSAFE.fullmatch(char)
    assert f"U+{ord(char):04X}" in flyingvoice.describe(char)


def test_renderer_keeps_tabs_between_values_and_any_printable_text() -> None:
    text = "Zoë\t李\t–\t\u00a0"
    assert flyingvoice.render_lines([("DBID_SIP_DIS_NAME", text)]).decode() == (
        f"DBID_SIP_DIS_NAME={text}\n"
    )


def test_parse_round_trip() -> None:
    data = flyingvoice.render_lines([("DBID_A", "1"), ("DBID_B", "x\ty")])
    assert flyingvoice.parse(data) == {"DBID_A": "1", "DBID_B": "x\ty"}
