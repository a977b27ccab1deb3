"""The embedded servers against real clients (curl, tftp-hpa, busybox) and a small
Python TFTP client for what the real ones cannot be made to do (tiny blocks, duplicate
ACKs, silence): tests/fixtures/serve_clients.py. Contents are compared, never only exit
codes: tftp-hpa exits 0 on "File not found" and leaves an empty file behind. The `http`,
`tftp` and `events` fixtures are tests/tools/conftest.py's, over this file's `root`."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gitprov.errors import GitprovError
from gitprov.tools import serve as serve_module
from gitprov.tools.serve import (
    HttpServer,
    TftpLimits,
    TftpServer,
    _HttpListener,
    _Refusals,
    make_tls_context,
    open_published,
    serve_roots,
)
from tests.fixtures.certs import new_ca, new_leaf, save_pair
from tests.fixtures.peers import need as _need
from tests.fixtures.serve_clients import (
    HOST,
    Events,
    busybox_get,
    curl_get,
    run,
    tftp_get,
    tftp_hpa,
    tftp_request,
)

SMALL = b"DBID_DBASE_VERSION=7\nDBID_SIP_ENABLE=1\t0\t0\t0\n"
BIG = os.urandom(1 << 20)
MULTIPLE_OF_512 = os.urandom(512 * 20)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    published = tmp_path / "root"
    (published / "cfg").mkdir(parents=True)
    (published / "small.cfg").write_bytes(SMALL)
    (published / "cfg" / "0004f2abcdef.cfg").write_bytes(SMALL)
    (published / "big.bin").write_bytes(BIG)
    (published / "m512.bin").write_bytes(MULTIPLE_OF_512)
    (published / "empty.cfg").write_bytes(b"")
    (published / ".fv0004f2abcdef.cfg.tmp").write_bytes(b"half-written")
    (tmp_path / "secret.txt").write_bytes(b"outside the root")
    (published / "escape").symlink_to(tmp_path / "secret.txt")
    (published / "alias.cfg").symlink_to("small.cfg")
    return published


# --- path policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "cfg",
        ".fv0004f2abcdef.cfg.tmp",
        "../secret.txt",
        "cfg/../../secret.txt",
        "escape",
        "small.cfg/",  # (a directory's name: nginx answers 404)
        "cfg/0004f2abcdef.cfg//",
    ],
)
def test_open_published_refuses(root: Path, name: str) -> None:
    assert open_published(root, name) is None


@pytest.mark.parametrize(
    "name", ["small.cfg", "/small.cfg", "//cfg//0004f2abcdef.cfg", "alias.cfg"]
)
def test_open_published_serves(root: Path, name: str) -> None:
    opened = open_published(root, name)
    assert opened is not None
    file, size = opened
    with file:
        assert (file.read(), size) == (SMALL, len(SMALL))


def test_open_published_refuses_fifo(root: Path) -> None:
    os.mkfifo(root / "pipe")
    assert open_published(root, "pipe") is None


# --- HTTP ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content"), [("small.cfg", SMALL), ("big.bin", BIG)])
def test_http_get(http: HttpServer, name: str, content: bytes) -> None:
    assert curl_get(f"{http.url}/{name}") == (200, content)


def test_http_headers_and_head(http: HttpServer) -> None:
    result = run([_need("curl", "curl"), "-sS", "-I", f"{http.url}/big.bin"])
    head = result.stdout.decode().lower()
    assert head.startswith("http/1.1 200")
    assert f"content-length: {len(BIG)}\r\n" in head
    assert "content-type: application/octet-stream\r\n" in head
    assert "cache-control: no-store\r\n" in head
    assert "server: gitprov\r\n" in head  # (not "gitprov ": the base class's version)


@pytest.mark.parametrize(
    "path",
    [
        "/missing.cfg",
        "/.fv0004f2abcdef.cfg.tmp",
        "/../secret.txt",
        "/cfg/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/escape",
        "/cfg",
        "/cfg/",
        "/",
        "/small.cfg/",
    ],
)
def test_http_not_found(http: HttpServer, path: str) -> None:
    code, body = curl_get("--path-as-is", f"{http.url}{path}")
    assert code == 404
    assert b"outside" not in body


def test_http_query_and_symlink_inside_root(http: HttpServer) -> None:
    assert curl_get(f"{http.url}/cfg/0004f2abcdef.cfg?mac=0004f2abcdef") == (200, SMALL)
    assert curl_get(f"{http.url}/alias.cfg") == (200, SMALL)


def test_http_other_methods(http: HttpServer) -> None:
    result = run(
        [_need("curl", "curl"), "-sS", "-i", "-X", "POST", "-d", "x=1", f"{http.url}/small.cfg"]
    )
    head = result.stdout.decode().lower()
    assert head.startswith("http/1.1 405")
    assert "allow: get, head\r\n" in head
    assert curl_get("-X", "PUT", "--data-binary", "x", f"{http.url}/new.cfg")[0] == 405


def test_http_keep_alive_serves_several_files(http: HttpServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        [
            _need("curl", "curl"),
            "-sS",
            f"{http.url}/small.cfg",
            "-o",
            str(out / "a"),
            f"{http.url}/big.bin",
            "-o",
            str(out / "b"),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert (out / "a").read_bytes() == SMALL
    assert (out / "b").read_bytes() == BIG


def test_http_ipv6(root: Path) -> None:
    server = HttpServer(root, "::1", 0)
    try:
        server.start()
    except GitprovError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert server.url.startswith("http://[::1]:")
        assert curl_get("-g", f"{server.url}/small.cfg") == (200, SMALL)
    finally:
        server.stop()


def test_http_fetch_log(http: HttpServer, events: Events, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gitprov.serve")
    curl_get(f"{http.url}/small.cfg")
    curl_get(f"{http.url}/nope.cfg")
    seen = events.wait_for(2)
    # Sorted: curl may be done before the server thread has emitted its event.
    assert sorted((e.protocol, e.client, e.path, e.status, e.size) for e in seen) == [
        ("http", HOST, "/nope.cfg", 404, 0),
        ("http", HOST, "/small.cfg", 200, len(SMALL)),
    ]
    assert f"fetch http {HOST} /small.cfg 200 {len(SMALL)}" in caplog.messages


def test_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(GitprovError, match="not a directory"):
        HttpServer(tmp_path / "nope")
    with pytest.raises(GitprovError, match="not a directory"):
        TftpServer(tmp_path / "nope")


def test_port_in_use(root: Path) -> None:
    with HttpServer(root) as first, pytest.raises(GitprovError, match="cannot listen"):
        HttpServer(root, HOST, first.port).start()


def test_addresses_are_written_with_an_ipv6_address_in_brackets(root: Path) -> None:
    """`::1:8080` reads as another address, and is no URL's: the URLs the servers give
    and the error that names where one cannot listen bracket it."""
    try:
        http = HttpServer(root, "::1", 0)
        http.start()
    except GitprovError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc.message}")
    try:
        assert http.url == f"http://[::1]:{http.port}"
        with pytest.raises(GitprovError) as caught:
            HttpServer(root, "::1", http.port).start()
        assert f"cannot listen for HTTP on [::1]:{http.port}: " in caught.value.message
    finally:
        http.stop()
    with TftpServer(root, "::1", 0) as tftp:
        assert tftp.url == f"tftp://[::1]:{tftp.port}"
    with TftpServer(root, HOST, 0) as tftp:
        assert tftp.url == f"tftp://{HOST}:{tftp.port}"


# --- HTTPS with client certificates ----------------------------------------------------


def test_https_with_client_certificate(root: Path, tmp_path: Path, events: Events) -> None:
    curl = _need("curl", "curl")
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = new_ca("gitprov-test-ca")
    save_pair(pki, "ca", ca)
    save_pair(pki, "server", new_leaf(ca, "localhost", [HOST]))
    save_pair(pki, "client", new_leaf(ca, "0004f2abcdef", None))
    context = make_tls_context(pki / "server.crt", pki / "server.key", pki / "ca.crt")
    with HttpServer(root, HOST, 0, on_fetch=events, tls=context) as server:
        assert server.url.startswith("https://")
        url = f"{server.url}/small.cfg"
        with_cert = ["--cacert", str(pki / "ca.crt"), "--cert", str(pki / "client.crt")]
        with_cert += ["--key", str(pki / "client.key")]
        assert curl_get(*with_cert, url) == (200, SMALL)
        without = run([curl, "-sS", "--cacert", str(pki / "ca.crt"), url])
        assert without.returncode != 0
        assert SMALL not in without.stdout
    assert [(e.protocol, e.status) for e in events.wait_for(1)] == [("https", 200)]


def test_tls_context_errors(tmp_path: Path) -> None:
    with pytest.raises(GitprovError, match="cannot load TLS certificate"):
        make_tls_context(tmp_path / "no.crt", tmp_path / "no.key", None)


# --- TFTP: a minimal client ------------------------------------------------------------


def _tftp_exchange(port: int, packet: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(3)
        sock.sendto(packet, (HOST, port))
        return sock.recv(70000)


# --- TFTP: real clients ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [("small.cfg", SMALL), ("big.bin", BIG), ("m512.bin", MULTIPLE_OF_512), ("empty.cfg", b"")],
)
def test_tftp_hpa_get(tftp: TftpServer, tmp_path: Path, name: str, content: bytes) -> None:
    result = tftp_hpa(tftp.port, tmp_path, name, "out")
    assert result.stdout + result.stderr == b""
    assert (tmp_path / "out").read_bytes() == content


@pytest.mark.parametrize(
    ("name", "content", "extra"),
    [
        ("small.cfg", SMALL, ()),
        ("/cfg/0004f2abcdef.cfg", SMALL, ()),
        ("big.bin", BIG, ("-b", "1468")),
        ("m512.bin", MULTIPLE_OF_512, ()),
        ("m512.bin", MULTIPLE_OF_512, ("-b", "1024")),
        ("empty.cfg", b"", ()),
    ],
)
def test_busybox_get(
    tftp: TftpServer, tmp_path: Path, name: str, content: bytes, extra: tuple[str, ...]
) -> None:
    result = busybox_get(tftp.port, name, tmp_path / "out", *extra)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == content


def test_tftp_hpa_one_session_several_files(tftp: TftpServer, tmp_path: Path) -> None:
    # `get a b c` fetches three files from one client port; tftpy stalls ~5 s per file here.
    started = time.monotonic()
    result = tftp_hpa(tftp.port, tmp_path, "small.cfg", "big.bin", "m512.bin")
    assert time.monotonic() - started < 5
    assert result.stdout + result.stderr == b""
    assert (tmp_path / "small.cfg").read_bytes() == SMALL
    assert (tmp_path / "big.bin").read_bytes() == BIG
    assert (tmp_path / "m512.bin").read_bytes() == MULTIPLE_OF_512


@pytest.mark.parametrize(
    "name",
    ["missing.cfg", ".fv0004f2abcdef.cfg.tmp", "../secret.txt", "/../secret.txt", "escape", "cfg"],
)
def test_tftp_not_found(tftp: TftpServer, tmp_path: Path, name: str) -> None:
    hpa = tftp_hpa(tftp.port, tmp_path, name, "hpa.out")
    assert b"Error code 1: File not found" in hpa.stdout + hpa.stderr
    assert (tmp_path / "hpa.out").read_bytes() == b""
    bb = busybox_get(tftp.port, name, tmp_path / "bb.out")
    assert bb.returncode != 0
    assert b"File not found" in bb.stderr
    assert not (tmp_path / "bb.out").exists() or (tmp_path / "bb.out").read_bytes() == b""


def test_tftp_ipv6(root: Path, tmp_path: Path) -> None:
    busybox = _need("busybox", "busybox")
    server = TftpServer(root, "::1", 0)
    try:
        server.start()
    except GitprovError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        out = tmp_path / "out"
        args = [busybox, "tftp", "-g", "-r", "small.cfg", "-l", str(out), "::1", str(server.port)]
        assert run(args).returncode == 0
        assert out.read_bytes() == SMALL
    finally:
        server.stop()


def test_tftp_netascii_mode(tftp: TftpServer, root: Path) -> None:
    (root / "text.cfg").write_bytes(b"a\nb\rc\r\n")
    got = tftp_get(tftp.port, "text.cfg", mode="netascii", options={"tsize": 0})
    assert got.data == b"a\r\nb\r\0c\r\0\r\n"
    assert got.oack is None  # no tsize in netascii: the wire size is not known up front


# --- TFTP: protocol details with the Python client -------------------------------------


def test_tftp_block_number_wraps(tftp: TftpServer, root: Path) -> None:
    content = os.urandom(8 * 65600 + 3)  # more than 65535 blocks of 8 bytes
    (root / "wrap.bin").write_bytes(content)
    got = tftp_get(tftp.port, "wrap.bin", blksize=8)
    assert got.oack == {"blksize": "8"}
    assert got.blocks == 65601
    assert got.data == content


def test_tftp_options(tftp: TftpServer) -> None:
    got = tftp_get(tftp.port, "big.bin", 70000, options={"tsize": 0, "timeout": 3, "x": 1})
    assert got.oack == {"blksize": "65464", "tsize": str(len(BIG)), "timeout": "3"}
    assert got.data == BIG
    # Out-of-range values are ignored; with nothing accepted there is no OACK.
    got = tftp_get(tftp.port, "small.cfg", 4, options={"timeout": 0})
    assert got.oack is None
    assert got.data == SMALL
    # A value is digits (RFC 2347): int() read " 8", "1_000" and a full-width digit too.
    for odd in (" 8", "1_000", "\uff18", "+512", "1" * 5000):  # (int() refuses 4301 digits)
        got = tftp_get(tftp.port, "small.cfg", options={"blksize": odd})
        assert got.oack is None and got.data == SMALL, odd


def test_tftp_duplicate_acks_do_not_double_data(tftp: TftpServer) -> None:
    got = tftp_get(tftp.port, "big.bin", 1024, dup_acks=True)
    assert got.data == BIG
    assert got.duplicates == 0


def test_tftp_retransmits_on_timeout(tftp: TftpServer) -> None:
    got = tftp_get(tftp.port, "small.cfg", withhold_first_ack=True)
    assert got.data == SMALL
    assert got.first_blocks[:2] == [1, 1]


def test_tftp_gives_up_on_silent_client(root: Path, events: Events) -> None:
    # Past its first ACK a transfer gets every retry; before it, see serve_hardening_test.
    with (
        TftpServer(root, on_fetch=events, timeout=0.1, retries=2) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.bind((HOST, 0))
        sock.settimeout(2)
        sock.sendto(tftp_request(1, "m512.bin"), (HOST, server.port))
        packet, peer = sock.recvfrom(1024)
        assert struct.unpack_from("!HH", packet) == (3, 1)
        sock.sendto(struct.pack("!HH", 4, 1), peer)
        blocks = [struct.unpack_from("!HH", sock.recv(1024)) for _ in range(3)]
        assert blocks == [(3, 2)] * 3
        (event,) = events.wait_for(1)
        assert (event.path, event.status, event.size) == ("m512.bin", 408, 512)


def test_tftp_refuses_write_and_garbage(tftp: TftpServer, root: Path) -> None:
    reply = _tftp_exchange(tftp.port, tftp_request(2, "new.cfg"))
    assert reply == struct.pack("!HH", 5, 2) + b"Access violation\0"
    assert not (root / "new.cfg").exists()
    reply = _tftp_exchange(tftp.port, struct.pack("!H", 1) + b"unterminated")
    assert struct.unpack_from("!HH", reply) == (5, 4)
    reply = _tftp_exchange(tftp.port, tftp_request(1, "small.cfg", "mail"))
    assert struct.unpack_from("!HH", reply) == (5, 4)


def test_tftp_busy(root: Path, events: Events) -> None:
    # Only transfers past their first ACK make the server busy: pending ones give way.
    limits = TftpLimits(max_transfers=1)
    with (
        TftpServer(root, on_fetch=events, timeout=0.2, retries=1, limits=limits) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stalled,
    ):
        stalled.bind((HOST, 0))
        stalled.settimeout(2)
        stalled.sendto(tftp_request(1, "big.bin"), (HOST, server.port))
        _, peer = stalled.recvfrom(1024)
        stalled.sendto(struct.pack("!HH", 4, 1), peer)
        stalled.recv(1024)  # block 2: the transfer is running and holds the only slot
        reply = _tftp_exchange(server.port, tftp_request(1, "small.cfg"))
        assert reply == struct.pack("!HH", 5, 0) + b"Server busy\0"
        statuses = sorted(e.status for e in events.wait_for(2))
        assert server.refusals == {"busy": 1}
    assert statuses == [408, 503]


def test_tftp_stop_ends_transfers_quickly(root: Path) -> None:
    server = TftpServer(root, timeout=30)
    server.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(2)
        sock.sendto(tftp_request(1, "small.cfg"), (HOST, server.port))
        sock.recv(1024)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.5
        assert struct.unpack_from("!HH", sock.recv(1024)) == (5, 0)


def test_tftp_fetch_events(tftp: TftpServer, events: Events) -> None:
    assert tftp_get(tftp.port, "/small.cfg").data == SMALL
    assert tftp_get(tftp.port, "missing.cfg").error == (1, "File not found")
    _tftp_exchange(tftp.port, tftp_request(2, "up.cfg"))
    seen = events.wait_for(3)
    assert sorted((e.protocol, e.client, e.path, e.status, e.size) for e in seen) == [
        ("tftp", HOST, "/small.cfg", 200, len(SMALL)),
        ("tftp", HOST, "missing.cfg", 404, 0),
        ("tftp", HOST, "up.cfg", 403, 0),
    ]


# --- atomicity under os.replace --------------------------------------------------------


def _replacing(path: Path, contents: tuple[bytes, bytes]) -> Callable[[], int]:
    """Flip `path` between two complete contents the publisher's way until told to stop."""
    stop = threading.Event()
    flips = [0]

    def run() -> None:
        temp = path.with_name(f".{path.name}.tmp")
        while not stop.is_set():
            temp.write_bytes(contents[flips[0] % 2])
            os.replace(temp, path)
            flips[0] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def finish() -> int:
        stop.set()
        thread.join()
        return flips[0]

    return finish


