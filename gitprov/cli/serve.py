"""`gitprov serve`, `watch`, `probe`: the servers, the publisher that runs unattended, and
an emulated device to try them with."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import stat
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from gitprov import DEPLOY_URL, DOCS_URL, paths
from gitprov.cli.common import (
    Output,
    Subparsers,
    add_command,
    add_format,
    add_targets,
    ca_certificates,
    host,
    iterations,
    mac,
    opened_for_append,
    passphrase,
    pem_file,
    poll_seconds,
    port,
    publisher_config_of,
    seconds,
    session,
)
from gitprov.cli.defaults import (
    HTTP_MAX_CONNECTIONS,
    MODES,
    TFTP_MAX_PENDING,
    TFTP_MAX_PENDING_PER_CLIENT,
    TFTP_MAX_TIMEOUT,
    TFTP_MAX_TRANSFERS,
)
from gitprov.errors import GitprovError, UsageError
from gitprov.unsafe import echoed, line_safe, printable, shown

if TYPE_CHECKING:
    from gitprov.publisher_config import PublisherConfig
    from gitprov.tools.device import ResyncResult
    from gitprov.tools.serve import FetchCallback, HttpServer


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "serve",
        run_serve,
        help="read-only HTTP and TFTP over the roots",
        description="Serve the published roots read-only: HTTP and TFTP, on loopback by "
        "default. Without --http-root/--tftp-root, the roots the fleet settings name. "
        f"Production serving is nginx and tftpd-hpa ({DEPLOY_URL}); this is the zero-setup one.",
        examples=(
            ("gitprov serve", "the roots on 127.0.0.1: HTTP on port 8080, TFTP on port 6969"),
            (
                "gitprov serve --host 192.0.2.10 --http-port 80 --tftp-port 69",
                "on an address the devices reach, on the usual ports",
            ),
        ),
    )
    p.add_argument(
        "--host",
        type=host,
        default="127.0.0.1",
        help="address to listen on (0.0.0.0 or :: for every one)",
    )
    p.add_argument("--http-port", type=port, default=8080, help="HTTP port (0: any free port)")
    p.add_argument("--tftp-port", type=port, default=6969, help="TFTP port (0: any free port)")
    p.add_argument("--http-root", metavar="DIR", help="serve this directory over HTTP")
    p.add_argument("--tftp-root", metavar="DIR", help="serve this directory over TFTP")
    p.add_argument(
        "--url-path",
        metavar="PATH",
        help="also serve each root's files below this URL path, as devices ask for them "
        "when provisioning.url has one (/cpe for http://prov.example.com/cpe); default: "
        "the path of provisioning.url when the fleet settings name the roots",
    )
    fetches = p.add_argument_group(
        "fetch log",
        "One JSON line per request: time, protocol, client, path, file, MAC, version served,\n"
        f"status, bytes ({DOCS_URL}/fleet-status.md, 'Fetch log').",
    )
    fetches.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the publisher's state dir: its manifest tells which version each fetch "
        "served (default: publish.state_dir of the fleet settings, when they name the roots)",
    )
    fetches.add_argument(
        "--fetch-log",
        metavar="PATH",
        help="append the fetch log here (default: STATE_DIR/fetch.log when a state dir is "
        "known, else no fetch log); never inside a served root",
    )
    fetches.add_argument(
        "--no-fetch-log", action="store_true", help="write no fetch log, not even the default"
    )
    https = p.add_argument_group(
        "HTTPS with client certificates",
        "An HTTPS listener that serves a file only to the device certificate whose CN is\n"
        "the MAC in its name: the stage root (key delivery https-stage, only here), then\n"
        f"the HTTP root ({DOCS_URL}/key-delivery.md).",
    )
    https.add_argument("--https-port", type=port, metavar="PORT", help="HTTPS port (0: any)")
    https.add_argument("--tls-cert", metavar="PEM", help="the server's certificate")
    https.add_argument("--tls-key", metavar="PEM", help="the server certificate's private key")
    https.add_argument(
        "--client-ca", metavar="PEM", help="the CA that signed the devices' certificates"
    )
    https.add_argument(
        "--stage-root",
        metavar="DIR",
        help="the stage root the publisher wrote (--stage-root of publish): served over HTTPS only",
    )
    tftp = p.add_argument_group(
        "TFTP limits",
        "A TFTP session is pending until the client acknowledges the first packet.\n"
        "Pending sessions give way to new requests: clients that never answer cannot\n"
        f"hold the server ({DOCS_URL}/cli.md, 'Serving').",
    )
    p.add_argument(
        "--http-max-connections",
        type=_positive,
        default=HTTP_MAX_CONNECTIONS,
        metavar="N",
        help="HTTP(S) connections served at once, a thread each (an idle one is closed "
        "after 30 s); past them a new connection is closed at once and the device retries",
    )
    tftp.add_argument(
        "--tftp-max-transfers",
        type=_positive,
        default=TFTP_MAX_TRANSFERS,
        metavar="N",
        help="TFTP sessions at once, pending or not; when all are past their first ACK, "
        "a new request is answered 'Server busy'",
    )
    tftp.add_argument(
        "--tftp-max-pending",
        type=_positive,
        default=TFTP_MAX_PENDING,
        metavar="N",
        help="pending TFTP sessions in all; beyond, the address holding the most loses its oldest",
    )
    tftp.add_argument(
        "--tftp-max-pending-per-client",
        type=_positive,
        default=TFTP_MAX_PENDING_PER_CLIENT,
        metavar="N",
        help="pending TFTP sessions of one client address; beyond, its oldest goes",
    )
    tftp.add_argument(
        "--tftp-max-timeout",
        type=_positive,
        default=TFTP_MAX_TIMEOUT,
        metavar="SECONDS",
        help="the highest timeout option (RFC 2349) acknowledged; a higher one is left "
        "out of the OACK and the server's own timeout (1 s) applies",
    )

    p = add_command(
        sub,
        "watch",
        run_watch,
        help="publish each new commit of a branch",
        description="Watch a repository (bare or not) and publish every new head of the "
        "branch; invalid commits are reported and skipped, the last good files stay. "
        "A watcher publishes what others push, so where it writes is its operator's: it "
        "needs --state-dir and the roots (options or --config FILE), or --allow-root for "
        "the roots the fleet settings name. Commits its guards refuse (--require-signed, "
        "publish.max_removal, a move of the roots) are reported and not published.",
        examples=(
            (
                "gitprov watch --repo /srv/git/fleet.git --branch main "
                "--state-dir /var/lib/gitprov --http-root /srv/http --tftp-root /srv/tftp",
                "publish every new head of main in a bare repository into those roots",
            ),
            (
                "gitprov watch --remote https://git.example.net/acme/fleet.git "
                "--state-dir /var/lib/gitprov --allow-root /srv/provisioning "
                "--metrics-port 9351",
                "poll a remote, into the roots its fleet settings name under "
                "/srv/provisioning; Prometheus metrics on port 9351",
            ),
        ),
    )
    p.add_argument(
        "--repo",
        default=argparse.SUPPRESS,
        help="the repository to watch (bare or not); with --remote, the local mirror "
        "(created if missing or empty, default STATE_DIR/mirror.git; a clone, another "
        "bare repository or a directory of files is refused: the fetch would overwrite "
        "its branches)",
    )
    p.add_argument(
        "--branch",
        default="main",
        help="the branch to publish, by its short name (refs/heads/NAME is NAME; HEAD and "
        "other refs are refused)",
    )
    p.add_argument(
        "--remote",
        metavar="URL",
        help="poll this remote: fetch the branch into the mirror (a branch deleted "
        "there is reported once; the last good files stay served); a fetch fails when the "
        "remote is silent for 60 s, and the next poll tries again",
    )
    p.add_argument(
        "--interval",
        type=poll_seconds,
        metavar="SECONDS",
        help="poll period, 0.1 to 86400 (default 2; 30 with --remote); inotify wakes a "
        "local watch earlier",
    )
    p.add_argument(
        "--no-inotify",
        action="store_true",
        help="poll the branch, and check every served file's stat at each publish (by "
        "default a publish checks only the files inotify saw touched since the last one)",
    )
    p.add_argument(
        "--reconcile",
        type=poll_seconds,
        default=300.0,
        metavar="SECONDS",
        help="compare the roots with the manifest this often (by each file's size, mtime "
        "and inode, what a publish between two skips for files no inotify event named); "
        "restore drift",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="reconcile by reading every served file and comparing its SHA-256 with the "
        "manifest, not by its stat",
    )
    p.add_argument(
        "--retry",
        type=poll_seconds,
        default=30.0,
        metavar="SECONDS",
        help="retry a publish that failed to write (or a lagging root) after this long "
        "(0.1 to 86400, as --interval and --reconcile)",
    )
    add_targets(p)
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
        type=port,
        metavar="PORT",
        help="serve Prometheus metrics on this port (0: any free port, printed at start)",
    )
    observe.add_argument(
        "--metrics-host", type=host, default="127.0.0.1", help="address of the metrics endpoint"
    )
    p.set_defaults(force=False, wait=30.0)

    p = add_command(
        sub,
        "probe",
        run_probe,
        help="resync an emulated device against a live server",
        description="Emulate one device's resync (option 66 or Profile Rule, fetch, "
        "decrypt, version compare, apply) against a live HTTP/HTTPS/TFTP server and print "
        "each step. Keys are never printed. Exit 0 when the last resync applied or found "
        "nothing new (with --until-stable: ended unchanged), else 1.",
        examples=(
            (
                "gitprov probe 0021f2011b19 --url http://127.0.0.1:8080/fv0021f2011b19.conf "
                "--key KEY",
                "resync as that device would: fetch, decrypt, apply, report",
            ),
            (
                "gitprov probe 0021f2011b19 --option66 127.0.0.1:6969 --state device.json "
                "--until-stable",
                "a device with DHCP option 66 (the fleet publishes its bootstrap file: "
                "publish.option66), kept in device.json across runs",
            ),
        ),
    )
    p.add_argument("mac", type=mac, help="the device's MAC, any spelling")
    p.add_argument(
        "--url",
        help="the Profile Rule, e.g. http://HOST:PORT/fv$(MA).conf; without --option66 the "
        "device has option 66 disabled (with it enabled the Profile Rule has no effect)",
    )
    p.add_argument(
        "--key", type=passphrase, help="decryption passphrase: the rule becomes [--key KEY]URL"
    )
    p.add_argument(
        "--mode",
        choices=list(MODES),
        help="the model's cipher (default openssl-md5)",
    )
    p.add_argument("--iterations", type=iterations, help="PBKDF2 iterations (openssl-pbkdf2)")
    p.add_argument("--gzip", action="store_true", default=None, help="gunzip after decrypting")
    p.add_argument("--option66", metavar="HOST[:PORT]", help="the TFTP server DHCP option 66 gives")
    p.add_argument(
        "--config-file-name", metavar="NAME", help="option 66's file (default <product-name>.conf)"
    )
    p.add_argument("--product-name", default="IP542N", help="$PN")
    p.add_argument("--serial", default="", help="$SN")
    p.add_argument("--sw-version", default="", help="$SWVER")
    p.add_argument("--hw-version", default="", help="$HWVER")
    p.add_argument(
        "--state",
        metavar="FILE",
        help="device state (JSON, mode 0600, holds its secrets): read if it exists "
        "(then its MAC and device facts win), written back after",
    )
    p.add_argument("--until-stable", action="store_true", help="resync until unchanged")
    p.add_argument(
        "--max-rounds", type=int, default=5, help="at most this many with --until-stable"
    )
    p.add_argument("--compare", choices=["!=", ">"], default="!=", help="the version test")
    p.add_argument(
        "--timeout", type=seconds, default=5.0, help="seconds a fetch may take, its body included"
    )
    p.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="NAME=ADDR:PORT",
        help="connect to ADDR:PORT for host NAME (like /etc/hosts; repeatable)",
    )
    p.add_argument(
        "--cacert", type=ca_certificates, help="CA certificates (PEM) to trust for https"
    )
    p.add_argument("--cert", type=pem_file, help="client certificate (PEM) for https")
    p.add_argument("--cert-key", type=pem_file, help="client certificate's private key (PEM)")
    p.add_argument(
        "--setting-key",
        action="append",
        default=[],
        metavar="NAME=DBID_KEY",
        help="the DBID key the device stores a setting under, e.g. "
        "resync_periodic=DBID_RESYNC_PERIODIC (repeatable; the vendor publishes only "
        f"option 66's: {DOCS_URL}/device-checklist.md)",
    )
    add_format(p)


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{echoed(text)} is not a whole number of at least 1")
    return number


def run_serve(args: argparse.Namespace, out: Output) -> int:
    from gitprov.tools.fetchlog import FetchLog, ServedVersions
    from gitprov.tools.serve import TftpLimits, serve_roots, url_path_of

    http_root, tftp_root, state_dir = args.http_root, args.tftp_root, args.state_dir
    url_path = None
    if args.url_path is not None:
        if "$" in args.url_path:
            raise UsageError(
                f"--url-path {args.url_path!r} holds a macro: give the path devices ask "
                "for as written, e.g. /cpe"
            )
        # (before it is split: urlsplit drops a newline or a tab without a word)
        url_path = url_path_of(args.url_path) if args.url_path.isprintable() else args.url_path
        odd = [p for p in url_path.split("/") if p.startswith(".") or not p.isprintable()]
        if odd:
            # (`..` would map to the top of the root anyway: a path devices never ask for)
            raise UsageError(
                f"--url-path {shown(args.url_path)}: a component {shown(odd[0])} is no "
                "part of a provisioning URL's path",
                hint="give the path devices ask for as written, e.g. /cpe",
            )
    if not http_root and not tftp_root:
        s = session(args, out)
        try:
            fleet = s.fleet_settings()
        except UsageError as exc:
            if "not a git repository" not in exc.message:
                raise
            # (serve needs no repository when it is told its roots)
            raise UsageError(
                exc.message,
                hint="give the roots to serve (--http-root DIR, --tftp-root DIR), or pass "
                "--repo PATH of the inventory whose publish: settings name them",
            ) from None
        http_root = s.fleet_path(fleet.http_root) if fleet else None
        tftp_root = s.fleet_path(fleet.tftp_root) if fleet else None
        if url_path is None and fleet:
            url_path = url_path_of(fleet.provisioning_url)
        if fleet and not state_dir:
            # Nothing published yet: no state dir, and no fetch log unless asked for.
            state_dir = s.fleet_path(fleet.state_dir)
            if state_dir and not Path(state_dir).is_dir():
                state_dir = None
        if not http_root and not tftp_root:
            where = (
                "name no http_root or tftp_root"
                if fleet
                else "are missing or do not validate (`gitprov validate --worktree` says why)"
            )
            raise UsageError(
                f"nothing to serve: no --http-root or --tftp-root, and the fleet settings "
                f"({args.inventory_dir}/gitprov.yaml) {where}",
                hint="pass --http-root DIR and/or --tftp-root DIR, or run it in an inventory "
                "repository whose publish: settings name them (after `gitprov publish`)",
            )
    for flag, root in (("--http-root", http_root), ("--tftp-root", tftp_root)):
        if root and paths.kind(root, flag) not in (None, stat.S_IFDIR):
            raise UsageError(f"{flag} {root} is not a directory")
    if state_dir and not paths.is_dir(state_dir, "--state-dir"):
        raise UsageError(
            f"--state-dir {state_dir} is not a directory",
            hint="give the state dir the publisher writes its manifest to",
        )
    _refuse_private_roots({"HTTP": http_root, "TFTP": tftp_root}, state_dir)
    log_path = _fetch_log_path(args, state_dir, {"HTTP": http_root, "TFTP": tftp_root})
    secure = _https_options(args, http_root, tftp_root)
    _fit_connections(args, out, (1 if http_root else 0) + (1 if secure is not None else 0))
    terminated = _sigterm_event()
    fetch_log = None
    if log_path is not None:
        versions = ServedVersions(Path(state_dir)) if state_dir else None
        fetch_log = FetchLog(log_path, versions)
    try:
        handle = serve_roots(
            Path(http_root) if http_root else None,
            Path(tftp_root) if tftp_root else None,
            args.host,
            args.http_port,
            args.tftp_port,
            on_fetch=fetch_log,
            http_max_connections=args.http_max_connections,
            url_path=url_path or "",
            tftp_limits=TftpLimits(
                max_transfers=args.tftp_max_transfers,
                max_pending=args.tftp_max_pending,
                max_pending_per_client=args.tftp_max_pending_per_client,
                max_timeout=args.tftp_max_timeout,
            ),
        )
        if handle.http:
            out.data(line_safe(f"HTTP: {handle.http.url}  (root {http_root})"))
        if handle.tftp:
            out.data(line_safe(f"TFTP: {handle.tftp.url}/  (root {tftp_root})"))
        if url_path:
            out.data(f"also below /{url_path}/ (the provisioning URL's path)")
        https = None
        if secure is not None:
            https = _start_https(args, secure, handle.stop, fetch_log, url_path or "")
            out.data(
                line_safe(f"HTTPS: {https.url}  (client certificates; roots {', '.join(secure)})")
            )
        if fetch_log is not None:
            out.data(line_safe(f"fetch log: {fetch_log.path}"))
        out.stdout.flush()

        def stop() -> None:
            if https is not None:
                https.stop()
            handle.stop()

        _wait_for_signal(terminated, stop)
    finally:
        if fetch_log is not None:
            fetch_log.close()
    return 0


def _https_options(
    args: argparse.Namespace, http_root: str | None, tftp_root: str | None
) -> list[str] | None:
    """The roots the HTTPS listener serves (the stage root first), or None without
    --https-port; the stage root is refused inside or around a plain root."""
    if args.https_port is None:
        if args.stage_root:
            raise UsageError(
                "--stage-root is served only over HTTPS with client certificates",
                hint="add --https-port PORT --tls-cert PEM --tls-key PEM --client-ca PEM",
            )
        given = [f for f in ("tls_cert", "tls_key", "client_ca") if getattr(args, f)]
        if given:
            # (else the TLS files are ignored and the roots served in plain alone)
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise UsageError(
                f"{flags} without --https-port: nothing would be served over HTTPS",
                hint="add --https-port PORT, or leave out the TLS options",
            )
        return None
    missing = [f for f in ("tls_cert", "tls_key", "client_ca") if not getattr(args, f)]
    if missing:
        flags = ", ".join("--" + f.replace("_", "-") for f in missing)
        raise UsageError(
            f"--https-port needs {flags}", hint=f"{DEPLOY_URL}/device-cert.sh makes them"
        )
    roots = [r for r in (args.stage_root, http_root) if r]
    if not roots:
        raise UsageError("--https-port has nothing to serve", hint="give --stage-root DIR")
    from gitprov.tools.mtls import make_mtls_context

    # The TLS files read now, before any listener starts: a supervisor reading "HTTP: …"
    # took the server for up, and then it stopped.
    make_mtls_context(Path(args.tls_cert), Path(args.tls_key), Path(args.client_ca))
    if args.stage_root:
        stage = Path(args.stage_root).resolve()
        if not stage.is_dir():
            raise UsageError(f"--stage-root {args.stage_root} is not a directory")
        for flag, root in (("--http-root", http_root), ("--tftp-root", tftp_root)):
            there = Path(root).resolve() if root else None
            if there is not None and (stage.is_relative_to(there) or there.is_relative_to(stage)):
                raise UsageError(
                    f"--stage-root {args.stage_root} and {flag} {root} overlap: the stage "
                    "files hold device keys and must not be served without a certificate",
                    hint="publish the stage root into a directory of its own",
                )
    return roots


def _start_https(
    args: argparse.Namespace,
    roots: list[str],
    stop_others: Callable[[], None],
    on_fetch: FetchCallback | None,
    url_path: str = "",
) -> HttpServer:
    from gitprov.tools.mtls import https_server, make_mtls_context

    try:
        context = make_mtls_context(Path(args.tls_cert), Path(args.tls_key), Path(args.client_ca))
        server = https_server(
            [Path(r) for r in roots],
            context,
            args.host,
            args.https_port,
            on_fetch,
            args.http_max_connections,
            url_path,
        )
        server.start()
    except BaseException:
        stop_others()
        raise
    return server


def _fit_connections(args: argparse.Namespace, out: Output, listeners: int) -> None:
    """--http-max-connections lowered to what the limit on open files holds (raised to
    its hard limit first), with a warning: at the cap, idle clients took every
    descriptor, and TFTP stalled for lack of one."""
    from gitprov.tools.serve import connections_within, fd_budget

    fds = fd_budget()
    if not listeners:
        return
    within = connections_within(fds, args.http_max_connections, listeners)
    if within < args.http_max_connections:
        out.warn(
            f"warning: {within} HTTP connections at once, not {args.http_max_connections}: "
            f"this process may open {fds} files (raise the limit: LimitNOFILE= in a systemd "
            "unit, ulimit -n in a shell)"
        )
        args.http_max_connections = within


def _refuse_private_roots(roots: dict[str, str | None], state_dir: str | None) -> None:
    """Refuse a root that would serve what only the publisher may read: the state dir
    (its manifest, journal and fetch log list every MAC), or a publisher's state dir or a
    git repository anywhere below it (the inventory, its history). `serve` serves a
    root's subdirectories too; `publish` never writes its state into a root."""
    for what, root in roots.items():
        if not root or not Path(root).is_dir():
            continue
        real = Path(root).resolve()
        if state_dir:
            state = Path(state_dir).resolve()
            if state.is_relative_to(real) or real.is_relative_to(state):
                relation = (
                    "is"
                    if state == real
                    else "holds"
                    if state.is_relative_to(real)
                    else "is inside"
                )
                if relation == "is inside":
                    # (the manifest is not served from there; but publish refuses such a
                    # root, so whatever is in it is no publish's)
                    raise UsageError(
                        f"the {what} root {root} is inside the state dir {state_dir}: the "
                        "state dir holds the publisher's own files (manifest, journal, "
                        "mirror), and no publish writes a root there",
                        hint="serve the roots gitprov publishes into, beside the state dir",
                    )
                raise UsageError(
                    f"the {what} root {root} {relation} the state dir {state_dir}: its "
                    "manifest and journal, which list every MAC, would be served",
                    hint="serve the publisher's roots; the state dir sits outside them",
                )
        found = _private_below(real)
        if found is not None:
            kind, where = found
            raise UsageError(
                f"the {what} root {root} holds {kind} ({where}): it would be served to "
                "anyone who asks",
                hint="serve the directories gitprov publishes into; keep the state dir and "
                "the repository outside them",
            )


