"""The CLI: exit codes, help that teaches, secrets commands, redaction."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess
from typing import IO

import pytest

import gitprov.cli as cli_module
from gitprov.cli import main
from gitprov.crypto import Cipher, DecryptError, Mode, encrypt
from gitprov.secrets import generate_keypair, load_secrets_file, unseal
from tests.fixtures.fifo import writerless_fifo
from tests.fixtures.fleet import device_path, fleet_files, generated_mac
from tests.fixtures.gitrepo import ROOT, GitRepo, example_files
from tests.fixtures.roots import root_args


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_teaches_the_tour(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("validate", "plan", "publish", "serve", "versions", "secrets"):
        assert command in out
    assert "exit codes: 0 ok, 1 problems in the inventory, 2 usage or environment" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "no-such-command")[0] == 2
    assert run(capsys, "show")[0] == 2  # MAC missing
    code, _, err = run(capsys, "--repo", ".", "show", "not-a-mac")
    assert code == 2
    assert "not a MAC address" in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["validate", "--repo", "."], "`gitprov --repo DIR validate …`"),
        (["secrets", "list", "--private-key-file=k"], "`gitprov --private-key-file FILE secrets"),
        (["versions", "--inventory-dir", "inv"], "`gitprov --inventory-dir DIR versions …`"),
    ],
)
def test_a_global_option_after_the_command_says_where_it_goes(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "is a global option: put it before the command" in err and said in err, err


def test_an_option_of_the_command_itself_gets_no_such_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`watch --repo` is watch's own option: the error is about the other argument."""
    code, _, err = run(capsys, "watch", "--repo", ".", "--bogus")
    assert code == 2 and "--bogus" in err and "global option" not in err, err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["validate", "--wortree"], "validate has no option --wortree: did you mean --worktree?"),
        (["publish", "--rev", "HEAD", "--http-rot", "x"], "did you mean --http-root?"),
        (["versions", "--zzz"], "versions has no option --zzz: `gitprov versions --help`"),
    ],
)
def test_a_mistyped_option_of_a_command_names_the_command_and_the_option_meant(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    """argparse reports it against the top-level parser, whose usage lists no option of
    the command."""
    code, _, err = run(capsys, *argv)
    assert code == 2 and said in err, err


def test_serve_with_nothing_to_serve_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No roots given and no fleet settings to take them from: exit 2 (usage), naming the
    options and the settings, as with a root that is not published yet."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"README": "not an inventory\n"}, worktree=True)
    code, _, err = run(capsys, "--repo", str(repo.path), "serve", "--http-port", "0")
    assert code == 2, err
    assert "nothing to serve" in err and "inventory/gitprov.yaml" in err, err
    assert "--http-root DIR" in err and "Traceback" not in err, err
    argv = ["serve", "--http-root", str(tmp_path / "unpublished"), "--http-port", "0"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "not a directory" in err and "publish first" in err, err


def test_build_of_an_invalid_commit_says_nothing_was_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"README": "not an inventory\n"})
    out = tmp_path / "out"
    code, _, err = run(capsys, "--repo", str(repo.path), "build", "--out", str(out))
    assert code == 1, err
    assert f"nothing was written into {out}" in err and "published" not in err, err
    assert not out.exists()


