"""Issue 5, acceptance 3 and 4: `gitprov watch` as a process.

3. `git push` of three commits (the middle one invalid) from a clone made with the real
   `git` binary into a bare repository: the two valid ones are published in order, the
   invalid one is reported with its locations, the roots end on the last valid commit.
   The same through `--remote` polling into a mirror.
4. Drift: a hand-edited and a deleted file are both restored within one reconcile interval
   and counted in the Prometheus metrics.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gitprov.cli import main
from tests.fixtures.gitrepo import ROOT, GitRepo, example_files
from tests.fixtures.peers import need
from tests.fixtures.roots import root_args

DEVICE = "inventory/devices/0021f2011b20.yaml"
TIMEOUT = 30.0


class WatchProcess:
    """`python -m gitprov watch …` with its stdout/stderr collected and its JSON log read."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.out: list[str] = []
        self.err: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gitprov", *args, "--log-json", str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(ln) for ln in text.splitlines() if ln.endswith("}")]

    def outcomes(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "outcome" and e["result"] != "clean"]

    def wait_for(self, what: str, pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"timed out waiting for {what}\nstdout:\n{''.join(self.out)}\n"
            f"stderr:\n{''.join(self.err)}\nlog:\n{self.events()}"
        )

    def wait_outcome(self, commit: str) -> dict[str, Any]:
        self.wait_for(f"an outcome for {commit[:12]}", lambda: self._find(commit) is not None)
        found = self._find(commit)
        assert found is not None
        return found

    def _find(self, commit: str) -> dict[str, Any] | None:
        return next((o for o in self.outcomes() if o["commit"] == commit), None)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for t in self._threads:
            t.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


