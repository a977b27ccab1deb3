"""Boot storm: 1,000 emulated devices power on at once against `gitprov serve`.

    .venv/bin/python bench/boot_storm.py                        # 1,000 devices, HTTP + TFTP
    .venv/bin/python bench/boot_storm.py --devices 200 --workers 16 --protocol tftp

Every device has Random Delay 40 s (virtual: nothing is waited), its own loopback source
address (127.1.x.y) and its own encrypted per-MAC file with its own key. The embedded
HTTP and TFTP servers (`gitprov.tools.serve.serve_roots`, what `gitprov serve` runs) serve
the files; the emulator (`gitprov.tools.device.Fleet`) fetches for real on `--workers`
threads in the order of the devices' virtual start times. Each device must end holding
its own file's version and account, and the servers must have logged each device asking
for its own file: a difference stops the benchmark.

The floor is the same fetches of the same files by a bare thread pool (the emulator's
fetchers, no clock, no decryption, no device): what the servers and the loopback cost on
their own. Printed: requests per second and the slowest fetch, for both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitprov.crypto import Cipher, Mode  # noqa: E402
from gitprov.formats.flyingvoice import render_lines  # noqa: E402
from gitprov.rule_url import parse_rule  # noqa: E402
from gitprov.tools.device import (  # noqa: E402
    DeviceState,
    Fleet,
    MultiFetcher,
    loopback_address,
)
from gitprov.tools.serve import FetchEvent, TftpLimits, serve_roots  # noqa: E402

CIPHER = Cipher(Mode.OPENSSL_MD5)


class Mismatch(SystemExit):
    """A device did not end on its own file: the numbers are void."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=32, help="devices fetching at once")
    parser.add_argument("--delay", type=int, default=40, help="Random Delay, virtual seconds")
    parser.add_argument("--protocol", choices=["both", "http", "tftp"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gitprov-boot-storm-") as work:
        http_root, tftp_root = Path(work) / "http", Path(work) / "tftp"
        http_root.mkdir()
        tftp_root.mkdir()
        seen: list[FetchEvent] = []
        lock = threading.Lock()

        def log(event: FetchEvent) -> None:
            with lock:
                seen.append(event)

        limits = TftpLimits(max_transfers=max(64, 2 * args.workers), max_pending=64)
        handle = serve_roots(
            http_root, tftp_root, "127.0.0.1", 0, 0, on_fetch=log, tftp_limits=limits
        )
        try:
            assert handle.http is not None and handle.tftp is not None
            states, urls = [], []
            for index in range(args.devices):
                mac = f"0021f2{0x100000 + index:06x}"
                key = f"key-{mac}"
                tftp = args.protocol == "tftp" or (args.protocol == "both" and index % 2 == 1)
                if tftp:
                    url = f"tftp://127.0.0.1:{handle.tftp.port}/fv$(MA).conf"
                    root = tftp_root
                else:
                    url = f"http://127.0.0.1:{handle.http.port}/fv$(MA).conf"
                    root = http_root
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

            fleet = Fleet(states, seed=args.seed)
            fleet.power_on()
            report = fleet.run(until=args.delay + 1, workers=args.workers)
            _check(report.devices, states, seen, lock, args.devices)
        finally:
            handle.stop()

    slowest = report.slowest
    assert slowest is not None
    mac, record = slowest
    print(
        f"boot storm: {args.devices} devices, Random Delay {args.delay} s (virtual), "
        f"{args.workers} at once, protocol {args.protocol}"
    )
    print(f"{'':10} {'requests':>9} {'wall s':>8} {'req/s':>8} {'slowest ms':>11}")
    print(
        f"{'gitprov':10} {report.requests:>9} {report.wall_seconds:>8.2f} "
        f"{report.requests_per_second:>8.0f} {record.latency * 1000:>11.1f}"
    )
    print(
        f"{'floor':10} {len(urls):>9} {len(urls) / floor_rate:>8.2f} {floor_rate:>8.0f} "
        f"{floor_slowest * 1000:>11.1f}"
    )
    print(f"slowest fetch: {mac} {record.url} at virtual {record.at:.1f} s")
    return 0


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


def _check(
    devices: Sequence[object],
    states: list[DeviceState],
    seen: list[FetchEvent],
    lock: threading.Lock,
    count: int,
) -> None:
    problems = []
    for index, state in enumerate(states):
        if state.version != str(1000 + index):
            problems.append(f"{state.mac}: version {state.version}, not {1000 + index}")
        elif state.params.get("DBID_SIP_ACCOUNT") != f"{100000 + index}\t\t\t":
            problems.append(f"{state.mac}: another device's account")
    deadline = time.monotonic() + 5  # a TFTP transfer is logged after its last ACK
    while time.monotonic() < deadline:
        with lock:
            if len(seen) >= count:
                break
        time.sleep(0.01)
    with lock:
        served = {(e.client, e.path.lstrip("/")) for e in seen if e.status == 200}
    expected = {(loopback_address(i), f"fv{s.mac}.conf") for i, s in enumerate(states)}
    if served != expected:
        problems.append(f"the servers' log differs: {len(expected - served)} missing")
    if len(devices) != count:
        problems.append(f"{len(devices)} device reports, not {count}")
    if problems:
        raise Mismatch("\n".join(problems[:20]))


if __name__ == "__main__":
    sys.exit(main())
