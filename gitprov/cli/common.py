"""What every command shares: its common options, the session it works on, and output
(text, JSON checked against schemas/output/, GitHub annotations, progress on a terminal).

Exit codes (docs/design.md, invariant 6): 0 ok, 1 problems in the inventory, 2 usage or
environment (bad revision, not a repository, shallow history, missing key, unreadable
file), 3 internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from gitprov import paths
from gitprov.cli.defaults import ALLOWED_ROOTS_ENV, CONFIG_ENV, MAX_ITERATIONS
from gitprov.errors import Problem, UsageError
from gitprov.paths import UnusablePath
from gitprov.unsafe import ECHOED_CHARS, echoed, is_utf8, line_safe, shown

EXIT_CODES = (
    "exit codes: 0 ok, 1 problems in the inventory, 2 usage or environment (bad revision, "
    "not a repository, shallow history, missing key, unreadable file), 3 internal error, "
    "130 interrupted"
)

Run = Callable[[argparse.Namespace, "Output"], int]
if TYPE_CHECKING:
    from gitprov.app import Progress, Session
    from gitprov.publisher_config import PublisherConfig

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps hand-made line breaks and states every default worth stating (not the
    None/False/[] of options that are simply off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text
            or default in (None, False, [], "", argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


# No path a file system takes is longer (PATH_MAX): a path argument is echoed whole up to
# this, since its long name is what a "name too long" error is about.
PATH_CHARS = 4096


class Parser(argparse.ArgumentParser):
    """argparse, with what its errors echo of the command line made fit to print (a
    hook's 100,000-character argument was a whole screen, or one line of a CI log):
    control, invisible and bidi characters escaped (argparse prints "unrecognized
    arguments", and the types their file names, as given: an ESC there rewrote the
    terminal); an unrecognized argument or an invalid choice, as a type's message echoes
    a value (`echoed`), cut after ECHOED_CHARS characters, its length said; any other
    argument, a path as a type names it, after PATH_CHARS. Every command's parser is one:
    argparse makes a command's parser of its parent's class."""

    _words: Sequence[str] = ()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # (the words its errors may echo: a command's parser gets those after its name)
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            shown = (line_safe(w) if len(w) <= ECHOED_CHARS else echoed(w) for w in extras)
            self.error(f"unrecognized arguments: {' '.join(shown)}")
        return parsed

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            given = echoed(value) if isinstance(value, str) else repr(value)
            raise argparse.ArgumentError(action, f"invalid choice: {given} (choose from {choices})")

    def error(self, message: str) -> NoReturn:
        given = {w for word in self._words for w in (word, word.partition("=")[2])}
        for word in sorted((w for w in given if len(w) > PATH_CHARS), key=len, reverse=True):
            # quoted by argparse (%r) or by a type's message ({text!r}), or as it is
            cut = echoed(word, PATH_CHARS)
            message = message.replace(repr(word), cut).replace(word, cut)
        super().error(line_safe(message))


# -- options ------------------------------------------------------------------------------
def common_parent() -> argparse.ArgumentParser:
    """Options every command accepts after its name too (`gitprov publish -q`).
    SUPPRESS keeps a value given before the command name."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only data and errors: no notes, summaries or progress",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log more (debug messages on stderr)",
    )
    return p


# An example of a command's help: the command line, as typed, and what it does.
Example = tuple[str, str]


def add_action(
    sub: Subparsers,
    name: str,
    *,
    help: str,
    description: str,
    examples: Sequence[Example] = (),
) -> argparse.ArgumentParser:
    """A command, or an action of one (`secrets set`, `import csv`), with the options every
    command takes; its help ends with examples, then what its exit code means. Each
    example is a whole command line that this parser accepts (tests/cli/commands_test.py)."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=_epilog(examples),
        parents=[common_parent()],
        formatter_class=Formatter,
    )
    return p


def add_command(
    sub: Subparsers,
    name: str,
    run: Run,
    *,
    help: str,
    description: str,
    examples: Sequence[Example] = (),
) -> argparse.ArgumentParser:
    p = add_action(sub, name, help=help, description=description, examples=examples)
    p.set_defaults(run=run)
    return p


def _epilog(examples: Sequence[Example]) -> str:
    lines = ["examples:"] if examples else []
    for command, what in examples:
        lines += [f"  {command}", f"      {what}"]
    return "\n".join([*lines, "", EXIT_CODES]) if lines else EXIT_CODES


def add_rev(p: argparse.ArgumentParser, worktree: bool = True) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--rev", default="HEAD", help="read the inventory from this commit, branch or tag"
    )
    if worktree:
        g.add_argument(
            "--worktree",
            action="store_true",
            help="read the files on disk instead (before you commit)",
        )


def add_format(p: argparse.ArgumentParser, *extra: str) -> None:
    choices = ["text", "json", *extra]
    p.add_argument(
        "--format",
        choices=choices,
        default="text",
        help="text for people; json for programs (its JSON Schema: `gitprov schema "
        "--list`)" + (f"; {', '.join(extra)}" if extra else ""),
    )


def add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="processes that compile, render and encrypt device files (default: the CPUs "
        "this process may use; 1: this process only); a pool starts only for a fleet of "
        "a few thousand devices, where it pays",
    )


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{echoed(text)}: give a whole number of at least 1")
    return n


def port(text: str) -> int:
    """A TCP or UDP port to listen on: 0 (any free one) to 65535."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(
            f"{echoed(text)}: give a port from 1 to 65535 (0: any free port)"
        )
    return n


