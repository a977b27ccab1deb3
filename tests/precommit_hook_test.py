"""The pre-commit hook as an inventory repository uses it: real `pre-commit`, the hook
fetched from a `file://` clone of this repository at HEAD and installed into pre-commit's
own environment, exactly as the `.pre-commit-config.yaml` that `gitprov init` writes says,
with only the repository URL and rev pointed at this checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gitprov import REPOSITORY_URL, __version__
from gitprov.cli import main
from tests.fixtures.gitrepo import ROOT
from tests.init_test import IDENTITY

BIN = Path(sys.executable).parent
# `make setup` collects the wheels of gitprov's runtime dependencies here, so the hook's
# environment installs without an index (tests use no network).
WHEELHOUSE = BIN.parent / "wheelhouse"

BAD_DEVICE = """\
mac: "00:21:f2:aa:bb:02"
model: IP542N
profile: base
lines:
  - enabled: true
    account: 4002
"""


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    if not (BIN / "pre-commit").exists():
        pytest.skip("pre-commit is not installed: run make setup (a dev dependency)")
    if not list(WHEELHOUSE.glob("pygit2-*.whl")):
        pytest.skip(f"no wheels in {WHEELHOUSE}: run make setup")
    if not (ROOT / ".git").exists():
        pytest.skip("this checkout is not a git repository: the hook is fetched from it")
    home = tmp_path / "home"
    home.mkdir()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TERM")}
    return {
        **keep,
        **IDENTITY,
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(WHEELHOUSE),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "VIRTUALENV_NO_DOWNLOAD": "1",
        "NO_COLOR": "1",
    }


@pytest.mark.slow(seconds=20)
def test_the_hook_passes_a_good_inventory_and_locates_a_bad_one(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    top = tmp_path / "fleet"
    key = tmp_path / "fleet.key"
    assert main(["init", str(top), "--private-key-out", str(key), "--no-workflows"]) == 0
    capsys.readouterr()
    config_file = top / ".pre-commit-config.yaml"
    config = yaml.safe_load(config_file.read_text())
    (hook_repo,) = config["repos"]
    # What init writes: gitprov's own repository at the release that wrote it.
    assert hook_repo == {
        "repo": REPOSITORY_URL,
        "rev": f"v{__version__}",
        "hooks": [{"id": "gitprov-validate"}],
    }
    head = run(["git", "rev-parse", "HEAD"], ROOT, env).stdout.strip()
    text = config_file.read_text()
    text = text.replace(REPOSITORY_URL, ROOT.as_uri()).replace(f"v{__version__}", head)
    config_file.write_text(text)
    git = shutil.which("git", path=env["PATH"])
    assert git
    for argv in (["add", "-A"], ["commit", "-q", "-m", "new inventory"]):
        assert run([git, *argv], top, env).returncode == 0

    pre_commit = str(BIN / "pre-commit")
    good = run([pre_commit, "run", "--all-files"], top, env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert re.search(r"gitprov validate\.+Passed", good.stdout), good.stdout

    bad = top / "inventory" / "devices" / "0021f2aabb02.yaml"
    bad.write_text(BAD_DEVICE)
    assert run([git, "add", str(bad)], top, env).returncode == 0
    failed = run([pre_commit, "run", "--all-files"], top, env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert re.search(r"gitprov validate\.+Failed", failed.stdout), failed.stdout
    # The problem is located: line 6, column 14 is the unquoted number.
    assert "inventory/devices/0021f2aabb02.yaml:6:14: error" in failed.stdout, failed.stdout
