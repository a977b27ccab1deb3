"""Issue 13, acceptance 4: a firmware rollout to 5% of a model, end to end, then to 20%.

A real repository holds the example fleet (its sealed master key and encryption) with 100
devices of one model, the G502N, whose model file binds the Upgrade Rule, Upgrade Enable
and Resync Periodic to DBID keys, sets Resync Periodic to 1800 s (not the device's default
3600 s) and names a firmware image with `rollout: {percent: 5}`. The CLI publishes it,
with the image from a firmware dir, into an HTTP and a TFTP root that `gitprov serve`'s
embedded servers serve on loopback.

Every emulated device is factory-fresh and runs v1.0.7, except that option 66 is off and
its Profile Rule names its own encrypted file with its own key (half over HTTP, half over
TFTP); it reads its settings under the keys the model binds (`SettingKeys.from_bindings`).
On a virtual clock, over a few resync periods, exactly the devices that the documented
rule selects (docs/inventory.md, "Firmware upgrades": the first 8 bytes of
SHA-256("VERSION/MAC") as a fraction of 2**64 below P/100, computed here on its own) find
the Upgrade Rule in their file, fetch the image once and run v1.0.8; later resyncs find
the rule still there and do not fetch it again (`$SWVER` is the new version). The others
never fetch it. A second commit raises the rollout to 20%: after its publish the newly
selected devices get a new file and upgrade, the first ones do not upgrade again.

Fetches of the image are counted twice: by the emulator, and by the server's own fetch
events (from each device's own loopback address).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from gitprov.cli import main
from gitprov.crypto import Cipher, Mode
from gitprov.formats import flyingvoice
from gitprov.tools.device import (
    OPTION66_KEY,
    PROFILE_RULE_KEY,
    DeviceState,
    Fleet,
    FleetReport,
    MultiFetcher,
    SettingKeys,
    factory_params,
    loopback_address,
)
from gitprov.tools.serve import FetchEvent, serve_roots
from tests.fixtures.fleet import device_key
from tests.fixtures.gitrepo import GitRepo, example_files
from tests.fixtures.roots import root_args

pytestmark = pytest.mark.e2e

OLD, NEW = "v1.0.7", "v1.0.8"
IMAGE_NAME = "G502N_F108.bin"
IMAGE = bytes(range(256)) * 300 + b"G502N test firmware v1.0.8\n"  # many TFTP/HTTP blocks
PERIOD = 1800  # the model's Resync Periodic
RANDOM_DELAY = 40  # the device's default (overview 2.1)
MODEL_PATH = "inventory/models/G502N.yaml"
MODEL = f"""\
description: Flying Voice G502N ATA (two FXS ports)
family: flyingvoice
product_name: G502N
config_file_name: G502N.conf
line_count: 2
bindings:
  provision.upgrade_rule: {{key: DBID_UPGRADE_RULE, source: "test: not a vendor key"}}
  provision.upgrade_enable: {{key: DBID_UPGRADE_ENABLE, source: "test: not a vendor key"}}
  provision.resync_periodic: {{key: DBID_RESYNC_PERIODIC, source: "test: not a vendor key"}}
params:
  provision.resync_periodic: {PERIOD}
firmware:
  file: {IMAGE_NAME}
  version: {NEW}