def host(text: str) -> str:
    """An address to listen on. Empty is refused: the socket layer reads it as every
    address, and an unset variable in `--host "$HOST"` must not open the server to the
    network; 0.0.0.0 or :: says so."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty address: give 127.0.0.1 (this machine only), the address of one "
            "interface, or 0.0.0.0 / :: for every one"
        )
    return text


def add_targets(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "where to publish (the publisher's choice; else the fleet's publish: settings, "
        "within --allow-root or the repository's work tree)"
    )
    g.add_argument(
        "--config",
        metavar="FILE",
        type=readable_file,
        help="the publisher's config file (YAML: http_root, tftp_root, state_dir, "
        "firmware_dir, stage_root, allowed_roots, require_signed, allowed_signers, gpg_home); "
        f"default ${CONFIG_ENV}; options given here win",
    )
    g.add_argument(
        "--http-root",
        action="append",
        metavar="DIR",
        default=[],
        type=utf8_text,
        help="override publish.http_root (repeat for several)",
    )
    g.add_argument(
        "--tftp-root",
        action="append",
        metavar="DIR",
        default=[],
        type=utf8_text,
        help="override publish.tftp_root (repeat for several)",
    )
    g.add_argument(
        "--state-dir",
        metavar="DIR",
        type=utf8_text,
        help="override publish.state_dir (manifest, lock)",
    )
    g.add_argument(
        "--firmware-dir", metavar="DIR", type=utf8_text, help="override publish.firmware_dir"
    )
    g.add_argument(
        "--stage-root",
        metavar="DIR",
        type=utf8_text,
        help="override publish.stage_root: where key delivery https-stage publishes the "
        "stage files (served only over HTTPS with client certificates)",
    )
    g.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        default=[],
        help="an absolute directory the fleet settings' paths may point into (repeat for "
        f"several; also ${ALLOWED_ROOTS_ENV}, colon-separated); without "
        "any, only into the repository's work tree",
    )
    g.add_argument(
        "--prune-unknown",
        action="store_true",
        help="also delete files in the roots that gitprov did not write (default: report them)",
    )
    guard = p.add_argument_group("what to refuse (a refused commit publishes nothing)")
    guard.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="publish even if the commit removes more devices than publish.max_removal "
        "(default 10%%) allows",
    )
    guard.add_argument(
        "--allow-target-change",
        action="store_true",
        help="publish even if the commit's fleet settings move the roots, the state dir "
        "or the firmware dir away from the published commit's",
    )
    guard.add_argument(
        "--allow-stranding",
        action="store_true",
        help="publish even if the commit changes file_name or encryption.master_key "
        "without keeping the old ones under encryption.previous: devices fetch by the "
        "name and key of their last file, and would not find or read the new one",
    )
    guard.add_argument(
        "--require-signed",
        action="store_true",
        help="publish only commits signed by an allowed key (git verify-commit): needs "
        "--allowed-signers and/or --gpg-home, each of which requires it too",
    )
    guard.add_argument(
        "--allowed-signers",
        metavar="FILE",
        type=readable_file,
        help="SSH keys allowed to sign (git's gpg.ssh.allowedSignersFile format)",
    )
    guard.add_argument(
        "--gpg-home",
        metavar="DIR",
        help="a GnuPG home whose keyring holds the OpenPGP keys allowed to sign",
    )


def add_state_dir(p: argparse.ArgumentParser) -> None:
    """--state-dir and --config, for a command that reads the publisher's state dir: the
    option, else the config file's (or $GITPROV_PUBLISHER_CONFIG's), else the fleet's."""
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the publisher's state dir (default: the --config file's, else HEAD's "
        "publish.state_dir)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        type=readable_file,
        help=f"the publisher's config file, for its state_dir; default ${CONFIG_ENV}",
    )
    p.set_defaults(
        http_root=[],
        tftp_root=[],
        firmware_dir=None,
        stage_root=None,
        allow_root=[],
        require_signed=False,
        allowed_signers=None,
        gpg_home=None,
    )


