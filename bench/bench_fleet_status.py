"""`gitprov fleet` over a large log, against its floor: reading the same lines in Python.

    .venv/bin/python bench/bench_fleet_status.py                  # 1,000,000 lines
    .venv/bin/python bench/bench_fleet_status.py --lines 100000 --work /tmp/gf

A manifest of `--devices` devices and a log of `--lines` lines (nginx combined, gzip
too, and the fetch log of `gitprov serve`) are written to the work directory (outside
the checkout); each run is a fresh process, timed by wall clock, its peak RSS from
wait4(2). The floor opens the same file and splits every line on spaces (no parsing, no
tally): what any reader of the log pays. Peak RSS is the claim that matters: it must not
grow with the lines.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitprov.plan import Manifest, ManifestEntry  # noqa: E402

FLOOR = (
    "import sys\n"
    "n = 0\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for line in f:\n"
    "        n += len(line.split(b' '))\n"
    "print(n)\n"
)


def mac(i: int) -> str:
    return f"0021f2{i:06x}"


def write_inputs(work: Path, devices: int, lines: int) -> dict[str, Path]:
    state = work / "state"
    state.mkdir(parents=True, exist_ok=True)
    files = {
        f"fv{mac(i)}.conf": ManifestEntry(mac(i), "IP542N", 1002, "c", "p" * 64, "d" * 64)
        for i in range(devices)
    }
    manifest = Manifest("c" * 40, "2024-05-01T00:00:00+00:00", {}, files)
    (state / "manifest.json").write_text(manifest.to_json())
    nginx, fetch = work / "access.log", work / "fetch.log"
    with nginx.open("w") as a, fetch.open("w") as g:
        for n in range(lines):
            second = 3600 + n * 86400 * 7 // lines  # a week of resyncs
            day, rest = divmod(second, 86400)
            clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
            # One request in 50 is a scan of an unpublished MAC.
            target = f"fv0021f3{n:06x}.conf" if n % 50 == 0 else f"fv{mac(n % devices)}.conf"
            status = 404 if n % 50 == 0 else 200
            a.write(
                f"10.{n % 250}.{n // 250 % 250}.7 - - [{day + 1:02d}/May/2024:{clock} +0000] "
                f'"GET /{target} HTTP/1.1" {status} 592 "-" "Flyingvoice IP542N"\n'
            )
            record = {
                "time": f"2024-05-{day + 1:02d}T{clock}.000Z",
                "protocol": "http",
                "client": f"10.{n % 250}.{n // 250 % 250}.7",
                "path": f"/{target}",
                "file": None if status == 404 else target,
                "mac": target[2:14],
                "kind": None if status == 404 else "device",
                "version": None if status == 404 else 1002,
                "status": status,
                "bytes": 0 if status == 404 else 592,
            }
            g.write(json.dumps(record, separators=(",", ":")) + "\n")
    gz = work / "access.log.1.gz"
    with nginx.open("rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
        # In pieces: a child forked from a large process reports that size as its peak.
        shutil.copyfileobj(src, dst, 1 << 20)
    return {"state": state, "nginx": nginx, "nginx.gz": gz, "gitprov": fetch}


def measure(argv: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return seconds, usage.ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--work", type=Path, help="where the inputs go (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="gitprov-bench-fleet-"))
    print(
        f"writing {args.lines:,} lines x 3 logs, {args.devices:,} devices into {work}",
        file=sys.stderr,
    )
    paths = write_inputs(work, args.devices, args.lines)
    print(f"{'log':<10}{'gitprov s':>10}{'floor s':>9}{'x':>6}{'gitprov MiB':>13}{'floor MiB':>11}")
    for kind in ("gitprov", "nginx", "nginx.gz"):
        fmt = kind.split(".")[0]
        g_s, g_rss = measure(
            [
                sys.executable,
                "-m",
                "gitprov",
                "fleet",
                "--state-dir",
                str(paths["state"]),
                "--log",
                f"{fmt}:{paths[kind]}",
                "--format",
                "json",
            ]
        )
        source = paths[kind] if not kind.endswith(".gz") else paths["nginx"]
        f_s, f_rss = measure([sys.executable, "-c", FLOOR, str(source)])
        print(
            f"{kind:<10}{g_s:>10.1f}{f_s:>9.1f}{g_s / f_s:>6.1f}{g_rss / 2**20:>13.0f}"
            f"{f_rss / 2**20:>11.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
