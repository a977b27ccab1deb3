"""Building device files: compile, render, version and encrypt each device of a
validated inventory, and the content digests that versions compare.

The pipeline (gitprov/pipeline.py) loads, validates and evaluates the history; what it
hands over here is an inventory and its version state. A `Builder` keeps what makes the
next commit cost what it changed: each device's digest by the blob ids of everything it
inherits, and each device's files by its digest, version and manifest entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gitprov import version as versioning
from gitprov.catalog import Catalog
from gitprov.compile import DeviceConfig, SecretResolver, compile_device, placeholder_resolver
from gitprov.crypto import Cipher, Mode
from gitprov.errors import GitprovError, UsageError
from gitprov.formats import flyingvoice, render
from gitprov.inventory import SECRETS, Device, Inventory
from gitprov.plan import BOOTSTRAP_KEY
from gitprov.secrets import SecretError, public_key_of, unseal

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DeviceFile:
    mac: str
    name: str  # file name in every root
    plaintext: bytes
    data: bytes  # what is published: the encrypted file, or the plaintext when mode is none
    version: int
    set_by: str  # commit id that set this version
    model: str
    # "current", or "previous": the old path of a key rotation, same content, old key.
    role: str = "current"
    redacted: bytes = b""  # the plaintext with secrets replaced, for humans
    body_sha256: str = ""  # sha256 of the plaintext without the version line


@dataclass(frozen=True)
class BootstrapFile:
    """A model's option-66 Config File Name file (plaintext, common to its devices)."""

    name: str
    models: tuple[str, ...]
    data: bytes
    version: int
    set_by: str
    body_sha256: str


@dataclass(frozen=True)
class Build:
    commit: str
    inventory: Inventory
    files: tuple[DeviceFile, ...]  # sorted by MAC
    bootstraps: tuple[BootstrapFile, ...] = ()
    floor: int = 0  # the effective version_floor (the highest of the history)


BOOTSTRAP = versioning.BOOTSTRAP  # the version key of the option-66 files


def bootstrap_files(inv: Inventory) -> dict[str, tuple[tuple[str, ...], bytes]]:
    """Option-66 file name -> (the models it serves, its body without the version line).

    Models the settings name but the inventory lacks, or a missing provisioning.url, are
    reported by publish (GP301, GP302); here they only produce no file."""
    fleet = inv.fleet
    if fleet.option66 is False or not fleet.provisioning_url:
        return {}
    names = sorted(inv.models) if fleet.option66 is True else list(fleet.option66)
    rule = fleet.provisioning_url.rstrip("/") + "/" + fleet.file_name
    models: dict[str, list[str]] = {}
    for m in names:
        if m in inv.models:
            models.setdefault(inv.models[m].config_file_name, []).append(m)
    body = flyingvoice.bootstrap_body(rule)
    return {name: (tuple(ms), body) for name, ms in sorted(models.items())}


