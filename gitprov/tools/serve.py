"""Read-only embedded HTTP(S) and TFTP servers over the published roots.

The zero-setup default for small sites and demos; production uses nginx and tftpd-hpa
(see `deploy/`). Both servers share one path policy (`open_published`): no dot-components
(the atomic publisher's temp files are dot-files), no traversal, no symlink leaving the
root, regular files only. Each file is opened once per request and streamed from that
descriptor, so a publish that `os.replace`s it mid-transfer never yields a mixed file.

A device whose Profile Rule spells its MAC with `$MAU` asks for `fv0021F2011B19.conf`
while the published file is `fv0021f2011b19.conf` (the vendor overview's own example
does this). Both servers therefore serve the other letter case of the MAC part of a name
(`mac_part`), all upper to all lower or back, when the name as asked names no file, and
only that spelling: a mixed-case MAC or any other change of case is not found.

Every request ends in one `FetchEvent`, logged at INFO on logger `gitprov.serve` (the fetch
log, with the event in `extra={"fetch": event}`) and passed to the optional `on_fetch`
callback. TFTP outcomes use the HTTP status vocabulary so one log answers "what did device
X get" for both protocols. `gitprov.tools.fetchlog` writes the events as JSON lines.

The TFTP server is written here rather than taken from tftpy: tftpy accepts uploads unless
told otherwise and stalls when a client reuses its source port for consecutive requests
(tftp-hpa does, with `get f1 f2 f3`): each later file waits out a client retransmit,
about 5 s (measured with tftpy 0.8.7).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import io
import logging
import math
import os
import re
import resource
import select
import socket
import socketserver
import ssl
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol, Self
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from gitprov.errors import UsageError
from gitprov.rule_url import authority

log = logging.getLogger("gitprov.serve")

__all__ = [
    "FetchCallback",
    "FetchEvent",
    "HttpServer",
    "Opened",
    "Route",
    "ServeHandle",
    "TftpLimits",
    "TftpServer",
    "mac_part",
    "make_tls_context",
    "open_published",
    "open_request",
    "other_mac_spelling",
    "serve_roots",
    "url_path_of",
]


@dataclass(frozen=True)
class FetchEvent:
    """One request and how it ended.

    `status` is an HTTP status code for both protocols. For TFTP: 200 transfer complete,
    400 malformed request or unsupported mode, 403 write request refused, 404 not found,
    408 client stopped acknowledging (or never acknowledged the first packet), 499 client
    aborted (error packet or port unreachable), 500 read error, 503 server busy or
    stopping, or a pending session dropped for a newer request (see `TftpLimits`). For
    HTTP, 400 also covers a request with a body. `size` counts payload bytes sent once
    (retransmits excluded; 0 for HEAD).

    `file` is the name below the root of the file opened for the request (`/`-separated,
    the other MAC spelling when that is what was found), None when none was. `sha256` is
    the hex SHA-256 of the bytes sent when they were the whole file, else None: it tells
    which published version a device got without trusting that the file was not
    replaced since.
    """

    protocol: str  # "http", "https" or "tftp"
    client: str  # client IP address
    path: str  # as requested (URL-decoded, query dropped)
    status: int
    size: int
    file: str | None = None
    sha256: str | None = None


FetchCallback = Callable[[FetchEvent], None]
# What an HTTP(S) request gets, when the server is given one (gitprov.tools.mtls): the file
# to send, or the status to refuse with; from the request path and the client's verified
# certificate (`ssl.SSLSocket.getpeercert()`: None over HTTP, {} without a certificate).
Route = Callable[[str, dict[str, Any] | None], "Opened | HTTPStatus"]


# A request path is the client's to choose: a TFTP name can be 65,000 bytes, and each
# request a log line of that size. Logs keep this many characters and an ellipsis (no
# device's file name comes near: a file name is at most 255 bytes).
PATH_SHOWN = 1024


def _printable(text: str) -> str:
    # Request paths are attacker-controlled: escape control characters so a crafted
    # name cannot forge lines in the fetch log.
    if len(text) > PATH_SHOWN:
        text = text[:PATH_SHOWN] + "…"
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _emit(on_fetch: FetchCallback | None, event: FetchEvent) -> None:
    log.info(
        "fetch %s %s %s %d %d",
        event.protocol,
        event.client,
        _printable(event.path),
        event.status,
        event.size,
        extra={"fetch": event},
    )
    if on_fetch is None:
        return
    try:
        on_fetch(event)
    except Exception:
        # A faulty observer must not take the server down with it.
        log.exception("fetch callback failed")


class _Refusals:
    """Counts of refused requests and dropped sessions, by reason (thread-safe)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _check_root(root: Path, what: str) -> Path:
    if not root.is_dir():
        raise UsageError(
            f"{root}: the {what} root is not a directory",
            hint="publish first, or point the server at the published root",
        )
    return root


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_error(proto: str, host: str, port: int, exc: OSError) -> UsageError:
    hint = "choose another port, or stop the process using it"
    if exc.errno == errno.EACCES:
        hint = "ports below 1024 need root (or CAP_NET_BIND_SERVICE); choose a port >= 1024"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "the address is not configured on this host"
    elif isinstance(exc, socket.gaierror):
        hint = "give --host an address of this host, or a name it resolves"
    return UsageError(
        f"cannot listen for {proto} on {authority(host, port)}: {exc.strerror}", hint=hint
    )


# --- path policy -----------------------------------------------------------------------

# A run of hex digits holding a MAC: the MAC is its last 12. Up to 4 more in front, because
# a file name's prefix may end in hex letters ("spa", "cfga", "f"): `spa0021f2011b19.cfg`.
# A longer run (a hash in a firmware name) is no MAC.
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{12,16}(?![0-9A-Fa-f])")
_HEX_RUN_START = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]")


def mac_part(name: str) -> tuple[int, int] | None:
    """Where the MAC is in a requested name: `(start, end)` of its 12 hex digits, or None.

    The MAC is the last 12 digits of the last run of 12 to 16 hex digits (either case) in
    `name`. `fv0021F2011B19.conf` -> (2, 14); `spa0021f2011b19.cfg` -> (3, 15).
    """
    found: tuple[int, int] | None = None
    for start in _HEX_RUN_START.finditer(name):
        run = _HEX_RUN.match(name, start.start())
        if run is not None:
            found = (run.end() - 12, run.end())
    return found


