"""DHCP option 66 → TFTP → the per-MAC file, between two network namespaces.

`gp-srv-*` runs dnsmasq (DHCP with option 66 = 10.203.0.1, and its own TFTP server on
the TFTP root gitprov published into); `gp-dev-*` holds the device's end of a veth pair,
with an IP542N's MAC. busybox udhcpc gets the lease and option 66, then the device
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

import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitprov.formats import flyingvoice
from gitprov.rule_url import format_rule, parse_rule
from tests.fixtures.gitrepo import ROOT, GitRepo, demo_private_key, example_files
from tests.fixtures.peers import need

pytestmark = pytest.mark.e2e

SERVER_IP = "10.203.0.1"
MAC = "0021f2011b19"  # an IP542N of the example inventory
MAC_COLONS = "00:21:f2:01:1b:19"
FLOOR = 1000  # the example's version_floor: the bootstrap's version

UDHCPC_SCRIPT = """#!/bin/sh
env > "{folder}/udhcpc-$1.env"
case "$1" in
  deconfig) {ip} addr flush dev "$interface"; {ip} link set "$interface" up ;;
  bound|renew) {ip} addr flush dev "$interface"; {ip} addr add "$ip/$mask" dev "$interface" ;;
esac
exit 0
"""

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


def run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout.decode()


@dataclass(frozen=True)
class Lan:
    ip: str  # the `ip` binary
    srv: str  # namespace names
    dev: str
    base: Path  # world-traversable folder (dnsmasq drops to nobody): tftp root, log
    tftp_root: Path
    log: Path
    leased: str  # what udhcpc got
    option66: str  # the `tftp` value udhcpc gave its script

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log_text())
            if m is not None:
                return m
            if time.monotonic() > deadline:
                pytest.fail(f"dnsmasq's log has no {pattern!r}:\n{self.log_text()}")
            time.sleep(0.05)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, DHCP on port 67, TFTP on port 69")
    ip = need("ip", "iproute2")
    dnsmasq = need("dnsmasq", "dnsmasq-base")
    busybox = need("busybox", "busybox")
    tag = secrets.token_hex(3)
    srv, dev = f"gp-srv-{os.getpid()}-{tag}", f"gp-dev-{os.getpid()}-{tag}"
    veth_srv, veth_dev = f"gps{tag}", f"gpd{tag}"  # interface names: at most 15 characters
    base = Path(tempfile.mkdtemp(prefix="gitprov-option66-"))
    made: list[str] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        base.chmod(0o755)
        tftp_root = base / "tftp"
        tftp_root.mkdir()
        add = subprocess.run([ip, "netns", "add", srv], capture_output=True, timeout=30)
        if add.returncode != 0:
            pytest.skip(f"`ip netns add` failed (needs CAP_SYS_ADMIN): {add.stderr.decode()}")
        made.append(srv)
        probe = subprocess.run([ip, "netns", "exec", srv, "true"], capture_output=True, timeout=30)
        if probe.returncode != 0:
            pytest.skip(f"`ip netns exec` failed (needs CAP_SYS_ADMIN): {probe.stderr.decode()}")
        run(ip, "netns", "add", dev)
        made.append(dev)
        # Both ends are created inside the namespaces: nothing is left in the host's.
        run(ip, "link", "add", veth_srv, "netns", srv, "type", "veth",
            "peer", "name", veth_dev, "address", MAC_COLONS, "netns", dev)  # fmt: skip
        run(ip, "-n", srv, "link", "set", "lo", "up")
        run(ip, "-n", dev, "link", "set", "lo", "up")
        run(ip, "-n", srv, "addr", "add", f"{SERVER_IP}/24", "dev", veth_srv)
        run(ip, "-n", srv, "link", "set", veth_srv, "up")
        run(ip, "-n", dev, "link", "set", veth_dev, "up")

        log = base / "dnsmasq.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [ip, "netns", "exec", srv, dnsmasq, "--keep-in-foreground",
                 "--conf-file=/dev/null", "--port=0", "--no-ping",
                 f"--interface={veth_srv}", "--bind-interfaces", "--except-interface=lo",
                 "--dhcp-range=10.203.0.100,10.203.0.150,255.255.255.0,1h",
                 f"--dhcp-option=66,{SERVER_IP}", "--dhcp-option=3", "--dhcp-option=6",
                 f"--dhcp-leasefile={base / 'leases'}", "--log-dhcp", "--log-facility=-",
                 "--enable-tftp", f"--tftp-root={tftp_root}",
                 f"--pid-file={base / 'dnsmasq.pid'}"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        partial = Lan(ip, srv, dev, base, tftp_root, log, "", "")
        deadline = time.monotonic() + 10
        while "TFTP root is" not in partial.log_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dnsmasq did not start:\n{partial.log_text()}")
            time.sleep(0.05)

        # busybox udhcpc: -O tftp asks for option 66; the script gets it as $tftp.
        script = base / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(folder=base, ip=ip))
        script.chmod(0o755)
        run(ip, "netns", "exec", dev, busybox, "udhcpc", "-i", veth_dev, "-f", "-q", "-n",
            "-t", "5", "-T", "1", "-O", "tftp", "-s", str(script))  # fmt: skip
        bound = dict(
            line.split("=", 1)
            for line in (base / "udhcpc-bound.env").read_text().splitlines()
            if "=" in line
        )
        yield Lan(ip, srv, dev, base, tftp_root, log, bound["ip"], bound["tftp"])
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for ns in reversed(made):
            subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=30)
        shutil.rmtree(base, ignore_errors=True)
        if made:
            names = subprocess.run(
                [ip, "netns", "list"], capture_output=True, timeout=30, text=True
            ).stdout
            links = subprocess.run(
                [ip, "-o", "link", "show"], capture_output=True, timeout=30, text=True
            ).stdout
            assert srv not in names and dev not in names, names
            assert veth_srv not in links and veth_dev not in links, links


def gitprov(repo: GitRepo, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GITPROV_PRIVATE_KEY": demo_private_key()}
    env.pop("GITPROV_PRIVATE_KEY_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gitprov", "--repo", str(repo.path), *argv],
        capture_output=True,
        env=env,
        timeout=60,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def fleet_repo(path: Path, *, encryption: str | None) -> GitRepo:
    """The example inventory with option 66 for the IP542N, served from 10.203.0.1 over
    TFTP; `encryption` replaces the fleet's encryption mode when given."""
    files = example_files()
    text = files["inventory/gitprov.yaml"].decode()

    def sub(old: str, new: str) -> None:
        nonlocal text
        assert text.count(old) == 1, f"the example gitprov.yaml has no single {old!r}"
        text = text.replace(old, new)

    sub('  url: "http://127.0.0.1:8080"\n', f'  url: "tftp://{SERVER_IP}"\n')
    sub("\npublish:\n", "\npublish:\n  option66: [IP542N]\n")
    if encryption is not None:
        sub("  mode: openssl-md5\n", f"  mode: {encryption}\n")
    files["inventory/gitprov.yaml"] = text.encode()
    repo = GitRepo(path)
    repo.commit(files, "example inventory behind option 66", worktree=True)
    return repo


