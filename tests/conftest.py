from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.gitrepo import ROOT, GitRepo, demo_private_key, example_files


@pytest.fixture
def example_repo(tmp_path: Path) -> GitRepo:
    """A repository whose first commit on main is this project's example inventory."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit(example_files(), "example inventory", worktree=True)
    return repo


@pytest.fixture
def private_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = demo_private_key()
    monkeypatch.setenv("GITPROV_PRIVATE_KEY", key)
    monkeypatch.delenv("GITPROV_PRIVATE_KEY_FILE", raising=False)
    return key


# Caches tools keep beside the sources; anything else a test leaves in the checkout is a
# test writing outside its tmp_path.
CACHES = (".venv/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".hypothesis/")


def _checkout_status() -> set[str] | None:
    """Every untracked, ignored or modified path of this checkout, or None outside git."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--ignored", "--untracked-files=all"],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        return None
    paths = {line[3:] for line in done.stdout.splitlines()}
    return {
        p for p in paths
        if not p.startswith(CACHES) and "__pycache__/" not in p and not p.endswith(".pyc")
    }


@pytest.fixture(scope="session", autouse=True)
def checkout_left_as_found() -> Iterator[None]:
    """The whole suite leaves no new file in the checkout (reported at the end)."""
    before = _checkout_status()
    yield
    after = _checkout_status()
    if before is not None and after is not None:
        new = sorted(after - before)
        assert not new, f"tests left files in the checkout (write under tmp_path): {new}"