# A root's directories looked at for what must not be served: a published root is one
# flat directory, so this bounds only a root given by mistake (a home, a checkout).
PRIVATE_SCAN_DIRS = 2_000
_STATE_FILES = frozenset({"journal.jsonl", "publish.lock", "manifest.index"})


def _private_below(root: Path) -> tuple[str, Path] | None:
    """A publisher's state dir or a git repository at or below `root` (links not
    followed), as (what, where); None when there is none in the first PRIVATE_SCAN_DIRS
    directories."""
    todo, seen = [root], 0
    while todo and seen < PRIVATE_SCAN_DIRS:
        folder = todo.pop()
        seen += 1
        try:
            with os.scandir(folder) as entries:
                names: set[str] = set()
                for entry in entries:
                    names.add(entry.name)
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        todo.append(Path(entry.path))
        except OSError:
            continue
        if ".git" in names or {"HEAD", "objects", "refs"} <= names:
            return "a git repository", folder
        if "manifest.json" in names and names & _STATE_FILES:
            return "a publisher's state dir", folder
    return None


def _fetch_log_path(
    args: argparse.Namespace, state_dir: str | None, roots: dict[str, str | None]
) -> Path | None:
    """Where the fetch log goes, or None for none; refused inside a served root, where
    anyone could read which MACs the fleet has and when each device fetched."""
    if args.no_fetch_log:
        if args.fetch_log:
            raise UsageError("--fetch-log and --no-fetch-log contradict each other")
        return None
    if args.fetch_log:
        path = Path(args.fetch_log)
        flag = f"--fetch-log {args.fetch_log}"
    elif state_dir:
        path = Path(state_dir) / "fetch.log"
        flag = f"the fetch log {path}"
    else:
        return None
    if path.is_dir():
        raise UsageError(f"{flag} is a directory", hint="give a file name")
    resolved = path.resolve()
    for what, root in roots.items():
        if root and resolved.is_relative_to(Path(root).resolve()):
            raise UsageError(
                f"{flag} is inside the {what} root {root}: it would be served to anyone",
                hint="write it outside the roots, e.g. into the publisher's state dir",
            )
    return path


