"""`gitprov log` and `gitprov blame`: who changed what a device got, and where it is set."""

from __future__ import annotations

import pygit2
import pytest

from gitprov.audit import blame, history
from gitprov.cli import main
from gitprov.pipeline import Pipeline
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
