"""The floor: the least work that does what gitprov does, in one process, for `make bench`.

    python bench/floor.py --repo R publish --rev REV --http-root A --tftp-root B --state-dir S
    python bench/floor.py --repo R validate --rev REV
    python bench/floor.py --repo R versions --rev REV [--format json]
    python bench/floor.py --repo R log MAC [--rev REV]
    python bench/floor.py --repo R blame MAC [--rev REV]

Written independently of gitprov's pipeline: it reads each blob with pygit2, parses it
with PyYAML's C composer keeping every value's line number, validates with jsonschema-rs
against gitprov's JSON Schemas plus the cross-file checks (duplicate MAC, duplicate SIP
account on a server, duplicate published path; models, profiles and secrets that exist;
version_floor never lowered), layers fleet → profile chain → model → device, renders,
derives the key, encrypts, and writes. Durability is batched: temps written without
fsync, one syncfs(2) per root, the renames, one fsync per directory.

Reused from gitprov, because they ARE the specification of the output and a second copy
could only drift from it:
  - gitprov.crypto: `derive_device_key` (HKDF per MAC) and `Cipher.encrypt` (the openssl
    `Salted__` format with its derived salt);
  - gitprov.catalog: the parameter catalog (readable name → DBID key, defaults, and the
    render order, `sort_key`);
  - gitprov.macros: the device's macro expansion (`$(MA)` in file_name);
  - gitprov.secrets.unseal: the sealed-secret format;
  - the JSON Schemas themselves: schemas/*.schema.json, and the `params:` and `lines:`
    schemas the catalog generates (`Catalog.params_schema`, `line_schema`), read here
    rather than through gitprov.schemas, which would import the Python jsonschema.
Nothing of gitprov's loading, validation, compile, versioning or publish code is used.

What the floor does NOT do, so gitprov's extra work shows in the ratio: the ~30 other
rules (quoting, macros, injection, unknown keys, ...), located messages with hints,
provenance of every value, the plan, guards and manifest. It also supports only what the
benchmark fleets use and fails loudly on the rest (publish.option66, firmware, key
rotation): it is a yardstick, not a second implementation.

Versions (docs/versions.md) come from one pass over the commit graph, parents first: each
commit is the first parent's snapshot plus a tree diff; only files that changed are
parsed and validated, and only devices whose inputs changed (their file, a profile of
their chain, their model, the fleet settings, secrets.yaml) are layered again. A device's
content is its rendered body with each secret as the digest of its sealed text, plus its
file name and cipher: what gitprov compares. The state after a publish (the snapshot and
the version state) is kept in the state dir, so the next publish is one more step of the
same pass: the floor's incremental publish.

`log MAC` is the same pass following one device only (other devices are neither layered
nor checked for clashes: a commit invalid only through a clash elsewhere would count for
gitprov and not here; the bench history has none). `blame MAC` validates the commit,
layers the device keeping each value's file and line, and asks libgit2's blame for the
commit of each line: what gitprov does, minus the version history (only the highest
version_floor of the ancestors is needed for validation: one tree lookup per commit).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import pickle
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import pygit2
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitprov.catalog import SCHEMAS_DIR, Catalog, load_catalog
from gitprov.crypto import Cipher, Mode, derive_device_key
from gitprov.macros import device_variables, expand, normalise_mac
from gitprov.secrets import unseal

INVENTORY = "inventory/"
STATE_FILE = "floor-state.pickle"
STATE_FORMAT = 1
VERSION_KEY = "DBID_DBASE_VERSION"
ABSENT = ""
MAX_NODES = 100_000  # per document: aliases could otherwise expand without end
PARSE_CACHE = 50_000  # parsed device documents kept by blob id (history: re-layering)

_T = "tag:yaml.org,2002:"
_STR, _INT, _BOOL, _NULL, _FLOAT = (_T + t for t in ("str", "int", "bool", "null", "float"))
SECRET_TAG = "!secret"


class FloorError(Exception):
    """Something the floor cannot do or the repository does not allow: exit 2."""


# -- parse ---------------------------------------------------------------------------------
Path_ = tuple[str | int, ...]


@dataclass(slots=True)
class Doc:
    path: str
    oid: str
    data: Any
    secrets: frozenset[Path_]  # paths of `!secret NAME` values (their data is the name)
    lines: array[int]  # each value's line, in document order (see `line_of`)


class _Parser(yaml.CSafeLoader):
    """libyaml composes; values are built here, with the line of each one."""


def parse(path: str, oid: str, raw: bytes) -> tuple[Doc | None, str | None]:
    """The document, or None and why not."""
    loader = _Parser(raw)
    try:
        node = loader.get_single_node()
        lines: array[int] = array("I")
        secrets: set[Path_] = set()
        data = _build(loader, node, (), lines, secrets) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        return None, f"{path}:{mark.line + 1 if mark else 1}: YAML: {exc.problem}"
    except (yaml.YAMLError, ValueError) as exc:
        return None, f"{path}:1: YAML: {exc}"
    finally:
        loader.dispose()
    return Doc(path, oid, data, frozenset(secrets), lines), None


def _build(
    loader: _Parser, node: yaml.Node, path: Path_, lines: array[int], secrets: set[Path_]
) -> Any:
    lines.append(node.start_mark.line + 1)
    if len(lines) > MAX_NODES:
        raise ValueError(f"more than {MAX_NODES} values")
    if isinstance(node, yaml.ScalarNode):
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == SECRET_TAG:
            secrets.add(path)
            return node.value.strip()
        if tag == _INT:
            return loader.construct_yaml_int(node)
        if tag == _BOOL:
            return loader.bool_values[node.value.lower()]
        if tag == _NULL:
            return None
        if tag == _FLOAT:
            return loader.construct_yaml_float(node)
        raise yaml.MarkedYAMLError(problem=f"unsupported tag {tag}", problem_mark=node.start_mark)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != _STR:
                raise yaml.MarkedYAMLError(
                    problem="a key must be a plain string", problem_mark=knode.start_mark
                )
            key = knode.value
            if key in out:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r}", problem_mark=knode.start_mark
                )
            out[key] = _build(loader, vnode, (*path, key), lines, secrets)
        return out
    return [_build(loader, item, (*path, i), lines, secrets) for i, item in enumerate(node.value)]


def line_of(doc: Doc, path: Path_) -> int:
    """The line of the value at `path`, or of its nearest ancestor that exists. Lines are
    kept in document order, one per value: the value's index is its rank in a walk of
    the data in the same order. Only the error and blame paths pay for this."""
    target: Path_ = ()
    here = doc.data
    for step_ in path:
        in_dict = isinstance(here, dict) and step_ in here
        in_list = isinstance(here, list) and isinstance(step_, int) and 0 <= step_ < len(here)
        if in_dict or in_list:
            here = here[step_]
        else:
            break
        target = (*target, step_)
    index = 0

    def walk(value: Any, at: Path_) -> bool:
        nonlocal index
        if at == target:
            return True
        index += 1
        if target[: len(at)] != at:
            index += _size(value) - 1
            return False
        items: Iterable[tuple[str | int, Any]] = (
            value.items()
            if isinstance(value, dict)
            else enumerate(value)
            if isinstance(value, list)
            else ()
        )
        return any(walk(v, (*at, k)) for k, v in items)

    walk(doc.data, ())
    return int(doc.lines[index]) if index < len(doc.lines) else 1


def _size(value: Any) -> int:
    """How many values `value` is, itself included."""
    if isinstance(value, dict):
        return 1 + sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_size(v) for v in value)
    return 1


# -- schemas -------------------------------------------------------------------------------
FLEET, PROFILE, MODEL, DEVICE, SECRETS = "fleet", "profile", "model", "device", "secrets"


def kind_of(path: str) -> str | None:
    if not path.startswith(INVENTORY):
        return None
    rel = path[len(INVENTORY) :]
    if rel == "gitprov.yaml":
        return FLEET
    if rel == "secrets.yaml":
        return SECRETS
    head, _, name = rel.partition("/")
    if not name.endswith((".yaml", ".yml")) or "/" in name:
        return None
    return {"profiles": PROFILE, "models": MODEL, "devices": DEVICE}.get(head)


def stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0]


# The same files and the same `$id`s as gitprov.schemas: `$ref`s resolve between them.
BASE = "https://gitprov.invalid/schemas/"
KIND_FILES = {
    FLEET: "fleet.schema.json",
    PROFILE: "profile.schema.json",
    MODEL: "model.schema.json",
    DEVICE: "device.schema.json",
    SECRETS: "secrets.schema.json",
}


class Schemas:
    def __init__(self, catalog: Catalog) -> None:
        # (the files hold no `$id`, as `gitprov schema --write` writes them: each is given
        # the one its name says, where the others' `$ref`s find it)
        schemas: dict[str, Any] = {
            name: {"$id": BASE + name, **json.loads((SCHEMAS_DIR / name).read_text())}
            for name in KIND_FILES.values()
        }
        for name, generated in (
            ("params.schema.json", catalog.params_schema()),
            ("line.schema.json", catalog.line_schema()),
        ):
            schemas[name] = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": BASE + name,
                **generated,
            }
        registry = jsonschema_rs.Registry([(BASE + name, s) for name, s in schemas.items()])
        self.validators = {
            kind: jsonschema_rs.validator_for(
                schemas[name], registry=registry, validate_formats=False
            )
            for kind, name in KIND_FILES.items()
        }

    def problems(self, kind: str, doc: Doc) -> list[str]:
        v = self.validators[kind]
        if not isinstance(doc.data, dict):
            return [f"{doc.path}:1: the file must be a YAML mapping"]
        if v.is_valid(doc.data):
            return []
        out = []
        for err in v.iter_errors(doc.data):
            where = tuple(err.instance_path)
            out.append(
                f"{doc.path}:{line_of(doc, where)}: {'.'.join(map(str, where))}: {err.message}"
            )
        return out


# -- layering ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Secret:
    name: str


Value = str | Secret  # a rendered value; a secret is resolved at the last moment
Parts = Value | tuple[Value, ...]  # per-line parameters: one per line, joined by TAB


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


@dataclass
class Layers:
    """The fleet settings, profiles, models and sealed secrets of one snapshot, with the
    merge of fleet → profile chain → model memoised per (profile, model)."""

    catalog: Catalog
    fleet: Doc
    profiles: dict[str, Doc]
    models: dict[str, Doc]
    sealed: dict[str, str]
    _bases: dict[tuple[str | None, str], tuple[dict[str, Value], dict[str, dict[int, Value]]]] = (
        field(default_factory=dict)
    )

    def chain(self, profile: str | None) -> list[Doc]:
        out: list[Doc] = []
        seen: set[str] = set()
        while profile is not None:
            if profile in seen:
                raise FloorError(f"profiles extend each other in a cycle at {profile}")
            doc = self.profiles.get(profile)
            if doc is None:
                raise FloorError(f"unknown profile {profile!r}")
            seen.add(profile)
            out.append(doc)
            profile = doc.data.get("extends")
        out.reverse()
        return out

    def apply(
        self,
        doc: Doc,
        line_count: int,
        merged: dict[str, Value],
        per_line: dict[str, dict[int, Value]],
    ) -> None:
        lookup, lookup_line, secrets = self.catalog.lookup, self.catalog.lookup_line, doc.secrets
        for name, value in (doc.data.get("params") or {}).items():
            param = lookup(name)
            key = param.key if param else name
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = Secret(value) if ("params", name) in secrets else _text(value)
        for slot, item in enumerate(doc.data.get("lines") or ()):
            if slot >= line_count or not item:
                continue
            for name, value in item.items():
                param = lookup_line(name)
                slots = per_line.setdefault(param.key if param else name, {})
                if value is None:
                    slots.pop(slot, None)
                else:
                    slots[slot] = (
                        Secret(value) if ("lines", slot, name) in secrets else _text(value)
                    )

    def base(
        self, profile: str | None, model: str
    ) -> tuple[dict[str, Value], dict[str, dict[int, Value]]]:
        key = (profile, model)
        hit = self._bases.get(key)
        if hit is None:
            mdoc = self.models.get(model)
            if mdoc is None:
                raise FloorError(f"unknown model {model!r}")
            count = int(mdoc.data["line_count"])
            merged: dict[str, Value] = {}
            per_line: dict[str, dict[int, Value]] = {}
            for doc in [self.fleet, *self.chain(profile), mdoc]:
                self.apply(doc, count, merged, per_line)
            hit = self._bases[key] = (merged, per_line)
        return hit

    def encryption(self, model: str) -> tuple[Cipher, str | None]:
        enc = dict(self.fleet.data.get("encryption") or {})
        enc.update(self.models[model].data.get("encryption") or {})
        if "previous" in enc:
            raise FloorError("the floor does not implement key rotation (encryption.previous)")
        master = enc.get("master_key")
        cipher = Cipher(
            Mode(enc.get("mode", "openssl-md5")),
            enc.get("iterations", 10000),
            enc.get("gzip", False),
        )
        return cipher, master


@dataclass(slots=True)
class Compiled:
    """One device, layered: everything its file depends on but the version."""

    mac: str
    file_name: str
    cipher: Cipher
    key: Secret | tuple[str] | None  # its own secret, or (master secret name,) to derive
    entries: list[tuple[str, Parts]]  # render order; the profile rule last to resolve
    registrations: tuple[str, ...]  # "server:port\0account" of its enabled lines


def compile_device(layers: Layers, doc: Doc) -> Compiled:
    data = doc.data
    mac = normalise_mac(data["mac"])
    if mac is None:
        raise FloorError(f"{doc.path}: not a MAC")
    model = data["model"]
    mdoc = layers.models.get(model)
    if mdoc is None:
        raise FloorError(f"{doc.path}: unknown model {model!r}")
    count = int(mdoc.data["line_count"])
    base_merged, base_lines = layers.base(data.get("profile"), model)
    merged = dict(base_merged)
    per_line = {k: dict(v) for k, v in base_lines.items()}
    layers.apply(doc, count, merged, per_line)

    catalog = layers.catalog
    entries: list[tuple[str, Parts]] = list(merged.items())
    for k, slots in per_line.items():
        if not slots:
            continue
        param = catalog.by_key(k)
        default = "" if param is None or param.default is None else _text(param.default)
        entries.append((k, tuple(slots.get(s, default) for s in range(count))))
    fleet = layers.fleet.data
    variables = device_variables(
        mac, product_name=mdoc.data.get("product_name", model), serial=str(data.get("serial", ""))
    )
    file_name = expand(fleet.get("file_name", "fv$(MA).conf"), variables)
    cipher, master = layers.encryption(model)
    key: Secret | tuple[str] | None = None
    if cipher.mode is not Mode.NONE:
        if ("key",) in doc.secrets:
            key = Secret(data["key"])
        elif master is not None:
            key = (master,)
    url = (fleet.get("provisioning") or {}).get("url")
    if url:
        entries.append(("DBID_PROFILE_RULE", url.rstrip("/") + "/" + file_name))
    entries.sort(key=lambda e: catalog.sort_key(e[0]))
    return Compiled(mac, file_name, cipher, key, entries, _registrations(merged, per_line, count))


def _registrations(
    merged: dict[str, Value], per_line: dict[str, dict[int, Value]], count: int
) -> tuple[str, ...]:
    """What GP105 compares: each enabled line's (server:port, account)."""
    server = merged.get("DBID_WEB_SIP_SERVER")
    if not isinstance(server, str):
        return ()
    port = merged.get("DBID_WEB_SIP_SERVER_PORT")
    where = (
        f"{server.lower().rstrip('.')}:{port if isinstance(port, str) and port.isdigit() else 5060}"
    )
    enabled = per_line.get("DBID_SIP_ENABLE", {})
    accounts = per_line.get("DBID_SIP_ACCOUNT", {})
    out = []
    for slot in range(min(count, 16)):
        account = accounts.get(slot)
        if enabled.get(slot) == "1" and isinstance(account, str) and account:
            out.append(f"{where}\0{account}")
    return tuple(out)


