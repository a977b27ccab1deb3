"""Everything an import checks once its files are planned, before it writes any.

- the cipher: devices read one, so files encrypted otherwise than gitprov would write for
  their model refuse the import;
- names: a profile or a secret the import would write that the inventory already uses for
  something else;
- the inventory with the planned files laid over the work tree validates (an error in a
  planned device file or profile is reported at the input line that gave the value);
- every imported device builds exactly the parameters of its file (a difference is a bug
  of the import), and its Profile Rule will find and open gitprov's files (warnings).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pygit2

from gitprov.catalog import Catalog
from gitprov.compile import Origin, compile_device
from gitprov.crypto import Mode
from gitprov.errors import GitprovError, Problem, error, warning
from gitprov.importer.context import Context
from gitprov.importer.problems import CIPHER, RESULT, RULE, TAKEN, refused
from gitprov.importer.values import Device
from gitprov.importer.write import Sealer
from gitprov.inventory import SECRETS_FILE, Inventory
from gitprov.macros import device_variables, expand
from gitprov.rule_url import RuleSyntaxError, RuleUrl, joined, parse_rule
from gitprov.source import FileRef, Source, WorktreeSource, within
from gitprov.yamldoc import SecretRef, leaves, parse


def cipher_problems(devices: Sequence[Device], ctx: Context) -> list[Problem]:
    """Encrypted files whose cipher differs from the one gitprov would use for their model:
    the device's firmware reads one, so gitprov's files would not open."""
    groups: dict[tuple[str, _Setting], list[Device]] = {}
    for d in devices:
        opened = d.opened
        if opened is None or opened.mode is Mode.NONE:
            continue
        got = _cipher(opened.mode, opened.gzip, opened.iterations)
        if got != _setting(ctx, d.model):
            groups.setdefault((d.model, got), []).append(d)
    out = []
    for (model_name, got), group in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        have = _setting(ctx, model_name)
        model = ctx.inv.models[model_name]
        # The settings to change, in the order the files' reader applies them: the cipher,
        # its PBKDF2 iterations, then the gzip layer inside it.
        changes = [
            (name, value)
            for name, value, old in zip(_NAMES, got, have, strict=True)
            if value != old and value is not None
        ]
        first = changes[0][0]
        # Where each setting is written: the model's own block overrides the fleet's.
        own = model.encryption is not None and first in model.encryption
        doc = model.doc if own else ctx.inv.fleet.doc
        line, col = doc.pos(("encryption", first))
        block = ", ".join(f"{name}: {_yaml(value)}" for name, value in changes)
        dotted = " and ".join(f"encryption.{name}" for name, _ in changes)
        out.append(
            error(
                doc.path,
                line,
                col,
                CIPHER,
                f"{len(group)} {model_name} file(s) (e.g. {group[0].source}) are "
                f"{_cipher_text(got, have)}, but gitprov would write {_cipher_text(have, got)}: "
                "the devices could not open their files",
                f"set `encryption: {{{block}}}` in {model.doc.path} (or {dotted} in "
                f"{ctx.inv.fleet.doc.path}) to what the devices read, and import again",
            )
        )
    return out


# A cipher as the settings name its parts: (mode, iterations or None, gzip).
_Setting = tuple[str, int | None, bool]
_NAMES = ("mode", "iterations", "gzip")


def _cipher(mode: Mode, zipped: bool, iterations: int) -> _Setting:
    # (iterations only mean something to PBKDF2: another mode's value is never a difference)
    return (mode.value, iterations if mode is Mode.OPENSSL_PBKDF2 else None, zipped)


def _setting(ctx: Context, model: str) -> _Setting:
    enc = ctx.inv.fleet.encryption.merged(ctx.inv.models[model].encryption)
    return _cipher(Mode(enc.mode), bool(enc.gzip), enc.iterations)


def _yaml(value: str | int | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _cipher_text(cipher: _Setting, other: _Setting) -> str:
    """`cipher` in words; "without gzip" only where `other` has it, to show the difference."""
    mode, iterations, zipped = cipher
    text = mode + (f", {iterations} iterations" if iterations is not None else "")
    if zipped:
        return text + ", gzip"
    return text + (" without gzip" if other[2] else "")


def _references(data: Any) -> set[str]:
    return {v.name for _, v in leaves(data) if isinstance(v, SecretRef)}


def taken(
    ctx: Context,
    files: Mapping[str, bytes],
    seal: Sealer,
    replaced: set[str],
    profiles: set[str],
    force: bool,
) -> list[Problem]:
    """Names the import would take that the inventory already uses for something else."""
    out: list[Problem] = []
    inv = ctx.inv
    keep_docs = [
        doc
        for doc in (
            [inv.fleet.doc]
            + [p.doc for p in inv.profiles.values()]
            + [m.doc for m in inv.models.values()]
            + [d.doc for d in inv.devices]
        )
        if doc.path not in files
    ]
    used = set().union(*(_references(doc.data) for doc in keep_docs))
    for name in sorted(set(seal.sealed) & set(ctx.sealed) & used):
        line, col = _secret_line(ctx, name)
        out.append(
            error(
                ctx.path(SECRETS_FILE),
                line,
                col,
                TAKEN,
                f"secret {name!r} exists and another file refers to it",
                "rename that secret, or use another --profile-prefix",
            )
        )
    for name in sorted(profiles):
        existing = inv.profiles.get(name)
        if existing is None:
            continue
        users = [
            d.doc.path
            for d in inv.devices
            if d.doc.path not in replaced and name in (p.name for p in inv.profile_chain(d.profile))
        ]
        users += [
            p.doc.path
            for p in inv.profiles.values()
            if p.extends == name and p.name not in profiles
        ]
        if users:
            out.append(
                error(
                    existing.doc.path,
                    0,
                    0,
                    TAKEN,
                    f"profile {name!r} exists and {len(users)} other file(s) use it "
                    f"(e.g. {users[0]})",
                    "choose another --profile-prefix",
                )
            )
        elif not force:
            out.append(
                error(
                    existing.doc.path,
                    0,
                    0,
                    TAKEN,
                    f"profile {name!r} exists",
                    "choose another --profile-prefix, or --force to replace it",
                )
            )
    return out


def _secret_line(ctx: Context, name: str) -> tuple[int, int]:
    """Where secrets.yaml names `name` (its layout is fixed: one `  NAME: v1:…` per line)."""
    try:
        text = (ctx.session.top / ctx.path(SECRETS_FILE)).read_text(encoding="utf-8")
    except OSError:
        return 0, 0
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip().startswith((f"{name}:", f'"{name}":', f"'{name}':")):
            return number, len(line) - len(line.lstrip()) + 1
    return 0, 0


class _Overlay:
    """The work tree with the files the import would write laid over it."""

    def __init__(self, base: WorktreeSource, planned: Mapping[str, bytes]) -> None:
        self.base = base
        self.planned = dict(planned)

    @property
    def label(self) -> str:
        return "import"

    @property
    def inventory_dir(self) -> str:
        return self.base.inventory_dir

    def files(self) -> list[FileRef]:
        refs = [r for r in self.base.files() if r.path not in self.planned]
        refs += [FileRef(p, str(pygit2.hash(d))) for p, d in self.planned.items()]
        return sorted(refs, key=lambda r: r.path)

    def read(self, ref: FileRef, limit: int | None = None) -> bytes:
        if ref.path not in self.planned:
            return self.base.read(ref, limit)
        return within(self.planned[ref.path], limit)

    def is_link(self, ref: FileRef) -> bool:
        return ref.path not in self.planned and self.base.is_link(ref)


def check_inventory(
    ctx: Context, files: Mapping[str, bytes], devices: Mapping[str, Device]
) -> Inventory:
    """Validate the inventory with the planned files (`devices` by the device file each
    is planned to); an error refuses the import."""
    session = ctx.session
    repo = session.repo
    head = None if repo.head_is_unborn else repo.head.peel(pygit2.Commit)
    floor = session.pipeline.history_floor([head.id] if head is not None else [])
    source: Source = _Overlay(WorktreeSource(session.top, session.inventory_dir), files)
    loaded = session.pipeline.load(source, floor)
    if loaded.inventory is not None:
        return loaded.inventory
    raise refused([_at_input(p, ctx, files, devices) for p in loaded.errors])


def _at_input(
    p: Problem, ctx: Context, files: Mapping[str, bytes], devices: Mapping[str, Device]
) -> Problem:
    """A validation problem of the planned inventory, where the user can fix it. None of
    the files the import writes exists yet: a problem in one (a device file, or a profile
    whose values devices share) is reported at the input line that gave the value, and
    the device files a message names are named by their input files."""
    message = p.message
    for path, d in devices.items():
        message = message.replace(path, d.source)
    if p.file not in files:
        return p._replace(message=message)  # a file of the user's
    key = _key_at(p, files[p.file], ctx.catalog)
    device = devices.get(p.file)
    what = "device file"
    if device is None and _is_profile(ctx, p.file):
        what = "profile"
        device = _device_of(p, key, devices)
    if device is None:
        return p._replace(message=message)
    file, line, col = device.at.get(key) or device.at.get((key[0], -1)) or (device.source, 0, 0)
    return error(
        file,
        line,
        col,
        RESULT,
        f"the {what} the import would write ({p.where()}) does not validate: {p.code} {message}",
        p.hint,
    )


def _device_of(p: Problem, key: tuple[str, int], devices: Mapping[str, Device]) -> Device | None:
    """The device a problem in a planned profile is about: the first the message names
    (GP105 names the device it is for first), else the first whose input gave the value."""
    named = sorted((p.message.index(path), path) for path in devices if path in p.message)
    if named:
        return devices[named[0][1]]
    given = sorted((d.source, path) for path, d in devices.items() if key in d.at)
    return devices[given[0][1]] if given else None


def _is_profile(ctx: Context, path: str) -> bool:
    return posixpath.dirname(path) == ctx.path("profiles")


def _key_at(p: Problem, data: bytes, catalog: Catalog) -> tuple[str, int]:
    """The (DBID key, line slot or -1) of the value at the problem's place in a file the
    import wrote, ("", -1) if it is at no value: params and lines are all it writes."""
    doc, _ = parse(p.file, "", data)
    if doc is None:
        return "", -1
    spots = [*doc.positions.items(), *doc.key_positions.items()]
    exact = [path for path, at in spots if at == (p.line, p.col)]
    inline = [path for path, at in spots if at[0] == p.line]
    for path in exact + inline:
        if len(path) == 2 and path[0] == "params":
            param = catalog.lookup(str(path[1]))
            return (param.key if param is not None else str(path[1])), -1
        if len(path) == 3 and path[0] == "lines" and isinstance(path[1], int):
            param = catalog.lookup_line(str(path[2]))
            return (param.key if param is not None else str(path[2])), path[1]
    return "", -1


def verify(
    devices: Sequence[Device], inv: Inventory, catalog: Catalog, seal: Sealer
) -> list[Problem]:
    """Compile every imported device from the planned inventory and compare it with its
    file: a difference is a bug of the import, and nothing is written. Returns what the
    Profile Rules say about devices that would not find or open gitprov's files."""

    def resolve(name: str) -> str:
        # Secrets the import did not write stand in by a marker: they are only ever
        # compared with values the import wrote itself, and never equal.
        return seal.plain.get(name, f"\x00{name}")

    groups: dict[tuple[str, ...], list[tuple[Device, Origin]]] = {}
    for d in devices:
        cfg = compile_device(inv.device(d.mac) or _missing(d.mac), inv, catalog, resolve)
        built = {e.key: e.value for e in cfg.entries if e.key != "DBID_PROFILE_RULE"}
        if built != d.expected():
            wrong = sorted(
                k for k in set(built) | set(d.expected()) if built.get(k) != d.expected().get(k)
            )
            raise GitprovError(
                f"internal: the import would not build {d.mac} as its file says "
                f"({', '.join(wrong[:5])}); nothing was written",
                hint="please report it, with the file's keys (not its values)",
            )
        line, col = d.rule_at if d.rule is not None else (1, 1)
        where = Origin(d.source, line, col)
        for finding in _rule_findings(d, cfg.get("DBID_PROFILE_RULE"), inv):
            groups.setdefault(finding, []).append((d, where))
    out = []
    for (message, hint), found in sorted(groups.items()):
        d, where = found[0]
        more = (
            f" ({len(found)} files: {d.source} and {len(found) - 1} more)" if len(found) > 1 else ""
        )
        out.append(warning(where.file, where.line, where.col, RULE, message + more, hint))
    return out