def publish(repo: GitRepo, lan: Lan) -> str:
    """Publish main into the dnsmasq TFTP root; what gitprov said (its notes included)."""
    proc = gitprov(
        repo,
        "publish",
        "--rev",
        "main",
        "--tftp-root",
        str(lan.tftp_root),
        "--http-root",
        str(lan.base / "http"),
        "--state-dir",
        str(lan.base / "state"),
    )
    return proc.stdout + proc.stderr


def device_in_namespace(lan: Lan, staged_rules: list[str | None]) -> dict[str, Any]:
    """Run the emulator inside the device namespace from factory state; one
    `resync_until_stable` per entry of `staged_rules` (a Profile Rule set on the device
    first, e.g. on its web UI, or None)."""
    job = {"mac": MAC, "ip": lan.leased, "option66": lan.option66, "staged_rules": staged_rules}
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [lan.ip, "netns", "exec", lan.dev, sys.executable, "-c", EMULATOR],
        input=json.dumps(job).encode(),  # the key goes on stdin, never on a command line
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def steps(phase: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(r["source"], r["status"], r["version_after"]) for r in phase]


def sent(lan: Lan, name: str, times: int) -> None:
    """dnsmasq logged `sent ROOT/NAME to LEASED` exactly `times` times (one per fetch)."""
    line = re.compile(
        rf"sent {re.escape(str(lan.tftp_root / name))} to {re.escape(lan.leased)}$", re.M
    )
    deadline = time.monotonic() + 5
    while len(line.findall(lan.log_text())) < times and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(line.findall(lan.log_text())) == times, lan.log_text()


def test_dhcp_gives_option_66_to_the_device(lan: Lan) -> None:
    assert lan.option66 == SERVER_IP
    assert re.fullmatch(r"10\.203\.0\.(1[0-4]\d|150)", lan.leased)
    lan.wait_for_log(rf"DHCPACK\(gps\w+\) {re.escape(lan.leased)} {MAC_COLONS}")
    addresses = run(lan.ip, "-n", lan.dev, "-o", "addr", "show")
    assert f"inet {lan.leased}/24" in addresses


def test_zero_touch_with_a_plaintext_fleet(lan: Lan, tmp_path: Path) -> None:
    repo = fleet_repo(tmp_path / "repo", encryption="none")
    publish(repo, lan)
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
    notes = publish(repo, lan)
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
    staged = format_rule(dataclasses.replace(rule, key=key))
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
