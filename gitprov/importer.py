"""`gitprov import`: bring an existing fleet into an inventory.

Two sources:

- a directory of param.conf files, one per device, plaintext or encrypted the way
  `openssl enc -aes-256-cbc -k KEY` (and the vendor's `encrypt_file`) writes them — what an
  operator copies from the web or TFTP root of the provisioning server gitprov replaces;
- a CSV spreadsheet, one row per device: MAC, model, profile and line columns.

What an import promises, and checks before it writes anything: the inventory validates,
and for every imported param.conf it builds the same parameters, except
DBID_DBASE_VERSION, which starts above every imported one (`version_floor`) so that the
devices apply the first published file. Devices keep the key they hold now: the key of
their Profile Rule (or, without one, the key their file was encrypted with) becomes their
own `key:`. Values that most devices share go into profiles; device files keep their
differences. Every secret is sealed to the repository's public key, and no plaintext
secret is written, returned or put into a message.

Every problem of the input comes back at once, located (file:line:col of the input), and
then nothing is written; otherwise every file is written, or — should the disk fail half
way — none is.
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import hashlib
import io
import os
import posixpath
import re
import secrets as random
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
import yaml
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from gitprov import secrets as sec
from gitprov.app import Progress, Session
from gitprov.catalog import DBID_PATTERN, Catalog, Param
from gitprov.compile import Origin, compile_device
from gitprov.crypto import Cipher, DecryptError, Mode
from gitprov.errors import GitprovError, InvalidInventory, Problem, UsageError, error, warning
from gitprov.formats import flyingvoice
from gitprov.inventory import FLEET_FILE, SECRETS_FILE, Inventory, Layer
from gitprov.macros import device_variables, expand, normalise_mac, unknown_names
from gitprov.rule_url import RuleSyntaxError, RuleUrl, parse_rule
from gitprov.source import FileRef, Source, WorktreeSource
from gitprov.yamldoc import SecretRef, leaves

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_THRESHOLD",
    "ConfOptions",
    "FileReport",
    "ImportRefused",
    "ImportResult",
    "import_conf",
    "import_csv",
]

# Problem codes of the import (docs/inventory.md, "Importing a fleet").
UNREADABLE = "GP401"
MALFORMED = "GP402"
DECRYPT = "GP403"
MAC = "GP404"
MODEL = "GP405"
VALUE = "GP406"
VERSION = "GP407"
RULE = "GP408"
CIPHER = "GP409"
CSV = "GP410"
TABLE = "GP411"
TAKEN = "GP412"
RESULT = "GP413"

DEFAULT_THRESHOLD = 50
DEFAULT_PREFIX = "imported"
MAX_FILE_BYTES = 1 << 20  # a param.conf is a few KB; anything this big is something else

_MAGIC = b"Salted__"
_GZIP = b"\x1f\x8b"
_DBID = re.compile(DBID_PATTERN)
_KEY_VALUE = re.compile(r"([^=]*)=(.*)", re.DOTALL)
_HEX = "0-9A-Fa-f"
# A MAC inside a file name, in the spellings normalise_mac accepts, not part of a longer
# run of hex digits (`fa0021f2011b19` would be ambiguous).
_MAC_IN_TEXT = re.compile(
    rf"(?<![{_HEX}])([{_HEX}]{{2}}([:-]?)[{_HEX}]{{2}}(?:\2[{_HEX}]{{2}}){{4}}"
    rf"|[{_HEX}]{{4}}\.[{_HEX}]{{4}}\.[{_HEX}]{{4}})(?![{_HEX}])"
)
# Raw keys the catalog does not know are sealed too when a word of their name says
# password: the vendor dictionary is not public, and an admin password must not reach git.
_SECRET_WORDS = frozenset({"PASSWORD", "PASSWD", "PWD", "PASS", "PASSPHRASE", "SECRET", "PIN"})
_AUTO_MODES = (Mode.OPENSSL_MD5, Mode.OPENSSL_SHA256)
_HEADER_WORDS = frozenset({"mac", "mac address", "mac_address", "macaddress"})


class ImportRefused(GitprovError):
    """The input has problems (all of them in `problems`); nothing was written."""


@dataclass(frozen=True)
class ConfOptions:
    """How `import_conf` reads a directory of param.conf files."""

    source: Path
    model: str | None = None  # the model of every file the models table does not name
    models_file: Path | None = None  # `MAC MODEL` lines
    key: str | None = None  # one key for every encrypted file the key file does not name
    key_file: Path | None = None  # `MAC KEY` lines
    mode: str = "auto"  # auto: openssl-md5, then openssl-sha256
    iterations: int = 10000
    threshold: int = DEFAULT_THRESHOLD
    prefix: str = DEFAULT_PREFIX
    version_floor: int | None = None
    force: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class FileReport:
    """What happened to one input file (or CSV row)."""

    source: str
    mac: str | None
    action: str  # imported | replaced | skipped
    detail: str  # what was imported, or why it was skipped
    written: str | None = None  # the device file, repository-relative


@dataclass(frozen=True)
class ImportResult:
    files: tuple[FileReport, ...]
    written: tuple[str, ...]  # every file written (or, with dry_run, that would be)
    profiles: tuple[str, ...]
    secrets: int  # sealed values written
    version_floor: tuple[int, int] | None  # (before, after) when raised
    highest_version: int | None  # the highest DBID_DBASE_VERSION read
    unknown_keys: tuple[str, ...]  # raw DBID keys the catalog does not know
    warnings: tuple[Problem, ...]
    dry_run: bool

    @property
    def imported(self) -> int:
        return sum(f.action != "skipped" for f in self.files)

    @property
    def skipped(self) -> int:
        return sum(f.action == "skipped" for f in self.files)


# -- values ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Opaque:
    """A value an existing layer holds as `!secret NAME`: unknown without the private key,
    so it never counts as equal to an imported value."""

    name: str


Val = str | Opaque


@dataclass
class Plan:
    """One layer as DBID key -> value as written into param.conf (None unsets)."""

    params: dict[str, Val | None] = field(default_factory=dict)
    lines: dict[int, dict[str, Val | None]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.params) or any(self.lines.values())


@dataclass
class State:
    """What the layers so far give: globals, and per-line values by key and slot."""

    params: dict[str, Val] = field(default_factory=dict)
    lines: dict[str, dict[int, Val]] = field(default_factory=dict)

    def then(self, plan: Plan) -> State:
        params = dict(self.params)
        lines = {k: dict(v) for k, v in self.lines.items()}
        for key, value in plan.params.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = value
        for slot, item in plan.lines.items():
            for key, value in item.items():
                slots = lines.setdefault(key, {})
                if value is None:
                    slots.pop(slot, None)
                else:
                    slots[slot] = value
        return State(params, lines)


def _rendered(value: Any) -> Val:
    # As compile._text writes it.
    if isinstance(value, SecretRef):
        return Opaque(value.name)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _plan_of(layer: Layer, catalog: Catalog) -> Plan:
    plan = Plan()
    for name, value in layer.params.items():
        p = catalog.lookup(name)
        plan.params[p.key if p else name] = None if value is None else _rendered(value)
    for slot, item in enumerate(layer.lines):
        if not item:
            continue
        for name, value in item.items():
            p = catalog.lookup_line(name)
            key = p.key if p else name
            plan.lines.setdefault(slot, {})[key] = None if value is None else _rendered(value)
    return plan


def _default(param: Param | None) -> str:
    if param is None or param.default is None:
        return ""
    value = _rendered(param.default)
    assert isinstance(value, str)
    return value


def _is_secret_key(key: str, catalog: Catalog) -> bool:
    p = catalog.by_key(key)
    if p is not None:
        return p.secret and not p.managed
    return any(word in _SECRET_WORDS for word in key.split("_")[1:])


_VALIDATORS: dict[str, Draft202012Validator] = {}


def _check_value(param: Param, text: str, *, lenient_bool: bool = False) -> tuple[str, str]:
    """(the value as gitprov writes it, "" or what is wrong with it). Never quotes a secret."""
    typed: Any = text
    if param.type == "bool":
        words = {"1": True, "0": False}
        if lenient_bool:
            words |= {w: True for w in ("true", "yes", "on")}
            words |= {w: False for w in ("false", "no", "off")}
        if text.lower() not in words:
            return text, "expected " + ("1/0, true/false or yes/no" if lenient_bool else "1 or 0")
        typed = words[text.lower()]
        return ("1" if typed else "0"), ""
    if param.type in ("int", "port", "seconds"):
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            return text, "expected a whole number"
        typed = int(text)
        text = str(typed)
    validator = _VALIDATORS.get(param.key)
    if validator is None:
        validator = _VALIDATORS[param.key] = Draft202012Validator(param.value_schema())
    err = next(iter(validator.iter_errors(typed)), None)
    if err is None:
        return text, ""
    shown = "the value" if param.secret else repr(text)
    if err.validator == "pattern":
        what = {"ipv4": "an IPv4 address", "hostname": "a host name"}.get(
            param.type, "an IPv4 address or a host name"
        )
        return text, f"{shown} is not {what}"
    if err.validator in ("minimum", "maximum"):
        return text, f"{shown} is out of range ({err.validator} {err.validator_value})"
    if err.validator == "maxLength":
        return text, f"{shown} is too long ({len(text)} characters, at most {param.max_length})"
    if err.validator == "enum":
        return text, f"{shown} is not one of {', '.join(param.values)}"
    return text, f"{shown} is not a valid {param.type}"


# -- reading param.conf ---------------------------------------------------------------
@dataclass(frozen=True)
class ConfLine:
    number: int
    key: str
    value: str

    @property
    def value_col(self) -> int:
        return len(self.key) + 2


@dataclass(frozen=True)
class Opened:
    """How a file was read: its cipher as far as the file shows it, and the key that
    opened it (never printed)."""

    mode: Mode  # NONE for a plaintext file
    gzip: bool
    iterations: int
    key: str | None = field(default=None, repr=False)
    key_from: str = ""  # "the key file" or "--key"

    def describe(self) -> str:
        if self.mode is Mode.NONE:
            return "plaintext" + (", gzip" if self.gzip else "")
        how = self.mode.value + (", gzip" if self.gzip else "")
        return f"encrypted ({how}, key from {self.key_from})"


def _mac_in(text: str) -> tuple[str | None, bool]:
    """The MAC in `text` (normalised), and whether there were several different ones."""
    found = {normalise_mac(m.group(1)) for m in _MAC_IN_TEXT.finditer(text)}
    found.discard(None)
    if len(found) > 1:
        return None, True
    return (found.pop() if found else None), False


def _looks_like_conf(data: bytes) -> bool:
    """Whether decrypted bytes are text of DBID lines: a wrong key that slips through the
    padding check (1 time in 256) gives random bytes that fail this."""
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        return False
    for raw in text.split("\n"):
        line = raw.strip()
        if line and not line.startswith("#"):
            return bool(_DBID.match(line.partition("=")[0])) and "=" in line
    return False


def _gunzip(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


@dataclass(frozen=True)
class _Keys:
    by_mac: Mapping[str, str]
    default: str | None
    default_from: str

    def for_mac(self, mac: str | None) -> list[tuple[str, str]]:
        out = []
        if mac is not None and mac in self.by_mac:
            out.append((self.by_mac[mac], "the key file"))
        if self.default is not None:
            out.append((self.default, self.default_from))
        return out


def _open(
    data: bytes, mac: str | None, keys: _Keys, modes: Sequence[Mode], iterations: int
) -> tuple[bytes | None, Opened | None, str]:
    """(plaintext, how, "" or why it did not open)."""
    if not data.startswith(_MAGIC):
        if data.startswith(_GZIP):
            plain = _gunzip(data)
            if plain is None:
                return None, None, "starts like gzip but does not decompress"
            return plain, Opened(Mode.NONE, True, iterations), ""
        return data, Opened(Mode.NONE, False, iterations), ""
    candidates = keys.for_mac(mac)
    if not candidates:
        return None, None, "no key"
    structural = ""
    for mode in modes:
        cipher = Cipher(mode, iterations)
        for key, source in candidates:
            try:
                payload = cipher.decrypt(data, key)
            except DecryptError as exc:
                if "bad decrypt" not in exc.message:
                    structural = exc.message  # the same for every key: say it once
                continue
            zipped = payload.startswith(_GZIP)
            if zipped:
                unzipped = _gunzip(payload)
                if unzipped is None:
                    continue
                payload = unzipped
            if _looks_like_conf(payload):
                return payload, Opened(mode, zipped, iterations, key, source), ""
    return None, None, structural or "wrong key"


def _parse_conf(path: str, text: str) -> tuple[list[ConfLine], list[Problem], bool]:
    """The DBID lines of a param.conf, its problems, and whether it had CR LF endings."""
    lines: list[ConfLine] = []
    problems: list[Problem] = []
    first: dict[str, int] = {}
    crlf = False
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.endswith("\r"):
            crlf = True
            raw = raw[:-1]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _KEY_VALUE.fullmatch(raw)
        if m is None:
            problems.append(
                error(
                    path,
                    number,
                    1,
                    MALFORMED,
                    "not a DBID_NAME=value line",
                    "a param.conf holds one DBID_NAME=value per line (blank lines and "
                    "# comments are skipped)",
                )
            )
            continue
        key, value = m.group(1), m.group(2)
        if not _DBID.fullmatch(key):
            hint = (
                "remove the spaces around the key"
                if _DBID.fullmatch(key.strip())
                else "keys are DBID_ and capitals, digits or _ (e.g. DBID_SIP_ENABLE)"
            )
            problems.append(error(path, number, 1, MALFORMED, f"{key!r} is not a DBID key", hint))
            continue
        if "\x00" in value or "\r" in value:
            problems.append(
                error(
                    path,
                    number,
                    len(key) + 2,
                    VALUE,
                    f"{key}: the value contains a NUL or CR character",
                    "remove it: gitprov never writes one into param.conf",
                )
            )
            continue
        if key in first:
            problems.append(
                error(
                    path,
                    number,
                    1,
                    MALFORMED,
                    f"{key} is set twice (first at line {first[key]})",
                    "remove one of them: which one a device keeps is not documented",
                )
            )
            continue
        first[key] = number
        lines.append(ConfLine(number, key, value))
    return lines, problems, crlf


@dataclass
class Device:
    """One device as its param.conf (or CSV row) says it must end up."""

    source: str  # the input file as the user named it
    mac: str
    model: str
    globals: dict[str, str] = field(default_factory=dict)
    rows: dict[str, tuple[str, ...]] = field(default_factory=dict)
    version: int | None = None
    rule: str | None = field(default=None, repr=False)
    rule_at: tuple[int, int] = (0, 0)
    opened: Opened | None = None
    key: str | None = field(default=None, repr=False)  # the key the device keeps
    profile: str | None = None
    serial: str = ""
    description: str = ""
    layer: Plan = field(default_factory=Plan)  # CSV: the device layer as given

    def expected(self) -> dict[str, str]:
        """Every parameter the device's built file must have (Profile Rule and version
        aside), as param.conf writes it."""
        out = dict(self.globals)
        out.update((k, "\t".join(v)) for k, v in self.rows.items())
        return out


def _device_from_conf(
    source: str,
    mac: str,
    model: str,
    line_count: int,
    lines: list[ConfLine],
    catalog: Catalog,
    problems: list[Problem],
    warnings: list[Problem],
) -> Device:
    device = Device(source, mac, model)
    for ln in lines:
        key, value = ln.key, ln.value
        if key == flyingvoice.VERSION_KEY:
            if re.fullmatch(r"[0-9]+", value.strip()):
                device.version = int(value.strip())
            else:
                problems.append(
                    error(
                        source,
                        ln.number,
                        ln.value_col,
                        VERSION,
                        f"DBID_DBASE_VERSION is not a whole number: {value!r}",
                        "write the version the device holds, or remove the line",
                    )
                )
            continue
        if key == "DBID_PROFILE_RULE":
            device.rule = value
            device.rule_at = (ln.number, ln.value_col)
            continue
        param = catalog.by_key(key)
        if param is None:
            device.globals[key] = value
            continue
        if param.per_line:
            parts = value.split("\t")
            if len(parts) != line_count:
                problems.append(
                    error(
                        source,
                        ln.number,
                        ln.value_col,
                        VALUE,
                        f"{key} has {len(parts)} TAB-separated value(s), but model {model} "
                        f"has {line_count} line(s)",
                        "is the model right (--model, --models)? a per-line row has one "
                        "value per line of the model",
                    )
                )
                continue
            values: list[str] = []
            col = ln.value_col
            for slot, part in enumerate(parts):
                written, wrong = _check_value(param, part)
                if wrong:
                    problems.append(
                        error(
                            source,
                            ln.number,
                            col,
                            VALUE,
                            f"{key}, line {slot + 1}: {wrong}",
                            _value_hint(param),
                        )
                    )
                values.append(written)
                col += len(part) + 1
            device.rows[key] = tuple(values)
            continue
        if "\t" in value:
            problems.append(
                error(
                    source,
                    ln.number,
                    ln.value_col,
                    VALUE,
                    f"{key}: the value contains a TAB",
                    f"{param.name} is not per-line: a TAB would shift the device's "
                    "reading; remove it",
                )
            )
            continue
        written, wrong = _check_value(param, value)
        if wrong and value == "":
            warnings.append(
                warning(
                    source,
                    ln.number,
                    ln.value_col,
                    VALUE,
                    f"{key} is empty, which a {param.type} cannot be in the inventory: "
                    "not imported",
                    "the device keeps the value it has; set one in the inventory if needed",
                )
            )
            continue
        if wrong:
            problems.append(
                error(source, ln.number, ln.value_col, VALUE, f"{key}: {wrong}", _value_hint(param))
            )
            continue
        if written != value:
            warnings.append(
                warning(
                    source,
                    ln.number,
                    ln.value_col,
                    VALUE,
                    f"{key}: {value!r} imported as {written}",
                    "gitprov writes whole numbers without leading zeros or a sign",
                )
            )
        device.globals[key] = written
    return device


def _value_hint(param: Param) -> str:
    what = {
        "bool": "1 or 0",
        "int": "a whole number" + (f" {param.min}..{param.max}" if param.max is not None else ""),
        "port": "a port 1..65535",
        "seconds": "a whole number of seconds",
        "ipv4": "a dotted quad such as 192.0.2.10",
        "hostname": "a host name such as sip.example.net",
        "host": "an IPv4 address or a host name",
        "enum": "one of " + ", ".join(param.values),
    }.get(param.type, f"text of at most {param.max_length} characters")
    return f"{param.name} ({param.key}) takes {what}; fix the file and import again"


# -- tables: MAC KEY, MAC MODEL --------------------------------------------------------
@dataclass(frozen=True)
class Entry:
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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {shown}: {exc.strerror}", hint="check the path") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return {}, [
            error(shown, line, 1, TABLE, f"not UTF-8 text (byte {exc.start})", "save it as UTF-8")
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


# -- CSV with positions ---------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    text: str = field(repr=False)
    line: int
    col: int


def _csv_fields(text: str, delimiter: str, line: int) -> tuple[list[Cell], str]:
    """The cells of a single line (no record spans lines here), and "" or a problem."""
    records, problem = _csv_records(text, delimiter, line)
    return (records[0] if records else [Cell("", line, 1)]), problem[2] if problem else ""


def _csv_records(
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


# -- YAML out ---------------------------------------------------------------------------
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.@/+-]*")
_Y_N = frozenset({"y", "Y", "n", "N"})


def _scalar(value: str) -> str:
    """`value` as a YAML scalar that every YAML reader (1.1 or 1.2) reads back as this
    very string: plain where that is unambiguous, double-quoted otherwise."""
    if _PLAIN.fullmatch(value) and value not in _Y_N:
        with contextlib.suppress(yaml.YAMLError):
            if yaml.safe_load(value) == value:
                return value
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7F <= code <= 0x9F or ch in "\u2028\u2029\ufeff":
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _Sealer:
    """Seals values under names, once per name; nothing else ever sees the values."""

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.sealed: dict[str, str] = {}
        self.plain: dict[str, str] = {}  # for the import's own check, in memory only

    def __call__(self, name: str, value: str) -> str:
        if name in self.plain and self.plain[name] != value:
            raise GitprovError(f"internal: secret {name!r} sealed twice with other values")
        if name not in self.sealed:
            self.sealed[name] = sec.seal(self.public_key, name, value)
            self.plain[name] = value
        return name


def secret_name(owner: str, what: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{owner}.{what}")
    if len(name) > 64:
        name = f"{owner}.{hashlib.sha256(what.encode()).hexdigest()[:16]}"[:64]
    return name


def _value_yaml(
    key: str,
    value: Val | None,
    what: str,
    owner: str,
    catalog: Catalog,
    seal: _Sealer,
) -> str:
    if value is None:
        return "null"
    if isinstance(value, Opaque):
        return f"!secret {value.name}"
    if _is_secret_key(key, catalog):
        return "!secret " + seal(secret_name(owner, what), value)
    param = catalog.by_key(key)
    if param is not None and param.type == "bool" and value in ("0", "1"):
        return "true" if value == "1" else "false"
    if param is not None and param.type in ("int", "port", "seconds"):
        return value
    return _scalar(value)


def _layer_yaml(plan: Plan, owner: str, catalog: Catalog, seal: _Sealer) -> list[str]:
    out: list[str] = []
    if plan.params:
        out.append("params:")
        for key in sorted(plan.params, key=catalog.sort_key):
            p = catalog.by_key(key)
            name = p.name if p is not None else key
            what = name.lower() if p is None else name
            value = _value_yaml(key, plan.params[key], what, owner, catalog, seal)
            out.append(f"  {name}: {value}")
    slots = [s for s, item in plan.lines.items() if item]
    if slots:
        out.append("lines:")
        for slot in range(max(slots) + 1):
            item = plan.lines.get(slot) or {}
            if not item:
                out.append("  - null")
                continue
            lead = "  - "
            for key in sorted(item, key=catalog.sort_key):
                p = catalog.by_key(key)
                name = p.short_name if p is not None else key
                what = f"line{slot + 1}.{name if p is not None else name.lower()}"
                out.append(
                    f"{lead}{name}: {_value_yaml(key, item[key], what, owner, catalog, seal)}"
                )
                lead = "    "
    return out


def _colons(mac: str) -> str:
    return ":".join(mac[i : i + 2] for i in range(0, 12, 2))


def _device_yaml(
    device: Device,
    plan: Plan,
    profile: str | None,
    key_secret: str | None,
    catalog: Catalog,
    seal: _Sealer,
) -> bytes:
    name = posixpath.basename(device.source.rstrip("/")) or device.source
    head = [
        # A file name may hold anything but '/' and NUL: a line break would end the comment.
        f"# Imported by `gitprov import` from {name if name.isprintable() else _scalar(name)}.",
        f'mac: "{_colons(device.mac)}"',
        f"model: {_scalar(device.model)}",
    ]
    if profile:
        head.append(f"profile: {_scalar(profile)}")
    if device.serial:
        head.append(f"serial: {_scalar(device.serial)}")
    if device.description:
        head.append(f"description: {_scalar(device.description)}")
    if key_secret:
        head.append(f"key: !secret {key_secret}")
    body = _layer_yaml(plan, device.mac, catalog, seal)
    return ("\n".join(head + body) + "\n").encode("utf-8")


def _profile_yaml(
    name: str, plan: Plan, extends: str | None, about: str, catalog: Catalog, seal: _Sealer
) -> bytes:
    head = [
        "# Written by `gitprov import`: the values most imported devices share; each",
        "# device file keeps its differences. Rename, merge or split it as you like.",
        f"description: {_scalar(about)}",
    ]
    if extends:
        head.append(f"extends: {_scalar(extends)}")
    return ("\n".join(head + _layer_yaml(plan, name, catalog, seal)) + "\n").encode("utf-8")


# -- factoring ------------------------------------------------------------------------
_ABSENT = Opaque("\x00absent")  # a device's file lacks the key: a vote like any value


def _winner(values: Sequence[Val], threshold: int) -> Val | None:
    """The value more than `threshold` percent (and at least two) of `values` share."""
    if not values:
        return None
    counts = Counter(values)
    value, count = min(counts.items(), key=lambda kv: (-kv[1], repr(kv[0])))
    if count < 2 or count * 100 <= threshold * len(values):
        return None
    return value


def _vote_params(
    devices: Sequence[Device],
    before: State,
    masked: Callable[[Device, str], bool],
    threshold: int,
) -> dict[str, Val | None]:
    keys = sorted({k for d in devices for k in d.globals} | set(before.params))
    out: dict[str, Val | None] = {}
    for key in keys:
        values = [d.globals.get(key, _ABSENT) for d in devices if not masked(d, key)]
        w = _winner(values, threshold)
        had = before.params.get(key)
        if w is None or w == had or (w == _ABSENT and had is None):
            continue
        out[key] = None if w == _ABSENT else w
    return out


def _vote_lines(
    devices: Sequence[Device],
    before: State,
    counts: Mapping[str, int],
    masked: Callable[[Device, str, int], bool],
    catalog: Catalog,
    threshold: int,
) -> dict[int, dict[str, Val | None]]:
    keys = sorted({k for d in devices for k in d.rows} | set(before.lines))
    out: dict[int, dict[str, Val | None]] = {}
    most = max((counts[d.model] for d in devices), default=0)
    for key in keys:
        default = _default(catalog.by_key(key))
        for slot in range(most):
            voters = [d for d in devices if counts[d.model] > slot and not masked(d, key, slot)]
            values: list[Val] = [d.rows[key][slot] if key in d.rows else _ABSENT for d in voters]
            w = _winner(values, threshold)
            had = before.lines.get(key, {}).get(slot)
            if w is None or w == had:
                continue
            if w == _ABSENT:
                if had is not None:
                    out.setdefault(slot, {})[key] = None
                continue
            if had is None and w == default:
                continue  # the default fills any slot nobody set
            out.setdefault(slot, {})[key] = w
    return out


def _device_layer(device: Device, before: State, line_count: int, catalog: Catalog) -> Plan:
    """What the device file must say on top of `before` to build exactly its file."""
    plan = Plan()
    for key in sorted(set(device.globals) | set(before.params)):
        want, had = device.globals.get(key), before.params.get(key)
        if want is None and had is not None:
            plan.params[key] = None
        elif want is not None and want != had:
            plan.params[key] = want
    for key in sorted(set(device.rows) | set(before.lines)):
        inherited = {s: v for s, v in before.lines.get(key, {}).items() if s < line_count}
        row = device.rows.get(key)
        if row is None:
            for slot in inherited:
                plan.lines.setdefault(slot, {})[key] = None
            continue
        default = _default(catalog.by_key(key))
        for slot, value in enumerate(row):
            if (slot in inherited and inherited[slot] != value) or (
                slot not in inherited and value != default
            ):
                plan.lines.setdefault(slot, {})[key] = value
        if not inherited and not any(key in plan.lines.get(s, {}) for s in range(line_count)):
            # All slots at the default: some slot must still be set, or the key would
            # not be written at all.
            plan.lines.setdefault(0, {})[key] = row[0]
    return plan


@dataclass(frozen=True)
class _Layout:
    profiles: dict[str, tuple[Plan, str | None, str]]  # name -> plan, extends, description
    device_profile: dict[str, str | None]  # model -> profile its devices use
    device_plans: dict[str, Plan]  # mac -> device layer


def _factor(
    devices: Sequence[Device],
    inv: Inventory,
    catalog: Catalog,
    threshold: int,
    prefix: str,
) -> _Layout:
    """Profiles for what most devices share — `prefix` over all devices, `prefix-MODEL`
    over each model's — and each device's differences, on top of the fleet layer and
    under the model layer, as gitprov layers them."""
    fleet = State().then(_plan_of(inv.fleet.layer, catalog))
    model_plans = {m: _plan_of(model.layer, catalog) for m, model in inv.models.items()}
    counts = {m: model.line_count for m, model in inv.models.items()}

    def masked(d: Device, key: str) -> bool:
        return key in model_plans[d.model].params

    def masked_line(d: Device, key: str, slot: int) -> bool:
        return key in model_plans[d.model].lines.get(slot, {})

    models = sorted({d.model for d in devices})
    top = Plan()
    if len(models) > 1:
        top.params = _vote_params(devices, fleet, masked, threshold)
        top.lines = _vote_lines(devices, fleet, counts, masked_line, catalog, threshold)
    after_top = fleet.then(top)
    profiles: dict[str, tuple[Plan, str | None, str]] = {}
    if top:
        profiles[prefix] = (top, None, "What most imported devices share")
    device_profile: dict[str, str | None] = {}
    plans: dict[str, Plan] = {}
    for model in models:
        group = [d for d in devices if d.model == model]
        own = Plan(
            _vote_params(group, after_top, masked, threshold),
            _vote_lines(group, after_top, counts, masked_line, catalog, threshold),
        )
        name: str | None = prefix if top else None
        if own:
            name = prefix if len(models) == 1 else f"{prefix}-{model}"
            extends = prefix if top else None
            profiles[name] = (own, extends, f"What most imported {model} devices share")
        device_profile[model] = name
        before = after_top.then(own).then(model_plans[model])
        for d in group:
            plans[d.mac] = _device_layer(d, before, counts[model], catalog)
    return _Layout(profiles, device_profile, plans)


# -- the import -----------------------------------------------------------------------
class _Overlay:
    """The work tree with the files the import would write laid over it."""

    def __init__(self, base: WorktreeSource, planned: Mapping[str, bytes]) -> None:
        self.base = base
        self.planned = dict(planned)

    @property
    def label(self) -> str:
        return "import"

    @property
    def inventory_dir(self) -> str:
        return self.base.inventory_dir

    def files(self) -> list[FileRef]:
        refs = [r for r in self.base.files() if r.path not in self.planned]
        refs += [FileRef(p, str(pygit2.hash(d))) for p, d in self.planned.items()]
        return sorted(refs, key=lambda r: r.path)

    def read(self, ref: FileRef) -> bytes:
        if ref.path in self.planned:
            return self.planned[ref.path]
        return self.base.read(ref)


@dataclass
class _Context:
    session: Session
    inv: Inventory
    catalog: Catalog
    public_key: str
    sealed: dict[str, str]  # secrets.yaml as it is

    def path(self, *parts: str) -> str:
        return posixpath.join(self.session.inventory_dir.strip("/"), *parts)


def _context(session: Session) -> _Context:
    loaded, _ = session.load("HEAD", worktree=True)
    if loaded.inventory is None:
        raise InvalidInventory(
            f"the inventory has {len(loaded.errors)} error(s); import into a valid one",
            hint="run `gitprov validate --worktree` and fix them first",
            problems=loaded.errors,
        )
    sf = session.secrets_file()
    return _Context(
        session, loaded.inventory, session.pipeline.catalog, sf.public_key, dict(sf.sealed)
    )


def _existing(ctx: _Context, mac: str, force: bool) -> tuple[str | None, str | None]:
    """(the path to write for `mac`, or None to skip it; why it is skipped)."""
    old = ctx.inv.device(mac)
    if old is None:
        return ctx.path("devices", f"{mac}.yaml"), None
    if not force:
        return None, f"{old.doc.path} exists (--force replaces it)"
    return old.doc.path, None


@dataclass(frozen=True)
class _Inputs:
    """What the options say about keys, models and ciphers, checked."""

    keys: _Keys
    models: Mapping[str, str]  # mac -> model
    default_model: str | None
    modes: tuple[Mode, ...]
    iterations: int


def _inputs(ctx: _Context, options: ConfOptions, problems: list[Problem]) -> _Inputs:
    if not 50 <= options.threshold <= 99:
        raise UsageError(
            f"--threshold {options.threshold} is out of range",
            hint="50..99: a value goes into a profile when more than that percentage of "
            "the devices share it",
        )
    _check_profile_name(options.prefix)
    if options.model is not None and options.model not in ctx.inv.models:
        raise UsageError(f"no model {options.model!r} in the inventory", hint=_models_hint(ctx))
    modes: tuple[Mode, ...] = _AUTO_MODES
    if options.mode != "auto":
        try:
            modes = (Mode(options.mode),)
        except ValueError:
            raise UsageError(f"unknown mode {options.mode!r}") from None
    key_table: dict[str, Entry] = {}
    if options.key_file is not None:
        key_table, found = read_table(options.key_file, "key", echo=False)
        problems += found
    default_key, default_from = options.key, "--key"
    if "*" in key_table:
        if options.key is not None:
            raise UsageError(
                "both --key and a `*` line in the key file give a default key",
                hint="keep one of them",
            )
        default_key, default_from = key_table.pop("*").value, "the key file (*)"
    model_table: dict[str, Entry] = {}
    if options.models_file is not None:
        model_table, found = read_table(options.models_file, "model")
        problems += found
        for item in model_table.values():
            if item.value not in ctx.inv.models:
                problems.append(
                    error(
                        str(options.models_file),
                        item.line,
                        item.col,
                        MODEL,
                        f"no model {item.value!r} in the inventory",
                        _models_hint(ctx, item.value),
                    )
                )
    default_model = options.model
    if "*" in model_table:
        default_model = model_table.pop("*").value
    return _Inputs(
        _Keys({m: e.value for m, e in key_table.items()}, default_key, default_from),
        {m: e.value for m, e in model_table.items()},
        default_model,
        modes,
        options.iterations,
    )


@dataclass
class _Outcome:
    """What one input file gave: a device, or a report of why not, and its problems."""

    device: Device | None = None
    report: FileReport | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    version: int | None = None  # of a file that is no device's, for version_floor

    def skip(self, source: str, why: str, mac: str | None = None) -> _Outcome:
        self.report = FileReport(source, mac, "skipped", why)
        return self

    def fail(self, problem: Problem) -> _Outcome:
        self.problems.append(problem)
        return self


def _read_conf(entry: Path, ctx: _Context, inputs: _Inputs) -> _Outcome:
    """One file of the directory: read, decrypt, parse and check it."""
    out = _Outcome()
    shown = str(entry)
    if not entry.is_file():
        return out.skip(shown, "not a file (subdirectories are not searched)")
    name_mac, several = _mac_in(entry.name)
    if several:
        return out.fail(
            error(
                shown,
                0,
                0,
                MAC,
                "the file name holds more than one MAC",
                "name each file after one device's MAC",
            )
        )
    try:
        size = entry.stat().st_size
        data = b"" if size > MAX_FILE_BYTES else entry.read_bytes()
    except OSError as exc:
        return out.fail(
            error(
                shown,
                0,
                0,
                UNREADABLE,
                f"cannot read it: {exc.strerror}",
                "check its permissions, or move it out of the directory",
            )
        )
    if size > MAX_FILE_BYTES:
        if name_mac is None:
            return out.skip(shown, "not a param.conf (too large)")
        return out.fail(
            error(
                shown,
                0,
                0,
                UNREADABLE,
                f"{size} bytes is too large for a param.conf",
                "is it a device's file? move it out of the directory",
            )
        )
    plain, opened, why = _open(data, name_mac, inputs.keys, inputs.modes, inputs.iterations)
    if plain is None or opened is None:
        if name_mac is None:
            return out.skip(
                shown,
                "encrypted, and no MAC in its name to choose its key"
                if why == "no key"
                else f"not a param.conf (no MAC in its name, and {why})",
            )
        return out.fail(_decrypt_problem(shown, name_mac, why, inputs.modes))
    try:
        text = plain.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        if name_mac is None:
            return out.skip(shown, "not a param.conf (not text)")
        line = plain[: exc.start].count(b"\n") + 1
        after = " after decrypting: wrong key?" if opened.key else ""
        return out.fail(
            error(
                shown,
                line,
                1,
                UNREADABLE,
                f"not UTF-8 text (byte {exc.start}){after}",
                "a param.conf is UTF-8 text; is this a device's file?",
            )
        )
    lines, found, crlf = _parse_conf(shown, text)
    if name_mac is None and (found or not lines):
        return out.skip(shown, "not a param.conf")
    out.problems += found
    if crlf:
        out.warnings.append(
            warning(
                shown,
                1,
                1,
                MALFORMED,
                "CR LF line endings: the CRs were not imported",
                "gitprov writes LF only, as the device tooling does",
            )
        )
    rule = next((ln for ln in lines if ln.key == "DBID_PROFILE_RULE"), None)
    rule_mac = _mac_in(re.sub(r"^\s*\[[^\]]*\]", "", rule.value))[0] if rule else None
    mac = name_mac or rule_mac
    if mac is None:
        version = next((ln for ln in lines if ln.key == flyingvoice.VERSION_KEY), None)
        note = "no MAC in its name or Profile Rule (an option-66 file?)"
        if version is not None and version.value.strip().isdigit():
            out.version = int(version.value)
            note += "; its DBID_DBASE_VERSION counts for version_floor"
        return out.skip(shown, note)
    if rule is not None and name_mac and rule_mac and name_mac != rule_mac:
        return out.fail(
            error(
                shown,
                rule.number,
                rule.value_col,
                MAC,
                f"the file name says {name_mac}, its Profile Rule {rule_mac}",
                "rename the file after the device it belongs to",
            )
        )
    model = inputs.models.get(mac, inputs.default_model)
    if model is None:
        return out.fail(
            error(
                shown,
                0,
                0,
                MODEL,
                f"no model for {mac}",
                "list it in the --models file, or give --model",
            )
        )
    if model not in ctx.inv.models:
        return out  # said at the models file
    device = _device_from_conf(
        shown,
        mac,
        model,
        ctx.inv.models[model].line_count,
        lines,
        ctx.catalog,
        out.problems,
        out.warnings,
    )
    device.opened = opened
    if device.version is None:
        out.warnings.append(
            warning(
                shown,
                1,
                1,
                VERSION,
                "no DBID_DBASE_VERSION: version_floor cannot take this device's into account",
                "if the device may hold a higher version than the others, raise --version-floor",
            )
        )
    if not out.problems:
        out.device = device
    return out


def import_conf(
    session: Session, options: ConfOptions, progress: Progress | None = None
) -> ImportResult:
    """Import a directory of param.conf files (see the module docstring)."""
    ctx = _context(session)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    inputs = _inputs(ctx, options, problems)
    try:
        entries = sorted(options.source.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise UsageError(
            f"cannot read the directory {options.source}: {exc.strerror}",
            hint="give the directory that holds the param.conf files",
        ) from None
    entries = [e for e in entries if not e.name.startswith(".")]
    reports: list[FileReport] = []
    devices: list[Device] = []
    targets: dict[str, str] = {}  # mac -> where its device file goes
    by_mac: dict[str, Device] = {}
    highest: int | None = None
    for done, entry in enumerate(entries, start=1):
        if progress is not None:
            progress("read", done, len(entries))
        got = _read_conf(entry, ctx, inputs)
        problems += got.problems
        warnings += got.warnings
        if got.report is not None:
            reports.append(got.report)
        if got.version is not None:
            highest = max(highest or 0, got.version)
        device = got.device
        if device is None:
            continue
        first = by_mac.get(device.mac)
        if first is not None:
            if first.expected() == device.expected() and first.rule == device.rule:
                why = f"the same device and content as {first.source}"
                reports.append(FileReport(device.source, device.mac, "skipped", why))
            else:
                problems.append(
                    error(
                        device.source,
                        0,
                        0,
                        MAC,
                        f"{device.mac} is also in {first.source}, with other content",
                        "keep the file the device fetches now; move the other away",
                    )
                )
            continue
        by_mac[device.mac] = device
        if device.version is not None:
            highest = max(highest or 0, device.version)
        target, why_not = _existing(ctx, device.mac, options.force)
        if target is None:
            reports.append(FileReport(device.source, device.mac, "skipped", why_not or ""))
            continue
        _device_key(device, ctx.inv, warnings)
        devices.append(device)
        targets[device.mac] = target
    problems += _cipher_problems(devices, ctx)
    if problems:
        raise _refused(problems)
    floor = ctx.inv.fleet.version_floor
    new_floor = _new_floor(floor, highest, options.version_floor) if devices else floor

    layout = _factor(devices, ctx.inv, ctx.catalog, options.threshold, options.prefix)
    seal = _Sealer(ctx.public_key)
    files: dict[str, bytes] = {}
    for name, (plan, extends, about) in layout.profiles.items():
        files[ctx.path("profiles", f"{name}.yaml")] = _profile_yaml(
            name, plan, extends, about, ctx.catalog, seal
        )
    key_names = _key_secrets(devices, options.prefix)
    for d in devices:
        key_name = key_names.get(d.mac)
        if key_name is not None and d.key is not None:
            seal(key_name, d.key)
        files[targets[d.mac]] = _device_yaml(
            d,
            layout.device_plans[d.mac],
            layout.device_profile[d.model],
            key_name,
            ctx.catalog,
            seal,
        )
    replaced = {targets[d.mac] for d in devices if ctx.inv.device(d.mac) is not None}
    problems += _taken(ctx, files, seal, replaced, set(layout.profiles), options.force)
    if problems:
        raise _refused(problems)
    if new_floor != floor:
        files[ctx.path(FLEET_FILE)] = _raise_floor(ctx, new_floor)
    if seal.sealed:
        files[ctx.path(SECRETS_FILE)] = _secrets_yaml(ctx, seal)
    inv = _check(ctx, files, {targets[d.mac]: d.source for d in devices})
    warnings += _verify(devices, inv, ctx.catalog, seal)
    for d in devices:
        what = [d.model, d.opened.describe() if d.opened else ""]
        if d.mac in key_names:
            what.append("keeps its key")
        action = "replaced" if targets[d.mac] in replaced else "imported"
        detail = ", ".join(w for w in what if w)
        reports.append(FileReport(d.source, d.mac, action, detail, targets[d.mac]))
    if not options.dry_run:
        _write_all(session.top, files)
    return ImportResult(
        tuple(sorted(reports, key=lambda r: r.source)),
        tuple(sorted(files)),
        tuple(sorted(layout.profiles)),
        len(seal.sealed),
        (floor, new_floor) if new_floor != floor else None,
        highest,
        tuple(sorted({k for d in devices for k in d.globals if ctx.catalog.by_key(k) is None})),
        tuple(sorted(set(warnings))),
        options.dry_run,
    )


def _new_floor(floor: int, highest: int | None, asked: int | None) -> int:
    """At least the highest version read: a device's first version from gitprov is
    version_floor + the number of changes (1 or more), so above every one it holds."""
    need = max(floor, highest or 0)
    if asked is None:
        return need
    if asked < need:
        raise UsageError(
            f"--version-floor {asked} is too low",
            hint=f"use {need} or more: the highest DBID_DBASE_VERSION read, and never below "
            "the current version_floor",
        )
    return asked


def _refused(problems: list[Problem]) -> ImportRefused:
    found = sorted(set(problems))
    return ImportRefused(
        f"the input has {sum(p.is_error for p in found)} error(s); nothing was written",
        hint="fix them and run the import again",
        problems=tuple(found),
    )


def _models_hint(ctx: _Context, name: str = "") -> str:
    models = sorted(ctx.inv.models)
    close = difflib.get_close_matches(name, models, n=1) if name else []
    return (f"did you mean {close[0]!r}? " if close else "") + (
        f"models: {', '.join(models)} (add a file to models/ for another)"
    )


def _check_profile_name(prefix: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", prefix):
        raise UsageError(
            f"--profile-prefix {prefix!r} is not a profile name",
            hint="letters, digits, '_', '.' and '-'",
        )


def _decrypt_problem(shown: str, mac: str, why: str, modes: Sequence[Mode]) -> Problem:
    if why == "no key":
        return error(
            shown,
            1,
            1,
            DECRYPT,
            f"encrypted, and no key for {mac}",
            "add `MAC KEY` for it to the --key-file, or give --key",
        )
    if why == "wrong key":
        tried = " and ".join(m.value for m in modes)
        return error(
            shown,
            1,
            1,
            DECRYPT,
            f"does not decrypt with the key given for {mac} ({tried})",
            "check the key; files made with `openssl enc -pbkdf2` need --mode "
            "openssl-pbkdf2 and the right --iterations",
        )
    return error(
        shown,
        1,
        1,
        DECRYPT,
        f"damaged: {why}",
        "copy the file again from the server; it is not a complete encrypted file",
    )


def _device_key(device: Device, inv: Inventory, warnings: list[Problem]) -> None:
    """The key the device holds and will hold: its Profile Rule's `--key` (what the next
    file must open with), else the key its file was encrypted with."""
    opened = device.opened
    decrypt_key = opened.key if opened is not None else None
    device.key = decrypt_key
    if device.rule is None:
        return
    line, col = device.rule_at
    try:
        rule = parse_rule(device.rule)
    except RuleSyntaxError as exc:
        warnings.append(
            warning(
                device.source,
                line,
                col + exc.offset,
                RULE,
                f"the Profile Rule does not parse: {exc.message}",
                "gitprov writes each device's Profile Rule; this one is replaced",
            )
        )
        return
    if rule.key is None:
        return
    model = inv.models[device.model]
    variables = device_variables(device.mac, product_name=model.product_name)
    if unknown_names(rule.key, variables):
        warnings.append(
            warning(
                device.source,
                line,
                col,
                RULE,
                "the Profile Rule's key uses macros gitprov cannot expand",
                "set this device's `key:` by hand (`gitprov secrets set`)",
            )
        )
        return
    key = expand(rule.key, variables)
    if re.search(r"[\s\]'\"$]", key):
        warnings.append(
            warning(
                device.source,
                line,
                col,
                RULE,
                "the Profile Rule's key holds a space, quote, ] or $, which "
                "gitprov would write into the new Profile Rule unquoted",
                "after the import, move the device to a derived key (docs/keys.md, rotating keys)",
            )
        )
    if decrypt_key is not None and key != decrypt_key:
        warnings.append(
            warning(
                device.source,
                line,
                col,
                RULE,
                "the file is encrypted with another key than its Profile Rule "
                "names (a key change in progress?): the device keeps the "
                "Profile Rule's",
                "check which key the device holds",
            )
        )
    device.key = key


def _cipher_problems(devices: Sequence[Device], ctx: _Context) -> list[Problem]:
    """Encrypted files whose cipher differs from the one gitprov would use for their model:
    the device's firmware reads one, so gitprov's files would not open."""
    groups: dict[tuple[str, str], list[Device]] = {}
    for d in devices:
        opened = d.opened
        if opened is None or opened.mode is Mode.NONE:
            continue
        model = ctx.inv.models[d.model]
        enc = ctx.inv.fleet.encryption.merged(model.encryption)
        have = (
            Mode(enc.mode),
            bool(enc.gzip),
            enc.iterations if enc.mode == Mode.OPENSSL_PBKDF2 else 0,
        )
        got = (
            opened.mode,
            opened.gzip,
            opened.iterations if opened.mode is Mode.OPENSSL_PBKDF2 else 0,
        )
        if have != got:
            groups.setdefault((d.model, _cipher_text(*got)), []).append(d)
    out = []
    for (model_name, got_text), group in sorted(groups.items()):
        model = ctx.inv.models[model_name]
        over = model.encryption and any(k in model.encryption for k in ("mode", "gzip"))
        doc = model.doc if over else ctx.inv.fleet.doc
        line, col = doc.pos(("encryption", "mode"))
        enc = ctx.inv.fleet.encryption.merged(model.encryption)
        have_text = _cipher_text(Mode(enc.mode), bool(enc.gzip), enc.iterations)
        out.append(
            error(
                doc.path,
                line,
                col,
                CIPHER,
                f"{len(group)} {model_name} file(s) (e.g. {group[0].source}) are {got_text}, but "
                f"gitprov would write {have_text}: the devices could not open their files",
                f"set `encryption: {{mode: {got_text.split(',')[0]}}}` in models/{model_name}.yaml "
                "(or encryption.mode in gitprov.yaml) to what the devices read, and import again",
            )
        )
    return out


def _cipher_text(mode: Mode, zipped: bool, iterations: int) -> str:
    text = mode.value
    if mode is Mode.OPENSSL_PBKDF2:
        text += f", {iterations} iterations"
    return text + (", gzip" if zipped else "")


def _key_secrets(devices: Sequence[Device], prefix: str) -> dict[str, str]:
    """Secret names of the devices' own keys: one per key value, so that a key several
    devices share is one secret (and visibly shared)."""
    users: dict[str, list[str]] = {}
    for d in devices:
        if d.key:
            users.setdefault(d.key, []).append(d.mac)
    names: dict[str, str] = {}
    shared = 0
    for macs in sorted(users.values()):
        if len(macs) == 1:
            names[macs[0]] = secret_name(macs[0], "key")
            continue
        shared += 1
        for mac in macs:
            names[mac] = secret_name(prefix, f"shared-key-{shared}")
    return names


def _references(data: Any) -> set[str]:
    return {v.name for _, v in leaves(data) if isinstance(v, SecretRef)}


def _taken(
    ctx: _Context,
    files: Mapping[str, bytes],
    seal: _Sealer,
    replaced: set[str],
    profiles: set[str],
    force: bool,
) -> list[Problem]:
    """Names the import would take that the inventory already uses for something else."""
    out: list[Problem] = []
    inv = ctx.inv
    keep_docs = [
        doc
        for doc in (
            [inv.fleet.doc]
            + [p.doc for p in inv.profiles.values()]
            + [m.doc for m in inv.models.values()]
            + [d.doc for d in inv.devices]
        )
        if doc.path not in files
    ]
    used = set().union(*(_references(doc.data) for doc in keep_docs))
    for name in sorted(set(seal.sealed) & set(ctx.sealed) & used):
        line, col = _secret_line(ctx, name)
        out.append(
            error(
                ctx.path(SECRETS_FILE),
                line,
                col,
                TAKEN,
                f"secret {name!r} exists and another file refers to it",
                "rename that secret, or use another --profile-prefix",
            )
        )
    for name in sorted(profiles):
        existing = inv.profiles.get(name)
        if existing is None:
            continue
        users = [
            d.doc.path
            for d in inv.devices
            if d.doc.path not in replaced and name in (p.name for p in inv.profile_chain(d.profile))
        ]
        users += [
            p.doc.path
            for p in inv.profiles.values()
            if p.extends == name and p.name not in profiles
        ]
        if users:
            out.append(
                error(
                    existing.doc.path,
                    0,
                    0,
                    TAKEN,
                    f"profile {name!r} exists and {len(users)} other file(s) use it "
                    f"(e.g. {users[0]})",
                    "choose another --profile-prefix",
                )
            )
        elif not force:
            out.append(
                error(
                    existing.doc.path,
                    0,
                    0,
                    TAKEN,
                    f"profile {name!r} exists",
                    "choose another --profile-prefix, or --force to replace it",
                )
            )
    return out


def _secret_line(ctx: _Context, name: str) -> tuple[int, int]:
    """Where secrets.yaml names `name` (its layout is fixed: one `  NAME: v1:…` per line)."""
    try:
        text = (ctx.session.top / ctx.path(SECRETS_FILE)).read_text(encoding="utf-8")
    except OSError:
        return 0, 0
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip().startswith((f"{name}:", f'"{name}":', f"'{name}':")):
            return number, len(line) - len(line.lstrip()) + 1
    return 0, 0


def _raise_floor(ctx: _Context, floor: int) -> bytes:
    # A round-trip edit: the comments and layout of the fleet settings stay as they are.
    path = ctx.session.top / ctx.path(FLEET_FILE)
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    data = rt.load(path.read_text(encoding="utf-8"))
    data["version_floor"] = floor
    out = io.StringIO()
    rt.dump(data, out)
    return out.getvalue().encode("utf-8")


def _secrets_yaml(ctx: _Context, seal: _Sealer) -> bytes:
    merged = {**ctx.sealed, **seal.sealed}
    return sec.dump_secrets_file(sec.SecretsFile(ctx.public_key, merged)).encode("utf-8")


def _check(ctx: _Context, files: Mapping[str, bytes], sources: Mapping[str, str]) -> Inventory:
    """Validate the inventory with the planned files; an error refuses the import."""
    session = ctx.session
    repo = session.repo
    head = None if repo.head_is_unborn else repo.head.peel(pygit2.Commit)
    floor = session.pipeline.history_floor([head.id] if head is not None else [])
    source: Source = _Overlay(WorktreeSource(session.top, session.inventory_dir), files)
    loaded = session.pipeline.load(source, floor)
    if loaded.inventory is not None:
        return loaded.inventory
    problems = []
    for p in loaded.errors:
        src = sources.get(p.file)
        if src is None:
            problems.append(p)
            continue
        problems.append(
            error(
                src,
                0,
                0,
                RESULT,
                f"the device file the import would write ({p.where()}) does not "
                f"validate: {p.code} {p.message}",
                p.hint,
            )
        )
    raise _refused(problems)


def _verify(
    devices: Sequence[Device], inv: Inventory, catalog: Catalog, seal: _Sealer
) -> list[Problem]:
    """Compile every imported device from the planned inventory and compare it with its
    file: a difference is a bug of the import, and nothing is written. Returns what the
    Profile Rules say about devices that would not find or open gitprov's files."""

    def resolve(name: str) -> str:
        # Secrets the import did not write stand in by a marker: they are only ever
        # compared with values the import wrote itself, and never equal.
        return seal.plain.get(name, f"\x00{name}")

    groups: dict[tuple[str, ...], list[tuple[Device, Origin]]] = {}
    for d in devices:
        cfg = compile_device(inv.device(d.mac) or _missing(d.mac), inv, catalog, resolve)
        built = {e.key: e.value for e in cfg.entries if e.key != "DBID_PROFILE_RULE"}
        if built != d.expected():
            wrong = sorted(
                k for k in set(built) | set(d.expected()) if built.get(k) != d.expected().get(k)
            )
            raise GitprovError(
                f"internal: the import would not build {d.mac} as its file says "
                f"({', '.join(wrong[:5])}); nothing was written",
                hint="please report it, with the file's keys (not its values)",
            )
        line, col = d.rule_at if d.rule is not None else (1, 1)
        where = Origin(d.source, line, col)
        for finding in _rule_findings(d, cfg.get("DBID_PROFILE_RULE"), inv):
            groups.setdefault(finding, []).append((d, where))
    out = []
    for (message, hint), found in sorted(groups.items()):
        d, where = found[0]
        more = (
            f" ({len(found)} files: {d.source} and {len(found) - 1} more)" if len(found) > 1 else ""
        )
        out.append(warning(where.file, where.line, where.col, RULE, message + more, hint))
    return out


