"""`gitprov import`: an old fleet's param.conf files (or a spreadsheet) into a new inventory
that validates and builds, for every device, the parameters its old file had."""

from __future__ import annotations

import difflib
import gzip
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitprov.app import Session
from gitprov.catalog import SCHEMAS_DIR
from gitprov.cli import main
from gitprov.crypto import Cipher as CryptoCipher
from gitprov.crypto import Mode
from gitprov.errors import Problem
from gitprov.formats.flyingvoice import parse
from gitprov.importer import ConfOptions, ImportRefused, import_conf
from gitprov.importer.read_conf import FLOOR_MAX
from gitprov.init import init_inventory
from tests.fixtures.oldfleet import (
    ATA1_MODEL,
    BOOTSTRAP_VERSION,
    SHARED_KEY,
    URL,
    git,
    old_fleet,
    openssl_dec,
    openssl_enc,
    write_old_fleet,
)
from tests.formats.flyingvoice_test import SEED

VERSION = "DBID_DBASE_VERSION"


@dataclass(frozen=True)
class Fleet:
    top: Path
    key: Path  # the repository's private key file

    @property
    def inventory(self) -> Path:
        return self.top / "inventory"

    def cli(self, *argv: str) -> int:
        return main(["--repo", str(self.top), *argv])


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """A new inventory from `gitprov init`, with a third (one-line) model."""
    top = tmp_path / "fleet"
    key = tmp_path / "keys" / "fleet.key"
    init_inventory(top, key, "fleet")
    (top / "inventory" / "models" / "ATA1.yaml").write_text(ATA1_MODEL)
    monkeypatch.setenv("GITPROV_PRIVATE_KEY_FILE", str(key))
    monkeypatch.delenv("GITPROV_PRIVATE_KEY", raising=False)
    return Fleet(top, key)


