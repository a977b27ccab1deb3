"""The bad-input corpus (tests/corpus/, described in its README.md): every hostile or
careless inventory is refused with a located problem, in bounded time and memory, and
leaves the roots as they were.

Each case runs the real command line in a subprocess (`python -m gitprov`), because what
is bounded is the whole process a CI job or a publisher runs: the interpreter, pygit2 and
every library gitprov loads, not only the function under test.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
import pytest
from ruamel.yaml import YAML

from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.speed import bound, yaml_floor_seconds

CORPUS = Path(__file__).parent / "corpus"
BASE = CORPUS / "_base"
CATEGORIES = ("yaml", "types", "names", "values", "paths", "git", "secrets", "publish")
COMMANDS = ("validate", "publish", "plan", "show", "build", "versions")

# Bounds of one case's process. Address space, not RSS, is what the kernel can enforce
# (RLIMIT_AS): a normal validate or publish maps well under 200 MiB of it, so 512 MiB
# leaves room for a slow path and none for an expansion bomb. Time is the process's own
# CPU time (user + system, from wait4's rusage) because the machine has two cores and
# other suites run on it: wall time measures the neighbours. Wall time gets a looser
# bound that only a hang (a blocking read, a sleep) crosses.
MEMORY_LIMIT = 512 * 1024 * 1024
CPU_SECONDS = 5.0
# On a slower machine the bound is this many times the YAML floor (tests/fixtures/speed.py)
# instead: the slowest case, a million values, costs gitprov about 3.5 floors when run
# alone, and was seen at 4.1 with the suite's other worker on the other core (the floor is
# measured once per worker, the case later, under whatever else runs then). An expansion
# bomb or a quadratic path costs many times that.
CPU_FLOORS = 5.0
WALL_SECONDS = 15.0

# `path:line:col: level[CODE]: message`, as `gitprov validate` prints every problem.
# The path may hold anything a file name can, colons too (shown escaped when it holds a
# control character, so never a line break).
LOCATED = re.compile(
    r"^(?P<where>\S.*?:\d+:\d+): (?P<level>error|warning)\[(?P<code>[A-Z0-9-]+)\]: "
)
# Any line that reports a coded problem, located or not.
CODED = re.compile(r"\b(error|warning)\[[A-Za-z0-9-]+\]")
CODE = re.compile(r"GP\d{3}")
WHERE = re.compile(r".+:\d+:\d+")


@dataclass(frozen=True)
class Expect:
    """What the case must print (tests/corpus/README.md): a GP code at `where` (a
    file:line:col, or the name of a file the commit lacks), or a fragment of a refusal's
    or usage error's message on one line with what it names (`where`: a file, a secret,
    or `commit` for the case's commit id)."""

    exit: int
    code: str
    where: str | None


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    about: str
    category: str
    command: str
    args: tuple[str, ...] | None
    parent: str | None  # "base", or a directory of the case overlaid on the base
    parent_args: tuple[str, ...] | None
    setup: Mapping[str, Any]
    secrets: tuple[str, ...]  # plaintexts of this case that no output may hold
    expect: Expect


@dataclass
class Stats:
    """What the session measured, reported at its end."""

    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)


def _yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def load_case(path: Path) -> Case:
    raw = _yaml(path / "case.yaml")
    expect = raw["expect"]
    args = raw.get("args")
    parent_args = raw.get("parent_args")
    return Case(
        name=path.name,
        path=path,
        about=raw["about"],
        category=raw["category"],
        command=raw.get("command", "validate"),
        args=None if args is None else tuple(str(a) for a in args),
        parent=raw.get("parent"),
        parent_args=None if parent_args is None else tuple(str(a) for a in parent_args),
        setup=raw.get("setup") or {},
        secrets=tuple(raw.get("secrets", ())),
        expect=Expect(int(expect["exit"]), str(expect["code"]), expect.get("where")),
    )


def case_dirs() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith("_"))


BASE_INFO = _yaml(BASE / "base.yaml")


