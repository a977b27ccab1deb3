"""gitprov.fleet: the manifest against the servers' logs, line by line.

Manifests are written here with known versions; log lines are written by hand in each
server's format (real servers' lines: tests/e2e/fleet_test.py). Every expected state and
version below follows from the lines and the publish time spelled out next to it.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitprov.errors import UsageError
from gitprov.fleet import (
    MALFORMED_KEPT,
    SCAN_MACS_KEPT,
    FleetReport,
    LogSource,
    fleet_status,
    parse_log_source,
)
from gitprov.plan import Kind, Manifest, ManifestEntry, RootState

A, B, C = "0021f2011b19", "0021f2011b20", "0021f2a0c001"
COMMIT = "c" * 40
# The publish ended in this second: files were in place before 12:00:01.
PUBLISHED = "2024-05-01T12:00:00+00:00"


def entry(mac: str, version: int, kind: str = Kind.DEVICE) -> ManifestEntry:
    return ManifestEntry(mac, "IP542N", version, "abc", "p" * 64, "d" * 64, kind)


def write_manifest(
    state: Path,
    versions: dict[str, int],
    roots: dict[str, RootState] | None = None,
) -> Path:
    state.mkdir(parents=True, exist_ok=True)
    files = {f"fv{mac}.conf": entry(mac, v) for mac, v in versions.items()}
    files["IP542N.conf"] = entry("", 1000, Kind.BOOTSTRAP)
    manifest = Manifest(COMMIT, PUBLISHED, roots or {}, files)
    (state / "manifest.json").write_text(manifest.to_json())
    return state


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return write_manifest(tmp_path / "state", {A: 1002, B: 1002, C: 1001})


def write(path: Path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def gp(
    time: str,
    path: str,
    *,
    status: int = 200,
    version: int | None = None,
    client: str = "192.0.2.7",
    protocol: str = "http",
    size: int = 592,
) -> str:
    """A line of gitprov serve's fetch log."""
    mac = path.lstrip("/")[2:14].lower() if path.lstrip("/").startswith("fv") else None
    return json.dumps(
        {
            "time": time,
            "protocol": protocol,
            "client": client,
            "path": path,
            "file": path.lstrip("/").lower() if status == 200 else None,
            "mac": mac,
            "kind": "device" if version is not None else None,
            "version": version,
            "status": status,
            "bytes": size if status == 200 else 0,
        }
    )


def run(state: Path, *logs: str, **kw: object) -> FleetReport:
    return fleet_status(state, [parse_log_source(log) for log in logs], **kw)  # type: ignore[arg-type]


def table(report: FleetReport) -> dict[str, tuple[str, int | None]]:
    return {d.mac: (d.state, d.fetched_version) for d in report.devices}


# --- the fetch log ---------------------------------------------------------------------------


def test_states_from_the_fetch_log(state: Path, tmp_path: Path) -> None:
    log = write(
        tmp_path / "fetch.log",
        gp("2024-05-01T11:00:00.000Z", f"/fv{A}.conf", version=1001),
        gp("2024-05-01T12:05:00.000Z", f"/fv{A.upper()}.conf", version=1002, protocol="tftp"),
        gp("2024-05-01T12:06:00.000Z", f"/fv{B}.conf", version=1001),
        # Later, but no fetch: a HEAD (0 bytes, no version) and a 404 of another name.
        gp("2024-05-01T12:07:00.000Z", f"/fv{B}.conf", size=0),
        gp("2024-05-01T12:08:00.000Z", f"/spa{B}.cfg", status=404, client="192.0.2.99"),
    )
    report = run(state, log)
    assert table(report) == {A: ("current", 1002), B: ("stale", 1001), C: ("never", None)}
    a, b, c = report.devices
    assert a.fetched is not None and a.fetched.protocol == "tftp"
    assert a.fetched.path == f"/fv{A.upper()}.conf" and a.fetched.at == "2024-05-01T12:05:00.000Z"
    assert a.version_from == "log"
    assert b.last_seen is not None and b.last_seen.path == f"/spa{B}.cfg"
    assert b.last_seen.status == 404 and b.last_seen.log.endswith("fetch.log:5")
    assert b.fetched is not None and b.fetched.at == "2024-05-01T12:06:00.000Z"
    assert c.last_seen is None and c.fetched is None
    assert (report.count("current"), report.count("stale"), report.count("never")) == (1, 1, 1)
    assert report.scans == () and report.malformed_total == 0


