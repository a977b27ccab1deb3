"""Versions across any commit DAG, against an oracle written from the rule alone.

The rule, per device key k (its MAC), over all parents:

- valid(X): gitprov loads the inventory at X without errors, and X's declared
  version_floor is not lower than F(P) of any parent P (else GP113 makes it invalid).
- c_k(X): the device's rendered content at a valid X, or ABSENT; an invalid commit has
  its first parent's c (an invalid root: everything ABSENT).
- n_k(X) = max over parents P of n_k(P) + (1 if c_k(P) != c_k(X) else 0); a root has one
  virtual parent with c = ABSENT and n = 0. Removing a device counts, adding it again too.
- F(X) = max(declared floor at X if X is valid, F(P) for every parent P), 0 if none.
- version_k(X) = F(X) + n_k(X), for every device present at a valid X.

`oracle` below is that definition and nothing else; it does not import gitprov.version.
What it is fed (each commit's content, without history) comes from gitprov's loader and
compiler, the way tests/version_test.py reads it.

Properties, on random histories (tests/fixtures/dag.py):
1. `gitprov versions --rev H --format json` gives the oracle's numbers at every valid H,
   in the repository (cache warmed in commit order) and in a fresh `git clone
   --no-checkout` (no cache, newest first); an invalid H is refused with exit code 1.
2. Random publish sequences (each head descends from the published one, now and then a
   --force of one that does not): per device the served version never goes down, and
   goes up whenever the served body changes; until the first --force the served versions
   are the oracle's. A --force, or a publish after one, may be refused (exit 1) and then
   serves exactly what it served before. Exit code 3 fails the test anywhere.
3. Not asserted, counted: how often a device's served number rose with its body
   unchanged, and why. The figures are printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from gitprov.cli import main
from gitprov.compile import placeholder_resolver
from gitprov.formats import flyingvoice
from gitprov.pipeline import Pipeline
from tests.fixtures.dag import History, Plan, build, plans_st
from tests.fixtures.roots import root_args

# -- the oracle ----------------------------------------------------------------------------
Content = Mapping[str, bytes]  # key -> rendered content; a key that is not there is ABSENT


@dataclass(frozen=True)
class Observed:
    """One commit on its own, without its history."""

    content: Content | None  # None: the inventory at this commit has errors
    floor: int = 0  # its declared version_floor (when content is not None)


@dataclass(frozen=True)
class Verdict:
    valid: bool
    floor: int  # F(X)
    content: Content  # c_k(X); an invalid commit's is its first parent's
    counts: Mapping[str, int]  # n_k(X), for every key the history ever had

    def versions(self) -> dict[str, int]:
        assert self.valid
        return {k: self.floor + self.counts[k] for k in self.content}


def oracle(commits: Sequence[tuple[str, Sequence[str], Observed]]) -> dict[str, Verdict]:
    """Every commit's verdict; `commits` lists (id, parent ids, observed), parents first."""
    keys = sorted({k for _, _, o in commits if o.content is not None for k in o.content})
    root_parent = Verdict(False, 0, {}, dict.fromkeys(keys, 0))
    out: dict[str, Verdict] = {}
    for cid, parent_ids, obs in commits:
        parents = [out[p] for p in parent_ids]  # KeyError: not in topological order
        history_floor = max((p.floor for p in parents), default=0)
        valid = obs.content is not None and obs.floor >= history_floor
        if obs.content is not None and valid:
            content: Content = obs.content
            floor = max(obs.floor, history_floor)
        else:
            content = parents[0].content if parents else {}
            floor = history_floor
        counts = {
            k: max(
                p.counts[k] + (p.content.get(k) != content.get(k)) for p in parents or [root_parent]
            )
            for k in keys
        }
        out[cid] = Verdict(valid, floor, content, counts)
    return out


# What a commit's tree gives, by tree id: the same bytes give the same answer in any
# repository, so this is shared by all examples.
_OBSERVED: dict[str, Observed] = {}


