"""The `gitprov` program's first step (the console script and `python -m gitprov`):
gitprov.cli, and all it imports, loaded where a Ctrl-C meanwhile ends the program as
any other does (`gitprov: interrupted`, 130) and not with the import's traceback."""

from __future__ import annotations

import sys
from typing import NoReturn


def run() -> NoReturn:
    try:
        from gitprov.cli import entry
    except KeyboardInterrupt:
        sys.stderr.write("gitprov: interrupted\n")
        sys.exit(130)
    entry()
