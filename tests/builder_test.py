"""The build side: one compile per device gives the same digests, files and redacted
copies as compiling each view on its own, and a pool of workers the same bytes as one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitprov import builder
from gitprov.compile import compile_device, placeholder_resolver
from gitprov.errors import InvalidInventory, UsageError
from gitprov.formats import flyingvoice
from gitprov.pipeline import Pipeline, secret_resolver
from gitprov.publish import Targets, publish_commit
from tests.fixtures.fleet import fleet_files
from tests.fixtures.gitrepo import GitRepo

FLEET = "inventory/gitprov.yaml"


def head(repo: GitRepo) -> pygit2.Commit:
    c = repo.repo.get(repo.repo.head.target)
    assert isinstance(c, pygit2.Commit)
    return c


def rotating(files: dict[str, bytes]) -> dict[str, bytes]:
    """A key rotation in progress: every device has a new and a previous file."""
    text = files[FLEET].decode()
    text = text.replace('file_name: "fv$(MA).conf"', 'file_name: "fv$(MA)-k2.conf"')
    text = text.replace(
        "  master_key: !secret fleet_master_key\n",
        "  master_key: !secret sip_3003\n"
        "  previous:\n"
        "    master_key: !secret fleet_master_key\n"
        '    file_name: "fv$(MA).conf"\n',
    )
    assert "previous:" in text
    return {**files, FLEET: text.encode()}


@pytest.fixture
def fleet_repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(fleet_files(24), "a fleet")
    return repo


def _digest_as_specified(p: Pipeline, commit: pygit2.Commit) -> dict[str, str]:
    """docs/versions.md's content digest, from a compile with the placeholders."""
    inv = p.load_commit(commit).inventory
    assert inv is not None
    resolve = placeholder_resolver(inv.sealed)
    out = {}
    for d in inv.devices:
        cfg = compile_device(d, inv, p.catalog, resolve)
        head_text = (
            f"{cfg.file_name}\0{cfg.previous}\0{cfg.cipher.mode}:"
            f"{cfg.cipher.iterations}:{cfg.cipher.gzip}\0"
        )
        text = head_text.encode() + flyingvoice.body(cfg)
        out[d.mac] = hashlib.sha256(text).hexdigest()
    return out


@pytest.mark.parametrize("rotate", [False, True])
def test_digests_and_files_are_those_of_compiling_each_view_apart(
    fleet_repo: GitRepo, private_key: str, rotate: bool
) -> None:
    if rotate:
        fleet_repo.commit(rotating(fleet_repo.files), "rotate the key")
    commit = head(fleet_repo)
    p = Pipeline(fleet_repo.repo)
    inv = p.load_commit(commit).inventory
    assert inv is not None
    digests = p.digests(inv)
    assert {m: d for m, d in digests.items() if m != builder.BOOTSTRAP} == (
        _digest_as_specified(Pipeline(fleet_repo.repo), commit)
    )
    build = p.build(commit, private_key)
    resolve = secret_resolver(inv, private_key)
    by_mac = {d.mac: d for d in inv.devices}
    roles = {(f.mac, f.role) for f in build.files}
    assert len(roles) == len(build.files) == len(inv.devices) * (2 if rotate else 1)
    for f in build.files:
        cfg = compile_device(by_mac[f.mac], inv, p.catalog, resolve)
        assert f.plaintext == flyingvoice.render(cfg, f.version)
        assert f.redacted == flyingvoice.render(cfg, f.version, redact=True)
        assert f.body_sha256 == hashlib.sha256(flyingvoice.body(cfg)).hexdigest()
        assert f.plain_sha256 == hashlib.sha256(f.plaintext).hexdigest()
        if f.role == "current":
            assert (f.name, cfg.key) == (cfg.file_name, cfg.key)
            key = cfg.key
        else:
            assert cfg.previous is not None
            assert f.name == cfg.previous[0]
            key = cfg.previous[1]
        assert key is not None
        assert cfg.cipher.decrypt(f.data, key, expect_derived_salt=True) == f.plaintext
    assert b"<redacted>" in build.files[0].redacted