def _check_line(key: str, value: str) -> str:
    # The same guard as any renderer must have: a value must never add a line.
    if "\n" in value or "\r" in value or "\0" in value or "=" in key:
        raise FloorError(f"refusing to render {key}: a line break or NUL")
    return f"{key}={value}\n"


def body(c: Compiled, resolve: Callable[[str], str], passphrase: str | None) -> bytes:
    """The file without its version line. `resolve` gives each secret's text."""
    out = []
    for key, parts in c.entries:
        if key == "DBID_PROFILE_RULE" and passphrase is not None and isinstance(parts, str):
            value = f"[--key {passphrase}]{parts}"
        elif isinstance(parts, str):
            value = parts
        elif isinstance(parts, Secret):
            value = resolve(parts.name)
        else:
            value = "\t".join(p if isinstance(p, str) else resolve(p.name) for p in parts)
        out.append(_check_line(key, value))
    return "".join(out).encode()


def content_digest(c: Compiled, sealed: dict[str, str]) -> str:
    """What versions compare: the body with each secret as its sealed text's digest (a
    re-sealed secret is a change, and no private key is needed), the key by where it
    comes from, the file name and the cipher."""

    def resolve(name: str) -> str:
        text = sealed.get(name)
        if text is None:
            raise FloorError(f"{c.mac}: unknown secret {name!r}")
        return "<" + name + ":" + hashlib.sha256(text.encode()).hexdigest()[:16] + ">"

    passphrase = None
    if isinstance(c.key, Secret):
        passphrase = resolve(c.key.name)
    elif c.key is not None:
        passphrase = "derived" + resolve(c.key[0])
    head = f"{c.file_name}\0{c.cipher.mode}:{c.cipher.iterations}:{c.cipher.gzip}\0".encode()
    return hashlib.sha256(head + body(c, resolve, passphrase)).hexdigest()


