"""`gitprov log` and `gitprov blame`: who changed what a device got, and where it is set."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pygit2
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from gitprov.audit import blame, history
from gitprov.cli import main
from gitprov.pipeline import Pipeline
from tests.fixtures import dag
from tests.fixtures.gitrepo import GitRepo

B = "inventory/devices/0021f2011b20.yaml"
OFFICE = "inventory/profiles/office.yaml"


def head(repo: GitRepo) -> pygit2.Commit:
    c = repo.repo.get(repo.repo.head.target)
    assert isinstance(c, pygit2.Commit)
    return c


def test_history_lists_the_commits_that_changed_the_device(example_repo: GitRepo) -> None:
    r = example_repo
    first = str(r.repo.head.target)
    r.commit(
        {
            "inventory/devices/0021f2a0c001.yaml": r.files[
                "inventory/devices/0021f2a0c001.yaml"
            ].replace(b'account: "3001"', b'account: "3005"')
        },
        "C",
    )
    second = r.commit({OFFICE: r.files[OFFICE].replace(b"sbc2", b"sbc7")}, "office proxy")
    third = r.commit({B: None}, "retire B")
    changes = history(Pipeline(r.repo), head(r), "0021f2011b20")
    assert [(c.commit, c.event, c.version, c.summary) for c in changes] == [
        (first, "added", 1001, "example inventory"),
        (second, "changed", 1002, "office proxy"),  # B's second content: n = 2
        (third, "removed", 0, "retire B"),
    ]
    assert changes[0].author == "Test Author"


def test_a_merge_that_brings_a_higher_count_names_the_branch_commit_as_versions_does(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    # The branch changes B and changes it back (two changes: 1003); main changes another
    # device; the merge holds B's content as main had it, numbered 1003. `log` named the
    # merge as the commit that set 1003, `versions` the branch's second commit.
    r = example_repo
    base, base_files = str(r.repo.head.target), dict(r.files)
    original, other = r.files[B], "inventory/devices/0021f2a0c001.yaml"
    renamed = original.replace(b"Meeting room", b"Board room")
    r.commit({B: renamed}, "b1", branch="b", parents=[base], base=base_files)
    back = r.commit({B: original}, "b2: back", branch="b")
    moved = base_files[other].replace(b'account: "3001"', b'account: "3005"')
    m1 = r.commit({other: moved}, "m1: another device", base=base_files)
    merge = r.commit({}, "merge b", parents=[m1, back])
    changes = history(Pipeline(r.repo), head(r), "0021f2011b20")
    last = changes[-1]
    assert (last.commit, last.version, last.event) == (merge, 1003, "renumbered")
    assert last.set_by == back and last.summary == "b2: back"
    assert main(["--repo", str(r.path), "versions", "0021f2011b20", "--format", "json"]) == 0
    assert f'"{back}"' in capsys.readouterr().out
    assert changes[0].commit == base


def test_a_merge_numbered_above_a_parent_with_other_content_is_named_by_versions(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/versions.md: a merge that keeps main's content of B while the branch changed
    # B (twice: n = 3) gets n = 3 + 1 from the branch, a number no parent had for that
    # content: `versions` names the merge, not main's commit whose content it kept.
    r = example_repo
    base, base_files = str(r.repo.head.target), dict(r.files)
    original, other = r.files[B], "inventory/devices/0021f2a0c001.yaml"
    r.commit(
        {B: original.replace(b"Meeting room", b"Board room")},
        "b1",
        branch="b",
        parents=[base],
        base=base_files,
    )
    b2 = r.commit({B: original.replace(b"Meeting room", b"Lobby")}, "b2", branch="b")
    moved = base_files[other].replace(b'account: "3001"', b'account: "3005"')
    m1 = r.commit({other: moved}, "m1: another device", base=base_files)
    merge = r.commit({B: original}, "merge b, keeping main's B", parents=[m1, b2])
    assert main(["--repo", str(r.path), "versions", "0021f2011b20", "--format", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["version"], listed["commit"]) == (1004, merge)


def test_blame_points_at_the_yaml_line_and_its_commit(example_repo: GitRepo) -> None:
    r = example_repo
    first = str(r.repo.head.target)
    second = r.commit({OFFICE: r.files[OFFICE].replace(b"sbc2", b"sbc7")}, "office proxy")
    lines = {b.key: b for b in blame(Pipeline(r.repo), head(r), "0021f2011b20")}
    backup = lines["DBID_WEB_SIP_OUTBOUND_BACKUP"]
    # profiles/office.yaml line 4: "  sip.outbound_backup: sbc7.example.net", value at col 24.
    assert (backup.value, backup.origin, backup.commit) == (
        "sbc7.example.net",
        "inventory/profiles/office.yaml:4:24",
        second,
    )
    server = lines["DBID_WEB_SIP_SERVER"]
    assert (server.origin, server.commit) == ("inventory/profiles/base.yaml:3:15", first)
    password = lines["DBID_SIP_PASSWORD"]
    assert password.value == "<redacted>\t\t\t"


def test_blame_says_where_the_version_comes_from(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file's first line is set by no YAML line: `blame MAC DBID_DBASE_VERSION`
    said the file had no such parameter, so an auditor could not trace it. It is the
    rule's number, at the commit that gave it (as `versions` names it). (Asked for by
    name: the whole blame stays the YAML lines', which need no version state.)"""
    r = example_repo
    r.commit({OFFICE: r.files[OFFICE].replace(b"sbc2", b"sbc7")}, "office proxy")
    third = r.commit({"README.md": b"unrelated\n"}, "no device changes")
    assert main(["--repo", str(r.path), "versions", "--format", "json"]) == 0
    listed = {d["mac"]: d for d in json.loads(capsys.readouterr().out)}["0021f2011b20"]
    assert listed["version"] == 1002 and listed["commit"] != third
    assert main(["--repo", str(r.path), "blame", "0021f2011b20", "DBID_DBASE_VERSION"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DBID_DBASE_VERSION=1002\n    from the version rule"), out
    assert f"({listed['commit'][:12]} Test Author)" in out, out
    whole = [b.key for b in blame(Pipeline(r.repo), head(r), "0021f2011b20")]
    assert "DBID_DBASE_VERSION" not in whole


def test_cli_log_and_blame(example_repo: GitRepo, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(example_repo.path)
    assert main(["--repo", repo, "log", "00:21:f2:01:1b:20"]) == 0
    out = capsys.readouterr().out
    assert "version 1001   added      Test Author: example inventory" in out
    assert main(["--repo", repo, "blame", "0021f2011b20", "sip.server"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DBID_WEB_SIP_SERVER=sip.example.net\n")
    assert "from inventory/profiles/base.yaml:3:15" in out
    assert main(["--repo", repo, "log", "0021f2ffffff"]) == 2  # an unknown MAC: usage
    assert "no device 0021f2ffffff" in capsys.readouterr().err
    # An empty parameter is none asked for well: not every parameter.
    assert main(["--repo", repo, "blame", "0021f2011b20", " "]) == 2
    assert "argument param: is empty" in capsys.readouterr().err


# -- the cache changes no output ------------------------------------------------------------
MACS = tuple(p.rsplit("/", 1)[-1].removesuffix(".yaml") for p in dag.DEVICES)

# One run of the CLI: (what, node index, device index, forget the cache first).
Step = tuple[str, int, int, bool]
steps_st = st.lists(
    st.tuples(
        st.sampled_from(("versions", "log", "blame")),
        st.integers(0, 63),
        st.integers(0, len(MACS) - 1),
        st.integers(0, 3).map(lambda i: i == 0),
    ),
    min_size=2,
    max_size=8,
)


def run_cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


def command(repo: Path, what: str, cid: str, mac: str) -> list[str]:
    args = ["--repo", str(repo), what]
    if what != "versions":
        args.append(mac)
    return [*args, "--rev", cid, "--format", "json"]


def without_cache(repo: Path, cache: Path, args: list[str]) -> tuple[int, str]:
    """The output with no cache at all: the cache is moved aside for the run."""
    aside = cache.with_name("gitprov-cache.aside")
    if cache.exists():
        cache.rename(aside)
    try:
        return run_cli(*args)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if aside.exists():
            aside.rename(cache)


@pytest.mark.slow(seconds=20)
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=dag.plans_st, steps=steps_st, earlier=st.integers(0, 63))
def test_outputs_are_the_same_with_and_without_the_cache(
    plan: dag.Plan, steps: list[Step], earlier: int
) -> None:
    # Random histories (merges of every kind, invalid commits, version_floor raised and
    # lowered, devices removed and added again): `versions`, `log` and `blame` print the
    # same whatever the cache holds: nothing, what earlier runs left (at other heads), or
    # only what a `versions` at an earlier commit left.
    with tempfile.TemporaryDirectory(prefix="gitprov-audit-cache-") as tmp:
        history = dag.build(Path(tmp) / "repo", plan)
        repo = history.repo.path
        cache = Path(history.pygit.path) / "gitprov-cache"
        nodes = [n.id for n in history.nodes]
        note(history.describe())
        runs = 0
        for what, node, device, forget in steps:
            cid, mac = nodes[node % len(nodes)], MACS[device]
            args = command(repo, what, cid, mac)
            truth = without_cache(repo, cache, args)
            assert truth[0] in (0, 1, 2), truth
            if forget:
                shutil.rmtree(cache, ignore_errors=True)
            got = run_cli(*args)
            assert got == truth, f"{what} {mac} at n{node % len(nodes)} (forgot: {forget})"
            runs += truth[0] == 0
            # ... and again, now that this very run filled the cache.
            assert run_cli(*args) == truth, f"{what} {mac} at n{node % len(nodes)}, again"
        # Only a cache left by `versions` at an earlier commit.
        shutil.rmtree(cache, ignore_errors=True)
        run_cli("--repo", str(repo), "versions", "--rev", nodes[earlier % len(nodes)])
        for what in ("versions", "log", "blame"):
            args = command(repo, what, nodes[-1], MACS[earlier % len(MACS)])
            assert run_cli(*args) == without_cache(repo, cache, args), f"{what} after an earlier"
        event(f"runs that printed something: {min(runs, 3)}+")


DEVICE = "inventory/devices/0021f2011b20.yaml"


def _device_renamed(repo: GitRepo) -> str:
    """A commit that changes DEVICE's settings (what `_raw_commit` then re-authors)."""
    return repo.commit({DEVICE: repo.files[DEVICE].replace(b"Meeting room", b"Board room")}, "x")


def _raw_commit(
    repo: GitRepo, like: str, headers: bytes, message: bytes, parent: str | None = None
) -> str:
    """A commit of `like`'s tree and parents (or `parent`), with author and committer
    lines and an optional encoding header as given: bytes a fetch takes in without a
    check. Main points at it."""
    made = repo.repo.get(like)
    assert isinstance(made, pygit2.Commit)
    parents = [parent] if parent is not None else [str(p) for p in made.parent_ids]
    lines = [b"tree " + str(made.tree_id).encode()]
    lines += [b"parent " + p.encode() for p in parents]
    raw = b"\n".join(lines) + b"\n" + headers + b"\n" + message
    oid = repo.repo.odb.write(pygit2.enums.ObjectType.COMMIT, raw)
    repo.repo.references["refs/heads/main"].set_target(oid)
    return str(oid)


@pytest.mark.parametrize(
    "headers",
    [
        b"author J\xf6rg <j@x> 1700000000 +0000\ncommitter C <c@x> 1700000000 +0000\n"
        b"encoding x-bogus\n",
        b"author J\xf6rg\xff <j@x> 1700000000 +0000\ncommitter C <c@x> 1700000000 +0000\n",
        b"author J\xf6rg <j@x> 1700000000 +0000\ncommitter C <c@x> 1700000000 +0000\n"
        b"encoding utf-8\n",
    ],
    ids=["an encoding python does not know", "no encoding, not utf-8", "utf-8, not utf-8"],
)
def test_a_commits_text_in_no_encoding_it_names_is_shown_with_replacements(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], headers: bytes
) -> None:
    changed = _device_renamed(example_repo)
    _raw_commit(example_repo, changed, headers, b"caf\xe9 \xff renamed\n")
    repo = str(example_repo.path)
    for argv in (["versions"], ["log", "0021f2011b20"], ["blame", "0021f2011b20"]):
        assert main(["--repo", repo, *argv]) == 0, argv
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
        assert "J\ufffdrg" in out or argv == ["versions"], (argv, out)
        assert "caf\ufffd \ufffd renamed" in out or argv[0] == "blame", (argv, out)


def test_a_commit_in_latin1_that_says_so_is_read_in_latin1(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = _device_renamed(example_repo)
    headers = (
        b"author J\xf6rg <j@x> 1700000000 +0000\ncommitter C <c@x> 1700000000 +0000\n"
        b"encoding latin1\n"
    )
    _raw_commit(example_repo, changed, headers, b"caf\xe9\n")
    assert main(["--repo", str(example_repo.path), "log", "0021f2011b20"]) == 0
    out = capsys.readouterr().out
    assert "J\u00f6rg" in out and "caf\u00e9" in out, out


def test_a_commits_escape_sequences_never_reach_the_terminal_as_such(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    """An author or a subject is text any committer wrote: printed raw, ESC would set the
    reader's window title or clear the screen, and CR overwrite what was printed. Text
    output shows each as an escape; JSON carries the text exactly (JSON escapes it)."""
    changed = _device_renamed(example_repo)
    headers = (
        b"author Eve\x1b]0;pwned\x07Mallory <e@x> 1700000000 +0000\n"
        b"committer C <c@x> 1700000000 +0000\n"
    )
    _raw_commit(example_repo, changed, headers, b"renamed\x1b[2J\x1b[H\rall good\n")
    repo = str(example_repo.path)
    for argv in (["versions"], ["log", "0021f2011b20"], ["blame", "0021f2011b20"]):
        assert main(["--repo", repo, *argv]) == 0, argv
        out = capsys.readouterr().out
        assert not {"\x1b", "\x07", "\r"} & set(out), (argv, out)
        if argv[0] != "blame":
            assert "renamed\\x1b[2J\\x1b[H" in out, (argv, out)
        if argv[0] != "versions":
            assert "Eve\\x1b]0;pwned\\x07Mallory" in out, (argv, out)
    assert main(["--repo", repo, "log", "0021f2011b20", "--format", "json"]) == 0
    assert '"author": "Eve\\u001b]0;pwned\\u0007Mallory"' in capsys.readouterr().out


def test_an_ancestor_git_cannot_parse_is_an_error_naming_the_repository(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signature without an e-mail: `git fsck` refuses it, a fetch takes it in."""
    first = str(example_repo.repo.revparse_single("main").id)
    changed = _device_renamed(example_repo)
    top = example_repo.commit({DEVICE: example_repo.files[DEVICE] + b"# after\n"}, "on top")
    broken = _raw_commit(example_repo, changed, b"author B\ncommitter B\n", b"broken\n")
    good = b"author A <a@x> 1700000000 +0000\ncommitter A <a@x> 1700000000 +0000\n"
    _raw_commit(example_repo, top, good, b"on top\n", parent=broken)
    for argv in (["versions"], ["validate", "--rev", "main"], ["plan", "--base", first]):
        code = main(["--repo", str(example_repo.path), *argv])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert "Traceback" not in err and "git fsck --full" in err, (argv, err)
