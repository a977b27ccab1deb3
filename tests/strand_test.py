"""A commit that changes what the devices' Profile Rule holds (the file name, the key)
without keeping it under encryption.previous is refused: every device would be stranded."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gitprov.cli import main
from gitprov.inventory import Encryption, Fleet
from gitprov.plan import load_manifest
from gitprov.secrets import public_key_of, seal
from gitprov.strand import SameSecret, Stranding, device_stranding, stranding
from gitprov.yamldoc import SecretRef
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args

FLEET = "inventory/gitprov.yaml"
SECRETS = "inventory/secrets.yaml"


def _fleet(file_name: str = "fv$(MA).conf", **encryption: Any) -> Fleet:
    enc = Encryption(master_key=SecretRef("k1"))._replace(**encryption)
    return Fleet(None, "f", 1000, file_name, "http://p", None, None, None, enc, None)  # type: ignore[arg-type]


def _same_value(values: dict[str, str]) -> SameSecret:
    def same(old: str, new: str) -> bool | None:
        return values.get(old) == values.get(new) if old in values and new in values else None

    return same


SAME = _same_value({"k1": "a", "k1b": "a", "k2": "b"})


def test_a_new_name_or_key_kept_nowhere_strands_the_devices() -> None:
    published = _fleet()
    assert stranding(published, _fleet("cfg$(MA).conf"), SAME) == (
        Stranding("file_name", "fv$(MA).conf", "cfg$(MA).conf"),
    )
    moved_key = _fleet(master_key=SecretRef("k2"))
    assert stranding(published, moved_key, SAME) == (
        Stranding("encryption.master_key", "k1", "k2"),
    )
    # The old key kept under previous, but not the old name: still the name it changed.
    half = _fleet(
        "fv$(MA)-k2.conf", master_key=SecretRef("k2"), previous_master_key=SecretRef("k1")
    )
    (found,) = stranding(published, half, SAME)
    assert found.setting == "file_name"
    # The old name kept, under another key than the devices hold.
    wrong = _fleet(
        "fv$(MA)-k2.conf",
        master_key=SecretRef("k2"),
        previous_master_key=SecretRef("k2"),
        previous_file_name="fv$(MA).conf",
    )
    assert stranding(published, wrong, SAME) == (
        Stranding("encryption.previous.master_key", "k1", "k2"),
    )


def test_what_devices_hold_kept_or_unchanged_strands_none() -> None:
    published = _fleet()
    kept = [
        _fleet(),
        _fleet("fv$MA.conf"),  # (expands alike for every device)
        _fleet(master_key=SecretRef("k1b")),  # another name, the same value
        _fleet(master_key=SecretRef("unknown")),  # cannot be told: taken as the same
        # A rotation (docs/keys.md): the new name and key, the old ones under previous.
        _fleet(
            "fv$(MA)-k2.conf",
            master_key=SecretRef("k2"),
            previous_master_key=SecretRef("k1"),
            previous_file_name="fv$(MA).conf",
        ),
        # A new name under the same key: the old name kept under previous.
        _fleet("cfg$(MA).conf", previous_file_name="fv$(MA).conf"),
        # Unencrypted devices hold no key.
        _fleet(master_key=SecretRef("k2"), mode="none"),
    ]
    for new in kept:
        base = published if new.encryption.mode != "none" else _fleet(mode="none")
        assert stranding(base, new, SAME) == (), new
    # The rotation's last step: `previous` dropped, the devices on the new rule.
    rotating = kept[4]
    done = _fleet("fv$(MA)-k2.conf", master_key=SecretRef("k2"))
    assert stranding(rotating, done, SAME) == ()


def _commit_fleet(
    repo: GitRepo, private_key: str, text: bytes, secret: tuple[str, str] | None = None
) -> str:
    files = {FLEET: text}
    if secret is not None:
        name, value = secret
        sealed = seal(public_key_of(private_key), name, value)
        files[SECRETS] = repo.files[SECRETS] + f"  {name}: {sealed}\n".encode()
    return repo.commit(files, "fleet settings changed")


def _publish(repo: GitRepo, tmp: Path, *extra: str) -> int:
    return main(["--repo", str(repo.path), "publish", *root_args(tmp), *extra])


@pytest.mark.parametrize(
    ("old", "new", "secret", "what"),
    [
        (b'"fv$(MA).conf"', b'"cfg$(MA).conf"', None, "file_name changes"),
        (
            b"master_key: !secret fleet_master_key",
            b"master_key: !secret fleet_master_key_2",
            ("fleet_master_key_2", "another master secret"),
            "encryption.master_key changes",
        ),
    ],
)
def test_a_publish_that_would_strand_the_devices_is_refused_unless_allowed(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    old: bytes,
    new: bytes,
    secret: tuple[str, str] | None,
    what: str,
) -> None:
    assert _publish(example_repo, tmp_path) == 0
    before = load_manifest(tmp_path / "state")
    assert before is not None
    head = _commit_fleet(
        example_repo, private_key, example_repo.files[FLEET].replace(old, new), secret
    )
    capsys.readouterr()
    assert _publish(example_repo, tmp_path) == 1
    err = capsys.readouterr().err
    assert "would strand every device: " in err and what in err, err
    assert "--allow-stranding" in err
    after = load_manifest(tmp_path / "state")
    assert after is not None and after.commit == before.commit
    assert _publish(example_repo, tmp_path, "--allow-stranding") == 0
    after = load_manifest(tmp_path / "state")
    assert after is not None and after.commit == head


def test_the_same_key_sealed_again_under_another_name_is_not_stranding(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sealing is randomised: only the private key tells a value sealed again."""
    from gitprov.secrets import load_secrets_file, unseal

    assert _publish(example_repo, tmp_path) == 0
    sealed = load_secrets_file(example_repo.files[SECRETS].decode()).sealed["fleet_master_key"]
    value = unseal(private_key, "fleet_master_key", sealed)
    fleet = example_repo.files[FLEET].replace(
        b"master_key: !secret fleet_master_key", b"master_key: !secret fleet_master_key_2"
    )
    _commit_fleet(example_repo, private_key, fleet, ("fleet_master_key_2", value))
    assert _publish(example_repo, tmp_path) == 0


