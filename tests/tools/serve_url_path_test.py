"""A provisioning URL with a path (the overview's `tftp://prov.call.com/cpe/CW$MA.conf`):
devices ask for `cpe/NAME`, gitprov publishes NAME at the top of each root. The embedded
servers given that path serve the file there too (and still at the top, where the
option-66 bootstrap is asked for); `gitprov serve` takes it from the fleet settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gitprov.tools.mtls import MacRoute
from gitprov.tools.serve import HttpServer, Opened, TftpServer, open_request, url_path_of
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.serve_clients import HOST, curl_get, tftp_get

MAC = "0021f2011b19"
DEVICE = b"DBID_DBASE_VERSION=1001\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    published = tmp_path / "root"
    published.mkdir()
    (published / f"CW{MAC}.conf").write_bytes(DEVICE)
    (published / "IP542N.conf").write_bytes(b"bootstrap\n")
    return published


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("tftp://prov.call.com/cpe", "cpe"),
        ("http://prov.example.com/cpe/", "cpe"),
        ("http://prov.example.com//a/b", "a/b"),
        ("http://prov.example.com", ""),
        ("http://prov.example.com/", ""),
        ("http://prov.example.com/$(PN)", ""),  # (a path made per device: none fixed)
        ("/cpe", "cpe"),
        ("http://prov.example.com/my%20cpe", "my cpe"),  # (as a request's path is decoded)
        (None, ""),
    ],
)
def test_the_path_of_a_provisioning_url(url: str | None, path: str) -> None:
    assert url_path_of(url) == path


@pytest.mark.parametrize(
    ("name", "found"),
    [
        (f"cpe/CW{MAC}.conf", True),
        (f"/cpe/CW{MAC.upper()}.conf", True),  # ($MAU: the other spelling, below it too)
        (f"CW{MAC}.conf", True),
        ("IP542N.conf", True),
        (f"cpe/x/CW{MAC}.conf", False),
        (f"other/CW{MAC}.conf", False),
        ("cpe/", False),
        ("cpe", False),
        (f"cpe/CW{MAC}.conf/", False),  # (a directory's name, as at the top)
        (f"cpe//CW{MAC}.conf", True),
        ("cpe/../IP542N.conf", False),
        ("cpe/.gitprov-x.tmp", False),
    ],
)
def test_a_name_below_the_url_path_is_the_roots(root: Path, name: str, found: bool) -> None:
    opened = open_request(root, name, "cpe")
    assert (opened is not None) is found
    if opened is not None:
        with opened.file:
            assert opened.name in (f"CW{MAC}.conf", "IP542N.conf")
    # Without the path, only the top.
    top = open_request(root, name)
    if top is not None:
        top.file.close()
    assert (top is not None) is (found and "cpe" not in name)


def test_a_stray_directory_named_as_the_url_path_never_shadows_the_published_file(
    root: Path,
) -> None:
    """As nginx's `location /cpe/ { alias ROOT/; }` maps it: an old server's `cpe/` left
    in the root is not what devices get."""
    (root / "cpe").mkdir()
    (root / "cpe" / f"CW{MAC}.conf").write_bytes(b"an old server's file\n")
    opened = open_request(root, f"/cpe/CW{MAC}.conf", "cpe")
    assert opened is not None
    with opened.file:
        assert opened.file.read() == DEVICE


def test_both_servers_serve_below_the_url_path(root: Path) -> None:
    with (
        HttpServer(root, HOST, 0, url_path="cpe") as http,
        TftpServer(root, HOST, 0, url_path="cpe") as tftp,
    ):
        assert curl_get(f"{http.url}/cpe/CW{MAC}.conf") == (200, DEVICE)
        assert curl_get(f"{http.url}/CW{MAC}.conf") == (200, DEVICE)
        assert curl_get(f"{http.url}/other/CW{MAC}.conf")[0] == 404
        got = tftp_get(tftp.port, f"/cpe/CW{MAC}.conf")
        assert (got.error, got.data) == (None, DEVICE)


def test_gitprov_serve_takes_the_path_from_the_fleet_settings(example_repo: GitRepo) -> None:
    fleet = "inventory/gitprov.yaml"
    text = example_repo.files[fleet]
    assert b'url: "http://127.0.0.1:8080"' in text and b"http_root: var/http" in text
    example_repo.commit(
        {fleet: text.replace(b'8080"', b'8080/cpe"')},
        "a provisioning URL with a path",
        worktree=True,
    )
    served = example_repo.path / "var" / "http"
    served.mkdir(parents=True)
    (example_repo.path / "var" / "tftp").mkdir()
    (served / f"fv{MAC}.conf").write_bytes(DEVICE)
    argv = [sys.executable, "-m", "gitprov", "--repo", str(example_repo.path), "serve"]
    argv += ["--http-port", "0", "--tftp-port", "0", "--no-fetch-log"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        try:
            assert p.stdout is not None
            lines: list[str] = []
            while not lines or not lines[-1].startswith("also below"):
                line = p.stdout.readline().decode()
                assert line, (lines, p.stderr.read() if p.stderr else "")
                lines.append(line)
            assert lines[-1].startswith("also below /cpe/ "), lines
            url = next(line.split()[1] for line in lines if line.startswith("HTTP: "))
            code, body = curl_get(f"{url}/cpe/fv{MAC}.conf")
            assert (code, body) == (200, DEVICE)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(10)


def test_the_https_route_serves_below_the_url_path_to_the_devices_certificate(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / f"fv{MAC}.conf").write_bytes(DEVICE)
    cert = {"subject": ((("commonName", MAC),),)}
    route = MacRoute([root], "cpe")
    opened = route(f"/cpe/fv{MAC}.conf", cert)
    assert isinstance(opened, Opened)
    with opened.file:
        assert opened.file.read() == DEVICE
    assert route(f"/cpe/fv{MAC}.conf", {"subject": ((("commonName", "0021f2011b20"),),)}) == 403
    assert MacRoute([root])(f"/cpe/fv{MAC}.conf", cert) == 404


@pytest.mark.parametrize(
    "given", ["/cpe/../x", "..", "%2e%2e/cpe", "/.hidden", "/cpe/./x", "/cpe\n", "/c\tpe"]
)
def test_a_url_path_with_a_dot_component_is_refused(
    tmp_path: Path, given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No device asks for such a path (`..` would map to the top of the root anyway):
    a typo the operator hears about, not a banner saying `also below /../`."""
    from gitprov.cli import main

    root = tmp_path / "http"
    root.mkdir()
    argv = ["serve", "--http-root", str(root), "--url-path", given, "--http-port", "0"]
    assert main([*argv, "--no-fetch-log"]) == 2
    assert "is no part of a provisioning URL's path" in capsys.readouterr().err
