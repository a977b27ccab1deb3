"""What an import writes, and how: device and profile YAML, every secret sealed, the
version_floor edit of gitprov.yaml, secrets.yaml, and the files all written or none.

The YAML is written by hand, not by an emitter, so that every scalar is one that any YAML
reader (1.1 or 1.2) reads back as the very same string, and the files look like what an
operator writes: params by catalog order, one line per value. A value is sealed when the
catalog says it is a secret or its raw key's name says password; the plaintext stays in
memory, for the import's own check.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import re
import secrets as random
from collections.abc import Mapping
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from gitprov import secrets as sec
from gitprov.catalog import Catalog
from gitprov.errors import GitprovError, UsageError
from gitprov.importer.context import Context
from gitprov.importer.values import Device, Opaque, Plan, Val, is_secret_key
from gitprov.inventory import FLEET_FILE
from gitprov.macros import device_variables

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


class Sealer:
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
    seal: Sealer,
) -> str:
    if value is None:
        return "null"
    if isinstance(value, Opaque):
        return f"!secret {value.name}"
    if is_secret_key(key, catalog):
        return "!secret " + seal(secret_name(owner, what), value)
    param = catalog.by_key(key)
    if param is not None and param.type == "bool" and value in ("0", "1"):
        return "true" if value == "1" else "false"
    if param is not None and param.type in ("int", "port", "seconds"):
        return value
    return _scalar(value)


def _layer_yaml(plan: Plan, owner: str, catalog: Catalog, seal: Sealer) -> list[str]:
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


def device_yaml(
    device: Device,
    plan: Plan,
    profile: str | None,
    key_secret: str | None,
    catalog: Catalog,
    seal: Sealer,
) -> bytes:
    name = posixpath.basename(device.source.rstrip("/")) or device.source
    colons = device_variables(device.mac)["MAC"]  # as $(MAC) expands: one colon spelling
    head = [
        # A file name may hold anything but '/' and NUL: a line break would end the comment.
        f"# Imported by `gitprov import` from {name if name.isprintable() else _scalar(name)}.",
        f'mac: "{colons}"',
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


def profile_yaml(
    name: str, plan: Plan, extends: str | None, about: str, catalog: Catalog, seal: Sealer
) -> bytes:
    head = [
        "# Written by `gitprov import`: the values most imported devices share; each",
        "# device file keeps its differences. Rename, merge or split it as you like.",
        f"description: {_scalar(about)}",
    ]
    if extends:
        head.append(f"extends: {_scalar(extends)}")
    return ("\n".join(head + _layer_yaml(plan, name, catalog, seal)) + "\n").encode("utf-8")


def raise_floor(ctx: Context, floor: int) -> bytes:
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


def secrets_yaml(ctx: Context, seal: Sealer) -> bytes:
    merged = {**ctx.sealed, **seal.sealed}
    return sec.dump_secrets_file(sec.SecretsFile(ctx.public_key, merged)).encode("utf-8")


def write_all(top: Path, files: Mapping[str, bytes]) -> None:
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
