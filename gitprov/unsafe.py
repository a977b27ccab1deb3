"""Characters no value, key or file name of the inventory may hold, and how to show them.

Kept apart from the renderer (gitprov.formats.flyingvoice, which uses them for every line
it writes) so that the reader of the inventory can refuse them too without importing the
renderer, which imports the inventory.
"""

from __future__ import annotations

import re
import unicodedata

# What no key or value of param.conf may hold (TAB aside: it separates per-line values).
# A line break or NUL would inject lines; other C0 and C1 controls (ESC, VT, FF, NEL …),
# DEL, Unicode line and paragraph separators and bidi controls (the "Trojan Source" trick)
# are read one way by the device's parser and another by the person reviewing a plan. So
# are the characters that show as nothing at all: a zero-width space, a word joiner, the
# invisible operators, a soft hyphen, U+180E, a byte order mark inside a value and the
# interlinear annotation marks; pasted from a web page into a password or an account,
# they make it another one than the one reviewed. (The zero-width joiner and non-joiner,
# U+200C and U+200D, are not refused: Persian, the Indic scripts and emoji need them.)
UNSAFE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\xad\u061c\u180e\u200b\u200e\u200f\u2028\u2029"
    "\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb]"
)
_NAMES = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte"}
# What starts a new line in param.conf, or to a device's parser.
LINE_BREAKS = frozenset("\n\r\x00\x85\u2028\u2029\x0b\x0c")


def unsafe_in(value: str, *, tab: bool = False) -> tuple[str, str] | None:
    """What `value` holds that no device file may (with `tab`, a TAB too: in a line's
    value it shifts the lines after it), as a problem names it, and its hint; None when
    nothing. For what validation cannot see: a secret once unsealed, a value an import
    reads."""
    found = UNSAFE.search(value)
    if found is not None:
        return describe(found.group()), unsafe_hint(found.group())
    if tab and "\t" in value:
        return "a TAB", unsafe_hint("\t")
    return None


def unsafe_hint(char: str) -> str:
    """What to do about `char` (see `unsafe_in`), as a problem's hint says it."""
    if char == "\x00":
        return "remove it: a NUL ends the value where the device reads it, or hides a line after it"
    if char in LINE_BREAKS:
        return "write it on one line: a line break would inject lines into param.conf"
    if char == "\t":
        return "remove it: in param.conf a TAB separates the values of a device's lines"
    return "remove it: invisible in a review, it would reach the device's file"


# A file name's bytes that are not UTF-8, as Python reads them (surrogateescape): git
# keeps any bytes, the manifest, the journal and every JSON output hold text.
NOT_UTF8 = re.compile("[\ud800-\udfff]")
# What `shown` escapes: UNSAFE, TAB and NOT_UTF8; in a file name, each is refused (GP108).
UNSHOWN = re.compile("[\t" + NOT_UTF8.pattern[1:-1] + UNSAFE.pattern[1:])


def escaped_byte(char: str) -> int | None:
    """The byte a surrogate stands for where surrogateescape read one that is not
    UTF-8 (`\\udcff`: 0xff); None for any other character."""
    point = ord(char)
    return point - 0xDC00 if 0xDC80 <= point <= 0xDCFF else None


def describe(char: str) -> str:
    """How a problem names one UNSAFE character (it is invisible, or worse, when printed),
    or a byte of a name that is not UTF-8 (NOT_UTF8)."""
    if char in _NAMES:
        return _NAMES[char]
    if NOT_UTF8.match(char):
        byte = escaped_byte(char)
        if byte is not None:
            return f"the byte 0x{byte:02X}, which is not UTF-8"
        return f"the lone surrogate U+{ord(char):04X}, which is not UTF-8"
    name = unicodedata.name(char, "")
    code = f"U+{ord(char):04X}"
    if not name:
        return f"the control character {code}"
    return f"the invisible character {code} ({name})"


def is_utf8(text: str) -> bool:
    """False for text read from bytes that are not UTF-8 (a command line's, a file
    name's: Python holds each such byte as a lone surrogate), which no UTF-8 file holds."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """`text` with every UNSAFE character and TAB written as a Python escape (`\\n`,
    `\\x1b`, `\\u202e`; a byte that is not UTF-8 as `\\xff`): printed as it is, a
    newline in a file name would start a line of output that looks like a problem of
    another file, an ESC sequence would rewrite the reader's terminal."""
    return UNSHOWN.sub(lambda m: _escaped(m.group()), text)


# How much of a text given on the command line (or in a file) a message echoes back: a
# hook's 100,000-character argument would otherwise be a whole screen, or a CI log line.
ECHOED_CHARS = 200


def echoed(text: str, limit: int = ECHOED_CHARS) -> str:
    """`text` quoted as a message echoes what it was given: as Python's repr (a control,
    invisible or bidi character and a byte that is not UTF-8 escaped, `\\x1b`,
    `\\u202e`), cut after `limit` characters with its length said."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


def _escaped(char: str) -> str:
    byte = escaped_byte(char)
    if byte is not None:  # a byte that is not UTF-8: as that byte, `\xff`
        return f"\\x{byte:02x}"
    return char.encode("unicode_escape").decode("ascii")


_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# What `line_safe` escapes: what UNSHOWN does but a name's undecodable bytes (UNSAFE and
# TAB: the controls, the bidi controls, the line separators, the invisible characters).
_LINE_UNSAFE = re.compile("[\t" + UNSAFE.pattern[1:])


def line_safe(text: str) -> str:
    """`text` with the characters that can start a line, move a terminal's cursor or
    reorder what is read (`_LINE_UNSAFE`) escaped as `printable` escapes them; a name's
    undecodable bytes (held as surrogates, written out as those bytes) kept. For a line
    made of several texts, the last guard before a terminal or a CI log."""
    if _LINE_UNSAFE.search(text) is None:
        return text
    return _LINE_UNSAFE.sub(lambda m: printable(m.group()), text)


def printable(text: str) -> str:
    """`text` with every control, format, separator and unassigned character written as
    `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN`: ESC, CR, LF, bidi overrides and U+2028 can then
    neither start a line nor move a terminal's cursor. Other text, a backslash included,
    stays as it is."""
    out: list[str] = []
    for ch in text:
        if unicodedata.category(ch) not in _ESCAPED_CATEGORIES:
            out.append(ch)
            continue
        n = ord(ch)
        out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "".join(out)
