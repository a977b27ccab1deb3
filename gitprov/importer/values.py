"""What the import reads and writes: parameter values as param.conf writes them, layers of
them (`Plan`, `State`), and one device as its input says it must end up (`Device`).

Values are kept as text, the way the device reads them, so that what a file says, what a
layer of the inventory gives and what gitprov would build compare as equal strings; a
secret of the inventory the import cannot read stays `Opaque`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from gitprov.catalog import DBID_PATTERN, Catalog, Param, secret_like
from gitprov.crypto import Mode
from gitprov.inventory import Layer
from gitprov.rule_url import RuleSyntaxError, canonical_rule, parse_rule
from gitprov.yamldoc import SecretRef

DBID = re.compile(DBID_PATTERN)


@dataclass(frozen=True)
class Opaque:
    """A value an existing layer holds as `!secret NAME`: unknown without the private key,
    so it never counts as equal to an imported value."""

    name: str


Val = str | Opaque
Place = tuple[str, int, int]  # an input file (as the user named it), line, column


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


def rendered(value: Any) -> Val:
    # As compile._text writes it.
    if isinstance(value, SecretRef):
        return Opaque(value.name)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def plan_of(layer: Layer, catalog: Catalog) -> Plan:
    plan = Plan()
    for name, value in layer.params.items():
        p = catalog.lookup(name)
        plan.params[p.key if p else name] = None if value is None else rendered(value)
    for slot, item in enumerate(layer.lines):
        if not item:
            continue
        for name, value in item.items():
            p = catalog.lookup_line(name)
            key = p.key if p else name
            plan.lines.setdefault(slot, {})[key] = None if value is None else rendered(value)
    return plan


def default_value(param: Param | None) -> str:
    if param is None or param.default is None:
        return ""
    value = rendered(param.default)
    assert isinstance(value, str)
    return value


def is_secret_key(key: str, catalog: Catalog) -> bool:
    p = catalog.by_key(key)
    if p is not None:
        return p.secret and not p.managed
    return secret_like(key)  # (sealed too: see gitprov.catalog.secret_like)


_VALIDATORS: dict[str, Draft202012Validator] = {}


def taken_rule(text: str) -> tuple[str, str]:
    """(a rule from a device's file as gitprov writes it, "" or why no device reads it):
    in the form GP110 asks (see canonical_rule), the same URL to a server."""
    text = canonical_rule(text)
    try:
        parse_rule(text)
    except RuleSyntaxError as exc:
        return text, f"the rule is not one the device reads: {exc.message}"
    return text, ""


def check_value(param: Param, text: str, *, lenient_bool: bool = False) -> tuple[str, str]:
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
    if param.type == "url" and text:
        text, wrong = taken_rule(text)
        if wrong:
            return text, wrong
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
    # Where the input gives each value, by (DBID key, line slot or -1 for a global): a
    # problem validation finds in what the import would write is reported there.
    at: dict[tuple[str, int], Place] = field(default_factory=dict, repr=False)

    def expected(self) -> dict[str, str]:
        """Every parameter the device's built file must have (Profile Rule and version
        aside), as param.conf writes it."""
        out = dict(self.globals)
        out.update((k, "\t".join(v)) for k, v in self.rows.items())
        return out
