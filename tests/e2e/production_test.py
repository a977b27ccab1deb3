"""The production serving path with real peers: the example inventory published by the CLI
(with `publish.option66: true` and a firmware image for the IP542N), served by

- nginx with the site of `deploy/nginx-gitprov.conf` (the file itself, with its paths,
  listen addresses and certificates swapped for test ones: if the deploy file breaks,
  this test fails), mutual TLS with a test CA and device certificates whose CN is the
  device's MAC; fetched with curl;
- in.tftpd (tftpd-hpa) started the way `deploy/tftpd-hpa.default` starts it (its user and
  options, with `deploy/tftpd-hpa.remap` as the map file), on 127.0.0.1; fetched with the
  tftp-hpa client.

Every device file is decrypted with the real `openssl enc -d -aes-256-cbc -md md5 -k KEY`
(KEY from `gitprov key MAC`) and compared with `gitprov show MAC --reveal`. Only loopback
is used; every server is stopped by its fixture.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitprov.formats import flyingvoice
from tests.fixtures.certs import new_ca, new_leaf, save_pair
from tests.fixtures.deploy_files import (
    DEPLOY,
    Pki,
    free_port,
    nginx_config,
    no_proxy_env,
    replace_once,
    tftpd_defaults,
    wait_for_tcp,
)
from tests.fixtures.gitrepo import GitRepo, demo_private_key, example_files
from tests.fixtures.peers import need, openssl_decrypt

pytestmark = pytest.mark.e2e

MACS = ["0021f2011b19", "0021f2011b20", "0021f2a0c001", "0021f2a0c002"]
FIRMWARE_NAME = "IP542N_2.0.bin"
FIRMWARE = bytes(range(256)) * 40 + b"gitprov test firmware\n"  # > 1 TFTP block, not text
DOT_FILE = ".gitprov-fv0021f2011b19.conf.0badc0de.tmp"
DOT_BODY = b"half-written temp file: never served\n"


# -- the published site ----------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    base: Path  # world-traversable: nginx workers and in.tftpd run unprivileged
    http_root: Path
    tftp_root: Path
    shown: dict[str, bytes]  # MAC -> `gitprov show MAC --reveal`
    keys: dict[str, str]  # MAC -> `gitprov key MAC`
    bootstrap: bytes  # what IP542N.conf / G502N.conf must hold


def run_gitprov(repo: Path, env: dict[str, str], *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gitprov", "--repo", str(repo), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def finish(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, str]:
    """Wait for every process; each one's stdout, once all exited 0."""
    done = {name: p.communicate(timeout=60) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}: {done[name][1].decode()}"
    return {name: out.decode() for name, (out, _) in done.items()}


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    # pytest's tmp_path lives under a 0700 directory that nginx's workers cannot enter.
    base = Path(tempfile.mkdtemp(prefix="gitprov-production-"))
    try:
        base.chmod(0o755)
        files = example_files()
        fleet = files["inventory/gitprov.yaml"].decode()
        fleet = replace_once(fleet, "\npublish:\n", "\npublish:\n  option66: true\n")
        files["inventory/gitprov.yaml"] = fleet.encode()
        model = files["inventory/models/IP542N.yaml"].decode()
        assert "firmware:" not in model
        model += f'firmware:\n  version: "2.0"\n  file: {FIRMWARE_NAME}\n'
        files["inventory/models/IP542N.yaml"] = model.encode()
        repo = GitRepo(base / "repo")
        repo.commit(files, "example inventory, option 66 and firmware", worktree=True)

        firmware_dir = base / "firmware"
        firmware_dir.mkdir()
        (firmware_dir / FIRMWARE_NAME).write_bytes(FIRMWARE)
        http_root, tftp_root = base / "http", base / "tftp"
        env = {**os.environ, "GITPROV_PRIVATE_KEY": demo_private_key()}
        env.pop("GITPROV_PRIVATE_KEY_FILE", None)
        publish = run_gitprov(
            repo.path,
            env,
            "publish",
            "--rev",
            "main",
            "--http-root",
            str(http_root),
            "--tftp-root",
            str(tftp_root),
            "--state-dir",
            str(base / "state"),
            "--firmware-dir",
            str(firmware_dir),
        )
        finish({"publish": publish})
        # Many small CLI runs: start them all, then collect.
        shows = finish(
            {m: run_gitprov(repo.path, env, "show", m, "--rev", "main", "--reveal") for m in MACS}
        )
        keys = finish({m: run_gitprov(repo.path, env, "key", m, "--rev", "main") for m in MACS})
        shown = {m: text.encode() for m, text in shows.items()}
        key = {m: text.strip() for m, text in keys.items()}
        for root in (http_root, tftp_root):
            # What a crashed publish would leave behind: must never be served.
            (root / DOT_FILE).write_bytes(DOT_BODY)
            (root / DOT_FILE).chmod(0o644)
        # The bootstrap: the fleet's version_floor, and a rule to provisioning.url/file_name.
        floor = re.search(r"^version_floor: (\d+)$", fleet, re.M)
        url = re.search(r'^  url: "([^"]+)"$', fleet, re.M)
        assert floor is not None and url is not None
        bootstrap = flyingvoice.render_bootstrap(int(floor[1]), f"{url[1]}/fv$(MA).conf")
        yield Site(base, http_root, tftp_root, shown, key, bootstrap)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_published_tree_is_what_the_servers_get(site: Site) -> None:
    for root in (site.http_root, site.tftp_root):
        names = sorted(p.name for p in root.iterdir())
        assert names == sorted(
            [DOT_FILE, "G502N.conf", "IP542N.conf", FIRMWARE_NAME] + [f"fv{m}.conf" for m in MACS]
        )
        for p in root.iterdir():
            assert p.stat().st_mode & 0o777 == 0o644, p
        assert (root / "IP542N.conf").read_bytes() == site.bootstrap
        assert (root / FIRMWARE_NAME).read_bytes() == FIRMWARE
    for mac in MACS:
        assert site.shown[mac].startswith(b"DBID_DBASE_VERSION=")


