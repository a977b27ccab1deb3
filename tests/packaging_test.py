"""gitprov as other teams install it: a wheel in a fresh virtualenv, run outside this
checkout, against an inventory repository of its own."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import gitprov
from gitprov import REPOSITORY_URL
from tests.fixtures.gitrepo import ROOT, GitRepo, demo_private_key, example_files
from tests.fixtures.peers import need
from tests.init_test import DEVICE, IDENTITY

PACKAGE = Path(gitprov.__file__).parent
# The workflows init writes pin gitprov's action by commit; tests name one (no GitHub).
ACTION_REF = f"gitprov/gitprov@{'1' * 40}"


def test_every_subpackage_is_packaged() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject.toml's packages: {sorted(found - listed)}"


# `make setup` collects wheels of the runtime dependencies (and setuptools) here, so the
# wheel builds and installs into a clean venv without an index: tests use no network.
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


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout installed by pip into a new virtualenv, with its
    dependencies from the wheelhouse, as a team installs it."""
    if not list(WHEELHOUSE.glob("setuptools-*.whl")):
        pytest.skip(f"no wheels in {WHEELHOUSE}: run make setup")
    base = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ beside the sources, and tests write
    # only under their temp dirs.
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("gitprov", "schemas"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = offline_pip_env()
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(base / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )
    if built.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{built.stderr}")
    (wheel,) = (base / "dist").glob("gitprov-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )
    if done.returncode != 0:
        pytest.fail(f"installing the wheel failed:\n{done.stderr}")
    return venv


def gitprov_in(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["GITPROV_PRIVATE_KEY"] = demo_private_key()
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "gitprov", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.slow(seconds=15)
def test_the_wheel_works_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import gitprov; print(gitprov.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
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
    # The console script, as a user types it: the same program (gitprov._start:run).
    script = subprocess.run(
        [str(installed / "bin" / "gitprov"), "versions", "--format", "json"],
        cwd=top, capture_output=True, text=True, check=False, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )  # fmt: skip
    assert script.returncode == 0, script.stderr
    assert {row["mac"] for row in json.loads(script.stdout)} >= {"0021f2011b19"}
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
        installed,
        tmp_path,
        "init",
        "ours",
        "--private-key-out",
        str(tmp_path / "ours.key"),
        "--action-ref",
        ACTION_REF,
    )
    assert done.returncode == 0, done.stderr
    done = gitprov_in(installed, tmp_path / "ours", "validate", "--worktree")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ours" / "schemas" / "device.schema.json").is_file()


def test_a_team_inventory_from_the_wheel_publishes_and_serves_what_devices_decrypt(
    installed: Path, tmp_path: Path
) -> None:
    """Acceptance: the wheel alone, a fresh `gitprov init` repository outside this
    checkout, the team's own key; validate, build, plan, publish, serve, and the served
    file fetched with curl decrypts with the real openssl to what `show --reveal` says."""
    curl, openssl = need("curl", "curl"), need("openssl", "openssl")
    top, key = tmp_path / "ours", tmp_path / "keys" / "ours.key"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GITPROV_"))}
    env.update(IDENTITY, GIT_CONFIG_GLOBAL=os.devnull, GITPROV_PRIVATE_KEY_FILE=str(key))

    def gp(*argv: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(installed / "bin" / "gitprov"), *argv],
            cwd=top,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert done.returncode == 0, f"gitprov {' '.join(argv)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    def git(*argv: str) -> None:
        subprocess.run(["git", *argv], cwd=top, env=env, check=True, capture_output=True)

    top.mkdir()
    gp("init", ".", "--private-key-out", str(key), "--action-ref", ACTION_REF)
    git("add", "-A")
    git("commit", "-qm", "new inventory")
    gp("secrets", "set", "sip_4001", stdin="wheel-secret-4001\n")
    (top / "inventory" / "devices" / "0021f2aabb01.yaml").write_text(DEVICE)
    git("add", "-A")
    git("commit", "-qm", "first phone")

    gp("validate", "--rev", "HEAD")
    gp("build", "--rev", "HEAD", "--out", str(tmp_path / "out"))
    assert (tmp_path / "out" / "encrypted" / "fv0021f2aabb01.conf").is_file()
    plan = gp("plan", "--base", "HEAD~1", "--rev", "HEAD", "--format", "json")
    assert "0021f2aabb01" in plan and "wheel-secret-4001" not in plan
    gp("publish", "--rev", "HEAD")
    # Relative roots in the fleet settings are the repository's, wherever gitprov runs.
    served = top / "var" / "http" / "fv0021f2aabb01.conf"
    assert served.read_bytes().startswith(b"Salted__")

    proc = subprocess.Popen(
        [str(installed / "bin" / "gitprov"), "serve", "--http-port", "0", "--tftp-port", "0"],
        cwd=top,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = re.search(r"127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert port, "serve did not say where it listens"
        fetched = subprocess.run(
            [
                curl,
                "-sS",
                "--fail",
                "--noproxy",
                "*",
                f"http://127.0.0.1:{port.group(1)}/fv0021f2aabb01.conf",
            ],
            capture_output=True,
            check=False,
            timeout=30,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert fetched.returncode == 0, fetched.stderr
    device_key = gp("key", "0021f2aabb01", "--rev", "HEAD").strip()
    plain = subprocess.run(
        [openssl, "enc", "-d", "-aes-256-cbc", "-md", "md5", "-k", device_key],
        input=fetched.stdout,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert plain == gp("show", "0021f2aabb01", "--rev", "HEAD", "--reveal")
    # Line 1's password, opened by the team's own private key (per-line values are
    # tab-separated, line 1 first).
    assert "\nDBID_SIP_PASSWORD=wheel-secret-4001\t" in plain


def test_the_wheel_says_its_licence_and_where_it_lives(installed: Path) -> None:
    probe = subprocess.run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import importlib.metadata as m, json; d = m.distribution('gitprov'); "
            "print(json.dumps({'license': d.metadata['License-Expression'], "
            "'urls': d.metadata.get_all('Project-URL'), "
            "'files': [str(f) for f in d.files or []]}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=offline_pip_env(),
        cwd=installed,
    )
    meta = json.loads(probe.stdout)
    assert meta["license"] == "Apache-2.0"
    assert any(f.endswith("licenses/LICENSE") for f in meta["files"]), meta["files"]
    # The hook and the action that `gitprov init` points at are this project's repository.
    assert f"Source, {REPOSITORY_URL}" in meta["urls"], meta["urls"]


def _locked(lock: Path) -> dict[str, int]:
    """name -> number of hashes, for each pinned requirement of a pip-compile lock."""
    pins: dict[str, int] = {}
    name = ""
    for line in lock.read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9._-]+)==\S+", line)
        if pinned:
            name = re.sub(r"[-_.]+", "-", pinned.group(1)).lower()
            pins[name] = 0
        elif line.strip().startswith("--hash=sha256:") and name:
            pins[name] += 1
    return pins


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", ()), ("requirements-dev.lock", ("dev",))]
)
def test_the_locks_pin_every_dependency_with_hashes(lock: str, extras: tuple[str, ...]) -> None:
    """`make lock` refreshes both files; this fails when pyproject.toml gained a
    dependency the locks do not pin (CI, deploy and the action install from them)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    pins = _locked(ROOT / lock)
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", w)[0]).lower() for w in wanted}
    assert names <= set(pins), f"run make lock: {sorted(names - set(pins))} not in {lock}"
    assert all(pins.values()), f"pins without hashes in {lock}"
