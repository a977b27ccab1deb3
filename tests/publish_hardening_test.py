"""What a publisher refuses, whatever the inventory says: removing most of the fleet at
once, names servers do not serve, firmware that is a link, roots the operator did not
choose, commits not signed by an allowed key."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pygit2
import pytest

from gitprov.cli import main
from gitprov.errors import GitprovError, UsageError
from gitprov.pipeline import Pipeline
from gitprov.plan import MANIFEST, load_manifest
from gitprov.publish import Refused, Targets, publish
from gitprov.publisher_config import PublisherConfig, load, resolve
from gitprov.secrets import generate_keypair, public_key_of
from tests.fixtures.fifo import writerless_fifo
from tests.fixtures.fleet import device_path, fleet_files, generated_mac
from tests.fixtures.gitrepo import GitRepo, example_files
from tests.fixtures.roots import root_args
from tests.fixtures.signing import (
    SignedRepo,
    allowed_signers,
    pgp_key,
    pgp_keyring,
    ssh_key,
    stop_gpg_agents,
)
from tests.rules.lint import IP542N, check

FLEET = "inventory/gitprov.yaml"
IP542N_FILE = "inventory/models/IP542N.yaml"
FIRMWARE = "IP542N_F107.bin"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(*dirs: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(d.parent)): p.read_bytes()
        for d in dirs
        if d.exists()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


# -- mass removal ---------------------------------------------------------------------
@pytest.fixture
def fleet_of_100(tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]) -> GitRepo:
    """The example inventory grown to 100 devices (4 of its own, 96 generated), published."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit(fleet_files(96), "a fleet of 100")
    code, _, err = run(capsys, "--repo", str(repo.path), "publish", *root_args(tmp_path))
    assert code == 0, err
    manifest = load_manifest(tmp_path / "state")
    assert manifest is not None and len(manifest.files) == 100
    return repo


def retire(repo: GitRepo, n: int, message: str = "retire devices", *, first: int = 0) -> str:
    return repo.commit({device_path(i): None for i in range(first, first + n)}, message)


