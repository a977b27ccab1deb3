"""The timed device against the real embedded servers on 127.0.0.1, on a virtual clock.

Each test names the overview's setting it checks; expected times are spelled out (the
random delay's draw comes from Python's own seeded generator, not from the emulator).
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gitprov.crypto import Cipher, Mode
from gitprov.formats.flyingvoice import render_lines
from gitprov.tools.device import (
    DeviceState,
    MultiFetcher,
    SettingKeys,
    TimedDevice,
    VirtualClock,
)
from gitprov.tools.serve import FetchEvent, HttpServer, TftpServer

MAC = "0021f2011b19"
KEY = "k-0021f2011b19"
CIPHER = Cipher(Mode.OPENSSL_MD5)


@dataclass
class Servers:
    root: Path
    http: int
    tftp: int
    seen: list[FetchEvent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: FetchEvent) -> None:
        with self.lock:
            self.seen.append(event)

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def paths(self, count: int) -> list[str]:
        deadline = time.monotonic() + 3  # a TFTP transfer may be logged after the client ended
        while time.monotonic() < deadline and len(self.seen) < count:
            time.sleep(0.01)
        with self.lock:
            return [e.path for e in self.seen]

    @property
    def rule(self) -> str:
        return f"[--key {KEY}]http://127.0.0.1:{self.http}/fv$(MA).conf"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    root = tmp_path / "root"
    root.mkdir()
    box = Servers(root, 0, 0)
    with (
        HttpServer(root, "127.0.0.1", 0, box) as http,
        TftpServer(root, "127.0.0.1", 0, box, timeout=0.2, retries=2) as tftp,
    ):
        box.http, box.tftp = http.port, tftp.port
        yield box


def per_mac(servers: Servers, version: int, **settings: str) -> None:
    """The device's own encrypted file: its rule (option 66 off) and `settings`."""
    pairs = [
        ("DBID_DBASE_VERSION", str(version)),
        ("DBID_PRV_OPTION66_ENABLED", "0"),
        ("DBID_PROFILE_RULE", servers.rule),
        *settings.items(),
    ]
    servers.write("fv0021f2011b19.conf", CIPHER.encrypt(render_lines(pairs), KEY))


def staged(servers: Servers, clock: VirtualClock, **params: str) -> TimedDevice:
    """A device staged with its key (option 66 off, the Profile Rule set), never synced."""
    state = DeviceState(
        MAC,
        params={"DBID_PRV_OPTION66_ENABLED": "0", "DBID_PROFILE_RULE": servers.rule, **params},
        sw_version="1.0",
    )
    return TimedDevice(state, clock=clock, fetcher=MultiFetcher.standard(timeout=2))


def resyncs(device: TimedDevice) -> list[tuple[float, str]]:
    return [(e.at, e.detail) for e in device.log if e.kind == "resync"]


def draw(delay: float, seed: str = MAC) -> float:
    return random.Random(seed).uniform(0, delay)


# --- Random Delay, Resync On Reset, Resync Periodic ------------------------------------


def test_power_on_waits_the_random_delay_then_resyncs_periodically(servers: Servers) -> None:
    per_mac(servers, 7)
    clock = VirtualClock()
    device = staged(servers, clock)
    device.power_on()
    started = time.monotonic()
    clock.run(until=2 * 3600 + 100)
    assert time.monotonic() - started < 10  # three hours, not waited
    first = draw(40)
    assert 0 <= first <= 40
    # Applied, the device reboots: "Triggers a resync after every reboot except for reboot
    # caused by parameter updates", so the next resync is the periodic one, an hour later.
    assert resyncs(device) == [
        (first, "reset: applied, version 7"),
        (first + 3600, "periodic: unchanged, version 7"),
        (first + 7200, "periodic: unchanged, version 7"),
    ]
    assert [e.detail for e in device.log if e.kind == "boot"] == ["power-on", "update"]
    assert servers.paths(3) == ["/fv0021f2011b19.conf"] * 3
    assert [(f.at, f.purpose, f.status, f.version) for f in device.fetches] == [
        (first, "config", "applied", "7"),
        (first + 3600, "config", "unchanged", "7"),
        (first + 7200, "config", "unchanged", "7"),
    ]
    assert all(0 < f.latency < 5 for f in device.fetches)
    assert KEY not in repr(device.log) and KEY not in repr(device.fetches)


