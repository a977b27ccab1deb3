"""A small boot storm: 50 emulated devices, Random Delay 40 s on a virtual clock, against
`gitprov serve`'s embedded HTTP and TFTP servers on loopback, each from its own address.

Each device's file is written here (its own key, version and account), so "each gets its
own correct file" is checked against values spelled out per device. The 1,000-device
storm with its numbers is bench/boot_storm.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gitprov.crypto import Cipher, Mode
from gitprov.formats.flyingvoice import render_lines
from gitprov.tools.device import DeviceState, Fleet, loopback_address, run_fleet
from gitprov.tools.serve import FetchEvent, serve_roots

COUNT = 50
CIPHER = Cipher(Mode.OPENSSL_MD5)


def mac_of(index: int) -> str:
    return f"0021f2{0x100 + index:06x}"


def test_loopback_addresses() -> None:
    assert [loopback_address(i) for i in (0, 1, 253, 254, 999)] == [
        "127.1.0.1",
        "127.1.0.2",
        "127.1.0.254",
        "127.1.1.1",
        "127.1.3.238",
    ]
    with pytest.raises(ValueError, match="no loopback address"):
        loopback_address(-1)


def test_fifty_devices_boot_at_once_each_gets_its_own_file(tmp_path: Path) -> None:
    http_root, tftp_root = tmp_path / "http", tmp_path / "tftp"
    http_root.mkdir()
    tftp_root.mkdir()
    seen: list[FetchEvent] = []
    lock = threading.Lock()

    def log(event: FetchEvent) -> None:
        with lock:
            seen.append(event)

    handle = serve_roots(http_root, tftp_root, "127.0.0.1", 0, 0, on_fetch=log)
    try:
        assert handle.http is not None and handle.tftp is not None
        states = []
        for index in range(COUNT):
            mac = mac_of(index)
            key = f"key-{mac}"
            if index % 2:  # odd: TFTP, even: HTTP
                rule = f"[--key {key}]tftp://127.0.0.1:{handle.tftp.port}/fv$(MA).conf"
                root = tftp_root
            else:
                rule = f"[--key {key}]http://127.0.0.1:{handle.http.port}/fv$(MA).conf"
                root = http_root
            pairs = [
                ("DBID_DBASE_VERSION", str(1000 + index)),
                ("DBID_PRV_OPTION66_ENABLED", "0"),
                ("DBID_PROFILE_RULE", rule),
                ("DBID_SIP_ACCOUNT", f"{2000 + index}\t\t\t"),
            ]
            (root / f"fv{mac}.conf").write_bytes(CIPHER.encrypt(render_lines(pairs), key))
            states.append(
                DeviceState(
                    mac,
                    ip=loopback_address(index),
                    params={"DBID_PRV_OPTION66_ENABLED": "0", "DBID_PROFILE_RULE": rule},
                )
            )

        fleet = Fleet(states, seed=7)
        fleet.power_on()
        report = fleet.run(until=60, workers=8)

        assert report.requests == COUNT
        assert report.failed == 0
        for index, device in enumerate(report.devices):
            mac = mac_of(index)
            port = handle.tftp.port if index % 2 else handle.http.port
            scheme = "tftp" if index % 2 else "http"
            assert device.mac == mac
            assert device.address == loopback_address(index)
            assert device.version == str(1000 + index)
            assert device.last_url == f"[--key <redacted>]{scheme}://127.0.0.1:{port}/fv{mac}.conf"
            assert device.last_status == "applied"
            (fetch,) = device.fetches
            assert 0 <= fetch.at <= 40
            assert fetch.version == str(1000 + index)
        for index, state in enumerate(states):
            assert state.params["DBID_SIP_ACCOUNT"] == f"{2000 + index}\t\t\t"
        # Spread over the delay window, not all at one instant.
        starts = sorted(f.at for _, f in report.fetches)
        assert starts[0] < 10 and starts[-1] > 30
        slowest = report.slowest
        assert slowest is not None and slowest[1].latency > 0
        assert report.requests_per_second > 0

        # The servers saw each device, from its own address, ask for its own file.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(seen) < COUNT:
            time.sleep(0.01)
        with lock:
            served = sorted((e.client, e.protocol, e.path.lstrip("/"), e.status) for e in seen)
        assert served == sorted(
            (
                loopback_address(i),
                "tftp" if i % 2 else "http",
                f"fv{mac_of(i)}.conf",
                200,
            )
            for i in range(COUNT)
        )

        # An hour later every device resyncs once more and finds its file current.
        report = fleet.run(until=3600 + 60, workers=8)
        assert report.requests == 2 * COUNT
        assert {d.last_status for d in report.devices} == {"unchanged"}
        assert all(d.fetches[1].at == d.fetches[0].at + 3600 for d in report.devices)
    finally:
        handle.stop()


def test_run_fleet_refuses_a_mac_twice() -> None:
    with pytest.raises(ValueError, match="MAC 0021f2000100 is given twice"):
        run_fleet([DeviceState(mac_of(0)), DeviceState("00:21:F2:00:01:00")], until=1)
