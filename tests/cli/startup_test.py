"""What a fresh `gitprov` process imports before it does anything: building the parser
(every `--help`, completion, the start of every command) must not pay for pygit2,
jsonschema, cryptography or the pipeline, which CI, pre-commit hooks and each
subprocess would otherwise load for nothing; and the values the parser shows without
importing their owners must be the owners' values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import gitprov.cli
from gitprov import crypto, fleet, importer, init, publisher_config, review, source
from gitprov.cli import defaults
from gitprov.cli import init as cli_init
from gitprov.cli import plan as cli_plan
from gitprov.crypto import Cipher, Mode
from gitprov.tools.serve import HTTP_MAX_CONNECTIONS, TftpLimits
from tests.fixtures.gitrepo import ROOT, GitRepo

HEAVY = ("pygit2", "jsonschema", "cryptography", "gitprov.pipeline", "gitprov.app")

# Runs in a fresh interpreter: `argv` lists of gitprov arguments, then the modules loaded.
PROBE = """
import contextlib, io, json, sys
from gitprov.cli import build_parser, main
build_parser()
for argv in json.loads(sys.argv[1]):
    # decrypt writes bytes: a text stream with a buffer, as sys.stdout is.
    sink = io.TextIOWrapper(io.BytesIO())
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    assert code == 0, (argv, code)
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(runs: list[list[str]], cwd: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(runs)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY)


def _commands() -> list[list[str]]:
    """`--help` of gitprov, of each command and of each sub-command."""
    parser = gitprov.cli.build_parser()
    runs = [["--help"]]
    for name, sub in parser._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        runs.append([name, "--help"])
        for action in sub._actions:
            if action.choices and hasattr(action, "add_parser"):
                runs += [[name, inner, "--help"] for inner in action.choices]
    return runs


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    runs = _commands()
    assert ["secrets", "keygen", "--help"] in runs  # the walk reaches sub-commands
    assert _heavy(_loaded(runs, tmp_path)) == []


def test_the_probe_sees_heavy_imports(tmp_path: Path) -> None:
    # The check above is only worth something if a command that uses them shows them.
    key = "k" * 16
    encrypted = tmp_path / "fv.conf"
    # (a device's file: decrypt refuses what no device file can be)
    encrypted.write_bytes(Cipher(Mode.OPENSSL_MD5).encrypt(b"DBID_DBASE_VERSION=1\n", key))
    loaded = _loaded([["decrypt", str(encrypted), "--key", key]], tmp_path)
    assert "cryptography" in loaded
    # and no more than that command uses
    assert "pygit2" not in loaded and "jsonschema" not in loaded


# Runs one command in a fresh interpreter, then writes the modules loaded into a file: the
# command's own output stays on stdout and stderr, out of the way of the list.
COMMAND = """
import json, sys
from gitprov.cli import main
code = main(json.loads(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    json.dump(sorted(sys.modules), f)
sys.exit(code)
"""

# What only publishing, the watcher, verification, review or serving need.
NOT_FOR_VALIDATE = (
    "gitprov.publish",
    "gitprov.watch",
    "gitprov.verify",
    "gitprov.review",
    "gitprov.fleet",
    "gitprov.tools.serve",
)


