"""Apply a build to the served roots atomically (docs/design.md, invariant 3).

Every new file is first written in full to a dot-named temp file in its target directory
(never served: the embedded servers refuse dot-files). When every temp is written, one
syncfs(2) per filesystem holding a root makes them all durable at once (an fsync per file
was a third of a large publish; where there is no syncfs, each temp is fsynced); only
then are they renamed over their targets, one `os.replace` each, so a reader always sees
a complete old or a complete new file. Removals follow, then one fsync per root
directory; the manifest is written last (itself fsynced), in the state dir outside the
roots. A crash at any moment leaves each served file whole, and publishing again
converges.

Only files whose bytes change are written: the manifest records each served file's
size, mtime and inode as written, and a file whose stat still matches is not read again
(`verify` reads them all). Publishing the commit the manifest names, with the same
inputs, into roots found intact stops there: nothing is loaded, validated or built.

Each root is handled on its own: a root that cannot be written (full disk, an edge
server's mount gone) keeps its last good files and is recorded in the manifest as lagging;
the other roots still converge, and the next publish retries the lagging one.

What is published in every root: the per-MAC device files; with `publish.option66`, each
model's Config File Name file (a plaintext bootstrap that points devices at their per-MAC
file); with `publish.firmware_dir`, each model's `firmware.file`.

Where the files go is the operator's choice, not the inventory's: paths the publisher is
given (command line, its config file) are taken as they are; paths from the inventory's
`publish:` settings only inside the roots the operator allows (`PathPolicy`). Before
anything is written, `publish_commit` applies the operator's `Guards`: the commit's
signature, a change of where files go, and the share of devices it would remove.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import os
import posixpath
import re
import secrets
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import pygit2

from gitprov import DOCS_URL, __version__, journal, rootwatch, statejson
from gitprov import stage as staging
from gitprov.builder import Builder, key_id_of
from gitprov.change import Change, change_since
from gitprov.errors import GitprovError, InvalidInventory, Problem, UsageError, error
from gitprov.firmware import upgrade_of
from gitprov.headstart import LOCK, HeadStart
from gitprov.inventory import (
    FLEET,
    FLEET_FILE,
    SECRETS_FILE,
    Device,
    Documents,
    Fleet,
    Inventory,
    build_inventory,
)
from gitprov.macros import normalise_mac
from gitprov.overlay import Overlay, apply_changes, updated, whole
from gitprov.paths import UnusablePath, resolved
from gitprov.pipeline import RENDER_FORMAT, Build, DeviceFile, Loaded, Pipeline
from gitprov.plan import (
    MANIFEST,
    TMP_PREFIX,
    TMP_SUFFIX,
    Action,
    Drift,
    EntryTable,
    FileAction,
    Index,
    Kind,
    Manifest,
    ManifestEntry,
    Plan,
    RootState,
    Stat,
    Survey,
    SurveyAhead,
    WantedDigests,
    check_drift,
    file_identity,
    intact,
    is_temp,
    load_index,
    load_manifest,
    manifest_chunks,
    manifest_commit,
    note_listed,
    plan,
    read_served,
    remember_manifest,
    served_versions,
    version_key,
    write_index,
    write_map_ends,
)
from gitprov.rules.file_name import unsafe_reason
from gitprov.secrets import unseal
from gitprov.signatures import SignaturePolicy, verify_commit
from gitprov.source import FileRef
from gitprov.strand import SameSecret, stranding, stranding_of, who
from gitprov.unsafe import line_safe
from gitprov.version import State, missing_commit, require_complete

Progress = Callable[[str, int, int], None]
IsDescendant = Callable[[str, str], bool]
TargetsFor = Callable[[Fleet], "Targets"]  # where a commit's fleet settings publish
KeyFor = Callable[[Inventory], str | None]  # the private key, once the inventory is known
_V = TypeVar("_V")


class PublishError(GitprovError):
    """Writing failed (disk full, permissions, a mount gone): publishing again may work."""


class StateDirError(PublishError):
    """The state dir cannot be made or opened (a file in its place, a name too long): the
    operator's setting to fix (exit 2), not a write that may work next time."""

    exit_code = 2


class RootError(PublishError):
    """A root cannot be a directory (a file, or a device, in its place or above it): the
    operator's setting to fix (exit 2), found before any root is written."""

    exit_code = 2


class Refused(GitprovError):
    """The commit is valid, but a guard of the operator's refuses it (see `Guards`):
    nothing was published, the last good files stay."""


class Guards(NamedTuple):
    """What a commit must pass, besides validation, before `publish_commit` writes it.
    The operator's choices (command line, publisher config), never the inventory's."""

    allow_mass_removal: bool = False  # else: refuse removing more than publish.max_removal
    allow_target_change: bool = False  # else: refuse a commit that moves roots or dirs
    signatures: SignaturePolicy | None = None  # else: unsigned commits publish too
    # else: refuse a commit that changes the file name or key in the devices' Profile Rule
    # without keeping them (gitprov.strand)
    allow_stranding: bool = False


@dataclass(frozen=True)
class Targets:
    roots: tuple[Path, ...]
    state_dir: Path
    firmware_dir: Path | None = None
    # Stage files of key delivery https-stage (gitprov.stage): served by HTTPS with
    # client certificates only, never by a plain root.
    stage_root: Path | None = None

    def __post_init__(self) -> None:
        clash = _clash(self.roots, self.state_dir, self.firmware_dir)
        if clash is not None:
            raise GitprovError(clash.message, hint=clash.hint)
        if self.stage_root is not None:
            check_stage_root(self.stage_root, self.roots, self.state_dir)


class _Clash(NamedTuple):
    settings: tuple[str, ...]  # the publish: settings at fault, the likeliest first
    message: str
    hint: str


def _clash(
    roots: Sequence[Path], state_dir: Path | None, firmware_dir: Path | None
) -> _Clash | None:
    """Why these targets would serve the state dir (the manifest lists every MAC), or
    one root inside another (without `state_dir`, only the latter)."""
    for root in roots:
        for other in roots:
            if other != root and inside(root, other):
                # Each root's files would be the other's strays (verify fails after every
                # publish), and the outer root would serve the inner one's.
                return _Clash(
                    ("tftp_root", "http_root"),
                    f"the served root {root} is inside the served root {other}",
                    "give each root a directory of its own, beside the others "
                    "(e.g. /srv/gitprov/http and /srv/gitprov/tftp)",
                )
    if state_dir is None:
        return None
    for root in roots:
        if inside(state_dir, root):
            return _Clash(
                ("state_dir",),
                f"the state dir {state_dir} is inside the served root {root}",
                "the manifest lists every MAC: keep the state dir beside the roots",
            )
        if inside(root, state_dir):
            # Not served from there, but the state dir is the publisher's alone: a root
            # in it takes a name the publisher writes (manifest.json, watch's mirror.git,
            # fetch.log), and `serve` refuses to serve it.
            return _Clash(
                ("state_dir", "http_root", "tftp_root"),
                f"the served root {root} is inside the state dir {state_dir}",
                "the state dir holds the publisher's own files: give the roots directories "
                "beside it (e.g. /srv/gitprov/http and /var/lib/gitprov)",
            )
    fw = firmware_dir
    if fw is not None and (inside(fw, state_dir) or inside(state_dir, fw)):
        # Firmware is copied into the roots: from there, manifest.json would be too.
        return _Clash(
            ("firmware_dir", "state_dir"),
            f"the firmware dir {fw} and the state dir {state_dir} overlap",
            "the manifest lists every MAC: keep the firmware images elsewhere",
        )
    return None


@dataclass(frozen=True)
class PathPolicy:
    """Where a path of the inventory's `publish:` settings may point. A pull request must
    not choose where the publisher writes: with `allowed` (the operator's allow-list,
    absolute), only inside one of those directories; without, only inside the repository's
    work tree (local use: the example's var/http), and never for a bare repository. Never
    inside the git directory. Symlinks are resolved first: a link in the work tree to
    /etc is /etc."""

    allowed: tuple[Path, ...] = ()
    worktree: Path | None = None
    git_dir: Path | None = None
    # The inventory directory in the work tree: no written path may be in it or hold it
    # (device files among the YAML, a root serving secrets.yaml and gitprov.yaml).
    inventory: Path | None = None

    def __post_init__(self) -> None:
        for root in self.allowed:
            if not root.is_absolute():
                raise UsageError(
                    f"allowed root {root} is not an absolute path",
                    hint="give --allow-root (or allowed_roots, GITPROV_ALLOWED_ROOTS) "
                    "as absolute paths",
                )
            # (every path of the fleet settings is tested against it: a loop found there
            # would be blamed on the setting)
            resolved(root, "the allowed root")

    def check(self, fleet: Fleet, setting: tuple[str | int, ...], path: Path) -> None:
        """Raise Refused unless the inventory may name `path` for `setting`."""
        line, col = fleet.doc.pos(("publish", *setting))
        name = "publish." + "".join(f"[{s}]" if isinstance(s, int) else str(s) for s in setting)
        try:
            real = resolved(path)
        except UnusablePath as exc:
            # (a commit's symlink loop in the work tree, as `var/http -> var/http`: the
            # commit's to fix, like a path outside the allowed roots)
            raise Refused(
                f"{fleet.doc.path}:{line}:{col}: {name} names {path}, which cannot be "
                f"used: {exc.reason}; nothing was published",
                hint=f"fix {name} in {fleet.doc.path}, or the symbolic links it goes "
                "through; or set the roots on the publisher (--http-root, --tftp-root, "
                "--state-dir or a --config file)",
            ) from None
        refused = self._refusal(setting, path)
        if refused is None:
            return
        why, hint = refused
        shown = f"{path}" if real == path else f"{path} (that is {real})"
        raise Refused(
            f"{fleet.doc.path}:{line}:{col}: {name} names {shown}, {why}; nothing was published",
            hint=hint,
        )

    def _refusal(self, setting: tuple[str | int, ...], path: Path) -> tuple[str, str] | None:
        """Why `path` may not be named for `setting`, and what to do; None when it may."""
        if any(part.startswith("~") or "$" in part for part in path.parts):
            # (a directory literally named ~ in the work tree, one `rm -rf ~` away)
            return (
                "with a ~ or a $ that no shell expands here (gitprov does not either)",
                _LITERAL_PATH_HINT,
            )
        operator = ": the publisher's operator decides where it writes"
        if self.allowed:
            if not any(inside(path, root) for root in self.allowed):
                allowed = ", ".join(map(str, self.allowed))
                return f"outside the allowed roots ({allowed}){operator}", _OPERATOR_HINT
        elif self.worktree is None:
            return f"in a bare repository, and no root is allowed{operator}", _OPERATOR_HINT
        elif not inside(path, self.worktree):
            return (
                f"outside the repository's work tree {self.worktree}, and no root is "
                f"allowed{operator}",
                _OPERATOR_HINT,
            )
        if self.git_dir is not None and inside(path, self.git_dir):
            return f"inside the repository's git directory {self.git_dir}", _BESIDE_HINT
        if setting[0] == "firmware_dir":
            return None  # (only read: the rest is about what is written, and served)
        found = self._beside(path)
        if found is None:
            return None
        how, what = found
        return f"{'inside' if how == 'inside' else 'which holds'} {what}", _BESIDE_HINT

    def check_given(self, what: str, path: Path, *, served: bool) -> None:
        """Raise UsageError when a directory the publisher gave (its options, config file
        or environment) to write into is in the git directory or the inventory, or, when
        `served`, holds either: `--http-root .` at the repository's top would serve every
        commit and secrets.yaml, and a state dir in the inventory would sit among its
        files, one `git add` from being committed with them."""
        resolved(path, what)  # (a loop: said with the option's name, not found below)
        found = self._beside(path, served=served)
        if found is not None:
            how, where = found
            raise UsageError(
                f"{what} {path} {'is inside' if how == 'inside' else 'holds'} {where}",
                hint="give a directory beside the inventory and the git directory, "
                "such as var/http, var/tftp and var/state at the repository's top, or "
                "one outside the repository (/srv/gitprov/http)",
            )

    def _beside(self, path: Path, *, served: bool = True) -> tuple[str, str] | None:
        """How `path`, a directory written into, meets the git directory or the
        inventory: ("inside", what) or ("holds", what); None when it does not. Only a
        served directory may not hold them (a state dir may hold a repository: `watch
        --remote` keeps its mirror there)."""
        git_dir, inventory = self.git_dir, self.inventory
        if git_dir is not None and inside(path, git_dir):
            return "inside", f"the repository's git directory {git_dir}"
        if inventory is not None and inside(path, inventory):
            return "inside", f"the inventory directory {inventory}"
        if served and git_dir is not None and inside(git_dir, path):
            return (
                "holds",
                f"the repository's git directory {git_dir} (a root would serve every commit)",
            )
        if served and inventory is not None and inside(inventory, path):
            return "holds", (
                f"the inventory directory {inventory} (a root would serve gitprov.yaml and "
                "secrets.yaml)"
            )
        return None


_OPERATOR_HINT = (
    "set the roots on the publisher (--http-root, --tftp-root, --state-dir, --firmware-dir "
    "or a --config file), or allow the directory with --allow-root DIR"
)
_BESIDE_HINT = (
    "name a directory beside the inventory and the git directory (the example uses var/http, "
    "var/tftp and var/state), or set the roots on the publisher (--http-root, --tftp-root, "
    "--state-dir or a --config file)"
)
_LITERAL_PATH_HINT = (
    "write the directory itself: an absolute path (e.g. /srv/gitprov/http), or one relative "
    "to the repository's top (e.g. var/http)"
)


