"""What the devices really fetched: the publisher's manifest against the servers' logs.

`fleet_status` reads the manifest of a state dir (which version of which per-MAC file is
published) and streams any number of logs, line by line:

- the fetch log of `gitprov serve` (JSON lines, docs/fleet-status.md "Fetch log"): each
  line names the version served, from the manifest, when the bytes sent were the ones it
  lists;
- nginx access logs in nginx's default `combined` format (also `common`): no version;
- tftpd-hpa's syslog lines (`in.tftpd[PID]: RRQ from ADDR filename NAME`, logged with
  `--verbose`; a second `--verbose` adds `sending NAK (CODE, MESSAGE) to ADDR` for
  refusals), as rsyslog writes them (RFC 3164 or RFC 3339 time stamps) or as
  `journalctl` prints them (`short`, `short-iso`).

Plain and gzip-compressed files (rotated logs) are read alike. Memory grows with the
devices and the scanning clients, never with the number of lines.

nginx and tftpd-hpa do not know versions. A successful fetch of a device's file there is
taken to be the published version when it was logged in a later second than the file
took its place in the root (the file's ctime, when the root is readable here and the
file is the one the manifest recorded; else its recorded mtime; else the publish time),
and, when the log gives the bytes sent, the bytes are the file's size. An earlier fetch
got an older version whose number the log cannot tell (`None`). Lines that cannot be
read are counted and kept by file:line; they never stop the reading.

Nothing here prints: the CLI (gitprov.cli.fleet) renders the report.
"""

from __future__ import annotations

import datetime
import gzip
import io
import json
import math
import os
import re
import stat
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote_to_bytes, urlsplit

from gitprov.errors import UsageError
from gitprov.macros import normalise_mac
from gitprov.plan import MANIFEST, Kind, Manifest, load_manifest
from gitprov.smallfile import fifo_first
from gitprov.tools.serve import mac_part, other_mac_spelling

__all__ = [
    "FORMATS",
    "Adoption",
    "DeviceStatus",
    "FleetReport",
    "LogSource",
    "LogSummary",
    "Malformed",
    "Scan",
    "Seen",
    "fleet_status",
    "parse_log_source",
]

Format = Literal["gitprov", "nginx", "tftpd"]
FORMATS: tuple[Format, ...] = ("gitprov", "nginx", "tftpd")
State = Literal["current", "stale", "never"]
Progress = Callable[[str, int, int], None]

MAX_LINE = 64 * 1024  # longer lines are malformed (and not held in memory whole)
MALFORMED_KEPT = 50  # malformed lines listed by file:line; all are counted
SCAN_MACS_KEPT = 1000  # distinct MACs counted exactly per scanning client
SCAN_CLIENTS_KEPT = 10_000  # scanning clients told apart; beyond, only counted
SCAN_EXAMPLES = 3
MAX_CLIENT = 255  # characters: longer, a line's client is no address
MAX_BUCKETS = 400  # the adoption chart's newest buckets
MAX_SERIES = 10  # versions in the chart; older ones join "older"
TFTP_PENDING_SECONDS = 30.0  # a request's NAK follows within this (log time)
_PROGRESS_EVERY = 65536  # lines


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSource:
    """A log to read; `format` None: told from its first lines."""

    path: Path
    format: Format | None = None


def parse_log_source(text: str) -> LogSource:
    """`--log` as given: `PATH`, or `FORMAT:PATH` with FORMAT one of `FORMATS`."""
    prefix, sep, rest = text.partition(":")
    if sep and prefix in FORMATS and rest:
        return LogSource(Path(rest), prefix)
    return LogSource(Path(text))


# --- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as a log tells it: when (RFC 3339 UTC), how, from where, for what."""

    at: str
    protocol: str
    client: str
    path: str
    status: int
    log: str  # file:line


@dataclass(frozen=True)
class DeviceStatus:
    """One published device. `fetched_version` is the version of its last successful
    fetch of its file (None: none, or a version the log cannot tell, older than the
    published one); `version_from` says how it is known: "log" (the fetch log names
    it), "write-time" (fetched after the published file took its place), None."""

    mac: str
    model: str
    file: str
    published_version: int
    state: State
    fetched_version: int | None
    fetched: Seen | None
    version_from: Literal["log", "write-time"] | None
    last_seen: Seen | None


