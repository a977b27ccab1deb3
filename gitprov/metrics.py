"""Prometheus metrics of a watcher (`gitprov watch --metrics-port`).

A registry of its own (not prometheus_client's global one), so tests and several watchers
in one process do not share counters. The endpoint binds 127.0.0.1 unless told otherwise:
metric names and labels hold no secret, but root paths are nobody else's business.

A restarted watcher starts from the manifest of the state dir (`Metrics.restore`), so the
last success and the published commit survive a restart instead of reading 0 until the
next commit, which would fire a staleness alert after every restart.
"""

from __future__ import annotations

import io
import platform
import socket
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import InfoMetricFamily, Metric

from gitprov import __version__
from gitprov.errors import UsageError
from gitprov.plan import load_manifest
from gitprov.rule_url import authority
from gitprov.tools.serve import CappedServer, RequestInput
from gitprov.watch import Kind, Outcome

_PUBLISHED = (Kind.PUBLISHED, Kind.UNCHANGED, Kind.PARTIAL, Kind.REPAIRED)
_FAILED = (Kind.INVALID, Kind.FAILED, Kind.REFUSED, Kind.FETCH_FAILED)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.publishes = Counter(
            "gitprov_publishes",
            "Publishes that wrote into the roots (or found nothing to write), by result",
            ["result"],
            registry=r,
        )
        self.failures = Counter(
            "gitprov_publish_failures",
            "Commits, retries or polls that published nothing, by reason",
            ["reason"],
            registry=r,
        )
        self.duration = Histogram(
            "gitprov_publish_duration_seconds",
            "Time from starting a build to the manifest written",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.devices_changed = Counter(
            "gitprov_devices_changed",
            "Device files written or removed by publishes",
            registry=r,
        )
        self.last_success = Gauge(
            "gitprov_last_success_timestamp_seconds",
            "When every root last held the newest good commit (Unix time)",
            registry=r,
        )
        self.drift = Counter(
            "gitprov_drift_repairs",
            "Served files found changed or deleted by hand and restored, by kind",
            ["kind"],
            registry=r,
        )
        self.reconciles = Counter(
            "gitprov_reconciles", "Reconcile runs, by result", ["result"], registry=r
        )
        self.lagging = Gauge(
            "gitprov_lagging_roots",
            "Roots that failed the last publish and keep older files",
            registry=r,
        )
        self.published = _LastPublished()
        r.register(self.published)
        Info("gitprov_build", "The running gitprov and Python", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        # The global registry would have had these; ours must add them: CPU, memory, open
        # fds, start time (a restart shows as process_start_time_seconds moving), python_info.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        for kind in _PUBLISHED:
            self.publishes.labels(result=str(kind))
        for kind in _FAILED:
            self.failures.labels(reason=str(kind))
        for drift in ("changed", "deleted"):
            self.drift.labels(kind=drift)

    def __call__(self, o: Outcome) -> None:
        if o.trigger == "reconcile":
            self.reconciles.labels(result=str(o.kind)).inc()
        if o.kind in _PUBLISHED:
            self.publishes.labels(result=str(o.kind)).inc()
            self.duration.observe(o.duration)
            self.devices_changed.inc(o.devices_changed)
            for d in o.drift:
                self.drift.labels(kind=d.kind).inc()
            self.lagging.set(len(o.failed_roots))
            if o.commit:
                self.published.commit = o.commit
            if o.kind is not Kind.PARTIAL:
                self.last_success.set(o.at)
        elif o.kind in _FAILED:
            self.failures.labels(reason=str(o.kind)).inc()
        elif o.kind is Kind.CLEAN:
            self.lagging.set(0)

    def restore(self, state_dir: Path) -> None:
        """Start from what the last run left in `state_dir`: its manifest names the commit
        published, when, and which roots hold it. Call it before the first outcome.

        The last success is restored only when every root holds the manifest's commit
        (a partial publish is no success, as in `__call__`); the manifest's time is to the
        second, so it reads up to a second early, never late. A missing, torn or foreign
        manifest restores nothing: the metrics read as for a first start."""
        manifest = load_manifest(state_dir)
        if manifest is None:
            return
        self.published.commit = manifest.commit or None
        lagging = manifest.lagging()
        self.lagging.set(len(lagging))
        if lagging:
            return
        at = _unix_time(manifest.published_at)
        if at is not None:
            self.last_success.set(at)

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        try:
            server = _Listener((host, port), self)
        except OSError as exc:
            # (the environment's, as serve's "cannot listen": exit 2)
            raise UsageError(
                f"cannot serve metrics on {authority(host, port)}: {exc.strerror}",
                hint="choose another --metrics-port, or a --metrics-host of this machine",
            ) from exc
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="gitprov-metrics",
            daemon=True,
        )
        thread.start()
        return MetricsServer(server, thread, host)


# A scraper asks once every few seconds: past this many open connections a new one is
# closed at once, and a connection that says nothing for SCRAPE_TIMEOUT is dropped
# (prometheus_client's own server has neither: a client that opens connections and
# sends nothing held a thread each, for ever).
MAX_SCRAPERS = 8
SCRAPE_TIMEOUT = 10.0


class _Listener(CappedServer):
    def __init__(self, address: tuple[str, int], metrics: Metrics) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.gp_metrics = metrics
        super().__init__(address, _Scrape, MAX_SCRAPERS)


class _Scrape(BaseHTTPRequestHandler):
    server: _Listener
    timeout = SCRAPE_TIMEOUT
    # The base class assumes HTTP/0.9 until a version is parsed: a garbled request line
    # got its error page, and `GET /metrics` without a version the metrics, with no
    # status line or headers (as gitprov.tools.serve's handler, which fixed it first).
    default_request_version = "HTTP/1.0"
    server_version = "gitprov"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # (the socket's timeout is per read: a byte every few seconds is never idle)
        self.gp_input = RequestInput(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.gp_input)

    def handle_one_request(self) -> None:
        self.gp_input.deadline = time.monotonic() + self.timeout
        super().handle_one_request()

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/", "/metrics"):
            self.send_error(404)
            return
        data = generate_latest(self.server.gp_metrics.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # (a scrape every few seconds is no news)


class _LastPublished:
    """`gitprov_last_published_info{commit="…"} 1`: the commit the manifest records (some
    roots may lag: `gitprov_lagging_roots`). One series whose label is replaced, so a
    watcher running for months does not pile up a series per commit; none before the
    first publish."""

    def __init__(self) -> None:
        # One attribute written by the watch loop, read by the scrape thread: a single
        # reference swap, so a scrape sees the old commit or the new one, never neither.
        self.commit: str | None = None

    def collect(self) -> Iterable[Metric]:
        family = InfoMetricFamily(
            "gitprov_last_published", "The commit last published into the roots"
        )
        commit = self.commit
        if commit:
            family.add_metric([], {"commit": commit})
        return [family]


def _unix_time(iso: str) -> float | None:
    try:
        at = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # gitprov writes UTC; a bare time is taken as UTC too
    return at.timestamp()


class MetricsServer:
    def __init__(self, server: Any, thread: threading.Thread, host: str = "127.0.0.1") -> None:
        self._server = server
        self._thread = thread
        self._host = host

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Where a scraper asks, e.g. `http://[::1]:9351/metrics`."""
        return f"http://{authority(self._host, self.port)}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