def targets_for(
    fleet: Fleet,
    *,
    http_roots: Sequence[str] = (),
    tftp_roots: Sequence[str] = (),
    state_dir: str | None = None,
    firmware_dir: str | None = None,
    base: Path | None = None,
    policy: PathPolicy = PathPolicy(),
    stage_root: str | None = None,
) -> Targets:
    """The fleet's publish settings, each overridden by the given values (the operator's).

    A relative path given here is relative to the current directory, as on any command
    line; a relative path in the fleet settings is relative to `base` (the repository's
    top), so that where files go does not depend on where the command runs. Paths of the
    fleet settings must pass `policy` (Refused otherwise)."""

    def fleet_path(value: str, *setting: str | int) -> Path:
        path = resolve_fleet_path(value, base)
        policy.check(fleet, setting, path)
        return path

    def fleet_dirs(name: str, values: tuple[str, ...]) -> list[Path]:
        if len(values) == 1:
            return [fleet_path(values[0], name)]
        return [fleet_path(v, name, i) for i, v in enumerate(values)]

    check_operator_targets(
        policy,
        http_roots=http_roots,
        tftp_roots=tftp_roots,
        state_dir=state_dir,
        firmware_dir=firmware_dir,
        stage_root=stage_root,
    )
    http = [Path(r) for r in http_roots] or fleet_dirs(
        "http_root", fleet.http_roots or _one(fleet.http_root)
    )
    tftp = [Path(r) for r in tftp_roots] or fleet_dirs(
        "tftp_root", fleet.tftp_roots or _one(fleet.tftp_root)
    )
    # Absolute: the manifest records the roots, and a reconcile may run from elsewhere;
    # `..` taken out, so that `sub/../http` is the root `http` is (the journal would list
    # every file as added again under the other spelling).
    roots = tuple(dict.fromkeys(Path(os.path.abspath(r)) for r in (*http, *tftp)))
    if not roots:
        raise UsageError(
            "no publish root",
            hint="set publish.http_root / tftp_root in "
            "gitprov.yaml or pass --http-root / --tftp-root",
        )
    state = (
        Path(state_dir)
        if state_dir
        else fleet_path(fleet.state_dir, "state_dir")
        if fleet.state_dir
        else None
    )
    if state is None:
        raise UsageError("no state dir", hint="set publish.state_dir or pass --state-dir")
    firmware = (
        Path(firmware_dir)
        if firmware_dir
        else fleet_path(fleet.firmware_dir, "firmware_dir")
        if fleet.firmware_dir
        else None
    )
    state, firmware = state.absolute(), firmware.absolute() if firmware else None
    clash = _clash(roots, state, firmware)
    # A clash the fleet's own settings make is reported at the setting, like a path
    # outside the allowed roots; one between the operator's paths stays unlocated.
    chosen = {"state_dir": bool(state_dir), "firmware_dir": bool(firmware_dir)}
    chosen |= {"http_root": bool(http_roots), "tftp_root": bool(tftp_roots)}
    blamed = [s for s in clash.settings if not chosen[s]] if clash is not None else []
    if clash is not None and blamed:
        line, col = fleet.doc.pos(("publish", blamed[0]))
        raise Refused(
            f"{fleet.doc.path}:{line}:{col}: publish.{blamed[0]}: {clash.message}; "
            "nothing was published",
            hint=clash.hint,
        )
    stage = (
        Path(stage_root)
        if stage_root
        else fleet_path(fleet.stage_root, "stage_root")
        if fleet.stage_root
        else None
    )
    return Targets(roots, state, firmware, stage.absolute() if stage else None)


def check_operator_targets(
    policy: PathPolicy,
    *,
    http_roots: Sequence[str] = (),
    tftp_roots: Sequence[str] = (),
    state_dir: str | None = None,
    firmware_dir: str | None = None,
    stage_root: str | None = None,
) -> None:
    """Raise UsageError when the publisher's own directories (its options, config file or
    environment) are wrong whatever a commit says: one in the git directory or the
    inventory, or holding either (see PathPolicy.check_given), a state dir inside a root,
    one root inside another, the firmware dir and the state dir overlapping, a stage root
    meeting a root or the state dir. `watch` asks at its start: every commit would be
    refused the same way."""
    for what, given, served in (
        ("the HTTP root", http_roots, True),
        ("the TFTP root", tftp_roots, True),
        ("the state dir", _one(state_dir), False),
        ("the stage root", _one(stage_root), True),
    ):
        for value in given:
            policy.check_given(what, Path(value), served=served)
    if firmware_dir:
        resolved(firmware_dir, "the firmware dir")  # (only read: not checked above)
    roots = [Path(os.path.abspath(r)) for r in (*http_roots, *tftp_roots)]
    state = Path(os.path.abspath(state_dir)) if state_dir else None
    firmware = Path(os.path.abspath(firmware_dir)) if firmware_dir else None
    # (the fleet settings' paths are checked with these in targets_for)
    clash = _clash(roots, state, firmware)
    if clash is not None:
        raise UsageError(clash.message, hint=clash.hint)
    if stage_root and state is not None:
        check_stage_root(Path(os.path.abspath(stage_root)), roots, state)


def resolve_fleet_path(value: str, base: Path | None) -> Path:
    """A path from the fleet settings: relative ones are relative to `base` (the
    repository's top), not to wherever the command runs."""
    if "\0" in value:
        # (validation says where; settings are read before it, and a NUL ended in an
        # internal error)
        raise UsageError(
            f"the fleet settings' path {value!r} holds a NUL character, which no path can",
            hint="fix the publish: paths in gitprov.yaml (`gitprov validate` says where)",
        )
    path = Path(value)
    return path if path.is_absolute() or base is None else base / path