# -- PKI -------------------------------------------------------------------------------


# Client certificates by name: each device's own, one whose CN only starts with a MAC, and
# one from a CA nginx does not trust.
SUFFIXED_CN = "0021f2011b19-not-a-device"
UNTRUSTED = "untrusted-0021f2011b19"


@pytest.fixture(scope="module")
def pki(site: Site) -> Pki:
    folder = site.base / "pki"
    folder.mkdir()
    # One CA for both sides here: the devices' CA also signs the server's certificate.
    ca = new_ca("gitprov-test-devices-ca")
    other_ca = new_ca("some-other-ca")
    ca_path = save_pair(folder, "ca", ca)[0]
    server = save_pair(folder, "server", new_leaf(ca, "localhost", ["localhost", "127.0.0.1"]))
    clients = {cn: save_pair(folder, cn, new_leaf(ca, cn, None)) for cn in [*MACS, SUFFIXED_CN]}
    clients[UNTRUSTED] = save_pair(folder, UNTRUSTED, new_leaf(other_ca, MACS[0], None))
    return Pki(ca_path, *server, clients)


# -- nginx -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Nginx:
    https: int
    http: int
    pki: Pki


@pytest.fixture(scope="module")
def nginx(site: Site, pki: Pki) -> Iterator[Nginx]:
    binary = need("nginx", "nginx")
    https, http = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    (site.base / "logs").mkdir()
    (site.base / "nginx-tmp").mkdir()
    conf = site.base / "nginx.conf"
    conf.write_text(nginx_config(site.base, site.http_root, pki, https, http))
    argv = [binary, "-p", f"{site.base}/", "-c", str(conf), "-e", "stderr"]
    check = subprocess.run([*argv, "-t"], capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, f"nginx -t: {check.stderr.decode()}\n{conf.read_text()}"
    log = site.base / "nginx.stderr"
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_tcp(https, proc, log)
        wait_for_tcp(http, proc, log)
        assert (site.base / "nginx.pid").read_text().strip() == str(proc.pid)
        yield Nginx(https, http, pki)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGQUIT)  # graceful stop, as `kill -QUIT`
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def curl(
    url: str, out: Path, *, ca: Path | None, client: tuple[Path, Path] | None = None
) -> tuple[int, int]:
    """GET `url` with --fail into `out`: (curl's exit code, HTTP status)."""
    argv = [need("curl", "curl"), "-sS", "--fail", "--path-as-is", "--noproxy", "*"]
    argv += ["-o", str(out)]
    argv += ["-w", "%{http_code}", "--max-time", "10"]
    if ca is not None:
        argv += ["--cacert", str(ca)]
    if client is not None:
        argv += ["--cert", str(client[0]), "--key", str(client[1])]
    proc = subprocess.run(
        [*argv, url], capture_output=True, timeout=30, check=False, env=no_proxy_env()
    )
    return proc.returncode, int(proc.stdout.decode() or 0)


