"""Read-only embedded HTTP(S) and TFTP servers over the published roots.

The zero-setup default for small sites and demos; production uses nginx and tftpd-hpa
(see `deploy/`). Both servers share one path policy (`open_published`): no dot-components
(the atomic publisher's temp files are dot-files), no traversal, no symlink leaving the
root, regular files only. Each file is opened once per request and streamed from that
descriptor, so a publish that `os.replace`s it mid-transfer never yields a mixed file.

Every request ends in one `FetchEvent`, logged at INFO on logger `gitprov.serve` (the fetch
log, with the event in `extra={"fetch": event}`) and passed to the optional `on_fetch`
callback. TFTP outcomes use the HTTP status vocabulary so one log answers "what did device
X get" for both protocols.

The TFTP server is written here rather than taken from tftpy: tftpy accepts uploads unless
told otherwise and stalls when a client reuses its source port for consecutive requests
(tftp-hpa does, with `get f1 f2 f3`): each later file waits out a client retransmit,
about 5 s (measured with tftpy 0.8.7).
"""

from __future__ import annotations

import errno
import logging
import math
import os
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
from typing import BinaryIO, Protocol, Self
from urllib.parse import unquote, urlsplit

from gitprov.errors import GitprovError

log = logging.getLogger("gitprov.serve")

__all__ = [
    "FetchCallback",
    "FetchEvent",
    "HttpServer",
    "ServeHandle",
    "TftpServer",
    "make_tls_context",
    "open_published",
    "serve_roots",
]


@dataclass(frozen=True)
class FetchEvent:
    """One request and how it ended.

    `status` is an HTTP status code for both protocols. For TFTP: 200 transfer complete,
    400 malformed request or unsupported mode, 403 write request refused, 404 not found,
    408 client stopped acknowledging, 499 client aborted (error packet or port
    unreachable), 500 read error, 503 server busy or stopping. `size` counts payload bytes
    sent once (retransmits excluded; 0 for HEAD).
    """

    protocol: str  # "http", "https" or "tftp"
    client: str  # client IP address
    path: str  # as requested (URL-decoded, query dropped)
    status: int
    size: int


FetchCallback = Callable[[FetchEvent], None]


def _printable(text: str) -> str:
    # Request paths are attacker-controlled: escape control characters so a crafted
    # name cannot forge lines in the fetch log.
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


def _check_root(root: Path, what: str) -> Path:
    if not root.is_dir():
        raise GitprovError(
            f"{root}: the {what} root is not a directory",
            hint="publish first, or point the server at the published root",
        )
    return root


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_error(proto: str, host: str, port: int, exc: OSError) -> GitprovError:
    hint = "choose another port, or stop the process using it"
    if exc.errno == errno.EACCES:
        hint = "ports below 1024 need root (or CAP_NET_BIND_SERVICE); choose a port >= 1024"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "the address is not configured on this host"
    return GitprovError(f"cannot listen for {proto} on {host}:{port}: {exc.strerror}", hint=hint)


# --- path policy -----------------------------------------------------------------------


