"""`gitprov init`: a new inventory repository that validates as it is.

It holds fleet settings with comments, one model file per supported model, a base
profile, sealed secrets (a fresh key pair: the private key is written outside the
repository, mode 0600), a pre-commit hook, editor settings and a short README. Nothing is
committed: the team reviews the files and makes the first commit.
"""

from __future__ import annotations

import json
import os
import re
import secrets as random
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pygit2

from gitprov import DOCS_URL, REPOSITORY_URL, __version__, paths, yamldoc
from gitprov import secrets as sec
from gitprov.errors import UsageError
from gitprov.publish import inside as _inside
from gitprov.schemas import all_schemas, for_editors
from gitprov.source import work_tree_of
from gitprov.unsafe import is_utf8

FLEET = """\
# Fleet settings: the first layer of every device (fleet → profile chain → model → device).
# Every setting: `gitprov schema fleet`, or {docs}/inventory.md
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
    rev: {rev}
    hooks:
      - id: gitprov-validate
"""


def pre_commit_config(action: ActionRef | None) -> str:
    """The hook from where the workflows take gitprov's action, pinned as they pin it
    (by commit, the release in a comment, as `pre-commit autoupdate --freeze` writes it);
    without workflows, gitprov's repository at this release."""
    if action is None:
        return PRE_COMMIT.format(repository=REPOSITORY_URL, rev=f"v{__version__}")
    if not action.sha:
        rev = action.version
    else:
        rev = f"{action.sha}  # frozen: {action.version}" if action.version else action.sha
    return PRE_COMMIT.format(repository=f"https://github.com/{action.repository}", rev=rev)


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
- `inventory/devices/`: one file per device (`mac`, `model`, `profile`, `lines`), named
  by its MAC (`0021f2011b19.yaml`); flat, or grouped in directories at any depth
  (`devices/paris/floor-2/0021f2011b19.yaml`), as suits the fleet: grouped by site, a
  large fleet keeps each directory small, and git compares unchanged sites by one id.
  The served file names do not change.
- `inventory/secrets.yaml`: values sealed to the public key
  (`gitprov secrets set NAME`); only the publisher's private key opens them.
"""


# -- GitHub ---------------------------------------------------------------------------
# The third-party actions of the workflows, pinned by full commit SHA (a tag can be moved
# to other code; a commit cannot), with the release each commit is tagged as. Every pin
# lives here: `gitprov init` writes them, and tests/github_test.py holds this repository's
# own workflows to them. To bump one, take the commit its release tag points at (`git
# ls-remote https://github.com/OWNER/NAME refs/tags/vX.Y.Z`) and run that test.
ACTION_PINS: dict[str, tuple[str, str]] = {
    "actions/checkout": ("de0fac2e4500dabe0009e67214ff5f5447ce83dd", "v6.0.2"),
    "actions/setup-python": ("a309ff8b426b58ec0e2a45f0f869d46889d02405", "v6.2.0"),
    "actions/upload-artifact": ("b7c566a772e6b6bfb58ed0dc250532a479d7789f", "v6.0.0"),
}
# gitprov's own action (action.yml at the top of its repository).
GITHUB_REPOSITORY = REPOSITORY_URL.removeprefix("https://github.com/")
# The self-hosted runner on the provisioning server, which publishes.
RUNNER_LABEL = "provisioning"

_SHA = re.compile(r"[0-9a-f]{40}")
_ACTION_REF = re.compile(r"([\w.-]+/[\w.-]+)@([0-9a-f]{40})(?:\s*#\s*(\S.*))?")
_LABEL = re.compile(r"[A-Za-z0-9][\w.-]*")


@dataclass(frozen=True)
class ActionRef:
    """gitprov's action as the workflows use it: a repository, a commit, its release."""

    repository: str  # owner/name
    sha: str
    version: str  # the release the commit is, for the reader (`# v0.1.0`); "" unknown

    @property
    def uses(self) -> str:
        if not self.sha:
            return f"{self.repository}@{self.version}"
        if not self.version:
            return f"{self.repository}@{self.sha}"
        return f"{self.repository}@{self.sha} # {self.version}"


