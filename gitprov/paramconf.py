"""What a param.conf's bytes can be, told without the renderer: `decrypt`, the device
emulator and the importer check what a key opened with it, and importing the renderer
(gitprov.formats, which imports the compiler and pygit2) would cost each of them the
start-up of the whole pipeline."""

from __future__ import annotations

import re

__all__ = ["is_param_file"]

# A line's key, as gitprov.catalog.DBID_PATTERN spells it, and its `=`.
_FIRST_KEY = re.compile(r"DBID_[A-Z0-9_]+=")


def is_param_file(data: bytes) -> bool:
    """Whether `data` can be a param.conf: UTF-8 text (a BOM allowed) whose first line
    that is neither blank nor a `#` comment starts `DBID_NAME=`. That is every file
    gitprov writes (gitprov.formats.flyingvoice: the version line first, in device,
    option-66 and stage files alike) and every file `import conf` reads, so that no
    right key is ever refused. What it is for: CBC with PKCS#7 has no MAC, and about 1
    wrong key in 256 passes the padding check with random bytes, which start `DBID_`
    about 1 time in 2**40 (and must then still be UTF-8 to their end)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for raw in text.lstrip("\ufeff").split("\n"):
        line = raw.strip()
        if line and not line.startswith("#"):
            return _FIRST_KEY.match(line) is not None
    return False
