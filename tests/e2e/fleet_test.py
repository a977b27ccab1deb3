"""Issue 13, acceptance 3: after a publish `gitprov fleet` shows the devices stale; after
the emulator's periodic resync they show current: from the fetch log of `gitprov serve`'s
embedded servers, from a real nginx access log, and from real tftpd-hpa syslog lines.

The example inventory is published by the CLI; emulated devices (one virtual clock,
Resync Periodic 3600 s by default, real fetches from their own loopback addresses) boot
from a Profile Rule and then follow the one their file writes. The versions expected are
`gitprov show --reveal`'s, not the manifest's that `gitprov fleet` reads; every report is
checked against its JSON Schema.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gitprov.cli import main
from gitprov.schemas import output_schemas
from gitprov.tools.device import (
    OPTION66_KEY,
    PROFILE_RULE_KEY,
    DeviceState,
    Fleet,
    MultiFetcher,
    factory_params,
    loopback_address,
)
from gitprov.tools.fetchlog import FetchLog, ServedVersions
from gitprov.tools.serve import serve_roots
from tests.e2e.production_test import tftp_get
from tests.fixtures.deploy_files import free_port, tftpd_defaults, wait_for_tcp
from tests.fixtures.gitrepo import ROOT, GitRepo
from tests.fixtures.peers import need
from tests.fixtures.roots import root_args
from tests.tools.fetchlog_test import shown_version

pytestmark = pytest.mark.e2e

MACS = ["0021f2011b19", "0021f2011b20", "0021f2a0c001", "0021f2a0c002"]
HOST = "127.0.0.1"
# The example's provisioning.url: the Profile Rule every published file writes.
RULE_HOST = "127.0.0.1"
BASE = "inventory/profiles/base.yaml"


# --- helpers -------------------------------------------------------------------------------


def publish(repo: GitRepo, base: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    """Publish main; each device's version as `gitprov show --reveal` has it."""
    code = main(["--repo", str(repo.path), "publish", "--rev", "main", *root_args(base)])
    assert code == 0, capsys.readouterr().err
    return {mac: shown_version(repo, mac, capsys) for mac in MACS}


def change_every_device(repo: GitRepo) -> None:
    text = repo.files[BASE]
    changed = text.replace(b"sip.outbound: sbc1.example.net", b"sip.outbound: sbc2.example.net")
    assert changed != text
    repo.commit({BASE: changed}, "move every device to the second SBC", worktree=True)