def release_tag_ref(repository: str = GITHUB_REPOSITORY, version: str = __version__) -> ActionRef:
    """The action by its release tag: what init writes when GitHub cannot be asked for
    the tag's commit (offline, or a network that reaches no GitHub). A tag can be moved;
    the commit cannot, so the note init prints says how to pin it."""
    return ActionRef(repository, "", f"v{version}")


def parse_action_ref(text: str, version: str = "") -> ActionRef:
    """`OWNER/NAME@SHA`, optionally followed by `# VERSION`. Without it the commit is
    written bare: labelled with this gitprov's release, any commit looked like that
    release's to a reviewer."""
    found = _ACTION_REF.fullmatch(text.strip())
    if found is None:
        raise UsageError(
            f"not an action pinned by commit: {text!r}",
            hint=f"write OWNER/NAME@SHA with the full 40-hex commit, e.g. "
            f"{GITHUB_REPOSITORY}@{'0' * 40} # v{__version__}",
        )
    return ActionRef(found[1], found[2], (found[3] or version).strip())


def release_action_ref(
    repository: str = GITHUB_REPOSITORY, version: str = __version__, url: str | None = None
) -> ActionRef:
    """The commit release tag v`version` of gitprov points at, from `git ls-remote`
    (`url` defaults to the repository on GitHub)."""
    url = url or f"https://github.com/{repository}"
    tag = f"refs/tags/v{version}"
    hint = (
        f"pass --action-ref {repository}@SHA with the commit of release v{version}, or "
        "--no-workflows to write no GitHub workflows"
    )
    try:
        done = subprocess.run(
            ["git", "ls-remote", url, tag, f"{tag}^{{}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot ask {url} for v{version}: {exc}", hint=hint) from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or ["git ls-remote failed"]
        raise UsageError(f"cannot ask {url} for v{version}: {reason[0]}", hint=hint)
    refs: dict[str, str] = {}
    for line in done.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        refs[ref] = sha
    # An annotated tag's own id is not a commit; `^{}` names the commit it points at.
    found = refs.get(f"{tag}^{{}}") or refs.get(tag)
    if found is None or _SHA.fullmatch(found) is None:
        raise UsageError(f"{url} has no release tag v{version}", hint=hint)
    return ActionRef(repository, found, f"v{version}")


def pinned(action: str) -> str:
    sha, version = ACTION_PINS[action]
    return f"{action}@{sha} # {version}"


REVIEW_WORKFLOW = """\
# gitprov on every pull request (written by `gitprov init`): validate the inventory, with
# its problems as annotations on the diff, then plan it: per device the diff of its file
# and its version bump, secrets redacted, no private key needed. The plan is one comment
# on the pull request, edited on every push; the job summary and the gitprov-plan
# artifact hold all of it. Actions are pinned by commit; the comment names the release.
name: gitprov review

on:
  pull_request:
    branches: [main]

permissions: {}

concurrency:
  # A newer push makes the plan of an older one stale.
  group: gitprov-review-${{ github.event.pull_request.number }}
  cancel-in-progress: true

jobs:
  review:
    name: validate and plan
    runs-on: ubuntu-24.04
    timeout-minutes: 20
    permissions:
      contents: read
      pull-requests: write  # the plan comment
    steps:
      - uses: @CHECKOUT@
        with:
          fetch-depth: 0  # versions come from the whole history
          persist-credentials: false
      - name: validate
        uses: @GITPROV@
        with:
          command: validate
      - name: plan
        id: plan
        uses: @GITPROV@
        with:
          command: plan
      - name: keep the whole plan
        uses: @UPLOAD_ARTIFACT@
        with:
          name: gitprov-plan
          path: ${{ steps.plan.outputs.plan-json }}
          retention-days: 30
"""

PUBLISH_WORKFLOW = """\
# gitprov on every push to main (written by `gitprov init`): publish the commit into the
# roots of the provisioning server, on that server's self-hosted runner (label
# @LABEL@). What the publisher may do is the server's, not this repository's: the
# runner's .env file sets GITPROV_PUBLISHER_CONFIG (where files go, which paths the
# inventory may name, whose signatures it needs) and GITPROV_PRIVATE_KEY_FILE (a file
# only the runner's user reads). One publish at a time, and a running one is never
# cancelled half-way (gitprov also locks its state dir).
name: gitprov publish

on:
  push:
    branches: [main]

permissions: {}

concurrency:
  group: gitprov-publish
  cancel-in-progress: false

jobs:
  publish:
    name: publish
    runs-on: [self-hosted, @LABEL@]
    timeout-minutes: 30
    permissions:
      contents: read
    steps:
      - uses: @CHECKOUT@
        with:
          fetch-depth: 0  # versions come from the whole history
          persist-credentials: false
      - name: publish
        uses: @GITPROV@
        with:
          command: publish
          rev: ${{ github.sha }}
"""

ACTIONLINT = """\
# actionlint (https://github.com/rhysd/actionlint) knows GitHub's own runner labels; this
# one is the provisioning server's self-hosted runner (gitprov-publish.yml).
self-hosted-runner:
  labels:
    - @LABEL@
"""


def github_files(action: ActionRef, runner_label: str = RUNNER_LABEL) -> dict[str, str]:
    """The workflows of an inventory repository, by path: review on pull requests,
    publish on pushes to main, and actionlint's settings."""
    if _LABEL.fullmatch(runner_label) is None:
        raise UsageError(
            f"not a runner label: {runner_label!r}",
            hint="letters, digits, '.', '_' and '-', as set with the runner's config.sh --labels",
        )
    values = {
        "@CHECKOUT@": pinned("actions/checkout"),
        "@UPLOAD_ARTIFACT@": pinned("actions/upload-artifact"),
        "@GITPROV@": action.uses,
        "@LABEL@": runner_label,
    }

    def fill(template: str) -> str:
        for token, value in values.items():
            template = template.replace(token, value)
        return template

    return {
        ".github/workflows/gitprov-review.yml": fill(REVIEW_WORKFLOW),
        ".github/workflows/gitprov-publish.yml": fill(PUBLISH_WORKFLOW),
        ".github/actionlint.yaml": fill(ACTIONLINT),
    }


@dataclass(frozen=True)
class Initialized:
    top: Path
    files: tuple[str, ...]  # repository-relative
    public_key: str
    private_key_file: Path


def _yaml_text(text: str) -> str:
    """`text` as a YAML value that reads back as that string: plain when gitprov's reader
    reads it so and no other YAML tool would read it otherwise (`Acme`), else
    double-quoted (`"Acme: HQ #1"`, `"yes"`, `"1000"`, `"n"`: GP013 asks quotes of a
    string only by luck, which a fleet named after its directory `n` was)."""
    doc, problems = yamldoc.parse("gitprov.yaml", "", f"k: {text}\n".encode())
    plain = doc is not None and not problems and not doc.ambiguous and doc.data == {"k": text}
    if plain and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)  # (a JSON string is a YAML one)


