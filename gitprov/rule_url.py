"""Profile Rule and Upgrade Rule strings: `[options] [scheme://][server[:port]]/path`.

Reference: the vendor's Auto-Provision Overview, sections 2.2 and 4.4, and the SPA
provisioning model's rule syntax it copies. Only the overview's single-URL form
is accepted; the SPA scripting extras are refused with a message, because Flying Voice
firmware is not documented to run them and a device that ignores half a rule fails
silently in the field. Macros in the path and in `--key` are kept as written here; where
a name ends and what it expands to is `gitprov.macros`'s one tokenizer, which validation
(GP111), the compiler and the device emulator share.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

__all__ = [
    "DEFAULT_PORTS",
    "RuleSyntaxError",
    "RuleUrl",
    "authority",
    "format_rule",
    "key_problem",
    "parse_rule",
    "redact_text",
]

DEFAULT_PORTS: dict[str, int] = {"tftp": 69, "http": 80, "https": 443}

_REDACTED = "***"
_OPTION_NAMES = ("--key", "--uid", "--pwd")
_EXAMPLE = "http://prov.example.com/fv$(MAU).conf"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCHEME_WITHOUT_SLASHES = re.compile(r"(tftp|https?):(?!//)", re.IGNORECASE)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]+")
_TYPOGRAPHIC_QUOTES = "‘’‚“”„«»"


class RuleSyntaxError(ValueError):
    """A rule the device would not understand. `offset` is 0-based into the rule text."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


class RuleUrl(NamedTuple):
    """One parsed rule. `host` is "" when the TFTP server comes from DHCP option 66.

    `key` and the path are kept as written, macros unexpanded: the device expands them.
    """

    scheme: str
    host: str
    port: int
    path: str
    key: str | None
    uid: str | None
    pwd: str | None
    explicit_scheme: bool
    # Where the scheme is written other than in lower case (`HTTP://`), else -1: the
    # vendor lists the schemes in lower case (overview 2.2), and a rule gitprov writes
    # keeps them as written (GP110 asks for lower case, as provisioning.url's schema).
    scheme_case_at: int = -1

    def __repr__(self) -> str:
        # Rules end up in logs and tracebacks; the key decrypts every file it guards.
        return (
            f"RuleUrl(scheme={self.scheme!r}, host={self.host!r}, port={self.port!r}, "
            f"path={self.path!r}, key={_redact(self.key)!r}, uid={self.uid!r}, "
            f"pwd={_redact(self.pwd)!r}, explicit_scheme={self.explicit_scheme!r})"
        )

    def __str__(self) -> str:
        return format_rule(self._replace(key=_redact(self.key), pwd=_redact(self.pwd)))


def _redact(secret: str | None) -> str | None:
    return None if secret is None else _REDACTED


# In any text that may hold a rule, even one that does not parse: the value after --key
# or --pwd, and the password of a URL's user:password@.
_SECRET_OPTION = re.compile(r"(--(?:key|pwd)(?:\s+|=))[^\s\]]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^/@\s\]]*?:)[^/@\s\]]*(@)")


def redact_text(text: str) -> str:
    """`text` with every key and password a rule could carry shown as ***: a message
    quotes a rule that failed its check, and a CI log is no place for either."""
    if "--" not in text and "@" not in text:
        return text
    text = _SECRET_OPTION.sub(lambda m: m.group(1) + _REDACTED, text)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + _REDACTED + m.group(2), text)


# Characters no URL carries unencoded (`|` is refused before, as the SPA's separator of
# alternative URLs).
_NOT_IN_A_URL = frozenset('"<>\\^`{}[]')


_OPTIONS = re.compile(r"\s*(?:\[[^\]]*\]\s*)?")
_SCHEME_WRITTEN = re.compile(r"([A-Za-z]+)://")


def canonical_rule(text: str) -> str:
    """`text` as gitprov writes a rule it takes from a device's own file (`gitprov
    import`): the scheme in lower case (`HTTP://`), and the characters no URL carries
    unencoded percent-encoded in the path (`{`, `[`): the URL a server reads alike,
    in the form GP110 asks of one written in the inventory."""
    at = _OPTIONS.match(text).end()  # type: ignore[union-attr]
    scheme = _SCHEME_WRITTEN.match(text, at)
    if scheme is not None:
        text = text[:at] + scheme[1].lower() + text[scheme.start() + len(scheme[1]) :]
        at = scheme.end()
    slash = text.find("/", at)
    if slash < 0:
        return text
    path = "".join(f"%{ord(c):02X}" if c in _NOT_IN_A_URL else c for c in text[slash:])
    return text[:slash] + path


