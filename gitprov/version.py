"""DBID_DBASE_VERSION from the commit graph alone (DESIGN.md invariant 2, docs/versions.md).

Per key k (a device's MAC, or BOOTSTRAP for the option-66 files) and commit X, with c(X)
the key's content digest at X ("" when X has no such file):

    n(X) = max over the parents P of X of:  n(P)      if c(P) == c(X)
                                            n(P) + 1  if c(P) != c(X)
    a root commit has one virtual parent with c = "" and n = 0
    floor(X) = max(version_floor at X, floor(P) for every parent P)
    version(X) = floor(X) + lift(X) + n(X)    for a device
    version(X) = floor(X) + lift(X)           for the option-66 bootstrap files
    lift(X) = max(n_BOOTSTRAP(X) - 1, 0)      (0 in a fleet that never used option 66)

Every edge parent → child is non-decreasing and strictly increasing where the content
changes, so every path is too: whatever commit was published, any descendant gives each
device a number at least as high, and higher when its content differs. First-parent
depth has no such property (a fast-forward changes which chain is the first-parent one).

A commit that fails validation was never published: its contents are its first parent's
(`floor` still takes the maximum over all parents). Removal is a content change like any
other, so a re-added device continues above every number it had.

No shared mutable state: CI and every server compute the same numbers from the history.
A cache of per-commit states (keyed by commit id under a salt naming everything else the
result depends on) saves work; it is never the truth, and deleting it changes no number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pygit2

from gitprov.errors import UsageError

CACHE_FORMAT = 2
ABSENT = ""  # the digest of a key a commit does not have
# The version key of the option-66 bootstrap files (all carry the same rule), or ABSENT
# when the inventory publishes none. Device keys are MACs: 12 hex digits, never this.
BOOTSTRAP = "bootstrap"

# (content digest or ABSENT, n, id of the commit that set this (digest, n) pair)
Entry = tuple[str, int, str]
_NONE: Entry = (ABSENT, 0, "")


@dataclass(frozen=True)
class VersionInfo:
    version: int
    n: int  # the rule's count for this key: version - floor
    commit: str  # the commit that set this number


@dataclass(frozen=True)
class Evaluated:
    """What one valid commit holds: each key's content digest and its declared floor."""

    digests: Mapping[str, str]
    floor: int


@dataclass(frozen=True)
class State:
    """The rule's result at one commit. `keys` keeps removed keys too (digest ABSENT),
    so a key that comes back continues above every number it had."""

    floor: int = 0
    floor_by: str = ""  # the commit whose version_floor is `floor` ("" if none)
    keys: Mapping[str, Entry] = field(default_factory=dict)
    valid: bool = False  # whether this commit itself validated

    def entry(self, key: str) -> Entry:
        return self.keys.get(key, _NONE)

    def present(self) -> Iterable[str]:
        return (k for k, e in self.keys.items() if e[0] != ABSENT)

    def info(self, key: str) -> VersionInfo | None:
        digest, n, by = self.entry(key)
        if digest == ABSENT:
            return None
        return VersionInfo(self._number(key, n), n, by)

    def versions(self) -> dict[str, VersionInfo]:
        return {
            k: VersionInfo(self._number(k, n), n, by)
            for k, (digest, n, by) in self.keys.items()
            if digest != ABSENT
        }

    def _number(self, key: str, n: int) -> int:
        # The option-66 file leads a new device to its own file, which it applies only if
        # that number is higher: the bootstrap sits one below the floor's share of the
        # device numbers, and each of its changes lifts every device number with it.
        lift = max(self.entry(BOOTSTRAP)[1] - 1, 0)
        if key == BOOTSTRAP:
            return self.floor + lift
        return self.floor + lift + n


class IncompleteHistory(UsageError):
    """Versions need every ancestor: a shallow or partial clone cannot compute them."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the history is incomplete ({detail}): versions are computed from every "
            "ancestor commit and cannot be guessed",
            hint="fetch the whole history: `git fetch --unshallow` (in GitHub Actions: "
            "actions/checkout with `fetch-depth: 0`)",
        )


class StateCache(Protocol):
    def load(self, commit_id: str) -> State | None: ...

    def store(self, commit_id: str, state: State) -> None: ...


class Evaluator(Protocol):
    def __call__(self, commit: pygit2.Commit, floor_min: int) -> Evaluated | None:
        """The commit's digests and floor, or None if it fails validation, given the
        highest floor of its parents (a lower version_floor makes it invalid)."""
        ...


Observe = Callable[[pygit2.Commit, State], None]


def first_parent_chain(commit: pygit2.Commit) -> list[pygit2.Commit]:
    """The commit and its first-parent ancestors, root first."""
    chain = [commit]
    while chain[-1].parent_ids:
        chain.append(chain[-1].parents[0])
    chain.reverse()
    return chain


def require_complete(repo: pygit2.Repository) -> None:
    if repo.is_shallow:
        raise IncompleteHistory("shallow clone")


def step(cid: str, parents: list[State], result: Evaluated | None) -> State:
    """The state of commit `cid` from its parents' states and what it holds."""
    floor, floor_by = 0, ""
    for p in parents:
        if p.floor > floor:
            floor, floor_by = p.floor, p.floor_by
    if result is not None and result.floor > floor:
        floor, floor_by = result.floor, cid
    if result is None:
        if not parents:
            return State(floor, floor_by, {}, False)
        first = parents[0].keys
        digests: Mapping[str, str] = {k: e[0] for k, e in first.items()}
    else:
        digests = result.digests
    if len(parents) == 1:
        keys = _step_one(cid, parents[0].keys, digests)
    else:
        keys = _step_many(cid, parents, digests)
    return State(floor, floor_by, keys, result is not None)


