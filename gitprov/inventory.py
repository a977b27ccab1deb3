"""YAML files of one source → documents (with positions) → a typed Inventory.

`load_documents` never fails on bad input: it returns what it could read and the problems.
`build_inventory` assumes the documents passed validation.
"""

from __future__ import annotations

import bisect
import functools
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from gitprov.errors import Problem, error, warning
from gitprov.limits import DEFAULT, Limits, of_fleet
from gitprov.macros import normalise_mac
from gitprov.source import FileRef, Source
from gitprov.unsafe import UNSAFE, describe, shown
from gitprov.yamldoc import Document, SecretRef, parse

FLEET = "fleet"
PROFILE = "profile"
MODEL = "model"
DEVICE = "device"
SECRETS = "secrets"

FLEET_FILE = "gitprov.yaml"
SECRETS_FILE = "secrets.yaml"
DEFAULT_FILE_NAME = "fv$(MA).conf"
DEFAULT_MAX_REMOVAL = Fraction(1, 10)


_KIND_BY_DIR = {"profiles": PROFILE, "models": MODEL, "devices": DEVICE}


@functools.cache
def _prefix(inventory_dir: str) -> str:
    """What every inventory path starts with ("" for the repository root)."""
    norm = posixpath.normpath(inventory_dir) if inventory_dir else "."
    return "" if norm == "." else norm + "/"


def kind_of(path: str, inventory_dir: str) -> str | None:
    # A prefix check, not posixpath.relpath: this runs for every file of every commit.
    prefix = _prefix(inventory_dir)
    if not path.startswith(prefix):
        return None
    rel = path[len(prefix) :]
    if rel == FLEET_FILE:
        return FLEET
    if rel == SECRETS_FILE:
        return SECRETS
    head, _, name = rel.partition("/")
    if not name.endswith((".yaml", ".yml")):
        return None
    if "/" in name:
        # Devices may sit in directories at any depth (devices/<site>/<mac>.yaml): a tree
        # diff then skips every unchanged site by its tree id. Profiles and models stay
        # flat, their file names are their names. A dot-directory is not read, as in the
        # work tree (WorktreeSource skips it).
        if head != "devices" or "/." in "/" + name.rpartition("/")[0]:
            return None
        return DEVICE
    return _KIND_BY_DIR.get(head)


def stem(path: str) -> str:
    name = posixpath.basename(path)
    return name.rsplit(".", 1)[0]


class ParseCache:
    """Parsed documents by git blob id: unchanged files are never parsed twice."""

    def __init__(self) -> None:
        self._docs: dict[
            tuple[str, str, Limits], tuple[Document | None, tuple[Problem, ...]]
        ] = {}
        self._kinds: dict[str, dict[str, str | None]] = {}

    def kinds(self, inventory_dir: str) -> dict[str, str | None]:
        """`kind_of` by path for one inventory directory, filled by the caller."""
        return self._kinds.setdefault(inventory_dir, {})

    def get(
        self, ref: FileRef, source: Source, limits: Limits = DEFAULT, *, fleet_file: bool = False
    ) -> tuple[Document | None, tuple[Problem, ...]]:
        # The path is part of the key: positions and problems name the file; and so are the
        # limits it was read within.
        key = (ref.path, ref.oid, limits)
        hit = self._docs.get(key)
        if hit is None:
            doc, problems = parse(
                ref.path, ref.oid, source.read(ref), limits, fleet_file=fleet_file
            )
            hit = (doc, tuple(problems))
            self._docs[key] = hit
        return hit


@dataclass(frozen=True)
class Documents:
    """Every inventory file of one source, by kind."""

    inventory_dir: str
    by_kind: Mapping[str, tuple[Document, ...]]
    refs: tuple[FileRef, ...]

    def of(self, kind: str) -> tuple[Document, ...]:
        return self.by_kind.get(kind, ())

    def all(self) -> Iterable[Document]:
        for docs in self.by_kind.values():
            yield from docs