class Builder:
    """Digests and device files of inventories, with the caches that carry over from one
    commit to the next."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._digests: dict[tuple[str, ...], str] = {}
        self._built: dict[tuple[object, ...], list[DeviceFile]] = {}

    def compile(self, inv: Inventory, device: Device, resolve: SecretResolver) -> DeviceConfig:
        return compile_device(device, inv, self.catalog, resolve)

    def digests(self, inv: Inventory) -> dict[str, str]:
        """Each version key's content digest: devices (version line excluded, secrets as
        sealed digests) and option-66 files."""
        resolve = placeholder_resolver(inv.sealed)
        fleet_oid = inv.fleet.doc.oid
        secrets_oid = self._secrets_oid(inv)
        out = {}
        chains: dict[str | None, tuple[str, ...]] = {}
        for device in inv.devices:
            model = inv.models[device.model]
            chain = chains.get(device.profile)
            if chain is None:
                chain = tuple(p.doc.oid for p in inv.profile_chain(device.profile))
                chains[device.profile] = chain
            key = (device.doc.path, device.doc.oid, model.doc.oid, fleet_oid, secrets_oid, *chain)
            digest = self._digests.get(key)
            if digest is None:
                cfg = self.compile(inv, device, resolve)
                # Everything that decides the published bytes, bar the version line.
                text = (
                    f"{cfg.file_name}\0{cfg.previous}\0{cfg.cipher.mode}:"
                    f"{cfg.cipher.iterations}:{cfg.cipher.gzip}\0".encode()
                    + flyingvoice.body(cfg)
                )
                digest = hashlib.sha256(text).hexdigest()
                self._digests[key] = digest
            out[device.mac] = digest
        boots = bootstrap_files(inv)
        if boots:
            # One key for all of them: they carry the same rule, whatever their names.
            body = next(iter(boots.values()))[1]
            out[BOOTSTRAP] = hashlib.sha256(b"bootstrap\0" + body).hexdigest()
        return out

    @staticmethod
    def _secrets_oid(inv: Inventory) -> str:
        return hashlib.sha256(repr(sorted(inv.sealed.items())).encode()).hexdigest()

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
    ) -> Build:
        """Compile, render and encrypt every device and option-66 file of a validated
        inventory at `commit`, numbered by its version `state`.

        `served` (key -> (highest version ever served, its body sha256), from the
        manifest, removed devices included) is what the roots already gave devices. A
        number from the rule below it (or equal to it with other content) would be
        ignored by the devices: without `force` that is a VersionConflict naming the
        version_floor that continues the sequence; with `force` the number is raised
        just enough. Without `served`, the rule's numbers as they are."""
        vers = state.versions()
        digests = self.digests(inv)
        served = served or {}
        resolve = secret_resolver(inv, private_key)
        key_id = hashlib.sha256((private_key or "").encode()).hexdigest()
        files: list[DeviceFile] = []
        built: dict[tuple[object, ...], list[DeviceFile]] = {}
        conflicts: list[Conflict] = []
        total = len(inv.devices)
        for done, device in enumerate(inv.devices, start=1):
            if progress is not None:
                progress("build", done, total)
            info = vers[device.mac]
            # Same digest (content, file name, cipher, sealed secrets), version and manifest
            # entry give the same bytes: a watcher re-renders only what changed.
            key = (
                device.mac,
                digests[device.mac],
                info.version,
                info.commit,
                key_id,
                served.get(device.mac),
                force,
            )
            hit = self._built.get(key)
            if hit is None:
                hit = self._build_device(inv, device, resolve, info, served, force, conflicts)
            if hit:
                built[key] = hit
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
        return Build(commit, inv, tuple(files), tuple(boots), state.floor)

    def _build_device(
        self,
        inv: Inventory,
        device: Device,
        resolve: SecretResolver,
        info: versioning.VersionInfo,
        served: Served,
        force: bool,
        conflicts: list[Conflict],
    ) -> list[DeviceFile]:
        cfg = self.compile(inv, device, resolve)
        body_sha = hashlib.sha256(flyingvoice.body(cfg)).hexdigest()
        before = len(conflicts)
        version = _served_version(device.mac, info, body_sha, served, force, conflicts)
        if len(conflicts) > before:
            return []
        plain = render(cfg, version)
        shown = flyingvoice.render(cfg, version, redact=True)
        data = _encrypt(cfg.cipher, plain, cfg.key, device.mac)
        out = [
            DeviceFile(
                device.mac,
                cfg.file_name,
                plain,
                data,
                version,
                info.commit,
                cfg.model,
                redacted=shown,
                body_sha256=body_sha,
            )
        ]
        if cfg.previous is not None:
            old_name, old_key = cfg.previous
            out.append(
                DeviceFile(
                    device.mac,
                    old_name,
                    plain,
                    _encrypt(cfg.cipher, plain, old_key, device.mac),
                    version,
                    info.commit,
                    cfg.model,
                    "previous",
                    shown,
                    body_sha,
                )
            )
        return out


# key -> (the highest version ever served under it, the sha256 of that file's body)
Served = Mapping[str, tuple[int, str]]


@dataclass(frozen=True)
class Conflict:
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
            try:
                value = unseal(private_key, name, inv.sealed[name])
            except SecretError as exc:
                raise UsageError(
                    exc.message, hint=f"is this the private key of {SECRETS}.yaml's public_key?"
                ) from None
            # Validation cannot see inside a sealed value: GP108's check, here.
            unsafe = flyingvoice.UNSAFE.search(value)
            if unsafe is not None:
                raise GitprovError(
                    f"secret {name!r} holds {flyingvoice.describe(unsafe.group())} "
                    "(the value is not shown)",
                    hint=f"seal it again without it: gitprov secrets set {name}",
                )
            cache[name] = value
        return cache[name]

    return resolve