def test_removing_11_of_100_devices_is_refused_and_publishes_only_when_allowed(
    fleet_of_100: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = (tmp_path / "http", tmp_path / "tftp")
    before = snapshot(*roots)
    manifest = (tmp_path / "state" / MANIFEST).read_bytes()
    head = retire(fleet_of_100, 11)
    argv = ["--repo", str(fleet_of_100.path), "publish", *root_args(tmp_path)]

    code, _, err = run(capsys, *argv)
    assert code == 1
    assert f"commit {head[:12]} removes 11 of the 100 published devices (11%)" in err
    assert "more than publish.max_removal allows (10%)" in err
    assert "--allow-mass-removal" in err
    assert snapshot(*roots) == before  # nothing removed, nothing written
    assert (tmp_path / "state" / MANIFEST).read_bytes() == manifest

    code, out, err = run(capsys, *argv, "--allow-mass-removal")
    assert code == 0, err
    assert "22 removed" in out  # 11 files in each of the two roots
    for i in range(11):
        for root in roots:
            assert not (root / f"fv{generated_mac(i)}.conf").exists()
    m = load_manifest(tmp_path / "state")
    assert m is not None and m.commit == head and len(m.files) == 89


def test_removing_9_of_100_devices_publishes_without_the_flag(
    fleet_of_100: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = retire(fleet_of_100, 9)
    code, out, err = run(capsys, "--repo", str(fleet_of_100.path), "publish", *root_args(tmp_path))
    assert code == 0, err
    assert "18 removed" in out
    m = load_manifest(tmp_path / "state")
    assert m is not None and m.commit == head and len(m.files) == 91


def test_the_stricter_of_the_published_and_the_new_max_removal_applies(
    fleet_of_100: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published = dict(fleet_of_100.files)
    argv = ["--repo", str(fleet_of_100.path), "publish", *root_args(tmp_path)]
    fleet = published[FLEET].decode()
    # Loosening the limit in the same commit that removes 20 devices does not let it pass.
    loose = fleet.replace(
        "  state_dir: var/state\n", "  state_dir: var/state\n  max_removal: 50%\n"
    )
    changes: dict[str, str | bytes | None] = {FLEET: loose}
    changes.update({device_path(i): None for i in range(20)})
    fleet_of_100.commit(changes, "allow more and remove 20", base=published)
    code, _, err = run(capsys, *argv)
    assert code == 1 and "removes 20 of the 100" in err and "allows (10%)" in err
    # Tightening it applies at once: 7 of 100 is over 5%.
    tight = fleet.replace("  state_dir: var/state\n", "  state_dir: var/state\n  max_removal: 5%\n")
    changes = {FLEET: tight, **{device_path(i): None for i in range(7)}}
    fleet_of_100.commit(changes, "tighten and remove 7", base=published)
    code, _, err = run(capsys, *argv)
    assert code == 1 and "removes 7 of the 100" in err and "allows (5%)" in err
    m = load_manifest(tmp_path / "state")
    assert m is not None and len(m.files) == 100


def test_one_device_is_never_a_mass_removal(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repo", str(example_repo.path), "publish", *root_args(tmp_path)]
    assert run(capsys, *argv)[0] == 0
    example_repo.commit({"inventory/devices/0021f2a0c002.yaml": None}, "retire one of four")
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    example_repo.commit(
        {"inventory/devices/0021f2a0c001.yaml": None, "inventory/devices/0021f2011b20.yaml": None},
        "retire two of three",
    )
    code, _, err = run(capsys, *argv)
    assert code == 1 and "removes 2 of the 3 published devices (66.7%)" in err


# -- names from the inventory ---------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (".IP542N.conf", "starts with '.'"),
        (".gitprov-x.tmp", "gitprov's own temp files"),
        ("..", "names a directory"),
        (".", "names a directory"),
    ],
)
def test_dot_names_of_models_are_validation_errors_at_their_line(name: str, reason: str) -> None:
    bootstrap = IP542N.replace("config_file_name: IP542N.conf", f'config_file_name: "{name}"')
    found = check("GP107", {"models/IP542N.yaml": bootstrap}, (3, 19))
    assert reason in found[0].message and repr(name) in found[0].message
    firmware = IP542N + f'firmware:\n  file: "{name}"\n'
    found = check("GP107", {"models/IP542N.yaml": firmware}, (6, 9))
    assert reason in found[0].message


def test_plain_model_names_pass_and_a_dot_model_file_is_caught_through_its_default_names() -> None:
    check("GP107", {"models/IP542N.yaml": IP542N + "firmware:\n  file: IP542N_F107.bin\n"})
    # models/.x.yaml: its bootstrap defaults to .x.conf, and $(PN) to ".x".
    hidden = "family: flyingvoice\nline_count: 2\n"
    check("GP107", {"models/.x.yaml": hidden}, (1, 1))


def test_the_default_bootstrap_name_is_the_products_and_is_checked_at_product_name() -> None:
    # The device asks for its product's default Config File Name (IP542N.conf), whatever
    # the model file is called: `.x` as a product gives `.x.conf`, reported where it is set.
    model = "family: flyingvoice\nproduct_name: .x\nline_count: 2\n"
    found = check("GP107", {"models/plain.yaml": model}, (2, 15))
    assert "the default config_file_name '.x.conf'" in found[0].message
    check("GP107", {"models/.x.yaml": "family: flyingvoice\nproduct_name: X1\nline_count: 2\n"})


def test_a_file_name_template_expanding_to_a_dot_name_is_refused(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = example_repo.files[FLEET].replace(b'"fv$(MA).conf"', b'".fv$(MA).conf"')
    example_repo.commit({FLEET: fleet}, "hide every file")
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish", *root_args(tmp_path))
    assert code == 1
    assert "inventory/gitprov.yaml:8:12: error[GP107]" in err
    assert "dot-files are never served" in err
    assert not (tmp_path / "http").exists() and load_manifest(tmp_path / "state") is None


def test_validate_reports_a_dot_bootstrap_name_where_it_is_written(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    model = example_repo.files[IP542N_FILE].replace(
        b"config_file_name: IP542N.conf", b"config_file_name: .."
    )
    example_repo.commit({IP542N_FILE: model}, "a bootstrap named ..")
    code, out, _ = run(capsys, "--repo", str(example_repo.path), "validate")
    assert code == 1
    assert "inventory/models/IP542N.yaml:5:19: error[GP107]: config_file_name '..'" in out


def test_publish_refuses_an_unsafe_name_even_past_validation(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    commit = example_repo.repo.revparse_single("main")
    assert isinstance(commit, pygit2.Commit)
    build = Pipeline(example_repo.repo).build(commit, private_key)
    first = dataclasses.replace(build.files[0], name="..")
    bad = build._replace(files=(first, *build.files[1:]))
    t = Targets((tmp_path / "http",), tmp_path / "state")
    with pytest.raises(
        Refused, match=r"the device file '\.\.' \(0021f2011b19\) cannot be published"
    ):
        publish(bad, t)
    assert not (tmp_path / "http").exists()


# -- firmware -------------------------------------------------------------------------
@pytest.fixture
def firmware_repo(example_repo: GitRepo) -> GitRepo:
    model = (
        example_repo.files[IP542N_FILE]
        + f'firmware:\n  version: "1.0.7"\n  file: {FIRMWARE}\n'.encode()
    )
    example_repo.commit({IP542N_FILE: model}, "IP542N firmware")
    return example_repo


def test_a_firmware_symlink_to_a_file_outside_is_refused_and_nothing_is_published(
    firmware_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    (firmware / FIRMWARE).symlink_to(secret)
    argv = ["--repo", str(firmware_repo.path), "publish", *root_args(tmp_path)]
    code, _, err = run(capsys, *argv, "--firmware-dir", str(firmware))
    assert code == 1
    assert f"firmware {FIRMWARE} of model IP542N" in err
    assert f"{firmware / FIRMWARE} is a symbolic link" in err
    assert "nothing was published" in err
    assert not (tmp_path / "http").exists() and not (tmp_path / "tftp").exists()
    assert load_manifest(tmp_path / "state") is None

    # A link that stays inside the firmware dir is refused too; the file itself publishes.
    (firmware / "real.bin").write_bytes(b"\x7fFIRMWARE")
    (firmware / FIRMWARE).unlink()
    (firmware / FIRMWARE).symlink_to(firmware / "real.bin")
    assert run(capsys, *argv, "--firmware-dir", str(firmware))[0] == 1
    (firmware / FIRMWARE).unlink()
    (firmware / FIRMWARE).write_bytes(b"\x7fFIRMWARE")
    code, _, err = run(capsys, *argv, "--firmware-dir", str(firmware))
    assert code == 0, err
    assert (tmp_path / "http" / FIRMWARE).read_bytes() == b"\x7fFIRMWARE"


def test_a_firmware_fifo_is_refused_without_blocking(
    firmware_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    os.mkfifo(firmware / FIRMWARE)
    result: list[tuple[int, str, str]] = []
    argv = ["--repo", str(firmware_repo.path), "publish", *root_args(tmp_path)]
    worker = threading.Thread(
        target=lambda: result.append(run(capsys, *argv, "--firmware-dir", str(firmware)))
    )
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "publish blocked on the fifo"
    code, _, err = result[0]
    assert code == 1 and "is a fifo" in err
    assert load_manifest(tmp_path / "state") is None


def test_the_firmware_dir_may_not_hold_the_manifest(tmp_path: Path) -> None:
    with pytest.raises(GitprovError, match=r"the firmware dir .* and the state dir .* overlap"):
        Targets((tmp_path / "http",), tmp_path / "state", tmp_path / "state")
    with pytest.raises(GitprovError, match="overlap"):
        Targets((tmp_path / "http",), tmp_path / "var" / "state", tmp_path / "var")


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("  state_dir: var/http/state\n", "inventory/gitprov.yaml:16:14: publish.state_dir:"),
        (
            "  state_dir: var/state\n  firmware_dir: var/state\n",
            "inventory/gitprov.yaml:17:17: publish.firmware_dir:",
        ),
    ],
)
def test_a_state_dir_the_inventory_puts_where_it_would_be_served_is_refused_at_its_line(
    example_repo: GitRepo,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    where: str,
) -> None:
    fleet = example_repo.files[FLEET].replace(b"  state_dir: var/state\n", setting.encode())
    example_repo.commit({FLEET: fleet}, "move the state dir")
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish")
    assert code == 1 and where in err, err
    assert not (example_repo.path / "var" / "http").exists()


def test_a_commit_that_swaps_the_public_key_is_refused_before_anything_is_built(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The values sealed to the old key still open, so the commit would publish; but
    every secret sealed from then on would be readable by the new key's holder only."""
    secrets = "inventory/secrets.yaml"
    _, theirs = generate_keypair()
    ours = public_key_of(private_key)
    example_repo.commit(
        {secrets: example_repo.files[secrets].replace(ours.encode(), theirs.encode())}
    )
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish", *root_args(tmp_path))
    assert code == 2
    assert f"inventory/secrets.yaml:2:13: public_key {theirs} is not the public half" in err
    assert not (tmp_path / "http").exists()
    code, _, err = run(capsys, "--repo", str(example_repo.path), "show", "--reveal", "0021f2011b19")
    assert code == 2 and "is not the public half" in err


# -- where the publisher writes -------------------------------------------------------
def move_root(repo: GitRepo, to: str) -> str:
    fleet = repo.files[FLEET].replace(b"http_root: var/http", f"http_root: {to}".encode())
    return repo.commit({FLEET: fleet}, f"publish to {to}")


def test_an_inventory_root_outside_the_work_tree_is_refused_without_an_allow_list(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    move_root(example_repo, "../elsewhere")
    argv = ["--repo", str(example_repo.path), "publish"]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert "inventory/gitprov.yaml:14:14: publish.http_root names" in err
    assert "outside the repository's work tree" in err and "--allow-root" in err
    assert not (tmp_path / "elsewhere").exists()
    assert not (example_repo.path / "var").exists()
    # Allowed by the operator, it publishes; the operator's own --http-root needs nothing.
    code, _, err = run(
        capsys,
        *argv,
        "--allow-root",
        str(tmp_path / "elsewhere"),
        "--allow-root",
        str(example_repo.path / "var"),
    )
    assert code == 0, err
    assert (tmp_path / "elsewhere" / "fv0021f2011b19.conf").is_file()


def test_a_symlink_in_the_work_tree_does_not_lead_the_publisher_out(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (example_repo.path / "var").symlink_to(outside)
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish")
    assert code == 1 and f"(that is {outside / 'http'})" in err
    assert list(outside.iterdir()) == []


def test_the_git_directory_is_never_a_root(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    move_root(example_repo, ".git/hooks")
    code, _, err = run(
        capsys, "--repo", str(example_repo.path), "publish", "--allow-root", str(tmp_path)
    )
    assert code == 1 and "inside the repository's git directory" in err
    assert not list((example_repo.path / ".git" / "hooks").glob("fv*"))


def test_a_bare_repository_needs_the_operator_for_every_path(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo.git", bare=True)
    repo.commit(example_files(), "example")
    argv = ["--repo", str(repo.path), "publish"]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "in a bare repository, and no root is allowed" in err
    code, _, err = run(capsys, *argv, *root_args(tmp_path))
    assert code == 0, err


def test_a_commit_moving_the_roots_is_refused_unless_allowed(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repo", str(example_repo.path), "publish", "--allow-root", str(tmp_path)]
    assert run(capsys, *argv)[0] == 0
    first = load_manifest(example_repo.path / "var" / "state")
    assert first is not None
    head = move_root(example_repo, str(tmp_path / "moved"))
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert f"commit {head[:12]} changes where files are published (roots" in err
    assert f"-> {tmp_path / 'moved'}" in err and "--allow-target-change" in err
    assert not (tmp_path / "moved").exists()
    assert load_manifest(example_repo.path / "var" / "state") == first
    code, _, err = run(capsys, *argv, "--allow-target-change")
    assert code == 0, err
    assert (tmp_path / "moved" / "fv0021f2011b19.conf").is_file()


def test_a_commit_moving_the_state_dir_is_refused_though_no_manifest_is_there(
    example_repo: GitRepo, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The new state dir holds no manifest: the guards would have nothing to compare
    with, so a commit could move it and remove every device at once."""
    argv = ["--repo", str(example_repo.path), "publish"]
    assert run(capsys, *argv)[0] == 0
    fleet = example_repo.files[FLEET].replace(b"state_dir: var/state", b"state_dir: var/fresh")
    gone = {f"inventory/devices/{n}.yaml": None for n in ("0021f2011b20", "0021f2a0c001")}
    head = example_repo.commit({FLEET: fleet, **gone}, "move the state dir, retire two")
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert f"commit {head[:12]} changes where files are published (state dir" in err
    assert load_manifest(example_repo.path / "var" / "fresh") is None
    assert (example_repo.path / "var" / "http" / "fv0021f2011b20.conf").is_file()
    code, _, err = run(capsys, *argv, "--allow-target-change")
    assert code == 0, err
    assert load_manifest(example_repo.path / "var" / "fresh") is not None


def test_roots_the_operator_sets_make_inventory_moves_harmless(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repo", str(example_repo.path), "publish", *root_args(tmp_path)]
    assert run(capsys, *argv)[0] == 0
    move_root(example_repo, "/etc")
    code, _, err = run(capsys, *argv)
    assert code == 0, err  # the operator's --http-root wins: nothing moves


# -- the publisher's config file ------------------------------------------------------
def test_the_publisher_config_file_sets_roots_allow_list_and_signatures(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "publisher.yaml"
    config.write_text(
        f"http_root: {tmp_path}/http\n"
        f"tftp_root: [{tmp_path}/tftp]\n"
        f"state_dir: {tmp_path}/state\n"
        f"allowed_roots: [{tmp_path}/fw]\n"
    )
    loaded = load(config)
    assert loaded.http_roots == (f"{tmp_path}/http",) and loaded.sets_targets
    assert loaded.signature_policy() is None
    monkeypatch.setenv("GITPROV_PUBLISHER_CONFIG", str(config))
    monkeypatch.setenv("GITPROV_ALLOWED_ROOTS", "/srv/a:/srv/b")
    merged = resolve(PublisherConfig(http_roots=("cli",)), None, os.environ)
    assert merged.http_roots == ("cli",) and merged.tftp_roots == (f"{tmp_path}/tftp",)
    assert merged.allowed_roots == ("/srv/a", "/srv/b", f"{tmp_path}/fw")
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish")
    assert code == 0, err
    assert (tmp_path / "tftp" / "fv0021f2011b19.conf").is_file()
    assert not (example_repo.path / "var").exists()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("state_dir: var/state\n", ":1:12: state_dir: var/state is not an absolute path"),
        ("http_root: /a\nroots: /b\n", ":2:1: unknown setting 'roots'"),
        ("require_signed: yes please\n", ":1:17: require_signed must be true or false"),
    ],
)
def test_a_bad_publisher_config_is_a_usage_error_at_its_line(
    tmp_path: Path, text: str, where: str
) -> None:
    config = tmp_path / "publisher.yaml"
    config.write_text(text)
    with pytest.raises(UsageError) as caught:
        load(config)
    assert caught.value.message == f"{config}{where}"


def test_a_publisher_config_that_never_ends_is_refused_by_its_size(tmp_path: Path) -> None:
    # --config /dev/zero was read until memory ran out: a device is no config at all, and
    # a file past the bound is read no further.
    with pytest.raises(UsageError, match="is a character device, not a file"):
        load(Path("/dev/zero"))
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(17 * 2**20)
    with pytest.raises(UsageError, match="larger than 16 MiB: not a publisher config"):
        load(big)


def test_a_publisher_config_fifo_nothing_writes_to_is_refused(tmp_path: Path) -> None:
    # `--config FIFO` (or $GITPROV_PUBLISHER_CONFIG) blocked in open() for ever.
    with writerless_fifo(tmp_path / "fifo") as fifo, pytest.raises(UsageError) as caught:
        load(fifo)
    assert caught.value.message == (
        f"the publisher config {fifo} is a fifo or pipe nothing writes to, not a file"
    )
    assert "--config FILE" in (caught.value.hint or "")
    # A pipe a command writes into is read as a file is (`--config <(make-config)`).
    read, write = os.pipe()
    os.write(write, b"state_dir: /var/lib/gitprov\n")
    os.close(write)
    try:
        assert load(Path(f"/dev/fd/{read}")).state_dir == "/var/lib/gitprov"
    finally:
        os.close(read)


def test_watch_will_not_start_without_the_operators_targets(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repo", str(example_repo.path), "watch", "--no-inotify"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "needs its state dir from its operator" in err
    code, _, err = run(capsys, *argv, "--state-dir", str(tmp_path / "state"))
    assert code == 2 and "--allow-root" in err
    code, _, err = run(capsys, *argv, *root_args(tmp_path), "--require-signed")
    assert code == 2 and "no allowed key is given" in err


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (["--http-root", "h", "--state-dir", "h/state"], "the state dir {t}/h/state is inside"),
        (["--http-root", "h", "--tftp-root", "h/t", "--state-dir", "s"], "{t}/h/t is inside"),
        (["--http-root", "{git}/h", "--state-dir", "s"], "repository's git directory"),
        (["--http-root", "h", "--state-dir", "s", "--stage-root", "s/st"], "overlap"),
        (["--http-root", "h", "--state-dir", "s", "--firmware-dir", "s/fw"], "overlap"),
    ],
)
def test_the_operators_own_directories_that_clash_are_refused_at_the_start(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    given: list[str],
    says: str,
) -> None:
    # A watcher took these per commit: it ran on, reporting every commit as not
    # published, for a mistake no commit can mend. Both commands now refuse at once.
    git = str(example_repo.path / ".git")
    paths = [a.format(git=git) for a in given]
    paths = [a if a.startswith("-") or a.startswith("/") else str(tmp_path / a) for a in paths]
    expected = says.format(t=tmp_path)
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish", *paths)
    assert code == 2 and expected in err, err
    # (a process: a watcher that starts runs until stopped)
    watch = [sys.executable, "-m", "gitprov", "--repo", str(example_repo.path), "watch"]
    done = subprocess.run(
        [*watch, "--no-inotify", "--interval", "0.1", *paths],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert not (tmp_path / "h").exists() and not (tmp_path / "s" / "manifest.json").exists()


# -- signed commits -------------------------------------------------------------------
def test_only_commits_signed_by_an_allowed_ssh_key_publish(
    tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ops = ssh_key(tmp_path / "keys", "ops")
    stranger = ssh_key(tmp_path / "keys", "stranger")
    signers = allowed_signers(tmp_path / "allowed_signers", ("ops@gitprov.invalid", ops))
    repo = SignedRepo(tmp_path / "repo", tmp_path / "home")
    good = repo.commit(example_files(), "example inventory", key=ops)
    argv = ["--repo", str(repo.path), "publish", *root_args(tmp_path)]
    argv += ["--require-signed", "--allowed-signers", str(signers)]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    served = snapshot(tmp_path / "http", tmp_path / "tftp")

    device = "inventory/devices/0021f2011b20.yaml"
    text = example_files()[device]
    unsigned = repo.commit(
        {device: text.replace(b"Meeting room", b"Board room")},
        "unsigned change",
        who=("Eve Pusher", "eve@gitprov.invalid"),
    )
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert (
        f"commit {unsigned[:12]} (committer Eve Pusher <eve@gitprov.invalid>) is not signed "
        "by an allowed key: it is not signed" in err
    )
    foreign = repo.commit(
        {device: text.replace(b"Meeting room", b"War room")},
        "signed by a stranger",
        key=stranger,
        who=("Mallory", "mallory@gitprov.invalid"),
    )
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert f"commit {foreign[:12]} (committer Mallory <mallory@gitprov.invalid>)" in err
    assert "No principal matched" in err
    m = load_manifest(tmp_path / "state")
    assert m is not None and m.commit == good
    assert snapshot(tmp_path / "http", tmp_path / "tftp") == served

    # Signed again by the allowed key: it publishes (from the published commit on).
    fixed = repo.commit({device: text.replace(b"Meeting room", b"Quiet room")}, "ok", key=ops)
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    m = load_manifest(tmp_path / "state")
    assert m is not None and m.commit == fixed


def test_openpgp_signatures_count_only_with_the_operators_keyring(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # gpg-agent's sockets live in each GnuPG home, and a socket's path has at most 107
    # bytes: the homes sit just under pytest's base directory, not in the deeper tmp_path
    # (under pytest-xdist one more level deep).
    gpg = tmp_path_factory.mktemp("gpg")
    homes = [gpg / "ops", gpg / "stranger", gpg / "allowed"]
    ssh_only = ("x@gitprov.invalid", ssh_key(tmp_path / "keys", "x"))
    signers = allowed_signers(tmp_path / "allowed_signers", ssh_only)
    try:
        ops = pgp_key(homes[0], "Dana Ops <dana@gitprov.invalid>")
        stranger = pgp_key(homes[1], "Mallory <mallory@gitprov.invalid>")
        keyring = pgp_keyring(homes[2], ops)
        repo = SignedRepo(tmp_path / "repo", tmp_path / "home")
        repo.commit(example_files(), "example inventory", key=ops)
        argv = ["--repo", str(repo.path), "publish", *root_args(tmp_path)]
        # Only SSH keys allowed: an OpenPGP signature, even a good one, does not count.
        code, _, err = run(capsys, *argv, "--allowed-signers", str(signers))
        assert code == 1 and "signed with an OpenPGP key, and no --gpg-home is given" in err
        code, _, err = run(capsys, *argv, "--gpg-home", str(keyring))
        assert code == 0, err
        device = "inventory/devices/0021f2011b20.yaml"
        text = example_files()[device]
        foreign = repo.commit({device: text.replace(b"Meeting", b"War")}, "x", key=stranger)
        code, _, err = run(capsys, *argv, "--gpg-home", str(keyring))
        assert code == 1
        assert f"commit {foreign[:12]}" in err
        assert "signed by a key that is not in the allowed keyring" in err
    finally:
        stop_gpg_agents(*homes)


# -- what plan says about it ----------------------------------------------------------
def test_plan_flags_a_move_of_the_http_root_in_every_format(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(example_repo.repo.head.target)
    move_root(example_repo, "../elsewhere")
    argv = ["--repo", str(example_repo.path), "plan", "--base", base, "--rev", "main"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert out.splitlines()[1] == (
        "WARNING: this change moves where files are published (publish.http_root var/http "
        "-> ../elsewhere): a publisher refuses it unless its operator allows the move "
        "(--allow-target-change) and the new paths are inside its allowed roots"
    )
    assert "no device changes" in out
    code, out, _ = run(capsys, *argv, "--format", "json")
    doc = json.loads(out)
    assert doc["target_changes"] == [
        {"setting": "publish.http_root", "old": "var/http", "new": "../elsewhere"}
    ]
    saved = tmp_path / "plan.json"
    saved.write_text(out)
    for extra in ([], ["--from-json", str(saved)]):
        code, out, _ = run(capsys, *argv, "--format", "markdown", *extra)
        assert code == 0
        assert (
            "> [!WARNING]\n> **This change moves where files are published:** "
            "`publish.http_root` `var/http` → `../elsewhere`." in out
        )


def test_plan_shows_the_share_of_devices_removed_and_flags_a_mass_removal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    base = repo.commit(fleet_files(96), "a fleet of 100")
    retire(repo, 9)
    argv = ["--repo", str(repo.path), "plan", "--base", base, "--rev", "main"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.splitlines()[1] == "removes 9 of the 100 devices (9%)"
    assert "WARNING" not in out
    code, out, _ = run(capsys, *argv, "--format", "markdown")
    assert "Removes 9 of the 100 devices (9%)." in out and "[!WARNING]" not in out

    retire(repo, 2, first=9)
    code, out, _ = run(capsys, *argv)
    assert out.splitlines()[1] == (
        "WARNING: removes 11 of the 100 devices (11%), more than publish.max_removal "
        "allows (10%): a publisher refuses it without --allow-mass-removal"
    )
    code, out, _ = run(capsys, *argv, "--format", "json")
    assert json.loads(out)["removal"] == {
        "devices": 11,
        "of": 100,
        "percent": 11.0,
        "max_percent": 10.0,
        "refused": True,
    }
    code, out, _ = run(capsys, *argv, "--format", "markdown")
    assert (
        "> [!WARNING]\n> **This change removes 11 of the 100 devices (11%), more than "
        "publish.max_removal allows (10%):** a publisher refuses it without "
        "`--allow-mass-removal`." in out
    )


@pytest.mark.parametrize("where", ["http", "tftp/below"])
def test_a_file_where_a_root_must_be_refuses_before_any_root_is_written(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """A file in the place of a root, or above one, is the operator's setting to fix
    (exit 2): found before anything is written, so the other root does not take the
    commit alone (it did, then the publish failed on `File exists`)."""
    base = tmp_path / "out"
    base.mkdir()
    (base / where.split("/")[0]).write_text("not a directory\n")
    args = root_args(base)
    if where == "tftp/below":
        args[args.index("--tftp-root") + 1] = str(base / "tftp" / "below")
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish", *args)
    assert code == 2, err
    root = base / where
    assert f"cannot publish into the root {root}: " in err, err
    assert ("it is a file" if where == "http" else f"({base / 'tftp'}, above it, is a file)") in err
    assert "nothing was published" in err
    assert sorted(p.name for p in base.iterdir()) == sorted({"state", where.split("/")[0]})
    assert load_manifest(base / "state") is None


@pytest.mark.parametrize("where", ["name", "name below a directory to make", "path"])
def test_a_root_whose_name_is_too_long_refuses_before_any_root_is_written(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """A name longer than the file system takes (or a path longer than any path) in the
    TFTP root: the HTTP root took the commit, then the TFTP root failed on its first
    file (exit 1, at every publish again), the two roots serving different commits."""
    base = tmp_path / "out"
    base.mkdir()
    args = root_args(base)
    tftp = {
        "name": base / ("n" * 300) / "tftp",
        "name below a directory to make": base / "a" / "b" / ("n" * 300),
        "path": base.joinpath(*["abcdefgh"] * 600),
    }[where]
    args[args.index("--tftp-root") + 1] = str(tftp)
    code, out, err = run(capsys, "--repo", str(example_repo.path), "publish", *args)
    assert code == 2, err
    assert f"cannot publish into the root {tftp}: " in err, err
    assert ("more than the 4096" if where == "path" else "is 300 bytes long") in err, err
    assert "nothing was published" in err and "published " not in out
    assert sorted(p.name for p in base.iterdir()) == ["state"]
    assert load_manifest(base / "state") is None


@pytest.mark.parametrize("where", ["http", "http/below"])
def test_a_root_that_is_a_link_to_nowhere_refuses_before_any_root_is_written(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """The publish wrote the other root, said `published ... in` the linked one, then
    failed on `File exists` (exit 1), and so did every retry."""
    base = tmp_path / "out"
    base.mkdir()
    (base / "http").symlink_to(tmp_path / "missing" / "deeper")
    args = root_args(base)
    args[args.index("--http-root") + 1] = str(base / where)
    code, out, err = run(capsys, "--repo", str(example_repo.path), "publish", *args)
    assert code == 2, err
    assert "a symbolic link to" in err and "which does not exist" in err, err
    assert "nothing was published" in err and "published " not in out
    assert not (base / "tftp").exists() or not any((base / "tftp").iterdir())


@pytest.mark.parametrize("put", ["fifo", "link to /dev/zero", "device"])
@pytest.mark.parametrize("verify", [False, True])
def test_a_fifo_or_endless_link_in_place_of_a_served_file_is_replaced_not_read(
    example_repo: GitRepo, private_key: str, tmp_path: Path, put: str, verify: bool
) -> None:
    """A served file replaced by a fifo (or a link to /dev/zero) was read to hash it: the
    publish hung for ever, holding the lock. It is drift: replaced by the file."""
    argv = [sys.executable, "-m", "gitprov", "-q", "--repo", str(example_repo.path)]
    argv += ["publish", *root_args(tmp_path)]
    assert subprocess.run(argv, timeout=30).returncode == 0
    served = tmp_path / "http" / "fv0021f2011b19.conf"
    good = served.read_bytes()
    served.unlink()
    if put == "fifo":
        os.mkfifo(served)
    elif put == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device file needs root")
        os.mknod(served, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # (/dev/null's numbers)
    else:
        served.symlink_to("/dev/zero")
    done = subprocess.run(argv + (["--verify"] if verify else []), timeout=30)
    assert done.returncode == 0
    assert not served.is_symlink() and served.is_file() and served.read_bytes() == good


@pytest.mark.parametrize("put", ["fifo", "link to /dev/null"])
def test_a_lock_file_that_is_not_a_file_is_a_state_dir_error(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    put: str,
) -> None:
    """publish.lock made a fifo or a link: the publish truncated it and ended in a
    traceback (exit 3). It says what is in the way, as for a directory there."""
    argv = ["--repo", str(example_repo.path), "publish", *root_args(tmp_path)]
    assert main(argv) == 0
    lock = tmp_path / "state" / "publish.lock"
    lock.unlink()
    if put == "fifo":
        os.mkfifo(lock)
    else:
        lock.symlink_to("/dev/null")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot use the state dir {tmp_path / 'state'}: {lock}: " in err, err


def test_a_directory_in_place_of_a_served_file_is_named_in_the_failure(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repo", str(example_repo.path), "publish", *root_args(tmp_path)]
    assert main(argv) == 0
    served = tmp_path / "http" / "fv0021f2011b20.conf"
    served.unlink()
    served.mkdir()
    capsys.readouterr()
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert f"{tmp_path / 'http'}: fv0021f2011b20.conf: Is a directory" in err, err
    assert f"{served} was changed by hand; not restored: the root failed" in out, out
    served.rmdir()
    assert main(argv) == 0 and served.is_file()


def test_a_stray_fifo_or_link_in_a_root_is_pruned_as_a_stray_file_is(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link to /dev/zero in a root (nginx follows it) was neither reported nor pruned:
    only regular files counted as files gitprov did not write."""
    argv = ["--repo", str(example_repo.path), "publish", *root_args(tmp_path)]
    assert main(argv) == 0
    http = tmp_path / "http"
    (http / "zero.conf").symlink_to("/dev/zero")
    os.mkfifo(http / "pipe.conf")
    (http / "sub").mkdir()
    (http / "dirlink").symlink_to(tmp_path / "state")  # (a directory: not a file)
    capsys.readouterr()
    assert main([*argv, "--prune-unknown"]) == 0
    out = capsys.readouterr().out
    for name in ("zero.conf", "pipe.conf"):
        assert f"{http / name} was not written by gitprov; removed" in out, out
        assert not os.path.lexists(http / name)
    assert (http / "sub").is_dir() and (http / "dirlink").is_symlink()


# -- state files that are no files ----------------------------------------------------
def _limited() -> None:
    # (without the fix, /dev/zero is read until memory runs out: not this machine's)
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize(
    "name",
    ["manifest.json", "manifest.index", "manifest.ends", "build-inputs.json", "journal.jsonl"],
)
def test_a_state_file_that_is_no_regular_file_never_hangs_nor_floods_memory(
    example_repo: GitRepo, private_key: str, tmp_path: Path, name: str, kind: str
) -> None:
    """A fifo put in place of a state file blocked publish and history for ever, and a
    link to /dev/zero read until memory ran out (exit 3). The manifest, its index and
    the build record are read as torn (a publish makes them anew); the journal, the
    fleet's history, is not replaced: an error says so (exit 2)."""
    roots = root_args(tmp_path)
    assert main(["--repo", str(example_repo.path), "publish", *roots]) == 0
    path = tmp_path / "state" / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(kind)
    device = "inventory/devices/0021f2011b20.yaml"
    head = example_repo.commit(
        {device: example_repo.files[device].replace(b"Meeting room", b"Board room")}, "rename"
    )
    # (processes: without the fix, the read never ends)
    gitprov = [sys.executable, "-m", "gitprov", "--repo", str(example_repo.path)]
    run_ = functools.partial(
        subprocess.run, capture_output=True, text=True, timeout=120, preexec_fn=_limited
    )
    done = run_([*gitprov, "publish", *roots])
    history = run_([*gitprov, "history", "--state-dir", str(tmp_path / "state")])
    if name == "journal.jsonl":
        assert done.returncode == 2 and "is not a regular file" in done.stderr, done.stderr
        assert history.returncode == 2 and "not a regular file" in history.stderr
        assert not path.is_file()  # (left for its operator to move aside)
    else:
        assert done.returncode == 0, done.stderr
        assert history.returncode == 0 and "Traceback" not in history.stderr, history.stderr
        published = load_manifest(tmp_path / "state")
        assert published is not None and published.commit == head


@pytest.mark.parametrize("target", ["a file", "nowhere"])
def test_a_journal_that_is_a_symbolic_link_is_never_appended_through(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: str,
) -> None:
    """The journal's append followed a link: one put in its place to /etc/passwd got
    the publish's entry appended to it (exit 0), and a dangling one made the file it
    names, outside the state dir. Now neither is written: exit 2, as for a fifo."""
    roots = root_args(tmp_path)
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish", *roots)
    assert code == 0, err
    outside = tmp_path / "outside"
    outside.mkdir()
    named = outside / "passwd"
    if target == "a file":
        named.write_text("root:x:0:0:root:/root:/bin/bash\n")
    path = tmp_path / "state" / "journal.jsonl"
    path.unlink()
    path.symlink_to(named)
    device = "inventory/devices/0021f2011b20.yaml"
    example_repo.commit(
        {device: example_repo.files[device].replace(b"Meeting room", b"Board room")}, "rename"
    )
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish", *roots)
    assert code == 2 and "symbolic link" in err, err
    if target == "a file":
        assert named.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    else:
        assert not named.exists()
    assert path.is_symlink()  # (left for its operator to move aside)


@pytest.mark.parametrize("where", ["--config", "--state-dir", "the inventory"])
def test_a_path_with_a_nul_is_a_usage_error_not_a_crash(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """A NUL in a publisher path ended in an internal error (exit 3: `embedded null
    byte`) in publish, history and verify."""
    args = root_args(tmp_path)
    if where == "--config":
        config = tmp_path / "publisher.yaml"
        config.write_text('state_dir: "/x/s\\0x"\n')
        args = ["--config", str(config), "--http-root", str(tmp_path / "http")]
    elif where == "--state-dir":
        args[args.index("--state-dir") + 1] = str(tmp_path / "s\0t")
    else:
        fleet = example_repo.files[FLEET].replace(
            b"  state_dir: var/state\n", b'  state_dir: "var/st\\0ate"\n'
        )
        assert fleet != example_repo.files[FLEET]
        example_repo.commit({FLEET: fleet}, "a NUL in a path")
        args = []
    code, _, err = run(capsys, "--repo", str(example_repo.path), "publish", *args)
    assert code in (1, 2) and "internal error" not in err, err
    assert "NUL character" in err or "error[" in err, err
