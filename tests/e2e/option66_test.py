"""DHCP option 66 → TFTP → the per-MAC file, between two network namespaces.

The namespaces are tests/fixtures/option66.py's: `gp-srv-*` runs dnsmasq (DHCP with
option 66 = 10.203.0.1, and its own TFTP server on the TFTP root gitprov published into);
`gp-dev-*` holds the device's end of a veth pair, with an IP542N's MAC. busybox udhcpc
gets the lease and option 66, then the device
emulator (`gitprov.tools.device`) runs inside `gp-dev-*` from factory state
(DBID_PRV_OPTION66_ENABLED=1, the option-66 server from udhcpc, Config File Name
IP542N.conf): it fetches the bootstrap IP542N.conf (option 66 off, a Profile Rule to
`tftp://10.203.0.1/fv$(MA).conf`), then its own per-MAC file.

The key: the bootstrap is one plaintext file common to every IP542N, so it cannot carry a
per-device key — its Profile Rule has no `[--key …]` (`formats.flyingvoice.render_bootstrap`,
deploy/README.md "Option 66 and per-device keys: the trade-off"). The README's supported
paths are tested here:

- zero-touch: a fleet with `encryption: {mode: none}` — the device ends with exactly its
  per-MAC file (`gitprov show MAC --reveal`), with no key anywhere;
- an encrypted fleet (the example's openssl-md5): `gitprov publish` warns; the device
  applies the bootstrap but cannot read its per-MAC file (it has no key: the ciphertext
  does not parse, nothing is applied) until the key reaches it out of band — here as the
  Profile Rule with `[--key KEY]` set on the device (web UI / reseller staging); the next
  resync then applies the per-MAC file.

dnsmasq's log (`--log-facility=-`) must show the lease to the device's MAC and `sent` of
both files to the leased address. Only 10.203.0.0/24 inside the test's own namespaces is
used; dnsmasq is stopped, both namespaces deleted (which removes the veth pair) in a
finally.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitprov.formats import flyingvoice
from gitprov.rule_url import format_rule, parse_rule
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.option66 import (
    FLOOR,
    MAC,
    MAC_COLONS,
    SERVER_IP,
    Lan,
    gitprov,
    in_device,
    option66_fleet,
    option66_lan,
    publish_into,
    run,
    sent,
    steps,
)

pytestmark = pytest.mark.e2e

# Runs inside the device namespace: JSON in on stdin, JSON out on stdout.
EMULATOR = """
import dataclasses, json, sys
from gitprov.tools.device import PROFILE_RULE_KEY, Device, DeviceState, MultiFetcher

job = json.load(sys.stdin)
state = DeviceState(
    job["mac"],
    product_name="IP542N",
    ip=job["ip"],
    config_file_name="IP542N.conf",
    option66_server=job["option66"],
)
device = Device(state)
fetcher = MultiFetcher.standard(timeout=5.0)
phases = []
for rule in job["staged_rules"]:
    if rule is not None:
        state.params[PROFILE_RULE_KEY] = rule
    phases.append([dataclasses.asdict(r) for r in device.resync_until_stable(fetcher)])