def _one(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def inside(path: Path, root: Path) -> bool:
    """Whether `path` is `root` or below it, symlinks resolved; UnusablePath when
    either cannot be resolved (a symlink loop)."""
    try:
        resolved(path).relative_to(resolved(root))
    except ValueError:
        return False
    return True


# -- what is published ----------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """One file published into every root."""

    name: str
    # The bytes, or the device file that holds them (a carried one reads them only when
    # they are to be written: see `CarriedFile`).
    content: bytes | DeviceFile
    kind: Kind
    mac: str = ""
    model: str = ""
    version: int = 0
    set_by: str = ""
    sha256_plain: str = ""
    sha256_body: str = ""
    sha256_data: str = field(default="", compare=False)  # of `data`: computed once

    def __post_init__(self) -> None:
        if not self.sha256_data:
            content = self.content
            sha = content.sha256_data if isinstance(content, CarriedFile) else _sha(self.data)
            object.__setattr__(self, "sha256_data", sha)

    @property
    def data(self) -> bytes:
        content = self.content
        return content if isinstance(content, bytes) else content.data

    def entry(self) -> ManifestEntry:
        return ManifestEntry(
            self.mac,
            self.model,
            self.version,
            self.set_by,
            self.sha256_plain,
            self.sha256_data,
            str(self.kind),
            self.sha256_body,
        )


def artifacts(build: Build, firmware_dir: Path | None) -> tuple[list[Artifact], list[str]]:
    """Every file to publish, and notes for the operator (never secrets)."""
    out = [
        Artifact(
            f.name,
            f,
            Kind.DEVICE,
            f.mac,
            f.model,
            f.version,
            f.set_by,
            f.plain_sha256 or _sha(f.plaintext),
            f.body_sha256,
        )
        for f in build.files
    ]
    notes: list[str] = []
    out += _bootstraps(build, notes)
    out += _firmware(build, firmware_dir, notes)
    out += [
        Artifact(
            s.name,
            s.data,
            Kind.STAGE,
            s.mac,
            s.model,
            s.version,
            s.set_by,
            _sha(s.data),
            s.body_sha256,
        )
        for s in staging.plain(build)
    ]
    seen: dict[str, Artifact] = {}
    for a in out:
        # Validation (GP107) rejects such names; this is the last line before the roots.
        reason = unsafe_reason(a.name)
        if reason:
            raise Refused(
                f"the {a.kind} file {a.name!r} ({a.mac or a.model}) cannot be published: "
                f"{reason}; nothing was published",
                hint="fix the name in the inventory (`gitprov validate` says where)",
            )
        other = seen.get(a.name)
        if other is not None and other.sha256_data != a.sha256_data:
            raise GitprovError(
                f"two different files would be published as {a.name} "
                f"({other.kind} {other.mac or other.model}, {a.kind} {a.mac or a.model})",
                hint="rename the model's config_file_name or firmware.file, "
                "or the fleet's file_name",
            )
        seen[a.name] = a
    return list(seen.values()), notes


def _bootstraps(build: Build, notes: list[str]) -> list[Artifact]:
    inv = build.inventory
    fleet = inv.fleet
    if fleet.option66 is False:
        return []
    names = sorted(inv.models) if fleet.option66 is True else list(fleet.option66)
    fdoc = fleet.doc
    problems: list[Problem] = []
    for i, name in enumerate(names):
        if name not in inv.models:
            line, col = fdoc.pos(("publish", "option66", i))
            problems.append(
                error(
                    fdoc.path,
                    line,
                    col,
                    "GP301",
                    f"publish.option66 names model {name!r}, which has no models/{name}.yaml",
                    "name a model of the inventory, or write true for every model",
                )
            )
    if not fleet.provisioning_url:
        line, col = fdoc.pos(("publish", "option66"))
        problems.append(
            error(
                fdoc.path,
                line,
                col,
                "GP302",
                "publish.option66 needs provisioning.url: the bootstrap file points "
                "devices to URL/FILE",
                "set provisioning.url, or turn publish.option66 off",
            )
        )
    if problems:
        raise InvalidInventory(
            f"commit {build.commit[:12]}: the option-66 bootstrap cannot be written",
            hint="fix them and commit again; nothing was published",
            problems=tuple(problems),
        )
    if fleet.encryption.mode != "none" and staging.mode(fleet) is None:
        notes.append(
            "the option-66 bootstrap file(s) point devices to encrypted per-MAC files "
            "without a key (a common file cannot carry per-device keys): a new device "
            "decrypts its file only if its key reaches it another way"
        )
    return [
        Artifact(
            b.name,
            b.data,
            Kind.BOOTSTRAP,
            model=",".join(b.models),
            version=b.version,
            set_by=b.set_by,
            sha256_plain=_sha(b.data),
            sha256_body=b.body_sha256,
        )
        for b in build.bootstraps
    ]


def _firmware(build: Build, firmware_dir: Path | None, notes: list[str]) -> list[Artifact]:
    models = [m for _, m in sorted(build.inventory.models.items()) if m.firmware.get("file")]
    if not models:
        return []
    if firmware_dir is None:
        notes.append(
            "models name firmware files but publish.firmware_dir is not set: "
            "no firmware was published"
        )
        return []
    out = []
    for m in models:
        name = m.firmware["file"]
        data = read_firmware(
            firmware_dir, name, f"firmware {name} of model {m.name} ({m.doc.path})"
        )
        out.append(
            Artifact(
                name,
                data,
                Kind.FIRMWARE,
                model=m.name,
                set_by=build.commit,
                sha256_plain=_sha(data),
            )
        )
    return out


def _check_firmware_served(build: Build, firmware_dir: Path | None) -> None:
    """Refuse to tell devices to upgrade from an image in the roots (a model's firmware
    without `rule:`) when no firmware dir puts it there: as with a stage file (see
    publish_stage), devices would be led to a file that does not exist."""
    if firmware_dir is not None:
        return
    inv = build.inventory
    for _, m in sorted(inv.models.items()):
        if not m.firmware.get("file") or isinstance(m.firmware.get("rule"), str):
            continue
        if upgrade_of(m.name, m.firmware, m.bindings, inv.fleet.provisioning_url) is None:
            continue  # (its devices are told nothing)
        raise PublishError(
            f"model {m.name} ({m.doc.path}) tells its devices to upgrade from "
            f"{m.firmware['file']} in the roots (it gives no firmware.rule), but "
            "publish.firmware_dir is not set: the image would not be there; nothing was "
            "written",
            hint="set publish.firmware_dir (or --firmware-dir) to the directory that holds "
            "it, or give firmware.rule where the image is served",
        )


def read_firmware(firmware_dir: Path, name: str, what: str) -> bytes:
    """A regular file directly in the firmware dir. Not a symlink, even one that stays
    inside (a link to /etc/shadow would publish it to every device), nor a fifo or a
    device (never even opened: lstat first). Opened without following a link and checked
    again, so a file swapped for a link in between is refused too."""
    path = firmware_dir / name
    if unsafe_reason(name):
        raise Refused(f"{what}: {name!r} is not a plain file name; nothing was published")
    try:
        mode = os.lstat(path).st_mode
        _check_regular(path, mode, what)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _check_regular(path, stat.S_IFLNK, what)
        raise PublishError(
            f"{what}: cannot read {path}: {exc.strerror}; nothing was published",
            hint="put the image into the firmware dir (publish.firmware_dir or "
            "--firmware-dir), or fix firmware.file",
        ) from exc
    with os.fdopen(fd, "rb") as f:
        _check_regular(path, os.fstat(f.fileno()).st_mode, what)
        try:
            return f.read()
        except OSError as exc:
            raise PublishError(
                f"{what}: cannot read {path}: {exc.strerror}; nothing was published"
            ) from exc


def _check_regular(path: Path, mode: int, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    raise Refused(
        f"{what}: {path} is {_file_type(mode)}; gitprov publishes only regular files of "
        "the firmware dir; nothing was published",
        hint="put the image file itself into the firmware dir (a copy, not a link)",
    )


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


# -- locking and temp files ----------------------------------------------------------
@contextlib.contextmanager
def publish_lock(state_dir: Path, wait: float = 0.0) -> Iterator[None]:
    """One publisher at a time per state dir (and so per set of roots)."""
    fd = _open_lock(state_dir)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise GitprovError(
                        f"another publish is running on {state_dir} (pid {holder})",
                        hint="wait for it to finish, or pass --wait SECONDS",
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _open_lock(state_dir: Path) -> int:
    path = state_dir / LOCK
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            exc = OSError(errno.ELOOP, "a symbolic link, not the lock file", str(path))
        raise state_dir_error(state_dir, exc) from exc
    # (a fifo or a device there: neither truncated nor written, as a directory is not)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        why = OSError(errno.EINVAL, "not a regular file (a fifo or a device?)", str(path))
        raise state_dir_error(state_dir, why)
    return fd


def check_state_dir(state_dir: Path) -> None:
    """Make the state dir if missing and open its lock file, or raise StateDirError: what
    a long-running publisher checks once at start, rather than at every retry."""
    os.close(_open_lock(state_dir))


def check_roots(roots: Sequence[Path]) -> None:
    """Raise RootError when something other than a directory stands where a root, or a
    directory above it, must be: found before anything is written, not after the other
    roots took the commit."""
    for root in roots:
        here = root
        while True:
            try:
                st = os.stat(here)
            except (FileNotFoundError, NotADirectoryError):
                try:
                    dangling = os.readlink(here)
                except (OSError, ValueError):
                    dangling = None  # (no link: a directory the publish makes)
                if dangling is not None:
                    # (a link to nowhere: no directory can be made in its place, and
                    # the publish failed on `File exists` after the other roots)
                    raise RootError(
                        f"cannot publish into the root {root}: "
                        + ("it is" if here == root else f"{here}, above it, is")
                        + f" a symbolic link to {dangling!r}, which does not "
                        "exist; nothing was published, the last good files stay",
                        hint="make the directory the link points at, or point the root "
                        "at a directory",
                    ) from None
                if here.parent == here:
                    break
                here = here.parent  # (made by the publish: what stands above it?)
                continue
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    _too_long(root, here)
                break  # (writing into it says why)
            except ValueError:
                break  # (writing into it says why)
            if not stat.S_ISDIR(st.st_mode):
                what = "a file" if stat.S_ISREG(st.st_mode) else "not a directory"
                place = "" if here == root else f" ({here}, above it, is {what})"
                raise RootError(
                    f"cannot publish into the root {root}: "
                    + (f"it is {what}" if here == root else f"no directory can be made{place}")
                    + "; nothing was published, the last good files stay",
                    hint="point --http-root/--tftp-root (or publish.http_root, "
                    "publish.tftp_root) at a directory, or at a path where one can be made",
                )
            break
        _too_long(root, here)


def _too_long(root: Path, existing: Path) -> None:
    """Raise RootError when a name in `root` (below `existing`, the directory the
    publish would make it in) is longer than the file system takes, or the whole path
    longer than any path can be: the other roots took the commit before, and the root
    failed when its first file was written (exit 1, at every publish)."""
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    long = next((part for part in root.parts if len(os.fsencode(part)) > name_max), None)
    if long is None and len(os.fsencode(root)) < path_max:
        return
    what = (
        f"the name {long[:40]}… in it is {len(os.fsencode(long))} bytes long, more than "
        f"the {name_max} its file system takes"
        if long is not None
        else f"its path is {len(os.fsencode(root))} bytes long, more than the {path_max} "
        "a path can be"
    )
    raise RootError(
        f"cannot publish into the root {root}: {what}; nothing was published, the last "
        "good files stay",
        hint="point --http-root/--tftp-root (or publish.http_root, publish.tftp_root) at "
        "a shorter path",
    )


def _is_file(path: Path) -> bool:
    """Path.is_file, False for any path that cannot be looked at (a name too long)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def state_dir_error(state_dir: Path, exc: OSError) -> StateDirError:
    """What to say when the state dir (or a file in it) cannot be made or opened."""
    where = exc.filename if isinstance(exc.filename, str) else str(state_dir)
    why = _describe(exc)
    if isinstance(exc, FileExistsError):
        why = "a file, not a directory"
    if where != str(state_dir):
        why = f"{where}: {why}"
    return StateDirError(
        f"cannot use the state dir {state_dir}: {why}",
        hint="point --state-dir (or publish.state_dir) at a directory gitprov may create "
        "and write, on a local filesystem, with no file in its way",
    )


def clean_temps(dirs: Sequence[Path]) -> int:
    """Remove temp files a crashed publish left behind (they were never served)."""
    removed = 0
    for directory in dirs:
        try:
            # Names, not entries: a root of 100,000 files is listed at every publish.
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if is_temp(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
                    removed += 1
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc(name: str, *argtypes: type) -> Callable[..., int] | None:
    """libc's function `name` taking `argtypes` and returning an int (errno kept), or
    None where libc has none: Linux calls Python 3.11's os lacks (syncfs,
    sync_file_range)."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return cast("Callable[..., int]", fn)


_SYNCFS = _libc("syncfs", ctypes.c_int)
# Below this many files to write, each temp is fsynced, not its filesystem: syncfs waits
# for every dirty page of the filesystem, other programs' included (a CI runner's build
# next to the roots), while an fsync per file of a small change costs a journal commit
# each. Above it, one syncfs beats thousands of commits.
SYNCFS_MIN = 16


_SYNC_FILE_RANGE = _libc(
    "sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint
)
_SYNC_FILE_RANGE_WRITE = 2  # (linux/fs.h) start writing the range back; wait for nothing
# A file to be fsynced has its writeback started every this many bytes as it is written:
# the disk writes the start of a 60 MB manifest while the rest is copied, and its fsync
# waits for the tail alone. A hint only: the fsync is what makes it durable.
WRITEBACK_STEP = 8 << 20


def _start_writeback(fd: int, offset: int, size: int) -> None:
    if _SYNC_FILE_RANGE is not None:
        # (its failure is the fsync's to report: a hint that fails changes nothing)
        _SYNC_FILE_RANGE(fd, offset, size, _SYNC_FILE_RANGE_WRITE)


def syncfs(fd: int) -> None:
    """Make every file written on the filesystem of `fd` durable: one call for all the
    temps of a publish instead of one fsync each. `fd` must have been opened before the
    files were written: a writeback error is reported to descriptors opened before it."""
    if _SYNCFS is None:
        raise OSError(errno.ENOSYS, "syncfs is not available")
    if _SYNCFS(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _write_temp(
    directory: Path,
    name: str,
    data: bytes | Iterable[bytes | memoryview],
    *,
    sync: bool = True,
    meanwhile: Callable[[], None] | None = None,
) -> Path:
    """A dot-named temp beside its target, whole; fsynced only with `sync` (else a syncfs
    of its filesystem must follow before it is renamed), `meanwhile` run during it."""
    tmp = directory / _temp_name(name)
    _write_new(str(tmp), data, sync=sync, meanwhile=meanwhile)
    return tmp


def _temp_name(name: str) -> str:
    return f"{TMP_PREFIX}{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def _write_new(
    path: str,
    data: bytes | Iterable[bytes | memoryview],
    *,
    sync: bool,
    chmod: bool = True,
    dir_fd: int | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> None:
    """A new file `path` (relative to `dir_fd` when given) holding `data` (bytes, or
    pieces written as they come), mode 0o644; with `sync`, `meanwhile` runs while it
    is fsynced (see `_fsync_meanwhile`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    try:
        if chmod:
            # nginx and tftpd drop privileges: files must be world-readable whatever the
            # umask.
            os.fchmod(fd, 0o644)
        written = started = 0  # (bytes written, and up to where their writeback began)
        for piece in (data,) if isinstance(data, bytes) else data:
            view = memoryview(piece).cast("B")
            while view:
                # (a step at a time when synced: the writeback starts while the rest is
                # copied, not after a 30 MB run of the manifest)
                done = os.write(fd, view[:WRITEBACK_STEP] if sync else view)
                view = view[done:]
                written += done
                if sync and written - started >= WRITEBACK_STEP:
                    _start_writeback(fd, started, written - started)
                    started = written
        if sync:
            if meanwhile is None:
                os.fsync(fd)
            else:
                _fsync_meanwhile(fd, meanwhile)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path, dir_fd=dir_fd)
        raise
    os.close(fd)


def _fsync_meanwhile(fd: int, meanwhile: Callable[[], None]) -> None:
    """fsync(fd) on another thread while `meanwhile` runs on this one: the wait for the
    disk (a 60 MB manifest: 40 to 60 ms) holds no lock of the interpreter, and work that
    needs no more than the data written fits in it. If either fails, the write does
    (so the caller's `meanwhile` catches what is not the write's business)."""
    failed: list[OSError] = []

    def sync() -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            failed.append(exc)

    syncing = threading.Thread(target=sync, name="gitprov-fsync")
    syncing.start()
    try:
        meanwhile()
    finally:
        syncing.join()
    if failed:
        raise failed[0]


def _umask() -> int | None:
    """The process's umask, read without changing it (another thread may be creating a
    file); None where /proc does not tell."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _served_stat(path: str, chmodded: bool, dir_fd: int | None = None) -> Stat:
    """The stat of a temp written for a root (relative to `dir_fd` when given); one
    created without fchmod that did not come out 0o644 (a default ACL on the root
    overrides the umask) is chmodded now."""
    st = os.lstat(path, dir_fd=dir_fd)
    if not chmodded and stat.S_IMODE(st.st_mode) != 0o644:
        # The mtime stays: the stat recorded below is still right.
        os.chmod(path, 0o644, dir_fd=dir_fd)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` whole (a temp file renamed over it) but without fsync: for scratch
    output such as `gitprov build`, where durability is worth nothing and fsync per file
    is most of the time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(
    path: Path,
    data: bytes | Iterable[bytes | memoryview],
    *,
    sync: bool = True,
    meanwhile: Callable[[], None] | None = None,
) -> None:
    """Replace `path` whole by a temp renamed over it; durable on return with `sync`
    (the file and its directory fsynced; `meanwhile` run while the file is), else only
    whole to every reader (a file whose loss after a power cut its readers detect, and
    cost no more than time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path.parent, path.name, data, sync=sync, meanwhile=meanwhile)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        _fsync_dir(path.parent)


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


# -- publish ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishResult:
    commit: str
    previous: str | None
    already_published: bool
    plan: Plan
    manifest: Manifest
    failures: Mapping[str, str] = field(default_factory=dict)  # root -> why it failed
    notes: tuple[str, ...] = ()
    previous_files: Mapping[str, ManifestEntry] = field(default_factory=dict, repr=False)
    state_dir: Path | None = None  # where the manifest was read and written
    # The only file names whose entries may differ from the previous manifest's, when a
    # publish by change knows them (None: any may).
    changed_names: Set[str] | None = field(default=None, repr=False)
    # The journal's digest of the state the manifest records, when made with it (and the
    # text of its lines, to keep: see journal.STATE_LINES).
    state_digest: journal.Digested | None = field(default=None, repr=False)

    @property
    def written(self) -> tuple[FileAction, ...]:
        return tuple(
            a
            for a in self.plan.actions
            if a.action is not Action.REMOVE and a.root not in self.failures
        )

    @property
    def removed(self) -> tuple[FileAction, ...]:
        return tuple(
            a
            for a in self.plan.actions
            if a.action is Action.REMOVE and a.root not in self.failures
        )

    @property
    def drift(self) -> tuple[Drift, ...]:
        return self.plan.drift

    def changed_macs(self) -> set[str]:
        entries = self.manifest.files
        return {
            entries[a.name].mac
            for a in self.written
            if a.name in entries and entries[a.name].kind == Kind.DEVICE
        } | {
            e.mac
            for a in self.removed
            if (e := self.previous_files.get(a.name)) is not None and e.kind == Kind.DEVICE
        }


def publish(
    build: Build,
    targets: Targets,
    *,
    is_descendant: IsDescendant | None = None,
    force: bool = False,
    progress: Progress | None = None,
    lock_wait: float = 0.0,
    prune_unknown: bool = False,
    verify: bool = False,
    inputs: Mapping[str, str] | None = None,
    recorder: journal.Recorder | None = None,
) -> PublishResult:
    """Publish a build made beforehand. Its versions were chosen without the lock: use
    `publish_commit`, which builds under the lock, unless nothing else can publish.
    `inputs` (see `publish_inputs`) are recorded in the manifest: without them, the next
    publish of the same commit builds before it finds nothing to do. `recorder` describes
    the commit for the journal (gitprov.journal)."""
    with publish_lock(targets.state_dir, lock_wait):
        previous = load_manifest(targets.state_dir)
        _check_descendant(build.commit, previous, is_descendant, force)
        with _Held() as signals:
            result = _publish_locked(
                build,
                targets,
                previous,
                progress,
                prune_unknown,
                verify,
                dict(inputs or {}),
                held=signals,
            )
        return _journal(result, previous, recorder or journal.Recorder())


# The versions a publish is about to serve, written (and synced) before its first rename
# and removed once its manifest records them: a publish that fails or is killed between
# the two leaves new files served that no manifest lists, and without this the next
# publish took them for edits by hand and put the old numbers back, lower than ones the
# devices may have taken.
PENDING = "served.pending.json"


def read_pending(state_dir: Path) -> dict[str, tuple[int, str]]:
    """The versions a publish that did not finish may have served ({} when none, or
    when the record cannot be read: it is written whole by a rename, so that is a hand's
    doing)."""
    return _pending_record(state_dir)[0]


def _pending_record(state_dir: Path) -> tuple[dict[str, tuple[int, str]], dict[str, str]]:
    """The pending record (see PENDING): the versions a publish that did not finish may
    have served (see read_pending), and the files it may have renamed into the roots, by
    name, with the sha256 of their bytes. Both {} when there is none, or it is no record."""
    try:
        raw = statejson.loads(statejson.read_state(state_dir / PENDING))
        served = {
            str(k): (int(v[0]), str(v[1]))
            for k, v in raw["served"].items()
            if isinstance(v, list) and len(v) == 2 and type(v[0]) is int
        }
        files = {str(k): v for k, v in raw.get("files", {}).items() if isinstance(v, str)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}, {}
    return served, files


def served_before(
    state_dir: Path,
    previous: Manifest | None,
    pending: Mapping[str, tuple[int, str]] | None = None,
) -> Overlay[tuple[int, str]]:
    """The versions served before this publish: the manifest's record, raised by those a
    publish that did not finish may have served (see PENDING; `pending` when read).
    Without a manifest to read (deleted, torn), the journal's: a device keeps the number
    it took, and a publish that started the record again from git history put an older
    commit back under a lower one, which devices ignore. (Its body is not in the
    journal: "" takes the same number as the same content, as a record made before
    bodies were kept does.)"""
    served = served_versions(previous)
    if previous is None:
        for key, version in journal.highest_versions(state_dir).items():
            served[key] = (version, "")
    for key, got in (read_pending(state_dir) if pending is None else pending).items():
        if got[0] > served.get(key, (0, ""))[0]:
            served[key] = got
    return served


def _put_back_pending(
    state_dir: Path, pending: Mapping[str, tuple[int, str]], files: Mapping[str, str]
) -> None:
    """The pending record as it was before a publish that renamed nothing (best effort:
    a record left lists versions no higher than a publish could have served)."""
    with contextlib.suppress(OSError, PublishError):
        if pending:
            _note_pending(state_dir, pending, set(pending), files)
        else:
            os.unlink(state_dir / PENDING)


def _check_manifest_place(state_dir: Path) -> None:
    """UsageError, before a file is written, when the manifest cannot be written where
    it goes: a directory in its place (which no rename replaces, unlike a fifo or a
    link) made a publish write every file and then fail, the roots ahead of any record
    of them."""
    path = state_dir / MANIFEST
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{path}: {_describe(exc)}", hint="fix the state dir") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(
            f"{path} is a directory: the manifest cannot be written there; nothing was changed",
            hint="move it out of the state dir and publish again",
        )


def _note_pending(
    state_dir: Path,
    served: Mapping[str, tuple[int, str]],
    keys: set[str],
    files: Mapping[str, str],
) -> None:
    """Record, durably, the versions of `keys` about to be served and the `files` about
    to be renamed into the roots (name -> sha256 of the bytes; see PENDING); a
    PublishError before anything is written when it cannot be."""
    record = {
        "format": 1,
        "served": {k: list(served[k]) for k in sorted(keys)},
        # (a file of these that the next publish does not want is gitprov's to remove:
        # no manifest lists it, and left alone it went on serving a removed device)
        "files": dict(sorted(files.items())),
    }
    try:
        write_atomic(state_dir / PENDING, statejson.dumps(record, newline=True))
    except OSError as exc:
        raise PublishError(
            f"cannot record the versions about to be served in {state_dir}: "
            f"{_describe(exc)}; nothing was changed, the last good files stay",
            hint="free space in the state dir (or make it writable) and publish again",
        ) from exc


def _unreadable_manifest(state_dir: Path) -> str:
    """A note when the state dir holds a manifest that could not be read, else "": the
    publish then starts from scratch, and says so (what it knew of the roots and of the
    versions served is gone, not quietly)."""
    path = state_dir / MANIFEST
    try:
        os.lstat(path)
    except (OSError, ValueError):
        return ""  # none: a first publish
    return (
        f"{path} could not be read (torn, edited, or not gitprov's): every served file "
        "was compared and the manifest written anew; the versions come from git history "
        "as ever, and the highest version served to each device is taken from the journal"
    )


def _journal(
    result: PublishResult,
    previous: Manifest | None,
    recorder: journal.Recorder,
    keep: bool = True,
    state: Callable[[], str] | None = None,
) -> PublishResult:
    """Append the publish's journal entry: after the manifest (gitprov.journal says what
    a crash in between leaves, and how the next publish recovers it). `state`: what
    makes the entry's state digest, when not the journal."""
    assert result.state_dir is not None
    try:
        journal.record(
            result.state_dir,
            previous,
            result.manifest,
            recorder,
            drift=result.drift,
            failures=result.failures,
            changed=result.changed_names,
            keep=keep,
            state=state,
        )
    except OSError as exc:
        where = result.state_dir / journal.JOURNAL
        if isinstance(exc, statejson.NotRegular):
            raise _journal_not_regular(f"published {result.commit[:12]}, but", where) from exc
        raise PublishError(
            f"published {result.commit[:12]}, but its entry could not be appended to "
            f"{where}: {_describe(exc)}",
            hint="free space in the state dir and publish again: the entry is appended "
            "then, marked recovered",
        ) from exc
    return result


def _journal_not_regular(what: str, where: Path) -> StateDirError:
    return StateDirError(
        f"{what} the journal {where} is not a regular file (a fifo, a device, or a "
        "symbolic link): no entry was appended",
        hint="move it aside and publish again: a journal starts anew with the entry, "
        "marked recovered",
    )


def publish_commit(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    targets: Targets | TargetsFor,
    private_key: str | KeyFor | None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    lock_wait: float = 0.0,
    prune_unknown: bool = False,
    loaded: Loaded | None = None,
    guards: Guards = Guards(),
    verify: bool = False,
    clock: journal.Clock | None = None,
    full_survey: bool = False,
    head: HeadStart | None = None,
) -> PublishResult:
    """Validate, build and publish one commit: what `gitprov publish` and the watcher do.

    The manifest is read, the versions are checked against it and the files are written
    while holding the publish lock, so two publishers can never both give one number to
    different content. `targets` may depend on the commit's fleet settings, the private
    key on its inventory (asked for only when there is something to build). When the
    manifest names this commit, published with the same inputs, and the roots hold its
    files as written (by stat; `verify` reads them), nothing is loaded or built: the
    result says it is already published. Raises InvalidInventory (nothing published),
    VersionConflict (the rule would give a number the roots already passed; names the
    version_floor to set), IncompleteHistory (a shallow clone), UnsignedCommit or Refused
    (a guard, see `Guards`), PublishError or GitprovError.

    A publish that changes what is served appends its entry to the journal
    (gitprov.journal), dated by `clock` (default: now, UTC).

    A process that publishes again and again checks only the served files a watch saw
    touched since its last publish (gitprov.rootwatch); `full_survey` checks the stat of
    every one (a reconcile: what a watch cannot see).

    `head`: the lock of a state dir this process took beforehand, with its survey (see
    gitprov.headstart); used when the commit publishes there, and released by its
    holder whatever happens here."""
    assert pipeline.repo is not None
    require_complete(pipeline.repo)
    recorder = journal.Recorder(
        journal.commit_info(commit), journal.describer(pipeline.repo), clock
    )
    if guards.signatures is not None:
        verify_commit(pipeline.repo, commit, guards.signatures)
    if head is not None and (loaded is not None or verify or full_survey):
        head = None  # (its survey would not do: without it, as without a head start)
    if head is not None:
        found = _targets_of(pipeline, commit, targets)
        if found is None or not _same_dir(found.state_dir, head.state_dir):
            head = None  # (another state dir: its own lock; the holder lets this one go)
    if loaded is None:
        done = _already_published(
            pipeline,
            commit,
            targets,
            lock_wait=lock_wait,
            prune_unknown=prune_unknown,
            verify=verify,
            recorder=recorder,
            head=head,
        )
        if done is not None:
            return done
    # A process that publishes once surveys the served files from the start, while it
    # reads the commit and numbers its devices too: at 100,000 devices the survey is the
    # longest thing a one-device publish waits for.
    held = contextlib.ExitStack()
    ahead: SurveyAhead | None = None
    early: Path | None = None
    if head is not None:
        early, ahead = head.state_dir, head.survey  # (locked and surveyed already)
        pipeline.known_diff = head.diff
        held.callback(setattr, pipeline, "known_diff", None)
    elif loaded is None and pipeline.one_commit and not (verify or full_survey):
        early = _early_state_dir(pipeline, commit, targets)
        if early is not None:
            held.enter_context(publish_lock(early, lock_wait))
            ahead = held.enter_context(_surveying(early, False))
    with held:
        return _publish_commit(
            pipeline,
            commit,
            targets,
            private_key,
            recorder,
            held,
            early,
            ahead,
            force=force,
            progress=progress,
            lock_wait=lock_wait,
            prune_unknown=prune_unknown,
            loaded=loaded,
            guards=guards,
            verify=verify,
            full_survey=full_survey,
        )


def _same_dir(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one directory (a lock taken through one name is held for
    the other: taking it again through that one would wait for this process)."""
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:
        return False


def _early_state_dir(
    pipeline: Pipeline, commit: pygit2.Commit, targets: Targets | TargetsFor
) -> Path | None:
    """The state dir `commit` publishes to, when a publish was made there before (its
    manifest is there: taking the lock creates nothing) and the commit's fleet settings
    say where without its whole inventory; else None."""
    where = _targets_of(pipeline, commit, targets)
    if where is None or not _is_file(where.state_dir / MANIFEST):
        return None
    return where.state_dir


def _targets_of(
    pipeline: Pipeline, commit: pygit2.Commit, targets: Targets | TargetsFor
) -> Targets | None:
    """Where `commit` publishes, from its fleet settings alone (gitprov.yaml, see
    `fleet_of`); None when they cannot be read or place it nowhere allowed (the full
    load reports that at its line)."""
    if not callable(targets):
        return targets
    fleet = fleet_of(pipeline, commit)
    if fleet is None:
        return None
    try:
        return targets(fleet)
    except GitprovError:
        return None


def _publish_commit(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    targets: Targets | TargetsFor,
    private_key: str | KeyFor | None,
    recorder: journal.Recorder,
    held: contextlib.ExitStack,
    early: Path | None,
    ahead: SurveyAhead | None,
    *,
    force: bool,
    progress: Progress | None,
    lock_wait: float,
    prune_unknown: bool,
    loaded: Loaded | None,
    guards: Guards,
    verify: bool,
    full_survey: bool,
) -> PublishResult:
    """publish_commit's work once the published commit is known not to be `commit`;
    with `early`, the lock of that state dir is held already (in `held`) and `ahead` is
    its survey."""
    assert pipeline.repo is not None
    loaded = loaded or pipeline.load_commit(commit)
    if loaded.errors:
        raise InvalidInventory(
            f"commit {str(commit.id)[:12]} has {len(loaded.errors)} error(s)",
            hint="fix them and commit again; nothing was published",
            problems=loaded.problems,
        )
    # The settings and secrets only: the devices are listed when a full build needs them.
    settings = loaded.settings()
    key = private_key(settings) if callable(private_key) else private_key
    where = targets(settings.fleet) if callable(targets) else targets
    inputs = publish_inputs(pipeline, where)
    # The versions first (git history and the version cache only), the state dir's files
    # after: the state's computation and its snapshot are a peak of memory that the
    # previous manifest, a fleet's worth of entries, would otherwise add to.
    state = pipeline.state(commit)
    # A process publishing again and again knows which served files were touched since its
    # last publish; one publishing once surveys them ahead, while it reads and builds.
    watch = (
        None
        if pipeline.one_commit or verify or full_survey
        else rootwatch.watch_for(where.state_dir)
    )
    if early is not None and not _same_dir(early, where.state_dir):
        held.close()  # (the settings read alone said otherwise: never, but not assumed)
        early = None
    if early is None:
        held.enter_context(publish_lock(where.state_dir, lock_wait))
        ahead = held.enter_context(_surveying(where.state_dir, verify or watch is not None))
    with held:
        check_roots(where.roots)
        previous = load_manifest(where.state_dir)
        unreadable = previous is None and _unreadable_manifest(where.state_dir)
        surveyed: Survey | None = None
        if watch is not None:
            surveyed = watch.take([str(r) for r in where.roots], previous)
        elif ahead is not None and previous is not None and ahead.matches(where.state_dir):
            surveyed = ahead
        _check_descendant(str(commit.id), previous, descendant_check(pipeline.repo), force)
        # The guards compare with the published commit's fleet settings (its gitprov.yaml
        # alone) and the manifest's list of devices: never its whole inventory again.
        published = _published_fleet(pipeline, previous, str(commit.id))
        if callable(targets) and not guards.allow_target_change:
            _check_targets(str(commit.id), where, previous, published, targets)
            if previous is None:
                _check_state_dir_moved(pipeline, commit, where, targets)
        carry = _prior(where.state_dir, previous, inputs)
        change = (
            _change(pipeline, commit, loaded, state, previous, carry, where, key)
            if not (force or verify)
            else None
        )
        if published is not None and previous is not None and not guards.allow_stranding:
            # (a device's own key: of the devices whose file the commit changed)
            if change is not None:
                built = change.inventory.devices
            else:
                whole = loaded.inventory
                built = whole.devices if whole is not None else ()
            _check_stranding(pipeline, commit, previous, published, settings, key, built)
        retried = False
        while True:
            try:
                if change is not None:
                    assert previous is not None and carry is not None
                    build = pipeline.builder.build(
                        str(commit.id),
                        change.inventory,
                        state,
                        key,
                        served_before(where.state_dir, previous),
                        progress=pipeline.progress,
                        keep_plaintext=False,
                    )
                    if not guards.allow_mass_removal:
                        # (a device added and removed since was never published)
                        gone = [mac for mac in change.gone if mac in carry.devices]
                        _check_removal_of(build, gone, previous, published)
                else:
                    # Publishing needs the plaintext's hash, not the plaintext: a fleet's
                    # worth of it is a fleet's worth of memory.
                    build = pipeline.build(
                        commit,
                        key,
                        served_before(where.state_dir, previous),
                        loaded,
                        force=force,
                        keep_plaintext=False,
                        prior=carry,
                    )
                    if not guards.allow_mass_removal:
                        _check_removal(build, previous, published)
                _check_firmware_served(build, where.firmware_dir)
                # The stage files first: the bootstrap may lead devices to them.
                staged = publish_stage(
                    build,
                    where,
                    lock_wait=lock_wait,
                    prune_unknown=prune_unknown,
                    verify=verify,
                    inputs=inputs,
                    recorder=recorder,
                )
                with _Held() as signals:
                    result = _publish_locked(
                        build,
                        where,
                        previous,
                        progress,
                        prune_unknown,
                        verify,
                        inputs,
                        change.carried if change is not None else None,
                        carry.roots if carry is not None else (),
                        surveyed,
                        digest_state=pipeline.one_commit,
                        held=signals,
                    )
                if watch is not None:
                    watch.vouch(result.manifest)
                break
            except NotAChange:
                change = None  # nothing was written: build every device
            except CarriedUnreadable as exc:
                # Files carried over that a root needs, edited or removed by hand in every
                # root since they were published (nothing was written yet): build those
                # devices. This process's builder may keep carried files of its own (a
                # watcher's): a new one keeps none.
                if carry is None or (retried and change is None):
                    raise
                retried = retried or change is None
                change = None
                carry.refused |= exc.macs
                pipeline.builder = _new_builder(pipeline.builder)
        result = _with_stage(result, staged, where)
        written = result.manifest
        # A process that publishes once keeps nothing in memory for a next publish (at
        # 100,000 devices the record and the state's lines would add 50 MB to its
        # peak): it keeps the state's lines in the state dir instead (see
        # journal.STATE_LINES), made with the manifest or, when the journal asks, now.
        keep = not pipeline.one_commit
        digested: list[journal.Digested] = [result.state_digest] if result.state_digest else []

        def state_of_written() -> str:
            if not digested:
                digested.append(
                    journal.state_digest_kept(
                        written, previous, result.changed_names, where.state_dir
                    )
                )
            return digested[0].digest

        def keep_inputs() -> None:
            _keep_inputs(where.state_dir, written, build, pipeline, inputs, carry, change)
            if digested and written.sha256:
                _keep_lines(where.state_dir, digested[0].kept(written.sha256))

        if change is not None:
            # By change, the build record (and the state's lines) are written while the
            # journal's entry waits for the disk: the two are apart, and a crash may
            # lose either (see each). Each is then a few entries spliced into a text.
            with _alongside(keep_inputs):
                result = _journal(
                    result, previous, recorder, keep, None if keep else state_of_written
                )
        else:
            # A full build's record (100,000 devices: 13 MB of JSON made from their
            # records) and its journal entry (as many files, and the state's lines)
            # one after the other: at once, their peaks of memory add up (a cold
            # publish's peak, 35 MB more).
            result = _journal(result, previous, recorder, keep, None if keep else state_of_written)
            keep_inputs()
        return replace(result, notes=(unreadable, *result.notes)) if unreadable else result


def _keep_lines(state_dir: Path, text: list[bytes | memoryview]) -> None:
    """The state's lines kept for the next publish (see journal.STATE_LINES): never
    fsynced, and best effort (a file lost or torn fails its check: the lines are made)."""
    with contextlib.suppress(OSError):
        write_atomic(state_dir / journal.STATE_LINES, text, sync=False)


@contextlib.contextmanager
def _alongside(work: Callable[[], object]) -> Iterator[None]:
    """`work` on another thread while the block runs, waited for when it ends and its
    error raised then (unless the block's is): for work apart from the block's, while
    the block waits for the disk holding no lock of the interpreter (an fsync)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # (raised in the caller's thread)
            failed.append(exc)

    thread = threading.Thread(target=run, name="gitprov-alongside")
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failed:
        raise failed[0]


@contextlib.contextmanager
def _surveying(state_dir: Path, skip: bool) -> Iterator[SurveyAhead | None]:
    """The stats of the served files taken ahead (see SurveyAhead) while the manifest is
    read and the commit built, unless `skip`."""
    surveyed = None if skip else SurveyAhead.start(state_dir)
    try:
        yield surveyed
    finally:
        if surveyed is not None:
            surveyed.close()


def _change(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    loaded: Loaded,
    state: State,
    previous: Manifest | None,
    carry: _Carry | None,
    where: Targets,
    key: str | None,
) -> Change | None:
    """The commit's change from the published one, when only the devices it changed need
    building (see gitprov.change): the roots all hold the published commit and owe no
    removal, and its build, recorded with these inputs and this private key, numbered
    every device by the rule. None: build every device."""
    if (
        previous is None
        or carry is None
        or carry.floor is None
        or not carry.exact
        or carry.key_id != key_id_of(key)
        or where.stage_root is not None
        # (a publish that did not finish served versions the manifest does not list:
        # the devices it carried over would be numbered from the manifest alone)
        or read_pending(where.state_dir)
        or set(previous.roots) != {str(r) for r in where.roots}
        or any(not previous.converged(r) or s.stale for r, s in previous.roots.items())
    ):
        return None
    change = change_since(pipeline, commit, loaded, state, previous, carry.floor)
    if change is None or staging.mode(change.inventory.fleet) is not None:
        return None  # (stage files are made from every device's: a full build)
    return change


def _new_builder(old: Builder) -> Builder:
    fresh = Builder(old.catalog)
    fresh.workers = old.workers
    return fresh


# What the last publish built each device from (see _keep_inputs), next to the manifest.
BUILD_INPUTS = "build-inputs.json"


def _input_id(dkey: Sequence[str]) -> str:
    # (a path is text as git's bytes read: surrogateescape, though validation refuses
    # a name that is not UTF-8, GP108)
    return hashlib.sha256("\0".join(dkey).encode("utf-8", "surrogateescape")).hexdigest()


def _keep_inputs(
    state_dir: Path,
    manifest: Manifest,
    build: Build,
    pipeline: Pipeline,
    inputs: dict[str, str],
    carry: _Carry | None = None,
    change: Change | None = None,
) -> None:
    """Record each device's build inputs (a hash of its blob ids) and files, for the next
    publish in a fresh process to take unchanged devices over from the roots instead of
    compiling and encrypting them again (see `_prior`). Written after the manifest: a
    record the manifest does not name (other commit, other inputs) is not used; losing
    it costs only a full build. So it is not fsynced (12 MB at 100,000 devices, 10 ms
    of a one-device publish): after a power cut it is the record before, which names
    the commit before, or a torn file, which is no JSON; either way unused. A device
    `carry` took over keeps its record as it was, and so does every device a `change`
    did not reach (the build made only the others)."""
    builder = pipeline.builder
    same_key = carry is not None and carry.key_id == builder.key_id
    kept: Mapping[str, object] = carry.devices if carry is not None and same_key else {}
    reused = carry.carried - carry.refused if same_key and carry is not None else set()
    files: dict[str, list[DeviceFile]] = {}
    for f in build.files:
        files.setdefault(f.mac, []).append(f)
    devices: dict[str, object] = {}
    exact = build.exact
    # A change that reached a few devices, from a record read as text: that text with
    # their records put in place (see statejson.splice_map), not the fleet's decoded.
    text = kept if change is not None and change.keys is None else None
    if isinstance(text, statejson.MapText):
        devices = dict.fromkeys(change.affected) if change is not None else {}
        exact = exact and carry is not None and carry.exact
    elif change is not None:
        # The devices taken over by change keep their records; the build made the rest.
        assert carry is not None and same_key
        affected = change.affected
        devices = {mac: got for mac, got in kept.items() if mac not in affected}
        exact = exact and carry.exact
        if change.keys is not None:
            # A profile, a model or a setting changed: the same bytes, new inputs.
            for mac, got in list(devices.items()):
                dkey = change.keys.get(mac)
                if dkey is None or not isinstance(got, list) or len(got) != 3:
                    del devices[mac]
                else:
                    devices[mac] = [_input_id(dkey), got[1], got[2]]
    for mac, made in files.items():
        if mac in reused:
            devices[mac] = kept[mac]
            continue
        dkey = builder.inputs.get(mac)
        if dkey is None:
            continue
        devices[mac] = [
            _input_id(dkey),
            [[f.name, f.role] for f in made],
            list(made[0].secret_lines),
        ]
    record = {
        "commit": build.commit,
        "inputs": inputs,
        "key_id": builder.key_id,
        "floor": build.floor,
        "exact": exact,
        # The manifest the build wrote: one edited since (or another gitprov's) may no
        # longer say what the build made; a publish by change takes it as it says.
        "manifest": manifest.sha256,
        "devices": devices,
    }
    path = state_dir / BUILD_INPUTS
    with contextlib.suppress(OSError):
        if isinstance(text, statejson.MapText):
            if len(devices) <= statejson.SPLICE_MAX:
                write_atomic(path, _record_spliced(record, text), sync=False)
                return
            every = dict(text.whole())  # (the changes are many: the record made whole)
            apply_changes(every, devices)
            record["devices"] = every
        write_atomic(path, statejson.chunks(record), sync=False)
        if not pipeline.one_commit:
            if len(_RECORDS) >= 8:
                _RECORDS.clear()
            _RECORDS[str(path)] = (file_identity(os.stat(path)), record)


def _record_spliced(record: dict[str, object], text: statejson.MapText) -> list[bytes | memoryview]:
    """The text of `record`, whose devices are the changes to those of `text` (None:
    gone): the record's own text around the devices' old text with those put in place."""
    changes = record["devices"]
    assert isinstance(changes, dict)
    head = b"".join(statejson.chunks({**record, "devices": {}}))
    at = head.index(b',"devices":{}') + len(b',"devices":{')
    view = memoryview(text.text)
    runs = statejson.splice_map(text.text, view, text.lo, text.hi, changes, b"]")
    out: list[bytes | memoryview] = [head[:at]]
    for i, run in enumerate(runs):
        if i:
            out.append(b",")
        out.append(run)
    out.append(head[at:])
    return out


# The last record each state dir was given, while its file is the one written (as
# gitprov.plan keeps manifests): a watcher's next publish does not read 13 MB back.
_RECORDS: dict[str, tuple[tuple[int, ...], dict[str, object]]] = {}


def _read_record(path: Path) -> object:
    """The build record at `path`, decoded (OSError, ValueError: none usable): as
    `_keep_inputs` writes it, all but its devices, a `statejson.MapText` of its text
    (a publish by change looks up a few of 100,000); else the whole JSON."""
    with statejson.open_state(path) as f:
        hit = _RECORDS.get(str(path))
        if hit is not None and hit[0] == file_identity(os.fstat(f.fileno())):
            return hit[1]
        text = f.read()
    found = _RECORD_HEAD.match(text)
    if found is not None:
        lo = found.end()
        with contextlib.suppress(ValueError):
            # (the map's end: its last value's `]`, and the record's next key's quote)
            hi = statejson.map_end(text, lo, b"]", b',"')
            raw = statejson.loads(text[:lo] + text[hi:])
            if isinstance(raw, dict) and raw.get("devices") == {}:
                raw["devices"] = statejson.MapText(text, lo, hi, b"]")
                return raw
    return statejson.loads(text)


# How a record `_keep_inputs` wrote starts: its devices follow.
_RECORD_HEAD = re.compile(rb'\{"commit":"[0-9a-f]*","devices":\{')


def _prior(state_dir: Path, previous: Manifest | None, inputs: dict[str, str]) -> _Carry | None:
    """The files the published commit's build made, by device, when its record matches
    the manifest and these inputs (anything else: None, every device is built). Nothing
    is read here: a carried file's bytes are what the manifest records (its sha256), read
    from a root only when some root must be written (see `CarriedFile`)."""
    if previous is None or dict(previous.inputs) != inputs:
        return None
    try:
        raw = _read_record(state_dir / BUILD_INPUTS)
    except (OSError, ValueError):
        return None
    if (
        not isinstance(raw, dict)
        or raw.get("commit") != previous.commit
        or raw.get("inputs") != inputs
        or not isinstance(raw.get("devices"), Mapping)
        or not isinstance(raw.get("key_id"), str)
    ):
        return None
    # Where the bytes are: the roots that hold the published commit first (a lagging
    # root may hold an older file; the sha256 check tells).
    roots = sorted(previous.roots, key=lambda r: (not previous.converged(r), r))
    if not any(previous.converged(r) for r in roots):
        return None
    floor, exact = raw.get("floor"), raw.get("exact")
    return _Carry(
        raw["devices"],
        raw["key_id"],
        previous.files,
        tuple(roots),
        floor if isinstance(floor, int) and not isinstance(floor, bool) else None,
        exact is True and bool(previous.sha256) and raw.get("manifest") == previous.sha256,
    )


class _Carry:
    """The `Prior` of a publish: the published build's files of a device whose inputs
    did not change, as `CarriedFile`s. It remembers what it carried (for the record of
    the next publish) and which devices must not be carried (their bytes were found
    unreadable: see `publish_commit`)."""

    def __init__(
        self,
        devices: Mapping[str, object],
        key_id: str,
        entries: Mapping[str, ManifestEntry],
        roots: tuple[str, ...],
        floor: int | None = None,
        exact: bool = False,
    ) -> None:
        self.devices = devices
        self.key_id = key_id
        self.entries = entries
        self.roots = roots
        # The published build's version floor, and whether it numbered every device by
        # the rule (no --force raised one) in the manifest as it wrote it: what taking
        # files over by change needs.
        self.floor = floor
        self.exact = exact
        self.carried: set[str] = set()
        self.refused: set[str] = set()

    def __call__(self, mac: str, dkey: tuple[str, ...], kid: str) -> list[DeviceFile] | None:
        got = self.devices.get(mac)
        if kid != self.key_id or not isinstance(got, list) or len(got) != 3:
            return None
        if mac in self.refused:
            return None
        input_id, names, secret_lines = got
        if input_id != _input_id(dkey) or not isinstance(names, list) or not names:
            return None
        out: list[DeviceFile] = []
        try:
            lines = tuple(map(int, secret_lines))
            for name, role in names:
                e = self.entries.get(name)
                if e is None or e.mac != mac or e.kind != Kind.DEVICE or unsafe_reason(name):
                    return None
                out.append(CarriedFile.of(e, name, str(role), lines, self.roots))
        except (TypeError, ValueError):
            return None
        self.carried.add(mac)
        return out


class CarriedUnreadable(PublishError):
    """Device files carried over from the published commit (their inputs did not change)
    must be written into a root, but no root holds the bytes the manifest records."""

    def __init__(self, files: Mapping[str, str]) -> None:  # MAC -> a file name of it
        mac, name = min(files.items())
        more = f" (and {len(files) - 1} more device(s))" if len(files) > 1 else ""
        super().__init__(
            f"{mac}: no root holds {name} as the manifest records it any more (edited or "
            f"removed by hand while publishing){more}; nothing was written",
            hint="publish again: such devices are built then",
        )
        self.macs = frozenset(files)


class CarriedFile(DeviceFile):
    """A device file the published commit's build made, taken over without reading it:
    `data` is read from the first root that holds the bytes the manifest records (checked
    against its sha256) when first asked for, never before; CarriedUnreadable when none
    does. Anything written from it is byte-identical to the manifest's record. What the
    manifest records (MAC, model, version, hashes) is read from its entry: a fleet's
    worth of these is made at every publish, and each sets five slots, not thirteen."""

    __slots__ = ("_where", "entry")

    entry: ManifestEntry  # the manifest's record of it: this publish records it again
    _where: tuple[str, ...]

    @classmethod
    def of(
        cls,
        entry: ManifestEntry,
        name: str,
        role: str,
        secret_lines: tuple[int, ...],
        roots: tuple[str, ...],
    ) -> CarriedFile:
        out = object.__new__(cls)
        _SET_NAME(out, name)
        _SET_ROLE(out, role)
        _SET_LINES(out, secret_lines)
        _SET_ENTRY(out, entry)
        _SET_WHERE(out, roots)
        return out

    @property
    def mac(self) -> str:
        return self.entry.mac

    @property
    def version(self) -> int:
        return self.entry.version

    @property
    def set_by(self) -> str:
        return self.entry.set_by

    @property
    def model(self) -> str:
        return self.entry.model

    @property
    def body_sha256(self) -> str:
        return self.entry.sha256_body

    @property
    def plain_sha256(self) -> str:
        return self.entry.sha256_plain

    @property
    def kept(self) -> bytes | None:
        return None  # never the plaintext: only its hash was recorded

    @property
    def sha256_data(self) -> str:
        return self.entry.sha256_data

    @property
    def data(self) -> bytes:
        if not self._where:
            got: bytes = _SLOTS["data"].__get__(self, DeviceFile)
            return got
        for root in self._where:
            try:
                data = read_served(os.path.join(root, self.name))
            except OSError:
                continue
            if data is not None and _sha(data) == self.sha256_data:
                _SLOTS["data"].__set__(self, data)
                _SET_WHERE(self, ())
                return data
        raise CarriedUnreadable({self.mac: self.name})

    @property
    def loaded(self) -> bool:
        return not self._where

    def __repr__(self) -> str:
        return f"CarriedFile({self.mac!r}, {self.name!r}, sha256_data={self.sha256_data!r})"


_SLOTS = {f.name: DeviceFile.__dict__[f.name] for f in fields(DeviceFile)}
_SET_NAME = _SLOTS["name"].__set__
_SET_ROLE = _SLOTS["role"].__set__
_SET_LINES = _SLOTS["secret_lines"].__set__
_SET_ENTRY = CarriedFile.__dict__["entry"].__set__
_SET_WHERE = CarriedFile.__dict__["_where"].__set__


def publish_inputs(pipeline: Pipeline, targets: Targets) -> dict[str, str]:
    """What a commit's files depend on besides the commit and the roots: gitprov, its
    catalog and renderer, the inventory directory, the validation options, the firmware
    dir (whose images are compared too). Paths and versions only, never secrets."""
    return {
        "gitprov": __version__,
        "catalog": pipeline.catalog.digest,
        "render": RENDER_FORMAT,
        "inventory_dir": pipeline.inventory_dir.strip("/"),
        "strict": str(pipeline.options.strict).lower(),
        "firmware_dir": str(targets.firmware_dir or ""),
        "stage_root": str(targets.stage_root or ""),
    }


def fleet_of(pipeline: Pipeline, commit: pygit2.Commit) -> Fleet | None:
    """The commit's fleet settings, from its gitprov.yaml alone (not validated: for a
    commit that was published, or to find where one would go); None when it has none or
    they cannot be read."""
    source = pipeline.source(commit)
    path = _inventory_path(pipeline, commit, FLEET_FILE)
    oid = _blob_id(commit, path)
    if oid is None:
        return None
    try:
        doc, problems = pipeline.parse_cache.get(FileRef(path, oid), source, fleet_file=True)
    except GitprovError:
        return None  # an object missing: the full load says so
    if doc is None or any(p.is_error for p in problems):
        return None
    try:
        return build_inventory(Documents(source.inventory_dir, {FLEET: (doc,)}, ())).fleet
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
        return None  # not valid: the full load reports it


def _already_published(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    targets: Targets | TargetsFor,
    *,
    lock_wait: float,
    prune_unknown: bool,
    verify: bool,
    recorder: journal.Recorder | None = None,
    head: HeadStart | None = None,
) -> PublishResult | None:
    """The result of publishing `commit` when the manifest already names it, published
    with the same inputs, and every root holds its files as written and nothing else it
    owes: what a build would find, without one. None: build. The journal gets the entry
    an interrupted publish of this commit left out. `head`: the state dir's lock held
    already, and its survey."""
    where = _targets_of(pipeline, commit, targets)
    if where is None:
        return None
    cid = str(commit.id)
    if not _is_file(where.state_dir / MANIFEST):
        # Nothing published yet (or no state dir to use: the lock says why): build. The
        # lock would create the state dir before the build has checked what it needs (a
        # missing private key must leave no trace).
        return None
    if manifest_commit(where.state_dir) not in (cid, None):
        return None  # another commit is published: build (without reading it twice)
    held = head is not None and _same_dir(head.state_dir, where.state_dir)
    with contextlib.nullcontext() if held else publish_lock(where.state_dir, lock_wait):
        # The index when it names the manifest (a fifth of its size); --verify needs the
        # manifest's hashes.
        index = None if verify else load_index(where.state_dir)
        if index is not None:
            commit_was, inputs, roots, names = index.commit, index.inputs, index.roots, index.names
            firmware = index.firmware
            previous: Manifest | None = None
        else:
            previous = load_manifest(where.state_dir)
            if previous is None:
                return None
            commit_was, inputs, roots = previous.commit, previous.inputs, previous.roots
            names = frozenset(previous.files)
            firmware = {
                n: e.sha256_data for n, e in previous.files.items() if e.kind == Kind.FIRMWARE
            }
        if (
            commit_was != cid
            or not inputs
            or dict(inputs) != publish_inputs(pipeline, where)
            or set(roots) != {str(r) for r in where.roots}
            or not _same_firmware(firmware, where.firmware_dir)
        ):
            return None
        clean_temps((where.state_dir,))  # the roots' temps: while they are listed
        digests = (
            {n: e.sha256_data for n, e in previous.files.items()}
            if verify and previous is not None
            else None
        )
        unknown = intact(
            roots,
            cid,
            names,
            digests,
            clean=True,
            state_dir=where.state_dir,
            surveyed=head.survey if held and head is not None else None,
        )
        if unknown is None or (prune_unknown and unknown):
            return None
        if unknown and _pending_record(where.state_dir)[1].keys() & {n for _, n in unknown}:
            return None  # a file a publish that did not finish left: the build removes it
        if not stage_intact(where, cid, verify=verify):
            return None
        if previous is None:
            assert index is not None
            previous = _deferred(where.state_dir, index)
        else:
            # For the next time (best effort): the index, and the map ends, of the
            # manifest read from its JSON (a state dir copied, its files other inodes).
            write_index(where.state_dir, previous)
            write_map_ends(where.state_dir, previous, [])
        _catch_up(where.state_dir, previous, recorder or journal.Recorder())
        done = PublishResult(
            cid,
            cid,
            True,
            Plan((), len(names) * len(roots), unknown),
            previous,
            notes=previous.notes,
            previous_files=previous.files,
            state_dir=where.state_dir,
        )
        return _with_stage(done, None, where)


def _catch_up(state_dir: Path, manifest: Manifest, recorder: journal.Recorder) -> None:
    try:
        journal.catch_up(state_dir, manifest, recorder)
    except OSError as exc:
        where = state_dir / journal.JOURNAL
        if isinstance(exc, statejson.NotRegular):
            raise _journal_not_regular(f"{manifest.commit[:12]} is published, but", where) from exc
        raise PublishError(
            f"{manifest.commit[:12]} is published, but its missing entry could not be "
            f"appended to {where}: {_describe(exc)}",
            hint="free space in the state dir and publish again",
        ) from exc


def _deferred(state_dir: Path, index: Index) -> Manifest:
    """The manifest the index names, its entries and versions read only if asked for."""
    loaded: list[Manifest] = []

    def manifest() -> Manifest:
        if not loaded:
            found = load_manifest(state_dir)
            if found is None:
                raise PublishError(f"the manifest in {state_dir} cannot be read any more")
            loaded.append(found)
        return loaded[0]

    return Manifest(
        commit=index.commit,
        published_at=index.published_at,
        roots=index.roots,
        files=_Later(lambda: manifest().files),
        served=_Later(lambda: manifest().served),
        inputs=index.inputs,
        notes=index.notes,
    )


class _Later(Mapping[str, _V]):
    """A mapping read from disk when first used."""

    def __init__(self, load: Callable[[], Mapping[str, _V]]) -> None:
        self._load = load

    def __getitem__(self, key: str) -> _V:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _same_firmware(firmware: Mapping[str, str], firmware_dir: Path | None) -> bool:
    """Whether the firmware images published (name -> sha256) are still those of the
    firmware dir (the operator may replace one without a commit)."""
    for name, sha in firmware.items():
        if firmware_dir is None:
            return False
        try:
            data = read_firmware(firmware_dir, name, f"firmware {name}")
        except GitprovError:
            return False
        if _sha(data) != sha:
            return False
    return True


def _published_fleet(pipeline: Pipeline, previous: Manifest | None, commit: str) -> Fleet | None:
    """The fleet settings of the commit the roots hold, for the guards to compare with;
    None when nothing is published, it is this commit, or it is not in the repository."""
    if previous is None or previous.commit == commit:
        return None
    old = pipeline.commit(previous.commit)
    return fleet_of(pipeline, old) if old is not None else None


def _check_stranding(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    previous: Manifest,
    published: Fleet,
    settings: Inventory,
    private_key: str | None,
    devices: Sequence[Device] = (),
) -> None:
    """Refuse a commit that changes the file name or the key of the Profile Rule the
    devices hold without keeping them under encryption.previous (gitprov.strand): the
    fleet's, and the own keys of those of `devices` whose file the commit changed (a key
    given, changed or taken away)."""
    old = pipeline.commit(previous.commit)
    same = _sameness(pipeline, commit, old, settings, private_key)
    found = list(stranding(published, settings.fleet, same))
    if not found and old is not None and devices:
        trees: dict[str, pygit2.Tree | None] = {}
        # A device file the commit did not change held the key it holds now.
        changed = pipeline.changes(old, commit)
        moved: dict[str, str] | None = None  # MAC -> its file's path then, of those moved
        for device in devices:
            if device.path not in changed:
                continue
            found_held = _held_key(pipeline, old, device, device.path, trees)
            if found_held is None and previous.served.get(device.mac) is not None:
                # A device published from another file: one the commit took away or
                # changed (a MAC is in one file only), so one of the diff's paths.
                if moved is None:
                    moved = _moved_from(pipeline, old, changed, trees)
                then = moved.get(device.mac)
                found_held = _held_key(pipeline, old, device, then, trees) if then else None
            if found_held is None:
                continue  # (a device the published commit did not have)
            (held,) = found_held
            one = stranding_of(device, held, published, settings.fleet, same)
            if one is not None:
                found.append(one)
    if not found or not any(e.kind == Kind.DEVICE for e in previous.files.values()):
        return  # (nothing to strand: no device was published)
    what = "; ".join(f.describe() for f in found[:5]) + (
        f"; and {len(found) - 5} more" if len(found) > 5 else ""
    )
    raise Refused(
        f"commit {str(commit.id)[:12]} would strand {who(found)}: {what}, and nothing "
        "keeps what their Profile Rule holds (each device fetches its next file by the "
        "name and key of its last one); refused: nothing was written, the last good "
        "files stay",
        hint=f"rotate as {DOCS_URL}/keys.md says: the new file_name and master_key, the old ones "
        "under encryption.previous, for a grace period (for a device's own key, a new "
        "file_name too, the old one under encryption.previous, and the old key under its "
        "previous_key:); or, if those devices are provisioned anew (factory reset, option "
        "66), publish with --allow-stranding",
    )


def _sameness(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    old: pygit2.Commit | None,
    settings: Inventory,
    private_key: str | None,
) -> SameSecret:
    """Whether the published commit's secret and this commit's hold the same value
    (gitprov.strand.SameSecret): by the secrets file's blob, the sealed texts, or with
    the private key their values."""
    path = _inventory_path(pipeline, commit, SECRETS_FILE)
    same_file = old is not None and _blob_id(old, path) == _blob_id(commit, path)

    def same(old_name: str, new_name: str) -> bool | None:
        if old is None:
            return None
        if old_name == new_name and same_file:
            return True  # (the same secrets file: no need to read it)
        before, now = _sealed_in(pipeline, old, path, old_name), settings.sealed.get(new_name)
        if before is None or now is None:
            return None
        if before == now:
            return True
        if private_key is None:
            return None  # (sealing is randomised: a value sealed again reads otherwise)
        try:
            return unseal(private_key, old_name, before) == unseal(private_key, new_name, now)
        except (GitprovError, ValueError):
            return None  # (sealed for another repository key: rotated since)

    return same


def _moved_from(
    pipeline: Pipeline,
    old: pygit2.Commit,
    changed: Mapping[str, str | None],
    trees: dict[str, pygit2.Tree | None],
) -> dict[str, str]:
    """MAC -> the path of its device file at the published commit, of the files the
    commit changed or took away (those a device may have been moved from, another
    device's file now included: two swapped; each read once)."""
    out: dict[str, str] = {}
    for path in changed:
        if not path.endswith(".yaml"):
            continue
        mac = _mac_at(pipeline, old, path, trees)
        if mac is not None:
            out.setdefault(mac, path)
    return out


def _mac_at(
    pipeline: Pipeline, old: pygit2.Commit, path: str, trees: dict[str, pygit2.Tree | None]
) -> str | None:
    """The MAC of the device file at `path` in the published commit (None: none)."""
    known = pipeline.known_device(str(old.id), path)
    if known is not None:
        (facts,) = known
        return None if facts is None else str(facts[1])
    data = _old_device_data(pipeline, old, path, trees)
    if data is None:
        return None
    mac = normalise_mac(str(data.get("mac", "")))
    return mac or None


def _old_device_data(
    pipeline: Pipeline, old: pygit2.Commit, path: str, trees: dict[str, pygit2.Tree | None]
) -> dict[str, Any] | None:
    """The mapping the file at `path` in the published commit holds, or None when that
    commit has no readable mapping there. `trees` keeps each directory's tree of that
    commit: a flat fleet's devices/ is one tree of 100,000 entries, read once (24 ms),
    not once a device."""
    entry = _old_entry(old, path, trees)
    if entry is None:
        return None
    try:
        doc, _ = pipeline.parse_cache.get(FileRef(path, str(entry.id)), pipeline.source(old))
    except GitprovError:
        return None
    data = doc.data if doc is not None else None
    return data if isinstance(data, dict) else None


def _old_entry(
    old: pygit2.Commit, path: str, trees: dict[str, pygit2.Tree | None]
) -> pygit2.Object | None:
    folder, _, name = path.rpartition("/")
    if folder not in trees:
        try:
            found = old.tree[folder] if folder else old.tree
        except (KeyError, pygit2.GitError):
            found = None
        trees[folder] = found if isinstance(found, pygit2.Tree) else None
    tree = trees[folder]
    try:
        entry = tree[name] if tree is not None else None
    except (KeyError, pygit2.GitError):
        entry = None
    return entry if entry is not None and entry.type_str == "blob" else None


def _held_key(
    pipeline: Pipeline,
    old: pygit2.Commit,
    device: Device,
    path: str,
    trees: dict[str, pygit2.Tree | None],
) -> tuple[str | None] | None:
    """The own key (a secret's name; None: the master key's) the device's file at `path`
    in the published commit set, or None when that commit had no file of it there (`trees`:
    see `_old_device_data`). The facts of the snapshot the commit's validation started
    from come first: that commit's, after a publish, with no tree read."""
    known = pipeline.known_device(str(old.id), path)
    if known is not None:
        (facts,) = known
        if facts is None or facts[1] != device.mac:
            return None  # (none, or another device's file then: as if new)
        return (facts[5],)
    entry = _old_entry(old, path, trees)
    if entry is None:
        return None
    if str(entry.id) == device.oid:
        return (None if device.key is None else str(device.key),)
    data = _old_device_data(pipeline, old, path, trees)
    if data is None or normalise_mac(str(data.get("mac", ""))) != device.mac:
        return None  # (another device's file then: as if new)
    key = data.get("key")
    return (str(key) if isinstance(key, str) else None,)


def _inventory_path(pipeline: Pipeline, commit: pygit2.Commit, name: str) -> str:
    inventory_dir = posixpath.normpath(pipeline.source(commit).inventory_dir or ".")
    return name if inventory_dir == "." else f"{inventory_dir}/{name}"


def _blob_id(commit: pygit2.Commit, path: str) -> str | None:
    try:
        entry = commit.tree[path]
    except (KeyError, pygit2.GitError):
        return None
    return str(entry.id) if entry.type_str == "blob" else None


def _sealed_in(pipeline: Pipeline, commit: pygit2.Commit, path: str, name: str) -> str | None:
    """The sealed text of the secret `name` in the commit's secrets file, None when it
    has none or the file cannot be read."""
    oid = _blob_id(commit, path)
    if oid is None:
        return None
    try:
        doc, _ = pipeline.parse_cache.get(FileRef(path, oid), pipeline.source(commit))
    except GitprovError:
        return None
    secrets = doc.data.get("secrets") if doc is not None and isinstance(doc.data, dict) else None
    value = secrets.get(name) if isinstance(secrets, dict) else None
    return value if isinstance(value, str) else None


def _check_targets(
    commit: str,
    where: Targets,
    previous: Manifest | None,
    published: Fleet | None,
    targets: TargetsFor,
) -> None:
    """Refuse a commit whose settings move the roots, the state dir or the firmware dir
    away from where the published commit's settings put them: the old roots would keep
    their files, unmanaged, and a pull request is not where such a move is decided.
    Settings the operator overrides move nothing (both sides resolve to the override)."""
    if previous is None or published is None:
        return
    try:
        before = targets(published)
    except GitprovError:
        # Its paths are not allowed any more: compare with what the manifest records.
        before = Targets(
            tuple(Path(r) for r in previous.roots), where.state_dir, where.firmware_dir
        )
    moved = []
    if set(before.roots) != set(where.roots):
        moved.append(f"roots {_paths(before.roots)} -> {_paths(where.roots)}")
    if before.state_dir != where.state_dir:
        moved.append(f"state dir {before.state_dir} -> {where.state_dir}")
    if before.firmware_dir != where.firmware_dir:
        moved.append(f"firmware dir {before.firmware_dir} -> {where.firmware_dir}")
    if moved:
        raise Refused(
            f"commit {commit[:12]} changes where files are published ({'; '.join(moved)}) "
            f"from the published {previous.commit[:12]}; refused: nothing was published, "
            "the last good files stay",
            hint="if the move is intended, publish it once with --allow-target-change "
            "(files in the old roots stay: remove them by hand), or set the paths on "
            "the publisher instead of in the inventory",
        )


def _check_state_dir_moved(
    pipeline: Pipeline,
    commit: pygit2.Commit,
    where: Targets,
    targets: TargetsFor,
) -> None:
    """A commit that moves the state dir finds no manifest where it now points, so the
    guards above had nothing to compare with (and would let it remove or move anything).
    Where its first parent's settings put the state dir, a manifest says what is
    published: compare with that."""
    parent = pipeline.commit(commit.parent_ids[0]) if commit.parent_ids else None
    if parent is None:
        return
    fleet = fleet_of(pipeline, parent)
    if fleet is None:
        return
    try:
        before = targets(fleet)
    except GitprovError:
        return  # the parent's own paths are not allowed here: nothing was published there
    if before.state_dir == where.state_dir:
        return
    old = load_manifest(before.state_dir)
    if old is None:
        return
    published = _published_fleet(pipeline, old, str(commit.id)) or fleet
    _check_targets(str(commit.id), where, old, published, targets)


def _paths(paths: Sequence[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def _check_removal(build: Build, previous: Manifest | None, published: Fleet | None) -> None:
    """Refuse removing more than publish.max_removal of the published devices (one device
    is never a mass removal). The stricter of the published commit's and this commit's
    limit applies: a commit cannot loosen the limit for itself."""
    if previous is None:
        return
    before = _published_macs(previous)
    _check_gone(build, sorted(before - {f.mac for f in build.files}), len(before), published)


def _check_removal_of(
    build: Build, gone: Iterable[str], previous: Manifest, published: Fleet | None
) -> None:
    """`_check_removal` of a build by change, which removes the devices `gone`."""
    removed = sorted(gone)
    if len(removed) > 1:  # else no need to count the published devices
        _check_gone(build, removed, len(_published_macs(previous)), published)


def _published_macs(previous: Manifest) -> set[str]:
    return {e.mac for e in previous.files.values() if e.kind == Kind.DEVICE and e.mac}


def _check_gone(build: Build, gone: list[str], count: int, published: Fleet | None) -> None:
    """Refuse removing the devices `gone` of `count` published ones, when too many."""
    limit = build.inventory.fleet.max_removal
    if published is not None:
        limit = min(limit, published.max_removal)
    if len(gone) <= 1 or Fraction(len(gone), count) <= limit:
        return
    shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
    raise Refused(
        f"commit {build.commit[:12]} removes {len(gone)} of the {count} published "
        f"devices ({percent(Fraction(len(gone), count))}), more than "
        f"publish.max_removal allows ({percent(limit)}): {shown}; refused: nothing was "
        "removed or written, the last good files stay",
        hint="if the removal is intended, publish it with --allow-mass-removal "
        f"(gitprov publish --rev {build.commit[:12]} --allow-mass-removal)",
    )


def percent(share: Fraction) -> str:
    """11%, 2.5%, 33.3%: one decimal when it is not whole."""
    value = float(share * 100)
    return f"{value:.0f}%" if value == round(value) else f"{value:.1f}%"


def _check_descendant(
    commit: str, previous: Manifest | None, is_descendant: IsDescendant | None, force: bool
) -> None:
    if (
        previous is not None
        and previous.commit != commit
        and is_descendant is not None
        and not is_descendant(commit, previous.commit)
        and not force
    ):
        raise GitprovError(
            f"{commit[:12]} is not a descendant of the published {previous.commit[:12]}",
            hint="to roll back, `git revert` the bad commits and publish the result "
            "(versions must keep going up); `gitprov publish --force` publishes anyway",
        )


class _Held:
    """SIGINT and SIGTERM held back while it is entered, from `hold()` on: a publish
    interrupted between its first rename and its manifest served some files of the new
    commit and some of the old, which no manifest listed and `verify` matched with
    neither commit. A signal that came meanwhile is raised again on the way out, once
    the manifest records what was renamed (Ctrl-C still ends the command, with 130).
    Only the main thread sets handlers; elsewhere nothing is held."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._got: list[int] = []

    def hold(self) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._keep)

    def _keep(self, signum: int, frame: object) -> None:
        self._got.append(signum)

    def __enter__(self) -> _Held:
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # (None: a handler not set from Python, which cannot be put back)
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
        if self._got:
            signal.raise_signal(self._got[0])


def _publish_locked(
    build: Build,
    targets: Targets,
    previous: Manifest | None,
    progress: Progress | None,
    prune_unknown: bool,
    verify: bool,
    inputs: dict[str, str],
    carried: Mapping[str, ManifestEntry] | None = None,
    carried_from: tuple[str, ...] = (),
    surveyed: Survey | None = None,
    *,
    digest_state: bool = False,
    held: _Held | None = None,
) -> PublishResult:
    """Publish `build` over `previous`. `carried` (see gitprov.change) are files of
    `previous` kept as they are, besides the build's (their bytes are read from the
    roots `carried_from` only when a root needs them written); NotAChange when the build
    makes a file of one of those names. With `digest_state`, the journal's digest of
    the state written is made while the manifest is fsynced (for a journal that keeps
    nothing for a next publish: see `journal.state_digest`). `held` holds SIGINT and
    SIGTERM back from the first rename on."""
    roots = targets.roots
    files, notes = artifacts(build, targets.firmware_dir)
    carried = carried or {}
    if any(a.name in carried for a in files):
        raise NotAChange()
    clean_temps((targets.state_dir,))  # the roots' temps: while the plan lists them
    digests: Mapping[str, str] = {a.name: a.sha256_data for a in files}
    if carried:
        digests = WantedDigests(digests, carried)
    # (a publish that did not finish: the versions it may have served, the files it may
    # have renamed)
    pending, pending_files = _pending_record(targets.state_dir)
    the_plan = plan(
        digests,
        roots,
        previous,
        prune_unknown=prune_unknown,
        verify=verify,
        digests=digests,
        clean=True,
        as_recorded=carried.keys(),
        surveyed=surveyed,
        unrecorded=pending_files,
    )
    # The bytes of what is written, and only of that: a carried file is read here, before
    # anything is written (CarriedUnreadable: nothing is).
    to_write = {a.name for a in the_plan.actions if a.action is not Action.REMOVE}
    wanted = _contents(files, to_write)
    if carried:
        wanted.update(_carried_contents(carried, to_write - wanted.keys(), carried_from))
    made = {
        a.name: a.content.entry if isinstance(a.content, CarriedFile) else a.entry() for a in files
    }
    entries: Mapping[str, ManifestEntry] = made
    if isinstance(carried, EntryTable):
        entries = carried.with_entries(made)  # (the entries taken over are never made)
    elif carried:
        entries = {**carried, **made}
    old_files = previous.files if previous else {}
    # The versions served: the previous record, which holds every carried file's already
    # (raised by those of a publish that did not finish, see PENDING).
    served = served_before(targets.state_dir, previous, pending)
    raised: set[str] = set()
    lowered: list[tuple[str, int, int]] = []
    for name, e in made.items():
        key = version_key(name, e)
        if key is None:
            continue
        was = served.get(key, (0, ""))[0]
        if e.version >= was:
            if served.get(key) != (e.version, e.sha256_body):
                raised.add(key)
            served[key] = (e.version, e.sha256_body)
        elif name in to_write:
            lowered.append((name, e.version, was))
    if lowered:
        # (the build numbers against what was served; this is for one made before the
        # lock was taken, or from a record another publish has raised since)
        name, version, was = lowered[0]
        raise Refused(
            f"{len(lowered)} file(s) would be served with a version below one already "
            f"served ({name}: {version}, served {was}); devices ignore a lower number. "
            "Nothing was written, the last good files stay",
            hint="publish again: the build numbers from what was served (or raise "
            "version_floor past it)",
        )
    nothing_to_write = (
        the_plan.empty
        and previous is not None
        and previous.commit == build.commit
        and set(previous.roots) == {str(r) for r in roots}
        and not previous.lagging()
        and whole(previous.served) == whole(served)
    )
    noted: list[bool] = []
    if nothing_to_write:
        assert previous is not None
        same_record = (
            dict(previous.inputs) == inputs
            and previous.notes == tuple(notes)
            and all(
                whole(previous.roots[str(r)].stat) == whole(the_plan.intact[str(r)]) for r in roots
            )
        )
        if same_record:
            return PublishResult(
                build.commit,
                previous.commit,
                True,
                the_plan,
                previous,
                notes=tuple(notes),
                previous_files=old_files,
                state_dir=targets.state_dir,
            )
        # The files are right; the record of them is not (stats, inputs): rewrite it.
        failures: dict[str, str] = {}
        leftovers: dict[str, set[str]] = {}
        written: dict[str, dict[str, Stat]] = {}
    else:
        _check_manifest_place(targets.state_dir)

        def note() -> None:
            # (just before the first rename: a publish that fails or dies while it stages
            # leaves no record of versions it never served)
            files = {**pending_files, **{name: digests[name] for name in wanted}}
            _note_pending(targets.state_dir, served, raised | pending.keys(), files)
            noted.append(True)

        def before_renames() -> None:
            if held is not None:
                held.hold()
            # (a name no manifest lists, at a number recorded already: a device added
            # again as it was; left unnamed, it would stay served as not gitprov's)
            if raised or any(name not in old_files for name in wanted):
                note()

        failures, leftovers, touched, written = _apply(
            the_plan, wanted, roots, progress, before_renames
        )
        if noted and not touched and len(failures) == len(roots):
            # (nothing was renamed)
            _put_back_pending(targets.state_dir, pending, pending_files)
        if len(failures) == len(roots) and not touched:
            root, why = next(iter(failures.items()))
            raise PublishError(
                f"cannot write into {root}: {why}; nothing was changed, the last good "
                "files stay" + (f" ({len(roots)} roots failed)" if len(roots) > 1 else ""),
                hint="free space (or fix permissions) and publish again",
            )
    manifest = Manifest(
        commit=build.commit,
        published_at=datetime.now(UTC).isoformat(timespec="seconds"),
        roots={
            str(r): _root_state(
                str(r),
                build.commit,
                previous,
                set(wanted),
                failures,
                leftovers,
                updated(the_plan.intact.get(str(r), {}), written.get(str(r), {})),
            )
            for r in roots
        },
        files=entries,
        served=served,
        inputs=inputs,
        notes=tuple(notes),
    )
    # Every other name holds the very entry it held (taken over): sets in C.
    changed = (
        (previous.files.keys() - carried.keys()) | made.keys() if previous and carried else None
    )
    state: list[journal.Digested] = []

    def digest_of_state() -> None:
        # (an error here is met again where the digest is made for the journal)
        with contextlib.suppress(Exception):
            state.append(journal.state_digest_kept(manifest, previous, changed, targets.state_dir))

    try:
        digest = hashlib.sha256()
        text = manifest_chunks(targets.state_dir, manifest)
        # (a publish by change: its manifest spliced, its wait for the disk most of its
        # time; a full write's digest waits for its files' bytes to be let go: 60 MB)
        meanwhile = digest_of_state if digest_state and isinstance(text, list) else None
        _write_hashed(targets.state_dir / MANIFEST, text, digest, meanwhile)
    except OSError as exc:
        raise PublishError(
            f"the files are in place but the manifest could not be written into "
            f"{targets.state_dir}: {_describe(exc)}",
            hint="free space in the state dir and publish again (it converges)",
        ) from exc
    manifest = replace(manifest, sha256=digest.hexdigest())
    if raised or pending or pending_files or noted:
        # (the manifest records them now; a removal lost in a crash leaves numbers no
        # higher than its own, which change nothing)
        with contextlib.suppress(OSError):
            os.unlink(targets.state_dir / PENDING)
    write_map_ends(targets.state_dir, manifest, text)
    # Its `served` holds every file's number already (see above): the record a next
    # publish in this process asks for, without a pass over the files for it.
    vars(manifest)["served_record"] = served
    remember_manifest(targets.state_dir, manifest)
    write_index(targets.state_dir, manifest)
    if len(to_write) >= NOTE_LISTED_MIN and not failures:
        # The next publish would list each root this one just wrote (at 100,000 devices
        # half of what publishing this commit again costs); listed now, once, it need not.
        note_listed(targets.state_dir, manifest)
    return PublishResult(
        build.commit,
        previous.commit if previous else None,
        nothing_to_write,
        the_plan,
        manifest,
        failures,
        tuple(notes),
        old_files,
        targets.state_dir,
        changed,
        state[0] if state else None,
    )


# A publish that wrote this many files records what its roots list (see note_listed).
NOTE_LISTED_MIN = 10_000


class NotAChange(Exception):
    """A build by change makes a file named like one it would take over: build every
    device (the full build says what clashes, or that nothing does)."""


def _carried_contents(
    carried: Mapping[str, ManifestEntry], names: set[str], roots: tuple[str, ...]
) -> dict[str, bytes]:
    """The bytes of carried files a root needs written, read from `roots` as the
    manifest records them (CarriedUnreadable: no root holds them any more)."""
    out: dict[str, bytes] = {}
    unreadable: dict[str, str] = {}
    for name in sorted(names):
        e = carried[name]
        try:
            out[name] = CarriedFile.of(e, name, "", (), roots).data
        except CarriedUnreadable:
            unreadable[e.mac] = name
    if unreadable:
        raise CarriedUnreadable(unreadable)
    return out


def _write_hashed(
    path: Path,
    chunks: Iterable[bytes | memoryview],
    digest: hashlib._Hash,
    meanwhile: Callable[[], None] | None = None,
) -> None:
    """write_atomic(path, chunks, meanwhile=meanwhile), `digest` updated with them: while
    they are written and synced, on another thread, when they are all at hand (a
    manifest made by change, 60 MB at 100,000 devices, its sha256 a twentieth of a
    second: hashlib lets go of the GIL over large chunks); else as each is written (a
    text made as it goes is never whole in memory)."""
    if not isinstance(chunks, list):
        write_atomic(path, _hashed(chunks, digest), meanwhile=meanwhile)
        return
    hashing = threading.Thread(target=lambda: any(map(digest.update, chunks)))
    hashing.start()
    try:
        write_atomic(path, chunks, meanwhile=meanwhile)
    finally:
        hashing.join()


def _hashed(
    chunks: Iterable[bytes | memoryview], digest: hashlib._Hash
) -> Iterator[bytes | memoryview]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _contents(files: Sequence[Artifact], names: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    unreadable: dict[str, str] = {}
    for a in files:
        if a.name in names:
            try:
                out[a.name] = a.data
            except CarriedUnreadable as exc:
                unreadable.update(dict.fromkeys(exc.macs, a.name))
    if unreadable:
        raise CarriedUnreadable(unreadable)
    return out


def _root_state(
    root: str,
    commit: str,
    previous: Manifest | None,
    wanted: set[str],
    failures: Mapping[str, str],
    leftovers: Mapping[str, set[str]],
    stat: Mapping[str, Stat],
) -> RootState:
    if root in failures:
        before = previous.roots.get(root) if previous else None
        owned = previous.owned(root) if previous else set()
        return RootState(
            before.commit if before else None, failures[root], tuple(sorted(owned - wanted))
        )
    return RootState(commit, "", tuple(sorted(leftovers.get(root, set()))), stat)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _apply(
    the_plan: Plan,
    wanted: Mapping[str, bytes],
    roots: Sequence[Path],
    progress: Progress | None,
    before_renames: Callable[[], None] | None = None,
) -> tuple[dict[str, str], dict[str, set[str]], set[str], dict[str, dict[str, Stat]]]:
    """Stage, sync, rename, remove; per root. Returns the roots that failed (and why), per
    root the files whose removal failed, the failed roots where some renames happened,
    and per root the stat of every file written."""
    failures: dict[str, str] = {}
    writes = [a for a in the_plan.actions if a.action is not Action.REMOVE]
    # Per root, (temp, name) pairs relative to its directory, opened once: 200,000 pairs
    # of full paths were 50 MB at a cold publish's peak of memory.
    staged: dict[str, list[tuple[str, str]]] = {str(r): [] for r in roots}
    stats: dict[str, dict[str, Stat]] = {str(r): {} for r in roots}
    batch = _SYNCFS is not None and len(writes) >= SYNCFS_MIN
    umask = _umask()
    chmod = umask is None or bool(umask & 0o644)  # else the files are created 0o644
    handles: dict[str, int] = {}  # root -> its directory, opened before any temp is written
    done = 0
    try:
        try:
            for root in roots:
                key = str(root)
                mine = [a.name for a in writes if a.root == key]
                try:
                    _make_root(root)
                    if not mine:
                        continue
                    handles[key] = fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
                    source = _link_source(staged, handles, fd)
                    for name in mine:
                        tmp = _temp_name(name)
                        # Recorded before it exists: a Ctrl-C between its creation and
                        # its record left it in the root (removing one not made is none).
                        staged[key].append((tmp, name))
                        linked = False
                        if source is not None and name in source[1]:
                            linked = _link(source, name, tmp, fd)
                            if not linked:
                                source = None  # (refused once: the next would be too)
                        if not linked:
                            data = wanted[name]
                            _write_new(tmp, data, sync=not batch, chmod=chmod, dir_fd=fd)
                        done += 1
                        if progress:
                            progress("write", done, len(writes))
                except OSError as exc:
                    failures[key] = _describe(exc)
                    _unlink_temps(staged.pop(key), handles.get(key))
            if batch:
                _sync_staged(staged, handles, failures)
            for key, temps in list(staged.items()):
                if not temps:
                    continue
                # Stat once durable (a network filesystem may set the mtime on writeback),
                # of the temp no one else writes; the rename keeps it.
                fd = handles[key]
                try:
                    stats[key] = {name: _served_stat(tmp, chmod, fd) for tmp, name in temps}
                except OSError as exc:
                    failures[key] = _describe(exc)
                    _unlink_temps(staged.pop(key), fd)
        except BaseException:
            for key, temps in staged.items():
                _unlink_temps(temps, handles.get(key))
            raise
        # Every temp is durable: now the renames, then the removals, then each directory.
        if before_renames is not None and any(staged.values()):
            try:
                before_renames()
            except BaseException:
                for key, temps in staged.items():
                    _unlink_temps(temps, handles.get(key))
                raise
        touched: set[str] = set()
        for key, temps in staged.items():
            if not temps:
                continue
            fd = handles[key]
            # Only a rename over a file frees blocks: new names go in this thread (threads
            # creating names in one directory contend for its lock, for more system time).
            new = {a.name for a in writes if a.root == key and a.action is Action.ADD}
            added = [pair for pair in temps if pair[1] in new]
            over = [pair for pair in temps if pair[1] not in new]
            temps = added + over
            rename = functools.partial(_rename, fd)
            errors = [_attempt(rename, pair) for pair in added] + _each(rename, over)
            if any(e is None for e in errors):
                touched.add(key)
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                failed = [pair for pair, e in zip(temps, errors, strict=True) if e is not None]
                _unlink_temps(failed, fd)
                # (the file it could not be renamed onto: a directory put there, say)
                failures[key] = f"{failed[0][1]}: {_describe(first)}"
    finally:
        for fd in handles.values():
            os.close(fd)
    leftovers: dict[str, set[str]] = {}
    removed: set[str] = set()
    for key in staged:
        if key in failures:
            continue
        gone = [
            Path(key) / a.name
            for a in the_plan.actions
            if a.action is Action.REMOVE and a.root == key
        ]
        for path, e in zip(gone, _each(os.unlink, gone), strict=True):
            if e is None:
                removed.add(key)
            elif not isinstance(e, FileNotFoundError):
                leftovers.setdefault(key, set()).add(path.name)
    for key in staged:
        if key in failures or not (key in removed or staged[key]):
            continue
        try:
            _fsync_dir(Path(key))
        except OSError as exc:
            failures[key] = _describe(exc)
    return failures, leftovers, touched & set(failures), stats


# A rename over a served file and a removal free the old file's blocks, and on some
# filesystems wait for the disk to do so (ext4 mounted with online discard: ~2.5 ms
# each, nearly all of it waiting): in threads they wait together, ~8x faster for a
# change reaching 2,000 devices. A small change stays in this thread. Each thread takes
# every n-th item: a task per item cost the calling thread 0.2 s per 1,000 items.
_IO_THREADS = 16
_IO_THREADED_MIN = 16
_A = TypeVar("_A")


def _attempt(fn: Callable[[_A], object], item: _A) -> OSError | None:
    try:
        fn(item)
    except OSError as exc:
        return exc
    return None


def _each(fn: Callable[[_A], object], items: Sequence[_A]) -> list[OSError | None]:
    """fn(item) for every item, each one's OSError (None: done), in the items' order."""
    if len(items) < _IO_THREADED_MIN:
        return [_attempt(fn, item) for item in items]
    n = min(_IO_THREADS, len(items))
    out: list[OSError | None] = [None] * len(items)

    def share(first: int) -> None:
        for i in range(first, len(items), n):
            out[i] = _attempt(fn, items[i])

    with ThreadPoolExecutor(n, thread_name_prefix="gitprov-io") as pool:
        for _ in pool.map(share, range(n)):
            pass
    return out


# A root's staged temps to link from: its directory and, per name, the temp.
_LinkSource = tuple[int, dict[str, str]]


def _link_source(
    staged: Mapping[str, Sequence[tuple[str, str]]], handles: Mapping[str, int], fd: int
) -> _LinkSource | None:
    """The first root staged so far on the filesystem of directory `fd`: its temps are
    linked into this root rather than written again (every root serves the same bytes
    under a name). One file for both roots is half the files to create and sync, and
    lets a survey check the second root by inode from its listing (`plan._survey`)."""
    dev = os.fstat(fd).st_dev
    for key, temps in staged.items():
        src = handles.get(key)
        if temps and src is not None and src != fd and os.fstat(src).st_dev == dev:
            return src, {name: tmp for tmp, name in temps}
    return None


def _link(source: _LinkSource, name: str, tmp: str, fd: int) -> bool:
    """Whether `name`'s temp in `source` is now also `tmp` in directory `fd`; False (the
    caller writes it) when the filesystem refuses (no hard links there, or a file at
    its link limit)."""
    src_fd, temps = source
    try:
        os.link(temps[name], tmp, src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _rename(dir_fd: int, pair: tuple[str, str]) -> None:
    os.replace(pair[0], pair[1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _sync_staged(
    staged: dict[str, list[tuple[str, str]]], handles: Mapping[str, int], failures: dict[str, str]
) -> None:
    """One syncfs per filesystem holding a root with temps (on a directory opened before
    they were written); a root whose sync failed fails, its temps removed. Where syncfs
    turns out not to work (ENOSYS), each temp is fsynced instead."""
    by_fs: dict[int, list[str]] = {}
    for key, temps in staged.items():
        if temps and key in handles:
            by_fs.setdefault(os.fstat(handles[key]).st_dev, []).append(key)
    for keys in by_fs.values():
        try:
            try:
                syncfs(handles[keys[0]])
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                for key in keys:
                    for tmp, _ in staged[key]:
                        _fsync_file(tmp, handles[key])
        except OSError as exc:
            for key in keys:
                failures[key] = _describe(exc)
                _unlink_temps(staged.pop(key), handles[key])


def _fsync_file(path: str, dir_fd: int | None = None) -> None:
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_root(root: Path) -> None:
    if root.is_dir():
        return
    root.mkdir(parents=True, exist_ok=True)
    # nginx and tftpd drop privileges: a root gitprov creates must be world-searchable.
    os.chmod(root, 0o755)


def _unlink_temps(temps: Sequence[tuple[str, str]], dir_fd: int | None) -> None:
    """Remove staged temps, named relative to `dir_fd` (their root's directory)."""
    for tmp, _ in temps:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)


# -- reconcile --------------------------------------------------------------------------
class Inspection(NamedTuple):
    """What the served roots look like against the manifest, without building anything."""

    manifest: Manifest | None
    drift: tuple[Drift, ...]
    lagging: tuple[str, ...]  # roots not at the manifest's commit
    temps_removed: int

    @property
    def clean(self) -> bool:
        return not self.drift and not self.lagging


def inspect(state_dir: Path, lock_wait: float = 0.0, *, verify: bool = False) -> Inspection:
    """Under the publish lock: remove stale temps and look for drift and lagging roots
    (by stat, as a publish judges files; `verify` reads every file)."""
    with publish_lock(state_dir, lock_wait):
        manifest = load_manifest(state_dir)
        if manifest is None:
            return Inspection(None, (), (), clean_temps((state_dir,)))
        roots = tuple(Path(r) for r in manifest.roots)
        removed = clean_temps((*roots, state_dir))
        drift = check_drift(manifest, verify=verify)
        return Inspection(manifest, drift, manifest.lagging(), removed)


def descendant_check(repo: pygit2.Repository) -> IsDescendant:
    def is_descendant(new: str, old: str) -> bool:
        try:
            return bool(repo.descendant_of(new, old))
        except (KeyError, ValueError, pygit2.GitError):
            return _descends_by_ids(repo, new, old)

    return is_descendant


def _descends_by_ids(repo: pygit2.Repository, new: str, old: str) -> bool:
    """libgit2 gave up on a commit it could not read: walk the parent ids themselves.
    `old` among them is an ancestor even if its object is gone; a commit missing on the
    way is a damaged or partial clone (exit 2), not a history that went elsewhere (which
    --force would publish over)."""
    seen: set[str] = set()
    todo = [new]
    while todo:
        oid = todo.pop()
        if oid == old:
            return True
        if oid in seen:
            continue
        seen.add(oid)
        try:
            commit = repo.get(oid)
        except (KeyError, ValueError, pygit2.GitError):
            commit = None
        if not isinstance(commit, pygit2.Commit):
            raise missing_commit(repo, oid)
        todo.extend(str(p) for p in commit.parent_ids)
    return False


# -- the stage root (key delivery https-stage, gitprov.stage) ------------------------


def check_stage_root(stage_root: Path, roots: Iterable[Path], state_dir: Path) -> None:
    """The stage root must be served by nothing that serves without a client
    certificate: never a plain root, inside one or holding one, nor the state dir."""
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
    assert where.stage_root is not None
    return Targets((where.stage_root,), where.state_dir / staging.STATE_SUBDIR)


def stage_build(build: Build) -> Build:
    """`build` as the stage root's publication: its stage files (https-stage; none
    otherwise, which empties the stage root), no bootstrap and no firmware."""
    inv = build.inventory
    fleet = inv.fleet._replace(option66=False)
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
        for s in staging.secured(build)
    )
    bare = replace(inv, fleet=fleet, models={})
    return Build(build.commit, bare, files, (), build.floor)


def needs_stage_root(build: Build, where: Targets) -> None:
    """https-stage without a stage root publishes nothing: the bootstrap would send new
    devices to stage files that do not exist."""
    if staging.secured(build) and where.stage_root is None:
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
    recorder: journal.Recorder | None = None,
) -> PublishResult | None:
    """Publish the stage files of `build` into the stage root (its own manifest and lock,
    in STATE_DIR/stage), before the bootstrap that leads devices there; None when there
    is no stage root."""
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


def _with_stage(
    result: PublishResult, staged: PublishResult | None, where: Targets
) -> PublishResult:
    """`result` saying what the stage root's own publication changed (the plain roots'
    result alone said "already published" while the stage files went), or that a stage
    root this state dir published into still holds stage files no publish empties."""
    if staged is not None:
        if not (staged.written or staged.removed):
            return result
        root = line_safe(", ".join(staged.manifest.roots))
        note = (
            f"the stage root {root}: {len(staged.written)} stage file(s) written, "
            f"{len(staged.removed)} removed"
        )
        return replace(result, already_published=False, notes=(*result.notes, note))
    if where.stage_root is not None:
        return result  # (given, and its files intact: the fast path of the same commit)
    left = load_manifest(where.state_dir / staging.STATE_SUBDIR)
    if left is None or not left.files or not left.roots:
        return result
    roots = line_safe(", ".join(sorted(left.roots)))
    note = (
        f"the stage root {roots} still holds {len(left.files)} stage file(s) of an earlier "
        "publish, each with a device's key, and none is given to empty it: publish once "
        f"with --stage-root {roots} (or stage_root in the publisher config)"
    )
    return replace(result, notes=(*result.notes, note))


def stage_intact(where: Targets, commit: str, *, verify: bool = False) -> bool:
    """Whether the stage root holds the stage files of `commit` as written (or there is
    no stage root): what lets a publish of an already published commit stop early."""
    if where.stage_root is None:
        return True
    manifest = load_manifest(where.state_dir / staging.STATE_SUBDIR)
    if manifest is None or manifest.commit != commit:
        return False
    if {str(r) for r in manifest.roots} != {str(where.stage_root)}:
        return False
    digests = {n: e.sha256_data for n, e in manifest.files.items()} if verify else None
    return intact(manifest.roots, commit, set(manifest.files), digests) is not None
