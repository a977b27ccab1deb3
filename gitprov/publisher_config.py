"""The publisher's own configuration: where it writes, which paths of the inventory it
accepts, and whose commits it publishes. The operator's, kept on the server; never read
from the repository being published, so a pull request cannot change it.

From the command line (`--http-root`, `--allow-root`, `--require-signed`, …), the
environment (`GITPROV_PUBLISHER_CONFIG` names the file, `GITPROV_ALLOWED_ROOTS` is a
colon-separated allow-list) and a YAML file (`--config FILE`):

    # /etc/gitprov/publisher.yaml
    http_root: /srv/gitprov/http          # or a list; likewise tftp_root
    tftp_root: /srv/gitprov/tftp
    state_dir: /var/lib/gitprov/state
    firmware_dir: /srv/gitprov/firmware
    stage_root: /srv/gitprov/stage        # key delivery https-stage: served by HTTPS only
    allowed_roots: [/srv/gitprov]         # where the inventory's publish: paths may point
    require_signed: true
    allowed_signers: /etc/gitprov/allowed_signers   # SSH keys (git's format)
    gpg_home: /etc/gitprov/gnupg                    # OpenPGP keyring

A value on the command line wins over the file's; allow-lists add up. Paths in the file
must be absolute: it is read from wherever the service starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from gitprov.errors import UsageError
from gitprov.limits import DEFAULT
from gitprov.signatures import SignaturePolicy
from gitprov.smallfile import NotAFile, read_small
from gitprov.yamldoc import Document, parse

CONFIG_ENV = "GITPROV_PUBLISHER_CONFIG"
ALLOWED_ROOTS_ENV = "GITPROV_ALLOWED_ROOTS"
_LISTS = ("http_root", "tftp_root", "allowed_roots")
_PATHS = ("state_dir", "firmware_dir", "allowed_signers", "gpg_home", "stage_root")
_KEYS = (*_LISTS, *_PATHS, "require_signed")


@dataclass(frozen=True)
class PublisherConfig:
    """Where to publish and what to accept, as the operator set it (empty: not set)."""

    http_roots: tuple[str, ...] = ()
    tftp_roots: tuple[str, ...] = ()
    state_dir: str | None = None
    firmware_dir: str | None = None
    allowed_roots: tuple[str, ...] = ()  # absolute; where inventory paths may point
    require_signed: bool = False
    allowed_signers: str | None = None
    gpg_home: str | None = None
    stage_root: str | None = None  # key delivery https-stage (gitprov.stage)

    @property
    def sets_targets(self) -> bool:
        """Whether the operator chose the state dir and at least one root."""
        return bool(self.state_dir and (self.http_roots or self.tftp_roots))

    def require_targets(self) -> None:
        """What a watcher needs (it publishes what others push): the state dir from its
        operator (it resumes from it, so a pull request must not move it), and the roots
        or an allow-list for the roots the fleet settings name."""
        if not self.state_dir:
            raise UsageError(
                "watch publishes what others push: it needs its state dir from its "
                "operator, not from the inventory",
                hint="pass --state-dir DIR, or set state_dir in a --config FILE "
                f"(or ${CONFIG_ENV})",
            )
        if not (self.http_roots or self.tftp_roots or self.allowed_roots):
            raise UsageError(
                "watch publishes what others push: it needs its roots from its operator, "
                "or an allow-list for the roots the inventory names",
                hint="pass --http-root/--tftp-root DIR, or --allow-root DIR (absolute), or "
                f"set them in a --config FILE (or ${CONFIG_ENV})",
            )

    def signature_policy(self) -> SignaturePolicy | None:
        """None when signatures are not required. A key list alone requires them too: a
        forgotten --require-signed must not publish unsigned commits."""
        if not (self.require_signed or self.allowed_signers or self.gpg_home):
            return None
        return SignaturePolicy(
            Path(self.allowed_signers) if self.allowed_signers else None,
            Path(self.gpg_home) if self.gpg_home else None,
        )


def resolve(
    given: PublisherConfig, config_file: str | None, env: Mapping[str, str]
) -> PublisherConfig:
    """`given` (the command line's) over the config file (`config_file`, else the one
    $GITPROV_PUBLISHER_CONFIG names), with $GITPROV_ALLOWED_ROOTS added to the allow-list."""
    path = config_file or env.get(CONFIG_ENV) or None
    base = load(Path(path)) if path else PublisherConfig()
    from_env = tuple(r for r in env.get(ALLOWED_ROOTS_ENV, "").split(":") if r)
    for root in from_env:
        if not Path(root).is_absolute():
            raise UsageError(
                f"{ALLOWED_ROOTS_ENV}: {root} is not an absolute path",
                hint="list absolute directories, separated by ':'",
            )
    resolved = replace(
        base,
        http_roots=given.http_roots or base.http_roots,
        tftp_roots=given.tftp_roots or base.tftp_roots,
        state_dir=given.state_dir or base.state_dir,
        firmware_dir=given.firmware_dir or base.firmware_dir,
        allowed_roots=tuple(dict.fromkeys((*given.allowed_roots, *from_env, *base.allowed_roots))),
        require_signed=given.require_signed or base.require_signed,
        allowed_signers=given.allowed_signers or base.allowed_signers,
        gpg_home=given.gpg_home or base.gpg_home,
        stage_root=given.stage_root or base.stage_root,
    )
    for what, value in _paths(resolved):
        if "\0" in value:
            # (no path holds one: it ended in an internal error in every command that
            # used the path; other characters are the operator's, shown escaped)
            raise UsageError(
                f"{what}: {value!r} holds a NUL character, which no path can",
                hint="give the path as it is on disk (the option, or the config file's key)",
            )
    return resolved


def _paths(c: PublisherConfig) -> list[tuple[str, str]]:
    out = [("http_root", r) for r in c.http_roots] + [("tftp_root", r) for r in c.tftp_roots]
    out += [("allowed_roots", r) for r in c.allowed_roots]
    for what, value in (
        ("state_dir", c.state_dir),
        ("firmware_dir", c.firmware_dir),
        ("stage_root", c.stage_root),
        ("allowed_signers", c.allowed_signers),
        ("gpg_home", c.gpg_home),
    ):
        if value:
            out.append((what, value))
    return out


def load(path: Path) -> PublisherConfig:
    """Read a publisher config file; a UsageError names the file, line and key."""
    try:
        # (bounded: a pipe of `yes` is no config; --config /dev/zero was read until
        # memory ran out, and a fifo nothing writes to blocked for ever)
        data = read_small(path, DEFAULT.document_bytes)
    except NotAFile as exc:
        raise UsageError(
            f"the publisher config {path} is {exc.what}, not a file",
            hint="pass --config FILE (or GITPROV_PUBLISHER_CONFIG) naming the YAML file "
            "of the publisher's settings",
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read the publisher config {path}: {exc.strerror}",
            hint="pass --config FILE (or GITPROV_PUBLISHER_CONFIG) naming a readable file",
        ) from None
    if len(data) > DEFAULT.document_bytes:
        raise UsageError(
            f"the publisher config {path} is larger than {DEFAULT.document_bytes // 2**20} "
            "MiB: not a publisher config",
            hint="pass --config FILE (or GITPROV_PUBLISHER_CONFIG) naming the YAML file "
            "of the publisher's settings",
        )
    doc, problems = parse(str(path), "", data)
    errors = [p for p in problems if p.is_error]
    if doc is None or errors:
        first = errors[0] if errors else None
        raise UsageError(
            f"{first.where() if first else path}: {first.message if first else 'unreadable'}",
            hint=first.hint if first else "write a YAML mapping of settings",
        )
    if doc.data is None:
        return PublisherConfig()
    if not isinstance(doc.data, dict):
        raise UsageError(f"{path}: the publisher config must be a mapping of settings")
    for key in doc.data:
        if key not in _KEYS:
            _fail(
                doc, (key,), f"unknown setting {key!r}", "settings: " + ", ".join(_KEYS), key=True
            )
    lists = {key: _list(doc, key) for key in _LISTS}
    paths = {key: _path(doc, key) for key in _PATHS}
    signed = doc.data.get("require_signed", False)
    if not isinstance(signed, bool):
        _fail(doc, ("require_signed",), "require_signed must be true or false")
    return PublisherConfig(
        http_roots=lists["http_root"],
        tftp_roots=lists["tftp_root"],
        state_dir=paths["state_dir"],
        firmware_dir=paths["firmware_dir"],
        allowed_roots=lists["allowed_roots"],
        require_signed=signed,
        allowed_signers=paths["allowed_signers"],
        gpg_home=paths["gpg_home"],
        stage_root=paths["stage_root"],
    )


def _list(doc: Document, key: str) -> tuple[str, ...]:
    value: Any = doc.data.get(key)
    if value is None:
        return ()
    items: Sequence[Any] = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        _fail(doc, (key,), f"{key} must be a path or a list of paths")
    for i, item in enumerate(items):
        _absolute(doc, (key, i) if not isinstance(value, str) else (key,), item)
    return tuple(items)


def _path(doc: Document, key: str) -> str | None:
    value: Any = doc.data.get(key)
    if value is None:
        return None
    _absolute(doc, (key,), value)
    return str(value)


def _absolute(doc: Document, where: tuple[str | int, ...], value: Any) -> None:
    if not isinstance(value, str) or not value:
        _fail(doc, where, f"{where[0]} must be a path")
    if not Path(value).is_absolute():
        _fail(doc, where, f"{where[0]}: {value} is not an absolute path", "write it from /")


def _fail(
    doc: Document,
    where: tuple[str | int, ...],
    message: str,
    hint: str = "",
    *,
    key: bool = False,
) -> NoReturn:
    line, col = doc.pos(where, key=key)
    raise UsageError(f"{doc.path}:{line}:{col}: {message}", hint=hint)