class Clone:
    """A working clone driven with the real git binary, pinned identities and dates."""

    def __init__(self, url: Path, path: Path, home: Path) -> None:
        self.path = path
        home.mkdir(exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Test Author",
            "GIT_AUTHOR_EMAIL": "author@gitprov.invalid",
            "GIT_COMMITTER_NAME": "Test Committer",
            "GIT_COMMITTER_EMAIL": "committer@gitprov.invalid",
            "GIT_AUTHOR_DATE": "2024-01-02T03:04:05+00:00",
            "GIT_COMMITTER_DATE": "2024-01-02T03:04:05+00:00",
        }
        self.git("clone", "--quiet", str(url), str(path), cwd=path.parent)

    def git(self, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd or self.path,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def commit_push(self, path: str, edit: Callable[[str], str], message: str) -> str:
        f = self.path / path
        f.write_text(edit(f.read_text()))
        self.git("commit", "--quiet", "-am", message)
        self.git("push", "--quiet", "origin", "main")
        return self.git("rev-parse", "HEAD")


def served(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def built(repo: Path, rev: str, out: Path) -> dict[str, bytes]:
    assert main(["--repo", str(repo), "build", "--rev", rev, "--out", str(out)]) == 0
    return served(out / "encrypted")


@pytest.fixture
def server(tmp_path: Path) -> GitRepo:
    """The bare repository that receives pushes, holding the example inventory."""
    repo = GitRepo(tmp_path / "server.git", bare=True)
    repo.commit(example_files(), "example inventory")
    return repo


@pytest.fixture
def env(private_key: str) -> dict[str, str]:
    return {**os.environ, "GITPROV_PRIVATE_KEY": private_key}


def push_three(
    watch: WatchProcess, clone: Clone, first: str, tmp_path: Path, repo_for_build: Path
) -> None:
    assert watch.wait_outcome(first)["result"] == "published"
    good1 = clone.commit_push(
        DEVICE, lambda t: t.replace("display_name: Meeting room", "display_name: Board"), "one"
    )
    assert watch.wait_outcome(good1)["result"] == "published"
    bad = clone.commit_push(DEVICE, lambda t: t.replace('"2010"', "2010"), "two (invalid)")
    invalid = watch.wait_outcome(bad)
    assert invalid["result"] == "invalid"
    located = [p for p in invalid["problems"] if p["file"] == DEVICE and p["level"] == "error"]
    assert located and all(p["line"] > 0 and p["col"] > 0 for p in located)
    # The outcome (stdout) and the located problem (stderr) come through two pipes
    # read by two threads: wait for the line rather than assume it came first.
    pattern = rf"{re.escape(DEVICE)}:\d+:\d+: error\[GP\d+\]"
    deadline = time.monotonic() + 15
    while not re.search(pattern, "".join(watch.err)) and time.monotonic() < deadline:
        time.sleep(0.05)
    stderr = "".join(watch.err)
    assert re.search(pattern, stderr), stderr
    assert served(tmp_path / "http") == built(repo_for_build, good1, tmp_path / "b1")

    good2 = clone.commit_push(
        DEVICE, lambda t: t.replace(": 2010", ': "2010"').replace("Board", "Lobby"), "three"
    )
    assert watch.wait_outcome(good2)["result"] == "published"
    results = [(o["commit"], o["result"]) for o in watch.outcomes()]
    assert results == [
        (first, "published"),
        (good1, "published"),
        (bad, "invalid"),
        (good2, "published"),
    ]
    expected = built(repo_for_build, good2, tmp_path / "b2")
    assert served(tmp_path / "http") == expected
    assert served(tmp_path / "tftp") == expected
    assert watch.stop() == 0


def test_pushes_to_a_bare_repo_publish_in_order_and_skip_the_invalid_one(
    server: GitRepo, env: dict[str, str], tmp_path: Path
) -> None:
    need("git", "git")
    first = str(server.repo.head.target)
    watch = WatchProcess(
        ["watch", "--repo", str(server.path), *root_args(tmp_path), "--interval", "5"],
        tmp_path / "watch.jsonl",
        env,
    )
    try:
        clone = Clone(server.path, tmp_path / "clone", tmp_path / "home")
        # --interval 5: each push must be seen through inotify, not by polling.
        push_three(watch, clone, first, tmp_path, server.path)
    finally:
        watch.stop()


def test_remote_polling_publishes_the_same_way(
    server: GitRepo, env: dict[str, str], tmp_path: Path
) -> None:
    need("git", "git")
    first = str(server.repo.head.target)
    mirror = tmp_path / "mirror.git"
    watch = WatchProcess(
        [
            "watch",
            "--remote",
            str(server.path),
            "--repo",
            str(mirror),
            "--interval",
            "0.2",
            *root_args(tmp_path),
        ],
        tmp_path / "watch.jsonl",
        env,
    )
    try:
        clone = Clone(server.path, tmp_path / "clone", tmp_path / "home")
        push_three(watch, clone, first, tmp_path, mirror)
    finally:
        watch.stop()


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m is not None, f"{name} not in\n{text}"
    return float(m.group(1))


def test_drift_is_restored_within_one_reconcile_interval_and_counted(
    server: GitRepo, env: dict[str, str], tmp_path: Path
) -> None:
    interval = 1.0
    watch = WatchProcess(
        [
            "watch",
            "--repo",
            str(server.path),
            *root_args(tmp_path),
            "--reconcile",
            str(interval),
            "--metrics-port",
            "0",
            "--status-file",
            str(tmp_path / "status.json"),
        ],
        tmp_path / "watch.jsonl",
        env,
    )
    try:
        watch.wait_for("the metrics line", lambda: any("metrics: " in ln for ln in watch.out))
        url = next(ln.split()[1] for ln in watch.out if ln.startswith("metrics: "))
        assert url.startswith("http://127.0.0.1:")
        watch.wait_outcome(str(server.repo.head.target))
        good_http, good_tftp = served(tmp_path / "http"), served(tmp_path / "tftp")

        # (replaced: written in place, the file of both roots, which a publish links)
        (tmp_path / "http" / "fv0021f2011b19.conf").unlink()
        (tmp_path / "http" / "fv0021f2011b19.conf").write_bytes(b"DBID_SIP_ENABLE=1\n")
        (tmp_path / "tftp" / "fv0021f2a0c001.conf").unlink()
        edited = time.monotonic()
        watch.wait_for(
            "both files restored",
            lambda: (
                served(tmp_path / "http") == good_http and served(tmp_path / "tftp") == good_tftp
            ),
            timeout=10,
        )
        took = time.monotonic() - edited
        # One interval, plus slack for a busy machine (a reconcile of 4 devices is ~50 ms).
        assert took < interval + 1.5, took

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=5) as r:
                return str(r.read().decode())

        # The metrics follow the publish that restored the files by a moment.
        drift = 'gitprov_drift_repairs_total{kind="%s"}'
        watch.wait_for(
            "the drift metrics",
            lambda: metric(scrape(), drift % "changed") + metric(scrape(), drift % "deleted") == 2,
            timeout=10,
        )
        text = scrape()
        assert metric(text, drift % "changed") == 1
        assert metric(text, drift % "deleted") == 1
        # One reconcile, or two if one ran between the edit and the deletion.
        assert metric(text, 'gitprov_reconciles_total{result="repaired"}') in (1, 2)
        assert metric(text, "gitprov_last_success_timestamp_seconds") > 1.7e9
        status = json.loads((tmp_path / "status.json").read_text())
        assert status["drift_repaired"] == 2 and status["result"] == "repaired"
        assert "drift: " in "".join(watch.out)
    finally:
        assert watch.stop() == 0


def test_the_metrics_line_brackets_an_ipv6_address(
    server: GitRepo, env: dict[str, str], tmp_path: Path
) -> None:
    """`metrics: http://::1:9351/metrics` is no URL (a scraper configured from it, or a
    click on it, goes nowhere): the address is bracketed, and the URL answers."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    argv = ["watch", "--repo", str(server.path), *root_args(tmp_path)]
    watch = WatchProcess(
        [*argv, "--metrics-host", "::1", "--metrics-port", "0"], tmp_path / "watch.jsonl", env
    )
    try:
        watch.wait_for("the metrics line", lambda: any("metrics: " in ln for ln in watch.out))
        url = next(ln.split()[1] for ln in watch.out if ln.startswith("metrics: "))
        assert re.fullmatch(r"http://\[::1\]:\d+/metrics", url), url
        with urllib.request.urlopen(url, timeout=5) as r:
            assert "gitprov_build_info{" in r.read().decode()
    finally:
        assert watch.stop() == 0


def test_a_restarted_watcher_reports_the_last_success_of_the_previous_run(
    server: GitRepo, env: dict[str, str], tmp_path: Path
) -> None:
    """A staleness alert on gitprov_last_success_timestamp_seconds must not fire because
    the watcher restarted: the new process starts from what the manifest records."""

    def run_once(log: str) -> tuple[float, str]:
        watch = WatchProcess(
            ["watch", "--repo", str(server.path), *root_args(tmp_path), "--metrics-port", "0"],
            tmp_path / log,
            env,
        )
        try:
            watch.wait_for("the metrics line", lambda: any("metrics: " in ln for ln in watch.out))
            url = next(ln.split()[1] for ln in watch.out if ln.startswith("metrics: "))
            # The first run publishes; the second finds the roots clean at the first check.
            watch.wait_for(
                "the first publish or check",
                lambda: any(
                    e["event"] == "outcome" and e["commit"] == str(server.repo.head.target)
                    for e in watch.events()
                ),
            )
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            return metric(text, "gitprov_last_success_timestamp_seconds"), text
        finally:
            assert watch.stop() == 0

    first, _ = run_once("one.jsonl")
    assert first > 1.7e9
    second, text = run_once("two.jsonl")  # nothing new to publish: restored, not 0
    # The manifest keeps whole seconds.
    assert first - 1 < second <= first
    head = str(server.repo.head.target)
    assert f'gitprov_last_published_info{{commit="{head}"}} 1.0' in text
    assert "gitprov_build_info{" in text and "process_cpu_seconds_total" in text