def _missing(mac: str) -> Any:
    raise GitprovError(f"internal: {mac} is not in the planned inventory")


def _rule_url(text: str, variables: Mapping[str, str]) -> tuple[str, str, int, str] | None:
    try:
        url: RuleUrl = parse_rule(text)
    except RuleSyntaxError:
        return None
    return (url.scheme, url.host.lower(), url.port, expand(url.path, variables))


def _rule_findings(d: Device, built: str | None, inv: Inventory) -> Iterable[tuple[str, str]]:
    opened = d.opened
    encrypted = opened is not None and opened.mode is not Mode.NONE
    cipher = inv.fleet.encryption.merged(inv.models[d.model].encryption)
    model = inv.models[d.model]
    variables = device_variables(d.mac, product_name=model.product_name)
    old = _rule_url(d.rule, variables) if d.rule is not None else None
    try:
        expects_plain = parse_rule(d.rule).key is None if d.rule is not None else not encrypted
    except RuleSyntaxError:
        expects_plain = False  # said already: the rule does not parse
    if expects_plain and cipher.mode != Mode.NONE.value:
        yield (
            "the device reads plaintext files (its Profile Rule names no key), and gitprov "
            "would encrypt its file: it could not read it",
            "before the first publish, give the device its key (`gitprov key MAC` once this "
            "is committed) in a Profile Rule [--key KEY] served by the old server, or set "
            f"`encryption: {{mode: none}}` in models/{d.model}.yaml",
        )
    if d.rule is None:
        return
    if built is None:
        yield (
            "gitprov.yaml sets no provisioning.url: gitprov writes no Profile Rule and the "
            "devices keep fetching from the old server",
            "set provisioning.url (and file_name) to where the devices should fetch",
        )
        return
    new = _rule_url(built, variables)
    if old is not None and new is not None and old != new:
        # Never the key; and the MAC as a macro, so that one warning covers the fleet.
        shown_old = re.sub(r"^\s*\[[^\]]*\]\s*", "", d.rule)
        for spelling, macro in ((d.mac, "$(MA)"), (d.mac.upper(), "$(MAU)")):
            shown_old = shown_old.replace(spelling, macro)
        template = (inv.fleet.provisioning_url or "").rstrip("/") + "/" + inv.fleet.file_name
        yield (
            f"devices fetch {shown_old}, but gitprov would publish their files for "
            f"{template}: they would never find the first one",
            "set provisioning.url and file_name in gitprov.yaml to what the devices fetch "
            "now (change them later, in a commit of its own), or serve gitprov's roots at "
            "that address",
        )


