"""Device-side macro expansion, as the Flying Voice firmware does it in rules and `--key`.

Reference: the vendor's Auto-Provision Overview, section 3 "Macro expansion", and the
SPA provisioning model it copies (its macro names are in `KNOWN`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple, TypeAlias

__all__ = [
    "KNOWN",
    "OVERVIEW",
    "device_variables",
    "escape",
    "expand",
    "malformed_references",
    "normalise_mac",
    "unknown_names",
]

# The overview's list (section 3): "the variables available for macro substitution are
# MA, MAU, MAC, PN, SN, IP, SWVER and HWVER". The SPA family's others are assumed known
# to the device's expansion (`KNOWN`), but a template that counts on one gets a warning.
OVERVIEW = frozenset({"MA", "MAU", "MAC", "PN", "SN", "IP", "SWVER", "HWVER"})
_SPA_GENERAL_PURPOSE = frozenset(chr(c) for c in range(ord("A"), ord("P") + 1))
# SA..SD are only meaningful inside `--key`; they are still names the device recognises.
_SPA_SECRETS = frozenset({"SA", "SB", "SC", "SD"})
_SPA_STATE = frozenset(
    {
        "PSN",
        "EXTIP",
        "CCERT",
        "PRVST",
        "UPGST",
        "UPGERR",
        "SCHEME",
        "SERV",
        "SERVIP",
        "PORT",
        "PATH",
        "ERR",
    }
)

KNOWN: frozenset[str] = OVERVIEW | _SPA_GENERAL_PURPOSE | _SPA_SECRETS | _SPA_STATE
"""Every macro name the device recognises (the overview's plus the SPA family's)."""

# A name is letters and digits only: the overview, section 3, "If the variable name is
# immediately followed by an alphanumeric character, enclose the variable name in
# parentheses" -- so a name ends at the first character that is not alphanumeric, and
# `$MA_x.conf` is $MA followed by `_x.conf`. ASCII only: the firmware is C, where
# "alphanumeric" means isalnum() in the C locale.
_BARE_NAME = re.compile(r"[A-Za-z0-9]+")
_PAREN_FORM = re.compile(r"\(([A-Za-z0-9]+)(?::([0-9]+)(?::([0-9]+))?)?\)")
# How far a malformed `$(` reaches, only so that it can be quoted back to the user; a
# macro never spans a path segment, whitespace or another macro.
_MALFORMED_REACH = re.compile(r"\([^)$/\s]*\)?")


class _Reference(NamedTuple):
    start: int
    end: int
    name: str
    offset: int | None
    length: int | None


class _Escape(NamedTuple):
    start: int
    end: int


class _Malformed(NamedTuple):
    start: int
    end: int


_Token: TypeAlias = _Reference | _Escape | _Malformed


def _scan(text: str) -> Iterator[_Token]:
    """Yield the macro tokens of `text` left to right; text between tokens is literal."""
    pos = text.find("$")
    while pos >= 0:
        after = pos + 1
        if text.startswith("$", after):
            yield _Escape(pos, after + 1)
            pos = text.find("$", after + 1)
            continue
        if text.startswith("(", after):
            paren = _PAREN_FORM.match(text, after)
            if paren is None:
                reach = _MALFORMED_REACH.match(text, after)
                end = reach.end() if reach is not None else after + 1
                yield _Malformed(pos, end)
            else:
                end = paren.end()
                yield _Reference(
                    pos,
                    end,
                    paren[1],
                    int(paren[2]) if paren[2] is not None else None,
                    int(paren[3]) if paren[3] is not None else None,
                )
            pos = text.find("$", end)
            continue
        bare = _BARE_NAME.match(text, after)
        if bare is not None:
            yield _Reference(pos, bare.end(), bare[0], None, None)
            pos = text.find("$", bare.end())
            continue
        # `$` before punctuation or at the end is an ordinary character.
        pos = text.find("$", after)


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Expand the macros of `text` with `variables`, the way the device does.

    - `$$` is a literal `$`.
    - `$NAME`: NAME is the *longest* run of ASCII letters and digits after the `$`, and
      it expands only if that whole run is a key of `variables`. So `$MAU.cfg` and
      `$MA_1.cfg` expand (the name ends at `.` and at `_`) but `$MAUconfig` and `$MA1`
      do not: "If the variable name is immediately followed by an alphanumeric
      character, enclose the variable name in parentheses" (the overview, section 3),
      hence `$(MAU)config`. Names are case-sensitive.
    - `$(NAME)` holds letters and digits only, like `$NAME`; anything else between the
      parentheses (`$(MA_X)`, `$( MAU )`) is a malformed form.
    - `$(NAME)`, `$(NAME:p)` (from offset p to the end) and `$(NAME:p:q)` (q characters
      from offset p), 0-based; an offset past the end gives "" and a length past the end
      is cut short.
    - A name that is not in `variables` is left exactly as written, in either form, so is
      a malformed `$(` (such as `$(MAU:x)`), and so is a `$` followed by anything else.
    - Not recursive: an expansion is never scanned again, so a value holding `$MA` is
      inserted as those three characters and `$$MAU` gives `$MAU`.
    """
    pieces: list[str] = []
    pos = 0
    for token in _scan(text):
        pieces.append(text[pos : token.start])
        if isinstance(token, _Escape):
            pieces.append("$")
        elif isinstance(token, _Reference) and token.name in variables:
            pieces.append(_substring(variables[token.name], token.offset, token.length))
        else:
            pieces.append(text[token.start : token.end])
        pos = token.end
    pieces.append(text[pos:])
    return "".join(pieces)


