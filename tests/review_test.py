"""`gitprov plan`: the per-device diff a reviewer reads, with secrets redacted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from gitprov.cli import main
from gitprov.schemas import output_schemas
from gitprov.secrets import (
    SecretsFile,
    dump_secrets_file,
    generate_keypair,
    load_secrets_file,
    public_key_of,
    rotate,
    seal,
)
from tests.fixtures.gitrepo import GitRepo

OFFICE = "inventory/profiles/office.yaml"
SECRETS = "inventory/secrets.yaml"


def plan(capsys: pytest.CaptureFixture[str], repo: GitRepo, *argv: str) -> tuple[int, str]:
    code = main(["--repo", str(repo.path), "plan", *argv])
    return code, capsys.readouterr().out


def office_on_feature(repo: GitRepo, message: str = "new backup proxy") -> str:
    """A branch `feature` off main's head that changes the `office` profile's backup
    proxy (three devices); returns the base it starts from."""
    base = str(repo.repo.head.target)
    office = repo.files[OFFICE].replace(b"sbc2.example.net", b"sbc9.example.net")
    repo.commit({OFFICE: office}, message, branch="feature", parents=[base])
    return base


def test_profile_change_lists_every_inheriting_device(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = office_on_feature(example_repo)
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "feature", "--format", "json")
    assert code == 0
    report = json.loads(out)
    # The three devices on `office` (0021f2a0c001 is on `base`), versions from 1001 to the
    # depth the merge would have: the base is depth 1, so 1000 + 2.
    assert [
        (d["mac"], d["change"], d["old_version"], d["new_version"]) for d in report["devices"]
    ] == [
        ("0021f2011b19", "change", 1001, 1002),
        ("0021f2011b20", "change", 1001, 1002),
        ("0021f2a0c002", "change", 1001, 1002),
    ]
    assert report["unchanged"] == 1
    diff = report["devices"][0]["diff"]
    assert "-DBID_WEB_SIP_OUTBOUND_BACKUP=sbc2.example.net" in diff
    assert "+DBID_WEB_SIP_OUTBOUND_BACKUP=sbc9.example.net" in diff


def test_secret_change_shows_that_it_changed_not_the_value(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(example_repo.repo.head.target)
    sf = load_secrets_file(example_repo.files[SECRETS].decode())
    sealed = dict(sf.sealed)
    sealed["sip_2010"] = seal(sf.public_key, "sip_2010", "Brand-new-pw-77")
    example_repo.commit(
        {SECRETS: dump_secrets_file(SecretsFile(sf.public_key, sealed))},
        "new password",
        branch="feature",
        parents=[base],
    )
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "feature")
    assert code == 0
    assert "0021f2011b20" in out and "0021f2011b19" not in out.split("\n\n")[0]
    assert "Brand-new-pw-77" not in out
    changed = [
        ln for ln in out.splitlines() if ln.startswith(("-DBID_SIP_PASSWORD", "+DBID_SIP_PASSWORD"))
    ]
    assert len(changed) == 2 and "<secret:sip_2010:" in changed[1]


def test_markdown_for_pull_requests(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = office_on_feature(example_repo, "x")
    code, out = plan(
        capsys, example_repo, "--base", base, "--rev", "feature", "--format", "markdown"
    )
    assert code == 0
    assert out.startswith("### gitprov plan ")
    assert "| `0021f2011b19` | `fv0021f2011b19.conf` | 1001 → 1002 |" in out
    # The three devices on `office` get the same changed lines: one group, one diff.
    assert "#### 3 devices changed: `DBID_WEB_SIP_OUTBOUND_BACKUP`" in out
    assert out.count("```diff") == 1


def test_invalid_side_reports_problems(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(example_repo.repo.head.target)
    example_repo.commit({OFFICE: b"extends: nowhere\n"}, "x", branch="feature", parents=[base])
    code = main(["--repo", str(example_repo.path), "plan", "--base", base, "--rev", "feature"])
    err = capsys.readouterr().err
    assert code == 1
    assert "inventory/profiles/office.yaml:1:10: error[GP103]" in err


DEVICE = "inventory/devices/0021f2011b20.yaml"


def test_a_device_changed_and_changed_back_is_listed_as_renumbered(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Its settings are the base's, its version is not: a publish serves it the new
    number, and the device fetches the same settings again. The reviewer is told."""
    base = str(example_repo.repo.head.target)
    same = example_repo.files[DEVICE]
    example_repo.commit(
        {DEVICE: same.replace(b"Meeting room", b"Board room")},
        "rename",
        branch="feature",
        parents=[base],
    )
    example_repo.commit({DEVICE: same}, "rename back", branch="feature")
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "feature", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["devices"] == [] and report["unchanged"] == 4
    # Two changes on the branch: the depth of the head, 1000 + 3.
    assert report["renumbered"] == [
        {
            "mac": "0021f2011b20",
            "file": "fv0021f2011b20.conf",
            "old_version": 1001,
            "new_version": 1003,
        }
    ]
    saved = tmp_path / "plan.json"
    saved.write_text(out)
    for fmt in ("text", "markdown"):
        code, shown = plan(capsys, example_repo, "--from-json", str(saved), "--format", fmt)
        assert code == 0
        assert "get a new version all the same" in shown and "0021f2011b20 1001 → 1003" in shown
    code, out = plan(capsys, example_repo, "--base", base, "--rev", base, "--format", "json")
    assert json.loads(out)["renumbered"] == []


