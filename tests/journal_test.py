"""The publish journal: one line per publish that changes what is served, never rewritten;
`gitprov history` (--at, --mac) reads it; a kill between the manifest and the journal is
recovered by the next publish; hostile commit text forges no line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest
from jsonschema import Draft202012Validator

from gitprov import journal
from gitprov import plan as plan_module
from gitprov.app import Session
from gitprov.cli import main
from gitprov.crypto import Cipher
from gitprov.journal import (
    JOURNAL,
    parse_instant,
    printable,
    read_journal,
)
from gitprov.pipeline import Pipeline
from gitprov.plan import EntryTable, ManifestEntry, load_manifest
from gitprov.plan import Kind as FileKind
from gitprov.publish import PublishResult, Targets, publish_commit
from gitprov.schemas import output_schemas
from gitprov.validate import Options
from gitprov.watch import Kind
from tests.fixtures.fleet import device_key, device_path, device_yaml, fleet_files, generated_mac
from tests.fixtures.gitrepo import ROOT, GitRepo
from tests.fixtures.roots import commit_publisher, root_args

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MOVED = generated_mac(1)  # changed by the second commit
GONE = generated_mac(2)  # removed by the third


def targets(base: Path) -> Targets:
    return Targets((base / "http", base / "tftp"), base / "state")


def publish_at(repo: GitRepo, t: Targets, key: str, when: datetime | None) -> PublishResult:
    """Publish main in a fresh pipeline (as a new process would), the journal's clock at
    `when`."""
    commit = repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit)
    clock: Callable[[], datetime] | None = (lambda: when) if when is not None else None
    return publish_commit(Pipeline(repo.repo), commit, t, key, clock=clock)


def lines(state_dir: Path) -> list[bytes]:
    data = (state_dir / JOURNAL).read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served_version(path: Path, mac: str) -> int:
    """DBID_DBASE_VERSION read from the served (encrypted) file itself."""
    text = Cipher().decrypt(path.read_bytes(), device_key(mac)).decode()
    found = [ln for ln in text.splitlines() if ln.startswith("DBID_DBASE_VERSION")]
    assert len(found) == 1, text
    return int(found[0].split("=", 1)[1].strip())


@dataclass
class History:
    """Three publishes: a fleet (T0), one device changed (T0 + 1 day), one removed
    (T0 + 2 days)."""

    repo: GitRepo
    t: Targets
    commits: list[str]
    # What the roots served after each publish: file name -> (sha256, version) of MOVED
    # and GONE, read from the files themselves.
    served: list[dict[str, tuple[str, int]]]
    journal: list[bytes]  # the journal's bytes after each publish
    first_files: int  # files in a root after the first publish


def _snapshot(t: Targets) -> dict[str, tuple[str, int]]:
    out = {}
    for mac in (MOVED, GONE):
        path = t.roots[0] / f"fv{mac}.conf"
        if path.exists():
            assert sha(path) == sha(t.roots[1] / path.name)
            out[path.name] = (sha(path), served_version(path, mac))
    return out


def make_history(base: Path, key: str) -> History:
    repo = GitRepo(base / "repo")
    t = targets(base)
    commits = [repo.commit(fleet_files(4), "a fleet of four")]
    served, journals = [], []

    def step(when: datetime) -> None:
        publish_at(repo, t, key, when)
        served.append(_snapshot(t))
        journals.append((t.state_dir / JOURNAL).read_bytes())

    step(T0)
    first_files = len(list(t.roots[0].iterdir()))
    commits.append(repo.commit({device_path(1): device_yaml(1, display="Moved")}, "move desk 1"))
    step(T0 + DAY)
    commits.append(repo.commit({device_path(2): None}, "retire desk 2"))
    step(T0 + 2 * DAY)
    return History(repo, t, commits, served, journals, first_files)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    from tests.fixtures.gitrepo import demo_private_key

    return make_history(tmp_path_factory.mktemp("history"), demo_private_key())


def cli(h: History, *argv: str) -> list[str]:
    return ["--repo", str(h.repo.path), *argv, "--state-dir", str(h.t.state_dir)]


def check(kind: str, text: str) -> Any:
    doc = json.loads(text)
    Draft202012Validator(output_schemas()[f"{kind}-output.schema.json"]).validate(doc)
    return doc


# -- what a publish appends -------------------------------------------------------------
def test_files_compared_with_a_manifest_read_from_its_index_are_those_of_its_json() -> None:
    """The old entries as the index's columns (a name's sha256 read from its one column)
    or as a dict: the same files added, changed and removed."""

    def entry(data: str) -> ManifestEntry:
        return ManifestEntry("0021f2011b19", "IP542N", 1001, "c1", "p", data, FileKind.DEVICE)

    old = {f"f{i}.conf": entry(f"d{i}") for i in range(5)}
    new = {**old, "f1.conf": entry("other"), "f9.conf": entry("d9")}
    del new["f2.conf"]
    names = sorted(old)
    table = EntryTable.of(
        names, [[getattr(old[n], f) for n in names] for f in plan_module._ENTRY_ROW]
    )
    for only in (None, {"f0.conf", "f1.conf", "f2.conf", "f9.conf"}):
        got = journal._compare(table, new, only)
        assert got == journal._compare(old, new, only)
        assert [[r.name for r in rs] for rs in got] == [["f9.conf"], ["f1.conf"], ["f2.conf"]]


def test_each_publish_that_changes_something_appends_one_line_and_keeps_the_others(
    history: History,
) -> None:
    h = history
    assert len(lines(h.t.state_dir)) == 3
    # Append-only: each publish's journal starts with the one before.
    assert h.journal[1].startswith(h.journal[0]) and h.journal[2].startswith(h.journal[1])
    assert [j.count(b"\n") for j in h.journal] == [1, 2, 3]
    entries = read_journal(h.t.state_dir).entries
    assert [e.commit for e in entries] == h.commits
    assert [e.previous for e in entries] == [None, *h.commits[:2]]
    assert [e.time for e in entries] == [T0, T0 + DAY, T0 + 2 * DAY]
    assert not any(e.recovered for e in entries)
    roots = tuple(str(r) for r in h.t.roots)

    first = entries[0]
    assert first.info is not None and first.info.summary == "a fleet of four"
    assert (first.info.author_name, first.info.author_email) == (
        "Test Author",
        "author@gitprov.invalid",
    )
    [group] = first.changes
    assert group.roots == roots and not group.changed and not group.removed
    names = {r.name for r in group.added}
    assert names == {p.name for p in h.t.roots[0].iterdir()} | {f"fv{GONE}.conf"}

    [moved] = entries[1].changes
    name = f"fv{MOVED}.conf"
    assert moved.roots == roots and not moved.added and not moved.removed
    assert [(r.name, r.mac, r.sha256, r.version) for r in moved.changed] == [
        (name, MOVED, *h.served[1][name])
    ]
    assert h.served[1][name] != h.served[0][name]
    assert dict(entries[1].versions) == {MOVED: h.served[1][name][1]}

    [gone] = entries[2].changes
    name = f"fv{GONE}.conf"
    assert [(r.name, r.sha256, r.version) for r in gone.removed] == [(name, *h.served[1][name])]
    assert not gone.added and not gone.changed and dict(entries[2].versions) == {}


def test_publishing_the_published_commit_again_appends_nothing(
    tmp_path: Path, private_key: str
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(fleet_files(2), "a fleet")
    t = targets(tmp_path)
    publish_at(repo, t, private_key, T0)
    before = (t.state_dir / JOURNAL).read_bytes()
    assert publish_at(repo, t, private_key, T0 + DAY).already_published
    # A file edited by hand is restored: that is a change, and it says which.
    victim = t.roots[1] / f"fv{generated_mac(0)}.conf"
    victim.unlink()  # (replaced: written in place, it is the other root's file too)
    victim.write_bytes(b"edited by hand")
    assert not publish_at(repo, t, private_key, T0 + 2 * DAY).already_published
    after = (t.state_dir / JOURNAL).read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 2
    repair = read_journal(t.state_dir).entries[-1]
    assert [(d.root, d.name, d.kind) for d in repair.repaired] == [
        (str(t.roots[1]), victim.name, "changed")
    ]
    assert repair.changes == () and repair.time == T0 + 2 * DAY


def test_a_manifest_rewritten_without_serving_anything_new_is_no_gap(
    tmp_path: Path, private_key: str
) -> None:
    """Publishing the published commit with other inputs (here: strict validation)
    rewrites the manifest, and serves nothing new: no entry, and the next publish does
    not take the journal for one behind."""
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit(fleet_files(2), "a fleet")
    t = targets(tmp_path)
    publish_at(repo, t, private_key, T0)
    written = load_manifest(t.state_dir)
    commit = repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit) and written is not None
    strict = Pipeline(repo.repo, options=Options(strict=True))
    time.sleep(1.1)  # the manifest's time has seconds: let it differ
    publish_commit(strict, commit, t, private_key, clock=lambda: T0 + DAY)
    rewritten = load_manifest(t.state_dir)
    assert rewritten is not None and rewritten.published_at != written.published_at
    assert len(lines(t.state_dir)) == 1
    second = repo.commit({device_path(0): device_yaml(0, display="Next")}, "next")
    publish_at(repo, t, private_key, T0 + 2 * DAY)
    entries = read_journal(t.state_dir, load_manifest(t.state_dir)).entries
    assert [(e.commit, e.recovered) for e in entries] == [(first, False), (second, False)]


def test_a_journal_begun_late_starts_with_what_the_manifest_lists(
    tmp_path: Path, private_key: str
) -> None:
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit(fleet_files(2), "a fleet")
    t = targets(tmp_path)
    publish_at(repo, t, private_key, T0)
    (t.state_dir / JOURNAL).unlink()  # as before gitprov kept one
    manifest = load_manifest(t.state_dir)
    assert manifest is not None
    second = repo.commit({device_path(0): device_yaml(0, display="Next")}, "next")
    publish_at(repo, t, private_key, T0 + DAY)
    baseline, entry = read_journal(t.state_dir).entries
    assert (baseline.commit, baseline.recovered, baseline.previous) == (first, True, None)
    assert baseline.time == datetime.fromisoformat(manifest.published_at)
    [group] = baseline.changes
    assert {(r.name, r.sha256) for r in group.added} == {
        (n, e.sha256_data) for n, e in manifest.files.items()
    }
    assert (entry.commit, entry.recovered, entry.previous) == (second, False, first)


def test_the_watcher_journals_through_the_same_path(tmp_path: Path, private_key: str) -> None:
    repo = GitRepo(tmp_path / "repo")
    cid = repo.commit(fleet_files(1), "watched")
    t = targets(tmp_path)
    watcher = commit_publisher(repo, private_key, t)
    commit = repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit)
    assert watcher.publish(repo.repo, commit).kind is Kind.PUBLISHED
    [entry] = read_journal(t.state_dir).entries
    assert entry.commit == cid and entry.info is not None and entry.info.summary == "watched"


# -- gitprov history ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("at", "index"),
    [
        ("2024-03-01T09:59:59Z", None),  # before the first publish
        ("2024-03-01T10:00:00Z", 0),  # at it: inclusive
        ("2024-03-01T22:00:00Z", 0),  # between the first two
        ("2024-03-02", 0),  # a date alone is 00:00 UTC
        ("2024-03-02T12:00:00+02:00", 1),  # 10:00 UTC: the offset counts
        ("2024-03-02T11:59:00+02:00", 0),
        ("2024-03-02 10:00", 1),  # no offset: UTC, not the local zone
        ("2030-01-01T00:00:00Z", 2),
    ],
)
def test_history_at_gives_the_commit_live_at_that_instant(
    history: History,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    at: str,
    index: int | None,
) -> None:
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: a local-time bug shows
    time.tzset()
    try:
        _history_at(history, capsys, at, index)
    finally:
        monkeypatch.undo()
        time.tzset()


def _history_at(h: History, capsys: pytest.CaptureFixture[str], at: str, index: int | None) -> None:
    assert main(cli(h, "history", "--at", at, "--format", "json")) == 0
    doc = check("history", capsys.readouterr().out)
    if index is None:
        assert doc["live"] is None
    else:
        assert doc["live"]["commit"] == h.commits[index]
        files = {f["name"]: (f["sha256"], f["version"]) for g in doc["live"]["served"]
                 for f in g["files"]}  # fmt: skip
        assert {n: files[n] for n in h.served[index]} == h.served[index]
        assert [sorted(g["roots"]) for g in doc["live"]["served"]] == [
            sorted(str(r) for r in h.t.roots)
        ]
    assert main(cli(h, "history", "--at", at)) == 0
    text = capsys.readouterr().out
    if index is None:
        assert text.startswith("nothing was published at ")
    else:
        assert text.startswith(f"live at {doc['at']}: {h.commits[index]}, published ")


def test_history_mac_lists_each_version_the_device_was_given(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    h = history
    name = f"fv{MOVED}.conf"
    # The versions the rule gives at each commit, by `gitprov versions` (not the journal).
    s = Session(h.repo.path)
    rule = [s.versions(c, [MOVED])[0].version for c in h.commits[:2]]
    assert [h.served[i][name][1] for i in (0, 1)] == rule and rule[0] < rule[1]

    assert main(cli(h, "history", "--mac", MOVED.upper(), "--format", "json")) == 0
    doc = check("history", capsys.readouterr().out)
    got = [
        (e["commit"], action, f["version"], f["sha256"])
        for e in doc["entries"]
        for c in e["changes"]
        for action in ("added", "changed", "removed")
        for f in c[action]
    ]
    assert got == [
        (h.commits[0], "added", rule[0], h.served[0][name][0]),
        (h.commits[1], "changed", rule[1], h.served[1][name][0]),
    ]
    assert main(cli(h, "history", "--mac", MOVED)) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[:5] for ln in out] == [
        ["2024-03-01T10:00:00.000Z", h.commits[0][:12], "version", str(rule[0]), "added"],
        ["2024-03-02T10:00:00.000Z", h.commits[1][:12], "version", str(rule[1]), "changed"],
    ]
    assert main(cli(h, "history", "--mac", GONE)) == 0
    assert [ln.split()[4] for ln in capsys.readouterr().out.splitlines()] == ["added", "removed"]

    # Both: the device's file live at an instant.
    assert main(cli(h, "history", "--mac", MOVED, "--at", "2024-03-01T12:00Z")) == 0
    text = capsys.readouterr().out
    assert f"{name}  device  {MOVED}  version {rule[0]}  sha256 {h.served[0][name][0]}" in text
    assert f"fv{GONE}.conf" not in text


def test_history_lists_every_entry(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    h = history
    assert main(cli(h, "history", "--format", "json")) == 0
    doc = check("history", capsys.readouterr().out)
    assert [e["commit"] for e in doc["entries"]] == h.commits
    assert doc["entries"] == [json.loads(ln) for ln in lines(h.t.state_dir)]
    assert main(cli(h, "history")) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[:5] for ln in out] == [
        ["2024-03-01T10:00:00.000Z", h.commits[0][:12], f"+{h.first_files}", "~0", "-0"],
        ["2024-03-02T10:00:00.000Z", h.commits[1][:12], "+0", "~1", "-0"],
        ["2024-03-03T10:00:00.000Z", h.commits[2][:12], "+0", "~0", "-1"],
    ]
    assert out[1].endswith("Test Author <author@gitprov.invalid>: move desk 1")


def test_history_reads_the_state_dir_the_fleet_settings_name(
    example_repo: GitRepo,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Without --state-dir: HEAD's publish.state_dir (var/state in the example), relative
    to the repository's top, wherever the command runs."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["--repo", str(example_repo.path), "publish", "-q"]) == 0
    capsys.readouterr()
    assert main(["--repo", str(example_repo.path), "history"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.split()[1] == str(example_repo.repo.head.target)[:12]
    assert (example_repo.path / "var" / "state" / JOURNAL).exists()


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01", "2024-03-01T25:00Z", "1709287200"])
def test_a_bad_date_is_a_usage_error(
    history: History, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    assert main(cli(history, "history", "--at", bad)) == 2
    err = capsys.readouterr().err
    assert f"argument --at: {bad!r} is not a date: write 2026-03-01" in err
    assert "Traceback" not in err


def test_parse_instant() -> None:
    assert parse_instant("2024-03-01") == datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_instant("2024-03-01T12:30:00Z") == datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    assert parse_instant("2024-03-01T12:30:00.250-05:00") == datetime(
        2024, 3, 1, 17, 30, 0, 250000, tzinfo=UTC
    )
    assert parse_instant("2024-03-01 12:30") == datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a date"):
        parse_instant("")


@pytest.mark.parametrize(
    "text",
    ["1" * 500, "20240301", "2026-W01", "2026-W01-1", "2024-061", "2024-03-01T12", "٢٠٢٤-03-01"],
)
def test_parse_instant_takes_only_the_forms_it_names(text: str) -> None:
    # fromisoformat read 500 ones as 1111-11-11T11:11:11.111, and took week and ordinal
    # dates: `history --at` would show the roots at an instant nobody meant.
    with pytest.raises(ValueError, match="not a date: write 2026-03-01"):
        parse_instant(text)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda ln: ln.replace(b'"commit":"', b'"commit":7,"x":"'), "7 is not a string"),
        (lambda ln: ln[:40] + b"}", "not JSON at column"),
        (lambda ln: b"[]", "not a JSON object"),
        (lambda ln: b"\xff\xfe" + ln, "not JSON at column"),  # (read as UTF-16: BOM)
        (lambda ln: ln[:20] + b"\xff" + ln[21:], "not UTF-8 text"),
    ],
)
def test_a_damaged_line_is_named_with_what_to_do(
    history: History,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[bytes], bytes],
    why: str,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    got = lines(history.t.state_dir)
    got[1] = damage(got[1])
    (state / JOURNAL).write_bytes(b"\n".join(got) + b"\n")
    assert main(["history", "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert f"gitprov: error: {state / JOURNAL}:2: not a journal entry ({why}" in err
    assert "hint: gitprov only ever appends whole lines" in err and "Restore" in err
    assert "Traceback" not in err


def test_no_journal_and_no_state_dir_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", "--state-dir", str(tmp_path)]) == 2
    assert f"{tmp_path / JOURNAL}: no journal" in capsys.readouterr().err
    # Outside a repository, without --state-dir: the state dir alone would do, and the
    # hint says so (not only --repo).
    assert main(["--repo", str(tmp_path), "history"]) == 2
    err = capsys.readouterr().err
    assert "not a git repository" in err and "--state-dir DIR" in err, err


# -- crashes ------------------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import pygit2
    from gitprov import journal
    from gitprov.pipeline import Pipeline
    from gitprov.publish import Targets, publish_commit

    def killed(self, entry):
        if sys.argv[2] == "mid-append":  # half the line reached the disk
            data = entry.to_line()
            with open(self.path, "ab") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    journal.Journal.append = killed
    repo = pygit2.Repository(sys.argv[1] + "/repo")
    base = Path(sys.argv[1])
    t = Targets((base / "http", base / "tftp"), base / "state")
    commit = repo.revparse_single("main")
    publish_commit(Pipeline(repo), commit, t, os.environ["GITPROV_PRIVATE_KEY"])
    """
)