def test_a_file_not_as_published_is_stale(state: Path, tmp_path: Path) -> None:
    # The log says version null with status 200: the bytes were not the manifest's.
    log = write(tmp_path / "f.log", gp("2024-05-01T12:05:00.000Z", f"/fv{A}.conf"))
    assert table(run(state, log))[A] == ("stale", None)


def test_lines_in_any_order_the_latest_counts(state: Path, tmp_path: Path) -> None:
    one = write(tmp_path / "1.log", gp("2024-05-01T13:00:00.000Z", f"/fv{A}.conf", version=1002))
    two = write(tmp_path / "2.log", gp("2024-05-01T12:30:00.000Z", f"/fv{A}.conf", version=1001))
    assert table(run(state, one, two))[A] == ("current", 1002)
    assert table(run(state, two, one))[A] == ("current", 1002)


def test_unknown_macs_are_scans_grouped_by_client(state: Path, tmp_path: Path) -> None:
    lines = [
        gp(f"2024-05-01T12:00:{i:02d}.000Z", f"/fv0021f2bad{i % 3:03d}.conf", status=404)
        for i in range(10)
    ]
    lines.append(gp("2024-05-01T13:00:00.000Z", "/fv0021F2BAD999.conf", status=404, client="::1"))
    lines.append(gp("2024-05-01T13:00:00.000Z", "/IP542N.conf", status=200, client="::1"))
    report = run(state, write(tmp_path / "f.log", *lines))
    first, second = report.scans
    assert (first.client, first.requests, first.macs, first.macs_capped) == (
        "192.0.2.7",
        10,
        3,
        False,
    )
    assert (first.first, first.last) == ("2024-05-01T12:00:00.000Z", "2024-05-01T12:00:09.000Z")
    assert first.examples == (
        "/fv0021f2bad000.conf",
        "/fv0021f2bad001.conf",
        "/fv0021f2bad002.conf",
    )
    assert (second.client, second.requests, second.macs) == ("::1", 1, 1)
    assert table(report) == {A: ("never", None), B: ("never", None), C: ("never", None)}


def test_a_scan_of_many_macs_is_counted_in_bounded_memory(state: Path, tmp_path: Path) -> None:
    count = SCAN_MACS_KEPT + 500
    lines = [
        f'203.0.113.9 - - [01/May/2024:12:00:00 +0000] "GET /fv0021f3{i:06x}.conf HTTP/1.1" 404 0'
        for i in range(count)
    ]
    (scan,) = run(state, write(tmp_path / "access.log", *lines)).scans
    assert (scan.requests, scan.macs, scan.macs_capped) == (count, SCAN_MACS_KEPT, True)


# --- nginx -----------------------------------------------------------------------------------


def ng(stamp: str, target: str, status: int = 200, size: str = "592", method: str = "GET") -> str:
    return (
        f'192.0.2.8 - - [{stamp}] "{method} {target} HTTP/1.1" {status} {size} "-" '
        '"Flyingvoice IP542N"'
    )


def test_nginx_versions_follow_the_publish_time(state: Path, tmp_path: Path) -> None:
    """No roots in the manifest: the publish time (12:00:00, whole seconds) is when the
    files were in place at the latest; a fetch logged in that second is not counted."""
    log = write(
        tmp_path / "access.log",
        ng("01/May/2024:12:00:01 +0000", f"/fv{A}.conf?x=1"),  # after: the published one
        ng("01/May/2024:14:00:00 +0200", f"/fv{B}.conf"),  # 12:00:00 UTC: same second
        ng("01/May/2024:13:00:00 +0000", f"/fv{C.upper()}.conf"),  # $MAU: the same file
        ng("01/May/2024:13:00:00 +0000", f"/fv{A}.conf", method="HEAD", size="0"),
    )
    report = run(state, log)
    assert table(report) == {A: ("current", 1002), B: ("stale", None), C: ("current", 1001)}
    a, _, c = report.devices
    assert a.version_from == "write-time" and a.fetched is not None
    assert a.fetched.path == f"/fv{A}.conf" and a.fetched.at == "2024-05-01T12:00:01.000Z"
    assert a.last_seen is not None and a.last_seen.at == "2024-05-01T13:00:00.000Z"
    assert c.fetched is not None and c.fetched.path == f"/fv{C.upper()}.conf"


