"""deploy/dnsmasq-gitprov.conf and deploy/kea-dhcp4-option66.json: the servers' own
checks (deploy/README.md section 9), then each server for real between two network
namespaces: a device with a Flying Voice MAC gets option 66 from the deploy file, a device
with another MAC does not.

Only 10.203.0.0/24 inside the test's own namespaces is used; the server is stopped and
both namespaces are deleted (which removes the veth pair) in a finally.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, readme_commands, sh, substitute
from tests.fixtures.gitrepo import ROOT
from tests.fixtures.option66 import UDHCPC_SCRIPT, run
from tests.fixtures.peers import need

DNSMASQ = DEPLOY / "dnsmasq-gitprov.conf"
KEA = DEPLOY / "kea-dhcp4-option66.json"
EXAMPLE_SERVER = "192.0.2.10"  # what both files hand out as option 66
SERVER_IP = "10.203.0.1"
FLYING_VOICE_MAC = "00:21:f2:01:1b:19"
OTHER_MAC = "02:00:5e:10:00:01"


def test_dnsmasq_accepts_the_file_as_the_readme_checks_it() -> None:
    need("dnsmasq", "dnsmasq-base")
    (check,) = [c for c in readme_commands("## 9.") if c.startswith("dnsmasq --test")]
    done = sh(substitute(check, {"/etc/dnsmasq.d/gitprov.conf": str(DNSMASQ)}), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "syntax check OK" in done.stderr


def test_kea_names_option_66_tftp_server_name() -> None:
    """Kea's name for option 66 is tftp-server-name (boot-file-name is 67). The file says
    both name and code, so Kea itself refuses a mismatch; without Kea, the JSON is
    checked here."""
    config = json.loads(KEA.read_text())
    (fv,) = config["Dhcp4"]["client-classes"]
    assert fv["test"] == "substring(pkt4.mac, 0, 3) == 0x0021f2"
    (option,) = fv["option-data"]
    assert (option["name"], option["code"], option["data"]) == (
        "tftp-server-name",
        66,
        EXAMPLE_SERVER,
    )


def test_kea_accepts_the_file_as_the_readme_checks_it() -> None:
    need("kea-dhcp4", "kea-dhcp4-server")
    (check,) = [c for c in readme_commands("## 9.") if c.startswith("kea-dhcp4 -t")]
    done = sh(substitute(check, {"/etc/kea/kea-dhcp4.conf": str(KEA)}), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


# -- for real, between namespaces ----------------------------------------------------------


@dataclass(frozen=True)
class Lan:
    ip: str
    srv: str  # namespace names
    dev: str
    veth_srv: str
    veth_dev: str
    base: Path


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    """Two namespaces joined by a veth pair; the server end has 10.203.0.1/24."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, DHCP on port 67")
    ip = need("ip", "iproute2")
    tag = secrets.token_hex(3)
    srv, dev = f"gp-dsrv-{os.getpid()}-{tag}", f"gp-ddev-{os.getpid()}-{tag}"
    veth_srv, veth_dev = f"gpds{tag}", f"gpdd{tag}"  # at most 15 characters
    made: list[str] = []
    try:
        add = subprocess.run([ip, "netns", "add", srv], capture_output=True, timeout=30)
        if add.returncode != 0:
            pytest.skip(f"`ip netns add` failed (needs CAP_SYS_ADMIN): {add.stderr.decode()}")
        made.append(srv)
        run(ip, "netns", "add", dev)
        made.append(dev)
        run(
            ip,
            "link",
            "add",
            veth_srv,
            "netns",
            srv,
            "type",
            "veth",
            "peer",
            "name",
            veth_dev,
            "address",
            FLYING_VOICE_MAC,
            "netns",
            dev,
        )
        for ns in (srv, dev):
            run(ip, "-n", ns, "link", "set", "lo", "up")
        run(ip, "-n", srv, "addr", "add", f"{SERVER_IP}/24", "dev", veth_srv)
        run(ip, "-n", srv, "link", "set", veth_srv, "up")
        run(ip, "-n", dev, "link", "set", veth_dev, "up")
        yield Lan(ip, srv, dev, veth_srv, veth_dev, tmp_path)
    finally:
        for ns in reversed(made):
            subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=30)
        if made:
            left = subprocess.run(
                [ip, "netns", "list"], capture_output=True, timeout=30, text=True
            ).stdout
            assert srv not in left and dev not in left, left


