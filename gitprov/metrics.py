"""Prometheus metrics of a watcher (`gitprov watch --metrics-port`).

A registry of its own (not prometheus_client's global one), so tests and several watchers
in one process do not share counters. The endpoint binds 127.0.0.1 unless told otherwise:
metric names and labels hold no secret, but root paths are nobody else's business.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from gitprov.errors import GitprovError
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
            if o.kind is not Kind.PARTIAL:
                self.last_success.set(o.at)
        elif o.kind in _FAILED:
            self.failures.labels(reason=str(o.kind)).inc()
        elif o.kind is Kind.CLEAN:
            self.lagging.set(0)

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise GitprovError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror}",
                hint="choose another --metrics-port",
            ) from exc
        return MetricsServer(server, thread)


class MetricsServer:
    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