def test_nginx_bytes_other_than_the_files_are_not_its_version(tmp_path: Path) -> None:
    http = tmp_path / "http"
    http.mkdir()
    (http / f"fv{A}.conf").write_bytes(b"x" * 592)
    info = (http / f"fv{A}.conf").stat()
    root = RootState(COMMIT, stat={f"fv{A}.conf": (592, info.st_mtime_ns, info.st_ino)})
    state = write_manifest(tmp_path / "state", {A: 1002}, {str(http): root})
    # The file took its place just now (its ctime): a fetch a day later got it...
    later = datetime.datetime.fromtimestamp(info.st_ctime + 86400, datetime.UTC)
    stamp = later.strftime("%d/%b/%Y:%H:%M:%S +0000")
    assert table(run(state, write(tmp_path / "a.log", ng(stamp, f"/fv{A}.conf"))))[A] == (
        "current",
        1002,
    )
    # ... unless fewer bytes went out than the file has (a transfer cut short).
    cut = write(tmp_path / "b.log", ng(stamp, f"/fv{A}.conf", size="100"))
    assert table(run(state, cut))[A] == ("stale", None)
    # A fetch a day before the file was written got an older one.
    before = datetime.datetime.fromtimestamp(info.st_ctime - 86400, datetime.UTC)
    old = write(tmp_path / "c.log", ng(before.strftime("%d/%b/%Y:%H:%M:%S +0000"), f"/fv{A}.conf"))
    assert table(run(state, old))[A] == ("stale", None)


def test_nginx_escapes_and_odd_requests(state: Path, tmp_path: Path) -> None:
    log = write(
        tmp_path / "access.log",
        # nginx writes " and bytes beyond ASCII as \xNN; the path is percent-decoded.
        '10.0.0.1 - - [01/May/2024:12:30:00 +0000] "GET /fv0021f2ba%64001.conf\\x22\\xFF HTTP/1.1"'
        ' 404 153 "-" "a\\x22b"',
        '10.0.0.2 - - [01/May/2024:12:30:00 +0000] "-" 400 0 "-" "-"',
        '10.0.0.3 - - [01/May/2024:12:30:00 +0000] "\\x16\\x03\\x01" 400 157 "-" "-"',
        f'10.0.0.4 - - [01/May/2024:12:30:00 +0000] "GET /fv{A}.conf HTTP/1.0" 200 592',  # common
        f'10.0.0.5 - - [01/May/2024:12:30:00 +0000] "GET http://h/fv{B}.conf HTTP/1.1" 200 592',
    )
    report = run(state, log)
    assert report.malformed_total == 0
    assert table(report)[A] == ("current", 1002) and table(report)[B] == ("current", 1002)
    (scan,) = report.scans
    assert scan.client == "10.0.0.1" and scan.examples == ('/fv0021f2bad001.conf"\\xff',)


# --- tftpd-hpa -------------------------------------------------------------------------------