def test_without_keep_plaintext_the_files_are_the_same_but_carry_only_its_hash(
    fleet_repo: GitRepo, private_key: str
) -> None:
    kept = Pipeline(fleet_repo.repo).build(head(fleet_repo), private_key)
    lean = Pipeline(fleet_repo.repo).build(head(fleet_repo), private_key, keep_plaintext=False)
    assert [(f.name, f.data, f.plain_sha256) for f in lean.files] == [
        (f.name, f.data, f.plain_sha256) for f in kept.files
    ]
    with pytest.raises(ValueError, match="did not keep the plaintext"):
        _ = lean.files[0].plaintext


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_one_worker_and_two_publish_byte_identical_roots(
    fleet_repo: GitRepo, private_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool is for large fleets; here every few devices are a part of their own.
    monkeypatch.setattr(builder, "PARALLEL_MIN", 2)
    monkeypatch.setattr(builder, "CHUNK_MIN", 3)
    pools: list[int] = []
    real = builder._forked

    def counted(job: Any, parts: list[Sequence[int]], n: int) -> Iterator[Any]:
        pools.append(n)
        return real(job, parts, n)

    monkeypatch.setattr(builder, "_forked", counted)
    fleet_repo.commit(rotating(fleet_repo.files), "rotate the key")
    roots = {}
    for workers in (1, 2):
        p = Pipeline(fleet_repo.repo)
        p.builder.workers = workers
        base = tmp_path / f"workers-{workers}"
        targets = Targets((base / "http", base / "tftp"), base / "state")
        publish_commit(p, head(fleet_repo), targets, private_key)
        roots[workers] = (_files(base / "http"), _files(base / "tftp"))
    # Pools of two workers (the digests of both commits, then the files): they did run.
    assert pools == [2, 2, 2]
    one, two = roots[1], roots[2]
    assert len(one[0]) == 2 * 24 + 4 * 2  # new and previous files of every device
    assert one == two


def test_an_error_in_a_worker_is_raised_here_with_its_hint(
    fleet_repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builder, "PARALLEL_MIN", 2)
    monkeypatch.setattr(builder, "CHUNK_MIN", 3)
    p = Pipeline(fleet_repo.repo)
    p.builder.workers = 2
    with pytest.raises(UsageError) as info:
        p.build(head(fleet_repo), None)
    assert "is needed to build device files" in info.value.message
    assert "GITPROV_PRIVATE_KEY" in (info.value.hint or "")


@pytest.mark.parametrize(
    "key", ["two words", "ab$$cd", "x]y", "'quoted", "pa\"ss'word", "--dash", " padded"]
)
def test_a_key_a_profile_rule_cannot_carry_is_refused(
    example_repo: GitRepo, private_key: str, key: str
) -> None:
    # The device learns its key only as [--key KEY] in its Profile Rule (overview, 4.4),
    # which ends at whitespace or ']' and expands macros ('$$' is one '$', section 3):
    # such a key would reach the device as another key, and strand it.
    from gitprov.secrets import load_secrets_file, seal

    path = "inventory/secrets.yaml"
    secrets = example_repo.files[path].decode()
    sealed = seal(load_secrets_file(secrets).public_key, "own_key", key)
    device = "inventory/devices/0021f2011b19.yaml"
    text = example_repo.files[device].decode()
    example_repo.commit(
        {path: f"{secrets}  own_key: {sealed}\n", device: text + "key: !secret own_key\n"},
        "a device key of its own",
    )
    with pytest.raises(InvalidInventory) as info:
        Pipeline(example_repo.repo).build(head(example_repo), private_key)
    # Located at the device's `key:` line (the one added), for a secret validation could
    # not look into.
    (found,) = info.value.problems
    where = (device, len(text.splitlines()) + 1, 6, "GP010")
    assert (found.file, found.line, found.col, found.code) == where
    assert "the secret 'own_key' cannot be written into the device's Profile Rule" in found.message
    assert "gitprov secrets set own_key" in found.hint
    said = info.value.message + found.message + found.hint
    assert key.strip() not in said  # never the key


def test_a_key_of_letters_and_digits_is_written_as_it_is(
    example_repo: GitRepo, private_key: str
) -> None:
    from gitprov.secrets import load_secrets_file, seal

    path = "inventory/secrets.yaml"
    secrets = example_repo.files[path].decode()
    sealed = seal(load_secrets_file(secrets).public_key, "own_key", "Key-123_abc.XYZ")
    device = "inventory/devices/0021f2011b19.yaml"
    text = example_repo.files[device].decode()
    example_repo.commit(
        {path: f"{secrets}  own_key: {sealed}\n", device: text + "key: !secret own_key\n"},
        "a device key of its own",
    )
    build = Pipeline(example_repo.repo).build(head(example_repo), private_key)
    (mine,) = [f for f in build.files if f.mac == "0021f2011b19"]
    rule = flyingvoice.parse(mine.plaintext)["DBID_PROFILE_RULE"]
    assert rule.startswith("[--key Key-123_abc.XYZ]http://")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("pa\nDBID_EVIL=1", "holds a newline"),
        ("x" * (2**20 + 1), "more than 1 MiB"),
    ],
    ids=["newline", "too long"],
)
def test_a_secret_value_secrets_set_would_refuse_is_refused_at_its_line(
    example_repo: GitRepo, private_key: str, value: str, says: str
) -> None:
    """Anyone with the public key can seal a value without `secrets set`, which refuses
    these: a build took the over-long one into device files, and refused the newline
    without saying where the secret is."""
    from gitprov.errors import GitprovError
    from gitprov.secrets import load_secrets_file, seal

    path = "inventory/secrets.yaml"
    secrets = example_repo.files[path].decode()
    sf = load_secrets_file(secrets)
    name = "sip_2001"
    assert name in sf.sealed
    old = sf.sealed[name]
    replaced = secrets.replace(old, seal(sf.public_key, name, value))
    example_repo.commit({path: replaced}, "a value sealed by hand")
    with pytest.raises(GitprovError) as info:
        Pipeline(example_repo.repo).build(head(example_repo), private_key)
    line = next(i for i, t in enumerate(replaced.splitlines(), 1) if t.lstrip().startswith(name))
    if info.value.problems:
        # (its length is said by validation, which needs no private key: see
        # validate._sealed_too_long)
        [problem] = [p for p in info.value.problems if p.is_error]
        assert (problem.file, problem.line) == (path, line), problem
        message = problem.message
        assert f"secrets.{name}" in message
    else:
        message = info.value.message
        assert message.startswith(f"{path}:{line}:"), message
        assert f"secret {name!r}" in message
    assert says in message and "DBID_EVIL" not in message, message
