"""Where a watcher says what it did: a status file (JSON, rewritten atomically) and a
JSON-lines log. Both are observers of `watch.Outcome`s and never hold a secret: outcomes
carry commit ids, file names, counts and located problems only."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gitprov.errors import Problem, UsageError
from gitprov.plan import Manifest
from gitprov.publish import write_atomic
from gitprov.watch import Kind, Outcome

log = logging.getLogger("gitprov.watch")

STATUS_FORMAT = 1


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def problem_dict(p: Problem) -> dict[str, Any]:
    return p.as_dict()


def outcome_dict(o: Outcome) -> dict[str, Any]:
    return {
        "at": iso(o.at),
        "result": str(o.kind),
        "commit": o.commit or None,
        "trigger": o.trigger,
        "message": o.message,
        "duration_seconds": round(o.duration, 4),
        "files_written": o.files_written,
        "files_removed": o.files_removed,
        "devices_changed": o.devices_changed,
        "drift": [{"root": d.root, "file": d.name, "kind": d.kind} for d in o.drift],
        "failed_roots": {root: why for root, why in o.failed_roots},
        "unknown_files": [f"{root}/{name}" for root, name in o.unknown],
        "problems": [problem_dict(p) for p in o.problems],
        "notes": list(o.notes),
    }


class StatusFile:
    """`--status-file`: the last commit published and when, the last result and its
    problems, the last reconcile. Rewritten atomically after every outcome, so a monitor
    never reads half a file."""

    def __init__(self, path: Path, watching: str = "", manifest: Manifest | None = None) -> None:
        self.path = path
        self.state: dict[str, Any] = {
            "format": STATUS_FORMAT,
            "watching": watching,
            "commit": manifest.commit if manifest else None,
            "published_at": manifest.published_at if manifest else None,
            "result": None,
            "last": None,
            "last_reconcile": None,
            "drift_repaired": 0,
        }
        try:
            self._write()
        except OSError as exc:
            raise UsageError(
                f"cannot write the status file {self.path}: {exc.strerror}",
                hint="give --status-file a path the watcher may write",
            ) from None

    def __call__(self, o: Outcome) -> None:
        s = self.state
        if o.kind in (Kind.PUBLISHED, Kind.REPAIRED, Kind.PARTIAL) or (
            o.kind is Kind.UNCHANGED and s["commit"] != o.commit
        ):
            s["commit"] = o.commit
            s["published_at"] = iso(o.at)
        if o.kind in (Kind.PUBLISHED, Kind.REPAIRED, Kind.PARTIAL):
            s["drift_repaired"] += len(o.drift)
        if o.trigger == "reconcile":
            s["last_reconcile"] = {"at": iso(o.at), "result": str(o.kind), "message": o.message}
        if o.kind is not Kind.CLEAN:
            # A clean reconcile every few minutes must not hide the last real result.
            s["result"] = str(o.kind)
            s["last"] = outcome_dict(o)
        try:
            self._write()
        except OSError as exc:
            # (a full disk, or the path taken since: the watcher goes on publishing, and
            # says so on each outcome until the file can be written again)
            log.warning("cannot write the status file %s: %s", self.path, exc.strerror)

    def _write(self) -> None:
        self.state["updated_at"] = iso(datetime.now(UTC).timestamp())
        write_atomic(self.path, (json.dumps(self.state, indent=2, sort_keys=True) + "\n").encode())


class JsonLog:
    """`--log-json`: one JSON object per outcome, one per line, flushed at once."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, o: Outcome) -> None:
        self.stream.write(json.dumps({"event": "outcome", **outcome_dict(o)}, sort_keys=True))
        self.stream.write("\n")
        self.stream.flush()

    def event(self, name: str, **fields: Any) -> None:
        record = {"event": name, "at": iso(datetime.now(UTC).timestamp()), **fields}
        self.stream.write(json.dumps(record, sort_keys=True) + "\n")
        self.stream.flush()
