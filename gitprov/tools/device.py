"""A device emulator: what a Flying Voice IP542N / G502N does when it resyncs.

For tests and `gitprov probe`. It follows the vendor overview
(`reference/flyingvoice-auto-provision.txt`) and, where that is silent, the SPA model
(`reference/protocol-notes.md`, "Device behaviour (resync)"):

1. Pick the source. With `DBID_PRV_OPTION66_ENABLED=1` (the factory default) and a
   server from DHCP option 66, TFTP the per-model Config File Name from that server;
   otherwise the Profile Rule, macro-expanded (path and `--key`), where a rule without
   a server means the option-66 server over TFTP.
2. Fetch; decrypt with the model's cipher if the rule has `--key`; parse strictly.
3. Compare `DBID_DBASE_VERSION` with the stored one (`!=` or `>`: which one the firmware
   uses is not public, so it is a constructor option); if it differs, store every
   parameter of the file and reboot.

Every failure leaves the stored parameters as they were, as on the device. Timers
(random delay, periodic resync, retry delay) are not emulated: a test asks for each
resync explicitly. Keys never appear in results, history, reprs or output: URLs are
shown with `[--key <redacted>]`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import os
import re
import secrets
import socket
import ssl
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from gitprov.crypto import Cipher, Mode
from gitprov.errors import GitprovError, UsageError
from gitprov.macros import device_variables, expand, normalise_mac
from gitprov.rule_url import DEFAULT_PORTS, RuleSyntaxError, RuleUrl, format_rule, parse_rule

__all__ = [
    "OPTION66_KEY",
    "PROFILE_RULE_KEY",
    "VERSION_KEY",
    "Compare",
    "Device",
    "DeviceState",
    "Event",
    "FetchError",
    "Fetcher",
    "HostOverride",
    "HttpFetcher",
    "MultiFetcher",
    "ParamFileError",
    "ProbeOptions",
    "ResyncResult",
    "Source",
    "Status",
    "TftpFetcher",
    "display_url",
    "load_state",
    "parse_option66_server",
    "parse_param_file",
    "probe",
    "save_state",
]

VERSION_KEY = "DBID_DBASE_VERSION"
PROFILE_RULE_KEY = "DBID_PROFILE_RULE"
OPTION66_KEY = "DBID_PRV_OPTION66_ENABLED"

REDACTED = "<redacted>"
MAX_FILE_BYTES = 1 << 20
"""Largest file a fetcher accepts: a device has a few MB of flash, a param.conf is ~1 KB."""

Compare = Literal["!=", ">"]
Source = Literal["option66", "profile-rule"]
Status = Literal[
    "applied",  # the version differed: every parameter stored, device reboots
    "unchanged",  # same version (or, with ">", not a higher one): nothing applied
    "fetch-failed",
    "decrypt-failed",
    "parse-failed",  # not a strict DBID file (also: garbage from a wrong key, 1 in 256)
    "rule-failed",  # nothing to fetch: no usable Profile Rule or option-66 server
]

HostOverride = Mapping[str, tuple[str, int]]
"""Test hook, like /etc/hosts: host name in a URL (any case) → (address, port) to connect
to. The request still names the original host (HTTP Host header, TLS SNI and certificate
check), so a rule naming `prov.example.net` can be served by 127.0.0.1:PORT."""


# --- errors ------------------------------------------------------------------------------


class FetchError(GitprovError):
    """A fetch failed. The message names the (redacted) URL and the reason."""


class ParamFileError(GitprovError):
    """Bytes that are not a strict param.conf. The message never quotes file content:
    it may be a secret, or garbage from a wrong key."""


# --- the strict param.conf parser --------------------------------------------------------

_NAME = re.compile(r"DBID_[A-Z0-9_]+")
# TAB separates per-line values; any other control character means garbage.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_param_file(data: bytes) -> dict[str, str]:
    """Every line `DBID_NAME=value`, UTF-8, LF-terminated (the last LF optional).

    Stricter than `formats.flyingvoice.parse` on purpose: no blank lines, no CR, no
    control characters but TAB, no key twice, and `DBID_DBASE_VERSION` present as a
    decimal number. CBC without a MAC decrypts with a wrong key about 1 time in 256 into
    garbage; this is what tells it apart, as the firmware's parser would refuse it.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamFileError(f"not UTF-8 (byte {exc.start})") from None
    if not text:
        raise ParamFileError("the file is empty")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        name, sep, value = line.partition("=")
        if not sep or not _NAME.fullmatch(name):
            raise ParamFileError(f"line {number} is not DBID_NAME=value")
        if _CONTROL.search(value):
            raise ParamFileError(f"line {number} ({name}) holds a control character")
        if name in out:
            raise ParamFileError(f"line {number}: {name} is given twice")
        out[name] = value
    version = out.get(VERSION_KEY)
    if version is None:
        raise ParamFileError(f"no {VERSION_KEY} line")
    if _version_number(version) is None:
        raise ParamFileError(f"{VERSION_KEY} is not a decimal number")
    return out


