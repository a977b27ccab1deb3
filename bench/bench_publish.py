"""Merge → file-served latency: a one-device change pushed to the bare repository a
watcher watches, until the embedded HTTP server serves the new bytes (issue 5,
acceptance 5). p50 / p95 over N pushes, for a 1k-device fleet by default.

The pieces are the production ones: `git push` (the real binary) into a bare repository,
`gitprov watch` in its own process (inotify hint, pygit2 re-resolve, a full build with the
pipeline's caches warm, the atomic publish into an HTTP and a TFTP root), and
`gitprov.tools.serve.HttpServer` in this process answering a client that polls the device's URL.

    .venv/bin/python bench/bench_publish.py [--devices 1000] [--pushes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitprov.tools.serve import HttpServer
from tests.fixtures.fleet import device_path, device_yaml, fleet_files, generated_mac
from tests.fixtures.gitrepo import DEMO_KEY_FILE, GitRepo

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@gitprov.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@gitprov.invalid",
}


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fetch(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bytes(r.read())
    except urllib.error.HTTPError:
        return None


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--devices", type=int, default=int(os.environ.get("BENCH_DEVICES", 1000)))
    ap.add_argument("--pushes", type=int, default=int(os.environ.get("BENCH_PUSHES", 50)))
    args = ap.parse_args(argv)
    if shutil.which("git") is None:
        raise SystemExit("bench_publish needs the git binary (Debian: git)")
    tmp = Path(tempfile.mkdtemp(prefix="gitprov-bench-publish-"))
    env = {
        **os.environ,
        **GIT_ENV,
        "HOME": str(tmp),
        "GITPROV_PRIVATE_KEY_FILE": str(DEMO_KEY_FILE),
    }
    watch: subprocess.Popen[bytes] | None = None
    log = tmp / "watch.jsonl"
    try:
        server = GitRepo(tmp / "server.git", bare=True)
        server.commit(fleet_files(args.devices), f"{args.devices} devices")
        (tmp / "http").mkdir()
        argv = ["watch", "--repo", str(server.path), "--reconcile", "3600"]
        argv += ["--http-root", str(tmp / "http"), "--tftp-root", str(tmp / "tftp")]
        argv += ["--state-dir", str(tmp / "state"), "--log-json", str(log)]
        watch = subprocess.Popen(
            [sys.executable, "-m", "gitprov", *argv],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        clone = tmp / "clone"
        subprocess.run(["git", "clone", "-q", str(server.path), str(clone)], env=env, check=True)

        latencies: list[float] = []
        pushes: list[float] = []
        with HttpServer(tmp / "http") as http:
            first = f"{http.url}/fv{generated_mac(0)}.conf"
            deadline = time.monotonic() + 120
            while fetch(first) is None:  # the initial publish of the whole fleet
                if time.monotonic() > deadline or watch.poll() is not None:
                    raise SystemExit("the initial publish did not appear")
                time.sleep(0.05)
            for i in range(args.pushes):
                n = i % args.devices
                url = f"{http.url}/fv{generated_mac(n)}.conf"
                before = fetch(url)
                (clone / device_path(n)).write_text(device_yaml(n, display=f"Push {i}"))
                git = ["git", "-C", str(clone)]
                subprocess.run([*git, "commit", "-qam", f"push {i}"], env=env, check=True)
                started = time.perf_counter()
                subprocess.run([*git, "push", "-q", "origin", "main"], env=env, check=True)
                pushed = time.perf_counter()
                while (got := fetch(url)) == before or got is None:
                    if time.perf_counter() - started > 60:
                        raise SystemExit(f"push {i} was not served within 60 s")
                    time.sleep(0.002)
                latencies.append(time.perf_counter() - started)
                pushes.append(pushed - started)
        events = [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        if watch is not None:
            watch.terminate()
            watch.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    published = [e["duration_seconds"] for e in events if e.get("result") == "published"][
        1:
    ]  # the first is the whole fleet
    rows = [
        (f"fleet: {args.devices} devices, {args.pushes} one-device pushes", ""),
        ("merge -> served, p50", f"{percentile(latencies, 50) * 1000:.0f} ms"),
        ("merge -> served, p95", f"{percentile(latencies, 95) * 1000:.0f} ms"),
        ("merge -> served, max", f"{max(latencies) * 1000:.0f} ms"),
        ("  of which git push (p50)", f"{statistics.median(pushes) * 1000:.0f} ms"),
        (
            "  of which build + publish (p50)",
            f"{statistics.median(published) * 1000:.0f} ms" if published else "-",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    return rows


if __name__ == "__main__":
    main()
