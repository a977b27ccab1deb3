"""deploy/device-cert.sh and HTTPS with client certificates, as deploy/README.md sections 7
and 10 do them: the README's commands run on tmp paths (provisioning.example.net and
192.0.2.10 become localhost and 127.0.0.1), then nginx serves the published example
inventory with deploy/nginx-gitprov.conf (rendered for tmp paths by the production e2e
test's renderer) and the script's certificates. A device's certificate fetches its own
file (200), not another device's (403); curl and `gitprov probe` fetch as the README shows.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.deploy.support import (
    DEPLOY,
    GITPROV,
    KEY_PATH,
    PRODUCTION_GITPROV,
    REPO_PATH,
    readme_commands,
    sh,
    substitute,
)
from tests.e2e.production_test import curl
from tests.fixtures.deploy_files import Pki, free_port, nginx_config, no_proxy_env, wait_for_tcp
from tests.fixtures.gitrepo import ROOT, GitRepo, demo_private_key, example_files
from tests.fixtures.peers import need

MACS = ["0021f2011b19", "0021f2011b20"]  # the README issues these two
SCRIPT = DEPLOY / "device-cert.sh"


def names(base: Path) -> dict[str, str]:
    return {
        "/etc/gitprov": str(base / "etc-gitprov"),
        "provisioning.example.net": "localhost",
        "192.0.2.10": "127.0.0.1",
    }


@dataclass(frozen=True)
class Issued:
    base: Path
    pki: Path  # /etc/gitprov/pki
    tls: Path  # /etc/gitprov/tls
    said: dict[str, str]  # command -> its stdout


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    """Section 7's commands, all of which run without root."""
    need("openssl", "openssl")
    base = tmp_path_factory.mktemp("tls")
    commands = readme_commands("## 7.")
    assert len(commands) == 10, commands
    env = {**os.environ, "TMPDIR": str(base)}
    said: dict[str, str] = {}
    for command in commands:
        done = sh(substitute(command, names(base)), cwd=ROOT, env=env)
        assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
        said[command] = done.stdout
    return Issued(base, base / "etc-gitprov" / "pki", base / "etc-gitprov" / "tls", said)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(c: x509.Certificate) -> str:
    (attr,) = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attr.value)