def publisher_config_of(args: argparse.Namespace) -> PublisherConfig:
    """The operator's settings: these options over the config file and the environment."""
    from gitprov import publisher_config

    given = publisher_config.PublisherConfig(
        http_roots=tuple(args.http_root),
        tftp_roots=tuple(args.tftp_root),
        state_dir=args.state_dir,
        firmware_dir=args.firmware_dir,
        allowed_roots=tuple(args.allow_root),
        require_signed=args.require_signed,
        allowed_signers=args.allowed_signers,
        gpg_home=args.gpg_home,
        stage_root=args.stage_root,
    )
    for root in given.allowed_roots:
        if not Path(root).is_absolute():
            raise UsageError(f"--allow-root {root} is not an absolute path", hint="write it from /")
    if given.gpg_home and not Path(given.gpg_home).is_dir():
        raise UsageError(f"--gpg-home {given.gpg_home} is not a directory")
    return publisher_config.resolve(given, args.config, os.environ)


def seconds(text: str) -> float:
    """A duration option: more than 0 and at most a day (NaN, infinity and the like
    would only fail later, in a socket or a wait)."""
    return _seconds(text, zero=False)


def poll_seconds(text: str) -> float:
    """A period of `watch` (poll, reconcile, retry): from POLL_MIN, at most a day. Any
    number above 0 was taken, and 1e-300 polled in a busy loop."""
    return _seconds(text, zero=False, lowest=POLL_MIN)


# The watcher's debounce: a shorter period would only look at the branch again before a
# push's burst of ref writes has settled.
POLL_MIN = 0.1


def wait_seconds(text: str) -> float:
    """A duration that may be 0 (do not wait), at most a day."""
    return _seconds(text, zero=True)


def _seconds(text: str, *, zero: bool, lowest: float = 0.0) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low_ok = value >= lowest if lowest else (value >= 0 if zero else value > 0)
    if not low_ok or not value <= DAY:  # (NaN fails both)
        low = f"from {lowest:g}" if lowest else "from 0" if zero else "above 0"
        raise argparse.ArgumentTypeError(
            f"{echoed(text)} is not a number of seconds {low}, at most {DAY}"
        )
    return value


DAY = 86400


def mac(text: str) -> str:
    """An argparse type: any spelling of a MAC, as 12 lower-case hex digits."""
    from gitprov.macros import normalise_mac

    found = normalise_mac(text)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"not a MAC address: {echoed(text)} (write it like 00:21:f2:01:1b:19 or 0021f2011b19)"
        )
    return found


def utf8_text(text: str) -> str:
    """An argparse type for what gitprov writes into UTF-8 (a root's path in its
    manifest, a key in a rule): bytes that are not UTF-8 are refused, named."""
    if not is_utf8(text):
        raise argparse.ArgumentTypeError(
            f"'{shown(text)}' is not UTF-8: give it in UTF-8 (gitprov writes it into UTF-8 text)"
        )
    return text


def passphrase(text: str) -> str:
    """--key: a passphrase in UTF-8. Empty is refused here, before any file is read: it
    is what an unset variable in `--key "$KEY"` gives, and no file is encrypted with it
    (`openssl enc` refuses it too)."""
    if not text:
        raise argparse.ArgumentTypeError(
            "is empty: give the passphrase the file is encrypted with (a device's: "
            "`gitprov key MAC`)"
        )
    return utf8_text(text)