# -- snapshots -----------------------------------------------------------------------------
@dataclass(slots=True)
class DevInfo:
    mac: str
    model: str
    profile: str | None
    file_name: str
    registrations: tuple[str, ...]
    digest: str


Entry = tuple[str, int, str]  # (content digest or ABSENT, n, commit that set it)


@dataclass
class State:
    """The version rule's result at one commit."""

    floor: int
    keys: dict[str, Entry]
    valid: bool


@dataclass
class Snapshot:
    """One commit's inventory as the floor keeps it between commits."""

    files: dict[str, str]  # path -> blob id, every inventory file
    docs: dict[str, Doc]  # the non-device documents, parsed
    devices: dict[str, DevInfo]  # device path -> what was derived from it
    problems: dict[str, list[str]]  # path -> its own problems (schema, YAML, compile)
    counts: dict[str, dict[str, int]]  # uniqueness: "mac" / "reg" / "name" -> key -> count
    clashes: int = 0  # keys counted more than once

    def copy(self) -> Snapshot:
        return Snapshot(
            dict(self.files),
            dict(self.docs),
            dict(self.devices),
            {k: list(v) for k, v in self.problems.items()},
            {k: dict(v) for k, v in self.counts.items()},
            self.clashes,
        )

    def count(self, what: str, key: str, delta: int) -> None:
        table = self.counts.setdefault(what, {})
        before = table.get(key, 0)
        after = before + delta
        if after:
            table[key] = after
        else:
            table.pop(key, None)
        self.clashes += (after > 1) - (before > 1)

    def index(self, info: DevInfo, delta: int) -> None:
        self.count("mac", info.mac, delta)
        self.count("name", info.file_name, delta)
        for reg in info.registrations:
            self.count("reg", reg, delta)

    def macs(self) -> dict[str, DevInfo]:
        return {d.mac: d for d in self.devices.values()}


