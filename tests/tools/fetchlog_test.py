"""The fetch log of `gitprov serve` (docs/fleet-status.md, "Fetch log").

The example inventory is published by the CLI; `gitprov serve` runs as a process over the
published roots with the publisher's state dir and is fetched from over loopback (curl and
the test's own TFTP client). The version each line names is checked against
`gitprov show MAC --reveal`'s DBID_DBASE_VERSION, not against the manifest the log reads.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitprov.cli import main
from gitprov.plan import Kind, ManifestEntry
from gitprov.tools.fetchlog import FIELDS, FetchLog, mac_of_path, record
from gitprov.tools.serve import FetchEvent, HttpServer, TftpLimits, TftpServer
from gitprov.tools.serve import _emit as emit
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.peers import need
from tests.fixtures.roots import root_args
from tests.fixtures.serve_clients import HOST, tftp_get

MAC, MAC2 = "0021f2011b19", "0021f2011b20"
UNKNOWN = "0021f2bad001"
AT = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def entry(kind: str = Kind.DEVICE, mac: str = MAC, version: int = 1002) -> ManifestEntry:
    return ManifestEntry(mac, "IP542N", version, "abc", "p" * 64, "d" * 64, kind)


# --- one line ----------------------------------------------------------------------------


def test_a_line_has_every_field_in_order() -> None:
    event = FetchEvent("tftp", "192.0.2.7", "fv0021F2011B19.conf", 200, 1568, f"fv{MAC}.conf")
    line = record(event, entry(), AT)
    assert list(line) == list(FIELDS)
    assert line == {
        "time": "2024-05-01T12:00:00.123Z",
        "protocol": "tftp",
        "client": "192.0.2.7",
        "path": "fv0021F2011B19.conf",
        "file": f"fv{MAC}.conf",
        "mac": MAC,
        "kind": "device",
        "version": 1002,
        "status": 200,
        "bytes": 1568,
    }


def test_time_is_utc_whatever_the_clock_zone() -> None:
    east = datetime.timezone(datetime.timedelta(hours=2))
    event = FetchEvent("http", HOST, "/x", 404, 0)
    at = datetime.datetime(2024, 5, 1, 14, 0, 0, tzinfo=east)
    assert record(event, None, at)["time"] == "2024-05-01T12:00:00.000Z"


def test_without_the_manifest_the_mac_comes_from_the_path() -> None:
    unknown = record(FetchEvent("http", HOST, f"/fv{UNKNOWN.upper()}.conf", 404, 0), None, AT)
    assert (unknown["mac"], unknown["file"], unknown["kind"], unknown["version"]) == (
        UNKNOWN,
        None,
        None,
        None,
    )
    assert (
        record(FetchEvent("http", HOST, "/IP542N.conf", 200, 9, "IP542N.conf"), None, AT)["mac"]
        is None
    )


def test_bootstrap_and_firmware_name_no_mac_and_an_image_has_no_version() -> None:
    for kind, version in ((Kind.BOOTSTRAP, 999), (Kind.FIRMWARE, None)):
        got = record(
            FetchEvent("tftp", HOST, "IP542N.conf", 200, 9, "IP542N.conf"),
            entry(kind, mac="", version=999 if version else 0),
            AT,
        )
        assert (got["mac"], got["kind"], got["version"]) == (None, str(kind), version)


def test_a_stage_file_names_its_device() -> None:
    """A device's stage file (plaintext-bootstrap): its device's MAC, as a per-MAC
    file's, so that `fleet` sees the device the same in every key delivery."""
    name = f"stage-fv{MAC}.conf"
    got = record(FetchEvent("http", HOST, f"/{name}", 200, 9, name), entry(Kind.STAGE), AT)
    assert (got["mac"], got["kind"], got["version"]) == (MAC, "stage", 1002)


def test_paths_that_are_not_utf8_or_hold_controls_stay_one_ascii_line(tmp_path: Path) -> None:
    path = b'/fv\xff\n{"forged":1}\x00.conf'.decode("utf-8", "surrogateescape")
    log = tmp_path / "fetch.log"
    with FetchLog(log, clock=lambda: AT) as fetches:
        fetches(FetchEvent("http", HOST, path, 404, 0))
    data = log.read_bytes()
    assert data.isascii() and data.count(b"\n") == 1 and data.endswith(b"\n")
    assert json.loads(data)["path"] == '/fv\\xff\n{"forged":1}\x00.conf'


