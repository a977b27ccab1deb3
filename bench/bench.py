"""`make bench`: gitprov against its floor (bench/floor.py) at fleet scale, one table.

    .venv/bin/python bench/bench.py                   # 1k and 10k devices, 10k x 500 commits
    .venv/bin/python bench/bench.py --big             # + 100k devices, 10k x 5,000 commits
    .venv/bin/python bench/bench.py --sizes 1000 --history 1000 100 --work /tmp/gb
    .venv/bin/python bench/bench.py --sizes 1000 --only watch   # one group of rows

Every measurement is a fresh process (`python -m gitprov ...` or `python bench/floor.py
...`): wall time, and peak RSS from wait4(2)'s rusage of that process. Repositories come
from bench/fleet.py, cached outside the checkout. Each publish's roots are compared with
the floor's (file names and SHA-256 of every file): a difference stops the benchmark,
and so does any difference in `versions`, `log` or `blame` between the two. The
merge → served rows run `gitprov watch` on a bare copy of a fleet repository and time
one-device commits from the ref update to the new bytes in the HTTP root (no floor: the
target is absolute). Progress goes to stderr; the table to stdout. docs/performance.md
says what each row measures and the targets.

The other bench_*.py modules (validate in-process, merge → served latency through
`git push` and the embedded HTTP server, versions with a warm cache) still run on their
own.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pygit2  # noqa: E402

from bench.fleet import (  # noqa: E402
    DEMO_KEY_FILE,
    Builder,
    default_work,
    device_name,
    device_yaml,
    fleet_repo,
    history_repo,
    history_target,
    mac_of,
)

FLOOR = ROOT / "bench" / "floor.py"
MiB = 1024 * 1024
# Scenario groups `--only` selects: the publish/validate rows of each fleet size, the
# merge → served rows (a watcher per fleet size), the history rows.
GROUPS = ("fleet", "watch", "history")
MERGES = 7  # one-device commits per merge → served row
ONE_DEVICE_RUNS = 3  # the one-device row: the fastest of this many runs a side
PROFILE_RUNS = 2  # the one-profile row: the fastest of this many runs a side
WATCH_START = 3600.0  # s: the watcher's first publish is a cold publish of the whole fleet
SERVED_WITHIN = 120.0  # s: a merge not served by then stops the benchmark
POLL = 0.005  # s between looks at the served file
STOP_WITHIN = 60.0  # s from SIGTERM to the watcher's exit before it is killed


class Mismatch(SystemExit):
    """gitprov and the floor disagree: the benchmark is void until that is explained."""


@dataclass(frozen=True)
class Run:
    seconds: float
    rss: int  # bytes
    stdout: str


@dataclass(frozen=True)
class Row:
    scenario: str
    size: str
    gitprov: Run
    floor: Run | None
    target: str
    met: bool | None  # None: no verdict (the target is about another size)


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], env: dict[str, str], ok: Sequence[int] = (0,)) -> Run:
    """One fresh process: wall time, and peak RSS from wait4 (this child's own rusage,
    not the maximum over every child so far as RUSAGE_CHILDREN would give)."""
    # Every run starts with nothing of an earlier one left to write back: a syncfs or a
    # file creation would otherwise wait for the previous run's data (the other side's).
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if proc.returncode not in ok:
            tail = err.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return Run(seconds, usage.ru_maxrss * 1024, stdout)


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {
            **os.environ,
            "GITPROV_PRIVATE_KEY_FILE": str(DEMO_KEY_FILE),
            # No progress bars, colours or update checks: only the work is measured.
            "CI": "1",
            "NO_COLOR": "1",
        }
        self.rows: list[Row] = []
        self.scratches: list[Path] = []

    def scratch(self, prefix: str) -> Path:
        """A directory for one scenario's roots, removed by `clean` after the last run:
        removing 20,000 files just before a timed run slows its file creations for
        seconds on a filesystem mounted with online discard (and the first of the two
        sides it compares would pay for it)."""
        made = Path(tempfile.mkdtemp(prefix=prefix, dir=self.work))
        self.scratches.append(made)
        return made

    def clean(self) -> None:
        for made in self.scratches:
            shutil.rmtree(made, ignore_errors=True)
        self.scratches.clear()

    def gitprov(self, repo: Path, *argv: str, ok: Sequence[int] = (0,)) -> Run:
        cmd = [sys.executable, "-m", "gitprov", "-q", "--repo", str(repo), *argv]
        return run(cmd, self.env, ok)

    def floor(self, repo: Path, *argv: str) -> Run:
        return run([sys.executable, str(FLOOR), "--repo", str(repo), *argv], self.env)

    @staticmethod
    def drop_cache(repo: Path) -> None:
        """gitprov's version cache lives in the git directory: without it, a fresh clone."""
        shutil.rmtree(repo / "gitprov-cache", ignore_errors=True)

    def add(
        self,
        scenario: str,
        size: str,
        g: Run,
        f: Run | None,
        target: str,
        met: bool | None,
    ) -> None:
        row = Row(scenario, size, g, f, target, met)
        self.rows.append(row)
        extra = f", floor {f.seconds:.2f} s" if f else ""
        log(f"  {scenario} ({size}): gitprov {g.seconds:.2f} s{extra}")

    # -- the publish scenarios ------------------------------------------------------------
    def fleet(self, devices: int, one_device_1k: float | None) -> float:
        """The publish and validate rows of one fleet size; returns the one-device time."""
        repo = fleet_repo(self.work, devices)
        size = f"{devices:,}"
        log(f"fleet of {size} devices: {repo}")

        # Twice each, the side that goes first alternating (the first to read the
        # repository after it was written pays for reading its pages: one run of 33 s
        # against the floor's 20 s, then 24-28 s against 23-24 s): the faster of each.
        runs: list[tuple[Run, Run]] = []
        for order in (("gitprov", "floor"), ("floor", "gitprov")):
            self.drop_cache(repo)
            got = {
                side: getattr(self, side)(repo, "validate", "--rev", "profile") for side in order
            }
            runs.append((got["gitprov"], got["floor"]))
        g, f = (_best([r[side] for r in runs]) for side in (0, 1))
        met = _ratio(g, f) <= 1.5
        self.add("validate --rev HEAD, cold (best of 2)", size, g, f, "<= 1.5x floor", met)
        g = self.gitprov(repo, "validate", "--rev", "child")
        self.add("validate of a child, warm", size, g, None, "< 1 s", g.seconds < 1)

        # Twice each, alternating, into fresh roots: the faster time of each side (and
        # the higher peak). Creating a file costs this machine's ext4 from 40 to 130 us
        # of system time with the filesystem's state (its journal, the discard of files
        # removed before), and 200,000 of them decided one run's ratio.
        runs = []
        for _ in range(2):
            scratch = self.scratch("gitprov-bench-")
            g_roots = _roots(scratch / "gitprov")
            f_roots = _roots(scratch / "floor")
            self.drop_cache(repo)
            g = self.gitprov(repo, "publish", "--rev", "base", *g_roots)
            f = self.floor(repo, "publish", "--rev", "base", *f_roots)
            self.compare(scratch, "cold publish")
            log(f"  cold publish ({size}): gitprov {g.seconds:.2f} s, floor {f.seconds:.2f} s")
            runs.append((g, f))
        g, f = (_best([r[side] for r in runs]) for side in (0, 1))
        met = _ratio(g, f) <= 1.5 and g.rss < 1024 * MiB
        self.add("cold publish (best of 2)", size, g, f, "<= 1.5x floor, RSS < 1 GiB", met)

        g = self.gitprov(repo, "publish", "--rev", "base", *g_roots)
        f = self.floor(repo, "publish", "--rev", "base", *f_roots)
        self.compare(scratch, "same commit again")
        self.add("same commit again", size, g, f, "< 1 s", g.seconds < 1)

        # Three times each from the same state (roots, state dirs and the version cache
        # put back in between), alternating: the fastest of each side. A run of half a
        # second varies by a fifth on this shared machine (10k, best of two: 0.55 s in
        # one bench, 0.40 s and 0.43 s in the next two), and the 10k row is judged
        # against twice the 1k one.
        before = self.keep(scratch, repo)
        runs = []
        for i in range(ONE_DEVICE_RUNS):
            if i:
                self.put_back(before, scratch, repo)
                # Copied state files are other files (inode, ctime): the index no longer
                # names the manifest, which a publish would then read as JSON (1.2 s more
                # at 100k). Publishing the published commit again, untimed, writes the
                # index anew, as the publish before it had left one.
                self.gitprov(repo, "publish", "--rev", "base", *g_roots)
            g = self.gitprov(repo, "publish", "--rev", "one-device", *g_roots)
            f = self.floor(repo, "publish", "--rev", "one-device", *f_roots)
            self.compare(scratch, "one-device commit")
            runs.append((g, f))
        g, f = (_best([r[side] for r in runs]) for side in (0, 1))
        if one_device_1k is None:
            target, met_one = "< 1 s at 100k, <= 2x the 1k time", None
        else:
            target = f"<= 2x 1k ({2 * one_device_1k:.2f} s)" + (
                ", < 1 s" if devices >= 100_000 else ""
            )
            met_one = g.seconds <= 2 * one_device_1k and (devices < 100_000 or g.seconds < 1)
        self.add(f"one-device commit (best of {ONE_DEVICE_RUNS})", size, g, f, target, met_one)
        one = g.seconds

        # Twice each from the state the one-device commit left, the side that goes first
        # alternating: the faster of each. One run a side read 1.3x to 1.7x at 1k across
        # benches (200 devices, a fresh process's imports a third of it).
        after_one = self.keep(scratch, repo)
        runs = []
        for i in range(PROFILE_RUNS):
            order = ("gitprov", "floor") if i % 2 == 0 else ("floor", "gitprov")
            if i:
                self.put_back(after_one, scratch, repo)
                self.gitprov(repo, "publish", "--rev", "one-device", *g_roots)  # (see above)
            got = {
                side: getattr(self, side)(
                    repo,
                    "publish",
                    "--rev",
                    "profile",
                    *(g_roots if side == "gitprov" else f_roots),
                )
                for side in order
            }
            self.compare(scratch, "one-profile change")
            runs.append((got["gitprov"], got["floor"]))
        g, f = (_best([r[side] for r in runs]) for side in (0, 1))
        met = _ratio(g, f) <= 1.5
        self.add(
            f"one-profile change (20%, best of {PROFILE_RUNS})", size, g, f, "<= 1.5x floor", met
        )
        return one

    def keep(self, scratch: Path, repo: Path) -> Path:
        """A copy of both sides' roots and state dirs and of the version cache, to run a
        publish again from the same state. Served files are linked, not copied: a
        publish replaces a file by a rename, never writes into it (the state files are
        copied: the journal is appended to)."""
        kept = self.scratch("gitprov-bench-kept-")
        for side in ("gitprov", "floor"):
            for root in ("http", "tftp"):
                shutil.copytree(scratch / side / root, kept / side / root, copy_function=os.link)
            shutil.copytree(scratch / side / "state", kept / side / "state")
        if (repo / "gitprov-cache").is_dir():
            shutil.copytree(repo / "gitprov-cache", kept / "gitprov-cache")
        return kept

    def put_back(self, kept: Path, scratch: Path, repo: Path) -> None:
        for side in ("gitprov", "floor"):
            shutil.rmtree(scratch / side)
            for root in ("http", "tftp"):
                shutil.copytree(kept / side / root, scratch / side / root, copy_function=os.link)
            shutil.copytree(kept / side / "state", scratch / side / "state")
        self.drop_cache(repo)
        if (kept / "gitprov-cache").is_dir():
            shutil.copytree(kept / "gitprov-cache", repo / "gitprov-cache")

    def compare(self, scratch: Path, what: str) -> None:
        for root in ("http", "tftp"):
            mine = _tree(scratch / "gitprov" / root)
            theirs = _tree(scratch / "floor" / root)
            if mine != theirs:
                only = sorted(set(mine) ^ set(theirs))[:5]
                diff = sorted(n for n in set(mine) & set(theirs) if mine[n] != theirs[n])[:5]
                raise Mismatch(
                    f"{what}: the {root} roots differ (gitprov {len(mine)} files, floor "
                    f"{len(theirs)}): only on one side {only}, different bytes {diff}"
                )

    # -- merge → served, through the watcher ----------------------------------------------
    def watch(self, devices: int, merges: int = MERGES) -> None:
        """`merges` one-device commits on main of a bare copy of the fleet repository that
        `gitprov watch` watches: wall time from the ref update to the device's new bytes
        in the HTTP root. The row: p50 (and the max in its name); RSS is the watcher's
        peak, its first (cold) publish of the whole fleet included."""
        cached = fleet_repo(self.work, devices)
        size = f"{devices:,}"
        log(f"merge -> served, {size} devices: a watcher on a bare copy of {cached}")
        scratch = self.scratch("gitprov-bench-watch-")
        watcher: subprocess.Popen[bytes] | None = None
        rss = 0
        with tempfile.TemporaryFile() as err:
            try:
                # The cached repositories are shared: new commits go into a copy (its
                # objects hard-linked where the filesystem allows; git never rewrites one).
                bare = scratch / "repo.git"
                clone = ["git", "clone", "-q", "--bare", "--local", str(cached), str(bare)]
                subprocess.run(clone, check=True, env=self.env)
                status = scratch / "status.json"
                cmd = [sys.executable, "-m", "gitprov", "-q", "watch", "--repo", str(bare)]
                cmd += ["--branch", "main", "--status-file", str(status), *_roots(scratch)]
                # No reconcile during the measurements: it would only compete for the CPU.
                cmd += ["--reconcile", "86400"]
                watcher = subprocess.Popen(
                    cmd, stdout=subprocess.DEVNULL, stderr=err, env=self.env, cwd=ROOT
                )
                latencies = _merges(bare, scratch, status, watcher, err, devices, merges)
            finally:
                if watcher is not None:
                    rss = _stop(watcher)
        served = [s for s, _ in latencies]
        p50 = statistics.median(served)
        published = statistics.median(p for _, p in latencies)
        scenario = (
            f"merge -> served, watcher (p50 of {merges}; max {max(served):.2f} s; "
            f"publish ended: p50 {published:.2f} s)"
        )
        self.add(scenario, size, Run(p50, rss, ""), None, "< 1 s p50", p50 < 1)

    # -- the history scenarios ------------------------------------------------------------
    def history(self, devices: int, commits: int) -> None:
        repo = history_repo(self.work, devices, commits)
        size = f"{devices // 1000}k x {commits:,}"
        mac = history_target(devices)
        log(f"history of {commits:,} commits over {devices:,} devices: {repo}")
        rss = "RSS < 500 MB"

        self.drop_cache(repo)
        g = self.gitprov(repo, "versions", "--format", "json")
        f = self.floor(repo, "versions", "--format", "json")
        if json.loads(g.stdout) != json.loads(f.stdout):
            raise Mismatch("versions: gitprov and the floor give different numbers")
        met = _ratio(g, f) <= 2 and g.rss < 500 * 10**6
        self.add("versions, cold", size, g, f, f"<= 2x floor, {rss}", met)
        g = self.gitprov(repo, "versions", "--format", "json")
        self.add("versions, warm", size, g, None, "", None)

        # The cache `versions` just filled is the one a server keeps.
        g = self.gitprov(repo, "log", mac, "--format", "json")
        warm = g
        self.drop_cache(repo)
        g = self.gitprov(repo, "log", mac, "--format", "json")
        f = self.floor(repo, "log", mac, "--format", "json")
        _same_log(g.stdout, f.stdout)
        _same_log(warm.stdout, f.stdout)
        met = _ratio(g, f) <= 2 and g.rss < 500 * 10**6
        self.add("log MAC, cold", size, g, f, f"<= 2x floor, {rss}", met)
        self.add("log MAC, warm", size, warm, None, "< 1 s", warm.seconds < 1)

        self.drop_cache(repo)
        g = self.gitprov(repo, "blame", mac, "--format", "json")
        f = self.floor(repo, "blame", mac, "--format", "json")
        _same_blame(g.stdout, f.stdout)
        met = _ratio(g, f) <= 2 and g.rss < 500 * 10**6
        self.add("blame MAC, cold", size, g, f, f"<= 2x floor, {rss}", met)
        g = self.gitprov(repo, "blame", mac, "--format", "json")
        self.add("blame MAC, warm", size, g, None, "< 1 s", g.seconds < 1)

    # -- the table ------------------------------------------------------------------------
    def table(self, header: list[str]) -> str:
        head = ("scenario", "size", "gitprov", "RSS", "floor", "RSS", "ratio", "target", "met")
        body = []
        for r in self.rows:
            f = r.floor
            body.append(
                (
                    r.scenario,
                    r.size,
                    f"{r.gitprov.seconds:.2f} s",
                    f"{r.gitprov.rss / MiB:.0f} MiB",
                    f"{f.seconds:.2f} s" if f else "—",
                    f"{f.rss / MiB:.0f} MiB" if f else "—",
                    f"{_ratio(r.gitprov, f):.1f}x" if f else "—",
                    r.target or "—",
                    "—" if r.met is None else "yes" if r.met else "NO",
                )
            )
        lines = [*header, ""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---|---|")
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)


