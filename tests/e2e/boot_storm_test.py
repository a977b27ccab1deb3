"""Issue 13, acceptance 2: a boot storm on a gitprov-published root, against the embedded
servers of `gitprov serve` and against the production peers (nginx and tftpd-hpa
configured from deploy/, tests/fixtures/deploy_peers.py).

A fleet of the example's models and profiles with COUNT generated devices is published by
the CLI into an HTTP and a TFTP root. Every emulated device is factory-fresh except that
option 66 is off and its Profile Rule names its own encrypted file with its own key (what
`gitprov key MAC` prints, derived here from the example's sealed master key): even
devices over HTTP, odd ones over TFTP, and every other pair spells the file name with
`$(MAU)` (the deploy files and the embedded servers map it to the lower-case file). All
power on at virtual time 0 with Random Delay 40 s and fetch for real, each from its own
loopback address, `WORKERS` at once in the order of their virtual start times.

Each device must end holding its own file: the bytes it fetched are the published file of
its MAC, its stored version is the one in that file, its SIP account the one its device
YAML gives; the server saw each device's request from the device's own address (the
embedded servers' fetch events, nginx's access log; in.tftpd logs to syslog only). The
storm's requests per second and slowest fetch per protocol are recorded: in the test's
user properties, in `boot-storm-SERVER.json` under its tmp_path, and in a report section
that `pytest -rP` shows. bench/boot_storm.py runs the same storm with its floor
(`--server nginx --server tftpd-hpa`, or the embedded servers by default).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitprov.crypto import Cipher, Mode
from gitprov.formats import flyingvoice
from gitprov.rule_url import RuleUrl
from gitprov.tools.device import (
    OPTION66_KEY,
    PROFILE_RULE_KEY,
    DeviceState,
    Fetcher,
    Fleet,
    FleetReport,
    MultiFetcher,
    SettingKeys,
    factory_params,
    loopback_address,
)
from gitprov.tools.serve import FetchEvent, serve_roots
from tests.fixtures.deploy_peers import nginx_over, tftpd_over
from tests.fixtures.fleet import device_key, fleet_files, generated_mac
from tests.fixtures.gitrepo import GitRepo, demo_private_key
from tests.fixtures.roots import root_args

pytestmark = pytest.mark.e2e

COUNT = 1000
WORKERS = 32
RANDOM_DELAY = 40
MODELS = ("IP542N", "G502N")  # tests.fixtures.fleet gives device i the model MODELS[i % 2]
CIPHER = Cipher(Mode.OPENSSL_MD5)  # the example fleet's encryption


@dataclass(frozen=True)
class Published:
    base: Path
    http_root: Path
    tftp_root: Path
    macs: list[str]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    base = tmp_path_factory.mktemp("storm")
    repo = GitRepo(base / "repo")
    repo.commit(fleet_files(COUNT), f"the example fleet and {COUNT} devices", worktree=True)
    env = {"PATH": "/usr/bin:/bin", "GITPROV_PRIVATE_KEY": demo_private_key()}
    argv = [sys.executable, "-m", "gitprov", "-q", "--repo", str(repo.path), "publish"]
    done = subprocess.run(
        [*argv, "--rev", "main", *root_args(base)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    macs = [generated_mac(i) for i in range(COUNT)]
    return Published(base, base / "http", base / "tftp", macs)


# --- the storm -------------------------------------------------------------------------


class Recording:
    """A device's fetcher that keeps every body it got (one device, one thread at a time)."""

    def __init__(self, inner: Fetcher) -> None:
        self.inner = inner
        self.bodies: list[bytes] = []

    def fetch(self, url: RuleUrl) -> bytes:
        data = self.inner.fetch(url)
        self.bodies.append(data)
        return data


def file_name(index: int, mac: str) -> str:
    """What device `index` asks for: `$(MA)` or, every other pair, `$(MAU)`."""
    return f"fv{mac.upper() if index % 4 >= 2 else mac}.conf"


def is_tftp(index: int) -> bool:
    return index % 2 == 1


def storm(
    published: Published, http_port: int, tftp_port: int
) -> tuple[FleetReport, Fleet, dict[str, Recording]]:
    """Every device powers on at virtual 0; the report when each has had its first
    resync, the fleet, and each device's recording fetcher by MAC."""
    keys = SettingKeys()
    states = []
    for index, mac in enumerate(published.macs):
        macro = "$(MAU)" if index % 4 >= 2 else "$(MA)"
        server = (
            f"tftp://127.0.0.1:{tftp_port}" if is_tftp(index) else f"http://127.0.0.1:{http_port}"
        )
        states.append(
            DeviceState(
                mac,
                product_name=MODELS[index % 2],
                ip=loopback_address(index),
                params={
                    **factory_params(keys),
                    OPTION66_KEY: "0",
                    PROFILE_RULE_KEY: f"[--key {device_key(mac)}]{server}/fv{macro}.conf",
                    keys.random_delay: str(RANDOM_DELAY),
                },
            )
        )
    recordings: dict[str, Recording] = {}

    def fetcher(state: DeviceState) -> Recording:
        recording = Recording(MultiFetcher.standard(timeout=10.0, source_address=state.ip))
        recordings[state.mac] = recording
        return recording

    fleet = Fleet(states, fetcher=fetcher, seed=13, keys=keys)
    fleet.power_on()
    # Each device's first resync is due within its random delay: the storm is over then.
    return fleet.run(until=RANDOM_DELAY + 1, workers=WORKERS), fleet, recordings