def iterations(text: str) -> int:
    """--iterations: PBKDF2's count, refused before any work when it is no count a file
    can be made with (0 or less derives no key; past MAX_ITERATIONS, a key takes minutes),
    whatever --mode says: a wrong value is a typo even where it is not used."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(
            f"{echoed(text)}: PBKDF2 iterations must be from 1 to {MAX_ITERATIONS:,} (the -iter "
            "the file was made with; openssl's default is 10000)"
        )
    return n


def ca_certificates(text: str) -> str:
    """--cacert: a file of PEM CA certificates, loaded now: a missing, unreadable or
    non-PEM file is a usage error said before any state is read or anything fetched."""
    if text == "-":
        raise argparse.ArgumentTypeError("give a file of PEM certificates, not stdin")
    readable_file(text)
    import ssl  # (an option's path only: never at start-up)

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=text)
    except ssl.SSLError:
        raise argparse.ArgumentTypeError(
            f"{text}: holds no PEM certificate: give the CA's certificate, the file that "
            "starts with -----BEGIN CERTIFICATE-----"
        ) from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: cannot read it: {exc.strerror}") from None
    return text


def pem_file(text: str) -> str:
    """--cert, --cert-key: a file to read (not stdin); whether it is PEM and the key fits
    the certificate is known only once both are loaded."""
    if text == "-":
        raise argparse.ArgumentTypeError("give a PEM file, not stdin")
    return readable_file(text)


def readable_file(text: str) -> str:
    """An argparse type for a file to read ('-' is stdin): missing, a directory or
    unreadable is a usage error, said before any work starts."""
    if text == "-":
        return text
    path = Path(text)
    try:
        found = paths.kind(path)
    except UnusablePath as exc:
        # (argparse lets only its own errors through as usage errors: an OSError here
        # was a raw traceback with exit 1)
        raise argparse.ArgumentTypeError(
            f"{text}: cannot read it: {exc.reason} ({exc.hint})"
        ) from None
    except OSError as exc:  # (a directory on the way that this user may not search)
        raise argparse.ArgumentTypeError(f"{text}: cannot read it: {exc.strerror}") from None
    if found is None:
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if found == stat.S_IFDIR:
        raise argparse.ArgumentTypeError(f"{text}: is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable by this user")
    return text


def session(args: argparse.Namespace, out: Output) -> Session:
    from gitprov.app import Session

    s = Session(
        args.repo,
        args.inventory_dir,
        private_key_file=args.private_key_file,
        strict=getattr(args, "strict", False),
        progress=out.progress(),
    )
    workers = getattr(args, "workers", None)
    if workers is not None:
        s.pipeline.builder.workers = workers
    return s


# -- output -------------------------------------------------------------------------------
class Output:
    def __init__(
        self,
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._bars: _Bars | None = None

    def data(self, text: str = "") -> None:
        """What the command is for: always printed."""
        self.stdout.write(text + "\n")

    def info(self, text: str) -> None:
        """Notes and summaries: not with -q."""
        if not self.quiet:
            self.stdout.write(text + "\n")

    def warn(self, text: str) -> None:
        """Errors, hints and notes, on stderr. Each line is escaped (`line_safe`): many
        hold a path or a name the user typed, and an ESC in one would reach the
        terminal as a command (a newline in one still shows as one, as the shell would)."""
        self.stderr.write("\n".join(map(line_safe, text.split("\n"))) + "\n")

    def json(self, doc: Any) -> None:
        json.dump(doc, self.stdout, indent=2)
        self.stdout.write("\n")

    def problems(self, problems: Sequence[Problem], fmt: str, stream: TextIO | None = None) -> None:
        stream = stream or self.stdout
        if fmt == "json":
            json.dump(problems_json(problems), stream, indent=2)
            stream.write("\n")
        elif fmt == "github":
            render_github(problems, stream)
        else:
            # (-q: the problems are the data, the count of them a summary)
            render_text(problems, stream, summary=not self.quiet)

    def progress(self) -> Progress | None:
        """Progress on stderr when it is a terminal (never in a pipe, a file or CI),
        unless -q: one object for the whole command, so that its bars and its `working`
        line take turns."""
        if self.quiet or not _smart(self.stderr) or os.environ.get("CI"):
            return None
        if self._bars is None:
            self._bars = _Bars(self.stderr, progress_delay())
        return self._bars

    def working(self, label: str) -> contextlib.AbstractContextManager[None]:
        """Around a long call of a command: on a terminal, `LABEL: N s` while no bar of
        a counted stage is shown (reading and validating the inventory count nothing)."""
        bars = self.progress()
        if not isinstance(bars, _Bars):
            return contextlib.nullcontext()
        return bars.working(label)


PROGRESS_DELAY_ENV = "GITPROV_PROGRESS_DELAY"


# A day: no command shows nothing for longer. The interval timer takes no more than a
# time_t: `inf` (or 1e999) was an internal error on a terminal, the first time it was set.
PROGRESS_DELAY_MAX = 86_400.0


def progress_delay() -> float:
    """Seconds a stage runs before its progress shows (GITPROV_PROGRESS_DELAY, default
    0.5; at most PROGRESS_DELAY_MAX): what ends sooner leaves the terminal as it was."""
    try:
        delay = float(os.environ.get(PROGRESS_DELAY_ENV, "0.5"))
    except ValueError:
        return 0.5
    if math.isnan(delay):
        return 0.5
    return min(max(0.0, delay), PROGRESS_DELAY_MAX)


class _Bars:
    """A tqdm bar per counted stage (history, build, write, ...), shown once the stage has
    run for `delay` seconds; and, inside `working`, a line with the command's name and the
    seconds it has taken while no bar is shown.

    The line is redrawn by a SIGALRM interval timer, not a thread: a build forks its
    workers only from a process of one thread (gitprov.builder), and a fork inherits no
    interval timer."""

    TICK = 0.25

    def __init__(self, stream: TextIO, delay: float = 0.5) -> None:
        self.stream = stream
        self.delay = delay
        self.bars: dict[str, Any] = {}
        self._busy = False  # a bar is being drawn: the timer must not write over it
        self._working: tuple[str, float] | None = None
        self._drawn = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0:
            return
        from tqdm import tqdm

        # No monitor thread: a build forks its workers only from a process of one thread.
        tqdm.monitor_interval = 0
        self._busy = True
        try:
            bar = self.bars.get(stage)
            if bar is None:
                if done >= total:
                    return
                self._clear()
                bar = self.bars[stage] = tqdm(
                    total=total,
                    desc=stage,
                    unit="",
                    file=self.stream,
                    leave=False,
                    dynamic_ncols=True,
                    mininterval=0.2,
                    delay=self.delay,
                )
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
                del self.bars[stage]
        finally:
            self._busy = False

    @contextmanager
    def working(self, label: str) -> Iterator[None]:
        # Signal handlers belong to the main thread; a nested call keeps the outer line.
        if self._working is not None or threading.current_thread() is not threading.main_thread():
            yield
            return
        self._working = (label, time.monotonic())
        previous = signal.signal(signal.SIGALRM, self._tick)
        # Restart interrupted system calls (libgit2's among them) instead of failing them.
        signal.siginterrupt(signal.SIGALRM, False)
        signal.setitimer(signal.ITIMER_REAL, self.delay or 0.01, self.TICK)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self._working = None
            self._clear()

    def _tick(self, signum: int, frame: FrameType | None) -> None:
        if self._busy or self.bars or self._working is None:
            return
        label, started = self._working
        line = f"\r{label}: {time.monotonic() - started:.0f} s\x1b[K"
        # os.write, not the stream: the handler may run while the stream is mid-write.
        with contextlib.suppress(OSError, ValueError):
            os.write(self.stream.fileno(), line.encode())
            self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            with contextlib.suppress(OSError, ValueError):
                os.write(self.stream.fileno(), b"\r\x1b[K")
            self._drawn = False


@contextmanager
def opened_for_append(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdout
        return
    try:
        f = open(path, "a", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}", hint="check the path") from None
    with f:
        yield f


# -- problems -----------------------------------------------------------------------------
def _color(stream: TextIO) -> bool:
    # https://no-color.org: only a non-empty NO_COLOR turns colour off.
    return _smart(stream) and not os.environ.get("NO_COLOR")


def _smart(stream: TextIO) -> bool:
    """Whether `stream` is a terminal that takes escape sequences: TERM=dumb (Emacs's
    shell, some CI consoles) shows `ESC[K` and colour codes as text."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def render_text(problems: Sequence[Problem], stream: TextIO, *, summary: bool = True) -> None:
    color = _color(stream)
    for p in problems:
        level = str(p.level)
        where = p.where()
        if where.lstrip().startswith("::"):
            # A CI runner reads a line that starts with :: as a workflow command: a file
            # named `::stop-commands::x` (an inventory at the repository's top) would
            # silence every annotation after it, or forge one.
            where = "./" + where
        # (each text escaped where it could start a line or move the cursor: a key or a
        # name from a pull request is in the message, and CI prints it in its log)
        where, message = line_safe(where), line_safe(p.message)
        hint = f"    hint: {line_safe(p.hint or '')}"
        if color:
            level = ("\033[1;31m" if p.is_error else "\033[1;33m") + level + "\033[0m"
            where = f"\033[1m{where}\033[0m"
            hint = f"\033[2m{hint}\033[0m"
        stream.write(f"{where}: {level}[{p.code}]: {message}\n")
        if p.hint:
            stream.write(hint + "\n")
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    if problems and summary:
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
        stream.write(f"::{kind} {','.join(props)}::{line_safe(_gh_escape(msg))}\n")


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


__all__ = ["EXIT_CODES", "Output", "session"]
