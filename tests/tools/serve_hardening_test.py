"""The embedded servers under attack: TFTP sessions opened and never acknowledged (the
slots they hold, the timeout they ask for) and HTTP requests whose body would be read as a
second request (smuggling). Attackers and victims are other loopback addresses: Linux
routes all of 127.0.0.0/8 to lo, so 127.0.0.2 is a different client than 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from gitprov.cli import build_parser
from gitprov.tools.serve import HttpServer, TftpLimits, TftpServer
from tests.fixtures.peers import need
from tests.fixtures.serve_clients import Events

HOST = "127.0.0.1"
VICTIM = "127.0.0.2"
CONTENT = os.urandom(64 * 1024 + 100)  # 129 blocks of 512: a transfer with a thread
SMALL = b"DBID_DBASE_VERSION=7\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    published = tmp_path / "root"
    published.mkdir()
    (published / "fw.bin").write_bytes(CONTENT)
    (published / "small.cfg").write_bytes(SMALL)
    return published


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def tftp(root: Path, events: Events) -> Iterator[TftpServer]:
    # Defaults throughout: the limits an operator gets without asking.
    with TftpServer(root, HOST, 0, on_fetch=events) as server:
        yield server


# --- TFTP: a minimal client and an attacker --------------------------------------------


def _rrq(name: str, **options: str | int) -> bytes:
    body = f"{name}\0octet\0" + "".join(f"{k}\0{v}\0" for k, v in options.items())
    return struct.pack("!H", 1) + body.encode()


def _oack(packet: bytes) -> dict[str, str]:
    fields = packet[2:].split(b"\0")[:-1]
    return {k.decode(): v.decode() for k, v in zip(fields[0::2], fields[1::2], strict=True)}


def _fetch(port: int, name: str, source: str, timeout: float = 2.0) -> bytes:
    """A plain RRQ (no options, as a boot ROM sends) from `source`; the whole file."""
    data = bytearray()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(_rrq(name), (HOST, port))
        expected = 1
        while True:
            packet, server = sock.recvfrom(70000)
            opcode, number = struct.unpack_from("!HH", packet)
            assert opcode == 3, packet  # an ERROR here is the attack succeeding
            if number != expected & 0xFFFF:
                continue
            data += packet[4:]
            sock.sendto(struct.pack("!HH", 4, number), server)
            if len(packet) - 4 < 512:
                return bytes(data)
            expected += 1


class Attacker:
    """Sends read requests and never acknowledges what comes back.

    Each request waits for the server's first reply before the next is sent, so every
    request has been processed (none lost to a full socket buffer) when `flood` returns.
    The sockets stay open: a closed port would answer with ICMP and end the sessions.
    """

    def __init__(self, stack: ExitStack, port: int) -> None:
        self._stack = stack
        self._port = port
        self.oacks: list[dict[str, str]] = []
        self.refused = 0
        self.dropped = 0

    def flood(self, address: str, count: int, ports: int = 8, **options: str | int) -> None:
        socks = []
        for _ in range(ports):
            sock = self._stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind((address, 0))
            sock.settimeout(2)
            socks.append(sock)
        for i in range(count):
            sock = socks[i % ports]
            sock.sendto(_rrq("fw.bin", **options), (HOST, self._port))
            while True:
                packet, (_, port) = sock.recvfrom(70000)
                opcode, number = struct.unpack_from("!HH", packet)
                if opcode == 6:
                    self.oacks.append(_oack(packet))
                    break
                assert (opcode, number, packet[4:]) == (5, 0, b"Server busy\0")
                if port == self._port:
                    self.refused += 1  # this request, refused outright
                    break
                self.dropped += 1  # an earlier session of ours, dropped for a newer one


ATTACK = {"timeout": 255, "blksize": 1468}


def _served_within(port: int, source: str, seconds: float) -> float:
    started = time.monotonic()
    assert _fetch(port, "fw.bin", source) == CONTENT
    elapsed = time.monotonic() - started
    assert elapsed < seconds
    return elapsed


def test_attacker_at_one_address_cannot_take_the_pool(tftp: TftpServer, events: Events) -> None:
    with ExitStack() as stack:
        attacker = Attacker(stack, tftp.port)
        attacker.flood(HOST, 200, **ATTACK)
        assert attacker.oacks[0] == {"blksize": "1468"}  # no timeout=255 acknowledged
        held = tftp.limits.max_pending_per_client
        assert tftp.refusals == {"pending-per-client": 200 - held}
        _served_within(tftp.port, VICTIM, 2.0)
        assert tftp.refusals == {"pending-per-client": 200 - held}  # the victim took nothing
    seen = events.wait_for(200 - held + 1)
    assert [e.status for e in seen if e.client == VICTIM] == [200]


def test_attackers_at_many_addresses_fill_the_pool_and_give_way(
    tftp: TftpServer, events: Events
) -> None:
    limits = tftp.limits
    with ExitStack() as stack:
        attacker = Attacker(stack, tftp.port)
        addresses = [f"127.0.0.{n}" for n in range(10, 60)]
        for address in addresses:
            attacker.flood(address, limits.max_pending_per_client, ports=2, **ATTACK)
        assert len(attacker.oacks) == 200
        # Every address holds as many as it may; the pool is full of pending sessions.
        assert tftp.refusals == {"pending": 200 - limits.max_pending}
        _served_within(tftp.port, VICTIM, 2.0)
        assert tftp.refusals == {"pending": 200 - limits.max_pending + 1}
    victim = [e for e in events.wait_for(200 - limits.max_pending + 2) if e.client == VICTIM]
    assert [(e.status, e.size) for e in victim] == [(200, len(CONTENT))]


def test_attacker_at_the_victims_address_cannot_hold_it_off(tftp: TftpServer) -> None:
    # A burst, then silence: the victim's request pushes out the attacker's oldest. A
    # flood that goes on from the victim's own address (or a NAT it shares), faster than
    # the victim's round trip, is another matter: per-address limits cannot tell the two
    # apart (docs/cli.md says so).
    with ExitStack() as stack:
        attacker = Attacker(stack, tftp.port)
        attacker.flood(VICTIM, 200, **ATTACK)
        _served_within(tftp.port, VICTIM, 2.0)


def test_real_client_served_under_attack(root: Path, events: Events, tmp_path: Path) -> None:
    # busybox cannot choose its source address: it comes from 127.0.0.1, the attackers
    # from elsewhere in 127/8, and a small pool makes them fill it.
    busybox = need("busybox", "busybox")
    limits = TftpLimits(max_transfers=8, max_pending=6, max_pending_per_client=2)
    with TftpServer(root, HOST, 0, on_fetch=events, limits=limits) as server, ExitStack() as stack:
        attacker = Attacker(stack, server.port)
        for n in range(3, 23):
            attacker.flood(f"127.0.0.{n}", 10, ports=3, **ATTACK)
        out = tmp_path / "fw.bin"
        started = time.monotonic()
        result = subprocess.run(
            [busybox, "tftp", "-g", "-r", "fw.bin", "-l", str(out), HOST, str(server.port)],
            capture_output=True,
            timeout=10,
            check=False,
        )
        assert time.monotonic() - started < 2.0
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == CONTENT


def test_established_transfers_are_never_dropped(root: Path, events: Events) -> None:
    limits = TftpLimits(max_transfers=3, max_pending=3, max_pending_per_client=3)
    with TftpServer(root, HOST, 0, on_fetch=events, limits=limits) as server, ExitStack() as stack:
        running = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        running.bind((VICTIM, 0))
        running.settimeout(2)
        running.sendto(_rrq("fw.bin"), (HOST, server.port))
        _, peer = running.recvfrom(1024)
        running.sendto(struct.pack("!HH", 4, 1), peer)  # past its first ACK now
        assert struct.unpack_from("!HH", running.recv(1024)) == (3, 2)
        Attacker(stack, server.port).flood(HOST, 20, **ATTACK)
        # The attacker churns through the two slots left; the transfer goes on.
        running.sendto(struct.pack("!HH", 4, 2), peer)
        assert struct.unpack_from("!HH", running.recv(1024)) == (3, 3)
        assert server.refusals == {"pending": 18}


# --- TFTP: the timeout option ----------------------------------------------------------


def _first_replies(port: int, request: bytes, seconds: float) -> list[tuple[float, bytes]]:
    """Everything the server sends for `request` within `seconds`, never acknowledged.

    The socket stays open all along: closed, it would make the server's resend fail
    (ICMP port unreachable) and end the session early as aborted.
    """
    got = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        started = time.monotonic()
        sock.sendto(request, (HOST, port))
        while (remaining := started + seconds - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                packet = sock.recv(70000)
            except TimeoutError:
                break
            got.append((time.monotonic() - started, packet))
    return got


def test_timeout_over_the_cap_is_not_acknowledged(root: Path, events: Events) -> None:
    limits = TftpLimits(max_timeout=2)
    with TftpServer(root, HOST, 0, on_fetch=events, timeout=0.3, limits=limits) as server:
        replies = _first_replies(server.port, _rrq("fw.bin", timeout=255, blksize=1024), 1.5)
        (event,) = events.wait_for(1)
        assert (event.status, event.size) == (408, 0)
        assert server.refusals == {"unacknowledged": 1}
    # The OACK leaves timeout out (RFC 2349: echo the value or omit it); the server's own
    # 0.3 s applies: one resend, then the session is gone, 0.6 s after the request.
    assert [_oack(packet) for _, packet in replies] == [{"blksize": "1024"}] * 2
    assert 0.25 < replies[1][0] < 1.0


def test_timeout_within_the_cap_is_acknowledged_and_used(root: Path, events: Events) -> None:
    limits = TftpLimits(max_timeout=1)
    with TftpServer(root, HOST, 0, on_fetch=events, timeout=0.2, limits=limits) as server:
        replies = _first_replies(server.port, _rrq("fw.bin", timeout=1, blksize=1024), 2.3)
        (event,) = events.wait_for(1)
        assert event.status == 408
    # The negotiated second, not the server's 0.2 s: one resend after it, then dropped.
    oack = {"blksize": "1024", "timeout": "1"}
    assert [_oack(packet) for _, packet in replies] == [oack, oack]
    assert 0.9 < replies[1][0] < 1.5


def test_only_option_over_the_cap_means_no_oack(root: Path) -> None:
    with TftpServer(root, HOST, 0, timeout=0.2) as server:
        replies = _first_replies(server.port, _rrq("small.cfg", timeout=60), 0.3)
    # Nothing accepted, so no OACK: DATA 1 straight away (RFC 2347), resent after 0.2 s.
    assert replies[0][1] == struct.pack("!HH", 3, 1) + SMALL
    assert replies[0][0] < 0.1


def test_unanswered_sessions_are_logged(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gitprov.serve")
    limits = TftpLimits(max_pending_per_client=1)
    with TftpServer(root, HOST, 0, timeout=0.1, limits=limits) as server, ExitStack() as stack:
        Attacker(stack, server.port).flood(HOST, 2, ports=1, **ATTACK)
        deadline = time.monotonic() + 3
        while server.refusals.get("unacknowledged") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.refusals == {"pending-per-client": 1, "unacknowledged": 1}
    dropped = [m for m in caplog.messages if m.startswith("tftp dropped pending session")]
    evicted, unanswered = dropped
    assert re.fullmatch(rf"tftp dropped pending session {HOST}:\d+ fw\.bin for a new .*", evicted)
    assert re.fullmatch(rf".* {HOST}:\d+ fw\.bin: its first OACK was never .*", unanswered)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending_per_client"):
        TftpLimits(max_pending_per_client=0)


# --- HTTP: a request with a body is one request, answered once -------------------------


def _exchange(port: int, data: bytes, seconds: float = 5.0) -> tuple[bytes, bool]:
    """Send `data` and read until the server closes; the bytes and whether it closed."""
    received = bytearray()
    with socket.create_connection((HOST, port), timeout=seconds) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return bytes(received), False
            if not chunk:
                return bytes(received), True
            received += chunk
    return bytes(received), False


def _status_lines(response: bytes) -> list[int]:
    # Anywhere, not only after CRLF: a smuggled response follows the first one's body.
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", response)]


SMUGGLED = b"GET /small.cfg HTTP/1.1\r\nHost: victim\r\n\r\n"


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunked(SMUGGLED),
        b"HEAD /small.cfg HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n" + _chunked(SMUGGLED),
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        + _chunked(SMUGGLED),
        b"GET /small.cfg HTTP/1.0\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        # What a front end might read as the whole request, and this server must not.
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nContent-Length: 0, %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nContent-Length : %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nX-Pad: 1\r\n Transfer-Encoding: chunked\r\n\r\n"
        + _chunked(SMUGGLED),
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nContent-Length: +%d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nbroken header line\r\n\r\n" + SMUGGLED,
        # More digits than int() reads (4300): no response at all, and a traceback.
        b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nContent-Length: 1%s\r\n\r\n" % (b"0" * 5000)
        + SMUGGLED,
    ],
    ids=[
        "content-length",
        "chunked",
        "head-chunked-and-length",
        "gzip-chunked",
        "http10-keep-alive",
        "duplicate-length",
        "list-length",
        "space-before-colon",
        "obs-fold",
        "signed-length",
        "line-without-colon",
        "length-past-int",
    ],
)
def test_http_body_is_never_a_second_request(
    root: Path, events: Events, request_bytes: bytes
) -> None:
    with HttpServer(root, HOST, 0, on_fetch=events) as server:
        response, closed = _exchange(server.port, request_bytes)
        assert closed, response
        assert _status_lines(response) == [400]
        assert b"\r\nconnection: close\r\n" in response.lower()
        assert SMALL not in response
        assert [e.status for e in events.wait_for(1)] == [400]
        assert sum(server.refusals.values()) == 1


def test_http_refusal_is_logged(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gitprov.serve")
    with HttpServer(root, HOST, 0) as server:
        request = b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        _exchange(server.port, request)
        assert server.refusals == {"body": 1}
    assert f"http refused {HOST} /small.cfg: a body (Content-Length 5)" in caplog.messages


def test_http_empty_body_and_keep_alive_still_work(root: Path) -> None:
    # Content-Length: 0 is no body; two requests on one connection get two answers, the
    # second one then closing (Connection: close), so the read ends.
    first = b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    second = b"GET /small.cfg HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    with HttpServer(root, HOST, 0) as server:
        response, closed = _exchange(server.port, first + second)
        assert server.refusals == {}
    assert closed
    assert _status_lines(response) == [200, 200]
    assert response.count(SMALL) == 2


def test_http_a_zero_length_of_many_digits_is_no_body(root: Path) -> None:
    request = b"GET /small.cfg HTTP/1.1\r\nContent-Length: %s\r\nConnection: close\r\n\r\n"
    with HttpServer(root, HOST, 0) as server:
        response, closed = _exchange(server.port, request % (b"0" * 5000))
        assert server.refusals == {}
    assert closed
    assert _status_lines(response) == [200]
    assert response.endswith(SMALL)


def test_http_a_request_head_past_its_budget_is_refused_not_held(root: Path) -> None:
    # Each line within http.server's limits (64 KiB, 100 headers): 99 such lines, 6.4 MB,
    # were held in memory until the last one came, and then served.
    head = b"GET /small.cfg HTTP/1.1\r\n" + b"X-Pad: %s\r\n" % (b"a" * 65000) * 4
    with HttpServer(root, HOST, 0) as server:
        response, closed = _exchange(server.port, head + b"\r\n")
        assert server.refusals == {"request": 1}
    assert closed
    assert _status_lines(response) == [431]
    assert SMALL not in response


def test_http_a_long_line_and_headers_within_the_budget_are_answered(root: Path) -> None:
    line = b"GET /" + b"a" * 65000 + b" HTTP/1.1\r\n"
    headers = b"X-Pad: %s\r\nConnection: close\r\n\r\n" % (b"b" * 60000)
    with HttpServer(root, HOST, 0) as server:
        response, closed = _exchange(server.port, line + headers)
        assert server.refusals == {}
    assert closed
    assert _status_lines(response) == [404]


def test_http_error_closes_the_connection(root: Path) -> None:
    pipelined = b"GET /missing.cfg HTTP/1.1\r\nHost: a\r\n\r\n" + SMUGGLED
    with HttpServer(root, HOST, 0) as server:
        response, closed = _exchange(server.port, pipelined)
    assert closed
    assert _status_lines(response) == [404]
    assert SMALL not in response


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /small.cfg HTTP/2.0\r\n\r\n", 505),
        (b"GET /small.cfg HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", 431),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
    ],
    ids=["version", "too-many-headers", "long-line"],
)
def test_http_malformed_request_is_refused_once(root: Path, head: bytes, status: int) -> None:
    with HttpServer(root, HOST, 0) as server:
        response, closed = _exchange(server.port, head + SMUGGLED)
        assert server.refusals == {"request": 1}
    assert closed
    assert _status_lines(response) == [status]


# --- the command line ------------------------------------------------------------------


def test_cli_limits() -> None:
    args = build_parser().parse_args(["serve", "--tftp-max-pending-per-client", "2"])
    assert (args.tftp_max_pending_per_client, args.tftp_max_timeout) == (2, 5)
    assert args.tftp_max_transfers == TftpLimits().max_transfers
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--tftp-max-timeout", "0"])


def _state_dir(at: Path) -> Path:
    at.mkdir(parents=True)
    for name in ("manifest.json", "journal.jsonl", "publish.lock"):
        (at / name).write_text("{}\n")
    return at


@pytest.mark.parametrize(
    "case",
    [
        "the state dir",
        "above the state dir",
        "inside the state dir",
        "a state dir below",
        "a work tree below",
        "a bare repository below",
    ],
)
def test_serve_refuses_a_root_that_would_serve_the_state_or_a_repository(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifest, journal and fetch log list every MAC, the repository holds the
    inventory: `serve` serves a root's subdirectories, so none may be below a root."""
    from gitprov.cli import main

    state, root = tmp_path / "state", tmp_path / "root"
    given = True
    if case == "the state dir":
        root = _state_dir(state)
    elif case == "above the state dir":
        _state_dir(root / "state")
        state = root / "state"
    elif case == "inside the state dir":
        _state_dir(state)
        root = state / "http"
        root.mkdir()
    else:
        given = False
        root.mkdir()
        if case == "a state dir below":
            _state_dir(root / "site" / "var" / "state")
        elif case == "a work tree below":
            subprocess.run(["git", "init", "-q", str(root / "checkout")], check=True)
        else:
            subprocess.run(["git", "init", "-q", "--bare", str(root / "x.git")], check=True)
    argv = ["serve", "--http-root", str(root), "--http-port", "0", "--no-fetch-log"]
    argv += ["--state-dir", str(state)] if given else []
    assert main(argv) == 2
    err = capsys.readouterr().err
    if case == "inside the state dir":
        # (nothing of the state dir's would be served from there: it said the manifest
        # and journal would be; the root is refused as no root any publish writes)
        assert f"the HTTP root {root} is inside the state dir {state}: " in err, err
        assert "would be served" not in err and "no publish writes a root there" in err, err
        return
    assert "would be served" in err and "Traceback" not in err, err