def observe(repo: pygit2.Repository, pipeline: Pipeline, cid: str) -> Observed:
    commit = repo.get(cid)
    assert isinstance(commit, pygit2.Commit)
    tree = str(commit.tree_id)
    hit = _OBSERVED.get(tree)
    if hit is None:
        loaded = pipeline.load(pipeline.source(commit))
        inv = loaded.inventory
        if inv is None:
            hit = Observed(None)
        else:
            resolve = placeholder_resolver(inv.sealed)
            hit = Observed(
                {
                    d.mac: d.doc.path.encode() + flyingvoice.body(pipeline.compile(inv, d, resolve))
                    for d in inv.devices
                },
                inv.fleet.version_floor,
            )
        _OBSERVED[tree] = hit
    return hit


# -- the oracle by hand --------------------------------------------------------------------
def _ok(floor: int, **devices: str) -> Observed:
    return Observed({k: v.encode() for k, v in devices.items()}, floor)


def test_oracle_foxtrot_keeps_the_number_main_had() -> None:
    # R: d=a, floor 1000 -> n=1, 1001. M1 (main): d=b -> 1002. B1 (branch from R): only e
    # changes. X (branch merges main; first parent B1): d=b, so
    # n_d = max(n(B1)=1 + 1 (a != b), n(M1)=2 + 0) = 2 -> 1002. Main fast-forwards to X:
    # the number main had is kept, never lowered.
    v = oracle(
        [
            ("R", [], _ok(1000, d="a", e="x")),
            ("M1", ["R"], _ok(1000, d="b", e="x")),
            ("B1", ["R"], _ok(1000, d="a", e="y")),
            ("X", ["B1", "M1"], _ok(1000, d="b", e="y")),
        ]
    )
    assert v["R"].versions() == {"d": 1001, "e": 1001}
    assert v["M1"].versions() == {"d": 1002, "e": 1001}
    assert v["B1"].versions() == {"d": 1001, "e": 1002}
    assert v["X"].versions() == {"d": 1002, "e": 1002}


def test_oracle_removal_and_readd_count_and_floor_raise_adds() -> None:
    # R: d=a -> 1001. X1 removes d: n_d=2 (hidden). X2 adds it back as it was: n_d=3 ->
    # 1003, content unchanged from R. X3 raises the floor to 2000: 2003.
    v = oracle(
        [
            ("R", [], _ok(1000, d="a", e="x")),
            ("X1", ["R"], _ok(1000, e="x")),
            ("X2", ["X1"], _ok(1000, d="a", e="x")),
            ("X3", ["X2"], _ok(2000, d="a", e="x")),
        ]
    )
    assert v["X1"].versions() == {"e": 1001}
    assert v["X1"].counts["d"] == 2
    assert v["X2"].versions() == {"d": 1003, "e": 1001}
    assert v["X3"].versions() == {"d": 2003, "e": 2001}


def test_oracle_invalid_commits_and_a_lowered_floor() -> None:
    # R: floor 1000, d=a -> 1001. X1 raises the floor to 2000 -> 2001. X2 writes 1500 and
    # d=b: GP113, invalid; it keeps X1's content a and F=2000. X3 (child of X2) writes
    # 2000 and d=b: valid, n_d = 1 + 1 -> 2002. Y1 (child of R) does not parse: invalid,
    # content of R. A merge M (first parent Y1, floor 1000 there) of X3 writing 1000 is
    # invalid too: the floor is compared with every parent's F, and F(X3) = 2000.
    v = oracle(
        [
            ("R", [], _ok(1000, d="a")),
            ("X1", ["R"], _ok(2000, d="a")),
            ("X2", ["X1"], _ok(1500, d="b")),
            ("X3", ["X2"], _ok(2000, d="b")),
            ("Y1", ["R"], Observed(None)),
            ("M", ["Y1", "X3"], _ok(1000, d="b")),
            ("M2", ["Y1", "X3"], _ok(2000, d="b")),
            ("BAD", [], Observed(None)),
            ("AFTER", ["BAD"], _ok(1000, d="a")),
        ]
    )
    assert v["X1"].versions() == {"d": 2001}
    assert not v["X2"].valid
    assert (v["X2"].floor, v["X2"].content, v["X2"].counts["d"]) == (2000, {"d": b"a"}, 1)
    assert v["X3"].versions() == {"d": 2002}
    assert not v["Y1"].valid and v["Y1"].content == {"d": b"a"}
    assert not v["M"].valid and v["M"].content == {"d": b"a"}  # Y1's: the first parent
    # M2: max(n(Y1)=1 + 1 (a != b), n(X3)=2 + 0) = 2 -> 2002.
    assert v["M2"].versions() == {"d": 2002}
    # An invalid root has every device ABSENT: adding d after it counts once.
    assert v["BAD"].counts["d"] == 0
    assert v["AFTER"].versions() == {"d": 1001}


