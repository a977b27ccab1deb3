"""The command line: one module per command or group of commands, each of which parses
its options, calls one function of the library (gitprov.app) and renders the result.
This package is the only place that knows about terminals and exit codes."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import functools
import gc
import io
import logging
import os
import posixpath
import sys
import threading
import traceback
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn, TextIO, cast

from gitprov import __version__, paths
from gitprov.cli import (
    build,
    fleet,
    history,
    importer,
    init,
    plan,
    publish,
    schema,
    secrets,
    serve,
    served,
    validate,
)
from gitprov.cli.common import EXIT_CODES, Formatter, Output, Parser, common_parent
from gitprov.cli.defaults import INVENTORY_DIR
from gitprov.errors import GitprovError, InvalidInventory
from gitprov.unsafe import ECHOED_CHARS, UNSAFE, echoed, escaped_byte, is_utf8, line_safe, shown

COMMANDS = (
    init,
    importer,
    validate,
    build,
    plan,
    publish,
    history,
    served,
    secrets,
    serve,
    fleet,
    schema,
)

EPILOG = f"""\
a 5-minute tour (inside an inventory repository; `gitprov init DIR` starts one):
  gitprov validate --worktree          check the files you are editing
  gitprov show 0021f2011b19            the rendered file of one device, secrets redacted
  gitprov plan --base main             what a branch would change, per device
  gitprov versions                     each device's DBID_DBASE_VERSION and what last changed it
  gitprov publish --rev main           write every device's file into the HTTP and TFTP roots
  gitprov serve                        serve the roots on 127.0.0.1 (HTTP :8080, TFTP :6969)
  curl -s http://127.0.0.1:8080/fv0021f2011b19.conf | gitprov decrypt - --key KEY

every command takes --help; data commands take --format json.
{EXIT_CODES}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gitprov",
        description="Configuration-as-code for Flying Voice VoIP provisioning: validates a "
        "git repository of YAML, compiles it into encrypted per-MAC param.conf files with "
        "DBID_DBASE_VERSION from git history, and publishes them to HTTP and TFTP roots.",
        epilog=EPILOG,
        formatter_class=Formatter,
        parents=[common_parent()],
    )
    parser.add_argument("--version", action="version", version=f"gitprov {__version__}")
    parser.add_argument("--repo", default=".", help="the inventory repository")
    parser.add_argument(
        "--inventory-dir",
        default=INVENTORY_DIR,
        type=_inventory_dir,
        help="directory of the inventory inside the repository",
    )
    parser.add_argument(
        "--private-key-file",
        help="private key for sealed secrets (else $GITPROV_PRIVATE_KEY or "
        "$GITPROV_PRIVATE_KEY_FILE)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """The parser of main(), built once per process: its ~25 command parsers cost tens of
    milliseconds, paid on every call by a program that calls main() many times (the test
    suite, thousands of times). Parsing leaves it as it was: argparse copies a list default
    (--http-root ...) before appending to it."""
    return build_parser()


# The collector's default (a young collection every 700 allocations, a full one every
# 100) walks a fleet's parsed documents again and again: a quarter of a one-device
# publish's CPU at 10,000 devices, a seventh of a cold validate. Fewer, larger young
# collections keep cyclic garbage bounded and leave the long-lived documents alone.
GC_THRESHOLDS = (100_000, 50, 100)


def _inventory_dir(value: str) -> str:
    """A path inside the repository as git names it: `./inventory/` and
    `sites/../inventory` are `inventory`, `.` and `./` are "" (the top, which no tree
    has an entry "." for); one that leaves the repository is refused."""
    if not is_utf8(value):
        raise argparse.ArgumentTypeError(
            f"'{shown(value)}' is not UTF-8: git names its files in UTF-8, and no inventory "
            "file may live under such a name"
        )
    if "\t" in value or UNSAFE.search(value):
        # (every problem's location would start with it: a newline forges lines of output)
        raise argparse.ArgumentTypeError(
            f"'{shown(value)}' holds a control or invisible character: no inventory file "
            "may live under such a name"
        )
    path = posixpath.normpath(value)
    if path.startswith("/") or path == ".." or path.startswith("../"):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not inside the repository: give its directory relative to the "
            "repository's top, such as inventory"
        )
    return "" if path == "." else path


# The options that go before the command, and what each takes.
GLOBAL_OPTIONS = {"--repo": "DIR", "--inventory-dir": "DIR", "--private-key-file": "FILE"}


def _hint_misplaced_global(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """After argparse's "unrecognized arguments": when that is a global option written after
    the command (`gitprov validate --repo DIR`), say where it goes."""
    commands = next(
        (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {}
    )
    at = next((i for i, word in enumerate(argv) if word in commands), None)
    if at is None:
        return
    command = argv[at]
    own = _option_strings(commands[command])
    for word in argv[at + 1 :]:
        if word == "--":
            return
        option = word.split("=", 1)[0]
        if option in GLOBAL_OPTIONS and option not in own:
            sys.stderr.write(
                f"    hint: {option} is a global option: put it before the command, as in "
                f"`gitprov {option} {GLOBAL_OPTIONS[option]} {command} …`\n"
            )
            return
    for word in argv[at + 1 :]:
        option = word.split("=", 1)[0]
        if option.startswith("--") and len(option) > 2 and option not in own:
            # (argparse printed the top-level usage: the command's own options are what
            # a typo was meant to be)
            import difflib  # (an error's path only: never at start-up)

            close = difflib.get_close_matches(option, sorted(own), n=1, cutoff=0.75)
            meant = f"did you mean {close[0]}? " if close else ""
            # (as the error above shows it: escaped, and cut when long)
            named = line_safe(option) if len(option) <= ECHOED_CHARS else echoed(option)
            sys.stderr.write(
                f"    hint: {command} has no option {named}: {meant}"
                f"`gitprov {command} --help` lists its options\n"
            )
            return


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """The options of a command, its subcommands' included (`watch --repo` is its own)."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


# The error handler of an output stream that would otherwise refuse a character (see
# _tolerant_output).
OUTPUT_ERRORS = "gitprov-output"


def _bytes_or_escaped(exc: UnicodeError) -> tuple[bytes, int]:
    """A name read from git or the file system that is not UTF-8 holds its bytes as
    surrogates (surrogateescape): they go out as those bytes, the name as it is on disk.
    Any other character the stream's encoding lacks goes out escaped (`\\xfc`)."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for char in exc.object[exc.start : exc.end]:
        byte = escaped_byte(char)
        if byte is not None:
            out.append(byte)
        else:
            out += char.encode("ascii", "backslashreplace")
    return bytes(out), exc.end


codecs.register_error(OUTPUT_ERRORS, _bytes_or_escaped)


def _tolerant_output() -> None:
    """Python writes stdout strictly in a locale such as en_US.UTF-8 (only the C locales
    get surrogateescape): a device file whose name is not UTF-8, or a character outside
    a legacy encoding, ended a command in a UnicodeEncodeError (exit 3) after part of
    its output. Such a stream gets the handler above, and so does stderr, which would
    show such a name as `\\udcff` where stdout shows its bytes."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors in TO_TOLERATE:
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors=OUTPUT_ERRORS)


