"""The embedded servers over a test module's own `root` fixture (the published files it
needs), each reporting its fetches to `events`; stopped when the test ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gitprov.tools.serve import HttpServer, TftpServer
from tests.fixtures.serve_clients import HOST, Events


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def http(root: Path, events: Events) -> Iterator[HttpServer]:
    with HttpServer(root, HOST, 0, on_fetch=events) as server:
        yield server


@pytest.fixture
def tftp(root: Path, events: Events) -> Iterator[TftpServer]:
    with TftpServer(root, HOST, 0, on_fetch=events) as server:
        yield server
