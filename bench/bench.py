"""`make bench`: run every benchmark in turn. A benchmark is a module in bench/ with a
`main(argv)` that prints its own table; add its name to BENCHMARKS."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCHMARKS = [
    "bench.bench_validate",
    "bench.bench_publish",
    "bench.bench_versions",
]


def main() -> int:
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        importlib.import_module(name).main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