def _step_one(
    cid: str, parent: Mapping[str, Entry], digests: Mapping[str, str]
) -> Mapping[str, Entry]:
    # The common case, kept cheap: the parent's map is shared when nothing changed.
    changed: dict[str, Entry] = {}
    for k, d in digests.items():
        e = parent.get(k, _NONE)
        if e[0] != d:
            changed[k] = (d, e[1] + 1, cid)
    for k, e in parent.items():
        if e[0] != ABSENT and k not in digests:
            changed[k] = (ABSENT, e[1] + 1, cid)
    if not changed:
        return parent
    keys = dict(parent)
    keys.update(changed)
    return keys


def _step_many(cid: str, parents: list[State], digests: Mapping[str, str]) -> dict[str, Entry]:
    sources = parents or [State()]
    names: set[str] = set(digests)
    for p in sources:
        names.update(p.keys)
    keys: dict[str, Entry] = {}
    for k in sorted(names):
        d = digests.get(k, ABSENT)
        best: Entry | None = None
        for p in sources:
            pd, pn, pby = p.keys.get(k, _NONE)
            # On a tie the inherited pair wins: that content already had that number.
            cand = (d, pn, pby) if pd == d else (d, pn + 1, cid)
            if best is None or cand[1] > best[1] or (
                cand[1] == best[1] and best[2] == cid and cand[2] != cid
            ):
                best = cand
        assert best is not None
        if best != _NONE:
            keys[k] = best
    return keys


class VersionCache:
    """Per-commit states as JSON files named by commit id; safe to delete at any time.

    A commit id names its whole history; `salt` names everything else a state depends on
    (catalog, renderer, inventory directory, this rule's format)."""

    def __init__(self, directory: Path, salt: str) -> None:
        self.directory = directory / salt[:16]

    def load(self, commit_id: str) -> State | None:
        try:
            raw = json.loads((self.directory / f"{commit_id}.json").read_text())
            if raw.get("format") != CACHE_FORMAT:
                return None
            keys = {k: (str(v[0]), int(v[1]), str(v[2])) for k, v in raw["keys"].items()}
            return State(int(raw["floor"]), str(raw["floor_by"]), keys, bool(raw["valid"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None

    def store(self, commit_id: str, state: State) -> None:
        body = {
            "format": CACHE_FORMAT,
            "floor": state.floor,
            "floor_by": state.floor_by,
            "valid": state.valid,
            "keys": {k: list(e) for k, e in state.keys.items()},
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{commit_id}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(body, separators=(",", ":")))
            os.replace(tmp, self.directory / f"{commit_id}.json")
        except OSError:
            pass  # a cache that cannot be written only costs time


def _parents(repo: pygit2.Repository, commit: pygit2.Commit) -> list[pygit2.Commit]:
    out: list[pygit2.Commit] = []
    for pid in commit.parent_ids:
        try:
            parent = repo.get(pid)
        except (ValueError, pygit2.GitError):
            parent = None
        if not isinstance(parent, pygit2.Commit):
            raise IncompleteHistory(f"commit {str(pid)[:12]} is missing")
        out.append(parent)
    return out


def compute_state(
    repo: pygit2.Repository,
    head: pygit2.Commit,
    evaluate: Evaluator,
    cache: StateCache | None = None,
    *,
    observe: Observe | None = None,
    store_every: int = 64,
    progress: Callable[[str, int, int], None] | None = None,
) -> State:
    """The state at `head`, evaluating every ancestor that no cached state covers.

    With `observe`, every ancestor is evaluated (the cache is written, not read) and
    `observe(commit, state)` is called for each, parents before children."""
    require_complete(repo)
    known: dict[str, State] = {}
    pending: dict[str, pygit2.Commit] = {}
    parents_of: dict[str, list[str]] = {}
    order: list[str] = []  # parents before children
    # Iterative post-order walk: first parents first, so a chain is evaluated in a row
    # and each commit finds its first parent's snapshot still at hand.
    stack: list[tuple[pygit2.Commit, bool]] = [(head, False)]
    while stack:
        commit, expanded = stack.pop()
        cid = str(commit.id)
        if expanded:
            order.append(cid)
            continue
        if cid in pending or cid in known:
            continue
        hit = cache.load(cid) if cache is not None and observe is None else None
        if hit is not None:
            known[cid] = hit
            continue
        pending[cid] = commit
        parents = _parents(repo, commit)
        parents_of[cid] = [str(p.id) for p in parents]
        stack.append((commit, True))
        stack.extend((p, False) for p in reversed(parents))
    if not order:
        return known[str(head.id)]
    # Keep each state only until its last child in this walk is done.
    remaining: dict[str, int] = {}
    for cid in order:
        for pid in parents_of[cid]:
            remaining[pid] = remaining.get(pid, 0) + 1
    states = known
    for i, cid in enumerate(order):
        commit = pending.pop(cid)
        parent_states = [states[pid] for pid in parents_of[cid]]
        floor_min = max((s.floor for s in parent_states), default=0)
        state = step(cid, parent_states, evaluate(commit, floor_min))
        states[cid] = state
        if observe is not None:
            observe(commit, state)
        if progress is not None:
            progress("history", i + 1, len(order))
        if cache is not None and (i % store_every == store_every - 1 or i == len(order) - 1):
            cache.store(cid, state)
        for pid in parents_of[cid]:
            remaining[pid] -= 1
            if remaining[pid] == 0:
                states.pop(pid, None)
    return states[str(head.id)]