def test_oracle_merge_can_raise_a_number_without_a_change() -> None:
    # B1 and B2 both change d from R's a (to b, to c): n=2 on each. Merging them with d=b
    # (first parent B1) gives max(2 + 0, 2 + 1) = 3 -> 1003: the number rises although the
    # content is B1's. An octopus with R itself as a third parent changes nothing more.
    v = oracle(
        [
            ("R", [], _ok(1000, d="a")),
            ("B1", ["R"], _ok(1000, d="b")),
            ("B2", ["R"], _ok(1000, d="c")),
            ("M", ["B1", "B2"], _ok(1000, d="b")),
            ("O", ["B1", "B2", "R"], _ok(1000, d="b")),
        ]
    )
    assert v["B1"].versions() == v["B2"].versions() == {"d": 1002}
    assert v["M"].versions() == {"d": 1003}
    assert v["O"].versions() == {"d": 1003}


# -- running gitprov -----------------------------------------------------------------------
def gitprov(*args: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout then stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


def versions_at(repo: Path, cid: str) -> tuple[int, str, dict[str, int]]:
    code, text = gitprov("--repo", str(repo), "versions", "--rev", cid, "--format", "json")
    got: dict[str, int] = {}
    if code == 0:
        rows: list[dict[str, Any]] = json.loads(text)
        got = {row["mac"]: int(row["version"]) for row in rows}
        assert len(got) == len(rows), text
    return code, text, got


def served(base: Path) -> dict[str, tuple[int, str]]:
    """MAC -> (version, sha256_body) of the device files in the manifest."""
    raw = json.loads((base / "state" / "manifest.json").read_text())
    out: dict[str, tuple[int, str]] = {}
    for name, e in raw["files"].items():
        if e.get("kind") != "device":
            continue
        entry = (int(e["version"]), str(e["sha256_body"]))
        # a key rotation's old path carries the same version and body
        assert out.setdefault(e["mac"], entry) == entry, (name, e)
    return out


def snapshot(base: Path) -> dict[str, str]:
    """Every file under the publish base (state and roots), by sha256."""
    if not base.exists():
        return {}
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file() and not p.name.startswith(".")  # the lock file and temps
    }


# -- counting (property 3) -----------------------------------------------------------------
SUMMARY: Counter[str] = Counter()