def open_published(root: Path, requested: str) -> tuple[BinaryIO, int] | None:
    """Open `requested` (a URL path or TFTP file name) below `root` for reading.

    Returns the open file and its size, or None when the name is not servable: empty,
    containing NUL, any component starting with `.`, resolving outside the root, or not a
    regular file. Leading and repeated `/` are ignored (TFTP clients may send `/f.conf`).
    """
    parts = [part for part in requested.split("/") if part]
    if not parts or any(part.startswith(".") or "\0" in part for part in parts):
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
        raise GitprovError(
            f"cannot load TLS certificate {cert} with key {key}: {exc}",
            hint="both must be PEM files and the key must match the certificate",
        ) from exc
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise GitprovError(
                f"cannot load client CA {client_ca}: {exc}",
                hint="pass the PEM certificate of the CA that signed the devices' certificates",
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _HttpListener(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        root: Path,
        on_fetch: FetchCallback | None,
        protocol: str,
    ) -> None:
        self.address_family = _family(address[0])
        self.gp_root = root
        self.gp_on_fetch = on_fetch
        self.gp_protocol = protocol
        super().__init__(address, _HttpHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not wanted here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        # The default prints a traceback to stderr; core modules only log. Dropped
        # connections are routine; anything else is a bug worth a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("http connection from %s failed", client_address, exc_info=True)
        else:
            log.exception("http request from %s failed", client_address)


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gitprov"
    sys_version = ""
    # Idle keep-alive connections and stuck TLS handshakes give their thread back.
    timeout = 30
    server: _HttpListener

    def setup(self) -> None:
        super().setup()
        self.gp_ready = True
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

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command in ("GET", "HEAD"):
            return True
        self._respond_error(HTTPStatus.METHOD_NOT_ALLOWED)
        self._emit(HTTPStatus.METHOD_NOT_ALLOWED, 0)
        return False

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
        target = self.path
        if not target.startswith("/"):
            # absolute-form (http://host/path), as proxies send it
            target = urlsplit(target).path
        target = target.split("?", 1)[0].split("#", 1)[0]
        return unquote(target, errors="surrogateescape")

    def _emit(self, status: int, size: int) -> None:
        event = FetchEvent(
            self.server.gp_protocol, self.client_address[0], self._request_path(), int(status), size
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
            # The request body, if any, was not read: the connection cannot be reused.
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        opened = open_published(self.server.gp_root, self._request_path())
        if opened is None:
            self._respond_error(HTTPStatus.NOT_FOUND)
            self._emit(HTTPStatus.NOT_FOUND, 0)
            return
        file, size = opened
        sent = 0
        with file:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command == "GET":
                sent = self._stream(file, size)
        self._emit(HTTPStatus.OK, sent)

    def _stream(self, file: BinaryIO, size: int) -> int:
        sent = 0
        try:
            while sent < size:
                chunk = file.read(min(65536, size - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError as exc:
            log.debug("http %s: transfer cut at %d bytes: %s", self.client_address[0], sent, exc)
        if sent < size:
            # Content-Length promised more than we sent: only closing can signal that.
            self.close_connection = True
        return sent


class HttpServer:
    """GET/HEAD of regular files below `root`; optional TLS (mTLS via the context).

    One thread per connection; `on_fetch` is called from those threads.
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        on_fetch: FetchCallback | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._root = _check_root(Path(root), "HTTP")
        self._host = host
        self._port = port
        self._on_fetch = on_fetch
        self._tls = tls
        self._listener: _HttpListener | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("HttpServer is not started")
        return self._listener.server_port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`."""
        scheme = "https" if self._tls is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("HttpServer already started")
        protocol = "https" if self._tls is not None else "http"
        try:
            listener = _HttpListener((self._host, self._port), self._root, self._on_fetch, protocol)
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


class _NetasciiReader:
    """Translates a file to netascii on the fly: LF -> CR LF, CR -> CR NUL (RFC 764).

    Devices ask for octet; netascii is what tftp-hpa sends without `-m binary`, and what
    the RFC requires then. No tsize is offered in this mode: the size on the wire is not
    known without reading the whole file.
    """

    def __init__(self, raw: BinaryIO) -> None:
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
    try:
        return int(text)
    except ValueError:
        return None


class _Outcome(Enum):
    ACKED = 200
    TIMED_OUT = 408
    ABORTED = 499
    STOPPED = 503


class TftpServer:
    """Read-only TFTP (RFC 1350) with blksize, tsize and timeout options (RFC 2347-2349).

    Each transfer runs in its own thread on its own UDP socket, connected to the client,
    so the listening socket only ever sees new requests; a client that reuses its source
    port for the next file is just another request. The reply socket is bound to the
    listening address: on a wildcard address the kernel picks the source address by
    route, which is right for the single-homed hosts this server is meant for.
    `on_fetch` is called from the transfer threads.
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
        max_transfers: int = 64,
    ) -> None:
        self._root = _check_root(Path(root), "TFTP")
        self._host = host
        self._port = port
        self._on_fetch = on_fetch
        self._timeout = timeout
        self._retries = retries
        self._slots = threading.BoundedSemaphore(max_transfers)
        self._sock: socket.socket | None = None
        # stop() writes one byte and never drains it: every thread waiting in poll() on
        # the read end wakes at once, with no periodic polling of a flag.
        self._wake_read: socket.socket | None = None
        self._wake_write: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._transfers: set[threading.Thread] = set()
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("TftpServer is not started")
        return int(self._sock.getsockname()[1])

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

    # The listening socket: dispatch requests, answer what needs no transfer.

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
        poller = self._poller(sock)
        while self._wait(poller, None):
            try:
                packet, address = sock.recvfrom(65536)
            except OSError as exc:
                log.debug("tftp listener: %s", exc)
                continue
            try:
                self._dispatch(sock, packet, address)
            except OSError as exc:
                log.debug("tftp reply to %s failed: %s", address[0], exc)

    def _dispatch(self, sock: socket.socket, packet: bytes, address: tuple[str, int]) -> None:
        client = str(address[0])
        opcode = struct.unpack_from("!H", packet)[0] if len(packet) >= 2 else 0
        if opcode not in (_RRQ, _WRQ):
            log.debug("tftp: ignoring opcode %d from %s on the listening port", opcode, client)
            return
        request = _parse_request(packet)
        if request is None:
            sock.sendto(_error_packet(_ERR_ILLEGAL, "Illegal TFTP operation"), address)
            self._emit(client, "", HTTPStatus.BAD_REQUEST, 0)
        elif request.opcode == _WRQ:
            sock.sendto(_error_packet(_ERR_ACCESS, "Access violation"), address)
            self._emit(client, request.filename, HTTPStatus.FORBIDDEN, 0)
        elif request.mode not in ("octet", "netascii"):
            sock.sendto(_error_packet(_ERR_ILLEGAL, "Unsupported mode"), address)
            self._emit(client, request.filename, HTTPStatus.BAD_REQUEST, 0)
        elif not self._slots.acquire(blocking=False):
            # Refuse rather than queue: the client's own retry comes later anyway.
            sock.sendto(_error_packet(_ERR_UNDEFINED, "Server busy"), address)
            self._emit(client, request.filename, HTTPStatus.SERVICE_UNAVAILABLE, 0)
        else:
            thread = threading.Thread(
                target=self._transfer,
                args=(request, address, sock.getsockname()[0]),
                name="gitprov-tftp-transfer",
                daemon=True,
            )
            with self._lock:
                self._transfers.add(thread)
            try:
                thread.start()
            except RuntimeError:  # the process is out of threads
                with self._lock:
                    self._transfers.discard(thread)
                self._slots.release()
                sock.sendto(_error_packet(_ERR_UNDEFINED, "Server busy"), address)
                self._emit(client, request.filename, HTTPStatus.SERVICE_UNAVAILABLE, 0)

    def _emit(self, client: str, path: str, status: int, size: int) -> None:
        _emit(self._on_fetch, FetchEvent("tftp", client, path, int(status), size))

    # One transfer: its own socket, lock-step DATA/ACK.

    def _transfer(self, request: _Request, address: tuple[str, int], local: str) -> None:
        status, sent = int(HTTPStatus.INTERNAL_SERVER_ERROR), 0
        try:
            with socket.socket(_family(local), socket.SOCK_DGRAM) as sock:
                sock.bind((local, 0))
                # Connected: the kernel drops packets from other ports (a stranger's TID),
                # and an ICMP port-unreachable tells us the client has gone.
                sock.connect(address)
                status, sent = self._send_file(sock, request)
        except OSError as exc:
            log.warning("tftp transfer to %s failed: %s", address[0], exc)
        except Exception:
            # Not left to threading.excepthook, which prints to stderr.
            log.exception("tftp transfer to %s failed", address[0])
        finally:
            self._slots.release()
            with self._lock:
                self._transfers.discard(threading.current_thread())
            self._emit(str(address[0]), request.filename, status, sent)

    def _send_file(self, sock: socket.socket, request: _Request) -> tuple[int, int]:
        opened = open_published(self._root, request.filename)
        if opened is None:
            sock.send(_error_packet(_ERR_NOT_FOUND, "File not found"))
            return HTTPStatus.NOT_FOUND, 0
        file, size = opened
        poller = self._poller(sock)
        with file:
            blksize, timeout, accepted = self._negotiate(request, size)
            reader: _Reader = file if request.mode == "octet" else _NetasciiReader(file)
            if accepted:
                outcome = self._lockstep(sock, poller, _oack_packet(accepted), 0, timeout)
                if outcome is not _Outcome.ACKED:
                    return outcome.value, 0
            block, sent = 1, 0
            while True:
                try:
                    chunk = reader.read(blksize)
                except OSError as exc:
                    log.warning("tftp: reading %s failed: %s", _printable(request.filename), exc)
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
                if _TIMEOUT_MIN <= number <= _TIMEOUT_MAX:
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
) -> ServeHandle:
    """Start an HTTP(S) server on `http_root` and a TFTP server on `tftp_root` (either may
    be None, not both). If the second cannot start, the first is stopped again."""
    if http_root is None and tftp_root is None:
        raise GitprovError("nothing to serve", hint="give an HTTP root, a TFTP root, or both")
    http = None if http_root is None else HttpServer(http_root, host, http_port, on_fetch, tls)
    tftp = None if tftp_root is None else TftpServer(tftp_root, host, tftp_port, on_fetch)
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
