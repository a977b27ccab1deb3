"""Issue 13, acceptance 7: the `$MAU` and `$MA` spellings of a device's file name fetch the
same file from every server in deploy/ (nginx over HTTPS with the device's certificate and
over HTTP, tftpd-hpa with deploy/tftpd-hpa.remap) and from the embedded ones (`gitprov
serve`'s HTTP and TFTP); a third spelling (mixed case) or another MAC's name does not.

The vendor overview's own example publishes `fv0021f2011b19.conf` and writes the Profile
Rule `fv$(MAU).conf`, which a device expands to `fv0021F2011B19.conf`. The example inventory
is published by the CLI, and nginx and in.tftpd run the deploy files themselves with paths
and ports swapped (tests/e2e/production_test.py's fixtures); only loopback is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gitprov.tools.serve import HttpServer, TftpServer
from tests.e2e import production_test as production
from tests.e2e.production_test import MACS, curl, tftp_get

pytestmark = pytest.mark.e2e

# The servers, module-scoped: one publish, one nginx, one in.tftpd for this file.
site = production.site
pki = production.pki
nginx = production.nginx
tftpd = production.tftpd

UNPUBLISHED = "0021f2bad001"


def mixed(mac: str, *, upper: bool = False) -> str:
    """A spelling no macro gives: the first letter upper and the rest lower, or (`upper`)
    the first letter lower and the rest upper."""
    first = next(i for i, c in enumerate(mac) if c.isalpha())
    rest = mac.upper() if upper else mac.lower()
    return rest[:first] + rest[first].swapcase() + rest[first + 1 :]


def spellings(mac: str) -> dict[str, str]:
    return {"$MA": f"fv{mac}.conf", "$MAU": f"fv{mac.upper()}.conf"}


def refused_names(mac: str) -> list[str]:
    return [
        f"fv{mixed(mac)}.conf",
        f"fv{mixed(mac, upper=True)}.conf",
        f"FV{mac.upper()}.conf",  # only the MAC's case, never the rest of the name
        f"fv{mac.upper()}.CONF",
        f"fv{UNPUBLISHED}.conf",  # another MAC, not published
        f"fv{UNPUBLISHED.upper()}.conf",
    ]


# A fetcher: (name, output file) -> the bytes served, or None when refused.
Fetch = Callable[[str, Path], bytes | None]


@pytest.fixture(scope="module")
def embedded(site: production.Site) -> Iterator[tuple[int, int]]:
    with (
        HttpServer(site.http_root, "127.0.0.1", 0) as http,
        TftpServer(site.tftp_root, "127.0.0.1", 0) as tftp,
    ):
        yield http.port, tftp.port


def over_http(port: int) -> Fetch:
    def fetch(name: str, out: Path) -> bytes | None:
        rc, code = curl(f"http://127.0.0.1:{port}/{name}", out, ca=None)
        if (rc, code) == (0, 200):
            return out.read_bytes()
        assert (rc, code) == (22, 404), name
        return None

    return fetch


def over_tftp(port: int) -> Fetch:
    def fetch(name: str, out: Path) -> bytes | None:
        got, said = tftp_get(port, name, out)
        if not got:
            assert "File not found" in said, (name, said)
            return None
        return got

    return fetch


def check_spellings(fetch: Fetch, root: Path, tmp_path: Path) -> None:
    for mac in MACS:
        published = (root / f"fv{mac}.conf").read_bytes()
        assert published.startswith(b"Salted__")
        for macro, name in spellings(mac).items():
            assert fetch(name, tmp_path / "got") == published, (mac, macro)
        for name in refused_names(mac):
            assert fetch(name, tmp_path / "got") is None, name


def test_the_example_macs_have_letters() -> None:
    """Else upper and lower case would be one spelling and nothing would be tested."""
    for mac in MACS:
        assert mac.upper() != mac
        assert mixed(mac) not in (mac, mac.upper())
        assert mixed(mac, upper=True) not in (mac, mac.upper(), mixed(mac))


def test_nginx_http(nginx: production.Nginx, site: production.Site, tmp_path: Path) -> None:
    check_spellings(over_http(nginx.http), site.http_root, tmp_path)


def test_tftpd_hpa(tftpd: production.Tftpd, site: production.Site, tmp_path: Path) -> None:
    check_spellings(over_tftp(tftpd.port), site.tftp_root, tmp_path)
    # The remap strips a leading slash first, so the $MAU rule sees the name either way.
    mac = MACS[0]
    got, _ = tftp_get(tftpd.port, f"/fv{mac.upper()}.conf", tmp_path / "slash")
    assert got == (site.tftp_root / f"fv{mac}.conf").read_bytes()


def test_embedded_http(embedded: tuple[int, int], site: production.Site, tmp_path: Path) -> None:
    check_spellings(over_http(embedded[0]), site.http_root, tmp_path)


def test_embedded_tftp(embedded: tuple[int, int], site: production.Site, tmp_path: Path) -> None:
    check_spellings(over_tftp(embedded[1]), site.tftp_root, tmp_path)


def test_nginx_https_serves_both_spellings_to_the_device_only(
    nginx: production.Nginx, site: production.Site, tmp_path: Path
) -> None:
    ca = nginx.pki.ca
    for mine, theirs in zip(MACS, MACS[1:] + MACS[:1], strict=True):
        client = nginx.pki.clients[mine]
        published = (site.http_root / f"fv{mine}.conf").read_bytes()
        for macro, name in spellings(mine).items():
            out = tmp_path / "got"
            url = f"https://127.0.0.1:{nginx.https}/{name}"
            assert curl(url, out, ca=ca, client=client) == (0, 200), (mine, macro)
            assert out.read_bytes() == published
        # Another device's file, in either spelling: its certificate is not this one.
        for macro, name in spellings(theirs).items():
            url = f"https://127.0.0.1:{nginx.https}/{name}"
            assert curl(url, tmp_path / "x", ca=ca, client=client) == (22, 403), macro
        for name in refused_names(mine)[:4]:
            url = f"https://127.0.0.1:{nginx.https}/{name}"
            assert curl(url, tmp_path / "x", ca=ca, client=client) == (22, 404), name
    # Without a certificate nginx answers 400 before any location, either spelling.
    url = f"https://127.0.0.1:{nginx.https}/fv{MACS[0].upper()}.conf"
    assert curl(url, tmp_path / "none", ca=ca) == (22, 400)