def empty_snapshot() -> Snapshot:
    return Snapshot({}, {}, {}, {}, {})


class Engine:
    """Evaluates commits parents first: the version pass and every floor command."""

    def __init__(self, repo: pygit2.Repository, *, focus: str | None = None) -> None:
        self.repo = repo
        self.catalog = load_catalog()
        self.schemas = Schemas(self.catalog)
        self.focus = focus  # log: follow this MAC only
        self.parsed: OrderedDict[str, tuple[Doc | None, list[str]]] = OrderedDict()
        self.compiled: dict[str, Compiled] = {}  # of the last commit evaluated, by MAC

    # -- reading ----------------------------------------------------------------------
    def doc(self, path: str, oid: str) -> tuple[Doc | None, list[str]]:
        hit = self.parsed.get(oid + path)
        if hit is not None:
            return hit
        blob = self.repo[oid]
        assert isinstance(blob, pygit2.Blob)
        doc, problem = parse(path, oid, blob.data)
        kind = kind_of(path)
        problems = [problem] if problem else []
        if doc is not None and kind is not None:
            problems += self.schemas.problems(kind, doc)
        hit = (doc, problems)
        self.parsed[oid + path] = hit
        if len(self.parsed) > PARSE_CACHE:
            self.parsed.popitem(last=False)
        return hit

    def listing(self, commit: pygit2.Commit) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            top = commit.tree[INVENTORY.rstrip("/")]
        except KeyError:
            return out

        def walk(tree: pygit2.Tree, prefix: str) -> None:
            for e in tree:
                if e.type_str == "tree":
                    sub = self.repo[e.id]
                    assert isinstance(sub, pygit2.Tree)
                    walk(sub, f"{prefix}{e.name}/")
                else:
                    out[f"{prefix}{e.name}"] = str(e.id)

        tree = self.repo[top.id]
        assert isinstance(tree, pygit2.Tree)
        walk(tree, INVENTORY)
        return out

    def changed(self, parent: pygit2.Commit, commit: pygit2.Commit) -> dict[str, str | None]:
        """Inventory paths that differ: path -> new blob id, None when deleted."""
        out: dict[str, str | None] = {}
        try:
            if parent.tree[INVENTORY.rstrip("/")].id == commit.tree[INVENTORY.rstrip("/")].id:
                return out  # the same inventory tree: nothing to diff
        except KeyError:
            pass  # no inventory on one side: the diff says what changed
        for d in parent.tree.diff_to_tree(commit.tree).deltas:
            if d.old_file.path.startswith(INVENTORY):
                out.setdefault(d.old_file.path, None)
            if d.new_file.path.startswith(INVENTORY) and d.status_char() != "D":
                out[d.new_file.path] = str(d.new_file.id)
        return out

    # -- one commit -------------------------------------------------------------------
    def evaluate(
        self, commit: pygit2.Commit, snap: Snapshot, changes: dict[str, str | None] | None
    ) -> tuple[bool, int, dict[str, str] | None]:
        """Apply `changes` (None: `snap` is empty, read the whole tree) to `snap` in place.
        Returns (valid, declared version_floor, the digests of the MACs whose content may
        have changed — None when every MAC must be compared)."""
        if changes is None:
            changes = dict(self.listing(commit))
            everything = True
        else:
            everything = False
        touched: set[str] = set()  # device paths to layer again
        shared = False  # fleet, secrets, a profile or a model changed
        for path, oid in changes.items():
            kind = kind_of(path)
            if oid is None:
                snap.files.pop(path, None)
                snap.problems.pop(path, None)
                snap.docs.pop(path, None)
            else:
                snap.files[path] = oid
            if kind == DEVICE:
                touched.add(path)
                continue
            if kind is None:
                continue
            shared = True
            if oid is not None:
                doc, problems = self.doc(path, oid)
                if problems:
                    snap.problems[path] = problems
                else:
                    snap.problems.pop(path, None)
                if doc is not None:
                    snap.docs[path] = doc
                else:
                    snap.docs.pop(path, None)
        layers = self.layers(snap)
        if shared and layers is not None:
            # Which devices the changed shared files reach: all of them for the fleet
            # settings or secrets; a profile's or a model's users otherwise.
            profiles = {stem(p) for p in changes if kind_of(p) == PROFILE}
            models = {stem(p) for p in changes if kind_of(p) == MODEL}
            broad = any(kind_of(p) in (FLEET, SECRETS) for p in changes)
            for path, info in snap.devices.items():
                if broad or info.model in models or self._reaches(layers, info.profile, profiles):
                    touched.add(path)
        macs_changed: dict[str, str] = {}
        self.compiled = {}
        focus = self.focus
        for path in touched:
            old = snap.devices.get(path)
            if focus is not None and old is not None and old.mac != focus and path not in changes:
                continue  # log: another device whose file did not change
            if old is not None:
                del snap.devices[path]
                if focus is None:
                    snap.index(old, -1)
                if focus is None or old.mac == focus:
                    macs_changed.setdefault(old.mac, ABSENT)
            oid = snap.files.get(path)
            if oid is None:
                snap.problems.pop(path, None)
                continue
            doc, problems = self.doc(path, oid)
            problems = list(problems)
            new: DevInfo | None = None
            if doc is not None and not problems and layers is not None:
                data = doc.data
                mac = normalise_mac(data["mac"]) or ""
                if focus is not None and mac != focus:
                    # log: kept for its MAC only (a later shared change skips it)
                    new = DevInfo(mac, data["model"], data.get("profile"), "", (), ABSENT)
                else:
                    try:
                        c = compile_device(layers, doc)
                        new = DevInfo(
                            c.mac,
                            data["model"],
                            data.get("profile"),
                            c.file_name,
                            c.registrations,
                            content_digest(c, layers.sealed),
                        )
                        self.compiled[c.mac] = c
                    except (FloorError, KeyError, TypeError, ValueError) as exc:
                        problems.append(f"{path}: {exc}")
            if problems:
                snap.problems[path] = problems
            else:
                snap.problems.pop(path, None)
            if new is not None:
                snap.devices[path] = new
                if focus is None:
                    snap.index(new, +1)
                if focus is None or new.mac == focus:
                    macs_changed[new.mac] = new.digest
        fleet = snap.docs.get(INVENTORY + "gitprov.yaml")
        declared = int(fleet.data.get("version_floor", 0)) if fleet is not None else 0
        valid = (
            layers is not None
            and not snap.problems
            and (self.focus is not None or snap.clashes == 0)
        )
        return valid, declared, None if everything else macs_changed

    @staticmethod
    def _reaches(layers: Layers, profile: str | None, changed: set[str]) -> bool:
        if not changed:
            return False
        try:
            return any(stem(d.path) in changed for d in layers.chain(profile))
        except FloorError:
            return True

    def layers(self, snap: Snapshot) -> Layers | None:
        fleet = snap.docs.get(INVENTORY + "gitprov.yaml")
        if fleet is None:
            return None
        secrets = snap.docs.get(INVENTORY + "secrets.yaml")
        sealed = dict((secrets.data.get("secrets") or {}) if secrets is not None else {})
        profiles = {stem(p): d for p, d in snap.docs.items() if kind_of(p) == PROFILE}
        models = {stem(p): d for p, d in snap.docs.items() if kind_of(p) == MODEL}
        publish = fleet.data.get("publish") or {}
        if publish.get("option66") or publish.get("firmware_dir"):
            raise FloorError("the floor does not implement publish.option66 or firmware")
        for m in models.values():
            if (m.data.get("firmware") or {}).get("file"):
                raise FloorError("the floor does not implement firmware files")
        return Layers(self.catalog, fleet, profiles, models, sealed)

    # -- the pass over the history ----------------------------------------------------
    def run(
        self,
        head: pygit2.Commit,
        known: dict[str, tuple[Snapshot, State]] | None = None,
        observe: Callable[[str, State], None] | None = None,
    ) -> tuple[Snapshot, State]:
        """The snapshot and version state at `head`; `known` holds some commits' results
        (the last publish's), where the walk stops."""
        known = dict(known or {})
        order: list[pygit2.Commit] = []
        seen: set[str] = set(known)
        stack: list[tuple[pygit2.Commit, bool]] = [(head, False)]
        parents_of: dict[str, list[str]] = {}
        while stack:
            commit, expanded = stack.pop()
            cid = str(commit.id)
            if expanded:
                order.append(commit)
                continue
            if cid in seen:
                continue
            seen.add(cid)
            parents = list(commit.parents)
            parents_of[cid] = [str(p.id) for p in parents]
            stack.append((commit, True))
            stack.extend((p, False) for p in reversed(parents))
        # How many children still need each commit's snapshot (first parent) and state.
        first_users: dict[str, int] = {}
        users: dict[str, int] = {}
        for c in order:
            ps = parents_of[str(c.id)]
            if ps:
                first_users[ps[0]] = first_users.get(ps[0], 0) + 1
            for p in ps:
                users[p] = users.get(p, 0) + 1
        snaps: dict[str, Snapshot] = {k: v[0] for k, v in known.items()}
        states: dict[str, State] = {k: v[1] for k, v in known.items()}
        commits = {str(c.id): c for c in order}
        for n, commit in enumerate(order):
            cid = str(commit.id)
            ps = parents_of[cid]
            if ps:
                first = ps[0]
                # The last child takes its first parent's snapshot; the others copy it.
                snap = snaps.pop(first) if first_users[first] == 1 else snaps[first].copy()
                first_users[first] -= 1
                parent_commit = commits.get(first) or self.repo[first]
                assert isinstance(parent_commit, pygit2.Commit)
                valid, declared, changed = self.evaluate(
                    commit, snap, self.changed(parent_commit, commit)
                )
            else:
                snap = empty_snapshot()
                valid, declared, changed = self.evaluate(commit, snap, None)
            parent_states = [states[p] for p in ps]
            floor_min = max((s.floor for s in parent_states), default=0)
            valid = valid and declared >= floor_min
            state = step(cid, parent_states, snap, valid, declared, changed, users, ps)
            states[cid] = state
            if first_users.get(cid) or cid == str(head.id):
                snaps[cid] = snap  # a child continues from it
            if observe is not None:
                observe(cid, state)
            for p in ps:
                users[p] -= 1
                if users[p] == 0:
                    states.pop(p, None)
            if n % 500 == 499:
                print(f"[floor] {n + 1}/{len(order)} commits", file=sys.stderr, flush=True)
        hid = str(head.id)
        return snaps[hid], states[hid]