class _SummaryPlugin:
    """Prints SUMMARY in pytest's terminal summary (output of a passing test is hidden)."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not SUMMARY:
            return
        write = terminalreporter.write_line
        terminalreporter.section("version_property_test: what the examples did")
        write("(counted over every example run, shrinking included)")
        for what, n in sorted(SUMMARY.items()):
            write(f"  {n:6d}  {what}")
        same = SUMMARY["publish pairs: device served in both, same body"]
        rose = sum(n for what, n in SUMMARY.items() if what.startswith("same body, number rose"))
        if same:
            write(
                f"  => the number rose with the body unchanged in {rose} of {same} "
                f"({100 * rose / same:.1f}%) consecutive publishes of a device"
            )


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    if not manager.has_plugin("version-property-summary"):
        manager.register(_SummaryPlugin(), "version-property-summary")


def ancestors(nodes: Mapping[str, Sequence[str]], cid: str) -> set[str]:
    seen = {cid}
    todo = [cid]
    while todo:
        for p in nodes[todo.pop()]:
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def why_rose(
    parents: Mapping[str, Sequence[str]],
    verdicts: Mapping[str, Verdict],
    mac: str,
    old: str,
    new: str,
) -> str:
    """Why the oracle's number for `mac` is higher at `new` than at `old` (a descendant)."""
    a, b = verdicts[old], verdicts[new]
    reasons = []
    if b.floor > a.floor:
        reasons.append("floor raised")
    if b.counts[mac] > a.counts[mac]:
        # Some commit between them had other content (see the oracle: n only rises on an
        # edge whose ends differ). On new's first-parent line: reverted, or removed and
        # added back; only on side branches: a merge took the higher count of a parent.
        between = ancestors(parents, new) - ancestors(parents, old)
        line = set()
        x: str | None = new
        while x is not None and x in between:
            line.add(x)
            x = parents[x][0] if parents[x] else None
        before = a.content.get(mac)
        if any(verdicts[c].content.get(mac) != before for c in line):
            reasons.append("changed and changed back on the first-parent line (revert, re-add)")
        else:
            reasons.append("merge of a branch that had changed it")
    return " + ".join(reasons) or "not by the rule (the manifest's safety net?)"


# -- the property --------------------------------------------------------------------------
publishes_st = st.lists(
    st.tuples(st.integers(0, 4).map(lambda i: i == 0), st.integers(0, 63)),
    min_size=1,
    max_size=6,
)


def _valid_label(v: Verdict, o: Observed) -> str:
    if v.valid:
        return "valid"
    return "invalid: load errors" if o.content is None else "invalid: floor lowered (GP113)"


@pytest.mark.slow(seconds=200)
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans_st, publishes=publishes_st)
def test_versions_follow_the_rule_in_any_history(
    plan: Plan, publishes: list[tuple[bool, int]], private_key: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="gitprov-vprop-") as tmp:
        top = Path(tmp)
        history = build(top / "repo", plan)
        check_history(history, top, publishes)


