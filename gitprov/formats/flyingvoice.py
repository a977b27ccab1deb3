"""The Flying Voice param.conf format (IP542N, G502N and kin).

Bytes: UTF-8, one `DBID_NAME=value` per line, lines end with LF and so does the file
(the vendor's tooling is Linux's `encrypt_file`, and the SPA-style parser splits on LF;
CR would become part of the value). `DBID_DBASE_VERSION` is the first line, then the
catalog's order (the overview's example first), then unknown keys by name. Per-line
parameters carry one value per line, joined by TAB. No comments, no BOM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gitprov.compile import MARK, DeviceConfig

# Re-exported: the renderer's own guard, and what rules and the pipeline have used from here.
from gitprov.unsafe import UNSAFE as UNSAFE
from gitprov.unsafe import describe as describe

VERSION_KEY = "DBID_DBASE_VERSION"


def _line(key: str, value: str) -> str:
    # Validation rejects these first; this guard makes an injected line impossible even if a
    # rule is skipped or a new code path forgets to validate.
    if UNSAFE.search(key) or UNSAFE.search(value) or "=" in key or "\t" in key:
        raise ValueError(f"refusing to render {key}: a line break or control character")
    return f"{key}={value}\n"


def render_lines(pairs: Iterable[tuple[str, str]]) -> bytes:
    return "".join(_line(k, v) for k, v in pairs).encode("utf-8")


def body(config: DeviceConfig, *, redact: bool = False) -> bytes:
    """Everything but the version line: what versions compare."""
    return render_lines((e.key, e.redacted if redact else e.value) for e in config.entries)


_MARKERS = re.compile(f"{MARK}[sk][^{MARK}]*{MARK}")


def body_template(config: DeviceConfig) -> str:
    """`body` of a symbolic compile (gitprov.compile.Compiler.symbolic): the text with
    its secrets as markers, for `gitprov.compile.fill` to complete. Refuses what `_line`
    refuses, everywhere but inside a marker (a secret's value is checked when it is
    unsealed); checked in one pass over the file, not per line."""
    entries = config.entries
    keys = "".join(e.key for e in entries)
    literal = _MARKERS.sub("", "".join(e.value for e in entries))
    if UNSAFE.search(keys) or "=" in keys or "\t" in keys or UNSAFE.search(literal):
        for e in entries:  # the line to name
            _line(e.key, _MARKERS.sub("", e.value))
        raise ValueError("refusing to render a line break or control character")
    return "".join(f"{e.key}={e.value}\n" for e in entries)


def render(config: DeviceConfig, version: int | None, *, redact: bool = False) -> bytes:
    head = render_lines([(VERSION_KEY, str(version))]) if version is not None else b""
    return head + body(config, redact=redact)


def bootstrap_body(profile_rule: str) -> bytes:
    """The common option-66 file (the model's Config File Name, e.g. IP542N.conf) without
    its version line: turn option 66 off and point the device at its own per-MAC file.
    Plaintext: a new device has no key yet. `profile_rule` keeps its macros (`$(MA)`):
    the device expands them."""
    return render_lines(
        [
            ("DBID_PRV_OPTION66_ENABLED", "0"),
            ("DBID_PROFILE_RULE", profile_rule),
        ]
    )


def render_bootstrap(version: int, profile_rule: str) -> bytes:
    return render_lines([(VERSION_KEY, str(version))]) + bootstrap_body(profile_rule)


def parse(data: bytes) -> dict[str, str]:
    """Read a param.conf back (for tests, `verify` and the device emulator)."""
    out: dict[str, str] = {}
    for raw in data.decode("utf-8").split("\n"):
        if not raw:
            continue
        key, sep, value = raw.partition("=")
        if not sep:
            raise ValueError(f"not a DBID line: {raw[:40]!r}")
        out[key] = value
    return out