# A stream's error handlers that _tolerant_output replaces: surrogateescape (the C
# locales' stdout) writes such a name's bytes already, but a lone surrogate outside
# them (`\ud800` in JSON a user gave) ended the command as strict does.
TO_TOLERATE = ("strict", "backslashreplace", "surrogateescape")


class _ReaderMayGo:
    """A standard stream whose reader may go before the output ends (`| head`): what is
    written after that is dropped, and the command runs to its end and exits with its
    own status. Before, the first write to the closed pipe ended the command, and it
    exited 0: `gitprov validate | head` with pipefail passed on a broken inventory."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, data: Any) -> int:
        try:
            written: int = self._stream.write(data)
            return written
        except BrokenPipeError:
            self._gone()
            return len(data)

    def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()
            # (what the buffer still held goes into /dev/null now)
            with contextlib.suppress(OSError, ValueError):
                self._stream.flush()

    @property
    def buffer(self) -> _ReaderMayGo:
        return _ReaderMayGo(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _gone(self) -> None:
        """From now on, the stream's descriptor writes into /dev/null."""
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)


# What a write meets on a full, over-quota or read-only filesystem, or a broken disk.
CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # (Ctrl-C before a command runs, while the parser is built or reads the command
        # line: a traceback, and the process ended by the signal)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("gitprov: interrupted\n")
        return 130