@pytest.mark.parametrize("moment", ["before-append", "mid-append"])
@pytest.mark.parametrize("then", ["same-commit", "next-commit"])
def test_a_kill_between_manifest_and_journal_is_recovered_by_the_next_publish(
    tmp_path: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    moment: str,
    then: str,
) -> None:
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit(fleet_files(3), "a fleet")
    t = targets(tmp_path)
    publish_at(repo, t, private_key, T0)
    kept = (t.state_dir / JOURNAL).read_bytes()
    cut = repo.commit({device_path(1): device_yaml(1, display="Cut short")}, "cut short")

    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), moment],
        cwd=ROOT,
        env={**os.environ, "GITPROV_PRIVATE_KEY": private_key},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    manifest = load_manifest(t.state_dir)
    assert manifest is not None and manifest.commit == cut  # the roots and manifest: new
    name = f"fv{generated_mac(1)}.conf"
    cut_sha = sha(t.roots[0] / name)
    assert manifest.files[name].sha256_data == cut_sha
    read = read_journal(t.state_dir, manifest)
    assert [e.commit for e in read.entries] == [first]  # the journal: one behind, and says so
    assert any("is not the journal's last entry" in n for n in read.notes)
    assert (moment == "mid-append") == any("incomplete last line" in n for n in read.notes)
    assert main(["history", "--state-dir", str(t.state_dir)]) == 0
    assert "note: the manifest's commit" in capsys.readouterr().err

    if then == "next-commit":
        repo.commit({device_path(0): device_yaml(0, display="Next")}, "next")
    publish_at(repo, t, private_key, T0 + 3 * DAY)
    data = (t.state_dir / JOURNAL).read_bytes()
    assert data.startswith(kept)  # never rewritten
    read = read_journal(t.state_dir, load_manifest(t.state_dir))
    assert read.notes == (
        (f"{t.state_dir / JOURNAL}:2: the fragment of an append cut short; skipped",)
        if moment == "mid-append"
        else ()
    )
    entries = read.entries
    recovered = entries[1]
    assert recovered.recovered and recovered.commit == cut and recovered.previous == first
    assert recovered.after_torn_line == (moment == "mid-append")
    assert recovered.info is not None and recovered.info.summary == "cut short"
    assert [(r.name, r.sha256) for c in recovered.changes for r in c.changed] == [
        (name, cut_sha)
    ] * 1
    assert [c.roots for c in recovered.changes] == [tuple(str(r) for r in t.roots)]
    assert recovered.time == datetime.fromisoformat(manifest.published_at)
    if then == "same-commit":
        assert len(entries) == 2
    else:
        assert len(entries) == 3 and not entries[2].recovered
        assert entries[2].previous == cut and entries[2].time >= recovered.time
    # Each line whole, and each its own entry.
    complete = data.split(b"\n")[:-1]
    assert len(complete) == len(entries) + (moment == "mid-append")


