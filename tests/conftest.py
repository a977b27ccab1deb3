from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gitrepo import GitRepo, demo_private_key, example_files


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