def other_mac_spelling(name: str) -> str | None:
    """`name` with its MAC part (`mac_part`) in the other letter case, or None.

    Only an all-upper MAC becomes all-lower and back; a MAC of digits only has one
    spelling, and a mixed-case one is not a spelling any macro gives ($MA is lower case,
    $MAU upper case), so neither has another.
    """
    where = mac_part(name)
    if where is None:
        return None
    start, end = where
    mac = name[start:end]
    if mac.isdigit():
        return None
    if mac == mac.upper():
        other = mac.lower()
    elif mac == mac.lower():
        other = mac.upper()
    else:
        return None
    return name[:start] + other + name[end:]


@dataclass(frozen=True)
class Opened:
    """A file opened for a request: stream `file` (`size` bytes); `name` is what it is
    called below the root, `/`-separated."""

    file: BinaryIO
    size: int
    name: str


def open_request(root: Path, requested: str, url_path: str = "") -> Opened | None:
    """Open what a client asks for: `requested` itself, or when that names no file, the
    other spelling of its MAC (`other_mac_spelling`); both under `open_published`'s
    policy. With `url_path` (the path of the fleet's provisioning URL, `cpe` for
    `http://prov.example.com/cpe`), a name below it is the name at the top of the root,
    where gitprov publishes it (as nginx's `alias` maps it: a stray `cpe/` directory in
    the root is never served in its place). None when nothing is servable.
    """
    mapped = below(url_path, requested)
    asked = requested if mapped is None else mapped
    for name in (asked, other_mac_spelling(asked)):
        if name is None:
            continue
        opened = open_published(root, name)
        if opened is not None:
            file, size = opened
            return Opened(file, size, "/".join(part for part in name.split("/") if part))
    return None


def url_path_of(url: str | None) -> str:
    """The path of a provisioning URL as `open_request` takes it: decoded (a request's
    path is), its components joined by `/`, no leading or trailing one ("" for none, or
    one a macro makes per device)."""
    if not url or "$" in url:
        return ""
    path = unquote(urlsplit(url).path, errors="surrogateescape")
    return "/".join(part for part in path.split("/") if part)


def below(url_path: str, requested: str) -> str | None:
    """`requested` less the leading `url_path`, when it is below it; else None. The
    rest is kept as asked (a name ending in `/` stays a directory's, never served)."""
    if not url_path:
        return None
    rest = requested.lstrip("/")
    for part in url_path.split("/"):
        head, sep, rest = rest.partition("/")
        if head != part or not sep:
            return None
        rest = rest.lstrip("/")
    return rest or None


def open_published(root: Path, requested: str) -> tuple[BinaryIO, int] | None:
    """Open `requested` (a URL path or TFTP file name) below `root` for reading.

    Returns the open file and its size, or None when the name is not servable: empty,
    containing NUL, any component starting with `.`, ending in `/` (a directory's name,
    as nginx reads it), resolving outside the root, or not a regular file. Leading and
    repeated `/` are ignored (TFTP clients may send `/f.conf`).
    """
    parts = [part for part in requested.split("/") if part]
    if not parts or requested.endswith("/"):
        return None
    if any(part.startswith(".") or "\0" in part for part in parts):
        return None
    # Resolved per request, not once: an operator may flip the root itself via a symlink.
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    relative = os.path.relpath(real, real_root)
    # Also checked after resolution: a symlink may point at a dot-file or out of the root.
    if any(part.startswith(".") for part in relative.split(os.sep)):
        return None
    try:
        # O_NONBLOCK: a FIFO planted in the root must not hang the worker in open().
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
            log.warning("cannot open %s: %s", _printable(real), exc.strerror)
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb"), info.st_size


# --- HTTP ------------------------------------------------------------------------------


def make_tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context; with `client_ca`, clients must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"cannot load TLS certificate {cert} with key {key}: {exc}",
            hint="both must be PEM files and the key must match the certificate",
        ) from exc
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"cannot load client CA {client_ca}: {exc}",
                hint="pass the PEM certificate of the CA that signed the devices' certificates",
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


_LINGER_SECONDS = 1.0


# HTTP connections served at once (a thread each, held up to the handler's idle timeout):
# a boot storm of thousands of phones is nginx's, in production.
HTTP_MAX_CONNECTIONS = 1024
# Of a request line refused before it was parsed (too long: 414), this much of its
# target is logged: past what the fetch log keeps of a path (1024 characters, and `…`).
PATH_LOGGED = 2048
# Open files kept for all but HTTP connections: TFTP's sessions (a socket and a file each,
# TftpLimits' 64 + 32 by default), the fetch log, the state dir's manifest, the process's
# own (its modules, the listening sockets).
FD_RESERVE = 256
FD_WANTED = 65536


