"""GP105 duplicate-account: one SIP account registered twice on the same server.

Values are taken after layering (fleet → profile chain → model → device), so an account
set in a profile that several devices use counts once per device. Only enabled lines
register. A server keeps one registration per account: two devices would take turns,
and calls would ring on whichever registered last.

Fails:   devices/a.yaml and devices/b.yaml both with `lines: [{enabled: true, account: "2001"}]`
         and the same `sip.server`
Passes:  the second device uses `account: "2002"`, or another `sip.server`
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterator
from functools import partial
from typing import NamedTuple, cast

from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE
from gitprov.rules import RuleContext, effective, effective_line, get
from gitprov.rules._facts import Member
from gitprov.yamldoc import Document

CODE = "GP105"
NAME = "duplicate-account"

DEFAULT_SIP_PORT = 5060
_MAX_LINES = 16
# ("lines", slot, name) of each account node read: at most _MAX_LINES slots times the
# account's names.
_NODES: dict[tuple[str | int, ...], tuple[str | int, ...]] = {}

Registration = tuple[str, str]  # ("server:port", account)
_Kept = tuple[str, int, str, tuple[str | int, ...], int, int]  # a _Line's fields


class _Line(NamedTuple):
    """An enabled line of a device, with the account it registers and where that is
    written. The index holds it as a plain tuple (`_Kept`): indexes are kept on disk
    between processes, and a named tuple is unpickled by calling its class, one call per
    device line (a bucket at a time, see gitprov.buckets: all of them when a profile
    changes)."""

    device: str  # path
    slot: int
    file: str  # the file that sets the account (the device, or a layer it inherits)
    path: tuple[str | int, ...]  # the account's node in that file
    line: int
    col: int


def _names(ctx: RuleContext, key: str) -> tuple[str, ...]:
    p = ctx.catalog.by_key(key)
    if p is None:
        return (key,)
    return (p.short_name if p.per_line else p.name, key)


def check(ctx: RuleContext) -> Iterator[Problem]:
    names = (
        _names(ctx, "DBID_WEB_SIP_SERVER"),
        _names(ctx, "DBID_WEB_SIP_SERVER_PORT"),
        _names(ctx, "DBID_SIP_ENABLE"),
        _names(ctx, "DBID_SIP_ACCOUNT"),
    )

    def registrations(device: Document) -> tuple[tuple[Registration, _Kept], ...]:
        model = ctx.model_of(device)
        count = get(model.data, "line_count") if model is not None else None
        if not isinstance(count, int) or isinstance(count, bool):
            return ()
        layers = ctx.layers(device)
        key = (NAME, ctx.catalog.digest, *[x for d in layers for x in (d.path, d.oid)])
        return ctx.facts.memo(key, lambda: _registrations(device, layers, count, names))

    def depends(device: Document) -> tuple[str | None, str | None]:
        profile, model = get(device.data, "profile"), get(device.data, "model")
        return (
            profile if isinstance(profile, str) else None,
            model if isinstance(model, str) else None,
        )

    def version(dep: Hashable) -> Hashable:
        # What `_registrations` reads of the layers above a device of that profile and
        # model (`ctx.layers`): a profile change derives again the devices it reaches,
        # and only when it changed what registers (not the codec or the time zone).
        profile, model = cast(tuple[str | None, str | None], dep)
        chain = ctx.profile_chain(profile) if profile is not None else ()
        model_doc = ctx.model_docs.get(model) if model is not None else None
        layers = [ctx.fleet, *chain, model_doc]
        return tuple(
            ctx.facts.memo((NAME, "layer", d.path, d.oid), partial(_read, d, names))
            if d is not None
            else None
            for d in layers
        )

    index = ctx.index(
        NAME, (DEVICE,), ctx.catalog.digest, registrations, depends=depends, version=version
    )
    # Every line but the first to register an account on a server, in device order.
    clashes: list[tuple[Member, Registration, _Line, _Line]] = []
    for registration in index.shared:
        (_, first), *rest = index.members(registration)
        clashes.extend((member, registration, _Line(*line), _Line(*first)) for member, line in rest)
    clashes.sort(key=lambda c: c[0])
    reported: set[tuple[str, tuple[str | int, ...]]] = set()
    for _, (where, account), line, first in clashes:
        origin = (line.file, line.path)
        if origin in reported:
            continue
        reported.add(origin)
        via = "" if line.file == line.device else f" (for {line.device})"
        by = "this device" if first.device == line.device else first.device
        yield error(
            line.file,
            line.line,
            line.col,
            CODE,
            # (the first's SIP line, its slot in `lines:`: not a line of the file)
            f"SIP account {account!r} on {where}{via} is already registered by "
            f"{by}, on its SIP line {first.slot + 1}",
            "a server keeps one registration per account; give each line its own account",
        )


def _read(layer: Document, names: tuple[tuple[str, ...], ...]) -> Hashable:
    """Everything of one layer (fleet, profile or model) that `_registrations` may read:
    its path, `line_count`, the server and port aliases in `params` and the enabled and
    account aliases of each `lines` slot in the order written (the last alias wins),
    with each account's position (a clash is reported there)."""
    server, port, enabled, account = names
    params = get(layer.data, "params")
    read_params = (
        tuple((k, repr(v)) for k, v in params.items() if k in server or k in port)
        if isinstance(params, dict)
        else None
    )
    lines = get(layer.data, "lines")
    read_lines = (
        tuple(
            tuple(
                (k, repr(v), layer.pos(("lines", slot, k)) if k in account else None)
                for k, v in item.items()
                if k in enabled or k in account
            )
            if isinstance(item, dict)
            else None
            for slot, item in enumerate(lines)
        )
        if isinstance(lines, list)
        else None
    )
    return (layer.path, repr(get(layer.data, "line_count")), read_params, read_lines)


def _registrations(
    device: Document,
    layers: list[Document],
    count: int,
    names: tuple[tuple[str, ...], ...],
) -> tuple[tuple[Registration, _Kept], ...]:
    server_names, port_names, enabled_names, account_names = names
    # Slots no layer writes are disabled (the catalog's default); skip them early.
    written = max(
        (len(x) for d in layers if isinstance(x := get(d.data, "lines"), list)), default=0
    )
    if not written:
        return ()
    server = effective(layers, server_names)
    if server is None or not isinstance(server.value, str):
        return ()
    port = effective(layers, port_names)
    port_no = port.value if port is not None and isinstance(port.value, int) else None
    # One str per server and one tuple per account node, not one per device line: the
    # index keeps every registration, and the next process unpickles each object of the
    # buckets it reads.
    where = sys.intern(f"{server.value.lower().rstrip('.')}:{port_no or DEFAULT_SIP_PORT}")
    out = []
    for slot in range(min(count, written, _MAX_LINES)):
        enabled = effective_line(layers, enabled_names, slot)
        if enabled is None or enabled.value not in (True, 1):
            continue
        account = effective_line(layers, account_names, slot)
        if account is None or not isinstance(account.value, str) or not account.value:
            continue
        at = account.pos()
        node = _NODES.setdefault(account.path, account.path)
        line: _Kept = (device.path, slot, account.doc.path, node, *at)
        out.append(((where, account.value), line))
    return tuple(out)
