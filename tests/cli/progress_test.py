"""Progress on a terminal for every long command: validate, build, publish, plan, versions,
log, blame show it on stderr when it is a terminal (a line with the command's name and
its seconds while nothing is counted, tqdm bars for counted stages), and nothing at all
in a pipe or with -q. GITPROV_PROGRESS_DELAY=0 shows it at once, so that a fast machine
cannot finish before it appears."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from gitprov.cli.common import Output, progress_delay
from tests.fixtures.fleet import device_path, device_yaml, fleet_files, generated_mac
from tests.fixtures.gitrepo import ROOT, GitRepo, demo_private_key
from tests.fixtures.roots import root_args

MAC = generated_mac(1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    r = GitRepo(tmp_path_factory.mktemp("progress") / "repo")
    r.commit(fleet_files(20), "20 devices")
    for i in range(3):
        r.commit({device_path(1): device_yaml(1, display=f"Desk {i}")}, f"rename {i}")
    return r


def env(delay: str = "0") -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    out.update(GITPROV_PRIVATE_KEY=demo_private_key(), COLUMNS="100", GITPROV_PROGRESS_DELAY=delay)
    out["TERM"] = "xterm"  # (whatever terminal runs the tests: see the dumb one's test)
    out.pop("GITPROV_PRIVATE_KEY_FILE", None)
    return out


def commands(repo: GitRepo, tmp: Path) -> dict[str, list[str]]:
    return {
        "validate": ["validate"],
        "build": ["build", "--out", str(tmp / "out")],
        "publish": ["publish", *root_args(tmp / "roots")],
        "plan": ["plan", "--base", "HEAD~3", "--rev", "HEAD"],
        "versions": ["versions"],
        "log": ["log", MAC],
        "blame": ["blame", MAC],
    }


def on_terminal(argv: list[str], environ: dict[str, str]) -> tuple[int, bytes]:
    """Run `python -m gitprov ARGV` with stderr on a new pty of 24 x 100; what it wrote."""
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitprov", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child_fd,
        env=environ,
        cwd=ROOT,
    )
    os.close(child_fd)
    seen = b""
    while True:
        ready, _, _ = select.select([main_fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    code = proc.wait(60)
    os.close(main_fd)
    return code, seen


@pytest.mark.parametrize(
    "command", ["validate", "build", "publish", "plan", "versions", "log", "blame"]
)
def test_each_long_command_shows_progress_on_a_terminal(
    repo: GitRepo, tmp_path: Path, command: str
) -> None:
    argv = ["--repo", str(repo.path), *commands(repo, tmp_path)[command]]
    code, seen = on_terminal(argv, env())
    assert code == 0, seen[-800:]
    line = b"\r" + command.encode() + b": "
    assert line in seen, seen[-800:]
    # ... and the terminal is left clean: the line is erased when the command is done.
    assert seen.rfind(b"\r\x1b[K") > seen.rfind(line)
    if command in ("build", "publish"):
        # The files written are counted: a tqdm bar ("write:  40%|####  | 26/64").
        assert b"write: " in seen and b"%|" in seen, seen[-800:]


def test_quiet_shows_no_progress_on_a_terminal(repo: GitRepo, tmp_path: Path) -> None:
    for command in ("validate", "build"):
        argv = ["--repo", str(repo.path), *commands(repo, tmp_path)[command], "-q"]
        code, seen = on_terminal(argv, env())
        assert code == 0, seen[-800:]
        assert b"\r" not in seen and b"%|" not in seen, (command, seen[-800:])


def test_a_dumb_terminal_gets_no_escape_sequences(repo: GitRepo, tmp_path: Path) -> None:
    # TERM=dumb (Emacs's shell, some CI consoles) printed `ESC[K` and colour codes as text.
    broken = GitRepo(tmp_path / "broken")
    broken.commit(fleet_files(2), "2 devices")
    broken.commit({device_path(1): b"mac: [broken\n"}, "a broken device")
    for argv in (
        ["--repo", str(repo.path), *commands(repo, tmp_path)["build"]],
        # (a refused commit's problems, on stderr: coloured on a terminal that takes it)
        ["--repo", str(broken.path), "versions"],
    ):
        code, seen = on_terminal(argv, {**env(), "TERM": "dumb"})
        assert b"\x1b[" not in seen and b"%|" not in seen, (argv, seen[-800:])
        code_xterm, seen_xterm = on_terminal(argv, env())
        assert code == code_xterm and b"\x1b[" in seen_xterm, (argv, seen_xterm[-800:])


def test_nothing_in_a_pipe(repo: GitRepo, tmp_path: Path) -> None:
    for command, args in commands(repo, tmp_path).items():
        done = subprocess.run(
            [sys.executable, "-m", "gitprov", "--repo", str(repo.path), *args],
            capture_output=True,
            env=env(),
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        for out in (done.stdout, done.stderr):
            assert b"\r" not in out and b"%|" not in out and b"\x1b[" not in out, command
        assert f"{command}: ".encode() not in done.stderr, command


def test_a_short_command_leaves_the_terminal_as_it_was(repo: GitRepo, tmp_path: Path) -> None:
    """What ends before the delay shows nothing, and leaves nothing to erase."""
    argv = ["--repo", str(repo.path), "validate"]
    code, seen = on_terminal(argv, env(delay="60"))
    assert code == 0
    assert b"\r" not in seen and b"%|" not in seen, seen[-800:]


@pytest.mark.parametrize("delay", ["inf", "1e999", "1e30"])
def test_a_delay_past_what_the_timer_takes_shows_nothing(
    repo: GitRepo, tmp_path: Path, delay: str
) -> None:
    """GITPROV_PROGRESS_DELAY=inf (never, one would think) was an internal error on a
    terminal: the interval timer takes no more than a time_t."""
    code, seen = on_terminal(["--repo", str(repo.path), "validate"], env(delay=delay))
    assert code == 0 and b"Traceback" not in seen, seen[-800:]
    assert b"\r" not in seen and b"%|" not in seen, seen[-800:]


def test_the_timer_starts_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build forks its workers only from a process of one thread: the line is redrawn
    by an interval timer, so `working` must not start a thread."""
    monkeypatch.delenv("CI", raising=False)
    main_fd, child_fd = pty.openpty()
    try:
        with os.fdopen(child_fd, "w", closefd=False) as stderr:
            out = Output(stdout=io.StringIO(), stderr=stderr)
            before = threading.active_count()
            with out.working("build"):
                assert threading.active_count() == before
                bars = out.progress()
                assert bars is not None
                bars("build", 1, 10)
                assert threading.active_count() == before
                bars("build", 10, 10)
    finally:
        os.close(main_fd)
        os.close(child_fd)


@pytest.mark.parametrize(
    ("value", "delay"),
    [
        (None, 0.5),
        ("0", 0.0),
        ("2", 2.0),
        ("x", 0.5),
        ("-1", 0.0),
        ("nan", 0.5),
        ("inf", 86_400.0),
        ("1e999", 86_400.0),
        ("1e30", 86_400.0),
    ],
)
def test_progress_delay(monkeypatch: pytest.MonkeyPatch, value: str | None, delay: float) -> None:
    if value is None:
        monkeypatch.delenv("GITPROV_PROGRESS_DELAY", raising=False)
    else:
        monkeypatch.setenv("GITPROV_PROGRESS_DELAY", value)
    assert progress_delay() == delay
