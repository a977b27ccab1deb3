"""Opening repositories as servers meet them: a pre-receive hook's quarantined push, and
a repository that belongs to another user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from gitprov.cli import main
from gitprov.errors import UsageError
from gitprov.source import git_time, open_repo, resolve_commit
from tests.fixtures.gitrepo import GitRepo, example_files
from tests.fixtures.roots import root_args
from tests.init_test import IDENTITY

# The simplest hook a team writes: no scratch repository, no environment games.
PRE_RECEIVE = """\
#!/bin/sh
while read old new ref; do
  "{python}" -m gitprov --repo "$GIT_DIR" validate --rev "$new" || exit 1
done
"""


def git(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["git", *argv], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=120
    )


def test_a_pre_receive_hook_validates_the_pushed_commit_in_quarantine(tmp_path: Path) -> None:
    bare, work = tmp_path / "inventory.git", tmp_path / "work"
    assert git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare)).returncode == 0
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE.format(python=sys.executable))
    hook.chmod(0o755)
    assert git(tmp_path, "init", "-q", "-b", "main", str(work)).returncode == 0
    for rel, data in example_files().items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "fleet")
    git(work, "remote", "add", "origin", str(bare))

    pushed = git(work, "push", "-q", "origin", "main")
    assert pushed.returncode == 0, pushed.stderr
    good = git(work, "rev-parse", "HEAD").stdout.strip()

    device = work / "inventory" / "devices" / "0021f2011b19.yaml"
    device.write_text(device.read_text().replace("model: IP542N", "model: NOPE"))
    git(work, "commit", "-qam", "a model nobody has")
    refused = git(work, "push", "-q", "origin", "main")
    assert refused.returncode != 0
    # The pusher sees the located problem, and main did not move.
    assert "remote: inventory/devices/0021f2011b19.yaml:" in refused.stderr, refused.stderr
    assert "error[GP" in refused.stderr
    assert git(bare, "rev-parse", "main").stdout.strip() == good


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a repository to another user")
def test_a_repository_of_another_user_is_a_usage_error_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "theirs"
    assert git(tmp_path, "init", "-q", "-b", "main", str(repo)).returncode == 0
    shutil.chown(repo, 65534, 65534)
    # No safe.directory from the host's own git configuration.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    assert main(["--repo", str(repo), "validate"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another user" in err and "safe.directory" in err


@pytest.mark.parametrize(
    "rev", ["main^{tree}", "main:inventory", "main:inventory/gitprov.yaml", "tree-tag", "0" * 40]
)
def test_a_revision_that_is_not_a_commit_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rev: str
) -> None:
    repo = GitRepo(tmp_path)
    repo.commit(example_files())
    tree = repo.repo.revparse_single("main^{tree}").id
    sig = pygit2.Signature("T", "t@gitprov.invalid", 1_700_000_000, 0)
    repo.repo.create_tag("tree-tag", tree, pygit2.enums.ObjectType.TREE, sig, "a tree")
    for command in ("validate", "versions", "plan"):
        assert main(["--repo", str(tmp_path), command, "--rev", rev]) == 2, command
        err = capsys.readouterr().err
        assert repr(rev) in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "lost", ["main:inventory/gitprov.yaml", "main:inventory/models", "main^{tree}"]
)
def test_a_missing_object_is_an_environment_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lost: str
) -> None:
    repo = GitRepo(tmp_path)
    repo.commit(example_files())
    oid = str(repo.repo.revparse_single(lost).id)
    (tmp_path / ".git" / "objects" / oid[:2] / oid[2:]).unlink()
    for command in ("validate", "versions", "show 0021f2011b19", "log 0021f2011b19"):
        assert main(["--repo", str(tmp_path), *command.split()]) == 2, command
        err = capsys.readouterr().err
        assert oid in err and "git fsck" in err and "Traceback" not in err, err


@pytest.mark.parametrize("lost", ["main", "main~1"])
def test_a_missing_commit_of_a_full_clone_is_damage_not_a_typo_nor_shallow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lost: str
) -> None:
    """The head commit gone gave `unknown revision 'HEAD'` (pass a branch, tag or commit
    id); a parent gone gave `the history is incomplete` and `git fetch --unshallow`,
    which a full clone cannot do. Both are a damaged repository: git fsck says so."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), "first")
    repo.commit({"inventory/devices/0021f2011b19.yaml": b"mac: 0021f2011b19\nmodel: IP542N\n"})
    oid = str(repo.repo.revparse_single(lost).id)
    (tmp_path / ".git" / "objects" / oid[:2] / oid[2:]).unlink()
    for command in ("validate", "versions"):
        assert main(["--repo", str(tmp_path), *command.split()]) == 2, command
        err = capsys.readouterr().err
        assert f"cannot read object {oid}" in err and "git fsck" in err, err
        assert "unknown revision" not in err and "--unshallow" not in err, err