def test_tftpd_requests_refusals_and_other_lines(state: Path, tmp_path: Path) -> None:
    path = tmp_path / "syslog"
    write(
        path,
        f"May  1 12:30:00 pbx in.tftpd[10]: RRQ from 192.0.2.7 filename fv{A.upper()}.conf "
        f"remapped to fv{A}.conf",
        "May  1 12:30:01 pbx in.tftpd[11]: RRQ from 192.0.2.8 filename /fv0021f2bad001.conf",
        "May  1 12:30:01 pbx in.tftpd[11]: sending NAK (1, File not found) to 192.0.2.8",
        f"May  1 12:30:02 pbx in.tftpd[12]: RRQ from 192.0.2.9 filename fv{B}.conf",
        "May  1 12:30:02 pbx in.tftpd[12]: sending NAK (2, Access violation) to 192.0.2.9",
        f"May  1 12:30:03 pbx in.tftpd[13]: WRQ from 192.0.2.9 filename fv{C}.conf",
        "May  1 12:30:04 pbx CRON[99]: (root) CMD (run-parts /etc/cron.hourly)",
        "May  1 12:30:05 pbx in.tftpd[14]: connect from 192.0.2.9",
    )
    # RFC 3164 has no year and no zone: local time, the year of the file's last write.
    os.utime(path, (1714600000, 1714600000))  # 2024-05-01T21:46:40Z
    report = run(state, str(path), now=0)
    assert table(report) == {A: ("current", 1002), B: ("never", None), C: ("never", None)}
    a, b, _ = report.devices
    assert a.last_seen is not None and a.last_seen.path == f"fv{A.upper()}.conf"
    assert a.last_seen.protocol == "tftp" and a.last_seen.client == "192.0.2.7"
    assert b.last_seen is not None and b.last_seen.status == 403
    (scan,) = report.scans
    assert (scan.client, scan.requests) == ("192.0.2.8", 1)
    (summary,) = report.logs
    assert (summary.format, summary.lines, summary.requests, summary.skipped) == (
        "tftpd",
        8,
        3,
        3,
    )


def test_tftpd_time_stamps(tmp_path: Path) -> None:
    """rsyslog's RFC 3339 stamps and journalctl's short-iso carry the zone; RFC 3164's
    year is the one that puts the line at most a day after the file's last write."""
    state = write_manifest(tmp_path / "state", {A: 1002})
    lines = {
        "2024-05-01T12:00:01.123456+00:00": "current",
        "2024-05-01T14:00:01+0200": "current",
        "2024-05-01T11:59:59Z": "stale",
    }
    for stamp, want in lines.items():
        log = write(
            tmp_path / "s.log", f"{stamp} pbx in.tftpd[7]: RRQ from 192.0.2.7 filename fv{A}.conf"
        )
        assert run(state, log).devices[0].state == want, stamp
    # Written in January 2025: "Dec 31" is from 2024, after the publish.
    december = tmp_path / "s.log"
    write(december, f"Dec 31 23:00:00 pbx in.tftpd[7]: RRQ from 192.0.2.7 filename fv{A}.conf")
    january = datetime.datetime(2025, 1, 2, 12, 0).timestamp()
    os.utime(december, (january, january))
    (device,) = run(state, str(december)).devices
    assert device.fetched is not None and device.fetched.at.startswith("2024-12-3")


def test_a_refusal_long_after_its_request_is_not_paired(state: Path, tmp_path: Path) -> None:
    log = write(
        tmp_path / "syslog",
        f"2024-05-01T12:30:00Z pbx in.tftpd[10]: RRQ from 192.0.2.7 filename fv{A}.conf",
        *(
            f"2024-05-01T12:{31 + i}:00Z pbx in.tftpd[{20 + i}]: RRQ from 192.0.2.8 filename x"
            for i in range(3)
        ),
        # pid 10 again, minutes later: another process with a reused pid.
        "2024-05-01T12:40:00Z pbx in.tftpd[10]: sending NAK (1, File not found) to 192.0.2.7",
    )
    assert table(run(state, log))[A] == ("current", 1002)


# --- reading -------------------------------------------------------------------------------


