"""gitprov.stage: the stage files of key delivery, their versions across changes of the
setting, and the stage root's own publication."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from gitprov.errors import UsageError
from gitprov.formats import flyingvoice
from gitprov.macros import device_variables, expand
from gitprov.pipeline import Pipeline
from gitprov.publish import PublishResult, Targets, publish_commit
from gitprov.rule_url import parse_rule
from tests.fixtures.gitrepo import GitRepo, example_files

FLEET = "inventory/gitprov.yaml"
IP542N = ["0021f2011b19", "0021f2011b20"]
OTHERS = ["0021f2a0c001", "0021f2a0c002"]


def fleet(repo: GitRepo, key_delivery: str | None, *, option66: bool = True) -> str:
    """Commit the example's gitprov.yaml with option 66 for the IP542N and `key_delivery`
    (None: the setting absent), and an https stage URL."""
    extra = "  option66: [IP542N]\n" if option66 else ""
    if key_delivery is not None:
        extra += f"  key_delivery: {key_delivery}\n"
    base = example_files()[FLEET].decode()
    text = base.replace("\npublish:\n", "\npublish:\n" + extra).replace(
        '  url: "http://127.0.0.1:8080"\n',
        '  url: "http://127.0.0.1:8080"\n  stage_url: "https://prov.example.net:8443"\n',
    )
    return repo.commit({FLEET: text}, f"key delivery {key_delivery}, option 66 {option66}")


def commit_of(repo: GitRepo, rev: str) -> pygit2.Commit:
    commit = repo.repo.revparse_single(rev)
    assert isinstance(commit, pygit2.Commit)
    return commit


def test_stage_sits_between_bootstrap_and_device_and_no_number_goes_down(
    example_repo: GitRepo, private_key: str
) -> None:
    history = [
        fleet(example_repo, None),
        fleet(example_repo, "plaintext-bootstrap"),
        fleet(example_repo, "https-stage"),
        fleet(example_repo, "https-stage"),  # the same again: nothing changes
        fleet(example_repo, "manual"),
        fleet(example_repo, "plaintext-bootstrap"),
        fleet(example_repo, "plaintext-bootstrap", option66=False),
    ]
    pipeline = Pipeline(example_repo.repo)
    last: dict[str, int] = {}
    staged_at = []
    for cid in history:
        build = pipeline.build(commit_of(example_repo, cid), private_key)
        versions = {f.mac: f.version for f in build.files}
        assert set(versions) == set(IP542N + OTHERS)
        for mac, v in versions.items():
            assert v >= last.get(mac, 0), (cid, mac)
        last = versions
        stages = {s.mac: s for s in build.stages}
        staged_at.append(bool(stages))
        if not stages:
            continue
        (boot,) = build.bootstraps
        assert sorted(stages) == IP542N  # only the models option 66 serves
        for mac, s in stages.items():
            assert boot.version < s.version == versions[mac] - 1
            body = flyingvoice.parse(s.data)
            assert body["DBID_DBASE_VERSION"] == str(s.version)
            assert body["DBID_PRV_OPTION66_ENABLED"] == "0"
            assert body["DBID_PROFILE_RULE"].startswith("[--key ")
            assert body["DBID_PROFILE_RULE"].endswith(f"]http://127.0.0.1:8080/fv{mac}.conf")
            assert s.name == f"stage-fv{mac}.conf"
    assert staged_at == [False, True, True, True, False, True, False]


def test_the_bootstrap_leads_to_the_stage_file(example_repo: GitRepo, private_key: str) -> None:
    pipeline = Pipeline(example_repo.repo)
    rules = {}
    for mode in ("manual", "plaintext-bootstrap", "https-stage"):
        build = pipeline.build(commit_of(example_repo, fleet(example_repo, mode)), private_key)
        (boot,) = build.bootstraps
        rules[mode] = flyingvoice.parse(boot.data)["DBID_PROFILE_RULE"]
    assert rules == {
        "manual": "http://127.0.0.1:8080/fv$(MA).conf",
        "plaintext-bootstrap": "http://127.0.0.1:8080/stage-fv$(MA).conf",
        "https-stage": "https://prov.example.net:8443/stage-fv$(MA).conf",
    }


def test_the_stage_root_follows_the_setting_and_is_repaired(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    stage_root = tmp_path / "stage"
    where = Targets((tmp_path / "http", tmp_path / "tftp"), tmp_path / "state", None, stage_root)
    pipeline = Pipeline(example_repo.repo)

    def publish(cid: str) -> None:
        publish_commit(pipeline, commit_of(example_repo, cid), where, private_key)

    https = fleet(example_repo, "https-stage")
    publish(https)
    names = sorted(p.name for p in stage_root.iterdir())
    assert names == [f"stage-fv{m}.conf" for m in IP542N]
    for root in where.roots:
        assert not any(p.name.startswith("stage-") for p in root.iterdir())
    # Drift in the stage root is found even when the plain roots are intact.
    lost = stage_root / names[0]
    kept = lost.read_bytes()
    lost.unlink()
    publish(https)
    assert lost.read_bytes() == kept
    # Another key delivery empties the stage root; plaintext puts the files in the roots.
    publish(fleet(example_repo, "plaintext-bootstrap"))
    assert list(stage_root.iterdir()) == []
    for root in where.roots:
        assert sorted(p.name for p in root.iterdir() if p.name.startswith("stage-")) == names


def test_https_stage_without_a_stage_root_publishes_nothing(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    where = Targets((tmp_path / "http",), tmp_path / "state")
    cid = fleet(example_repo, "https-stage")
    with pytest.raises(UsageError, match="no stage root is given") as caught:
        publish_commit(
            Pipeline(example_repo.repo), commit_of(example_repo, cid), where, private_key
        )
    assert caught.value.message.startswith("inventory/gitprov.yaml:")
    assert not (tmp_path / "http").exists() or not any((tmp_path / "http").iterdir())


@pytest.mark.parametrize("where", ["inside", "around", "same", "state"])
def test_the_stage_root_never_overlaps_a_plain_root_or_the_state_dir(
    tmp_path: Path, where: str
) -> None:
    http, state = tmp_path / "srv" / "http", tmp_path / "state"
    stage = {
        "inside": http / "stage",
        "around": tmp_path / "srv",
        "same": http,
        "state": state / "stage",
    }[where]
    with pytest.raises(UsageError, match="overlap"):
        Targets((http,), state, None, stage)
    Targets((http,), state, None, tmp_path / "srv" / "stage")  # beside them: fine


def test_the_stage_files_rule_leads_to_the_published_file(
    example_repo: GitRepo, private_key: str
) -> None:
    # The device expands the stage file's rule (the overview, section 3): it leads to the
    # published name. The bootstrap keeps the template and leads to the stage file.
    cid = fleet(example_repo, "plaintext-bootstrap")
    changed = example_repo.files[FLEET].decode().replace('"fv$(MA).conf"', '"cfg-$(MAU).conf"')
    cid = example_repo.commit({FLEET: changed}, "another file name")
    build = Pipeline(example_repo.repo).build(commit_of(example_repo, cid), private_key)
    (boot,) = build.bootstraps
    files = {f.mac: f.name for f in build.files}
    for s in build.stages:
        variables = device_variables(s.mac, serial="E3C08109000051")  # a real device's
        boot_rule = parse_rule(flyingvoice.parse(boot.data)["DBID_PROFILE_RULE"])
        assert expand(boot_rule.path, variables) == "/" + s.name
        stage_rule = parse_rule(flyingvoice.parse(s.data)["DBID_PROFILE_RULE"])
        assert expand(stage_rule.path, variables) == "/" + files[s.mac]
        assert files[s.mac] == f"cfg-{s.mac.upper()}.conf"


def test_stage_files_left_behind_are_named_and_their_removal_is_reported(
    example_repo: GitRepo, private_key: str, tmp_path: Path
) -> None:
    """Key delivery switched away from https-stage by a publish given no stage root left
    the stage files (each with a device's key) where they were, without a word; given
    the stage root again for the same commit, the publish removed them and said the
    commit was already published."""
    stage_root = tmp_path / "stage"
    plain = (tmp_path / "http", tmp_path / "tftp")
    with_stage = Targets(plain, tmp_path / "state", None, stage_root)
    without = Targets(plain, tmp_path / "state")

    def publish(cid: str, where: Targets) -> PublishResult:
        return publish_commit(
            Pipeline(example_repo.repo), commit_of(example_repo, cid), where, private_key
        )

    https = fleet(example_repo, "https-stage")
    publish(https, with_stage)
    names = sorted(p.name for p in stage_root.iterdir())
    assert len(names) == 2
    again = publish(https, with_stage)  # (the stage root given: nothing to say of it)
    assert again.already_published and not any("stage root" in n for n in again.notes)
    manual = fleet(example_repo, "manual")
    result = publish(manual, without)
    assert sorted(p.name for p in stage_root.iterdir()) == names  # (not its to empty)
    (left,) = [n for n in result.notes if "still holds" in n]
    assert f"the stage root {stage_root} still holds 2 stage file(s)" in left
    assert f"--stage-root {stage_root}" in left
    again = publish(manual, without)  # (the commit is published: said again)
    assert again.already_published and any("still holds" in n for n in again.notes)

    emptied = publish(manual, with_stage)
    assert list(stage_root.iterdir()) == []
    assert not emptied.already_published
    assert f"the stage root {stage_root}: 0 stage file(s) written, 2 removed" in emptied.notes
    last = publish(manual, without)
    assert last.already_published and not any("stage root" in n for n in last.notes)