def url_base(url: str) -> str:
    """`url` without the slashes that end it, its `scheme://` kept whole: a base URL with
    no server (`tftp://`: the one DHCP option 66 names, vendor overview 2.2) stays one,
    where stripping every slash made `tftp:` of it."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rstrip("/") if sep else url.rstrip("/")


def joined(url: str, name: str) -> str:
    """The URL of file `name` in the directory base URL `url` names."""
    return url_base(url) + "/" + name


def parse_rule(text: str) -> RuleUrl:
    """Parse one rule; raise `RuleSyntaxError` saying what is wrong and what to write.

    Whitespace around the rule and between the option bracket and the URL is ignored.
    Scheme names are case-insensitive and stored in lower case.
    """
    if not text.strip():
        raise RuleSyntaxError(0, f"the rule is empty; write a URL such as {_EXAMPLE}")
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    _refuse_control_characters(text, start, end)
    _refuse_spa_condition(text, start)

    options: dict[str, str] = {}
    pos = start
    if _opens_options(text, pos, end):
        options, pos = _parse_options(text, pos, end)
        pos = _skip_space(text, pos, end)
        if pos == end:
            raise RuleSyntaxError(
                pos, f"the options are not followed by a URL; write one, e.g. [...]{_EXAMPLE}"
            )
        if _opens_options(text, pos, end):
            raise RuleSyntaxError(
                pos, "options go in one bracket; write [--key KEY --uid USER --pwd PASS]URL"
            )
        _refuse_spa_condition(text, pos)

    url = _parse_url(text, pos, end)
    url = url._replace(key=options.get("--key"), uid=options.get("--uid"), pwd=options.get("--pwd"))
    if url.scheme == "tftp" and (url.uid is not None or url.pwd is not None):
        raise RuleSyntaxError(
            start, "TFTP has no authentication; drop --uid/--pwd or use http:// or https://"
        )
    if url.pwd is not None and url.uid is None:
        raise RuleSyntaxError(start, "--pwd without --uid; write [--uid USER --pwd PASS]")
    return url


_PLAIN_KEY = re.compile(r"[A-Za-z0-9]+")


def key_problem(key: str) -> str | None:
    """Why `key`, written bare as the `[--key KEY]` of a rule, would not reach the device
    as KEY, or None. Never names the key.

    The device expands macros in `--key` (`$$` is one `$`, the overview, section 3, and
    the SPA model; docs/device-checklist.md, E5) and the option ends at whitespace or
    `]`; quoting is SPA usage the overview does not show. A key the rule cannot carry
    literally would make the device decrypt its next file with another key, and stay on
    it.
    """
    if _PLAIN_KEY.fullmatch(key):
        return None  # (every derived key: a fleet's worth of them, parsed for nothing)
    if "$" in key:
        return "it holds '$', which starts a macro the device expands"
    if "'" in key or '"' in key:
        # (a quote inside reads as itself to gitprov's parser; to a device's, which may
        # quote as SPA firmware does, perhaps not: never a key to bet a device on)
        return "it holds a quote, which the device may read as quoting"
    try:
        parsed = parse_rule(f"[--key {key}]/f")
    except RuleSyntaxError:
        # Not the parser's message: it quotes the text, and so the key.
        return "whitespace, ']', a quote or a leading '--' would end or break the option"
    if parsed.key != key:
        return "the rule would carry another key (leading or trailing whitespace?)"
    return None


def _refuse_control_characters(text: str, start: int, end: int) -> None:
    for pos in range(start, end):
        char = text[pos]
        if (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            raise RuleSyntaxError(
                pos, f"control character U+{ord(char):04X}; a rule is one line of text"
            )


def _refuse_spa_condition(text: str, pos: int) -> None:
    if text.startswith("(", pos):
        raise RuleSyntaxError(
            pos,
            "SPA conditions '( ... )?' and assignments '( ... )!' are not supported by "
            "Flying Voice firmware (vendor Auto-Provision Overview, 2.2); write a plain "
            "[options] URL and decide per device in the inventory instead",
        )


def _skip_space(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos].isspace():
        pos += 1
    return pos


def _opens_options(text: str, pos: int, end: int) -> bool:
    # `[` also opens an IPv6 host in a scheme-less URL; options always start with `-`.
    if not text.startswith("[", pos):
        return False
    inner = _skip_space(text, pos + 1, end)
    return inner == end or text[inner] in "-]"


def _parse_options(text: str, bracket: int, end: int) -> tuple[dict[str, str], int]:
    options: dict[str, str] = {}
    pos = bracket + 1
    while True:
        pos = _skip_space(text, pos, end)
        if pos == end:
            raise RuleSyntaxError(
                bracket, "the option bracket is not closed; write ']' before the URL"
            )
        if text[pos] == "]":
            return options, pos + 1
        name_at = pos
        name, pos = _read_word(text, pos, end)
        spelled_with_equals = name.partition("=")[0]
        if spelled_with_equals in _OPTION_NAMES and spelled_with_equals != name:
            raise RuleSyntaxError(
                name_at, f"write {spelled_with_equals} VALUE with a space, not '='"
            )
        if not name.startswith("-"):
            raise RuleSyntaxError(
                name_at,
                f"{name!r} is not an option; close the option bracket with ']' before the "
                "URL, or quote a value that holds spaces",
            )
        if name not in _OPTION_NAMES:
            raise RuleSyntaxError(
                name_at,
                f"unknown option {name!r}; Flying Voice rules take --key, --uid and --pwd",
            )
        if name in options:
            raise RuleSyntaxError(name_at, f"{name} is given twice; keep one")
        pos = _skip_space(text, pos, end)
        options[name], pos = _read_value(text, name, name_at, pos, end)


def _read_word(text: str, pos: int, end: int) -> tuple[str, int]:
    stop = pos
    while stop < end and not text[stop].isspace() and text[stop] != "]":
        stop += 1
    return text[pos:stop], stop


def _read_value(text: str, name: str, name_at: int, pos: int, end: int) -> tuple[str, int]:
    if pos == end or text[pos] == "]":
        raise RuleSyntaxError(name_at, f"{name} needs a value; write {name} VALUE")
    quote = text[pos]
    if quote in _TYPOGRAPHIC_QUOTES:
        raise RuleSyntaxError(
            pos, f"typographic quote {quote!r}; quote the value with ' or \" instead"
        )
    if quote in "'\"":
        close = text.find(quote, pos + 1, end)
        if close < 0:
            raise RuleSyntaxError(pos, f"unterminated {quote} quote; close it before ']'")
        after = close + 1
        if after < end and not text[after].isspace() and text[after] != "]":
            raise RuleSyntaxError(
                after, f"text right after a quoted value; put it inside the {quote} quotes"
            )
        value = text[pos + 1 : close]
    else:
        value, after = _read_word(text, pos, end)
        if value.startswith("--"):
            raise RuleSyntaxError(name_at, f"{name} needs a value; write {name} VALUE")
    if not value:
        raise RuleSyntaxError(pos, f"{name} has an empty value; give a value or remove {name}")
    return value, after


def _parse_url(text: str, start: int, end: int) -> RuleUrl:
    for pos in range(start, end):
        if text[pos] == "|":
            raise RuleSyntaxError(
                pos,
                "alternative URLs separated by '|' are an SPA extension, not supported by "
                "Flying Voice firmware (vendor Auto-Provision Overview, 2.2); write one URL",
            )
    for pos in range(start, end):
        if text[pos].isspace():
            raise RuleSyntaxError(
                pos, "whitespace inside the URL; remove it or write it as %20 in the path"
            )

    scheme_match = _SCHEME.match(text, start, end)
    if scheme_match is not None:
        written = scheme_match[1]
        scheme = written.lower()
        if scheme not in DEFAULT_PORTS:
            raise RuleSyntaxError(
                start, f"unsupported scheme {written!r}; write tftp://, http:// or https://"
            )
        case_at = start if written != scheme else -1
        authority_start = scheme_match.end()
    else:
        missing = _SCHEME_WITHOUT_SLASHES.match(text, start, end)
        if missing is not None:
            raise RuleSyntaxError(missing.end(), f"write {missing[1].lower()}:// with two slashes")
        scheme = "tftp"
        authority_start = start
        case_at = -1

    slash = text.find("/", authority_start, end)
    if slash < 0:
        raise RuleSyntaxError(
            end, f"the rule needs a file path starting with '/'; write e.g. {_EXAMPLE}"
        )
    host, port = _parse_authority(text, scheme, authority_start, slash)
    path = text[slash:end]
    if scheme_match is None and path.startswith("//"):
        raise RuleSyntaxError(
            start, "a URL starting with '//' has no scheme; write tftp://SERVER/PATH"
        )
    if path.endswith("/"):
        raise RuleSyntaxError(
            end - 1, "the path ends with '/' and names no file; write the file name after it"
        )
    for pos in range(slash, end):
        if text[pos] in _NOT_IN_A_URL:
            # RFC 3986 has them in no URL unencoded: a server, or the device, reads another
            # path (GP107 refuses them in a published name for the same reason).
            raise RuleSyntaxError(
                pos,
                f"{text[pos]!r} cannot stand in a URL as it is; write it percent-encoded "
                f"(%{ord(text[pos]):02X}) or leave it out",
            )
    return RuleUrl(
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        key=None,
        uid=None,
        pwd=None,
        explicit_scheme=scheme_match is not None,
        scheme_case_at=case_at,
    )


def _parse_authority(text: str, scheme: str, start: int, end: int) -> tuple[str, int]:
    at = text.find("@", start, end)
    if at >= 0:
        raise RuleSyntaxError(
            at, "user names in the URL are not supported; write [--uid USER --pwd PASS]URL"
        )
    dollar = text.find("$", start, end)
    if dollar >= 0:
        raise RuleSyntaxError(
            dollar, "the server must be written literally; macros expand in the path only"
        )

    if text.startswith("[", start):
        close = text.find("]", start, end)
        if close < 0:
            raise RuleSyntaxError(start, "the IPv6 address is not closed; write [ADDRESS]")
        host = text[start + 1 : close]
        _check_ipv6(host, start + 1)
        port_at = close + 1
        if port_at < end and text[port_at] != ":":
            raise RuleSyntaxError(port_at, "after ']' write ':PORT' or the path")
    else:
        colon = text.find(":", start, end)
        port_at = end if colon < 0 else colon
        host = text[start:port_at]
        if ":" in text[port_at + 1 : end]:
            raise RuleSyntaxError(start, "an IPv6 address must be in brackets: [ADDRESS]")
        _check_host(host, start)

    port = DEFAULT_PORTS[scheme]
    if port_at < end:
        port = _parse_port(text, port_at + 1, end)
        if not host:
            raise RuleSyntaxError(start, "a port without a server; write SERVER:PORT")
    if not host and scheme != "tftp":
        raise RuleSyntaxError(
            start,
            f"{scheme} needs a server (only TFTP takes it from DHCP option 66); "
            f"write {scheme}://SERVER/PATH",
        )
    return host, port


def _check_ipv6(host: str, at: int) -> None:
    # Python accepts a zone (`fe80::1%eth0`); a zone names an interface of *this* host,
    # meaningless in a rule read by a device.
    try:
        if "%" in host:
            raise ValueError(host)
        ipaddress.IPv6Address(host)
    except ValueError:
        raise RuleSyntaxError(at, f"{host!r} is not an IPv6 address") from None


def _check_host(host: str, at: int) -> None:
    if not host:
        return
    labels = host.split(".")
    if _DIGITS.fullmatch(labels[-1]):
        # A name whose last label is all digits is an attempt at an IPv4 address.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise RuleSyntaxError(at, f"{host!r} is not an IPv4 address") from None
        return
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise RuleSyntaxError(
            at,
            f"{host!r} is not a host name; use letters, digits, '-' and '.' only, "
            "or an IPv4 address, or [IPv6]",
        )


def _parse_port(text: str, start: int, end: int) -> int:
    written = text[start:end]
    if not _DIGITS.fullmatch(written):
        raise RuleSyntaxError(start, f"port {written!r} is not a number; write :1 to :65535")
    # Never int() thousands of digits: Python refuses more than 4,300 (a ValueError that is
    # not a RuleSyntaxError), and converting them is quadratic.
    port = int(written) if len(written.lstrip("0")) <= 5 else 65536
    if not 1 <= port <= 65535:
        shown = written if len(written) <= 12 else written[:12] + "…"
        raise RuleSyntaxError(start, f"port {shown} is out of range; write :1 to :65535")
    return port


def format_rule(url: RuleUrl) -> str:
    """Render `url` as a rule; `parse_rule(format_rule(u)) == u` for any parsed `u`.

    Default ports and an implicit scheme are left out; option values are quoted only when
    they must be (whitespace or `]`, a leading quote of any kind or `--`, empty).
    """
    options = [
        f"{name} {_quote(value)}"
        for name, value in (("--key", url.key), ("--uid", url.uid), ("--pwd", url.pwd))
        if value is not None
    ]
    prefix = f"[{' '.join(options)}]" if options else ""
    scheme = f"{url.scheme}://" if url.explicit_scheme or url.scheme != "tftp" else ""
    port = None if url.port == DEFAULT_PORTS.get(url.scheme) else url.port
    return f"{prefix}{scheme}{authority(url.host, port)}{url.path}"


def authority(host: str, port: int | None = None) -> str:
    """`host:port` as a URL (RFC 3986, 3.2.2) and every message that names an address
    spell it: an IPv6 address in brackets, `[::1]:9351`, since `::1:9351` reads as
    another address and no URL parser takes it. Without `port`, the host alone."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def _quote(value: str) -> str:
    needs_quotes = (
        not value
        or value.startswith(("'", '"', "--", *_TYPOGRAPHIC_QUOTES))
        or "]" in value
        or any(c.isspace() for c in value)
    )
    if not needs_quotes:
        return value
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise ValueError("an option value holding both quote characters cannot be written")
