"""DBID_DBASE_VERSION from git history alone (DESIGN.md invariant 2).

version(device, head) = version_floor(head) + depth(C), where C is the newest commit on
head's first-parent chain at which the device's rendered content (version line excluded)
differs from C's first parent, and depth(root) = 1. Commits that fail validation were
never published: they count as "unchanged" for every device.

No shared mutable state: CI and every server compute the same numbers from the history.
A cache of per-commit states (under the repository's git dir) makes the next commit cost
one step; it is never the truth, and deleting it changes no number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2

CACHE_FORMAT = 1


@dataclass(frozen=True)
class VersionInfo:
    version: int
    depth: int  # first-parent depth of the commit that set it
    commit: str  # that commit's id


# mac -> content digest; None means the commit is invalid (never published).
Evaluate = Callable[[pygit2.Commit], Mapping[str, str] | None]

# mac -> (content digest, depth, commit id)
State = dict[str, tuple[str, int, str]]


def first_parent_chain(commit: pygit2.Commit) -> list[pygit2.Commit]:
    """The commit and its first-parent ancestors, root first."""
    chain = [commit]
    while chain[-1].parents:
        chain.append(chain[-1].parents[0])
    chain.reverse()
    return chain


class VersionCache:
    """Per-commit states as JSON files named by commit id; safe to delete at any time."""

    def __init__(self, directory: Path, salt: str) -> None:
        # `salt` names everything the digests depend on besides the commit (catalog and
        # renderer versions): a new gitprov never reads states an old one wrote.
        self.directory = directory / salt[:16]

    def load(self, commit_id: str) -> State | None:
        try:
            raw = json.loads((self.directory / f"{commit_id}.json").read_text())
        except (OSError, ValueError):
            return None
        if raw.get("format") != CACHE_FORMAT:
            return None
        return {mac: (v[0], int(v[1]), v[2]) for mac, v in raw["devices"].items()}

    def store(self, commit_id: str, state: State) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{commit_id}.{os.getpid()}.tmp"
            tmp.write_text(
                json.dumps(
                    {"format": CACHE_FORMAT, "devices": {m: list(v) for m, v in state.items()}}
                )
            )
            os.replace(tmp, self.directory / f"{commit_id}.json")
        except OSError:
            pass  # a cache that cannot be written only costs time


def compute_states(
    head: pygit2.Commit, evaluate: Evaluate, cache: VersionCache | None = None
) -> State:
    """The state at `head`: for every device, its digest and the commit that set it."""
    chain = first_parent_chain(head)
    state: State = {}
    start = 0
    if cache is not None:
        for i in range(len(chain) - 1, -1, -1):
            hit = cache.load(str(chain[i].id))
            if hit is not None:
                state, start = hit, i + 1
                break
    for depth0 in range(start, len(chain)):
        commit = chain[depth0]
        digests = evaluate(commit)
        if digests is not None:
            state = step(state, digests, depth0 + 1, str(commit.id))
        if cache is not None and (depth0 == len(chain) - 1 or depth0 % 64 == 0):
            cache.store(str(commit.id), state)
    return state


def step(prev: State, digests: Mapping[str, str], depth: int, commit_id: str) -> State:
    nxt: State = {}
    for mac, digest in digests.items():
        old = prev.get(mac)
        nxt[mac] = old if old is not None and old[0] == digest else (digest, depth, commit_id)
    return nxt


def versions(state: State, floor: int) -> dict[str, VersionInfo]:
    return {mac: VersionInfo(floor + depth, depth, cid) for mac, (_, depth, cid) in state.items()}