def check_every_device_got_its_own_file(
    published: Published, report: FleetReport, fleet: Fleet, recordings: dict[str, Recording]
) -> None:
    assert report.requests == COUNT
    assert report.failed == 0, [d.last_status for d in report.devices if d.last_status]
    by_mac = report.by_mac()
    for index, (mac, device) in enumerate(zip(published.macs, fleet.devices, strict=True)):
        root = published.tftp_root if is_tftp(index) else published.http_root
        body = (root / f"fv{mac}.conf").read_bytes()
        assert recordings[mac].bodies == [body], mac
        plain = flyingvoice.parse(CIPHER.decrypt(body, device_key(mac)))
        assert device.state.version == plain["DBID_DBASE_VERSION"], mac
        assert {k: device.state.params.get(k) for k in plain} == plain, mac
        # The account the device's YAML gives (tests.fixtures.fleet), in its first line.
        assert device.state.params["DBID_SIP_ACCOUNT"].split("\t")[0] == str(100000 + index)
        (fetch,) = by_mac[mac].fetches
        assert fetch.status == "applied"
        assert 0 <= fetch.at <= RANDOM_DELAY
    # Spread over the delay window by the random delays, not all at one instant.
    starts = sorted(f.at for _, f in report.fetches)
    assert starts[0] < 5 and starts[-1] > RANDOM_DELAY - 5


def expected_requests(published: Published, tftp: bool) -> set[tuple[str, str]]:
    """(client address, requested name) of every device of one protocol."""
    return {
        (loopback_address(i), file_name(i, mac))
        for i, mac in enumerate(published.macs)
        if is_tftp(i) == tftp
    }


def record(report: FleetReport, server: str, out: Path, request: pytest.FixtureRequest) -> None:
    """The storm's numbers: in the test's user properties (junitxml's legacy and xunit1
    families write them), in OUT/boot-storm-SERVER.json, and in a report section that
    `pytest -rP` shows."""
    numbers: dict[str, object] = {
        "server": server,
        "devices": COUNT,
        "workers": WORKERS,
        "random_delay_s": RANDOM_DELAY,
        "requests": report.requests,
        "wall_s": round(report.wall_seconds, 3),
        "requests_per_second": round(report.requests_per_second, 1),
    }
    for protocol in ("http", "tftp"):
        fetches = [(m, f) for m, f in report.fetches if f"]{protocol}://" in f.url]
        mac, fetch = max(fetches, key=lambda pair: pair[1].latency)
        numbers[f"slowest_{protocol}_fetch_ms"] = round(fetch.latency * 1000, 1)
        numbers[f"slowest_{protocol}_fetch"] = f"{mac} {fetch.url}"
    request.node.user_properties.extend(numbers.items())
    text = json.dumps(numbers, indent=2) + "\n"
    (out / f"boot-storm-{server}.json").write_text(text)
    request.node.add_report_section("call", "boot storm", text)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Servers log a request after the client has its answer."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# --- gitprov serve ---------------------------------------------------------------------


def test_boot_storm_against_gitprov_serve(
    published: Published, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seen: list[FetchEvent] = []
    lock = threading.Lock()

    def log(event: FetchEvent) -> None:
        with lock:
            seen.append(event)

    handle = serve_roots(published.http_root, published.tftp_root, "127.0.0.1", 0, 0, on_fetch=log)
    try:
        assert handle.http is not None and handle.tftp is not None
        report, fleet, recordings = storm(published, handle.http.port, handle.tftp.port)
    finally:
        handle.stop()
    check_every_device_got_its_own_file(published, report, fleet, recordings)
    wait_until(lambda: len(seen) >= COUNT, "the embedded servers logged every request")
    with lock:
        served = {(e.protocol, e.client, e.path.lstrip("/"), e.status) for e in seen}
    assert len(seen) == COUNT
    assert served == {
        (protocol, client, name, 200)
        for protocol, tftp in (("http", False), ("tftp", True))
        for client, name in expected_requests(published, tftp)
    }
    record(report, "gitprov-serve", tmp_path, request)


# --- nginx and tftpd-hpa ---------------------------------------------------------------

# nginx's default access log format (deploy/nginx-gitprov.conf names none).
ACCESS = re.compile(r'^(\S+) - \S+ \[[^\]]+\] "GET (\S+) HTTP/[\d.]+" (\d{3}) ')


@pytest.fixture
def peers(published: Published, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """nginx's HTTP port, in.tftpd's port and nginx's access log, over the published roots."""
    with (
        nginx_over(tmp_path / "nginx", published.http_root) as nginx,
        tftpd_over(published.tftp_root) as tftp_port,
    ):
        yield nginx.http, tftp_port, nginx.access_log


def test_boot_storm_against_nginx_and_tftpd_hpa(
    published: Published,
    peers: tuple[int, int, Path],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    http_port, tftp_port, access_log = peers
    report, fleet, recordings = storm(published, http_port, tftp_port)
    check_every_device_got_its_own_file(published, report, fleet, recordings)
    # nginx logged each HTTP device asking, from its own address, for its own file.
    http_devices = expected_requests(published, tftp=False)
    wait_until(
        lambda: access_log.read_text().count("\n") >= len(http_devices),
        "nginx logged every request",
    )
    lines = access_log.read_text().splitlines()
    matched = [ACCESS.match(line) for line in lines]
    assert all(matched), [line for line, m in zip(lines, matched, strict=True) if not m][:3]
    logged = [(m[1], m[2].lstrip("/"), m[3]) for m in matched if m]
    assert len(logged) == len(http_devices)
    assert set(logged) == {(client, name, "200") for client, name in http_devices}
    record(report, "nginx+tftpd-hpa", tmp_path, request)