def test_random_delay_is_uniform_in_zero_to_the_setting() -> None:
    # 300 devices' first contact: each within [0, 40], spread over the window.
    clock = VirtualClock()
    firsts = []
    for index in range(300):
        mac = f"0021f2{index:06x}"
        state = DeviceState(mac, params={"DBID_PRV_OPTION66_ENABLED": "0"})
        device = TimedDevice(state, clock=clock, fetcher=MultiFetcher({}))
        device.power_on()
        clock.run(until=clock.now)  # boot only: the resync is not due yet
        due = [e.at for e in device.log if e.kind == "resync-due"]
        assert due == []
        clock.run(until=clock.now + 41)
        due = [e.at for e in device.log if e.kind == "resync-due"]
        assert len(due) == 1
        firsts.append(due[0] - (clock.now - 41))
    assert all(0 <= d <= 40 for d in firsts)
    assert min(firsts) < 2 and max(firsts) > 38
    assert 15 < sum(firsts) / len(firsts) < 25


def test_random_delay_zero_resyncs_at_boot(servers: Servers) -> None:
    per_mac(servers, 7)
    clock = VirtualClock(start=1000)
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0")
    device.power_on()
    clock.run(until=1001)
    assert resyncs(device) == [(1000.0, "reset: applied, version 7")]


def test_without_resync_on_reset_the_first_resync_is_the_periodic_one(servers: Servers) -> None:
    per_mac(servers, 7)
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_ON_RESET="0", DBID_RESYNC_PERIODIC="600")
    device.power_on()
    clock.run(until=1300)
    # The file sets no periodic value: after applying it the stored 600 still holds.
    assert resyncs(device) == [
        (600.0, "periodic: applied, version 7"),
        (1200.0, "periodic: unchanged, version 7"),
    ]


def test_periodic_zero_stops_resyncing(servers: Servers) -> None:
    per_mac(servers, 7, DBID_RESYNC_PERIODIC="0")
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0")
    device.power_on()
    clock.run(until=10 * 86400)
    assert resyncs(device) == [(0.0, "reset: applied, version 7")]
    assert clock.pending == 0


def test_the_settings_are_read_under_the_configured_keys(servers: Servers) -> None:
    # A model binding put the periodic interval under DBID_PRV_RESYNC_PERIODIC: the
    # placeholder key in the same file means nothing to this device.
    per_mac(servers, 7, DBID_PRV_RESYNC_PERIODIC="900", DBID_RESYNC_PERIODIC="60")
    clock = VirtualClock()
    state = DeviceState(
        MAC, params={"DBID_PRV_OPTION66_ENABLED": "0", "DBID_PROFILE_RULE": servers.rule}
    )
    keys = SettingKeys(resync_periodic="DBID_PRV_RESYNC_PERIODIC", random_delay="DBID_RD")
    device = TimedDevice(state, clock=clock, fetcher=MultiFetcher.standard(timeout=2), keys=keys)
    state.params["DBID_RD"] = "0"
    device.power_on()
    clock.run(until=2000)
    assert resyncs(device) == [
        (0.0, "reset: applied, version 7"),
        (900.0, "periodic: unchanged, version 7"),
        (1800.0, "periodic: unchanged, version 7"),
    ]


# --- option 66 from factory state --------------------------------------------------------


def test_factory_device_follows_option66_then_its_profile_rule(servers: Servers) -> None:
    # The overview 4.3.2: the model's file from the option-66 TFTP server turns option 66
    # off and names the per-MAC file; that one is fetched at the next (periodic) resync.
    rule = f"http://127.0.0.1:{servers.http}/fv$(MA).conf"
    servers.write(
        "IP542N.conf",
        render_lines(
            [
                ("DBID_DBASE_VERSION", "1000"),
                ("DBID_PRV_OPTION66_ENABLED", "0"),
                ("DBID_PROFILE_RULE", rule),
            ]
        ),
    )
    servers.write(
        "fv0021f2011b19.conf",
        render_lines([("DBID_DBASE_VERSION", "1001"), ("DBID_SIP_ACCOUNT", "2001")]),
    )
    clock = VirtualClock()
    state = DeviceState(MAC, option66_server=f"127.0.0.1:{servers.tftp}")
    device = TimedDevice(state, clock=clock, fetcher=MultiFetcher.standard(timeout=2))
    device.power_on()
    clock.run(until=2 * 3600)
    first = draw(40)
    assert resyncs(device) == [
        (first, "reset: applied, version 1000"),
        (first + 3600, "periodic: applied, version 1001"),
    ]
    assert state.params["DBID_SIP_ACCOUNT"] == "2001"
    # The servers log a transfer when it ends (TFTP after its last ACK), so their order may
    # differ from the device's; the versions above give the order, this the files served.
    assert sorted(servers.paths(2)) == ["/fv0021f2011b19.conf", "IP542N.conf"]


