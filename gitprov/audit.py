"""For auditors: what did a device get, when, from whom, and where did each value come from.

`history` follows the first-parent chain with the same evaluation as versions (over the
whole commit graph), so every entry is a version the device was (or would have been)
given, with the commit that set it. `blame` maps each rendered line to
the YAML line that set it and to the commit that last touched that YAML line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pygit2

from gitprov.compile import Entry, placeholder_resolver
from gitprov.errors import GitprovError
from gitprov.pipeline import Pipeline
from gitprov.version import State, first_parent_chain


@dataclass(frozen=True)
class Change:
    commit: str  # the commit of the first-parent chain where this version took effect
    version: int  # 0 when removed
    set_by: str  # the commit that set this number (a branch commit, for a merge)
    author: str  # of set_by
    when: str  # ISO 8601, UTC, of set_by
    summary: str  # of set_by
    event: str  # "added", "changed", "removed", "renumbered" (same content, new number)


def _describe(commit: pygit2.Commit) -> tuple[str, str, str]:
    when = datetime.fromtimestamp(commit.author.time, UTC).isoformat(timespec="seconds")
    return commit.author.name, when, commit.message.splitlines()[0] if commit.message else ""


def history(p: Pipeline, head: pygit2.Commit, mac: str) -> list[Change]:
    """Every version `mac` had on head's first-parent chain (what a server following that
    branch gave it), oldest first, each with the commit that set the number."""
    assert p.repo is not None
    chain = [str(c.id) for c in first_parent_chain(head)]
    on_chain = set(chain)
    seen: dict[str, tuple[str, int, str] | None] = {}

    def observe(commit: pygit2.Commit, state: State) -> None:
        cid = str(commit.id)
        if cid in on_chain:
            info = state.info(mac)
            seen[cid] = (state.entry(mac)[0], info.version, info.commit) if info else None

    p.state(head, observe=observe)
    out: list[Change] = []
    last: tuple[str, int, str] | None = None
    for cid in chain:
        now = seen.get(cid)
        if now == last or (now is None and last is None):
            continue
        if now is None:
            event, version, set_by = "removed", 0, cid
        else:
            event = (
                "added" if last is None
                else "changed" if now[0] != last[0]
                else "renumbered"
            )
            version, set_by = now[1], now[2]
        by = p.repo.get(set_by)
        if event == "renumbered" or not isinstance(by, pygit2.Commit):
            # A floor raise or a merge gave the same content a new number: this commit.
            set_by = cid
            by = p.repo.get(cid)
        assert isinstance(by, pygit2.Commit)
        author, when, summary = _describe(by)
        out.append(Change(cid, version, set_by, author, when, summary, event))
        last = now
    return out


@dataclass(frozen=True)
class BlameLine:
    key: str
    value: str  # redacted
    origin: str  # file:line:col that set it, or "gitprov" for computed values
    commit: str | None  # the commit that last changed that YAML line
    author: str | None


def blame(p: Pipeline, head: pygit2.Commit, mac: str) -> list[BlameLine]:
    loaded = p.load_commit(head)
    inv = loaded.inventory
    if inv is None:
        raise GitprovError(
            f"{str(head.id)[:12]} does not validate", hint="run `gitprov validate --rev` on it"
        )
    device = inv.device(mac)
    if device is None:
        raise GitprovError(f"no device {mac} at {str(head.id)[:12]}")
    cfg = p.compile(inv, device, placeholder_resolver(inv.sealed))
    assert p.repo is not None
    blames: dict[str, pygit2.Blame] = {}
    out = []
    for e in cfg.entries:
        out.extend(_blame_entry(p.repo, head, e, blames))
    return out


def _blame_entry(
    repo: pygit2.Repository, head: pygit2.Commit, e: Entry, cache: dict[str, pygit2.Blame]
) -> list[BlameLine]:
    origins = [o for o in e.origins if o is not None]
    if not origins:
        return [BlameLine(e.key, e.redacted, "catalog default", None, None)]
    lines = []
    for o in dict.fromkeys(origins):
        if o.file not in cache:
            cache[o.file] = repo.blame(o.file, newest_commit=head.id)
        hunk = cache[o.file].for_line(o.line)
        commit = repo.get(hunk.final_commit_id)
        author = commit.author.name if isinstance(commit, pygit2.Commit) else None
        lines.append(BlameLine(e.key, e.redacted, str(o), str(hunk.final_commit_id), author))
    return lines
