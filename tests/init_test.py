"""`gitprov init`: a new inventory repository that validates, builds and publishes."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gitprov.cli import main
from gitprov.crypto import Cipher
from gitprov.errors import UsageError

DEVICE = """\
mac: "00:21:f2:aa:bb:01"
model: IP542N
profile: base
lines:
  - enabled: true
    account: "4001"
    phone_number: "4001"
    password: !secret sip_4001
"""

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@gitprov.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@gitprov.invalid",
    "GIT_AUTHOR_DATE": "1700000000 +0000",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}


def git(top: Path, *argv: str) -> None:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run(["git", "-C", str(top), *argv], check=True, capture_output=True, env=env)


def test_a_new_inventory_validates_builds_and_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    top, key = tmp_path / "fleet", tmp_path / "keys" / "fleet.key"
    # The action's commit is given: the default asks GitHub (tests/github_test.py).
    action = ["--action-ref", f"gitprov/gitprov@{'5' * 40}"]
    assert main(["init", str(top), "--private-key-out", str(key), *action]) == 0
    out = capsys.readouterr().out
    assert str(key) in out and "gitprov-sk-" not in out  # the private key is only in the file
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (top / ".git").is_dir()
    for rel in (
        "inventory/gitprov.yaml",
        "inventory/models/IP542N.yaml",
        "inventory/models/G502N.yaml",
        "inventory/profiles/base.yaml",
        "inventory/secrets.yaml",
        ".pre-commit-config.yaml",
        ".vscode/settings.json",
        "schemas/device.schema.json",
        "README.md",
        ".github/workflows/gitprov-review.yml",
        ".github/workflows/gitprov-publish.yml",
        ".github/actionlint.yaml",
    ):
        assert (top / rel).is_file(), rel
    assert "!secret scalar" in (top / ".vscode" / "settings.json").read_text()
    assert main(["--repo", str(top), "validate", "--worktree"]) == 0
    capsys.readouterr()

    # The team adds a device with a secret and makes the first commit.
    monkeypatch.setenv("GITPROV_PRIVATE_KEY_FILE", str(key))
    monkeypatch.delenv("GITPROV_PRIVATE_KEY", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-4001\n"))
    assert main(["--repo", str(top), "secrets", "set", "sip_4001"]) == 0
    (top / "inventory" / "devices" / "0021f2aabb01.yaml").write_text(DEVICE)
    git(top, "add", "-A")
    git(top, "commit", "-q", "-m", "first device")
    repo = ["--repo", str(top)]
    assert main([*repo, "validate"]) == 0
    assert main([*repo, "build", "--out", str(tmp_path / "out")]) == 0
    assert main([*repo, "plan", "--base", "main", "--rev", "main"]) == 0
    roots = ["--http-root", str(tmp_path / "http"), "--state-dir", str(tmp_path / "state")]
    assert main([*repo, "publish", *roots]) == 0
    capsys.readouterr()
    assert main([*repo, "key", "0021f2aabb01"]) == 0
    device_key = capsys.readouterr().out.strip()
    data = (tmp_path / "http" / "fv0021f2aabb01.conf").read_bytes()
    plain = Cipher().decrypt(data, device_key)
    assert plain.startswith(b"DBID_DBASE_VERSION=1001\n") and b"s3cret-4001" in plain
    # The TFTP root the settings name is relative to the repository, and ignored by git.
    assert (top / "var" / "tftp" / "fv0021f2aabb01.conf").read_bytes() == data
    status = subprocess.run(
        ["git", "-C", str(top), "status", "--porcelain"], capture_output=True, text=True
    )
    assert status.stdout == ""


@pytest.mark.parametrize("where", ["top", "key"])
def test_init_where_a_file_is_in_the_way_makes_nothing(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    top, key = tmp_path / "fleet", tmp_path / "fleet.key"
    if where == "top":
        top = blocker
    else:
        key = blocker / "fleet.key"
    code = main(["init", str(top), "--private-key-out", str(key), "--no-workflows"])
    err = capsys.readouterr().err
    assert code == 2 and "a file is in the way" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert blocker.read_text() == "mine\n"


@pytest.mark.parametrize(
    "case",
    [
        "key inside",
        "inventory exists",
        "key exists",
        "a file in the way",
        "inside another repository",
        "new inside another repository",
    ],
)
def test_init_never_overwrites_and_keeps_the_key_out_of_the_repository(
    tmp_path: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A target init refuses is refused at once: no `git ls-remote` to GitHub first
    (offline, that costs a timeout and a note about pinning the action to no purpose)."""
    import gitprov.init

    def no_network() -> None:
        raise AssertionError("init asked GitHub before checking its target")

    monkeypatch.setattr(gitprov.init, "release_action_ref", no_network)
    top, key = tmp_path / "fleet", tmp_path / "fleet.key"
    if case == "key inside":
        key = top / "private.key"
    elif case == "inventory exists":
        (top / "inventory").mkdir(parents=True)
    elif case == "a file in the way":
        top.write_text("keep me\n")
    elif case.endswith("inside another repository"):
        # (a new directory in the checkout someone stands in: its own repository, or
        # its workflows sit where GitHub never looks and its commits go into the other)
        outer = tmp_path / "other"
        git(tmp_path, "init", "-q", "-b", "main", str(outer))
        top = outer / "sub" / "fleet" if case.startswith("new") else outer / "sub"
        if not case.startswith("new"):
            top.mkdir()
    else:
        key.write_text("keep me\n")
    assert main(["init", str(top), "--private-key-out", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gitprov: error: ") and "note:" not in err, err
    if case == "key exists":
        assert key.read_text() == "keep me\n"
    if case == "a file in the way":
        assert top.read_text() == "keep me\n" and "a file is in the way" in err, err
        return
    if case.endswith("inside another repository"):
        assert f"inside the git repository {tmp_path / 'other'}" in err, err
        assert f"gitprov init {tmp_path / 'other'}" in err, err
    assert not (top / "inventory" / "gitprov.yaml").exists()
    assert not key.exists() or case == "key exists"


def test_init_at_the_top_of_an_existing_repository_adds_the_inventory_to_it(
    tmp_path: Path,
) -> None:
    top = tmp_path / "fleet"
    git(tmp_path, "init", "-q", "-b", "main", str(top))
    (top / "README").write_text("ours\n")
    key = tmp_path / "fleet.key"
    assert main(["init", str(top), "--private-key-out", str(key), "--no-workflows"]) == 0
    assert (top / "inventory" / "gitprov.yaml").is_file() and (top / "README").is_file()
    assert main(["--repo", str(top), "validate", "--worktree"]) == 0


def test_devices_may_be_grouped_in_directories_of_a_new_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top = tmp_path / "fleet"
    argv = ["init", str(top), "--private-key-out", str(tmp_path / "k"), "--no-workflows"]
    assert main(argv) == 0
    assert "SITE/MAC.yaml" in capsys.readouterr().out
    assert "devices/paris/floor-2/0021f2011b19.yaml" in (top / "README.md").read_text()
    flat = DEVICE.replace("    password: !secret sip_4001\n", "")
    site = top / "inventory" / "devices" / "paris" / "floor-2"
    site.mkdir(parents=True)
    (site / "0021f2aabb01.yaml").write_text(flat)
    (top / "inventory" / "devices" / "0021f2aabb02.yaml").write_text(
        flat.replace("bb:01", "bb:02").replace("4001", "4002")
    )
    assert main(["--repo", str(top), "validate", "--worktree", "--format", "json"]) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert problems == []
    assert main(["--repo", str(top), "versions", "--rev", "HEAD"]) == 2  # no commit yet
    capsys.readouterr()
    git(top, "add", "-A")
    git(top, "commit", "-q", "-m", "two devices, one by site")
    assert main(["--repo", str(top), "versions", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["mac"], r["version"]) for r in rows] == [
        ("0021f2aabb01", 1001),
        ("0021f2aabb02", 1001),
    ]


@pytest.mark.parametrize("name", ['Acme: HQ #1 "west"', "yes", "1000", "Zoë / Berlin", "n", "0129"])
def test_a_fleet_name_of_any_text_is_written_so_that_it_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    # Written unquoted, `Acme: HQ` made the new inventory's gitprov.yaml invalid YAML.
    # The default key file is named after the fleet, inside ~/.config/gitprov whatever
    # the name holds ('/' included).
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    top = tmp_path / "fleet"
    assert main(["init", str(top), "--name", name, "--no-workflows"]) == 0
    capsys.readouterr()
    text = (top / "inventory" / "gitprov.yaml").read_text(encoding="utf-8")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("fleet:")]
    assert yaml.safe_load(line)["fleet"] == name
    assert main(["--repo", str(top), "validate", "--worktree"]) == 0
    (key,) = (tmp_path / "home" / ".config" / "gitprov").iterdir()
    assert key.suffix == ".key" and "/" not in key.stem and key.stem


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["init", ""], "an empty directory name"),
        (["init", "fleet\x1b[2J"], "the directory 'fleet\\x1b[2J' holds a control"),
        (["init", "fleet", "--name", "a\nb"], "--name 'a\\nb' holds a control"),
    ],
)
def test_init_refuses_names_that_do_not_read_as_they_are(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    said: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main([*argv, "--no-workflows"]) == 2
    err = capsys.readouterr().err
    assert said in err and "\x1b" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_name_that_is_not_utf8_is_refused_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory named in bytes that are not UTF-8: init ended in a traceback after
    making an empty key file, which then refused every init of that name."""
    name = os.fsdecode(b"ia\xffb")
    key = tmp_path / "keys" / "k.key"
    code = main(["init", str(tmp_path / name), "--private-key-out", str(key), "--no-workflows"])
    err = capsys.readouterr().err
    assert code == 2 and "ia\\xffb' is not UTF-8" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
    # The library refuses it too, as a usage error, before it makes anything.
    from gitprov.init import init_inventory

    with pytest.raises(UsageError, match="is not UTF-8"):
        init_inventory(tmp_path / "fleet", key, name=name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("link", "points_to_a_directory"),
    [
        ("schemas/device.schema.json", False),
        ("schemas", True),
        ("schemas", False),
        ("inventory", True),
        ("inventory", False),
    ],
)
def test_init_never_writes_through_a_symbolic_link_in_its_directory(
    tmp_path: Path, link: str, points_to_a_directory: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link left in the directory init writes into, even one pointing nowhere, had the
    file written where it points: anywhere the user may write. Refused (as a link, or as
    a name that exists), nothing written there, no key made."""
    top, elsewhere = tmp_path / "fleet", tmp_path / "elsewhere"
    (top / link).parent.mkdir(parents=True, exist_ok=True)
    target = elsewhere / "target"
    (top / link).symlink_to(target)
    if points_to_a_directory:
        target.mkdir(parents=True)
    code = main(["init", str(top), "--private-key-out", str(tmp_path / "k"), "--no-workflows"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{top / link} is a symbolic link" in err or f"{top / link} exists" in err, err
    assert not target.exists() or not any(target.iterdir()), err
    assert not (tmp_path / "k").exists()