# -- building a case's repository --------------------------------------------------------
def tree_files(top: Path) -> dict[str, bytes]:
    """The files under `top` as repository path -> bytes (raw: CRLF, BOM and NUL stay)."""
    if not top.is_dir():
        return {}
    return {
        p.relative_to(top).as_posix(): p.read_bytes()
        for p in sorted(top.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def overlay(base: Mapping[str, bytes], top: Path) -> dict[str, bytes]:
    """`base` with the files under `top` on it; `X.delete` removes X. A case holds only
    what it changes, so what it is about stays readable."""
    files = dict(base)
    for path, data in tree_files(top).items():
        if path.endswith(".delete"):
            gone = path.removesuffix(".delete")
            assert gone in files, f"{top}: {gone} is not in the base"
            del files[gone]
        else:
            files[path] = data
    return files


def commit_tree(
    repo: GitRepo,
    files: Mapping[str, bytes],
    links: Mapping[str, str],
    message: str,
    *,
    orphan: bool = False,
) -> str:
    """Commit `files` and symbolic links (`links`: path -> target, git mode 120000) on
    main, as a child of main's tip unless `orphan` (a history rewritten by a force-push).
    GitRepo.commit writes only regular blobs, hence this."""
    git = repo.repo
    index = pygit2.Index()
    for path, data in sorted(files.items()):
        index.add(pygit2.IndexEntry(path, git.create_blob(data), pygit2.enums.FileMode.BLOB))
    for path, target in sorted(links.items()):
        blob = git.create_blob(target.encode())
        index.add(pygit2.IndexEntry(path, blob, pygit2.enums.FileMode.LINK))
    tree = index.write_tree(git)
    ref = git.references.get("refs/heads/main")
    parents = [ref.target] if ref is not None and not orphan else []
    sig = repo._sig()
    oid = git.create_commit(None, sig, sig, message, tree, parents)
    git.references.create("refs/heads/main", oid, force=True)
    repo.files = dict(files)
    return str(oid)


def write_worktree(top: Path, files: Mapping[str, bytes], links: Mapping[str, str]) -> None:
    for path, data in files.items():
        target = top / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for path, dest in links.items():
        link = top / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(dest)


def loose_object(repo: pygit2.Repository, oid: str) -> Path:
    return Path(repo.path) / "objects" / oid[:2] / oid[2:]


@dataclass(frozen=True)
class Built:
    top: Path  # the repository the command runs in
    places: dict[str, str]  # {http}, {tftp}, ... for the arguments
    files: frozenset[str]  # the paths of the case's commit
    head: str  # the case's commit ("" in a repository without one)


def pad(data: bytes, size: int) -> bytes:
    """`data` grown to `size` bytes with YAML comment lines: a huge file that is valid
    YAML, so only its size can be refused. Built here, not stored in the checkout."""
    line = b"# " + b"x" * 77 + b"\n"
    missing = size - len(data)
    body = line * (missing // len(line))
    rest = missing - len(body)
    tail = (b"#" + b"x" * (rest - 2) + b"\n") if rest >= 2 else b"\n" * rest
    return data + body + tail


def build(case: Case, tmp: Path) -> Built:
    """The case's repository under `tmp`, its parent published first when it has one.

    `setup` keys (each one a thing only code can make): links (path -> target: symbolic
    links in the commit, and in the work tree with `worktree`), rename (path -> a name
    with bytes a checkout should not hold, such as a newline), pad (path, bytes), repeat
    (path, head, unit, count, tail), fifos
    (work-tree paths), firmware (name -> text, {link: target} or {fifo: true}), unborn,
    worktree, orphan, missing-object (a revspec whose loose object is deleted),
    shallow, private_key ("none" or a key)."""
    setup = case.setup
    base = tree_files(BASE / "tree")
    files = overlay(base, case.path / "tree")
    for old, new in (setup.get("rename") or {}).items():
        files[str(new)] = files.pop(str(old))
    if "pad" in setup:
        path = str(setup["pad"]["path"])
        files[path] = pad(files[path], int(setup["pad"]["bytes"]))
    if "repeat" in setup:
        # A large file made of one small unit: head + unit * count + tail.
        r = setup["repeat"]
        text = str(r["head"]) + str(r["unit"]) * int(r["count"]) + str(r["tail"])
        files[str(r["path"])] = text.encode()
    links = {str(k): str(v) for k, v in (setup.get("links") or {}).items()}
    places = {
        "tmp": str(tmp),
        "http": str(tmp / "http"),
        "tftp": str(tmp / "tftp"),
        "state": str(tmp / "state"),
        "firmware": str(tmp / "firmware"),
    }
    repo = GitRepo(tmp / "repo")
    places["repo"] = str(repo.path)
    paths = frozenset(files) | frozenset(links)
    for name, spec in (setup.get("firmware") or {}).items():
        fw = tmp / "firmware"
        fw.mkdir(exist_ok=True)
        if isinstance(spec, dict) and "link" in spec:
            (fw / name).symlink_to(str(spec["link"]))
        elif isinstance(spec, dict) and spec.get("fifo"):
            os.mkfifo(fw / name)
        else:
            (fw / name).write_bytes(str(spec).encode())
    if setup.get("unborn"):
        # No commit at all: only the work tree holds the files.
        write_worktree(repo.path, files, links)
        return Built(repo.path, places, frozenset(), "")
    if case.parent is not None:
        parent_files = base if case.parent == "base" else overlay(base, case.path / case.parent)
        commit_tree(repo, parent_files, {}, "parent")
        if case.command == "publish":
            argv = case.parent_args if case.parent_args is not None else default_args(case)
            done = run_gitprov(repo.path, "publish", argv, places, limits=False)
            assert done.returncode == 0, f"the parent did not publish:\n{done.stderr}"
    head = commit_tree(repo, files, links, case.name, orphan=bool(setup.get("orphan")))
    if setup.get("worktree"):
        write_worktree(repo.path, files, links)
        for fifo in setup.get("fifos") or ():
            os.mkfifo(repo.path / str(fifo))
    if "missing-object" in setup:
        # A damaged or partial repository: the object is named but not there.
        obj = repo.repo.revparse_single(str(setup["missing-object"]))
        loose_object(repo.repo, str(obj.id)).unlink()
    if setup.get("shallow"):
        clone = tmp / "clone"
        subprocess.run(
            ["git", "clone", "-q", "--depth", "1", f"file://{repo.path}", str(clone)],
            check=True,
            capture_output=True,
            env=git_env(tmp),
        )
        places["repo"] = str(clone)
        return Built(clone, places, paths, head)
    return Built(repo.path, places, paths, head)


def git_env(tmp: Path) -> dict[str, str]:
    """git without the user's or the system's configuration."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }


# -- running gitprov -------------------------------------------------------------------
@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str
    cpu: float  # user + system seconds of the process (and of any child it waited for)
    wall: float
    max_rss: int  # bytes


# Where a publish case writes unless its args say otherwise: the operator's choice.
OPERATOR_ROOTS = ("--http-root", "{http}", "--tftp-root", "{tftp}", "--state-dir", "{state}")


def default_args(case: Case) -> tuple[str, ...]:
    if case.args is not None:
        return case.args
    if case.command == "publish":
        return OPERATOR_ROOTS
    if case.command == "validate":
        return ("--rev", "HEAD")
    return ()


def fill(arg: str, places: Mapping[str, str]) -> str:
    """`{http}`, `{tmp}`, ... replaced by the case's directories; any other brace stays
    (`HEAD^{tree}` is a revision)."""
    for name, value in places.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


def _limit_memory() -> None:
    """In the child, before exec: its address space and CPU time are capped, so a bomb
    ends the child rather than the machine. The CPU cap is a backstop above CPU_SECONDS
    (the assertion is on the measured time); the kernel's SIGXCPU ends a runaway loop."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    cpu = int(CPU_SECONDS * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    os.setsid()  # its own process group, so a hang's children end with it


def run_gitprov(
    top: Path,
    command: str,
    args: tuple[str, ...],
    places: Mapping[str, str],
    *,
    env: Mapping[str, str] | None = None,
    limits: bool = True,
) -> Done:
    argv = [sys.executable, "-m", "gitprov", "--repo", str(top), command]
    argv += [fill(a, places) for a in args]
    out_path = Path(places["tmp"]) / f".out-{time.monotonic_ns()}"
    err_path = out_path.with_suffix(".err")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=str(top),
            env=dict(env if env is not None else case_env(Path(places["tmp"]), None)),
            preexec_fn=_limit_memory if limits else os.setsid,
        )
        status, usage = _wait(proc, start)
        wall = time.monotonic() - start
    stdout = out_path.read_bytes().decode("utf-8", "replace")
    stderr = err_path.read_bytes().decode("utf-8", "replace")
    out_path.unlink()
    err_path.unlink()
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return Done(
        code,
        stdout,
        stderr,
        usage.ru_utime + usage.ru_stime,
        wall,
        usage.ru_maxrss * 1024,  # Linux reports kilobytes
    )


def _wait(proc: subprocess.Popen[bytes], start: float) -> tuple[int, resource.struct_rusage]:
    """Reap the child with its own rusage (wait4), ending it at WALL_SECONDS."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = 0  # reaped here; keeps Popen from waiting again
            return status, usage
        if time.monotonic() - start > WALL_SECONDS:
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = 0
            return status, usage
        time.sleep(0.01)


def case_env(tmp: Path, case: Case | None) -> dict[str, str]:
    """A clean environment: no publisher config or allow-list of the developer's, the
    corpus's private key unless the case says otherwise."""
    env = git_env(tmp)
    env["NO_COLOR"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    key = case.setup.get("private_key", "corpus") if case is not None else "corpus"
    if key == "corpus":
        env["GITPROV_PRIVATE_KEY"] = str(BASE_INFO["private_key"])
    elif key != "none":
        env["GITPROV_PRIVATE_KEY"] = str(key)
    return env


LOCK = "publish.lock"


def snapshot(tmp: Path) -> dict[str, str]:
    """Every file, link and directory under `tmp` but the repository's git directory
    (where gitprov may cache), as path -> sha256, link target or "dir". The publisher's
    lock file is left out, and so is a state dir holding nothing else: the lock is taken
    (and its holder written into it) before a commit can be refused, by design."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(tmp):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            p = here / name
            rel = p.relative_to(tmp).as_posix()
            if name == LOCK:
                continue
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
        if here != tmp and {*os.listdir(here)} - {LOCK}:
            out[here.relative_to(tmp).as_posix() + "/"] = "dir"
    return out


def about_missing(line: str, built: Built) -> bool:
    """A problem about a file the commit does not hold (GP100: no gitprov.yaml) has no
    line to point at: its name is its place."""
    name = line.split(": ", 1)[0]
    return bool(name) and ":" not in name and name not in built.files


# -- the test ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cpu_budget(tmp_path_factory: pytest.TempPathFactory) -> float:
    """CPU seconds a case may take on this machine (tests/fixtures/speed.py)."""
    floor = yaml_floor_seconds(tmp_path_factory.mktemp("speed"))
    return bound(CPU_SECONDS, floor, CPU_FLOORS)


@pytest.fixture(scope="session")
def corpus_stats(request: pytest.FixtureRequest) -> Iterator[Stats]:
    """The slowest case and the peak memory, written at the end of the session through
    the terminal reporter (not captured output, so without -s too)."""
    stats = Stats()
    yield stats
    if not stats.cpu:
        return
    slowest = max(stats.cpu, key=lambda k: stats.cpu[k])
    biggest = max(stats.rss, key=lambda k: stats.rss[k])
    line = (
        f"corpus: {len(stats.cpu)} case(s); slowest {slowest} {stats.cpu[slowest]:.2f} s CPU; "
        f"peak RSS {biggest} {stats.rss[biggest] / 2**20:.0f} MiB "
        f"(limits: {CPU_SECONDS:.0f} s CPU, {MEMORY_LIMIT // 2**20} MiB address space)"
    )
    # Session fixtures end in the last test's teardown, while output is captured: the
    # capture manager steps aside for this one line, as `capsys.disabled()` does.
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)


CASES = case_dirs()


@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_case(
    case_dir: Path,
    tmp_path: Path,
    corpus_stats: Stats,
    cpu_budget: float,
    record_property: Callable[[str, object], None],
) -> None:
    case = load_case(case_dir)
    built = build(case, tmp_path)
    before = snapshot(tmp_path)
    args = default_args(case)
    done = run_gitprov(built.top, case.command, args, built.places, env=case_env(tmp_path, case))
    corpus_stats.cpu[case.name] = done.cpu
    corpus_stats.rss[case.name] = done.max_rss
    record_property("cpu_seconds", round(done.cpu, 3))
    record_property("max_rss_mib", round(done.max_rss / 2**20, 1))
    output = done.stdout + done.stderr
    shown = f"exit {done.returncode}\n--- stdout\n{done.stdout}--- stderr\n{done.stderr}"

    assert done.returncode >= 0, f"killed by signal {-done.returncode} (a bomb or a hang)\n{shown}"
    assert done.returncode != 3, f"internal error (a bug)\n{shown}"
    assert "Traceback" not in output, shown
    assert done.cpu <= cpu_budget, f"{done.cpu:.2f} s CPU (budget {cpu_budget:.2f} s)\n{shown}"
    assert done.wall <= WALL_SECONDS, f"{done.wall:.2f} s wall\n{shown}"
    assert done.max_rss <= MEMORY_LIMIT, f"{done.max_rss / 2**20:.0f} MiB\n{shown}"
    assert done.returncode == case.expect.exit, shown

    lines = output.splitlines()
    expect = case.expect
    if CODE.fullmatch(expect.code):
        assert expect.where is not None
        want = f"{expect.where}: error[{expect.code}]: "
        assert any(line.startswith(want) for line in lines), f"no {want!r}\n{shown}"
        if not WHERE.fullmatch(expect.where):
            # Only a file that is not there has no line to point at.
            assert expect.where not in built.files, f"{expect.where} is in the commit"
    else:
        # A refusal or a usage error: one message naming the thing (the commit, a file,
        # a revision) rather than a problem at a line.
        named = built.head[:12] if expect.where == "commit" else expect.where or ""
        assert any(expect.code in line and named in line for line in done.stderr.splitlines()), (
            f"no line with {expect.code!r} and {named!r} on stderr\n{shown}"
        )
    unlocated = [
        line
        for line in lines
        if CODED.search(line) and not LOCATED.match(line) and not about_missing(line, built)
    ]
    assert not unlocated, f"problems without a place: {unlocated}\n{shown}"

    for secret in (*BASE_INFO["plaintexts"], *case.secrets):
        assert secret not in output, f"a secret value is in the output\n{shown}"
    after = snapshot(tmp_path)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"


def test_the_corpus_is_large_and_every_case_well_formed() -> None:
    """At least 80 cases, each a different input, each with a category and a place: a GP
    code at a file:line:col (or a missing file), or a message and what it names."""
    assert len(CASES) >= 80, len(CASES)
    inputs: dict[bytes, str] = {}
    for path in CASES:
        case = load_case(path)
        assert case.category in CATEGORIES, (case.name, case.category)
        assert case.command in COMMANDS, (case.name, case.command)
        assert case.about and "\n" not in case.about.strip(), case.name
        assert case.expect.exit in (1, 2), case.name
        assert case.expect.code, case.name
        if case.expect.exit == 1:
            assert case.expect.where, f"{case.name}: an exit-1 case says where"
        # Two cases with the same files, setup and command would test the same thing.
        key = repr(
            (
                sorted(tree_files(path / "tree").items()),
                sorted(tree_files(path / "parent").items()),
                case.command,
                case.args,
                dict(case.setup),
                case.parent,
            )
        ).encode()
        digest = hashlib.sha256(key).digest()
        assert digest not in inputs, f"{case.name} repeats {inputs.get(digest)}"
        inputs[digest] = case.name


def test_the_base_is_valid_and_publishes(tmp_path: Path) -> None:
    """Every case is the base plus one mistake, so the base itself must be clean: a
    validate with no problem at all, and a publish that writes every device."""
    repo = GitRepo(tmp_path / "repo")
    commit_tree(repo, tree_files(BASE / "tree"), {}, "base")
    places = {
        "tmp": str(tmp_path),
        "http": str(tmp_path / "http"),
        "tftp": str(tmp_path / "tftp"),
        "state": str(tmp_path / "state"),
    }
    done = run_gitprov(repo.path, "validate", ("--rev", "HEAD"), places)
    assert done.returncode == 0 and "no problems" in done.stdout, done.stderr
    assert not CODED.search(done.stdout + done.stderr)
    done = run_gitprov(repo.path, "publish", OPERATOR_ROOTS, places)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "http").iterdir())) == 2
    for secret in BASE_INFO["plaintexts"]:
        assert secret not in done.stdout + done.stderr
