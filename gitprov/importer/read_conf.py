"""One param.conf file of the directory into a `Device`: whose it is (a MAC in its name, or
in its Profile Rule), its model, opening it, its DBID lines, and every value checked
against the parameter catalog.

A file that is plainly not a device's (no MAC anywhere, not text, too large) is skipped
with a reason; a device's file with a problem is reported, located, and never half read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from gitprov.catalog import Catalog
from gitprov.crypto import Mode
from gitprov.errors import Problem, error, warning
from gitprov.formats import flyingvoice
from gitprov.importer.context import Context, FileReport
from gitprov.importer.decrypt import Keys, decrypt_problem, open_conf
from gitprov.importer.problems import MAC, MALFORMED, MODEL, UNREADABLE, VALUE, VERSION, value_hint
from gitprov.importer.tables import NotUtf8, utf8
from gitprov.importer.values import DBID, Device, check_value, default_value, taken_rule
from gitprov.macros import normalise_mac
from gitprov.unsafe import UNSAFE, describe, unsafe_hint

MAX_FILE_BYTES = 1 << 20  # a param.conf is a few KB; anything this big is something else
# The fleet settings' schema bound of version_floor (schemas/fleet.schema.json), and so the
# highest version a file may hold: the import raises version_floor to one above it.
FLOOR_MAX = 2_000_000_000
MAX_VERSION = FLOOR_MAX - 1
_KEY_VALUE = re.compile(r"([^=]*)=(.*)", re.DOTALL)
_HEX = "0-9A-Fa-f"
# A MAC inside a file name, in the spellings normalise_mac accepts, not part of a longer
# run of hex digits (`fa0021f2011b19` would be ambiguous).
_MAC_IN_TEXT = re.compile(
    rf"(?<![{_HEX}])([{_HEX}]{{2}}([:-]?)[{_HEX}]{{2}}(?:\2[{_HEX}]{{2}}){{4}}"
    rf"|[{_HEX}]{{4}}\.[{_HEX}]{{4}}\.[{_HEX}]{{4}})(?![{_HEX}])"
)


@dataclass(frozen=True)
class ConfLine:
    """One `DBID_KEY=value` line."""

    number: int
    key: str
    value: str

    @property
    def value_col(self) -> int:
        return len(self.key) + 2


class Version(NamedTuple):
    """A DBID_DBASE_VERSION line read: the number, or why it cannot be taken."""

    number: int | None
    why: str = ""
    hint: str = ""
    too_high: bool = False  # a number, but past what version_floor can go above


def read_version(value: str) -> Version:
    """The DBID_DBASE_VERSION a file holds.

    The import raises version_floor above the highest version read, so a version is taken
    only if the floor above it fits the fleet settings' schema: past that, the only place
    left to report it would be the gitprov.yaml line the import wrote itself."""
    digits = value.strip()
    # (ASCII digits only: str.isdigit() takes '²', which int() refuses)
    if not re.fullmatch(r"[0-9]+", digits):
        return Version(
            None,
            f"DBID_DBASE_VERSION is not a whole number: {_cut(value)}",
            "write the version the device holds (digits only), or remove the line",
        )
    # Leading zeros would count towards int()'s limit of 4,300 digits, and a number with
    # more digits than the bound is past it: int() only ever sees a few digits.
    significant = digits.lstrip("0") or "0"
    if len(significant) <= len(str(MAX_VERSION)) and int(significant) <= MAX_VERSION:
        return Version(int(significant))
    shown = significant if len(significant) <= 20 else f"({len(significant)} digits)"
    return Version(
        None,
        f"DBID_DBASE_VERSION {shown} is above {MAX_VERSION}: gitprov numbers devices above "
        f"version_floor, which goes up to {FLOOR_MAX}",
        "gitprov could never number a device holding it higher: lower the version the "
        "devices hold first (and write that here), or move the file out of the directory",
        too_high=True,
    )


def _mac_in(text: str) -> tuple[str | None, bool]:
    """The MAC in `text` (normalised), and whether there were several different ones."""
    found = {normalise_mac(m.group(1)) for m in _MAC_IN_TEXT.finditer(text)}
    found.discard(None)
    if len(found) > 1:
        return None, True
    return (found.pop() if found else None), False


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
        if not DBID.fullmatch(key):
            hint = (
                "remove the spaces around the key"
                if DBID.fullmatch(key.strip())
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


def _device_from_conf(
    source: str,
    mac: str,
    model: str,
    line_count: int,
    lines: list[ConfLine],
    catalog: Catalog,
    problems: list[Problem],
    warnings: list[Problem],
    bound_urls: frozenset[str] = frozenset(),
) -> Device:
    """`bound_urls`: the raw keys the model binds to a rule URL (an Upgrade Rule)."""
    device = Device(source, mac, model)
    for ln in lines:
        key, value = ln.key, ln.value
        device.at[(key, -1)] = (source, ln.number, ln.value_col)
        if key == flyingvoice.VERSION_KEY:
            read = read_version(value)
            if read.number is None:
                problems.append(
                    error(source, ln.number, ln.value_col, VERSION, read.why, read.hint)
                )
            device.version = read.number
            continue
        if key == "DBID_PROFILE_RULE":
            device.rule = value
            device.rule_at = (ln.number, ln.value_col)
            continue
        unsafe = UNSAFE.search(value)
        if unsafe is not None:
            # (a password is sealed as read: nothing checks it after the import)
            problems.append(
                error(
                    source,
                    ln.number,
                    ln.value_col + unsafe.start(),
                    VALUE,
                    f"{key}: the value contains {describe(unsafe.group())}",
                    unsafe_hint(unsafe.group()),
                )
            )
            continue
        param = catalog.by_key(key)
        if param is None:
            if key in bound_urls and value:
                value, wrong = taken_rule(value)
                if wrong:
                    problems.append(
                        error(
                            source,
                            ln.number,
                            ln.value_col,
                            VALUE,
                            f"{key}: {wrong}",
                            "fix it in the file, or leave the key out of it",
                        )
                    )
                    continue
            device.globals[key] = value
            continue
        if param.per_line:
            parts = value.split("\t")
            short = len(parts) < line_count
            if len(parts) > line_count:
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
                device.at[(key, slot)] = (source, ln.number, col)
                written, wrong = check_value(param, part)
                if wrong:
                    problems.append(
                        error(
                            source,
                            ln.number,
                            col,
                            VALUE,
                            f"{key}, line {slot + 1}: {wrong}",
                            value_hint(param),
                        )
                    )
                values.append(written)
                col += len(part) + 1
            if short:
                # The overview's own example writes one value for the account, name,
                # number and password of a four-line model (its section 5): the
                # lines not given take the value gitprov writes for a line nothing sets.
                given = len(values)
                values += [default_value(param)] * (line_count - given)
                warnings.append(
                    warning(
                        source,
                        ln.number,
                        ln.value_col,
                        VALUE,
                        f"{key} has {given} TAB-separated value(s), but model {model} has "
                        f"{line_count} line(s): {_lines(given + 1, line_count)} imported "
                        f"with the default ({_shown(values[-1])})",
                        "gitprov writes a value for every line of the model; check the "
                        "model (--model, --models), or set those lines in the inventory",
                    )
                )
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
        written, wrong = check_value(param, value)
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
                error(source, ln.number, ln.value_col, VALUE, f"{key}: {wrong}", value_hint(param))
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


@dataclass(frozen=True)
class Inputs:
    """What the options say about keys, models and ciphers, checked."""

    keys: Keys
    models: Mapping[str, str]  # mac -> model
    default_model: str | None
    modes: tuple[Mode, ...]
    iterations: int


@dataclass
class Outcome:
    """What one input file gave: a device, or a report of why not, and its problems."""

    device: Device | None = None
    report: FileReport | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    version: int | None = None  # of a file that is no device's, for version_floor

    def skip(self, source: str, why: str, mac: str | None = None) -> Outcome:
        self.report = FileReport(source, mac, "skipped", why)
        return self

    def fail(self, problem: Problem) -> Outcome:
        self.problems.append(problem)
        return self


def read_conf_file(entry: Path, ctx: Context, inputs: Inputs) -> Outcome:
    """One file of the directory: read, decrypt, parse and check it."""
    out = Outcome()
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
    plain, opened, why = open_conf(data, name_mac, inputs.keys, inputs.modes, inputs.iterations)
    if plain is None or opened is None:
        if name_mac is None:
            return out.skip(
                shown,
                "encrypted, and no MAC in its name to choose its key"
                if why == "no key"
                else f"not a param.conf (no MAC in its name, and {why})",
            )
        return out.fail(decrypt_problem(shown, name_mac, why, inputs.modes))
    text = utf8(plain)
    if isinstance(text, NotUtf8):
        if name_mac is None:
            return out.skip(shown, "not a param.conf (not text)")
        after = " after decrypting: wrong key?" if opened.key else ""
        return out.fail(
            error(
                shown,
                text.line,
                text.col,
                UNREADABLE,
                f"not UTF-8 text (byte {text.byte}){after}",
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
        if version is not None:
            note += _skipped_version(shown, version, out)
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
        _bound_urls(ctx, model),
    )
    device.opened = opened
    if not any(ln.key == flyingvoice.VERSION_KEY for ln in lines):
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


def _skipped_version(shown: str, line: ConfLine, out: Outcome) -> str:
    """Count the version of a file that is no device's (an option-66 file: devices applied
    it too) for version_floor; what the skip report adds."""
    read = read_version(line.value)
    if read.number is not None:
        out.version = read.number
        return "; its DBID_DBASE_VERSION counts for version_floor"
    if read.too_high:
        # Not counting it would give devices that applied this file a lower version.
        out.problems.append(error(shown, line.number, line.value_col, VERSION, read.why, read.hint))
    else:
        out.warnings.append(
            warning(
                shown,
                line.number,
                line.value_col,
                VERSION,
                f"DBID_DBASE_VERSION is not a whole number ({_cut(line.value)}): not "
                "counted for version_floor",
                "if devices applied this file, raise --version-floor above the version they hold",
            )
        )
    return ""


def _bound_urls(ctx: Context, model: str) -> frozenset[str]:
    """The raw keys `model` binds to a catalog name of type url (an Upgrade Rule)."""
    out = set()
    for name, key in ctx.inv.models[model].bindings.items():
        typed = ctx.catalog.lookup(name) or ctx.catalog.unpublished_named(name)
        if typed is not None and typed.type == "url":
            out.add(key)
    return frozenset(out)


def _cut(value: str) -> str:
    # (the line may be a megabyte long)
    return repr(value) if len(value) <= 40 else repr(value[:40]) + "…"


def _shown(value: str) -> str:
    return repr(value) if value else "empty"


def _lines(first: int, last: int) -> str:
    return f"line {first} is" if first == last else f"lines {first}-{last} are"