def step(
    cid: str,
    parents: list[State],
    snap: Snapshot,
    valid: bool,
    declared: int,
    changed: dict[str, str] | None,
    users: dict[str, int],
    parent_ids: list[str],
) -> State:
    """docs/versions.md's rule for one commit from its parents' states."""
    floor = max((p.floor for p in parents), default=0)
    if valid:
        floor = max(floor, declared)
    if len(parents) == 1:
        parent = parents[0]
        # The state's map is handed down a chain rather than copied at every commit.
        keys = parent.keys if users[parent_ids[0]] == 1 else dict(parent.keys)
        if not valid:
            return State(floor, keys, False)
        if changed is None or not parent.valid:
            # Compare every MAC: the parent's digests are not its snapshot's.
            current = {d.mac: d.digest for d in snap.devices.values() if d.digest != ABSENT}
            current.update({mac: ABSENT for mac in keys if mac not in current})
        else:
            current = changed
        for mac, digest in current.items():
            e = keys.get(mac)
            if e is None:
                if digest != ABSENT:
                    keys[mac] = (digest, 1, cid)
            elif e[0] != digest:
                keys[mac] = (digest, e[1] + 1, cid)
        return State(floor, keys, True)
    # A root commit or a merge: every key against every parent.
    if valid:
        digests = {d.mac: d.digest for d in snap.devices.values()}
    else:
        digests = {k: e[0] for k, e in parents[0].keys.items()}
    sources = parents or [State(0, {}, True)]
    names: set[str] = set(digests)
    for p in sources:
        names.update(p.keys)
    keys = {}
    for k in names:
        d = digests.get(k, ABSENT)
        best: Entry | None = None
        for p in sources:
            pd, pn, pby = p.keys.get(k, (ABSENT, 0, ""))
            cand = (d, pn, pby) if pd == d else (d, pn + 1, cid)
            if (
                best is None
                or cand[1] > best[1]
                or (cand[1] == best[1] and best[2] == cid and cand[2] != cid)
            ):
                best = cand
        assert best is not None
        if best != (ABSENT, 0, ""):
            keys[k] = best
    return State(floor, keys, valid)