def test_fetches_during_replace_are_whole(
    http: HttpServer, tftp: TftpServer, root: Path, tmp_path: Path
) -> None:
    curl = _need("curl", "curl")
    _need("busybox", "busybox")
    contents = (os.urandom(200_000), os.urandom(200_000))
    target = root / "flip.bin"
    target.write_bytes(contents[0])
    finish = _replacing(target, contents)
    try:
        for i in range(30):
            out = tmp_path / f"h{i}"
            assert run([curl, "-sS", "-o", str(out), f"{http.url}/flip.bin"]).returncode == 0
            assert out.read_bytes() in contents
            out = tmp_path / f"t{i}"
            assert busybox_get(tftp.port, "flip.bin", out, "-b", "1468").returncode == 0
            assert out.read_bytes() in contents
    finally:
        flips = finish()
    assert flips > 60  # the file really was replaced while being served


def _tftp_while_truncated(port: int, path: Path, at_block: int) -> tuple[bytes, bytes | None]:
    """Fetch `path` (512-byte blocks), cutting it in place to 1000 bytes when block
    `at_block` arrives: the bytes taken as the file, and the ERROR packet if one came."""
    data = bytearray()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(tftp_request(1, path.name), (HOST, port))
        expected = 1
        while True:
            packet, server = sock.recvfrom(70000)
            opcode, number = struct.unpack_from("!HH", packet)
            if opcode == 5:
                return bytes(data), packet
            if number != expected:
                continue
            if number == at_block:
                os.truncate(path, 1000)
            data += packet[4:]
            sock.sendto(struct.pack("!HH", 4, number), server)
            if len(packet) - 4 < 512:
                return bytes(data), None
            expected += 1