def _run(argv: list[str], cwd: Path, out: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, json.dumps(argv), str(out)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


def test_validate_imports_nothing_of_publishing(example_repo: GitRepo, tmp_path: Path) -> None:
    loaded = _run(["-q", "validate"], example_repo.path, tmp_path / "modules.json")
    assert {"gitprov.app", "gitprov.pipeline"} <= loaded  # it did validate
    assert sorted(m for m in NOT_FOR_VALIDATE if m in loaded) == []


def test_the_command_probe_sees_publishing(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    # The check above is only worth something if a command that publishes shows it.
    http, tftp, state = (tmp_path / d for d in ("http", "tftp", "state"))
    argv = ["-q", "publish", "--http-root", str(http), "--tftp-root", str(tftp)]
    out = tmp_path / "modules.json"
    loaded = _run([*argv, "--state-dir", str(state)], example_repo.path, out)
    assert "gitprov.publish" in loaded
    # and none of what publishing does not use
    assert "gitprov.review" not in loaded and "gitprov.tools.serve" not in loaded


@pytest.mark.parametrize(
    ("mirror", "owner"),
    [
        (defaults.INVENTORY_DIR, source.DEFAULT_INVENTORY_DIR),
        (defaults.CONFIG_ENV, publisher_config.CONFIG_ENV),
        (defaults.ALLOWED_ROOTS_ENV, publisher_config.ALLOWED_ROOTS_ENV),
        (defaults.MODES, tuple(m.value for m in Mode)),
        (defaults.NO_ENCRYPTION, Mode.NONE.value),
        (defaults.ITERATIONS, Cipher().iterations),
        (defaults.MAX_ITERATIONS, crypto.MAX_ITERATIONS),
        (defaults.IMPORT_THRESHOLD, importer.DEFAULT_THRESHOLD),
        (defaults.IMPORT_PREFIX, importer.DEFAULT_PREFIX),
        (defaults.TFTP_MAX_TRANSFERS, TftpLimits().max_transfers),
        (defaults.TFTP_MAX_PENDING, TftpLimits().max_pending),
        (defaults.TFTP_MAX_PENDING_PER_CLIENT, TftpLimits().max_pending_per_client),
        (defaults.TFTP_MAX_TIMEOUT, TftpLimits().max_timeout),
        (defaults.HTTP_MAX_CONNECTIONS, HTTP_MAX_CONNECTIONS),
        (defaults.LOG_FORMATS, fleet.FORMATS),
        (defaults.RUNNER_LABEL, init.RUNNER_LABEL),
        (cli_init.GITHUB_REPOSITORY, init.GITHUB_REPOSITORY),
        (set(cli_plan._VERB), {c.value for c in review.Change}),
    ],
)
def test_the_parsers_values_are_their_owners(mirror: object, owner: object) -> None:
    assert mirror == owner


# Ctrl-C while gitprov loads: an import raises KeyboardInterrupt, as the signal would.
INTERRUPTED_IMPORT = """
import runpy, sys

class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == "gitprov.cli.build":
            raise KeyboardInterrupt

sys.meta_path.insert(0, Interrupting())
sys.argv = ["gitprov", "validate"]
runpy.run_module("gitprov", run_name="__main__")
"""


def test_an_interrupt_while_gitprov_loads_says_so_with_130(tmp_path: Path) -> None:
    """Ctrl-C in the first tenth of a second printed the import's traceback."""
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IMPORT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "gitprov: interrupted\n", done.stderr


def test_an_interrupt_while_the_console_script_loads_says_so_with_130(tmp_path: Path) -> None:
    """The installed `gitprov` command imports what pyproject.toml names, not
    gitprov.__main__: gitprov.cli:entry's import printed its traceback on a Ctrl-C."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["gitprov"].partition(":")
    # (as pip's console script calls it)
    call = f"from {module} import {function}\nsys.exit({function}())\n"
    program = INTERRUPTED_IMPORT.replace('runpy.run_module("gitprov", run_name="__main__")\n', call)
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "gitprov: interrupted\n", done.stderr


def test_an_interrupt_while_the_parser_is_built_says_so_with_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while the command line was read (before a command ran): a traceback, and
    the process ended by the signal."""
    parser = gitprov.cli._parser

    def interrupted() -> object:
        os.kill(os.getpid(), signal.SIGINT)
        return parser()

    monkeypatch.setattr(gitprov.cli, "_parser", interrupted)
    assert gitprov.cli.main(["validate"]) == 130
    assert capsys.readouterr().err == "gitprov: interrupted\n"