def test_a_path_of_any_length_is_one_line_of_bounded_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A TFTP name can be 65,000 bytes: each such request was a 65 KB line in the fetch
    # log and in the server's log; a client sending them filled the disk at line rate.
    path = "/fv0021f2011b19.conf" + "A" * 65_000
    log = tmp_path / "fetch.log"
    with (
        caplog.at_level("INFO", logger="gitprov.serve"),
        FetchLog(log, clock=lambda: AT) as fetches,
    ):
        emit(fetches, FetchEvent("tftp", HOST, path, 404, 0))
    data = log.read_bytes()
    assert data.count(b"\n") == 1 and len(data) < 2_000
    shown = json.loads(data)["path"]
    assert shown == path[:1024] + "…" and json.loads(data)["mac"] == MAC
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fetch ")]
    assert len(line) < 2_000 and line.count("A") < 1100


@pytest.mark.parametrize(
    ("path", "mac"),
    [
        ("/fv0021F2011B19.conf", MAC),
        ("fv0021f2011b19.conf", MAC),
        ("/spa0021F2011b19.cfg", MAC),  # a mixed-case scan still names the MAC
        ("/IP542N.conf", None),
        ("/", None),
    ],
)
def test_mac_of_path(path: str, mac: str | None) -> None:
    assert mac_of_path(path) == mac


def test_the_file_is_created_0640_and_appended_to(tmp_path: Path) -> None:
    log = tmp_path / "fetch.log"
    log.write_bytes(b"earlier\n")
    log.chmod(0o600)
    with FetchLog(log, clock=lambda: AT) as fetches:
        fetches(FetchEvent("http", HOST, "/x", 404, 0))
    assert log.read_bytes().startswith(b"earlier\n{")
    fresh = tmp_path / "fresh.log"
    FetchLog(fresh).close()
    assert fresh.stat().st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_log(path: Path, count: int) -> list[dict[str, Any]]:
    """The log's lines once there are `count`: a client may be done before the server
    thread has written its line."""
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.01)


def test_an_unwritable_log_is_a_located_environment_error(tmp_path: Path) -> None:
    """The operator's path: exit 2, as any other of the environment."""
    from gitprov.errors import UsageError

    with pytest.raises(UsageError, match=r"cannot open the fetch log .*nowhere/fetch\.log"):
        FetchLog(tmp_path / "nowhere" / "fetch.log")


def test_a_full_disk_warns_once_and_serving_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    caplog.set_level("WARNING", logger="gitprov.serve")
    with FetchLog(Path("/dev/full")) as fetches:
        for _ in range(3):
            fetches(FetchEvent("http", HOST, "/x", 404, 0))
    warnings = [r for r in caplog.records if "cannot append to the fetch log" in r.message]
    assert len(warnings) == 1


# --- the servers, many at once ------------------------------------------------------------