# -- writing --------------------------------------------------------------------------
def _write_all(top: Path, files: Mapping[str, bytes]) -> None:
    """Every file or none: all are written to temporary files beside their targets first;
    only then are they renamed into place, and a failed rename puts back what was there."""
    staged: list[tuple[Path, Path]] = []
    originals: dict[Path, bytes | None] = {}
    moved: list[Path] = []
    try:
        for rel, data in sorted(files.items()):
            target = top / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.import-{random.token_hex(4)}.tmp"
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            staged.append((tmp, target))
            originals[target] = target.read_bytes() if target.exists() else None
        for tmp, target in staged:
            os.replace(tmp, target)
            moved.append(target)
    except OSError as exc:
        for target in moved:
            old = originals[target]
            with contextlib.suppress(OSError):
                if old is None:
                    target.unlink()
                else:
                    target.write_bytes(old)
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise UsageError(
            f"cannot write {exc.filename or top}: {exc.strerror}; nothing was imported",
            hint="check the space and permissions of the repository",
        ) from None


# -- CSV ------------------------------------------------------------------------------
_FIXED = ("mac", "model", "profile", "serial", "description")
_LINE_COLUMN = re.compile(r"line([0-9]+)\.(.+)", re.IGNORECASE)


@dataclass(frozen=True)
class _Column:
    kind: str  # one of _FIXED, "param" or "line"
    key: str = ""
    slot: int = -1


