"""The command line: parses options, calls the stages, renders results. Nothing else here
knows about terminals or exit codes (DESIGN.md invariant 6: 0 ok, 1 problems found,
2 usage, 3 internal error, 130 interrupted)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import pygit2

from gitprov import __version__, audit
from gitprov import device as device_cmd
from gitprov.catalog import load_catalog
from gitprov.errors import GitprovError, InvalidInventory, Problem, UsageError
from gitprov.formats import flyingvoice
from gitprov.inventory import Inventory
from gitprov.macros import normalise_mac
from gitprov.pipeline import BOOTSTRAP, Loaded, Pipeline
from gitprov.source import (
    DEFAULT_INVENTORY_DIR,
    Source,
    WorktreeSource,
    open_repo,
    resolve_commit,
)
from gitprov.validate import Options

log = logging.getLogger("gitprov")

EPILOG = """\
a 5-minute tour (inside an inventory repository):
  gitprov validate --worktree          check the files you are editing
  gitprov show 0021f2011b19            the rendered file of one device, secrets redacted
  gitprov versions                     each device's DBID_DBASE_VERSION and the commit that set it
  gitprov publish --rev main           write every device's file into the HTTP and TFTP roots
  gitprov serve                        serve the roots on 127.0.0.1 (HTTP :8080, TFTP :6969)
  curl -s http://127.0.0.1:8080/fv0021f2011b19.conf | gitprov decrypt - --key KEY