def test_rotated_logs_are_read_gzipped_and_formats_told_apart(state: Path, tmp_path: Path) -> None:
    fetch = tmp_path / "fetch.log.1.gz"
    fetch.write_bytes(
        gzip.compress(
            (gp("2024-05-01T12:05:00.000Z", f"/fv{A}.conf", version=1002) + "\n").encode()
        )
    )
    access = tmp_path / "access.log.2.gz"
    access.write_bytes(
        gzip.compress((ng("01/May/2024:13:00:00 +0000", f"/fv{B}.conf") + "\n").encode())
    )
    report = run(state, str(fetch), f"nginx:{access}")
    assert table(report) == {A: ("current", 1002), B: ("current", 1002), C: ("never", None)}
    assert [(s.format, s.requests) for s in report.logs] == [("gitprov", 1), ("nginx", 1)]


def test_a_truncated_gzip_counts_what_came_before(state: Path, tmp_path: Path) -> None:
    body = "".join(
        gp(f"2024-05-01T12:{i // 60:02d}:{i % 60:02d}.000Z", f"/fv0021f3{i:06x}.conf", status=404)
        + "\n"
        for i in range(3000)
    )
    body += gp("2024-05-01T13:00:00.000Z", f"/fv{A}.conf", version=1002) + "\n"
    data = gzip.compress(body.encode())
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    report = run(state, str(cut))
    assert report.malformed_total == 1
    (bad,) = report.malformed
    assert bad.where.startswith(f"{cut}:") and "cannot read on" in bad.reason
    (scan,) = report.scans
    assert 0 < scan.requests < 3000
    assert table(report)[A] == ("never", None)


def test_malformed_lines_are_counted_and_located(state: Path, tmp_path: Path) -> None:
    log = tmp_path / "fetch.log"
    good = gp("2024-05-01T12:05:00.000Z", f"/fv{A}.conf", version=1002)
    bad_lines = [
        b"{not json",
        b"[" * 100_000,  # nested past the recursion limit, and longer than a line
        b'{"time": 1}',
        b'{"time":"yesterday","protocol":"http","client":"x","path":"/","status":200}',
        b'{"time":"2024-05-01T12:00:00","protocol":"http","client":"x","path":"/","status":200}',
        b'{"time":"2024-05-01T12:00:00Z","protocol":"http","client":"x","path":"/","status":"200"}',
        b'{"time":"2024-05-01T12:00:00Z","protocol":"http","client":"x","path":"/","status":200,'
        b'"mac":"<script>"}',
        b"\xff\xfe\x00binary\x1b[31m",
        b"[" * 5000,
    ]
    log.write_bytes(good.encode() + b"\n" + b"\n".join(bad_lines) + b"\n" + good.encode() + b"\n")
    report = run(state, str(log))
    assert table(report)[A] == ("current", 1002)
    assert report.malformed_total == len(bad_lines)
    assert [m.where for m in report.malformed] == [
        f"{log}:{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 10)
    ]
    assert "longer than" in report.malformed[1].reason
    assert "not JSON" in report.malformed[8].reason
    for m in report.malformed:
        assert m.text.isascii() and m.text.isprintable(), m.text
    assert report.logs[0].malformed == len(bad_lines)


def test_only_the_first_malformed_lines_are_listed(state: Path, tmp_path: Path) -> None:
    log = write(tmp_path / "access.log", *["nonsense"] * (MALFORMED_KEPT + 7))
    report = run(state, f"nginx:{log}")
    assert report.malformed_total == MALFORMED_KEPT + 7
    assert len(report.malformed) == MALFORMED_KEPT


def test_a_log_in_no_known_format(state: Path, tmp_path: Path) -> None:
    log = write(tmp_path / "x.log", "hello", "world")
    report = run(state, log)
    assert report.logs[0].format is None and report.malformed_total == 2
    assert "not a format gitprov fleet reads" in report.malformed[0].reason


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.binary(max_size=300), max_size=12),
    st.sampled_from([None, "gitprov", "nginx", "tftpd"]),
)
def test_any_bytes_are_lines_or_malformed_never_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], fmt: str | None
) -> None:
    base = tmp_path_factory.mktemp("fuzz")
    state = write_manifest(base / "state", {A: 1002})
    log = base / "any.log"
    data = b"\n".join(lines)
    log.write_bytes(data)
    report = fleet_status(state, [LogSource(log, fmt)])  # type: ignore[arg-type]
    assert report.malformed_total <= data.count(b"\n") + 1