def check_history(history: History, top: Path, publishes: list[tuple[bool, int]]) -> None:
    repo_path = history.repo.path
    pipeline = Pipeline(history.pygit)
    observed = {n.id: observe(history.pygit, pipeline, n.id) for n in history.nodes}
    verdicts = oracle([(n.id, n.parents, observed[n.id]) for n in history.nodes])
    parents = {n.id: n.parents for n in history.nodes}
    names = {n.id: f"n{i}" for i, n in enumerate(history.nodes)}
    note(history.describe())
    for n in history.nodes:
        v = verdicts[n.id]
        label = _valid_label(v, observed[n.id])
        note(f"{names[n.id]}: {label}" + (f" {v.versions()}" if v.valid else ""))
        SUMMARY[f"commits: {label}"] += 1
        SUMMARY[f"commits: {len(n.parents)} parent(s)"] += 1
    for op in history.applied:
        SUMMARY[f"operations: {op}"] += 1
    valid = [n.id for n in history.nodes if verdicts[n.id].valid]

    # 1. `versions` at every commit, in commit order (the cache grows one commit at a time).
    for n in history.nodes:
        code, text, got = versions_at(repo_path, n.id)
        assert code != 3, text
        if verdicts[n.id].valid:
            assert code == 0, f"{names[n.id]} is valid by the rule:\n{text}"
            assert got == verdicts[n.id].versions(), f"{names[n.id]} in the repository"
        else:
            assert code == 1, f"{names[n.id]} is invalid by the rule:\n{text}"

    # ... and in a fresh clone without checkout (no cache), newest commit first. (Asking
    # only for the newest and the branch heads here saves ~15% of the run time.)
    clone = top / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-checkout", str(repo_path), str(clone)],
        check=True,
        capture_output=True,
    )
    assert not (clone / ".git" / "gitprov-cache").exists()
    for cid in reversed(valid):
        code, text, got = versions_at(clone, cid)
        assert code == 0, f"{names[cid]} in the clone:\n{text}"
        assert got == verdicts[cid].versions(), f"{names[cid]} in a fresh clone"

    # ... and in the repository again after deleting its cache.
    shutil.rmtree(Path(history.pygit.path) / "gitprov-cache", ignore_errors=True)
    if valid:
        code, text, got = versions_at(repo_path, valid[-1])
        assert (code, got) == (0, verdicts[valid[-1]].versions()), text

    # 2. Publish sequences.
    base = top / "pub"
    last: str | None = None  # the commit the manifest holds
    forced = False  # a --force publish succeeded or was tried
    seen: dict[str, tuple[int, str]] = {}  # MAC -> last (version, body) served
    seen_at: dict[str, int] = {}  # MAC -> index of the publish that last served it
    forced_at: list[int] = []  # indices of successful --force publishes
    now: dict[str, tuple[int, str]] = {}  # what the manifest serves
    for index, (want_force, pick) in enumerate(publishes):
        if last is None:
            candidates, force = valid, False
        elif want_force:
            candidates = [c for c in valid if not history.descends(c, last)]
            force = True
        else:
            candidates = [c for c in valid if history.descends(c, last)]
            force = False
        if not candidates:
            continue
        head = candidates[pick % len(candidates)]
        before = snapshot(base)
        args = ["--repo", str(repo_path), "publish", "--rev", head, *root_args(base)]
        code, text = gitprov(*args, *(["--force"] if force else []))
        what = f"publish {'--force ' if force else ''}{names[head]} (after {names.get(last or '')})"
        note(f"{what}: exit {code}")
        assert code in (0, 1), f"{what}: exit {code}\n{text}"
        forced = forced or force
        if code == 1:
            assert forced, f"{what} refused before any --force:\n{text}"
            assert snapshot(base) == before, f"{what} refused, yet changed what is served"
            SUMMARY["publishes refused (exit 1, after a --force)"] += 1
            continue
        SUMMARY["publishes forced" if force else "publishes"] += 1
        if force:
            forced_at.append(index)
        serving = served(base)
        assert json.loads((base / "state" / "manifest.json").read_text())["commit"] == head
        if not forced:
            assert {m: v for m, (v, _) in serving.items()} == verdicts[head].versions(), what
        for mac, (version, body) in serving.items():
            prev = seen.get(mac)
            if prev is not None:
                old_version, old_body = prev
                continuous = mac in now
                lost = not continuous and any(f > seen_at[mac] for f in forced_at)
                bad = version < old_version or (body != old_body and version <= old_version)
                if lost:
                    # Served again after a gap during which a --force published: neither
                    # the history nor the manifest remembers what it had.
                    if bad:
                        SUMMARY["after a gap spanning --force: served number not higher"] += 1
                        event("device served again after a --force gap, number not higher")
                else:
                    assert version >= old_version, f"{what}: {mac} went down"
                    assert not bad, f"{what}: {mac} has a new body under {version}"
                if continuous:
                    if body != old_body:
                        SUMMARY["publish pairs: device served in both, body changed"] += 1
                    else:
                        SUMMARY["publish pairs: device served in both, same body"] += 1
                        if version > old_version:
                            assert last is not None
                            if force or forced_at:
                                reason = "after --force"
                            else:
                                reason = why_rose(parents, verdicts, mac, last, head)
                            SUMMARY[f"same body, number rose: {reason}"] += 1
                            event(f"same body, number rose: {reason}")
            seen[mac] = (version, body)
            seen_at[mac] = index
        now = serving
        last = head