def test_tftp_a_file_cut_in_place_while_sent_is_an_error_not_a_whole_file(
    tftp: TftpServer, root: Path, events: Events
) -> None:
    (root / "cut.bin").write_bytes(BIG)
    data, error = _tftp_while_truncated(tftp.port, root / "cut.bin", 5)
    assert error is not None, f"{len(data)} bytes of {len(BIG)} ended as a whole file"
    assert error[4:] == b"Read error\0"
    assert data == BIG[: len(data)] and len(data) < len(BIG)
    (event,) = events.wait_for(1)
    assert (event.status, event.sha256) == (500, None)


# --- both ------------------------------------------------------------------------------


def test_serve_roots(root: Path, tmp_path: Path, events: Events) -> None:
    with serve_roots(root, root, HOST, 0, 0, on_fetch=events) as handle:
        assert handle.http is not None and handle.tftp is not None
        assert curl_get(f"{handle.http.url}/small.cfg") == (200, SMALL)
        assert tftp_get(handle.tftp.port, "small.cfg").data == SMALL
        assert not handle.wait(0)
    assert handle.wait(0)
    assert sorted(e.protocol for e in events.wait_for(2)) == ["http", "tftp"]
    with pytest.raises(GitprovError, match="nothing to serve"):
        serve_roots(None, None)