def load_documents(
    source: Source, cache: ParseCache | None = None, refs: list[FileRef] | None = None
) -> tuple[Documents, list[Problem]]:
    """`refs` (sorted by path) saves walking the tree when the caller knows them, e.g.
    from the parent commit's refs and a tree diff."""
    cache = cache or ParseCache()
    problems: list[Problem] = []
    by_kind: dict[str, list[Document]] = {}
    if refs is None:
        refs = source.files()
    inventory_dir = source.inventory_dir
    prefix = _prefix(inventory_dir)
    kinds = cache.kinds(inventory_dir)
    # The fleet settings first: they set the limits every other file is read within, and
    # are read within the defaults themselves (gitprov.limits).
    limits = DEFAULT
    fleet_path = prefix + FLEET_FILE
    at = bisect.bisect_left(refs, fleet_path, key=lambda r: r.path)
    if at < len(refs) and refs[at].path == fleet_path:
        fleet_doc = cache.get(refs[at], source, fleet_file=True)[0]
        if fleet_doc is not None:
            limits = of_fleet(fleet_doc.data)
    for ref in refs:
        bad = UNSAFE.search(ref.path) or re.search("\t", ref.path)
        if bad:
            # Printed as it is, a newline in a name would start an output line that looks
            # like another file's problem (or a CI annotation), an ESC sequence would
            # rewrite the reviewer's terminal: the name is shown escaped, the file unread.
            problems.append(
                error(
                    shown(ref.path),
                    1,
                    1,
                    "GP108",
                    f"the file name holds {describe(bad.group())}",
                    "rename the file: inventory file names are plain, visible text",
                )
            )
            continue
        try:
            kind = kinds[ref.path]
        except KeyError:
            kind = kinds[ref.path] = kind_of(ref.path, inventory_dir)
        if kind is None:
            if "/." not in "/" + ref.path[len(prefix) :] and not ref.path.endswith(".md"):
                problems.append(
                    warning(
                        ref.path,
                        0,
                        0,
                        "GP005",
                        "file is not part of the inventory and is ignored",
                        "inventory files are gitprov.yaml, secrets.yaml, profiles/*.yaml, "
                        "models/*.yaml and devices/**/*.yaml (devices in directories at "
                        "any depth); .yml works too",
                    )
                )
            continue
        if kind == FLEET:
            doc, parse_problems = cache.get(ref, source, fleet_file=True)
        else:
            doc, parse_problems = cache.get(ref, source, limits)
        problems.extend(parse_problems)
        if doc is not None:
            by_kind.setdefault(kind, []).append(doc)
    return (
        Documents(inventory_dir, {k: tuple(v) for k, v in by_kind.items()}, tuple(refs)),
        problems,
    )


@dataclass(frozen=True)
class Layer:
    """One level of settings: its `params:` and `lines:` blocks and where they are."""

    doc: Document
    params: Mapping[str, Any]
    lines: tuple[Mapping[str, Any] | None, ...]

    @staticmethod
    def of(doc: Document) -> Layer:
        data = doc.data
        return Layer(doc, dict(data.get("params") or {}), tuple(data.get("lines") or ()))


@dataclass(frozen=True)
class Encryption:
    mode: str = "openssl-md5"
    iterations: int = 10000
    gzip: bool = False
    master_key: SecretRef | None = None
    # During a key rotation: what devices hold now (see docs/keys.md).
    previous_master_key: SecretRef | None = None
    previous_file_name: str | None = None

    def merged(self, over: Mapping[str, Any] | None) -> Encryption:
        if not over:
            return self
        previous = over.get("previous")
        return Encryption(
            mode=over.get("mode", self.mode),
            iterations=over.get("iterations", self.iterations),
            gzip=over.get("gzip", self.gzip),
            master_key=over.get("master_key", self.master_key),
            previous_master_key=previous.get("master_key") if previous
            else self.previous_master_key,
            previous_file_name=previous.get("file_name") if previous
            else self.previous_file_name,
        )


@dataclass(frozen=True)
class Fleet:
    doc: Document
    name: str
    version_floor: int
    file_name: str
    provisioning_url: str | None
    http_root: str | None
    tftp_root: str | None
    state_dir: str | None
    encryption: Encryption
    layer: Layer
    # publish: each of http_root / tftp_root may list several directories (edge servers);
    # http_root / tftp_root above are the first of each.
    http_roots: tuple[str, ...] = ()
    tftp_roots: tuple[str, ...] = ()
    firmware_dir: str | None = None
    option66: bool | tuple[str, ...] = False  # True: every model; or the models named
    # The largest share of the published devices one publish may remove (publish.max_removal).
    max_removal: Fraction = DEFAULT_MAX_REMOVAL


@dataclass(frozen=True)
class Profile:
    name: str
    doc: Document
    extends: str | None
    layer: Layer


@dataclass(frozen=True)
class Model:
    name: str
    doc: Document
    family: str
    product_name: str
    config_file_name: str
    line_count: int
    firmware: Mapping[str, str]
    encryption: Mapping[str, Any] | None
    layer: Layer


@dataclass(frozen=True)
class Device:
    mac: str  # 12 lower-case hex
    doc: Document
    model: str
    profile: str | None
    serial: str
    key: SecretRef | None
    layer: Layer
    previous_key: SecretRef | None = None