def test_an_object_is_read_as_git_reads_it_without_hashing_it_again(tmp_path: Path) -> None:
    # Reading a commit's trees is most of what a publish by change costs a flat fleet;
    # git checks an object's name when it comes in (and in `git fsck`), not on each read.
    # A loose object whose bytes were swapped for another's reads as `git cat-file`
    # reads it; libgit2's default would refuse it on every read.
    repo = GitRepo(tmp_path)
    repo.commit(example_files())
    first = str(repo.repo.create_blob(b"first\n"))
    other = str(repo.repo.create_blob(b"other\n"))
    objects = tmp_path / ".git" / "objects"
    path = objects / first[:2] / first[2:]
    path.chmod(0o644)
    path.write_bytes((objects / other[:2] / other[2:]).read_bytes())
    assert git(tmp_path, "cat-file", "blob", first).stdout == "other\n"
    opened = open_repo(tmp_path)
    blob = opened[first]
    assert isinstance(blob, pygit2.Blob) and blob.data == b"other\n"


@pytest.mark.parametrize("folder", ["inventory/devices", "inventory"])
def test_a_tree_whose_object_is_not_a_tree_is_damage_not_an_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    """A tree's object file holding another object (copied over it, a disk's stale
    block): the directory was skipped as if empty, and validate passed, build built
    nothing and publish served no device, all with exit 0."""
    repo = GitRepo(tmp_path / "r")
    repo.commit(example_files())
    head = repo.repo.revparse_single("main")
    tree, blob = (str(head.peel(pygit2.Tree)[p].id) for p in (folder, "inventory/gitprov.yaml"))
    objects = repo.path / ".git" / "objects"
    path = objects / tree[:2] / tree[2:]
    path.chmod(0o644)
    path.write_bytes((objects / blob[:2] / blob[2:]).read_bytes())
    for command in ("validate", "versions", f"build --out {tmp_path / 'out'}"):
        assert main(["--repo", str(repo.path), *command.split()]) == 2, command
        err = capsys.readouterr().err
        assert f"cannot read object {tree} (the tree {folder}): a blob, not a tree" in err, err
        assert "git fsck" in err, err


def test_validate_worktree_reads_files_as_git_would_commit_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link is its target text (git commits the link): one to /dev/zero is not read
    without end. A fifo, which git cannot commit, is a usage error, not a read that
    blocks forever."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), worktree=True)
    devices = tmp_path / "inventory" / "devices"
    (devices / "0021f2000003.yaml").symlink_to("/dev/zero")
    assert main(["--repo", str(tmp_path), "validate", "--worktree"]) == 1
    out = capsys.readouterr().out
    want = "inventory/devices/0021f2000003.yaml:1:1: error[GP010]: the file is a symbolic link"
    assert want in out, out
    (devices / "0021f2000003.yaml").unlink()
    os.mkfifo(devices / "0021f2000004.yaml")
    assert main(["--repo", str(tmp_path), "validate", "--worktree"]) == 2
    err = capsys.readouterr().err
    assert "inventory/devices/0021f2000004.yaml is a fifo" in err, err


def _validated_twice(top: Path, capsys: pytest.CaptureFixture[str], code: int) -> Iterator[str]:
    """The output of `validate --rev HEAD` (which must exit `code`): read by change from
    the kept snapshot of a validated parent, then whole, the cache deleted."""
    for cache in ("kept", "dropped"):
        if cache == "dropped":
            shutil.rmtree(top / ".git" / "gitprov-cache", ignore_errors=True)
        assert main(["--repo", str(top), "validate", "--rev", "HEAD"]) == code, cache
        yield capsys.readouterr().out