def check_target(top: Path, private_key_file: Path) -> None:
    """What refuses `top` and the key's path at once, before anything is asked or made:
    an inventory already there, a key file that exists or would be inside the repository."""
    top = paths.absolute(top, "the directory")
    key_path = paths.absolute(private_key_file, "the private key file")
    # (each said with its name here: the checks below would say a loop without it)
    paths.usable(top, "the directory")
    paths.usable(key_path, "the private key file")
    if paths.kind(top, "the directory") not in (None, stat.S_IFDIR):
        raise UsageError(
            f"{top}: cannot make the inventory's directory: a file is in the way",
            hint="give init a new directory, or one without an inventory",
        )
    outer = work_tree_of(top)
    if outer is not None and outer != top.resolve():
        # (its workflows would sit where GitHub never looks, `validate --worktree` there
        # would read the other repository's inventory, and a commit would go into it)
        raise UsageError(
            f"{top} is inside the git repository {outer}: init makes an inventory "
            "repository of its own",
            hint=f"give a directory outside {outer}, or `gitprov init {outer}` to add the "
            "inventory to that repository",
        )
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


def init_inventory(
    top: Path,
    private_key_file: Path,
    name: str | None = None,
    action: ActionRef | None = None,
    runner_label: str = RUNNER_LABEL,
) -> Initialized:
    """Write a new inventory into `top` (a git repository is created if there is none);
    the private key goes to `private_key_file`, which must be outside the repository.
    With `action`, GitHub workflows that use it are written too."""
    top = top.absolute()
    name = name or top.name
    if not is_utf8(name):
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise UsageError(
            f"the fleet's name {shown!r} (the directory's) is not UTF-8, which its files "
            "and key are written in",
            hint="give --name NAME",
        )
    key_path = private_key_file.absolute()
    check_target(top, key_path)
    # Both directories first: a place that cannot take one leaves nothing made.
    _make_dir(
        key_path.parent, "the private key's", "give --private-key-out a path you may write", 0o700
    )
    _make_dir(top, "the inventory's", "give init a new directory, or one without an inventory")
    if pygit2.discover_repository(str(top)) is None:
        pygit2.init_repository(str(top), initial_head="main")
    private, public = sec.generate_keypair()
    sealed = {"fleet_master_key": sec.seal(public, "fleet_master_key", random.token_urlsafe(32))}
    files = {
        "inventory/gitprov.yaml": FLEET.format(name=_yaml_text(name), docs=DOCS_URL),
        "inventory/profiles/base.yaml": BASE_PROFILE,
        "inventory/secrets.yaml": sec.dump_secrets_file(sec.SecretsFile(public, sealed)),
        "inventory/devices/.gitkeep": "",
        ".pre-commit-config.yaml": pre_commit_config(action),
        ".gitignore": "var/\n",
        ".vscode/settings.json": json.dumps(
            {
                "yaml.customTags": ["!secret scalar"],
                # Exactly the files gitprov reads (inventory.kind_of): .yaml or .yml, right
                # in models/ and profiles/ (one in a subdirectory is ignored, GP005, so no
                # schema), in devices/ at any depth (devices/<site>/<mac>.yaml); a dot-
                # directory neither (the globs match no dot-directory either).
                "yaml.schemas": {
                    f"schemas/{kind}.schema.json": [f"inventory/{glob}" for glob in globs]
                    for kind, globs in (
                        ("fleet", ["gitprov.yaml"]),
                        ("model", ["models/*.yaml", "models/*.yml"]),
                        ("profile", ["profiles/*.yaml", "profiles/*.yml"]),
                        ("device", ["devices/**/*.yaml", "devices/**/*.yml"]),
                        ("secrets", ["secrets.yaml"]),
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
    if action is not None:
        files.update(github_files(action, runner_label))
    # For editors (yaml-language-server, check-jsonschema): the schemas, with relative
    # $refs, committed beside the inventory; `gitprov schema --write schemas` renews them.
    for schema_name, schema in all_schemas().items():
        files[f"schemas/{schema_name}"] = json.dumps(for_editors(schema), indent=2) + "\n"
    for rel in files:
        path = top / rel
        # (a symbolic link, even one that points nowhere, in the place of a file or a
        # directory init writes: the file would be written where it points, anywhere)
        for place in (top / Path(*Path(rel).parts[:n]) for n in range(1, len(Path(rel).parts))):
            if place.is_symlink():
                raise UsageError(
                    f"{place} is a symbolic link",
                    hint="init writes into directories of its own: remove the link, or "
                    "choose an empty directory",
                )
        if os.path.lexists(path):
            raise UsageError(f"{path} exists", hint="init makes a new inventory")
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sec.write_key_file(
        key_path, f"# gitprov private key of the {name} inventory: keep it off git\n{private}\n"
    )
    for rel, text in files.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # (O_EXCL: a link made since the check above is refused, never followed)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w") as out:
            out.write(text)
    return Initialized(top, tuple(sorted(files)), public, key_path)


def _make_dir(path: Path, whose: str, hint: str, mode: int = 0o777) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as exc:
        why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        raise UsageError(f"{path}: cannot make {whose} directory: {why}", hint=hint) from None
