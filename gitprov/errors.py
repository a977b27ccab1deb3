"""Problems are data; one exception root for failures the user can fix.

Stages return `Problem`s and raise `GitprovError`; only the CLI renders or exits.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Level(enum.IntEnum):
    # Ordered so that sorting puts errors first within one position.
    ERROR = 0
    WARNING = 1

    def __str__(self) -> str:
        return self.name.lower()


class Problem(NamedTuple):
    """One located finding. Sorts by file, line, column, then code."""

    file: str
    line: int
    col: int
    code: str
    level: Level
    message: str
    hint: str = ""

    @property
    def is_error(self) -> bool:
        return self.level is Level.ERROR

    def as_dict(self) -> dict[str, object]:
        """The stable JSON shape (docs/validate-json.md), shared by every JSON output."""
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "code": self.code,
            "level": str(self.level),
            "message": self.message,
            "hint": self.hint,
        }

    def where(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


def error(file: str, line: int, col: int, code: str, message: str, hint: str = "") -> Problem:
    return Problem(file, line, col, code, Level.ERROR, message, hint)


def warning(file: str, line: int, col: int, code: str, message: str, hint: str = "") -> Problem:
    return Problem(file, line, col, code, Level.WARNING, message, hint)


class GitprovError(Exception):
    """A failure the user can fix. `hint` says what to do; exit code 1 unless told."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "", problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.problems = problems


class UsageError(GitprovError):
    exit_code = 2


class InvalidInventory(GitprovError):
    """Validation found errors; `problems` holds all of them."""


def missing_object(oid: str, what: str, detail: object = "it is missing") -> UsageError:
    """A repository without an object a commit needs: a damaged or incomplete clone (an
    environment error, exit 2), not a bug and not a problem of the inventory."""
    return UsageError(
        f"the repository cannot read object {oid} ({what}): {detail}",
        hint="the repository is damaged or incomplete: `git fsck --full` lists what is "
        "missing; fetch again, or clone afresh from a good copy",
    )
