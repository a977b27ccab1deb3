"""Issue 4, acceptance 4: no plaintext secret in anything gitprov prints or leaves behind;
only the encrypted device files hold them (checked by decrypting)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitprov.crypto import decrypt, derive_device_key
from tests.fixtures.gitrepo import GitRepo, example_files
from tests.fixtures.inventory import sealed_secrets
from tests.fixtures.roots import root_args

NAMES = ["fleet_master_key", "sip_2001", "sip_2002", "sip_2010", "sip_3001", "sip_3002", "sip_3003"]
MACS = ["0021f2011b19", "0021f2011b20", "0021f2a0c001", "0021f2a0c002"]


def cli(
    repo: Path, env: dict[str, str], *argv: str, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gitprov", "--repo", str(repo), *argv],
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow(seconds=15)
def test_no_secret_outside_encrypted_files(tmp_path: Path) -> None:
    values = {n: f"Pw-{n}-q7Zr{i}x9K" for i, n in enumerate(NAMES)}
    private, secrets_yaml = sealed_secrets(values)
    files = example_files()
    files["inventory/secrets.yaml"] = secrets_yaml.encode()
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files, "example with test secrets", worktree=True)
    device_keys = {m: derive_device_key(values["fleet_master_key"], m) for m in MACS}
    forbidden = [*values.values(), *device_keys.values(), private]

    env = {**os.environ, "GITPROV_PRIVATE_KEY": private, "NO_COLOR": "1"}
    roots = root_args(tmp_path)
    outputs: list[bytes] = []
    runs = [
        ["validate"],
        ["validate", "--format", "json"],
        ["validate", "--worktree"],
        ["show", MACS[0]],
        ["versions"],
        ["plan", "--base", "main", "--rev", "main"],
        ["publish", "--rev", "main", *roots],
        ["publish", "--rev", "main", *roots],
        ["build", "--rev", "main", "--out", str(tmp_path / "build")],
        ["secrets", "list"],
        ["-v", "show", MACS[1]],
    ]
    for argv in runs:
        proc = cli(repo.path, env, *argv)
        assert proc.returncode == 0, (argv, proc.stderr)
        outputs += [proc.stdout, proc.stderr]
    # A change with a new secret value, seen by plan and by a running watcher.
    changed = dict(files)
    changed["inventory/devices/0021f2011b20.yaml"] = files[
        "inventory/devices/0021f2011b20.yaml"
    ].replace(b"Meeting room", b"Board room")
    repo.commit(changed, "rename")
    proc = cli(repo.path, env, "plan", "--base", "main~1", "--rev", "main", "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    outputs += [proc.stdout, proc.stderr]
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gitprov",
            "--repo",
            str(repo.path),
            "watch",
            "--interval",
            "0.2",
            "--status-file",
            str(tmp_path / "logs" / "status.json"),
            "--log-json",
            str(tmp_path / "logs" / "events.jsonl"),
            *roots,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 30
    manifest = tmp_path / "state" / "manifest.json"
    head = str(repo.repo.head.target)
    while time.monotonic() < deadline and head not in manifest.read_text():
        time.sleep(0.2)
    watch.terminate()
    out, err = watch.communicate(timeout=20)
    outputs += [out, err]
    assert head in manifest.read_text(), err.decode()

    # Everything a person or a log collector can see, plus every plaintext we wrote.
    seen = list(outputs)
    logs = sorted((tmp_path / "logs").rglob("*"))
    assert [p.name for p in logs] == ["events.jsonl", "status.json"]
    for path in [
        *logs,
        *(tmp_path / "state").rglob("*"),
        *(tmp_path / "build" / "plain").rglob("*"),
        *Path(repo.repo.path).rglob("gitprov-cache/**/*"),
    ]:
        if path.is_file():
            seen.append(path.read_bytes())
    for blob in seen:
        for secret in forbidden:
            assert secret.encode() not in blob, f"a secret leaked into {blob[:200]!r}"

    # The encrypted files do hold them.
    for mac in MACS:
        data = (tmp_path / "http" / f"fv{mac}.conf").read_bytes()
        assert values["fleet_master_key"].encode() not in data
        plain = decrypt(data, device_keys[mac])
        assert device_keys[mac].encode() in plain  # in its own Profile Rule
        assert re.search(rb"DBID_SIP_PASSWORD=Pw-sip_", plain)