def openssl_verify(ca: Path, leaf: Path, purpose: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("openssl", "openssl"), "verify", "-purpose", purpose, "-CAfile", str(ca), str(leaf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_readme_commands_verify(issued: Issued) -> None:
    verified = [out for cmd, out in issued.said.items() if cmd.startswith("openssl verify")]
    assert [v.strip().rsplit(" ", 1)[-1] for v in verified] == ["OK", "OK"]
    (shown,) = [out for cmd, out in issued.said.items() if cmd.startswith("openssl x509")]
    assert "subject=CN = 0021f2011b19" in shown
    assert sorted(p.name for p in issued.tls.iterdir()) == [
        "devices-ca.crt",
        "server.crt",
        "server.key",
    ]
    assert (issued.tls / "server.key").stat().st_mode & 0o777 == 0o600


def test_device_certificates_name_the_mac_and_serve_clients_only(issued: Issued) -> None:
    ca = cert(issued.pki / "devices-ca.crt")
    for mac in MACS:
        c = cert(issued.pki / "devices" / f"{mac}.crt")
        assert cn(c) == mac
        assert c.issuer == ca.subject
        assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        usage = c.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical
        assert usage.value.digital_signature and usage.value.key_encipherment
        assert not usage.value.key_cert_sign
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        days = (c.not_valid_after_utc - c.not_valid_before_utc).days
        assert days == 1825
        assert c.signature_hash_algorithm is not None
        assert c.signature_hash_algorithm.name == "sha256"
        key = issued.pki / "devices" / f"{mac}.key"
        assert key.stat().st_mode & 0o777 == 0o600
        # PKCS#1, for old firmware; RSA 2048.
        assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----\n")
        public = c.public_key()
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
        assert (
            openssl_verify(
                issued.pki / "devices-ca.crt", key.with_suffix(".crt"), "sslclient"
            ).returncode
            == 0
        )
        # Two CAs: a device's certificate never passes for a server one.
        assert (
            openssl_verify(
                issued.pki / "server-ca.crt", key.with_suffix(".crt"), "sslclient"
            ).returncode
            != 0
        )
        assert (
            openssl_verify(
                issued.pki / "devices-ca.crt", key.with_suffix(".crt"), "sslserver"
            ).returncode
            != 0
        )


def test_the_server_certificate_names_the_host_and_its_own_ca(issued: Issued) -> None:
    c = cert(issued.pki / "server.crt")
    assert cn(c) == "localhost"
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
    eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert (c.not_valid_after_utc - c.not_valid_before_utc).days == 825
    assert (
        openssl_verify(
            issued.pki / "server-ca.crt", issued.pki / "server.crt", "sslserver"
        ).returncode
        == 0
    )
    assert (
        openssl_verify(
            issued.pki / "devices-ca.crt", issued.pki / "server.crt", "sslserver"
        ).returncode
        != 0
    )
    for name in ("devices-ca", "server-ca"):
        ca = cert(issued.pki / f"{name}.crt")
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca
        assert constraints.value.path_length == 0
        assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 3650
        assert (issued.pki / f"{name}.key").stat().st_mode & 0o777 == 0o600


# -- the script's rules --------------------------------------------------------------------


def script(directory: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), "-d", str(directory), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TMPDIR": str(directory.parent)},
    )


def test_a_ca_key_is_never_overwritten(tmp_path: Path) -> None:
    need("openssl", "openssl")
    d = tmp_path / "pki"
    assert script(d, "ca").returncode == 0
    key, crt = (d / "devices-ca.key").read_bytes(), (d / "devices-ca.crt").read_bytes()
    again = script(d, "ca")
    assert again.returncode == 1
    assert "devices-ca.key exists; a CA key is never overwritten" in again.stderr
    assert (d / "devices-ca.key").read_bytes() == key
    assert (d / "devices-ca.crt").read_bytes() == crt
    # Nothing of a half-made key or certificate is left behind.
    assert sorted(p.name for p in d.iterdir()) == ["devices-ca.crt", "devices-ca.key"]


def test_a_device_needs_the_ca_first(tmp_path: Path) -> None:
    need("openssl", "openssl")
    done = script(tmp_path / "pki", "device", MACS[0])
    assert done.returncode == 1
    assert "run `device-cert.sh ca` first" in done.stderr
    assert not (tmp_path / "pki" / "devices").exists()


def test_renewing_keeps_the_key_and_issues_a_new_certificate(tmp_path: Path) -> None:
    need("openssl", "openssl")
    d = tmp_path / "pki"
    assert script(d, "ca").returncode == 0
    assert script(d, "device", "00:21:F2:01:1B:19").returncode == 0
    key = (d / "devices" / "0021f2011b19.key").read_bytes()
    first = cert(d / "devices" / "0021f2011b19.crt")
    # Another spelling of the same MAC, and a shorter validity.
    done = script(d, "--days", "30", "device", "00-21-f2-01-1b-19")
    assert done.returncode == 0, done.stderr
    assert "kept" in done.stdout
    assert (d / "devices" / "0021f2011b19.key").read_bytes() == key
    second = cert(d / "devices" / "0021f2011b19.crt")
    assert second.serial_number != first.serial_number
    assert second.public_key() == first.public_key()
    assert (second.not_valid_after_utc - second.not_valid_before_utc).days == 30
    assert (
        openssl_verify(
            d / "devices-ca.crt", d / "devices" / "0021f2011b19.crt", "sslclient"
        ).returncode
        == 0
    )


@pytest.mark.parametrize("bad", ["0021f2011b1", "0021f2011b19aa", "0021g2011b19", ""])
def test_what_is_not_a_mac_is_refused(tmp_path: Path, bad: str) -> None:
    need("openssl", "openssl")
    d = tmp_path / "pki"
    assert script(d, "ca").returncode == 0
    done = script(d, "device", bad)
    assert done.returncode == 1
    assert "is not a MAC address" in done.stderr
    assert list((d / "devices").iterdir()) == []


# -- nginx with the script's certificates ---------------------------------------------------


@dataclass(frozen=True)
class Served:
    https: int
    repo: Path
    http_root: Path
    keys: dict[str, str]  # MAC -> `gitprov key MAC`


@pytest.fixture(scope="module")
def served(issued: Issued) -> Iterator[Served]:
    binary = need("nginx", "nginx")
    need("curl", "curl")
    base = issued.base
    repo = GitRepo(base / "repo")
    repo.commit(example_files(), "example inventory", worktree=True)
    env = {**os.environ, "GITPROV_PRIVATE_KEY": demo_private_key()}
    env.pop("GITPROV_PRIVATE_KEY_FILE", None)

    def gitprov(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gitprov", "--repo", str(repo.path), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    http_root = base / "http"
    gitprov(
        "publish",
        "--rev",
        "main",
        "--http-root",
        str(http_root),
        "--state-dir",
        str(base / "state"),
    )
    keys = {mac: gitprov("key", mac, "--rev", "main").strip() for mac in MACS}

    https, http = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    (base / "logs").mkdir()
    (base / "nginx-tmp").mkdir()
    pki = Pki(
        issued.tls / "devices-ca.crt", issued.tls / "server.crt", issued.tls / "server.key", {}
    )
    conf = base / "nginx.conf"
    # Workers run as root here only to read pytest's 0700 tmp dirs; the deploy site itself
    # is what production runs.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(user + nginx_config(base, http_root, pki, https, http))
    argv = [binary, "-p", f"{base}/", "-c", str(conf), "-e", "stderr"]
    check = subprocess.run([*argv, "-t"], capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, f"nginx -t: {check.stderr.decode()}"
    log = base / "nginx.stderr"
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_tcp(https, proc, log)
        yield Served(https, repo.path, http_root, keys)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_a_device_certificate_fetches_its_own_file_only(
    issued: Issued, served: Served, tmp_path: Path
) -> None:
    ca = issued.pki / "server-ca.crt"
    for mine, theirs in (MACS, MACS[::-1]):
        client = (issued.pki / "devices" / f"{mine}.crt", issued.pki / "devices" / f"{mine}.key")
        own = f"https://127.0.0.1:{served.https}/fv{mine}.conf"
        assert curl(own, tmp_path / "own", ca=ca, client=client) == (0, 200)
        assert (tmp_path / "own").read_bytes() == (served.http_root / f"fv{mine}.conf").read_bytes()
        other = f"https://127.0.0.1:{served.https}/fv{theirs}.conf"
        assert curl(other, tmp_path / "other", ca=ca, client=client) == (22, 403)
    url = f"https://127.0.0.1:{served.https}/fv{MACS[0]}.conf"
    assert curl(url, tmp_path / "none", ca=ca) == (22, 400)
    # The devices CA does not vouch for the server.
    client = (issued.pki / "devices" / f"{MACS[0]}.crt", issued.pki / "devices" / f"{MACS[0]}.key")
    assert curl(url, tmp_path / "x", ca=issued.pki / "devices-ca.crt", client=client)[0] == 60


def test_the_readme_checks_from_outside_work(
    issued: Issued, served: Served, tmp_path: Path
) -> None:
    """Section 10: curl and `gitprov probe` from a directory holding one device's files."""
    mac = MACS[0]
    for name in ("server-ca.crt", f"devices/{mac}.crt", f"devices/{mac}.key"):
        shutil.copy(issued.pki / name, tmp_path)
    key_command, fetch, probe = readme_commands("## 10.")
    env = {k: v for k, v in no_proxy_env().items() if not k.startswith("GITPROV_")}
    private_key = tmp_path / "private-key"
    private_key.write_text(demo_private_key() + "\n")
    private_key.chmod(0o600)
    on_server = {
        KEY_PATH: str(private_key),
        PRODUCTION_GITPROV: str(GITPROV),
        REPO_PATH: str(served.repo),
    }
    done = sh(substitute(key_command, on_server), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key == served.keys[mac]
    paths = {
        "https://provisioning.example.net": f"https://localhost:{served.https}",
        "--key KEY": f"--key {key}",
        "gitprov probe": f"{GITPROV} probe",
    }
    done = sh(substitute(fetch, paths), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"fv{mac}.conf").read_bytes() == (
        served.http_root / f"fv{mac}.conf"
    ).read_bytes()
    done = sh(substitute(probe, paths), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "applied: version (none) -> " in done.stdout, done.stdout
    assert key not in done.stdout + done.stderr


def test_certificates_outlive_no_ca(issued: Issued) -> None:
    """A leaf that outlives its CA stops working early: every leaf ends before its CA."""
    for ca_name, leaves in (
        ("devices-ca", [f"devices/{m}.crt" for m in MACS]),
        ("server-ca", ["server.crt"]),
    ):
        ca_end = cert(issued.pki / f"{ca_name}.crt").not_valid_after_utc
        for leaf in leaves:
            end = cert(issued.pki / leaf).not_valid_after_utc
            assert end < ca_end - datetime.timedelta(days=365), leaf


def test_usage_and_bad_options(tmp_path: Path) -> None:
    done = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert [ln.split()[-3:] for ln in done.stderr.splitlines()] == [
        ["(nginx", "trusts", "it)"],
        ["a", "server", "CA"],
        ["certificate", "per", "device"],
    ]
    for days in ("0", "ten", "-5"):
        bad = script(tmp_path / "pki", "--days", days, "device", MACS[0])
        assert bad.returncode == 1 and "--days wants a number of days" in bad.stderr, days