@dataclass(frozen=True)
class Scan:
    """Requests from one client for per-MAC names of MACs the manifest does not list."""

    client: str
    requests: int
    macs: int  # distinct MACs asked for (exact up to SCAN_MACS_KEPT)
    macs_capped: bool
    first: str
    last: str
    examples: tuple[str, ...]  # a few paths asked for, as asked


@dataclass(frozen=True)
class Malformed:
    where: str  # file:line
    reason: str
    text: str  # the start of the line, escaped: safe to show anywhere


@dataclass(frozen=True)
class LogSummary:
    path: str
    format: Format | None
    lines: int
    requests: int
    malformed: int
    skipped: int  # well-formed lines that are no request (other programs in a syslog file)


@dataclass(frozen=True)
class Adoption:
    """Devices per version at the end of each bucket (`bucket` "hour" or "day", starts
    in `times`), from the successful fetches in the logs. `series` are version labels,
    "older" first when some fetches got a version the logs cannot tell or an old one;
    `counts[i][j]` is the devices on `series[j]` at the end of `times[i]`."""

    bucket: Literal["hour", "day"]
    times: tuple[str, ...]
    series: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class FleetReport:
    state_dir: str
    commit: str
    published_at: str
    generated_at: str
    devices: tuple[DeviceStatus, ...]
    scans: tuple[Scan, ...]
    scan_clients_dropped: int  # scanning clients beyond SCAN_CLIENTS_KEPT, only counted
    adoption: Adoption
    logs: tuple[LogSummary, ...]
    malformed: tuple[Malformed, ...]  # the first MALFORMED_KEPT
    malformed_total: int

    def count(self, state: State) -> int:
        return sum(1 for d in self.devices if d.state == state)


# --- one request -------------------------------------------------------------------------


@dataclass
class _Request:
    at: float  # POSIX seconds (whole seconds from nginx and tftpd-hpa)
    protocol: str
    client: str
    path: str  # as asked, decoded, for display
    name: str  # relative to the root, to look up in the manifest
    served: str | None  # the file served, when the log says (gitprov: `file`; tftpd remap)
    status: int
    size: int | None  # bytes sent, when logged
    version: int | None
    versioned: bool  # the line states the version (the fetch log): never inferred
    body: bool  # the body was asked for (not HEAD)
    mac: str | None
    where: str


class _Bad(Exception):
    """A line that cannot be read; its message says why."""


class _Skip(Exception):
    """A well-formed line that is no request (another program's syslog line)."""


def _utc(ts: float) -> str:
    at = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _display(raw: bytes) -> str:
    """Bytes as text: UTF-8 where it is, `\\xNN` where it is not."""
    return raw.decode("utf-8", "backslashreplace")


def _printable(text: str, limit: int = 120) -> str:
    cut = text[:limit]
    escaped = cut.encode("unicode_escape").decode("ascii")
    return escaped + ("..." if len(text) > limit else "")


# -- gitprov serve's fetch log


def _parse_gitprov(line: str, where: str, _ctx: _Context) -> _Request | None:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _Bad(f"not JSON: {exc.msg}") from None
    except (ValueError, RecursionError):  # a number too long, or nested too deep
        raise _Bad("not JSON gitprov can read") from None
    if not isinstance(doc, dict):
        raise _Bad("not a JSON object")
    try:
        when = doc["time"]
        protocol = doc["protocol"]
        client = doc["client"]
        path = doc["path"]
        status = doc["status"]
    except KeyError as exc:
        raise _Bad(f"no {exc.args[0]!r}") from None
    if not all(isinstance(v, str) for v in (when, protocol, client, path)):
        raise _Bad("time, protocol, client and path must be strings")
    if type(status) is not int:
        raise _Bad("status must be an integer")
    at = _iso_time(when)
    served = doc.get("file")
    version = doc.get("version")
    size = doc.get("bytes")
    mac = doc.get("mac")
    if served is not None and not isinstance(served, str):
        raise _Bad("file must be a string or null")
    if version is not None and type(version) is not int:
        raise _Bad("version must be an integer or null")
    if size is not None and type(size) is not int:
        raise _Bad("bytes must be an integer or null")
    if mac is not None and (not isinstance(mac, str) or normalise_mac(mac) != mac):
        raise _Bad("mac must be 12 lower-case hex digits or null")
    kind = doc.get("kind")
    if kind not in (None, Kind.DEVICE):
        version = None  # a bootstrap's version is no device's
    return _Request(
        at=at,
        protocol=protocol,
        client=_client(client),
        path=path,
        name=path.lstrip("/"),
        served=served,
        status=status,
        size=size,
        version=version,
        versioned=True,
        # HEAD is logged with 0 bytes and no version; a device never sends one.
        body=size != 0 or version is not None,
        mac=mac,
        where=where,
    )