def test_inputs_that_cannot_be_read_are_usage_errors(state: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no manifest"):
        fleet_status(tmp_path / "nowhere", [])
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "manifest.json").write_text('{"commit": ')
    with pytest.raises(UsageError, match="not a manifest gitprov can read"):
        fleet_status(tmp_path / "torn", [])
    with pytest.raises(UsageError, match=r"missing\.log: cannot read it"):
        fleet_status(state, [LogSource(tmp_path / "missing.log")])
    with pytest.raises(UsageError, match="is a directory"):
        fleet_status(state, [LogSource(tmp_path)])
    # A device never ends: /dev/zero was read as an endless log of empty lines.
    with pytest.raises(UsageError, match="/dev/zero: not a file or a pipe"):
        fleet_status(state, [LogSource(Path("/dev/zero"))])


def test_a_log_may_come_through_a_pipe(state: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(b""))
    writer.start()
    try:
        fleet_status(state, [LogSource(fifo)])
    finally:
        writer.join(10)


def test_log_sources() -> None:
    assert parse_log_source("nginx:/var/log/a.log") == LogSource(Path("/var/log/a.log"), "nginx")
    assert parse_log_source("tftpd:syslog") == LogSource(Path("syslog"), "tftpd")
    assert parse_log_source("logs:2024/a.log") == LogSource(Path("logs:2024/a.log"))
    assert parse_log_source("/x/fetch.log") == LogSource(Path("/x/fetch.log"))


# --- adoption -------------------------------------------------------------------------------


def test_adoption_by_hour(state: Path, tmp_path: Path) -> None:
    log = write(
        tmp_path / "f.log",
        gp("2024-05-01T10:10:00.000Z", f"/fv{A}.conf", version=1001),
        gp("2024-05-01T10:20:00.000Z", f"/fv{B}.conf", version=1001),
        gp("2024-05-01T11:30:00.000Z", f"/fv{A}.conf", version=1002),
        # an older version fetched later does not move a device back
        gp("2024-05-01T11:40:00.000Z", f"/fv{A}.conf", version=1001),
        gp("2024-05-01T13:00:00.000Z", f"/fv{B}.conf", version=1002),
        gp("2024-05-01T13:05:00.000Z", f"/fv{C}.conf"),  # a version the log cannot tell
    )
    adoption = run(state, log).adoption
    assert adoption.bucket == "hour"
    assert adoption.series == ("older", "1001", "1002")
    assert adoption.times == tuple(f"2024-05-01T{h}:00:00.000Z" for h in (10, 11, 12, 13))
    assert adoption.counts == ((0, 2, 0), (0, 1, 1), (0, 1, 1), (1, 0, 2))
    assert run(state, log, bucket="day").adoption.counts == ((1, 0, 2),)


def test_adoption_by_day_over_weeks(state: Path, tmp_path: Path) -> None:
    log = write(
        tmp_path / "f.log",
        gp("2024-05-01T10:00:00.000Z", f"/fv{A}.conf", version=1001),
        gp("2024-05-20T10:00:00.000Z", f"/fv{A}.conf", version=1002),
    )
    adoption = run(state, log).adoption
    assert adoption.bucket == "day" and len(adoption.times) == 20
    assert adoption.counts[0] == (1, 0) and adoption.counts[-1] == (0, 1)


# --- size -----------------------------------------------------------------------------------


def test_memory_does_not_grow_with_the_lines(state: Path, tmp_path: Path) -> None:
    """Peak RSS of a fresh process reading 2,000 and 60,000 lines of resyncs and a scan:
    the same to within a few MiB (held lines would take tens of MiB)."""

    def peak(lines: int) -> int:
        path = tmp_path / f"{lines}.log"
        with path.open("w") as f:
            for i in range(lines):
                mac = A if i % 2 else f"0021f3{i % 5000:06x}"
                f.write(ng("01/May/2024:13:00:00 +0000", f"/fv{mac}.conf") + "\n")
        code = (
            "import sys; from pathlib import Path; from gitprov.fleet import *; "
            "r = fleet_status(Path(sys.argv[1]), [LogSource(Path(sys.argv[2]))]); "
            "assert r.logs[0].requests == int(sys.argv[3])"
        )
        proc = subprocess.Popen([sys.executable, "-c", code, str(state), str(path), str(lines)])
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        return usage.ru_maxrss * 1024

    small, big = peak(2_000), peak(60_000)
    assert big < small + 4 * 1024 * 1024, (small, big)


