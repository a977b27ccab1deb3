"""deploy/README.md section 1 as written, offline: a venv in place of /opt/gitprov,
gitprov's dependencies from requirements.lock with --require-hashes, then the wheel with
--no-deps. pip reads the wheels `make setup` collected (the same files the lock's hashes
name) instead of an index: tests use no network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gitprov
from tests.deploy.support import readme_commands, sh, substitute
from tests.fixtures.gitrepo import ROOT

WHEELHOUSE = Path(sys.executable).parent.parent / "wheelhouse"


def offline_pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(WHEELHOUSE),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


@pytest.mark.slow(seconds=15)
def test_the_install_commands_install_a_working_gitprov(tmp_path: Path) -> None:
    if not list(WHEELHOUSE.glob("setuptools-*.whl")):
        pytest.skip(f"no wheels in {WHEELHOUSE}: run make setup")
    env = offline_pip_env()
    # The release's wheel, built from a copy (setuptools leaves build/ beside the sources).
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("gitprov", "schemas"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), source],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("gitprov-*-py3-none-any.whl")

    commands = [c for c in readme_commands("## 1.") if not c.startswith("apt-get")]
    assert commands[0] == "cd /usr/local/src/gitprov", commands
    script = substitute(
        "set -e\n" + "\n".join(commands),
        {
            "/usr/local/src/gitprov": str(ROOT),
            "/opt/gitprov": str(tmp_path / "opt-gitprov"),
            "gitprov-<version>-py3-none-any.whl": str(wheel),
            # Debian 12's python3 is 3.11, as this one; the lock's wheels are for 3.11.
            "python3 -m venv": f"{sys.executable} -m venv",
        },
    )
    done = sh(script, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"gitprov {gitprov.__version__}"
    # Exactly the locked versions, and gitprov from the wheel, not from this checkout.
    bin_dir = tmp_path / "opt-gitprov" / "bin"
    frozen = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    ).stdout

    def canonical(requirement: str) -> str:
        """name==version with the name normalised as PEP 503 does (ruamel.yaml: ruamel-yaml)."""
        name, _, version = requirement.partition("==")
        return f"{re.sub(r'[-_.]+', '-', name.lower())}=={version}"

    locked = {
        canonical(line.split(" ")[0])
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    installed = {
        canonical(line)
        for line in frozen.splitlines()
        if "==" in line and not line.lower().startswith(("pip==", "setuptools==", "gitprov=="))
    }
    assert installed == locked
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import gitprov; print(gitprov.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=True,
    ).stdout
    assert where.startswith(str(tmp_path / "opt-gitprov")), where
