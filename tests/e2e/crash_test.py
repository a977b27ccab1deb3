"""Issue 5, acceptance 1 (DESIGN.md invariant 3): `kill -9` at random moments of a large
publish never lets a reader see a partial or undecryptable file, and a final run converges
on exactly what `gitprov build` makes of the commit.

Each round publishes the next commit of a chain in which every device changes (a base
profile edit), one device is retired and one added, as `python -m gitprov publish` in a
subprocess killed with SIGKILL after a random delay. A reader thread loops over both
roots the whole time, like a server: every file it can open must decrypt with its
device's key, and re-encrypting the plaintext must give back the very bytes read (the salt
is derived, so this proves the file is complete and is what gitprov wrote).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.crypto import decrypt, encrypt
from gitprov.formats import flyingvoice
from gitprov.plan import load_manifest
from tests.fixtures.fleet import BASE_PROFILE as BASE
from tests.fixtures.fleet import base_profile, changes, device_key, fleet_files
from tests.fixtures.gitrepo import ROOT, GitRepo

DEVICES = 300
KILLS = 50
ROUNDS = 70  # at most: a round whose publish finishes before the kill does not count
SEED = 5


class Reader(threading.Thread):
    """Reads every servable file of the roots in a loop and checks each one."""

    def __init__(self, roots: list[Path]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.stop = threading.Event()
        self.files_read = 0
        self.sweeps = 0
        self.bad: list[str] = []
        self.keys: dict[str, str] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            for root in self.roots:
                try:
                    names = [n for n in os.listdir(root) if not n.startswith(".")]
                except FileNotFoundError:
                    continue
                for name in names:
                    self.check(root / name)
            self.sweeps += 1

    def check(self, path: Path) -> None:
        try:
            data = path.read_bytes()  # one open, one read: what a server streams
        except FileNotFoundError:
            return  # pruned between listing and opening
        self.files_read += 1
        mac = path.name[2:14]
        key = self.keys.get(mac) or self.keys.setdefault(mac, device_key(mac))
        try:
            plain = decrypt(data, key)
            params = flyingvoice.parse(plain)
            assert encrypt(plain, key) == data, "not byte-identical to a whole file"
            assert params["DBID_DBASE_VERSION"].isdigit()
            assert params["DBID_WEB_SIP_SERVER"].startswith("sip")
        except Exception as exc:
            self.bad.append(f"{path}: {len(data)} bytes: {type(exc).__name__}: {exc}")


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not condition() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)


def temps_in(roots: list[Path]) -> set[str]:
    return {f"{root}/{n}" for root in roots for n in os.listdir(root) if n.startswith(".")}


def moment(roots: list[Path], marker: str, old_temps: set[str]) -> str:
    """When the kill landed, from what it left: new temp files, and how many served files
    are already this round's (each round renames the SIP server to sip<marker>)."""
    temps = len(temps_in(roots) - old_temps)
    new = total = 0
    for root in roots:
        for name in os.listdir(root):
            if name.startswith("."):
                continue
            plain = decrypt((root / name).read_bytes(), device_key(name[2:14]))
            total += 1
            new += flyingvoice.parse(plain)["DBID_WEB_SIP_SERVER"] == f"sip{marker}.example.net"
    if 0 < new < total:
        return "renaming"
    if new == 0:
        return "writing" if temps else "starting"
    return "after the renames"


@pytest.mark.slow(seconds=100)
def test_sigkill_at_random_moments_never_serves_a_partial_file(
    tmp_path: Path, private_key: str
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    commits = [repo.commit(fleet_files(DEVICES), "a generated fleet")]
    for k in range(1, ROUNDS + 2):
        new = fleet_files(DEVICES, marker=str(k), start=k)
        commits.append(repo.commit(changes(repo.files, new), f"round {k}"))
    assert repo.files[BASE] == base_profile(str(ROUNDS + 1)).encode()

    roots = [tmp_path / "http", tmp_path / "tftp"]
    env = {**os.environ, "GITPROV_PRIVATE_KEY": private_key}

    def publish(rev: str) -> subprocess.Popen[bytes]:
        argv = ["--repo", str(repo.path), "publish", "--rev", rev, "--wait", "10"]
        argv += ["--http-root", str(roots[0]), "--tftp-root", str(roots[1])]
        argv += ["--state-dir", str(tmp_path / "state")]
        # Each round retires a device; after a run of kills they add up past max_removal.
        argv += ["--allow-mass-removal"]
        return subprocess.Popen(
            [sys.executable, "-m", "gitprov", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )

    started = time.monotonic()
    first = publish(commits[0])
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    full = time.monotonic() - started  # a whole publish: start-up, build, write, rename

    reader = Reader(roots)
    reader.start()
    rng = random.Random(SEED)
    killed = completed = 0
    moments: dict[str, int] = {}
    first_file = roots[0] / "fv0021f2011b19.conf"  # the first rename of every round
    for k, rev in enumerate(commits[1:-1], start=1):
        if killed >= KILLS:
            break
        inode = first_file.stat().st_ino
        old_temps = temps_in(roots)  # what the previous kill left: the next run removes them
        proc = publish(rev)
        # A third of the kills at any moment; a third once the temp files are being
        # written; a third once the renames have begun (a window of some 50 ms).
        if k % 3 == 1:
            wait_until(lambda t=old_temps: bool(temps_in(roots) - t), proc)  # type: ignore[misc]
            time.sleep(rng.uniform(0.0, full / 2))
        elif k % 3 == 2:
            wait_until(lambda i=inode: first_file.stat().st_ino != i, proc)  # type: ignore[misc]
            time.sleep(rng.uniform(0.0, 0.02))
        else:
            time.sleep(rng.uniform(0.0, full * 1.1))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
            when = moment(roots, str(k), old_temps)
            moments[when] = moments.get(when, 0) + 1
        else:
            assert proc.returncode == 0, err.decode()
            completed += 1
    final = publish(commits[-1])  # after the last kill: the run that must converge
    _, err = final.communicate(timeout=120)
    reader.stop.set()
    reader.join(30)
    assert final.returncode == 0, err.decode()
    build = ["--repo", str(repo.path), "build", "--rev", commits[-1], "--out", str(tmp_path / "b")]
    assert main(build) == 0
    expected = {p.name: p.read_bytes() for p in (tmp_path / "b" / "encrypted").iterdir()}
    for root in roots:
        assert {p.name: p.read_bytes() for p in root.iterdir()} == expected
    manifest = load_manifest(tmp_path / "state")
    assert manifest is not None and manifest.commit == commits[-1]

    summary = (
        f"crash loop: {killed} SIGKILLs ({', '.join(f'{n} {w}' for w, n in moments.items())})"
        f" + {completed} runs that finished first; reader checked {reader.files_read} files "
        f"in {reader.sweeps} sweeps; a whole publish of {DEVICES} devices x 2 roots took "
        f"{full:.2f}s; total {time.monotonic() - started:.1f}s"
    )
    print(summary)
    assert reader.bad == [], "\n".join(reader.bad[:20])
    assert killed >= KILLS, summary
    assert reader.sweeps > killed, summary
    assert moments.get("writing", 0) > 0 and moments.get("renaming", 0) > 0, summary
