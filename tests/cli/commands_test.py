"""The command line as a product surface: the import graph, the exit-code matrix, JSON
output against schemas/output/, help for every option, progress on a terminal only."""

from __future__ import annotations

import argparse
import ast
import fcntl
import gzip
import io
import json
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jsonschema import Draft202012Validator

import gitprov
from gitprov import DEPLOY_URL, DOCS_URL
from gitprov.app import Session
from gitprov.cli import build_parser, main
from gitprov.cli.common import EXIT_CODES
from gitprov.crypto import Cipher
from gitprov.schemas import output_schemas
from tests.fixtures.certs import new_ca
from tests.fixtures.fleet import device_key, fleet_files
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args

PACKAGE = Path(gitprov.__file__).parent
MAC = "0021f2011b19"
BROKEN = "inventory/devices/0021f2a0c001.yaml"


# -- 1. structure ---------------------------------------------------------------------
def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, lazily imported ones included."""
    tree = ast.parse(path.read_text())
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield base
            for a in node.names:  # `from gitprov import audit` imports a module
                yield f"{base}.{a.name}"


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in files and m != name}
        for name, path in files.items()
    }


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_graph_sees_imports() -> None:
    # The check above is only worth something if the graph is not empty.
    graph = _graph()
    assert "gitprov.app" in graph["gitprov.cli.common"]
    assert "gitprov.pipeline" in graph["gitprov.app"]


def test_cli_modules_do_not_import_pygit2() -> None:
    for path in (PACKAGE / "cli").glob("*.py"):
        found = [m for m in _imports(path) if m.split(".")[0] == "pygit2"]
        assert not found, path


# -- 2. the exit-code matrix ---------------------------------------------------------
@pytest.fixture
def repo(example_repo: GitRepo, private_key: str, tmp_path: Path) -> GitRepo:
    """main: the example inventory; branch broken: one device file that does not parse."""
    good = str(example_repo.repo.head.target)
    example_repo.commit({BROKEN: b"mac: [broken\n"}, "broken", branch="broken", parents=[good])
    example_repo.files = example_repo.files_at(good)
    return example_repo


def commands(tmp: Path) -> dict[str, list[str]]:
    """Each command that reads a commit, with `REV` where the commit goes."""
    return {
        "validate": ["validate", "--rev", "REV"],
        "show": ["show", MAC, "--rev", "REV"],
        "key": ["key", MAC, "--rev", "REV"],
        "build": ["build", "--rev", "REV", "--out", str(tmp / "out")],
        "plan": ["plan", "--base", "main", "--rev", "REV"],
        "versions": ["versions", "--rev", "REV"],
        "log": ["log", MAC, "--rev", "REV"],
        "blame": ["blame", MAC, "--rev", "REV"],
        "publish": ["publish", "--rev", "REV", *root_args(tmp / "roots")],
    }


def run(repo: GitRepo, argv: list[str], rev: str) -> int:
    return main(["--repo", str(repo.path), *[rev if a == "REV" else a for a in argv]])


@pytest.mark.parametrize("name", sorted(commands(Path("/x"))))
def test_exit_codes_of_each_command(
    repo: GitRepo,
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = commands(tmp_path)[name]
    assert run(repo, argv, "main") == 0, capsys.readouterr()
    if name != "log":  # log reads history, not the inventory at REV
        assert run(repo, argv, "broken") == 1, capsys.readouterr()
    assert run(repo, argv, "no-such-rev") == 2
    assert "unknown revision 'no-such-rev'" in capsys.readouterr().err
    tree = str(repo.repo.revparse_single("main^{tree}").id)
    assert run(repo, argv, tree) == 2
    assert "not a commit" in capsys.readouterr().err
    assert main(["--repo", str(tmp_path / "nowhere"), *argv[:1]]) == 2
    for exc, code in ((RuntimeError("boom"), 3), (KeyboardInterrupt(), 130)):

        def fail(self: Session, exc: BaseException = exc) -> None:
            raise exc

        with monkeypatch.context() as m:
            m.setattr(Session, "pipeline", property(fail))
            assert run(repo, argv, "main") == code
        assert ("internal error" in capsys.readouterr().err) == (code == 3)


@pytest.mark.parametrize("name", ["show", "key", "build", "publish"])
def test_a_missing_private_key_is_an_environment_error(
    repo: GitRepo,
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("GITPROV_PRIVATE_KEY")
    argv = commands(tmp_path)[name]
    if name == "show":
        argv = [*argv, "--reveal"]
    assert run(repo, argv, "main") == 2
    assert "private key" in capsys.readouterr().err
    assert not (tmp_path / "roots").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "0021f2011b18"], "no device 0021f2011b18 in the inventory"),
        (["key", "0021f2ffffff"], "no device 0021f2ffffff"),
        (["log", "0021f2ffffff"], "no device 0021f2ffffff"),
        (["blame", "0021f2ffffff"], "no device 0021f2ffffff"),
        (["versions", "0021f2ffffff"], "no device 0021f2ffffff"),
        (["blame", MAC, "nosuchparam"], "has no parameter 'nosuchparam'"),
        (["show", "not-a-mac"], "not a MAC address"),
    ],
)
def test_unknown_macs_and_parameters_are_usage_errors_with_hints(
    repo: GitRepo, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--repo", str(repo.path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    if argv[0] == "show" and argv[1] != "not-a-mac":
        assert "did you mean 0021f2011b19" in err  # the closest MAC


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_file_arguments_fail_cleanly(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "f"
    if kind == "directory":
        path.mkdir()
    for argv in (
        ["decrypt", str(path), "--key", "k"],
        ["--private-key-file", str(path), "show", MAC, "--reveal"],
    ):
        code = main(["--repo", str(tmp_path), *argv])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err and "internal error" not in err


def test_commands_without_a_repository_exit_0_or_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", "device"]) == 0
    assert main(["schema", "nope"]) == 2
    assert main(["params"]) == 0
    assert main(["completion", "bash"]) == 0
    assert "gitprov" in capsys.readouterr().out
    assert main(["decrypt", str(tmp_path / "none"), "--key", "k"]) == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("argv", [["schema", "fleet"], ["params", "--format", "json"]])
def test_a_full_disk_under_the_output_is_an_environment_error(argv: list[str]) -> None:
    """ENOSPC on stdout (a redirect to a full disk) is the machine's to fix: exit 2 with
    a line that says so, never a traceback (exit 3)."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "gitprov", *argv], stdout=full, stderr=subprocess.PIPE
        )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "cannot write its output: No space left on device" in err and "Traceback" not in err


