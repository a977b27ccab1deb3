"""atheris target: the YAML reader (gitprov.yamldoc.parse) on any bytes.

Every input must give a document, located GP problems, or both: any other exception is a
finding, and so is a Python object that is not plain data. The hypothesis tests in
tests/yamldoc_fuzz_test.py check the same property for a few seconds on every `make
test`; this runs it coverage-guided for as long as you like (fuzz/README.md).

    python fuzz/fuzz_yaml.py -max_total_time=60 [CORPUS_DIR ...]
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

READING_CODES = {"GP001", "GP002", "GP003", "GP004", "GP006", "GP007", "GP008", "GP009", "GP013"}


def check(data: bytes) -> None:
    from gitprov.yamldoc import SecretRef, leaves, parse

    doc, problems = parse("f.yaml", "oid", data)
    for p in problems:
        if p.code not in READING_CODES or p.line < 1 or p.col < 1 or not p.hint:
            raise AssertionError(f"not a located reading problem: {p}")
    if doc is None:
        if not problems:
            raise AssertionError("a refused file without a problem")
        return
    plain = (str, SecretRef, int, float, bool, type(None), datetime.date, datetime.datetime)
    for path, value in leaves(doc.data):
        if not isinstance(value, plain):
            raise AssertionError(f"{path}: a {type(value).__name__} is not plain data")


def main() -> int:
    try:
        import atheris  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        print(
            "fuzz_yaml: atheris is not installed, nothing to do "
            "(pip install atheris; see fuzz/README.md)",
            file=sys.stderr,
        )
        return 0
    with atheris.instrument_imports():
        import gitprov.yamldoc  # noqa: F401  (instrumented for coverage)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