exit codes: 0 ok, 1 problems found, 2 usage error, 3 internal error, 130 interrupted
"""


# -- rendering of problems ----------------------------------------------------------------
def _color(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def render_text(problems: Sequence[Problem], stream: TextIO) -> None:
    color = _color(stream)
    for p in problems:
        level = str(p.level)
        where = p.where()
        hint = f"    hint: {p.hint}"
        if color:
            level = ("\033[1;31m" if p.is_error else "\033[1;33m") + level + "\033[0m"
            where = f"\033[1m{where}\033[0m"
            hint = f"\033[2m{hint}\033[0m"
        stream.write(f"{where}: {level}[{p.code}]: {p.message}\n")
        if p.hint:
            stream.write(hint + "\n")
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    if problems:
        stream.write(f"{errors} error(s), {warnings} warning(s)\n")


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render_github(problems: Sequence[Problem], stream: TextIO) -> None:
    for p in problems:
        kind = "error" if p.is_error else "warning"
        props = [f"file={_gh_escape(p.file, True)}"]
        if p.line:
            props += [f"line={p.line}", f"col={p.col}"]
        props.append(f"title={_gh_escape(p.code, True)}")
        msg = p.message + (f" (hint: {p.hint})" if p.hint else "")
        stream.write(f"::{kind} {','.join(props)}::{_gh_escape(msg)}\n")


def problems_json(problems: Sequence[Problem]) -> dict[str, Any]:
    """`validate --format json`, output format 1 (docs/validate-json.md; its JSON Schema is
    schemas/output/validate-output.schema.json). Add fields freely; change or remove one
    only with a new `version`."""
    errors = sum(p.is_error for p in problems)
    return {
        "version": 1,
        "ok": errors == 0,
        "summary": {"errors": errors, "warnings": len(problems) - errors},
        "problems": [p.as_dict() for p in problems],
    }


def render_problems(problems: Sequence[Problem], fmt: str, stream: TextIO) -> None:
    if fmt == "json":
        json.dump(problems_json(problems), stream, indent=2)
        stream.write("\n")
    elif fmt == "github":
        render_github(problems, stream)
    else:
        render_text(problems, stream)


# -- shared plumbing -------------------------------------------------------------------
class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._repo: pygit2.Repository | None = None
        self._pipeline: Pipeline | None = None

    @property
    def repo(self) -> pygit2.Repository:
        if self._repo is None:
            self._repo = open_repo(self.args.repo)
        return self._repo

    @property
    def top(self) -> Path:
        workdir = self.repo.workdir
        if workdir is None:
            raise UsageError("--worktree needs a repository with a work tree (this one is bare)")
        return Path(workdir)

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = Pipeline(
                self.repo,
                self.args.inventory_dir,
                load_catalog(),
                Options(strict=getattr(self.args, "strict", False)),
                cache_dir=Path(self.repo.path) / "gitprov-cache",
            )
        return self._pipeline

    def private_key(self) -> str | None:
        from gitprov.secrets import load_private_key

        return load_private_key(os.environ, self.args.private_key_file)

    def load(self) -> tuple[Loaded, pygit2.Commit | None]:
        if getattr(self.args, "worktree", False):
            src: Source = WorktreeSource(self.top, self.args.inventory_dir)
            return self.pipeline.load(src), None
        commit = resolve_commit(self.repo, self.args.rev)
        return self.pipeline.load_commit(commit), commit


def _require_valid(loaded: Loaded) -> None:
    if loaded.inventory is None:
        raise InvalidInventory(
            f"the inventory has {len(loaded.errors)} error(s)",
            hint="run `gitprov validate` and fix them",
            problems=loaded.problems,
        )


def _mac_arg(text: str) -> str:
    mac = normalise_mac(text)
    if mac is None:
        raise UsageError(
            f"not a MAC address: {text!r}", hint="write it like 00:21:f2:01:1b:19 or 0021f2011b19"
        )
    return mac


# -- commands -----------------------------------------------------------------------------
def cmd_validate(ctx: Context) -> int:
    if getattr(ctx.args, "worktree", False):
        # The work tree's parent is HEAD: what the next commit will be compared with.
        head = None if ctx.repo.head_is_unborn else ctx.repo.head.peel(pygit2.Commit)
        floor = ctx.pipeline.history_floor([head.id] if head is not None else [])
        loaded = ctx.pipeline.load(WorktreeSource(ctx.top, ctx.args.inventory_dir), floor)
    else:
        loaded, _ = ctx.load()
    render_problems(loaded.problems, ctx.args.format, sys.stdout)
    if ctx.args.format == "text" and not loaded.problems:
        n = sum(1 for _ in loaded.docs.all())
        print(f"ok: {n} file(s), no problems")
    return 1 if loaded.errors else 0


def cmd_build(ctx: Context) -> int:
    from gitprov.publish import write_atomic

    commit = resolve_commit(ctx.repo, ctx.args.rev)
    build = ctx.pipeline.build(commit, ctx.private_key())
    out = Path(ctx.args.out)
    reveal = ctx.args.reveal
    for f in build.files:
        write_atomic(out / "plain" / f.name, f.plaintext if reveal else f.redacted)
        write_atomic(out / "encrypted" / f.name, f.data)
    note = "plain/ holds secrets: keep it private" if reveal else "plain/ is redacted"
    print(f"built {len(build.files)} device file(s) of {build.commit[:12]} into {out}/"
          f"{{plain,encrypted}}/ ({note})")
    return 0


def cmd_show(ctx: Context) -> int:
    mac = _mac_arg(ctx.args.mac)
    loaded, commit = ctx.load()
    _require_valid(loaded)
    inv = loaded.inventory
    assert inv is not None
    device = inv.device(mac)
    if device is None:
        raise GitprovError(
            f"no device {mac} in the inventory", hint="`gitprov versions` lists every device"
        )
    version = None
    if commit is not None:
        version = ctx.pipeline.versions(commit)[mac].version
    if ctx.args.reveal:
        from gitprov.pipeline import secret_resolver

        cfg = ctx.pipeline.compile(inv, device, secret_resolver(inv, ctx.private_key()))
        sys.stdout.write(flyingvoice.render(cfg, version).decode())
    else:
        from gitprov.compile import placeholder_resolver

        cfg = ctx.pipeline.compile(inv, device, placeholder_resolver(inv.sealed))
        sys.stdout.write(flyingvoice.render(cfg, version, redact=True).decode())
    return 0


def cmd_plan(ctx: Context) -> int:
    from gitprov.review import review

    a = ctx.args
    base = resolve_commit(ctx.repo, a.base)
    head = resolve_commit(ctx.repo, a.rev)
    result = review(ctx.pipeline, base, head)
    if a.format == "json":
        json.dump({
            "version": 1, "base": result.base, "head": result.head,
            "unchanged": result.unchanged,
            "devices": [{"mac": c.mac, "change": str(c.change), "file": c.file_name,
                         "old_version": c.old_version, "new_version": c.new_version,
                         "diff": list(c.diff)} for c in result.changes],
        }, sys.stdout, indent=2)
        print()
        return 0
    md = a.format == "markdown"
    title = f"gitprov plan {result.base[:12]}..{result.head[:12]}"
    print(f"### {title}\n" if md else title)
    if not result.changes:
        print(f"no device changes ({result.unchanged} unchanged)")
        return 0
    if md:
        print("| device | change | file | version |\n|---|---|---|---|")
    for c in result.changes:
        ver = f"{c.old_version or '-'} → {c.new_version or '-'}"
        if md:
            print(f"| `{c.mac}` | {c.change} | `{c.file_name}` | {ver} |")
        else:
            print(f"  {c.change:<7} {c.mac}  {c.file_name}  version {ver}")
    print(f"\n{len(result.changes)} device(s) change, {result.unchanged} unchanged; "
          "new versions as merging it into the base gives them (a fast-forward gives the same)")
    for c in result.changes:
        if md:
            print(f"\n<details><summary>{c.mac}</summary>\n\n```diff")
        else:
            print()
        print("\n".join(c.diff))
        if md:
            print("```\n</details>")
    return 0


def cmd_key(ctx: Context) -> int:
    from gitprov.pipeline import secret_resolver

    mac = _mac_arg(ctx.args.mac)
    loaded, _ = ctx.load()
    _require_valid(loaded)
    inv = loaded.inventory
    assert inv is not None
    device = inv.device(mac)
    if device is None:
        raise GitprovError(f"no device {mac} in the inventory")
    cfg = ctx.pipeline.compile(inv, device, secret_resolver(inv, ctx.private_key()))
    if cfg.key is None:
        raise GitprovError(f"{mac}'s file is not encrypted (encryption mode none)")
    print(cfg.key)
    return 0


def cmd_versions(ctx: Context) -> int:
    commit = resolve_commit(ctx.repo, ctx.args.rev)
    loaded = ctx.pipeline.load_commit(commit)
    _require_valid(loaded)
    assert loaded.inventory is not None
    vers = ctx.pipeline.versions(commit)
    wanted = [_mac_arg(m) for m in ctx.args.macs] or sorted(
        m for m in vers if m != BOOTSTRAP
    )
    for mac in wanted:
        if mac not in vers:
            raise GitprovError(f"no device {mac} at {str(commit.id)[:12]}")
    if ctx.args.format == "json":
        rows = [{"mac": m, "version": vers[m].version, "commit": vers[m].commit} for m in wanted]
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(f"{'MAC':<14} {'VERSION':>9}  SET BY")
        for mac in wanted:
            info = vers[mac]
            c = ctx.repo.get(info.commit)
            summary = c.message.splitlines()[0][:50] if isinstance(c, pygit2.Commit) else ""
            print(f"{mac:<14} {info.version:>9}  {info.commit[:12]} {summary}")
    return 0


def _targets(ctx: Context, inventory: Inventory) -> Any:
    from gitprov.publish import targets_for

    a = ctx.args
    return targets_for(
        inventory.fleet,
        http_roots=a.http_root or (),
        tftp_roots=a.tftp_root or (),
        state_dir=a.state_dir,
        firmware_dir=a.firmware_dir,
    )


def _progress(stage: str, done: int, total: int) -> None:
    if sys.stderr.isatty() and total >= 200 and (done % 100 == 0 or done == total):
        sys.stderr.write(f"\r{stage}: {done}/{total}")
        if done == total:
            sys.stderr.write("\n")


def publish_commit(ctx: Context, repo: pygit2.Repository, commit: pygit2.Commit) -> int:
    from gitprov import publish as publishing

    result = publishing.publish_commit(
        ctx.pipeline,
        commit,
        lambda inventory: _targets(ctx, inventory),
        ctx.private_key(),
        force=ctx.args.force,
        progress=_progress,
        lock_wait=ctx.args.wait,
        prune_unknown=ctx.args.prune_unknown,
    )
    short = result.commit[:12]
    for note in result.notes:
        print(f"note: {note}")
    if result.already_published:
        print(f"{short} is already published; nothing to write")
        return 0
    changed = sorted({a.name for a in result.written})
    print(
        f"published {short}: {len(result.written)} file(s) written, "
        f"{len(result.removed)} removed, {result.plan.unchanged} unchanged "
        f"in {', '.join(result.manifest.roots)}"
    )
    entries = result.manifest.files
    for name in changed[:20]:
        e = entries[name]
        print(f"  {name}  {e.mac}  version {e.version}" if e.mac else f"  {name}  {e.kind}")
    if len(changed) > 20:
        print(f"  … and {len(changed) - 20} more")
    for d in result.drift:
        print(f"  drift: {d.root}/{d.name} was {d.kind} by hand; restored")
    for root, name in result.plan.unknown:
        done = "removed (--prune-unknown)" if ctx.args.prune_unknown else "left alone"
        print(f"  note: {root}/{name} was not written by gitprov; {done}")
    for root, why in sorted(result.failures.items()):
        print(
            f"gitprov: error: {root}: {why}; it keeps its last good files "
            "(the other roots are published); publish again to retry",
            file=sys.stderr,
        )
    return 1 if result.failures else 0


def cmd_publish(ctx: Context) -> int:
    commit = resolve_commit(ctx.repo, ctx.args.rev)
    return publish_commit(ctx, ctx.repo, commit)


def cmd_decrypt(ctx: Context) -> int:
    from gitprov.crypto import Cipher

    a = ctx.args
    data = sys.stdin.buffer.read() if a.file == "-" else Path(a.file).read_bytes()
    plain = Cipher(a.mode, a.iterations, a.gzip).decrypt(data, a.key)
    sys.stdout.buffer.write(plain)
    return 0


def cmd_serve(ctx: Context) -> int:
    from gitprov.serve import serve_roots

    a = ctx.args
    http_root, tftp_root = a.http_root, a.tftp_root
    if not http_root and not tftp_root:
        # The roots the fleet settings of the working tree (or HEAD) name.
        loaded, _ = _settings_source(ctx)
        fleet = loaded.inventory.fleet if loaded.inventory else None
        http_root = fleet.http_root if fleet else None
        tftp_root = fleet.tftp_root if fleet else None
    handle = serve_roots(
        Path(http_root) if http_root else None,
        Path(tftp_root) if tftp_root else None,
        a.host,
        a.http_port,
        a.tftp_port,
    )
    if handle.http:
        print(f"HTTP: {handle.http.url}  (root {http_root})", flush=True)
    if handle.tftp:
        print(f"TFTP: tftp://{a.host}:{handle.tftp.port}/  (root {tftp_root})", flush=True)
    _wait_for_signal(handle.stop)
    return 0


def _settings_source(ctx: Context) -> tuple[Loaded, pygit2.Commit | None]:
    ctx.args.worktree = ctx.repo.workdir is not None
    ctx.args.rev = "HEAD"
    return ctx.load()


def _wait_for_signal(stop: Callable[[], None]) -> None:
    done = threading.Event()

    def handler(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, handler)
    try:
        while not done.wait(0.5):
            pass
    finally:
        stop()


def cmd_watch(ctx: Context) -> int:
    from gitprov.metrics import Metrics, MetricsServer
    from gitprov.plan import load_manifest
    from gitprov.status import JsonLog, StatusFile
    from gitprov.watch import (
        CommitPublisher,
        Kind,
        LocalBranch,
        Outcome,
        RemoteBranch,
        Watcher,
        WatchOptions,
    )

    a = ctx.args
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    source: LocalBranch | RemoteBranch
    if a.remote:
        mirror = a.repo if a.repo != "." else a.state_dir and str(Path(a.state_dir) / "mirror.git")
        if not mirror:
            raise UsageError(
                "--remote needs a local mirror",
                hint="pass --repo PATH (a bare repository, created if missing) or --state-dir",
            )
        source = RemoteBranch(Path(mirror), a.remote, a.branch)
        a.repo = mirror
        try:
            source.fetch()
        except GitprovError as exc:
            print(f"warning: {exc.message}; polling on", file=sys.stderr, flush=True)
        head = source.resolve()
    else:
        source = LocalBranch(Path(ctx.repo.path), a.branch, inotify=not a.no_inotify)
        head = source.head()
    if head is None:
        print(f"warning: no branch {a.branch!r} yet in {a.repo}; waiting for it", file=sys.stderr)
    # Resume from what is published: the manifest of the state dir the fleet names.
    state_dir = a.state_dir
    if state_dir is None and head is not None:
        loaded = ctx.pipeline.load_commit(head[1])
        if loaded.inventory is not None:
            state_dir = loaded.inventory.fleet.state_dir
    manifest = load_manifest(Path(state_dir)) if state_dir else None

    def renew(repo: pygit2.Repository) -> Pipeline:
        old = ctx.pipeline
        cache = Path(repo.path) / "gitprov-cache"
        return Pipeline(repo, old.inventory_dir, old.catalog, old.options, cache)

    publisher = CommitPublisher(
        ctx.pipeline,
        ctx.private_key(),
        lambda inventory: _targets(ctx, inventory),
        prune_unknown=a.prune_unknown,
        lock_wait=a.wait,
        state_dir=Path(state_dir).absolute() if state_dir else None,
        renew=renew,
    )

    def show(o: Outcome) -> None:
        if o.kind is Kind.CLEAN:
            return
        out = sys.stdout if o.ok else sys.stderr
        print(o.message, file=out, flush=True)
        for d in o.drift:
            print(f"  drift: {d.root}/{d.name} was {d.kind} by hand; restored", file=out)
        render_problems(o.problems, "text", sys.stderr)
        sys.stderr.flush()

    observers: list[Callable[[Outcome], None]] = [show]
    label = source.label
    if a.status_file:
        observers.append(StatusFile(Path(a.status_file), label, manifest))
    log_file: TextIO | None = None
    if a.log_json:
        log_file = sys.stdout if a.log_json == "-" else open(a.log_json, "a", encoding="utf-8")  # noqa: SIM115
        json_log = JsonLog(log_file)
        json_log.event("start", watching=label, commit=manifest.commit if manifest else None)
        observers.append(json_log)
    server: MetricsServer | None = None
    if a.metrics_port is not None:
        metrics = Metrics()
        server = metrics.serve(a.metrics_port, a.metrics_host)
        observers.append(metrics)
        print(f"metrics: http://{a.metrics_host}:{server.port}/metrics", flush=True)
    interval = a.interval or (30.0 if a.remote else 2.0)
    options = WatchOptions(
        a.branch, interval, 0.1, not a.no_inotify, a.reconcile, min(a.retry, a.reconcile)
    )
    last = manifest.commit if manifest else None
    print(
        f"watching {label} (poll every {interval:g}s, reconcile every {a.reconcile:g}s); "
        f"published: {last[:12] if last else 'nothing yet'}",
        flush=True,
    )
    try:
        Watcher(source, publisher, options, last=last, observers=observers).run(stop)
    except KeyboardInterrupt:
        stop.set()
    finally:
        source.close()
        if server is not None:
            server.stop()
        if log_file is not None and log_file is not sys.stdout:
            log_file.close()
    return 0


def cmd_schema(ctx: Context) -> int:
    from gitprov.schemas import all_schemas, for_editors, output_schemas

    schemas = {**all_schemas(), **output_schemas()}
    kinds = [n.removesuffix(".schema.json") for n in schemas]
    if ctx.args.write:
        out = Path(ctx.args.write)
        out.mkdir(parents=True, exist_ok=True)
        for name, s in sorted(schemas.items()):
            (out / name).write_text(json.dumps(for_editors(s), indent=2) + "\n")
        print(f"wrote {len(schemas)} schema(s) into {out}")
        return 0
    if ctx.args.list:
        print("\n".join(kinds))
        return 0
    name = f"{ctx.args.kind}.schema.json"
    if name not in schemas:
        raise UsageError(f"no schema {ctx.args.kind!r}", hint="kinds: " + ", ".join(kinds))
    print(json.dumps(schemas[name], indent=2))
    return 0


def cmd_params(ctx: Context) -> int:
    from gitprov.catalog import Param, Unpublished

    # `--format json`, format version 1: every field always present; parameters whose DBID
    # key the vendor has not published have "key": null and cannot be set by name.
    cat = load_catalog()
    rows = []
    entries: list[Param | Unpublished] = [*cat.params, *cat.unpublished]
    for p in entries:
        param = p if isinstance(p, Param) else None
        rows.append(
            {
                "key": param.key if param else None,
                "name": p.name,
                "label": p.label,
                "type": p.type,
                "scope": p.scope,
                "unit": p.unit,
                "default": p.default,
                "min": p.min,
                "max": p.max,
                "max_length": p.max_length,
                "values": list(p.values),
                "managed": param.managed if param else False,
                "secret": param.secret if param else False,
                "settable_by_name": param is not None and not param.managed,
                "source": p.source,
                "description": p.description,
            }
        )
    doc: dict[str, Any] = {"version": 1, "params": rows}
    if ctx.args.format == "json":
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'DBID KEY':<34} {'NAME':<36} {'TYPE':<8} {'SCOPE':<6} {'DEFAULT':<8} DESCRIPTION")
    for row in doc["params"]:
        flags = " [managed]" if row["managed"] else ""
        flags += " [secret]" if row["secret"] else ""
        key = row["key"] or "(not published)"
        default = row["default"]
        if isinstance(default, bool):
            default = int(default)
        shown = "" if default is None else str(default)
        desc = row["description"]
        desc = desc if len(desc) <= 60 else desc[:59] + "…"
        print(
            f"{key:<34} {row['name']:<36} {row['type']:<8} {row['scope']:<6} "
            f"{shown:<8} {desc}{flags}"
        )
    if any(r["key"] is None for r in doc["params"]):
        print(
            "\n(not published): the vendor has not published the DBID key; set such a "
            "parameter with its raw DBID_* key once you know it"
        )
    return 0


def cmd_secrets(ctx: Context) -> int:
    from gitprov import secrets as sec
    from gitprov.publish import write_atomic

    a = ctx.args
    if a.secrets_cmd == "keygen":
        private, public = sec.generate_keypair()
        out = Path(a.out)
        if out.exists():
            raise GitprovError(f"{out} exists", hint="choose another --out; never overwrite a key")
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
        print(f"private key written to {out} (mode 600; keep it off git)")
        print(f"public key: {public}")
        print(
            "put the public key into inventory/secrets.yaml (public_key:) or run "
            "`gitprov secrets rotate --new-public-key …`"
        )
        return 0
    path = ctx.top / ctx.args.inventory_dir / "secrets.yaml"
    try:
        sf = sec.load_secrets_file(path.read_text(), source=str(path))
    except FileNotFoundError:
        raise GitprovError(
            f"{path} does not exist",
            hint="create it with `public_key: gitprov-pk-…` and `secrets: {}`",
        ) from None
    if a.secrets_cmd == "list":
        from gitprov.secrets import sealed_digest

        for name, sealed in sf.sealed.items():
            print(f"{name}  {sealed_digest(sealed)}")
        return 0
    if a.secrets_cmd == "set":
        value = _read_secret_value(a.name)
        new = dict(sf.sealed)
        new[a.name] = sec.seal(sf.public_key, a.name, value)
        write_atomic(path, sec.dump_secrets_file(sec.SecretsFile(sf.public_key, new)).encode())
        print(f"sealed {a.name} into {path}; refer to it as !secret {a.name}")
        return 0
    if a.secrets_cmd == "rotate":
        current = ctx.private_key()
        if current is None:
            raise GitprovError(
                "rotate needs the current private key",
                hint="set GITPROV_PRIVATE_KEY or pass --private-key-file",
            )
        rotated = sec.rotate(sf, current, a.new_public_key)
        write_atomic(path, sec.dump_secrets_file(rotated).encode())
        print(f"re-sealed {len(rotated.sealed)} secret(s) to the new public key in {path}")
        return 0
    raise UsageError("unknown secrets command")


def _read_secret_value(name: str) -> str:
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"value of {name}: ")
    else:
        value = sys.stdin.read().rstrip("\n")
    if not value:
        raise GitprovError("empty secret value", hint="type the value, or pipe it on stdin")
    return value


# -- argument parsing -------------------------------------------------------------------
def _add_rev(p: argparse.ArgumentParser, worktree: bool = True) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--rev",
        default="HEAD",
        help="read the inventory from this commit, branch or tag (default HEAD)",
    )
    if worktree:
        g.add_argument(
            "--worktree",
            action="store_true",
            help="read the files on disk instead (before you commit)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitprov",
        description="Configuration-as-code for Flying Voice VoIP provisioning: validates a git "
        "repository of YAML, compiles it into encrypted per-MAC param.conf files with "
        "DBID_DBASE_VERSION from git history, and publishes them to HTTP and TFTP roots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gitprov {__version__}")
    parser.add_argument("--repo", default=".", help="the inventory repository (default .)")
    parser.add_argument(
        "--inventory-dir",
        default=DEFAULT_INVENTORY_DIR,
        help="directory of the inventory inside the repository (default inventory)",
    )
    parser.add_argument(
        "--private-key-file",
        help="private key for sealed secrets (else $GITPROV_PRIVATE_KEY or "
        "$GITPROV_PRIVATE_KEY_FILE)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "validate",
        help="check the inventory: every problem, located",
        description="Validate the inventory against the JSON Schemas and the "
        "semantic rules; every problem at once as file:line:col.",
    )
    _add_rev(p)
    p.add_argument(
        "--format",
        choices=["text", "json", "github"],
        default="text",
        help="text (default), json, or github (workflow annotations)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="unknown DBID_* keys (GP114) are errors, not warnings",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "build",
        help="compile a commit into DIR (no publish)",
        description="Write DIR/plain/ (plaintext, holds secrets) and "
        "DIR/encrypted/ (what would be published). Reproducible.",
    )
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--reveal", action="store_true",
                   help="write plain/ with real secrets (default: redacted)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("show", help="one device's rendered file, secrets redacted")
    p.add_argument("mac", help="the device's MAC, any spelling")
    _add_rev(p)
    p.add_argument(
        "--reveal", action="store_true", help="print secrets too (needs the private key)"
    )
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "key",
        help="print one device's encryption key (a secret!)",
        description="Print the passphrase a device's file is encrypted with "
        "(what its [--key …] holds). Needs the private key.",
    )
    p.add_argument("mac")
    _add_rev(p)
    p.set_defaults(func=cmd_key)

    p = sub.add_parser(
        "plan",
        help="what merging a change would do to each device",
        description="Render both sides with secrets redacted and show, per device, the diff "
        "of its file and its version bump. No private key needed. For pull requests: "
        "gitprov plan --base origin/main --format markdown",
    )
    p.add_argument("--base", default="main", help="the branch the change goes into (main)")
    p.add_argument("--rev", default="HEAD", help="the change (default HEAD)")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("versions", help="each device's version and the commit that set it")
    p.add_argument("macs", nargs="*", metavar="MAC")
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser(
        "publish",
        help="write a commit's files into the roots, atomically",
        description="Build the commit and apply it to the HTTP and TFTP roots: "
        "changed files are replaced atomically, removed devices' files "
        "deleted, the manifest written last. Idempotent.",
    )
    p.add_argument("--rev", default="HEAD")
    publish_opts = p.add_argument_group("where to publish (default: the fleet's publish:)")
    publish_opts.add_argument(
        "--http-root",
        action="append",
        metavar="DIR",
        help="override publish.http_root (repeat for several targets)",
    )
    publish_opts.add_argument(
        "--tftp-root",
        action="append",
        metavar="DIR",
        help="override publish.tftp_root (repeat for several targets)",
    )
    publish_opts.add_argument("--state-dir", help="override publish.state_dir (manifest, lock)")
    publish_opts.add_argument("--firmware-dir", help="override publish.firmware_dir")
    publish_opts.add_argument(
        "--prune-unknown",
        action="store_true",
        help="also delete files in the roots that gitprov did not write (default: report them)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="publish a commit that does not descend from the published one",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another publish to finish (default: fail at once)",
    )
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("decrypt", help="decrypt a device file (- for stdin)")
    p.add_argument("file")
    p.add_argument("--key", required=True)
    p.add_argument(
        "--mode",
        default="openssl-md5",
        choices=["openssl-md5", "openssl-sha256", "openssl-pbkdf2", "none"],
    )
    p.add_argument("--iterations", type=int, default=10000)
    p.add_argument("--gzip", action="store_true")
    p.set_defaults(func=cmd_decrypt)

    p = sub.add_parser(
        "watch",
        help="publish each new commit of a branch",
        description="Watch a repository (bare or not) and publish every new "
        "head of the branch; invalid commits are reported and skipped.",
    )
    p.add_argument(
        "--repo",
        default=argparse.SUPPRESS,
        help="the repository to watch (bare or not); with --remote, the local mirror "
        "(created if missing; default STATE_DIR/mirror.git)",
    )
    p.add_argument("--branch", default="main", help="the branch to publish (default main)")
    p.add_argument(
        "--remote",
        metavar="URL",
        help="poll this remote: fetch the branch into the local mirror every --interval",
    )
    p.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="poll period (default 2; 30 with --remote); inotify wakes a local watch earlier",
    )
    p.add_argument("--no-inotify", action="store_true", help="poll only")
    p.add_argument(
        "--reconcile",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="compare the roots with the manifest this often; restore drift (default 300)",
    )
    p.add_argument(
        "--retry",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="retry a publish that failed to write (or a lagging root) after this long",
    )
    watch_opts = p.add_argument_group("where to publish (default: the fleet's publish:)")
    watch_opts.add_argument(
        "--http-root", action="append", metavar="DIR", help="override publish.http_root"
    )
    watch_opts.add_argument(
        "--tftp-root", action="append", metavar="DIR", help="override publish.tftp_root"
    )
    watch_opts.add_argument("--state-dir", help="override publish.state_dir (manifest, lock)")
    watch_opts.add_argument("--firmware-dir", help="override publish.firmware_dir")
    watch_opts.add_argument(
        "--prune-unknown",
        action="store_true",
        help="also delete files in the roots that gitprov did not write",
    )
    observe = p.add_argument_group("observability")
    observe.add_argument(
        "--status-file",
        metavar="PATH",
        help="JSON: last commit published, when, result, problems (rewritten atomically)",
    )
    observe.add_argument(
        "--log-json", metavar="PATH", help="append one JSON line per event (- for stdout)"
    )
    observe.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port (0: any free port, printed at start)",
    )
    observe.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the metrics endpoint"
    )
    p.set_defaults(func=cmd_watch, force=False, wait=30.0)

    p = sub.add_parser("serve", help="read-only HTTP and TFTP over the roots")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--tftp-port", type=int, default=6969)
    p.add_argument("--http-root")
    p.add_argument("--tftp-root")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "schema",
        help="print or write the JSON Schemas (for editors)",
        description="Print one JSON Schema (draft 2020-12), or write all of them into a "
        "directory for editors: e.g. `# yaml-language-server: $schema=../../schemas/"
        "device.schema.json` at the top of a device file.",
    )
    p.add_argument(
        "kind",
        nargs="?",
        default="device",
        help="fleet, profile, model, device, secrets, params, line, validate-output "
        "(default device)",
    )
    p.add_argument("--write", metavar="DIR", help="write every schema into DIR")
    p.add_argument("--list", action="store_true", help="list the schema kinds")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser(
        "params",
        help="the parameter catalog",
        description="Every parameter gitprov knows (schemas/params.yaml): DBID key, readable "
        "name, type, scope, default. `(not published)`: the reference names it, but its "
        "DBID key is not public, so it cannot be set by name.",
    )
    p.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text table (default) or json (format version 1)",
    )
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("secrets", help="sealed secrets: keygen, set, list, rotate")
    ss = p.add_subparsers(dest="secrets_cmd", metavar="ACTION", required=True)
    k = ss.add_parser("keygen", help="make a key pair")
    k.add_argument("--out", required=True, help="file for the private key (created 0600)")
    s = ss.add_parser("set", help="seal a value (from stdin or a prompt) as NAME")
    s.add_argument("name")
    ss.add_parser("list", help="names and digests of the sealed secrets")
    r = ss.add_parser("rotate", help="re-seal everything to a new public key")
    r.add_argument("--new-public-key", required=True)
    p.set_defaults(func=cmd_secrets)
    audit.add_parsers(sub)
    device_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    ctx = Context(args)
    try:
        code: int = args.func(ctx)
        return code
    except InvalidInventory as exc:
        render_problems(exc.problems, "text", sys.stderr)
        print(f"gitprov: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"    hint: {exc.hint}", file=sys.stderr)
        return 1
    except GitprovError as exc:
        print(f"gitprov: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"    hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gitprov: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        print("gitprov: internal error; please report it with this trace:", file=sys.stderr)
        traceback.print_exc()
        return 3


__all__ = ["main"]