def _iso_time(text: str) -> float:
    try:
        at = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(f"not an RFC 3339 time: {_printable(text, 40)}") from None
    if at.tzinfo is None:
        raise _Bad(f"time without a zone: {_printable(text, 40)}")
    return _in_range(at.timestamp(), text)


# The times a report can show (in UTC, years 1 to 9999): a zone's offset takes a time
# written at either end of the calendar past it.
_FIRST = datetime.datetime.min.replace(tzinfo=datetime.UTC).timestamp()
_LAST = datetime.datetime.max.replace(tzinfo=datetime.UTC).timestamp()


def _in_range(ts: float, text: str) -> float:
    if _FIRST + 1 < ts < _LAST - 1:
        return ts
    # At the very ends the bounds are not enough: a float a microsecond short of _LAST
    # rounds up to year 10000 when the report turns it back into a date.
    try:
        _utc(ts)
    except (ValueError, OverflowError, OSError):
        raise _Bad(f"a time out of the calendar in UTC: {_printable(text, 40)}") from None
    return ts


def _client(text: str) -> str:
    # An address is at most 45 characters, 62 with an IPv6 zone; a scanning client is
    # kept by its name (SCAN_CLIENTS_KEPT of them), which a crafted line of 64 KiB would
    # make 640 MB.
    if len(text) > MAX_CLIENT:
        raise _Bad(f"not a client address: {_printable(text, 40)}")
    return text


def _number(digits: str, what: str) -> int:
    # A `\d+` field is unbounded, and int() raises ValueError past 4300 digits; no log
    # counts beyond 2**63.
    if len(digits) > 19:
        raise _Bad(f"{what} out of range: {_printable(digits, 20)}")
    return int(digits)


# -- nginx


_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_NGINX = re.compile(
    r"(\S+) \S+ (?:\S+|\"[^\"]*\") \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    + _QUOTED
    + r" (\d{3}) (\d+|-)(?: "
    + _QUOTED
    + " "
    + _QUOTED
    + r")?"
)
_NGINX_TIME = re.compile(r"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})|\\(.)")


def _nginx_unescape(text: str) -> bytes:
    """nginx writes `"`, `\\`, controls and bytes beyond ASCII as `\\xNN`."""
    raw = text.encode("utf-8", "surrogateescape")
    if b"\\" not in raw:
        return raw

    def one(m: re.Match[bytes]) -> bytes:
        return bytes([int(m.group(1), 16)]) if m.group(1) else m.group(2)

    return _ESCAPE.sub(one, raw)


def _parse_nginx(line: str, where: str, ctx: _Context) -> _Request | None:
    m = _NGINX.fullmatch(line)
    if m is None:
        raise _Bad("not nginx's combined (or common) format")
    client, stamp, request, status, size = m.group(1, 2, 3, 4, 5)
    at = ctx.nginx_time(stamp)
    parts = _nginx_unescape(request).split(b" ")
    if len(parts) == 3:
        method, target = parts[0], parts[1]
    elif len(parts) == 2:  # HTTP/0.9
        method, target = parts
    else:  # "-" or a request nginx could not parse (logged with 400)
        method, target = b"", b""
    # Split as latin-1, one character per byte: any bytes go through and come back.
    text = target.decode("latin-1")
    if text.startswith("/") and "?" not in text and "#" not in text:
        raw_path = text
    else:
        try:
            raw_path = urlsplit(text).path if text.startswith("/") or "://" in text else ""
        except ValueError:  # "http://[": not a URL
            raise _Bad("not a request target") from None
    path_bytes = unquote_to_bytes(raw_path.encode("latin-1"))
    path = _display(path_bytes)
    return _Request(
        at=at,
        protocol="http",
        client=_client(client),
        path=path,
        name=path.lstrip("/"),
        served=None,
        status=int(status),
        size=None if size == "-" else _number(size, "bytes sent"),
        version=None,
        versioned=False,
        body=method == b"GET",
        mac=None,
        where=where,
    )


