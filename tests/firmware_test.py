"""Firmware rollouts: which devices' files carry the Upgrade Rule, built from real commits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gitprov.app import Session
from gitprov.firmware import Rollout, rollout_of, rollout_point
from gitprov.formats import flyingvoice
from tests.fixtures.gitrepo import GitRepo

FLEET = """\
version_floor: 1000
file_name: "fv$(MA).conf"
provisioning:
  url: "http://prov.example.com"
encryption:
  mode: none
"""
MODEL = """\
family: flyingvoice
line_count: 2
bindings:
  provision.upgrade_rule: {key: DBID_UPGRADE_RULE, source: "test: not a vendor key"}
  provision.upgrade_enable: {key: DBID_UPGRADE_ENABLE, source: "test: not a vendor key"}
firmware:
  file: G502N_F108.bin
  version: v1.0.8
"""
PROFILE = "params:\n  sip.server: sip.example.net\n"
MACS = [f"0021f2{i:06x}" for i in range(0x10, 0x10 + 100)]
RULE = "http://prov.example.com/G502N_F108.bin"


def device(mac: str) -> str:
    return f'mac: "{mac}"\nmodel: G502N\nprofile: base\n'


def files(rollout: str) -> dict[str, str]:
    out = {
        "inventory/gitprov.yaml": FLEET,
        "inventory/models/G502N.yaml": MODEL + rollout,
        "inventory/profiles/base.yaml": PROFILE,
    }
    out.update({f"inventory/devices/{m}.yaml": device(m) for m in MACS})
    return out


def expected(percent: int, version: str = "v1.0.8") -> set[str]:
    """The documented choice, computed here on its own: the first 8 bytes of
    SHA-256("VERSION/MAC") as a fraction of 2**64, below the percent."""
    out = set()
    for mac in MACS:
        point = int.from_bytes(hashlib.sha256(f"{version}/{mac}".encode()).digest()[:8], "big")
        if point * 100 < percent * 2**64:
            out.add(mac)
    return out


def upgraded(session: Session, rev: str, out: Path) -> dict[str, dict[str, str]]:
    """MAC -> the Upgrade parameters of its built file (empty when it has none)."""
    session.build(rev, out)
    found = {}
    for mac in MACS:
        params = flyingvoice.parse((out / "plain" / f"fv{mac}.conf").read_bytes())
        found[mac] = {k: v for k, v in params.items() if k.startswith("DBID_UPGRADE_")}
    return found


def chosen(found: dict[str, dict[str, str]]) -> set[str]:
    return {mac for mac, params in found.items() if params}


def test_a_five_percent_rollout_upgrades_exactly_the_chosen_devices(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit(files("  rollout: {percent: 5}\n"), "5% of the G502N to v1.0.8")
    session = Session(repo.path)
    five = upgraded(session, first, tmp_path / "a")
    assert chosen(five) == expected(5)
    assert 0 < len(expected(5)) < 15  # a sample of 100, not none and not all
    for mac in expected(5):
        assert five[mac] == {"DBID_UPGRADE_RULE": RULE, "DBID_UPGRADE_ENABLE": "1"}

    # Stable across commits: another change leaves the choice as it was.
    second = repo.commit(
        {"inventory/profiles/base.yaml": PROFILE.replace("sip.example", "sip2.example")}
    )
    assert chosen(upgraded(session, second, tmp_path / "b")) == expected(5)

    # Raising the percent only adds devices.
    third = repo.commit({"inventory/models/G502N.yaml": MODEL + "  rollout: {percent: 20}\n"})
    twenty = chosen(upgraded(session, third, tmp_path / "c"))
    assert twenty == expected(20) and expected(5) < twenty

    # Listed MACs come on top, in any spelling; no rollout: every device.
    extra = sorted(set(MACS) - twenty)[0]
    spelt = ":".join(extra[i : i + 2] for i in range(0, 12, 2)).upper()
    listed = MODEL + f'  rollout: {{percent: 20, macs: ["{spelt}"]}}\n'
    fourth = repo.commit({"inventory/models/G502N.yaml": listed})
    assert chosen(upgraded(session, fourth, tmp_path / "d")) == twenty | {extra}
    fifth = repo.commit({"inventory/models/G502N.yaml": MODEL})
    assert chosen(upgraded(session, fifth, tmp_path / "e")) == set(MACS)


def test_only_the_chosen_devices_get_a_new_version(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(files("  rollout: {percent: 0}\n"), "the image, held back")
    repo.commit({"inventory/models/G502N.yaml": MODEL + "  rollout: {percent: 5}\n"})
    rows = {r.mac: r.version for r in Session(repo.path).versions("HEAD")}
    assert {mac for mac, v in rows.items() if v == 1002} == expected(5)
    assert {mac for mac, v in rows.items() if v == 1001} == set(MACS) - expected(5)


def test_the_choice_depends_on_the_device_and_the_version_only() -> None:
    rollout = Rollout(everyone=False, share=rollout_of({"rollout": {"percent": 5}}).share)
    picked = [m for m in MACS if rollout.selects(m, "v1.0.8")]
    assert set(picked) == {m for m in reversed(MACS) if rollout.selects(m, "v1.0.8")}
    assert set(picked) == expected(5)
    # A new version chooses its own first devices.
    assert expected(5, "v1.0.9") != expected(5)
    assert rollout_point(MACS[0], "v1.0.8") == rollout_point(MACS[0], "v1.0.8")


@pytest.mark.parametrize(
    ("firmware", "everyone", "share", "macs"),
    [
        ({}, True, 0, set()),
        ({"rollout": {}}, False, 0, set()),
        ({"rollout": {"percent": 0.1}}, False, 0.001, set()),
        ({"rollout": {"percent": 100}}, False, 1, set()),
        ({"rollout": {"macs": ["00-21-F2-00-00-10"]}}, False, 0, {"0021f2000010"}),
    ],
)
def test_rollout_settings(
    firmware: dict[str, object], everyone: bool, share: float, macs: set[str]
) -> None:
    r = rollout_of(firmware)
    assert (r.everyone, float(r.share), set(r.macs)) == (everyone, share, macs)
    # Exact: a tenth of a percent is 1/1000, not the binary float next to it.
    if share == 0.001:
        assert r.share.denominator == 1000


def test_the_plan_says_how_many_devices_are_told_to_upgrade(tmp_path: Path) -> None:
    from gitprov.cli.plan import load_json, markdown, to_json

    repo = GitRepo(tmp_path / "repo")
    base = repo.commit(files("  rollout: {percent: 5}\n"), "5%")
    head = repo.commit({"inventory/models/G502N.yaml": MODEL + "  rollout: {percent: 20}\n"})
    result = Session(repo.path).plan(base, head)
    (count,) = result.upgrades
    assert (count.model, count.version, count.devices) == ("G502N", "v1.0.8", 100)
    assert (count.selected, count.selected_before) == (len(expected(20)), len(expected(5)))
    # The devices that change are exactly the ones the wider rollout adds.
    assert {c.mac for c in result.changes} == expected(20) - expected(5)
    counts = (
        f"{len(expected(20))} of its 100 device(s) are told to upgrade (before: {len(expected(5))})"
    )
    assert f"Firmware `v1.0.8` of `G502N`: {counts}." in markdown(result)
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps(to_json(result)))
    assert load_json(str(saved)).upgrades == result.upgrades


def test_the_plan_warns_when_a_new_version_keeps_the_old_versions_upgrade_rule(
    tmp_path: Path,
) -> None:
    """A device never fetches an Upgrade Rule URL again that it fetched (the SPA model):
    v1.0.9 put in place of v1.0.8 under the same file name (so the same default rule)
    reaches no device that took v1.0.8. A new name, or a rule with $SWVER, does."""
    from gitprov.cli.plan import load_json, markdown, to_json, upgrade_lines

    repo = GitRepo(tmp_path / "repo")
    base = repo.commit(files(""), "every G502N to v1.0.8")
    same = MODEL.replace("v1.0.8", "v1.0.9")
    head = repo.commit({"inventory/models/G502N.yaml": same}, "v1.0.9, same image name")
    result = Session(repo.path).plan(base, head)
    (count,) = result.upgrades
    assert (count.version, count.same_rule_as) == ("v1.0.9", "v1.0.8")
    (line,) = upgrade_lines(result)
    assert "WARNING: by the Upgrade Rule that v1.0.8 was told by" in line, line
    assert "those that took `v1.0.8` will not upgrade" in markdown(result)
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps(to_json(result)))
    assert load_json(str(saved)).upgrades == result.upgrades

    renamed = same.replace("G502N_F108.bin", "G502N_F109.bin")
    head = repo.commit({"inventory/models/G502N.yaml": renamed})
    (count,) = Session(repo.path).plan(base, head).upgrades
    assert count.same_rule_as == ""
    # ($SWVER is the version the device runs: after an upgrade the URL is another.)
    rule = '  rule: "http://fw.example.com/G502N-after-$SWVER.bin"\n'
    before = repo.commit({"inventory/models/G502N.yaml": MODEL + rule})
    head = repo.commit({"inventory/models/G502N.yaml": same + rule})
    (count,) = Session(repo.path).plan(before, head).upgrades
    assert count.same_rule_as == ""
    # The same version again (a rollout widened) is no new version.
    head = repo.commit({"inventory/models/G502N.yaml": MODEL + "  rollout: {percent: 50}\n"})
    (count,) = Session(repo.path).plan(base, head).upgrades
    assert count.same_rule_as == ""


def test_a_firmware_version_is_code_in_the_pull_request_comment(tmp_path: Path) -> None:
    """`firmware.version` is any text: as markdown, `<!--` would hide the rest of the
    plan comment (every diff) from the reviewers, and links or mentions would render."""
    from gitprov.cli.plan import markdown

    hostile = "v1 <!-- [x](https://example.invalid) @everyone | `tick`"
    repo = GitRepo(tmp_path / "repo")
    base = repo.commit(files("  rollout: {percent: 5}\n"), "5%")
    model = MODEL.replace("version: v1.0.8", f"version: {json.dumps(hostile)}")
    head = repo.commit({"inventory/models/G502N.yaml": model + "  rollout: {percent: 5}\n"})
    text = markdown(Session(repo.path).plan(base, head))
    shown = "`v1 <!-- [x](https://example.invalid) @everyone / 'tick'`"
    assert f"Firmware {shown} of `G502N`: " in text
    assert text.count("<!--") == 1


@pytest.mark.parametrize(
    ("firmware", "rule", "code"),
    [
        (False, "", 1),  # the image the files point at is nowhere: refused
        (True, "", 0),  # published from the firmware dir
        (False, '  rule: "http://fw.example.com/G502N_F108.bin"\n', 0),  # served elsewhere
    ],
    ids=["no firmware dir", "firmware dir", "a rule of its own"],
)
def test_a_publish_never_points_devices_at_an_image_it_does_not_publish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], firmware: bool, rule: str, code: int
) -> None:
    from gitprov.cli import main

    repo = GitRepo(tmp_path / "repo")
    repo.commit(files(rule), "every G502N to v1.0.8")
    images = tmp_path / "images"
    images.mkdir()
    (images / "G502N_F108.bin").write_bytes(b"\x7fimage")
    http, state = tmp_path / "http", tmp_path / "state"
    argv = ["--repo", str(repo.path), "publish", "--http-root", str(http)]
    argv += ["--state-dir", str(state)] + (["--firmware-dir", str(images)] if firmware else [])
    assert main(argv) == code
    err = capsys.readouterr().err
    if code:
        assert "tells its devices to upgrade from G502N_F108.bin in the roots" in err, err
        assert "nothing was written" in err, err
        assert not http.exists() or not any(http.iterdir())
    else:
        assert (http / f"fv{MACS[0]}.conf").is_file()
        assert (http / "G502N_F108.bin").is_file() == firmware
