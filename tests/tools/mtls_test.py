"""gitprov.tools.mtls: which certificate names which MAC, and what a route gives it."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from gitprov.tools.mtls import MacRoute, certificate_mac
from gitprov.tools.serve import Opened

MAC = "0021f2011b19"


def cert(*cns: str, extra: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """What ssl.SSLSocket.getpeercert() gives: the subject as RDNs of (name, value)."""
    rdns = [(("commonName", cn),) for cn in cns] + [((k, v),) for k, v in extra]
    return {"subject": tuple(rdns)}


@pytest.mark.parametrize(
    ("given", "mac"),
    [
        (cert(MAC), MAC),
        (cert(MAC, extra=(("organizationName", "0021f2011b20"),)), MAC),
        (cert(MAC.upper()), None),  # nginx's map takes lower case only
        (cert(MAC + "-x"), None),
        (cert("x" + MAC), None),
        (cert("00:21:f2:01:1b:19"), None),
        (cert(MAC, "0021f2011b20"), None),  # two CNs: which one?
        (cert(), None),
        ({}, None),  # no certificate
        (None, None),  # plain HTTP
    ],
)
def test_certificate_mac(given: dict[str, Any] | None, mac: str | None) -> None:
    assert certificate_mac(given) == mac


def test_a_route_serves_only_the_macs_own_files(tmp_path: Path) -> None:
    stage, http = tmp_path / "stage", tmp_path / "http"
    stage.mkdir()
    http.mkdir()
    (stage / f"stage-fv{MAC}.conf").write_bytes(b"stage\n")
    (http / f"fv{MAC}.conf").write_bytes(b"device\n")
    (http / "stage-fv0021f2011b20.conf").write_bytes(b"not mine\n")
    (http / "IP542N.conf").write_bytes(b"boot\n")
    route = MacRoute([stage, http])

    def body(found: Opened | HTTPStatus) -> bytes | HTTPStatus:
        if isinstance(found, HTTPStatus):
            return found
        with found.file:
            return found.file.read()

    mine = cert(MAC)
    assert body(route(f"/stage-fv{MAC}.conf", mine)) == b"stage\n"
    assert body(route(f"/fv{MAC}.conf", mine)) == b"device\n"
    assert body(route(f"/fv{MAC.upper()}.conf", mine)) == b"device\n"  # $MAU
    assert body(route("/stage-fv0021f2011b20.conf", mine)) == HTTPStatus.FORBIDDEN
    assert body(route(f"/stage-fv{MAC}.conf", cert("0021f2011b20"))) == HTTPStatus.FORBIDDEN
    assert body(route(f"/stage-fv{MAC}.conf", {})) == HTTPStatus.FORBIDDEN
    assert body(route(f"/stage-fv{MAC}.conf", None)) == HTTPStatus.FORBIDDEN
    assert body(route("/IP542N.conf", mine)) == HTTPStatus.NOT_FOUND  # names no MAC
    assert body(route(f"/missing-{MAC}.conf", mine)) == HTTPStatus.NOT_FOUND
    assert body(route(f"/../stage/stage-fv{MAC}.conf", mine)) == HTTPStatus.NOT_FOUND
