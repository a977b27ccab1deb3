"""`gitprov init`: a new inventory repository that validates as it is.

It holds fleet settings with comments, one model file per supported model, a base
profile, sealed secrets (a fresh key pair: the private key is written outside the
repository, mode 0600), a pre-commit hook, editor settings and a short README. Nothing is
committed: the team reviews the files and makes the first commit.
"""

from __future__ import annotations

import json
import os
import secrets as random
from dataclasses import dataclass
from pathlib import Path

import pygit2

from gitprov import REPOSITORY_URL, __version__
from gitprov import secrets as sec
from gitprov.errors import UsageError
from gitprov.publish import inside as _inside
from gitprov.schemas import all_schemas, for_editors

FLEET = """\
# Fleet settings: the first layer of every device (fleet → profile chain → model → device).
# Every setting: docs/inventory.md of gitprov, or `gitprov schema fleet`.
fleet: {name}
# The lowest DBID_DBASE_VERSION: a device's version is this + the number of times its
# file changed in the history. Raise it to jump past versions devices already hold;
# never lower it (GP113).
version_floor: 1000
# Each device's file name in the HTTP and TFTP roots; macros as the device expands them.
file_name: "fv$(MA).conf"
provisioning:
  # Devices resync from URL/FILE; each device's Profile Rule carries its own key.
  url: "http://provisioning.example.net"
publish:
  # Relative paths are relative to this repository's top; the publisher may override
  # them (--http-root, --tftp-root, --state-dir).
  http_root: var/http
  tftp_root: var/tftp
  state_dir: var/state
encryption:
  mode: openssl-md5
  # Each device's key is derived from this secret and its MAC (HKDF).
  master_key: !secret fleet_master_key
"""

MODELS = {
    "IP542N": """\
description: Flying Voice IP542N IP phone
family: flyingvoice
product_name: IP542N
# The option-66 Config File Name the device asks a TFTP server for.
config_file_name: IP542N.conf
line_count: 4
""",
    "G502N": """\
description: Flying Voice G502N ATA
family: flyingvoice
product_name: G502N
# The option-66 Config File Name the device asks a TFTP server for.
config_file_name: G502N.conf
line_count: 2
""",
}

BASE_PROFILE = """\
description: SIP service every device uses
params:
  sip.server: sip.example.net
  sip.server_port: 5060
"""

PRE_COMMIT = """\
# Validate the inventory before each commit (https://pre-commit.com): run
# `pre-commit install` once per clone. The hook installs gitprov at `rev` into an
# environment of its own; keep `rev` at the release the publisher runs.
repos:
  - repo: {repository}
    rev: v{version}
    hooks:
      - id: gitprov-validate
"""

README = """\
# {name}: the provisioning inventory

Devices, profiles and models of the {name} fleet, compiled by gitprov into the files the
devices download. Change them in a pull request; what merges to main is published.

    gitprov validate --worktree     # check what you edit
    gitprov plan --base main        # what a branch changes, per device
    git add -A && git commit        # the first commit makes versions start

- `inventory/gitprov.yaml`: fleet settings (where files are published, encryption).
- `inventory/models/`: one file per device model.
- `inventory/profiles/`: named parameter sets; `extends:` another profile.
- `inventory/devices/`: one file per device (`mac`, `model`, `profile`, `lines`).
- `inventory/secrets.yaml`: values sealed to the public key
  (`gitprov secrets set NAME`); only the publisher's private key opens them.
"""


@dataclass(frozen=True)
class Initialized:
    top: Path
    files: tuple[str, ...]  # repository-relative
    public_key: str
    private_key_file: Path


def init_inventory(top: Path, private_key_file: Path, name: str | None = None) -> Initialized:
    """Write a new inventory into `top` (a git repository is created if there is none);
    the private key goes to `private_key_file`, which must be outside the repository."""
    top = top.absolute()
    name = name or top.name
    key_path = private_key_file.absolute()
    if _inside(key_path, top):
        raise UsageError(
            f"the private key file {key_path} would be inside the repository",
            hint="keep it outside (default ~/.config/gitprov/NAME.key); it opens every secret",
        )
    inventory = top / "inventory"
    if inventory.exists():
        raise UsageError(
            f"{inventory} exists", hint="init makes a new inventory; choose an empty directory"
        )
    if key_path.exists():
        raise UsageError(f"{key_path} exists", hint="never overwrite a key: choose another path")
    top.mkdir(parents=True, exist_ok=True)
    if pygit2.discover_repository(str(top)) is None:
        pygit2.init_repository(str(top), initial_head="main")
    private, public = sec.generate_keypair()
    sealed = {"fleet_master_key": sec.seal(public, "fleet_master_key", random.token_urlsafe(32))}
    files = {
        "inventory/gitprov.yaml": FLEET.format(name=name),
        "inventory/profiles/base.yaml": BASE_PROFILE,
        "inventory/secrets.yaml": sec.dump_secrets_file(sec.SecretsFile(public, sealed)),
        "inventory/devices/.gitkeep": "",
        ".pre-commit-config.yaml": PRE_COMMIT.format(
            repository=REPOSITORY_URL, version=__version__
        ),
        ".gitignore": "var/\n",
        ".vscode/settings.json": json.dumps(
            {
                "yaml.customTags": ["!secret scalar"],
                "yaml.schemas": {
                    f"schemas/{kind}.schema.json": [f"inventory/{where}"]
                    for kind, where in (
                        ("fleet", "gitprov.yaml"),
                        ("model", "models/*.yaml"),
                        ("profile", "profiles/*.yaml"),
                        ("device", "devices/**/*.yaml"),
                        ("secrets", "secrets.yaml"),
                    )
                },
            },
            indent=2,
        )
        + "\n",
        "README.md": README.format(name=name),
    }
    for model, text in MODELS.items():
        files[f"inventory/models/{model}.yaml"] = text
    # For editors (yaml-language-server, check-jsonschema): the schemas, with relative
    # $refs, committed beside the inventory; `gitprov schema --write schemas` renews them.
    for schema_name, schema in all_schemas().items():
        files[f"schemas/{schema_name}"] = json.dumps(for_editors(schema), indent=2) + "\n"
    for rel in files:
        path = top / rel
        if path.exists():
            raise UsageError(f"{path} exists", hint="init makes a new inventory")
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# gitprov private key of the " + name + " inventory: keep it off git\n")
        f.write(private + "\n")
    for rel, text in files.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Initialized(top, tuple(sorted(files)), public, key_path)