def test_a_time_out_of_the_calendar_in_utc_is_a_malformed_line(state: Path, tmp_path: Path) -> None:
    """Written within years 1 to 9999, but past them once its zone is taken off."""
    good = gp("2024-05-01T12:05:00.000Z", f"/fv{A}.conf", version=1002)
    log = write(
        tmp_path / "fetch.log",
        good,
        gp("9999-12-31T23:59:59.999-01:00", f"/fv{A}.conf", version=1003),
        gp("0001-01-01T00:00:00.000+01:00", f"/fv{A}.conf", version=1003),
    )
    report = run(state, log)
    assert table(report)[A] == ("current", 1002)
    assert report.malformed_total == 2
    assert all("out of the calendar" in m.reason for m in report.malformed)
    access = write(
        tmp_path / "access.log",
        ng("01/May/2024:12:00:01 +0000", f"/fv{A}.conf"),
        ng("31/Dec/9999:23:59:59 -2359", f"/fv{A}.conf"),
        ng("01/Jan/0001:00:00:00 +0100", f"/fv{A}.conf"),
    )
    report = run(state, access)
    assert report.malformed_total == 2
    assert all("out of the calendar" in m.reason for m in report.malformed)


def test_numbers_too_long_for_an_integer_are_malformed_lines(state: Path, tmp_path: Path) -> None:
    """`\\d+` fields: int() refuses more than 4300 digits; the line is malformed, and a
    NAK's RRQ is still counted."""
    digits = "9" * 5000
    access = write(
        tmp_path / "access.log",
        ng("01/May/2024:12:00:05 +0000", f"/fv{A}.conf"),
        ng("01/May/2024:12:00:06 +0000", f"/fv{B}.conf", size=digits),
    )
    report = run(state, access)
    assert table(report)[A] == ("current", 1002) and table(report)[B] == ("never", None)
    (bad,) = report.malformed
    assert bad.reason.startswith("bytes sent out of range") and bad.where.endswith(":2")
    syslog = write(
        tmp_path / "syslog",
        f"2024-05-01T12:30:00Z pbx in.tftpd[10]: RRQ from 192.0.2.7 filename fv{A}.conf",
        f"2024-05-01T12:30:00Z pbx in.tftpd[10]: sending NAK ({digits}, x) to 192.0.2.7",
    )
    report = run(state, syslog)
    assert report.malformed[0].reason.startswith("NAK code out of range")
    assert table(report)[A] == ("current", 1002)


def test_a_time_a_microsecond_before_the_calendars_end(state: Path, tmp_path: Path) -> None:
    """In range as written, but a float: it rounds up to year 10000."""
    log = write(
        tmp_path / "fetch.log",
        gp("2024-05-01T12:05:00.000Z", f"/fv{A}.conf", version=1002),
        gp("9999-12-31T23:59:59.999999Z", f"/fv{A}.conf", version=1003),
        gp("9999-12-31T23:59:59.000Z", f"/fv{B}.conf", version=1002),
    )
    report = run(state, log)
    assert table(report)[A] == ("current", 1002)
    assert table(report)[B] == ("current", 1002)
    (bad,) = report.malformed
    assert "out of the calendar" in bad.reason


@pytest.mark.parametrize("mtime", [3e11, -1e12])
def test_a_log_last_written_beyond_the_calendar(mtime: float) -> None:
    """(ext4 cannot hold such an mtime; tmpfs, XFS and an NFS server can.) RFC 3164
    stamps then take this year, as for a pipe."""
    from gitprov.fleet import _Context

    assert _Context(mtime).year == datetime.datetime.now().year


