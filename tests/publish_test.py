"""Publishing into the roots: atomic, world-readable, idempotent, pruning, per-root failure,
one publisher at a time, option-66 bootstrap and firmware files."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pygit2
import pytest

from gitprov import publish as publish_module
from gitprov.errors import GitprovError, InvalidInventory, UsageError
from gitprov.formats import flyingvoice
from gitprov.journal import JOURNAL
from gitprov.pipeline import Build, Pipeline
from gitprov.plan import INDEX, MANIFEST, MAP_ENDS, Kind, load_manifest
from gitprov.publish import (
    PathPolicy,
    PublishError,
    Targets,
    descendant_check,
    inspect,
    publish,
    publish_commit,
    publish_lock,
    targets_for,
)
from gitprov.version import IncompleteHistory
from tests.fixtures.gitrepo import ROOT, GitRepo

FLEET = "inventory/gitprov.yaml"
IP542N = "inventory/models/IP542N.yaml"
GONE = "inventory/devices/0021f2a0c002.yaml"
CHANGED = "inventory/devices/0021f2011b20.yaml"


def build_of(repo: GitRepo, key: str, rev: str = "main") -> Build:
    commit = repo.repo.revparse_single(rev)
    assert isinstance(commit, pygit2.Commit)
    return Pipeline(repo.repo).build(commit, key)


def targets(tmp_path: Path, *names: str, firmware: Path | None = None) -> Targets:
    roots = tuple(tmp_path / n for n in (names or ("http", "tftp")))
    return Targets(roots, tmp_path / "state", firmware)


def listing(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def snapshot(roots: tuple[Path, ...]) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for root in roots:
        for p in sorted(root.iterdir()):
            st = p.stat()
            out[f"{root.name}/{p.name}"] = (p.read_bytes(), st.st_ino, st.st_mtime_ns)
    return out


def edit_fleet(repo: GitRepo, extra: str) -> str:
    text = (
        repo.files[FLEET]
        .decode()
        .replace("  state_dir: var/state\n", "  state_dir: var/state\n" + extra)
    )
    return repo.commit({FLEET: text}, "publish settings")


# 0o077 masks the mode files are created with (it is set after); the others do not.
@pytest.mark.parametrize("umask", [0o077, 0o022, 0o002])
def test_publish_writes_every_device_world_readable_with_the_manifest_outside(
    example_repo: GitRepo, private_key: str, tmp_path: Path, umask: int
) -> None:
    t = targets(tmp_path)
    build = build_of(example_repo, private_key)
    old_umask = os.umask(umask)
    try:
        result = publish(build, t)
    finally:
        os.umask(old_umask)
    assert not result.already_published
    wanted = {f.name: f.data for f in build.files}
    for root in t.roots:
        assert listing(root) == wanted
        assert stat.S_IMODE(root.stat().st_mode) == 0o755
        for p in root.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    m = load_manifest(t.state_dir)
    assert m is not None and m.commit == build.commit
    assert set(m.files) == set(wanted)
    assert all(m.converged(str(r)) for r in t.roots)
    assert sorted(os.listdir(t.state_dir)) == [JOURNAL, MAP_ENDS, INDEX, MANIFEST, "publish.lock"]


def test_a_file_created_with_another_mode_than_the_umask_says_is_made_world_readable(
    example_repo: GitRepo, private_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As under a default ACL on a root, which overrides the umask: the umask read says
    # files come out 0o644, they do not.
    monkeypatch.setattr(publish_module, "_umask", lambda: 0o022)
    t = targets(tmp_path)
    old_umask = os.umask(0o077)
    try:
        publish(build_of(example_repo, private_key), t)
    finally:
        os.umask(old_umask)
    for root in t.roots:
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in root.iterdir()}
        assert modes and set(modes.values()) == {0o644}, modes


def test_the_state_dir_may_not_be_inside_a_root(tmp_path: Path) -> None:
    with pytest.raises(GitprovError, match="inside the served root"):
        Targets((tmp_path / "http",), tmp_path / "http" / "state")


def test_a_root_may_not_be_inside_the_state_dir(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    # It was published into, and `serve` then refused to serve it.
    state, http = tmp_path / "state", tmp_path / "state" / "http"
    with pytest.raises(GitprovError, match=f"the served root {http} is inside the state dir"):
        Targets((http,), state)
    for command in ("publish", "watch"):
        argv = ["--repo", str(example_repo.path), command, "--state-dir", str(state)]
        argv += ["--http-root", str(http), "--tftp-root", str(tmp_path / "t")]
        # (in a child, with a timeout: a watch let through would never return)
        done = subprocess.run(
            [sys.executable, "-m", "gitprov", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"the served root {http} is inside the state dir {state}" in done.stderr
        assert "give the roots directories beside it" in done.stderr
    assert not http.exists()


def test_a_root_may_not_be_inside_another(tmp_path: Path) -> None:
    with pytest.raises(GitprovError, match="http/tftp is inside the served root"):
        Targets((tmp_path / "http", tmp_path / "http" / "tftp"), tmp_path / "state")
    Targets((tmp_path / "http", tmp_path / "tftp"), tmp_path / "state")  # (beside: fine)


def test_publishing_the_published_commit_writes_nothing_and_says_so(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    t = targets(tmp_path)
    build = build_of(example_repo, private_key)
    publish(build, t)
    before = snapshot(t.roots)
    manifest = (t.state_dir / MANIFEST).read_bytes()
    again = publish(build_of(example_repo, private_key), t)
    assert again.already_published
    assert again.written == () and again.removed == ()
    assert snapshot(t.roots) == before
    assert (t.state_dir / MANIFEST).read_bytes() == manifest


def test_removed_devices_go_after_the_new_files_are_in_place_and_unknown_files_stay(
    example_repo: GitRepo, private_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = targets(tmp_path)
    publish(build_of(example_repo, private_key), t)
    for root in t.roots:
        (root / "notes.txt").write_text("the operator's")
    changed = example_repo.files[CHANGED].replace(b"Meeting room", b"Board room")
    example_repo.commit({GONE: None, CHANGED: changed}, "retire a device, rename another")
    build = build_of(example_repo, private_key)
    new_bytes = {f.name: f.data for f in build.files}["fv0021f2011b20.conf"]

    seen_at_removal: list[bytes] = []
    real_unlink = os.unlink

    def unlink(path: str | os.PathLike[str], *args: object, **kw: object) -> None:
        if Path(path).name == "fv0021f2a0c002.conf":
            seen_at_removal.append((Path(path).parent / "fv0021f2011b20.conf").read_bytes())
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    result = publish(build, t)
    monkeypatch.undo()

    assert seen_at_removal == [new_bytes, new_bytes]  # one removal per root, after the rename
    assert {(a.name, a.root) for a in result.removed} == {
        ("fv0021f2a0c002.conf", str(r)) for r in t.roots
    }
    assert result.plan.unknown == tuple((str(r), "notes.txt") for r in t.roots)
    assert result.changed_macs() == {"0021f2011b20", "0021f2a0c002"}
    for root in t.roots:
        assert (root / "notes.txt").exists()
        assert not (root / "fv0021f2a0c002.conf").exists()

    pruned = publish(build, t, prune_unknown=True)
    assert not pruned.already_published
    for root in t.roots:
        assert not (root / "notes.txt").exists()
        assert listing(root) == {f.name: f.data for f in build.files}


def test_a_second_publisher_gets_a_clear_message_or_waits(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    t = targets(tmp_path)
    build = build_of(example_repo, private_key)
    t.state_dir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from gitprov.publish import publish_lock\n"
            "with publish_lock(Path(sys.argv[1])):\n"
            "    print('locked', flush=True); time.sleep(float(sys.argv[2]))",
            str(t.state_dir),
            "1.0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(
            GitprovError, match=rf"another publish is running .*\(pid {holder.pid}\)"
        ):
            publish(build, t)
        assert not any(r.exists() and os.listdir(r) for r in t.roots)
        started = time.monotonic()
        result = publish(build, t, lock_wait=10)
        assert time.monotonic() - started > 0.3  # it waited for the holder to finish
        assert not result.already_published
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_a_failing_root_is_reported_and_retried_while_the_others_converge(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    (tmp_path / "edge2-disk").mkdir()
    (tmp_path / "edge2").symlink_to(tmp_path / "edge2-disk")
    t = targets(tmp_path, "http", "edge2", "tftp")
    publish(build_of(example_repo, private_key), t)

    # The edge server's mount disappears: its root is no longer a directory.
    (tmp_path / "edge2").unlink()
    (tmp_path / "edge2").symlink_to(tmp_path / "not-a-dir")
    (tmp_path / "not-a-dir").write_text("")
    changed = example_repo.files[CHANGED].replace(b"Meeting room", b"Board room")
    example_repo.commit({GONE: None, CHANGED: changed}, "retire a device, rename another")
    build = build_of(example_repo, private_key)
    result = publish(build, t)
    edge = str(tmp_path / "edge2")
    assert set(result.failures) == {edge}
    wanted = {f.name: f.data for f in build.files}
    assert listing(tmp_path / "http") == wanted
    assert listing(tmp_path / "tftp") == wanted
    m = load_manifest(t.state_dir)
    assert m is not None and m.commit == build.commit
    assert m.lagging() == (edge,)
    assert m.roots[edge].stale == ("fv0021f2a0c002.conf",)
    assert not inspect(t.state_dir).clean

    # Back again: the next publish of the same commit catches the root up, prune included.
    (tmp_path / "edge2").unlink()
    (tmp_path / "edge2").symlink_to(tmp_path / "edge2-disk")
    retry = publish(build_of(example_repo, private_key), t)
    assert not retry.already_published and not retry.failures
    assert {a.root for a in retry.written} == {edge}
    assert listing(tmp_path / "edge2-disk") == wanted
    assert inspect(t.state_dir).clean


def test_when_every_root_fails_nothing_changes(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    (tmp_path / "blocker").write_text("")
    t = Targets((tmp_path / "blocker" / "http",), tmp_path / "state")
    with pytest.raises(PublishError, match=r"cannot write into .*blocker/http: .*last good files"):
        publish(build_of(example_repo, private_key), t)
    assert load_manifest(t.state_dir) is None


def test_a_crash_leftover_temp_file_is_removed(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    t = targets(tmp_path)
    build = build_of(example_repo, private_key)
    publish(build, t)
    (tmp_path / "http" / ".gitprov-fv0021f2011b19.conf.1234abcd.tmp").write_bytes(b"torn")
    (t.state_dir / ".gitprov-manifest.json.1234abcd.tmp").write_bytes(b"torn")
    found = inspect(t.state_dir)
    assert found.temps_removed == 2 and found.clean
    assert not [n for n in os.listdir(tmp_path / "http") if n.startswith(".")]


@pytest.mark.parametrize("made_by", ["write", "link"])
def test_an_interrupt_right_after_a_temp_is_made_leaves_none_in_a_root(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    made_by: str,
) -> None:
    # Ctrl-C came between a served temp's creation and its record in the list removed on
    # the way out: the temp stayed in the root (for a server that serves dot-files).
    # Interrupted so: the second temp written into the first root, or the first one
    # linked into the second.
    made: list[str] = []
    write_new, link = publish_module._write_new, publish_module._link

    def writing(path: str, *args: object, **kwargs: object) -> None:
        write_new(path, *args, **kwargs)  # type: ignore[arg-type]
        if kwargs.get("dir_fd") is not None:
            made.append(path)
            if made_by == "write" and len(made) == 2:
                raise KeyboardInterrupt

    def linking(source: object, name: str, tmp: str, fd: int) -> bool:
        linked = link(source, name, tmp, fd)  # type: ignore[arg-type]
        made.append(tmp)
        if made_by == "link":
            raise KeyboardInterrupt
        return linked

    monkeypatch.setattr(publish_module, "_write_new", writing)
    monkeypatch.setattr(publish_module, "_link", linking)
    t = targets(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        publish(build_of(example_repo, private_key), t)
    assert made and all(os.path.basename(m).startswith(".gitprov-") for m in made)
    for root in t.roots:
        if root.exists():
            assert not [n for n in os.listdir(root) if n.startswith(".")], root
    assert (tmp_path / "tftp").exists() == (made_by == "link")


class _Terminated(Exception):
    pass


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_among_the_renames_is_raised_once_the_manifest_records_them(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
) -> None:
    # Ctrl-C (or a SIGTERM) right after the first rename: the roots held one file of
    # the new commit and the rest of the old, the manifest the old, and `verify` matched
    # neither commit until a publish ran again.
    rename = publish_module._rename
    sent: list[bool] = []

    def renaming(dir_fd: int, pair: tuple[str, str]) -> None:
        rename(dir_fd, pair)
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), sig)

    t = targets(tmp_path)
    build = build_of(example_repo, private_key)
    monkeypatch.setattr(publish_module, "_rename", renaming)
    # (SIGTERM's default would end pytest: made an exception here, as a handler would)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else _Terminated):
            publish(build, t)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sent and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    manifest = load_manifest(t.state_dir)
    assert manifest is not None and manifest.commit == build.commit
    for root in t.roots:
        assert sorted(n for n in os.listdir(root) if not n.startswith(".")) == sorted(
            manifest.files
        )
    monkeypatch.undo()
    assert publish(build, t).already_published


def test_a_commit_that_does_not_descend_is_refused(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    t = targets(tmp_path)
    first = example_repo.repo.head.target
    changed = example_repo.files[CHANGED].replace(b"Meeting room", b"Board room")
    example_repo.commit({CHANGED: changed}, "rename")
    publish(build_of(example_repo, private_key), t)
    with pytest.raises(GitprovError, match="not a descendant"):
        publish(
            build_of(example_repo, private_key, str(first)),
            t,
            is_descendant=descendant_check(example_repo.repo),
        )


def test_option66_bootstrap_files_point_devices_at_their_own_file(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    edit_fleet(example_repo, "  option66: true\n")
    t = targets(tmp_path)
    result = publish(build_of(example_repo, private_key), t)
    expected = b"DBID_DBASE_VERSION=1000\nDBID_PRV_OPTION66_ENABLED=0\n" + (
        b"DBID_PROFILE_RULE=http://127.0.0.1:8080/fv$(MA).conf\n"
    )
    for root in t.roots:
        assert (root / "IP542N.conf").read_bytes() == expected
        assert (root / "G502N.conf").read_bytes() == expected
    assert flyingvoice.parse(expected)["DBID_PRV_OPTION66_ENABLED"] == "0"
    assert any("cannot carry per-device keys" in n for n in result.notes)
    m = load_manifest(t.state_dir)
    assert m is not None and m.files["IP542N.conf"].kind == Kind.BOOTSTRAP

    # Only the named models; the other model's bootstrap is pruned.
    example_repo.commit(
        {FLEET: example_repo.files[FLEET].replace(b"option66: true", b"option66: [IP542N]")},
        "only IP542N",
    )
    publish(build_of(example_repo, private_key), t)
    for root in t.roots:
        assert (root / "IP542N.conf").exists() and not (root / "G502N.conf").exists()


def test_option66_bootstrap_is_named_after_the_product_not_the_model_file(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    """Vendor text 2.1 and 4.3.2: the device's default Config File Name is its product's
    (IP542N.conf). A model file named otherwise, without config_file_name, still gets the
    bootstrap its devices ask for; two model files of one product share it."""
    model = example_repo.files["inventory/models/G502N.yaml"]
    unnamed = b"".join(
        line for line in model.splitlines(keepends=True) if b"config_file_name" not in line
    )
    assert b"product_name: G502N" in unnamed
    example_repo.commit({"inventory/models/g502n-fax.yaml": unnamed}, "a second G502N model")
    edit_fleet(example_repo, "  option66: [g502n-fax, IP542N]\n")
    t = targets(tmp_path)
    publish(build_of(example_repo, private_key), t)
    for root in t.roots:
        assert (root / "G502N.conf").is_file() and (root / "IP542N.conf").is_file()
        assert not (root / "g502n-fax.conf").exists()


def test_option66_problems_are_located(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    edit_fleet(example_repo, "  option66: [IP542N, IP999]\n")
    text = example_repo.files[FLEET].replace(b'  url: "http://127.0.0.1:8080"\n', b"")
    text = text.replace(b"provisioning:\n", b"")
    example_repo.commit({FLEET: text}, "no url")
    with pytest.raises(InvalidInventory) as caught:
        publish(build_of(example_repo, private_key), targets(tmp_path))
    # (found by validation now, beside its warnings: the demo key's GP119)
    codes = {(p.code, p.file) for p in caught.value.problems if p.is_error}
    assert codes == {("GP301", FLEET), ("GP302", FLEET)}
    gp301 = next(p for p in caught.value.problems if p.code == "GP301")
    lines = example_repo.files[FLEET].decode().splitlines()
    assert "IP999" in lines[gp301.line - 1][gp301.col - 1 :]
    assert not (tmp_path / "http").exists() or not os.listdir(tmp_path / "http")


def test_firmware_is_copied_into_every_root_and_missing_firmware_publishes_nothing(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    fw = tmp_path / "firmware"
    fw.mkdir()
    image = os.urandom(300_000)
    (fw / "IP542N_2.0.bin").write_bytes(image)
    example_repo.commit(
        {
            IP542N: example_repo.files[IP542N]
            + b"firmware:\n  version: '2.0'\n  file: IP542N_2.0.bin\n"
        },
        "firmware 2.0",
    )
    t = targets(tmp_path, firmware=fw)
    publish(build_of(example_repo, private_key), t)
    for root in t.roots:
        assert (root / "IP542N_2.0.bin").read_bytes() == image
        assert stat.S_IMODE((root / "IP542N_2.0.bin").stat().st_mode) == 0o644

    before = snapshot(t.roots)
    example_repo.commit(
        {IP542N: example_repo.files[IP542N].replace(b"IP542N_2.0.bin", b"IP542N_2.1.bin")},
        "firmware 2.1, image not uploaded yet",
    )
    with pytest.raises(PublishError, match=r"firmware IP542N_2\.1\.bin of model IP542N"):
        publish(build_of(example_repo, private_key), t)
    assert snapshot(t.roots) == before

    (fw / "IP542N_2.1.bin").write_bytes(image[::-1])
    publish(build_of(example_repo, private_key), t)
    for root in t.roots:
        assert (root / "IP542N_2.1.bin").read_bytes() == image[::-1]
        assert not (root / "IP542N_2.0.bin").exists()


def test_two_different_files_with_one_name_are_refused(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    fw = tmp_path / "firmware"
    fw.mkdir()
    (fw / "IP542N.conf").write_bytes(b"not a bootstrap")
    edit_fleet(example_repo, "  option66: true\n")
    example_repo.commit(
        {IP542N: example_repo.files[IP542N] + b"firmware:\n  file: IP542N.conf\n"}, "clash"
    )
    # (validation says it first, where it is written: GP106 at firmware.file)
    with pytest.raises(GitprovError) as info:
        publish(build_of(example_repo, private_key), targets(tmp_path, firmware=fw))
    found = [(p.code, p.file) for p in info.value.problems if p.is_error]
    assert found == [("GP106", IP542N)], found
    assert not (tmp_path / "http").exists() or not any((tmp_path / "http").iterdir())


def test_the_last_guard_refuses_two_files_of_one_name_that_validation_let_by(
    example_repo: GitRepo, private_key: str
) -> None:
    """Validation (GP106) finds such a clash where it is written; the publish refuses
    one all the same, before the roots (a device's file named as a bootstrap here)."""
    import dataclasses

    from gitprov.publish import artifacts

    edit_fleet(example_repo, "  option66: true\n")
    build = build_of(example_repo, private_key)
    assert build.bootstraps
    clash = dataclasses.replace(build.files[0], name=build.bootstraps[0].name)
    with pytest.raises(GitprovError, match="two different files would be published as"):
        artifacts(build._replace(files=(clash, *build.files[1:])), None)


def test_cli_publish_reports_a_lagging_root_with_exit_1(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gitprov.cli import main

    # A directory where the second root needs one of its files: that root cannot take
    # the commit (a file in the place of a root itself is refused before any write).
    probe = ["--repo", str(example_repo.path), "publish", "--rev", "main"]
    assert (
        main([*probe, "--http-root", str(tmp_path / "probe"), "--state-dir", str(tmp_path / "s")])
        == 0
    )
    capsys.readouterr()
    name = sorted(os.listdir(tmp_path / "probe"))[0]
    (tmp_path / "edge" / name).mkdir(parents=True)
    args = [
        "--repo",
        str(example_repo.path),
        "publish",
        "--rev",
        "main",
        "--http-root",
        str(tmp_path / "http"),
        "--http-root",
        str(tmp_path / "edge"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "published" in out
    assert f"{tmp_path / 'edge'}: " in err and "it keeps its last good files" in err, err
    assert len(os.listdir(tmp_path / "http")) == 4
    (tmp_path / "edge" / name).rmdir()
    assert main(args) == 0
    out, _ = capsys.readouterr()
    assert "1 file(s) written" in out and f"  {name} " in out, out  # (what it lacked)
    assert main(args) == 0
    assert "is already published; nothing to write" in capsys.readouterr().out


def test_lock_is_per_state_dir_and_released(tmp_path: Path) -> None:
    with publish_lock(tmp_path / "a"):
        with publish_lock(tmp_path / "b"):
            pass
        errors: list[str] = []

        def other() -> None:
            try:
                with publish_lock(tmp_path / "a"):
                    pass
            except GitprovError as exc:
                errors.append(exc.message)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert errors and "another publish is running" in errors[0]
    with publish_lock(tmp_path / "a"):
        pass


def test_fleet_settings_may_list_several_roots_per_protocol(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gitprov.cli import main

    text = example_repo.files[FLEET].decode()
    text = text.replace("http_root: var/http", f"http_root: [{tmp_path}/a, {tmp_path}/b]")
    text = text.replace("tftp_root: var/tftp", f"tftp_root: {tmp_path}/t")
    text = text.replace("state_dir: var/state", f"state_dir: {tmp_path}/state")
    example_repo.commit({FLEET: text}, "two HTTP edges")
    build = build_of(example_repo, private_key)
    # Outside the repository: only where the operator allows.
    allowed = PathPolicy((tmp_path,))
    t = targets_for(build.inventory.fleet, policy=allowed)
    assert t.roots == (tmp_path / "a", tmp_path / "b", tmp_path / "t")
    assert targets_for(build.inventory.fleet, http_roots=["x"], policy=allowed).roots == (
        Path("x").absolute(),
        tmp_path / "t",
    )
    assert main(["--repo", str(example_repo.path), "validate", "--rev", "main"]) == 0
    argv = ["--repo", str(example_repo.path), "publish", "--rev", "main"]
    assert main([*argv, "--allow-root", str(tmp_path)]) == 0
    capsys.readouterr()
    for name in ("a", "b", "t"):
        assert listing(tmp_path / name) == {f.name: f.data for f in build.files}


def test_relative_paths_of_the_fleet_settings_are_relative_to_the_repository(
    example_repo: GitRepo, private_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitprov.cli import main

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # The example names var/http, var/tftp and var/state; --http-root given on the command
    # line is relative to the current directory, as any command-line path.
    argv = ["--repo", str(example_repo.path), "publish", "--rev", "main"]
    assert main([*argv, "--http-root", "cli-http"]) == 0
    assert (elsewhere / "cli-http" / "fv0021f2011b19.conf").is_file()
    assert (example_repo.path / "var" / "tftp" / "fv0021f2011b19.conf").is_file()
    assert (example_repo.path / "var" / "state" / "manifest.json").is_file()
    assert not (elsewhere / "var").exists()


def test_a_missing_commit_between_is_an_incomplete_history_not_another_history(
    tmp_path: Path,
) -> None:
    """libgit2 cannot walk past a commit whose object is gone; the parent ids still tell
    an ancestor from a history that went elsewhere, which --force would publish over."""
    repo = GitRepo(tmp_path)
    first = repo.commit({"a": "1"})
    middle = repo.commit({"a": "2"})
    last = repo.commit({"a": "3"})
    other = repo.commit({"a": "4"}, branch="other", parents=[])
    (tmp_path / ".git" / "objects" / middle[:2] / middle[2:]).unlink()
    is_descendant = descendant_check(pygit2.Repository(str(tmp_path)))  # no cached objects
    # (a full clone: a damaged repository, not a shallow one to fetch the rest of)
    with pytest.raises(UsageError, match=f"cannot read object {middle}") as info:
        is_descendant(last, first)
    assert not isinstance(info.value, IncompleteHistory)
    assert "git fsck" in (info.value.hint or "")
    assert is_descendant(last, middle)  # named by its child, though its object is gone
    assert not is_descendant(other, first)


def test_the_versions_are_computed_before_the_previous_manifest_is_read(
    example_repo: GitRepo, private_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Computing a fleet's version state and writing its snapshot is a peak of memory; with
    the previous manifest (an entry per served file) already read, a fresh clone's publish
    over published roots went past 1 GiB at 100,000 devices."""
    t = targets(tmp_path)
    publish_commit(Pipeline(example_repo.repo), _head(example_repo), t, private_key)
    child = example_repo.commit({CHANGED: example_repo.files[CHANGED] + b"# edited\n"}, "one")
    events: list[str] = []
    real_state = Pipeline.state

    def state(self: Pipeline, commit: pygit2.Commit, *rest: object) -> object:
        events.append("state")
        return real_state(self, commit, *rest)  # type: ignore[arg-type]

    def load(state_dir: Path) -> object:
        events.append("manifest")
        return load_manifest(state_dir)

    monkeypatch.setattr(Pipeline, "state", state)
    monkeypatch.setattr(publish_module, "load_manifest", load)
    commit = example_repo.repo.get(child)
    assert isinstance(commit, pygit2.Commit)
    result = publish_commit(Pipeline(example_repo.repo), commit, t, private_key)
    assert not result.already_published
    assert events[:2] == ["state", "manifest"], events


def _head(repo: GitRepo) -> pygit2.Commit:
    commit = repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit)
    return commit


@pytest.mark.parametrize(
    ("setting", "value", "why"),
    [
        ("http_root", "inventory", "inside the inventory directory"),
        ("tftp_root", "inventory/devices", "inside the inventory directory"),
        ("state_dir", "inventory/state", "inside the inventory directory"),
        ("http_root", ".", "which holds the repository's git directory"),
        ("http_root", "~/http", "with a ~ or a $ that no shell expands here"),
        ("state_dir", "$HOME/state", "with a ~ or a $ that no shell expands here"),
    ],
)
def test_the_fleet_settings_may_not_write_into_the_inventory_serve_the_repository_or_say_home(
    example_repo: GitRepo,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    value: str,
    why: str,
) -> None:
    # Inside the work tree, so the work-tree rule lets it through: device files would land
    # among the YAML (and a root there serves secrets.yaml), or a root would serve .git.
    from gitprov.cli import main

    text = example_repo.files[FLEET].decode()
    old = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{setting}:"))
    text = text.replace(old, f"{old.split(':')[0]}: {value}")
    example_repo.commit({FLEET: text}, "a root in the wrong place")
    before = _outside_git(example_repo.path)
    code = main(["--repo", str(example_repo.path), "publish", "--rev", "main"])
    err = capsys.readouterr().err
    line = text.splitlines().index(f"{old.split(':')[0]}: {value}") + 1
    assert code == 1 and f"gitprov.yaml:{line}:" in err and why in err, err
    assert "--allow-root" not in err  # (allowing the directory would not make it right)
    assert _outside_git(example_repo.path) == before


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--http-root", ".", "the HTTP root . holds the repository's git directory"),
        ("--tftp-root", "inventory", "the TFTP root inventory is inside the inventory"),
        ("--http-root", ".git/http", "is inside the repository's git directory"),
        ("--state-dir", "inventory/state", "the state dir inventory/state is inside the inv"),
        ("--state-dir", ".git/state", "is inside the repository's git directory"),
    ],
)
def test_the_publisher_may_not_serve_the_repository_or_write_into_the_inventory_either(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    why: str,
) -> None:
    # The publisher's own directories are its choice, but `--http-root .` at the
    # repository's top would serve .git (every commit) and secrets.yaml.
    from gitprov.cli import main

    monkeypatch.chdir(example_repo.path)
    given = {"--http-root": "var/http", "--tftp-root": "var/tftp", "--state-dir": "var/state"}
    given[option] = value
    argv = [word for pair in given.items() for word in pair]
    before = _outside_git(example_repo.path)
    assert main(["publish", "--rev", "main", *argv]) == 2
    err = capsys.readouterr().err
    assert why in err and "hint: give a directory beside the inventory" in err, err
    assert _outside_git(example_repo.path) == before


def test_a_state_dir_may_hold_a_repository_and_roots_may_sit_beside_it(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    # (`watch --remote` keeps its mirror in the state dir: the state dir holds a git
    # directory, which is not served)
    from gitprov.cli import main

    state = tmp_path / "state"
    mirror = state / "mirror.git"
    pygit2.clone_repository(str(example_repo.path), str(mirror), bare=True)
    argv = ["--http-root", str(tmp_path / "http"), "--tftp-root", str(tmp_path / "tftp")]
    code = main(
        ["--repo", str(mirror), "publish", "--rev", "main", *argv, "--state-dir", str(state)]
    )
    assert code == 0
    assert (state / "manifest.json").is_file()


def _outside_git(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if ".git" not in p.parts)


def test_a_root_named_with_a_newline_is_shown_escaped_in_the_summary(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's path, but one line of output all the same (a log reader would take
    its second half for a line of its own)."""
    from gitprov.cli import main

    http = tmp_path / "h\nx"
    argv = ["--repo", str(example_repo.path), "publish", "--http-root", str(http)]
    assert main([*argv, "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    summary = next(line for line in out.splitlines() if line.startswith("published "))
    assert f" in {tmp_path}/h\\x0ax, " in summary, out


def test_a_root_spelt_with_dot_dot_is_the_same_root(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    """`sub/../http` and `http` are one root: publishing the same commit into it again
    writes nothing and the journal gains no entry (it listed every file as added)."""
    from gitprov.cli import main

    state = ["--state-dir", str(tmp_path / "state")]
    argv = ["--repo", str(example_repo.path), "publish", *state]
    (tmp_path / "sub").mkdir()
    assert main([*argv, "--http-root", str(tmp_path / "http")]) == 0
    journal = (tmp_path / "state" / JOURNAL).read_bytes()
    assert main([*argv, "--http-root", str(tmp_path / "sub" / ".." / "http")]) == 0
    assert (tmp_path / "state" / JOURNAL).read_bytes() == journal
    manifest = load_manifest(tmp_path / "state")
    assert manifest is not None
    roots = list(manifest.roots)
    assert str(tmp_path / "http") in roots and not any(".." in r for r in roots), roots
