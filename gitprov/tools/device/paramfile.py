"""The strict param.conf parser: what the device's firmware accepts as a DBID file."""

from __future__ import annotations

import re

from gitprov.errors import GitprovError
from gitprov.tools.device.settings import VERSION_KEY

__all__ = ["ParamFileError", "parse_param_file", "version_number"]


class ParamFileError(GitprovError):
    """Bytes that are not a strict param.conf. The message never quotes file content:
    it may be a secret, or garbage from a wrong key."""


_NAME = re.compile(r"DBID_[A-Z0-9_]+")
# TAB separates per-line values; any other control character means garbage.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_param_file(data: bytes) -> dict[str, str]:
    """Every line `DBID_NAME=value`, UTF-8, LF-terminated (the last LF optional).

    Stricter than `formats.flyingvoice.parse` on purpose: no blank lines, no CR, no
    control characters but TAB, no key twice, and `DBID_DBASE_VERSION` present as a
    decimal number, as the firmware's parser would refuse it. (A wrong key's garbage,
    which passes CBC's padding check about 1 time in 256, is told apart before this:
    `gitprov.paramconf.is_param_file`, and the resync is decrypt-failed.)
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamFileError(f"not UTF-8 (byte {exc.start})") from None
    if not text:
        raise ParamFileError("the file is empty")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        name, sep, value = line.partition("=")
        if not sep or not _NAME.fullmatch(name):
            raise ParamFileError(f"line {number} is not DBID_NAME=value")
        if _CONTROL.search(value):
            raise ParamFileError(f"line {number} ({name}) holds a control character")
        if name in out:
            raise ParamFileError(f"line {number}: {name} is given twice")
        out[name] = value
    version = out.get(VERSION_KEY)
    if version is None:
        raise ParamFileError(f"no {VERSION_KEY} line")
    if version_number(version) is None:
        raise ParamFileError(f"{VERSION_KEY} is not a decimal number")
    return out


def version_number(text: str | None) -> int | None:
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)
