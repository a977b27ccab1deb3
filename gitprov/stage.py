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

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gitprov.compile import require_rule_key
from gitprov.crypto import Mode, derive_device_key
from gitprov.errors import GitprovError
from gitprov.formats import flyingvoice
from gitprov.inventory import Device, Fleet, Inventory
from gitprov.macros import escape
from gitprov.rule_url import joined, url_base

# What stage files are made from, by shape: the builder (gitprov.builder) imports this
# module, so its types cannot be imported back.


class _DeviceFile(Protocol):
    @property
    def mac(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def set_by(self) -> str: ...
    @property
    def role(self) -> str: ...


class _Bootstrap(Protocol):
    @property
    def models(self) -> tuple[str, ...]: ...
    @property
    def version(self) -> int: ...


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
        return url_base(url) if url.startswith("https://") else None
    if fleet.key_delivery == PLAINTEXT_BOOTSTRAP:
        return url_base(fleet.provisioning_url)
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
        return joined(fleet.provisioning_url, fleet.file_name)
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


class _Staged(Protocol):
    @property
    def inventory(self) -> Inventory: ...
    @property
    def stages(self) -> tuple[StageFile, ...]: ...


def stage_files(
    inv: Inventory,
    files: Sequence[_DeviceFile],
    bootstraps: Sequence[_Bootstrap],
    resolve: Resolve,
) -> tuple[StageFile, ...]:
    """The stage file of every device a bootstrap serves (its model is in
    publish.option66), when the fleet stages; () otherwise."""
    fleet = inv.fleet
    if mode(fleet) is None or not bootstraps:
        return ()
    assert fleet.provisioning_url is not None
    url = url_base(fleet.provisioning_url)
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
        rule = f"{url}/{escape(f.name)}"  # an expanded name: the device expands again
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
        return require_rule_key(resolve(device.key.name), device.mac, device.key.name)
    if enc.master_key is not None:
        return derive_device_key(resolve(enc.master_key.name), device.mac)
    return None


def plain(build: _Staged) -> tuple[StageFile, ...]:
    """The stage files that go into the plain HTTP and TFTP roots (plaintext-bootstrap)."""
    if build.inventory.fleet.key_delivery != PLAINTEXT_BOOTSTRAP:
        return ()
    return build.stages


def secured(build: _Staged) -> tuple[StageFile, ...]:
    """The stage files that go into the stage root only (https-stage)."""
    if build.inventory.fleet.key_delivery != HTTPS_STAGE:
        return ()
    return build.stages