def _version_number(text: str | None) -> int | None:
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)


# --- URLs --------------------------------------------------------------------------------


def display_url(url: RuleUrl) -> str:
    """The URL as a rule, `--key` and `--pwd` shown as `<redacted>`: safe to print."""
    return format_rule(
        dataclasses.replace(
            url,
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


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Speaks to `host` (Host header) but connects to `address`."""

    def __init__(self, host: str, address: tuple[str, int], *, timeout: float) -> None:
        super().__init__(host, timeout=timeout)
        self._gp_address = address

    def connect(self) -> None:
        self.sock = socket.create_connection(self._gp_address, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Like `_PinnedHTTPConnection`, with SNI and certificate check against `host`."""

    def __init__(
        self, host: str, address: tuple[str, int], context: ssl.SSLContext, *, timeout: float
    ) -> None:
        super().__init__(host, timeout=timeout, context=context)
        self._gp_address = address
        self._gp_context = context

    def connect(self) -> None:
        raw = socket.create_connection(self._gp_address, self.timeout)
        try:
            self.sock = self._gp_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


class _PinnedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None) -> None:
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self, context=context)
        self._gp_address = address
        self._gp_context = context

    def _plain(self, host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
        return _PinnedHTTPConnection(host, self._gp_address, timeout=kwargs["timeout"])

    def _tls(self, host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
        assert self._gp_context is not None
        return _PinnedHTTPSConnection(
            host, self._gp_address, self._gp_context, timeout=kwargs["timeout"]
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
    fetches exactly the URL it was given, and a redirect is reported as a failure."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        host_override: HostOverride | None = None,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self._timeout = timeout
        self._context = ssl_context
        self._override: HostOverride = dict(host_override or {})
        self._max_bytes = max_bytes

    def fetch(self, url: RuleUrl) -> bytes:
        shown = display_url(url)
        if url.scheme not in ("http", "https"):
            raise FetchError(f"{shown}: not an HTTP URL")
        if url.scheme == "https" and self._context is None:
            raise FetchError(
                f"{shown}: https needs an SSL context",
                hint="give the fetcher an ssl.SSLContext (probe: --cacert, --cert)",
            )
        host = f"[{url.host}]" if ":" in url.host else url.host
        port = "" if url.port == DEFAULT_PORTS[url.scheme] else f":{url.port}"
        path = urllib.parse.quote(url.path, safe=_PATH_SAFE)
        request = urllib.request.Request(
            f"{url.scheme}://{host}{port}{path}",
            headers={"User-Agent": "gitprov-device-emulator", "Accept": "*/*"},
        )
        if url.uid is not None:
            pair = f"{url.uid}:{url.pwd or ''}".encode()
            request.add_unredirected_header(
                "Authorization", "Basic " + base64.b64encode(pair).decode("ascii")
            )
        opener = urllib.request.OpenerDirector()
        for handler in (
            _PinnedHandler(_connect_address(url, self._override), self._context),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
        ):
            opener.add_handler(handler)
        try:
            with opener.open(request, timeout=self._timeout) as response:
                data: bytes = response.read(self._max_bytes + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise FetchError(f"{shown}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise FetchError(f"{shown}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{shown}: {exc or type(exc).__name__}") from None
        if len(data) > self._max_bytes:
            raise FetchError(f"{shown}: larger than {self._max_bytes} bytes")
        return data


_RRQ, _DATA, _ACK, _ERROR, _OACK = 1, 3, 4, 5, 6
_ERR_UNDEFINED, _ERR_DISK_FULL, _ERR_ILLEGAL, _ERR_UNKNOWN_TID, _ERR_OPTION = 0, 3, 4, 5, 8
_BLKSIZE_DEFAULT = 512


class TftpFetcher:
    """A minimal TFTP client: RRQ in octet mode (RFC 1350) asking for `blksize`
    (RFC 2347/2348), lock-step DATA/ACK, retransmit on timeout.

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
    ) -> None:
        if not 8 <= blksize <= 65464:
            raise ValueError(f"blksize must be 8..65464, not {blksize}")
        self._timeout = timeout
        self._retries = retries
        self._blksize = blksize
        self._override: HostOverride = dict(host_override or {})
        self._max_bytes = max_bytes

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
        sock.sendto(outgoing, destination)
        deadline = time.monotonic() + self._timeout
        while True:
            remaining = deadline - time.monotonic()
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
            sock.settimeout(remaining)
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
    ) -> MultiFetcher:
        """http and https (https only with `ssl_context`) with urllib, tftp with TftpFetcher."""
        web = HttpFetcher(timeout=timeout, ssl_context=ssl_context, host_override=host_override)
        # The TFTP timeout is per packet; `timeout` bounds the whole exchange of a small file.
        tftp = TftpFetcher(timeout=max(timeout / 5, 0.05), host_override=host_override)
        return cls({"http": web, "https": web, "tftp": tftp})

    def fetch(self, url: RuleUrl) -> bytes:
        fetcher = self._by_scheme.get(url.scheme)
        if fetcher is None:
            raise FetchError(f"{display_url(url)}: no fetcher for {url.scheme}")
        return fetcher.fetch(url)


# --- the device --------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One entry of a device's history: `kind` is "resync", a `Status`, or "reboot"."""

    kind: str
    detail: str = ""


def _factory_params() -> dict[str, str]:
    # Vendor overview 2.1: Option 66 defaults to enabled, Profile Rule to empty. A device
    # that was never provisioned has no DBID_DBASE_VERSION: any version is new to it.
    return {OPTION66_KEY: "1", PROFILE_RULE_KEY: ""}


@dataclass(repr=False)
class DeviceState:
    """What one device holds. `params` are its stored DBID values (per-line values
    TAB-joined, as in the file); they hold secrets, hence no generated repr.

    `config_file_name` defaults to `<product_name>.conf`; `option66_server` is what DHCP
    option 66 gave (`host` or `host:port`), None when DHCP gave none; `cipher` is the
    model's decryption setting (the vendor's algorithm is not public).
    """

    mac: str
    product_name: str = "IP542N"
    serial: str = ""
    sw_version: str = ""
    hw_version: str = ""
    ip: str = ""
    params: dict[str, str] = field(default_factory=_factory_params)
    config_file_name: str = ""
    option66_server: str | None = None
    cipher: Cipher = field(default_factory=Cipher)
    history: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        mac = normalise_mac(self.mac)
        if mac is None:
            raise ValueError(f"not a MAC address: {self.mac!r}")
        self.mac = mac
        if not self.config_file_name:
            self.config_file_name = f"{self.product_name}.conf"

    def __repr__(self) -> str:
        return (
            f"DeviceState(mac={self.mac!r}, product_name={self.product_name!r}, "
            f"version={self.version!r}, params=<{len(self.params)} values>, "
            f"option66_server={self.option66_server!r})"
        )

    @property
    def version(self) -> str | None:
        return self.params.get(VERSION_KEY)

    def variables(self) -> dict[str, str]:
        """The macro variables: MA, MAU, MAC, and PN, SN, IP, SWVER, HWVER when set."""
        return device_variables(
            self.mac,
            product_name=self.product_name,
            serial=self.serial,
            ip=self.ip,
            swver=self.sw_version,
            hwver=self.hw_version,
        )


@dataclass(frozen=True)
class ResyncResult:
    """One resync. `url` is redacted (safe to print); `version_offered` is the fetched
    file's version; `changed` the keys whose stored value changed (only when applied)."""

    status: Status
    source: Source | None
    url: str
    version_before: str | None
    version_after: str | None
    version_offered: str | None = None
    changed: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("applied", "unchanged")


class _NoSource(Exception):
    pass


class Device:
    """A device that resyncs as the reference describes; see the module docstring.

    `compare` is how `DBID_DBASE_VERSION` decides: "!=" applies any other version (the
    vendor says "change"), ">" only a higher one.
    """

    def __init__(self, state: DeviceState, *, compare: Compare = "!=") -> None:
        if compare not in ("!=", ">"):
            raise ValueError(f"compare must be '!=' or '>', not {compare!r}")
        self.state = state
        self.compare: Compare = compare

    def source(self) -> tuple[Source, RuleUrl]:
        """Where the next resync fetches from, macros expanded. Raises `GitprovError`
        when there is nothing to fetch."""
        try:
            return self._source()
        except _NoSource as exc:
            raise GitprovError(str(exc)) from None

    def _source(self) -> tuple[Source, RuleUrl]:
        state = self.state
        option66 = self._option66_server()
        # Vendor overview 2.1: with Option 66 enabled the Profile Rule "has no effect". A
        # device that got no option 66 from DHCP falls back to its Profile Rule.
        if state.params.get(OPTION66_KEY, "1") == "1" and option66 is not None:
            host, port = option66
            url = RuleUrl("tftp", host, port, "/" + state.config_file_name, None, None, None, True)
            return "option66", url
        text = state.params.get(PROFILE_RULE_KEY, "")
        if not text.strip():
            raise _NoSource("no Profile Rule, and no option-66 server in use")
        try:
            rule = parse_rule(text)
        except RuleSyntaxError as exc:
            raise _NoSource(f"the Profile Rule does not parse: {_rule_error(text, exc)}") from None
        if not rule.host:
            if option66 is None:
                raise _NoSource("the Profile Rule names no server and DHCP gave no option 66")
            rule = dataclasses.replace(rule, host=option66[0], port=option66[1])
        variables = state.variables()
        return "profile-rule", dataclasses.replace(
            rule,
            path=expand(rule.path, variables),
            key=None if rule.key is None else expand(rule.key, variables),
            explicit_scheme=True,
        )

    def _option66_server(self) -> tuple[str, int] | None:
        if self.state.option66_server is None:
            return None
        try:
            return parse_option66_server(self.state.option66_server)
        except ValueError as exc:
            raise _NoSource(str(exc)) from None

    def resync(self, fetcher: Fetcher) -> ResyncResult:
        """One resync: fetch, decrypt, parse, compare, apply. Failures change nothing."""
        state = self.state
        before = state.version
        try:
            source, url = self._source()
        except _NoSource as exc:
            return self._end(ResyncResult("rule-failed", None, "", before, before, detail=str(exc)))
        shown = display_url(url)
        state.history.append(Event("resync", f"{source} {shown}"))

        def kept(status: Status, detail: str, offered: str | None = None) -> ResyncResult:
            return self._end(
                ResyncResult(status, source, shown, before, before, offered, (), detail)
            )

        try:
            data = fetcher.fetch(url)
        except FetchError as exc:
            return kept("fetch-failed", exc.message)
        except OSError as exc:
            return kept("fetch-failed", f"{shown}: {exc}")
        if url.key is not None:
            try:
                data = state.cipher.decrypt(data, url.key)
            except GitprovError as exc:  # DecryptError, or a key the cipher refuses
                return kept("decrypt-failed", exc.message)
        try:
            params = parse_param_file(data)
        except ParamFileError as exc:
            return kept("parse-failed", exc.message)
        offered = params[VERSION_KEY]
        if not self._is_new(before, offered):
            relation = "the same as" if offered == before else "not higher than"
            detail = f"version {offered} is {relation} the stored {before}"
            return kept("unchanged", detail, offered)
        changed = tuple(sorted(k for k, v in params.items() if state.params.get(k) != v))
        state.params.update(params)
        state.history.append(Event("applied", f"version {before} -> {offered}"))
        state.history.append(Event("reboot"))
        return ResyncResult("applied", source, shown, before, offered, offered, changed)

    def _end(self, result: ResyncResult) -> ResyncResult:
        self.state.history.append(Event(result.status, result.detail))
        return result

    def _is_new(self, stored: str | None, offered: str) -> bool:
        current = _version_number(stored)
        if current is None:
            return True  # never provisioned (or a stored value that is not a number)
        number = int(offered)
        return number > current if self.compare == ">" else number != current

    def resync_until_stable(self, fetcher: Fetcher, max_rounds: int = 5) -> list[ResyncResult]:
        """Resync until a round is not "applied" (unchanged, or failed), at most
        `max_rounds` times; every round's result.

        Each round after an "applied" one stands for the device's next resync. The vendor
        text says the reboot after an update does not itself trigger Resync On Reset, so on
        a real device that next resync is the periodic one; only the timing differs.
        """
        if max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        results: list[ResyncResult] = []
        for _ in range(max_rounds):
            results.append(self.resync(fetcher))
            if results[-1].status != "applied":
                break
        return results


def _rule_error(text: str, exc: RuleSyntaxError) -> str:
    # Some messages quote a word of the option bracket, which may be part of a key.
    if "--key" in text or "--pwd" in text:
        return f"error at character {exc.offset + 1} (message withheld: the rule holds a secret)"
    return f"{exc.message} (character {exc.offset + 1})"


# --- state files -------------------------------------------------------------------------

_STATE_FORMAT = 1


def save_state(path: Path, state: DeviceState) -> None:
    """Write `state` as JSON, atomically and readable by the owner only: the stored
    parameters hold the device's secrets (SIP passwords, the key in the Profile Rule)."""
    document = {
        "format": _STATE_FORMAT,
        "mac": state.mac,
        "product_name": state.product_name,
        "serial": state.serial,
        "sw_version": state.sw_version,
        "hw_version": state.hw_version,
        "ip": state.ip,
        "config_file_name": state.config_file_name,
        "option66_server": state.option66_server,
        "cipher": {
            "mode": state.cipher.mode.value,
            "iterations": state.cipher.iterations,
            "gzip": state.cipher.gzip,
        },
        "params": state.params,
        "history": [{"kind": e.kind, "detail": e.detail} for e in state.history],
    }
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state(path: Path) -> DeviceState:
    """Read what `save_state` wrote; a malformed file is a `GitprovError`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GitprovError(f"cannot read device state {path}: {exc}") from None
    try:
        if document.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown format {document.get('format')!r}")
        cipher = document["cipher"]
        params = document["params"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise ValueError("params must map names to strings")
        option66 = document["option66_server"]
        return DeviceState(
            mac=str(document["mac"]),
            product_name=str(document["product_name"]),
            serial=str(document["serial"]),
            sw_version=str(document["sw_version"]),
            hw_version=str(document["hw_version"]),
            ip=str(document["ip"]),
            params=dict(params),
            config_file_name=str(document["config_file_name"]),
            option66_server=None if option66 is None else str(option66),
            cipher=Cipher(Mode(cipher["mode"]), int(cipher["iterations"]), bool(cipher["gzip"])),
            history=[Event(str(e["kind"]), str(e["detail"])) for e in document["history"]],
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise GitprovError(
            f"{path} is not a device state file: {exc}",
            hint="delete it to start from a factory-default device",
        ) from None


# --- `gitprov probe` ---------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeOptions:
    mac: str  # normalised
    url: str | None = None  # the Profile Rule
    key: str | None = None  # becomes the rule's [--key …]
    mode: str | None = None
    iterations: int | None = None
    gzip: bool | None = None
    option66: str | None = None  # HOST[:PORT]
    config_file_name: str | None = None
    product_name: str = "IP542N"
    serial: str = ""
    sw_version: str = ""
    hw_version: str = ""
    state: Path | None = None  # read if it exists, written back after
    until_stable: bool = False
    max_rounds: int = 5
    compare: Literal["!=", ">"] = "!="
    timeout: float = 5.0
    resolve: tuple[str, ...] = ()  # NAME=ADDR:PORT
    cacert: str | None = None
    cert: str | None = None
    cert_key: str | None = None


def probe(o: ProbeOptions) -> list[ResyncResult]:
    """One emulated device's resync (or resyncs, until stable) against a live server."""
    if o.max_rounds < 1:
        raise UsageError("--max-rounds must be at least 1")
    if o.key is not None and o.url is None:
        raise UsageError("--key needs --url")
    if o.state is not None and o.state.exists():
        state = load_state(o.state)
        if state.mac != o.mac:
            raise UsageError(f"{o.state} is the state of {state.mac}, not {o.mac}")
    else:
        state = DeviceState(
            o.mac,
            product_name=o.product_name,
            serial=o.serial,
            sw_version=o.sw_version,
            hw_version=o.hw_version,
        )
    if o.url is not None:
        state.params[PROFILE_RULE_KEY] = _probe_rule(o.url, o.key)
    if o.option66 is not None:
        try:
            parse_option66_server(o.option66)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        state.option66_server = o.option66
    if o.config_file_name:
        state.config_file_name = o.config_file_name
    if o.mode is not None or o.iterations is not None or o.gzip is not None:
        state.cipher = Cipher(
            Mode(o.mode) if o.mode is not None else state.cipher.mode,
            o.iterations if o.iterations is not None else state.cipher.iterations,
            o.gzip if o.gzip is not None else state.cipher.gzip,
        )
    if not state.params.get(PROFILE_RULE_KEY) and state.option66_server is None:
        raise UsageError("nothing to fetch", hint="give --url RULE, or --option66 HOST[:PORT]")
    fetcher = MultiFetcher.standard(
        timeout=o.timeout,
        ssl_context=_probe_tls(o.cacert, o.cert, o.cert_key),
        host_override=_probe_resolve(o.resolve),
    )
    device = Device(state, compare=o.compare)
    if o.until_stable:
        results = device.resync_until_stable(fetcher, o.max_rounds)
    else:
        results = [device.resync(fetcher)]
    if o.state is not None:
        save_state(o.state, state)
    return results


def _probe_rule(url: str, key: str | None) -> str:
    try:
        rule = parse_rule(url)
    except RuleSyntaxError as exc:
        raise UsageError(f"--url: {_rule_error(url, exc)}") from None
    if key is None:
        return url
    if rule.key is not None:
        raise UsageError("the key is given twice: in --url's [--key …] and as --key")
    if not key or "\0" in key:
        raise UsageError("--key must be a non-empty passphrase")
    try:
        return format_rule(dataclasses.replace(rule, key=key))
    except ValueError:
        raise UsageError("--key holds both quote characters; a rule cannot carry it") from None


def _probe_resolve(entries: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    override: dict[str, tuple[str, int]] = {}
    for entry in entries:
        name, sep, target = entry.partition("=")
        try:
            if not sep or not name or ":" not in target:
                raise ValueError(entry)
            override[name] = parse_option66_server(target)
        except ValueError:
            raise UsageError(
                f"--resolve {entry!r}: write NAME=ADDR:PORT, e.g. prov.example.net=127.0.0.1:8080"
            ) from None
    return override


def _probe_tls(cacert: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    if key is not None and cert is None:
        raise UsageError("--cert-key needs --cert")
    try:
        context = ssl.create_default_context(cafile=cacert)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise GitprovError(
            f"cannot load TLS files: {exc}", hint="--cacert, --cert and --cert-key take PEM files"
        ) from None
    return context