def fd_budget() -> int:
    """The open files this process may hold: its soft limit raised to the hard one (at
    most FD_WANTED), as a server does. The usual soft limit, 1024, is HTTP_MAX_CONNECTIONS:
    idle clients at the cap took every descriptor, and TFTP stalled for lack of one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_WANTED if hard == resource.RLIM_INFINITY else min(hard, FD_WANTED)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return FD_WANTED if soft == resource.RLIM_INFINITY else soft
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    return soft


def connections_within(fds: int, wanted: int, listeners: int = 1) -> int:
    """How many of `wanted` HTTP connections each of `listeners` may hold within `fds`
    open files: two each (its socket, the file it sends), FD_RESERVE kept for the rest."""
    return max(1, min(wanted, (fds - FD_RESERVE) // (2 * max(1, listeners))))


class CappedServer(ThreadingHTTPServer):
    """A thread per connection, each held up to its handler's timeout, and at most
    `slots` of them: without a cap, clients that open connections and say nothing take
    every thread and file descriptor. Past it a connection is closed at once (a device,
    a scraper, retries), never queued behind the idle ones; `refused` is told."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, slots: int) -> None:
        self.gp_slots = threading.BoundedSemaphore(slots)
        super().__init__(address, handler)

    def refused(self, client_address: Any) -> None:
        """A connection closed at once, every slot being taken."""

    def handle_error(self, request: object, client_address: object) -> None:
        # The default prints a traceback to stderr; core modules only log. Dropped
        # connections are routine; anything else is a bug worth a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("http connection from %s failed", client_address, exc_info=True)
        else:
            log.exception("http request from %s failed", client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.gp_slots.acquire(blocking=False):
            self.refused(client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.gp_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.gp_slots.release()


class _HttpListener(CappedServer):
    # socketserver's default backlog is 5: when a site's phones boot together, the
    # connections beyond it are dropped and retried by the client's kernel after 1-3 s,
    # which a boot storm showed as multi-second fetches. The kernel caps it at somaxconn.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        address: tuple[str, int],
        root: Path,
        on_fetch: FetchCallback | None,
        protocol: str,
        refusals: _Refusals,
        route: Route | None = None,
        max_connections: int = 0,
        url_path: str = "",
    ) -> None:
        self.address_family = _family(address[0])
        self.gp_url_path = url_path
        self.max_connections = max_connections or HTTP_MAX_CONNECTIONS
        self.gp_route = route
        self.gp_root = root
        self.gp_on_fetch = on_fetch
        self.gp_protocol = protocol
        self.gp_refusals = refusals
        self.gp_quiet_until = 0.0  # (no warning of running out of descriptors before)
        super().__init__(address, _HttpHandler, self.max_connections)

    def refused(self, client_address: Any) -> None:
        self.gp_refusals.add("busy")
        log.warning(
            "%s: %d connections open; closed one from %s",
            self.gp_protocol,
            self.max_connections,
            client_address[0] if isinstance(client_address, tuple) else client_address,
        )

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # The connection stays queued and the listening socket readable: without
                # a pause the accept loop spins a core until a descriptor is free.
                self.gp_refusals.add("files")
                now = time.monotonic()
                if now >= self.gp_quiet_until:
                    self.gp_quiet_until = now + 10.0
                    log.warning(
                        "%s: no file descriptor left to accept a connection (%s); raise "
                        "the limit on open files or lower --http-max-connections",
                        self.gp_protocol,
                        exc.strerror,
                    )
                time.sleep(0.05)
            raise

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not wanted here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


# The bytes a request's line and headers may take: http.server allows a line of 64 KiB
# and 100 header lines of 64 KiB each, 6.5 MB held per connection while they arrive
# (at HTTP_MAX_CONNECTIONS, 6.5 GB). A device's request is well under 1 KiB.
REQUEST_HEAD_BYTES = 128 * 1024


class HeadTooLarge(http.client.HTTPException):
    """A request's line and headers past REQUEST_HEAD_BYTES (answered 431 by the parser,
    as its own limits are)."""


class RequestInput(io.RawIOBase):
    """A connection's input for the request parser: while a request's line and headers
    are read, each read waits no longer than what is left of their time. The socket's
    own timeout is per read: a client sending a byte every few seconds was never idle
    long enough to be dropped, and held its thread (and a connection slot) for ever.
    With `budget` set, reads past that many bytes raise HeadTooLarge."""

    def __init__(self, sock: socket.socket, idle: float) -> None:
        self._sock = sock
        self._idle = idle
        self.deadline: float | None = None
        self.budget: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request's line and headers took too long")
            self._sock.settimeout(min(left, self._idle))
        if self.budget is not None and self.budget <= 0:
            raise HeadTooLarge(f"request line and headers over {REQUEST_HEAD_BYTES} bytes")
        read = self._sock.recv_into(buffer)
        if self.budget is not None:
            self.budget -= read
        return read


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The base class assumes HTTP/0.9 until the version is parsed, and answers 0.9 with
    # a bare body: a garbled request line would get an error without a status line.
    default_request_version = "HTTP/1.0"
    server_version = "gitprov"
    sys_version = ""
    # Idle keep-alive connections and stuck TLS handshakes give their thread back.
    timeout = 30
    # A request's line and headers arrive within this, however slowly they drip (as
    # nginx's client_header_timeout); a keep-alive connection's wait for its next
    # request counts in it.
    request_seconds = 30.0
    server: _HttpListener

    def version_string(self) -> str:
        return self.server_version  # (the base class adds " " and sys_version: "gitprov ")

    def setup(self) -> None:
        super().setup()
        self.gp_input = RequestInput(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.gp_input)
        self.gp_ready = True
        self.gp_linger = False
        if isinstance(self.connection, ssl.SSLSocket):
            # The listener wraps with do_handshake_on_connect=False so a slow or hostile
            # client blocks its own thread here, never the accept loop.
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.info("tls handshake with %s failed: %s", self.client_address[0], exc)
                self.gp_ready = False

    def handle(self) -> None:
        if self.gp_ready:
            super().handle()

    def handle_one_request(self) -> None:
        self.gp_input.deadline = time.monotonic() + self.request_seconds
        # (plus a buffer's read-ahead; never reached while the request line, at most
        # 64 KiB, is read: only the header lines' reads raise, where the parser answers)
        self.gp_input.budget = REQUEST_HEAD_BYTES + io.DEFAULT_BUFFER_SIZE
        # (a keep-alive connection's last path is not this request's: `_request_path`
        # reads the request line of one refused before it is parsed)
        with contextlib.suppress(AttributeError):
            del self.path
        super().handle_one_request()

    def finish(self) -> None:
        super().finish()
        if self.gp_linger:
            self._linger()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.gp_input.deadline = None  # (the line and headers are in: the socket's timeout)
        self.gp_input.budget = None
        self.connection.settimeout(self.timeout)
        if not ok:
            return False
        if self.command not in ("GET", "HEAD"):
            self._refuse(
                HTTPStatus.METHOD_NOT_ALLOWED, "method", f"method {_printable(self.command)}"
            )
            return False
        problem = self._framing_problem()
        if problem is not None:
            reason, detail = problem
            self._refuse(HTTPStatus.BAD_REQUEST, reason, detail)
            return False
        return True

    def _framing_problem(self) -> tuple[str, str] | None:
        """Why the request's framing is not beyond doubt, if it is not.

        Nothing here reads a body, so a request announcing one is refused: the body's
        bytes would otherwise be parsed as the next request on the connection, which a
        proxy in front (that did read the body) never sent (request smuggling). Header
        lines that parsers disagree on are refused for the same reason.
        """
        headers = self.headers
        if headers.defects or headers.get_payload() or headers.get_unixfrom() is not None:
            # e.g. `Content-Length : 5`, a line without a colon, a leading continuation
            return "header", "malformed header line"
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                return "header", f"a line break inside header {_printable(name)} (obs-fold)"
        if headers.get_all("Transfer-Encoding"):
            return "body", "a body (Transfer-Encoding)"
        lengths = headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            return "header", "more than one Content-Length"
        if lengths:
            length = lengths[0].strip(" \t")
            if not length.isascii() or not length.isdigit():
                return "header", f"invalid Content-Length {_printable(length)}"
            # Read as text: int() refuses past 4300 digits, and a header line holds 64 KiB.
            digits = length.lstrip("0")
            if digits:
                return "body", f"a body (Content-Length {_printable(digits)})"
        return None

    def _refuse(self, status: HTTPStatus, reason: str, detail: str) -> None:
        self.server.gp_refusals.add(reason)
        log.info(
            "%s refused %s %s: %s",
            self.server.gp_protocol,
            self.client_address[0],
            _printable(self._request_path()),
            detail,
        )
        self._respond_error(status)
        self._emit(status, 0)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The base class's refusals: a bad request line, headers too long or too many,
        # an unsupported version. It closes the connection after them.
        self.server.gp_refusals.add("request")
        log.info(
            "%s refused %s: %d %s",
            self.server.gp_protocol,
            self.client_address[0],
            code,
            _printable(message or ""),
        )
        self.gp_linger = True
        super().send_error(code, message, explain)
        # (answered, so logged: a device's garbled request is in the fetch log too)
        self._emit(code, 0)

    def handle_expect_100(self) -> bool:
        # Never invite a request body: nothing here accepts one.
        return True

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Replaced by the fetch log, which knows the byte count.
        pass

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s: %s", self.client_address[0], format % args)

    def _request_path(self) -> str:
        target = getattr(self, "path", None)
        if target is None:
            # Refused before the request line was parsed (too long: 414): its target as
            # far as it was read, or none.
            words = getattr(self, "raw_requestline", b"").split(None, 2)
            # (the line's 64 KiB need not all go to the logs: they cut a path at 1024)
            target = words[1][:PATH_LOGGED].decode("latin-1") if len(words) > 1 else ""
        if not target.startswith("/"):
            # absolute-form (http://host/path), as proxies send it
            try:
                target = urlsplit(target).path
            except ValueError:
                target = ""  # no URL (an unclosed IPv6 bracket): names no file, a 404
        target = target.split("?", 1)[0].split("#", 1)[0]
        # http.server reads the request line as ISO-8859-1, a character per byte: the
        # bytes back, then percent-decoded and read as UTF-8 as a percent-encoded path
        # is (a raw byte that is not UTF-8 is then `\xNN` in the fetch log, not U+00NN).
        return unquote_to_bytes(target.encode("latin-1", "replace")).decode(
            "utf-8", "surrogateescape"
        )

    def _emit(
        self, status: int, size: int, file: str | None = None, sha256: str | None = None
    ) -> None:
        event = FetchEvent(
            self.server.gp_protocol,
            self.client_address[0],
            self._request_path(),
            int(status),
            size,
            file,
            sha256,
        )
        _emit(self.server.gp_on_fetch, event)

    def _respond_error(self, status: HTTPStatus) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD")
        # One response per request, and none after an error: a body that was not read,
        # or a request we could not frame, must not be taken for the next request.
        self.send_header("Connection", "close")
        self.gp_linger = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _linger(self) -> None:
        # Closing a socket with unread input makes the kernel send RST, and a client may
        # then lose the error response it has not read yet. So: FIN first, then read and
        # discard what the client still sends, for a short while (as nginx's
        # lingering_close does).
        deadline = time.monotonic() + _LINGER_SECONDS
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                if not self.connection.recv(65536):
                    return
        except OSError:
            pass

    def _serve(self) -> None:
        route = self.server.gp_route
        if route is None:
            opened = open_request(
                self.server.gp_root, self._request_path(), self.server.gp_url_path
            )
        else:
            peer = self.connection
            cert = peer.getpeercert() if isinstance(peer, ssl.SSLSocket) else None
            found = route(self._request_path(), cert)
            if isinstance(found, HTTPStatus) and found != HTTPStatus.NOT_FOUND:
                self._refuse(found, "route", f"{found.value} {found.phrase}")
                return
            opened = found if isinstance(found, Opened) else None
        if opened is None:
            self._respond_error(HTTPStatus.NOT_FOUND)
            self._emit(HTTPStatus.NOT_FOUND, 0)
            return
        size, digest = opened.size, hashlib.sha256()
        sent = 0
        with opened.file:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command == "GET":
                sent = self._stream(opened.file, size, digest)
        whole = self.command == "GET" and sent == size
        self._emit(HTTPStatus.OK, sent, opened.name, digest.hexdigest() if whole else None)

    def _stream(self, file: BinaryIO, size: int, digest: hashlib._Hash) -> int:
        sent = 0
        try:
            while sent < size:
                chunk = file.read(min(65536, size - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                digest.update(chunk)
                sent += len(chunk)
        except OSError as exc:
            log.debug("http %s: transfer cut at %d bytes: %s", self.client_address[0], sent, exc)
        if sent < size:
            # Content-Length promised more than we sent: only closing can signal that.
            self.close_connection = True
        return sent


class HttpServer:
    """GET/HEAD of regular files below `root`; optional TLS (mTLS via the context).

    A request that announces a body (any Transfer-Encoding, a Content-Length above 0) or
    whose header lines are ambiguous (obs-fold, duplicate or malformed Content-Length, a
    line that is no header) is answered 400 and never read further; every error response
    closes the connection. One thread per connection; `on_fetch` is called from those
    threads. With `route`, the route decides what each request gets instead of `root`
    (gitprov.tools.mtls: files only to the client certificate naming their MAC).
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        on_fetch: FetchCallback | None = None,
        tls: ssl.SSLContext | None = None,
        route: Route | None = None,
        max_connections: int = HTTP_MAX_CONNECTIONS,
        url_path: str = "",
    ) -> None:
        self._root = _check_root(Path(root), "HTTP")
        self._url_path = url_path
        self._max_connections = max_connections
        self._route = route
        self._host = host
        self._port = port
        self._on_fetch = on_fetch
        self._tls = tls
        self._refusals = _Refusals()
        self._listener: _HttpListener | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("HttpServer is not started")
        return self._listener.server_port

    @property
    def refusals(self) -> dict[str, int]:
        """Refused requests so far, by reason."""
        return self._refusals.snapshot()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`."""
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{authority(self._host, self.port)}"

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("HttpServer already started")
        protocol = "https" if self._tls is not None else "http"
        try:
            listener = _HttpListener(
                (self._host, self._port),
                self._root,
                self._on_fetch,
                protocol,
                self._refusals,
                self._route,
                self._max_connections,
                self._url_path,
            )
        except OSError as exc:
            raise _bind_error(protocol.upper(), self._host, self._port, exc) from exc
        if self._tls is not None:
            listener.socket = self._tls.wrap_socket(
                listener.socket, server_side=True, do_handshake_on_connect=False
            )
        self._listener = listener
        self._thread = threading.Thread(
            target=listener.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="gitprov-http",
            daemon=True,
        )
        self._thread.start()
        log.info("serving %s over %s at %s", self._root, protocol.upper(), self.url)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.shutdown()
        listener.server_close()
        if self._thread is not None:
            self._thread.join()
        log.info("stopped serving %s over HTTP", self._root)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- TFTP ------------------------------------------------------------------------------

_RRQ, _WRQ, _DATA, _ACK, _ERROR, _OACK = 1, 2, 3, 4, 5, 6
_ERR_UNDEFINED, _ERR_NOT_FOUND, _ERR_ACCESS, _ERR_ILLEGAL = 0, 1, 2, 4
_BLKSIZE_DEFAULT, _BLKSIZE_MIN, _BLKSIZE_MAX = 512, 8, 65464  # RFC 1350, RFC 2348
_TIMEOUT_MIN, _TIMEOUT_MAX = 1, 255  # RFC 2349


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _HashingReader:
    """The file's bytes as read, hashed on the way: what a completed transfer sent. At
    most `size` bytes (its size when opened, which tsize announced), and OSError when
    the file ends before them: cut in place while it is sent (a publish replaces a file,
    never truncates it), its short last block would end the transfer as if whole, the
    device taking the head of a file for all of it, and the fetch log saying 200."""

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw = raw
        self._left = size
        self.digest = hashlib.sha256()

    def read(self, size: int, /) -> bytes:
        want = min(size, self._left)
        data = self._raw.read(want) if want else b""
        if len(data) < want:
            raise OSError(errno.EIO, "the file got shorter while it was sent")
        self._left -= len(data)
        self.digest.update(data)
        return data


class _NetasciiReader:
    """Translates a file to netascii on the fly: LF -> CR LF, CR -> CR NUL (RFC 764).

    Devices ask for octet; netascii is what tftp-hpa sends without `-m binary`, and what
    the RFC requires then. No tsize is offered in this mode: the size on the wire is not
    known without reading the whole file.
    """

    def __init__(self, raw: _Reader) -> None:
        self._raw = raw
        self._pending = bytearray()
        self._eof = False

    def read(self, size: int, /) -> bytes:
        while len(self._pending) < size and not self._eof:
            data = self._raw.read(max(size, 8192))
            if not data:
                self._eof = True
                break
            self._pending += data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out


@dataclass(frozen=True)
class _Request:
    opcode: int
    filename: str
    mode: str
    options: dict[str, str]


def _parse_request(packet: bytes) -> _Request | None:
    """RRQ/WRQ: opcode, then NUL-terminated filename, mode and option/value pairs."""
    fields = packet[2:].split(b"\0")
    if len(fields) < 3 or fields[-1] != b"":
        return None
    filename, mode, *rest = fields[:-1]
    while rest and rest[-1] == b"":
        rest.pop()  # some boot ROMs pad requests with NULs
    names, values = rest[0::2], rest[1::2]
    options = {
        name.decode("ascii", "replace").lower(): value.decode("ascii", "replace")
        for name, value in zip(names, values, strict=False)
    }
    (opcode,) = struct.unpack_from("!H", packet)
    return _Request(opcode, os.fsdecode(filename), mode.decode("ascii", "replace").lower(), options)


def _error_packet(code: int, message: str) -> bytes:
    return struct.pack("!HH", _ERROR, code) + message.encode("ascii", "replace") + b"\0"


def _oack_packet(options: dict[str, str]) -> bytes:
    body = b"".join(f"{name}\0{value}\0".encode("ascii") for name, value in options.items())
    return struct.pack("!H", _OACK) + body


def _to_int(text: str) -> int | None:
    # Digits only, as RFC 2347 writes a value: int() also reads " 8", "1_000" and "８";
    # and few of them (past 4300 digits int() refuses, and no option needs 10).
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    return int(text)


class _Outcome(Enum):
    ACKED = 200
    TIMED_OUT = 408
    ABORTED = 499
    STOPPED = 503


@dataclass(frozen=True)
class TftpLimits:
    """How much of the TFTP server one client, or all of them, may hold.

    A session is *pending* from the request until the client acknowledges the first packet
    (the OACK, or DATA 1 without options): until then the client has proven nothing, not
    even that the request's source address is its own. Pending sessions are never the
    reason a new request is refused: when a limit is reached, the oldest pending session
    of the address holding the most is dropped instead (a client's own oldest, when it is
    that client's limit). `max_transfers` counts every session, pending or not; only
    transfers past their first ACK make the server answer `Server busy`.
    """

    max_transfers: int = 64
    max_pending: int = 32
    max_pending_per_client: int = 4
    max_timeout: int = 5  # seconds; a higher RFC 2349 timeout is not acknowledged

    def __post_init__(self) -> None:
        for name in ("max_transfers", "max_pending", "max_pending_per_client", "max_timeout"):
            if getattr(self, name) < 1:
                raise ValueError(f"TftpLimits.{name} must be at least 1")


@dataclass(eq=False)
class _Session:
    """One transfer. While pending it lives in the listener's poll set, without a thread."""

    sock: socket.socket
    address: tuple[str, int]
    request: _Request
    file: BinaryIO
    name: str  # below the root (see `Opened`)
    hashing: _HashingReader
    reader: _Reader
    blksize: int
    timeout: float
    packet: bytes  # the first packet (OACK or DATA 1), resent at most once
    block: int  # the block number its ACK carries: 0 after an OACK, else 1
    resends: int
    deadline: float
    first_size: int = 0  # payload of DATA 1 when that was the first packet

    @property
    def peer(self) -> str:
        return authority(self.address[0], self.address[1])

    def close(self) -> None:
        self.sock.close()
        self.file.close()


class TftpServer:
    """Read-only TFTP (RFC 1350) with blksize, tsize and timeout options (RFC 2347-2349).

    Each transfer gets its own UDP socket, connected to the client, so the listening
    socket only ever sees new requests; a client that reuses its source port for the next
    file is just another request. The reply socket is bound to the listening address: on
    a wildcard address the kernel picks the source address by route, which is right for
    the single-homed hosts this server is meant for.

    Until the client acknowledges the first packet, a session is *pending* (see
    `TftpLimits`) and handled by the listening thread itself: a flood of requests from
    forged addresses costs a socket each, never a thread, and is bounded by the limits.
    The first packet is resent once, then the session is dropped: a client whose first
    reply was lost twice sends its request again, as RFC 1350 has it. Only a session past
    its first ACK gets a thread and the full `retries`. A requested timeout above
    `max_timeout` is left out of the OACK (RFC 2349 allows no other value than the one
    asked for) and the server's `timeout` applies. `on_fetch` is called from the
    listening and the transfer threads.
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        on_fetch: FetchCallback | None = None,
        *,
        timeout: float = 1.0,
        retries: int = 5,
        limits: TftpLimits | None = None,
        url_path: str = "",
    ) -> None:
        self._root = _check_root(Path(root), "TFTP")
        self._url_path = url_path
        self._host = host
        self._port = port
        self._on_fetch = on_fetch
        self._timeout = timeout
        self._retries = retries
        self.limits = limits or TftpLimits()
        self._refusals = _Refusals()
        self._sock: socket.socket | None = None
        # stop() writes one byte and never drains it: every thread waiting in poll() on
        # the read end wakes at once, with no periodic polling of a flag.
        self._wake_read: socket.socket | None = None
        self._wake_write: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._transfers: set[threading.Thread] = set()
        self._lock = threading.Lock()
        # Pending sessions by socket descriptor, oldest first; the listening thread's only.
        self._pending: dict[int, _Session] = {}
        self._pending_poll = select.poll()

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("TftpServer is not started")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. `tftp://127.0.0.1:6969`."""
        return f"tftp://{authority(self._host, self.port)}"

    @property
    def refusals(self) -> dict[str, int]:
        """Refused requests and dropped pending sessions so far, by reason."""
        return self._refusals.snapshot()

    def start(self) -> None:
        if self._sock is not None:
            raise RuntimeError("TftpServer already started")
        sock = socket.socket(_family(self._host), socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise _bind_error("TFTP", self._host, self._port, exc) from exc
        self._sock = sock
        self._wake_read, self._wake_write = socket.socketpair()
        self._thread = threading.Thread(
            target=self._listen, args=(sock,), name="gitprov-tftp", daemon=True
        )
        self._thread.start()
        log.info("serving %s over TFTP at %s port %d", self._root, self._host, self.port)

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        assert self._wake_read is not None and self._wake_write is not None
        self._wake_write.send(b"x")
        if self._thread is not None:
            self._thread.join()
        sock.close()
        with self._lock:
            transfers = list(self._transfers)
        for thread in transfers:
            thread.join()
        self._wake_read.close()
        self._wake_write.close()
        log.info("stopped serving %s over TFTP", self._root)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # The listening thread: new requests, and every session until its first ACK.

    def _poller(self, sock: socket.socket) -> select.poll:
        assert self._wake_read is not None
        poller = select.poll()  # not select(): no FD_SETSIZE limit on descriptor numbers
        poller.register(sock, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        return poller

    def _wait(self, poller: select.poll, seconds: float | None) -> bool | None:
        """True when the socket is readable, False on timeout, None when stopping."""
        assert self._wake_read is not None
        ready = poller.poll(None if seconds is None else max(0, math.ceil(seconds * 1000)))
        if any(fd == self._wake_read.fileno() for fd, _ in ready):
            return None
        return bool(ready)

    def _listen(self, sock: socket.socket) -> None:
        assert self._wake_read is not None
        poller = self._poller(sock)
        self._pending_poll = poller
        wake, listening = self._wake_read.fileno(), sock.fileno()
        try:
            while True:
                wait = None
                if self._pending:
                    soonest = min(s.deadline for s in self._pending.values())
                    wait = max(0, math.ceil((soonest - time.monotonic()) * 1000))
                ready = {fd for fd, _ in poller.poll(wait)}
                if wake in ready:
                    return
                # Replies first: a flood of requests must not starve the ACKs that turn
                # pending sessions into transfers.
                for session in [self._pending[fd] for fd in ready if fd in self._pending]:
                    self._on_reply(session)
                if listening in ready:
                    self._receive_requests(sock)
                self._expire()
        finally:
            for session in list(self._pending.values()):
                self._end_pending(session, HTTPStatus.SERVICE_UNAVAILABLE, "Server stopping")

    def _receive_requests(self, sock: socket.socket) -> None:
        # A bounded batch per wakeup, so pending sessions get their turn under a flood.
        for _ in range(64):
            try:
                packet, address = sock.recvfrom(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                log.debug("tftp listener: %s", exc)
                return
            try:
                self._dispatch(sock, packet, address)
            except OSError as exc:
                log.debug("tftp reply to %s failed: %s", address[0], exc)
            except Exception:
                # One bad request must not take the listener, and every client, down.
                log.exception("tftp request from %s failed", address[0])

    def _dispatch(self, sock: socket.socket, packet: bytes, address: tuple[str, int]) -> None:
        client = str(address[0])
        opcode = struct.unpack_from("!H", packet)[0] if len(packet) >= 2 else 0
        if opcode not in (_RRQ, _WRQ):
            log.debug("tftp: ignoring opcode %d from %s on the listening port", opcode, client)
            return
        request = _parse_request(packet)
        if request is None:
            self._refuse(sock, address, "", "malformed", _ERR_ILLEGAL, "Illegal TFTP operation")
        elif request.opcode == _WRQ:
            self._refuse(sock, address, request.filename, "write", _ERR_ACCESS, "Access violation")
        elif request.mode not in ("octet", "netascii"):
            self._refuse(sock, address, request.filename, "mode", _ERR_ILLEGAL, "Unsupported mode")
        else:
            self._start(sock, request, address)

    def _refuse(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        path: str,
        reason: str,
        code: int,
        message: str,
    ) -> None:
        sock.sendto(_error_packet(code, message), address)
        self._refusals.add(reason)
        log.info("tftp refused %s %s: %s", address[0], _printable(path), message)
        status = {_ERR_ACCESS: HTTPStatus.FORBIDDEN, _ERR_UNDEFINED: HTTPStatus.SERVICE_UNAVAILABLE}
        self._emit(str(address[0]), path, status.get(code, HTTPStatus.BAD_REQUEST), 0)

    def _start(self, sock: socket.socket, request: _Request, address: tuple[str, int]) -> None:
        client = str(address[0])
        opened = open_request(self._root, request.filename, self._url_path)
        if opened is None:
            sock.sendto(_error_packet(_ERR_NOT_FOUND, "File not found"), address)
            self._emit(client, request.filename, HTTPStatus.NOT_FOUND, 0)
            return
        file, size = opened.file, opened.size
        if not self._make_room(client):
            file.close()
            self._refuse(sock, address, request.filename, "busy", _ERR_UNDEFINED, "Server busy")
            return
        blksize, timeout, accepted = self._negotiate(request, size)
        hashing = _HashingReader(file, size)
        reader: _Reader = hashing if request.mode == "octet" else _NetasciiReader(hashing)
        block, first_size = 0, 0
        try:
            if accepted:
                packet = _oack_packet(accepted)
            else:
                chunk = reader.read(blksize)
                block, first_size = 1, len(chunk)
                packet = struct.pack("!HH", _DATA, 1) + chunk
        except OSError as exc:
            file.close()
            log.warning("tftp: reading %s failed: %s", _printable(request.filename), exc)
            sock.sendto(_error_packet(_ERR_UNDEFINED, "Read error"), address)
            self._emit(client, request.filename, HTTPStatus.INTERNAL_SERVER_ERROR, 0)
            return
        local = sock.getsockname()[0]
        reply = socket.socket(_family(local), socket.SOCK_DGRAM)
        session = _Session(
            reply,
            address,
            request,
            file,
            opened.name,
            hashing,
            reader,
            blksize,
            timeout,
            packet,
            block,
            min(self._retries, 1),
            time.monotonic() + timeout,
            first_size,
        )
        try:
            reply.bind((local, 0))
            # Connected: the kernel drops packets from other ports (a stranger's TID),
            # and an ICMP port-unreachable tells us the client has gone.
            reply.connect(address)
            reply.send(packet)
        except OSError as exc:
            session.close()
            log.warning("tftp transfer to %s failed: %s", client, exc)
            self._emit(client, request.filename, HTTPStatus.INTERNAL_SERVER_ERROR, 0)
            return
        self._pending[reply.fileno()] = session
        self._pending_poll.register(reply, select.POLLIN)

    def _make_room(self, client: str) -> bool:
        """Drop pending sessions until a new one from `client` fits; False if none can go."""
        limits = self.limits
        mine = [s for s in self._pending.values() if s.address[0] == client]
        while len(mine) >= limits.max_pending_per_client:
            reason = f"{len(mine)} sessions of this address await their first ACK"
            self._evict(mine.pop(0), "pending-per-client", reason)
        while True:
            with self._lock:
                running = len(self._transfers)
            if len(self._pending) < limits.max_pending and (
                len(self._pending) + running < limits.max_transfers
            ):
                return True
            if not self._pending:
                return False
            reason = f"{len(self._pending)} sessions await their first ACK, {running} transfers run"
            self._evict(self._busiest_oldest(), "pending", reason)

    def _busiest_oldest(self) -> _Session:
        # The address holding the most pending sessions pays first, so an attacker at
        # one address (or a few) cannot push out a client with one session in flight;
        # among equals the oldest goes, being the least likely to still be answered.
        counts: dict[str, int] = {}
        for session in self._pending.values():
            counts[session.address[0]] = counts.get(session.address[0], 0) + 1
        most = max(counts.values())
        return next(s for s in self._pending.values() if counts[s.address[0]] == most)

    def _evict(self, session: _Session, reason: str, detail: str) -> None:
        self._refusals.add(reason)
        log.info(
            "tftp dropped pending session %s %s for a new request: %s",
            session.peer,
            _printable(session.request.filename),
            detail,
        )
        self._end_pending(session, HTTPStatus.SERVICE_UNAVAILABLE, "Server busy")

    def _forget(self, session: _Session) -> None:
        if self._pending.pop(session.sock.fileno(), None) is not None:
            self._pending_poll.unregister(session.sock)

    def _end_pending(self, session: _Session, status: int, message: str | None) -> None:
        self._forget(session)
        if message is not None:
            with contextlib.suppress(OSError):  # a client that is gone needs no telling
                session.sock.send(_error_packet(_ERR_UNDEFINED, message))
        session.close()
        self._emit_session(session, status, 0)

    def _on_reply(self, session: _Session) -> None:
        while True:
            try:
                reply = session.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                # ICMP port unreachable (ConnectionRefusedError) or worse: nobody listens.
                self._end_pending(session, _Outcome.ABORTED.value, None)
                return
            if len(reply) < 4:
                continue
            opcode, number = struct.unpack_from("!HH", reply)
            if opcode == _ACK and number == session.block:
                self._promote(session)
                return
            if opcode == _ERROR:
                message = reply[4:].split(b"\0", 1)[0].decode("ascii", "replace")
                log.debug("tftp client error %d: %s", number, _printable(message))
                self._end_pending(session, _Outcome.ABORTED.value, None)
                return

    def _expire(self) -> None:
        now = time.monotonic()
        for session in [s for s in self._pending.values() if s.deadline <= now]:
            if session.resends > 0:
                session.resends -= 1
                session.deadline = now + session.timeout
                try:
                    session.sock.send(session.packet)
                except OSError:
                    self._end_pending(session, _Outcome.ABORTED.value, None)
                continue
            self._refusals.add("unacknowledged")
            log.info(
                "tftp dropped pending session %s %s: its first %s was never acknowledged",
                session.peer,
                _printable(session.request.filename),
                "OACK" if session.block == 0 else "DATA",
            )
            self._end_pending(session, _Outcome.TIMED_OUT.value, None)

    def _promote(self, session: _Session) -> None:
        self._forget(session)
        if session.block == 1 and session.first_size < session.blksize:
            # The whole file fitted in DATA 1: done without a thread.
            session.close()
            self._emit_session(session, HTTPStatus.OK, session.first_size)
            return
        thread = threading.Thread(
            target=self._transfer, args=(session,), name="gitprov-tftp-transfer", daemon=True
        )
        with self._lock:
            self._transfers.add(thread)
        try:
            thread.start()
        except RuntimeError:  # the process is out of threads
            with self._lock:
                self._transfers.discard(thread)
            self._end_pending(session, HTTPStatus.SERVICE_UNAVAILABLE, "Server busy")

    def _emit(self, client: str, path: str, status: int, size: int) -> None:
        _emit(self._on_fetch, FetchEvent("tftp", client, path, int(status), size))

    def _emit_session(self, session: _Session, status: int, size: int) -> None:
        # A completed transfer read the file to its end: the digest is the whole file's.
        sha256 = session.hashing.digest.hexdigest() if status == HTTPStatus.OK else None
        event = FetchEvent(
            "tftp",
            session.address[0],
            session.request.filename,
            int(status),
            size,
            session.name,
            sha256,
        )
        _emit(self._on_fetch, event)

    # A transfer past its first ACK: its own thread, lock-step DATA/ACK.

    def _transfer(self, session: _Session) -> None:
        status, sent = int(HTTPStatus.INTERNAL_SERVER_ERROR), session.first_size
        try:
            status, sent = self._send_rest(session)
        except OSError as exc:
            log.warning("tftp transfer to %s failed: %s", session.address[0], exc)
        except Exception:
            # Not left to threading.excepthook, which prints to stderr.
            log.exception("tftp transfer to %s failed", session.address[0])
        finally:
            session.close()
            with self._lock:
                self._transfers.discard(threading.current_thread())
            self._emit_session(session, status, sent)

    def _send_rest(self, session: _Session) -> tuple[int, int]:
        sock, blksize, timeout = session.sock, session.blksize, session.timeout
        poller = self._poller(sock)
        block, sent = session.block + 1, session.first_size
        while True:
            try:
                chunk = session.reader.read(blksize)
            except OSError as exc:
                log.warning(
                    "tftp: reading %s failed: %s", _printable(session.request.filename), exc
                )
                sock.send(_error_packet(_ERR_UNDEFINED, "Read error"))
                return HTTPStatus.INTERNAL_SERVER_ERROR, sent
            number = block & 0xFFFF  # wraps to 0 past 65535, as tftp-hpa does
            packet = struct.pack("!HH", _DATA, number) + chunk
            outcome = self._lockstep(sock, poller, packet, number, timeout)
            if outcome is not _Outcome.ACKED:
                return outcome.value, sent
            sent += len(chunk)
            # A short block ends the transfer; hence an empty one when size % blksize == 0.
            if len(chunk) < blksize:
                return HTTPStatus.OK, sent
            block += 1

    def _negotiate(self, request: _Request, size: int) -> tuple[int, float, dict[str, str]]:
        """Options we accept, echoed in the OACK; unknown or out-of-range ones are ignored."""
        blksize, timeout = _BLKSIZE_DEFAULT, self._timeout
        accepted: dict[str, str] = {}
        for name, value in request.options.items():
            number = _to_int(value)
            if name == "blksize" and number is not None and number >= _BLKSIZE_MIN:
                blksize = min(number, _BLKSIZE_MAX)
                accepted[name] = str(blksize)
            elif name == "timeout" and number is not None:
                # RFC 2349 lets the server only echo the value or leave the option out;
                # above the cap it is left out, so nobody holds a session for minutes.
                if _TIMEOUT_MIN <= number <= min(_TIMEOUT_MAX, self.limits.max_timeout):
                    timeout = float(number)
                    accepted[name] = str(number)
            elif name == "tsize" and request.mode == "octet":
                accepted[name] = str(size)
        return blksize, timeout, accepted

    def _lockstep(
        self, sock: socket.socket, poller: select.poll, packet: bytes, block: int, timeout: float
    ) -> _Outcome:
        """Send `packet` until ACK `block` arrives, retransmitting only on timeout.

        Other ACKs (duplicates of earlier ones) are ignored rather than answered: resending
        on a duplicate ACK doubles every later block (the sorcerer's apprentice bug).
        """
        try:
            for _attempt in range(self._retries + 1):
                sock.send(packet)
                deadline = time.monotonic() + timeout
                while (remaining := deadline - time.monotonic()) > 0:
                    ready = self._wait(poller, remaining)
                    if ready is None:
                        sock.send(_error_packet(_ERR_UNDEFINED, "Server stopping"))
                        return _Outcome.STOPPED
                    if not ready:
                        continue
                    reply = sock.recv(65536)
                    if len(reply) < 4:
                        continue
                    opcode, number = struct.unpack_from("!HH", reply)
                    if opcode == _ACK and number == block:
                        return _Outcome.ACKED
                    if opcode == _ERROR:
                        message = reply[4:].split(b"\0", 1)[0].decode("ascii", "replace")
                        log.debug("tftp client error %d: %s", number, _printable(message))
                        return _Outcome.ABORTED
        except ConnectionRefusedError:
            return _Outcome.ABORTED
        return _Outcome.TIMED_OUT


# --- both ------------------------------------------------------------------------------


class ServeHandle:
    """The servers started by `serve_roots`; `stop()` stops them all."""

    def __init__(self, http: HttpServer | None, tftp: TftpServer | None) -> None:
        self.http = http
        self.tftp = tftp
        self._stopped = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `stop()` (from another thread or a signal handler); True if stopped."""
        return self._stopped.wait(timeout)

    def stop(self) -> None:
        for server in (self.tftp, self.http):
            if server is not None:
                server.stop()
        self._stopped.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_roots(
    http_root: Path | None,
    tftp_root: Path | None,
    host: str = "127.0.0.1",
    http_port: int = 0,
    tftp_port: int = 0,
    *,
    on_fetch: FetchCallback | None = None,
    tls: ssl.SSLContext | None = None,
    tftp_limits: TftpLimits | None = None,
    http_max_connections: int = HTTP_MAX_CONNECTIONS,
    url_path: str = "",
) -> ServeHandle:
    """Start an HTTP(S) server on `http_root` and a TFTP server on `tftp_root` (either may
    be None, not both), each also serving its files below `url_path` (see
    `open_request`). If the second cannot start, the first is stopped again."""
    if http_root is None and tftp_root is None:
        raise UsageError("nothing to serve", hint="give an HTTP root, a TFTP root, or both")
    http = (
        None
        if http_root is None
        else HttpServer(
            http_root,
            host,
            http_port,
            on_fetch,
            tls,
            max_connections=http_max_connections,
            url_path=url_path,
        )
    )
    tftp = (
        None
        if tftp_root is None
        else TftpServer(tftp_root, host, tftp_port, on_fetch, limits=tftp_limits, url_path=url_path)
    )
    handle = ServeHandle(None, None)
    try:
        if http is not None:
            http.start()
            handle.http = http
        if tftp is not None:
            tftp.start()
            handle.tftp = tftp
    except BaseException:
        handle.stop()
        raise
    return handle