def test_memory_does_not_grow_with_the_versions_a_device_fetched(
    state: Path, tmp_path: Path
) -> None:
    """A crafted fetch log naming a new version on every line: the same peak RSS for
    2,000 and 200,000 of them (each version held would take tens of MiB, more than the
    peak of the imports that the smaller run measures)."""

    def peak(lines: int) -> int:
        path = tmp_path / f"{lines}.log"
        with path.open("w") as f:
            for i in range(lines):
                f.write(gp("2024-05-01T12:05:00.000Z", f"/fv{A}.conf", version=i) + "\n")
        code = (
            "import sys; from pathlib import Path; from gitprov.fleet import *; "
            "r = fleet_status(Path(sys.argv[1]), [LogSource(Path(sys.argv[2]))]); "
            "assert r.adoption.series[-1] == str(int(sys.argv[3]) - 1)"
        )
        proc = subprocess.Popen([sys.executable, "-c", code, str(state), str(path), str(lines)])
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        return usage.ru_maxrss * 1024

    small, big = peak(2_000), peak(200_000)
    assert big < small + 4 * 1024 * 1024, (small, big)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([A, B, C]),
            st.integers(0, 4 * 86400),
            st.one_of(st.none(), st.integers(990, 1020)),
        ),
        max_size=80,
    )
)
def test_the_chart_is_the_same_with_only_the_newest_versions_kept(
    tmp_path_factory: pytest.TempPathFactory,
    fetches: list[tuple[str, int, int | None]],
) -> None:
    base = tmp_path_factory.mktemp("chart")
    state = write_manifest(base / "state", {A: 1020, B: 1020, C: 1020})
    start = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC).timestamp()
    lines = []
    for mac, offset, version in fetches:
        at = datetime.datetime.fromtimestamp(start + offset, datetime.UTC)
        stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines.append(gp(stamp, f"/fv{mac}.conf", version=version))
    log = write(base / "fetch.log", *lines)
    kept = run(state, log).adoption
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("gitprov.fleet._keep_newest", lambda first: None)
        every = run(state, log).adoption
    assert kept == every


def test_a_client_too_long_to_be_an_address_is_a_malformed_line(
    state: Path, tmp_path: Path
) -> None:
    """Scanning clients are kept by name: 10,000 of 64 KiB would hold 640 MB."""
    long, longest = "c" * 256, "2001:db8::7%" + "e" * 243
    log = write(
        tmp_path / "fetch.log",
        gp("2024-05-01T12:05:00.000Z", "/fv0021f3000001.conf", status=404, client=long),
        gp("2024-05-01T12:05:00.000Z", "/fv0021f3000002.conf", status=404, client=longest),
    )
    report = run(state, log)
    assert [s.client for s in report.scans] == [longest]
    (bad,) = report.malformed
    assert bad.reason.startswith("not a client address") and bad.where.endswith(":1")
    access = write(
        tmp_path / "access.log", ng("01/May/2024:12:00:05 +0000", "/x").replace("192.0.2.8", long)
    )
    syslog = write(
        tmp_path / "syslog",
        f"2024-05-01T12:30:00Z pbx in.tftpd[10]: RRQ from {long} filename fv{A}.conf",
    )
    for path in (access, syslog):
        assert run(state, path).malformed[0].reason.startswith("not a client address")


def test_a_long_log_through_a_pipe_is_read_whole_with_progress(state: Path, tmp_path: Path) -> None:
    """Progress (on a terminal) asked the pipe for its position after 65,536 lines:
    an OSError that ended the reading there, as a malformed line."""
    line = gp("2024-05-01T12:05:00.000Z", f"/fv{A}.conf", version=1002) + "\n"
    lines = 70_000
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(line * lines))
    writer.start()
    shown: list[tuple[int, int]] = []
    try:
        report = fleet_status(
            state, [LogSource(fifo)], progress=lambda _, done, total: shown.append((done, total))
        )
    finally:
        writer.join(10)
    assert report.malformed_total == 0, report.malformed
    assert report.logs[0].requests == lines