def test_https_device_gets_its_own_file(nginx: Nginx, site: Site, tmp_path: Path) -> None:
    for mac in MACS:
        out = tmp_path / f"{mac}.conf"
        rc, code = curl(
            f"https://127.0.0.1:{nginx.https}/fv{mac}.conf",
            out,
            ca=nginx.pki.ca,
            client=nginx.pki.clients[mac],
        )
        assert (rc, code) == (0, 200), mac
        body = out.read_bytes()
        assert body.startswith(b"Salted__")
        assert body == (site.http_root / f"fv{mac}.conf").read_bytes()
        assert openssl_decrypt(body, site.keys[mac]) == site.shown[mac]


def test_https_device_cannot_get_another_devices_file(nginx: Nginx, tmp_path: Path) -> None:
    for mine, theirs in zip(MACS, MACS[1:] + MACS[:1], strict=True):
        out = tmp_path / f"{mine}-{theirs}"
        url = f"https://127.0.0.1:{nginx.https}/fv{theirs}.conf"
        rc, code = curl(url, out, ca=nginx.pki.ca, client=nginx.pki.clients[mine])
        assert (rc, code) == (22, 403), (mine, theirs)  # 22: --fail saw an HTTP error
        assert not out.exists() or b"Salted__" not in out.read_bytes()