def test_a_rotation_as_the_docs_say_publishes(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _publish(example_repo, tmp_path) == 0
    fleet = example_repo.files[FLEET].replace(b'"fv$(MA).conf"', b'"fv$(MA)-k2.conf"')
    fleet = fleet.replace(
        b"  master_key: !secret fleet_master_key\n",
        b"  master_key: !secret fleet_master_key_2\n"
        b"  previous:\n    master_key: !secret fleet_master_key\n"
        b'    file_name: "fv$(MA).conf"\n',
    )
    _commit_fleet(example_repo, private_key, fleet, ("fleet_master_key_2", "the next secret"))
    assert _publish(example_repo, tmp_path) == 0, capsys.readouterr().err
    # The grace period over: `previous` dropped.
    done = fleet[: fleet.index(b"  previous:")] + fleet[fleet.index(b"params:") :]
    example_repo.commit({FLEET: done}, "rotation done")
    assert _publish(example_repo, tmp_path) == 0, capsys.readouterr().err


def test_a_fleet_that_published_no_device_strands_none(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    devices = [p for p in example_repo.files if p.startswith("inventory/devices/")]
    example_repo.commit(dict.fromkeys(devices), "no devices yet")
    assert _publish(example_repo, tmp_path, "--allow-mass-removal") == 0
    fleet = example_repo.files[FLEET].replace(b'"fv$(MA).conf"', b'"cfg$(MA).conf"')
    _commit_fleet(example_repo, private_key, fleet)
    assert _publish(example_repo, tmp_path) == 0


def test_during_a_rotation_the_previous_name_kept_must_keep_its_key() -> None:
    """The devices that have not moved yet hold the previous rule: dropping `previous`
    retires it, but its name kept under another key strands them."""
    rotating = _fleet(
        "fv$(MA)-k2.conf",
        master_key=SecretRef("k2"),
        previous_master_key=SecretRef("k1"),
        previous_file_name="fv$(MA).conf",
    )
    wrong = rotating._replace(
        encryption=rotating.encryption._replace(previous_master_key=SecretRef("bogus"))
    )
    same = _same_value({"k1": "a", "k2": "b", "bogus": "c"})
    assert stranding(rotating, wrong, same) == (
        Stranding("encryption.previous.master_key", "k1", "bogus"),
    )
    assert stranding(rotating, rotating, same) == ()
    # A second rotation started from the first's new rule: the first's previous retired.
    again = _fleet(
        "fv$(MA)-k3.conf",
        master_key=SecretRef("bogus"),
        previous_master_key=SecretRef("k2"),
        previous_file_name="fv$(MA)-k2.conf",
    )
    assert stranding(rotating, again, same) == ()


def test_a_secret_given_another_value_under_its_name_is_said_so() -> None:
    found = stranding(_fleet(), _fleet(), lambda old, new: False)
    assert [f.describe() for f in found] == [
        "encryption.master_key: the value of secret 'k1' changes"
    ]


def test_a_devices_own_key_changed_without_previous_key_strands_it() -> None:
    same = _same_value({"k1": "a", "k2": "b", "d1": "x", "d1b": "x", "d2": "y"})
    mac = "0021f2011b19"
    fleet = _fleet()
    assert device_stranding(mac, "d1", "d2", None, fleet, fleet, same) == Stranding(
        f"{mac}'s key", "d1", "d2"
    )
    # To the master key, or from it: another key all the same.
    assert device_stranding(mac, "d1", None, None, fleet, fleet, same) == Stranding(
        f"{mac}'s key", "d1", "k1"
    )
    assert device_stranding(mac, None, "d1", None, fleet, fleet, same) == Stranding(
        f"{mac}'s key", "k1", "d1"
    )
    for held, key in (("d1", "d1"), ("d1", "d1b"), (None, None), ("d1", "unknown")):
        assert device_stranding(mac, held, key, None, fleet, fleet, same) is None, (held, key)
    # A rotation as docs/keys.md says: the old name kept, under previous_key.
    rotating = _fleet(
        "fv$(MA)-k2.conf",
        master_key=SecretRef("k2"),
        previous_master_key=SecretRef("k1"),
        previous_file_name="fv$(MA).conf",
    )
    assert device_stranding(mac, "d1", "d2", "d1", fleet, rotating, same) is None
    # ... but its own key left out of it: the old name's file under the old master key.
    assert device_stranding(mac, "d1", "d1", None, fleet, rotating, same) == Stranding(
        f"{mac}'s key", "d1", "k1"
    )
    # Unencrypted devices hold no key.
    plain = _fleet(mode="none")
    assert device_stranding(mac, "d1", "d2", None, plain, plain, same) is None


# How the publish after the one of a device with its own key is made: the published
# commit's facts from the snapshot its validation kept, from a full build, or (the cache
# deleted) from the published commit's tree.
_BY_CHANGE_FULL_OR_COLD = pytest.mark.parametrize(
    ("full", "cold"),
    [(False, False), (True, False), (False, True)],
    ids=["by change", "full build", "without the cache"],
)
_OWN_DEVICE = "inventory/devices/0021f2a0c001.yaml"


def _published_with_its_own_key(repo: GitRepo, private_key: str, tmp: Path) -> bytes:
    """Device _OWN_DEVICE given the key `device_key_1` and published: its file's text."""
    own = repo.files[_OWN_DEVICE] + b"key: !secret device_key_1\n"
    sealed = seal(public_key_of(private_key), "device_key_1", "KeyOfItsOwn1")
    secrets = repo.files[SECRETS] + f"  device_key_1: {sealed}\n".encode()
    repo.commit({_OWN_DEVICE: own, SECRETS: secrets}, "a device with its own key")
    assert _publish(repo, tmp) == 0
    return own


def _publish_after(repo: GitRepo, tmp: Path, full: bool, cold: bool, *extra: str) -> int:
    if cold:
        shutil.rmtree(repo.repo.path.rstrip("/") + "/gitprov-cache")
    return _publish(repo, tmp, *(("--force",) if full else ()), *extra)


@_BY_CHANGE_FULL_OR_COLD
@pytest.mark.parametrize("to", ["device_key_2", None], ids=["another key", "the master key"])
def test_a_publish_refuses_a_devices_own_key_changed_or_taken_away(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    full: bool,
    cold: bool,
    to: str | None,
) -> None:
    """Told from the published commit's snapshot its validation kept, or (`cold`: the
    cache deleted) from the published commit's tree."""
    device = _OWN_DEVICE
    plain = example_repo.files[device]
    own = _published_with_its_own_key(example_repo, private_key, tmp_path)
    if to is None:
        example_repo.commit({device: plain}, "its own key taken away")
        expected = "0021f2a0c001's key changes from 'device_key_1' to 'fleet_master_key'"
    else:
        sealed = seal(public_key_of(private_key), to, "AnotherKey2")
        secrets = example_repo.files[SECRETS] + f"  {to}: {sealed}\n".encode()
        moved = own.replace(b"device_key_1", to.encode())
        example_repo.commit({device: moved, SECRETS: secrets}, "its key changed")
        expected = f"0021f2a0c001's key changes from 'device_key_1' to '{to}'"
    capsys.readouterr()
    assert _publish_after(example_repo, tmp_path, full, cold) == 1
    err = capsys.readouterr().err
    assert expected in err, err
    assert _publish_after(example_repo, tmp_path, full, False, "--allow-stranding") == 0


@_BY_CHANGE_FULL_OR_COLD
@pytest.mark.parametrize("keep", [False, True], ids=["key changed", "key kept"])
@pytest.mark.parametrize("swap", [False, True], ids=["moved", "swapped"])
def test_a_device_moved_to_another_file_is_held_to_the_key_it_was_published_with(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    full: bool,
    cold: bool,
    keep: bool,
    swap: bool,
) -> None:
    """Its file at the published commit is found by its MAC among the files the commit
    changed or took away (`swap`: another device's file now), not taken for a new
    device's."""
    other = "inventory/devices/0021f2a0c002.yaml"
    moved_to = other if swap else "inventory/devices/site-b/floor-2/0021f2a0c001.yaml"
    own = _published_with_its_own_key(example_repo, private_key, tmp_path)
    secret_2 = seal(public_key_of(private_key), "device_key_2", "AnotherKey2")
    now = own if keep else own.replace(b"device_key_1", b"device_key_2")
    example_repo.commit(
        {
            _OWN_DEVICE: example_repo.files[other] if swap else None,
            moved_to: now.replace(b"Warehouse fax", b"Upstairs fax"),
            SECRETS: example_repo.files[SECRETS] + f"  device_key_2: {secret_2}\n".encode(),
        },
        "the device moved to its site's directory",
    )
    capsys.readouterr()
    if keep:
        assert _publish_after(example_repo, tmp_path, full, cold) == 0, capsys.readouterr().err
        return
    assert _publish_after(example_repo, tmp_path, full, cold) == 1
    err = capsys.readouterr().err
    assert "0021f2a0c001's key changes from 'device_key_1' to 'device_key_2'" in err, err
    assert _publish_after(example_repo, tmp_path, full, False, "--allow-stranding") == 0


def test_a_device_file_changed_without_its_key_is_no_stranding(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    device = "inventory/devices/0021f2a0c001.yaml"
    own = example_repo.files[device] + b"key: !secret device_key_1\n"
    sealed = seal(public_key_of(private_key), "device_key_1", "KeyOfItsOwn1")
    secrets = example_repo.files[SECRETS] + f"  device_key_1: {sealed}\n".encode()
    example_repo.commit({device: own, SECRETS: secrets}, "a device with its own key")
    assert _publish(example_repo, tmp_path) == 0
    other = "inventory/devices/0021f2a0c002.yaml"
    example_repo.commit(
        {
            device: own.replace(b"Warehouse fax", b"Upstairs fax"),
            other: example_repo.files[other].replace(b"Lobby door", b"Back door"),
        },
        "descriptions",
    )
    assert _publish(example_repo, tmp_path) == 0
    assert _publish(example_repo, tmp_path, "--force") == 0
