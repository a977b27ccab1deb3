"""The README's 5-minute tour, run as a newcomer pastes it: in a clone of this checkout,
with the project's virtualenv, in a network namespace of its own (the tour's fixed ports
8080 and 6969 are then free whatever else runs). Each step's promise is checked on what
the shell printed and on the files it left."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.peers import need

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOUR = "## A 5-minute tour"


def tour_script(readme: str) -> str:
    """The first ```sh block after the tour's heading, as it is written."""
    after = readme.split(TOUR, 1)[1]
    found = re.search(r"^```sh\n(.*?)^```$", after, re.MULTILINE | re.DOTALL)
    assert found is not None, "the tour has no ```sh block"
    return found.group(1)


def test_the_tour_block_is_found_and_holds_each_step() -> None:
    script = tour_script(README.read_text(encoding="utf-8"))
    for step in ("validate --worktree", "plan --base main", "publish --rev main", "serve &"):
        assert f"gitprov {step}" in script


def _clone(tmp_path: Path) -> Path:
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").is_file():
        pytest.skip("the tour sources .venv/bin/activate: run the suite from the virtualenv")
    top = tmp_path / "gitprov"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(top)], check=True, timeout=120)
    # (a checkout on another branch, or a detached one as CI makes: the tour says main)
    subprocess.run(["git", "-C", str(top), "checkout", "-q", "-B", "main"], check=True)
    (top / ".venv").symlink_to(venv)
    return top


def test_the_tour_runs_as_written(tmp_path: Path) -> None:
    unshare = need("unshare", "util-linux")
    ip = need("ip", "iproute2")
    for binary, package in (("curl", "curl"), ("openssl", "openssl"), ("tftp", "tftp-hpa")):
        need(binary, package)
    if os.geteuid() != 0:
        pytest.skip("the tour's fixed ports need a network namespace of its own (root)")
    top = _clone(tmp_path)
    fetched = tmp_path / "fv.conf"
    # The one change: the file the tour fetches by TFTP lands in this test's directory.
    script = tour_script(README.read_text(encoding="utf-8")).replace("/tmp/fv.conf", str(fetched))
    assert str(fetched) in script
    who = {"GIT_AUTHOR_NAME": "Tour", "GIT_AUTHOR_EMAIL": "tour@example.com"}
    who |= {"GIT_COMMITTER_NAME": "Tour", "GIT_COMMITTER_EMAIL": "tour@example.com"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITPROV_", "VIRTUAL_"))}
    env |= who | {"HOME": str(tmp_path), "CI": "1", "NO_COLOR": "1"}
    wrapped = f"{ip} link set lo up\ncd {top}\n{script}\nwait\n"
    # A session of its own: on a timeout the tour's `serve &` goes with the shell.
    with subprocess.Popen(
        [unshare, "--net", "bash", "-c", wrapped],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as shell:
        try:
            stdout, stderr = shell.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            raise
    out = stdout.decode(errors="replace") + stderr.decode(errors="replace")
    if "unshare failed" in out or "Operation not permitted" in out:
        pytest.skip(f"no network namespace here: {out.strip()[:200]}")
    for bad in ("Traceback", "internal error", "command not found", "No such file"):
        assert bad not in out, out
    # 1. the typo, located as the comment beside the second validate says
    said = [line.split("# ", 1)[1] for line in script.splitlines() if "error[GP" in line]
    assert len(said) == 1 and "GP103" in said[0]
    assert said[0] in out
    # 2. the plan: the device's new name and its version bump
    assert "Board room" in out and "1001 → 1002" in out
    # 3. published into the inventory's roots, on main (the rename stayed on its branch)
    served = top / "var" / "http" / "fv0021f2011b19.conf"
    assert served.is_file() and (top / "var" / "tftp" / "fv0021f2011b19.conf").is_file()
    # 4. fetched over HTTP and decrypted with the device's key: the plain file
    assert "DBID_DBASE_VERSION" in stdout.decode(errors="replace")
    # ... and over TFTP: the very bytes served
    assert fetched.read_bytes() == served.read_bytes()