def _missing(mac: str) -> Any:
    raise GitprovError(f"internal: {mac} is not in the planned inventory")


def _rule_url(text: str, variables: Mapping[str, str]) -> tuple[str, str, int, str] | None:
    try:
        url: RuleUrl = parse_rule(text)
    except RuleSyntaxError:
        return None
    return (url.scheme, url.host.lower(), url.port, expand(url.path, variables))


def _rule_findings(d: Device, built: str | None, inv: Inventory) -> Iterable[tuple[str, str]]:
    opened = d.opened
    encrypted = opened is not None and opened.mode is not Mode.NONE
    cipher = inv.fleet.encryption.merged(inv.models[d.model].encryption)
    model = inv.models[d.model]
    variables = device_variables(d.mac, product_name=model.product_name)
    old = _rule_url(d.rule, variables) if d.rule is not None else None
    try:
        expects_plain = parse_rule(d.rule).key is None if d.rule is not None else not encrypted
    except RuleSyntaxError:
        expects_plain = False  # said already: the rule does not parse
    if expects_plain and cipher.mode != Mode.NONE.value:
        yield (
            "the device reads plaintext files (its Profile Rule names no key), and gitprov "
            "would encrypt its file: it could not read it",
            "before the first publish, give the device its key (`gitprov key MAC` once this "
            "is committed) in a Profile Rule [--key KEY] served by the old server, or set "
            f"`encryption: {{mode: none}}` in models/{d.model}.yaml",
        )
    if d.rule is None:
        return
    if built is None:
        yield (
            "gitprov.yaml sets no provisioning.url: gitprov writes no Profile Rule and the "
            "devices keep fetching from the old server",
            "set provisioning.url (and file_name) to where the devices should fetch",
        )
        return
    new = _rule_url(built, variables)
    if old is not None and new is not None and old != new:
        # Never the key; and the MAC as a macro, so that one warning covers the fleet.
        shown_old = re.sub(r"^\s*\[[^\]]*\]\s*", "", d.rule)
        for spelling, macro in ((d.mac, "$(MA)"), (d.mac.upper(), "$(MAU)")):
            shown_old = shown_old.replace(spelling, macro)
        template = joined(inv.fleet.provisioning_url or "", inv.fleet.file_name)
        yield (
            f"devices fetch {shown_old}, but gitprov would publish their files for "
            f"{template}: they would never find the first one",
            "set provisioning.url and file_name in gitprov.yaml to what the devices fetch "
            "now (change them later, in a commit of its own), or serve gitprov's roots at "
            "that address",
        )
