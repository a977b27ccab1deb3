"""Layers → per-device parameters with provenance.

Order: fleet → profile chain (base first) → model → device; a later layer wins, and a
`null` value unsets what an earlier layer set. Secrets are resolved through a callback, so
the same code yields the redacted view (plans, versions) and the real one (publish).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gitprov.catalog import Catalog, Param
from gitprov.crypto import Cipher, Mode, derive_device_key
from gitprov.inventory import Device, Inventory, Layer
from gitprov.macros import device_variables, expand
from gitprov.yamldoc import SecretRef

SecretResolver = Callable[[str], str]
REDACTED = "<redacted>"


@dataclass(frozen=True, order=True)
class Origin:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Entry:
    key: str
    value: str  # as written into param.conf; per-line values joined by TAB
    secret: bool
    origins: tuple[Origin | None, ...]  # one per value (per line slot for per-line keys)

    @property
    def redacted(self) -> str:
        """The value as plans, `show` and logs may print it."""
        if not self.secret:
            return self.value
        if self.key == "DBID_PROFILE_RULE" and self.value.startswith("[--key "):
            return "[--key " + REDACTED + self.value[self.value.index("]") :]
        # Keep the TAB structure of per-line values visible, hide every non-empty field.
        return "\t".join(REDACTED if part else "" for part in self.value.split("\t"))


@dataclass(frozen=True)
class DeviceConfig:
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
    return str(value)


def _is_secret(value: Any, param: Param | None) -> bool:
    return isinstance(value, SecretRef) or bool(param and param.secret)


def variables_for(device: Device, inv: Inventory) -> dict[str, str]:
    model = inv.models[device.model]
    return device_variables(device.mac, product_name=model.product_name, serial=device.serial)


def file_name_for(device: Device, inv: Inventory) -> str:
    return expand(inv.fleet.file_name, variables_for(device, inv))


def compile_device(
    device: Device, inv: Inventory, catalog: Catalog, resolve: SecretResolver
) -> DeviceConfig:
    model = inv.models[device.model]
    layers: list[Layer] = [inv.fleet.layer]
    layers += [p.layer for p in inv.profile_chain(device.profile)]
    layers += [model.layer, device.layer]

    # Global parameters: DBID key -> (value, origin, secret)
    merged: dict[str, tuple[Any, Origin, bool]] = {}
    # Per-line parameters: DBID key -> slot -> (value, origin, secret)
    per_line: dict[str, dict[int, tuple[Any, Origin, bool]]] = {}
    for layer in layers:
        doc = layer.doc
        for name, value in layer.params.items():
            param = catalog.lookup(name)
            dbid = param.key if param else name
            if value is None:
                merged.pop(dbid, None)
                continue
            line, col = doc.pos(("params", name))
            merged[dbid] = (value, Origin(doc.path, line, col), _is_secret(value, param))
        for slot, item in enumerate(layer.lines):
            if slot >= model.line_count or not item:
                continue
            for name, value in item.items():
                param = catalog.lookup_line(name)
                slots = per_line.setdefault(param.key if param else name, {})
                if value is None:
                    slots.pop(slot, None)
                    continue
                line, col = doc.pos(("lines", slot, name))
                slots[slot] = (value, Origin(doc.path, line, col), _is_secret(value, param))

    file_name = file_name_for(device, inv)
    enc = inv.fleet.encryption.merged(model.encryption)
    cipher = Cipher(Mode(enc.mode), enc.iterations, enc.gzip)
    passphrase: str | None = None
    if cipher.mode is not Mode.NONE:
        if device.key is not None:
            passphrase = resolve(device.key.name)
        elif enc.master_key is not None:
            passphrase = derive_device_key(resolve(enc.master_key.name), device.mac)

    entries: list[Entry] = []
    for k, (value, origin, secret) in merged.items():
        entries.append(Entry(k, _text(value, resolve), secret, (origin,)))
    for k, slots in per_line.items():
        if not slots:
            continue
        param = catalog.by_key(k)
        default = "" if param is None or param.default is None else _text(param.default, resolve)
        values: list[str] = []
        origins: list[Origin | None] = []
        secret = bool(param and param.secret)
        for slot in range(model.line_count):
            if slot in slots:
                value, origin, sec = slots[slot]
                values.append(_text(value, resolve))
                origins.append(origin)
                secret = secret or sec
            else:
                values.append(default)
                origins.append(None)
        entries.append(Entry(k, "\t".join(values), secret, tuple(origins)))
    if inv.fleet.provisioning_url:
        url = inv.fleet.provisioning_url.rstrip("/") + "/" + file_name
        rule = f"[--key {passphrase}]{url}" if passphrase else url
        fdoc = inv.fleet.doc
        line, col = fdoc.pos(("provisioning", "url"))
        origin = Origin(fdoc.path, line, col)
        entries.append(Entry("DBID_PROFILE_RULE", rule, passphrase is not None, (origin,)))
    entries.sort(key=lambda e: catalog.sort_key(e.key))
    previous = None
    if enc.previous_file_name:
        old_key = passphrase
        if cipher.mode is not Mode.NONE:
            if device.previous_key is not None:
                old_key = resolve(device.previous_key.name)
            elif enc.previous_master_key is not None:
                old_key = derive_device_key(resolve(enc.previous_master_key.name), device.mac)
        previous = (expand(enc.previous_file_name, variables_for(device, inv)), old_key)
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


def compile_all(
    inv: Inventory, catalog: Catalog, resolve: SecretResolver
) -> dict[str, DeviceConfig]:
    return {d.mac: compile_device(d, inv, catalog, resolve) for d in inv.devices}


def placeholder_resolver(sealed: Mapping[str, str]) -> SecretResolver:
    """Stands a secret in by a digest of its sealed text: changes when the secret is
    re-sealed, reveals nothing, and needs no private key (plans, versions, CI)."""
    from gitprov.secrets import sealed_digest

    def resolve(name: str) -> str:
        sealed_text = sealed.get(name, "")
        return f"<secret:{name}:{sealed_digest(sealed_text) if sealed_text else 'missing'}>"

    return resolve