def lease(lan: Lan, mac: str) -> dict[str, str]:
    """busybox udhcpc on the device end with `mac`, asking for option 66 (-O tftp) as
    Flying Voice devices do: what its script was given when bound."""
    busybox = need("busybox", "busybox")
    run(lan.ip, "-n", lan.dev, "link", "set", lan.veth_dev, "address", mac)
    script = lan.base / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT.format(folder=lan.base, ip=lan.ip))
    script.chmod(0o755)
    bound = lan.base / "udhcpc-bound.env"
    bound.unlink(missing_ok=True)
    run(
        lan.ip,
        "netns",
        "exec",
        lan.dev,
        busybox,
        "udhcpc",
        "-i",
        lan.veth_dev,
        "-f",
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "1",
        "-O",
        "tftp",
        "-s",
        str(script),
    )
    return dict(ln.split("=", 1) for ln in bound.read_text().splitlines() if "=" in ln)


def start(
    argv: list[str], log: Path, ready: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 15
    while not re.search(ready, log.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"{argv[3]} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def assert_option66_for_flying_voice_only(lan: Lan, served: str) -> None:
    got = lease(lan, FLYING_VOICE_MAC)
    assert got["ip"].startswith("10.203.0."), got
    assert got.get("tftp") == served, got
    other = lease(lan, OTHER_MAC)
    assert other["ip"].startswith("10.203.0."), other
    assert "tftp" not in other, other


def test_dnsmasq_hands_option_66_to_flying_voice_devices_only(lan: Lan) -> None:
    dnsmasq = need("dnsmasq", "dnsmasq-base")
    conf = lan.base / "gitprov.conf"
    conf.write_text(DNSMASQ.read_text().replace(EXAMPLE_SERVER, SERVER_IP))
    proc = start(
        [
            lan.ip,
            "netns",
            "exec",
            lan.srv,
            dnsmasq,
            "--keep-in-foreground",
            f"--conf-file={conf}",
            "--port=0",
            "--no-ping",
            f"--interface={lan.veth_srv}",
            "--bind-interfaces",
            "--except-interface=lo",
            "--dhcp-range=10.203.0.100,10.203.0.150,255.255.255.0,1h",
            f"--dhcp-leasefile={lan.base / 'leases'}",
            "--log-dhcp",
            "--log-facility=-",
            f"--pid-file={lan.base / 'dnsmasq.pid'}",
        ],
        lan.base / "dnsmasq.log",
        r"DHCP, IP range",
    )
    try:
        assert_option66_for_flying_voice_only(lan, SERVER_IP)
    finally:
        stop(proc)


def test_kea_hands_option_66_to_flying_voice_devices_only(lan: Lan) -> None:
    kea = need("kea-dhcp4", "kea-dhcp4-server")
    text = KEA.read_text().replace(EXAMPLE_SERVER, SERVER_IP)
    config = json.loads(text.replace("192.0.2.", "10.203.0."))
    dhcp4 = config["Dhcp4"]
    dhcp4["interfaces-config"]["interfaces"] = [lan.veth_srv]
    dhcp4["lease-database"] = {"type": "memfile", "persist": False}
    dhcp4["loggers"] = [
        {"name": "kea-dhcp4", "severity": "INFO", "output_options": [{"output": "stdout"}]}
    ]
    conf = lan.base / "kea.json"
    conf.write_text(json.dumps(config))
    # Kea's pid and lock files default to /run/kea and /var/run: here, the test's folder.
    env = {**os.environ, "KEA_PIDFILE_DIR": str(lan.base), "KEA_LOCKFILE_DIR": str(lan.base)}
    proc = start(
        [lan.ip, "netns", "exec", lan.srv, kea, "-c", str(conf)],
        lan.base / "kea.log",
        r"DHCP4_STARTED",
        env,
    )
    try:
        assert_option66_for_flying_voice_only(lan, SERVER_IP)
    finally:
        stop(proc)
