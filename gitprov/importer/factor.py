"""Values that most devices share, out of the device files and into profiles.

A value goes into a profile when more than `threshold` percent of the devices (and at
least two) share it; a key most files lack counts as a value too, so a profile can unset
what the fleet layer sets. Each device file then says only how its device differs from
the layers above it, so that every device still builds exactly the parameters its file had.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gitprov.catalog import Catalog
from gitprov.importer.values import Device, Opaque, Plan, State, Val, default_value, plan_of
from gitprov.inventory import Inventory

_ABSENT = Opaque("\x00absent")  # a device's file lacks the key: a vote like any value


def _winner(values: Sequence[Val], threshold: int) -> Val | None:
    """The value more than `threshold` percent (and at least two) of `values` share."""
    if not values:
        return None
    counts = Counter(values)
    value, count = min(counts.items(), key=lambda kv: (-kv[1], repr(kv[0])))
    if count < 2 or count * 100 <= threshold * len(values):
        return None
    return value


def _vote_params(
    devices: Sequence[Device],
    before: State,
    masked: Callable[[Device, str], bool],
    threshold: int,
) -> dict[str, Val | None]:
    keys = sorted({k for d in devices for k in d.globals} | set(before.params))
    out: dict[str, Val | None] = {}
    for key in keys:
        values = [d.globals.get(key, _ABSENT) for d in devices if not masked(d, key)]
        w = _winner(values, threshold)
        had = before.params.get(key)
        if w is None or w == had or (w == _ABSENT and had is None):
            continue
        out[key] = None if w == _ABSENT else w
    return out


def _vote_lines(
    devices: Sequence[Device],
    before: State,
    counts: Mapping[str, int],
    masked: Callable[[Device, str, int], bool],
    catalog: Catalog,
    threshold: int,
) -> dict[int, dict[str, Val | None]]:
    keys = sorted({k for d in devices for k in d.rows} | set(before.lines))
    out: dict[int, dict[str, Val | None]] = {}
    most = max((counts[d.model] for d in devices), default=0)
    for key in keys:
        default = default_value(catalog.by_key(key))
        for slot in range(most):
            voters = [d for d in devices if counts[d.model] > slot and not masked(d, key, slot)]
            values: list[Val] = [d.rows[key][slot] if key in d.rows else _ABSENT for d in voters]
            w = _winner(values, threshold)
            had = before.lines.get(key, {}).get(slot)
            if w is None or w == had:
                continue
            if w == _ABSENT:
                if had is not None:
                    out.setdefault(slot, {})[key] = None
                continue
            if had is None and w == default:
                continue  # the default fills any slot nobody set
            out.setdefault(slot, {})[key] = w
    return out


def _device_layer(device: Device, before: State, line_count: int, catalog: Catalog) -> Plan:
    """What the device file must say on top of `before` to build exactly its file."""
    plan = Plan()
    for key in sorted(set(device.globals) | set(before.params)):
        want, had = device.globals.get(key), before.params.get(key)
        if want is None and had is not None:
            plan.params[key] = None
        elif want is not None and want != had:
            plan.params[key] = want
    for key in sorted(set(device.rows) | set(before.lines)):
        inherited = {s: v for s, v in before.lines.get(key, {}).items() if s < line_count}
        row = device.rows.get(key)
        if row is None:
            for slot in inherited:
                plan.lines.setdefault(slot, {})[key] = None
            continue
        default = default_value(catalog.by_key(key))
        for slot, value in enumerate(row):
            if (slot in inherited and inherited[slot] != value) or (
                slot not in inherited and value != default
            ):
                plan.lines.setdefault(slot, {})[key] = value
        if not inherited and not any(key in plan.lines.get(s, {}) for s in range(line_count)):
            # All slots at the default: some slot must still be set, or the key would
            # not be written at all.
            plan.lines.setdefault(0, {})[key] = row[0]
    return plan


@dataclass(frozen=True)
class Layout:
    """Where each value goes: the profiles, which one each model's devices use, and each
    device's own layer."""

    profiles: dict[str, tuple[Plan, str | None, str]]  # name -> plan, extends, description
    device_profile: dict[str, str | None]  # model -> profile its devices use
    device_plans: dict[str, Plan]  # mac -> device layer


def factor(
    devices: Sequence[Device],
    inv: Inventory,
    catalog: Catalog,
    threshold: int,
    prefix: str,
) -> Layout:
    """Profiles for what most devices share — `prefix` over all devices, `prefix-MODEL`
    over each model's — and each device's differences, on top of the fleet layer and
    under the model layer, as gitprov layers them."""
    fleet = State().then(plan_of(inv.fleet.layer, catalog))
    model_plans = {m: plan_of(model.layer, catalog) for m, model in inv.models.items()}
    counts = {m: model.line_count for m, model in inv.models.items()}

    def masked(d: Device, key: str) -> bool:
        return key in model_plans[d.model].params

    def masked_line(d: Device, key: str, slot: int) -> bool:
        return key in model_plans[d.model].lines.get(slot, {})

    models = sorted({d.model for d in devices})
    top = Plan()
    if len(models) > 1:
        top.params = _vote_params(devices, fleet, masked, threshold)
        top.lines = _vote_lines(devices, fleet, counts, masked_line, catalog, threshold)
    after_top = fleet.then(top)
    profiles: dict[str, tuple[Plan, str | None, str]] = {}
    if top:
        profiles[prefix] = (top, None, "What most imported devices share")
    device_profile: dict[str, str | None] = {}
    plans: dict[str, Plan] = {}
    for model in models:
        group = [d for d in devices if d.model == model]
        own = Plan(
            _vote_params(group, after_top, masked, threshold),
            _vote_lines(group, after_top, counts, masked_line, catalog, threshold),
        )
        name: str | None = prefix if top else None
        if own:
            name = prefix if len(models) == 1 else f"{prefix}-{model}"
            extends = prefix if top else None
            profiles[name] = (own, extends, f"What most imported {model} devices share")
        device_profile[model] = name
        before = after_top.then(own).then(model_plans[model])
        for d in group:
            plans[d.mac] = _device_layer(d, before, counts[model], catalog)
    return Layout(profiles, device_profile, plans)