def device_keys(repo: GitRepo, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    keys = {}
    for mac in MACS:
        capsys.readouterr()
        assert main(["--repo", str(repo.path), "key", mac, "--rev", "main"]) == 0
        keys[mac] = capsys.readouterr().out.strip()
    return keys


def fleet_of(keys: dict[str, str], port: int) -> Fleet:
    """The example's devices, each from its own loopback address; the rule's host (the
    example's provisioning.url) is sent to `port`."""
    override = {RULE_HOST: (HOST, port)}
    states = [
        DeviceState(
            mac,
            ip=loopback_address(i),
            params={
                **factory_params(),
                OPTION66_KEY: "0",
                PROFILE_RULE_KEY: f"[--key {keys[mac]}]http://{RULE_HOST}:8080/fv$(MA).conf",
            },
        )
        for i, mac in enumerate(MACS)
    ]
    return Fleet(
        states,
        fetcher=lambda s: MultiFetcher.standard(host_override=override, source_address=s.ip),
        seed=3,
    )


def wait_for_lines(log: Path, count: int, holding: bytes = b"\n") -> None:
    """Servers write a request's line after the client has its answer: wait until `log`
    has `count` lines (or occurrences of `holding`)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log.exists() and log.read_bytes().count(holding) >= count:
            return
        time.sleep(0.02)
    pytest.fail(f"{log} has fewer than {count} x {holding!r}: {log.read_text()}")


def requests_in(log: Path) -> int:
    return log.read_bytes().count(b"RRQ from ") if log.exists() else 0


def fleet_report(
    state: Path, logs: list[str], capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    capsys.readouterr()
    argv = ["fleet", "--state-dir", str(state), "--format", "json"]
    for log in logs:
        argv += ["--log", log]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "malformed" not in captured.err, captured.err
    doc: dict[str, Any] = json.loads(captured.out)
    Draft202012Validator(output_schemas()["fleet-output.schema.json"]).validate(doc)
    return doc


def states(doc: dict[str, Any]) -> dict[str, tuple[str, int, int | None]]:
    return {
        d["mac"]: (d["state"], d["published_version"], d["fetched_version"]) for d in doc["devices"]
    }


def after_the_write(root: Path) -> None:
    """Wait until a whole second has begun after the last file of `root` took its place:
    nginx and tftpd-hpa log whole seconds, and a fetch logged in the second of the
    write may have got the file before it (docs/fleet-status.md)."""
    latest = max(max(p.stat().st_ctime, p.stat().st_mtime) for p in root.iterdir())
    time.sleep(max(0.0, math.ceil(latest) - time.time()) + 0.05)


def the_journey(
    repo: GitRepo,
    base: Path,
    port: int,
    logs: list[str],
    served_log: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    whole_seconds: bool,
) -> None:
    """Boot, publish, stale, periodic resync, current; `logs` as `gitprov fleet` reads them."""
    state = base / "state"
    first = {mac: shown_version(repo, mac, capsys) for mac in MACS}
    if whole_seconds:
        after_the_write(base / "http")
    fleet = fleet_of(device_keys(repo, capsys), port)
    fleet.power_on()
    report = fleet.run(until=120, workers=4)
    assert report.failed == 0, report
    assert {d.mac: d.version for d in report.devices} == {m: str(v) for m, v in first.items()}
    wait_for_lines(served_log, report.requests)
    doc = fleet_report(state, logs, capsys)
    assert states(doc) == {mac: ("current", first[mac], first[mac]) for mac in MACS}
    assert doc["summary"] == {"devices": 4, "current": 4, "stale": 0, "never": 0}
    for d in doc["devices"]:
        assert d["last_seen"]["client"] == loopback_address(MACS.index(d["mac"]))

    change_every_device(repo)
    second = publish(repo, base, capsys)
    assert all(second[mac] > first[mac] for mac in MACS)
    doc = fleet_report(state, logs, capsys)
    # nginx cannot tell which older version a device got, only that it is older.
    older = {mac: None if whole_seconds else first[mac] for mac in MACS}
    assert states(doc) == {mac: ("stale", second[mac], older[mac]) for mac in MACS}

    if whole_seconds:
        after_the_write(base / "http")
    # Resync Periodic (3600 s by default): every device resyncs an hour after its boot.
    report = fleet.run(until=3600 + 240, workers=4)
    assert report.failed == 0
    assert {d.mac: d.version for d in report.devices} == {m: str(v) for m, v in second.items()}
    wait_for_lines(served_log, report.requests)
    doc = fleet_report(state, logs, capsys)
    assert states(doc) == {mac: ("current", second[mac], second[mac]) for mac in MACS}
    assert doc["summary"]["current"] == 4
    # The chart ends with every device on its second version.
    adoption = doc["adoption"]
    last = {v: n for v, n in zip(adoption["series"], adoption["counts"][-1], strict=True) if n}
    assert last == dict(Counter(str(v) for v in second.values()))


# --- gitprov serve ---------------------------------------------------------------------------


def test_stale_then_current_from_the_fetch_log(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(example_repo, tmp_path, capsys)
    state = tmp_path / "state"
    log = state / "fetch.log"
    with FetchLog(log, ServedVersions(state)) as fetch_log:
        handle = serve_roots(tmp_path / "http", tmp_path / "tftp", HOST, 0, 0, on_fetch=fetch_log)
        try:
            assert handle.http is not None
            # No --log: the state dir's fetch.log is the default.
            the_journey(
                example_repo, tmp_path, handle.http.port, [], log, capsys, whole_seconds=False
            )
        finally:
            handle.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {line["version"] for line in lines} >= {1001, 1002}


# --- nginx -----------------------------------------------------------------------------------


def nginx_conf(base: Path, port: int) -> str:
    """A server over the HTTP root whose access log has nginx's default format, as
    deploy/nginx-gitprov.conf's logs have (it names no log_format)."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must enter tmp_path (0700)
    temps = "".join(
        f"    {kind}_temp_path {base / 'nginx-tmp' / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {base / 'nginx.pid'};\n"
        "error_log stderr notice;\nevents { worker_connections 64; }\n"
        f"http {{\n{temps}"
        f"  server {{\n    listen {HOST}:{port};\n    root {base / 'http'};\n"
        f"    access_log {base / 'logs' / 'access.log'};\n"
        "    location / { try_files $uri =404; }\n  }\n}\n"
    )


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[int]:
    binary = need("nginx", "nginx")
    port = free_port(socket.SOCK_STREAM)
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx-tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, port))
    stderr = tmp_path / "nginx.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [binary, "-p", f"{tmp_path}/", "-c", str(conf), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for_tcp(port, proc, stderr)
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_deploy_nginx_logs_in_the_default_format() -> None:
    """What `gitprov fleet` reads from nginx is what deploy/ makes it write."""
    text = (ROOT / "deploy" / "nginx-gitprov.conf").read_text()
    directives = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("access_log")]
    assert directives and all(len(d.rstrip(";").split()) == 2 for d in directives), directives
    assert "log_format" not in text