def test_serve_roots_stops_http_when_tftp_fails(root: Path) -> None:
    with TftpServer(root) as taken, pytest.raises(GitprovError, match="TFTP"):
        serve_roots(root, root, HOST, 0, taken.port)


def test_http_listen_queue_holds_a_boot_storm(root: Path) -> None:
    """A site's phones booting together connect before the server gets to accept them.
    With socketserver's default backlog of 5 the kernel drops the SYNs beyond it and the
    phones retry only after a second or more; the listener's queue must hold them."""
    listener = _HttpListener((HOST, 0), root, None, "http", _Refusals())
    clients: list[socket.socket] = []
    try:
        port = int(listener.server_address[1])
        # Nobody accepts: every connection must wait in the listen queue.
        for _ in range(64):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.5)
            clients.append(s)
            s.connect((HOST, port))
    finally:
        for s in clients:
            s.close()
        listener.server_close()


@pytest.mark.parametrize(
    "request_line",
    [b"GET http://[/x HTTP/1.1", b"GET http://[::1/fv.cfg HTTP/1.1", b"HEAD h://[ HTTP/1.1"],
)
def test_http_an_absolute_target_that_is_no_url_is_answered(
    http: HttpServer, request_line: bytes
) -> None:
    """An unclosed IPv6 bracket in an absolute-form target is no URL: a 404, as any
    name of no file, not a connection dropped without a word."""
    with socket.create_connection(("127.0.0.1", http.port), timeout=10) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 404"), reply[:200]