def _main(argv: Sequence[str] | None) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    _tolerant_output()
    parser = _parser()
    # Only when the shell's completion hook is asking (its variable set): argcomplete
    # takes 10 ms to import, a twentieth of what publishing a published commit costs.
    if "_ARGCOMPLETE" in os.environ:
        try:
            import argcomplete

            argcomplete.autocomplete(parser)
        except ImportError:
            pass
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        status = int(exc.code or 0) if isinstance(exc.code, int) else 2
        if status == 2:
            _hint_misplaced_global(parser, list(sys.argv[1:] if argv is None else argv))
        return status
    except (OSError, RuntimeError) as exc:
        # (an option's type that looked at its path: argparse passes such an error on,
        # a raw traceback with exit 1)
        if _unusable_path(exc, Output()):
            return 2
        raise
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    out = Output(quiet)
    try:
        code: int = args.run(args, out)
        return code
    except InvalidInventory as exc:
        out.problems(exc.problems, "text", sys.stderr)
        out.warn(f"gitprov: {line_safe(exc.message)}")
        if exc.hint:
            out.warn(f"    hint: {line_safe(exc.hint)}")
        return 1
    except GitprovError as exc:
        # (escaped whole, a line break too: a message is one line, and one naming a path
        # from the environment, a config file or a key file showed an ESC as itself)
        out.warn(f"gitprov: error: {line_safe(exc.message)}")
        if exc.hint:
            out.warn(f"    hint: {line_safe(exc.hint)}")
        return exc.exit_code
    except KeyboardInterrupt:
        out.warn("gitprov: interrupted")
        return 130
    except BrokenPipeError:
        # (a write past `_ReaderMayGo`: what the command found is not known, so not 0)
        return 1
    except Exception as exc:
        if _unusable_path(exc, out):
            return 2
        if isinstance(exc, OSError) and exc.errno in CANNOT_WRITE:
            # (a full disk or a read-only one under the output, a log or a status file:
            # the machine's to fix, not a bug; the place when the error names it)
            where = f" {exc.filename}" if exc.filename else " its output"
            with contextlib.suppress(OSError, ValueError):
                out.warn(f"gitprov: error: cannot write{where}: {exc.strerror}")
                out.warn("    hint: free space (or make it writable) and run it again")
            return 2
        git = sys.modules.get("pygit2")
        if git is not None and isinstance(exc, git.GitError):
            # An object git's own checks would refuse (a signature without an e-mail, a
            # date past 64 bits), which a fetch takes in without a look: the repository,
            # not gitprov, is what to fix.
            out.warn(f"gitprov: error: the repository holds an object git cannot read: {exc}")
            out.warn(
                "    hint: `git fsck --full` names it; fetch again with "
                "transfer.fsckObjects=true, or clone afresh from a good copy"
            )
            return 2
        out.warn("gitprov: internal error; please report it with this trace:")
        traceback.print_exc()
        return 3


def _unusable_path(exc: BaseException, out: Output) -> bool:
    """Say a path's own problem that escaped the checks of the commands (see
    gitprov.paths: a symlink loop, a name too long) as the usage error it is, and return
    True; False for any other exception. A safety net: each command checks its paths."""
    filename = getattr(exc, "filename", None)
    if isinstance(exc, RuntimeError):
        # (Python 3.11's Path.resolve() names the path only in its message)
        text = str(exc)
        filename = (
            text.partition(" from ")[2].strip("'\"") if text.startswith("Symlink loop") else ""
        )
    if not filename or not isinstance(filename, str | bytes):
        return False
    found = paths.unusable(os.fsdecode(filename), exc)
    if found is None:
        return False
    with contextlib.suppress(OSError, ValueError):
        out.warn(f"gitprov: error: {found.message}")
        out.warn(f"    hint: {found.hint}")
    return True


def entry() -> NoReturn:
    """The `gitprov` program (and `python -m gitprov`): main(), then out of the process
    without the interpreter's teardown. At 100,000 devices a publish holds millions of
    small objects, which the teardown frees one by one (3 s after a cold publish) before
    the kernel takes the whole heap back anyway. What the teardown would still do that
    matters is done first: the output flushed, the log handlers closed. With a thread or
    a child process still running (none should be), the interpreter exits as usual."""
    # A stream closed by the caller (`>&-`, `2>&-`) is None in Python: what would go to
    # it has nowhere to go, as with a pipe whose reader is gone (see below).
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 (for the process)
    _tolerant_output()  # (main's own call does not see through the wrappers)
    sys.stdout = cast(TextIO, _ReaderMayGo(sys.stdout))
    sys.stderr = cast(TextIO, _ReaderMayGo(sys.stderr))
    code = main()
    with contextlib.suppress(Exception):
        logging.shutdown()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader is gone: what is left of the output has nowhere to go.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:  # (a full disk under a redirected output)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"gitprov: error: cannot write its output: {exc.strerror}\n")
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = code or 2
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    mp = sys.modules.get("multiprocessing")
    if threading.active_count() > 1 or (mp is not None and mp.active_children()):
        sys.exit(code)
    os._exit(code)


__all__ = ["build_parser", "entry", "main"]