def _sigterm_event() -> threading.Event:
    """Set by SIGTERM from now on: installed before anything is printed, so a supervisor
    that stops the server right after reading where it listens gets a clean exit."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, _setter(done))
    return done


def _wait_for_signal(done: threading.Event, stop: Callable[[], None]) -> None:
    try:
        while not done.wait(0.5):
            pass
    finally:
        stop()


def _setter(event: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A SIGTERM handler that sets `event` from another thread. The handler runs in the
    main thread between two of its steps, and that may be inside `event.wait()` or
    `event.set()` with the event's lock held: set there, a second TERM (the group's,
    then `make run`'s trap's) deadlocked the watcher for good, deaf to every TERM."""

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=event.set, name="gitprov-stop", daemon=True).start()

    return handler


def _state_files() -> frozenset[str]:
    """The files gitprov keeps in a state dir (and the fetch log's default name): a
    status file or a log written over one of them (a rename, an append) destroys what
    the next publish reads."""
    from gitprov import dirmark, journal
    from gitprov.headstart import LOCK
    from gitprov.plan import INDEX, INDEX_DELTA, MANIFEST, MAP_ENDS
    from gitprov.publish import BUILD_INPUTS, PENDING

    names = {MANIFEST, INDEX, INDEX_DELTA, MAP_ENDS, journal.JOURNAL, journal.STATE_LINES}
    return frozenset({*names, BUILD_INPUTS, LOCK, dirmark.LISTED, PENDING, "fetch.log"})


