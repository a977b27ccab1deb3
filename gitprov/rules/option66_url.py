"""GP302 option66-url: `publish.option66` is on without `provisioning.url`.

Fails:   `publish: {option66: true}` and no `provisioning: {url: ...}`
Passes:  both set, or `option66` off

The bootstrap file a DHCP option 66 hands a new device points it to URL/FILE: without
the URL a publish cannot write it.
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.rules import RuleContext, get

CODE = "GP302"
NAME = "option66-url"


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None:
        return
    option66 = get(fleet.data, "publish", "option66")
    if option66 in (None, False, []) or get(fleet.data, "provisioning", "url"):
        return
    line, col = fleet.pos(("publish", "option66"))
    yield error(
        fleet.path,
        line,
        col,
        CODE,
        "publish.option66 needs provisioning.url: the bootstrap file points devices to URL/FILE",
        "set provisioning.url, or turn publish.option66 off",
    )