json.dump({"phases": phases, "params": state.params}, sys.stdout)
"""


@pytest.fixture
def lan() -> Iterator[Lan]:
    with option66_lan() as net:
        yield net


def fleet_repo(path: Path, *, encryption: str | None) -> GitRepo:
    """The example inventory behind option 66; `encryption` replaces the fleet's
    encryption mode when given."""
    message = "example inventory behind option 66"
    return option66_fleet(path, message, encryption=encryption)


def device_in_namespace(lan: Lan, staged_rules: list[str | None]) -> dict[str, Any]:
    """Run the emulator inside the device namespace from factory state; one
    `resync_until_stable` per entry of `staged_rules` (a Profile Rule set on the device
    first, e.g. on its web UI, or None)."""
    job = {"mac": MAC, "ip": lan.leased, "option66": lan.option66, "staged_rules": staged_rules}
    return in_device(lan, EMULATOR, job, timeout=60)


def test_dhcp_gives_option_66_to_the_device(lan: Lan) -> None:
    assert lan.option66 == SERVER_IP
    assert re.fullmatch(r"10\.203\.0\.(1[0-4]\d|150)", lan.leased)
    lan.wait_for_log(rf"DHCPACK\(gps\w+\) {re.escape(lan.leased)} {MAC_COLONS}")
    addresses = run(lan.ip, "-n", lan.dev, "-o", "addr", "show")
    assert f"inet {lan.leased}/24" in addresses


def test_zero_touch_with_a_plaintext_fleet(lan: Lan, tmp_path: Path) -> None:
    repo = fleet_repo(tmp_path / "repo", encryption="none")
    publish_into(repo, lan)
    bootstrap = (lan.tftp_root / "IP542N.conf").read_bytes()
    assert bootstrap == flyingvoice.render_bootstrap(FLOOR, f"tftp://{SERVER_IP}/fv$(MA).conf")
    shown = gitprov(repo, "show", MAC, "--rev", "main", "--reveal").stdout
    assert (lan.tftp_root / f"fv{MAC}.conf").read_text() == shown  # mode none: plaintext
    want = flyingvoice.parse(shown.encode())
    version = want["DBID_DBASE_VERSION"]
    assert int(version) > FLOOR

    out = device_in_namespace(lan, [None])
    (phase,) = out["phases"]
    assert steps(phase) == [
        ("option66", "applied", str(FLOOR)),
        ("profile-rule", "applied", version),
        ("profile-rule", "unchanged", version),
    ]
    assert phase[0]["url"] == f"tftp://{SERVER_IP}/IP542N.conf"
    assert phase[1]["url"] == f"tftp://{SERVER_IP}/fv{MAC}.conf"
    params = out["params"]
    assert params == want
    assert params["DBID_PRV_OPTION66_ENABLED"] == "0"
    for key in ("DBID_WEB_SIP_SERVER", "DBID_SIP_ACCOUNT", "DBID_SIP_PASSWORD"):
        assert params[key] == want[key] and want[key].strip(), key
    sent(lan, "IP542N.conf", 1)
    sent(lan, f"fv{MAC}.conf", 2)


def test_encrypted_fleet_needs_the_key_out_of_band(lan: Lan, tmp_path: Path) -> None:
    repo = fleet_repo(tmp_path / "repo", encryption=None)  # the example's openssl-md5
    notes = publish_into(repo, lan)
    assert "only if its key reaches it another way" in notes
    assert b"--key" not in (lan.tftp_root / "IP542N.conf").read_bytes()
    shown = gitprov(repo, "show", MAC, "--rev", "main", "--reveal").stdout
    key = gitprov(repo, "key", MAC, "--rev", "main").stdout.strip()
    want = flyingvoice.parse(shown.encode())
    version = want["DBID_DBASE_VERSION"]
    assert (lan.tftp_root / f"fv{MAC}.conf").read_bytes().startswith(b"Salted__")

    # First the factory-fresh device alone, then with the key staged on it (what the
    # reseller or the web UI does): the bootstrap's rule plus [--key KEY].
    rule = parse_rule(f"tftp://{SERVER_IP}/fv$(MA).conf")
    staged = format_rule(rule._replace(key=key))
    out = device_in_namespace(lan, [None, staged])
    alone, keyed = out["phases"]
    assert steps(alone) == [
        ("option66", "applied", str(FLOOR)),
        ("profile-rule", "parse-failed", str(FLOOR)),  # ciphertext, and no key to read it
    ]
    assert steps(keyed) == [
        ("profile-rule", "applied", version),
        ("profile-rule", "unchanged", version),
    ]
    assert keyed[0]["url"] == f"[--key <redacted>]tftp://{SERVER_IP}/fv{MAC}.conf"
    assert key not in json.dumps(out["phases"])  # results never carry the key
    params = out["params"]
    assert params == want
    assert params["DBID_PROFILE_RULE"].startswith(f"[--key {key}]")
    for name in ("DBID_WEB_SIP_SERVER", "DBID_SIP_ACCOUNT", "DBID_SIP_PASSWORD"):
        assert params[name] == want[name] and want[name].strip(), name
    sent(lan, "IP542N.conf", 1)
    sent(lan, f"fv{MAC}.conf", 3)  # without the key, with it, and the unchanged resync