# -- tftpd-hpa in syslog


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_SYSLOG = re.compile(
    r"(?:<\d{1,3}>)?"
    r"(?P<stamp>(?P<month>[A-Z][a-z]{2}) (?P<day>[ \d]\d) (?P<clock>\d\d:\d\d:\d\d)"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)))"
    r" (?P<host>\S+) (?P<tag>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)"
)
_RRQ = re.compile(
    r"(?P<op>RRQ|WRQ) from (?P<addr>\S+) filename (?P<name>.*?)(?: remapped to (?P<to>.*))?"
)
_NAK = re.compile(r"sending NAK \((?P<code>\d+), (?P<text>.*)\) to (?P<addr>\S+)")
# tftpd-hpa's error codes (RFC 1350) in the fetch log's HTTP vocabulary.
_NAK_STATUS = {1: 404, 2: 403, 4: 400, 5: 400, 8: 400}


def _syslog_time(m: re.Match[str], ctx: _Context) -> float:
    if m.group("iso"):
        iso = m.group("iso")
        if re.search(r"[+-]\d{4}$", iso):  # journalctl's short-iso: +0000
            iso = iso[:-2] + ":" + iso[-2:]
        return _iso_time(iso)
    # RFC 3164 has no year and no zone: local time, in the year that puts the line at
    # most a day after the file was last written (a log spanning New Year works).
    month = _MONTHS.get(m.group("month"))
    if month is None:
        raise _Bad(f"not a month: {m.group('month')}")
    hour, minute, second = (int(x) for x in m.group("clock").split(":"))
    day = int(m.group("day"))
    for year in (ctx.year, ctx.year - 1):
        try:
            at = datetime.datetime(year, month, day, hour, minute, second).astimezone()
        except ValueError:
            continue
        if at.timestamp() <= ctx.written + 86400:
            return at.timestamp()
    raise _Bad("not a date")


def _parse_tftpd(line: str, where: str, ctx: _Context) -> _Request | None:
    m = _SYSLOG.fullmatch(line)
    if m is None:
        raise _Bad("not a syslog line (time host program[pid]: message)")
    if not m.group("tag").endswith("tftpd"):
        raise _Skip()
    at = _syslog_time(m, ctx)
    process = (m.group("host"), m.group("pid") or "")
    msg = m.group("msg").rstrip("\n")
    rrq = _RRQ.fullmatch(msg)
    if rrq is not None:
        if rrq.group("op") == "WRQ":
            raise _Skip()
        name = rrq.group("name")
        to = rrq.group("to")
        request = _Request(
            at=at,
            protocol="tftp",
            client=_client(rrq.group("addr")),
            path=name,
            name=(to if to is not None else name).lstrip("/"),
            served=to.lstrip("/") if to is not None else None,
            status=200,
            size=None,
            version=None,
            versioned=False,
            body=True,
            mac=None,
            where=where,
        )
        # Its outcome is known only when no NAK follows: held back until then.
        ctx.hold(process, request)
        return None
    nak = _NAK.fullmatch(msg)
    if nak is not None:
        code = _number(nak.group("code"), "NAK code")  # (before its RRQ is taken)
        held = ctx.pending.pop(process, None)
        if held is not None:
            held.status = _NAK_STATUS.get(code, 500)
            return held
        raise _Skip()  # refused before it was logged (a map-file rule)
    raise _Skip()  # connect, remap, warnings: no request


_PARSERS = {"gitprov": _parse_gitprov, "nginx": _parse_nginx, "tftpd": _parse_tftpd}


def _detect(line: str) -> Format | None:
    text = line.strip()
    if text.startswith("{"):
        return "gitprov"
    if _NGINX.fullmatch(text):
        return "nginx"
    m = _SYSLOG.fullmatch(text)
    if m is not None and m.group("tag").endswith("tftpd"):
        return "tftpd"
    return None