def tree(top: Path) -> dict[str, bytes]:
    """Every file of the work tree (not .git), by path."""
    return {
        p.relative_to(top).as_posix(): p.read_bytes()
        for p in sorted(top.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(top).parts
    }


# -- the acceptance test: 200 devices, 3 models, half encrypted ---------------------
def test_an_old_fleet_imports_validates_and_builds_what_each_device_had(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    devices = old_fleet(200)
    assert {d.how for d in devices} == {"plain", "keyfile", "shared"}
    assert {len(d.params["DBID_SIP_ENABLE"].split("\t")) for d in devices} == {1, 2, 4}
    root, key_file = write_old_fleet(devices, tmp_path / "old")
    fleet_yaml = (fleet.inventory / "gitprov.yaml").read_text()

    code = fleet.cli(
        "import",
        "conf",
        str(root),
        "--key-file",
        str(key_file),
        "--key",
        SHARED_KEY,
        "--models",
        str(tmp_path / "old" / "models.csv"),
    )
    imported = capsys.readouterr()
    assert code == 0, imported.err

    # One report line per file: every device imported, the rest skipped with a reason.
    for d in devices:
        assert f"imported  {root / d.file_name} -> inventory/devices/{d.mac}.yaml (" in (
            imported.out
        ), d.file_name
    assert f"skipped   {root / 'IP542N.conf'}: no MAC" in imported.out
    assert f"skipped   {root / 'IP542N_F107.bin'}: not a param.conf" in imported.out
    assert "imported 200 device(s), skipped 2" in imported.out
    assert "Traceback" not in imported.err

    # version_floor: above every version read (the option-66 file's 3100 is the highest),
    # written by a round-trip edit that keeps every comment: one line changes.
    highest = max(BOOTSTRAP_VERSION, *(int(d.params[VERSION]) for d in devices))
    diff = [
        ln
        for ln in difflib.unified_diff(
            fleet_yaml.splitlines(),
            (fleet.inventory / "gitprov.yaml").read_text().splitlines(),
            lineterm="",
            n=0,
        )
        if ln[:1] in "+-" and ln[:3] not in ("+++", "---")
    ]
    assert diff == ["-version_floor: 1000", f"+version_floor: {highest + 1}"]

    # What most devices share went into profiles; device files keep their differences.
    shared = (fleet.inventory / "profiles" / "imported.yaml").read_text()
    assert "sip.server: sip.example.net" in shared
    assert (
        "extends: imported" in (fleet.inventory / "profiles" / "imported-IP542N.yaml").read_text()
    )
    common = next(d for d in devices if d.params["DBID_WEB_SIP_SERVER"] == "sip.example.net")
    other = next(d for d in devices if d.params["DBID_WEB_SIP_SERVER"] != "sip.example.net")
    assert "sip.server" not in (fleet.inventory / "devices" / f"{common.mac}.yaml").read_text()
    assert (
        "sip.server: sip2.example.net"
        in (fleet.inventory / "devices" / f"{other.mac}.yaml").read_text()
    )

    git(fleet.top, "add", "-A")
    git(fleet.top, "commit", "-q", "-m", "import the old fleet")
    assert fleet.cli("validate") == 0
    validated = capsys.readouterr()
    out = tmp_path / "built"
    assert fleet.cli("build", "--reveal", "--out", str(out)) == 0
    built = capsys.readouterr()

    for d in devices:
        plain = (out / "plain" / f"fv{d.mac}.conf").read_bytes()
        got = parse(plain)
        version = int(got.pop(VERSION))
        assert version > int(d.params[VERSION]), d.mac
        expected = {k: v for k, v in d.params.items() if k != VERSION}
        assert got == expected, d.mac
        # The device still holds its old key (its Profile Rule's): it opens the new file.
        encrypted = (out / "encrypted" / f"fv{d.mac}.conf").read_bytes()
        assert openssl_dec(encrypted, d.key) == plain, d.mac

    # No plaintext secret anywhere but in the files gitprov encrypts: not in the inventory,
    # not in what any command printed.
    written = b"\n".join(tree(fleet.top).values())
    printed = "".join(
        (imported.out, imported.err, validated.out, validated.err, built.out, built.err)
    )
    secrets = {s for d in devices for s in d.secrets}
    assert len(secrets) > 600
    for secret in secrets:
        assert secret.encode() not in written, "a plaintext secret in the inventory"
        assert secret not in printed, "a plaintext secret on the terminal"
    assert time.monotonic() - started < 20


# -- what an operator meets on the way ------------------------------------------------
def conf(params: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in params).encode()


def ip542n(
    mac: str, *, key: str = "kA1", version: int = 7, account: str = "2001"
) -> list[tuple[str, str]]:
    return [
        (VERSION, str(version)),
        ("DBID_SIP_ENABLE", "1\t0\t0\t0"),
        ("DBID_WEB_SIP_SERVER", "sip.example.net"),
        ("DBID_WEB_SIP_SERVER_PORT", "5060"),
        ("DBID_SIP_ACCOUNT", f"{account}\t\t\t"),
        ("DBID_SIP_PASSWORD", "pw-secret-1\t\t\t"),
        ("DBID_PROFILE_RULE", f"[--key {key}]{URL}/fv{mac}.conf"),
    ]


MACS = ("0021f2aa0001", "0021f2aa0002", "0021f2aa0003")


def small(where: Path) -> Path:
    """Three plaintext IP542N files."""
    where.mkdir(parents=True)
    for i, mac in enumerate(MACS):
        (where / f"fv{mac}.conf").write_bytes(conf(ip542n(mac, account=f"200{i}")))
    return where


def refused(fleet: Fleet, root: Path, **kw: object) -> tuple[Problem, ...]:
    before = tree(fleet.top)
    options = ConfOptions(root, model="IP542N", **kw)  # type: ignore[arg-type]
    with pytest.raises(ImportRefused) as caught:
        import_conf(Session(fleet.top), options)
    assert tree(fleet.top) == before, "a refused import wrote something"
    assert caught.value.message.endswith("nothing was written")
    return caught.value.problems


def located(problems: tuple[Problem, ...]) -> list[str]:
    return [f"{p.where()}: {p.level}[{p.code}]" for p in problems]


Mutation = Callable[[Path], object]


def _lines(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    path.write_text("\n".join(edit(path.read_text().split("\n"))))


CASES: dict[str, tuple[Mutation, str]] = {
    "malformed line": (
        lambda r: _lines(r / f"fv{MACS[0]}.conf", lambda ls: [*ls[:2], "SIP SERVER", *ls[2:]]),
        f"fv{MACS[0]}.conf:3:1: error[GP402]",
    ),
    "key twice": (
        lambda r: _lines(r / f"fv{MACS[0]}.conf", lambda ls: [*ls, "DBID_WEB_SIP_SERVER_PORT=1"]),
        f"fv{MACS[0]}.conf:9:1: error[GP402]",  # after the file's last newline
    ),
    "port out of range": (
        lambda r: _lines(
            r / f"fv{MACS[1]}.conf", lambda ls: [ls[0], "DBID_WEB_SIP_SERVER_PORT=70000", *ls[4:]]
        ),
        f"fv{MACS[1]}.conf:2:26: error[GP406]",
    ),
    "a per-line row longer than the model's lines": (
        lambda r: _lines(
            r / f"fv{MACS[2]}.conf", lambda ls: [ls[0], "DBID_SIP_ENABLE=1\t0\t0\t0\t0"]
        ),
        f"fv{MACS[2]}.conf:2:17: error[GP406]",
    ),
    # A password is sealed as read: a publish would refuse it, the import does, at the
    # character (the value starts in column 19; "pw" comes first).
    "an invisible character in a password": (
        lambda r: (r / f"fv{MACS[0]}.conf").write_text(
            "DBID_SIP_PASSWORD=pw\u200bx\t\t\t\n", encoding="utf-8"
        ),
        f"fv{MACS[0]}.conf:1:21: error[GP406]",
    ),
    # At the byte's character in its line (a byte order mark before it not one).
    "not UTF-8": (
        lambda r: (r / f"fv{MACS[0]}.conf").write_bytes(b"DBID_SIP_DIS_NAME=M\xfcller\n"),
        f"fv{MACS[0]}.conf:1:20: error[GP401]",
    ),
    "not UTF-8 on a later line": (
        lambda r: (r / f"fv{MACS[0]}.conf").write_bytes(
            b"\xef\xbb\xbfDBID_DBASE_VERSION=5\r\nDBID_WEB_SIP_SERVER=\xc3\xa9\xe9t\r\n"
        ),
        f"fv{MACS[0]}.conf:2:22: error[GP401]",
    ),
    "a second file for a MAC": (
        lambda r: (r / f"{MACS[0].upper()}.cfg").write_bytes(conf(ip542n(MACS[0], version=9))),
        f"fv{MACS[0]}.conf: error[GP404]",  # the later of the two, in name order
    ),
    "version not a number": (
        lambda r: _lines(r / f"fv{MACS[1]}.conf", lambda ls: ["DBID_DBASE_VERSION=v7", *ls[1:]]),
        f"fv{MACS[1]}.conf:1:20: error[GP407]",
    ),
    "a version of 5000 digits": (
        lambda r: _lines(
            r / f"fv{MACS[1]}.conf", lambda ls: ["DBID_DBASE_VERSION=" + "9" * 5000, *ls[1:]]
        ),
        f"fv{MACS[1]}.conf:1:20: error[GP407]",
    ),
    # version_floor goes up to 2000000000 and the import raises it above every version
    # read: a higher one is refused where it is, not in the gitprov.yaml line it would make.
    "a version the highest version_floor is not above": (
        lambda r: _lines(r / f"fv{MACS[1]}.conf", lambda ls: [f"{VERSION}=2000000000", *ls[1:]]),
        f"fv{MACS[1]}.conf:1:20: error[GP407]",
    ),
    "a version of ten digits": (
        lambda r: _lines(r / f"fv{MACS[1]}.conf", lambda ls: [f"{VERSION}=9999999999", *ls[1:]]),
        f"fv{MACS[1]}.conf:1:20: error[GP407]",
    ),
    "an option-66 file's version past the bound": (
        lambda r: (r / "IP542N.conf").write_text(f"{VERSION}=3000000000\n"),
        "IP542N.conf:1:20: error[GP407]",
    ),
    "an option-66 file's version of 5000 digits": (
        lambda r: (r / "IP542N.conf").write_text(f"{VERSION}={'9' * 5000}\n"),
        "IP542N.conf:1:20: error[GP407]",
    ),
    "a wrong key": (
        lambda r: (r / f"fv{MACS[0]}.conf").write_bytes(
            openssl_enc(conf(ip542n(MACS[0])), "not-the-key")
        ),
        f"fv{MACS[0]}.conf:1:1: error[GP403]",
    ),
    "a truncated encrypted file": (
        lambda r: (r / f"fv{MACS[0]}.conf").write_bytes(
            openssl_enc(conf(ip542n(MACS[0])), "right-key")[:-5]
        ),
        f"fv{MACS[0]}.conf:1:1: error[GP403]",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_located_error_and_nothing_is_written(
    fleet: Fleet, tmp_path: Path, case: str
) -> None:
    root = small(tmp_path / "old")
    mutate, where = CASES[case]
    mutate(root)
    problems = refused(fleet, root, key="right-key")
    assert any(f"{root}/{where}" in text for text in located(problems)), located(problems)
    assert all(p.file.startswith(f"{root}/") for p in problems), located(problems)
    for p in problems:
        assert "pw-secret-1" not in p.message + p.hint


def test_the_cli_says_where_and_exits_1(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small(tmp_path / "old")
    _lines(root / f"fv{MACS[0]}.conf", lambda ls: [*ls[:2], "SIP SERVER", *ls[2:]])
    models = tmp_path / "models.txt"
    models.write_text(f"# MAC MODEL\n{MACS[0]} IP542N\n{MACS[1]}  IP542X\n* IP542N\n")
    assert fleet.cli("import", "conf", str(root), "--models", str(models)) == 1
    err = capsys.readouterr().err
    assert f"{root}/fv{MACS[0]}.conf:3:1: error[GP402]: not a DBID_NAME=value line" in err
    assert f"{models}:3:15: error[GP405]: no model 'IP542X' in the inventory" in err
    assert "did you mean 'IP542N'?" in err
    assert "gitprov: import refused: the input has 2 error(s); nothing was written" in err
    assert "Traceback" not in err


def test_key_file_problems_are_located_and_never_show_a_key(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small(tmp_path / "old")
    keys = tmp_path / "keys.csv"
    keys.write_text(f"mac,key\n{MACS[0]},kA1\nsecret-key-here,{MACS[1]}\n{MACS[0]},kA2\n")
    code = fleet.cli("import", "conf", str(root), "--model", "IP542N", "--key-file", str(keys))
    err = capsys.readouterr().err
    assert code == 1
    assert f"{keys}:3:1: error[GP411]: not a MAC address" in err
    assert f"{keys}:4:1: error[GP411]: {MACS[0]} is listed twice (first at line 2)" in err
    assert "secret-key-here" not in err and "kA2" not in err


def test_real_openssl_files_md5_and_sha256_both_open(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command (Debian package openssl)")
    root = tmp_path / "old"
    root.mkdir()
    keys = []
    for mac, md in zip(MACS[:2], ("md5", "md5"), strict=True):
        plain = tmp_path / f"{mac}.txt"
        plain.write_bytes(conf(ip542n(mac, key=f"key-{mac}", account=mac[-4:])))
        subprocess.run(
            [
                "openssl",
                "enc",
                "-aes-256-cbc",
                "-md",
                md,
                "-k",
                f"key-{mac}",
                "-in",
                str(plain),
                "-out",
                str(root / f"fv{mac}.conf"),
            ],
            check=True,
            capture_output=True,
        )
        keys.append(f"{mac} key-{mac}")
    (tmp_path / "keys.txt").write_text("\n".join(keys) + "\n")
    argv = [
        "import",
        "conf",
        str(root),
        "--model",
        "IP542N",
        "--key-file",
        str(tmp_path / "keys.txt"),
    ]
    assert fleet.cli(*argv) == 0, capsys.readouterr().err
    assert "encrypted (openssl-md5, key from the key file)" in capsys.readouterr().out

    # Files made by a modern `openssl enc` without -md are SHA-256 files: devices that read
    # them decrypt that way, so an MD5 fleet is refused where the setting is.
    sha = tmp_path / "sha"
    sha.mkdir()
    mac = MACS[2]
    plain = tmp_path / "sha.txt"
    plain.write_bytes(conf(ip542n(mac, key="key-sha", account="3003")))
    subprocess.run(
        [
            "openssl",
            "enc",
            "-aes-256-cbc",
            "-md",
            "sha256",
            "-k",
            "key-sha",
            "-in",
            str(plain),
            "-out",
            str(sha / f"fv{mac}.conf"),
        ],
        check=True,
        capture_output=True,
    )
    problems = refused(fleet, sha, key="key-sha")
    settings = (fleet.inventory / "gitprov.yaml").read_text().split("\n")
    mode_line = settings.index("  mode: openssl-md5") + 1
    assert located(problems) == [f"inventory/gitprov.yaml:{mode_line}:9: error[GP409]"]
    assert "are openssl-sha256, but gitprov would write openssl-md5" in problems[0].message
    (fleet.inventory / "models" / "IP542N.yaml").write_text(
        (fleet.inventory / "models" / "IP542N.yaml").read_text()
        + "encryption: {mode: openssl-sha256}\n"
    )
    result = import_conf(Session(fleet.top), ConfOptions(sha, model="IP542N", key="key-sha"))
    assert [f.detail for f in result.files] == [
        "IP542N, encrypted (openssl-sha256, key from --key), keeps its key"
    ]


@dataclass(frozen=True)
class CipherCase:
    encrypt: Callable[[bytes, str], bytes]  # a file as the old server stored it
    model: str  # the model's encryption line, or ""
    hint: str  # the settings the GP409 hint must name
    where: str  # the setting it is at: "fleet" (gitprov.yaml's `encryption`) or "model"
    fixed: str  # the model's encryption line as the hint asks


CIPHERS = {
    # The case of the report: the hint named `mode`, which the files already had.
    "gzip inside openssl-md5": CipherCase(
        lambda plain, key: openssl_enc(gzip.compress(plain), key),
        "",
        "gzip: true",
        "fleet",
        "encryption: {gzip: true}",
    ),
    "no gzip where the model has it": CipherCase(
        openssl_enc,
        "encryption: {gzip: true}",
        "gzip: false",
        "model",
        "encryption: {gzip: false}",
    ),
    "other PBKDF2 iterations": CipherCase(
        lambda plain, key: CryptoCipher(Mode.OPENSSL_PBKDF2, 1000).encrypt(plain, key),
        "encryption: {mode: openssl-pbkdf2, iterations: 20000}",
        "iterations: 1000",
        "model",
        "encryption: {mode: openssl-pbkdf2, iterations: 1000}",
    ),
    "another mode and gzip": CipherCase(
        lambda plain, key: openssl_enc(gzip.compress(plain), key, "sha256"),
        "",
        "mode: openssl-sha256, gzip: true",
        "fleet",
        "encryption: {mode: openssl-sha256, gzip: true}",
    ),
}


@pytest.mark.parametrize("case", sorted(CIPHERS))
def test_a_cipher_the_fleet_would_not_write_names_the_setting_to_change(
    fleet: Fleet, tmp_path: Path, case: str
) -> None:
    c = CIPHERS[case]
    model = fleet.inventory / "models" / "IP542N.yaml"
    original = model.read_text()
    model.write_text(original + c.model + "\n")
    root = tmp_path / "old"
    root.mkdir()
    for mac in MACS[:2]:
        plain = conf(ip542n(mac, key="kZ", account=mac[-4:]))
        (root / f"fv{mac}.conf").write_bytes(c.encrypt(plain, "kZ"))
    options: dict[str, object] = {"key": "kZ"}
    if "PBKDF2" in case:
        options |= {"mode": "openssl-pbkdf2", "iterations": 1000}
    (problem,) = refused(fleet, root, **options)
    first = c.hint.split(":")[0]
    if c.where == "fleet":
        # gitprov.yaml as `gitprov init` writes it has `mode` and no `gzip`: without its
        # line, the error is at the `encryption` block (its first key).
        lines = (fleet.inventory / "gitprov.yaml").read_text().split("\n")
        at = ("inventory/gitprov.yaml", lines.index("  mode: openssl-md5") + 1, 3)
        if first == "mode":
            at = (at[0], at[1], 9)
    else:
        col = c.model.index(f"{first}: ") + len(first) + 3
        at = ("inventory/models/IP542N.yaml", original.count("\n") + 1, col)
    assert (problem.file, problem.line, problem.col, problem.code) == (*at, "GP409")
    names = " and ".join(f"encryption.{s.split(':')[0]}" for s in c.hint.split(", "))
    assert problem.hint == (
        f"set `encryption: {{{c.hint}}}` in inventory/models/IP542N.yaml (or {names} in "
        "inventory/gitprov.yaml) to what the devices read, and import again"
    )
    # The hint is what it takes: with the setting it names, the same files import.
    model.write_text(original + c.fixed + "\n")
    result = import_conf(Session(fleet.top), ConfOptions(root, model="IP542N", **options))  # type: ignore[arg-type]
    assert result.imported == 2


def test_devices_that_exist_are_skipped_unless_forced(fleet: Fleet, tmp_path: Path) -> None:
    root = small(tmp_path / "old")
    first = import_conf(Session(fleet.top), ConfOptions(root, model="IP542N"))
    assert [f.action for f in first.files] == ["imported"] * 3
    assert first.profiles == ("imported",)
    again = import_conf(Session(fleet.top), ConfOptions(root, model="IP542N"))
    assert [(f.action, f.detail) for f in again.files] == [
        ("skipped", f"inventory/devices/{mac}.yaml exists (--force replaces it)") for mac in MACS
    ]
    assert again.written == ()
    # Replacing some devices must not rewrite a profile others still use.
    (root / f"fv{MACS[2]}.conf").unlink()
    problems = refused(fleet, root, force=True)
    # The profile, and the secret of the key the three devices share (kA1), are still
    # used by the device that stays.
    sealed = (fleet.inventory / "secrets.yaml").read_text().split("\n")
    shared = next(i for i, ln in enumerate(sealed, 1) if "imported.shared-key-1:" in ln)
    assert located(problems) == [
        "inventory/profiles/imported.yaml: error[GP412]",
        f"inventory/secrets.yaml:{shared}:3: error[GP412]",
    ]
    assert all("--profile-prefix" in p.hint for p in problems)
    result = import_conf(
        Session(fleet.top), ConfOptions(root, model="IP542N", force=True, prefix="batch2")
    )
    assert [f.action for f in result.files] == ["replaced", "replaced"]
    assert fleet.cli("validate", "--worktree") == 0


def test_a_device_grouped_in_a_directory_is_found_and_replaced_where_it_is(
    fleet: Fleet, tmp_path: Path
) -> None:
    """New devices are written flat; one that exists in devices/<site>/ is the same
    device: skipped naming its file, or replaced there with --force (never a second file
    for its MAC)."""
    root = small(tmp_path / "old")
    import_conf(Session(fleet.top), ConfOptions(root, model="IP542N"))
    devices = fleet.inventory / "devices"
    assert sorted(p.name for p in devices.glob("*.yaml")) == [f"{m}.yaml" for m in MACS]
    site = devices / "paris"
    site.mkdir()
    (devices / f"{MACS[0]}.yaml").rename(site / f"{MACS[0]}.yaml")
    again = import_conf(Session(fleet.top), ConfOptions(root, model="IP542N"))
    assert (again.files[0].action, again.files[0].detail) == (
        "skipped",
        f"inventory/devices/paris/{MACS[0]}.yaml exists (--force replaces it)",
    )
    forced = import_conf(
        Session(fleet.top), ConfOptions(root, model="IP542N", force=True, prefix="b2")
    )
    assert [f.action for f in forced.files] == ["replaced"] * 3
    assert f"inventory/devices/paris/{MACS[0]}.yaml" in forced.written
    assert not (devices / f"{MACS[0]}.yaml").exists()
    assert fleet.cli("validate", "--worktree") == 0


def test_devices_whose_old_rule_points_elsewhere_are_warned_about(
    fleet: Fleet, tmp_path: Path
) -> None:
    root = tmp_path / "old"
    root.mkdir()
    for i, mac in enumerate(MACS):
        params = ip542n(mac, account=f"200{i}")
        params[-1] = ("DBID_PROFILE_RULE", f"[--key k{i}]http://old.example.net/cfg/$(MA).cfg")
        (root / f"fv{mac}.conf").write_bytes(conf(params))
    # A device that reads plaintext: no key in its rule, its file not encrypted.
    plain_mac = "0021f2aa0009"
    params = ip542n(plain_mac, account="2009")
    params[-1] = ("DBID_PROFILE_RULE", f"{URL}/fv{plain_mac}.conf")
    (root / f"fv{plain_mac}.conf").write_bytes(conf(params))
    result = import_conf(Session(fleet.top), ConfOptions(root, model="IP542N"))
    text = [f"{p.where()}: {p.message}" for p in result.warnings]
    assert (
        f"{root}/fv{MACS[0]}.conf:7:19: devices fetch http://old.example.net/cfg/$(MA).cfg, but "
        f"gitprov would publish their files for {URL}/fv$(MA).conf: they would never find the "
        f"first one (3 files: {root}/fv{MACS[0]}.conf and 2 more)"
    ) in text
    assert any(
        t.startswith(f"{root}/fv{plain_mac}.conf:7:19: the device reads plaintext files")
        for t in text
    )
    assert all("k0" not in t for t in text)


def test_a_dry_run_reports_and_writes_nothing(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small(tmp_path / "old")
    before = tree(fleet.top)
    assert fleet.cli("import", "conf", str(root), "--model", "IP542N", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would import 3 device(s), skipped 0" in out and "dry run: nothing was written" in out
    assert tree(fleet.top) == before


# The overview's example param.conf (its section 5), as tests.formats.flyingvoice_test
# copied it: SIP_ENABLE gives the four lines, the account, name, number and password one
# value each.
VENDOR_EXAMPLE = SEED


def test_the_overviews_example_imports_its_short_rows_with_a_warning_each(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "old"
    root.mkdir()
    mac = "0021f2011b19"
    (root / f"fv{mac}.conf").write_bytes(conf(VENDOR_EXAMPLE))
    assert fleet.cli("import", "conf", str(root), "--model", "IP542N") == 0
    err = capsys.readouterr().err
    short = [line for line in err.splitlines() if "TAB-separated" in line]
    assert len(short) == 4, err
    assert (
        f"fv{mac}.conf:14:20: warning[GP406]: DBID_SIP_PHONE_NUM has 1 TAB-separated "
        "value(s), but model IP542N has 4 line(s): lines 2-4 are imported with the "
        "default (empty)" in err
    ), err
    # The device's file as gitprov builds it: line 1 as the example gives it.
    git(fleet.top, "add", "-A")
    git(fleet.top, "commit", "-q", "-m", "the overview's example")
    build = tmp_path / "build"
    assert fleet.cli("build", "--out", str(build), "--reveal") == 0
    built = dict(
        line.split("=", 1)
        for line in (build / "plain" / f"fv{mac}.conf").read_text().splitlines()
        if "=" in line
    )
    for key in ("DBID_SIP_DIS_NAME", "DBID_SIP_PHONE_NUM", "DBID_SIP_ACCOUNT", "DBID_SIP_PASSWORD"):
        assert built[key].split("\t")[0] == dict(VENDOR_EXAMPLE)[key], (key, built[key])
    assert built["DBID_SIP_ENABLE"] == "1\t0\t0\t0"
    assert int(built[VERSION]) > 2207


@pytest.mark.parametrize(
    "rule",
    [f"[--key Sup3r KeyT2]{URL}/fv{{mac}}.conf", f"[Sup3rKeyT2]{URL}/fv{{mac}}.conf"],
)
def test_a_profile_rule_that_does_not_parse_is_never_quoted(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str
) -> None:
    """Its option block may hold the device's key."""
    root = tmp_path / "old"
    root.mkdir()
    mac = MACS[0]
    params = [(k, rule.format(mac=mac) if k == "DBID_PROFILE_RULE" else v) for k, v in ip542n(mac)]
    (root / f"fv{mac}.conf").write_bytes(conf(params))
    assert fleet.cli("import", "conf", str(root), "--model", "IP542N", "--dry-run") == 0
    err = capsys.readouterr().err
    assert "warning[GP408]: the Profile Rule does not parse (its options are not shown)" in err
    assert "KeyT2" not in err and "Sup3r" not in err, err


def test_a_key_the_new_rule_cannot_carry_is_a_located_error_among_the_others(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`$$` in the old rule's key is a `$` the device holds: no Profile Rule gitprov writes
    can give it back. Said at the rule, with the other files' problems and warnings."""
    root = tmp_path / "old"
    root.mkdir()
    bad = [
        (k, f"[--key ab$$cd]{URL}/fv{MACS[0]}.conf" if k == "DBID_PROFILE_RULE" else v)
        for k, v in ip542n(MACS[0])
    ]
    (root / f"fv{MACS[0]}.conf").write_bytes(conf(bad))
    short = [(k, "2001" if k == "DBID_SIP_ACCOUNT" else v) for k, v in ip542n(MACS[1])]
    (root / f"fv{MACS[1]}.conf").write_bytes(conf(short))
    before = tree(fleet.top)
    assert fleet.cli("import", "conf", str(root), "--model", "IP542N") == 1
    err = capsys.readouterr().err
    rule_line = [k for k, _ in bad].index("DBID_PROFILE_RULE") + 1
    assert f"fv{MACS[0]}.conf:{rule_line}:19: error[GP408]: the Profile Rule's key cannot" in err
    assert "ab$" not in err and "cd" not in err.split("error[GP408]")[1].split("\n")[0]
    assert f"fv{MACS[1]}.conf:5:18: warning[GP406]: DBID_SIP_ACCOUNT has 1" in err, err
    assert "1 error(s), 1 warning(s)" in err, err
    assert tree(fleet.top) == before


def _account(row: str) -> Callable[[list[str]], list[str]]:
    return lambda ls: [
        f"DBID_SIP_ACCOUNT={row}" if ln.startswith("DBID_SIP_ACCOUNT=") else ln for ln in ls
    ]


def test_a_profile_the_import_would_write_that_does_not_validate_is_at_the_input_line(
    fleet: Fleet, tmp_path: Path
) -> None:
    # Every device registers 2001 on one server: the account goes into the profile the
    # import writes, where validation finds it (once: one value, one place).
    root = small(tmp_path / "old")
    for mac in MACS:
        _lines(root / f"fv{mac}.conf", _account("2001\t\t\t"))
    problems = refused(fleet, root)
    # (DBID_SIP_ACCOUNT= is line 5: the value starts in column 18)
    assert located(problems) == [f"{root}/fv{MACS[1]}.conf:5:18: error[GP413]"]
    assert problems[0].message.startswith(
        "the profile the import would write (inventory/profiles/imported.yaml:"
    )
    assert problems[0].message.endswith(
        f"GP105 SIP account '2001' on sip.example.net:5060 (for {root}/fv{MACS[1]}.conf) "
        f"is already registered by {root}/fv{MACS[0]}.conf, on its SIP line 1"
    )


def test_a_device_file_the_import_would_write_that_does_not_validate_is_at_the_value(
    fleet: Fleet, tmp_path: Path
) -> None:
    root = small(tmp_path / "old")
    first = root / f"fv{MACS[0]}.conf"
    _lines(first, lambda ls: [ln.replace("ENABLE=1\t0", "ENABLE=1\t1") for ln in ls])
    _lines(first, _account("2000\t2000\t\t"))
    # At line 2's value, the second on the line (column 18 + "2000\t").
    assert located(refused(fleet, root)) == [f"{first}:5:23: error[GP413]"]

    # A device file of the user's that the import's devices make invalid stays where it
    # is, and names the input file, not a device file that does not exist.
    _lines(first, _account("2000\t2009\t\t"))
    (fleet.inventory / "devices" / "0021f2aa0009.yaml").write_text(
        'mac: "00:21:f2:aa:00:09"\nmodel: IP542N\nprofile: base\nlines:\n'
        '  - {enabled: true, account: "2001"}\n'
    )
    (problem,) = refused(fleet, root)
    assert f"{problem.where()}: {problem.code}" == "inventory/devices/0021f2aa0009.yaml:5:30: GP105"
    assert f"already registered by {root}/fv{MACS[1]}.conf" in problem.message


def test_a_version_floor_past_the_schemas_bound_is_a_usage_error(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small(tmp_path / "old")
    argv = ["import", "conf", str(root), "--model", "IP542N", "--version-floor"]
    assert fleet.cli(*argv, str(10**20)) == 2
    assert "--version-floor 100000000000000000000 is too high" in capsys.readouterr().err
    assert fleet.cli(*argv, "2000000000", "--dry-run") == 0


def test_the_highest_version_imports_and_publishes_and_one_more_is_refused_at_its_line(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small(tmp_path / "old")
    first = root / f"fv{MACS[0]}.conf"
    _lines(first, lambda ls: [f"{VERSION}=2000000000", *ls[1:]])
    assert fleet.cli("import", "conf", str(root), "--model", "IP542N") == 1
    err = capsys.readouterr().err
    assert (
        f"{first}:1:20: error[GP407]: DBID_DBASE_VERSION 2000000000 is above 1999999999: "
        "gitprov numbers devices above version_floor, which goes up to 2000000000"
    ) in err, err
    assert "lower the version the devices hold first" in err
    assert "gitprov.yaml" not in err and "Traceback" not in err
    schema = json.loads((SCHEMAS_DIR / "fleet.schema.json").read_text())
    assert schema["properties"]["version_floor"]["maximum"] == FLOOR_MAX == 2000000000

    # The highest version taken: version_floor becomes the schema's bound, the devices
    # are numbered above it, and the result validates and publishes.
    _lines(first, lambda ls: [f"{VERSION}=1999999999", *ls[1:]])
    assert fleet.cli("import", "conf", str(root), "--model", "IP542N") == 0, capsys.readouterr()
    assert "version_floor: 1000 -> 2000000000" in capsys.readouterr().out
    git(fleet.top, "add", "-A")
    git(fleet.top, "commit", "-q", "-m", "import the old fleet")
    assert fleet.cli("validate") == 0, capsys.readouterr()
    roots = tmp_path / "roots"
    argv = ["publish", "--http-root", str(roots / "http"), "--tftp-root", str(roots / "tftp")]
    assert fleet.cli(*argv, "--state-dir", str(roots / "state")) == 0, capsys.readouterr()
    served = (roots / "http" / f"fv{MACS[0]}.conf").read_bytes()
    assert parse(openssl_dec(served, "kA1"))[VERSION] == "2000000001"  # the key it kept


@pytest.mark.parametrize(
    ("written", "read"),
    # (more digits than int() converts, all but a few of them leading zeros)
    [("0" * 5000 + "42", 42), (" " + "0" * 4400 + "1999999999\t", 1999999999), ("0" * 5000, 0)],
)
def test_hostile_versions_that_are_numbers_are_read_as_numbers(
    fleet: Fleet, tmp_path: Path, written: str, read: int
) -> None:
    root = small(tmp_path / "old")
    options = ConfOptions(root, model="IP542N", dry_run=True)
    device = root / f"fv{MACS[0]}.conf"
    kept = device.read_bytes()
    _lines(device, lambda ls: [f"{VERSION}={written}", *ls[1:]])
    assert import_conf(Session(fleet.top), options).highest_version == max(read, 7)
    device.write_bytes(kept)
    (root / "IP542N.conf").write_text(f"{VERSION}={written}\nDBID_PRV_OPTION66_ENABLED=0\n")
    result = import_conf(Session(fleet.top), options)
    assert result.highest_version == max(read, 7)
    assert "counts for version_floor" in result.files[0].detail
    assert not [p for p in result.warnings if p.code == "GP407"]


@pytest.mark.parametrize("written", ["\u00b2", "-5", "+7", "0x10", "", "1 000", "\u0667"])
def test_an_option66_files_version_that_is_no_number_is_a_located_warning(
    fleet: Fleet, tmp_path: Path, written: str
) -> None:
    root = small(tmp_path / "old")
    (root / "IP542N.conf").write_text(f"{VERSION}={written}\nDBID_PRV_OPTION66_ENABLED=0\n")
    result = import_conf(Session(fleet.top), ConfOptions(root, model="IP542N", dry_run=True))
    assert result.highest_version == 7
    assert [f"{p.where()}: {p.level}[{p.code}]" for p in result.warnings if p.code == "GP407"] == [
        f"{root}/IP542N.conf:1:20: warning[GP407]"
    ]
    # In a device's file the same is an error at the same place.
    _lines(root / f"fv{MACS[2]}.conf", lambda ls: [f"{VERSION}={written}", *ls[1:]])
    assert f"{root}/fv{MACS[2]}.conf:1:20: error[GP407]" in located(refused(fleet, root))


@pytest.mark.parametrize(("threshold", "in_profile"), [(50, True), (60, False)])
def test_the_threshold_decides_what_goes_into_the_profile(
    fleet: Fleet, tmp_path: Path, threshold: int, in_profile: bool
) -> None:
    root = tmp_path / "old"
    root.mkdir()
    for i in range(10):
        mac = f"0021f2bb00{i:02x}"
        params = ip542n(mac, account=f"30{i:02d}")
        # 6 of 10 devices share the outbound proxy: more than 50 %, not more than 60 %.
        if i < 6:
            params.append(("DBID_WEB_SIP_OUTBOUND", "sbc1.example.net"))
        (root / f"fv{mac}.conf").write_bytes(conf(params))
    import_conf(Session(fleet.top), ConfOptions(root, model="IP542N", threshold=threshold))
    profile = (fleet.inventory / "profiles" / "imported.yaml").read_text()
    assert ("sip.outbound: sbc1.example.net" in profile) is in_profile
    devices = [
        (fleet.inventory / "devices" / f"0021f2bb00{i:02x}.yaml").read_text() for i in range(10)
    ]
    assert sum("sip.outbound" in d for d in devices) == (4 if in_profile else 6)


# -- CSV ------------------------------------------------------------------------------
SHEET = (
    "\ufeffMAC;Model;Profile;Description;line1.account;line1.password;line1.display_name;"
    "line2.account;line2.password;line2.enabled;sip.server_port\n"
    '00:21:f2:cc:00:01;IP542N;base;"Front desk; left";3001;pw-csv-3001;"Anna ""A."" K";'
    "3002;pw-csv-3002;no;\n"
    "00-21-F2-CC-00-02;G502N;;;3003;pw-csv-3003;;;;;5070\n"
    "\n"
)


def test_a_spreadsheet_imports_validates_and_builds(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = tmp_path / "devices.csv"
    sheet.write_text(SHEET)
    assert fleet.cli("import", "csv", str(sheet)) == 0
    imported = capsys.readouterr()
    assert f"imported  {sheet}:2 -> inventory/devices/0021f2cc0001.yaml (IP542N, profile base" in (
        imported.out
    )
    git(fleet.top, "add", "-A")
    git(fleet.top, "commit", "-q", "-m", "devices from the sheet")
    assert fleet.cli("validate") == 0
    out = tmp_path / "built"
    assert fleet.cli("build", "--reveal", "--out", str(out)) == 0
    printed = imported.out + imported.err + "".join(capsys.readouterr())
    one = parse((out / "plain" / "fv0021f2cc0001.conf").read_bytes())
    assert one["DBID_SIP_ACCOUNT"] == "3001\t3002\t\t"
    assert one["DBID_SIP_PASSWORD"] == "pw-csv-3001\tpw-csv-3002\t\t"
    assert one["DBID_SIP_DIS_NAME"] == 'Anna "A." K\t\t\t'
    assert one["DBID_SIP_ENABLE"] == "1\t0\t0\t0"  # line 2 says no
    assert one["DBID_WEB_SIP_SERVER_PORT"] == "5060"  # the base profile's
    assert "Front desk; left" in (fleet.inventory / "devices" / "0021f2cc0001.yaml").read_text()
    two = parse((out / "plain" / "fv0021f2cc0002.conf").read_bytes())
    assert two["DBID_SIP_ENABLE"] == "1\t0"
    assert two["DBID_WEB_SIP_SERVER_PORT"] == "5070"
    written = b"".join(tree(fleet.top).values())
    for secret in ("pw-csv-3001", "pw-csv-3002", "pw-csv-3003"):
        assert secret.encode() not in written and secret not in printed


CSV_CASES = {
    "a MAC a spreadsheet made a number": (
        "mac,model,line1.account\n2.15E+09,IP542N,1\n",
        ":2:1: error[GP404]",
    ),
    "an unknown column": ("mac,model,line1.acount\n", ":1:11: error[GP410]"),
    "a line the model lacks": (
        "mac,model,line3.account\n0021f2cc0003,G502N,7\n",
        ":2:20: error[GP406]",
    ),
    "not a boolean": (
        "mac,model,line1.enabled\n0021f2cc0003,G502N,maybe\n",
        ":2:20: error[GP406]",
    ),
    "an unknown profile": ("mac,model,profile\n0021f2cc0003,G502N,ofice\n", ":2:20: error[GP410]"),
    "an unknown model": ("mac,model\n0021f2cc0003,G520N\n", ":2:14: error[GP405]"),
    "a quote never closed": (
        'mac,model,description\n0021f2cc0003,G502N,"desk\n',
        ":2:20: error[GP410]",
    ),
    "one device twice": (
        "mac,model\n0021f2cc0003,G502N\n00:21:f2:cc:00:03,G502N\n",
        ":3:1: error[GP404]",
    ),
    "no model column": ("mac\n0021f2cc0003\n", ":1:1: error[GP410]"),
    # Found by validating what the import would write: at the cell that gave the account,
    # not in a device file that does not exist.
    "one account on one server twice": (
        "mac,model,sip.server,line1.account\n0021f2cc0003,G502N,sip.example.net,7\n"
        "0021f2cc0004,G502N,sip.example.net,7\n",
        ":3:36: error[GP413]: the device file the import would write",
    ),
    # Imported with its password unset, the value lost without a word.
    "a row cut short": (
        "mac,model,line1.account,line1.password\n0021f2cc0003,G502N,7\n",
        ":2:20: error[GP410]: 3 cells, but the header names 4",
    ),
    # A password is sealed as it is read: nothing checks it after the import, so what a
    # publish would refuse is refused here, at its cell.
    "an invisible character in a password": (
        "mac,model,line1.account,line1.password\n0021f2cc0003,G502N,7,pw\u200bx\n",
        ":2:22: error[GP406]: the value contains the invisible character U+200B",
    ),
    "a newline in a quoted password": (
        'mac,model,line1.account,line1.password\n0021f2cc0003,G502N,7,"pw\nDBID_X=1"\n',
        ":2:22: error[GP406]: the value contains a newline",
    ),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_spreadsheets_are_located_errors(
    fleet: Fleet, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text, where = CSV_CASES[case]
    sheet = tmp_path / "devices.csv"
    sheet.write_text(text, encoding="utf-8")
    before = tree(fleet.top)
    assert fleet.cli("import", "csv", str(sheet)) == 1
    err = capsys.readouterr().err
    assert f"{sheet}{where}" in err, err
    assert "Traceback" not in err
    assert tree(fleet.top) == before


def test_every_import_code_is_documented() -> None:
    import gitprov.importer as importer

    docs = (Path(__file__).resolve().parents[1] / "docs" / "inventory.md").read_text()
    codes = sorted(v for v in vars(importer).values() if isinstance(v, str) and v.startswith("GP4"))
    assert len(codes) == 13
    for code in codes:
        assert f"| {code} |" in docs, code


def test_an_upgrade_rule_a_device_had_is_taken_as_gp110_asks_or_refused_where_it_is(
    fleet: Fleet, tmp_path: Path
) -> None:
    """An Upgrade Rule written `HTTP://…` or with `{` in its path, as a device's own file
    may hold it, failed the whole import at a planned file (GP110 at
    inventory/profiles/imported.yaml): it is taken in lower case and percent-encoded,
    the URL a server reads alike; one no device reads is an error at its own line."""
    model = fleet.inventory / "models" / "IP542N.yaml"
    model.write_text(
        model.read_text()
        + 'bindings:\n  provision.upgrade_rule: {key: DBID_UPGRADE_RULE, source: "t"}\n'
    )
    root = tmp_path / "old"
    root.mkdir()
    rule = "HTTP://fw.example.com/IP542N{v2}.bin"
    for i, mac in enumerate(MACS):
        params = [*ip542n(mac, account=f"200{i}"), ("DBID_UPGRADE_RULE", rule)]
        (root / f"fv{mac}.conf").write_bytes(conf(params))
    import_conf(Session(fleet.top), ConfOptions(root, model="IP542N"))
    written = "".join(p.read_text() for p in (fleet.inventory / "profiles").glob("*.yaml"))
    written += "".join(p.read_text() for p in (fleet.inventory / "devices").rglob("*.yaml"))
    assert "http://fw.example.com/IP542N%7Bv2%7D.bin" in written, written
    assert fleet.cli("validate", "--worktree") == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    params = [*ip542n(MACS[0]), ("DBID_UPGRADE_RULE", "ftp://fw.example.com/x.bin")]
    (bad / f"fv{MACS[0]}.conf").write_bytes(conf(params))
    problems = refused(fleet, bad, force=True)
    assert located(problems) == [f"{bad / f'fv{MACS[0]}.conf'}:8:19: error[GP406]"], problems
