"""How the emulated device gets bytes: HTTP(S) with urllib, a minimal TFTP client.

A fetcher takes a resolved URL (macros expanded) and returns the bytes or raises
`FetchError`, whose message names the URL with its `--key` and `--pwd` redacted. Each
fetcher may bind its requests to a `source_address`, so that many emulated devices on one
machine reach a server from addresses of their own (127.0.0.0/8 on loopback), as a fleet
does: the server's per-client limits and fetch log then see one client per device.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import socket
import ssl
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from gitprov.errors import GitprovError
from gitprov.rule_url import DEFAULT_PORTS, RuleUrl, authority, format_rule

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "MAX_FILE_BYTES",
    "REDACTED",
    "FetchError",
    "Fetcher",
    "HostOverride",
    "HttpFetcher",
    "MultiFetcher",
    "TftpFetcher",
    "display_url",
    "parse_option66_server",
]

REDACTED = "<redacted>"
MAX_FILE_BYTES = 1 << 20
"""Largest file a fetcher accepts: a device has a few MB of flash, a param.conf is ~1 KB."""

HostOverride = Mapping[str, tuple[str, int]]
"""Test hook, like /etc/hosts: host name in a URL (any case) → (address, port) to connect
to. The request still names the original host (HTTP Host header, TLS SNI and certificate
check), so a rule naming `prov.example.net` can be served by 127.0.0.1:PORT."""


# --- errors ------------------------------------------------------------------------------


class FetchError(GitprovError):
    """A fetch failed. The message names the (redacted) URL and the reason."""


# --- URLs --------------------------------------------------------------------------------


def display_url(url: RuleUrl) -> str:
    """The URL as a rule, `--key` and `--pwd` shown as `<redacted>`: safe to print."""
    return format_rule(
        url._replace(
            key=None if url.key is None else REDACTED,
            pwd=None if url.pwd is None else REDACTED,
        )
    )


def parse_option66_server(text: str) -> tuple[str, int]:
    """What DHCP option 66 gave: `host`, `host:port`, `[v6]:port`, or a bare IPv6 address.

    Raises ValueError with a message that says what to write.
    """
    value = text.strip()
    port_text = ""
    if value.startswith("["):
        close = value.find("]")
        if close < 0 or (close + 1 < len(value) and value[close + 1] != ":"):
            raise ValueError(f"option-66 server {text!r}: write [ADDRESS]:PORT")
        host, port_text = value[1:close], value[close + 2 :]
        if close + 1 < len(value) and not port_text:
            raise ValueError(f"option-66 server {text!r}: the port is missing after ':'")
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        if not port_text:
            raise ValueError(f"option-66 server {text!r}: the port is missing after ':'")
    else:
        host = value  # a name, an IPv4 address, or an IPv6 address without a port
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"option-66 server {text!r}: write HOST or HOST:PORT")
    port = DEFAULT_PORTS["tftp"]
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"option-66 server {text!r}: the port must be 1..65535")
        port = int(port_text)
    return host, port


def _connect_address(url: RuleUrl, override: HostOverride) -> tuple[str, int]:
    for name, address in override.items():
        if name.lower() == url.host.lower():
            return address
    return url.host, url.port


# --- fetchers ----------------------------------------------------------------------------


class Fetcher(Protocol):
    """Gets the bytes a resolved URL (macros expanded) names; raises `FetchError`."""

    def fetch(self, url: RuleUrl) -> bytes: ...


_TIMEOUT_HINT = (
    "the server (or the network to it) is too slow, or it stalls; check it, or allow "
    "more time (probe: --timeout)"
)


class _Deadline:
    """When a fetch must be done by, and what it was doing (for the error) when it ran out.

    A socket timeout bounds one operation: a server that sends a byte a second never
    leaves a read idle for as long, and would hold a fetch for hours. Each blocking step
    waits at most what is `left`, so that the whole fetch ends by `at`.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.stage = "connecting"

    def left(self) -> float:
        """Seconds left; TimeoutError when none (a socket timeout of 0 would not block)."""
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out {self.stage}")
        return remaining

    def error(self, shown: str) -> FetchError:
        return FetchError(
            f"{shown}: not fetched within {self.seconds:g} s: timed out {self.stage}",
            hint=_TIMEOUT_HINT,
        )


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes as `HTTPResponse` reads them (status line, headers, body), each
    read waiting no longer than the fetch has `left`."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        super().__init__()
        # A SocketIO, counted by the socket as its own makefile() is: urllib closes the
        # connection's socket while the response still reads from it.
        self._raw = sock.makefile("rb", buffering=0)
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An `HTTPResponse` that reads through `_DeadlineReader` and tells the deadline
    whether it is waiting for the headers or the body."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: _Deadline,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()  # the reader without a deadline, replaced before any read
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))
        self._gp_deadline = deadline

    def begin(self) -> None:
        self._gp_deadline.stage = "waiting for the response headers"
        super().begin()
        self._gp_deadline.stage = "reading the body"