"""
# The example fleet's provisioning.url: every published Profile Rule and, by default, the
# Upgrade Rule point there; the emulator sends that host to the embedded HTTP server.
PROVISIONING = "http://127.0.0.1:8080"
UPGRADE_RULE = f"{PROVISIONING}/{IMAGE_NAME}"
TFTP_HOST = "tftp.invalid"  # the first TFTP Profile Rules' server, sent to the TFTP server
MACS = [f"0021f2{0x5000 + i:06x}" for i in range(100)]
CIPHER = Cipher(Mode.OPENSSL_MD5)  # the example fleet's encryption


def expected(percent: int) -> set[str]:
    """The devices the documented rule selects, computed here on its own."""
    chosen = set()
    for mac in MACS:
        digest = hashlib.sha256(f"{NEW}/{mac}".encode()).digest()
        if int.from_bytes(digest[:8], "big") * 100 < percent * 2**64:
            chosen.add(mac)
    return chosen


def model(percent: int) -> str:
    return MODEL + f"  rollout: {{percent: {percent}}}\n"


def inventory(percent: int) -> dict[str, bytes]:
    files = {p: d for p, d in example_files().items() if not p.startswith("inventory/devices/")}
    assert "inventory/secrets.yaml" in files and MODEL_PATH in files
    files[MODEL_PATH] = model(percent).encode()
    for mac in MACS:
        files[f"inventory/devices/{mac}.yaml"] = (
            f'mac: "{mac}"\nmodel: G502N\nprofile: base\n'.encode()
        )
    return files


def publish(
    repo: GitRepo, base: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, dict[str, str]]:
    """Publish main; each device's published file, decrypted with its key, parsed."""
    argv = ["--repo", str(repo.path), "publish", "--rev", "main", *root_args(base)]
    code = main([*argv, "--firmware-dir", str(base / "firmware")])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    files = {}
    for mac in MACS:
        data = (base / "http" / f"fv{mac}.conf").read_bytes()
        assert (base / "tftp" / f"fv{mac}.conf").read_bytes() == data
        files[mac] = flyingvoice.parse(CIPHER.decrypt(data, device_key(mac)))
    for root in ("http", "tftp"):
        assert (base / root / IMAGE_NAME).read_bytes() == IMAGE
    return files


def check_published(files: dict[str, dict[str, str]], selected: set[str]) -> None:
    """Only the selected devices' files carry the Upgrade Rule (and Upgrade Enable); every
    file carries the bound Resync Periodic."""
    for mac, params in files.items():
        upgrade = {k: v for k, v in params.items() if k.startswith("DBID_UPGRADE_")}
        want = {"DBID_UPGRADE_RULE": UPGRADE_RULE, "DBID_UPGRADE_ENABLE": "1"}
        assert upgrade == (want if mac in selected else {}), mac
        assert params["DBID_RESYNC_PERIODIC"] == str(PERIOD), mac


def fleet_of(http_port: int, tftp_port: int) -> Fleet:
    bound = yaml.safe_load(MODEL)["bindings"]
    keys = SettingKeys.from_bindings({name: b["key"] for name, b in bound.items()})
    override = {"127.0.0.1": ("127.0.0.1", http_port), TFTP_HOST: ("127.0.0.1", tftp_port)}
    states = []
    for index, mac in enumerate(MACS):
        server = f"tftp://{TFTP_HOST}" if index % 2 else PROVISIONING
        states.append(
            DeviceState(
                mac,
                product_name="G502N",
                sw_version=OLD,
                ip=loopback_address(index),
                params={
                    **factory_params(keys),
                    OPTION66_KEY: "0",
                    PROFILE_RULE_KEY: f"[--key {device_key(mac)}]{server}/fv$(MA).conf",
                },
            )
        )
    return Fleet(
        states,
        fetcher=lambda s: MultiFetcher.standard(host_override=override, source_address=s.ip),
        seed=4,
        firmware={IMAGE_NAME: NEW},
        keys=keys,
    )


def firmware_fetches(report: FleetReport) -> Counter[str]:
    """MAC -> how many times the emulator fetched the image."""
    return Counter(mac for mac, f in report.fetches if f.purpose == "firmware")


def served_images(seen: list[FetchEvent], lock: threading.Lock) -> Counter[str]:
    """Client address -> how many whole images the server sent it."""
    with lock:
        return Counter(
            e.client
            for e in seen
            if e.path.lstrip("/") == IMAGE_NAME and e.status == 200 and e.size == len(IMAGE)
        )


def addresses(macs: set[str]) -> Counter[str]:
    return Counter(loopback_address(MACS.index(mac)) for mac in macs)


def config_times(fleet: Fleet, mac: str) -> list[float]:
    device = fleet.devices[MACS.index(mac)]
    return [f.at for f in device.fetches if f.purpose == "config"]


