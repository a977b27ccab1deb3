"""deploy/README.md sections 3, 4 and 6 end to end, on tmp paths: the server's key pair
(`secrets keygen`), the workstation re-sealing its secrets to it (`secrets rotate`) and
pushing through the pre-receive hook, then `gitprov watch` started exactly as
deploy/gitprov-watch.service starts it (its ExecStart=, Environment= and LoadCredential=,
with paths swapped) publishing the pushed commit with the server's key.

The watcher runs with no_new_privs and, where the kernel has it (Linux >= 6.3), under
PR_SET_MDWE: the kernel's own form of the unit's MemoryDenyWriteExecute=yes, which
refuses writable+executable memory to the process and everything it executes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.support import (
    DEPLOY,
    GITPROV,
    KEY_PATH,
    PRODUCTION_GITPROV,
    REPO_PATH,
    git,
    git_env,
    readme_commands,
    set_up_repository,
    sh,
    substitute,
    unit_settings,
)
from tests.fixtures.gitrepo import demo_private_key, example_files
from tests.fixtures.peers import need, openssl_decrypt

MAC = "0021f2011b19"

# Execs argv[1:] with no_new_privs and, when the kernel allows, PR_SET_MDWE; says which on
# stderr first.
SANDBOX = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_NO_NEW_PRIVS) failed")
mdwe = libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0
print("mdwe:", "on" if mdwe else "unsupported", file=sys.stderr, flush=True)
os.execv(sys.argv[1], sys.argv[1:])
"""


