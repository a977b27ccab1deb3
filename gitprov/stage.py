"""Key delivery: how a factory-fresh device that arrives by DHCP option 66 learns its key.

The option-66 bootstrap (a model's Config File Name, e.g. `IP542N.conf`) is one plaintext
file common to every device of the model, so it cannot carry a per-device key. The fleet
setting `publish.key_delivery` (docs/key-delivery.md) chooses what happens next:

- `manual` (the default): the bootstrap points the device at its encrypted per-MAC file;
  the key must reach the device another way (staging, the web UI).
- `https-stage`: the bootstrap points the device at its own stage file,
  `stage-<file name>` under `provisioning.stage_url` (HTTPS). That file is published into
  a root of its own (`publish.stage_root` or `--stage-root`) that only an HTTPS server
  with client certificates serves, and only to the certificate naming that MAC.
- `plaintext-bootstrap`: the same stage file, published into the plain HTTP and TFTP
  roots next to the per-MAC files: anyone who knows a MAC reads its key (validation
  warns, GP131).

A stage file turns option 66 off and sets the device's Profile Rule to exactly the one
its per-MAC file carries (`[--key KEY]URL/FILE`):

    DBID_DBASE_VERSION=<the device's version - 1>
    DBID_PRV_OPTION66_ENABLED=0
    DBID_PROFILE_RULE=[--key KEY]<provisioning.url>/<file name>

Versions: with staging on, the bootstrap's version digest carries `version.STAGED`, and
every device number is one higher (gitprov.version.number), so that bootstrap < stage <
device for every device: the device applies all three in turn. A stage file changes only
when its device's key or Profile Rule does, and then the device's own number goes up, so
the stage's number (one below it) does too.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gitprov.crypto import Mode, derive_device_key
from gitprov.errors import GitprovError, UsageError
from gitprov.formats import flyingvoice
from gitprov.inventory import Device, Fleet, Inventory
from gitprov.journal import Recorder

if TYPE_CHECKING:
    from gitprov.builder import BootstrapFile, Build, DeviceFile
    from gitprov.publish import PublishResult, Targets

MANUAL = "manual"
HTTPS_STAGE = "https-stage"
PLAINTEXT_BOOTSTRAP = "plaintext-bootstrap"
MODES = (MANUAL, HTTPS_STAGE, PLAINTEXT_BOOTSTRAP)

PREFIX = "stage-"  # a stage file's name: this + the device's file name
STATE_SUBDIR = "stage"  # the stage root's manifest and lock: STATE_DIR/stage


def stage_base(fleet: Fleet) -> str | None:
    """The base URL devices fetch their stage file from, or None when the fleet stages
    nothing (manual, or a setting missing: GP131 reports it)."""
    if not fleet.provisioning_url:
        return None
    if fleet.key_delivery == HTTPS_STAGE:
        url = fleet.stage_url or fleet.provisioning_url
        return url.rstrip("/") if url.startswith("https://") else None
    if fleet.key_delivery == PLAINTEXT_BOOTSTRAP:
        return fleet.provisioning_url.rstrip("/")
    return None


def mode(fleet: Fleet) -> str | None:
    """The key delivery in effect for the bootstrap files: https-stage,
    plaintext-bootstrap, or None (manual, or not usable)."""
    return fleet.key_delivery if stage_base(fleet) is not None else None


def bootstrap_rule(fleet: Fleet) -> str:
    """The Profile Rule the option-66 bootstrap files carry (macros left to the device):
    to the device's stage file when staging, else to its per-MAC file. Needs
    provisioning.url."""
    assert fleet.provisioning_url is not None
    base = stage_base(fleet)
    if base is None:
        return fleet.provisioning_url.rstrip("/") + "/" + fleet.file_name
    return f"{base}/{PREFIX}{fleet.file_name}"


def stage_name(file_name: str) -> str:
    """The stage file of the device whose per-MAC file is `file_name`."""
    return PREFIX + file_name


@dataclass(frozen=True, slots=True)
class StageFile:
    """One device's stage file: plaintext, it holds the device's key."""

    mac: str
    model: str
    name: str
    data: bytes
    version: int
    set_by: str
    body_sha256: str

    def __repr__(self) -> str:  # the data holds a key
        return f"StageFile({self.name!r}, version={self.version})"


Resolve = Callable[[str], str]


def stage_files(
    inv: Inventory,
    files: Sequence[DeviceFile],
    bootstraps: Sequence[BootstrapFile],
    resolve: Resolve,
) -> tuple[StageFile, ...]:
    """The stage file of every device a bootstrap serves (its model is in
    publish.option66), when the fleet stages; () otherwise."""
    fleet = inv.fleet
    if mode(fleet) is None or not bootstraps:
        return ()
    assert fleet.provisioning_url is not None
    url = fleet.provisioning_url.rstrip("/")
    floor_of = {m: b.version for b in bootstraps for m in b.models}
    devices = {d.mac: d for d in inv.devices}
    out = []
    for f in files:
        if f.role != "current" or f.model not in floor_of:
            continue
        version = f.version - 1
        if version <= floor_of[f.model]:
            # Only a --force publish can lift a bootstrap this far; devices would skip
            # the stage file.
            raise GitprovError(
                f"{f.mac}: its stage file would get version {version}, not above the "
                f"bootstrap's {floor_of[f.model]}",
                hint="raise version_floor in gitprov.yaml (commit it) and publish again",
            )
        key = _key(inv, devices[f.mac], resolve)
        rule = f"{url}/{f.name}"
        if key is not None:
            rule = f"[--key {key}]{rule}"
        body = flyingvoice.bootstrap_body(rule)
        data = flyingvoice.render_lines([(flyingvoice.VERSION_KEY, str(version))]) + body
        out.append(
            StageFile(
                f.mac,
                f.model,
                stage_name(f.name),
                data,
                version,
                f.set_by,
                hashlib.sha256(body).hexdigest(),
            )
        )
    return tuple(out)


def _key(inv: Inventory, device: Device, resolve: Resolve) -> str | None:
    """The device's key as its per-MAC file is encrypted with (gitprov.compile does the
    same): its own `key:`, else derived from the master key; None when unencrypted."""
    enc = inv.fleet.encryption.merged(inv.models[device.model].encryption)
    if Mode(enc.mode) is Mode.NONE:
        return None
    if device.key is not None:
        return resolve(device.key.name)
    if enc.master_key is not None:
        return derive_device_key(resolve(enc.master_key.name), device.mac)
    return None


def plain(build: Build) -> tuple[StageFile, ...]:
    """The stage files that go into the plain HTTP and TFTP roots (plaintext-bootstrap)."""
    if build.inventory.fleet.key_delivery != PLAINTEXT_BOOTSTRAP:
        return ()
    return build.stages


def secured(build: Build) -> tuple[StageFile, ...]:
    """The stage files that go into the stage root only (https-stage)."""
    if build.inventory.fleet.key_delivery != HTTPS_STAGE:
        return ()
    return build.stages


# -- the stage root -------------------------------------------------------------------


def check_stage_root(stage_root: Path, roots: Iterable[Path], state_dir: Path) -> None:
    """The stage root must be served by nothing that serves without a client
    certificate: never a plain root, inside one or holding one, nor the state dir."""
    from gitprov.publish import inside

    for root in roots:
        if inside(stage_root, root) or inside(root, stage_root):
            raise UsageError(
                f"the stage root {stage_root} and the served root {root} overlap: stage "
                "files hold device keys and must be served only over HTTPS with client "
                "certificates",
                hint="give the stage root a directory of its own, beside the HTTP and TFTP "
                "roots (e.g. /srv/gitprov/stage)",
            )
    if inside(stage_root, state_dir) or inside(state_dir, stage_root):
        raise UsageError(
            f"the stage root {stage_root} and the state dir {state_dir} overlap",
            hint="the manifest lists every MAC: keep the stage root beside the state dir",
        )


def stage_targets(where: Targets) -> Targets:
    """Where the stage root's own publication goes: the stage root, with its manifest in
    STATE_DIR/stage."""
    from gitprov.publish import Targets

    assert where.stage_root is not None
    return Targets((where.stage_root,), where.state_dir / STATE_SUBDIR)


def stage_build(build: Build) -> Build:
    """`build` as the stage root's publication: its stage files (https-stage; none
    otherwise, which empties the stage root), no bootstrap and no firmware."""
    from gitprov.builder import Build, DeviceFile

    inv = build.inventory
    fleet = dataclasses.replace(inv.fleet, option66=False)
    files = tuple(
        DeviceFile(
            s.mac,
            s.name,
            s.data,
            s.version,
            s.set_by,
            s.model,
            "current",
            s.body_sha256,
            hashlib.sha256(s.data).hexdigest(),
            s.data,
        )
        for s in secured(build)
    )
    bare = dataclasses.replace(inv, fleet=fleet, models={})
    return Build(build.commit, bare, files, (), build.floor)


def needs_stage_root(build: Build, where: Targets) -> None:
    """https-stage without a stage root publishes nothing: the bootstrap would send new
    devices to stage files that do not exist."""
    if secured(build) and where.stage_root is None:
        fleet = build.inventory.fleet
        line, col = fleet.doc.pos(("publish", "key_delivery"))
        raise UsageError(
            f"{fleet.doc.path}:{line}:{col}: publish.key_delivery is https-stage, but no "
            "stage root is given; nothing was published",
            hint="set publish.stage_root in gitprov.yaml or pass --stage-root DIR (a "
            "directory only the HTTPS server with client certificates serves)",
        )


def publish_stage(
    build: Build,
    where: Targets,
    *,
    lock_wait: float = 0.0,
    prune_unknown: bool = False,
    verify: bool = False,
    inputs: dict[str, str] | None = None,
    recorder: Recorder | None = None,
) -> PublishResult | None:
    """Publish the stage files of `build` into the stage root (its own manifest and lock,
    in STATE_DIR/stage), before the bootstrap that leads devices there; None when there
    is no stage root."""
    from gitprov.publish import publish

    needs_stage_root(build, where)
    if where.stage_root is None:
        return None
    return publish(
        stage_build(build),
        stage_targets(where),
        lock_wait=lock_wait,
        prune_unknown=prune_unknown,
        verify=verify,
        inputs=inputs,
        recorder=recorder,
    )


def stage_intact(where: Targets, commit: str, *, verify: bool = False) -> bool:
    """Whether the stage root holds the stage files of `commit` as written (or there is
    no stage root): what lets a publish of an already published commit stop early."""
    from gitprov.plan import intact, load_manifest

    if where.stage_root is None:
        return True
    manifest = load_manifest(where.state_dir / STATE_SUBDIR)
    if manifest is None or manifest.commit != commit:
        return False
    if {str(r) for r in manifest.roots} != {str(where.stage_root)}:
        return False
    digests = {n: e.sha256_data for n, e in manifest.files.items()} if verify else None
    return intact(manifest.roots, commit, set(manifest.files), digests) is not None
