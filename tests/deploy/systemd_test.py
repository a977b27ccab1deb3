"""deploy/gitprov-watch.service: systemd's own verdict on its sandbox, and its agreement
with the rest of deploy/ (one key path, one program, the roots it may write).

`systemd-analyze security --offline=true FILE` rates a unit file without a running
systemd (systemd 252, Debian 12). Whether `gitprov watch` runs as the unit starts it is
tests/deploy/server_test.py's job.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import (
    DEPLOY,
    GITPROV,
    KEY_PATH,
    PRODUCTION_GITPROV,
    REPO_PATH,
    unit_settings,
)
from tests.fixtures.peers import need

UNIT = DEPLOY / "gitprov-watch.service"
# "OK" starts below 5.0 in systemd's bands; the unit rates 0.9 ("SAFE" is below 1.0).
MAX_EXPOSURE = 1.0


def analyze(*argv: str) -> subprocess.CompletedProcess[str]:
    binary = need("systemd-analyze", "systemd")
    return subprocess.run([binary, *argv], capture_output=True, text=True, timeout=120, check=False)


def exposure(unit: Path) -> tuple[float, str]:
    """systemd's overall exposure score of a unit file, and its report."""
    done = analyze("security", "--offline=true", "--no-pager", str(unit))
    assert done.returncode == 0, done.stderr
    found = re.search(
        rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d) (\w+)", done.stdout
    )
    assert found is not None, done.stdout
    # Unknown or malformed settings are only warned about, and then ignored.
    assert done.stderr == "", done.stderr
    return float(found.group(1)), done.stdout


def test_the_sandbox_rates_safe(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text())
    score, report = exposure(unit)
    assert score <= MAX_EXPOSURE, report


def test_the_score_tells_a_sandbox_from_none(tmp_path: Path) -> None:
    """The control: the same unit without its hardening rates far worse, so the score
    above measures the sandbox."""
    settings = unit_settings(UNIT.read_text())
    bare = tmp_path / UNIT.name
    bare.write_text(
        f"[Service]\nExecStart={settings['ExecStart'][0]}\nUser={settings['User'][0]}\n"
    )
    score, report = exposure(bare)
    assert score >= 5.0, report


def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks every setting; ExecStart's program must exist, so
    the copy runs this venv's gitprov instead of /opt/gitprov/bin/gitprov."""
    text = UNIT.read_text()
    assert text.count(PRODUCTION_GITPROV) >= 1
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(PRODUCTION_GITPROV, str(GITPROV)))
    done = analyze("verify", str(unit))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_the_key_directives_are_set() -> None:
    s = unit_settings(UNIT.read_text())
    expected = {
        "User": ["gitprov"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "CapabilityBoundingSet": [""],
        "AmbientCapabilities": [""],
        "PrivateTmp": ["yes"],
        "PrivateDevices": ["yes"],
        "DevicePolicy": ["closed"],
        "PrivateUsers": ["yes"],
        "ProtectHome": ["yes"],
        "ProtectKernelTunables": ["yes"],
        "ProtectKernelModules": ["yes"],
        "ProtectKernelLogs": ["yes"],
        "ProtectControlGroups": ["yes"],
        "ProtectClock": ["yes"],
        "ProtectHostname": ["yes"],
        "ProtectProc": ["invisible"],
        "RestrictNamespaces": ["yes"],
        "RestrictRealtime": ["yes"],
        "RestrictSUIDSGID": ["yes"],
        "LockPersonality": ["yes"],
        "MemoryDenyWriteExecute": ["yes"],
        "SystemCallArchitectures": ["native"],
        "SystemCallFilter": ["@system-service", "~@privileged @resources"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "IPAddressDeny": ["any"],
        "IPAddressAllow": ["localhost"],
        "UMask": ["0027"],
    }
    assert {name: s.get(name) for name in expected} == expected
    # The metrics endpoint is on loopback, which a private network would hide.
    assert "PrivateNetwork" not in s
    # The process_* metrics read /proc/stat, which ProcSubset=pid hides.
    assert "ProcSubset" not in s


def test_one_program_one_key_path_one_repository_across_deploy() -> None:
    s = unit_settings(UNIT.read_text())
    argv = shlex.split(s["ExecStart"][0])
    assert argv[:2] == [PRODUCTION_GITPROV, "watch"]
    assert s["LoadCredential"] == [f"private-key:{KEY_PATH}"]
    assert s["Environment"] == ["GITPROV_PRIVATE_KEY_FILE=%d/private-key"]
    assert argv[argv.index("--repo") + 1] == REPO_PATH
    for hook in ("pre-receive", "post-receive"):
        text = (DEPLOY / hook).read_text()
        assert f"GITPROV=${{GITPROV:-{PRODUCTION_GITPROV}}}" in text, hook
    post = (DEPLOY / "post-receive").read_text()
    assert f'GITPROV_PRIVATE_KEY_FILE:-{KEY_PATH}}}"' in post
    # Every path in deploy/, the README and docs/ that names a private key names this one.
    top = DEPLOY.parent
    for path in sorted([*DEPLOY.iterdir(), top / "README.md", *(top / "docs").glob("*.md")]):
        for found in re.findall(r"/etc/gitprov/[\w.-]*key\b", path.read_text()):
            assert found == KEY_PATH, (path.name, found)


def test_the_unit_may_write_exactly_where_it_publishes() -> None:
    """A root on the command line but not in ReadWritePaths= fails at the first publish
    (read-only file system); one in ReadWritePaths= but not on the command line is a
    writable path for nothing."""
    s = unit_settings(UNIT.read_text())
    argv = shlex.split(s["ExecStart"][0])
    roots = {argv[i + 1] for i, a in enumerate(argv) if a in ("--http-root", "--tftp-root")}
    writable = {p for line in s["ReadWritePaths"] for p in line.split()}
    assert roots == {"/srv/gitprov/http", "/srv/gitprov/tftp"}
    assert writable == roots | {f"-{REPO_PATH}/gitprov-cache"}
    # The state dir, the status file and the log under the directories systemd makes.
    (state,) = s["StateDirectory"]
    (logs,) = s["LogsDirectory"]
    for option, base in (("--state-dir", state), ("--status-file", state), ("--log-json", logs)):
        value = argv[argv.index(option) + 1]
        assert value.startswith((f"/var/lib/{base}/", f"/var/log/{base}/")), (option, value)
    # The firmware dir is only read.
    firmware = argv[argv.index("--firmware-dir") + 1]
    assert not any(firmware.startswith(w.lstrip("-")) for w in writable)


@pytest.mark.parametrize("hook", ["pre-receive", "post-receive", "device-cert.sh"])
def test_the_scripts_are_posix_sh(hook: str) -> None:
    """Debian's /bin/sh is dash: no bashisms. `sh -n` parses without running."""
    path = DEPLOY / hook
    assert path.read_text().startswith("#!/bin/sh\n")
    done = subprocess.run(
        ["sh", "-n", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert path.stat().st_mode & 0o111, f"{hook} is not executable in the checkout"
