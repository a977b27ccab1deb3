"""A publish over an earlier commit of the same line builds only the devices the commit
changed since (gitprov.change) and takes every other device's files over as the manifest
records them: what it serves and records must be what a full build of the same commit
into fresh roots gives, over any history, and anything it cannot tell from the version
deltas and the tree diff must go to the full build."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitprov import change as change_module
from gitprov import journal as journal_module
from gitprov import overlay, statejson
from gitprov import plan as plan_module
from gitprov import publish as publish_module
from gitprov.change import Change
from gitprov.cli import main
from gitprov.journal import JOURNAL
from gitprov.pipeline import Pipeline
from gitprov.plan import MANIFEST, load_manifest
from gitprov.publish import BUILD_INPUTS, Guards, Refused, Targets, publish_commit
from gitprov.secrets import load_secrets_file, seal
from tests.fixtures.fleet import (
    base_profile,
    changes,
    device_path,
    device_yaml,
    fleet_files,
    generated_mac,
    served_files,
)
from tests.fixtures.gitrepo import GitRepo

FLEET_FILE = "inventory/gitprov.yaml"


def publish(repo: GitRepo, where: Path, *more: str) -> int:
    argv = ["-q", "--repo", str(repo.path), "publish", "--rev", "main", *more]
    argv += ["--http-root", str(where / "http"), "--tftp-root", str(where / "tftp")]
    return main([*argv, "--state-dir", str(where / "state")])


def record(where: Path, *, history: bool = True) -> dict[str, object]:
    """The manifest and the build record, less what differs between two publishes of one
    commit into two places (dates, stats, root paths); without `history`, less what
    earlier publishes into the same place leave (the versions served to removed
    devices)."""
    manifest = json.loads((where / "state" / MANIFEST).read_text())
    inputs = json.loads((where / "state" / BUILD_INPUTS).read_text())
    out = {
        "commit": manifest["commit"],
        "files": manifest["files"],
        "served": manifest["served"],
        "roots": sorted(
            (Path(r).name, s["commit"], s["error"], s["stale"])
            for r, s in manifest["roots"].items()
        ),
        "build": {k: inputs[k] for k in ("commit", "floor", "exact", "devices")},
    }
    if not history:
        macs = {e["mac"] for e in manifest["files"].values()}
        out["served"] = {k: v for k, v in manifest["served"].items() if k in macs}
    return out


def journal(where: Path) -> list[dict[str, object]]:
    """The journal's entries, less their dates and state digests (which name the roots'
    paths); the paths written as <where>."""
    text = (where / "state" / JOURNAL).read_text().replace(str(where), "<where>")
    out = []
    for line in text.splitlines():
        entry = json.loads(line)
        for key in ("time", "manifest_time", "state"):
            entry.pop(key)
        out.append(entry)
    return out


def state_recorded(where: Path) -> None:
    """The journal's last state digest is the manifest's, computed from nothing; the
    build record names the manifest file by its sha256."""
    data = (where / "state" / MANIFEST).read_bytes()
    inputs = json.loads((where / "state" / BUILD_INPUTS).read_text())
    assert inputs["manifest"] == hashlib.sha256(data).hexdigest()
    manifest = load_manifest(where / "state")
    assert manifest is not None
    journal_module._LINES.clear()
    last = (where / "state" / JOURNAL).read_text().splitlines()[-1]
    assert json.loads(last)["state"] == journal_module.state_digest(manifest)


def as_a_fresh_process() -> None:
    """Forget what the publishes before left in this process (the manifests and build
    records read or written, the journal's lines): the next one reads the state dir as
    a process of its own does, the manifest from its index, its text spliced."""
    for cache in (
        plan_module._LOADED,
        plan_module._BASES,
        plan_module._DIFFED,
        journal_module._LINES,
        publish_module._RECORDS,
    ):
        cache.clear()


def publish_in_full(repo: GitRepo, where: Path, *more: str) -> int:
    """`publish`, building every device (what it did before builds by change)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(publish_module, "change_since", lambda *a, **k: None)
        return publish(repo, where, *more)


@pytest.fixture
def by_change(monkeypatch: pytest.MonkeyPatch) -> list[Change | None]:
    """What each publish's look for a change found (None: it builds every device)."""
    found: list[Change | None] = []
    real = change_module.change_since

    def spy(*args: object, **kwargs: object) -> Change | None:
        got = real(*args, **kwargs)  # type: ignore[arg-type]
        found.append(got)
        return got

    monkeypatch.setattr(publish_module, "change_since", spy)
    return found


def devices(files: dict[str, bytes]) -> list[str]:
    """The generated devices' paths (the example's own keep their files)."""
    return sorted(
        p for p in files if p.startswith("inventory/devices/") and Path(p).stem.startswith("0021f3")
    )


def index_of(path: str) -> int:
    return int(Path(path).stem[6:], 16)


class History:
    """The main line of a repository, with a side branch now and then."""

    def __init__(self, repo: GitRepo, files: dict[str, bytes]) -> None:
        self.repo = repo
        self.files = files
        self.head = repo.commit(files, "a fleet")
        self.serial = 1000

    def commit(self, new: dict[str, bytes], what: str) -> None:
        self.head = self.repo.commit(changes(self.files, new), what, base=self.files)
        self.files = new

    def merge(self, side: dict[str, bytes], what: str) -> None:
        """A side branch from the head that makes `side`, merged into main."""
        branch = self.repo.commit(
            changes(self.files, side),
            what,
            branch=f"side-{self.next()}",
            parents=[self.head],
            base=self.files,
        )
        self.head = self.repo.commit({}, f"merge {what}", parents=[self.head, branch], base=side)
        self.files = side

    def next(self) -> int:
        self.serial += 1
        return self.serial


Step = Callable[[History, random.Random], str]


def edit_device(h: History, rng: random.Random) -> str:
    new = dict(h.files)
    path = rng.choice(devices(new))
    new[path] = device_yaml(index_of(path), display=f"Edited {h.next()}").encode()
    h.commit(new, "device edit")
    return "device edit"


def comment_device(h: History, rng: random.Random) -> str:
    """Another blob, the same device: built again, the same bytes."""
    new = dict(h.files)
    path = rng.choice(devices(new))
    new[path] = new[path] + f"# note {h.next()}\n".encode()
    h.commit(new, "device comment")
    return "device comment"


def add_device(h: History, rng: random.Random) -> str:
    new = dict(h.files)
    i = h.next()
    path = device_path(i)
    if rng.random() < 0.5:  # nested: devices/<site>/<mac>.yaml
        path = f"inventory/devices/site-{i % 3}/{generated_mac(i)}.yaml"
    new[path] = device_yaml(i).encode()
    h.commit(new, "device add")
    return "device add"


def remove_device(h: History, rng: random.Random) -> str:
    new = dict(h.files)
    del new[rng.choice(devices(new))]
    h.commit(new, "device remove")
    return "device remove"


def move_device(h: History, rng: random.Random) -> str:
    """The same device under another path: its MAC stays."""
    new = dict(h.files)
    path = rng.choice(devices(new))
    data = new.pop(path)
    new[f"inventory/devices/moved-{h.next()}/{Path(path).name}"] = data
    h.commit(new, "device move")
    return "device move"


def swap_mac(h: History, rng: random.Random) -> str:
    """One file replaced by another device's: a MAC goes, another comes."""
    new = dict(h.files)
    path = rng.choice(devices(new))
    del new[path]
    i = h.next()
    new[device_path(i)] = device_yaml(i).encode()
    h.commit(new, "device swap")
    return "device swap"


def edit_and_revert(h: History, rng: random.Random) -> str:
    """An edit and its revert, both before the next publish: the device's number goes
    up twice while its file is the published one."""
    before = dict(h.files)
    edit_device(h, rng)
    h.commit(before, "revert")
    return "edit and revert"


def merged_edit(h: History, rng: random.Random) -> str:
    side = dict(h.files)
    path = rng.choice(devices(side))
    side[path] = device_yaml(index_of(path), display=f"Side {h.next()}").encode()
    h.merge(side, "side edit")
    return "merged edit"


def invalid_then_fixed(h: History, rng: random.Random) -> str:
    """A commit that fails validation (never published), then its fix."""
    new = dict(h.files)
    path = rng.choice(devices(new))
    new[path] = b"mac: [not a mac\n"
    h.commit(new, "broken")
    fixed = dict(h.files)
    fixed[path] = device_yaml(index_of(path), display=f"Fixed {h.next()}").encode()
    h.commit(fixed, "fixed")
    return "invalid then fixed"


def edit_profile(h: History, rng: random.Random) -> str:
    new = dict(h.files)
    new["inventory/profiles/base.yaml"] = base_profile(f"m{h.next()}").encode()
    h.commit(new, "profile edit")
    return "profile edit"


def raise_floor(h: History, rng: random.Random) -> str:
    new = dict(h.files)
    text = new[FLEET_FILE].decode()
    floor = int(text.split("version_floor: ", 1)[1].split("\n", 1)[0])
    new[FLEET_FILE] = text.replace(
        f"version_floor: {floor}", f"version_floor: {floor + 5}"
    ).encode()
    h.commit(new, "floor raised")
    return "floor raised"


def option66_toggled_twice(h: History, rng: random.Random) -> str:
    """The option-66 bootstrap turned on and off again (or off and on) before the next
    publish: its count lifts every device's number, and no device file changed."""
    before = dict(h.files)
    fleet = before[FLEET_FILE]
    on = b"\npublish:\n  option66: true\n"
    if on in fleet:
        toggled = fleet.replace(on, b"\npublish:\n")
    else:
        toggled = fleet.replace(b"\npublish:\n", on)
    h.commit(before | {FLEET_FILE: toggled}, "option 66 toggled")
    h.commit(before, "option 66 toggled back")
    return "option 66 toggled twice"


def edit_model(h: History, rng: random.Random) -> str:
    """A model's parameter: every device of that model gets new content."""
    new = dict(h.files)
    path = "inventory/models/G502N.yaml"
    text = new[path].decode().split("params:", 1)[0].rstrip("\n")
    new[path] = f"{text}\nparams:\n  sip.server_port: {5060 + h.next() % 7}\n".encode()
    h.commit(new, "model edit")
    return "model edit"


def edit_secret(h: History, rng: random.Random) -> str:
    """A SIP password sealed anew: the devices whose lines use it get new content."""
    new = dict(h.files)
    path = "inventory/secrets.yaml"
    sf = load_secrets_file(new[path].decode())
    name = rng.choice(["sip_2001", "sip_2002", "sip_2010"])
    sealed = seal(sf.public_key, name, f"pw-{h.next()}")
    lines = [
        f"  {name}: {sealed}" if line.startswith(f"  {name}: ") else line
        for line in new[path].decode().splitlines()
    ]
    new[path] = ("\n".join(lines) + "\n").encode()
    h.commit(new, "secret edit")
    return "secret edit"


def change_master_key(h: History, rng: random.Random) -> str:
    """The fleet's encryption master key: every device's key, so every file."""
    new = dict(h.files)
    text = new[FLEET_FILE].decode()
    old, key = "!secret fleet_master_key", "!secret sip_3003"
    if old not in text:
        old, key = key, old
    new[FLEET_FILE] = text.replace(f"master_key: {old}", f"master_key: {key}").encode()
    h.commit(new, "key change")
    return "key change"


def readme(h: History, rng: random.Random) -> str:
    new = dict(h.files)
    new["README.md"] = f"notes {h.next()}\n".encode()
    h.commit(new, "readme")
    return "readme"


STEPS: tuple[Step, ...] = (
    edit_device,
    edit_device,
    edit_device,
    comment_device,
    add_device,
    remove_device,
    move_device,
    swap_mac,
    edit_and_revert,
    merged_edit,
    invalid_then_fixed,
    edit_profile,
    edit_model,
    edit_secret,
    change_master_key,
    raise_floor,
    option66_toggled_twice,
    readme,
)
# Built by change: whatever moves neither the floor nor the option-66 bootstrap.
BY_CHANGE = {
    "device edit",
    "device comment",
    "device add",
    "device remove",
    "device move",
    "device swap",
    "edit and revert",
    "merged edit",
    "invalid then fixed",
    "profile edit",
    "model edit",
    "secret edit",
    "key change",
    "readme",
}


def with_option66(files: dict[str, bytes]) -> dict[str, bytes]:
    """The fleet publishing each model's option-66 bootstrap file too."""
    fleet = files[FLEET_FILE]
    assert b"\npublish:\n" in fleet
    return files | {FLEET_FILE: fleet.replace(b"\npublish:\n", b"\npublish:\n  option66: true\n")}


def in_one_process(repo: GitRepo, where: Path, private_key: str) -> Callable[[], None]:
    """Publishes of main into `where` by one pipeline, as a watcher makes them (what it
    keeps between two: documents, the manifest, the build record, the state's lines)."""
    pipeline = Pipeline(repo.repo, cache_dir=repo.path / "gitprov-cache")
    targets = Targets((where / "http", where / "tftp"), where / "state")

    def run() -> None:
        commit = repo.repo.revparse_single("main")
        assert isinstance(commit, pygit2.Commit)
        publish_commit(
            pipeline,
            commit,
            targets,
            private_key,
            guards=Guards(allow_mass_removal=True, allow_stranding=True),
        )

    return run


@pytest.mark.parametrize(
    ("seed", "option66", "process"),
    [
        (1, False, "fresh"),
        (2, False, "fresh"),
        (3, True, "fresh"),
        (4, True, "fresh"),
        (5, False, "watcher"),
        (6, True, "watcher"),
        (7, True, "fresh, no bounds"),
        (8, False, "watcher, no bounds"),
    ],
)
def test_a_publish_by_change_serves_and_records_what_a_full_build_does(
    tmp_path: Path,
    private_key: str,
    by_change: list[Change | None],
    seed: int,
    option66: bool,
    process: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each publish in a fresh process (the CLI), or all in one (a watcher's). With no
    bounds, every change counts as many: the texts are made whole, not spliced, and the
    maps are dicts, not overlays (statejson.SPLICE_MAX, overlay's bounds)."""
    process, _, bounds = process.partition(", ")
    if bounds:
        monkeypatch.setattr(statejson, "SPLICE_MAX", -1)
        monkeypatch.setattr(overlay, "LOOKUPS_MAX", 0)
        for module in (overlay, plan_module):
            monkeypatch.setattr(module, "OVERLAY_MAX", -1)
    rng = random.Random(seed)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    files = fleet_files(8)
    h = History(repo, with_option66(files) if option66 else files)
    where, twin = tmp_path / "incremental", tmp_path / "twin"
    assert publish(repo, where) == publish_in_full(repo, twin) == 0
    taken = 0
    # Two removals of twelve devices are a sixth; a key change strands every device.
    allow = ("--allow-mass-removal", "--allow-stranding")
    watcher = in_one_process(repo, where, private_key) if process == "watcher" else None
    for step in range(14):
        done = [rng.choice(STEPS)(h, rng) for _ in range(rng.choice((1, 1, 2)))]
        by_change.clear()
        if watcher is not None:
            watcher()
        else:
            as_a_fresh_process()
            assert publish(repo, where, *allow) == 0, done
        # The same publishes, each building every device; and one into fresh roots.
        assert publish_in_full(repo, twin, *allow) == 0
        full = tmp_path / f"full-{step}"
        assert publish(repo, full) == 0
        assert served_files(where) == served_files(twin) == served_files(full), (step, done)
        assert record(where) == record(twin), (step, done)
        assert record(where, history=False) == record(full, history=False), (step, done)
        assert journal(where) == journal(twin), (step, done)
        state_recorded(where)
        # The full publish into fresh roots never looks for a change: one look, this one's.
        assert len(by_change) == 1, (step, done)
        if set(done) <= BY_CHANGE:
            assert by_change[0] is not None, (step, done)
            taken += 1
        if {"floor raised", "option 66 toggled twice"} & set(done):
            assert by_change[0] is None, (step, done)
    assert taken, "the history had no commit to publish by change"


@pytest.mark.parametrize("ahead", [False, True])
def test_a_file_changed_by_hand_is_repaired_by_a_publish_by_change(
    tmp_path: Path,
    private_key: str,
    by_change: list[Change | None],
    monkeypatch: pytest.MonkeyPatch,
    ahead: bool,
) -> None:
    """`ahead`: the stats surveyed by a forked process while the publish builds."""
    started: list[plan_module.SurveyAhead | None] = []
    if ahead:
        monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 1)
        real = plan_module.SurveyAhead.start

        def spy(
            state_dir: Path, first: Callable[[], object] | None = None
        ) -> plan_module.SurveyAhead | None:
            started.append(real(state_dir, first))
            return started[-1]

        monkeypatch.setattr(plan_module.SurveyAhead, "start", spy)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    h = History(repo, fleet_files(6))
    where = tmp_path / "out"
    assert publish(repo, where) == 0
    name = f"fv{generated_mac(3)}.conf"
    published = (where / "tftp" / name).read_bytes()
    (where / "http" / name).write_bytes(b"edited by hand\n")
    new = dict(h.files)
    new[device_path(0)] = device_yaml(0, display="Edited").encode()
    h.commit(new, "device edit")
    assert publish(repo, where) == 0
    assert by_change[-1] is not None and name in by_change[-1].carried
    assert (where / "http" / name).read_bytes() == published
    assert [s is not None for s in started] == ([False, True] if ahead else [])
    full = tmp_path / "full"
    assert publish(repo, full) == 0
    assert served_files(where) == served_files(full)


def test_a_publish_in_a_fresh_process_surveys_the_roots_while_it_reads_the_commit(
    tmp_path: Path, private_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The survey of the served files (an lstat each) is the longest wait of a one-device
    publish at 100,000 devices: it starts before the commit is read and numbered, under
    the lock, and its answer is used."""
    monkeypatch.setattr(plan_module, "SURVEY_AHEAD_MIN", 1)
    events: list[str] = []
    start, load, off = (
        plan_module.SurveyAhead.start,
        Pipeline.load_commit,
        plan_module.SurveyAhead.off,
    )

    def started(
        state_dir: Path, first: Callable[[], object] | None = None
    ) -> plan_module.SurveyAhead | None:
        got = start(state_dir, first)
        events.append("survey" if got is not None else "no survey")
        return got

    def loaded(self: Pipeline, commit: pygit2.Commit) -> object:
        events.append("load")
        return load(self, commit)

    def used(self: plan_module.SurveyAhead, key: str, names: object) -> object:
        events.append("used")
        return off(self, key, names)  # type: ignore[arg-type]

    monkeypatch.setattr(plan_module.SurveyAhead, "start", started)
    monkeypatch.setattr(plan_module.SurveyAhead, "off", used)
    monkeypatch.setattr(Pipeline, "load_commit", loaded)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    h = History(repo, fleet_files(6))
    where = tmp_path / "out"
    assert publish(repo, where) == 0
    assert events[:1] == ["load"]  # nothing published yet: nothing to survey
    events.clear()
    edit_device(h, random.Random(0))
    assert publish(repo, where) == 0
    assert events[:2] == ["survey", "load"] and "used" in events, events
    full = tmp_path / "full"
    assert publish(repo, full) == 0
    assert served_files(where) == served_files(full)


def test_the_build_record_is_written_while_the_journal_entry_waits_for_the_disk(
    tmp_path: Path,
    private_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The build record and the journal's entry are apart: by change, the record is made
    while the entry is appended (an fsync); a full build's after it, on the same thread
    (both are a fleet's worth of memory). Both are what they would be one after the
    other; an error in making the record is the publish's."""
    appending = threading.Event()
    overlapped: list[tuple[bool, bool]] = []  # (on a thread of its own, the entry appended)
    real_keep, real_append = publish_module._keep_inputs, journal_module.Journal.append

    def keep(*args: Any) -> None:
        alongside = threading.current_thread() is not threading.main_thread()
        # (alongside, the entry is appended meanwhile: waited for)
        overlapped.append((alongside, appending.wait(10) if alongside else appending.is_set()))
        real_keep(*args)

    def append(self: journal_module.Journal, entry: journal_module.Entry) -> object:
        appending.set()
        return real_append(self, entry)

    monkeypatch.setattr(publish_module, "_keep_inputs", keep)
    monkeypatch.setattr(journal_module.Journal, "append", append)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    h = History(repo, fleet_files(4))
    where = tmp_path / "out"
    assert publish(repo, where) == 0
    edit_device(h, random.Random(2))
    appending.clear()
    as_a_fresh_process()
    assert publish(repo, where) == 0
    assert overlapped == [(False, True), (True, True)]  # the first publish built every device
    state_recorded(where)

    def fails(*args: Any) -> None:
        raise RuntimeError("the record fails")

    monkeypatch.setattr(publish_module, "_keep_inputs", fails)
    edit_device(h, random.Random(3))
    assert publish(repo, where) == 3  # (an internal error: a bug to report)
    assert "the record fails" in capsys.readouterr().err


def test_a_publish_by_change_digests_its_state_from_the_lines_the_last_one_kept(
    tmp_path: Path, private_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each publish of a process that publishes once keeps its state's lines in the
    state dir, naming its manifest; the next, by change, digests its state from them:
    the journal's digest is the one from nothing all the same."""
    patched: list[bool] = []
    real = journal_module._patched

    def spy(*args: Any) -> Any:
        got = real(*args)
        patched.append(got is not None)
        return got

    monkeypatch.setattr(journal_module, "_patched", spy)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    h = History(repo, fleet_files(5))
    where = tmp_path / "out"
    kept = where / "state" / journal_module.STATE_LINES
    for seed in range(3):
        if seed:
            edit_device(h, random.Random(seed))
        as_a_fresh_process()
        assert publish(repo, where) == 0
        state_recorded(where)
        manifest = load_manifest(where / "state")
        assert manifest is not None
        made = journal_module.state_digest_kept(manifest, None, None, tmp_path / "nothing")
        assert kept.read_bytes() == b"".join(made.kept(manifest.sha256))
    assert patched == [True, True]  # (the cold publish made its lines from nothing)


def test_force_and_verify_build_every_device(
    tmp_path: Path, private_key: str, by_change: list[Change | None]
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    h = History(repo, fleet_files(4))
    where = tmp_path / "out"
    assert publish(repo, where) == 0
    for flag in ("--force", "--verify"):
        edit_device(h, random.Random(0))
        by_change.clear()
        assert publish(repo, where, flag) == 0
        assert by_change == [], flag
    edit_device(h, random.Random(0))
    assert publish(repo, where) == 0
    assert by_change and by_change[-1] is not None


@pytest.mark.parametrize("root", ["owes a removal", "lags"])
def test_a_root_that_lags_or_owes_a_removal_gets_a_full_build(
    tmp_path: Path, private_key: str, by_change: list[Change | None], root: str
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    h = History(repo, fleet_files(4))
    where = tmp_path / "out"
    assert publish(repo, where) == 0
    manifest_path = where / "state" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    http = str(where / "http")
    if root == "lags":
        manifest["roots"][http]["error"] = "no space left on the device"
    else:
        (where / "http" / "fvold.conf").write_bytes(b"an old file\n")
        manifest["roots"][http]["stale"] = ["fvold.conf"]
    manifest_path.write_text(json.dumps(manifest, sort_keys=True))
    # The record vouches for the manifest as it is now: only the root stands in the way.
    path = where / "state" / BUILD_INPUTS
    raw = json.loads(path.read_text())
    raw["manifest"] = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    path.write_text(json.dumps(raw))
    edit_device(h, random.Random(1))
    by_change.clear()
    assert publish(repo, where) == 0
    assert by_change == []
    assert not (where / "http" / "fvold.conf").exists()
    full = tmp_path / "full"
    assert publish(repo, full) == 0
    assert served_files(where) == served_files(full)


def test_a_record_that_does_not_vouch_for_the_manifest_gets_a_full_build(
    tmp_path: Path, private_key: str, by_change: list[Change | None]
) -> None:
    """A record written before builds by change (or by a --force that raised a number),
    or beside a manifest edited since, does not say every file carries the rule's
    number."""
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    h = History(repo, fleet_files(4))
    where = tmp_path / "out"
    assert publish(repo, where) == 0
    path = where / "state" / BUILD_INPUTS
    for drop in ("floor", "exact", "another floor", "not exact", "manifest edited"):
        raw = json.loads(path.read_text())
        if drop == "manifest edited":
            manifest = where / "state" / MANIFEST
            manifest.write_text(manifest.read_text() + " ")
        elif drop == "another floor":
            raw["floor"] += 1
        elif drop == "not exact":
            raw["exact"] = False
        else:
            del raw[drop]
        path.write_text(json.dumps(raw))
        edit_device(h, random.Random(2))
        by_change.clear()
        assert publish(repo, where) == 0
        assert by_change in ([], [None]), drop
    edit_device(h, random.Random(3))
    assert publish(repo, where) == 0
    assert by_change and by_change[-1] is not None


def test_a_mass_removal_by_change_is_refused_as_by_a_full_build(
    tmp_path: Path, private_key: str, by_change: list[Change | None]
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    files = fleet_files(6)
    h = History(repo, files)
    where = tmp_path / "out"
    assert publish(repo, where) == 0
    before = served_files(where)
    pipeline = Pipeline(repo.repo)
    targets = Targets((where / "http", where / "tftp"), where / "state")
    # Two devices added and removed again before the publish were never published: not
    # counted. Three of the ten published ones removed: more than the default share.
    new = dict(h.files)
    for i in (50, 51):
        new[device_path(i)] = device_yaml(i).encode()
    h.commit(new, "two added")
    new = dict(h.files)
    for path in devices(new):
        if index_of(path) in (50, 51, 0, 1, 2):
            del new[path]
    h.commit(new, "five removed")
    commit = repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit)
    with pytest.raises(Refused, match=r"removes 3 of the 10 published devices") as refused:
        publish_commit(pipeline, commit, targets, private_key)
    assert by_change and by_change[-1] is not None
    assert served_files(where) == before
    monkey = pytest.MonkeyPatch()
    monkey.setattr(publish_module, "change_since", lambda *a, **k: None)
    try:
        with pytest.raises(Refused) as full:
            publish_commit(Pipeline(repo.repo), commit, targets, private_key)
    finally:
        monkey.undo()
    assert str(full.value) == str(refused.value)


def test_a_change_reaches_no_further_than_its_depth(
    tmp_path: Path,
    private_key: str,
    by_change: list[Change | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(change_module, "DEPTH", 3)
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    h = History(repo, fleet_files(4))
    where = tmp_path / "out"
    assert publish(repo, where) == 0
    rng = random.Random(4)
    for _ in range(3):
        edit_device(h, rng)
    assert publish(repo, where) == 0
    assert by_change[-1] is not None
    for _ in range(4):
        edit_device(h, rng)
    assert publish(repo, where) == 0
    assert by_change[-1] is None
    full = tmp_path / "full"
    assert publish(repo, full) == 0
    assert served_files(where) == served_files(full)