def test_https_needs_a_trusted_client_certificate(nginx: Nginx, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{nginx.https}/fv{MACS[0]}.conf"
    # The TLS handshake succeeds without a certificate: nginx answers 400.
    assert curl(url, tmp_path / "none", ca=nginx.pki.ca) == (22, 400)
    untrusted = nginx.pki.clients[UNTRUSTED]
    assert curl(url, tmp_path / "untrusted", ca=nginx.pki.ca, client=untrusted) == (22, 400)
    # And the client checks the server: without the CA, curl refuses (60).
    rc, _ = curl(url, tmp_path / "noca", ca=None, client=nginx.pki.clients[MACS[0]])
    assert rc == 60


def test_https_serves_device_files_only(nginx: Nginx, tmp_path: Path) -> None:
    client = nginx.pki.clients[MACS[0]]
    for path in (f"/{DOT_FILE}", "/IP542N.conf", f"/{FIRMWARE_NAME}", "/", "/manifest.json"):
        out = tmp_path / "got"
        rc, code = curl(
            f"https://127.0.0.1:{nginx.https}{path}", out, ca=nginx.pki.ca, client=client
        )
        assert (rc, code) == (22, 404), path


def test_https_cn_must_be_exactly_the_mac(nginx: Nginx, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{nginx.https}/fv{MACS[0]}.conf"
    rc, code = curl(url, tmp_path / "got", ca=nginx.pki.ca, client=nginx.pki.clients[SUFFIXED_CN])
    assert (rc, code) == (22, 403)


def test_plain_http_serves_bootstrap_and_firmware_not_dot_files(
    nginx: Nginx, site: Site, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{nginx.http}"
    for name, want in [
        ("IP542N.conf", site.bootstrap),
        ("G502N.conf", site.bootstrap),
        (FIRMWARE_NAME, FIRMWARE),
    ]:
        out = tmp_path / name
        assert curl(f"{base}/{name}", out, ca=None) == (0, 200), name
        assert out.read_bytes() == want, name
    for path in (f"/{DOT_FILE}", "/", "/manifest.json"):
        assert curl(f"{base}{path}", tmp_path / "x", ca=None) == (22, 404), path
    # Above the root: nginx refuses the request itself.
    assert curl(f"{base}/../state/manifest.json", tmp_path / "x", ca=None) == (22, 400)


# -- tftpd-hpa -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tftpd:
    port: int
    user: str


def tftp_get(port: int, name: str, local: Path) -> tuple[bytes, str]:
    """tftp-hpa's `get`: the file's bytes (b"" when none came) and what the client said.
    tftp-hpa exits 0 on errors and may leave an empty file, so the contents decide."""
    tftp = need("tftp", "tftp-hpa")
    local.unlink(missing_ok=True)
    proc = subprocess.run(
        [tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "get", name, str(local)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    said = (proc.stdout + proc.stderr).decode(errors="replace")
    return (local.read_bytes() if local.exists() else b""), said


@pytest.fixture(scope="module")
def tftpd(site: Site) -> Iterator[Tftpd]:
    binary = need("in.tftpd", "tftpd-hpa")
    need("tftp", "tftp-hpa")
    conf = tftpd_defaults()
    options = shlex.split(conf["TFTP_OPTIONS"])
    i = options.index("--map-file")
    assert Path(options[i + 1]).name == "tftpd-hpa.remap"
    options[i + 1] = str(DEPLOY / "tftpd-hpa.remap")
    user = conf["TFTP_USERNAME"]
    try:
        pwd.getpwnam(user)
    except KeyError:
        user = "nobody"  # the Debian package creates `tftp`; a bare machine may not have it
    port = free_port(socket.SOCK_DGRAM)
    # As the Debian init script starts it, plus --foreground; on 127.0.0.1:PORT.
    argv = [binary, "--listen", "--foreground", "--user", user]
    argv += ["--address", f"127.0.0.1:{port}", *options, str(site.tftp_root)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        probe = site.base / "probe.bin"
        while not tftp_get(port, "IP542N.conf", probe)[0]:
            if proc.poll() is not None:
                assert proc.stderr is not None
                pytest.fail(f"in.tftpd exited with {proc.returncode}: {proc.stderr.read()!r}")
            assert time.monotonic() < deadline, "in.tftpd does not answer"
            time.sleep(0.1)
        yield Tftpd(port, user)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_tftp_every_device_file_decrypts_to_show_reveal(
    tftpd: Tftpd, site: Site, tmp_path: Path
) -> None:
    for mac in MACS:
        got, _ = tftp_get(tftpd.port, f"fv{mac}.conf", tmp_path / f"{mac}.conf")
        assert got == (site.tftp_root / f"fv{mac}.conf").read_bytes(), mac
        assert openssl_decrypt(got, site.keys[mac]) == site.shown[mac]


def test_tftp_serves_bootstrap_firmware_and_leading_slash(
    tftpd: Tftpd, site: Site, tmp_path: Path
) -> None:
    assert tftp_get(tftpd.port, "IP542N.conf", tmp_path / "a")[0] == site.bootstrap
    assert tftp_get(tftpd.port, FIRMWARE_NAME, tmp_path / "b")[0] == FIRMWARE
    # The remap strips a leading slash, as some clients send one.
    got, _ = tftp_get(tftpd.port, f"/fv{MACS[0]}.conf", tmp_path / "c")
    assert openssl_decrypt(got, site.keys[MACS[0]]) == site.shown[MACS[0]]


def test_tftp_refuses_dot_files_and_escapes(tftpd: Tftpd, tmp_path: Path) -> None:
    # The map file's `a` rule: "Access denied" (in.tftpd would serve the file without it).
    for name in (DOT_FILE, f"/{DOT_FILE}", f"./{DOT_FILE}"):
        got, said = tftp_get(tftpd.port, name, tmp_path / "x")
        assert got == b"", name
        assert "Access denied" in said, (name, said)
    # --secure: nothing outside the root.
    for name in ("../state/manifest.json", "/../state/manifest.json", "/etc/hostname"):
        got, said = tftp_get(tftpd.port, name, tmp_path / "x")
        assert got == b"", name
        assert "Error code" in said, (name, said)
