"""What the deploy tests share: the commands deploy/README.md shows (so that the guide and
the tests cannot drift apart), a client repository pushed with the real git, and the
gitprov program of this virtualenv standing in for /opt/gitprov/bin/gitprov."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.fixtures.gitrepo import ROOT, GitRepo

DEPLOY = ROOT / "deploy"
README = DEPLOY / "README.md"
# The program the unit and the hooks run, as the test venv has it.
GITPROV = Path(sys.executable).parent / "gitprov"
PRODUCTION_GITPROV = "/opt/gitprov/bin/gitprov"
KEY_PATH = "/etc/gitprov/private-key"
REPO_PATH = "/srv/git/inventory.git"

# Commands a test cannot run: they need root, or change the host.
_NEEDS_ROOT = re.compile(
    r"^(useradd|chown|systemctl|apt-get|ln|rm|journalctl|cat|systemd-analyze|nginx)\b"
    r"|^install\b.*\s-o\s"
)


def readme_commands(heading: str) -> list[str]:
    """The shell commands of the section of deploy/README.md whose heading starts with
    `heading` (e.g. "## 3."): one string per command, continuation lines joined,
    comment lines and trailing comments dropped."""
    text = README.read_text()
    start = text.find(f"\n{heading}")
    assert start >= 0, f"deploy/README.md has no section {heading!r}"
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    commands: list[str] = []
    for block in re.findall(r"^ *```sh\n(.*?)^ *```", section, re.M | re.S):
        pending = ""
        for raw in block.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if pending:
                line = f"{pending} {line}"
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
                continue
            pending = ""
            commands.append(_strip_comment(line))
    return commands


def _strip_comment(line: str) -> str:
    """`cmd args   # why` -> `cmd args`; a # inside quotes stays."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i > 0 and line[i - 1] == " ":
            return line[:i].rstrip()
    return line


def runs_without_root(command: str) -> bool:
    return _NEEDS_ROOT.search(command) is None


def substitute(command: str, paths: Mapping[str, str]) -> str:
    """`command` with production paths and names swapped, longest first."""
    for old in sorted(paths, key=len, reverse=True):
        command = command.replace(old, paths[old])
    return command


def sh(
    command: str, *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def git_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the git client (and the hooks it runs on a local push):
    pinned identities, no user or system git config, no private key."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GIT_", "GITPROV_")) and "proxy" not in k.lower()
    }
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Test Author",
        GIT_AUTHOR_EMAIL="author@gitprov.invalid",
        GIT_COMMITTER_NAME="Test Committer",
        GIT_COMMITTER_EMAIL="committer@gitprov.invalid",
        GIT_AUTHOR_DATE="2024-01-02T03:04:05+00:00",
        GIT_COMMITTER_DATE="2024-01-02T03:04:05+00:00",
        GITPROV=str(GITPROV),
    )
    env.update(extra)
    return env


def git(
    *args: str, cwd: Path, env: Mapping[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"git {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc


def workstation(path: Path, files: Mapping[str, bytes]) -> GitRepo:
    """A non-bare repository whose main holds `files`, to push from."""
    repo = GitRepo(path)
    repo.commit(files, "inventory", worktree=True)
    return repo


def unit_settings(text: str) -> dict[str, list[str]]:
    """A systemd unit's settings: name -> every value given, in order (continuation lines
    joined, comments dropped). Sections are not told apart: names do not repeat across
    them in gitprov's unit."""
    settings: dict[str, list[str]] = {}
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";", "["))):
            continue
        line = f"{pending} {line}" if pending else line
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        pending = ""
        name, _, value = line.partition("=")
        settings.setdefault(name.strip(), []).append(value.strip())
    return settings


def set_up_repository(tmp_path: Path, env: dict[str, str]) -> Path:
    """Section 3's commands that run without root, on tmp paths; returns the bare repo."""
    bare = tmp_path / "inventory.git"
    home = tmp_path / "gitprov-home"  # the service user's home (section 2 makes it)
    home.mkdir()
    paths = {REPO_PATH: str(bare), "/var/lib/gitprov": str(home)}
    commands = [c for c in readme_commands("## 3.") if runs_without_root(c)]
    server_side = [c for c in commands if REPO_PATH in c and not c.startswith("git remote")]
    assert [c.split()[:3] for c in server_side] == [
        ["git", "init", "--bare"],
        ["install", "-m", "0755"],
        ["git", "config", "--file"],
        ["git", "config", "--global"],
    ], server_side
    for command in server_side:
        done = sh(substitute(command, paths), cwd=ROOT, env=env)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    assert (bare / "hooks" / "pre-receive").stat().st_mode & 0o777 == 0o755
    # Both the service user's and root's (here: the test HOME's) git config trust it.
    for config in (home / ".gitconfig", Path(env["HOME"]) / ".gitconfig"):
        safe = git(
            "config", "--file", str(config), "--get-all", "safe.directory", cwd=tmp_path, env=env
        )
        assert safe.stdout.split() == [str(bare)], config
    return bare
