"""gitprov as other teams install it: a wheel in a fresh virtualenv, run outside this
checkout, against an inventory repository of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

import gitprov
from tests.fixtures.gitrepo import ROOT, GitRepo, demo_private_key, example_files

PACKAGE = Path(gitprov.__file__).parent


def test_every_subpackage_is_packaged() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ])
    found = {
        ".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject.toml's packages: {sorted(found - listed)}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout installed into a new virtualenv; its dependencies are the
    test venv's (a plain path, so that venv's editable gitprov is not seen)."""
    base = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ beside the sources, and tests write
    # only under their temp dirs.
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("gitprov", "schemas"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"),
         str(source)],
        capture_output=True, text=True, check=False, timeout=600,
    )
    if built.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{built.stderr}")
    (wheel,) = (base / "dist").glob("gitprov-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # A pure-Python wheel installs by unpacking it into site-packages. (pip install
    # --prefix from this venv would first uninstall this venv's own gitprov.)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return venv


def gitprov_in(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["GITPROV_PRIVATE_KEY"] = demo_private_key()
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "gitprov", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300,
    )


def test_the_wheel_works_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import gitprov; print(gitprov.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    assert str(installed) in probe.stdout, probe.stdout  # not this checkout's source

    repo = GitRepo(tmp_path / "inventory-repo")
    repo.commit(example_files(), "our fleet")
    top = repo.path
    done = gitprov_in(installed, top, "schema", "device")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["title"].startswith("gitprov device")
    done = gitprov_in(installed, top, "params", "--format", "json")
    assert done.returncode == 0 and json.loads(done.stdout)["params"], done.stderr
    done = gitprov_in(installed, top, "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    done = gitprov_in(installed, top, "build", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out" / "encrypted").iterdir())) == 4
    roots = ["--http-root", str(tmp_path / "http"), "--state-dir", str(tmp_path / "state")]
    done = gitprov_in(installed, top, "publish", *roots)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "http" / "fv0021f2011b19.conf").read_bytes().startswith(b"Salted__")


def test_init_from_the_wheel_gives_an_inventory_that_validates(
    installed: Path, tmp_path: Path
) -> None:
    done = gitprov_in(
        installed, tmp_path, "init", "ours", "--private-key-out", str(tmp_path / "ours.key")
    )
    assert done.returncode == 0, done.stderr
    done = gitprov_in(installed, tmp_path / "ours", "validate", "--worktree")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ours" / "schemas" / "device.schema.json").is_file()