def _deadline_response(deadline: _Deadline) -> type[http.client.HTTPResponse]:
    # http.client only calls its response_class, as it would the class.
    return cast(
        "type[http.client.HTTPResponse]", functools.partial(_DeadlineResponse, deadline=deadline)
    )


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Speaks to `host` (Host header) but connects to `address`, from `source`; done by
    `deadline`."""

    def __init__(
        self, host: str, address: tuple[str, int], source: str | None, deadline: _Deadline
    ) -> None:
        super().__init__(host, timeout=deadline.seconds)
        self._gp_address = address
        self._gp_source = None if source is None else (source, 0)
        self._gp_deadline = deadline
        self.response_class = _deadline_response(deadline)

    def connect(self) -> None:
        deadline = self._gp_deadline
        deadline.stage = "connecting"
        self.sock = socket.create_connection(self._gp_address, deadline.left(), self._gp_source)
        deadline.stage = "sending the request"


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Like `_PinnedHTTPConnection`, with SNI and certificate check against `host`."""

    def __init__(
        self,
        host: str,
        address: tuple[str, int],
        source: str | None,
        context: ssl.SSLContext,
        deadline: _Deadline,
    ) -> None:
        super().__init__(host, timeout=deadline.seconds, context=context)
        self._gp_address = address
        self._gp_source = None if source is None else (source, 0)
        self._gp_context = context
        self._gp_deadline = deadline
        self.response_class = _deadline_response(deadline)

    def connect(self) -> None:
        deadline = self._gp_deadline
        deadline.stage = "connecting"
        raw = socket.create_connection(self._gp_address, deadline.left(), self._gp_source)
        try:
            # The handshake is one call, and ssl bounds each call as a whole.
            deadline.stage = "in the TLS handshake"
            raw.settimeout(deadline.left())
            self.sock = self._gp_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        deadline.stage = "sending the request"