def _column(cell: Cell, catalog: Catalog, path: str) -> tuple[_Column | None, Problem | None]:
    name = cell.text.strip()
    low = name.lower()
    if low in _FIXED:
        return _Column(low), None
    m = _LINE_COLUMN.fullmatch(name)
    if m:
        slot, field_name = int(m.group(1)) - 1, m.group(2)
        p = catalog.lookup_line(field_name.lower()) or catalog.lookup_line(field_name.upper())
        if slot < 0 or slot >= 16:
            return None, error(
                path, cell.line, cell.col, CSV, f"column {name!r}: line numbers are 1..16", ""
            )
        if p is None or p.managed:
            close = difflib.get_close_matches(field_name.lower(), catalog.line_names(), n=1)
            return None, error(
                path,
                cell.line,
                cell.col,
                CSV,
                f"column {name!r}: {field_name!r} is not a per-line parameter",
                (f"did you mean line{slot + 1}.{close[0]}? " if close else "")
                + "per-line names: "
                + ", ".join(catalog.line_names()),
            )
        return _Column("line", p.key, slot), None
    upper = name.upper()
    if _DBID.fullmatch(upper):
        p = catalog.by_key(upper)
        if p is not None and (p.per_line or p.managed):
            why = (
                "is per-line: name it lineN." + p.short_name
                if p.per_line
                else "is computed by gitprov"
            )
            return None, error(path, cell.line, cell.col, CSV, f"column {name!r} {why}", "")
        return _Column("param", upper), None
    p = catalog.lookup(low)
    if p is not None and not p.per_line and not p.managed:
        return _Column("param", p.key), None
    if catalog.unpublished_named(low) is not None:
        return None, error(
            path,
            cell.line,
            cell.col,
            CSV,
            f"column {name!r}: its DBID key is not published",
            "name the column after the raw DBID_* key once you know it",
        )
    known = [*_FIXED, *catalog.global_names(), "line1.account"]
    close = difflib.get_close_matches(low, known, n=1, cutoff=0.6)
    return None, error(
        path,
        cell.line,
        cell.col,
        CSV,
        f"unknown column {name!r}",
        (f"did you mean {close[0]!r}? " if close else "")
        + "columns: mac, model, profile, serial, description, lineN.FIELD (e.g. "
        "line1.account), a parameter name (sip.server) or a raw DBID_* key",
    )


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: (counts[d], d == ","))


