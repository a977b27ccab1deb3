"""deploy/pre-receive and deploy/post-receive in a real bare repository, set up with the
commands of deploy/README.md section 3, pushed to with the real git.

The hooks run this venv's gitprov (GITPROV) with no private key in their environment.
What the pusher sees is git's relay of the hook's output: the "remote:" lines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.support import (
    KEY_PATH,
    REPO_PATH,
    git,
    git_env,
    readme_commands,
    set_up_repository,
    sh,
    substitute,
    workstation,
)
from tests.fixtures.gitrepo import ROOT, GitRepo, demo_private_key, example_files
from tests.fixtures.peers import need

DEVICE = "inventory/devices/0021f2011b19.yaml"


@dataclass
class Server:
    bare: Path
    env: dict[str, str]  # of the pusher; a local push runs the hooks with it
    client: GitRepo

    def push(self, *refspecs: str) -> tuple[int, str]:
        """`git push BARE REFSPEC…` from the client: exit code and all it printed."""
        proc = git(
            "push", str(self.bare), *refspecs, cwd=self.client.path, env=self.env, check=False
        )
        return proc.returncode, proc.stdout + proc.stderr

    def ref(self, name: str = "main") -> str | None:
        proc = git(
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/heads/{name}",
            cwd=self.bare,
            env=self.env,
            check=False,
        )
        return proc.stdout.strip() or None


@pytest.fixture
def server(tmp_path: Path) -> Server:
    need("git", "git")
    # A key file that does not exist: the pre-receive hook must not need one.
    env = git_env(tmp_path / "home", GITPROV_PRIVATE_KEY_FILE=str(tmp_path / "no-such-key"))
    bare = set_up_repository(tmp_path, env)
    client = workstation(tmp_path / "workstation", example_files())
    # The workstation's remote, as the README adds it.
    (remote,) = [c for c in readme_commands("## 3.") if c.startswith("git remote add")]
    done = sh(
        substitute(remote, {f"git@provisioning.example.net:{REPO_PATH}": str(bare)}),
        cwd=client.path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return Server(bare, env, client)


def unknown_model(server: Server) -> str:
    """A commit on main whose device names a model that does not exist."""
    text = server.client.files[DEVICE].decode()
    assert text.count("model: IP542N") == 1
    return server.client.commit({DEVICE: text.replace("model: IP542N", "model: NOPE")}, "bad")


def test_a_valid_push_to_main_is_accepted(server: Server) -> None:
    (push,) = [c for c in readme_commands("## 3.") if c.startswith("git push")]
    head = str(server.client.repo.head.target)
    done = sh(push, cwd=server.client.path, env=server.env)
    assert done.returncode == 0, done.stderr
    assert server.ref() == head
    assert f"remote: gitprov: {head[:12]} validates; accepted for main" in done.stderr


def test_an_invalid_push_is_refused_with_located_errors(server: Server) -> None:
    first = str(server.client.repo.head.target)
    assert server.push("main")[0] == 0
    bad = unknown_model(server)
    code, said = server.push("main")
    assert code != 0
    assert "[remote rejected] main -> main (pre-receive hook declined)" in said
    # The pusher sees each problem located, relayed by git as "remote:" lines.
    assert re.search(
        rf"^remote: {re.escape(DEVICE)}:2:8: error\[GP102\]: unknown model 'NOPE'", said, re.M
    ), said
    assert f"remote: gitprov: {bad[:12]} does not validate (above); main stays" in said
    assert server.ref() == first
    # git dropped the quarantined objects of the refused push.
    assert git("cat-file", "-e", bad, cwd=server.bare, env=server.env, check=False).returncode


def test_the_first_push_is_checked_too(server: Server) -> None:
    unknown_model(server)
    code, said = server.push("main")
    assert code != 0 and "error[GP102]" in said, said
    assert server.ref() is None


def test_other_branches_are_not_checked(server: Server) -> None:
    assert server.push("main")[0] == 0
    main = server.ref()
    bad = unknown_model(server)
    code, said = server.push("main:refs/heads/wip")
    assert code == 0, said
    assert "gitprov" not in said
    assert server.ref("wip") == bad
    assert server.ref() == main


def test_main_can_be_neither_deleted_nor_rewritten(server: Server) -> None:
    first = str(server.client.repo.head.target)
    assert server.push("main")[0] == 0
    code, said = server.push("--delete", "main")
    assert code != 0
    assert "remote: gitprov: refusing to delete main" in said
    assert server.ref() == first
    # git's own guard (`--shared` sets it) would refuse first; the hook's must hold alone.
    git("config", "receive.denyNonFastForwards", "false", cwd=server.bare, env=server.env)
    second = server.client.commit({"README.txt": "a change\n"}, "two")
    assert server.push("main")[0] == 0
    sibling = server.client.commit(
        {"README.txt": "another\n"}, "sibling", branch="side", parents=[first]
    )
    code, said = server.push("--force", "side:main")
    assert code != 0
    assert "remote: gitprov: refusing a non-fast-forward push to main" in said
    assert server.ref() == second != sibling


def test_the_hook_fails_closed_when_gitprov_cannot_run(server: Server) -> None:
    server.env["GITPROV"] = str(server.bare / "no-such-gitprov")
    code, said = server.push("main")
    assert code != 0
    assert re.search(r"remote: gitprov: could not check [0-9a-f]{12} \(exit 127", said), said
    assert server.ref() is None


def test_post_receive_publishes_main_with_the_key_from_its_default_path(
    server: Server, tmp_path: Path
) -> None:
    """The alternative publisher of section 6, with pre-receive still in front of it."""
    (install,) = [c for c in readme_commands("## 6.") if "post-receive" in c]
    done = sh(substitute(install, {REPO_PATH: str(server.bare)}), cwd=ROOT, env=server.env)
    assert done.returncode == 0, done.stderr
    hook = (server.bare / "hooks" / "post-receive").read_text()
    assert f"GITPROV_PRIVATE_KEY_FILE:-{KEY_PATH}" in hook
    key = tmp_path / "private-key"
    key.write_text(demo_private_key() + "\n")
    key.chmod(0o600)
    server.env["GITPROV_PRIVATE_KEY_FILE"] = str(key)
    # The unit's roots, on tmp paths; the example inventory's own publish: paths
    # (var/http, …) must not be used.
    for name, path in (
        ("HTTP_ROOT", "http"),
        ("TFTP_ROOT", "tftp"),
        ("STATE_DIR", "state"),
        ("FIRMWARE_DIR", "firmware"),
    ):
        assert f"GITPROV_{name}:-" in hook
        server.env[f"GITPROV_{name}"] = str(tmp_path / path)

    head = str(server.client.repo.head.target)
    code, said = server.push("main")
    assert code == 0, said
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert manifest["commit"] == head
    names = sorted(p.name for p in (tmp_path / "http").iterdir())
    assert names == sorted(
        f"fv{m}.conf" for m in ("0021f2011b19", "0021f2011b20", "0021f2a0c001", "0021f2a0c002")
    )
    assert sorted(p.name for p in (tmp_path / "tftp").iterdir()) == names

    # Refused by pre-receive: post-receive never runs, the served files stay.
    before = {p.name: p.read_bytes() for p in (tmp_path / "http").iterdir()}
    unknown_model(server)
    assert server.push("main")[0] != 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "http").iterdir()} == before
    assert json.loads((tmp_path / "state" / "manifest.json").read_text())["commit"] == head
