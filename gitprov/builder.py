"""Building device files: compile, render, version and encrypt each device of a
validated inventory, and the content digests that versions compare.

The pipeline (gitprov/pipeline.py) loads, validates and evaluates the history; what it
hands over here is an inventory and its version state. A `Builder` keeps what makes the
next commit cost what it changed: each device's digest by the blob ids of everything it
inherits, and each device's files by its digest, version and manifest entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from gitprov import stage as staging
from gitprov import version as versioning
from gitprov.catalog import Catalog
from gitprov.compile import (
    MARK,
    Compiler,
    DeviceConfig,
    SecretResolver,
    compile_device,
    fill,
    placeholder_resolver,
    redact,
)
from gitprov.crypto import Cipher, Mode, derive_device_key
from gitprov.errors import GitprovError, InvalidInventory, Level, Problem, UsageError
from gitprov.formats import RENDERERS, flyingvoice
from gitprov.inventory import SECRETS, Device, Inventory
from gitprov.parallel import can_fork, forked_map, parts, usable_cpus
from gitprov.plan import BOOTSTRAP_KEY
from gitprov.rule_url import key_problem
from gitprov.secrets import VALUE_MAX, SecretError, public_key_of, unseal
from gitprov.unsafe import unsafe_in

Progress = Callable[[str, int, int], None]
# The files a previous build made for a device from the same inputs (MAC, build key,
# private key id), or None: a fresh process's way to carry unchanged devices over.
Prior = Callable[[str, tuple[str, ...], str], "list[DeviceFile] | None"]


@dataclass(frozen=True, slots=True)
class DeviceFile:
    mac: str
    name: str  # file name in every root
    data: bytes  # what is published: the encrypted file, or the plaintext when mode is none
    version: int
    set_by: str  # commit id that set this version
    model: str
    # "current", or "previous": the old path of a key rotation, same content, old key.
    role: str = "current"
    body_sha256: str = ""  # sha256 of the plaintext without the version line
    plain_sha256: str = ""  # sha256 of the plaintext
    # The plaintext, when the build was asked to keep it (it holds every secret, and a
    # fleet's worth of it is a fleet's worth of memory).
    kept: bytes | None = None
    secret_lines: tuple[int, ...] = ()  # the body lines that hold a secret

    def __reduce__(self) -> tuple[type[DeviceFile], tuple[object, ...]]:
        # From a worker by its fields: pickle's default for a slotted dataclass (a state
        # dict per object) costs more than making the file did.
        return DeviceFile, _DEVICE_FILE_FIELDS(self)

    @property
    def plaintext(self) -> bytes:
        if self.kept is None:
            raise ValueError(f"{self.mac}: the build did not keep the plaintext")
        return self.kept

    @property
    def redacted(self) -> bytes:
        """The plaintext with secrets replaced, for humans."""
        lines = self.plaintext.decode("utf-8").split("\n")
        for i in self.secret_lines:
            key, _, value = lines[i + 1].partition("=")  # after the version line
            lines[i + 1] = f"{key}={redact(key, value)}"
        return "\n".join(lines).encode("utf-8")


class BootstrapFile(NamedTuple):
    """A model's option-66 Config File Name file (plaintext, common to its devices)."""

    name: str
    models: tuple[str, ...]
    data: bytes
    version: int
    set_by: str
    body_sha256: str


class Build(NamedTuple):
    commit: str
    inventory: Inventory
    files: tuple[DeviceFile, ...]  # sorted by MAC
    bootstraps: tuple[BootstrapFile, ...] = ()
    floor: int = 0  # the effective version_floor (the highest of the history)
    stages: tuple[staging.StageFile, ...] = ()  # key delivery's per-MAC stage files
    # Whether every device file carries its version state's number (a --force may raise
    # one above it): what lets a later publish take files over by the version deltas.
    exact: bool = True


BOOTSTRAP = versioning.BOOTSTRAP  # the version key of the option-66 files


def bootstrap_files(inv: Inventory) -> dict[str, tuple[tuple[str, ...], bytes]]:
    """Option-66 file name -> (the models it serves, its body without the version line).

    Models the settings name but the inventory lacks, or a missing provisioning.url, are
    validation errors (GP301, GP302; publish checks again); here they produce no file."""
    fleet = inv.fleet
    if fleet.option66 is False or not fleet.provisioning_url:
        return {}
    names = sorted(inv.models) if fleet.option66 is True else list(fleet.option66)
    rule = staging.bootstrap_rule(fleet)
    models: dict[str, list[str]] = {}
    for m in names:
        if m in inv.models:
            models.setdefault(inv.models[m].config_file_name, []).append(m)
    body = flyingvoice.bootstrap_body(rule)
    return {name: (tuple(ms), body) for name, ms in sorted(models.items())}