class _Context:
    """What parsing one file needs besides the line: the year of RFC 3164 stamps, and
    tftpd-hpa's RRQs waiting for a NAK of the same process."""

    def __init__(self, written: float) -> None:
        try:
            year = datetime.datetime.fromtimestamp(written).year
        except (ValueError, OverflowError, OSError):
            # A modification time beyond the calendar (a clock or a copy gone wrong): the
            # year of RFC 3164 stamps is then today's, as it is for a pipe.
            written = time.time()
            year = datetime.datetime.fromtimestamp(written).year
        self.written = written
        self.year = year
        self.pending: OrderedDict[tuple[str, str], _Request] = OrderedDict()
        self.ready: list[_Request] = []
        self._stamp = ""
        self._seconds = 0.0

    def nginx_time(self, stamp: str) -> float:
        """`01/May/2024:12:00:00 +0200` as POSIX seconds; one line after another mostly
        repeats the last stamp, and strptime is most of a line's cost."""
        if stamp == self._stamp:
            return self._seconds
        m = _NGINX_TIME.fullmatch(stamp)
        month = _MONTHS.get(m.group(2)) if m is not None else None
        if m is None or month is None:
            raise _Bad(f"not a time: {stamp}")
        day, year, hour, minute, second = (int(m.group(i)) for i in (1, 3, 4, 5, 6))
        offset = (int(m.group(8)) * 60 + int(m.group(9))) * 60 * (-1 if m.group(7) == "-" else 1)
        try:
            at = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
        except ValueError:
            raise _Bad(f"not a time: {stamp}") from None
        self._stamp, self._seconds = stamp, _in_range(at.timestamp() - offset, stamp)
        return self._seconds

    def hold(self, process: tuple[str, str], request: _Request) -> None:
        """Keep `request` until its process logs a NAK, another request, or time passes."""
        earlier = self.pending.pop(process, None)
        if earlier is not None:  # the pid served another request: the first one went fine
            self.ready.append(earlier)
        self.pending[process] = request
        while self.pending:
            first = next(iter(self.pending.values()))
            if first.at >= request.at - TFTP_PENDING_SECONDS:
                break
            self.ready.append(self.pending.popitem(last=False)[1])

    def drain(self) -> list[_Request]:
        out, self.ready = self.ready, []
        return out


# --- reading -----------------------------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """A pipe whose first bytes were read to tell it has a writer: those, then the rest."""

    def __init__(self, first: bytes, fd: int) -> None:
        super().__init__()
        self._first = first
        self._file = open(fd, "rb", buffering=0)  # noqa: SIM115 - closed by close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._first:
            n = min(len(buffer), len(self._first))
            buffer[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        return self._file.readinto(buffer) or 0

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()
        super().close()


def _opened(path: Path) -> BinaryIO:
    """The log at `path` opened for reading. A fifo nothing writes to blocked the open
    for ever (`fleet` at a fifo in place of STATE_DIR/fetch.log): opened without
    blocking, it is read as an empty log."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return open(fd, "rb")
        # (a writer blocked in its open of the fifo gets a second to connect; still
        # nothing then: no writer, or one that closed without a line: an empty log)
        first = fifo_first(fd, 1 << 16, wait=1.0)
        os.set_blocking(fd, True)
        return io.BufferedReader(_Prefixed(first or b"", fd))
    except BaseException:
        os.close(fd)
        raise


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(the stream of lines, the raw file for progress): gunzipped when it is gzip."""
    try:
        raw = _opened(path)
    except IsADirectoryError:
        raise UsageError(f"--log {path}: is a directory", hint="give a log file") from None
    except OSError as exc:
        raise UsageError(
            f"--log {path}: cannot read it: {exc.strerror}", hint="check the path and its mode"
        ) from None
    mode = os.fstat(raw.fileno()).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        # (a device: /dev/zero is an endless log of one empty line; a pipe, `<(zcat …)`,
        # is a log like a file)
        raw.close()
        raise UsageError(
            f"--log {path}: not a file or a pipe", hint="give a log file, or a pipe of one"
        )
    head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw), raw  # type: ignore[return-value]
    return raw, raw


def _lines(stream: BinaryIO) -> Iterator[bytes | None]:
    """Lines without their end; None for a line longer than MAX_LINE (skipped whole)."""
    while True:
        line = stream.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while True:  # the rest of the long line
                more = stream.readline(MAX_LINE)
                if not more or more.endswith(b"\n"):
                    break
            yield None
            continue
        yield line.rstrip(b"\r\n")


# --- the tally ---------------------------------------------------------------------------


@dataclass
class _Published:
    mac: str
    model: str
    file: str
    version: int
    files: set[str]


