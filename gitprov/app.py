"""One call per command: what `gitprov COMMAND` does, for the CLI, the watcher and tests.

A `Session` is one inventory repository (and one inventory directory in it): it opens the
repository, resolves revisions, loads the private key when a command needs it, and keeps
one `Pipeline` whose caches make the next call cheap. Its methods return data and raise
`GitprovError`s; they never print. Errors of the environment (no repository, an unknown
revision, an unreadable file, a missing key, a shallow clone) are `UsageError`s (exit 2),
problems of the inventory `InvalidInventory` (exit 1).
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2

from gitprov import paths
from gitprov import secrets as sec
from gitprov.catalog import load_catalog
from gitprov.compile import placeholder_resolver
from gitprov.errors import GitprovError, InvalidInventory, UsageError
from gitprov.formats import flyingvoice
from gitprov.inventory import SECRETS_FILE, Device, Fleet, Inventory
from gitprov.pipeline import BOOTSTRAP, Loaded, Pipeline, secret_resolver
from gitprov.secrets import SecretError, load_private_key
from gitprov.source import (
    DEFAULT_INVENTORY_DIR,
    BadRevision,
    Source,
    WorktreeSource,
    commit_message,
    open_repo,
    resolve_commit,
    work_tree_of,
)
from gitprov.unsafe import unsafe_in
from gitprov.validate import Options
from gitprov.version import IncompleteHistory

# What only some commands use (publishing, the journal, history, review, verification, the
# watcher) is imported by the method that uses it: every command would otherwise pay for
# all of them at start-up.
if TYPE_CHECKING:
    from gitprov import audit, journal
    from gitprov.headstart import HeadStart
    from gitprov.publish import PathPolicy, PublishResult, Targets
    from gitprov.publisher_config import PublisherConfig
    from gitprov.review import Review
    from gitprov.verify import Verification
    from gitprov.watch import CommitPublisher

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Shown:
    mac: str
    file_name: str
    version: int | None  # None for the work tree (not committed: no version yet)
    text: str  # the rendered file; secrets redacted unless revealed


@dataclass(frozen=True)
class VersionRow:
    mac: str
    version: int
    commit: str  # the commit that set it
    summary: str  # that commit's first line


@dataclass(frozen=True)
class Built:
    commit: str
    out: Path
    files: int
    revealed: bool
    # Files of plain/ and encrypted/ this build did not write (left from an earlier one):
    # encrypted/ is what a publish would serve, and these it would not.
    stale: tuple[str, ...] = ()


class Session:
    def __init__(
        self,
        repo: str | Path = ".",
        inventory_dir: str = DEFAULT_INVENTORY_DIR,
        *,
        private_key_file: str | None = None,
        strict: bool = False,
        env: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.repo_path = str(repo)
        self.inventory_dir = inventory_dir
        self.private_key_file = private_key_file
        self.strict = strict
        self.env = os.environ if env is None else env
        self.progress = progress
        self._repo: pygit2.Repository | None = None
        self._pipeline: Pipeline | None = None

    # -- plumbing -------------------------------------------------------------------------
    @property
    def repo(self) -> pygit2.Repository:
        if self._repo is None:
            self._repo = open_repo(self.repo_path)
        return self._repo

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = Pipeline(
                self.repo,
                self.inventory_dir,
                load_catalog(),
                Options(strict=self.strict),
                cache_dir=Path(self.repo.path) / "gitprov-cache",
            )
            self._pipeline.progress = self.progress
        return self._pipeline

    def commit(self, rev: str) -> pygit2.Commit:
        return resolve_commit(self.repo, rev)

    @property
    def top(self) -> Path:
        workdir = self.repo.workdir
        if workdir is None:
            raise UsageError(
                f"{self.repo.path} is a bare repository: it has no work tree to read",
                hint="use --rev REV instead of --worktree, or run in a clone with files",
            )
        return Path(workdir)

    def private_key(self) -> str | None:
        try:
            return load_private_key(self.env, self.private_key_file)
        except SecretError as exc:
            raise UsageError(exc.message, hint=exc.hint) from None

    def load(
        self, rev: str = "HEAD", worktree: bool = False
    ) -> tuple[Loaded, pygit2.Commit | None]:
        """The inventory at `rev`, or in the work tree (validated against HEAD's history)."""
        if worktree:
            src: Source = WorktreeSource(self.top, self.inventory_dir)
            head = None if self.repo.head_is_unborn else self.repo.head.peel(pygit2.Commit)
            floor = self.pipeline.history_floor([head.id] if head is not None else [])
            return self.pipeline.load(src, floor), None
        commit = self.commit(rev)
        return self.pipeline.load_commit(commit), commit

    def inventory(
        self, rev: str = "HEAD", worktree: bool = False
    ) -> tuple[Inventory, pygit2.Commit | None]:
        loaded, commit = self.load(rev, worktree)
        if loaded.inventory is None:
            raise InvalidInventory(
                f"the inventory has {len(loaded.errors)} error(s)",
                hint="run `gitprov validate` and fix them",
                problems=loaded.problems,
            )
        return loaded.inventory, commit

    # -- commands ------------------------------------------------------------------------
    def validate(self, rev: str = "HEAD", worktree: bool = False) -> Loaded:
        return self.load(rev, worktree)[0]

    def show(
        self, mac: str, rev: str = "HEAD", worktree: bool = False, reveal: bool = False
    ) -> Shown:
        inv, commit = self.inventory(rev, worktree)
        device = find_device(inv, mac)
        version = self.pipeline.versions(commit)[mac].version if commit is not None else None
        if reveal:
            cfg = self.pipeline.compile(inv, device, secret_resolver(inv, self._key_for(inv)))
            text = flyingvoice.render(cfg, version)
        else:
            cfg = self.pipeline.compile(inv, device, placeholder_resolver(inv.sealed))
            text = flyingvoice.render(cfg, version, redact=True)
        return Shown(mac, cfg.file_name, version, text.decode())

    def key(self, mac: str, rev: str = "HEAD", worktree: bool = False) -> str:
        inv, _ = self.inventory(rev, worktree)
        device = find_device(inv, mac)
        cfg = self.pipeline.compile(inv, device, secret_resolver(inv, self._key_for(inv)))
        if cfg.key is None:
            raise UsageError(
                f"{mac}'s file is not encrypted (its model's encryption mode is none)",
                hint="nothing to print: its file is plaintext",
            )
        return cfg.key

    def build(self, rev: str, out: Path, reveal: bool = False) -> Built:
        """Compile `rev` into OUT/plain (redacted unless `reveal`) and OUT/encrypted.

        A scratch output: written without fsync (a crash leaves at worst a file to rebuild);
        `publish` is the one that makes its files durable."""
        from gitprov.publish import write_file

        if paths.kind(out, "--out") not in (None, stat.S_IFDIR):
            raise UsageError(f"--out {out} is a file", hint="give a directory (created if missing)")
        commit = self.commit(rev)
        loaded = self.pipeline.load_commit(commit)
        if loaded.inventory is None:
            raise InvalidInventory(
                f"commit {str(commit.id)[:12]} has {len(loaded.errors)} error(s)",
                hint=f"fix them and commit again; nothing was written into {out}",
                problems=loaded.problems,
            )
        key = self._key_for(loaded.inventory)
        build = self.pipeline.build(commit, key, loaded=loaded)
        total = len(build.files)
        try:
            for done, f in enumerate(build.files, start=1):
                # Revealed plaintext holds every secret: readable by this user only.
                plain = f.plaintext if reveal else f.redacted
                write_file(out / "plain" / f.name, plain, 0o600 if reveal else 0o644)
                write_file(out / "encrypted" / f.name, f.data)
                if self.progress is not None:
                    self.progress("write", done, total)
        except OSError as exc:
            raise UsageError(
                f"cannot write into {out}: {exc.strerror}", hint="choose another --out"
            ) from None
        made = {f.name for f in build.files}
        stale = [
            f"{part}/{name}"
            for part in ("plain", "encrypted")
            for name in sorted(os.listdir(out / part) if (out / part).is_dir() else ())
            if name not in made
        ]
        return Built(build.commit, out, total, reveal, tuple(stale))

    def plan(self, base: str, rev: str) -> Review:
        from gitprov.review import review

        head = self.commit(rev)  # an empty repository says so before the base is missed
        try:
            start = self.commit(base)
        except UsageError as exc:
            branches = sorted(self.repo.branches.local)
            shown = ", ".join(branches[:10]) + (", …" if len(branches) > 10 else "")
            # (a base the repository cannot read, damaged or shallow: its own hint says
            # what to do, not another branch name)
            raise UsageError(
                f"{exc.message}: the base, the branch the change goes into (--base)",
                hint=f"pass --base BRANCH; this repository's branches: {shown or 'none'}"
                if isinstance(exc, BadRevision) or not exc.hint
                else exc.hint,
            ) from None
        return review(self.pipeline, start, head)

    def versions(self, rev: str = "HEAD", macs: Sequence[str] = ()) -> list[VersionRow]:
        commit = self.commit(rev)
        try:
            state = self.pipeline.state(commit)
        except IncompleteHistory:
            self.inventory(rev)  # an invalid commit says so first, as validate would
            raise
        # The version state says whether the commit validated (leniently): only an invalid
        # or a strict one is loaded again, for its located problems.
        if not state.valid or self.strict:
            self.inventory(rev)
        vers = state.versions()
        wanted = list(macs) or sorted(m for m in vers if m != BOOTSTRAP)
        for mac in wanted:
            if mac not in vers:
                find_device(self.inventory(rev)[0], mac)  # raises with the closest MACs
        rows = []
        summaries: dict[str, str] = {}
        for mac in wanted:
            info = vers[mac]
            if info.commit not in summaries:
                c = self.repo.get(info.commit)
                message = commit_message(c) if isinstance(c, pygit2.Commit) else ""
                summaries[info.commit] = message.splitlines()[0] if message else ""
            rows.append(VersionRow(mac, info.version, info.commit, summaries[info.commit]))
        return rows

    def publish(
        self,
        rev: str = "HEAD",
        config: PublisherConfig | None = None,
        *,
        force: bool = False,
        wait: float = 0.0,
        prune_unknown: bool = False,
        allow_mass_removal: bool = False,
        allow_target_change: bool = False,
        allow_stranding: bool = False,
        verify: bool = False,
        head: HeadStart | None = None,
    ) -> PublishResult:
        """Publish `rev` where `config` (the operator's) says, or where the fleet settings
        say within what `config` allows; refused when a guard says so (see `Guards`).
        Nothing is loaded when the commit is published already and the roots are intact
        by stat (`verify`: by their bytes), so the private key is asked for only when
        there is something to build. `head`: see gitprov.headstart."""
        from gitprov.publish import Guards, publish_commit
        from gitprov.publisher_config import PublisherConfig

        config = config or PublisherConfig()
        guards = Guards(
            allow_mass_removal, allow_target_change, config.signature_policy(), allow_stranding
        )
        commit = self.commit(rev)
        return publish_commit(
            self.pipeline,
            commit,
            lambda fleet: self.targets(fleet, config),
            self._key_for,
            force=force,
            progress=self.progress,
            lock_wait=wait,
            prune_unknown=prune_unknown,
            guards=guards,
            verify=verify,
            head=head,
        )

    def targets(self, fleet: Fleet, given: PublisherConfig) -> Targets:
        from gitprov.publish import targets_for

        return targets_for(
            fleet,
            http_roots=given.http_roots,
            tftp_roots=given.tftp_roots,
            state_dir=given.state_dir,
            firmware_dir=given.firmware_dir,
            base=self.base,
            policy=self.path_policy(given),
            stage_root=given.stage_root,
        )

    def path_policy(self, given: PublisherConfig) -> PathPolicy:
        """Where the fleet settings' paths may point: the operator's allow-list, else this
        repository's work tree (none for a bare one); never into the git directory."""
        from gitprov.publish import PathPolicy

        workdir = self.repo.workdir
        return PathPolicy(
            tuple(Path(r) for r in given.allowed_roots),
            Path(workdir) if workdir is not None else None,
            Path(self.repo.path),
            self.top / self.inventory_dir if workdir is not None else None,
        )

    @property
    def base(self) -> Path:
        """What relative paths in the fleet settings are relative to: the work tree's top,
        or the repository itself when it is bare."""
        workdir = self.repo.workdir
        return Path(workdir) if workdir is not None else Path(self.repo.path)

    def fleet_path(self, value: str | None) -> str | None:
        from gitprov.publish import resolve_fleet_path

        if not value:
            return None
        return str(resolve_fleet_path(value, self.base))

    def log(self, mac: str, rev: str = "HEAD") -> list[audit.Change]:
        from gitprov import audit

        head = self.commit(rev)
        changes = audit.history(self.pipeline, head, mac)
        if not changes:
            inv, _ = self.inventory(rev)
            find_device(inv, mac)
            raise UsageError(f"{mac} never appears on the first-parent history of {rev}")
        return changes

    def blame(self, mac: str, rev: str = "HEAD", param: str | None = None) -> list[audit.BlameLine]:
        from gitprov import audit

        head = self.commit(rev)
        lines = audit.blame(self.pipeline, head, mac, find_device)
        if not param:
            return lines
        catalog = self.pipeline.catalog
        found = catalog.lookup(param) or catalog.lookup_line(param.removeprefix("line."))
        key = found.key if found else param
        if key == audit.VERSION_KEY:
            version = audit.blame_version(self.pipeline, head, mac)
            if version is not None:
                return [version]
        chosen = [b for b in lines if b.key == key]
        if not chosen:
            keys = sorted({b.key for b in lines})
            close = difflib.get_close_matches(key, keys, n=3)
            raise UsageError(
                f"{mac}'s file has no parameter {param!r}",
                hint=("did you mean " + ", ".join(close) + "? " if close else "")
                + "`gitprov show MAC` lists its parameters; `gitprov params` the catalog",
            )
        return chosen

    # -- what was served (the publisher's state dir) -----------------------------------
    def verify(self, rev: str = "HEAD", config: PublisherConfig | None = None) -> Verification:
        """Build `rev` as `publish` would (same key, versions continued from the manifest)
        and compare it byte for byte with the roots `config` (or the fleet) names."""
        from gitprov.publisher_config import PublisherConfig
        from gitprov.verify import verify_commit

        config = config or PublisherConfig()
        return verify_commit(
            self.pipeline,
            self.commit(rev),
            lambda fleet: self.targets(fleet, config),
            self._key_for,
        )

    def state_dir(self, config: PublisherConfig | None = None) -> Path:
        """The publisher's state dir: the operator's (the repository is then not even
        opened), else the one HEAD's fleet settings name."""
        from gitprov.publish import fleet_of, resolve_fleet_path

        if config is not None and config.state_dir:
            return Path(config.state_dir)
        try:
            head = self.commit("HEAD")
        except UsageError as exc:  # (no repository here: the state dir alone would do)
            raise UsageError(
                exc.message,
                hint=f"{exc.hint or 'pass --repo PATH'}; or pass --state-dir DIR (the "
                "publisher's state dir is read without the repository)",
            ) from None
        fleet = fleet_of(self.pipeline, head)
        if fleet is None or not fleet.state_dir:
            raise UsageError(
                "no state dir: HEAD's gitprov.yaml names no publish.state_dir",
                hint="pass --state-dir DIR (the publisher's), or --config FILE",
            )
        return resolve_fleet_path(fleet.state_dir, self.base)

    def read_journal(self, config: PublisherConfig | None = None) -> journal.Read:
        """The publish journal of the state dir, with a note when it is behind the
        manifest (a publish cut short before its entry)."""
        from gitprov import journal
        from gitprov.plan import load_manifest

        state_dir = self.state_dir(config)
        return journal.read_journal(state_dir, load_manifest(state_dir))

    # -- sealed secrets (the work tree's secrets.yaml) -----------------------------------
    def secrets_path(self) -> Path:
        return self.top / self.inventory_dir / SECRETS_FILE

    def secrets_file(self) -> sec.SecretsFile:
        return self._secrets_read()[2]

    def _secrets_read(self) -> tuple[Path, str, sec.SecretsFile]:
        """The secrets file's path, its text (`set` and `rotate` keep its comments) and
        what it holds."""
        path = self.secrets_path()
        text = self._secrets_text()
        return path, text, sec.load_secrets_file(text, source=str(path))

    def _secrets_text(self) -> str:
        from gitprov.limits import DEFAULT
        from gitprov.smallfile import NotAFile, read_small

        path = self.secrets_path()
        # Read bounded and never blocking, as the key file is: a work tree's secrets.yaml
        # that was a fifo hung `secrets list`, and a link to /dev/zero ate all memory.
        limit = DEFAULT.document_bytes
        try:
            data = read_small(path, limit)
            if len(data) > limit:
                raise UsageError(
                    f"{path} is larger than {limit // 2**20} MiB: no secrets file",
                    hint=f"check what replaced it (`git diff`); `git checkout -- {path}` restores "
                    "the committed one",
                )
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise UsageError(
                f"{path}:{line}: not UTF-8 text",
                hint="save the file as UTF-8 (`gitprov validate --worktree` shows the place)",
            ) from None
        except FileNotFoundError:
            raise UsageError(
                f"{path} does not exist",
                hint="create it with `public_key: gitprov-pk-…` and `secrets: {}`",
            ) from None
        except NotAFile as exc:
            raise UsageError(
                f"{path} is {exc.what}, not a file",
                hint=f"put the secrets file itself there (`git checkout -- {path}` restores "
                "the committed one)",
            ) from None
        except OSError as exc:
            raise UsageError(
                f"cannot read {path}: {exc.strerror}",
                hint="check the path and that this user may read it",
            ) from None
        return text

    def secrets_list(self) -> list[tuple[str, str]]:
        """(name, digest of the sealed value) of every secret: never a value."""
        return [(n, sec.sealed_digest(v)) for n, v in self.secrets_file().sealed.items()]

    def secrets_set(self, name: str, value: str) -> Path:
        from gitprov.publish import write_atomic

        if not value:
            raise UsageError("empty secret value", hint="type the value, or pipe it on stdin")
        # What a publish would refuse once unsealed (see builder.secret_resolver), refused
        # now, while the person who has the value is here to fix it.
        unsafe = unsafe_in(value, tab=True)
        if unsafe is not None:
            what, hint = unsafe
            raise UsageError(
                f"the value of {name} holds {what} (the value is not shown); nothing was sealed",
                hint=hint,
            )
        path, text, sf = self._secrets_read()
        sealed = dict(sf.sealed)
        sealed[name] = sec.seal(sf.public_key, name, value)
        new = sec.SecretsFile(sf.public_key, sealed)
        write_atomic(path, sec.rewrite_secrets_file(text, sf, new).encode())
        return path

    def secrets_rotate(self, new_public_key: str) -> int:
        from gitprov.publish import write_atomic

        current = self.private_key()
        if current is None:
            raise UsageError(
                "rotate needs the current private key",
                hint="set GITPROV_PRIVATE_KEY_FILE (or GITPROV_PRIVATE_KEY), or pass "
                "--private-key-file FILE before `secrets`: gitprov --private-key-file FILE "
                "secrets rotate ...",
            )
        path, text, sf = self._secrets_read()
        if new_public_key == sf.public_key:
            # Re-sealed to the same pair, nothing is safer (a leaked private key still
            # opens all), yet every device using a secret would get a new version.
            raise UsageError(
                f"--new-public-key is already the public_key of {path}: nothing to rotate",
                hint="make a new pair with `gitprov secrets keygen --out FILE` and give "
                "its public key",
            )
        try:
            rotated = sec.rotate(sf, current, new_public_key)
        except SecretError as exc:
            # The wrong private key, a new public key nothing can be sealed to, or a
            # value that does not open with the right key: each is fixed by what the
            # operator gives or does (exit 2, as build says it), not in the inventory.
            raise UsageError(exc.message, hint=exc.hint) from None
        write_atomic(path, sec.rewrite_secrets_file(text, sf, rotated).encode())
        return len(rotated.sealed)

    def fleet_settings(self) -> Fleet | None:
        """The fleet settings of the work tree (or of HEAD in a bare repository), for the
        defaults of `serve`; None when they do not validate."""
        worktree = self.repo.workdir is not None
        loaded, _ = self.load("HEAD", worktree)
        return loaded.inventory.fleet if loaded.inventory is not None else None

    # -- the watcher ----------------------------------------------------------------------
    def publisher(
        self,
        config: PublisherConfig,
        *,
        prune_unknown: bool,
        lock_wait: float,
        allow_mass_removal: bool = False,
        allow_target_change: bool = False,
        allow_stranding: bool = False,
        verify: bool = False,
        watch_roots: bool = True,
    ) -> CommitPublisher:
        """What `gitprov watch` publishes each new head with: where `config` says, which
        must name the state dir (a watcher resumes from it, so a pull request must not
        move it) and either the roots or an allow-list for the fleet settings' roots.
        Every so often it starts over with a fresh Pipeline (a long-running process must
        not grow its caches)."""
        from gitprov.publish import Guards, check_operator_targets
        from gitprov.watch import CommitPublisher

        config.require_targets()
        assert config.state_dir is not None
        check_operator_targets(
            self.path_policy(config),
            http_roots=config.http_roots,
            tftp_roots=config.tftp_roots,
            state_dir=config.state_dir,
            firmware_dir=config.firmware_dir,
            stage_root=config.stage_root,
        )
        guards = Guards(
            allow_mass_removal, allow_target_change, config.signature_policy(), allow_stranding
        )

        def renew(repo: pygit2.Repository) -> Pipeline:
            old = self.pipeline
            fresh = Pipeline(
                repo, old.inventory_dir, old.catalog, old.options, Path(repo.path) / "gitprov-cache"
            )
            fresh.progress = old.progress
            return fresh

        return CommitPublisher(
            self.pipeline,
            self.private_key(),
            lambda fleet: self.targets(fleet, config),
            prune_unknown=prune_unknown,
            lock_wait=lock_wait,
            state_dir=Path(config.state_dir).absolute(),
            renew=renew,
            guards=guards,
            verify=verify,
            watch_roots=watch_roots,
        )

    def _key_for(self, inventory: Inventory | None) -> str | None:
        """The private key when the inventory has sealed secrets; an error if it is needed
        and not given."""
        key = self.private_key()
        if key is None and inventory is not None and inventory.sealed:
            raise UsageError(
                "the inventory has sealed secrets and no private key was given",
                hint="give the repository private key: GITPROV_PRIVATE_KEY, "
                "GITPROV_PRIVATE_KEY_FILE or --private-key-file",
            )
        return key


def keygen(out: Path) -> str:
    """A new key pair: the private key into `out` (created, mode 0600, never overwritten;
    refused inside a git work tree, as `init` refuses it inside the repository: a
    commit of it would open every secret); returns the public key."""
    paths.usable(out, "--out")
    tree = work_tree_of(out)
    if tree is not None:
        raise UsageError(
            f"the private key file {out} would be inside the git work tree {tree}",
            hint="keep it outside (e.g. /etc/gitprov/private-key or ~/.config/gitprov/); "
            "it opens every secret",
        )
    private, public = sec.generate_keypair()
    try:
        sec.write_key_file(out, private + "\n")
    except FileExistsError:
        raise UsageError(
            f"{out} exists", hint="choose another --out; never overwrite a key"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot write the private key into {out}: {exc.strerror}; nothing was kept",
            hint="choose an --out in a directory this user may write, with free space",
        ) from None
    return public


def find_device(inv: Inventory, mac: str) -> Device:
    device = inv.device(mac)
    if device is None:
        macs = sorted(d.mac for d in inv.devices)
        close = difflib.get_close_matches(mac, macs, n=3, cutoff=0.6)
        raise UsageError(
            f"no device {mac} in the inventory",
            hint=("did you mean " + ", ".join(close) + "? " if close else "")
            + "`gitprov versions` lists every device",
        )
    return device


__all__ = ["GitprovError", "Session", "find_device"]