def versions_of(state: State) -> dict[str, tuple[int, str]]:
    """MAC -> (version, the commit that set it); without option 66 there is no lift."""
    return {mac: (state.floor + n, by) for mac, (d, n, by) in state.keys.items() if d != ABSENT}


# -- publish -------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """One syncfs(2) for every file written below `path` (Python 3.11 has no os.syncfs)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_roots(roots: list[Path], files: dict[str, bytes], remove: Iterable[str]) -> None:
    """Temps without fsync, one syncfs per root, the renames, an fsync of the directory."""
    gone = list(remove)
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
        temps = []
        for name, data in files.items():
            tmp = root / f".floor-{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.fchmod(fd, 0o644)  # served by nginx and tftpd: world-readable
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            temps.append((tmp, root / name))
        syncfs(root)
        for tmp, target in temps:
            os.replace(tmp, target)
        for name in gone:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(root / name)
        fsync_dir(root)


@dataclass
class Saved:
    """What the floor keeps after a publish: enough to take the next commit as one more
    step of the version pass, and to write only files that changed."""

    format: int
    commit: str
    snapshot: Snapshot
    state: State
    published: dict[str, tuple[str, int, str]]  # MAC -> (file name, version, digest)


def load_saved(state_dir: Path) -> Saved | None:
    try:
        with open(state_dir / STATE_FILE, "rb") as f:
            saved = pickle.load(f)
    except FileNotFoundError:
        return None
    if not isinstance(saved, Saved) or saved.format != STATE_FORMAT:
        return None
    return saved