def _refuse_private_place(
    flag: str, path: Path, git_dir: Path, state_dir: Path | None, config: PublisherConfig
) -> None:
    """UsageError for a status file or a JSON log where the watcher must never write:
    in the repository's git directory (HEAD or config written over: no repository), a
    state file of the publisher's, or a served root (served to every device)."""
    where = paths.usable(path, flag)
    roots = [*config.http_roots, *config.tftp_roots, config.stage_root, config.firmware_dir]
    places = [("the repository's git directory", git_dir)]
    places += [("a served root", Path(r)) for r in roots if r]
    for what, place in places:
        if where.is_relative_to(paths.resolved(place)):
            raise UsageError(
                f"{flag} {path} is in {what} ({place})",
                hint="give a path of its own, e.g. beside the state dir",
            )
    if (
        state_dir is not None
        and where.parent == paths.resolved(state_dir)
        and where.name in _state_files()
    ):
        raise UsageError(
            f"{flag} {path} is the publisher's own {where.name}",
            hint="give another name, e.g. STATE_DIR/status.json",
        )


def run_watch(args: argparse.Namespace, out: Output) -> int:
    from gitprov.metrics import Metrics, MetricsServer
    from gitprov.plan import load_manifest
    from gitprov.publish import check_state_dir
    from gitprov.status import JsonLog, StatusFile
    from gitprov.watch import (
        Kind,
        LocalBranch,
        Outcome,
        RemoteBranch,
        Watcher,
        WatchOptions,
        check_branch,
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, _setter(stop))
    source: LocalBranch | RemoteBranch
    args.branch = check_branch(args.branch)
    config = publisher_config_of(args)
    config.require_targets()  # before a mirror is made or anything is read
    if args.remote:
        mirror = (
            args.repo
            if args.repo != "."
            else config.state_dir and str(Path(config.state_dir) / "mirror.git")
        )
        if not mirror:
            raise UsageError(
                "--remote needs a local mirror",
                hint="pass --repo PATH (a bare repository, created if missing) or --state-dir",
            )
        source = RemoteBranch(Path(mirror), args.remote, args.branch)
        args.repo = mirror
        try:
            source.fetch()
        except GitprovError as exc:
            out.warn(f"warning: {exc.message}; polling on")
    s = session(args, out)
    publisher = s.publisher(
        config,
        prune_unknown=args.prune_unknown,
        lock_wait=args.wait,
        allow_mass_removal=args.allow_mass_removal,
        allow_target_change=args.allow_target_change,
        allow_stranding=args.allow_stranding,
        verify=args.verify,
        watch_roots=not args.no_inotify,
    )
    if not args.remote:
        source = LocalBranch(Path(s.repo.path), args.branch, inotify=not args.no_inotify)
    # (a refusal below, of a status file or a port, stops the source's inotify threads:
    # left running, they outlived the command, and a process that forks later could not)
    try:
        # Resume from what is published: the manifest of the operator's state dir.
        state_dir = publisher.state_dir
        if state_dir:
            check_state_dir(state_dir)  # a state dir that is a file would fail every retry
        manifest = load_manifest(state_dir) if state_dir else None

        def show(o: Outcome) -> None:
            if o.kind is Kind.CLEAN:
                return
            if o.ok:
                out.info(o.message)
                for d in o.drift:
                    out.info(f"  drift: {d.root}/{d.name} was {d.kind} by hand; restored")
            else:
                out.warn(o.message)
            out.problems(o.problems, "text", out.stderr)
            out.stdout.flush()
            out.stderr.flush()

        observers: list[Callable[[Outcome], None]] = [show]
        label = source.label
        for flag, given in (("--status-file", args.status_file), ("--log-json", args.log_json)):
            if given:
                _refuse_private_place(flag, Path(given), Path(s.repo.path), state_dir, config)
        if args.status_file:
            try:
                mode = os.lstat(args.status_file).st_mode
            except OSError:
                mode = None
            if mode is not None and not stat.S_ISREG(mode):
                # (written by a rename over it: a device node, a link or a directory would be
                # replaced, as root /dev/null itself)
                what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
                raise UsageError(
                    f"--status-file {args.status_file} is {what}",
                    hint="give the path of a regular file (made if missing)",
                )
            observers.append(StatusFile(Path(args.status_file), label, manifest))
        server: MetricsServer | None = None
        interval = args.interval or (30.0 if args.remote else 2.0)
        options = WatchOptions(
            args.branch,
            interval,
            0.1,
            not args.no_inotify,
            args.reconcile,
            min(args.retry, args.reconcile),
        )
        last = manifest.commit if manifest else None
        log = opened_for_append(args.log_json) if args.log_json else nullcontext(None)
        with log as log_file:
            if log_file is not None:
                json_log = JsonLog(log_file)
                json_log.event("start", watching=label, commit=last)
                observers.append(json_log)
            if args.metrics_port is not None:
                metrics = Metrics()
                if state_dir:
                    metrics.restore(state_dir)
                server = metrics.serve(args.metrics_port, args.metrics_host)
                observers.append(metrics)
                out.info(f"metrics: {server.url}")
            out.info(
                f"watching {label} (poll every {interval:g}s, reconcile every "
                f"{args.reconcile:g}s); published: {last[:12] if last else 'nothing yet'}"
            )
            out.stdout.flush()
            try:
                Watcher(source, publisher, options, last=last, observers=observers).run(stop)
            except KeyboardInterrupt:
                stop.set()
            finally:
                if server is not None:
                    server.stop()
    finally:
        source.close()
    return 0