@dataclass
class _Device:
    seen: _Request | None = None
    fetched: _Request | None = None
    fetched_version: int | None = None
    version_from: Literal["log", "write-time"] | None = None
    # version (None: older, number unknown) -> the earliest successful fetch of it; only
    # the MAX_SERIES highest versions, the others folded into None (_keep_newest)
    first: dict[int | None, float] = field(default_factory=dict)


@dataclass
class _ScanTally:
    requests: int = 0
    macs: set[str] = field(default_factory=set)
    capped: bool = False
    first: float = math.inf
    last: float = -math.inf
    examples: list[str] = field(default_factory=list)


class _Tally:
    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.published: dict[str, _Published] = {}
        self.by_file: dict[str, _Published] = {}
        for name, e in manifest.files.items():
            if e.kind != Kind.DEVICE:
                continue
            mac = normalise_mac(e.mac) if e.mac else None
            if mac is None:
                continue
            p = self.published.get(mac)
            if p is None:
                p = self.published[mac] = _Published(mac, e.model, name, e.version, set())
            elif e.version > p.version:
                p.version, p.file = e.version, name
            p.files.add(name)
            self.by_file[name] = p
        self.devices: dict[str, _Device] = {}
        self.scans: dict[str, _ScanTally] = {}
        self.scan_clients_dropped = 0
        self._live: dict[str, float] = {}

    # Which device, which file

    def _file(self, r: _Request) -> _Published | None:
        for name in (r.served, r.name):
            if name is None:
                continue
            p = self.by_file.get(name)
            if p is None:
                other = other_mac_spelling(name)
                p = self.by_file.get(other) if other is not None else None
            if p is not None:
                return p
        return None

    def _mac(self, r: _Request) -> str | None:
        if r.mac is not None:
            return r.mac
        where = mac_part(r.path)
        return None if where is None else r.path[where[0] : where[1]].lower()

    def add(self, r: _Request) -> None:
        published = self._file(r)
        mac = published.mac if published is not None else self._mac(r)
        if mac is None:
            return  # a bootstrap or firmware file, or nothing per-MAC
        if mac not in self.published:
            self._scan(mac, r)
            return
        device = self.devices.get(mac)
        if device is None:
            device = self.devices[mac] = _Device()
        if device.seen is None or r.at >= device.seen.at:
            device.seen = r
        if published is None or r.status != 200 or not r.body:
            return
        version, source = self._version(r, published)
        if device.fetched is None or r.at >= device.fetched.at:
            device.fetched, device.fetched_version, device.version_from = r, version, source
        if r.at < device.first.get(version, math.inf):
            device.first[version] = r.at
            _keep_newest(device.first)

    def _version(
        self, r: _Request, published: _Published
    ) -> tuple[int | None, Literal["log", "write-time"] | None]:
        if r.versioned:
            return r.version, "log" if r.version is not None else None
        name = r.served or r.name
        if name not in published.files:
            other = other_mac_spelling(name)
            name = other if other is not None and other in published.files else published.file
        live = self._live_from(name)
        stat = self._recorded_size(name)
        if r.size is not None and stat is not None and r.size != stat:
            return None, None  # cut short, or not this file
        # A whole-second stamp is the second the request ended in: counted only when that
        # second began after the file took its place.
        if r.at >= live:
            return self.manifest.files[name].version, "write-time"
        return None, None

    def _recorded_size(self, name: str) -> int | None:
        for state in self.manifest.roots.values():
            st = state.stat.get(name)
            if st is not None:
                return st[0]
        return None

    def _live_from(self, name: str) -> float:
        """When the published file `name` took its place in the roots (the latest root):
        the ctime of the file the manifest recorded (its rename), else the recorded
        mtime (when it was written, a little before), else the publish time."""
        cached = self._live.get(name)
        if cached is not None:
            return cached
        found: float | None = None
        for root, state in self.manifest.roots.items():
            st = state.stat.get(name)
            when: float | None = None
            try:
                info = os.stat(Path(root) / name)
                if st is None or (info.st_size, info.st_mtime_ns, info.st_ino) == st:
                    when = max(info.st_ctime, info.st_mtime)
            except OSError:
                pass
            if when is None and st is not None:
                when = st[1] / 1e9
            if when is not None and (found is None or when > found):
                found = when
        if found is None:
            found = _published_at(self.manifest)
        self._live[name] = found
        return found

    def _scan(self, mac: str, r: _Request) -> None:
        tally = self.scans.get(r.client)
        if tally is None:
            if len(self.scans) >= SCAN_CLIENTS_KEPT:
                self.scan_clients_dropped += 1
                return
            tally = self.scans[r.client] = _ScanTally()
        tally.requests += 1
        if mac not in tally.macs:
            if len(tally.macs) < SCAN_MACS_KEPT:
                tally.macs.add(mac)
            else:
                tally.capped = True
        tally.first = min(tally.first, r.at)
        tally.last = max(tally.last, r.at)
        if len(tally.examples) < SCAN_EXAMPLES and r.path not in tally.examples:
            tally.examples.append(r.path[:200])