def test_option66_enabled_without_dhcp_retries_and_never_uses_the_rule(servers: Servers) -> None:
    per_mac(servers, 7)
    clock = VirtualClock()
    state = DeviceState(
        MAC,
        params={"DBID_PRV_OPTION66_ENABLED": "1", "DBID_PROFILE_RULE": servers.rule},
    )
    device = TimedDevice(state, clock=clock, fetcher=MultiFetcher.standard(timeout=2))
    device.power_on()
    clock.run(until=3 * 3600)
    first = draw(40)
    assert resyncs(device) == [
        (first, "reset: rule-failed, version (none)"),
        (first + 3600, "retry: rule-failed, version (none)"),
        (first + 7200, "retry: rule-failed, version (none)"),
    ]
    assert servers.seen == []


# --- Resync Error Retry Delay ----------------------------------------------------------


def test_a_failed_resync_is_retried_after_the_error_retry_delay(servers: Servers) -> None:
    clock = VirtualClock()
    device = staged(
        servers, clock, DBID_RESYNC_RANDOM_DELAY="0", DBID_RESYNC_ERROR_RETRY_DELAY="300"
    )
    device.power_on()
    clock.run(until=400)  # no file yet: 404 at 0 and at 300
    per_mac(servers, 7)
    clock.run(until=700)
    assert resyncs(device) == [
        (0.0, "reset: fetch-failed, version (none)"),
        (300.0, "retry: fetch-failed, version (none)"),
        (600.0, "retry: applied, version 7"),
    ]
    assert [f.status for f in device.fetches] == ["fetch-failed", "fetch-failed", "applied"]


def test_a_wrong_key_is_a_failure_that_retries(servers: Servers) -> None:
    per_mac(servers, 7)
    clock = VirtualClock()
    rule = f"[--key wrong]http://127.0.0.1:{servers.http}/fv$(MA).conf"
    state = DeviceState(
        MAC,
        params={
            "DBID_PRV_OPTION66_ENABLED": "0",
            "DBID_PROFILE_RULE": rule,
            "DBID_RESYNC_RANDOM_DELAY": "0",
        },
    )
    device = TimedDevice(state, clock=clock, fetcher=MultiFetcher.standard(timeout=2))
    device.power_on()
    clock.run(until=3601)
    assert resyncs(device) == [
        (0.0, "reset: decrypt-failed, version (none)"),
        (3600.0, "retry: decrypt-failed, version (none)"),
    ]


# --- Forced Resync Delay -----------------------------------------------------------------


def test_no_resync_while_a_line_is_active_then_the_forced_delay(servers: Servers) -> None:
    per_mac(servers, 7)
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0", DBID_FORCED_RESYNC_DELAY="600")
    device.power_on()
    for at, line, active in (
        (100, 1, True),  # a call from 100 ...
        (5000, 1, False),  # ... to 5000: the periodic resync due at 3600 waits
        (5300, 2, True),  # another call stops the countdown at 5300 ...
        (5400, 2, False),  # ... and it starts again, from 600, at 5400
    ):
        clock.call_at(at, functools.partial(device.set_line, line, active), owner=device)
    clock.run(until=6100)
    assert resyncs(device) == [
        (0.0, "reset: applied, version 7"),
        (6000.0, "periodic: unchanged, version 7"),
    ]
    assert [(e.at, e.kind) for e in device.log if e.kind.startswith("resync-")] == [
        (0.0, "resync-due"),
        (3600.0, "resync-due"),
        (3600.0, "resync-deferred"),
    ]


# --- Provision Enable and factory reset --------------------------------------------------


def test_provision_disabled_by_a_file_stops_everything_until_a_factory_reset(
    servers: Servers,
) -> None:
    per_mac(servers, 7, DBID_PROVISION_ENABLE="0")
    servers.write(
        "IP542N.conf",
        render_lines([("DBID_DBASE_VERSION", "1"), ("DBID_PRV_OPTION66_ENABLED", "0")]),
    )
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0")
    device.state.option66_server = f"127.0.0.1:{servers.tftp}"
    device.power_on()
    clock.run(until=30 * 86400)
    assert resyncs(device) == [(0.0, "reset: applied, version 7")]
    assert [e.kind for e in device.log][-2:] == ["boot", "disabled"]
    assert clock.pending == 0

    # Factory reset: no key, no version, option 66 on; the random delay applies again.
    clock.call_at(31 * 86400, device.factory_reset, owner=device)
    clock.run(until=31 * 86400)
    assert device.state.params == {"DBID_PRV_OPTION66_ENABLED": "1", "DBID_PROFILE_RULE": ""}
    assert device.state.version is None
    assert device.state.sw_version == "1.0"
    clock.run(until=31 * 86400 + 41)
    # The draw after the first one (random delay 0 drew nothing).
    delay = random.Random(MAC).uniform(0, 40)
    assert resyncs(device)[1:] == [(31 * 86400 + delay, "reset: applied, version 1")]
    assert sorted(servers.paths(2)) == ["/fv0021f2011b19.conf", "IP542N.conf"]


# --- upgrades ----------------------------------------------------------------------------


