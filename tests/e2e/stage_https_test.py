"""Key delivery https-stage (docs/key-delivery.md) on loopback: the stage files carry the
devices' keys, and only the device's own client certificate gets its stage file — from
nginx with deploy/nginx-gitprov.conf and from `gitprov serve --https-port`. Without a
certificate, or with another device's, both refuse; neither serves a stage file over
plain HTTP, and no key is in any file of the plain roots.

The example inventory (openssl-md5, option 66 for every model) publishes with
`publish.key_delivery: https-stage` and `provisioning.stage_url` into tmp roots and a stage
root of its own; certificates come from the cryptography library (tests/fixtures/certs.py).
"""

from __future__ import annotations

import os
import re
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
from tests.e2e.production_test import curl
from tests.fixtures.certs import Certs, make_certs
from tests.fixtures.deploy_files import (
    Pki,
    free_port,
    nginx_config,
    no_proxy_env,
    replace_once,
    wait_for_tcp,
)
from tests.fixtures.gitrepo import GitRepo, demo_private_key, example_files
from tests.fixtures.peers import need

pytestmark = pytest.mark.e2e

IP542N = ["0021f2011b19", "0021f2011b20"]  # the example's IP542N devices
G502N = ["0021f2a0c001", "0021f2a0c002"]
STAGE_URL = "https://localhost:8443"


@dataclass(frozen=True)
class Published:
    base: Path  # world-traversable (nginx's workers)
    repo: GitRepo
    http_root: Path
    tftp_root: Path
    stage_root: Path
    certs: Certs
    keys: dict[str, str]  # MAC -> `gitprov key MAC`
    shown: dict[str, dict[str, str]]  # MAC -> its file, as `gitprov show MAC --reveal`


def gitprov(repo: GitRepo, *argv: str) -> str:
    env = {**os.environ, "GITPROV_PRIVATE_KEY": demo_private_key()}
    env.pop("GITPROV_PRIVATE_KEY_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gitprov", "--repo", str(repo.path), *argv],
        capture_output=True,
        env=env,
        timeout=120,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def published() -> Iterator[Published]:
    base = Path(tempfile.mkdtemp(prefix="gitprov-stage-"))
    try:
        base.chmod(0o755)
        files = example_files()
        fleet = files["inventory/gitprov.yaml"].decode()
        fleet = replace_once(
            fleet,
            '  url: "http://127.0.0.1:8080"\n',
            f'  url: "http://127.0.0.1:8080"\n  stage_url: "{STAGE_URL}"\n',
        )
        fleet = replace_once(
            fleet, "\npublish:\n", "\npublish:\n  option66: [IP542N]\n  key_delivery: https-stage\n"
        )
        files["inventory/gitprov.yaml"] = fleet.encode()
        repo = GitRepo(base / "repo")
        repo.commit(files, "example inventory, keys delivered over HTTPS", worktree=True)
        roots = {n: base / n for n in ("http", "tftp", "stage")}
        gitprov(
            repo,
            "publish",
            "--rev",
            "main",
            "--http-root",
            str(roots["http"]),
            "--tftp-root",
            str(roots["tftp"]),
            "--stage-root",
            str(roots["stage"]),
            "--state-dir",
            str(base / "state"),
        )
        macs = IP542N + G502N
        keys = {m: gitprov(repo, "key", m, "--rev", "main").strip() for m in macs}
        shown = {
            m: flyingvoice.parse(gitprov(repo, "show", m, "--rev", "main", "--reveal").encode())
            for m in macs
        }
        certs = make_certs(base / "pki", ["localhost", "127.0.0.1"], [*IP542N, "0021f2ffffff"])
        for path in (base / "pki").iterdir():
            path.chmod(0o644)  # nginx's master reads them as root, the test as itself
        yield Published(
            base, repo, roots["http"], roots["tftp"], roots["stage"], certs, keys, shown
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_stage_files_carry_the_key_and_the_devices_own_rule(published: Published) -> None:
    assert sorted(p.name for p in published.stage_root.iterdir()) == [
        f"stage-fv{m}.conf" for m in IP542N
    ]
    for mac in IP542N:
        stage = flyingvoice.parse((published.stage_root / f"stage-fv{mac}.conf").read_bytes())
        own = published.shown[mac]
        rule = f"[--key {published.keys[mac]}]http://127.0.0.1:8080/fv{mac}.conf"
        assert own["DBID_PROFILE_RULE"] == rule
        assert stage == {
            "DBID_DBASE_VERSION": str(int(own["DBID_DBASE_VERSION"]) - 1),
            "DBID_PRV_OPTION66_ENABLED": "0",
            "DBID_PROFILE_RULE": rule,
        }
    for root in (published.http_root, published.tftp_root):
        boot = flyingvoice.parse((root / "IP542N.conf").read_bytes())
        assert boot["DBID_PROFILE_RULE"] == f"{STAGE_URL}/stage-fv$(MA).conf"
        for mac in IP542N:
            stage = flyingvoice.parse((published.stage_root / f"stage-fv{mac}.conf").read_bytes())
            assert int(boot["DBID_DBASE_VERSION"]) < int(stage["DBID_DBASE_VERSION"])


def test_no_key_in_any_file_of_the_plain_roots(published: Published) -> None:
    for root in (published.http_root, published.tftp_root):
        names = sorted(p.name for p in root.iterdir())
        assert names == ["IP542N.conf"] + [f"fv{m}.conf" for m in IP542N + G502N]
        for path in root.iterdir():
            data = path.read_bytes()
            for key in published.keys.values():
                assert key.encode() not in data, path
    for path in (published.base / "state").rglob("*"):
        if path.is_file():
            for key in published.keys.values():
                assert key.encode() not in path.read_bytes(), path


# -- nginx ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    nginx_https: int
    nginx_http: int
    serve_https: int
    serve_http: int


def _start_nginx(published: Published, https: int, http: int) -> subprocess.Popen[bytes]:
    binary = need("nginx", "nginx")
    certs = published.certs
    pki = Pki(certs.devices_ca, certs.server[0], certs.server[1], certs.clients)
    for folder in ("logs", "nginx-tmp"):
        (published.base / folder).mkdir(exist_ok=True)
    conf = published.base / "nginx.conf"
    conf.write_text(nginx_config(published.base, published.http_root, pki, https, http))
    argv = [binary, "-p", f"{published.base}/", "-c", str(conf), "-e", "stderr"]
    check = subprocess.run([*argv, "-t"], capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, f"nginx -t: {check.stderr.decode()}"
    log = published.base / "nginx.stderr"
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    wait_for_tcp(https, proc, log)
    wait_for_tcp(http, proc, log)
    return proc


def _start_serve(published: Published) -> tuple[subprocess.Popen[str], int, int]:
    certs = published.certs
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitprov", "serve", "--host", "127.0.0.1",
         "--http-root", str(published.http_root), "--http-port", "0",
         "--https-port", "0", "--stage-root", str(published.stage_root),
         "--tls-cert", str(certs.server[0]), "--tls-key", str(certs.server[1]),
         "--client-ca", str(certs.devices_ca), "--no-fetch-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=no_proxy_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while len(ports) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"(HTTPS?): https?://127\.0\.0\.1:(\d+)", line)
        if m:
            ports[m[1]] = int(m[2])
    if len(ports) < 2:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"gitprov serve did not start: {err}")
    return proc, ports["HTTPS"], ports["HTTP"]


@pytest.fixture(scope="module")
def servers(published: Published) -> Iterator[Servers]:
    https, http = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    nginx = _start_nginx(published, https, http)
    serve: subprocess.Popen[str] | None = None
    try:
        serve, serve_https, serve_http = _start_serve(published)
        yield Servers(https, http, serve_https, serve_http)
    finally:
        for proc, sig in ((nginx, signal.SIGQUIT), (serve, signal.SIGTERM)):
            if proc is None:
                continue
            if proc.poll() is None:
                os.kill(proc.pid, sig)
            try:
                proc.communicate(timeout=10)  # and close its pipes
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=10)


