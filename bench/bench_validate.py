"""Issue 3: how long `gitprov validate` takes on a generated fleet of 1k and 10k device
files (the example inventory's models, profiles and secrets, plus N devices on disk).

    python bench/bench_validate.py [--sizes 1000 10000] [--repeat 3]

cold      a new Pipeline: list, read, hash, parse, schema-check every file, run every rule
warm      the same Pipeline again: parse, schema and per-file rule results come from the
          blob-id caches, cross-file rules combine memoized facts; listing and hashing the
          files on disk run again
jsonschema-only   cold, with the compiled fast path switched off: what it saves
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitprov import validate
from gitprov.pipeline import Pipeline
from gitprov.source import WorktreeSource
from tests.fixtures.fleet import device_path, device_yaml
from tests.fixtures.gitrepo import example_files


def generate(top: Path, devices: int) -> None:
    files = {p: d for p, d in example_files().items() if not p.startswith("inventory/devices/")}
    files.update({device_path(i): device_yaml(i).encode() for i in range(devices)})
    for path, data in files.items():
        target = top / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@contextmanager
def fast_path_off() -> Iterator[None]:
    real = validate.checker_for  # type: ignore[attr-defined]
    validate.checker_for = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    try:
        yield
    finally:
        validate.checker_for = real  # type: ignore[attr-defined]


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def measure(top: Path, repeat: int) -> tuple[float, float, float, int]:
    def cold() -> float:
        start = time.perf_counter()
        loaded = Pipeline(None).load(WorktreeSource(top))
        elapsed = time.perf_counter() - start
        assert not loaded.errors, loaded.errors[:3]
        return elapsed

    pipeline = Pipeline(None)
    first = pipeline.load(WorktreeSource(top))

    def warm() -> float:
        start = time.perf_counter()
        pipeline.load(WorktreeSource(top))
        return time.perf_counter() - start

    cold_s = best(repeat, cold)
    warm_s = best(repeat, warm)
    with fast_path_off():
        slow_s = best(1, cold)
    return cold_s, warm_s, slow_s, sum(1 for _ in first.docs.all())


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, str]] = []
    head = ("devices", "files", "cold", "per file", "warm", "jsonschema-only")
    print("{:>8} {:>7} {:>9} {:>9} {:>9} {:>16}".format(*head))
    for n in args.sizes:
        top = Path(tempfile.mkdtemp(prefix="gitprov-bench-"))
        try:
            generate(top, n)
            cold_s, warm_s, slow_s, files = measure(top, args.repeat)
        finally:
            shutil.rmtree(top, ignore_errors=True)
        print(
            f"{n:>8} {files:>7} {cold_s:>8.2f}s {cold_s / files * 1e3:>7.3f}ms "
            f"{warm_s:>8.2f}s {slow_s:>15.2f}s",
            flush=True,
        )
        rows += [
            (f"validate {n} devices, cold", f"{cold_s:.2f} s"),
            (f"validate {n} devices, warm", f"{warm_s:.2f} s"),
            (f"validate {n} devices, cold, jsonschema only", f"{slow_s:.2f} s"),
        ]
    return rows


if __name__ == "__main__":
    main()