def _keep_newest(first: dict[int | None, float]) -> None:
    """Forget all but a device's MAX_SERIES highest versions, folding the others into
    None ("older", at the earliest of their times): a crafted fetch log of a million
    versions would otherwise hold them all. The chart is the same: a version with
    MAX_SERIES higher ones is not among the newest MAX_SERIES of the fleet either, so it
    shows as "older", and before the device fetched a higher one it held "older" too."""
    if len(first) - (None in first) <= MAX_SERIES:
        return
    lowest = min(v for v in first if v is not None)
    first[None] = min(first.get(None, math.inf), first.pop(lowest))


def _published_at(manifest: Manifest) -> float:
    try:
        at = datetime.datetime.fromisoformat(manifest.published_at)
    except ValueError:
        return 0.0
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.UTC)
    # Whole seconds: the files were in place before the stamp's second ended.
    return at.timestamp() + 1


# --- the whole -----------------------------------------------------------------------------


def fleet_status(
    state_dir: Path,
    logs: Sequence[LogSource],
    *,
    bucket: Literal["hour", "day"] | None = None,
    progress: Progress | None = None,
    now: float | None = None,
) -> FleetReport:
    """The state of every published device from `logs`; `bucket` of the adoption chart
    (None: hours for up to three days of fetches, else days). Raises UsageError when the
    state dir holds no manifest or a log cannot be opened."""
    manifest = load_manifest(state_dir)
    if manifest is None:
        missing = not (state_dir / MANIFEST).exists()
        raise UsageError(
            f"{state_dir / MANIFEST}: "
            + ("no manifest" if missing else "not a manifest gitprov can read"),
            hint="give --state-dir the publisher's state dir (it has manifest.json after a "
            "publish)",
        )
    tally = _Tally(manifest)
    summaries: list[LogSummary] = []
    malformed: list[Malformed] = []
    malformed_total = 0
    for source in logs:
        summary, bad, count = _read(source, tally, progress)
        summaries.append(summary)
        malformed.extend(bad[: max(0, MALFORMED_KEPT - len(malformed))])
        malformed_total += count
    devices = tuple(
        _status(p, tally.devices.get(mac)) for mac, p in sorted(tally.published.items())
    )
    scans = tuple(
        Scan(
            client,
            t.requests,
            len(t.macs),
            t.capped,
            _utc(t.first),
            _utc(t.last),
            tuple(t.examples),
        )
        for client, t in sorted(tally.scans.items(), key=lambda kv: (-kv[1].requests, kv[0]))
    )
    return FleetReport(
        state_dir=str(state_dir),
        commit=manifest.commit,
        published_at=manifest.published_at,
        generated_at=_utc(time.time() if now is None else now),
        devices=devices,
        scans=scans,
        scan_clients_dropped=tally.scan_clients_dropped,
        adoption=_adoption(tally, bucket),
        logs=tuple(summaries),
        malformed=tuple(malformed),
        malformed_total=malformed_total,
    )


