"""Sealed secrets: round trips, every way unsealing must fail, and a diff-stable file."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from gitprov.secrets import (
    SecretError,
    SecretsFile,
    dump_secrets_file,
    generate_keypair,
    load_private_key,
    load_secrets_file,
    public_key_of,
    rewrite_secrets_file,
    rotate,
    seal,
    sealed_digest,
    sealed_size,
    unseal,
    unseal_all,
)
from tests.fixtures.fifo import writerless_fifo

VALUE = "sip-Pa55word!"
SK, PK = generate_keypair()


def messages(exc: SecretError) -> list[str]:
    texts = [str(exc), repr(exc), exc.hint]
    for problem in exc.problems:
        texts += [problem.message, problem.hint]
    return texts


def assert_leaks_nothing(exc: SecretError, *secrets: str) -> None:
    for text in messages(exc):
        for secret in secrets:
            assert secret not in text


def test_keypair_format() -> None:
    assert re.fullmatch(r"gitprov-sk-[A-Za-z0-9_-]{43}", SK)
    assert re.fullmatch(r"gitprov-pk-[A-Za-z0-9_-]{43}", PK)
    assert public_key_of(SK) == PK
    assert generate_keypair() != (SK, PK)


@pytest.mark.parametrize("value", [VALUE, "", "1234", "ünïcødé ключ\n\ttab", "x" * 10_000])
def test_round_trip(value: str) -> None:
    sealed = seal(PK, "sip.line1", value)
    assert sealed.startswith("v1:")
    assert value not in sealed or value == ""
    assert unseal(SK, "sip.line1", sealed) == value


def test_sealing_is_randomised() -> None:
    a, b = seal(PK, "pin", "1234"), seal(PK, "pin", "1234")
    assert a != b
    assert unseal(SK, "pin", a) == unseal(SK, "pin", b) == "1234"


def test_wrong_private_key_fails() -> None:
    other_sk, _ = generate_keypair()
    with pytest.raises(SecretError, match="'pin'") as info:
        unseal(other_sk, "pin", seal(PK, "pin", VALUE))
    assert_leaks_nothing(info.value, VALUE, other_sk, SK)


def flip(sealed: str, index: int) -> str:
    chars = list(sealed)
    chars[index] = "A" if chars[index] != "A" else "B"
    return "".join(chars)


@pytest.mark.parametrize("index", [3, 20, 50, 70, 90])
def test_tampered_fails(index: int) -> None:
    sealed = seal(PK, "pin", VALUE)
    with pytest.raises(SecretError) as info:
        unseal(SK, "pin", flip(sealed, index))
    assert_leaks_nothing(info.value, VALUE, SK)


@pytest.mark.parametrize("cut", [1, 20, 60])
def test_truncated_fails(cut: int) -> None:
    sealed = seal(PK, "pin", VALUE)
    with pytest.raises(SecretError):
        unseal(SK, "pin", sealed[:-cut])


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 59, 60, 61, 1000, 4097])
def test_a_sealed_text_says_the_size_of_its_value(size: int) -> None:
    """What `validate` knows of a value without the private key: its size in bytes,
    padded or not, the same as what unsealing it gives."""
    value = "é" * (size // 2) + "x" * (size % 2)  # (bytes, not characters)
    sealed = seal(PK, "pin", value)
    padded = sealed + "=" * (-(len(sealed) - 3) % 4)
    assert len(unseal(SK, "pin", padded).encode()) == size
    assert sealed_size(sealed) == sealed_size(padded) == size


def test_moved_to_another_name_fails() -> None:
    sealed = seal(PK, "line1.password", VALUE)
    with pytest.raises(SecretError, match=r"line2\.password") as info:
        unseal(SK, "line2.password", sealed)
    assert_leaks_nothing(info.value, VALUE, SK)


@pytest.mark.parametrize("sealed", [VALUE, "v1:", "v1:!!!!", "v2:AAAA"])
def test_not_sealed_fails_without_echo(sealed: str) -> None:
    with pytest.raises(SecretError) as info:
        unseal(SK, "pin", sealed)
    assert_leaks_nothing(info.value, VALUE, SK)


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ключ", "a/b", 'a"b'])
def test_bad_names(name: str) -> None:
    with pytest.raises(SecretError):
        seal(PK, name, VALUE)


def test_a_long_bad_name_is_shown_cut_short() -> None:
    with pytest.raises(SecretError) as info:
        seal(PK, "x" * 5000 + " y", VALUE)
    assert len(info.value.message) < 200 and "(5,002 characters)" in info.value.message


def test_keys_in_the_wrong_place() -> None:
    with pytest.raises(SecretError, match="public key") as info:
        unseal(PK, "pin", seal(PK, "pin", VALUE))
    assert_leaks_nothing(info.value, PK)
    with pytest.raises(SecretError) as info:
        seal(SK, "pin", VALUE)
    assert_leaks_nothing(info.value, SK, VALUE)


def test_sealed_digest() -> None:
    a, b = seal(PK, "pin", "1234"), seal(PK, "pin", "1234")
    assert re.fullmatch(r"[0-9a-f]{12}", sealed_digest(a))
    assert sealed_digest(a) == sealed_digest(a)
    assert sealed_digest(a) != sealed_digest(b)
    # Not a hash of the value: a 4-digit PIN's hash could be brute-forced.
    assert sealed_digest(a) != hashlib.sha256(b"1234").hexdigest()[:12]


def sample() -> SecretsFile:
    return SecretsFile(
        PK,
        {
            "zeta": seal(PK, "zeta", "z"),
            "alpha": seal(PK, "alpha", "a"),
            "sip.line1-pw": seal(PK, "sip.line1-pw", VALUE),
        },
    )


def test_dump_is_sorted_and_one_line_per_secret() -> None:
    sf = sample()
    text = dump_secrets_file(sf)
    lines = text.splitlines()
    assert lines[1] == f"public_key: {PK}"
    assert lines[2] == "secrets:"
    assert [line.split(":")[0].strip() for line in lines[3:]] == ["alpha", "sip.line1-pw", "zeta"]
    for name, sealed in sf.sealed.items():
        assert [line for line in lines if sealed in line] == [f"  {name}: {sealed}"]
    assert VALUE not in text


def test_dump_load_round_trip_is_stable() -> None:
    sf = sample()
    text = dump_secrets_file(sf)
    again = load_secrets_file(text)
    assert again == sf
    assert dump_secrets_file(again) == text
    assert unseal_all(again, SK) == {"alpha": "a", "sip.line1-pw": VALUE, "zeta": "z"}


def test_adding_a_secret_is_a_one_line_diff() -> None:
    sf = sample()
    before = dump_secrets_file(sf).splitlines()
    added = SecretsFile(PK, {**sf.sealed, "beta": seal(PK, "beta", "b")})
    after = dump_secrets_file(added).splitlines()
    changed = [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert len(changed) == 1
    assert changed[0].startswith("+  beta: v1:")


@pytest.mark.parametrize("name", ["true", "No", "null", "0123", "1.5", "-x", ".inf", "1e3", "y"])
def test_names_yaml_would_misread_round_trip(name: str) -> None:
    sf = SecretsFile(PK, {name: seal(PK, name, "v")})
    again = load_secrets_file(dump_secrets_file(sf))
    assert list(again.sealed) == [name]
    assert unseal(SK, name, again.sealed[name]) == "v"


def test_empty_file_round_trips() -> None:
    sf = SecretsFile(PK, {})
    text = dump_secrets_file(sf)
    assert "secrets: {}" in text
    assert load_secrets_file(text) == sf
    assert load_secrets_file(f"public_key: {PK}\nsecrets:\n") == sf


def test_secrets_file_is_an_immutable_copy() -> None:
    sealed = {"a": seal(PK, "a", "1")}
    sf = SecretsFile(PK, sealed)
    sealed["b"] = seal(PK, "b", "2")
    assert list(sf.sealed) == ["a"]
    with pytest.raises(TypeError):
        sf.sealed["c"] = "v1:AAAA"  # type: ignore[index]


def test_plaintext_pasted_into_the_file_is_reported_not_echoed() -> None:
    text = f"public_key: {PK}\nsecrets:\n  ok: {seal(PK, 'ok', 'v')}\n  sip_pw: {VALUE}\n"
    with pytest.raises(SecretError) as info:
        load_secrets_file(text, source="inventory/secrets.yaml")
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.col) == ("inventory/secrets.yaml", 4, 11)
    assert problem.code == "secret-not-sealed"
    assert "sip_pw" in problem.message
    assert_leaks_nothing(info.value, VALUE)


def test_duplicate_name_is_reported_not_echoed() -> None:
    text = f"public_key: {PK}\nsecrets:\n  pw: {VALUE}\n  pw: other-{VALUE}\n"
    with pytest.raises(SecretError) as info:
        load_secrets_file(text)
    assert info.value.problems[0].line == 4
    assert_leaks_nothing(info.value, VALUE)


def test_every_problem_at_once() -> None:
    text = (
        f"public_key: {SK}\nextra: 1\nsecrets:\n  0123: v1:AAAA\n  'a b': v1:AAAA\n  ok: {VALUE}\n"
    )
    with pytest.raises(SecretError) as info:
        load_secrets_file(text)
    codes = sorted((p.line, p.code) for p in info.value.problems)
    assert codes == [
        (1, "secrets-public-key"),
        (2, "secrets-schema"),
        (4, "secret-name"),
        (5, "secret-name"),
        (6, "secret-not-sealed"),
    ]
    assert_leaks_nothing(info.value, VALUE, SK)


# Explicit ids: the keys are generated per process, and pytest-xdist's workers must
# collect the same test names.
@pytest.mark.parametrize(
    "text",
    ["", "- a\n", "secrets: {}\n", f"public_key: {PK}\nsecrets: [a]\n", "a: [\n"],
    ids=["empty", "a-list", "no-public-key", "secrets-a-list", "unclosed-flow"],
)
def test_malformed_files(text: str) -> None:
    with pytest.raises(SecretError) as info:
        load_secrets_file(text)
    assert info.value.problems


def test_rotate() -> None:
    sf = sample()
    new_sk, new_pk = generate_keypair()
    rotated = rotate(sf, SK, new_pk)
    assert rotated.public_key == new_pk
    assert unseal_all(rotated, new_sk) == unseal_all(sf, SK)
    for name, sealed in rotated.sealed.items():
        with pytest.raises(SecretError):
            unseal(SK, name, sealed)
    with pytest.raises(SecretError, match="does not belong") as info:
        rotate(sf, new_sk, new_pk)
    assert_leaks_nothing(info.value, VALUE, new_sk, SK)


def key_file(tmp_path: Path, text: str, name: str = "key") -> str:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def test_load_private_key_sources_in_order(tmp_path: Path) -> None:
    other_sk, _ = generate_keypair()
    third_sk, _ = generate_keypair()
    path = key_file(tmp_path, f"# publisher key\n\n{SK}\n")
    env_file = key_file(tmp_path, third_sk + "\n", "env-key")
    env = {"GITPROV_PRIVATE_KEY": other_sk, "GITPROV_PRIVATE_KEY_FILE": env_file}
    assert load_private_key(env, path) == SK
    assert load_private_key(env, None) == other_sk
    assert load_private_key({"GITPROV_PRIVATE_KEY_FILE": env_file}, None) == third_sk
    # CI expands an undefined secret to "": treat it as unset.
    assert load_private_key({"GITPROV_PRIVATE_KEY": "", "GITPROV_PRIVATE_KEY_FILE": env_file}, None)
    assert load_private_key({}, None) is None


def test_load_private_key_unreadable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(SecretError, match="nope"):
        load_private_key({}, missing)
    with pytest.raises(SecretError, match="GITPROV_PRIVATE_KEY_FILE"):
        load_private_key({"GITPROV_PRIVATE_KEY_FILE": missing}, None)


@pytest.mark.parametrize(
    "content",
    [
        "hunter2-not-a-key\n",
        f"{SK}\n{SK}\n",
        f"{PK}\n",
        SK[:-1] + "!\n",
    ],
    ids=["not-a-key", "two-keys", "the-public-key", "a-bad-character"],
)
def test_load_private_key_malformed_is_not_echoed(tmp_path: Path, content: str) -> None:
    path = key_file(tmp_path, content)
    with pytest.raises(SecretError) as info:
        load_private_key({}, path)
    assert_leaks_nothing(info.value, "hunter2", SK, SK[11:30])
    with pytest.raises(SecretError) as info:
        load_private_key({"GITPROV_PRIVATE_KEY": content.strip()}, None)
    assert "GITPROV_PRIVATE_KEY" in str(info.value)
    assert_leaks_nothing(info.value, "hunter2", SK[11:30])
    assert info.value.hint  # (every key error says what to do)


def test_a_key_file_that_never_ends_is_refused_by_its_size(tmp_path: Path) -> None:
    # /dev/zero as the key file was read until memory ran out (or the job's time did): a
    # device is no key file at all, and a file past the bound is read no further.
    with pytest.raises(SecretError, match=r"/dev/zero .* is a character device, not a file"):
        load_private_key({"GITPROV_PRIVATE_KEY_FILE": "/dev/zero"}, None)
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(65 * 1024)
    with pytest.raises(SecretError, match="larger than 64 KiB: not a key file"):
        load_private_key({}, str(big))
    # A key after 60 KiB of comments is still a key file.
    path = tmp_path / "key"
    path.write_text("# a comment line\n" * 3800 + SK + "\n")
    assert path.stat().st_size < 64 * 1024
    assert load_private_key({}, str(path)) == SK
    # A key through a pipe (`--private-key-file <(pass show gitprov)`) is read as a stream.
    read, write = os.pipe()
    os.write(write, (SK + "\n").encode())
    os.close(write)
    try:
        assert load_private_key({}, f"/dev/fd/{read}") == SK
    finally:
        os.close(read)


@pytest.mark.parametrize("given", ["--private-key-file", "$GITPROV_PRIVATE_KEY_FILE"])
def test_a_key_file_fifo_nothing_writes_to_is_refused(tmp_path: Path, given: str) -> None:
    # A fifo as the key file blocked in open() for ever.
    with writerless_fifo(tmp_path / "fifo") as fifo, pytest.raises(SecretError) as caught:
        if given == "--private-key-file":
            load_private_key({}, str(fifo))
        else:
            load_private_key({"GITPROV_PRIVATE_KEY_FILE": str(fifo)}, None)
    assert caught.value.message == (
        f"the private key file {fifo} (from {given}) is a fifo or pipe nothing writes to, "
        "not a file"
    )
    assert caught.value.hint
    with pytest.raises(SecretError, match="is a directory, not a file"):
        load_private_key({}, str(tmp_path))


def test_load_private_key_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"\xff\xfe\x00secret")
    with pytest.raises(SecretError, match="not text") as info:
        load_private_key({}, str(path))
    assert_leaks_nothing(info.value, "secret\n")


def test_a_private_key_given_as_the_public_one_is_named_so_and_never_shown() -> None:
    # `secrets rotate --new-public-key` and `seal` with the private key pasted: "malformed
    # public key" sent the reader looking at the characters.
    sf = SecretsFile(PK, {"sip": seal(PK, "sip", "hunter2")})
    for call in (lambda: seal(SK, "sip", "x"), lambda: rotate(sf, SK, SK)):
        with pytest.raises(SecretError, match="that is a private key") as info:
            call()
        assert_leaks_nothing(info.value, SK, SK[11:30], "hunter2")


def test_a_public_key_of_a_low_order_point_is_refused_not_a_crash() -> None:
    """`gitprov-pk-AAAA…` (all zeros) parsed, and sealing to it ended in an internal
    error (`Error computing shared key`) in `secrets set` and `secrets rotate`."""
    with pytest.raises(SecretError, match="no usable key"):
        seal("gitprov-pk-" + "A" * 43, "pin", VALUE)


def _commented(sf: SecretsFile) -> str:
    """`sf` written by gitprov, then commented by hand."""
    text = dump_secrets_file(sf)
    text = text.replace("secrets:\n", "# who owns what: ask ops\nsecrets:\n")
    text = text.replace("  b:", "  # the front desk's phone\n\n  b:")
    return text + "# end\n"


def test_setting_and_rotating_keep_the_comments_where_they_are() -> None:
    """`secrets set` and `rotate` wrote the file anew and dropped every comment."""
    old = SecretsFile(PK, {n: seal(PK, n, VALUE) for n in ("a", "b", "d")})
    text = _commented(old)
    sealed = dict(old.sealed, c=seal(PK, "c", VALUE), e=seal(PK, "e", VALUE))
    sealed["b"] = seal(PK, "b", "changed")
    new = SecretsFile(PK, sealed)
    got = rewrite_secrets_file(text, old, new)
    assert load_secrets_file(got) == new
    assert [ln.split(":")[0] for ln in got.splitlines()] == [
        "# gitprov sealed secrets",
        "public_key",
        "# who owns what",
        "secrets",
        "  a",
        "  # the front desk's phone",
        "",
        "  b",
        "  c",
        "  d",
        "  e",
        "# end",
    ]
    new_sk, new_pk = generate_keypair()
    rotated = rotate(new, SK, new_pk)
    again = rewrite_secrets_file(got, new, rotated)
    assert load_secrets_file(again) == rotated
    assert [ln for ln in again.splitlines() if "#" in ln or not ln] == [
        ln for ln in got.splitlines() if "#" in ln or not ln
    ]
    assert unseal(new_sk, "b", load_secrets_file(again).sealed["b"]) == "changed"


def test_a_first_secret_goes_under_secrets() -> None:
    old = SecretsFile(PK, {})
    text = "# mine\n" + dump_secrets_file(old) + "# end\n"
    new = SecretsFile(PK, {"a": seal(PK, "a", VALUE)})
    got = rewrite_secrets_file(text, old, new)
    assert load_secrets_file(got) == new
    assert got.startswith("# mine\n") and got.endswith(f"  a: {new.sealed['a']}\n# end\n")


def test_a_file_in_another_layout_is_written_in_the_standard_one() -> None:
    old = SecretsFile(PK, {"a": seal(PK, "a", VALUE)})
    text = f"secrets: {{a: {old.sealed['a']}}}\npublic_key: {PK}\n"
    new = SecretsFile(PK, dict(old.sealed, b=seal(PK, "b", VALUE)))
    assert rewrite_secrets_file(text, old, new) == dump_secrets_file(new)


@pytest.mark.parametrize("written", ["\ufeff{}\r\n", "# mine\r\n\r\n{}\r\n", "  {}  "])
def test_a_key_file_saved_by_a_windows_editor_reads(tmp_path: Path, written: str) -> None:
    """A key file with a byte order mark (Notepad's UTF-8) was a "malformed private key"."""
    path = tmp_path / "key"
    path.write_bytes(written.format(SK).encode())
    assert load_private_key({}, str(path)) == SK


def test_a_long_comment_at_the_top_is_read_at_once() -> None:
    """ruamel read a comment before the first node in quadratic time: a 400 KB one took
    seconds, a file's worth of 16 MiB would have hung `secrets list` for hours."""
    sf = SecretsFile(PK, {"a": seal(PK, "a", VALUE)})
    text = "#" + "x" * 800_000 + "\n  # and more\n" + dump_secrets_file(sf)
    started = time.monotonic()
    assert load_secrets_file(text) == sf
    assert time.monotonic() - started < 5
    # (lines and columns are where they were)
    with pytest.raises(SecretError, match=r"^secrets.yaml:6:3: invalid secret name"):
        load_secrets_file(text.replace("  a:", "  a b:"))


def test_a_long_name_in_the_file_is_shown_cut_short() -> None:
    """A 100 KB name (an explicit `? key`) was echoed whole in the error."""
    long = "n" * 100_000
    text = f"public_key: {PK}\n? {long}\n: 1\nsecrets:\n  ? {long}\n  : v1:abc\n"
    with pytest.raises(SecretError) as info:
        load_secrets_file(text)
    texts = [p.message for p in info.value.problems]
    assert [t.split(" '")[0] for t in texts] == ["unknown key", "invalid secret name"]
    assert all(len(t) < 200 and "(100,000 characters)" in t for t in texts), texts