def test_only_devices_built_from_other_blobs_are_rendered_and_the_plan_is_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device whose file, model, profiles, fleet settings and secrets are the same blobs
    on both sides renders the same: a one-device change renders that device, once per
    side (at 100,000 devices: 33 s to 3.3 s). The plan is the one of rendering all."""
    from gitprov.builder import Builder
    from gitprov.compile import DeviceConfig, SecretResolver
    from gitprov.inventory import Device, Inventory
    from gitprov.pipeline import Pipeline
    from tests.fixtures.fleet import device_path, device_yaml, fleet_files

    repo = GitRepo(tmp_path / "repo")
    base = repo.commit(fleet_files(40), "fleet")
    changed = device_yaml(7).replace('"100007"', '"190007"')
    repo.commit({device_path(7): changed.encode()}, "device 7", branch="feature", parents=[base])
    compiled: list[str] = []
    real = Pipeline.compile

    def counted(
        self: Pipeline, inv: Inventory, device: Device, resolve: SecretResolver
    ) -> DeviceConfig:
        compiled.append(device.mac)
        return real(self, inv, device, resolve)

    monkeypatch.setattr(Pipeline, "compile", counted)
    argv = ("--base", base, "--rev", "feature", "--format", "json")
    code, out = plan(capsys, repo, *argv)
    assert code == 0, out
    assert compiled == ["0021f3000007", "0021f3000007"], compiled
    report = json.loads(out)
    assert [(d["mac"], d["change"]) for d in report["devices"]] == [("0021f3000007", "change")]

    # Every device's inputs told apart (as before): the same plan, every device rendered.
    keys = Builder.input_keys
    sides = iter(range(1_000_000))

    def apart(self: Builder, inv: Inventory) -> dict[str, tuple[str, ...]]:
        side = str(next(sides))
        return {mac: (*key, side) for mac, key in keys(self, inv).items()}

    monkeypatch.setattr(Builder, "input_keys", apart)
    compiled.clear()
    code, everything = plan(capsys, repo, *argv)
    assert code == 0 and json.loads(everything) == report
    assert len(compiled) == 2 * (40 + 4)  # (the example's four devices too)


FLEET = "inventory/gitprov.yaml"


def test_a_change_of_the_devices_file_name_is_shown_as_what_would_strand_them(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(example_repo.repo.head.target)
    fleet = example_repo.files[FLEET].replace(b'"fv$(MA).conf"', b'"cfg$(MA).conf"')
    example_repo.commit({FLEET: fleet}, "new names", branch="feature", parents=[base])
    code = main(["--repo", str(example_repo.path), "plan", "--base", base, "--rev", "feature"])
    text = "".join(capsys.readouterr())
    assert code == 0
    assert "may strand every device (file_name changes from 'fv$(MA).conf' to " in text, text
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "feature", "--format", "json")
    assert json.loads(out)["stranding"] == [
        {"setting": "file_name", "old": "fv$(MA).conf", "new": "cfg$(MA).conf"}
    ]
    code, out = plan(
        capsys, example_repo, "--base", base, "--rev", "feature", "--format", "markdown"
    )
    assert "**This change may strand every device:** `file_name`" in out
    # Kept under encryption.previous, as a rotation does: nothing to say.
    kept = fleet.replace(
        b"encryption:\n", b'encryption:\n  previous:\n    file_name: "fv$(MA).conf"\n'
    )
    example_repo.commit({FLEET: kept}, "old names kept", branch="kept", parents=[base])
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "kept", "--format", "json")
    assert code == 0 and json.loads(out)["stranding"] == []


def test_a_devices_own_key_given_changed_or_taken_away_is_shown_as_stranding_it(
    example_repo: GitRepo, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a publisher refuses of a device's own key (gitprov.strand.device_stranding),
    the plan shows ahead, for that device only."""
    device = "inventory/devices/0021f2a0c001.yaml"
    secrets = "inventory/secrets.yaml"
    sealed = seal(public_key_of(private_key), "device_key_1", "KeyOfItsOwn1")
    base = str(example_repo.repo.head.target)
    plain = example_repo.files[device]
    own = example_repo.commit(
        {
            device: plain + b"key: !secret device_key_1\n",
            secrets: example_repo.files[secrets] + f"  device_key_1: {sealed}\n".encode(),
        },
        "a key of its own",
        branch="own",
        parents=[base],
    )
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "own", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["stranding"] == [
        {"setting": "0021f2a0c001's key", "old": "fleet_master_key", "new": "device_key_1"}
    ]
    Draft202012Validator(output_schemas()["plan-output.schema.json"]).validate(report)
    code = main(["--repo", str(example_repo.path), "plan", "--base", base, "--rev", "own"])
    text = "".join(capsys.readouterr())
    assert "may strand 1 device (0021f2a0c001's key changes from " in text, text
    assert "previous_key:" in text
    # Taken away again: the other way round.
    example_repo.commit({device: plain}, "no key of its own", branch="away", parents=[own])
    code, out = plan(capsys, example_repo, "--base", "own", "--rev", "away", "--format", "json")
    assert [c["old"] for c in json.loads(out)["stranding"]] == ["device_key_1"]


