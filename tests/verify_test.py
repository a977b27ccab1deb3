"""`gitprov verify`: a commit rebuilt as publish builds it, compared byte for byte with the
served roots; every missing, extra and differing file named, exit 0 only when identical."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gitprov.app import Session
from gitprov.cli import main
from gitprov.schemas import output_schemas
from tests.fixtures.fleet import device_path, device_yaml, fleet_files, generated_mac
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def published(tmp_path: Path, private_key: str) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(fleet_files(3), "a fleet")
    assert main(["--repo", str(repo.path), "publish", *root_args(tmp_path / "roots")]) == 0
    return repo


def verify(
    repo: GitRepo, base: Path, capsys: pytest.CaptureFixture[str], *more: str
) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    argv = ["--repo", str(repo.path), "verify", *root_args(base / "roots"), *more]
    code = main([*argv, "--format", "json"])
    out = capsys.readouterr().out
    doc = json.loads(out)
    Draft202012Validator(output_schemas()["verify-output.schema.json"]).validate(doc)
    assert doc["identical"] == (code == 0) and code in (0, 1)
    return code, doc


def test_verify_passes_after_a_publish_and_names_every_difference(
    published: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http, tftp = tmp_path / "roots" / "http", tmp_path / "roots" / "tftp"
    served = sorted(p.name for p in http.iterdir())
    code, doc = verify(published, tmp_path, capsys)
    assert code == 0 and doc["differences"] == []
    assert doc["compared"] == 2 * len(served) and doc["commit"] == doc["manifest_commit"]
    assert main(["--repo", str(published.path), "verify", *root_args(tmp_path / "roots")]) == 0
    assert "verify: the roots hold exactly what" in capsys.readouterr().out

    # One byte of one file.
    victim = http / f"fv{generated_mac(1)}.conf"
    good = victim.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    victim.unlink()  # (written in place, it would be the other root's file too: linked)
    victim.write_bytes(bytes(bad))
    code, doc = verify(published, tmp_path, capsys)
    assert code == 1
    assert doc["differences"] == [
        {
            "root": str(http),
            "name": victim.name,
            "kind": "differs",
            "expected_sha256": sha(good),
            "found_sha256": sha(bytes(bad)),
        }
    ]
    assert main(["--repo", str(published.path), "verify", *root_args(tmp_path / "roots")]) == 1
    captured = capsys.readouterr()
    assert captured.out == (
        f"{victim}: differs: expected sha256 {sha(good)}, found {sha(bytes(bad))}\n"
    )
    assert "gitprov: 1 difference(s) between the served roots" in captured.err

    # And a file removed, a file added, one in a subdirectory, a link instead of a file;
    # dot-files are never served, so never looked at.
    gone = tftp / f"fv{generated_mac(0)}.conf"
    gone_sha = sha(gone.read_bytes())
    gone.unlink()
    (tftp / "extra.cfg").write_bytes(b"not from gitprov")
    (http / "sub").mkdir()
    (http / "sub" / "deep.conf").write_bytes(b"deep")
    linked = tftp / f"fv{generated_mac(2)}.conf"
    linked_sha = sha(linked.read_bytes())
    os.replace(linked, tmp_path / "elsewhere.conf")
    linked.symlink_to(tmp_path / "elsewhere.conf")
    (http / ".gitprov-leftover.tmp").write_bytes(b"x")
    code, doc = verify(published, tmp_path, capsys)
    assert code == 1
    got = {(d["root"], d["name"], d["kind"], d["expected_sha256"], d["found_sha256"])
           for d in doc["differences"]}  # fmt: skip
    assert got == {
        (str(http), victim.name, "differs", sha(good), sha(bytes(bad))),
        (str(http), "sub/deep.conf", "extra", None, sha(b"deep")),
        (str(tftp), gone.name, "missing", gone_sha, None),
        (str(tftp), "extra.cfg", "extra", None, sha(b"not from gitprov")),
        (str(tftp), linked.name, "not-a-file", linked_sha, linked_sha),
    }
    assert main(["--repo", str(published.path), "verify", *root_args(tmp_path / "roots")]) == 1
    out = capsys.readouterr().out
    assert f"{tftp / gone.name}: missing (expected sha256 {gone_sha})" in out
    assert f"{tftp}/extra.cfg: extra (sha256 {sha(b'not from gitprov')})" in out


def _version(repo: GitRepo, rev: str) -> int:
    """The rule's version of the moved device at `rev` (gitprov versions)."""
    return Session(repo.path).versions(rev, [generated_mac(1)])[0].version


def test_a_later_commit_differs_only_where_it_changes_versions_continuing(
    published: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Versions continue from the manifest, as a publish's would: the commit that changes
    one device differs from the roots in that device's file only, and once published,
    verifies."""
    first = str(published.repo.head.target)
    second = published.commit({device_path(1): device_yaml(1, display="Moved")}, "move desk 1")
    code, doc = verify(published, tmp_path, capsys)
    name = f"fv{generated_mac(1)}.conf"
    assert code == 1
    assert [(d["name"], d["kind"]) for d in doc["differences"]] == [(name, "differs")] * 2
    assert any("says" in n and "is published" in n for n in doc["notes"])
    assert main(["--repo", str(published.path), "publish", *root_args(tmp_path / "roots")]) == 0
    code, doc = verify(published, tmp_path, capsys)
    assert code == 0 and doc["notes"] == []
    served, gives = _version(published, second), _version(published, first)
    assert served > gives
    # The older commit: its device would get a version the roots already passed; publish
    # refuses it, and verify says so rather than compare with made-up numbers.
    argv = ["--repo", str(published.path), "verify", "--rev", "main~1"]
    assert main([*argv, *root_args(tmp_path / "roots")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"gitprov: error: the roots cannot hold what {first[:12]} produces: they already "
        f"served 1 of its file(s) a higher version ({generated_mac(1)}: served {served}, "
        f"{first[:12]} gives {gives}); a publish of it is refused\n"
        f"    hint: verify the published commit: gitprov verify --rev {second[:12]}\n"
    )


def test_the_published_commit_verifies_after_a_forced_publish_put_it_back(
    published: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`publish --force --rev OLDER` serves the older content above the numbers the
    roots had served; verify of that commit built it with the rule's lower numbers, and
    its hint sent the auditor in a circle: no commit verified until a new one."""
    first = str(published.repo.head.target)
    published.commit({device_path(1): device_yaml(1, display="Moved")}, "move desk 1")
    roots = root_args(tmp_path / "roots")
    assert main(["--repo", str(published.path), "publish", *roots]) == 0
    argv = ["--repo", str(published.path), "publish", "--force", "--rev", first, *roots]
    assert main(argv) == 0
    code, doc = verify(published, tmp_path, capsys, "--rev", first)
    assert code == 0 and doc["commit"] == first and doc["notes"] == [], doc
    # The head is not what the roots hold, and publishing it would be refused: said so,
    # naming the commit that verifies.
    capsys.readouterr()
    assert main(["--repo", str(published.path), "verify", *roots]) == 1
    assert f"hint: verify the published commit: gitprov verify --rev {first[:12]}" in (
        capsys.readouterr().err
    )


def test_a_state_dir_that_is_a_file_is_a_usage_error_not_an_empty_publication(
    published: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stray = tmp_path / "not-a-dir"
    stray.write_text("x\n")
    argv = ["--repo", str(published.path), "verify", *root_args(tmp_path / "roots")]
    assert main([*argv, "--state-dir", str(stray)]) == 2
    err = capsys.readouterr().err
    assert f"{stray}: the state dir is not a directory" in err and "Traceback" not in err, err
