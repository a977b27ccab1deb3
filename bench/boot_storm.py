"""Boot storm: 1,000 emulated devices power on at once against `gitprov serve`, or nginx
and tftpd-hpa.

    .venv/bin/python bench/boot_storm.py                        # 1,000 devices, HTTP + TFTP
    .venv/bin/python bench/boot_storm.py --devices 200 --workers 16 --protocol tftp
    .venv/bin/python bench/boot_storm.py --server nginx --server tftpd-hpa

Every device has Random Delay 40 s (virtual: nothing is waited), its own loopback source
address (127.1.x.y) and its own encrypted per-MAC file with its own key. The servers are
the embedded HTTP and TFTP servers (`--server gitprov`, the default:
`gitprov.tools.serve.serve_roots`, what `gitprov serve` runs) or the production peers as
deploy/ configures them (`--server nginx` for HTTP, `--server tftpd-hpa` for TFTP, both
on 127.0.0.1: tests/fixtures/deploy_peers.py); one server per protocol. The emulator
(`gitprov.tools.device.Fleet`) fetches for real on `--workers` threads in the order of the
devices' virtual start times. Each device must end holding its own file's version and
account, and the servers that log requests (the embedded ones, nginx's access log; not
in.tftpd, which logs to syslog) must have logged each device asking for its own file: a
difference stops the benchmark.

The floor is the same fetches of the same files by a bare thread pool (the emulator's
fetchers, no clock, no decryption, no device): what the servers and the loopback cost on
their own. Printed: requests per second and the slowest fetch, for both, and the slowest
fetch of each protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitprov.crypto import Cipher, Mode  # noqa: E402
from gitprov.formats.flyingvoice import render_lines  # noqa: E402
from gitprov.rule_url import parse_rule  # noqa: E402
from gitprov.tools.device import (  # noqa: E402
    DeviceState,
    Fleet,
    FleetReport,
    MultiFetcher,
    loopback_address,
)
from gitprov.tools.serve import FetchEvent, TftpLimits, serve_roots  # noqa: E402
from tests.fixtures.deploy_peers import missing, nginx_over, tftpd_over  # noqa: E402

CIPHER = Cipher(Mode.OPENSSL_MD5)
SERVES = {"gitprov": ("http", "tftp"), "nginx": ("http",), "tftpd-hpa": ("tftp",)}
# nginx's default access log format (deploy/nginx-gitprov.conf names none).
ACCESS = re.compile(r'^(\S+) - \S+ \[[^\]]+\] "GET (\S+) HTTP/[\d.]+" (\d{3}) ')


class Mismatch(SystemExit):
    """A device did not end on its own file: the numbers are void."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=32, help="devices fetching at once")
    parser.add_argument("--delay", type=int, default=40, help="Random Delay, virtual seconds")
    parser.add_argument("--protocol", choices=["both", "http", "tftp"], default="both")
    parser.add_argument(
        "--server",
        action="append",
        choices=sorted(SERVES),
        help="who serves: gitprov (both protocols, the default), nginx (HTTP), tftpd-hpa "
        "(TFTP); repeat for one of each protocol",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    protocols = ["http", "tftp"] if args.protocol == "both" else [args.protocol]
    servers = {p: _server_for(p, args.server or ["gitprov"], parser) for p in protocols}
    for server in set(servers.values()) - {"gitprov"}:
        why = missing(server)
        if why is not None:
            parser.error(f"--server {server} {why}")

    with tempfile.TemporaryDirectory(prefix="gitprov-boot-storm-") as work:
        http_root, tftp_root = Path(work) / "http", Path(work) / "tftp"
        http_root.mkdir()
        tftp_root.mkdir()
        seen: list[FetchEvent] = []
        lock = threading.Lock()

        def log(event: FetchEvent) -> None:
            with lock:
                seen.append(event)

        with _servers(Path(work), servers, args.workers, log) as ports:
            states, urls = [], []
            for index in range(args.devices):
                mac = f"0021f2{0x100000 + index:06x}"
                key = f"key-{mac}"
                protocol = protocols[index % len(protocols)]
                url = f"{protocol}://127.0.0.1:{ports.port[protocol]}/fv$(MA).conf"
                root = tftp_root if protocol == "tftp" else http_root
                rule = f"[--key {key}]{url}"
                pairs = [
                    ("DBID_DBASE_VERSION", str(1000 + index)),
                    ("DBID_PRV_OPTION66_ENABLED", "0"),
                    ("DBID_PROFILE_RULE", rule),
                    ("DBID_SIP_ACCOUNT", f"{100000 + index}\t\t\t"),
                ]
                (root / f"fv{mac}.conf").write_bytes(CIPHER.encrypt(render_lines(pairs), key))
                states.append(
                    DeviceState(
                        mac,
                        ip=loopback_address(index),
                        params={
                            "DBID_PRV_OPTION66_ENABLED": "0",
                            "DBID_PROFILE_RULE": rule,
                            "DBID_RESYNC_RANDOM_DELAY": str(args.delay),
                        },
                    )
                )
                urls.append((loopback_address(index), url.replace("$(MA)", mac)))

            floor_rate, floor_slowest = _floor(urls, args.workers)
            with lock:
                seen.clear()
            logged_before = _access_lines(ports.access_log)

            fleet = Fleet(states, seed=args.seed)
            fleet.power_on()
            report = fleet.run(until=args.delay + 1, workers=args.workers)
            logs = _ServerLogs(servers, seen, lock, ports.access_log, logged_before)
            _check(report, states, logs, args.devices)

    slowest = report.slowest
    assert slowest is not None
    mac, record = slowest
    label = "+".join(dict.fromkeys(servers.values()))
    shown = ", ".join(f"{p.upper()} {s}" for p, s in servers.items())
    print(
        f"boot storm: {args.devices} devices, Random Delay {args.delay} s (virtual), "
        f"{args.workers} at once, protocol {args.protocol} ({shown})"
    )
    print(f"{'':16} {'requests':>9} {'wall s':>8} {'req/s':>8} {'slowest ms':>11}")
    print(
        f"{label:16} {report.requests:>9} {report.wall_seconds:>8.2f} "
        f"{report.requests_per_second:>8.0f} {record.latency * 1000:>11.1f}"
    )
    print(
        f"{'floor':16} {len(urls):>9} {len(urls) / floor_rate:>8.2f} {floor_rate:>8.0f} "
        f"{floor_slowest * 1000:>11.1f}"
    )
    print(f"slowest fetch: {mac} {record.url} at virtual {record.at:.1f} s")
    for protocol, server in servers.items():
        latencies = [f.latency for _, f in report.fetches if f"]{protocol}://" in f.url]
        print(
            f"slowest {protocol} fetch ({server}): {max(latencies) * 1000:.1f} ms "
            f"of {len(latencies)}"
        )
    return 0


def _server_for(protocol: str, given: list[str], parser: argparse.ArgumentParser) -> str:
    """The one server of `given` that serves `protocol`."""
    able = sorted({s for s in given if protocol in SERVES[s]})
    if len(able) != 1:
        which = "none" if not able else " and ".join(able)
        wanted = " or ".join(s for s in sorted(SERVES) if protocol in SERVES[s])
        parser.error(f"{protocol.upper()} needs one server, {which} given: add --server {wanted}")
    return able[0]


@dataclass(frozen=True)
class _Ports:
    port: dict[str, int]  # protocol -> port on 127.0.0.1
    access_log: Path | None  # nginx's, when nginx serves HTTP


@contextlib.contextmanager
def _servers(
    work: Path, servers: dict[str, str], workers: int, log: Callable[[FetchEvent], None]
) -> Iterator[_Ports]:
    http_root, tftp_root = work / "http", work / "tftp"
    with contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        access_log = None
        if "gitprov" in servers.values():
            limits = TftpLimits(max_transfers=max(64, 2 * workers), max_pending=64)
            handle = serve_roots(
                http_root, tftp_root, "127.0.0.1", 0, 0, on_fetch=log, tftp_limits=limits
            )
            stack.callback(handle.stop)
            assert handle.http is not None and handle.tftp is not None
            ports.update(http=handle.http.port, tftp=handle.tftp.port)
        if servers.get("http") == "nginx":
            site = stack.enter_context(nginx_over(work / "nginx", http_root))
            ports["http"], access_log = site.http, site.access_log
        if servers.get("tftp") == "tftpd-hpa":
            ports["tftp"] = stack.enter_context(tftpd_over(tftp_root))
        yield _Ports(ports, access_log)


def _floor(urls: list[tuple[str, str]], workers: int) -> tuple[float, float]:
    """The same fetches by a bare thread pool: requests per second, slowest (s)."""

    def one(pair: tuple[str, str]) -> float:
        address, url = pair
        fetcher = MultiFetcher.standard(timeout=5.0, source_address=address)
        started = time.perf_counter()
        fetcher.fetch(parse_rule(url))
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        latencies = list(pool.map(one, urls))
    return len(urls) / (time.perf_counter() - started), max(latencies)


def _access_lines(log: Path | None) -> int:
    return len(log.read_text().splitlines()) if log is not None and log.exists() else 0


@dataclass(frozen=True)
class _ServerLogs:
    """What the servers logged during the storm (the floor's requests left out)."""

    servers: dict[str, str]  # protocol -> server
    seen: list[FetchEvent]  # the embedded servers'
    lock: threading.Lock
    access_log: Path | None  # nginx's
    skip: int  # lines of the access log written before the storm

    def served(self, protocol: str) -> set[tuple[str, str]] | None:
        """(client, file) of each request answered 200, None when the server keeps no
        log here (in.tftpd logs to syslog)."""
        server = self.servers[protocol]
        if server == "gitprov":
            with self.lock:
                return {
                    (e.client, e.path.lstrip("/"))
                    for e in self.seen
                    if e.status == 200 and e.protocol == protocol
                }
        if server == "nginx" and self.access_log is not None:
            lines = self.access_log.read_text().splitlines()[self.skip :]
            found = [ACCESS.match(line) for line in lines]
            return {(m[1], m[2].lstrip("/")) for m in found if m and m[3] == "200"}
        return None


def _check(report: FleetReport, states: list[DeviceState], logs: _ServerLogs, count: int) -> None:
    problems = []
    for index, state in enumerate(states):
        if state.version != str(1000 + index):
            problems.append(f"{state.mac}: version {state.version}, not {1000 + index}")
        elif state.params.get("DBID_SIP_ACCOUNT") != f"{100000 + index}\t\t\t":
            problems.append(f"{state.mac}: another device's account")
    protocols = list(logs.servers)
    for protocol in protocols:
        expected = {
            (loopback_address(i), f"fv{s.mac}.conf")
            for i, s in enumerate(states)
            if protocols[i % len(protocols)] == protocol
        }
        deadline = time.monotonic() + 5  # a server logs a request after its answer
        served = logs.served(protocol)
        while served is not None and served != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            served = logs.served(protocol)
        if served is not None and served != expected:
            problems.append(
                f"the {logs.servers[protocol]} log differs: {len(expected - served)} missing, "
                f"{len(served - expected)} unexpected"
            )
    if len(report.devices) != count:
        problems.append(f"{len(report.devices)} device reports, not {count}")
    if problems:
        raise Mismatch("\n".join(problems[:20]))


if __name__ == "__main__":
    sys.exit(main())
