"""Layers → per-device parameters with provenance.

Order: fleet → profile chain (base first) → model → device; a later layer wins, and a
`null` value unsets what an earlier layer set. Secrets are resolved through a callback, so
the same code yields the redacted view (plans, versions) and the real one (publish).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from gitprov.catalog import Catalog, Param
from gitprov.crypto import Cipher, Mode, derive_device_key
from gitprov.errors import GitprovError
from gitprov.firmware import Upgrade, upgrade_of
from gitprov.inventory import Device, Encryption, Inventory, Layer, Model
from gitprov.macros import device_variables, escape, expand
from gitprov.rule_url import joined, key_problem
from gitprov.yamldoc import Document, SecretRef

SecretResolver = Callable[[str], str]
REDACTED = "<redacted>"


class Origin(NamedTuple):
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Origin("", 0, 0)  # the origin of every value when origins are not asked for


class Entry(NamedTuple):
    key: str
    value: str  # as written into param.conf; per-line values joined by TAB
    secret: bool
    origins: tuple[Origin | None, ...]  # one per value (per line slot for per-line keys)

    @property
    def redacted(self) -> str:
        """The value as plans, `show` and logs may print it."""
        return redact(self.key, self.value) if self.secret else self.value


def redact(key: str, value: str) -> str:
    """A secret entry's value as plans, `show` and logs may print it."""
    if key == "DBID_PROFILE_RULE" and value.startswith("[--key "):
        return "[--key " + REDACTED + value[value.index("]") :]
    # Keep the TAB structure of per-line values visible, hide every non-empty field.
    return "\t".join(REDACTED if part else "" for part in value.split("\t"))


class DeviceConfig(NamedTuple):
    mac: str
    model: str
    family: str
    file_name: str
    entries: tuple[Entry, ...]  # in render order, DBID_DBASE_VERSION excluded
    cipher: Cipher
    key: str | None  # the passphrase for `openssl enc -k`; None when mode is none
    # During a key rotation: the (file name, passphrase) the device fetches and holds now.
    previous: tuple[str, str | None] | None = None

    def get(self, key: str) -> str | None:
        for e in self.entries:
            if e.key == key:
                return e.value
        return None


def _text(value: Any, resolve: SecretResolver) -> str:
    if isinstance(value, SecretRef):
        return resolve(value.name)
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value)
    if MARK in text:
        # Validation refuses control characters; this keeps a symbolic compile's markers
        # the only NULs a body can hold, even if a rule is skipped.
        raise ValueError("refusing to compile a value holding a NUL character")
    return text


def _is_secret(value: Any, param: Param | None) -> bool:
    return isinstance(value, SecretRef) or bool(param and param.secret)


# Symbolic secrets: a compile that stands each secret in by a marker, so one compile and
# one rendering serve the version digest (placeholders), the published file (the real
# values) and the redacted copy. A marker is NUL, a kind, the secret's name, NUL: `s` the
# secret itself, `k` the device key derived from it (for this device's MAC). Values
# never hold a NUL (GP108, and `_text`), so markers cannot be forged by a value.
MARK = "\0"


def symbol(name: str) -> str:
    """The marker of secret `name` (a SecretResolver)."""
    return f"{MARK}s{name}{MARK}"


def derived_symbol(master: str, mac: str) -> str:
    """The marker of the device key derived from the secret whose marker is `master`."""
    if not (master.startswith(MARK + "s") and master.endswith(MARK) and len(master) > 3):
        raise ValueError("a derived key needs a symbolic master secret")
    return f"{MARK}k{master[2:-1]}{MARK}"


def fill(text: str, value: Callable[[str], str]) -> str:
    """`text` with each marker replaced by `value(marker without its NULs)`."""
    if MARK not in text:
        return text
    parts = text.split(MARK)
    for i in range(1, len(parts), 2):
        parts[i] = value(parts[i])
    return "".join(parts)


def require_rule_key(key: str, mac: str, secret: str = "") -> str:
    """`key`, refused with a GitprovError when a Profile Rule cannot carry it as it is.
    `secret`: the name of the secret it is (never its value), for the message."""
    reason = key_problem(key)
    if reason is not None:
        which = f"the secret {secret!r}" if secret else "its key"
        raise GitprovError(
            f"device {mac}: {which} cannot be written into its Profile Rule [--key KEY]: {reason}",
            hint=f"set {secret or 'the key'} to letters and digits"
            + (f" (`gitprov secrets set {secret}`)" if secret else "")
            + ", or derive the device keys from encryption.master_key",
        )
    return key


def secret_of(marker: str) -> str:
    """The secret's name in a key marker of a symbolic compile ("" when it is not one
    secret's: a derived key's)."""
    if marker.startswith(MARK + "s") and marker.endswith(MARK) and marker.count(MARK) == 2:
        return marker[2:-1]
    return ""


def variables_for(device: Device, inv: Inventory) -> dict[str, str]:
    model = inv.models[device.model]
    return device_variables(device.mac, product_name=model.product_name, serial=device.serial)