@dataclass(frozen=True, slots=True)
class Template:
    """One device compiled and rendered once, its secrets as markers (gitprov.compile
    `symbol`): the version digest, the body hash, the published file and the redacted
    copy all derive from it. Holds no secret."""

    mac: str
    model: str
    file_name: str
    cipher: Cipher
    body: str  # the rendered body (no version line), with markers
    key: str | None  # the passphrase, as a marker; None when mode is none
    previous: tuple[str, str | None] | None  # key rotation: (old file name, old passphrase)
    secret_lines: tuple[int, ...]  # the body lines that hold a secret

    def __reduce__(self) -> tuple[type[Template], tuple[object, ...]]:
        return Template, _TEMPLATE_FIELDS(self)

    def digest(self, placeholder: SecretResolver) -> str:
        """What versions compare: everything that decides the published bytes but the
        version line, with each secret stood in by `placeholder` (a digest of its sealed
        text), device keys derived from those."""
        value = self._values(placeholder)
        prev = self.previous
        if prev is not None and prev[1] is not None:
            prev = (prev[0], fill(prev[1], value))
        cipher = self.cipher
        head = f"{self.file_name}\0{prev}\0{cipher.mode}:{cipher.iterations}:{cipher.gzip}\0"
        return hashlib.sha256(head.encode() + fill(self.body, value).encode()).hexdigest()

    def _values(self, resolve: SecretResolver) -> Callable[[str], str]:
        mac = self.mac
        seen: dict[str, str] = {}  # a derived key appears in the body and as the passphrase

        def value(marker: str) -> str:
            hit = seen.get(marker)
            if hit is None:
                hit = resolve(marker[1:])
                if marker[0] == "k":
                    hit = derive_device_key(hit, mac)
                seen[marker] = hit
            return hit

        return value


_DEVICE_FILE_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(DeviceFile)))
_TEMPLATE_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(Template)))


def template(compiler: Compiler, device: Device) -> Template:
    cfg = compiler.compile(device)
    if cfg.family not in RENDERERS:
        raise GitprovError(f"{device.mac}: no renderer for device family {cfg.family!r}")
    secret = tuple(i for i, e in enumerate(cfg.entries) if e.secret)
    body = flyingvoice.body_template(cfg)
    return Template(
        cfg.mac, cfg.model, cfg.file_name, cfg.cipher, body, cfg.key, cfg.previous, secret
    )


def finish(
    tpl: Template,
    resolve: SecretResolver,
    info: versioning.VersionInfo,
    served: Served,
    force: bool,
    conflicts: list[Conflict],
    keep_plaintext: bool,
) -> list[DeviceFile]:
    """The device's published file(s) from its template, the real secrets and its
    version; [] when the version conflicts with what the roots served."""
    value = tpl._values(resolve)
    body = fill(tpl.body, value).encode("utf-8")
    body_sha = hashlib.sha256(body).hexdigest()
    before = len(conflicts)
    version = _served_version(tpl.mac, info, body_sha, served, force, conflicts)
    if len(conflicts) > before:
        return []
    plain = flyingvoice.render_lines([(flyingvoice.VERSION_KEY, str(version))]) + body
    plain_sha = hashlib.sha256(plain).hexdigest()
    kept = plain if keep_plaintext else None
    # (a key the Profile Rule could not carry was refused before: `_check_own_keys`; a
    # derived one is always letters and digits)
    key = fill(tpl.key, value) if tpl.key is not None else None
    out = [
        DeviceFile(
            tpl.mac,
            tpl.file_name,
            _encrypt(tpl.cipher, plain, key, tpl.mac),
            version,
            info.commit,
            tpl.model,
            "current",
            body_sha,
            plain_sha,
            kept,
            tpl.secret_lines,
        )
    ]
    if tpl.previous is not None:
        old_name, old_key = tpl.previous
        old = fill(old_key, value) if old_key is not None else None
        out.append(
            DeviceFile(
                tpl.mac,
                old_name,
                _encrypt(tpl.cipher, plain, old, tpl.mac),
                version,
                info.commit,
                tpl.model,
                "previous",
                body_sha,
                plain_sha,
                kept,
                tpl.secret_lines,
            )
        )
    return out