def test_stale_then_current_from_an_nginx_access_log(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    nginx: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    publish(example_repo, tmp_path, capsys)
    access = tmp_path / "logs" / "access.log"
    the_journey(
        example_repo,
        tmp_path,
        nginx,
        [str(access)],
        access,
        capsys,
        whole_seconds=True,
    )
    doc = fleet_report(tmp_path / "state", [f"nginx:{access}"], capsys)
    assert {d["version_from"] for d in doc["devices"]} == {"write-time"}
    assert doc["logs"][0]["format"] == "nginx"


# --- tftpd-hpa -------------------------------------------------------------------------------


class SyslogStandIn:
    """/dev/log for one process: a datagram socket whose messages (`<PRI>Mmm dd hh:mm:ss
    TAG[PID]: MSG`, as glibc's syslog(3) sends them) are written as rsyslog writes them:
    `traditional` with the host name after the RFC 3164 stamp, `rfc3339` with a high-
    precision UTC stamp (Debian 12's rsyslog default)."""

    def __init__(self, base: Path) -> None:
        self.path = base / "log.sock"
        self.traditional = base / "syslog"
        self.rfc3339 = base / "syslog-rfc3339"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.traditional.open("a") as old, self.rfc3339.open("a") as new:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                text = data.decode("utf-8", "backslashreplace").rstrip("\n\x00")
                text = text[text.index(">") + 1 :] if text.startswith("<") else text
                stamp, rest = text[:15], text[16:]
                now = time.time()
                iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                old.write(f"{stamp} testhost {rest}\n")
                new.write(f"{iso}.{int(now % 1 * 1e6):06d}+00:00 testhost {rest}\n")
                old.flush()
                new.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def tftpd(tmp_path: Path) -> Iterator[tuple[int, SyslogStandIn]]:
    """in.tftpd with deploy/tftpd-hpa.default's options, its syslog(3) going to a stand-in
    /dev/log: a bind mount in a mount namespace of its own (the host's /dev is untouched)."""
    binary = need("in.tftpd", "tftpd-hpa")
    need("tftp", "tftp-hpa")
    unshare = need("unshare", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("needs root: a mount namespace to give in.tftpd its own /dev/log")
    conf = tftpd_defaults()
    options = shlex.split(conf["TFTP_OPTIONS"])
    options[options.index("--map-file") + 1] = str(ROOT / "deploy" / "tftpd-hpa.remap")
    user = conf["TFTP_USERNAME"]
    try:
        pwd.getpwnam(user)
    except KeyError:
        user = "nobody"
    (tmp_path / "tftp").mkdir()  # published into later; --secure chroots into it now
    syslog = SyslogStandIn(tmp_path)
    dev = tmp_path / "dev"
    dev.mkdir()
    port = free_port(socket.SOCK_DGRAM)
    tftpd_argv = [binary, "--listen", "--foreground", "--user", user]
    tftpd_argv += ["--address", f"{HOST}:{port}", *options, str(tmp_path / "tftp")]
    script = (
        f"touch {dev}/null {dev}/log && mount --bind /dev/null {dev}/null && "
        f"mount --bind {syslog.path} {dev}/log && mount --rbind {dev} /dev && "
        f"exec {shlex.join(tftpd_argv)}"
    )
    proc = subprocess.Popen(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while "Error code 1" not in tftp_get(port, "nothing-here", tmp_path / "probe")[1]:
            if proc.poll() is not None:
                assert proc.stderr is not None
                pytest.skip(f"in.tftpd in a mount namespace: {proc.stderr.read()!r}")
            assert time.monotonic() < deadline, "in.tftpd does not answer"
            time.sleep(0.1)
        yield port, syslog
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        syslog.close()


def test_stale_then_current_from_tftpd_hpa_syslog_lines(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    tftpd: tuple[int, SyslogStandIn],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """tftpd-hpa logs requests, not versions: a device fetched the published version
    when it asked after the file took its place (docs/fleet-status.md)."""
    port, syslog = tftpd
    first = publish(example_repo, tmp_path, capsys)
    after_the_write(tmp_path / "tftp")
    asked = requests_in(syslog.rfc3339)  # the fixture's probes
    for mac in MACS[:3]:
        # $MAU and $MA spellings alike (the map file turns the first into the second).
        name = f"fv{mac.upper()}.conf" if mac == MACS[0] else f"fv{mac}.conf"
        data, said = tftp_get(port, name, tmp_path / "got")
        assert data == (tmp_path / "tftp" / f"fv{mac}.conf").read_bytes(), said
    assert tftp_get(port, "fv0021f2bad001.conf", tmp_path / "got")[0] == b""  # a scan
    logs = [str(syslog.traditional), f"tftpd:{syslog.rfc3339}"]
    wait_for_lines(syslog.rfc3339, asked + 4, b"RRQ from ")
    wait_for_lines(syslog.traditional, asked + 4, b"RRQ from ")

    for log in logs:
        doc = fleet_report(tmp_path / "state", [log], capsys)
        want = {mac: ("current", first[mac], first[mac]) for mac in MACS[:3]}
        assert states(doc) == {**want, MACS[3]: ("never", first[MACS[3]], None)}
        (scan,) = doc["unknown_macs"]["clients"]
        assert (scan["client"], scan["requests"], scan["macs"]) == (HOST, 1, 1)
        assert doc["devices"][0]["last_seen"]["path"] == f"fv{MACS[0].upper()}.conf"

    change_every_device(example_repo)
    second = publish(example_repo, tmp_path, capsys)
    for log in logs:
        doc = fleet_report(tmp_path / "state", [log], capsys)
        assert {m: s[0] for m, s in states(doc).items()} == {
            **{mac: "stale" for mac in MACS[:3]},
            MACS[3]: "never",
        }
        assert {d["fetched_version"] for d in doc["devices"]} == {None}  # older: not known

    after_the_write(tmp_path / "tftp")
    for mac in MACS:
        data, said = tftp_get(port, f"fv{mac}.conf", tmp_path / "got")
        assert data == (tmp_path / "tftp" / f"fv{mac}.conf").read_bytes(), said
    wait_for_lines(syslog.rfc3339, asked + 8, b"RRQ from ")
    wait_for_lines(syslog.traditional, asked + 8, b"RRQ from ")
    for log in logs:
        doc = fleet_report(tmp_path / "state", [log], capsys)
        assert states(doc) == {mac: ("current", second[mac], second[mac]) for mac in MACS}