def test_concurrent_fetches_give_whole_lines(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for i in range(8):
        (root / f"fv0021f2a0c0{i:02d}.conf").write_bytes(os.urandom(700 + 300 * i))
    log = tmp_path / "fetch.log"
    # Two writers on one file, as two `gitprov serve` processes would be.
    with (
        FetchLog(log) as first,
        FetchLog(log) as second,
        HttpServer(root, HOST, 0, on_fetch=first) as http,
        # All clients are at one address here: no pending session may give way.
        TftpServer(
            root, HOST, 0, on_fetch=second, limits=TftpLimits(max_pending_per_client=32)
        ) as tftp,
    ):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        failed: list[str] = []

        def fetch(worker: int) -> None:
            for i in range(8):
                name = f"fv0021F2A0C0{(i + worker) % 8:02d}.conf"
                want = (root / name.lower()).read_bytes()
                if worker % 2:
                    got = tftp_get(tftp.port, name).data
                else:
                    with opener.open(f"{http.url}/{name}", timeout=10) as response:
                        got = response.read()
                if got != want:
                    failed.append(name)

        threads = [threading.Thread(target=fetch, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failed == []
        # Before stopping: a transfer whose last ACK is still on its way ends "stopping".
        got = read_log(log, 64)
    assert len(got) == 64
    assert {(g["protocol"], g["status"]) for g in got} == {("http", 200), ("tftp", 200)}
    for g in got:
        assert g["bytes"] == (root / g["file"]).stat().st_size
        assert g["mac"] == g["file"][2:14]


# --- `gitprov serve` ------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    base: Path
    http: int
    tftp: int
    versions: dict[str, int]  # MAC -> DBID_DBASE_VERSION of `gitprov show --reveal`
    said: list[str]  # serve's stdout lines at start


def shown_version(repo: GitRepo, mac: str, capsys: pytest.CaptureFixture[str]) -> int:
    capsys.readouterr()
    assert main(["--repo", str(repo.path), "show", mac, "--rev", "main", "--reveal"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("DBID_DBASE_VERSION="), first
    return int(first.partition("=")[2])


def start_serve(base: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    argv = [sys.executable, "-m", "gitprov", "serve", "--http-port", "0", "--tftp-port", "0"]
    argv += ["--http-root", str(base / "http"), "--tftp-root", str(base / "tftp"), *extra]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=base
    )
    assert proc.stdout is not None
    said = [proc.stdout.readline().rstrip("\n") for _ in range(2)]
    return proc, said


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM; the rest of stdout. Not communicate(): it reads the pipes' descriptors and
    would miss what readline() has already buffered."""
    assert proc.stdout is not None and proc.stderr is not None
    proc.send_signal(signal.SIGTERM)
    with proc.stdout, proc.stderr:
        out = proc.stdout.read()
        err = proc.stderr.read()  # a few log lines: never enough to fill the pipe first
    assert proc.wait(timeout=30) == 0, err
    return out


@pytest.fixture
def published(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    code = main(
        ["--repo", str(example_repo.path), "publish", "--rev", "main", *root_args(tmp_path)]
    )
    assert code == 0, capsys.readouterr().err
    return tmp_path


@pytest.fixture
def served(
    published: Path, example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> Iterator[Served]:
    versions = {mac: shown_version(example_repo, mac, capsys) for mac in (MAC, MAC2)}
    proc, said = start_serve(published, "--state-dir", str(published / "state"))
    try:
        http = int(re.search(r":(\d+)  \(root", said[0]).group(1))  # type: ignore[union-attr]
        tftp = int(re.search(r":(\d+)/", said[1]).group(1))  # type: ignore[union-attr]
        assert proc.stdout is not None
        said.append(proc.stdout.readline().rstrip("\n"))
        yield Served(published, http, tftp, versions, said)
    finally:
        if proc.poll() is None:
            stop(proc)


def curl_status(*args: str) -> int:
    done = subprocess.run(
        [
            need("curl", "curl"),
            "-sS",
            "-o",
            os.devnull,
            "-w",
            "%{http_code}",
            "--noproxy",
            "*",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return int(done.stdout)


def test_serve_logs_every_fetch_with_the_version_served(served: Served) -> None:
    assert served.said[2] == f"fetch log: {served.base / 'state' / 'fetch.log'}"
    log = served.base / "state" / "fetch.log"
    base = f"http://{HOST}:{served.http}"
    started = datetime.datetime.now(datetime.UTC)
    assert curl_status(f"{base}/fv{MAC}.conf") == 200
    assert curl_status(f"{base}/fv{MAC.upper()}.conf") == 200
    assert curl_status("-I", f"{base}/fv{MAC}.conf") == 200
    assert tftp_get(served.tftp, f"fv{MAC.upper()}.conf").error is None
    assert curl_status(f"{base}/fv{UNKNOWN}.conf") == 404
    # A file that is not what the manifest lists (edited by hand, a lagging root): the
    # version it holds is not known, and the log does not guess.
    (served.base / "http" / f"fv{MAC2}.conf").write_bytes(b"Salted__edited by hand")
    assert curl_status(f"{base}/fv{MAC2}.conf") == 200
    got = read_log(log, 6)
    ended = datetime.datetime.now(datetime.UTC)

    size = (served.base / "http" / f"fv{MAC}.conf").stat().st_size
    version = served.versions[MAC]
    want = [
        ("http", f"/fv{MAC}.conf", f"fv{MAC}.conf", MAC, "device", version, 200, size),
        ("http", f"/fv{MAC.upper()}.conf", f"fv{MAC}.conf", MAC, "device", version, 200, size),
        ("http", f"/fv{MAC}.conf", f"fv{MAC}.conf", MAC, None, None, 200, 0),  # HEAD
        ("tftp", f"fv{MAC.upper()}.conf", f"fv{MAC}.conf", MAC, "device", version, 200, size),
        ("http", f"/fv{UNKNOWN}.conf", None, UNKNOWN, None, None, 404, 0),
        ("http", f"/fv{MAC2}.conf", f"fv{MAC2}.conf", MAC2, None, None, 200, 22),
    ]
    fields = ("protocol", "path", "file", "mac", "kind", "version", "status", "bytes")
    assert [tuple(g[f] for f in fields) for g in got] == want
    for g in got:
        assert list(g) == list(FIELDS)
        assert g["client"] == HOST
        assert isinstance(g["time"], str) and RFC3339_UTC.fullmatch(g["time"]), g["time"]
        at = datetime.datetime.fromisoformat(g["time"])
        assert started - datetime.timedelta(seconds=1) <= at <= ended
    assert log.stat().st_mode & 0o777 == 0o640 & ~_umask()


def test_the_version_follows_the_next_publish(
    served: Served, example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifest is read again when the publisher replaces it."""
    log = served.base / "state" / "fetch.log"
    url = f"http://{HOST}:{served.http}/fv{MAC}.conf"
    assert curl_status(url) == 200
    assert read_log(log, 1)[-1]["version"] == served.versions[MAC]
    device = f"inventory/devices/{MAC}.yaml"
    renamed = example_repo.files[device].replace(b"name: Reception\n", b"name: Desk\n")
    assert renamed != example_repo.files[device]
    example_repo.commit({device: renamed}, "rename the reception's first line", worktree=True)
    code = main(
        ["--repo", str(example_repo.path), "publish", "--rev", "main", *root_args(served.base)]
    )
    assert code == 0, capsys.readouterr().err
    after = shown_version(example_repo, MAC, capsys)
    assert after > served.versions[MAC]
    assert curl_status(url) == 200
    assert read_log(log, 2)[-1]["version"] == after


def test_no_state_dir_no_log_unless_asked(published: Path) -> None:
    proc, said = start_serve(published)
    out = stop(proc)
    assert not any("fetch log" in line for line in said + out.splitlines())
    assert not (published / "state" / "fetch.log").exists()
    log = published / "elsewhere.log"
    proc, said = start_serve(published, "--fetch-log", str(log))
    assert proc.stdout is not None
    assert proc.stdout.readline().rstrip("\n") == f"fetch log: {log}"
    port = int(re.search(r":(\d+)  \(root", said[0]).group(1))  # type: ignore[union-attr]
    assert curl_status(f"http://{HOST}:{port}/fv{MAC}.conf") == 200
    stop(proc)
    (line,) = read_log(log, 1)
    assert (line["mac"], line["kind"], line["version"]) == (MAC, None, None)
    proc, said = start_serve(published, "--state-dir", str(published / "state"), "--no-fetch-log")
    stop(proc)
    assert not (published / "state" / "fetch.log").exists()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--fetch-log", "http/fetch.log"], "is inside the HTTP root"),
        (["--fetch-log", "tftp/sub/../fetch.log"], "is inside the TFTP root"),
        (["--state-dir", "http"], "the HTTP root http is the state dir"),
        (["--fetch-log", "state"], "is a directory"),
        (["--state-dir", "nowhere"], "--state-dir nowhere is not a directory"),
        (["--fetch-log", "x.log", "--no-fetch-log"], "contradict"),
    ],
)
def test_refused(
    published: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    said: str,
) -> None:
    monkeypatch.chdir(published)
    code = main(["serve", "--http-root", "http", "--tftp-root", "tftp", *argv])
    assert code == 2
    assert said in capsys.readouterr().err
    assert not (published / "http" / "fetch.log").exists()
    assert not (published / "x.log").exists()


def test_the_fleet_settings_state_dir_is_the_default(example_repo: GitRepo) -> None:
    """`serve` without roots serves the fleet settings' (var/http, var/tftp) and logs into
    their state dir (var/state) once it exists; before the first publish it has none."""
    work = example_repo.path
    for root in ("var/http", "var/tftp"):
        (work / root).mkdir(parents=True)
    argv = [sys.executable, "-m", "gitprov", "--repo", str(work), "serve"]
    argv += ["--http-port", "0", "--tftp-port", "0"]

    def first_lines() -> list[str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        said = [proc.stdout.readline().rstrip("\n") for _ in range(2)]
        return said + stop(proc).splitlines()

    said = first_lines()
    assert "(root var/http)" in said[0] or str(work / "var" / "http") in said[0], said
    assert not any(line.startswith("fetch log") for line in said), said
    (work / "var" / "state").mkdir()
    said = first_lines()
    assert said[2:] == [f"fetch log: {work / 'var' / 'state' / 'fetch.log'}"], said


def test_a_fifo_nothing_reads_as_the_fetch_log_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A fifo at STATE_DIR/fetch.log blocked `serve` in the log's open for ever, SIGTERM
    and all (the open is retried after the handler). Now: exit 2, naming it."""
    fifo = tmp_path / "fetch.log"
    os.mkfifo(fifo)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gitprov.errors import UsageError\n"
        "from gitprov.tools.fetchlog import FetchLog\n"
        "try:\n"
        "    FetchLog(Path(sys.argv[1]))\n"
        "except UsageError as exc:\n"
        "    print(exc.message)\n"
        "    sys.exit(2)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "a fifo nothing reads" in done.stdout, done


def test_a_fifo_a_reader_holds_still_takes_the_fetch_log(tmp_path: Path) -> None:
    fifo = tmp_path / "fetch.log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        log = FetchLog(fifo)
        log._append(b'{"x":1}\n')
        log.close()
        assert os.read(reader, 100) == b'{"x":1}\n'
    finally:
        os.close(reader)