class Builder:
    """Digests and device files of inventories, with the caches that carry over from one
    commit to the next.

    Each device is compiled and rendered once per commit: `digests` keeps the templates
    it made for the last inventory it saw, and `build` finishes those (or makes them, if
    the versions came from the cache)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._digests: dict[tuple[str, ...], str] = {}
        self._templates: dict[tuple[str, ...], Template] = {}
        self._built: dict[tuple[object, ...], list[DeviceFile]] = {}
        # Of the last build: each MAC's build key, and the private key's id.
        self.inputs: dict[str, tuple[str, ...]] = {}
        self.key_id = ""
        self._compiler: Compiler | None = None
        # Processes that compile, render and encrypt (see `_map`): 1 keeps all work here.
        self.workers = usable_cpus()

    def compile(self, inv: Inventory, device: Device, resolve: SecretResolver) -> DeviceConfig:
        return compile_device(device, inv, self.catalog, resolve)

    def _symbolic(self, inv: Inventory) -> Compiler:
        if self._compiler is None or self._compiler.inv is not inv:
            self._compiler = Compiler.symbolic(inv, self.catalog, origins=False)
        return self._compiler

    def _keys(self, inv: Inventory) -> list[tuple[str, ...]]:
        """Each device's cache key: the blob ids of everything it is compiled from."""
        fleet_oid = inv.fleet.doc.oid
        secrets_oid = hashlib.sha256(repr(sorted(inv.sealed.items())).encode()).hexdigest()
        chains: dict[str | None, tuple[str, ...]] = {}
        out = []
        for device in inv.devices:
            chain = chains.get(device.profile)
            if chain is None:
                chain = tuple(p.doc.oid for p in inv.profile_chain(device.profile))
                chains[device.profile] = chain
            model_oid = inv.models[device.model].doc.oid
            out.append((device.path, device.oid, model_oid, fleet_oid, secrets_oid, *chain))
        return out

    def input_keys(self, inv: Inventory) -> dict[str, tuple[str, ...]]:
        """Each device's build inputs, by MAC: the blob ids of everything it is compiled
        from (what `Build` records as the inputs of the devices it made)."""
        return {d.mac: key for d, key in zip(inv.devices, self._keys(inv), strict=True)}

    def digests(self, inv: Inventory) -> dict[str, str]:
        """Each version key's content digest: devices (version line excluded, secrets as
        sealed digests) and option-66 files."""
        placeholder = _memo(placeholder_resolver(inv.sealed))
        keys = self._keys(inv)
        todo = [i for i, key in enumerate(keys) if key not in self._digests]
        if todo:
            compiler = self._symbolic(inv)
            devices = inv.devices

            def job(part: Sequence[int]) -> list[tuple[Template, str]]:
                out = []
                for i in part:
                    tpl = template(compiler, devices[i])
                    out.append((tpl, tpl.digest(placeholder)))
                return out

            made: dict[tuple[str, ...], Template] = {}
            for part, results in self._map(job, todo):
                for i, (tpl, digest) in zip(part, results, strict=True):
                    self._digests[keys[i]] = digest
                    made[keys[i]] = tpl
            # The next build is most likely of this inventory: it finishes these.
            self._templates = made
        out = {d.mac: self._digests[key] for d, key in zip(inv.devices, keys, strict=True)}
        boots = bootstrap_files(inv)
        if boots:
            # One key for all of them: they carry the same rule, whatever their names.
            body = next(iter(boots.values()))[1]
            out[BOOTSTRAP] = hashlib.sha256(b"bootstrap\0" + body).hexdigest()
            if staging.mode(inv.fleet) is not None:
                out[BOOTSTRAP] = versioning.STAGED + out[BOOTSTRAP]
        return out

    def _pool_size(self, count: int) -> int:
        """The workers for `count` devices: below 2, no pool."""
        if not can_fork():
            return 1
        return min(self.workers, count // PARALLEL_MIN)

    def _map(
        self, job: Callable[[Sequence[int]], list[_T]], todo: Sequence[int]
    ) -> Iterator[tuple[Sequence[int], list[_T]]]:
        """(part, job(part)) for consecutive parts of `todo`, in order: over a pool of
        forked workers when that pays, else here."""
        workers = self._pool_size(len(todo))
        if workers < 2:
            for i in range(0, len(todo), CHUNK_MIN):  # parts: progress as it goes
                part = todo[i : i + CHUNK_MIN]
                yield part, job(part)
            return
        chunks = [todo[r.start : r.stop] for r in parts(len(todo), workers, CHUNK_MIN)]
        yield from zip(chunks, _forked(job, chunks, workers), strict=True)

    def build(
        self,
        commit: str,
        inv: Inventory,
        state: versioning.State,
        private_key: str | None,
        served: Served | None = None,
        *,
        force: bool = False,
        progress: Progress | None = None,
        keep_plaintext: bool = True,
        prior: Prior | None = None,
    ) -> Build:
        """Compile, render and encrypt every device and option-66 file of a validated
        inventory at `commit`, numbered by its version `state`.

        `prior` gives what an earlier build made from a device's same inputs (see
        `key_id`): such a device is taken over, not compiled, when its version and
        what was served give it the same number (only without `keep_plaintext`).

        `served` (key -> (highest version ever served, its body sha256), from the
        manifest, removed devices included) is what the roots already gave devices. A
        number from the rule below it (or equal to it with other content) would be
        ignored by the devices: without `force` that is a VersionConflict naming the
        version_floor that continues the sequence; with `force` the number is raised
        just enough. Without `served`, the rule's numbers as they are.

        Without `keep_plaintext` the files carry the plaintext's hash but not the
        plaintext (nor the redacted copy made from it)."""
        devices = inv.devices
        vers = state.versions_of([*(d.mac for d in devices), BOOTSTRAP])
        served = served or {}
        if private_key is not None:
            # Also when nothing needs a secret (no device yet): a commit that swaps
            # public_key is refused before anyone seals a secret to it.
            _check_key_pair(inv, private_key)
        resolve = secret_resolver(inv, private_key)
        key_id = key_id_of(private_key)
        files: list[DeviceFile] = []
        built: dict[tuple[object, ...], list[DeviceFile]] = {}
        conflicts: list[Conflict] = []
        templates, self._templates = self._templates, {}
        compiler = self._symbolic(inv)
        dkeys = self._keys(inv)
        keys: list[tuple[object, ...]] = []
        results: list[list[DeviceFile] | None] = []
        todo: list[int] = []
        for i, (device, dkey) in enumerate(zip(devices, dkeys, strict=True)):
            info = vers[device.mac]
            # Same inputs (content, file name, cipher, sealed secrets) and version give the
            # same bytes when what was served since leaves the number as it is
            # (`_carried`): a watcher re-renders only what changed.
            key: tuple[object, ...] = (
                device.mac,
                dkey,
                info.version,
                info.commit,
                key_id,
                keep_plaintext,
            )
            keys.append(key)
            hit = _carried(self._built.get(key), info, served, force)
            if hit is None and prior is not None and not keep_plaintext:
                hit = _carried(prior(device.mac, dkey, key_id), info, served, force)
            results.append(hit)
            if hit is None:
                todo.append(i)

        if private_key is not None:
            _check_own_keys(inv, [devices[i] for i in todo], resolve)

        def job(part: Sequence[int]) -> list[tuple[list[DeviceFile], list[Conflict]]]:
            out = []
            for i in part:
                device = devices[i]
                tpl = templates.pop(dkeys[i], None) or template(compiler, device)
                found: list[Conflict] = []
                made = finish(tpl, resolve, vers[device.mac], served, force, found, keep_plaintext)
                out.append((made, found))
            return out

        if self._pool_size(len(todo)) > 1:
            _unseal_first(templates, resolve)
        done = len(devices) - len(todo)
        exact = True
        for part, made in self._map(job, todo):
            for i, (device_files, found) in zip(part, made, strict=True):
                results[i] = device_files
                conflicts.extend(found)
                if device_files and device_files[0].version != vers[device_files[0].mac].version:
                    exact = False  # --force raised it
                templates.pop(dkeys[i], None)  # done in a worker: free it here too
            done += len(part)
            if progress is not None:
                progress("build", done, len(devices))
        templates.clear()
        for ckey, hit in zip(keys, results, strict=True):
            if hit:
                built[ckey] = hit
                files.extend(hit)
        boots = []
        for name, (models, body) in bootstrap_files(inv).items():
            info = vers[BOOTSTRAP]
            body_sha = hashlib.sha256(body).hexdigest()
            version = _served_version(
                BOOTSTRAP_KEY + name, info, body_sha, served, force, conflicts
            )
            data = flyingvoice.render_lines([(flyingvoice.VERSION_KEY, str(version))]) + body
            boots.append(BootstrapFile(name, models, data, version, info.commit, body_sha))
        if conflicts:
            raise VersionConflict(commit, state.floor, conflicts)
        self._built = built
        self.inputs = {d.mac: k for d, k in zip(devices, dkeys, strict=True)}
        self.key_id = key_id
        stages = staging.stage_files(inv, files, boots, resolve)
        return Build(commit, inv, tuple(files), tuple(boots), state.floor, stages, exact)


def _check_own_keys(inv: Inventory, devices: Sequence[Device], resolve: SecretResolver) -> None:
    """Refuse, located at each one's `key:`, the devices whose own key their Profile
    Rule cannot carry as it is (gitprov.rule_url.key_problem): validation cannot see
    inside a sealed value, and the check where the files are made knows only a MAC."""
    found = []
    for device in devices:
        if device.key is None:
            continue
        enc = inv.fleet.encryption.merged(inv.models[device.model].encryption)
        if Mode(enc.mode) is Mode.NONE:
            continue
        name = device.key.name
        reason = key_problem(resolve(name))
        if reason is None:
            continue
        line, col = device.doc.pos(("key",))
        found.append(
            Problem(
                device.path,
                line,
                col,
                "GP010",
                Level.ERROR,
                f"key: the secret {name!r} cannot be written into the device's Profile "
                f"Rule [--key KEY]: {reason}",
                f"set {name} to letters and digits (`gitprov secrets set {name}`), or "
                "derive the device's key from encryption.master_key (no `key:`)",
            )
        )
    if found:
        raise InvalidInventory(
            f"{len(found)} device key(s) cannot be carried by a Profile Rule; nothing was "
            "published",
            hint="see each device's key: line",
            problems=tuple(found),
        )


def key_id_of(private_key: str | None) -> str:
    """What tells one private key from another in a build's inputs: a hash of it (kept
    in the state dir, so never the key itself)."""
    return hashlib.sha256(b"gitprov build key\0" + (private_key or "").encode()).hexdigest()


def _carried(
    got: list[DeviceFile] | None,
    info: versioning.VersionInfo,
    served: Served,
    force: bool,
) -> list[DeviceFile] | None:
    """An earlier build's files of a device with the same inputs, when this build would
    number them the same (then the bytes are the same); else None: build it."""
    if not got or any(f.version != info.version or f.set_by != info.commit for f in got):
        return None
    found: list[Conflict] = []
    if _served_version(got[0].mac, info, got[0].body_sha256, served, force, found) != info.version:
        return None
    return None if found else got


_MARKED = re.compile(f"{MARK}[sk]([^{MARK}]*){MARK}")


def _unseal_first(templates: Mapping[tuple[str, ...], Template], resolve: SecretResolver) -> None:
    """Unseal the secrets of these templates here, once, before workers are forked (each
    would unseal them again: a key exchange per secret). In the order a build meets
    them; on an error, no further: the build raises it where it meets it."""
    for tpl in templates.values():
        texts = [tpl.body, tpl.key or ""]
        if tpl.previous is not None:
            texts.append(tpl.previous[1] or "")
        for text in texts:
            for name in _MARKED.findall(text):
                try:
                    resolve(name)
                except GitprovError:
                    return


def _memo(resolve: SecretResolver) -> SecretResolver:
    cache: dict[str, str] = {}

    def memo(name: str) -> str:
        hit = cache.get(name)
        if hit is None:
            hit = cache[name] = resolve(name)
        return hit

    return memo


# key -> (the highest version ever served under it, the sha256 of that file's body)
Served = Mapping[str, tuple[int, str]]


class Conflict(NamedTuple):
    key: str
    computed: int  # the rule's number
    served: int  # the highest number the roots already gave
    same_content: bool


class VersionConflict(GitprovError):
    """The rule gives some device a number the roots already used (or passed): devices
    would ignore the file. Raising version_floor continues the sequence."""

    def __init__(self, commit: str, floor: int, conflicts: list[Conflict]) -> None:
        need = floor + max(c.served - c.computed + (0 if c.same_content else 1) for c in conflicts)
        worst = max(conflicts, key=lambda c: c.served - c.computed)
        what = "the file" if worst.key.startswith(BOOTSTRAP_KEY) else "device"
        super().__init__(
            f"{commit[:12]} would give {len(conflicts)} file(s) a version the served roots "
            f"already passed ({what} {worst.key.removeprefix(BOOTSTRAP_KEY)}: served "
            f"{worst.served}, computed {worst.computed}); devices ignore a version that is "
            "not higher than theirs, so nothing was published",
            hint=f"set `version_floor: {need}` in gitprov.yaml (commit it) to continue the "
            "sequence, or publish with --force to raise only these files' versions",
        )
        self.floor_needed = need
        self.conflicts = tuple(conflicts)


def _served_version(
    key: str,
    info: versioning.VersionInfo,
    body_sha: str,
    served: Served,
    force: bool,
    conflicts: list[Conflict],
) -> int:
    """The rule's number, checked against what the roots already served."""
    old = served.get(key)
    if old is None:
        return info.version
    old_version, old_body = old
    same = body_sha == old_body or not old_body
    if info.version > old_version or (info.version == old_version and same):
        return info.version
    if not force:
        conflicts.append(Conflict(key, info.version, old_version, same))
        return info.version
    # Forced: never lower, never the same number for new content.
    return old_version if same else old_version + 1


def _encrypt(cipher: Cipher, plain: bytes, key: str | None, mac: str) -> bytes:
    if cipher.mode is Mode.NONE:
        return cipher.encrypt(plain, "")
    if key is None:
        # Validation reports a missing key source; never fall back to plaintext.
        raise GitprovError(
            f"{mac}: no encryption key",
            hint="set encryption.master_key in gitprov.yaml or key: on the device",
        )
    return cipher.encrypt(plain, key)


def _check_key_pair(inv: Inventory, private_key: str) -> None:
    """The commit's public_key must be the publisher's: a pull request that swaps in
    another key still publishes (the old values open), but every secret sealed to it
    from then on (`gitprov secrets set` reads public_key) is readable by that key's
    holder and not by the publisher. Refused before anything is built."""
    if inv.public_key is None:
        return
    try:
        mine = public_key_of(private_key)
    except SecretError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    if mine != inv.public_key:
        raise UsageError(
            f"{inv.public_key_at}: public_key {inv.public_key} is not the public half of "
            f"the private key given (that is {mine}); nothing was built",
            hint="if the commit changed public_key, find out who and why: secrets sealed "
            "to it are readable by its holder only; otherwise give the right private key",
        )


def secret_resolver(inv: Inventory, private_key: str | None) -> SecretResolver:
    cache: dict[str, str] = {}
    paired: list[bool] = []  # the key pair is checked once, at the first secret

    def resolve(name: str) -> str:
        if name not in cache:
            if private_key is None:
                raise UsageError(
                    f"secret {name!r} is needed to build device files",
                    hint="give the repository private key: GITPROV_PRIVATE_KEY, "
                    "GITPROV_PRIVATE_KEY_FILE or --private-key-file",
                )
            if not paired:
                _check_key_pair(inv, private_key)
                paired.append(True)
            at = inv.sealed_at.get(name)
            where = f"{at}: " if at else ""
            try:
                value = unseal(private_key, name, inv.sealed[name])
            except SecretError as exc:
                raise UsageError(
                    f"{where}{exc.message}",
                    hint=f"is this the private key of {SECRETS}.yaml's public_key?",
                ) from None
            # Validation cannot see inside a sealed value: GP108's check (and GP109's:
            # a TAB in a line's password shifts the lines after it), here, and a value
            # longer than `secrets set` seals (anyone with the public key can seal one
            # without it). An empty one is a value: `gitprov import` seals a line's empty
            # password as it found it.
            unsafe = unsafe_in(value, tab=True)
            if unsafe is None and len(value.encode("utf-8", "surrogatepass")) > VALUE_MAX:
                unsafe = (f"more than {VALUE_MAX // 2**20} MiB", "no device setting is as long")
            if unsafe is not None:
                what, hint = unsafe
                raise GitprovError(
                    f"{where}secret {name!r} holds {what} (the value is not shown)",
                    hint=f"seal it again: gitprov secrets set {name}; {hint}",
                )
            cache[name] = value
        return cache[name]

    return resolve


# Below these a pool costs more than it saves (forking, and moving every template and
# file through a pipe): a part of the work must be worth a few tens of milliseconds.
PARALLEL_MIN = 1000  # devices per worker
CHUNK_MIN = 250

_T = TypeVar("_T")
# A module attribute: tests count the pools through it.
_forked = forked_map
