"""`import_conf`: a directory of param.conf files into the inventory.

The run in order: the options and the key and models tables they name; every file read
(read_conf); the key each device keeps; the cipher and names checked; profiles factored
out (factor); the files planned and sealed (write); the inventory validated and every
device built and compared (check); then everything written, or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gitprov import DOCS_URL
from gitprov.app import Progress, Session
from gitprov.crypto import Mode
from gitprov.errors import Problem, UsageError, error, warning
from gitprov.importer.check import check_inventory, cipher_problems, taken, verify
from gitprov.importer.context import Context, FileReport, ImportResult, load_context, target_for
from gitprov.importer.decrypt import AUTO_MODES, Keys
from gitprov.importer.factor import factor
from gitprov.importer.problems import MAC, MODEL, RULE, models_hint, refused
from gitprov.importer.read_conf import FLOOR_MAX, Inputs, read_conf_file
from gitprov.importer.tables import Entry, read_table
from gitprov.importer.values import Device
from gitprov.importer.write import (
    Sealer,
    device_yaml,
    profile_yaml,
    raise_floor,
    secret_name,
    secrets_yaml,
    write_all,
)
from gitprov.inventory import FLEET_FILE, SECRETS_FILE, Inventory
from gitprov.macros import device_variables, expand, unknown_names
from gitprov.rule_url import RuleSyntaxError, key_problem, parse_rule

DEFAULT_THRESHOLD = 50
DEFAULT_PREFIX = "imported"


@dataclass(frozen=True)
class ConfOptions:
    """How `import_conf` reads a directory of param.conf files."""

    source: Path
    model: str | None = None  # the model of every file the models table does not name
    models_file: Path | None = None  # `MAC MODEL` lines
    key: str | None = None  # one key for every encrypted file the key file does not name
    key_file: Path | None = None  # `MAC KEY` lines
    mode: str = "auto"  # auto: openssl-md5, then openssl-sha256
    iterations: int = 10000
    threshold: int = DEFAULT_THRESHOLD
    prefix: str = DEFAULT_PREFIX
    version_floor: int | None = None
    force: bool = False
    dry_run: bool = False


def _inputs(ctx: Context, options: ConfOptions, problems: list[Problem]) -> Inputs:
    if not 50 <= options.threshold <= 99:
        raise UsageError(
            f"--threshold {options.threshold} is out of range",
            hint="50..99: a value goes into a profile when more than that percentage of "
            "the devices share it",
        )
    _check_profile_name(options.prefix)
    if options.model is not None and options.model not in ctx.inv.models:
        raise UsageError(f"no model {options.model!r} in the inventory", hint=models_hint(ctx.inv))
    modes: tuple[Mode, ...] = AUTO_MODES
    if options.mode != "auto":
        try:
            modes = (Mode(options.mode),)
        except ValueError:
            raise UsageError(f"unknown mode {options.mode!r}") from None
    key_table: dict[str, Entry] = {}
    if options.key_file is not None:
        key_table, found = read_table(options.key_file, "key", echo=False)
        problems += found
    default_key, default_from = options.key, "--key"
    if "*" in key_table:
        if options.key is not None:
            raise UsageError(
                "both --key and a `*` line in the key file give a default key",
                hint="keep one of them",
            )
        default_key, default_from = key_table.pop("*").value, "the key file (*)"
    model_table: dict[str, Entry] = {}
    if options.models_file is not None:
        model_table, found = read_table(options.models_file, "model")
        problems += found
        for item in model_table.values():
            if item.value not in ctx.inv.models:
                problems.append(
                    error(
                        str(options.models_file),
                        item.line,
                        item.col,
                        MODEL,
                        f"no model {item.value!r} in the inventory",
                        models_hint(ctx.inv, item.value),
                    )
                )
    default_model = options.model
    if "*" in model_table:
        default_model = model_table.pop("*").value
    return Inputs(
        Keys({m: e.value for m, e in key_table.items()}, default_key, default_from),
        {m: e.value for m, e in model_table.items()},
        default_model,
        modes,
        options.iterations,
    )


def import_conf(
    session: Session, options: ConfOptions, progress: Progress | None = None
) -> ImportResult:
    """Import a directory of param.conf files (see the docstring of gitprov.importer)."""
    ctx = load_context(session)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    inputs = _inputs(ctx, options, problems)
    try:
        entries = sorted(options.source.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise UsageError(
            f"cannot read the directory {options.source}: {exc.strerror}",
            hint="give the directory that holds the param.conf files",
        ) from None
    entries = [e for e in entries if not e.name.startswith(".")]
    reports: list[FileReport] = []
    devices: list[Device] = []
    targets: dict[str, str] = {}  # mac -> where its device file goes
    by_mac: dict[str, Device] = {}
    highest: int | None = None
    for done, entry in enumerate(entries, start=1):
        if progress is not None:
            progress("read", done, len(entries))
        got = read_conf_file(entry, ctx, inputs)
        problems += got.problems
        warnings += got.warnings
        if got.report is not None:
            reports.append(got.report)
        if got.version is not None:
            highest = max(highest or 0, got.version)
        device = got.device
        if device is None:
            continue
        first = by_mac.get(device.mac)
        if first is not None:
            if first.expected() == device.expected() and first.rule == device.rule:
                why = f"the same device and content as {first.source}"
                reports.append(FileReport(device.source, device.mac, "skipped", why))
            else:
                problems.append(
                    error(
                        device.source,
                        0,
                        0,
                        MAC,
                        f"{device.mac} is also in {first.source}, with other content",
                        "keep the file the device fetches now; move the other away",
                    )
                )
            continue
        by_mac[device.mac] = device
        if device.version is not None:
            highest = max(highest or 0, device.version)
        target, why_not = target_for(ctx, device.mac, options.force)
        if target is None:
            reports.append(FileReport(device.source, device.mac, "skipped", why_not or ""))
            continue
        _device_key(device, ctx.inv, warnings, problems)
        devices.append(device)
        targets[device.mac] = target
    problems += cipher_problems(devices, ctx)
    if problems:
        raise refused(problems + warnings)  # (the warnings too: all of it at once)
    floor = ctx.inv.fleet.version_floor
    new_floor = _new_floor(floor, highest, options.version_floor) if devices else floor

    layout = factor(devices, ctx.inv, ctx.catalog, options.threshold, options.prefix)
    seal = Sealer(ctx.public_key)
    files: dict[str, bytes] = {}
    for name, (plan, extends, about) in layout.profiles.items():
        files[ctx.path("profiles", f"{name}.yaml")] = profile_yaml(
            name, plan, extends, about, ctx.catalog, seal
        )
    key_names = _key_secrets(devices, options.prefix)
    for d in devices:
        key_name = key_names.get(d.mac)
        if key_name is not None and d.key is not None:
            seal(key_name, d.key)
        files[targets[d.mac]] = device_yaml(
            d,
            layout.device_plans[d.mac],
            layout.device_profile[d.model],
            key_name,
            ctx.catalog,
            seal,
        )
    replaced = {targets[d.mac] for d in devices if ctx.inv.device(d.mac) is not None}
    problems += taken(ctx, files, seal, replaced, set(layout.profiles), options.force)
    if problems:
        raise refused(problems + warnings)
    if new_floor != floor:
        files[ctx.path(FLEET_FILE)] = raise_floor(ctx, new_floor)
    if seal.sealed:
        files[ctx.path(SECRETS_FILE)] = secrets_yaml(ctx, seal)
    inv = check_inventory(ctx, files, {targets[d.mac]: d for d in devices})
    warnings += verify(devices, inv, ctx.catalog, seal)
    for d in devices:
        what = [d.model, d.opened.describe() if d.opened else ""]
        if d.mac in key_names:
            what.append("keeps its key")
        action = "replaced" if targets[d.mac] in replaced else "imported"
        detail = ", ".join(w for w in what if w)
        reports.append(FileReport(d.source, d.mac, action, detail, targets[d.mac]))
    if not options.dry_run:
        write_all(session.top, files)
    return ImportResult(
        tuple(sorted(reports, key=lambda r: r.source)),
        tuple(sorted(files)),
        tuple(sorted(layout.profiles)),
        len(seal.sealed),
        (floor, new_floor) if new_floor != floor else None,
        highest,
        tuple(sorted({k for d in devices for k in d.globals if ctx.catalog.by_key(k) is None})),
        tuple(sorted(set(warnings))),
        options.dry_run,
    )


def _new_floor(floor: int, highest: int | None, asked: int | None) -> int:
    """Above the highest version read (and never below the current floor). A device's
    first version from gitprov is version_floor + its number of changes (1 or more), so
    the floor itself is a version no device was given: devices apply the first file, and
    "every version the devices hold is below version_floor" is what a reader can check."""
    need = floor if highest is None else max(floor, highest + 1)
    if asked is None:
        return need
    if asked < need:
        raise UsageError(
            f"--version-floor {asked} is too low",
            hint=f"use {need} or more: above the highest DBID_DBASE_VERSION read, and never "
            "below the current version_floor",
        )
    if asked > FLOOR_MAX:
        raise UsageError(
            f"--version-floor {asked} is too high",
            hint=f"version_floor goes up to {FLOOR_MAX} (the fleet settings' schema)",
        )
    return asked


def _check_profile_name(prefix: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", prefix):
        raise UsageError(
            f"--profile-prefix {prefix!r} is not a profile name",
            hint="letters, digits, '_', '.' and '-'",
        )


def _device_key(
    device: Device, inv: Inventory, warnings: list[Problem], problems: list[Problem]
) -> None:
    """The key the device holds and will hold: its Profile Rule's `--key` (what the next
    file must open with), else the key its file was encrypted with."""
    opened = device.opened
    decrypt_key = opened.key if opened is not None else None
    device.key = decrypt_key
    if device.rule is None:
        return
    line, col = device.rule_at
    try:
        rule = parse_rule(device.rule)
    except RuleSyntaxError as exc:
        # (the parser's message quotes the text: with an option block, maybe the key)
        why = f": {exc.message}" if "[" not in device.rule else " (its options are not shown)"
        warnings.append(
            warning(
                device.source,
                line,
                col + exc.offset,
                RULE,
                f"the Profile Rule does not parse{why}",
                "gitprov writes each device's Profile Rule; this one is replaced",
            )
        )
        return
    if rule.key is None:
        return
    model = inv.models[device.model]
    variables = device_variables(device.mac, product_name=model.product_name)
    if unknown_names(rule.key, variables):
        warnings.append(
            warning(
                device.source,
                line,
                col,
                RULE,
                "the Profile Rule's key uses macros gitprov cannot expand",
                "set this device's `key:` by hand (`gitprov secrets set`)",
            )
        )
        return
    key = expand(rule.key, variables)
    reason = key_problem(key)
    if reason is not None:
        problems.append(
            error(
                device.source,
                line,
                col,
                RULE,
                f"the Profile Rule's key cannot be written into the Profile Rule gitprov "
                f"writes: {reason}",
                "give the device a key of letters and digits first (a rule with the new "
                "key, served by the old server), or leave this file out of the import",
            )
        )
        return
    if re.search(r"[\s\]'\"$]", key):
        warnings.append(
            warning(
                device.source,
                line,
                col,
                RULE,
                "the Profile Rule's key holds a space, quote, ] or $, which "
                "gitprov would write into the new Profile Rule unquoted",
                "after the import, move the device to a derived key "
                f"({DOCS_URL}/keys.md, rotating keys)",
            )
        )
    if decrypt_key is not None and key != decrypt_key:
        warnings.append(
            warning(
                device.source,
                line,
                col,
                RULE,
                "the file is encrypted with another key than its Profile Rule "
                "names (a key change in progress?): the device keeps the "
                "Profile Rule's",
                "check which key the device holds",
            )
        )
    device.key = key


def _key_secrets(devices: Sequence[Device], prefix: str) -> dict[str, str]:
    """Secret names of the devices' own keys: one per key value, so that a key several
    devices share is one secret (and visibly shared)."""
    users: dict[str, list[str]] = {}
    for d in devices:
        if d.key:
            users.setdefault(d.key, []).append(d.mac)
    names: dict[str, str] = {}
    shared = 0
    for macs in sorted(users.values()):
        if len(macs) == 1:
            names[macs[0]] = secret_name(macs[0], "key")
            continue
        shared += 1
        for mac in macs:
            names[mac] = secret_name(prefix, f"shared-key-{shared}")
    return names
