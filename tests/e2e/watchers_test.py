"""Issue 12, acceptance 5: several provisioning servers serve the same files.

Three `gitprov watch --remote` processes, each with its own mirror, roots and state dir,
pull one origin repository over git's own protocol on loopback (`git daemon` on
127.0.0.1). Twenty pushes, two of them invalid: after each valid push all three serve
byte-identical roots (every file name and SHA-256, HTTP and TFTP) and record the same
versions; after an invalid push nothing changes anywhere. Builds are reproducible, so no
server needs to talk to another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitprov.cli import main
from gitprov.plan import load_manifest
from tests.e2e.watch_e2e_test import Clone, WatchProcess
from tests.fixtures.fleet import (
    BASE_PROFILE,
    base_profile,
    device_path,
    device_yaml,
    fleet_files,
    generated_mac,
)
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.peers import need
from tests.fixtures.roots import root_args

WATCHERS = 3
EXAMPLE_DEVICE = "inventory/devices/0021f2011b20.yaml"
TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def git_daemon(base: Path, home: Path) -> Iterator[str]:
    """`git daemon` serving the repositories under `base` read-only on 127.0.0.1; yields
    the URL of base/origin.git."""
    need("git", "git")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for _ in range(5):  # a port found free can be taken before the daemon binds it
        port = free_port()
        proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                f"--port={port}",
                f"--base-path={base}",
                str(base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        if proc.poll() is None:
            break
        proc.wait()
    else:
        pytest.fail("git daemon did not start on any of 5 ports")
    try:
        yield f"git://127.0.0.1:{port}/origin.git"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def digests(root: Path) -> dict[str, str]:
    """Every file of a served root (name -> SHA-256), dot-named temps included."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@dataclass
class Server:
    """One provisioning server: a watcher and where it writes."""

    base: Path
    watch: WatchProcess

    def state(self) -> dict[str, Any]:
        """What it serves and what it recorded: both roots, and the manifest's commit and
        versions (paths of the roots left out: they differ by design)."""
        manifest = load_manifest(self.base / "state")
        assert manifest is not None
        return {
            "http": digests(self.base / "http"),
            "tftp": digests(self.base / "tftp"),
            "commit": manifest.commit,
            "versions": {
                name: (e.mac, e.version, e.set_by) for name, e in sorted(manifest.files.items())
            },
            "served": dict(manifest.served),
        }


def edit(path: str, *pairs: tuple[str, str]) -> Callable[[Path], None]:
    def apply(top: Path) -> None:
        f = top / path
        text = f.read_text()
        for old, new in pairs:
            assert old in text, (path, old)
            text = text.replace(old, new, 1)
        f.write_text(text)

    return apply


def write(path: str, text: str) -> Callable[[Path], None]:
    def apply(top: Path) -> None:
        (top / path).parent.mkdir(parents=True, exist_ok=True)
        (top / path).write_text(text)

    return apply


def move(old: str, new: str) -> Callable[[Path], None]:
    def apply(top: Path) -> None:
        (top / new).parent.mkdir(parents=True, exist_ok=True)
        (top / old).rename(top / new)

    return apply


def remove(path: str) -> Callable[[Path], None]:
    return lambda top: (top / path).unlink()


NEW = 8  # the generated device the history adds, in a site directory
PARIS_DEVICE = f"inventory/devices/paris/{generated_mac(NEW)}.yaml"
LYON_DEVICE = device_path(1).replace("/devices/", "/devices/eu/lyon/")
# (what the commit does, the change, whether it validates)
PUSHES: list[tuple[str, Callable[[Path], None], bool]] = [
    ("rename desk 0", edit(device_path(0), ("Desk 0", "Front desk")), True),
    (
        "rename the meeting room",
        edit(EXAMPLE_DEVICE, ("name: Meeting room", "name: Board room")),
        True,
    ),
    ("unquoted account (invalid)", edit(EXAMPLE_DEVICE, ('"2010"', "2010")), False),
    (
        "quote it again, and rename the board room",
        edit(EXAMPLE_DEVICE, (": 2010", ': "2010"'), ("name: Board room", "name: Boardroom")),
        True,
    ),
    ("new SIP server for every device", write(BASE_PROFILE, base_profile("2")), True),
    ("a device in the Paris site", write(PARIS_DEVICE, device_yaml(NEW)), True),
    ("desk 1 moves to the Lyon site", move(device_path(1), LYON_DEVICE), True),
    ("rename the Paris device", edit(PARIS_DEVICE, (f"Desk {NEW}", "Paris")), True),
    ("unknown profile (invalid)", edit(device_path(2), ("profile: base", "profile: bsae")), False),
    (
        "profile fixed, and desk 2 renamed",
        edit(device_path(2), ("profile: bsae", "profile: base"), ("Desk 2", "Desk 2a")),
        True,
    ),
    ("remove desk 3", remove(device_path(3)), True),
    ("SIP server back", write(BASE_PROFILE, base_profile()), True),
    *[
        (f"rename desk {i}", edit(device_path(i), (f"Desk {i}", f"Desk {i}b")), True)
        for i in (4, 5, 6, 7)
    ],
    ("rename desk 1 in Lyon", edit(LYON_DEVICE, ("Desk 1", "Lyon 1")), True),
    (
        "rename the meeting room again",
        edit(EXAMPLE_DEVICE, ("name: Boardroom", "name: Lobby")),
        True,
    ),
    ("rename desk 2", edit(device_path(2), ("Desk 2a", "Corner desk")), True),
    ("rename the Paris device again", edit(PARIS_DEVICE, ("Paris", "Paris 2")), True),
]