class _PinnedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    def __init__(
        self,
        address: tuple[str, int],
        source: str | None,
        context: ssl.SSLContext | None,
        deadline: _Deadline,
    ) -> None:
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self, context=context)
        self._gp_address = address
        self._gp_source = source
        self._gp_context = context
        self._gp_deadline = deadline

    def _plain(self, host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
        return _PinnedHTTPConnection(host, self._gp_address, self._gp_source, self._gp_deadline)

    def _tls(self, host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
        assert self._gp_context is not None
        return _PinnedHTTPSConnection(
            host, self._gp_address, self._gp_source, self._gp_context, self._gp_deadline
        )

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._plain, req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._tls, req)


# Characters left as written in a request path: `%` keeps a rule's own `%20` escapes.
_PATH_SAFE = "/%:@!$&'()*+,;=~?"


class HttpFetcher:
    """HTTP GET with urllib; HTTPS only when given an `ssl_context` (it decides trust and
    the client certificate). No proxies from the environment and no redirects: a device
    fetches exactly the URL it was given, and a redirect is reported as a failure.
    `source_address` is the local address connections are made from (None: the kernel's
    choice). `timeout` bounds the whole fetch (connecting, the TLS handshake, the request,
    the headers and the body), not each read."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        host_override: HostOverride | None = None,
        max_bytes: int = MAX_FILE_BYTES,
        source_address: str | None = None,
    ) -> None:
        self._timeout = timeout
        self._context = ssl_context
        self._override: HostOverride = dict(host_override or {})
        self._max_bytes = max_bytes
        self._source = source_address

    def fetch(self, url: RuleUrl) -> bytes:
        shown = display_url(url)
        if url.scheme not in ("http", "https"):
            raise FetchError(f"{shown}: not an HTTP URL")
        if url.scheme == "https" and self._context is None:
            raise FetchError(
                f"{shown}: https needs an SSL context",
                hint="give the fetcher an ssl.SSLContext (probe: --cacert, --cert)",
            )
        port = None if url.port == DEFAULT_PORTS[url.scheme] else url.port
        path = urllib.parse.quote(url.path, safe=_PATH_SAFE)
        request = urllib.request.Request(
            f"{url.scheme}://{authority(url.host, port)}{path}",
            headers={"User-Agent": "gitprov-device-emulator", "Accept": "*/*"},
        )
        if url.uid is not None:
            pair = f"{url.uid}:{url.pwd or ''}".encode()
            request.add_unredirected_header(
                "Authorization", "Basic " + base64.b64encode(pair).decode("ascii")
            )
        # The timeout is the fetch's, not each read's (see `_Deadline`).
        deadline = _Deadline(self._timeout)
        opener = urllib.request.OpenerDirector()
        for handler in (
            _PinnedHandler(
                _connect_address(url, self._override), self._source, self._context, deadline
            ),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
        ):
            opener.add_handler(handler)
        try:
            with opener.open(request, timeout=self._timeout) as response:
                data = _read_upto(response, self._max_bytes + 1)
        except TimeoutError:
            raise deadline.error(shown) from None
        except urllib.error.HTTPError as exc:
            exc.close()
            raise FetchError(f"{shown}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):  # connecting, or sending the request
                raise deadline.error(shown) from None
            raise FetchError(f"{shown}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{shown}: {exc or type(exc).__name__}") from None
        if len(data) > self._max_bytes:
            raise FetchError(f"{shown}: larger than {self._max_bytes} bytes")
        return data


def _read_upto(response: http.client.HTTPResponse, limit: int) -> bytes:
    """Up to `limit` bytes of the body, as they come (the response's reader keeps the
    fetch's deadline)."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        part = response.read1(min(65536, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


_RRQ, _DATA, _ACK, _ERROR, _OACK = 1, 3, 4, 5, 6
_ERR_UNDEFINED, _ERR_DISK_FULL, _ERR_ILLEGAL, _ERR_UNKNOWN_TID, _ERR_OPTION = 0, 3, 4, 5, 8
_BLKSIZE_DEFAULT = 512


class TftpFetcher:
    """A minimal TFTP client: RRQ in octet mode (RFC 1350) asking for `blksize`
    (RFC 2347/2348), lock-step DATA/ACK, retransmit on timeout.

    `timeout` and `retries` bound the wait for each packet; `fetch_timeout`, when given,
    bounds the whole transfer, which a server sending each block just in time (or
    repeating its OACK) would otherwise stretch without end.

    The file name is the URL path without its leading `/` (RFC 3617), which tftpd-hpa
    `-s` and `serve.TftpServer` both read relative to their root. After the last ACK the
    client does not dally: if that ACK is lost the server times out, with the file
    already received here.
    """

    def __init__(
        self,
        *,
        timeout: float = 1.0,
        retries: int = 5,
        blksize: int = 1428,
        host_override: HostOverride | None = None,
        max_bytes: int = MAX_FILE_BYTES,
        source_address: str | None = None,
        fetch_timeout: float | None = None,
    ) -> None:
        if not 8 <= blksize <= 65464:
            raise ValueError(f"blksize must be 8..65464, not {blksize}")
        self._timeout = timeout
        self._fetch_timeout = fetch_timeout
        self._retries = retries
        self._blksize = blksize
        self._override: HostOverride = dict(host_override or {})
        self._max_bytes = max_bytes
        self._source = source_address

    def fetch(self, url: RuleUrl) -> bytes:
        shown = display_url(url)
        if url.scheme != "tftp":
            raise FetchError(f"{shown}: not a TFTP URL")
        if not url.host:
            raise FetchError(f"{shown}: no TFTP server")
        host, port = _connect_address(url, self._override)
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError(f"{shown}: cannot resolve {host}: {exc}") from None
        family, _, _, _, server = info
        filename = url.path[1:] if url.path.startswith("/") else url.path
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                if self._source is not None:
                    sock.bind((self._source, 0))
                return self._get(sock, (str(server[0]), int(server[1])), filename, shown)
        except OSError as exc:
            raise FetchError(f"{shown}: {exc.strerror or exc}") from None

    def _get(
        self, sock: socket.socket, server: tuple[str, int], filename: str, shown: str
    ) -> bytes:
        options = b"" if self._blksize == _BLKSIZE_DEFAULT else b"blksize\0%d\0" % self._blksize
        outgoing = struct.pack("!H", _RRQ) + filename.encode("utf-8") + b"\0octet\0" + options
        destination: tuple[Any, ...] = server
        peer: tuple[Any, ...] | None = None  # the server's transfer ID (address, port)
        blksize = _BLKSIZE_DEFAULT
        expected = 1
        received = bytearray()
        attempts = 1
        whole = None if self._fetch_timeout is None else _Deadline(self._fetch_timeout)
        sock.sendto(outgoing, destination)
        deadline = time.monotonic() + self._timeout
        while True:
            now = time.monotonic()
            if whole is not None and now >= whole.at:
                if peer is None:
                    whole.stage = f"waiting for an answer from the TFTP server ({attempts} tries)"
                else:
                    whole.stage = f"waiting for block {expected} ({len(received)} bytes received)"
                    # (so that the server stops sending, rather than retrying to its timeout)
                    sock.sendto(_tftp_error(_ERR_UNDEFINED, "Transfer timed out"), peer)
                raise whole.error(shown)
            remaining = deadline - now
            if remaining <= 0:
                if attempts > self._retries:
                    raise FetchError(
                        f"{shown}: no answer from the TFTP server "
                        f"({attempts} tries, {self._timeout:g} s each)"
                    )
                attempts += 1
                sock.sendto(outgoing, destination)
                deadline = time.monotonic() + self._timeout
                continue
            sock.settimeout(remaining if whole is None else min(remaining, whole.at - now))
            try:
                packet, address = sock.recvfrom(65536)
            except TimeoutError:
                continue
            if peer is None:
                if address[0] != server[0]:
                    continue  # a stranger before the transfer has started
            elif address != peer:
                sock.sendto(_tftp_error(_ERR_UNKNOWN_TID, "Unknown transfer ID"), address)
                continue
            if len(packet) < 4:
                continue
            opcode, number = struct.unpack_from("!HH", packet)
            if opcode == _ERROR:
                message = packet[4:].split(b"\0", 1)[0].decode("ascii", "replace")
                raise FetchError(f"{shown}: TFTP error {number}: {message}")
            if opcode == _OACK and expected == 1 and not received:
                if peer is None:
                    peer = address
                    blksize = self._accepted_blksize(sock, peer, packet, shown)
                # Also for a repeated OACK: our ACK 0 was lost.
                outgoing, destination = struct.pack("!HH", _ACK, 0), peer
                sock.sendto(outgoing, destination)
                attempts, deadline = 1, time.monotonic() + self._timeout
                continue
            if opcode != _DATA:
                continue
            if peer is None:
                peer = address  # the server ignored our options
            if number != expected & 0xFFFF:
                if expected > 1 and number == (expected - 1) & 0xFFFF:
                    sock.sendto(struct.pack("!HH", _ACK, number), peer)  # our ACK was lost
                continue
            payload = packet[4:]
            if len(payload) > blksize:
                sock.sendto(_tftp_error(_ERR_ILLEGAL, "Block too large"), peer)
                raise FetchError(f"{shown}: the server sent a block larger than {blksize}")
            received += payload
            if len(received) > self._max_bytes:
                sock.sendto(_tftp_error(_ERR_DISK_FULL, "File too large"), peer)
                raise FetchError(f"{shown}: larger than {self._max_bytes} bytes")
            outgoing, destination = struct.pack("!HH", _ACK, number), peer
            sock.sendto(outgoing, destination)
            if len(payload) < blksize:
                return bytes(received)
            expected += 1
            attempts, deadline = 1, time.monotonic() + self._timeout

    def _accepted_blksize(
        self, sock: socket.socket, peer: tuple[Any, ...], packet: bytes, shown: str
    ) -> int:
        fields = packet[2:].split(b"\0")
        options = {
            name.decode("ascii", "replace").lower(): value.decode("ascii", "replace")
            for name, value in zip(fields[0::2], fields[1::2], strict=False)
        }
        if "blksize" not in options:
            return _BLKSIZE_DEFAULT
        value = options["blksize"]
        if not value.isascii() or not value.isdigit() or not 8 <= int(value) <= self._blksize:
            # RFC 2348: the server may only lower the size we asked for.
            sock.sendto(_tftp_error(_ERR_OPTION, "Bad blksize"), peer)
            raise FetchError(f"{shown}: the server answered blksize {value!r}")
        return int(value)


def _tftp_error(code: int, message: str) -> bytes:
    return struct.pack("!HH", _ERROR, code) + message.encode("ascii") + b"\0"


class MultiFetcher:
    """Dispatches on the URL scheme to one fetcher per scheme."""

    def __init__(self, by_scheme: Mapping[str, Fetcher]) -> None:
        self._by_scheme = dict(by_scheme)

    @classmethod
    def standard(
        cls,
        *,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        host_override: HostOverride | None = None,
        source_address: str | None = None,
    ) -> MultiFetcher:
        """http and https (https only with `ssl_context`) with urllib, tftp with TftpFetcher."""
        web = HttpFetcher(
            timeout=timeout,
            ssl_context=ssl_context,
            host_override=host_override,
            source_address=source_address,
        )
        # The TFTP timeout is per packet, with retries; `timeout` bounds the whole transfer.
        tftp = TftpFetcher(
            timeout=max(timeout / 5, 0.05),
            fetch_timeout=timeout,
            host_override=host_override,
            source_address=source_address,
        )
        return cls({"http": web, "https": web, "tftp": tftp})

    def fetch(self, url: RuleUrl) -> bytes:
        fetcher = self._by_scheme.get(url.scheme)
        if fetcher is None:
            raise FetchError(f"{display_url(url)}: no fetcher for {url.scheme}")
        return fetcher.fetch(url)