def upgrading(servers: Servers, rule: str, **extra: str) -> None:
    per_mac(servers, 7, DBID_UPGRADE_RULE=rule, **extra)


def test_upgrade_when_the_image_differs_from_swver_and_only_once(servers: Servers) -> None:
    rule = f"http://127.0.0.1:{servers.http}/fw/IP542N-2.0.bin"
    upgrading(servers, rule)
    servers.write("fw/IP542N-2.0.bin", b"\x7fELF image 2.0")
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0")
    device.firmware = {"IP542N-2.0.bin": "2.0"}
    device.power_on()
    clock.run(until=4 * 3600 - 1)
    assert device.state.sw_version == "2.0"
    # 0: applied (reboot); 3600: current file, upgrade, reboot, resync after upgrade;
    # 7200 and 10800: current file, and 2.0 is running: the image is not fetched again.
    assert [(e.at, e.kind) for e in device.log if e.kind.startswith(("upgrade", "resync"))] == [
        (0.0, "resync-due"),
        (0.0, "resync"),
        (3600.0, "resync-due"),
        (3600.0, "resync"),
        (3600.0, "upgraded"),
        (3600.0, "resync-due"),
        (3600.0, "resync"),
        (7200.0, "resync-due"),
        (7200.0, "resync"),
        (7200.0, "upgrade-current"),
        (10800.0, "resync-due"),
        (10800.0, "resync"),
        (10800.0, "upgrade-current"),
    ]
    assert [e.detail for e in device.log if e.kind == "boot"] == ["power-on", "update", "upgrade"]
    assert servers.paths(5).count("/fw/IP542N-2.0.bin") == 1
    assert [
        (f.purpose, f.status, f.version) for f in device.fetches if f.purpose == "firmware"
    ] == [("firmware", "upgraded", "2.0")]


def test_no_upgrade_when_swver_is_the_images_version(servers: Servers) -> None:
    upgrading(servers, f"http://127.0.0.1:{servers.http}/fw/IP542N-1.0.bin")
    servers.write("fw/IP542N-1.0.bin", b"image 1.0")
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0")
    device.firmware = {"IP542N-1.0.bin": "1.0"}
    device.power_on()
    clock.run(until=3 * 3600)
    assert "/fw/IP542N-1.0.bin" not in servers.paths(3)
    # At 3600, 7200 and 10800: the file is current, and so is the firmware.
    assert [e.at for e in device.log if e.kind == "upgrade-current"] == [3600, 7200, 10800]


def test_upgrade_enable_off_never_fetches_the_image(servers: Servers) -> None:
    upgrading(
        servers, f"http://127.0.0.1:{servers.http}/fw/IP542N-2.0.bin", DBID_UPGRADE_ENABLE="0"
    )
    servers.write("fw/IP542N-2.0.bin", b"image 2.0")
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0")
    device.firmware = {"IP542N-2.0.bin": "2.0"}
    device.power_on()
    clock.run(until=3 * 3600)
    assert device.state.sw_version == "1.0"
    assert "/fw/IP542N-2.0.bin" not in servers.paths(3)


def test_https_upgrade_rule_fails_as_the_overview_says(servers: Servers) -> None:
    upgrading(servers, "https://prov.example.net/fw/IP542N-2.0.bin")
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0")
    device.firmware = {"IP542N-2.0.bin": "2.0"}
    device.power_on()
    clock.run(until=3601)
    failed = [(e.at, e.detail) for e in device.log if e.kind == "upgrade-failed"]
    assert failed == [
        (
            3600.0,
            "the device cannot upgrade over HTTPS (overview 4.2); serve it over http:// or tftp://",
        )
    ]
    assert device.state.sw_version == "1.0"


def test_a_failed_upgrade_waits_the_upgrade_error_retry_delay(servers: Servers) -> None:
    upgrading(
        servers,
        f"tftp://127.0.0.1:{servers.tftp}/IP542N-$PN-2.0.bin",
        DBID_UPGRADE_ERROR_RETRY_DELAY="1000",
    )
    clock = VirtualClock()
    device = staged(servers, clock, DBID_RESYNC_RANDOM_DELAY="0")
    device.firmware = {"IP542N-IP542N-2.0.bin": "2.0"}
    device.power_on()
    clock.run(until=4000)  # the image is missing at 3600
    servers.write("IP542N-IP542N-2.0.bin", b"image 2.0")
    clock.run(until=4700)
    attempts = [(e.at, e.kind) for e in device.log if e.kind in ("upgrade-failed", "upgraded")]
    assert attempts == [(3600.0, "upgrade-failed"), (4600.0, "upgraded")]
    # Resync After Upgrade: a resync right after each attempt, the failed one too.
    assert [at for at, detail in resyncs(device) if detail.startswith("after-upgrade")] == [
        3600.0,
        4600.0,
    ]
    assert device.state.sw_version == "2.0"