def get(
    port: int, path: str, out: Path, published: Published, client: str | None
) -> tuple[int, int]:
    certs = published.certs
    return curl(
        f"https://localhost:{port}{path}",
        out,
        ca=certs.server_ca,
        client=None if client is None else certs.clients[client],
    )


@pytest.mark.parametrize("server", ["nginx", "gitprov serve"])
def test_only_the_devices_own_certificate_gets_its_stage_file(
    servers: Servers, published: Published, tmp_path: Path, server: str
) -> None:
    port = servers.nginx_https if server == "nginx" else servers.serve_https
    no_cert = 400 if server == "nginx" else 403  # nginx: "No required SSL certificate"
    for mac, other in zip(IP542N, IP542N[::-1], strict=True):
        path = f"/stage-fv{mac}.conf"
        out = tmp_path / f"{mac}-own"
        assert get(port, path, out, published, mac) == (0, 200), mac
        assert out.read_bytes() == (published.stage_root / f"stage-fv{mac}.conf").read_bytes()
        assert published.keys[mac].encode() in out.read_bytes()
        # 22: curl --fail saw an HTTP error; no body of the stage file either way.
        for client, status in ((other, 403), ("0021f2ffffff", 403), (None, no_cert)):
            got = tmp_path / f"{mac}-{client}"
            assert get(port, path, got, published, client) == (22, status), (mac, client)
            assert not got.exists() or published.keys[mac].encode() not in got.read_bytes()
    # The device's own per-MAC file too, to its certificate only; nothing without a MAC.
    mine = IP542N[0]
    assert get(port, f"/fv{mine}.conf", tmp_path / "own", published, mine) == (0, 200)
    assert get(port, f"/fv{IP542N[1]}.conf", tmp_path / "theirs", published, mine) == (22, 403)
    assert get(port, "/IP542N.conf", tmp_path / "boot", published, mine) == (22, 404)


@pytest.mark.parametrize("server", ["nginx", "gitprov serve"])
def test_plain_http_never_serves_a_stage_file(
    servers: Servers, published: Published, tmp_path: Path, server: str
) -> None:
    port = servers.nginx_http if server == "nginx" else servers.serve_http
    for mac in IP542N:
        rc, status = curl(f"http://127.0.0.1:{port}/stage-fv{mac}.conf", tmp_path / mac, ca=None)
        assert (rc, status) == (22, 404), mac
    rc, status = curl(f"http://127.0.0.1:{port}/IP542N.conf", tmp_path / "boot", ca=None)
    assert (rc, status) == (0, 200)