def _best(runs: Sequence[Run]) -> Run:
    """The fastest of `runs`, with the highest peak RSS of them."""
    fastest = min(runs, key=lambda r: r.seconds)
    return Run(fastest.seconds, max(r.rss for r in runs), fastest.stdout)


def _roots(base: Path) -> list[str]:
    return [
        "--http-root",
        str(base / "http"),
        "--tftp-root",
        str(base / "tftp"),
        "--state-dir",
        str(base / "state"),
    ]


def _merges(
    bare: Path,
    scratch: Path,
    status: Path,
    watcher: subprocess.Popen[bytes],
    err: IO[bytes],
    devices: int,
    merges: int,
) -> list[tuple[float, float]]:
    """After the watcher's first publish, `merges` times: a commit changing one device's
    display name (so its file's bytes change), main moved to it, and the seconds until
    the HTTP root serves the new bytes, and until the watcher's status file says the
    publish ended."""
    repo = pygit2.Repository(str(bare))
    head = repo.references["refs/heads/main"].resolve().target
    started = time.perf_counter()
    _until_published(status, str(head), watcher, err, WATCH_START)
    log(f"  first publish (the whole fleet) after {time.perf_counter() - started:.1f} s")
    b = Builder(repo)
    b.tick = 10_000  # later than every commit the fleet repository already has
    latencies: list[tuple[float, float]] = []
    for k in range(merges):
        i = (devices // 5 + k) % devices  # devices no ref of the fleet repository changes
        served = scratch / "http" / f"fv{mac_of(i)}.conf"
        if not served.is_file():
            raise SystemExit(f"merge -> served: {served.name} is not served")
        before = served.read_bytes()
        parent = repo.get(head)
        assert isinstance(parent, pygit2.Commit)
        blob = b.blob(device_yaml(i, 100 + k))
        tree = b.edit(parent.tree_id, {f"inventory/devices/{device_name(i)}": blob})
        head = b.commit(None, f"rename {mac_of(i)}", tree, [parent.id])
        start = time.perf_counter()
        repo.references.create("refs/heads/main", head, force=True)
        while served.read_bytes() == before:
            if time.perf_counter() - start > SERVED_WITHIN or watcher.poll() is not None:
                raise SystemExit(
                    f"merge -> served: commit {k + 1} ({mac_of(i)}) not served within "
                    f"{SERVED_WITHIN:.0f} s\n{_tail(err)}"
                )
            time.sleep(POLL)
        served_after = time.perf_counter() - start
        # Each merge finds the watcher idle: the next waits for this one's publish to end
        # (its manifest, index and journal written after the file is served), so that its
        # time is its own, not what is left of the previous publish.
        _until_published(status, str(head), watcher, err, SERVED_WITHIN, POLL)
        latencies.append((served_after, time.perf_counter() - start))
        log(
            f"  commit {k + 1}/{merges}: served after {served_after:.3f} s, "
            f"published after {latencies[-1][1]:.3f} s"
        )
    return latencies


def _until_published(
    status: Path,
    commit: str,
    watcher: subprocess.Popen[bytes],
    err: IO[bytes],
    within: float,
    poll: float = 0.05,
) -> None:
    """Wait for the watcher's status file to say `commit` is published; a watcher that
    exits or reports the commit invalid or refused stops the benchmark."""
    deadline = time.perf_counter() + within
    while True:
        try:
            state = json.loads(status.read_text())
        except (OSError, ValueError):  # not written yet (it is replaced atomically)
            state = {}
        last = state.get("last") or {}
        if state.get("commit") == commit and state.get("result") in ("published", "unchanged"):
            return
        if last.get("commit") == commit and last.get("result") in ("invalid", "refused"):
            raise SystemExit(f"the watcher did not publish {commit[:12]}: {last.get('message')}")
        if watcher.poll() is not None:
            raise SystemExit(f"the watcher exited {watcher.returncode}:\n{_tail(err)}")
        if time.perf_counter() > deadline:
            raise SystemExit(f"the watcher did not publish {commit[:12]} within {within:.0f} s")
        time.sleep(poll)


def _tail(err: IO[bytes]) -> str:
    err.seek(0)
    return err.read().decode(errors="replace")[-3000:]


def _stop(watcher: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then reap: the watcher's peak RSS in bytes (0 if it had already been
    reaped)."""
    if watcher.returncode is not None:
        return 0
    watcher.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WITHIN
    while True:
        try:
            pid, status, usage = os.wait4(watcher.pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid:
            break
        if time.monotonic() > deadline:
            log(f"the watcher did not stop within {STOP_WITHIN:.0f} s of SIGTERM: killed")
            watcher.kill()
            deadline = float("inf")
        time.sleep(0.05)
    watcher.returncode = os.waitstatus_to_exitcode(status)
    if watcher.returncode != 0:
        log(f"the watcher exited {watcher.returncode} after SIGTERM")
    return int(usage.ru_maxrss) * 1024


def _tree(root: Path) -> dict[str, str]:
    """Every file of a root by name: its SHA-256 (dot-files are temps, never served)."""
    if not root.is_dir():
        return {}
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.iterdir()
        if p.is_file() and not p.name.startswith(".")
    }


def _ratio(g: Run, f: Run | None) -> float:
    return g.seconds / f.seconds if f and f.seconds else float("inf")


def _same_log(gitprov_out: str, floor_out: str) -> None:
    mine = [
        (c["set_by"], c["event"], c["dbase_version"]) for c in json.loads(gitprov_out)["changes"]
    ]
    theirs = [
        (c["set_by"], c["event"], c["dbase_version"]) for c in json.loads(floor_out)["changes"]
    ]
    if mine != theirs:
        raise Mismatch(f"log: gitprov and the floor differ:\n{mine[:5]}\n{theirs[:5]}")


def _same_blame(gitprov_out: str, floor_out: str) -> None:
    # gitprov's origins carry a column too; the floor keeps lines only.
    mine = [
        (p["key"], p["origin"].rsplit(":", 1)[0] if p["commit"] else "-", p["commit"])
        for p in json.loads(gitprov_out)["params"]
    ]
    theirs = [
        (p["key"], p["origin"] if p["commit"] else "-", p["commit"])
        for p in json.loads(floor_out)["params"]
    ]
    if mine != theirs:
        raise Mismatch(f"blame: gitprov and the floor differ:\n{mine}\n{theirs}")


def machine() -> list[str]:
    load = os.getloadavg()
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return [
        f"gitprov bench, {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"commit {git or '?'}",
        f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (1/5/15 min), Python {platform.python_version()}, {platform.system()}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--big", action="store_true", help="add 100k devices; history 10k x 5,000")
    ap.add_argument("--sizes", type=int, nargs="*", help="fleet sizes (default 1000 10000)")
    ap.add_argument(
        "--history",
        type=int,
        nargs=2,
        metavar=("DEVICES", "COMMITS"),
        help="the history scenario (default 10000 500; --big: 10000 5000; 0 0 skips it)",
    )
    ap.add_argument("--work", type=Path, default=default_work(), help="where repositories go")
    ap.add_argument(
        "--only",
        action="append",
        choices=GROUPS,
        help="run only this group of rows (repeat for several): fleet (publish and "
        "validate), watch (merge -> served), history",
    )
    args = ap.parse_args(argv)
    work = args.work.resolve()
    if work.is_relative_to(ROOT):
        raise SystemExit(f"--work {work} is inside the checkout: generated data goes elsewhere")
    sizes = args.sizes if args.sizes is not None else [1000, 10000]
    if args.big and args.sizes is None:
        sizes = [*sizes, 100_000]
    devices, commits = args.history or ((10_000, 5000) if args.big else (10_000, 500))
    groups = set(args.only or GROUPS)
    header = machine()
    started = time.perf_counter()
    bench = Bench(work)
    one_1k = None
    try:
        for n in sizes:
            if "fleet" in groups:
                one = bench.fleet(n, one_1k)
                if n == 1000:
                    one_1k = one
            if "watch" in groups:
                bench.watch(n)
        if devices and commits and "history" in groups:
            bench.history(devices, commits)
    finally:
        bench.clean()
    load = os.getloadavg()
    header.append(
        f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"took {time.perf_counter() - started:.0f} s"
    )
    print(bench.table(header), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