def _read(
    source: LogSource, tally: _Tally, progress: Progress | None
) -> tuple[LogSummary, list[Malformed], int]:
    stream, raw = _open(source.path)
    bad: list[Malformed] = []
    count = 0
    lines = requests = skipped = 0
    fmt = source.format
    try:
        size = os.fstat(raw.fileno()).st_size
        seekable = raw.seekable()
        ctx = _Context(os.fstat(raw.fileno()).st_mtime)
        label = f"reading {source.path.name}"

        def flag(number: int, reason: str, text: str) -> None:
            nonlocal count
            count += 1
            if len(bad) < MALFORMED_KEPT:
                bad.append(Malformed(f"{source.path}:{number}", reason, _printable(text)))

        try:
            for number, data in enumerate(_lines(stream), 1):
                lines = number
                # (a pipe has no position: tell() would raise, and end the reading)
                if progress is not None and number % _PROGRESS_EVERY == 0 and seekable:
                    progress(label, min(raw.tell(), size), size)
                if data is None:
                    flag(number, f"longer than {MAX_LINE} bytes", "")
                    continue
                text = data.decode("utf-8", "surrogateescape")
                if not text.strip():
                    continue
                if fmt is None:
                    fmt = _detect(text)
                    if fmt is None:
                        flag(
                            number, "not a format gitprov fleet reads (gitprov, nginx, tftpd)", text
                        )
                        continue
                where = f"{source.path}:{number}"
                try:
                    got = _PARSERS[fmt](text, where, ctx)
                except _Skip:
                    skipped += 1
                    got = None
                except _Bad as exc:
                    flag(number, str(exc), text)
                    got = None
                for r in (*ctx.drain(), *([got] if got is not None else [])):
                    requests += 1
                    tally.add(r)
        except (OSError, EOFError, zlib.error) as exc:
            # A truncated or corrupt .gz (a rotation cut short): what came before counts.
            flag(lines + 1, f"cannot read on: {exc}", "")
        for r in (*ctx.drain(), *ctx.pending.values()):
            requests += 1
            tally.add(r)
        if progress is not None:
            progress(label, size, size)
    finally:
        stream.close()
        raw.close()
    return LogSummary(str(source.path), fmt, lines, requests, count, skipped), bad, count


def _status(p: _Published, d: _Device | None) -> DeviceStatus:
    def seen(r: _Request | None) -> Seen | None:
        if r is None:
            return None
        return Seen(_utc(r.at), r.protocol, r.client, r.path, r.status, r.where)

    if d is None or d.fetched is None:
        state: State = "never"
    elif d.fetched_version == p.version:
        state = "current"
    else:
        state = "stale"
    return DeviceStatus(
        mac=p.mac,
        model=p.model,
        file=p.file,
        published_version=p.version,
        state=state,
        fetched_version=d.fetched_version if d else None,
        fetched=seen(d.fetched) if d else None,
        version_from=d.version_from if d else None,
        last_seen=seen(d.seen) if d else None,
    )


def _adoption(tally: _Tally, bucket: Literal["hour", "day"] | None) -> Adoption:
    events: list[tuple[float, str, int | None]] = []
    for mac, d in tally.devices.items():
        events.extend((at, mac, version) for version, at in d.first.items())
    if not events:
        return Adoption(bucket or "hour", (), (), ())
    events.sort(key=lambda e: (e[0], e[1], -1 if e[2] is None else e[2]))
    start, end = events[0][0], events[-1][0]
    if bucket is None:
        bucket = "hour" if end - start <= 3 * 86400 else "day"
    step = 3600 if bucket == "hour" else 86400
    first = int(start // step) * step
    last = int(end // step) * step
    if (last - first) // step + 1 > MAX_BUCKETS:
        first = last - (MAX_BUCKETS - 1) * step
    versions = sorted({v for _, _, v in events if v is not None})
    shown = versions[-MAX_SERIES:]
    series = (
        ["older"] if len(shown) < len(versions) or any(v is None for _, _, v in events) else []
    ) + [str(v) for v in shown]
    index = {label: i for i, label in enumerate(series)}

    def label(v: int | None) -> str:
        return str(v) if v is not None and v in shown else "older"

    holding: dict[str, int | None] = {}  # device -> its version (None: older)
    counts = [0] * len(series)
    rows: list[tuple[int, ...]] = []
    times: list[str] = []
    i = 0
    for t in range(first, last + step, step):
        while i < len(events) and events[i][0] < t + step:
            _, mac, v = events[i]
            i += 1
            # A device holds the highest version it fetched so far (versions only rise;
            # None, a version older than the published one, is below every number).
            if mac in holding:
                before = holding[mac]
                if v is None or (before is not None and before >= v):
                    continue
                counts[index[label(before)]] -= 1
            holding[mac] = v
            counts[index[label(v)]] += 1
        times.append(_utc(t))
        rows.append(tuple(counts))
    return Adoption(bucket, tuple(times), tuple(series), tuple(rows))