def store_saved(state_dir: Path, saved: Saved) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (STATE_FILE + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(saved, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state_dir / STATE_FILE)
    fsync_dir(state_dir)


def private_key(args: argparse.Namespace) -> str:
    path = args.private_key_file or os.environ.get("GITPROV_PRIVATE_KEY_FILE")
    text = os.environ.get("GITPROV_PRIVATE_KEY") or (Path(path).read_text() if path else "")
    keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not keys:
        raise FloorError("no private key (GITPROV_PRIVATE_KEY_FILE)")
    return keys[0]


def cmd_publish(repo: pygit2.Repository, args: argparse.Namespace) -> int:
    commit = repo.revparse_single(args.rev).peel(pygit2.Commit)
    cid = str(commit.id)
    state_dir = Path(args.state_dir)
    saved = load_saved(state_dir)
    if saved is not None and saved.commit == cid:
        print(f"{cid[:12]} is already published")
        return 0
    engine = Engine(repo)
    known = {saved.commit: (saved.snapshot, saved.state)} if saved is not None else None
    snap, state = engine.run(commit, known)
    if not state.valid or snap.problems or snap.clashes:
        for problems in snap.problems.values():
            for p in problems:
                print(p, file=sys.stderr)
        raise FloorError(f"{cid[:12]} does not validate")
    layers = engine.layers(snap)
    assert layers is not None
    key_text = private_key(args)
    plain_secrets: dict[str, str] = {}

    def resolve(name: str) -> str:
        hit = plain_secrets.get(name)
        if hit is None:
            hit = plain_secrets[name] = unseal(key_text, name, layers.sealed[name])
        return hit

    devices = snap.macs()
    numbers = versions_of(state)
    before = saved.published if saved is not None else {}
    published: dict[str, tuple[str, int, str]] = {}
    files: dict[str, bytes] = {}
    masters: dict[str, str] = {}
    paths: dict[str, str] | None = None
    for mac, info in devices.items():
        version = numbers[mac][0]
        entry = (info.file_name, version, info.digest)
        published[mac] = entry
        if before.get(mac) == entry:
            continue  # same name, number and content: the served file is right
        c = engine.compiled.get(mac)
        if c is None:  # content unchanged but renumbered, or evaluated at an older commit
            if paths is None:
                paths = {d.mac: p for p, d in snap.devices.items()}
            path = paths[mac]
            doc = engine.doc(path, snap.files[path])[0]
            assert doc is not None
            c = compile_device(layers, doc)
        passphrase = None
        if isinstance(c.key, Secret):
            passphrase = resolve(c.key.name)
        elif c.key is not None:
            master = masters.get(c.key[0])
            if master is None:
                master = masters[c.key[0]] = resolve(c.key[0])
            passphrase = derive_device_key(master, mac)
        plain = f"{VERSION_KEY}={version}\n".encode() + body(c, resolve, passphrase)
        files[c.file_name] = c.cipher.encrypt(plain, passphrase or "") if passphrase else plain
    names = {e[0] for e in published.values()}
    gone = {e[0] for e in before.values()} - names
    write_roots([Path(r) for r in (*args.http_root, *args.tftp_root)], files, gone)
    store_saved(state_dir, Saved(STATE_FORMAT, cid, snap, state, published))
    print(f"published {cid[:12]}: {len(files)} file(s) written, {len(gone)} removed")
    return 0


# -- validate, versions, log, blame ----------------------------------------------------------
def highest_floor(repo: pygit2.Repository, commit: pygit2.Commit) -> int:
    """The highest version_floor of the ancestors: one tree lookup per commit, each
    distinct fleet file parsed once."""
    best = 0
    seen: dict[str, int] = {}
    for c in repo.walk(commit.id):
        if c.id == commit.id:
            continue
        try:
            oid = str(c.tree[INVENTORY + "gitprov.yaml"].id)
        except KeyError:
            continue
        if oid not in seen:
            blob = repo[oid]
            assert isinstance(blob, pygit2.Blob)
            doc = parse("gitprov.yaml", oid, blob.data)[0]
            value = doc.data.get("version_floor") if doc is not None else None
            seen[oid] = value if isinstance(value, int) else 0
        best = max(best, seen[oid])
    return best


def check_commit(engine: Engine, commit: pygit2.Commit) -> tuple[Snapshot, list[str]]:
    snap = empty_snapshot()
    engine.evaluate(commit, snap, None)
    problems = [p for ps in snap.problems.values() for p in ps]
    if engine.layers(snap) is None:
        problems.append("inventory/gitprov.yaml: missing or unreadable")
    for what, table in snap.counts.items():
        for key, n in table.items():
            if n > 1:
                problems.append(f"duplicate {what} {key.replace(chr(0), ' ')!r}: {n} devices")
    fleet = snap.docs.get(INVENTORY + "gitprov.yaml")
    if fleet is not None:
        declared = fleet.data.get("version_floor", 0)
        highest = highest_floor(engine.repo, commit)
        if isinstance(declared, int) and declared < highest:
            problems.append(f"inventory/gitprov.yaml: version_floor {declared} is below {highest}")
    return snap, problems


def cmd_validate(repo: pygit2.Repository, args: argparse.Namespace) -> int:
    commit = repo.revparse_single(args.rev).peel(pygit2.Commit)
    snap, problems = check_commit(Engine(repo), commit)
    for p in problems:
        print(p)
    if not problems:
        print(f"ok: {len(snap.files)} file(s), no problems")
    return 1 if problems else 0


def cmd_versions(repo: pygit2.Repository, args: argparse.Namespace) -> int:
    commit = repo.revparse_single(args.rev).peel(pygit2.Commit)
    _, state = Engine(repo).run(commit)
    rows = sorted(versions_of(state).items())
    if args.format == "json":
        json.dump([{"mac": m, "version": v, "commit": by} for m, (v, by) in rows], sys.stdout)
        print()
    else:
        for mac, (v, by) in rows:
            print(f"{mac:<14} {v:>9}  {by[:12]}")
    return 0


def cmd_log(repo: pygit2.Repository, args: argparse.Namespace) -> int:
    mac = normalise_mac(args.mac)
    if mac is None:
        raise FloorError(f"not a MAC: {args.mac}")
    head = repo.revparse_single(args.rev).peel(pygit2.Commit)
    chain: list[str] = []
    c = head
    while True:
        chain.append(str(c.id))
        if not c.parent_ids:
            break
        c = c.parents[0]
    on_chain = set(chain)
    seen: dict[str, tuple[str, int, str] | None] = {}

    def observe(cid: str, state: State) -> None:
        if cid in on_chain:
            e = state.keys.get(mac)
            seen[cid] = (e[0], state.floor + e[1], e[2]) if e and e[0] != ABSENT else None

    Engine(repo, focus=mac).run(head, observe=observe)
    last: tuple[str, int, str] | None = None
    changes: list[dict[str, Any]] = []  # oldest first
    for cid in reversed(chain):
        now = seen.get(cid)
        if now == last:
            continue
        if now is None:
            gone = {"commit": cid, "set_by": cid, "event": "removed", "dbase_version": None}
            changes.append(gone)
        else:
            event = "added" if last is None else "changed" if now[0] != last[0] else "renumbered"
            # A number set by a floor raise or a merge is this commit's doing.
            set_by = now[2] if event != "renumbered" else cid
            changes.append(
                {"commit": cid, "set_by": set_by, "event": event, "dbase_version": now[1]}
            )
        last = now
    changes.reverse()
    if args.format == "json":
        json.dump({"mac": mac, "changes": changes}, sys.stdout)
        print()
        return 0
    for change in changes:
        by = repo[change["set_by"]]
        assert isinstance(by, pygit2.Commit)
        summary = by.message.splitlines()[0] if by.message else ""
        number = change["dbase_version"]
        version = f"version {number}" if number else "removed"
        who = by.author.name
        print(f"{change['set_by'][:12]}  {version:<14} {change['event']:<10} {who}: {summary}")
    return 0


def cmd_blame(repo: pygit2.Repository, args: argparse.Namespace) -> int:
    mac = normalise_mac(args.mac)
    head = repo.revparse_single(args.rev).peel(pygit2.Commit)
    engine = Engine(repo)
    snap, problems = check_commit(engine, head)
    if problems:
        raise FloorError(f"{str(head.id)[:12]} does not validate")
    layers = engine.layers(snap)
    assert layers is not None
    path = next((p for p, d in snap.devices.items() if d.mac == mac), None)
    if path is None:
        raise FloorError(f"no device {mac}")
    doc = engine.doc(path, snap.files[path])[0]
    assert doc is not None
    model = doc.data["model"]
    mdoc = layers.models[model]
    count = int(mdoc.data["line_count"])
    # Which layer set each value: the layers again, recording the document and path.
    origin: dict[str, tuple[Doc, Path_]] = {}
    origin_line: dict[str, dict[int, tuple[Doc, Path_]]] = {}
    for layer in [layers.fleet, *layers.chain(doc.data.get("profile")), mdoc, doc]:
        for name, value in (layer.data.get("params") or {}).items():
            param = layers.catalog.lookup(name)
            key = param.key if param else name
            if value is None:
                origin.pop(key, None)
            else:
                origin[key] = (layer, ("params", name))
        for slot, item in enumerate(layer.data.get("lines") or ()):
            if slot >= count or not item:
                continue
            for name, value in item.items():
                lparam = layers.catalog.lookup_line(name)
                slots = origin_line.setdefault(lparam.key if lparam else name, {})
                if value is None:
                    slots.pop(slot, None)
                else:
                    slots[slot] = (layer, ("lines", slot, name))
    origin["DBID_PROFILE_RULE"] = (layers.fleet, ("provisioning", "url"))
    blames: dict[str, Any] = {}
    rows = []
    c = compile_device(layers, doc)
    for key, parts in c.entries:
        if isinstance(parts, tuple):
            where = [origin_line[key][s] for s in sorted(origin_line.get(key, {}))]
            shown = "\t".join("<redacted>" if isinstance(p, Secret) else p for p in parts)
        else:
            where = [origin[key]] if key in origin else []
            shown = "<redacted>" if isinstance(parts, Secret) else parts
        if key == "DBID_PROFILE_RULE" and c.key is not None:
            shown = "[--key <redacted>]" + shown
        if not where:
            rows.append({"key": key, "value": shown, "origin": "catalog default", "commit": None})
        done: set[tuple[str, int]] = set()
        for layer, at in where:
            line = line_of(layer, at)
            if (layer.path, line) in done:
                continue  # several lines of a per-line value set in one place
            done.add((layer.path, line))
            if layer.path not in blames:
                blames[layer.path] = repo.blame(layer.path, newest_commit=head.id)
            hunk = blames[layer.path].for_line(line)
            origin_at = f"{layer.path}:{line}"
            commit_id = str(hunk.final_commit_id)
            rows.append({"key": key, "value": shown, "origin": origin_at, "commit": commit_id})
    if args.format == "json":
        json.dump({"mac": mac, "params": rows}, sys.stdout)
        print()
        return 0
    for r in rows:
        who = ""
        if r["commit"]:
            who = f"  ({r['commit'][:12]} {repo[r['commit']].author.name})"
        print(f"{r['key']}={r['value']}\n    from {r['origin']}{who}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--private-key-file")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish")
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--http-root", action="append", default=[])
    p.add_argument("--tftp-root", action="append", default=[])
    p.add_argument("--state-dir", required=True)
    p = sub.add_parser("validate")
    p.add_argument("--rev", default="HEAD")
    p = sub.add_parser("versions")
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--format", choices=["text", "json"], default="text")
    for name in ("log", "blame"):
        p = sub.add_parser(name)
        p.add_argument("mac")
        p.add_argument("--rev", default="HEAD")
        p.add_argument("--format", choices=["text", "json"], default="text")
    args = ap.parse_args(argv)
    repo = pygit2.Repository(args.repo)
    commands: dict[str, Callable[[pygit2.Repository, argparse.Namespace], int]] = {
        "publish": cmd_publish,
        "validate": cmd_validate,
        "versions": cmd_versions,
        "log": cmd_log,
        "blame": cmd_blame,
    }
    try:
        return commands[args.command](repo, args)
    except FloorError as exc:
        print(f"floor: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