def test_unknown_revision_says_what_to_do(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--repo", str(example_repo.path), "versions", "--rev", "nope")
    assert code == 2
    assert "unknown revision 'nope'" in err and "hint:" in err
    # A hook's argument of any length is shown in part, with its length.
    code, _, err = run(capsys, "--repo", str(example_repo.path), "versions", "--rev", "a" * 5000)
    assert code == 2 and f"unknown revision '{'a' * 200}'… (5,000 characters)" in err, err
    assert len(err) < 1000, err


# An argument of 100,000 characters with an ESC sequence in it: each command's error
# echoes at most its first 200, escaped, and says its length.
LONG = "a" * 150 + "\x1b[2J\u202e" + "b" * 100_000


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "--rev", LONG],
        ["publish", "--rev", LONG],
        ["plan", "--base", LONG],
        ["plan", "--max-chars", LONG],
        ["plan", "--format", LONG],
        ["log", LONG],
        ["blame", LONG],
        ["log", f"--rev={LONG}", "0021f2011b19"],
        ["history", "--mac", LONG],
        ["history", "--at", LONG],
        ["history", "--since", LONG],  # (no such option: argparse's own message)
        ["validate", LONG],
        ["validate", "--" + LONG],
    ],
    ids=lambda argv: " ".join(a if len(a) < 20 else "LONG" for a in argv),
)
def test_a_long_argument_is_echoed_cut_and_escaped(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A 1 MB --rev or MAC was echoed whole in `gitprov: error:` lines, and argparse's
    "unrecognized arguments" printed an ESC sequence as it is, to the terminal."""
    code, out, err = run(capsys, "--repo", str(example_repo.path), *argv)
    assert code == 2 and not out, err
    cut = re.escape("a" * 150 + "\\x1b[2J\\u202e") + "b{43,45}'… \\(100,15[57] characters\\)"
    assert re.search("'(--)?" + cut, err), err
    assert "\x1b" not in err and "\u202e" not in err and len(err) < 1500, err


def test_a_long_path_argument_is_named_whole_up_to_path_max(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path is shown whole as long as a file system takes one (its long name is what
    the error is about), and cut past that like any other argument."""
    path = str(tmp_path / ("n" * 300) / "plan.json")
    code, _, err = run(capsys, "plan", "--from-json", path)
    assert code == 2 and f"argument --from-json: {path}: cannot read it" in err, err
    code, _, err = run(capsys, "plan", "--from-json", LONG)
    assert (
        code == 2 and f"'{LONG[:150]}\\x1b[2J\\u202e{LONG[155:4096]}'… (100,155 characters)" in err
    )
    assert "\x1b" not in err and len(err) < 9000, err


@pytest.mark.parametrize(
    "argv",
    [["validate", "x\x1b[2J"], ["plan", "--from-json", "x\x1b[2J"], ["validate", "--x\x1b[2J"]],
)
def test_a_control_character_in_an_argument_is_echoed_escaped(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """argparse echoes an unrecognized argument, and a type's message a file name, as
    they are: the ESC reached the terminal."""
    code, _, err = run(capsys, *argv)
    assert code == 2 and "x\\x1b[2J" in err and "\x1b" not in err, err


@pytest.mark.parametrize(
    "where", ["--private-key-file", "GITPROV_PRIVATE_KEY_FILE", "GITPROV_PUBLISHER_CONFIG"]
)
def test_a_control_character_in_a_path_from_the_environment_is_echoed_escaped(
    example_repo: GitRepo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """A key file or publisher config named with an ESC in its name (from an option the
    parser does not check, or a variable): the error naming it printed the ESC as it is."""
    path = tmp_path / "k\x1b[2Jey"
    path.write_text("not a key\n")
    monkeypatch.delenv("GITPROV_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("GITPROV_PUBLISHER_CONFIG", raising=False)
    argv = ["--repo", str(example_repo.path)]
    if where == "GITPROV_PRIVATE_KEY_FILE":
        monkeypatch.setenv(where, str(path))
        argv += ["key", "0021f2011b19"]
    elif where == "--private-key-file":
        argv += [where, str(path), "key", "0021f2011b19"]
    else:
        monkeypatch.setenv(where, str(tmp_path / "c\x1b[2Jfg\u202e.yaml"))
        argv += ["publish"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "\\x1b[2J" in err, err
    assert "\x1b" not in err and "\u202e" not in err, err


def test_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--repo", str(tmp_path), "validate")
    assert code == 2
    assert "not a git repository" in err


def test_show_redacts_unless_revealed(
    example_repo: GitRepo, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(example_repo.path)
    code, shown, _ = run(capsys, "--repo", repo, "show", "00:21:F2:01:1B:19")
    assert code == 0
    assert "DBID_SIP_PASSWORD=<redacted>\t<redacted>\t\t\n" in shown
    assert "DBID_PROFILE_RULE=[--key <redacted>]http://127.0.0.1:8080/fv0021f2011b19.conf" in shown
    code, revealed, _ = run(capsys, "--repo", repo, "show", "0021f2011b19", "--reveal")
    assert code == 0
    sf = load_secrets_file(example_repo.files["inventory/secrets.yaml"].decode())
    assert unseal(private_key, "sip_2001", sf.sealed["sip_2001"]) in revealed


def test_reveal_without_private_key_fails_clearly(
    example_repo: GitRepo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITPROV_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("GITPROV_PRIVATE_KEY_FILE", raising=False)
    code, out, err = run(
        capsys, "--repo", str(example_repo.path), "show", "0021f2011b19", "--reveal"
    )
    assert code == 2  # a missing key is the environment's problem, not the inventory's
    assert "GITPROV_PRIVATE_KEY" in err
    assert out == ""


def test_secrets_keygen_set_list_rotate(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = str(example_repo.path)
    key_file = tmp_path / "new.key"
    code, out, _ = run(capsys, "--repo", repo, "secrets", "keygen", "--out", str(key_file))
    assert code == 0
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    new_public = next(
        ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("public key: ")
    )
    assert "gitprov-sk-" not in out  # the private key is only in the file
    assert run(capsys, "--repo", repo, "secrets", "keygen", "--out", str(key_file))[0] == 2
    # Never into a git work tree, as init refuses (a commit of it opens every secret).
    for inside in (example_repo.path / "inventory" / "new.key", example_repo.path / "a" / "k"):
        code, _, err = run(capsys, "--repo", repo, "secrets", "keygen", "--out", str(inside))
        assert code == 2 and "would be inside the git work tree" in err, err
        assert not inside.exists()

    monkeypatch.setattr(sys, "stdin", io.StringIO("Hunter2-secret\n"))
    code, out, _ = run(capsys, "--repo", repo, "secrets", "set", "sip_9999")
    assert code == 0 and "Hunter2" not in out
    path = example_repo.path / "inventory" / "secrets.yaml"
    sf = load_secrets_file(path.read_text())
    assert unseal(private_key, "sip_9999", sf.sealed["sip_9999"]) == "Hunter2-secret"

    code, out, _ = run(capsys, "--repo", repo, "secrets", "list")
    assert code == 0 and "sip_9999" in out and "Hunter2" not in out

    code, _, _ = run(capsys, "--repo", repo, "secrets", "rotate", "--new-public-key", new_public)
    assert code == 0
    rotated = load_secrets_file(path.read_text())
    assert rotated.public_key == new_public
    new_private = key_file.read_text().strip()
    assert unseal(new_private, "sip_9999", rotated.sealed["sip_9999"]) == "Hunter2-secret"


def test_secrets_set_refuses_a_bad_name_as_a_usage_error_before_asking_for_a_value(
    example_repo: GitRepo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.StringIO("Hunter2-secret\n")
    monkeypatch.setattr(sys, "stdin", stdin)
    code, _, err = run(capsys, "--repo", str(example_repo.path), "secrets", "set", "a b")
    assert code == 2 and "invalid secret name 'a b'" in err and "hint: use 1-64" in err
    assert stdin.tell() == 0  # (nothing read)


@pytest.mark.parametrize("name", ["-", "null", "sip_9999"])
def test_the_reference_secrets_set_prints_reads_back_as_that_secret(
    example_repo: GitRepo,
    private_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    # `secrets set -- -` said "refer to it as !secret -", a YAML syntax error (GP001).
    repo = str(example_repo.path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hunter2-secret\n"))
    code, out, _ = run(capsys, "--repo", repo, "secrets", "set", "--", name)
    assert code == 0, out
    reference = out.rsplit("refer to it as ", 1)[1].strip()
    device = example_repo.path / "inventory" / "devices" / "0021f2011b20.yaml"
    text = device.read_text()
    assert "password: !secret sip_2010" in text
    device.write_text(text.replace("password: !secret sip_2010", f"password: {reference}"))
    code, out, _ = run(capsys, "--repo", repo, "validate", "--worktree")
    assert code == 0, out
    code, out, _ = run(capsys, "--repo", repo, "show", "0021f2011b20", "--worktree", "--reveal")
    assert code == 0 and "Hunter2-secret" in out, out


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_decrypt_refuses_what_is_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """`decrypt FIFO` with nothing writing waited for ever; /dev/zero was read for 16 MiB
    before it was found to be no device's file."""
    path = tmp_path / "fv0021f2011b19.conf"
    with contextlib.ExitStack() as stack:
        if kind == "fifo":
            stack.enter_context(writerless_fifo(path))
            what = "a fifo or pipe nothing writes to"
        else:
            path.symlink_to("/dev/zero")
            what = "a character device"
        code, out, err = run(capsys, "decrypt", "--key", "k", str(path))
    assert code == 2 and not out and f"{path} is {what}, not a file" in err, err


def test_decrypt_command(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    f = tmp_path / "fv.conf"
    f.write_bytes(encrypt(b"DBID_DBASE_VERSION=7\n", "k3y"))
    code = main(["decrypt", str(f), "--key", "k3y"])
    assert code == 0
    assert capsysbinary.readouterr().out == b"DBID_DBASE_VERSION=7\n"
    code = main(["decrypt", str(f), "--key", "wrong"])
    assert code == 1


def _passes_the_padding_check(cipher: Cipher, data: bytes, key: str) -> bool:
    try:
        cipher.decrypt(data, key)
    except DecryptError:
        return False
    return True


@pytest.mark.parametrize(
    ("encryption", "settings"),
    [
        ("mode: openssl-md5", []),
        ("mode: openssl-sha256", ["--mode", "openssl-sha256"]),
        (
            "mode: openssl-pbkdf2\n  iterations: 1000",
            ["--mode", "openssl-pbkdf2", "--iterations", "1000"],
        ),
        ("mode: openssl-md5\n  gzip: true", ["--gzip"]),
    ],
    ids=["md5", "sha256", "pbkdf2", "md5-gzip"],
)
def test_decrypt_opens_every_file_a_publish_writes_and_no_wrong_key(
    example_repo: GitRepo,
    private_key: str,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    encryption: str,
    settings: list[str],
) -> None:
    """Every file a publish writes opens: a device's with its key, as `show --reveal`
    renders it; the option-66 bootstrap and the stage files as plaintext. And a wrong
    key that passes CBC's padding check (about 1 in 256) is refused, naming the file
    and how to get the right key: it printed its garbage with exit 0."""
    text = example_repo.files["inventory/gitprov.yaml"].decode()
    for old, new in (
        ('  url: "http://127.0.0.1:8080"\n', '  url: "tftp://10.203.0.1"\n'),
        ("\npublish:\n", "\npublish:\n  option66: [IP542N]\n  key_delivery: plaintext-bootstrap\n"),
        ("  mode: openssl-md5\n", f"  {encryption}\n"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    example_repo.commit({"inventory/gitprov.yaml": text}, "every shape of file")
    repo = str(example_repo.path)
    assert main(["--repo", repo, "publish", "--rev", "main", *root_args(tmp_path)]) == 0
    capsysbinary.readouterr()
    served = sorted((tmp_path / "http").iterdir())
    names = {f.name for f in served}
    assert {"IP542N.conf", "stage-fv0021f2011b19.conf", "fv0021f2a0c001.conf"} <= names, names
    for f in served:
        if not f.name.startswith("fv"):  # the bootstrap and the stage files: plaintext
            assert main(["decrypt", str(f), "--key", "unused", "--mode", "none"]) == 0
            assert capsysbinary.readouterr().out == f.read_bytes()
            continue
        mac = f.name[2:14]
        assert main(["--repo", repo, "key", mac]) == 0
        key = capsysbinary.readouterr().out.decode().strip()
        assert main(["--repo", repo, "show", mac, "--reveal"]) == 0
        shown = capsysbinary.readouterr().out
        assert main(["decrypt", str(f), "--key", key, *settings]) == 0, capsysbinary.readouterr()
        assert capsysbinary.readouterr().out == shown, f.name

    device = tmp_path / "http" / "fv0021f2011b19.conf"
    data = device.read_bytes()
    mode = settings[settings.index("--mode") + 1] if "--mode" in settings else "openssl-md5"
    padding_only = Cipher(Mode(mode), 1000)
    lucky = next(
        k
        for k in (f"wrong-{i}" for i in range(5000))
        if _passes_the_padding_check(padding_only, data, k)
    )
    assert main(["decrypt", str(device), "--key", lucky, *settings]) == 1
    out, err = capsysbinary.readouterr()
    assert out == b"", out
    said = err.decode()
    assert f"{device}: bad decrypt" in said and "`gitprov key 0021f2011b19`" in said, said
    assert lucky not in said


def test_versions_json(example_repo: GitRepo, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--repo", str(example_repo.path), "versions", "--format", "json", "0021f2011b19"
    )
    assert code == 0
    assert '"version": 1001' in out


def test_review_commands_need_no_private_key(
    example_repo: GitRepo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Validation, show, versions and plans run in CI without the publisher's key."""
    monkeypatch.delenv("GITPROV_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("GITPROV_PRIVATE_KEY_FILE", raising=False)
    repo = str(example_repo.path)
    for argv in (
        ["validate"],
        ["show", "0021f2011b19"],
        ["versions"],
        ["plan", "--base", "main", "--rev", "main"],
    ):
        code, _out, err = run(capsys, "--repo", repo, *argv)
        assert code == 0, (argv, err)
    code, _, err = run(capsys, "--repo", repo, "build", "--out", str(example_repo.path / "o"))
    assert code == 2
    assert "private key" in err


def _program(
    *args: str,
    stdout: int | IO[bytes] = subprocess.PIPE,
    env: dict[str, str] | None = None,
) -> CompletedProcess[bytes]:
    """`python -m gitprov` as a user runs it: the program's own way out (gitprov.cli.entry)."""
    return subprocess.run(
        [sys.executable, "-m", "gitprov", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def _git(top: Path, *args: str) -> None:
    who = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    who |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "-C", str(top), *args], check=True, env={**os.environ, **who})


@pytest.mark.parametrize("errors", ["strict", "backslashreplace", "surrogateescape"])
def test_an_output_stream_writes_a_names_bytes_and_escapes_what_it_cannot_encode(
    monkeypatch: pytest.MonkeyPatch, errors: str
) -> None:
    # surrogateescape (the C locales' stdout) wrote a name's bytes, but ended the
    # command on a lone surrogate outside them (`\ud800` in a plan's JSON).
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors=errors)
    monkeypatch.setattr(sys, "stdout", stream)
    cli_module._tolerant_output()
    stream.write("caf\udcc3(\ud800.yaml é\n")
    stream.flush()
    assert raw.getvalue() == b"caf\xc3(\\ud800.yaml \xc3\xa9\n"


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_output_a_strict_locale_cannot_encode_goes_out_as_bytes_or_escaped(
    tmp_path: Path, encoding: str
) -> None:
    # A locale such as en_US.UTF-8 makes Python write stdout strictly (only the C
    # locales tolerate): a device file whose name is not UTF-8 (git keeps bytes), and
    # a profile name outside a legacy encoding, each ended `validate` in a traceback.
    top = tmp_path / "repo"
    (top / "inventory" / "devices").mkdir(parents=True)
    for path, data in example_files().items():
        (top / path).parent.mkdir(parents=True, exist_ok=True)
        (top / path).write_bytes(data)
    odd = os.fsencode(top / "inventory" / "devices") + b"/caf\xe9-\xff.yaml"
    with open(odd, "wb") as f:
        f.write(b'mac: "00:21:f2:01:1b:99"\nmodel: IP542N\nprofile: office\n')
    other = top / "inventory" / "devices" / "0021f2011b20.yaml"
    other.write_text(other.read_text().replace("profile: office", "profile: bürö"))
    _git(top, "init", "-q", "-b", "main")
    _git(top, "add", "-A")
    _git(top, "commit", "-qm", "an odd name")
    strict = {"PYTHONIOENCODING": f"{encoding}:strict"}
    done = _program("--repo", str(top), "validate", "--rev", "HEAD", env=strict)
    assert done.returncode == 1, done.stderr
    assert b"Traceback" not in done.stderr
    # The name refused (GP108) and shown escaped; the profile's characters, and the
    # hints' own (an ellipsis), as the encoding has them, or escaped.
    assert b"inventory/devices/caf\\xe9-\\xff.yaml:1:1: error[GP108]" in done.stdout
    profile = "bürö".encode(encoding, "backslashreplace")
    assert b"unknown profile '" + profile + b"'" in done.stdout
    # On stderr (a command refusing an invalid commit), the same.
    refused = _program("--repo", str(top), "versions", env=strict)
    assert refused.returncode == 1 and b"Traceback" not in refused.stderr
    assert b"inventory/devices/caf\\xe9-\\xff.yaml:1:1" in refused.stderr
    assert b"unknown profile '" + profile + b"'" in refused.stderr


def test_the_program_leaves_with_its_whole_output_and_its_exit_code(tmp_path: Path) -> None:
    # Out of the process without the interpreter's teardown: every byte still written
    # (far more than a pipe holds), the exit code main() gave.
    repo = GitRepo(tmp_path / "repo", bare=True)
    repo.commit(fleet_files(800), "a fleet")
    done = _program("--repo", str(repo.path), "versions", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) > 65536
    macs = {row["mac"] for row in json.loads(done.stdout)}
    assert macs >= {generated_mac(i) for i in range(800)}
    assert _program("--repo", str(tmp_path / "nothing-here"), "validate").returncode == 2
    repo.commit({device_path(3): b"mac: [broken\n"}, "a broken device")
    broken = _program("--repo", str(repo.path), "validate")
    assert broken.returncode == 1 and b"devices/" in broken.stdout + broken.stderr


def test_a_reader_that_goes_away_ends_the_program_quietly(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo", bare=True)
    repo.commit(fleet_files(800), "a fleet")  # more output than a pipe holds
    with subprocess.Popen(
        ["head", "-c", "10"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    ) as reader:
        assert reader.stdin is not None
        done = _program(
            "--repo", str(repo.path), "versions", "--format", "json", stdout=reader.stdin
        )
        reader.stdin.close()
        assert reader.wait(30) == 0
    assert done.returncode == 0
    assert b"Exception ignored" not in done.stderr and b"Traceback" not in done.stderr


def _to_a_closed_pipe(*args: str) -> CompletedProcess[bytes]:
    """The program writing into a pipe whose reader is already gone: its first write
    meets EPIPE (`| head -n 0`)."""
    read, write = os.pipe()
    os.close(read)
    try:
        with open(write, "wb", closefd=False) as stdout:
            return _program(*args, stdout=stdout)
    finally:
        os.close(write)


def test_a_reader_gone_keeps_the_exit_code_the_command_found(tmp_path: Path) -> None:
    # A failing `validate` or `verify` whose reader went away (`| head`) exited 0: the
    # first write ended the command, and a CI step with pipefail passed on a broken
    # inventory. What it found is its exit code, whatever became of its output.
    repo = GitRepo(tmp_path / "repo", bare=True)
    repo.commit(fleet_files(50), "a fleet")
    good = str(repo.path)
    for fmt in ("text", "json", "github"):
        done = _to_a_closed_pipe("--repo", good, "validate", "--format", fmt)
        assert done.returncode == 0, (fmt, done.stderr)
    repo.commit({device_path(3): b"mac: [broken\n"}, "a broken device")
    for fmt in ("text", "json", "github"):
        done = _to_a_closed_pipe("--repo", good, "validate", "--format", fmt)
        assert done.returncode == 1, (fmt, done.stderr)
        assert b"Traceback" not in done.stderr and b"Exception ignored" not in done.stderr
    # A command refusing the broken commit keeps its 1 as well.
    assert _to_a_closed_pipe("--repo", good, "versions").returncode == 1
    # Bytes: decrypt writes the plaintext to stdout's buffer.
    encrypted = tmp_path / "fv0021f2011b19.conf"
    encrypted.write_bytes(Cipher(Mode.OPENSSL_MD5).encrypt(b"DBID_DBASE_VERSION=1\n", "k"))
    assert _to_a_closed_pipe("decrypt", str(encrypted), "--key", "k").returncode == 0


def test_secrets_refuse_what_is_not_utf8_text_at_its_place(
    example_repo: GitRepo,
    private_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = str(example_repo.path)
    path = example_repo.path / "inventory" / "secrets.yaml"
    before = path.read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ab\xff\xfe\n")))
    code, _, err = run(capsys, "--repo", repo, "secrets", "set", "sip_9999")
    assert code == 2 and "not UTF-8 text (byte 3)" in err and "Traceback" not in err, err
    assert path.read_bytes() == before
    path.write_bytes(before + b"# caf\xe9\n")
    lines = before.count(b"\n") + 1
    new_public = generate_keypair()[1]
    for argv in (["list"], ["rotate", "--new-public-key", new_public]):
        code, _, err = run(capsys, "--repo", repo, "secrets", *argv)
        assert code == 2 and f"secrets.yaml:{lines}: not UTF-8 text" in err, err


@pytest.mark.parametrize("given", ["gitprov-pk-xyz", "x", "gitprov-sk-" + "A" * 43])
def test_a_new_public_key_that_is_none_is_a_usage_error_never_shown(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    repo = str(example_repo.path)
    code, out, err = run(capsys, "--repo", repo, "secrets", "rotate", "--new-public-key", given)
    assert code == 2 and "argument --new-public-key: " in err, err
    assert ("a private key" in err) is given.startswith("gitprov-sk-")
    assert len(given) < 3 or given not in out + err  # (never echoed)


def test_secrets_set_reads_no_more_than_a_secret_from_stdin(
    example_repo: GitRepo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`secrets set NAME < /dev/zero` was read until memory ran out."""
    path = example_repo.path / "inventory" / "secrets.yaml"
    before = path.read_bytes()
    with open("/dev/zero", "rb") as endless:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(endless))
        code, _, err = run(capsys, "--repo", str(example_repo.path), "secrets", "set", "x")
    assert code == 2 and "longer than 1 MiB: not a secret" in err and "Traceback" not in err, err
    assert path.read_bytes() == before


def test_decrypt_reads_no_more_than_a_device_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.conf"
    with big.open("wb") as f:
        f.truncate(16 * 2**20 + 1)  # (sparse)
    code, _, err = run(capsys, "decrypt", str(big), "--key", "k")
    assert code == 2 and f"{big} holds more than 16 MiB" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("piped", "what"),
    [
        (b"Hunter2\tx\n", "a TAB"),
        (b"Hunter2\x1b[2Jx\n", "the control character U+001B"),
        ("Hunter2\u200bx\n".encode(), "the invisible character U+200B"),
        (b"Hunter2\nDBID_X=1\n", "a newline"),
    ],
)
def test_secrets_set_refuses_what_no_device_file_may_hold(
    example_repo: GitRepo,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    piped: bytes,
    what: str,
) -> None:
    # A publish refuses such a value once unsealed; refused when sealed, the person who
    # has the value is there to fix it. The value is never repeated.
    path = example_repo.path / "inventory" / "secrets.yaml"
    before = path.read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped)))
    code, out, err = run(capsys, "--repo", str(example_repo.path), "secrets", "set", "sip_9999")
    assert code == 2 and f"the value of sip_9999 holds {what}" in err, err
    assert "Hunter2" not in out + err
    assert path.read_bytes() == before


def test_secrets_set_takes_a_value_piped_with_crlf_without_its_line_end(
    example_repo: GitRepo,
    private_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Hunter2-secret\r\n")))
    code, _, err = run(capsys, "--repo", str(example_repo.path), "secrets", "set", "sip_9999")
    assert code == 0, err
    path = example_repo.path / "inventory" / "secrets.yaml"
    sealed = load_secrets_file(path.read_text()).sealed["sip_9999"]
    assert unseal(private_key, "sip_9999", sealed) == "Hunter2-secret"


def test_secrets_set_says_when_it_replaces_a_value(
    example_repo: GitRepo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Setting fleet_master_key again re-keys every device: say so, not just 'sealed'."""
    repo = str(example_repo.path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"new-one\n")))
    code, out, _ = run(capsys, "--repo", repo, "secrets", "set", "sip_9999")
    assert code == 0 and "sealed sip_9999 into" in out and "replaced" not in out, out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"newer-one\n")))
    code, out, _ = run(capsys, "--repo", repo, "secrets", "set", "sip_9999")
    assert code == 0 and "replaced sip_9999 in" in out and "new file and version" in out, out


@pytest.mark.parametrize(
    "argv",
    [
        ["--inventory-dir", "{X}", "validate"],
        ["publish", "--http-root", "/srv/{X}"],
        ["publish", "--state-dir", "/srv/{X}"],
        ["decrypt", "{F}", "--key", "{X}"],
    ],
)
def test_a_value_that_is_not_utf8_is_a_usage_error_naming_it(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command line's bytes that are not UTF-8 reached a JSON dump or an encode: a
    traceback (exit 3). They are refused as the option's value, shown as bytes."""
    bad = os.fsdecode(b"a\xffb")
    (tmp_path / "f.conf").write_bytes(b"Salted__12345678" + bytes(16))
    code = main([a.replace("{X}", bad).replace("{F}", str(tmp_path / "f.conf")) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "a\\xffb' is not UTF-8" in err and "Traceback" not in err, err


def test_an_empty_build_out_is_a_usage_error(
    example_repo: GitRepo,
    private_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--out ''` wrote plain/ and encrypted/ into the current directory: with --reveal,
    the real SIP passwords in a checkout that `git add -A` takes."""
    monkeypatch.chdir(example_repo.path)
    assert main(["build", "--out", "", "--reveal"]) == 2
    assert "argument --out: is empty" in capsys.readouterr().err
    assert not (example_repo.path / "plain").exists()


def test_tls_files_without_an_https_port_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They were ignored: the roots served in plain alone, without a word."""
    (tmp_path / "http").mkdir()
    argv = ["serve", "--http-root", str(tmp_path / "http"), "--http-port", "0"]
    assert main([*argv, "--tftp-port", "0", "--tls-cert", str(tmp_path / "c.pem")]) == 2
    assert "--tls-cert without --https-port" in capsys.readouterr().err


def test_a_build_into_a_directory_with_older_files_names_them(
    example_repo: GitRepo, private_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """encrypted/ is what a publish would serve: a file left from an earlier build sat
    beside the new ones without a word."""
    out = tmp_path / "out"
    (out / "encrypted").mkdir(parents=True)
    (out / "encrypted" / "fv0021f2ffffff.conf").write_text("stale\n")
    code, stdout, _ = run(capsys, "--repo", str(example_repo.path), "build", "--out", str(out))
    assert code == 0
    assert f"note: {out}/encrypted/fv0021f2ffffff.conf was not written by this build" in stdout
    argv = ["--repo", str(example_repo.path), "build", "--out", str(out), "--format", "json"]
    code, stdout, _ = run(capsys, *argv)
    assert json.loads(stdout)["stale"] == ["encrypted/fv0021f2ffffff.conf"]


def test_serve_reads_its_tls_files_before_any_listener_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad TLS files: it announced the HTTP and TFTP listeners, started them, then
    stopped with the error: a supervisor reading the announcement took it for up."""
    (tmp_path / "http").mkdir()
    bad = tmp_path / "garbage.pem"
    bad.write_text("garbage\n")
    argv = ["serve", "--http-root", str(tmp_path / "http"), "--http-port", "0"]
    argv += ["--tftp-port", "0", "--https-port", "0"]
    argv += ["--tls-cert", str(bad), "--tls-key", str(bad), "--client-ca", str(bad)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "cannot load TLS certificate" in err and out == "", out


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_secrets_read_no_secrets_file_that_is_not_a_file(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A work tree's secrets.yaml that was a fifo hung `secrets list`; one linked to
    /dev/zero was read until memory ran out."""
    path = example_repo.path / "inventory" / "secrets.yaml"
    path.unlink()
    with contextlib.ExitStack() as stack:
        if kind == "fifo":
            stack.enter_context(writerless_fifo(path))
            what = "a fifo or pipe nothing writes to"
        elif kind == "device":
            path.symlink_to("/dev/zero")
            what = "a character device"
        else:
            path.mkdir()
            what = "a directory"
        code, _, err = run(capsys, "--repo", str(example_repo.path), "secrets", "list")
    assert code == 2 and f"secrets.yaml is {what}, not a file" in err, err
    assert "hint: put the secrets file itself there" in err and "Traceback" not in err


def test_secrets_read_no_more_than_a_document(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    path = example_repo.path / "inventory" / "secrets.yaml"
    path.write_bytes(b"#" * (16 * 2**20 + 1))
    code, _, err = run(capsys, "--repo", str(example_repo.path), "secrets", "list")
    assert code == 2 and "secrets.yaml is larger than 16 MiB" in err, err


def test_a_private_key_that_cannot_be_written_leaves_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a full disk keygen left an empty key file (which the next try refused as
    existing) and said "cannot write its output", as if stdout were the problem."""
    real_fdopen = os.fdopen

    def onto_a_full_disk(fd: int, *args: object, **kwargs: object) -> IO[str]:
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return real_fdopen(fd, *args, **kwargs)  # type: ignore[no-any-return,call-overload]

    monkeypatch.setattr(os, "fdopen", onto_a_full_disk)
    key_file = tmp_path / "private-key"
    code, out, err = run(capsys, "secrets", "keygen", "--out", str(key_file))
    monkeypatch.undo()
    assert code == 2 and f"cannot write the private key into {key_file}" in err, err
    assert "No space left on device" in err and "hint: " in err
    assert "public key" not in out and not key_file.exists()


def test_secrets_set_and_rotate_keep_the_files_comments(
    example_repo: GitRepo,
    private_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = str(example_repo.path)
    path = example_repo.path / "inventory" / "secrets.yaml"
    text = path.read_text().replace("  sip_2002:", "  # the front desk: ask ops first\n  sip_2002:")
    path.write_text(text + "# end\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hunter2-secret\n"))
    assert run(capsys, "--repo", repo, "secrets", "set", "sip_2001x")[0] == 0
    new_public = generate_keypair()[1]
    assert run(capsys, "--repo", repo, "secrets", "rotate", "--new-public-key", new_public)[0] == 0
    names = [ln.split(":")[0].strip() for ln in path.read_text().splitlines()[3:]]
    assert names[1:5] == ["sip_2001", "sip_2001x", "# the front desk", "sip_2002"], names
    assert names[-1] == "# end"


def test_rotate_with_the_wrong_key_or_a_useless_new_one_is_a_usage_error(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each exited 1, "problems in the inventory", where build says the same key
    problems with 2; the file is left as it was."""
    repo = str(example_repo.path)
    path = example_repo.path / "inventory" / "secrets.yaml"
    before = path.read_bytes()
    wrong = tmp_path / "wrong.key"
    wrong.write_text(generate_keypair()[0] + "\n")
    new_public = generate_keypair()[1]
    argv = ["--repo", repo, "--private-key-file", str(wrong), "secrets", "rotate"]
    code, _, err = run(capsys, *argv, "--new-public-key", new_public)
    assert code == 2 and "does not belong to the secrets file's public_key" in err, err
    assert "--private-key-file" in err
    argv[3] = str(ROOT / "examples" / "demo-private-key.txt")
    code, _, err = run(capsys, *argv, "--new-public-key", "gitprov-pk-" + "A" * 43)
    assert code == 2 and "low-order" in err, err
    # The same key again re-sealed everything and re-versioned every device, for nothing.
    same = load_secrets_file(before.decode()).public_key
    code, _, err = run(capsys, *argv, "--new-public-key", same)
    assert code == 2 and "nothing to rotate" in err and "hint: make a new pair" in err, err
    assert path.read_bytes() == before


def test_secrets_set_shows_a_file_a_terminal_would_obey_escaped(
    tmp_path: Path,
    private_key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The secrets file's path (the repository's, as typed) was printed raw."""
    repo = GitRepo(tmp_path / "r\x1b[31mX")
    repo.commit(example_files(), "example inventory", worktree=True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hunter2-secret\n"))
    code, out, err = run(capsys, "--repo", str(repo.path), "secrets", "set", "sip_9999")
    assert code == 0, err
    assert "\x1b" not in out and "r\\x1b[31mX" in out, out


def test_build_and_keygen_show_a_path_a_terminal_would_obey_escaped(
    example_repo: GitRepo, tmp_path: Path, private_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`build --out` and `secrets keygen --out` printed the path as typed."""
    bad = tmp_path / "d\x1b[31mX"
    repo = str(example_repo.path)
    for argv in (
        ["build", "--out", str(bad / "out")],
        ["secrets", "keygen", "--out", str(bad / "k")],
    ):
        code, out, err = run(capsys, "--repo", repo, *argv)
        assert code == 0, err
        assert "\x1b" not in out + err and "d\\x1b[31mX" in out, out