# -- hostile commit text ------------------------------------------------------------------
HOSTILE = (
    'fix \x1b[2J\x1b]0;pwned\x07\rnote: all good\u2028{"format":1}\u202e end\n'
    '{"format":1,"time":"2024-01-01T00:00:00.000Z","commit":"' + "0" * 40 + '"}\n'
)


def test_a_hostile_commit_message_forges_no_line(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(fleet_files(1), "a fleet")
    files = dict(repo.files)
    files[device_path(0)] = device_yaml(0, display="Evil").encode()
    index = pygit2.Index()
    for path, data in sorted(files.items()):
        index.add(pygit2.IndexEntry(path, repo.repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    evil = pygit2.Signature("Eve\x1b[8m\x07 Doe", "eve\x1b[2K@example.invalid", 1_700_000_600, 0)
    head = str(repo.repo.references["refs/heads/main"].target)
    repo.repo.create_commit(
        "refs/heads/main", evil, evil, HOSTILE, index.write_tree(repo.repo), [pygit2.Oid(hex=head)]
    )
    t = targets(tmp_path)
    publish_at(repo, t, private_key, T0)

    data = (t.state_dir / JOURNAL).read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert all(0x20 <= b < 0x7F for b in data[:-1])  # ASCII, no control byte
    [entry] = read_journal(t.state_dir).entries
    assert entry.info is not None
    assert entry.info.summary == printable(HOSTILE.split("\n")[0])
    assert entry.info.summary.startswith("fix \\x1b[2J\\x1b]0;pwned\\x07\\x0dnote: all good\\u2028")
    assert entry.info.author_name == "Eve\\x1b[8m\\x07 Doe"
    assert entry.info.author_email == "eve\\x1b[2K@example.invalid"

    for argv in (
        ["history"],
        ["history", "--mac", generated_mac(0)],
        ["history", "--at", "2025-01-01"],
    ):
        assert main(["history", *argv[1:], "--state-dir", str(t.state_dir)]) == 0
        out = capsys.readouterr().out
        assert not any(ch in out for ch in "\x1b\r\x07\x00\u2028\u202e"), argv
        assert "pwned" in out  # shown, escaped
    assert main(["history", "--state-dir", str(t.state_dir)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # one entry, one line
    assert main(["history", "--state-dir", str(t.state_dir), "--format", "json"]) == 0
    doc = check("history", capsys.readouterr().out)
    assert doc["entries"][0]["summary"] == entry.info.summary


def test_printable_escapes_what_moves_a_terminal_or_ends_a_line() -> None:
    assert printable("a\x1bb\rc\nd\te\x7ff\x85g") == "a\\x1bb\\x0dc\\x0ad\\x09e\\x7ff\\x85g"
    assert printable("\u2028\u2029\u202e\u200b\ufeff") == "\\u2028\\u2029\\u202e\\u200b\\ufeff"
    assert printable("Zoë – naïve \\ 日本 🙂") == "Zoë – naïve \\ 日本 🙂"


# -- the state digest of a publish by change ---------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_a_state_digest_from_the_last_ones_lines_is_the_one_computed_from_nothing(
    seed: int,
) -> None:
    """A publish that knows which files changed digests the new state from the lines of
    the previous one: over any run of changes, the digest computed from nothing."""
    import random

    from gitprov import journal as journal_module
    from gitprov.plan import Manifest, ManifestEntry, RootState

    rng = random.Random(seed)

    def entry(i: int, version: int) -> ManifestEntry:
        return ManifestEntry(f"{i:012x}", "m", version, "c", "p", f"{i:04x}{version}", "device")

    files = {f"fv{i:04d}.conf": entry(i, 1) for i in rng.sample(range(200), 40)}
    roots = {"/srv/http": RootState("c0"), "/srv/tftp": RootState("c0")}
    before = Manifest("c0", "t0", roots, dict(files), sha256="m0")
    journal_module.state_digest(before)  # its lines kept, as a publish's would be
    for step in range(1, 30):
        changed: set[str] = set()
        for _ in range(rng.randint(0, 4)):
            name = f"fv{rng.randrange(200):04d}.conf"
            changed.add(name)
            if name in files and rng.random() < 0.4:
                del files[name]
            else:
                files[name] = entry(int(name[2:6]), step + 1)
        changed |= {f"fv{rng.randrange(200):04d}.conf" for _ in range(rng.randint(0, 2))}
        roots = {r: RootState(f"c{step}") for r in roots}
        after = Manifest(f"c{step}", f"t{step}", roots, dict(files), sha256=f"m{step}")
        got = journal_module.state_digest(after, before, changed)
        kept = dict(journal_module._LINES)
        journal_module._LINES.clear()
        assert got == journal_module.state_digest(after), (seed, step)
        journal_module._LINES.update(kept)
        before = after


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("count", [0, 1, 5, 6, 7, 20])
def test_the_state_digest_hashed_a_slice_of_lines_at_a_time_is_that_of_the_whole_text(
    monkeypatch: pytest.MonkeyPatch, count: int, keep: bool
) -> None:
    """The digest's lines are hashed a few at a time (a fleet's text whole was a peak of
    memory): the digest is that of the header, the roots' lines and every file's line
    in name order, whatever the count of lines against the slice."""
    from gitprov import journal as journal_module
    from gitprov.plan import Manifest, ManifestEntry, RootState

    monkeypatch.setattr(journal_module, "_DIGEST_LINES", 3)
    monkeypatch.setattr(journal_module, "_LINES", {})
    files = {
        f"fv{i:012x}.conf": ManifestEntry(f"{i:012x}", "m", 1000 + i, "b", "p", f"{i:064x}")
        for i in reversed(range(count))
    }
    roots = {"/srv/tftp": RootState("c1"), "/srv/http": RootState("c0", "full disk")}
    m = Manifest("c1", "t1", roots, files, sha256="m1")
    text = f"{journal_module.JOURNAL_FORMAT}\0c1\n/srv/http\0-c0\n/srv/tftp\0c1\n"
    text += "".join(f"{n}\0{files[n].sha256_data}\0{files[n].version}\n" for n in sorted(files))
    assert journal_module.state_digest(m, keep=keep) == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("seed", range(8))
def test_a_state_digest_from_the_lines_kept_in_the_state_dir_is_the_one_from_nothing(
    tmp_path: Path, seed: int
) -> None:
    """A process that publishes once digests its state from the lines the last one kept
    in the state dir, with its changed files put in place, added or left out: over any
    run of changes, the digest (and the lines kept) computed from nothing."""
    import random

    from gitprov import journal as journal_module
    from gitprov.plan import Manifest, ManifestEntry, RootState

    rng = random.Random(seed)

    def entry(i: int, version: int) -> ManifestEntry:
        return ManifestEntry(f"{i:012x}", "m", version, "c", "p", f"{i:04x}{version}", "device")

    def name(i: int) -> str:  # (names of other lengths and beyond ASCII: bytes sort as text)
        return rng.choice([f"fv{i:04d}.conf", f"fv{i:04d}é.conf", f"{i:03d}.cfg"])

    files = {name(i): entry(i, 1) for i in rng.sample(range(300), rng.randint(0, 40))}
    roots = {"/srv/http": RootState("c0"), "/srv/tftp": RootState("c0")}
    before = Manifest("c0", "t0", roots, dict(files), sha256="0" * 64)
    made = journal_module.state_digest_kept(before, None, None, tmp_path)
    kept = tmp_path / journal_module.STATE_LINES
    kept.write_bytes(b"".join(made.kept(before.sha256)))
    used = 0
    for step in range(1, 25):
        changed: set[str] = set()
        for _ in range(rng.randint(0, 5)):
            n = rng.choice([*files, name(rng.randrange(300))]) if files else name(1)
            changed.add(n)
            if n in files and rng.random() < 0.4:
                del files[n]
            else:
                files[n] = entry(step, step + 1)
        changed |= {name(rng.randrange(300)) for _ in range(rng.randint(0, 2))}  # (the same)
        roots = {r: RootState(f"c{step}", "" if rng.random() < 0.8 else "full") for r in roots}
        after = Manifest(f"c{step}", f"t{step}", roots, dict(files), sha256=f"{step:064x}")
        got = journal_module.state_digest_kept(after, before, changed, tmp_path)
        whole = journal_module.state_digest_kept(after, None, None, tmp_path / "none")
        assert got.digest == journal_module.state_digest(after, keep=False), (seed, step)
        assert got.digest == whole.digest
        assert b"".join(got.lines) == b"".join(whole.lines)
        used += any(isinstance(p, memoryview) for p in got.lines)
        kept.write_bytes(b"".join(got.kept(after.sha256)))
        before = after
    assert used  # (the kept lines were read, not made again)


@pytest.mark.parametrize(
    "spoil",
    ["another manifest's", "a line changed", "cut short", "no head", "gone"],
)
def test_lines_kept_that_are_not_the_manifests_whole_are_not_used(
    tmp_path: Path, spoil: str
) -> None:
    """The kept lines name the manifest they are of and their text's sha256: a file of
    another manifest's, torn, edited or lost is not read, and the digest is made from
    nothing."""
    from gitprov import journal as journal_module
    from gitprov.plan import Manifest, ManifestEntry, RootState

    files = {
        f"fv{i:04d}.conf": ManifestEntry(f"{i:012x}", "m", 1, "c", "p", "aa") for i in range(9)
    }
    before = Manifest("c0", "t0", {"/srv/http": RootState("c0")}, dict(files), sha256="1" * 64)
    text = b"".join(journal_module.state_digest_kept(before, None, None, tmp_path).kept("1" * 64))
    kept = tmp_path / journal_module.STATE_LINES
    if spoil == "another manifest's":
        text = text.replace(b"1" * 64, b"2" * 64, 1)
    elif spoil == "a line changed":
        text = text.replace(b"fv0003.conf\0aa\0" + b"1", b"fv0003.conf\0aa\0" + b"7")
    elif spoil == "cut short":
        text = text[:-5]
    elif spoil == "no head":
        text = text[text.index(b"\n") + 1 :]
    if spoil != "gone":
        kept.write_bytes(text)
    files["fv0005.conf"] = ManifestEntry("5", "m", 2, "c", "p", "bb")
    after = Manifest("c1", "t1", {"/srv/http": RootState("c1")}, dict(files), sha256="3" * 64)
    got = journal_module.state_digest_kept(after, before, {"fv0005.conf"}, tmp_path)
    assert got.digest == journal_module.state_digest(after, keep=False)
    assert not any(isinstance(p, memoryview) for p in got.lines)  # made from nothing


def test_times_are_rfc3339_with_four_digit_years_and_milliseconds() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from gitprov.journal import rfc3339

    assert rfc3339(datetime(2026, 12, 5, 11, 20, 19, 185_999, UTC)) == "2026-12-05T11:20:19.185Z"
    east = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 1, 1, 1, 0, tzinfo=east)) == "2025-12-31T23:00:00.000Z"
    # `history --at 0001-01-01` said "1-01-01T00:00:00.000Z".
    assert rfc3339(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("text", "last"),
    [
        (b"", None),
        (b"no newline yet", None),  # the fragment of a first append
        (b"one\n", b"one"),
        (b"one\ntwo\n", b"two"),
        (b"one\ntwo\nthe fragme", b"two"),  # an append cut short
        (b"\n", b""),
        (b"one\n\n", b""),
    ],
)
def test_the_last_line_is_the_last_one_a_newline_ends(
    tmp_path: Path, text: bytes, last: bytes | None
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(text)
    assert journal._last_line(path) == last
    assert journal._last_line(path, 2) == (None if last is None else last[:2])
    assert journal._last_line(tmp_path / "none") is None


def test_the_last_line_of_megabytes_is_found_and_its_head_read_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    long = b"{" + b"x" * (3 << 20) + b"}"
    path.write_bytes(b"first\n" + long + b"\n" + b"y" * 100)
    assert journal._last_line(path) == long
    assert journal._last_line(path, 10) == long[:10]


def test_a_commit_dated_past_any_calendar_publishes_and_its_log_reads(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Git takes any time (a commit dated the year 10000): the publish recorded it with
    datetime and failed, exit 3, and so did `log`."""
    repo = example_repo.repo
    device = "inventory/devices/0021f2011b20.yaml"
    changed = example_repo.files[device].replace(b"Meeting room", b"Board room")
    head = repo.revparse_single("main")
    assert isinstance(head, pygit2.Commit)
    tree = _with_file(repo, head.tree, device, changed)
    # (pygit2's Signature keeps 32 bits of a time: the commit is written as git would)
    far = "Far Future <far@gitprov.invalid> 253402300800 +0000"
    raw = f"tree {tree}\nparent {head.id}\nauthor {far}\ncommitter {far}\n\nfrom far ahead\n"
    made = repo.odb.write(pygit2.enums.ObjectType.COMMIT, raw.encode())
    repo.references.create("refs/heads/main", made, force=True)
    argv = ["--repo", str(example_repo.path)]
    assert main([*argv, "publish", *root_args(tmp_path)]) == 0
    capsys.readouterr()
    assert main([*argv, "log", "0021f2011b20"]) == 0
    out = capsys.readouterr().out
    assert "@253402300800 +0000" in out, out
    state = ["--state-dir", str(tmp_path / "state")]
    assert main([*argv, "history", *state, "--format", "json"]) == 0
    assert '"committed_at": "@253402300800 +0000"' in capsys.readouterr().out


def _with_file(repo: pygit2.Repository, tree: pygit2.Tree, path: str, data: bytes) -> pygit2.Oid:
    index = pygit2.Index()
    index.read_tree(tree)
    index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    return index.write_tree(repo)


def test_a_commit_in_a_legacy_encoding_is_recorded_as_log_reads_it(example_repo: GitRepo) -> None:
    """The journal took the author and the summary as UTF-8 whatever the commit's
    `encoding` header said: `history` showed 'T\ufffd ... caf\ufffd' where `log` read 'Té'."""
    repo = example_repo.repo
    head = repo.revparse_single("main")
    assert isinstance(head, pygit2.Commit)
    who = "Té <t@gitprov.invalid> 1700000000 +0000".encode("latin-1")
    raw = b"tree %s\nparent %s\nauthor %s\ncommitter %s\nencoding ISO-8859-1\n\ncaf\xe9 open\n" % (
        str(head.tree_id).encode(),
        str(head.id).encode(),
        who,
        who,
    )
    made = repo.get(repo.odb.write(pygit2.enums.ObjectType.COMMIT, raw))
    assert isinstance(made, pygit2.Commit)
    info = journal.commit_info(made)
    assert (info.author_name, info.summary) == ("Té", "café open")
    assert info.committed_at == "2023-11-14T22:13:20+00:00"
