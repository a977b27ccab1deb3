"""For auditors: what did a device get, when, from whom, and where did each value come from.

`history` follows the first-parent chain with the same evaluation as versions (over the
whole commit graph), so every entry is a version the device was (or would have been)
given, with the commit that set it. It reads the version cache's deltas (one per commit:
the entries that changed), evaluating only the commits the cache lacks, so finding the
commits where the device's entry changed is one pass over small records; only those
commits are then read for their author and message.

`blame` maps each rendered line to the YAML line that set it and to the commit that last
touched that YAML line. Validating the commit needs the highest version_floor of its
history (GP113); when the version cache does not know it yet, the highest floor any
ancestor *declares* bounds it from above, and a commit at or above that bound passes
GP113 whatever the exact value is, so the history is not evaluated for it. Results are
kept in the cache directory, by commit, device and everything else they depend on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pygit2

from gitprov import statejson
from gitprov import version as versioning
from gitprov.compile import Entry, placeholder_resolver
from gitprov.errors import GitprovError, InvalidInventory
from gitprov.inventory import Device, Inventory
from gitprov.pipeline import Pipeline
from gitprov.source import author_name, commit_message, git_time
from gitprov.version import ABSENT, BOOTSTRAP

BLAME_KEEP = 64  # blame results kept in the cache directory (newest first)


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
    when = git_time(commit.author.time)  # (UTC)
    message = commit_message(commit)
    return author_name(commit), when, message.splitlines()[0] if message else ""


def history(p: Pipeline, head: pygit2.Commit, mac: str) -> list[Change]:
    """Every version `mac` had on head's first-parent chain (what a server following that
    branch gave it), oldest first, each with the commit that set the number."""
    assert p.repo is not None
    deltas = versioning.first_parent_deltas(
        p.repo, head, p.evaluate, p.version_cache, progress=p.progress, ahead=p.diffs_ahead
    )
    entry: versioning.Entry = (ABSENT, 0, "")
    boot: versioning.Entry = (ABSENT, 0, "")
    out: list[Change] = []
    last: tuple[str, int, str] | None = None
    for d in deltas:
        # Consecutive on the chain: each delta is the change from the one before.
        entry = d.changed.get(mac, entry)
        boot = d.changed.get(BOOTSTRAP, boot)
        now = None
        if entry[0] != ABSENT:
            staged = boot[0].startswith(versioning.STAGED)
            number = versioning.number(mac, d.floor, boot[1], entry[1], staged=staged)
            now = (entry[0], number, entry[2])
        if now == last:
            continue
        cid = d.commit
        if now is None:
            event, version, set_by = "removed", 0, cid
        else:
            event = "added" if last is None else "changed" if now[0] != last[0] else "renumbered"
            version, set_by = now[1], now[2]
        by = p.repo.get(set_by)
        # The same content with a new number: a floor raise (or the bootstrap's lift) gave
        # it on this commit; a merge that brought a branch's higher count (the branch
        # changed the device and changed it back) names that branch's commit, as
        # `versions` does.
        brought = last is not None and now is not None and now[2] != last[2]
        if (event == "renumbered" and not brought) or not isinstance(by, pygit2.Commit):
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
    # file:line:col that set it, "catalog default", or VERSION_ORIGIN for the version
    origin: str
    # the commit that last changed that YAML line; for the version, the one that gave
    # the rule's number (a --force publish may have served a higher one: `history`)
    commit: str | None
    author: str | None


def blame(
    p: Pipeline,
    head: pygit2.Commit,
    mac: str,
    find: Callable[[Inventory, str], Device] | None = None,
) -> list[BlameLine]:
    """Each rendered parameter of `mac` at `head` with where it is set. `find` looks the
    device up (and says what to do when it is not there). A shallow clone is refused
    (IncompleteHistory): its boundary commit would take the blame for every line."""
    assert p.repo is not None
    versioning.require_complete(p.repo)
    kept = _kept_blame(p, head, mac)
    if kept is not None:
        return kept
    loaded = p.load(p.source(head), p.head_floor(head))
    inv = loaded.inventory
    if inv is None:
        raise InvalidInventory(
            f"the inventory has {len(loaded.errors)} error(s)",
            hint="run `gitprov validate` and fix them",
            problems=loaded.problems,
        )
    device = find(inv, mac) if find is not None else inv.device(mac)
    if device is None:
        raise GitprovError(f"no device {mac} at {str(head.id)[:12]}")
    cfg = p.compile(inv, device, placeholder_resolver(inv.sealed))
    blames: dict[str, pygit2.Blame] = {}
    out = []
    for e in cfg.entries:
        out.extend(_blame_entry(p.repo, head, e, blames))
    _keep_blame(p, head, mac, out)
    return out


VERSION_KEY = "DBID_DBASE_VERSION"
VERSION_ORIGIN = "the version rule over the git history (gitprov versions)"


def blame_version(p: Pipeline, head: pygit2.Commit, mac: str) -> BlameLine | None:
    """The file's first line, set by no YAML line: the version rule's number over the
    history, at the commit that gave it (as `versions` says). Asked for by name only:
    it needs the version state of the whole history, which the YAML lines' blame does
    not (a cold one at 5,000 commits costs what `versions` does)."""
    assert p.repo is not None
    info = p.versions(head).get(mac)
    if info is None:
        return None
    by = p.repo.get(info.commit)
    author = author_name(by) if isinstance(by, pygit2.Commit) else None
    return BlameLine(VERSION_KEY, str(info.version), VERSION_ORIGIN, info.commit, author)


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
        author = author_name(commit) if isinstance(commit, pygit2.Commit) else None
        lines.append(BlameLine(e.key, e.redacted, str(o), str(hunk.final_commit_id), author))
    return lines


def _blame_path(p: Pipeline, head: pygit2.Commit, mac: str) -> Path | None:
    directory = p.version_cache.directory
    if directory is None:
        return None
    # The salted directory names gitprov's code, the catalog and the inventory directory;
    # strict validation can refuse what lenient validation passes.
    strict = "s" if p.options.strict else "l"
    return directory / "blame" / f"{head.id}-{mac}-{strict}.blame"


def _kept_blame(p: Pipeline, head: pygit2.Commit, mac: str) -> list[BlameLine] | None:
    path = _blame_path(p, head, mac)
    found = versioning.read_file(path) if path is not None else None
    if found is None:
        return None
    try:
        rows = statejson.loads(found[1])
        return [
            BlameLine(
                str(r["key"]),
                str(r["value"]),
                str(r["origin"]),
                None if r["commit"] is None else str(r["commit"]),
                None if r["author"] is None else str(r["author"]),
            )
            for r in rows
        ]
    except (ValueError, KeyError, TypeError):
        return None


def _keep_blame(p: Pipeline, head: pygit2.Commit, mac: str, lines: list[BlameLine]) -> None:
    target = _blame_path(p, head, mac)
    if target is None:
        return
    body = json.dumps([asdict(b) for b in lines], separators=(",", ":")).encode()
    if not versioning.write_file(target, {}, [body]):
        return
    with contextlib.suppress(OSError):
        kept = sorted(target.parent.glob("*.blame"), key=lambda f: f.stat().st_mtime)
        for old in kept[:-BLAME_KEEP]:
            old.unlink()