def import_csv(
    session: Session,
    path: Path,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Import a CSV: one device per row, its cells the device layer (docs/inventory.md)."""
    ctx = _context(session)
    catalog = ctx.catalog
    shown = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {shown}: {exc.strerror}", hint="check the path") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _refused(
            [
                error(
                    shown,
                    line,
                    1,
                    CSV,
                    f"not UTF-8 (byte {exc.start})",
                    'save the sheet as "CSV UTF-8"',
                )
            ]
        ) from None
    records, syntax = _csv_records(text, _delimiter(text.split("\n", 1)[0]))
    problems: list[Problem] = []
    if syntax is not None:
        problems.append(
            error(
                shown,
                syntax[0],
                syntax[1],
                CSV,
                syntax[2],
                'quote a cell that holds the delimiter, and double a " inside it',
            )
        )
        raise _refused(problems)
    records = [r for r in records if any(c.text.strip() for c in r)]
    if not records:
        raise _refused(
            [
                error(
                    shown,
                    1,
                    1,
                    CSV,
                    "no header row",
                    "the first row names the columns: mac,model,profile,line1.account,…",
                )
            ]
        )
    header, rows = records[0], records[1:]
    columns: list[_Column | None] = []
    seen: dict[tuple[str, str, int], Cell] = {}
    for cell in header:
        col, problem = _column(cell, catalog, shown)
        if problem is not None:
            problems.append(problem)
        elif col is not None:
            ident = (col.kind, col.key, col.slot)
            if ident in seen:
                problems.append(
                    error(
                        shown,
                        cell.line,
                        cell.col,
                        CSV,
                        f"column {cell.text.strip()!r} twice (first at column {seen[ident].col})",
                        "keep one",
                    )
                )
        columns.append(col)
        if col is not None:
            seen.setdefault((col.kind, col.key, col.slot), cell)
    for need in ("mac", "model"):
        if not any(c is not None and c.kind == need for c in columns):
            problems.append(
                error(
                    shown,
                    header[0].line,
                    1,
                    CSV,
                    f"no {need!r} column",
                    f"add a column named {need}",
                )
            )
    if problems:
        raise _refused(problems)

    reports: list[FileReport] = []
    devices: list[Device] = []
    targets: dict[str, str] = {}
    first_row: dict[str, int] = {}
    total = len(rows)
    for done, row in enumerate(rows, start=1):
        if progress is not None:
            progress("read", done, total)
        line = row[0].line
        extra = row[len(columns) :]
        if any(c.text.strip() for c in extra):
            problems.append(
                error(
                    shown,
                    line,
                    extra[0].col,
                    CSV,
                    f"{len(row)} cells, but the header names {len(columns)}",
                    "add a header for the column, or remove the cells",
                )
            )
            continue
        cells = {i: c for i, c in enumerate(row[: len(columns)])}
        device = _csv_device(shown, cells, columns, ctx, catalog, problems)
        if device is None:
            continue
        if device.mac in first_row:
            problems.append(
                error(
                    shown,
                    line,
                    cells[_index(columns, "mac")].col,
                    MAC,
                    f"{device.mac} is also in line {first_row[device.mac]}",
                    "keep one row per device",
                )
            )
            continue
        first_row[device.mac] = line
        target, why = _existing(ctx, device.mac, force)
        if target is None:
            reports.append(FileReport(device.source, device.mac, "skipped", why or ""))
            continue
        devices.append(device)
        targets[device.mac] = target
    if problems:
        raise _refused(problems)

    seal = _Sealer(ctx.public_key)
    files = {
        targets[d.mac]: _device_yaml(d, d.layer, d.profile, None, catalog, seal) for d in devices
    }
    replaced = {targets[d.mac] for d in devices if ctx.inv.device(d.mac) is not None}
    problems += _taken(ctx, files, seal, replaced, set(), force)
    if problems:
        raise _refused(problems)
    if seal.sealed:
        files[ctx.path(SECRETS_FILE)] = _secrets_yaml(ctx, seal)
    _check(ctx, files, {targets[d.mac]: d.source for d in devices})
    for d in devices:
        lines = sorted(d.layer.lines)
        what = [d.model] + ([f"profile {d.profile}"] if d.profile else [])
        what.append(f"{len(lines)} line(s)")
        reports.append(
            FileReport(
                d.source,
                d.mac,
                "replaced" if targets[d.mac] in replaced else "imported",
                ", ".join(what),
                targets[d.mac],
            )
        )
    unknown = sorted({k for d in devices for k in d.layer.params if catalog.by_key(k) is None})
    if not dry_run:
        _write_all(session.top, files)
    return ImportResult(
        tuple(reports),
        tuple(sorted(files)),
        (),
        len(seal.sealed),
        None,
        None,
        tuple(unknown),
        (),
        dry_run,
    )


def _index(columns: Sequence[_Column | None], kind: str) -> int:
    return next(i for i, c in enumerate(columns) if c is not None and c.kind == kind)


def _csv_device(
    path: str,
    cells: Mapping[int, Cell],
    columns: Sequence[_Column | None],
    ctx: _Context,
    catalog: Catalog,
    problems: list[Problem],
) -> Device | None:
    before = len(problems)
    line = next(iter(cells.values())).line

    def cell(kind: str) -> Cell | None:
        for i, c in enumerate(columns):
            if c is not None and c.kind == kind and i in cells:
                return cells[i]
        return None

    mac_cell = cell("mac")
    mac = normalise_mac(mac_cell.text) if mac_cell is not None else None
    if mac is None:
        where = mac_cell or Cell("", line, 1)
        problems.append(
            error(
                path,
                where.line,
                where.col,
                MAC,
                f"not a MAC address: {where.text.strip()!r}",
                "write it like 00:21:f2:01:1b:19; a spreadsheet may have turned "
                "it into a number: format the column as text",
            )
        )
        return None
    model_cell = cell("model")
    model_name = model_cell.text.strip() if model_cell is not None else ""
    if model_name not in ctx.inv.models:
        where = model_cell or Cell("", line, 1)
        problems.append(
            error(
                path,
                where.line,
                where.col,
                MODEL,
                f"no model {model_name!r} in the inventory",
                _models_hint(ctx, model_name),
            )
        )
        return None
    line_count = ctx.inv.models[model_name].line_count
    device = Device(f"{path}:{line}", mac, model_name)
    profile_cell = cell("profile")
    if profile_cell is not None and profile_cell.text.strip():
        name = profile_cell.text.strip()
        if name not in ctx.inv.profiles:
            close = difflib.get_close_matches(name, sorted(ctx.inv.profiles), n=1)
            problems.append(
                error(
                    path,
                    profile_cell.line,
                    profile_cell.col,
                    CSV,
                    f"no profile {name!r} in the inventory",
                    (f"did you mean {close[0]!r}? " if close else "")
                    + "profiles: "
                    + ", ".join(sorted(ctx.inv.profiles)),
                )
            )
        device.profile = name
    for kind in ("serial", "description"):
        c = cell(kind)
        if c is not None:
            setattr(device, kind, c.text.strip())
    enabled_set: set[int] = set()
    for i, column in enumerate(columns):
        c = cells.get(i)
        if column is None or c is None or column.kind not in ("param", "line") or c.text == "":
            continue
        param = catalog.by_key(column.key)
        value = c.text
        if param is not None:
            value, wrong = _check_value(param, c.text, lenient_bool=True)
            if wrong:
                problems.append(error(path, c.line, c.col, VALUE, f"{wrong}", _value_hint(param)))
                continue
        if "\t" in value and (param is not None):
            problems.append(
                error(
                    path,
                    c.line,
                    c.col,
                    VALUE,
                    "the value contains a TAB",
                    "remove it: in param.conf it separates the lines",
                )
            )
            continue
        if column.kind == "param":
            device.layer.params[column.key] = value
            continue
        if column.slot >= line_count:
            problems.append(
                error(
                    path,
                    c.line,
                    c.col,
                    VALUE,
                    f"line {column.slot + 1} is set, but model {model_name} has "
                    f"{line_count} line(s)",
                    "leave the cell empty, or check the model",
                )
            )
            continue
        device.layer.lines.setdefault(column.slot, {})[column.key] = value
        if param is not None and param.short_name == "enabled":
            enabled_set.add(column.slot)
    enabled = catalog.lookup_line("enabled")
    account = catalog.lookup_line("account")
    if enabled is not None and account is not None:
        for slot, item in device.layer.lines.items():
            if account.key in item and slot not in enabled_set:
                item[enabled.key] = "1"
    return device if len(problems) == before else None