@dataclass(frozen=True)
class Inventory:
    fleet: Fleet
    profiles: Mapping[str, Profile]
    models: Mapping[str, Model]
    devices: tuple[Device, ...]  # sorted by MAC
    sealed: Mapping[str, str] = field(default_factory=dict)  # secret name -> sealed text
    public_key: str | None = None
    public_key_at: str = ""  # "file:line:col" of public_key, for messages
    _chains: dict[str, tuple[Profile, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def device(self, mac: str) -> Device | None:
        for d in self.devices:
            if d.mac == mac:
                return d
        return None

    def profile_chain(self, name: str | None) -> list[Profile]:
        """The profile and its ancestors, base first. Resolved once per profile, not once
        per device (validation bounds its length: limits.extends_depth)."""
        if not name:
            return []
        hit = self._chains.get(name)
        if hit is None:
            chain: list[Profile] = []
            seen: set[str] = set()
            node: str | None = name
            while node and node not in seen and node in self.profiles:
                seen.add(node)
                chain.append(self.profiles[node])
                node = self.profiles[node].extends
            hit = self._chains[name] = tuple(reversed(chain))
        return list(hit)


def _dirs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def _option66(value: Any) -> bool | tuple[str, ...]:
    if isinstance(value, bool) or value is None:
        return bool(value)
    return tuple(str(v) for v in value)


def _share(value: Any) -> Fraction:
    """publish.max_removal ("10%", its form checked by the schema) as an exact share, so
    that 10 of 100 devices is not over 10%."""
    if not isinstance(value, str):
        return DEFAULT_MAX_REMOVAL
    return Fraction(value.removesuffix("%")) / 100


# Devices by (path, blob id): the same bytes at the same path give the same Device, so a
# long history builds each device once, not once per commit.
_DEVICES: dict[tuple[str, str], Device] = {}
_DEVICES_MAX = 500_000


def _device(d: Document) -> Device:
    hit = _DEVICES.get((d.path, d.oid))
    if hit is not None:
        return hit
    data = d.data
    mac = normalise_mac(data["mac"])
    assert mac is not None, "validated"
    key = data.get("key")
    previous_key = data.get("previous_key")
    device = Device(
        mac=mac,
        doc=d,
        model=data["model"],
        profile=data.get("profile"),
        serial=str(data.get("serial", "")),
        key=key if isinstance(key, SecretRef) else None,
        layer=Layer.of(d),
        previous_key=previous_key if isinstance(previous_key, SecretRef) else None,
    )
    if len(_DEVICES) >= _DEVICES_MAX:
        _DEVICES.clear()
    _DEVICES[(d.path, d.oid)] = device
    return device


def build_inventory(docs: Documents) -> Inventory:
    fleet_docs = docs.of(FLEET)
    fdoc = fleet_docs[0]
    f = fdoc.data
    publish = f.get("publish") or {}
    fleet = Fleet(
        doc=fdoc,
        name=str(f.get("fleet", "")),
        version_floor=int(f["version_floor"]),
        file_name=f.get("file_name", DEFAULT_FILE_NAME),
        provisioning_url=(f.get("provisioning") or {}).get("url"),
        http_root=next(iter(_dirs(publish.get("http_root"))), None),
        tftp_root=next(iter(_dirs(publish.get("tftp_root"))), None),
        state_dir=publish.get("state_dir"),
        encryption=Encryption().merged(f.get("encryption")),
        layer=Layer.of(fdoc),
        http_roots=_dirs(publish.get("http_root")),
        tftp_roots=_dirs(publish.get("tftp_root")),
        firmware_dir=publish.get("firmware_dir"),
        option66=_option66(publish.get("option66")),
        max_removal=_share(publish.get("max_removal")),
    )
    profiles = {
        stem(d.path): Profile(stem(d.path), d, d.data.get("extends"), Layer.of(d))
        for d in docs.of(PROFILE)
    }
    models = {}
    for d in docs.of(MODEL):
        m = d.data
        name = stem(d.path)
        models[name] = Model(
            name=name,
            doc=d,
            family=m["family"],
            product_name=m.get("product_name", name),
            config_file_name=m.get("config_file_name", f"{name}.conf"),
            line_count=int(m["line_count"]),
            firmware=dict(m.get("firmware") or {}),
            encryption=m.get("encryption"),
            layer=Layer.of(d),
        )
    devices = [_device(d) for d in docs.of(DEVICE)]
    devices.sort(key=lambda dev: dev.mac)
    sealed: dict[str, str] = {}
    public_key, public_key_at = None, ""
    for d in docs.of(SECRETS):
        public_key = d.data.get("public_key")
        line, col = d.pos(("public_key",))
        public_key_at = f"{d.path}:{line}:{col}"
        sealed.update(d.data.get("secrets") or {})
    return Inventory(fleet, profiles, models, tuple(devices), sealed, public_key, public_key_at)