def test_http_connections_past_the_cap_are_closed_and_the_others_served(root: Path) -> None:
    """Clients that open connections and say nothing hold a thread each until the
    handler's timeout: past the cap a connection is closed at once, and once one of the
    idle ones is gone a new client is served again."""
    server = HttpServer(root, "127.0.0.1", 0, max_connections=2)
    server.start()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(2)]
        try:
            time.sleep(0.2)  # (both accepted, each in its handler's thread)
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as third:
                third.sendall(b"GET /small.cfg HTTP/1.1\r\nHost: x\r\n\r\n")
                assert third.recv(65536) == b""  # closed without an answer
        finally:
            idle.pop().close()
        deadline = time.monotonic() + 10
        while True:
            code, body = curl_get(f"{server.url}/small.cfg")
            if code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (code, body) == (200, SMALL)
        for s in idle:
            s.close()
    finally:
        server.stop()


def test_a_request_that_drips_in_is_dropped_at_its_deadline_not_held_for_ever(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte every so often never leaves a connection idle long enough for the socket's
    timeout: the request's line and headers have a deadline of their own (30 s; 0.6 s
    here), and the slot of a dropped client serves the next one."""
    monkeypatch.setattr(serve_module._HttpHandler, "request_seconds", 0.6)
    server = HttpServer(root, "127.0.0.1", 0, max_connections=1)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as drip:
            started = time.monotonic()
            closed = False
            for byte in b"GET /small.cfg HTTP/1.1\r\nHost: x\r\n":
                try:
                    drip.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
                if time.monotonic() - started > 5:
                    break
            if not closed:
                drip.settimeout(5)
                with contextlib.suppress(OSError):
                    assert drip.recv(65536) == b""
            assert time.monotonic() - started < 5
        deadline = time.monotonic() + 10
        while True:
            code, body = curl_get(f"{server.url}/small.cfg")
            if code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (code, body) == (200, SMALL)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/fv\xff.cfg", "/fv\udcff.cfg"),  # a byte that is not UTF-8, raw
        (b"/fv%FF.cfg", "/fv\udcff.cfg"),  # the same, percent-encoded
        (b"/caf\xc3\xa9.cfg", "/caf\u00e9.cfg"),  # UTF-8, raw
        (b"/caf%C3%A9.cfg", "/caf\u00e9.cfg"),
    ],
)
def test_http_a_path_is_its_bytes_read_as_utf8_raw_or_percent_encoded(
    http: HttpServer, events: Events, target: bytes, path: str
) -> None:
    """As docs/fleet-status.md says of the fetch log's path: a byte that is not UTF-8 is
    `\\xNN` there (a lone surrogate here), whether it came raw or percent-encoded."""
    with socket.create_connection(("127.0.0.1", http.port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
    (event,) = events.wait_for(1)
    assert (event.path, event.status) == (path, 404)


def test_a_host_that_does_not_resolve_is_not_told_to_choose_another_port() -> None:
    unresolved = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    error = serve_module._bind_error("HTTP", "no such host", 8080, unresolved)
    assert "--host" in error.hint and "port" not in error.hint, error.hint
    taken = OSError(errno.EADDRINUSE, "Address already in use")
    assert "another port" in serve_module._bind_error("HTTP", "127.0.0.1", 80, taken).hint


@pytest.mark.parametrize(
    ("request_head", "path", "status"),
    [
        (b"GET /small.cfg HTTP/2.0\r\n\r\n", "/small.cfg", 505),
        (b"GET /small.cfg HTTP/1.x\r\n\r\n", "/small.cfg", 400),
        (b"GET /a /b /c HTTP/1.1\r\n\r\n", "/a", 400),
        (b"GET\r\n\r\n", "", 400),
        # (the line's target as far as the logs need it: the fetch log cuts at 1024)
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", "/" + "a" * 2047, 414),
        (b"GET /small.cfg HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", "/small.cfg", 431),
    ],
)
def test_http_requests_the_parser_refuses_are_in_the_fetch_log(
    http: HttpServer, events: Events, request_head: bytes, path: str, status: int
) -> None:
    """docs/fleet-status.md: a line for every request answered, refusals included. Those
    http.server refuses itself (a bad version, a request line or headers too long) were
    answered and never logged."""
    with socket.create_connection(("127.0.0.1", http.port), timeout=10) as sock:
        sock.sendall(request_head)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 %d" % status), reply[:100]
    (event,) = events.wait_for(1)
    assert (event.path, event.status, event.size) == (path, status, 0)


def test_http_a_refused_request_is_logged_with_its_own_path_not_the_last_ones(
    http: HttpServer, events: Events
) -> None:
    with socket.create_connection(("127.0.0.1", http.port), timeout=10) as sock:
        sock.sendall(b"GET /small.cfg HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while SMALL not in reply:
            reply += sock.recv(65536)
        sock.sendall(b"GET /" + b"b" * 70_000 + b" HTTP/1.1\r\n\r\n")
        while sock.recv(65536):
            pass
    first, second = events.wait_for(2)
    assert (first.path, first.status) == ("/small.cfg", 200)
    assert (second.path[:3], second.status) == ("/bb", 414)


def test_http_a_refused_method_is_logged_escaped(
    http: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The method went into the log raw: a client could drive the reader's terminal
    (ESC), as the path, escaped on the same line, could not."""
    caplog.set_level("INFO", logger="gitprov.serve")
    with socket.create_connection(("127.0.0.1", http.port), timeout=10) as sock:
        sock.sendall(b"\x1b[2JEVIL\x08 /small.cfg HTTP/1.1\r\nHost: x\r\n\r\n")
        while sock.recv(65536):
            pass
    deadline = time.monotonic() + 3
    while not any("refused" in m for m in caplog.messages) and time.monotonic() < deadline:
        time.sleep(0.01)
    (line,) = [m for m in caplog.messages if "refused" in m]
    assert "\x1b" not in line and "\x08" not in line and "EVIL" in line, line
