"""Issue 4, acceptance 3: a device holding the old key follows the published files to the
new key without any manual step (docs/keys.md), against the embedded HTTP server."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.crypto import derive_device_key
from gitprov.plan import load_manifest
from gitprov.secrets import SecretsFile, dump_secrets_file, load_secrets_file, seal, unseal
from gitprov.tools.device import Device, DeviceState, MultiFetcher
from gitprov.tools.serve import HttpServer
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.roots import root_args

MAC = "0021f2011b19"
FLEET = "inventory/gitprov.yaml"
SECRETS = "inventory/secrets.yaml"

ROTATING = b"""\
encryption:
  mode: openssl-md5
  master_key: !secret fleet_master_key_2
  previous:
    master_key: !secret fleet_master_key
    file_name: "fv$(MA).conf"
"""
STEADY = b"""\
encryption:
  mode: openssl-md5
  master_key: !secret fleet_master_key_2
"""
OLD_BLOCK = b"""\
encryption:
  mode: openssl-md5
  # Each device's key is derived from this secret and its MAC (HKDF).
  master_key: !secret fleet_master_key
"""


def publish(repo: GitRepo, tmp_path: Path) -> None:
    code = main(
        [
            "--repo",
            str(repo.path),
            "publish",
            "--rev",
            "main",
            *root_args(tmp_path, tftp=False),
        ]
    )
    assert code == 0


def newest_version(tmp_path: Path, name: str) -> int:
    manifest = load_manifest(tmp_path / "state")
    assert manifest is not None
    return manifest.files[name].version


def test_device_follows_rotation_to_the_new_key(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = example_repo
    sf = load_secrets_file(repo.files[SECRETS].decode())
    old_master = unseal(private_key, "fleet_master_key", sf.sealed["fleet_master_key"])
    old_key = derive_device_key(old_master, MAC)
    publish(repo, tmp_path)

    with HttpServer(tmp_path / "http") as http:
        fetcher = MultiFetcher.standard(host_override={"127.0.0.1": ("127.0.0.1", http.port)})
        # A device provisioned by hand (or by option 66) with the rule of the first publish.
        state = DeviceState(
            mac=MAC,
            params={
                "DBID_PRV_OPTION66_ENABLED": "0",
                "DBID_PROFILE_RULE": f"[--key {old_key}]http://127.0.0.1:8080/fv{MAC}.conf",
            },
        )
        device = Device(state)
        results = device.resync_until_stable(fetcher)
        assert [r.status for r in results] == ["applied", "unchanged"]
        assert state.version == str(newest_version(tmp_path, f"fv{MAC}.conf"))

        # Rotate: a new master secret (sealed with only the public key, as a contributor
        # would), a new file name, and the old ones kept under `previous`.
        new_master = secrets.token_urlsafe(24)
        sealed = dict(sf.sealed)
        sealed["fleet_master_key_2"] = seal(sf.public_key, "fleet_master_key_2", new_master)
        fleet = repo.files[FLEET].replace(
            b'file_name: "fv$(MA).conf"', b'file_name: "fv$(MA)-k2.conf"'
        )
        assert OLD_BLOCK in fleet
        repo.commit(
            {
                FLEET: fleet.replace(OLD_BLOCK, ROTATING),
                SECRETS: dump_secrets_file(SecretsFile(sf.public_key, sealed)),
            },
            "rotate the fleet key",
        )
        publish(repo, tmp_path)
        names = sorted(p.name for p in (tmp_path / "http").iterdir())
        assert f"fv{MAC}.conf" in names and f"fv{MAC}-k2.conf" in names

        new_key = derive_device_key(new_master, MAC)
        results = device.resync_until_stable(fetcher)
        # Old path with the old key → new rule; then the new path with the new key.
        assert [r.status for r in results] == ["applied", "unchanged"]
        assert state.params["DBID_PROFILE_RULE"] == (
            f"[--key {new_key}]http://127.0.0.1:8080/fv{MAC}-k2.conf"
        )
        assert state.version == str(newest_version(tmp_path, f"fv{MAC}-k2.conf"))
        assert results[1].url is not None and f"fv{MAC}-k2.conf" in results[1].url

        # Retire the old path: its files go, the device keeps working on the new key.
        repo.commit({FLEET: repo.files[FLEET].replace(ROTATING, STEADY)}, "retire the old key")
        publish(repo, tmp_path)
        names = sorted(p.name for p in (tmp_path / "http").iterdir())
        assert f"fv{MAC}.conf" not in names
        results = device.resync_until_stable(fetcher)
        assert results[-1].status == "unchanged"
        assert state.version == str(newest_version(tmp_path, f"fv{MAC}-k2.conf"))
        assert new_key in state.params["DBID_PROFILE_RULE"]


def test_device_with_only_the_old_key_cannot_read_the_new_path(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    """The control: without the old path, the same device would be stranded."""
    repo = example_repo
    sf = load_secrets_file(repo.files[SECRETS].decode())
    old_key = derive_device_key(
        unseal(private_key, "fleet_master_key", sf.sealed["fleet_master_key"]), MAC
    )
    sealed = dict(sf.sealed)
    sealed["fleet_master_key_2"] = seal(sf.public_key, "fleet_master_key_2", "another-master")
    fleet = repo.files[FLEET].replace(OLD_BLOCK, STEADY)
    repo.commit(
        {FLEET: fleet, SECRETS: dump_secrets_file(SecretsFile(sf.public_key, sealed))},
        "rotate without a grace period",
    )
    publish(repo, tmp_path)
    with HttpServer(tmp_path / "http") as http:
        fetcher = MultiFetcher.standard(host_override={"127.0.0.1": ("127.0.0.1", http.port)})
        state = DeviceState(
            mac=MAC,
            params={
                "DBID_PRV_OPTION66_ENABLED": "0",
                "DBID_PROFILE_RULE": f"[--key {old_key}]http://127.0.0.1:8080/fv{MAC}.conf",
            },
        )
        result = Device(state).resync(fetcher)
        assert result.status == "decrypt-failed"  # (never garbage that does not parse)