def escape(text: str) -> str:
    """`text` as a rule must spell it so that the device expands it back to `text`.

    A literal name (a published file's, already expanded by gitprov) put into a rule the
    device expands again: `$$` is a literal `$` (the overview, section 3), so a `$` left
    bare would start a macro the device expands (`fv$SN.conf` asks for the serial's file).
    """
    return text.replace("$", "$$")


def _substring(value: str, offset: int | None, length: int | None) -> str:
    if offset is None:
        return value
    if length is None:
        return value[offset:]
    return value[offset : offset + length]


def unknown_names(text: str, variables: Iterable[str]) -> list[tuple[int, str]]:
    """`(offset of the $, name)` of each well-formed reference that `expand` would leave.

    `$$` is an escape, not a reference. Malformed `$(` forms are not names: see
    `malformed_references`.
    """
    present = frozenset(variables)
    return [
        (token.start, token.name)
        for token in _scan(text)
        if isinstance(token, _Reference) and token.name not in present
    ]


def malformed_references(text: str) -> list[tuple[int, str]]:
    """`(offset of the $, text as written)` of each `$(` that is not a valid macro form.

    The device leaves these unexpanded, which is almost never what the author meant
    (`$(MAU:x)`, `$(MAU`, `$( MAU )`), so a rule can point at them.
    """
    return [
        (token.start, text[token.start : token.end])
        for token in _scan(text)
        if isinstance(token, _Malformed)
    ]


def device_variables(
    mac: str,
    *,
    product_name: str = "",
    serial: str = "",
    ip: str = "",
    swver: str = "",
    hwver: str = "",
) -> dict[str, str]:
    """The overview's variables for one device, from a MAC in `normalise_mac` form.

    MA, MAU and MAC are always present. The others are present only when their value is
    non-empty: an unknown value then stays visibly unexpanded (`cfg-$SN.conf`) and
    `unknown_names` reports it, instead of silently producing `cfg-.conf`, a name that
    every device without a serial would share.
    """
    if normalise_mac(mac) != mac:
        raise ValueError(f"MAC must be 12 lower-case hex digits, got {mac!r}")
    found = {
        "MA": mac,
        "MAU": mac.upper(),
        "MAC": ":".join(mac[i : i + 2] for i in range(0, 12, 2)),
    }
    optional = {"PN": product_name, "SN": serial, "IP": ip, "SWVER": swver, "HWVER": hwver}
    found.update((name, value) for name, value in optional.items() if value)
    return found


# One pattern for every spelling: the rules ask for a device's MAC several times each.
_MAC_SPELLINGS = re.compile(
    r"[0-9A-Fa-f]{12}"
    r"|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4}){2}"
)
_SEPARATORS = str.maketrans("", "", ":-.")


def normalise_mac(text: str) -> str | None:
    """12 lower-case hex digits from a common MAC spelling, or None if it is not one.

    Accepted: `0021f2011b19`, `00:21:f2:01:1b:19`, `00-21-F2-01-1B-19`, `0021.f201.1b19`,
    in any letter case, with surrounding whitespace ignored. Mixed separators and
    unpadded groups (`0:21:f2:1:1b:19`) are refused: they are typos more often than not.
    """
    candidate = text.strip()
    if _MAC_SPELLINGS.fullmatch(candidate) is None:
        return None
    return candidate.translate(_SEPARATORS).lower()
