"""The text files a user names for an import, read with the line and column of every
value: UTF-8 (a BOM is dropped), RFC 4180 CSV records, and `MAC VALUE` tables (the key
file, the models file).

Python's csv module does not say where a cell starts; every problem of the input is
reported at its place, so the records are split here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gitprov.errors import Problem, UsageError, error
from gitprov.importer.problems import TABLE
from gitprov.macros import normalise_mac
from gitprov.smallfile import NotAFile, read_small

_HEADER_WORDS = frozenset({"mac", "mac address", "mac_address", "macaddress"})


@dataclass(frozen=True)
class NotUtf8:
    """Where bytes stop being UTF-8: the line, and the offset of the byte in the file;
    the column, in the characters of its line before it (a byte order mark not one)."""

    line: int
    byte: int
    col: int = 1


def utf8(data: bytes) -> str | NotUtf8:
    """`data` as text without a byte order mark, or where it is not UTF-8."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        before = data[start : exc.start].decode("utf-8").removeprefix("\ufeff")
        return NotUtf8(data[: exc.start].count(b"\n") + 1, exc.start, len(before) + 1)


def read_text(path: Path) -> str | NotUtf8:
    """A file the user named: one that cannot be read at all is a usage error."""
    try:
        # (a fifo nothing writes to waited for ever; `<(xlsx2csv …)` is read)
        data = read_small(path, TABLE_MAX)
    except NotAFile as exc:
        raise UsageError(
            f"{path} is {exc.what}, not a file", hint="give the file itself, or a pipe into it"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None
    if len(data) > TABLE_MAX:
        raise UsageError(
            f"{path} is larger than {_size(TABLE_MAX)}: not a table of devices",
            hint="split it by site and import each part (a million devices take ~200 MB)",
        )
    return utf8(data)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 2**20 and not n % 2**20 else f"{n:,} bytes"


# What a table (a CSV, a key file, a models file) may hold: a million devices' rows, and
# not /dev/zero read until memory runs out.
TABLE_MAX = 256 * 2**20


@dataclass(frozen=True)
class Entry:
    """One value of a table, and where it stands."""

    value: str = field(repr=False)
    line: int
    col: int


def read_table(
    path: Path, what: str, *, echo: bool = True
) -> tuple[dict[str, Entry], list[Problem]]:
    """A `MAC VALUE` table: one pair per line, separated by spaces or a comma (CSV, values
    may be quoted); blank lines and `#` comments skipped; an optional header row whose first
    field is `mac`; `*` instead of a MAC is the value of every other MAC."""
    shown = str(path)
    text = read_text(path)
    if isinstance(text, NotUtf8):
        return {}, [
            error(
                shown,
                text.line,
                text.col,
                TABLE,
                f"not UTF-8 text (byte {text.byte})",
                "save it as UTF-8",
            )
        ]
    out: dict[str, Entry] = {}
    problems: list[Problem] = []
    first_data = True
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.rstrip("\r")
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        cells = _table_cells(raw)
        header = first_data and cells[0][0].strip().lower() in _HEADER_WORDS
        first_data = False
        if header:
            continue
        if len(cells) != 2 or not cells[1][0].strip():
            problems.append(
                error(
                    shown,
                    number,
                    cells[-1][1] if len(cells) > 2 else 1,
                    TABLE,
                    f"expected a MAC and {what}, found {len(cells)} field(s)",
                    f"write `MAC {what.upper()}` or `MAC,{what.upper()}` on each line",
                )
            )
            continue
        (mac_text, mac_col), (value, value_col) = cells
        mac = "*" if mac_text.strip() == "*" else normalise_mac(mac_text)
        if mac is None:
            problems.append(
                error(
                    shown,
                    number,
                    mac_col,
                    TABLE,
                    "not a MAC address" + (f": {mac_text.strip()!r}" if echo else ""),
                    "write it like 00:21:f2:01:1b:19 or 0021f2011b19 (or * for every other)",
                )
            )
            continue
        if mac in out:
            problems.append(
                error(
                    shown,
                    number,
                    mac_col,
                    TABLE,
                    f"{mac} is listed twice (first at line {out[mac].line})",
                    "keep one line per MAC",
                )
            )
            continue
        out[mac] = Entry(value.strip(), number, value_col)
    return out, problems


def _table_cells(raw: str) -> list[tuple[str, int]]:
    """Cells of one table line with the column each starts at."""
    if "," in raw:
        cells, _ = _csv_fields(raw, ",", 1)
        return [(c.text, c.col) for c in cells]
    m = re.match(r"(\s*)(\S+)(\s+)(.*?)\s*$", raw)
    if m is None:
        start = len(raw) - len(raw.lstrip())
        return [(raw.strip(), start + 1)]
    first_col = len(m.group(1)) + 1
    return [(m.group(2), first_col), (m.group(4), first_col + len(m.group(2)) + len(m.group(3)))]


@dataclass(frozen=True)
class Cell:
    """One CSV cell, and where it starts."""

    text: str = field(repr=False)
    line: int
    col: int


def _csv_fields(text: str, delimiter: str, line: int) -> tuple[list[Cell], str]:
    """The cells of a single line (no record spans lines here), and "" or a problem."""
    records, problem = csv_records(text, delimiter, line)
    return (records[0] if records else [Cell("", line, 1)]), problem[2] if problem else ""


def csv_records(
    text: str, delimiter: str, first_line: int = 1
) -> tuple[list[list[Cell]], tuple[int, int, str] | None]:
    """RFC 4180 records with the line and column where each cell starts: quoted cells may
    hold the delimiter, `""` and line breaks. Returns the records and the first syntax
    problem (line, col, message), which ends the reading."""
    records: list[list[Cell]] = []
    record: list[Cell] = []
    i, n = 0, len(text)
    line, col = first_line, 1
    while i < n:
        start_line, start_col = line, col
        buf: list[str] = []
        if i < n and text[i] == '"':
            i, col = i + 1, col + 1
            while True:
                if i >= n:
                    return records, (start_line, start_col, "a quoted cell is never closed")
                ch = text[i]
                if ch == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        buf.append('"')
                        i, col = i + 2, col + 2
                        continue
                    i, col = i + 1, col + 1
                    break
                buf.append(ch)
                i += 1
                if ch == "\n":
                    line, col = line + 1, 1
                else:
                    col += 1
            if i < n and text[i] not in (delimiter, "\n", "\r"):
                return records, (line, col, "text after a closing quote")
        else:
            while i < n and text[i] not in (delimiter, "\n"):
                buf.append(text[i])
                i, col = i + 1, col + 1
        cell = "".join(buf)
        if cell.endswith("\r") and (i >= n or text[i] == "\n"):
            cell = cell[:-1]
        elif i < n and text[i] == "\r":
            i += 1
        record.append(Cell(cell, start_line, start_col))
        if i < n and text[i] == delimiter:
            i, col = i + 1, col + 1
            if i >= n:
                record.append(Cell("", line, col))
                records.append(record)
                record = []
            continue
        records.append(record)
        record = []
        if i < n and text[i] == "\n":
            i, line, col = i + 1, line + 1, 1
        if i >= n:
            break
    return records, None