def file_name_for(device: Device, inv: Inventory) -> str:
    return expand(inv.fleet.file_name, variables_for(device, inv))


# DBID key -> (value, origin, secret); per-line: DBID key -> slot -> (value, origin, secret)
_Global = dict[str, tuple[Any, Origin, bool]]
_PerLine = dict[str, dict[int, tuple[Any, Origin, bool]]]


@dataclass
class _Shared:
    """The layers devices share (fleet, profile chain, model), layered once."""

    merged: _Global
    per_line: _PerLine
    entries: dict[str, Entry]  # of merged and per_line as they are, by DBID key


class Compiler:
    """Compiles the devices of one inventory, layering what devices share (fleet →
    profile chain → model) once per profile and model, and reusing those entries.

    `resolve` gives a secret's text; `derive` a device key from a master secret's text
    and a MAC. `Compiler.symbolic` gives markers for both (see `symbol`)."""

    def __init__(
        self,
        inv: Inventory,
        catalog: Catalog,
        resolve: SecretResolver,
        derive: Callable[[str, str], str] = derive_device_key,
        *,
        origins: bool = True,
    ) -> None:
        self.inv = inv
        self.catalog = catalog
        self.resolve = resolve
        self.derive = derive
        # Without origins every entry's origin is NOWHERE: a build does not need them, and
        # finding each value's line is a good part of compiling a device.
        self.origins = origins
        self._shared: dict[tuple[str | None, str], _Shared] = {}
        self._line_params: dict[str, Param | None] = {}
        self._line_defaults: dict[str, tuple[str, bool]] = {}
        self._order: dict[str, tuple[int, str]] = {}
        self._models: dict[str, tuple[Encryption, Cipher, tuple[Upgrade, _Global] | None]] = {}

    @classmethod
    def symbolic(cls, inv: Inventory, catalog: Catalog, *, origins: bool = True) -> Compiler:
        return cls(inv, catalog, symbol, derived_symbol, origins=origins)

    def _origin(self, doc: Document, path: tuple[str | int, ...]) -> Origin:
        if not self.origins:
            return NOWHERE
        line, col = doc.pos(path)
        return Origin(doc.path, line, col)

    def _layer(self, layer: Layer, model: Model, merged: _Global, per_line: _PerLine) -> None:
        catalog = self.catalog
        doc = layer.doc
        line_count = model.line_count
        for name, value in layer.params.items():
            param = catalog.lookup(name)
            dbid = param.key if param else model.bindings.get(name, name)
            if param is None and dbid == name and catalog.unpublished_named(name):
                continue  # no key for this model (GP116): never written under its name
            if value is None:
                merged.pop(dbid, None)
                continue
            merged[dbid] = (value, self._origin(doc, ("params", name)), _is_secret(value, param))
        for slot, item in enumerate(layer.lines):
            if slot >= line_count or not item:
                continue
            for name, value in item.items():
                if name in self._line_params:
                    param = self._line_params[name]
                else:
                    param = self._line_params[name] = catalog.lookup_line(name)
                key = param.key if param else name
                # Copied before the first change: the dict may be the shared layers'.
                slots = dict(per_line.get(key, ()))
                per_line[key] = slots
                if value is None:
                    slots.pop(slot, None)
                    continue
                origin = self._origin(doc, ("lines", slot, name))
                slots[slot] = (value, origin, _is_secret(value, param))

    def _entry(self, key: str, item: tuple[Any, Origin, bool]) -> Entry:
        value, origin, secret = item
        return Entry(key, _text(value, self.resolve), secret, (origin,))

    def _line_entry(
        self, key: str, slots: dict[int, tuple[Any, Origin, bool]], line_count: int
    ) -> Entry:
        known = self._line_defaults.get(key)
        if known is None:
            param = self.catalog.by_key(key)
            text = (
                "" if param is None or param.default is None else _text(param.default, self.resolve)
            )
            known = self._line_defaults[key] = (text, bool(param and param.secret))
        default, secret = known
        values: list[str] = []
        origins: list[Origin | None] = []
        for slot in range(line_count):
            if slot in slots:
                value, origin, sec = slots[slot]
                values.append(_text(value, self.resolve))
                origins.append(origin)
                secret = secret or sec
            else:
                values.append(default)
                origins.append(None)
        return Entry(key, "\t".join(values), secret, tuple(origins))

    def _of_model(self, model: Model) -> tuple[Encryption, Cipher, tuple[Upgrade, _Global] | None]:
        """What every device of the model shares besides its layers, made once."""
        hit = self._models.get(model.name)
        if hit is None:
            enc = self.inv.fleet.encryption.merged(model.encryption)
            cipher = Cipher(Mode(enc.mode), enc.iterations, enc.gzip)
            hit = self._models[model.name] = (enc, cipher, _upgrade(model, self.inv))
        return hit

    def _shared_layers(self, profile: str | None, model: Model) -> _Shared:
        hit = self._shared.get((profile, model.name))
        if hit is None:
            merged: _Global = {}
            per_line: _PerLine = {}
            layers = [self.inv.fleet.layer]
            layers += [p.layer for p in self.inv.profile_chain(profile)]
            layers.append(model.layer)
            for layer in layers:
                self._layer(layer, model, merged, per_line)
            entries = {k: self._entry(k, item) for k, item in merged.items()}
            for k, slots in per_line.items():
                if slots:
                    entries[k] = self._line_entry(k, slots, model.line_count)
            hit = self._shared[(profile, model.name)] = _Shared(merged, per_line, entries)
        return hit

    def compile(self, device: Device) -> DeviceConfig:
        inv = self.inv
        catalog = self.catalog
        resolve = self.resolve
        model = inv.models[device.model]
        shared = self._shared_layers(device.profile, model)
        merged = dict(shared.merged)
        per_line = dict(shared.per_line)
        self._layer(device.layer, model, merged, per_line)
        enc, cipher, upgrade = self._of_model(model)
        if upgrade is not None and upgrade[0].selects(device.mac):
            merged.update(upgrade[1])

        variables = variables_for(device, inv)
        file_name = expand(inv.fleet.file_name, variables)
        passphrase: str | None = None
        if cipher.mode is not Mode.NONE:
            if device.key is not None:
                passphrase = resolve(device.key.name)
            elif enc.master_key is not None:
                passphrase = self.derive(resolve(enc.master_key.name), device.mac)
            # The device learns its key only from a rule's [--key] (overview, 4.4). A
            # marker (a symbolic compile) is checked when it is filled (gitprov.builder).
            if passphrase is not None and MARK not in passphrase:
                require_rule_key(
                    passphrase, device.mac, device.key.name if device.key is not None else ""
                )

        entries: list[Entry] = []
        known = shared.entries
        for k, item in merged.items():
            hit = known.get(k)
            # The shared layers' entry, unless the device layer set or unset this key.
            entries.append(
                hit if hit is not None and shared.merged.get(k) is item else self._entry(k, item)
            )
        for k, slots in per_line.items():
            if not slots:
                continue
            hit = known.get(k)
            entries.append(
                hit
                if hit is not None and shared.per_line.get(k) is slots
                else self._line_entry(k, slots, model.line_count)
            )
        if inv.fleet.provisioning_url:
            # The file name is already expanded; the device expands the rule again.
            url = joined(inv.fleet.provisioning_url, escape(file_name))
            if MARK in url:
                raise ValueError("refusing to compile a file name holding a NUL character")
            rule = f"[--key {passphrase}]{url}" if passphrase else url
            origin = self._origin(inv.fleet.doc, ("provisioning", "url"))
            entries.append(Entry("DBID_PROFILE_RULE", rule, passphrase is not None, (origin,)))
        order = self._order
        for e in entries:
            if e.key not in order:
                order[e.key] = catalog.sort_key(e.key)
        entries.sort(key=lambda e: order[e.key])
        previous = None
        if enc.previous_file_name:
            old_key = passphrase
            if cipher.mode is not Mode.NONE:
                if device.previous_key is not None:
                    old_key = resolve(device.previous_key.name)
                elif enc.previous_master_key is not None:
                    old_key = self.derive(resolve(enc.previous_master_key.name), device.mac)
            previous = (expand(enc.previous_file_name, variables), old_key)
        return DeviceConfig(
            device.mac,
            model.name,
            model.family,
            file_name,
            tuple(entries),
            cipher,
            passphrase,
            previous,
        )