def test_a_committed_link_is_named_as_one_in_a_full_read_and_in_a_child_read_by_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Git stores a link as its target's text, never followed: the error (GP010, the
    code for a file that is no mapping) says it is a link, not that the target's path is
    no YAML mapping, whether the commit is read whole or from a validated parent's tree
    diff, flat or in a site directory."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), worktree=True)
    assert main(["--repo", str(tmp_path), "validate", "--rev", "HEAD"]) == 0
    capsys.readouterr()
    devices = tmp_path / "inventory" / "devices"
    (devices / "site").mkdir()
    (devices / "site" / "0021f2000003.yaml").symlink_to("/etc/passwd")
    (devices / "0021f2000004.yaml").symlink_to("../profiles/base.yaml")
    assert git(tmp_path, "add", "-A").returncode == 0
    assert git(tmp_path, "commit", "-q", "-m", "links").returncode == 0
    for out in _validated_twice(tmp_path, capsys, 1):
        for path in ("devices/site/0021f2000003.yaml", "devices/0021f2000004.yaml"):
            assert f"inventory/{path}:1:1: error[GP010]: the file is a symbolic link" in out, out
        assert "must be a" not in out and "root:" not in out, out


def test_a_submodule_in_the_inventory_is_named_as_one_and_never_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gitlink records a commit of another repository, which is not here: named as
    one, not silence and not a damaged repository, in a full read and from a validated
    parent's tree diff; its removal reads as one. Beside the inventory's files it is a
    warning that its files are not read (GP005); under devices/ an error (GP010): its
    devices would be taken as removed, and their files deleted by the next publish."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), worktree=True)
    assert main(["--repo", str(tmp_path), "validate", "--rev", "HEAD"]) == 0
    capsys.readouterr()
    other = "1234567890abcdef1234567890abcdef12345678"  # (no such object here)
    assert git(tmp_path, "add", "-A").returncode == 0
    devices = ("devices/site-b", "devices/0021f2000009.yaml")
    for path in ("notes", *devices):
        where = f"inventory/{path}"
        added = git(tmp_path, "update-index", "--add", "--cacheinfo", f"160000,{other},{where}")
        assert added.returncode == 0, added.stderr
    assert git(tmp_path, "commit", "-q", "-m", "submodules").returncode == 0
    for out in _validated_twice(tmp_path, capsys, 1):
        want = "inventory/notes:1:1: warning[GP005]: a git submodule: gitprov reads only"
        assert want in out, out
        for path in devices:
            want = f"inventory/{path}:1:1: error[GP010]: a git submodule under devices/"
            assert want in out, out
        assert "cannot read object" not in out, out
    for path in devices:
        assert git(tmp_path, "rm", "-q", "--cached", f"inventory/{path}").returncode == 0
    assert git(tmp_path, "commit", "-q", "-m", "the devices' submodules gone").returncode == 0
    assert main(["--repo", str(tmp_path), "validate", "--rev", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "inventory/devices/" not in out and "inventory/notes:1:1: warning[GP005]" in out


def test_a_submodule_under_devices_publishes_nothing(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A published device's file turned submodule: refused, the device's file served on
    (it was only a warning, and the publish removed the device)."""
    top = Path(example_repo.path)
    roots = root_args(tmp_path)
    assert main(["--repo", str(top), "publish", *roots]) == 0
    served = sorted(p.name for p in (tmp_path / "http").iterdir())
    other = "1234567890abcdef1234567890abcdef12345678"
    path = "inventory/devices/0021f2011b20.yaml"
    head = example_repo.repo.head.peel(pygit2.Commit)
    index = pygit2.Index()
    index.read_tree(head.tree)
    index.remove(path)
    index.add(pygit2.IndexEntry(path, pygit2.Oid(hex=other), pygit2.enums.FileMode.COMMIT))
    tree = index.write_tree(example_repo.repo)
    who = pygit2.Signature("T", "t@example.com", 1_700_000_100, 0)
    example_repo.repo.create_commit("refs/heads/main", who, who, "a submodule", tree, [head.id])
    capsys.readouterr()
    assert main(["--repo", str(top), "publish", *roots]) == 1
    said = capsys.readouterr()
    assert "error[GP010]: a git submodule under devices/" in said.out + said.err, said
    assert sorted(p.name for p in (tmp_path / "http").iterdir()) == served


@pytest.mark.parametrize("what", ["a symbolic link", "a file", "a git submodule"])
@pytest.mark.parametrize("where", ["devices", "profiles"])
def test_anything_but_a_directory_where_one_belongs_is_an_error_not_an_empty_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, where: str
) -> None:
    """`devices` committed as a link (or a file, or a submodule) was "not part of the
    inventory", a warning: the commit validated with every device gone."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), worktree=True)
    inventory = tmp_path / "inventory"
    shutil.move(inventory / where, tmp_path / "moved")
    if what == "a symbolic link":
        (inventory / where).symlink_to(tmp_path / "moved")
    elif what == "a file":
        (inventory / where).write_text("devices: here\n")
    assert git(tmp_path, "add", "-A").returncode == 0
    if what == "a git submodule":
        other = "1234567890abcdef1234567890abcdef12345678"
        info = f"160000,{other},inventory/{where}"
        assert git(tmp_path, "update-index", "--add", "--cacheinfo", info).returncode == 0
    assert git(tmp_path, "commit", "-q", "-m", f"{where} as {what}").returncode == 0
    want = f"inventory/{where}:1:1: error[GP010]: {where}/ must be a directory"
    modes = [["--rev", "HEAD"]] + ([["--worktree"]] if what != "a git submodule" else [])
    for mode in modes:
        assert main(["--repo", str(tmp_path), "validate", *mode]) == 1, mode
        out = capsys.readouterr().out
        assert want in out and f"this is {what}" in out, (mode, out)


@pytest.mark.parametrize("what", ["a symbolic link", "a file", "a git submodule"])
def test_anything_but_a_directory_in_the_inventorys_place_is_said_in_both_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    """`inventory` committed as a link read as "nothing is in inventory/" in a commit and
    passed in the work tree, which follows it: the pre-commit hook passed, CI failed,
    and neither said why. Put back as a directory, the child of the commit with the
    link validates from the tree diff, nothing of the link kept."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), worktree=True)
    assert main(["--repo", str(tmp_path), "validate", "--rev", "HEAD"]) == 0
    inventory = tmp_path / "inventory"
    shutil.move(inventory, tmp_path / "moved")
    if what == "a symbolic link":
        inventory.symlink_to("moved")
    elif what == "a file":
        inventory.write_text("the inventory moved\n")
    assert git(tmp_path, "add", "-A").returncode == 0
    if what == "a git submodule":
        info = "160000,1234567890abcdef1234567890abcdef12345678,inventory"
        assert git(tmp_path, "update-index", "--add", "--cacheinfo", info).returncode == 0
    assert git(tmp_path, "commit", "-q", "-m", f"inventory as {what}").returncode == 0
    capsys.readouterr()
    want = "inventory:1:1: error[GP010]: inventory/ must be a directory of this repository's "
    modes = [["--rev", "HEAD"]] + ([["--worktree"]] if what != "a git submodule" else [])
    for mode in modes:
        assert main(["--repo", str(tmp_path), "validate", *mode]) == 1, mode
        out = capsys.readouterr().out
        assert want + f"files; this is {what}" in out, (mode, out)
    if what == "a git submodule":
        assert git(tmp_path, "rm", "-q", "--cached", "inventory").returncode == 0
    else:
        inventory.unlink()
    shutil.move(tmp_path / "moved", inventory)
    assert git(tmp_path, "add", "-A").returncode == 0
    assert git(tmp_path, "commit", "-q", "-m", "the inventory back").returncode == 0
    assert main(["--repo", str(tmp_path), "validate", "--rev", "HEAD"]) == 0, capsys.readouterr()


def test_a_link_to_a_site_directory_is_an_error_in_both_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site's devices behind a link vanished with a warning (GP005): git stores the
    link, never what it points to; the work tree read the same as the commit."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), worktree=True)
    site = tmp_path / "elsewhere"
    site.mkdir()
    (tmp_path / "inventory" / "devices" / "paris").symlink_to(site)
    assert git(tmp_path, "add", "-A").returncode == 0
    assert git(tmp_path, "commit", "-q", "-m", "a linked site").returncode == 0
    for mode in (["--rev", "HEAD"], ["--worktree"]):
        assert main(["--repo", str(tmp_path), "validate", *mode]) == 1, mode
        out = capsys.readouterr().out
        want = "inventory/devices/paris:1:1: error[GP010]: the file is a symbolic link"
        assert want in out, (mode, out)


@pytest.mark.parametrize("what", ["a git submodule", "a directory"])
@pytest.mark.parametrize("name", ["gitprov.yaml", "secrets.yaml"])
def test_anything_but_a_file_where_one_belongs_is_an_error_not_a_damaged_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, name: str
) -> None:
    """Read as "not part of the inventory" (a warning), secrets.yaml as a directory or a
    submodule showed as every secret unknown ("add it with gitprov secrets set"),
    gitprov.yaml as the settings missing: neither said what was wrong."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), worktree=True)
    path = f"inventory/{name}"
    if what == "a directory":
        data = (tmp_path / path).read_bytes()
        (tmp_path / path).unlink()
        (tmp_path / path).mkdir()
        (tmp_path / path / "x.yaml").write_bytes(data)
        where = f"{path}/x.yaml"
    assert git(tmp_path, "add", "-A").returncode == 0
    if what == "a git submodule":
        assert git(tmp_path, "rm", "-q", "--cached", path).returncode == 0
        info = f"160000,1234567890abcdef1234567890abcdef12345678,{path}"
        assert git(tmp_path, "update-index", "--add", "--cacheinfo", info).returncode == 0
        where = path
    assert git(tmp_path, "commit", "-q", "-m", f"{name} as {what}").returncode == 0
    assert main(["--repo", str(tmp_path), "validate", "--rev", "HEAD"]) == 1
    captured = capsys.readouterr()
    want = f"{where}:1:1: error[GP010]: {name} must be a file of this repository; this is {what}"
    assert want in captured.out, captured
    assert "warning[GP005]" not in captured.out
    assert "cannot read object" not in captured.out + captured.err


def _commit_file(repo: pygit2.Repository, path: str, data: bytes) -> None:
    """Commit `data` at `path` on top of HEAD, without a work tree (any depth, any size)."""
    head = repo.head.peel(pygit2.Commit)
    blob = repo.create_blob(data)
    parts = path.split("/")
    trees: list[pygit2.Tree | None] = [head.tree]
    for name in parts[:-1]:  # the trees on the way down, None where there is none yet
        here = trees[-1]
        below = repo[here[name].id] if here is not None and name in here else None
        trees.append(below if isinstance(below, pygit2.Tree) else None)
    oid, mode = blob, pygit2.GIT_FILEMODE_BLOB
    for name, tree in zip(reversed(parts), reversed(trees), strict=True):
        builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
        builder.insert(name, oid, mode)
        oid, mode = builder.write(), pygit2.GIT_FILEMODE_TREE
    sig = pygit2.Signature("Test Author", "author@gitprov.invalid", 1_700_000_000, 0)
    repo.create_commit("HEAD", sig, sig, f"add {parts[-1]}", oid, [head.id])


def _gitprov_within_512_mib(*argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process that may map 512 MiB at most (as the bad-input corpus runs)."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, 512 * 2**20))

    return subprocess.run(
        [sys.executable, "-m", "gitprov", *argv],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
        check=False,
    )


def test_a_device_nested_thousands_of_directories_deep_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Git nests trees as deep as a commit says, and a work tree as deep as its paths
    allow: both are walked without recursion (3,000 levels, then 1,500 on disk)."""
    repo = GitRepo(tmp_path)
    files = example_files()
    device = files.pop("inventory/devices/0021f2011b19.yaml")
    repo.commit(files, worktree=True)
    deep = "inventory/devices/" + "d/" * 3000 + "0021f2011b19.yaml"
    _commit_file(repo.repo, deep, device)
    assert main(["--repo", str(tmp_path), "validate", "--rev", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "no problems" in out or "0 error(s)" in out, out
    # (mkdir's parents=True and the rmtree of pytest's clean-up recurse, as os.walk did:
    # made and removed a level at a time)
    folders = [tmp_path / "inventory" / "devices" / "d"]
    while len(folders) < 1500:
        folders.append(folders[-1] / "d")
    for folder in folders:
        folder.mkdir()
    on_disk = folders[-1] / "0021f2011b19.yaml"
    try:
        on_disk.write_bytes(device)
        assert main(["--repo", str(tmp_path), "validate", "--worktree"]) == 0
        capsys.readouterr()
        on_disk.write_bytes(device.replace(b"model: IP542N", b"model: IP542X"))
        assert main(["--repo", str(tmp_path), "validate", "--worktree"]) == 1
        assert "error[GP102]: unknown model 'IP542X'" in capsys.readouterr().out
    finally:
        on_disk.unlink(missing_ok=True)
        for folder in reversed(folders):
            folder.rmdir()


def test_a_blob_of_300_mb_is_refused_by_its_size_and_never_read(tmp_path: Path) -> None:
    """Its size comes from the object's header: neither libgit2 nor Python holds the
    300 MB, in a process that may map 512 MiB (before: an internal error, out of
    memory). The same for a work-tree file past what any fleet may allow."""
    repo = GitRepo(tmp_path)
    repo.commit(example_files(), worktree=True)
    size = 300 * 2**20
    _commit_file(repo.repo, "inventory/devices/0021f2000008.yaml", b"description: " + b"x" * size)
    done = _gitprov_within_512_mib("--repo", str(tmp_path), "validate", "--rev", "HEAD")
    want = (
        f"inventory/devices/0021f2000008.yaml:1:1: error[GP006]: the file is too large: "
        f"{size + 13} bytes (limit 16777216"
    )
    assert done.returncode == 1 and want in done.stdout, done.stdout + done.stderr
    big = tmp_path / "inventory" / "devices" / "0021f2000009.yaml"
    with big.open("wb") as f:
        f.truncate(300 * 2**20)  # (sparse: nothing written)
    done = _gitprov_within_512_mib("--repo", str(tmp_path), "validate", "--worktree")
    want = "inventory/devices/0021f2000009.yaml:1:1: error[GP006]: the file is too large: "
    assert done.returncode == 1 and want in done.stdout, done.stdout + done.stderr


def test_head_on_a_branch_without_commits_says_so_when_others_have_some(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path)
    repo.commit(example_files())
    repo.repo.set_head("refs/heads/orphan")  # as `git switch --orphan orphan` leaves it
    for command in ("validate", "versions"):
        assert main(["--repo", str(tmp_path), command, "--rev", "HEAD"]) == 2, command
        err = capsys.readouterr().err
        assert "HEAD is on branch 'orphan', which has no commit yet" in err, err
        assert "--rev BRANCH" in err and "Traceback" not in err, err
    assert main(["--repo", str(tmp_path), "validate", "--rev", "main"]) == 0


def test_a_git_time_is_rfc_3339_or_as_git_writes_one_no_date_holds() -> None:
    assert git_time(0) == "1970-01-01T00:00:00+00:00"
    assert git_time(1_700_000_000, 90) == "2023-11-14T23:43:20+01:30"
    assert git_time(1_700_000_000, -300) == "2023-11-14T17:13:20-05:00"
    # Git takes any number: past the year 9999, before the year 1, an offset of days.
    assert git_time(253_402_300_800) == "@253402300800 +0000"
    assert git_time(253_402_300_799, 14 * 60) == "@253402300799 +1400"
    assert git_time(-62_135_596_801) == "@-62135596801 +0000"
    assert git_time(0, 25 * 60) == "@0 +2500"


def test_a_corrupt_commit_is_said_to_be_corrupt_not_unknown(tmp_path: Path) -> None:
    """A commit git took in without a check (an author with no e-mail): every command
    said `unknown revision 'HEAD'`, which sent the user looking for a missing branch."""
    repo = pygit2.init_repository(str(tmp_path / "r"), initial_head="main")
    tree = repo.TreeBuilder().write()
    raw = f"tree {tree}\nauthor  1700000000 +0000\ncommitter T <t@e> 1700000000 +0000\n\nx\n"
    made = repo.odb.write(pygit2.enums.ObjectType.COMMIT, raw.encode())
    repo.references.create("refs/heads/main", made)
    with pytest.raises(UsageError, match=r"cannot read revision 'HEAD': failed to parse") as info:
        resolve_commit(repo, "HEAD")
    assert "git fsck" in info.value.hint
    with pytest.raises(UsageError, match=r"unknown revision 'nope'"):
        resolve_commit(repo, "nope")


@pytest.mark.parametrize(
    ("rev", "meant"),
    [("mian", "'main'"), ("release/2025-1", "'release/2025-01'"), ("v1.2.O", "'v1.2.0'")],
)
def test_an_unknown_revision_close_to_a_branch_or_tag_names_it(
    tmp_path: Path, rev: str, meant: str
) -> None:
    repo = pygit2.init_repository(str(tmp_path / "r"), initial_head="main")
    tree = repo.TreeBuilder().write()
    who = pygit2.Signature("T", "t@example.com", 1_700_000_000, 0)
    head = repo.create_commit("refs/heads/main", who, who, "x", tree, [])
    repo.references.create("refs/heads/release/2025-01", head)
    repo.references.create("refs/tags/v1.2.0", head)
    with pytest.raises(UsageError, match=f"unknown revision '{re.escape(rev)}'") as info:
        resolve_commit(repo, rev)
    assert info.value.hint is not None and f"did you mean {meant}?" in info.value.hint
    with pytest.raises(UsageError) as far:
        resolve_commit(repo, "something-else-entirely")
    assert "did you mean" not in (far.value.hint or "")


def _three_commits(path: Path) -> GitRepo:
    repo = GitRepo(path)
    repo.commit(example_files(), "first")
    for n in (2, 3):
        change = f"mac: 0021f2011b19\nmodel: IP542N\ndescription: v{n}\n"
        repo.commit({"inventory/devices/0021f2011b19.yaml": change.encode()}, f"commit {n}")
    return repo


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("HEAD", "corrupted loose reference file: HEAD"),
        ("refs/heads/main", "corrupted loose reference file: refs/heads/main"),
        ("loop", "cannot resolve reference"),
    ],
)
@pytest.mark.parametrize("rev", ["HEAD", "HEAD~1"])
def test_a_corrupt_reference_is_said_to_be_corrupt_not_unknown(
    tmp_path: Path, damage: str, said: str, rev: str
) -> None:
    """A ref file of garbage or a symbolic ref that names itself: libgit2 says so, and
    every command said `unknown revision 'HEAD'` (pass a branch, tag or commit id)."""
    repo = _three_commits(tmp_path / "r")
    git_dir = repo.path / ".git"
    if damage == "loop":
        (git_dir / "refs/heads/main").write_text("ref: refs/heads/main\n")
    else:
        (git_dir / damage).write_text("garbage\n")
    with pytest.raises(UsageError, match=f"cannot read revision '{rev}': {said}") as info:
        resolve_commit(pygit2.Repository(str(repo.path)), rev)
    assert "git fsck" in info.value.hint


@pytest.mark.parametrize(
    ("lost", "rev", "said"),
    [
        ("main", "HEAD~1", "the commit 'HEAD' names, on the way to 'HEAD~1'"),
        ("main~1", "HEAD~1", "a parent of commit {child}, on the way to 'HEAD~1'"),
        ("main~1", "main^^", "a parent of commit {child}, on the way to 'main^^'"),
        ("main~1", "HEAD~2", "a parent of commit {child}, on the way to 'HEAD~2'"),
    ],
)
def test_a_commit_missing_on_the_way_back_is_damage_not_an_unknown_revision(
    tmp_path: Path, lost: str, rev: str, said: str
) -> None:
    """`--rev HEAD~1` (or `plan --base main~2`) through a commit the store lacks: libgit2
    says only "not found", which read as `unknown revision 'HEAD~1'`, a typo."""
    repo = _three_commits(tmp_path / "r")
    oid = str(repo.repo.revparse_single(lost).id)
    child = str(repo.repo.revparse_single("main").id)[:12]
    (repo.path / ".git" / "objects" / oid[:2] / oid[2:]).unlink()
    with pytest.raises(UsageError) as info:
        resolve_commit(pygit2.Repository(str(repo.path)), rev)
    shown = said.format(child=child)
    assert info.value.message == f"the repository cannot read object {oid} ({shown}): it is missing"
    assert "git fsck" in info.value.hint


def test_a_revision_past_a_shallow_clones_edge_says_the_history_ends_there(
    tmp_path: Path,
) -> None:
    repo = _three_commits(tmp_path / "r")
    # (where a whole history ends, the name is one that is not there)
    with pytest.raises(UsageError, match=r"^unknown revision 'HEAD~3'$"):
        resolve_commit(repo.repo, "HEAD~3")
    head = str(repo.repo.revparse_single("main").id)
    (repo.path / ".git" / "shallow").write_text(head + "\n")
    with pytest.raises(UsageError, match=f"shallow clone ends at commit {head[:12]}") as info:
        resolve_commit(pygit2.Repository(str(repo.path)), "HEAD~1")
    assert "--unshallow" in info.value.hint


def test_a_loose_object_of_garbage_is_damage_not_a_file_too_large(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are no zlib stream where a device's blob was (a damaged disk's block):
    libgit2 reads their first bytes as a header of the loose format of 2005, here a blob
    of 32 MiB, and validate said GP006 `the file is too large` (exit 1: fix the
    inventory) where the repository is what is damaged."""
    repo = GitRepo(tmp_path / "r")
    repo.commit(example_files())
    oid = str(repo.repo.revparse_single("main:inventory/devices/0021f2011b19.yaml").id)
    path = repo.path / ".git" / "objects" / oid[:2] / oid[2:]
    path.chmod(0o644)
    path.write_bytes(b"\xbf\xff\xff\x7f" + b"garbage" * 10)
    assert pygit2.Repository(str(repo.path)).odb.read_header(oid)[1] > 16 << 20
    for command in ("validate", "versions"):
        assert main(["--repo", str(repo.path), command]) == 2, command
        err = capsys.readouterr().err
        assert f"cannot read object {oid} (inventory/devices/0021f2011b19.yaml)" in err, err
        assert f"its file {path} is not a zlib stream (damaged)" in err, err
        assert "GP006" not in err and "git fsck" in err, err


def test_a_loose_object_whose_header_says_more_bytes_is_damage_not_a_nul_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device's loose blob whose header says 10 bytes more than its stream holds: read
    without a hash (see `_trust_stored_objects`), it came padded with NULs, and validate
    said GP001 `character U+0000 is not allowed` (exit 1: fix the file)."""
    repo = GitRepo(tmp_path / "r")
    repo.commit(example_files())
    oid = str(repo.repo.revparse_single("main:inventory/devices/0021f2011b19.yaml").id)
    path = repo.path / ".git" / "objects" / oid[:2] / oid[2:]
    body = zlib.decompress(path.read_bytes()).partition(b"\0")[2]
    path.chmod(0o644)
    path.write_bytes(zlib.compress(b"blob %d\0" % (len(body) + 10) + body))
    for command in ("validate", "versions"):
        assert main(["--repo", str(repo.path), command]) == 2, command
        err = capsys.readouterr().err
        assert f"cannot read object {oid} (inventory/devices/0021f2011b19.yaml)" in err, err
        assert "not the ones its name was made from" in err and "git fsck" in err, err
        assert "GP001" not in err, err


@pytest.mark.parametrize("garbage", [b"hello\nworld\n", bytes(range(256)) * 2])
def test_a_packed_refs_file_of_garbage_is_damage_not_an_unknown_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], garbage: bytes
) -> None:
    """libgit2 says such a file is corrupt at its first read only, then reads it as
    empty: every command said `unknown revision 'HEAD'` (or that the repository has no
    commit yet), as git says `unexpected line in .git/packed-refs`."""
    repo = GitRepo(tmp_path / "r")
    repo.commit(example_files())
    assert git(repo.path, "pack-refs", "--all").returncode == 0
    (repo.path / ".git" / "packed-refs").write_bytes(garbage)
    for command in ("validate", "versions"):
        assert main(["--repo", str(repo.path), command]) == 2, command
        err = capsys.readouterr().err
        assert "cannot read the repository's references: corrupted packed references" in err
        assert "packed-refs file is damaged" in err and "unknown revision" not in err, err


@pytest.mark.parametrize("damage", ["the ref names a tree", "the commit's file holds a blob"])
def test_a_branch_that_names_no_commit_is_damage_not_a_bad_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """git writes only a commit to a branch: HEAD naming a tree or a blob said `'HEAD'
    names a blob, not a commit` and `pass a branch, tag or commit id`, as if the user had
    typed a wrong name. A tag may name a tree: that is still the name's fault."""
    repo = GitRepo(tmp_path / "r")
    repo.commit(example_files())
    git_dir = repo.path / ".git"
    head = str(repo.repo.revparse_single("main").id)
    if damage == "the ref names a tree":
        oid = str(repo.repo.revparse_single("main^{tree}").id)
        (git_dir / "refs" / "heads" / "main").write_text(oid + "\n")
        kind = "tree"
    else:
        oid, kind = head, "blob"
        blob = str(repo.repo.revparse_single("main:inventory/gitprov.yaml").id)
        path = git_dir / "objects" / head[:2] / head[2:]
        path.chmod(0o644)
        path.write_bytes((git_dir / "objects" / blob[:2] / blob[2:]).read_bytes())
    for command in ("validate", "versions", "validate --rev HEAD~1"):
        assert main(["--repo", str(repo.path), *command.split()]) == 2, command
        err = capsys.readouterr().err
        said = f"cannot read object {oid} (the commit 'HEAD' names"
        assert said in err and f"): a {kind}, not a commit" in err and "git fsck" in err, err
        assert "pass a branch, tag or commit id" not in err, err


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("config", "[core\n\tbare = false\n", "failed to parse config file"),
        ("config", "[core]\n\trepositoryformatversion = 99\n", "unsupported repository version"),
        ("shallow", "garbage\n", "invalid graft OID at line 1"),
    ],
)
def test_a_repository_libgit2_cannot_open_is_said_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, said: str
) -> None:
    """A .git/config or shallow file it cannot parse: the error came with no hint line,
    and named the repository twice."""
    repo = GitRepo(tmp_path / "r")
    repo.commit(example_files())
    (repo.path / ".git" / name).write_text(text)
    assert main(["--repo", str(repo.path), "validate"]) == 2
    err = capsys.readouterr().err
    assert f"{repo.path}/.git/: cannot open the repository: {said}" in err, err
    assert err.count(f"{repo.path}/.git/:") == 1 and "\n    hint: `git -C " in err, err