# -- 3. JSON output and help ---------------------------------------------------------
def _check(kind: str, text: str) -> object:
    schema = output_schemas()[f"{kind}-output.schema.json"]
    doc = json.loads(text)
    Draft202012Validator(schema).validate(doc)
    return doc


def test_every_data_command_speaks_json_that_its_schema_accepts(
    repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.commit(
        {
            "inventory/devices/0021f2011b19.yaml": repo.files[
                "inventory/devices/0021f2011b19.yaml"
            ].replace(b"Reception\n", b"Front\n")
        },
        "A",
    )
    base = ["--repo", str(repo.path)]
    cases = {
        "validate": ["validate"],
        "show": ["show", MAC],
        "key": ["key", MAC],
        "build": ["build", "--out", str(tmp_path / "out")],
        "plan": ["plan", "--base", "main~1", "--rev", "main"],
        "versions": ["versions"],
        "log": ["log", MAC],
        "blame": ["blame", MAC],
        "publish": ["publish", *root_args(tmp_path / "roots")],
        "params": ["params"],
    }
    for kind, argv in cases.items():
        assert main([*base, *argv, "--format", "json"]) == 0, kind
        doc = _check(kind, capsys.readouterr().out)
        if kind == "log":
            assert isinstance(doc, dict) and [c["dbase_version"] for c in doc["changes"]] == [
                1002,
                1001,
            ]
    assert main([*base, "validate", "--format", "json", "--rev", "broken"]) == 1
    _check("validate", capsys.readouterr().out)


def _parsers(
    parser: argparse.ArgumentParser, name: str = "gitprov"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help() -> None:
    seen = 0
    for name, parser in _parsers(build_parser()):
        assert parser.description, name
        # What the exit status means, at the end of every command's help.
        assert name == "gitprov" or (parser.epilog or "").endswith(EXIT_CODES), name
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            seen += 1
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
    assert seen > 100


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    """The command lines of the "examples:" block of a parser's help."""
    text = parser.epilog or ""
    if "examples:\n" not in text:
        return []
    block = text.split("examples:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines() if not line.startswith("      ")]


def test_every_command_shows_examples_that_it_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An example that no longer parses (an option renamed, a value no longer among the
    choices) fails here, not in the hands of whoever copies it."""
    # the files the examples read, where they say (an argument may be checked as parsed)
    monkeypatch.chdir(tmp_path)
    for name in (
        "var/http/fv0021f2011b19.conf",
        "devices.csv",
        "keys.txt",
        "models.txt",
        "allowed_signers",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    parser = build_parser()
    count = 0
    for name, command in _parsers(parser):
        if name == "gitprov":
            continue  # (the tour in its epilog is a pipeline as well as commands)
        examples = _examples(command)
        assert examples, f"`{name} --help` shows no example"
        for line in examples:
            argv = shlex.split(line)
            assert argv[: len(name.split())] == name.split(), (name, line)
            try:
                parser.parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{name}: `{line}` does not parse: {capsys.readouterr().err}")
            count += 1
    assert count >= 40


# The commands whose examples only read: each runs on the example inventory.
READ_ONLY = {"validate", "show", "key", "versions", "log", "blame", "plan", "schema", "params"}


def test_the_examples_that_only_read_run_on_the_example_inventory(
    example_repo: GitRepo, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = example_repo.repo
    head = repo.head.target
    # the names the examples use besides main
    repo.references.create("refs/remotes/origin/main", head)
    commit = repo.get(head)
    assert isinstance(commit, pygit2.Commit)
    repo.branches.local.create("feature/voicemail", commit)
    ran = set()
    for _, command in _parsers(build_parser()):
        for line in _examples(command):
            argv = shlex.split(line)[1:]
            if argv[0] not in READ_ONLY or "--write" in argv:
                continue
            code = main(["--repo", str(example_repo.path), *argv])
            out = capsys.readouterr()
            assert code == 0, (line, out.err)
            assert out.out.strip(), line
            ran.add(line)
    assert len(ran) >= 15, sorted(ran)


def test_help_names_no_file_an_installed_gitprov_lacks() -> None:
    """An installed gitprov has no docs/ or deploy/ beside it: help sends a reader to the
    documentation's address, and to schemas by the command that prints them."""
    checkout_only = re.compile(r"(?<![\w/.])(docs/[\w-]+\.md|deploy/|schemas/output/)")
    for name, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert not checkout_only.search(text), (name, checkout_only.findall(text))
    assert DOCS_URL.startswith("https://") and DEPLOY_URL.startswith("https://")


def test_no_message_names_a_file_an_installed_gitprov_lacks() -> None:
    """Neither do errors and hints: a refusal said "rotate as docs/keys.md says" to a
    user whose wheel has no docs/. Every string of the package but its docstrings and
    comments (f-strings join DOCS_URL's address first)."""
    checkout_only = re.compile(r"(?<![\w/.])(docs/[\w-]+\.md|deploy/[\w.-]+)")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and checkout_only.search(node.value)
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value[:60]!r}")
    assert not found, found


def test_help_states_defaults_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "read-only" in out and "(default: 8080)" in out and "(default: 127.0.0.1)" in out
    assert main(["--help"]) == 0
    assert "exit codes: 0 ok, 1 problems in the inventory" in capsys.readouterr().out


def test_quiet_and_verbose_work_after_the_command(
    repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repo", str(repo.path), "publish", *root_args(tmp_path / "roots")]
    assert main([*argv, "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["-v", *argv]) == 0
    assert "already published" in capsys.readouterr().out


# -- 4. progress on a terminal only ------------------------------------------------------
@pytest.fixture
def big(tmp_path: Path) -> GitRepo:
    r = GitRepo(tmp_path / "big")
    r.commit(fleet_files(300), "300 devices")
    return r


def _build_argv(big: GitRepo, tmp_path: Path) -> list[str]:
    """`gitprov build` of the big fleet, in a process of its own."""
    out = str(tmp_path / "out")
    return [sys.executable, "-m", "gitprov", "--repo", str(big.path), "build", "--out", out]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    env["GITPROV_PRIVATE_KEY"] = os.environ["GITPROV_PRIVATE_KEY"]
    env["COLUMNS"] = "100"
    env["GITPROV_PROGRESS_DELAY"] = "0"  # at once: a fast build would end before 0.5 s
    return env


def test_build_shows_progress_on_a_terminal(big: GitRepo, private_key: str, tmp_path: Path) -> None:
    argv = _build_argv(big, tmp_path)
    main_fd, child_fd = pty.openpty()
    # A terminal of 24 x 100, as a person's would be (a new pty has no size at all).
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child_fd, env=_env()
    )
    os.close(child_fd)
    seen = b""
    while True:
        ready, _, _ = select.select([main_fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(60)
    os.close(main_fd)
    assert proc.returncode == 0
    assert b"build" in seen and b"%|" in seen, seen[-500:]


def test_no_progress_in_a_pipe(big: GitRepo, private_key: str, tmp_path: Path) -> None:
    argv = _build_argv(big, tmp_path)
    done = subprocess.run(argv, capture_output=True, env=_env(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert b"%|" not in done.stderr and b"\r" not in done.stderr
    assert done.stdout.count(b"\n") == 1  # the summary line only


def test_build_output_is_what_publish_serves(
    repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--repo", str(repo.path), "build", "--out", str(tmp_path / "o")]) == 0
    enc = (tmp_path / "o" / "encrypted" / f"fv{MAC}.conf").read_bytes()
    plain = Cipher().decrypt(enc, device_key(MAC))
    assert plain.startswith(b"DBID_DBASE_VERSION=1001\n")
    redacted = (tmp_path / "o" / "plain" / f"fv{MAC}.conf").read_bytes()
    assert b"<redacted>" in redacted
    assert io.BytesIO(redacted).read(1)  # non-empty


def test_main_builds_its_parser_once_and_a_parse_carries_nothing_over() -> None:
    from gitprov.cli import _parser

    assert _parser() is _parser()
    first = _parser().parse_args(["publish", "--http-root", "/a", "--allow-root", "/b", "-q"])
    assert (first.http_root, first.allow_root, first.quiet) == (["/a"], ["/b"], True)
    again = _parser().parse_args(["publish"])
    assert (again.http_root, again.allow_root, again.tftp_root) == ([], [], [])
    assert not getattr(again, "quiet", False)


@pytest.mark.parametrize("given", ["./inventory/", "inventory/", "sites/../inventory"])
def test_an_inventory_dir_is_the_one_git_names_however_it_is_written(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    code = main(["--repo", str(example_repo.path), "--inventory-dir", given, "validate"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "GP100" not in out + err


@pytest.mark.parametrize("given", [".", "./", "", "sites/.."])
@pytest.mark.parametrize("worktree", [False, True])
def test_an_inventory_at_the_repository_s_top_is_found_however_it_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str, worktree: bool
) -> None:
    """`.` named the tree entry "." at a commit, which no tree has: the fleet settings
    were "missing" (GP100, create ./gitprov.yaml) beside the file itself."""
    from tests.fixtures.gitrepo import example_files

    repo = GitRepo(tmp_path / "repo")
    top = {p.removeprefix("inventory/"): data for p, data in example_files().items()}
    repo.commit(top, "the inventory at the top", worktree=True)
    where = ["--worktree"] if worktree else ["--rev", "main"]
    argv = ["--repo", str(repo.path), "--inventory-dir", given, "validate", *where]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "GP100" not in out + err


@pytest.mark.parametrize("given", ["..", "../inventory", "/etc", "inventory/../../x"])
def test_an_inventory_dir_outside_the_repository_is_a_usage_error(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    code = main(["--repo", str(example_repo.path), "--inventory-dir", given, "validate"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "not inside the repository" in err, err


@pytest.mark.parametrize(
    "given", ["inv\nentory", "inv\x1b[2Jentory", "inv\tentory", "inv\u202eyrotne"]
)
def test_an_inventory_dir_with_a_control_character_is_a_usage_error_shown_escaped(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    # Every location of every problem starts with the directory: printed raw, a newline
    # in it would forge lines of output, an ESC sequence rewrite the terminal.
    code = main(["--repo", str(example_repo.path), "--inventory-dir", given, "validate"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "holds a control or invisible character" in err, err
    assert given not in out + err and "\x1b" not in out + err


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "1e400", "86401", "soon"])
@pytest.mark.parametrize(
    "argv",
    [
        ["probe", "0021f2011b19", "--url", "http://127.0.0.1:9/x", "--timeout"],
        ["watch", "--interval"],
        ["watch", "--reconcile"],
        ["watch", "--retry"],
        ["publish", "--wait"],
    ],
    ids=["probe --timeout", "watch --interval", "watch --reconcile", "watch --retry", "wait"],
)
def test_durations_are_seconds_a_socket_or_a_wait_takes(
    capsys: pytest.CaptureFixture[str], argv: list[str], value: str
) -> None:
    if argv[-1] == "--wait" and value == "0":  # fail at once if another publish runs
        assert build_parser().parse_args([*argv, value]).wait == 0
        return
    assert main([*argv, value]) == 2
    err = capsys.readouterr().err
    assert argv[-1] in err and "at most 86400" in err and "Traceback" not in err, err


@pytest.mark.parametrize("flag", ["--interval", "--reconcile", "--retry"])
def test_a_watch_period_is_at_least_the_debounce(
    capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    # --interval 1e-300 was "above 0" and polled in a busy loop, a CPU at 100 %.
    for value in ("1e-300", "0.05", "0.0999"):
        assert main(["watch", flag, value]) == 2
        err = capsys.readouterr().err
        assert f"{flag}: {value!r} is not a number of seconds from 0.1, at most 86400" in err
    assert getattr(build_parser().parse_args(["watch", flag, "0.1"]), flag[2:]) == 0.1


@pytest.mark.parametrize("flag", ["--http-port", "--tftp-port", "--https-port", "--metrics-port"])
@pytest.mark.parametrize("value", ["65536", "99999", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error_not_a_trace(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    command = "watch" if flag == "--metrics-port" else "serve"
    assert main([command, flag, value]) == 2
    err = capsys.readouterr().err
    assert flag in err and "from 1 to 65535" in err and "Traceback" not in err, err
    assert getattr(build_parser().parse_args([command, flag, "0"]), flag[2:].replace("-", "_")) == 0


def _key_commands(repo: GitRepo, tmp: Path) -> dict[str, list[str]]:
    """The commands that take --key and --iterations, each with a file to open that a
    run would read (and, for import, write a device from; for probe, a state to save)."""
    confs = tmp / "confs"
    confs.mkdir(exist_ok=True)
    conf = confs / "fv0021f2a0c009.conf"
    conf.write_bytes(Cipher().encrypt(b"DBID_DBASE_VERSION=7\n", "k"))
    return {
        "decrypt": ["decrypt", str(conf)],
        "import": ["--repo", str(repo.path), "import", "conf", str(confs), "--model", "IP542N"],
        "probe": ["probe", MAC, "--url", "http://127.0.0.1:9/x", "--state", str(tmp / "dev.json")],
    }


def _nothing_done(repo: GitRepo, tmp: Path, out: str) -> None:
    assert out == "", out
    assert not (tmp / "dev.json").exists()
    assert not (repo.path / "inventory" / "devices" / "0021f2a0c009.yaml").exists()


@pytest.mark.parametrize("value", ["0", "-1", "99999999999999", "ten"])
@pytest.mark.parametrize("command", ["decrypt", "import", "probe"])
def test_iterations_no_file_is_made_with_are_a_usage_error_before_any_work(
    example_repo: GitRepo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    value: str,
) -> None:
    """0 or less was a failure of the work (exit 1) once a file was read, or passed
    unnoticed where the mode takes no iterations; past the schema's bound likewise."""
    argv = [*_key_commands(example_repo, tmp_path)[command], "--key", "k"]
    assert main([*argv, "--mode", "openssl-pbkdf2", "--iterations", value]) == 2
    out, err = capsys.readouterr()
    assert "argument --iterations" in err and "must be from 1 to 10,000,000" in err, err
    assert "Traceback" not in err
    _nothing_done(example_repo, tmp_path, out)
    assert main([*argv, "--iterations", value]) == 2  # (the default mode takes none)
    _nothing_done(example_repo, tmp_path, capsys.readouterr().out)


@pytest.mark.parametrize("command", ["decrypt", "import", "probe"])
def test_an_empty_key_is_a_usage_error_before_any_work(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`--key "$KEY"` with the variable unset: exit 1 once a file was read, or not said
    as the option's."""
    assert main([*_key_commands(example_repo, tmp_path)[command], "--key", ""]) == 2
    out, err = capsys.readouterr()
    assert "argument --key: is empty: give the passphrase" in err, err
    _nothing_done(example_repo, tmp_path, out)


def test_an_imported_gzip_bomb_is_a_located_problem_not_a_gigabyte(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    confs = tmp_path / "confs"
    confs.mkdir()
    # 64 KiB of gzip under the 1 MiB file cap, 64 MiB once decompressed.
    (confs / "fv0021f2a0c009.conf").write_bytes(gzip.compress(bytes(64 * 2**20)))
    argv = ["--repo", str(example_repo.path), "import", "conf", str(confs), "--model", "IP542N"]
    assert main([*argv, "--dry-run"]) in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "fv0021f2a0c009.conf" in err, err
    assert "does not decompress" in err, err


def test_schema_write_where_it_cannot_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("mine\n")
    assert main(["schema", "--write", str(tmp_path / "afile" / "schemas")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the schemas" in err and "Traceback" not in err, err


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def _tls_file(tmp: Path, kind: str) -> Path:
    """A file given as --cacert or --cert: a CA's certificate in PEM, or what `kind` says."""
    path = tmp / f"{kind.replace(' ', '-').replace(',', '')}.pem"
    cert, key = new_ca("test CA")
    if kind == "directory":
        path.mkdir()
    elif kind == "not PEM":
        path.write_text("not a certificate\n")
    elif kind == "DER":
        path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    elif kind == "a key, no certificate":
        path.write_bytes(_pem_key(key))
    elif kind != "missing":
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if kind == "unreadable":
            path.chmod(0)
    return path


@pytest.mark.parametrize(
    "kind", ["missing", "directory", "unreadable", "not PEM", "DER", "a key, no certificate"]
)
def test_a_cacert_that_cannot_be_loaded_is_a_usage_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """It was a failure of the work (exit 1), said after the device state was read."""
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a file of mode 0")
    cacert = _tls_file(tmp_path, kind)
    state = tmp_path / "dev.json"
    argv = ["probe", MAC, "--url", "https://127.0.0.1:9/x", "--state", str(state)]
    assert main([*argv, "--cacert", str(cacert)]) == 2
    out, err = capsys.readouterr()
    assert f"argument --cacert: {cacert}" in err and "Traceback" not in err, err
    assert out == "" and not state.exists()


@pytest.mark.parametrize("option", ["--cert", "--cert-key"])
def test_a_client_certificate_file_that_is_missing_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    argv = ["probe", MAC, "--url", "https://127.0.0.1:9/x", "--cert", str(tmp_path / "c.pem")]
    if option == "--cert-key":
        argv[-1] = str(_tls_file(tmp_path, "PEM"))
    assert main([*argv, "--cert-key", str(tmp_path / "k.pem")]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and "no such file" in err, err


def test_a_client_key_that_does_not_match_its_certificate_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = _tls_file(tmp_path, "PEM")
    other = tmp_path / "other-key.pem"
    other.write_bytes(_pem_key(new_ca("another")[1]))
    argv = ["probe", MAC, "--url", "https://127.0.0.1:9/x", "--state", str(tmp_path / "d.json")]
    assert main([*argv, "--cert", str(cert), "--cert-key", str(other)]) == 2
    err = capsys.readouterr().err
    assert "cannot load TLS files" in err and "the key must match --cert" in err, err
    assert not (tmp_path / "d.json").exists()


@pytest.mark.parametrize("option", ["--host", "--metrics-host"])
def test_an_empty_listening_address_is_refused(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The socket layer reads "" as every address: `--host "$HOST"` with the variable
    unset opened the server to the network, while its help says loopback."""
    command = "serve" if option == "--host" else "watch"
    # (the parser alone: a server that started would listen on every address)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, option, ""])
    assert exited.value.code == 2
    assert "an empty address" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "closed", "says"),
    [
        (["decrypt", "-", "--key", "abc"], "<&-", "stdin is closed"),
        (["secrets", "set", "pin"], "<&-", "stdin is closed"),
        (["versions"], ">&-", ""),
    ],
)
def test_a_closed_stream_is_said_or_taken_as_nowhere_not_a_crash(
    example_repo: GitRepo, argv: list[str], closed: str, says: str
) -> None:
    """`<&-` and `>&-` leave Python a None stream: an internal error (exit 3), or exit 1
    with a trace, in every command."""
    cmd = shlex.join([sys.executable, "-m", "gitprov", "--repo", str(example_repo.path), *argv])
    got = subprocess.run(
        ["sh", "-c", f"exec {cmd} {closed}"],
        stdout=subprocess.PIPE if closed == "<&-" else None,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        cwd=example_repo.path.parent,
    )
    assert "Traceback" not in got.stderr and "internal error" not in got.stderr, got.stderr
    assert got.returncode == (2 if says else 0), got.stderr
    assert says in got.stderr
