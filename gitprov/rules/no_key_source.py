"""GP118 no-key-source: device files are to be encrypted, but there is no key to do it.

A device's key is its own `key: !secret NAME`, or derived from `encryption.master_key`
(fleet, or the model's `encryption:`). With neither, the file could not be encrypted;
publishing it in plaintext instead would hand every SIP password to anyone who can guess
a MAC. Encryption is on unless `mode: none` (the default mode is openssl-md5).

Fails:   gitprov.yaml `encryption: {mode: openssl-md5}` and devices without `key:`
Passes:  `encryption: {mode: openssl-md5, master_key: !secret fleet_master_key}`
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE
from gitprov.rules import RuleContext, error_at, get
from gitprov.rules._facts import Member
from gitprov.yamldoc import Document

CODE = "GP118"
NAME = "no-key-source"

DEFAULT_MODE = "openssl-md5"


def _setting(enc: Any, name: str) -> Any:
    return enc.get(name) if isinstance(enc, dict) else None


def _model_and_key(
    device: Document,
) -> Iterator[tuple[tuple[str | None, bool], tuple[int, int]]]:
    """(model name, has a key of its own) -> where the device's file starts."""
    model = get(device.data, "model")
    has_key = get(device.data, "key") is not None
    yield (model if isinstance(model, str) else None, has_key), device.pos(())


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None:
        return
    fleet_enc = get(fleet.data, "encryption")
    keyless: list[tuple[Member, tuple[int, int]]] = []
    needing = 0
    index = ctx.index(NAME, (DEVICE,), (), _model_and_key)
    for name, has_key in list(index.keys()):
        model = ctx.model_docs.get(name) if name is not None else None
        model_enc = get(model.data, "encryption") if model is not None else None
        mode = _setting(model_enc, "mode") or _setting(fleet_enc, "mode") or DEFAULT_MODE
        if mode == "none":
            continue
        needing += index.count((name, has_key))
        master = _setting(model_enc, "master_key") or _setting(fleet_enc, "master_key")
        if master is None and not has_key:
            keyless.extend(index.members((name, has_key)))
    if not keyless:
        return
    if len(keyless) == needing and needing > 1:
        path: tuple[str, ...] = ("encryption", "mode") if fleet_enc else ()
        yield error_at(
            fleet,
            path,
            CODE,
            f"device files are encrypted, but none of the {needing} devices has a key",
            "add `master_key: !secret NAME` under encryption (each device's key is derived "
            "from it), or set `mode: none` to publish plaintext on purpose",
        )
        return
    for (file, _), (line, col) in sorted(keyless):
        yield error(
            file,
            line,
            col,
            CODE,
            "this device's file is encrypted, but it has no key and there is no master_key",
            "add `key: !secret NAME` to the device, or `master_key:` under encryption",
        )
