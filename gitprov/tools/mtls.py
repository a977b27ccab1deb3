"""HTTPS with client certificates bound to a MAC: the embedded server's equivalent of
deploy/nginx-gitprov.conf's port 443.

A device's certificate names its MAC as its subject CN, 12 lower-case hex digits
(deploy/device-cert.sh makes them so). A request is served only when the MAC in the
requested file name (`serve.mac_part`) is the certificate's: a device fetches its own
stage file (`stage-fv<MAC>.conf`, key delivery https-stage, docs/key-delivery.md) and its
own per-MAC file, never another device's (403), and nothing without a certificate (403).
A name that holds no MAC is not found (404). The stage root is served by this listener
only: it holds each device's key.

The context asks for a client certificate but lets the handshake finish without one
(`CERT_OPTIONAL`): a request without one is then answered 403 and logged like every other
fetch. A certificate the devices CA did not sign still fails the handshake.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from gitprov.tools.serve import (
    HTTP_MAX_CONNECTIONS,
    FetchCallback,
    HttpServer,
    Opened,
    mac_part,
    make_tls_context,
    open_request,
)

__all__ = ["MacRoute", "certificate_mac", "https_server", "make_mtls_context"]

_MAC = re.compile(r"[0-9a-f]{12}")
_CN = "commonName"


def certificate_mac(cert: dict[str, Any] | None) -> str | None:
    """The MAC a verified client certificate names, or None: its subject must hold exactly
    one CN, and that CN must be 12 lower-case hex digits (as nginx's map requires)."""
    if not cert:
        return None
    names = [
        value for rdn in cert.get("subject", ()) for attribute, value in rdn if attribute == _CN
    ]
    if len(names) != 1 or not isinstance(names[0], str) or not _MAC.fullmatch(names[0]):
        return None
    return names[0]


class MacRoute:
    """Serves a request from the first of `roots` holding the name, only to the client
    certificate naming the MAC in that name."""

    def __init__(self, roots: Sequence[Path], url_path: str = "") -> None:
        self.roots = tuple(roots)
        self.url_path = url_path

    def __call__(self, path: str, cert: dict[str, Any] | None) -> Opened | HTTPStatus:
        mac = certificate_mac(cert)
        if mac is None:
            return HTTPStatus.FORBIDDEN
        where = mac_part(path)
        if where is None:
            return HTTPStatus.NOT_FOUND
        if path[where[0] : where[1]].lower() != mac:
            return HTTPStatus.FORBIDDEN
        for root in self.roots:
            opened = open_request(root, path, self.url_path)
            if opened is not None:
                return opened
        return HTTPStatus.NOT_FOUND


def make_mtls_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """A server context that asks for a client certificate signed by `client_ca`; a
    handshake without one completes, and the route answers 403."""
    context = make_tls_context(cert, key, client_ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def https_server(
    roots: Sequence[Path],
    context: ssl.SSLContext,
    host: str = "127.0.0.1",
    port: int = 0,
    on_fetch: FetchCallback | None = None,
    max_connections: int = HTTP_MAX_CONNECTIONS,
    url_path: str = "",
) -> HttpServer:
    """An HTTPS server (not started) over `roots` (the stage root first), serving each
    file only to the certificate of its MAC (below `url_path` too, see open_request)."""
    if not roots:
        raise ValueError("https_server needs at least one root")
    route = MacRoute(roots, url_path)
    return HttpServer(roots[0], host, port, on_fetch, context, route, max_connections)