def run_probe(args: argparse.Namespace, out: Output) -> int:
    from gitprov.tools.device import ProbeOptions, probe

    results = probe(
        ProbeOptions(
            mac=args.mac,
            url=args.url,
            key=args.key,
            mode=args.mode,
            iterations=args.iterations,
            gzip=args.gzip,
            option66=args.option66,
            config_file_name=args.config_file_name,
            product_name=args.product_name,
            serial=args.serial,
            sw_version=args.sw_version,
            hw_version=args.hw_version,
            state=Path(args.state) if args.state else None,
            until_stable=args.until_stable,
            max_rounds=args.max_rounds,
            compare=args.compare,
            timeout=args.timeout,
            resolve=tuple(args.resolve),
            cacert=args.cacert,
            cert=args.cert,
            cert_key=args.cert_key,
            setting_keys=tuple(args.setting_key),
        )
    )
    if args.format == "json":
        out.json([dataclasses.asdict(r) for r in results])
    else:
        _print_results(results, out.stdout)
    last = results[-1]
    if args.until_stable and last.status == "applied":
        out.data(f"not stable after {len(results)} round(s)")
        return 1
    return 0 if last.ok else 1


def _print_results(results: list[ResyncResult], out: TextIO) -> None:
    # The URL and the detail may hold the server's text (an HTTP reason phrase, a TFTP
    # error message, a Profile Rule it served): an ESC or a CR in it would rewrite the
    # reader's terminal. The keys and versions come from the served file too: the parser
    # lets no control through in them, but they are escaped alike, should that change.
    def version(text: str | None) -> str:
        return "(none)" if text is None else printable(text)

    for number, r in enumerate(results, start=1):
        where = f"{r.source}  {printable(r.url)}" if r.source else "(no URL)"
        out.write(f"round {number}: {where}\n")
        detail = printable(r.detail)
        if r.status == "applied":
            out.write(
                f"  applied: version {version(r.version_before)} -> {version(r.version_after)}, "
                f"{len(r.changed)} parameter(s) changed; the device reboots\n"
            )
            if r.changed:
                out.write(f"  changed: {', '.join(map(printable, r.changed))}\n")
        elif r.status == "unchanged":
            out.write(f"  unchanged: {detail}\n")
        else:
            out.write(f"  {r.status}: {detail} (version stays {version(r.version_after)})\n")
        if r.hint:
            out.write(f"    hint: {printable(r.hint)}\n")