def test_a_repository_key_rotated_strands_nobody_and_a_new_value_does(
    example_repo: GitRepo, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`secrets rotate` (docs/keys.md, the production guide) re-seals every value to a
    new public key: without the private key the plan cannot tell a value re-sealed from
    one changed, and it said the fleet's key changed and would strand every device.
    Under the same public key, a new sealed text is a value set anew: said, as before."""
    base = str(example_repo.repo.head.target)
    current = load_secrets_file(example_repo.files[SECRETS].decode())
    _, new_public = generate_keypair()
    rotated = dump_secrets_file(rotate(current, private_key, new_public)).encode()
    assert rotated != example_repo.files[SECRETS]
    example_repo.commit({SECRETS: rotated}, "rotate", branch="rotated", parents=[base])
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "rotated", "--format", "json")
    assert code == 0 and json.loads(out)["stranding"] == []
    sealed = dict(current.sealed)
    sealed["fleet_master_key"] = seal(current.public_key, "fleet_master_key", "another")
    changed = dump_secrets_file(SecretsFile(current.public_key, sealed)).encode()
    example_repo.commit({SECRETS: changed}, "new master", branch="changed", parents=[base])
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "changed", "--format", "json")
    assert json.loads(out)["stranding"] == [
        {
            "setting": "encryption.master_key",
            "old": "fleet_master_key",
            "new": "fleet_master_key",
        }
    ]


def test_an_ancestor_of_the_base_merges_to_nothing(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    """Merging an ancestor of the base changes nothing: the plan predicted its devices'
    changes back, each with a new version."""
    first = str(example_repo.repo.head.target)
    office = example_repo.files[OFFICE].replace(b"sbc2.example.net", b"sbc9.example.net")
    example_repo.commit({OFFICE: office}, "new backup proxy")
    code, out = plan(capsys, example_repo, "--base", "main", "--rev", first, "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["devices"] == [] and report["renumbered"] == [] and report["unchanged"] == 4
    assert report["head"] == first


@pytest.mark.parametrize(
    ("where", "value"), [("unchanged", -5), ("unchanged", 10**400), ("old_version", 1e308)]
)
def test_a_saved_plan_with_numbers_no_plan_holds_is_refused(
    example_repo: GitRepo,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: str,
    value: object,
) -> None:
    base = office_on_feature(example_repo, "x")
    code, out = plan(capsys, example_repo, "--base", base, "--rev", "feature", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    if where == "unchanged":
        doc["unchanged"] = value
    else:
        doc["devices"][0][where] = value
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps(doc))
    assert main(["--repo", str(example_repo.path), "plan", "--from-json", str(saved)]) == 2
    err = capsys.readouterr().err
    assert f"{saved}: " in err and where in err and "imum" in err, err