def compile_device(
    device: Device, inv: Inventory, catalog: Catalog, resolve: SecretResolver
) -> DeviceConfig:
    return Compiler(inv, catalog, resolve).compile(device)


def _upgrade(model: Model, inv: Inventory) -> tuple[Upgrade, _Global] | None:
    """The Upgrade Rule (and Upgrade Enable) of the model's devices its rollout selects,
    under the model's bound keys; they win over what the layers set."""
    up = upgrade_of(model.name, model.firmware, model.bindings, inv.fleet.provisioning_url)
    if up is None:
        return None
    doc = model.doc
    line, col = doc.pos(("firmware", "rule") if "rule" in model.firmware else ("firmware",))
    origin = Origin(doc.path, line, col)
    out: _Global = {up.rule_key: (up.rule, origin, False)}
    if up.enable_key is not None:
        out[up.enable_key] = (True, origin, False)
    return up, out


def compile_all(
    inv: Inventory, catalog: Catalog, resolve: SecretResolver
) -> dict[str, DeviceConfig]:
    compiler = Compiler(inv, catalog, resolve)
    return {d.mac: compiler.compile(d) for d in inv.devices}


def placeholder_resolver(sealed: Mapping[str, str]) -> SecretResolver:
    """Stands a secret in by a digest of its sealed text: changes when the secret is
    re-sealed, reveals nothing, and needs no private key (plans, versions, CI)."""
    from gitprov.secrets import sealed_digest

    def resolve(name: str) -> str:
        sealed_text = sealed.get(name, "")
        return f"<secret:{name}:{sealed_digest(sealed_text) if sealed_text else 'missing'}>"

    return resolve
