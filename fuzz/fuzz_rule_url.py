"""atheris target: the Profile Rule parser (gitprov.rule_url.parse_rule) on any text.

A rule parses, or raises RuleSyntaxError with an offset inside the text; anything else is
a finding, and so is a parsed rule that does not format back to itself. The hypothesis
tests in tests/rule_url_fuzz_test.py check the same property on every `make test`.

    python fuzz/fuzz_rule_url.py -max_total_time=60 [CORPUS_DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def check(data: bytes) -> None:
    from gitprov.rule_url import RuleSyntaxError, format_rule, parse_rule

    text = data.decode("utf-8", "replace")
    try:
        parsed = parse_rule(text)
    except RuleSyntaxError as exc:
        if not 0 <= exc.offset <= len(text) or not exc.message:
            raise AssertionError(f"offset {exc.offset} outside {len(text)} characters") from exc
        return
    try:
        formatted = format_rule(parsed)
    except ValueError:
        values = (parsed.key, parsed.uid, parsed.pwd)
        if any(v and "'" in v and '"' in v for v in values):
            return  # the one value that cannot be written: it holds both quotes
        raise
    if parse_rule(formatted) != parsed:
        raise AssertionError(f"{formatted!r} does not read back as {parsed!r}")


def main() -> int:
    try:
        import atheris  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        print(
            "fuzz_rule_url: atheris is not installed, nothing to do "
            "(pip install atheris; see fuzz/README.md)",
            file=sys.stderr,
        )
        return 0
    with atheris.instrument_imports():
        import gitprov.rule_url  # noqa: F401  (instrumented for coverage)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
