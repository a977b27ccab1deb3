"""GP130 firmware-upgrade: a model's `firmware:` cannot tell its devices to upgrade as
written.

Errors: a `rule:` or `rollout:` while the model binds no key for provision.upgrade_rule
(nothing could carry it); an image to upgrade to without `version:` (the rollout is chosen
by it); no `rule:` and no provisioning.url to derive one from. Warnings: an image that is
published while no device is told to upgrade (no Upgrade Rule key bound), and a
`rollout.macs` entry that is no device of the model.

Fails:   `firmware: {file: G502N_F108.bin, version: v1.0.8, rollout: {percent: 5}}` in a
         model without a binding for provision.upgrade_rule
Passes:  the same with `bindings: {provision.upgrade_rule: {key: DBID_…, source: "…"}}`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.firmware import UPGRADE_RULE
from gitprov.inventory import DEVICE, stem
from gitprov.macros import normalise_mac
from gitprov.rules import RuleContext, error_at, get, warning_at
from gitprov.rules._bindings import model_bindings
from gitprov.yamldoc import Document

CODE = "GP130"
NAME = "firmware-upgrade"

_BIND = (
    f"bind {UPGRADE_RULE} in this file to the key its devices use: bindings: {{{UPGRADE_RULE}: "
    '{key: DBID_…, source: "…"}}, read e.g. from a configuration exported by a device'
)


def check(ctx: RuleContext) -> Iterator[Problem]:
    bindings = model_bindings(ctx)
    fleet = ctx.fleet
    url = get(fleet.data, "provisioning", "url") if fleet is not None else None
    devices = None
    for doc in ctx.models:
        fw = get(doc.data, "firmware")
        if not isinstance(fw, dict):
            continue
        bound = UPGRADE_RULE in bindings[stem(doc.path)]
        if not bound:
            yield from _unbound(doc, fw)
            continue
        if not isinstance(fw.get("file"), str):
            continue
        if not isinstance(fw.get("version"), str):
            yield error_at(
                doc,
                ("firmware",),
                CODE,
                "firmware names an image to upgrade to but not its version",
                'add version: "…", the image\'s software version as the device reports it '
                "($SWVER): the rollout is chosen by it",
            )
        if not isinstance(fw.get("rule"), str) and not isinstance(url, str):
            yield error_at(
                doc,
                ("firmware",),
                CODE,
                "no Upgrade Rule: firmware has no rule and the fleet no provisioning.url",
                "add rule: http://SERVER/FILE (where the image is served)",
            )
        macs = get(fw, "rollout", "macs")
        if isinstance(macs, list):
            if devices is None:
                devices = _devices_by_model(ctx)
            mine = devices.get(stem(doc.path), set())
            for i, raw in enumerate(macs):
                mac = normalise_mac(raw) if isinstance(raw, str) else None
                if mac is not None and mac not in mine:
                    yield warning_at(
                        doc,
                        ("firmware", "rollout", "macs", i),
                        CODE,
                        f"{raw} is no device of model {stem(doc.path)}: it gets no upgrade",
                        "check the MAC and the model: of its device file",
                    )


def _unbound(doc: Document, fw: dict[str, object]) -> Iterator[Problem]:
    given = [k for k in ("rule", "rollout") if k in fw]
    for k in given:
        yield error_at(
            doc,
            ("firmware", k),
            CODE,
            f"firmware.{k}: no device can be told to upgrade, the model binds no key for "
            f"{UPGRADE_RULE}",
            _BIND,
            key=True,
        )
    if not given and isinstance(fw.get("file"), str):
        yield warning_at(
            doc,
            ("firmware", "file"),
            CODE,
            "the image is published, but no device is told to upgrade to it: the model "
            f"binds no key for {UPGRADE_RULE}",
            _BIND,
        )


def _devices_by_model(ctx: RuleContext) -> dict[str, set[str]]:
    def entries(doc: Document) -> Iterator[tuple[str, str]]:
        model, mac = get(doc.data, "model"), ctx.mac_of(doc)
        if isinstance(model, str) and mac is not None:
            yield model, mac

    index = ctx.index(NAME, (DEVICE,), None, entries)
    models: list[str] = list(index.keys())
    return {model: set(index.values(model)) for model in models}