def test_a_five_percent_rollout_then_twenty(
    private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    five, twenty = expected(5), expected(20)
    # A sample, not none and not all, and the wider rollout only adds devices.
    assert 0 < len(five) < len(twenty) < 40 and five < twenty

    repo = GitRepo(tmp_path / "repo")
    repo.commit(inventory(5), f"G502N: {NEW} to 5% of the devices", worktree=True)
    (tmp_path / "firmware").mkdir()
    (tmp_path / "firmware" / IMAGE_NAME).write_bytes(IMAGE)
    first = publish(repo, tmp_path, capsys)
    check_published(first, five)

    seen: list[FetchEvent] = []
    lock = threading.Lock()

    def log(event: FetchEvent) -> None:
        with lock:
            seen.append(event)

    handle = serve_roots(tmp_path / "http", tmp_path / "tftp", "127.0.0.1", 0, 0, on_fetch=log)
    try:
        assert handle.http is not None and handle.tftp is not None
        fleet = fleet_of(handle.http.port, handle.tftp.port)
        fleet.power_on()

        # Boot (within the random delay), then three periodic resyncs.
        report = fleet.run(until=RANDOM_DELAY + 3 * PERIOD + 60, workers=8)
        assert report.failed == 0, [(d.mac, d.last_status) for d in report.devices]
        assert {d.mac: d.version for d in report.devices} == {
            mac: first[mac]["DBID_DBASE_VERSION"] for mac in MACS
        }
        assert firmware_fetches(report) == Counter(five)
        assert {d.mac: d.sw_version for d in report.devices} == {
            mac: NEW if mac in five else OLD for mac in MACS
        }
        for mac in MACS:
            # Resync Periodic is the bound value from the file, not the default 3600 s;
            # an upgrade adds the resync that Resync After Upgrade triggers.
            boot = config_times(fleet, mac)[0]
            periodic = [boot + n * PERIOD for n in range(4)]
            upgraded = [boot, boot + PERIOD, *periodic[1:]]
            want = upgraded if mac in five else periodic
            assert config_times(fleet, mac) == pytest.approx(want, abs=1e-6), mac
        for mac in five:
            # Two resyncs after the upgrade found the rule again and left it: $SWVER.
            kinds = [e.kind for e in fleet.devices[MACS.index(mac)].log]
            assert kinds.count("upgraded") == 1 and kinds.count("upgrade-current") == 2, mac
        deadline = time.monotonic() + 5  # a server logs after the client has its answer
        while served_images(seen, lock) != addresses(five) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert served_images(seen, lock) == addresses(five)

        # 20%: a new commit, published while the devices run.
        repo.commit({MODEL_PATH: model(20)}, f"G502N: {NEW} to 20% of the devices", worktree=True)
        second = publish(repo, tmp_path, capsys)
        check_published(second, twenty)
        changed = {
            m for m in MACS if second[m]["DBID_DBASE_VERSION"] != first[m]["DBID_DBASE_VERSION"]
        }
        assert changed == twenty - five
        for mac in changed:
            assert (
                int(second[mac]["DBID_DBASE_VERSION"]) == int(first[mac]["DBID_DBASE_VERSION"]) + 1
            )

        # Three more periods: the newly selected apply their new file at the next periodic
        # resync, upgrade at the one after, and find $SWVER current at the third.
        report = fleet.run(until=RANDOM_DELAY + 6 * PERIOD + 60, workers=8)
        assert report.failed == 0, [(d.mac, d.last_status) for d in report.devices]
        assert {d.mac: d.version for d in report.devices} == {
            mac: second[mac]["DBID_DBASE_VERSION"] for mac in MACS
        }
        assert firmware_fetches(report) == Counter(twenty)  # once each, the first 5% too
        assert {d.mac: d.sw_version for d in report.devices} == {
            mac: NEW if mac in twenty else OLD for mac in MACS
        }
        for mac in twenty - five:
            kinds = [e.kind for e in fleet.devices[MACS.index(mac)].log]
            assert kinds.count("upgraded") == 1 and kinds.count("upgrade-current") == 1, mac
        deadline = time.monotonic() + 5
        while served_images(seen, lock) != addresses(twenty) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert served_images(seen, lock) == addresses(twenty)
        with lock:
            asked = Counter(e.client for e in seen if e.path.lstrip("/") == IMAGE_NAME)
        assert asked == addresses(twenty)  # nobody else even asked
    finally:
        handle.stop()
