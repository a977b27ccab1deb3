"""`gitprov plan`: the per-device diff a reviewer reads, with secrets redacted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.secrets import SecretsFile, dump_secrets_file, load_secrets_file, seal
from tests.fixtures.gitrepo import GitRepo

OFFICE = "inventory/profiles/office.yaml"
SECRETS = "inventory/secrets.yaml"


def plan(capsys: pytest.CaptureFixture[str], repo: GitRepo, *argv: str) -> tuple[int, str]:
    code = main(["--repo", str(repo.path), "plan", *argv])
    return code, capsys.readouterr().out


def test_profile_change_lists_every_inheriting_device(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(example_repo.repo.head.target)
    office = example_repo.files[OFFICE].replace(b"sbc2.example.net", b"sbc9.example.net")
    example_repo.commit({OFFICE: office}, "new backup proxy", branch="feature", parents=[base])
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "feature", "--format", "json")
    assert code == 0
    report = json.loads(out)
    # The three devices on `office` (0021f2a0c001 is on `base`), versions from 1001 to the
    # depth the merge would have: the base is depth 1, so 1000 + 2.
    assert [
        (d["mac"], d["change"], d["old_version"], d["new_version"]) for d in report["devices"]
    ] == [
        ("0021f2011b19", "change", 1001, 1002),
        ("0021f2011b20", "change", 1001, 1002),
        ("0021f2a0c002", "change", 1001, 1002),
    ]
    assert report["unchanged"] == 1
    diff = report["devices"][0]["diff"]
    assert "-DBID_WEB_SIP_OUTBOUND_BACKUP=sbc2.example.net" in diff
    assert "+DBID_WEB_SIP_OUTBOUND_BACKUP=sbc9.example.net" in diff


def test_secret_change_shows_that_it_changed_not_the_value(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(example_repo.repo.head.target)
    sf = load_secrets_file(example_repo.files[SECRETS].decode())
    sealed = dict(sf.sealed)
    sealed["sip_2010"] = seal(sf.public_key, "sip_2010", "Brand-new-pw-77")
    example_repo.commit(
        {SECRETS: dump_secrets_file(SecretsFile(sf.public_key, sealed))},
        "new password",
        branch="feature",
        parents=[base],
    )
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "feature")
    assert code == 0
    assert "0021f2011b20" in out and "0021f2011b19" not in out.split("\n\n")[0]
    assert "Brand-new-pw-77" not in out
    changed = [
        ln for ln in out.splitlines() if ln.startswith(("-DBID_SIP_PASSWORD", "+DBID_SIP_PASSWORD"))
    ]
    assert len(changed) == 2 and "<secret:sip_2010:" in changed[1]


def test_markdown_for_pull_requests(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(example_repo.repo.head.target)
    office = example_repo.files[OFFICE].replace(b"sbc2.example.net", b"sbc9.example.net")
    example_repo.commit({OFFICE: office}, "x", branch="feature", parents=[base])
    code, out = plan(
        capsys, example_repo, "--base", base, "--rev", "feature", "--format", "markdown"
    )
    assert code == 0
    assert out.startswith("### gitprov plan ")
    assert "| `0021f2011b19` | `fv0021f2011b19.conf` | 1001 → 1002 |" in out
    # The three devices on `office` get the same changed lines: one group, one diff.
    assert "#### 3 devices changed: `DBID_WEB_SIP_OUTBOUND_BACKUP`" in out
    assert out.count("```diff") == 1


def test_invalid_side_reports_problems(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(example_repo.repo.head.target)
    example_repo.commit({OFFICE: b"extends: nowhere\n"}, "x", branch="feature", parents=[base])
    code = main(["--repo", str(example_repo.path), "plan", "--base", base, "--rev", "feature"])
    err = capsys.readouterr().err
    assert code == 1
    assert "inventory/profiles/office.yaml:1:10: error[GP103]" in err


DEVICE = "inventory/devices/0021f2011b20.yaml"


def test_a_device_changed_and_changed_back_is_listed_as_renumbered(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Its settings are the base's, its version is not: a publish serves it the new
    number, and the device fetches the same settings again. The reviewer is told."""
    base = str(example_repo.repo.head.target)
    same = example_repo.files[DEVICE]
    example_repo.commit(
        {DEVICE: same.replace(b"Meeting room", b"Board room")},
        "rename",
        branch="feature",
        parents=[base],
    )
    example_repo.commit({DEVICE: same}, "rename back", branch="feature")
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "feature", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["devices"] == [] and report["unchanged"] == 4
    # Two changes on the branch: the depth of the head, 1000 + 3.
    assert report["renumbered"] == [
        {
            "mac": "0021f2011b20",
            "file": "fv0021f2011b20.conf",
            "old_version": 1001,
            "new_version": 1003,
        }
    ]
    saved = tmp_path / "plan.json"
    saved.write_text(out)
    for fmt in ("text", "markdown"):
        code, shown = plan(capsys, example_repo, "--from-json", str(saved), "--format", fmt)
        assert code == 0
        assert "get a new version all the same" in shown and "0021f2011b20 1001 → 1003" in shown
    code, out = plan(capsys, example_repo, "--base", base, "--rev", base, "--format", "json")
    assert json.loads(out)["renumbered"] == []
