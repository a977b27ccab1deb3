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

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import Found, RuleContext, effective, effective_line, get

CODE = "GP105"
NAME = "duplicate-account"

DEFAULT_SIP_PORT = 5060
_MAX_LINES = 16


def _names(ctx: RuleContext, key: str) -> tuple[str, ...]:
    p = ctx.catalog.by_key(key)
    if p is None:
        return (key,)
    return (p.short_name if p.per_line else p.name, key)


def check(ctx: RuleContext) -> Iterator[Problem]:
    server_names = _names(ctx, "DBID_WEB_SIP_SERVER")
    port_names = _names(ctx, "DBID_WEB_SIP_SERVER_PORT")
    enabled_names = _names(ctx, "DBID_SIP_ENABLE")
    account_names = _names(ctx, "DBID_SIP_ACCOUNT")
    first: dict[tuple[str, str], tuple[Found, int, str]] = {}
    reported: set[tuple[str, tuple[str | int, ...]]] = set()
    for device in ctx.devices:
        model = ctx.model_of(device)
        count = get(model.data, "line_count") if model is not None else None
        if not isinstance(count, int) or isinstance(count, bool):
            continue
        layers = ctx.layers(device)
        # Slots no layer writes are disabled (the catalog's default); skip them early.
        written = max(
            (len(x) for d in layers if isinstance(x := get(d.data, "lines"), list)), default=0
        )
        if not written:
            continue
        server = effective(layers, server_names)
        if server is None or not isinstance(server.value, str):
            continue
        port = effective(layers, port_names)
        port_no = port.value if port is not None and isinstance(port.value, int) else None
        where = f"{server.value.lower().rstrip('.')}:{port_no or DEFAULT_SIP_PORT}"
        for slot in range(min(count, written, _MAX_LINES)):
            enabled = effective_line(layers, enabled_names, slot)
            if enabled is None or enabled.value not in (True, 1):
                continue
            account = effective_line(layers, account_names, slot)
            if account is None or not isinstance(account.value, str) or not account.value:
                continue
            key = (where, account.value)
            if key not in first:
                first[key] = (account, slot, device.path)
                continue
            origin = (account.doc.path, account.path)
            if origin in reported:
                continue
            reported.add(origin)
            _, other_slot, other_device = first[key]
            line, col = account.pos()
            via = "" if account.doc is device else f" (for {device.path})"
            by = "this device" if other_device == device.path else other_device
            yield error(
                account.doc.path,
                line,
                col,
                CODE,
                f"SIP account {account.value!r} on {where}{via} is already registered by "
                f"{by}, line {other_slot + 1}",
                "a server keeps one registration per account; give each line its own account",
            )