def push(clone: Clone, what: str, change: Callable[[Path], None]) -> str:
    change(clone.path)
    clone.git("add", "-A")
    clone.git("commit", "--quiet", "-m", what)
    clone.git("push", "--quiet", "origin", "main")
    return clone.git("rev-parse", "HEAD")


@pytest.mark.slow(seconds=15)
def test_three_watchers_of_one_origin_serve_identical_roots_after_every_push(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(PUSHES) == 20 and sum(not ok for _, _, ok in PUSHES) == 2
    files = fleet_files(NEW)
    origin = GitRepo(tmp_path / "git" / "origin.git", bare=True)
    first = origin.commit(files, "the fleet")
    env = {**os.environ, "GITPROV_PRIVATE_KEY": private_key}
    env.pop("GITPROV_PRIVATE_KEY_FILE", None)
    with git_daemon(tmp_path / "git", tmp_path / "daemon-home") as url:
        servers = []
        try:
            for i in range(WATCHERS):
                base = tmp_path / f"server{i}"
                argv = [
                    "watch",
                    "--remote",
                    url,
                    "--repo",
                    str(base / "mirror.git"),
                    "--interval",
                    "0.2",
                    *root_args(base),
                ]
                servers.append(Server(base, WatchProcess(argv, tmp_path / f"w{i}.jsonl", env)))
            clone = Clone(origin.path, tmp_path / "clone", tmp_path / "home")
            for s in servers:
                assert s.watch.wait_outcome(first)["result"] == "published"
            converged = same_everywhere(servers, first)
            for n, (what, change, valid) in enumerate(PUSHES, start=1):
                commit = push(clone, f"{n}: {what}", change)
                outcomes = [s.watch.wait_outcome(commit)["result"] for s in servers]
                if valid:
                    assert set(outcomes) <= {"published", "unchanged"}, (what, outcomes)
                    before, converged = converged, same_everywhere(servers, commit)
                    # Every push changes some device's file, but the move of a file
                    # between directories of the inventory.
                    changed = converged["http"] != before["http"]
                    assert changed == ("moves" not in what), what
                else:
                    assert outcomes == ["invalid"] * WATCHERS, (what, outcomes)
                    # Nothing changed anywhere: the last good commit is still served.
                    assert [s.state() for s in servers] == [converged] * WATCHERS, what
            # What they serve is what the origin's last commit builds to.
            out = tmp_path / "built"
            argv = ["--repo", str(origin.path), "build", "--rev", commit, "--out", str(out)]
            assert main(argv) == 0
            assert converged["http"] == digests(out / "encrypted")
            assert len(converged["http"]) == NEW + 4  # one added, one removed
        finally:
            codes = [s.watch.stop() for s in servers]
        assert codes == [0] * WATCHERS
    # Every server's version history of the mirror it pulled is the origin's.
    histories = [versions(s.base / "mirror.git", capsys) for s in servers]
    assert histories == [versions(origin.path, capsys)] * WATCHERS
    # ... and the versions its files carry.
    served = {mac: version for mac, version, _ in converged["versions"].values() if mac}
    assert {r["mac"]: r["version"] for r in histories[0]} == served


def same_everywhere(servers: list[Server], commit: str) -> dict[str, Any]:
    """The state every server reached at `commit`, after checking they all reached it."""
    states = [s.state() for s in servers]
    first = states[0]
    assert first["commit"] == commit
    assert first["http"] == first["tftp"] and first["http"]
    for i, other in enumerate(states[1:], start=1):
        assert other == first, f"server {i} differs from server 0 at {commit[:12]}"
    return first


def versions(repo: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["--repo", str(repo), "versions", "--rev", "main", "--format", "json"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows
