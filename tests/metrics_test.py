"""Prometheus metrics of a watcher: the counters on the endpoint, the last success and the
published commit surviving a restart (from the manifest the last run left), build and
process metrics, and an exposition that `promtool check metrics` accepts."""

from __future__ import annotations

import contextlib
import json
import platform
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from gitprov import __version__
from gitprov.errors import UsageError
from gitprov.metrics import Metrics
from gitprov.plan import MANIFEST, load_manifest
from gitprov.publish import Targets
from gitprov.status import StatusFile
from gitprov.watch import (
    Kind,
    LocalBranch,
    Observer,
    Outcome,
    Watcher,
    WatchOptions,
)
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.peers import need
from tests.fixtures.roots import commit_publisher

DEVICE = "inventory/devices/0021f2011b20.yaml"
LAST_SUCCESS = "gitprov_last_success_timestamp_seconds"


@pytest.fixture
def served(example_repo: GitRepo, private_key: str, tmp_path: Path) -> tuple[GitRepo, Targets]:
    return example_repo, Targets((tmp_path / "http", tmp_path / "tftp"), tmp_path / "state")


def watcher(
    repo: GitRepo, key: str, targets: Targets, *observers: Observer, last: str | None = None
) -> Watcher:
    return Watcher(
        LocalBranch(Path(repo.repo.path), "main", inotify=False),
        commit_publisher(repo, key, targets),
        WatchOptions(reconcile=300),
        last=last,
        observers=observers,
    )


def rename(repo: GitRepo, name: str) -> str:
    text = repo.files[DEVICE].replace(
        b"display_name: Meeting room", f"display_name: {name}".encode()
    )
    return repo.commit({DEVICE: text}, f"rename to {name}")


def value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    got = m.registry.get_sample_value(name, labels or {})
    return None if got is None else float(got)


def published_series(m: Metrics) -> list[dict[str, str]]:
    return [
        s.labels
        for family in m.registry.collect()
        for s in family.samples
        if s.name == "gitprov_last_published_info"
    ]


def test_a_restarted_watcher_reports_the_last_success_of_the_previous_run(
    served: tuple[GitRepo, Targets], private_key: str, tmp_path: Path
) -> None:
    repo, t = served
    head = str(repo.repo.head.target)
    before = Metrics()
    status_path = tmp_path / "status.json"
    seen: list[Outcome] = []
    first = watcher(repo, private_key, t, seen.append, StatusFile(status_path, "main"), before)
    first.step()
    assert [o.kind for o in seen] == [Kind.PUBLISHED]
    published = value(before, LAST_SUCCESS)
    assert published is not None and published > 0
    status = json.loads(status_path.read_text())
    assert status["commit"] == head and status["result"] == "published"

    # The watcher is gone; a new process starts with fresh metrics.
    after = Metrics()
    assert value(after, LAST_SUCCESS) == 0.0  # what every restart used to report
    after.restore(t.state_dir)
    restored = value(after, LAST_SUCCESS)
    manifest = load_manifest(t.state_dir)
    assert manifest is not None and manifest.commit == head
    assert restored == datetime.fromisoformat(manifest.published_at).timestamp()
    # The manifest keeps whole seconds and is written just before the outcome ends.
    assert restored is not None and 0 <= published - restored < 2
    noted = datetime.fromisoformat(status["published_at"]).timestamp()
    assert 0 <= noted - restored < 2
    assert published_series(after) == [{"commit": head}]
    assert value(after, "gitprov_lagging_roots") == 0.0

    # Restarted on the same head, the first look is a clean reconcile: nothing publishes,
    # and the restored time stays.
    seen.clear()
    again = watcher(repo, private_key, t, seen.append, after, last=manifest.commit)
    again.step()
    assert [o.kind for o in seen] == [Kind.CLEAN]
    assert value(after, LAST_SUCCESS) == restored
    assert published_series(after) == [{"commit": head}]


def test_a_partial_publish_restores_the_commit_but_no_success(
    served: tuple[GitRepo, Targets], private_key: str
) -> None:
    repo, t = served
    # A root that cannot take one of its files (a directory in the file's place): the
    # other root gets the commit, this one lags.
    (t.roots[1] / "fv0021f2011b19.conf").mkdir(parents=True)
    before = Metrics()
    seen: list[Outcome] = []
    watcher(repo, private_key, t, seen.append, before).step()
    assert [o.kind for o in seen] == [Kind.PARTIAL]
    assert value(before, LAST_SUCCESS) == 0.0

    after = Metrics()
    after.restore(t.state_dir)
    manifest = load_manifest(t.state_dir)
    assert manifest is not None and manifest.lagging() == (str(t.roots[1]),)
    assert value(after, LAST_SUCCESS) == 0.0
    assert value(after, "gitprov_lagging_roots") == 1.0
    assert published_series(after) == [{"commit": str(repo.repo.head.target)}]


@pytest.mark.parametrize(
    "manifest",
    [
        None,  # never published: no manifest
        b"",
        b"\x00\xff garbage",
        b'{"format": 2, "commit": "c1"',  # torn
        b'{"format": 99, "commit": "c1", "published_at": "2024-01-01T00:00:00+00:00"}',
        b"[1, 2]",
    ],
)
def test_a_missing_or_corrupt_manifest_restores_nothing(
    tmp_path: Path, manifest: bytes | None
) -> None:
    state = tmp_path / "state"
    if manifest is not None:
        state.mkdir()
        (state / MANIFEST).write_bytes(manifest)
    m = Metrics()
    m.restore(state)
    assert value(m, LAST_SUCCESS) == 0.0
    assert published_series(m) == []


def test_a_manifest_without_a_readable_time_restores_the_commit_only(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(
        json.dumps({"format": 2, "commit": "c1", "published_at": "yesterday", "roots": {}})
    )
    m = Metrics()
    m.restore(tmp_path)
    assert value(m, LAST_SUCCESS) == 0.0
    assert published_series(m) == [{"commit": "c1"}]


def test_the_published_commit_is_one_series_replaced_not_one_per_commit() -> None:
    m = Metrics()
    assert published_series(m) == []  # nothing published yet: no series, not an empty label
    for commit in ("c1", "c2", "c3"):
        m(Outcome(Kind.PUBLISHED, commit, "x"))
    m(Outcome(Kind.INVALID, "c4", "x"))  # not published: the commit served stays c3
    assert published_series(m) == [{"commit": "c3"}]
    m(Outcome(Kind.PARTIAL, "c5", "x", failed_roots=(("/srv/tftp", "disk full"),)))
    assert published_series(m) == [{"commit": "c5"}]
    assert value(m, "gitprov_lagging_roots") == 1.0


def test_build_info_and_process_metrics() -> None:
    m = Metrics()
    text = m.text()
    info = {"version": __version__, "python": platform.python_version()}
    assert value(m, "gitprov_build_info", info) == 1.0
    assert f'version="{__version__}"' in text
    start = value(m, "process_start_time_seconds")
    assert start is not None and start > 0
    assert "process_resident_memory_bytes" in text
    assert "process_cpu_seconds_total" in text
    assert "python_info{" in text
    # Its own registry: a second Metrics in the same process registers them again.
    assert "process_start_time_seconds" in Metrics().text()


def test_metrics_endpoint_serves_the_counters() -> None:
    metrics = Metrics()
    metrics(Outcome(Kind.PUBLISHED, "c1", "x", duration=0.2, devices_changed=3))
    metrics(Outcome(Kind.INVALID, "c2", "x"))
    server = metrics.serve(0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.stop()
    assert 'gitprov_publishes_total{result="published"} 1.0' in text
    assert 'gitprov_publish_failures_total{reason="invalid"} 1.0' in text
    assert "gitprov_devices_changed_total 3.0" in text
    assert "gitprov_publish_duration_seconds_count 1.0" in text
    assert "gitprov_last_success_timestamp_seconds" in text
    assert 'gitprov_last_published_info{commit="c1"} 1.0' in text
    assert "gitprov_build_info{" in text and "process_start_time_seconds" in text


@pytest.mark.e2e
def test_promtool_accepts_the_exposition(served: tuple[GitRepo, Targets], private_key: str) -> None:
    promtool = need("promtool", "prometheus")
    repo, t = served
    fresh = Metrics()
    busy = Metrics()
    w = watcher(repo, private_key, t, busy)
    w.step()
    rename(repo, "Board room")
    w.step()
    (t.roots[0] / "fv0021f2011b19.conf").write_bytes(b"DBID_SIP_ENABLE=1\n")
    busy(Outcome(Kind.INVALID, "c2", "x"))
    reconciled = watcher(repo, private_key, t, busy, last=str(repo.repo.head.target))
    reconciled.step()  # a reconcile at start: repairs the drift
    restored = Metrics()
    restored.restore(t.state_dir)
    for m in (fresh, busy, restored):
        text = m.text()
        proc = subprocess.run(
            [promtool, "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        report = (proc.stdout + proc.stderr).decode(errors="replace")
        assert proc.returncode == 0 and not report.strip(), f"{report}\n{text}"
    assert 'gitprov_reconciles_total{result="repaired"} 1.0' in busy.text()


def test_metrics_endpoint_bounds_its_connections_and_their_idle_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """prometheus_client's own server gave every connection a thread with no timeout: a
    client that opened connections and said nothing held them for ever, and the scraper
    with them. Past MAX_SCRAPERS a connection is closed at once; a silent one is dropped
    after SCRAPE_TIMEOUT; the scrape itself is answered throughout."""
    from gitprov import metrics as module

    monkeypatch.setattr(module, "MAX_SCRAPERS", 2)
    monkeypatch.setattr(module._Scrape, "timeout", 0.5)
    server = Metrics().serve(0)
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        silent = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as third:
            assert third.recv(1) == b""  # closed at once: both slots are held
        for s in silent:
            assert s.recv(1) == b""  # dropped after the timeout
            s.close()
        # A byte now and then is no request either: dropped all the same.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as drip:
            start = time.monotonic()
            with contextlib.suppress(OSError):
                for byte in b"GET /metrics HTTP/1.1\r\n":
                    drip.sendall(bytes([byte]))
                    time.sleep(0.2)
            assert drip.recv(65536) == b""  # (closed, without an answer)
            assert time.monotonic() - start < 3.0
        # A connection's slot is given back when its thread ends, a moment after the
        # client read the answer: each scrape below waits for both slots to be free, as
        # a scraper asking every few seconds finds them (else, on a loaded machine, the
        # next request came first and was closed as a third connection).
        slots = server._server.gp_slots
        _wait_until_free(slots, 2)
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.status == 200 and b"gitprov_build_info" in r.read()
        _wait_until_free(slots, 2)
        head = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) > 0 and r.read() == b""
        _wait_until_free(slots, 2)
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url.replace("/metrics", "/elsewhere"), timeout=5)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("request_line", "status"),
    [(b"GET /metrics\r\n\r\n", 200), (b"\x16\x03\x01 garbage\r\n\r\n", 400)],
    ids=["no-version", "garbled"],
)
def test_every_answer_of_the_endpoint_has_a_status_line(request_line: bytes, status: int) -> None:
    server = Metrics().serve(0)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(request_line)
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.0 %d " % status), answer[:80]


def _wait_until_free(slots: threading.BoundedSemaphore, count: int) -> None:
    """Until `count` slots of the semaphore can be taken (then given back), or 5 s."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        taken = 0
        while taken < count and slots.acquire(blocking=False):
            taken += 1
        for _ in range(taken):
            slots.release()
        if taken == count:
            return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} slots free after 5 s")


def _ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")


def test_the_endpoint_url_brackets_an_ipv6_address() -> None:
    """`watch` printed `metrics: http://::1:9351/metrics`, which no scraper can use."""
    _ipv6_loopback()
    server = Metrics().serve(0, "::1")
    try:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=5) as r:
            assert "gitprov_build_info{" in r.read().decode()
        with socket.socket(socket.AF_INET6) as taken:
            taken.bind(("::1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(UsageError) as caught:
                Metrics().serve(port, "::1")
        assert f"cannot serve metrics on [::1]:{port}: " in caught.value.message
    finally:
        server.stop()


def test_a_metrics_port_that_cannot_be_served_is_the_environments_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UsageError, match="cannot serve metrics") as caught:
            Metrics().serve(taken.getsockname()[1])
    assert caught.value.exit_code == 2