def sandboxed(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", SANDBOX, *argv]


def test_the_sandbox_refuses_writable_executable_memory() -> None:
    """The control for the watcher test below: under SANDBOX, W+X memory is refused."""
    probe = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    print('allowed')\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    proc = subprocess.run(
        sandboxed([sys.executable, "-c", probe]),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    if proc.stderr.startswith("mdwe: unsupported"):
        pytest.skip("the kernel has no PR_SET_MDWE (Linux >= 6.3)")
    assert proc.stdout.strip() == "refused"


def unit_command(paths: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
    """The unit's ExecStart= argv, its Environment= and its WorkingDirectory=, on tmp
    paths; LoadCredential= done as systemd does it (a copy in the credentials dir)."""
    unit = unit_settings((DEPLOY / "gitprov-watch.service").read_text())
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(substitute(exec_start, paths))
    assert argv[0] == str(GITPROV), argv
    i = argv.index("--metrics-port")
    argv[i + 1] = "0"  # any free port
    credentials = Path(paths["%d"])
    credentials.mkdir(mode=0o700)
    for spec in unit["LoadCredential"]:
        name, _, source = spec.partition(":")
        shutil.copy(substitute(source, paths), credentials / name)
    env: dict[str, str] = {}
    for assignment in unit["Environment"]:
        name, _, value = assignment.partition("=")
        env[name] = substitute(value, paths)
    for created in ("StateDirectory", "LogsDirectory"):
        (value,) = unit[created]
        Path(paths[f"/var/{'lib' if created == 'StateDirectory' else 'log'}/{value}"]).mkdir()
    (workdir,) = unit["WorkingDirectory"]
    return argv, env, Path(substitute(workdir, paths))


def test_keygen_rotate_push_and_the_unit_publishes_with_the_servers_key(
    tmp_path: Path,
) -> None:
    need("git", "git")
    env = git_env(tmp_path / "home", PATH=f"{GITPROV.parent}:{os.environ.get('PATH', '')}")
    bare = set_up_repository(tmp_path, env)

    # Section 4 on the server: the key pair.
    keygen, rotate, commit_push = readme_commands("## 4.")
    key = tmp_path / "etc-gitprov" / "private-key"
    key.parent.mkdir()
    done = sh(
        substitute(keygen, {PRODUCTION_GITPROV: str(GITPROV), KEY_PATH: str(key)}),
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"public key: (gitprov-pk-\S+)", done.stdout)
    assert found is not None, done.stdout
    public = found.group(1)
    assert key.stat().st_mode & 0o777 == 0o600
    assert demo_private_key() not in key.read_text()

    # The workstation: its inventory sealed to its own key so far (the demo key here),
    # pushed, then re-sealed to the server's key and pushed again.
    work = tmp_path / "workstation"
    work.mkdir()
    for path, data in example_files().items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(data)
    git("init", "--quiet", "-b", "main", cwd=work, env=env)
    git("add", "inventory", cwd=work, env=env)
    git("commit", "--quiet", "-m", "inventory", cwd=work, env=env)
    git("remote", "add", "production", str(bare), cwd=work, env=env)
    git("push", "--quiet", "production", "main", cwd=work, env=env)
    old_key = {**env, "GITPROV_PRIVATE_KEY": demo_private_key()}
    done = sh(substitute(rotate, {"gitprov-pk-…": public}), cwd=work, env=old_key)
    assert done.returncode == 0, done.stderr
    done = sh(commit_push, cwd=work, env=env)
    assert done.returncode == 0, done.stderr
    assert "validates; accepted for main" in done.stderr
    head = git("rev-parse", "HEAD", cwd=work, env=env).stdout.strip()

    # Section 6: the unit's command line.
    paths = {
        PRODUCTION_GITPROV: str(GITPROV),
        REPO_PATH: str(bare),
        KEY_PATH: str(key),
        "/var/lib/gitprov": str(tmp_path / "var-lib-gitprov"),
        "/var/log/gitprov": str(tmp_path / "var-log-gitprov"),
        "/srv/gitprov": str(tmp_path / "srv-gitprov"),
        "%d": str(tmp_path / "credentials"),
    }
    for made_in_section_2 in ("http", "tftp", "firmware"):
        (tmp_path / "srv-gitprov" / made_in_section_2).mkdir(parents=True)
    argv, unit_env, workdir = unit_command(paths)
    assert unit_env["GITPROV_PRIVATE_KEY_FILE"] == str(tmp_path / "credentials" / "private-key")
    status = tmp_path / "var-lib-gitprov" / "status.json"
    proc = subprocess.Popen(
        sandboxed(argv),
        cwd=workdir,
        env={**env, **unit_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_publish(status, head, proc)["result"] == "published"
        metrics_port = read_metrics_port(proc)
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10
        ) as response:
            metrics = response.read().decode()
        assert re.search(r'^gitprov_publishes_total\{result="published"\} 1\.0$', metrics, re.M)
        # The unit leaves /proc/stat visible (no ProcSubset=pid) for these.
        assert re.search(r"^process_start_time_seconds \d", metrics, re.M), metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err.startswith("mdwe: "), err

    # What was published opens with the server's key only.
    served = (tmp_path / "srv-gitprov" / "http" / f"fv{MAC}.conf").read_bytes()
    assert (tmp_path / "srv-gitprov" / "tftp" / f"fv{MAC}.conf").read_bytes() == served
    server = {**env, "GITPROV_PRIVATE_KEY_FILE": str(key)}
    device_key = gitprov_out(bare, server, "key", MAC, "--rev", "main").strip()
    shown = gitprov_out(bare, server, "show", MAC, "--rev", "main", "--reveal")
    assert openssl_decrypt(served, device_key).decode() == shown
    demo = {**env, "GITPROV_PRIVATE_KEY": demo_private_key()}
    refused = subprocess.run(
        [str(GITPROV), "--repo", str(bare), "key", MAC, "--rev", "main"],
        env=demo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr


def gitprov_out(repo: Path, env: dict[str, str], *argv: str) -> str:
    proc = subprocess.run(
        [str(GITPROV), "--repo", str(repo), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def wait_for_publish(
    status: Path, commit: str, proc: subprocess.Popen[str], timeout: float = 60
) -> dict[str, object]:
    """--status-file once it names `commit`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"watch exited with {proc.returncode}:\n{out}\n{err}")
        try:
            data: dict[str, object] = json.loads(status.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        if data.get("commit") == commit:
            return data
        time.sleep(0.1)
    pytest.fail(f"no publish of {commit[:12]} within {timeout}s; status: {status.read_text()}")


def read_metrics_port(proc: subprocess.Popen[str]) -> int:
    """The unit asks for port 9351, the test for any free one; the watcher prints where it
    listens ("metrics: http://127.0.0.1:PORT/metrics")."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", line)
        if found:
            return int(found.group(1))
        if not line and proc.poll() is not None:
            break
    pytest.fail("the watcher did not say where its metrics are")