def test_a_published_root_with_a_directory_of_files_is_not_refused(tmp_path: Path) -> None:
    """What the check lets through: a root with a manifest-named file and a subdirectory
    of files, beside (not holding) the state dir."""
    from gitprov.cli.serve import _refuse_private_roots

    root = tmp_path / "http"
    (root / "cpe").mkdir(parents=True)
    (root / "cpe" / "fv0021f2011b19.conf").write_bytes(b"x")
    (root / "manifest.json").write_text("{}")  # (a file of that name alone is no state dir)
    state = _state_dir(tmp_path / "state")
    _refuse_private_roots({"HTTP": str(root), "TFTP": None}, str(state))


def test_serve_outside_a_repository_says_the_roots_would_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.: not a git repository`, hint `pass --repo PATH`: serve needs none when it is
    given its roots, which the hint did not say."""
    from gitprov.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--http-port", "0", "--no-fetch-log"]) == 2
    err = capsys.readouterr().err
    assert "not a git repository" in err and "--http-root DIR, --tftp-root DIR" in err, err


# --- open files --------------------------------------------------------------------------
def _serve(root: Path, limit: tuple[int, int], *argv: str) -> subprocess.Popen[str]:
    import resource
    import sys

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)

    cmd = [sys.executable, "-m", "gitprov", "serve", "--http-root", str(root)]
    cmd += ["--tftp-root", str(root), "--http-port", "0", "--tftp-port", "0", "--no-fetch-log"]
    return subprocess.Popen(
        [*cmd, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limited,
    )


def _ports(server: subprocess.Popen[str]) -> tuple[int, int]:
    assert server.stdout is not None
    http = tftp = 0
    while not (http and tftp):
        line = server.stdout.readline()
        assert line, "serve ended before it listened"
        if found := re.match(r"HTTP: http://127\.0\.0\.1:(\d+)", line):
            http = int(found.group(1))
        if found := re.match(r"TFTP: tftp://127\.0\.0\.1:(\d+)/", line):
            tftp = int(found.group(1))
    return http, tftp


def test_idle_http_clients_never_take_the_descriptors_tftp_needs(root: Path) -> None:
    """With --http-max-connections at its default (1024) and the usual limit of 1024
    open files, clients that opened connections and said nothing took every descriptor:
    TFTP could not open a file, and the accept loop spun a core. The cap now fits the
    limit (raised to the hard one first), with a warning saying so."""
    from tests.fixtures.serve_clients import tftp_get

    server = _serve(root, (400, 400))
    idle: list[socket.socket] = []
    try:
        http, tftp = _ports(server)
        for _ in range(200):  # (past the cap of (400 - 256) / 2 = 72: closed at once)
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection((HOST, http), timeout=5))
        time.sleep(0.3)
        got = tftp_get(tftp, "small.cfg")
        assert got.data == SMALL and got.error is None
        with socket.create_connection((HOST, http), timeout=5) as more:
            assert more.recv(1) == b""  # closed at once: the cap, not the descriptors
    finally:
        for s in idle:
            s.close()
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "warning: 72 HTTP connections at once, not 1024" in err, err


def test_the_limit_on_open_files_is_raised_to_the_hard_one(root: Path) -> None:
    server = _serve(root, (512, 4096))
    try:
        _ports(server)
        limits = Path(f"/proc/{server.pid}/limits").read_text()
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert re.search(r"Max open files\s+4096\s+4096", limits), limits
    assert "HTTP connections at once" not in err  # ((4096 - 256) / 2 >= 1024)


def test_the_tftp_banner_brackets_an_ipv6_address(root: Path) -> None:
    """`tftp://::1:6969/` is no URL: the HTTP banner bracketed the address, TFTP's not."""
    import sys

    cmd = [sys.executable, "-m", "gitprov", "serve", "--host", "::1", "--http-root", str(root)]
    cmd += ["--tftp-root", str(root), "--http-port", "0", "--tftp-port", "0", "--no-fetch-log"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(2)]
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    if "cannot listen" in err:
        pytest.skip(f"no IPv6 loopback here: {err.strip()}")
    assert lines[0].startswith("HTTP: http://[::1]:"), lines
    assert lines[1].startswith("TFTP: tftp://[::1]:"), lines


def test_the_banner_shows_a_root_a_terminal_would_obey_escaped(tmp_path: Path) -> None:
    """A root's path was printed as typed: an ESC in it reached the terminal."""
    import sys

    root = tmp_path / "d\x1b[31mX"
    root.mkdir()
    cmd = [sys.executable, "-m", "gitprov", "serve", "--http-root", str(root)]
    cmd += ["--tftp-root", str(root), "--http-port", "0", "--tftp-port", "0", "--no-fetch-log"]
    server = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(2)]
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert all("\x1b" not in line and "d\\x1b[31mX" in line for line in lines), lines
