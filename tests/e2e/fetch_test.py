"""Issue 2, acceptance 1: publish the example at its head, fetch every device's file
through `gitprov serve` with real clients (curl over HTTP; tftp-hpa and busybox over TFTP),
decrypt with the real `openssl enc -d -aes-256-cbc -md md5 -k KEY`, and compare with
`gitprov show MAC --reveal`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.peers import need, openssl_decrypt
from tests.fixtures.roots import root_args

MACS = ["0021f2011b19", "0021f2011b20", "0021f2a0c001", "0021f2a0c002"]


def gitprov(repo: GitRepo, *argv: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "gitprov", "--repo", str(repo.path), *argv],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@pytest.fixture
def served(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> Iterator[tuple[GitRepo, dict[str, str], int, int]]:
    env = {**os.environ, "GITPROV_PRIVATE_KEY": private_key}
    http, tftp = tmp_path / "http", tmp_path / "tftp"
    gitprov(
        example_repo,
        "publish",
        "--rev",
        "main",
        *root_args(tmp_path),
        env=env,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gitprov",
            "--repo",
            str(example_repo.path),
            "serve",
            "--http-port",
            "0",
            "--tftp-port",
            "0",
            "--http-root",
            str(http),
            "--tftp-root",
            str(tftp),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        http_line = proc.stdout.readline()
        tftp_line = proc.stdout.readline()
        http_port = int(re.search(r":(\d+)", http_line.split()[1]).group(1))  # type: ignore[union-attr]
        tftp_port = int(re.search(r":(\d+)/", tftp_line).group(1))  # type: ignore[union-attr]
        yield example_repo, env, http_port, tftp_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def expected(repo: GitRepo, mac: str, env: dict[str, str]) -> tuple[bytes, str]:
    shown = gitprov(repo, "show", mac, "--rev", "main", "--reveal", env=env).encode()
    key = gitprov(repo, "key", mac, "--rev", "main", env=env).strip()
    return shown, key


def test_http_with_curl(served: tuple[GitRepo, dict[str, str], int, int], tmp_path: Path) -> None:
    repo, env, http_port, _ = served
    curl = need("curl", "curl")
    for mac in MACS:
        got = subprocess.run(
            [curl, "-sS", "--fail", f"http://127.0.0.1:{http_port}/fv{mac}.conf"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        shown, key = expected(repo, mac, env)
        assert openssl_decrypt(got, key) == shown
        assert shown.startswith(b"DBID_DBASE_VERSION=")


# The real clients' command lines: (binary, Debian package, argv after the binary).
TFTP_CLIENTS: dict[str, tuple[str, str, Callable[[str, str, str], list[str]]]] = {
    "tftp-hpa": (
        "tftp",
        "tftp-hpa",
        lambda port, name, local: ["127.0.0.1", port, "-m", "binary", "-c", "get", name, local],
    ),
    "busybox": (
        "busybox",
        "busybox",
        lambda port, name, local: ["tftp", "-g", "-r", name, "-l", local, "127.0.0.1", port],
    ),
}


@pytest.mark.parametrize("client", sorted(TFTP_CLIENTS))
def test_tftp_with_real_clients(
    served: tuple[GitRepo, dict[str, str], int, int], tmp_path: Path, client: str
) -> None:
    repo, env, _, tftp_port = served
    binary, package, argv = TFTP_CLIENTS[client]
    path = need(binary, package)
    for mac in MACS:
        local = tmp_path / f"{client}-{mac}.conf"
        # tftp-hpa exits 0 on "File not found" and leaves an empty file: check content.
        subprocess.run(
            [path, *argv(str(tftp_port), f"fv{mac}.conf", str(local))],
            capture_output=True,
            timeout=30,
            check=False,
        )
        shown, key = expected(repo, mac, env)
        assert openssl_decrypt(local.read_bytes(), key) == shown


def test_unknown_file_is_not_served(
    served: tuple[GitRepo, dict[str, str], int, int], tmp_path: Path
) -> None:
    _, _, http_port, _ = served
    curl = need("curl", "curl")
    proc = subprocess.run(
        [
            curl,
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"http://127.0.0.1:{http_port}/fv000000000000.conf",
        ],
        capture_output=True,
        timeout=30,
        check=False,
        text=True,
    )
    assert proc.stdout == "404"
