"""Validation end to end: every mistake at once, located, in every output format; quoting
hints; nothing with a line break reaches a rendered file."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from gitprov.catalog import load_catalog
from gitprov.cli import main
from gitprov.cli.common import render_github, render_text
from gitprov.compile import compile_device, placeholder_resolver
from gitprov.errors import Level, Problem, error, warning
from gitprov.formats import flyingvoice
from gitprov.pipeline import Pipeline
from gitprov.validate import SchemaCache
from gitprov.yamldoc import SecretRef
from gitprov.yamldoc import parse as yaml_parse
from tests.fixtures.gitrepo import GitRepo
from tests.rules.lint import (
    DEVICE,
    FLEET,
    G502N,
    IP542N,
    SEALED,
    SECRETS,
    MemorySource,
    inventory,
)
from tests.rules.lint import problems as lint_problems
from tests.schemas_test import KEYS, VALUES, mutate, paths

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_SCHEMA = ROOT / "schemas" / "output" / "validate-output.schema.json"

# -- acceptance 2: many independent mistakes, one run ----------------------------------
MISTAKES = {
    "inventory/gitprov.yaml": """\
version_floor: 1000
file_name: "fv$(MA).conf"
provisioning:
  url: "http://prov.example.com:99999"
encryption:
  mode: openssl-md5
  master_key: !secret fleet_master_key
  gzip: "no"
""",
    "inventory/secrets.yaml": SECRETS,
    "inventory/models/IP542N.yaml": IP542N + "firmware:\n  version: 1.0\n",
    "inventory/models/G502N.yaml": G502N,
    "inventory/profiles/base.yaml": """\
params:
  sip.server: sip.example.net
  sip.server_port: 05060
  sip.outbnd: sbc.example.net
  provision.resync_periodic: 86400
""",
    "inventory/profiles/office.yaml": "extends: bsae\n",
    "inventory/devices/0021f2011b19.yaml": """\
mac: "00:21:f2:01:1b:19"
model: IP542N
profile: base
lines:
  - enabled: yes
    account: 0123
    display_name: "Alice\\nDBID_SIP_PASSWORD=x"
    password: !secret sip_2001
""",
    "inventory/devices/0021f2011b20.yaml": "mac: 10:21:52:01:13:20\nmodel: IP524N\n",
    "inventory/devices/0021f2011b21.yaml": 'mac: "0021F2011B19"\nmodel: IP542N\nserial: yes\n',
}
# Written by hand from MISTAKES above: (file, line, col, code).
EXPECTED = {
    ("inventory/gitprov.yaml", 4, 8, "GP110"),  # port 99999
    ("inventory/gitprov.yaml", 8, 9, "GP010"),  # gzip: "no" is not a boolean
    ("inventory/models/IP542N.yaml", 6, 12, "GP013"),  # version: 1.0 is a number
    ("inventory/profiles/base.yaml", 3, 20, "GP121"),  # 05060 is octal 2608
    ("inventory/profiles/base.yaml", 4, 3, "GP011"),  # sip.outbnd
    ("inventory/profiles/base.yaml", 5, 3, "GP116"),  # no published DBID key
    ("inventory/profiles/office.yaml", 1, 10, "GP103"),  # extends: bsae
    ("inventory/devices/0021f2011b19.yaml", 6, 14, "GP013"),  # account: 0123
    ("inventory/devices/0021f2011b19.yaml", 7, 19, "GP108"),  # injected line
    ("inventory/devices/0021f2011b20.yaml", 1, 6, "GP013"),  # unquoted MAC, base 60
    ("inventory/devices/0021f2011b20.yaml", 2, 8, "GP102"),  # model: IP524N
    ("inventory/devices/0021f2011b21.yaml", 1, 6, "GP101"),  # the MAC of ...b19
    ("inventory/devices/0021f2011b21.yaml", 1, 6, "GP106"),  # ... and so its file
    ("inventory/devices/0021f2011b21.yaml", 1, 6, "GP112"),  # file named for another MAC
    ("inventory/devices/0021f2011b21.yaml", 3, 9, "GP013"),  # serial: yes
}
TEXT_LINE = re.compile(r"^(\S+):(\d+):(\d+): (error|warning)\[(GP\d{3})\]: \S")
# https://docs.github.com/actions/reference/workflow-commands-for-github-actions
GITHUB_LINE = re.compile(
    r"^::(error|warning) file=([^,:%]+),line=(\d+),col=(\d+),title=(GP\d{3})::([^\r\n]+)$"
)


@pytest.fixture
def broken_repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(MISTAKES, "many mistakes")
    return repo


def run(capsys: pytest.CaptureFixture[str], repo: GitRepo, *args: str) -> tuple[int, str]:
    code = main(["--repo", str(repo.path), "validate", "--rev", "main", *args])
    return code, capsys.readouterr().out


def test_every_mistake_is_reported_at_once_with_its_position(
    broken_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, broken_repo)
    assert code == 1
    found = set()
    for line in out.splitlines():
        m = TEXT_LINE.match(line)
        if m:
            found.add((m[1], int(m[2]), int(m[3]), m[5]))
    assert found == EXPECTED, out
    assert len({f for f, *_ in EXPECTED}) >= 4
    assert out.rstrip().endswith("14 error(s), 1 warning(s)")


def test_quiet_prints_the_problems_but_not_their_count(
    broken_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    # -q is "only data and errors: no notes, summaries or progress"; the count was printed.
    _, loud = run(capsys, broken_repo)
    code, out = run(capsys, broken_repo, "-q")
    assert code == 1
    assert out == loud.removesuffix("14 error(s), 1 warning(s)\n"), out
    assert "error(s)" not in out and out.count("error[GP") == 14, out
    # The json and github formats are data: -q leaves them whole.
    for fmt in ("json", "github"):
        assert run(capsys, broken_repo, "--format", fmt, "-q") == run(
            capsys, broken_repo, "--format", fmt
        )


def test_github_format_is_one_annotation_per_problem(
    broken_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, broken_repo, "--format", "github")
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == len(EXPECTED)
    found = set()
    for line in lines:
        m = GITHUB_LINE.match(line)
        assert m, line
        found.add((m[2], int(m[3]), int(m[4]), m[5]))
        assert m[1] == ("warning" if m[5] == "GP112" else "error")
    assert found == EXPECTED


def test_github_escapes_what_would_break_an_annotation() -> None:
    out = io.StringIO()
    render_github([error("a,b:c.yaml", 1, 2, "GP108", "50%\nx\r", "h")], out)
    assert out.getvalue() == (
        "::error file=a%2Cb%3Ac.yaml,line=1,col=2,title=GP108::50%25%0Ax%0D (hint: h)\n"
    )
    out = io.StringIO()
    render_github([error("inventory/gitprov.yaml", 0, 0, "GP100", "missing")], out)
    assert out.getvalue() == "::error file=inventory/gitprov.yaml,title=GP100::missing\n"


def test_json_format_follows_its_documented_schema(
    broken_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, broken_repo, "--format", "json")
    assert code == 1
    doc = json.loads(out)
    Draft202012Validator(json.loads(OUTPUT_SCHEMA.read_text())).validate(doc)
    assert doc["version"] == 1 and doc["ok"] is False
    assert doc["summary"] == {"errors": 14, "warnings": 1}
    found = {(p["file"], p["line"], p["col"], p["code"]) for p in doc["problems"]}
    assert found == EXPECTED
    keys = [(p["file"], p["line"], p["col"], p["code"]) for p in doc["problems"]]
    assert keys == sorted(keys)


def test_json_of_a_clean_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit({f"inventory/{k}": v for k, v in inventory().items()})
    code, out = run(capsys, repo, "--format", "json")
    assert code == 0
    assert json.loads(out) == {
        "version": 1,
        "ok": True,
        "summary": {"errors": 0, "warnings": 0},
        "problems": [],
    }


def test_output_schema_is_a_valid_schema_and_rejects_a_wrong_level() -> None:
    schema = json.loads(OUTPUT_SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    bad = {
        "version": 1,
        "ok": True,
        "summary": {"errors": 0, "warnings": 1},
        "problems": [
            {
                "file": "f",
                "line": 1,
                "col": 1,
                "code": "GP101",
                "level": "fatal",
                "message": "m",
                "hint": "",
            }
        ],
    }
    assert list(Draft202012Validator(schema).iter_errors(bad))


def test_warnings_alone_exit_0_and_strict_makes_unknown_keys_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    files = inventory({"profiles/base.yaml": "params:\n  DBID_VENDOR_THING: 1\n"})
    repo.commit({f"inventory/{k}": v for k, v in files.items()})
    code, out = run(capsys, repo)
    assert code == 0
    assert "inventory/profiles/base.yaml:2:3: warning[GP114]" in out
    code, out = run(capsys, repo, "--strict")
    assert code == 1
    assert "inventory/profiles/base.yaml:2:3: error[GP114]" in out


def test_text_is_coloured_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    found = [error("a.yaml", 1, 2, "GP101", "m", "h"), warning("a.yaml", 3, 4, "GP112", "w")]
    tty, plain = Tty(), io.StringIO()
    render_text(found, tty)
    render_text(found, plain)
    assert "\033[1;31merror\033[0m" in tty.getvalue()
    assert "\033[1;33mwarning\033[0m" in tty.getvalue()
    assert "\033" not in plain.getvalue()
    assert plain.getvalue() == (
        "a.yaml:1:2: error[GP101]: m\n    hint: h\na.yaml:3:4: warning[GP112]: w\n"
        "1 error(s), 1 warning(s)\n"
    )
    monkeypatch.setenv("NO_COLOR", "1")
    tty = Tty()
    render_text(found, tty)
    assert "\033" not in tty.getvalue()


@pytest.mark.parametrize("fmt", ["text", "github"])
def test_a_file_name_never_starts_a_workflow_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """With the inventory at the repository's top, a problem's line starts with the file
    name: `::stop-commands::x` there would make a CI runner ignore every annotation after
    it, `::error title=ok::` would forge one."""
    repo = GitRepo(tmp_path / "repo")
    names = ["::stop-commands::x", " ::error title=ok::all good.txt", "::notice::n.yml"]
    repo.commit({**inventory(), **dict.fromkeys(names, "x: 1\n")})
    code = main(["--repo", str(repo.path), "--inventory-dir", "", "validate", "--format", fmt])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert out.count("GP005") == 3, out
    for line in (out + err).splitlines():
        if fmt == "text" or "GP005" not in line:
            assert not line.lstrip().startswith("::"), line
        else:
            assert line.startswith("::warning file=")  # its own command, the name escaped


# -- acceptance 4: values YAML would turn into something else ------------------------
D1 = "devices/0021f2011b19.yaml"


def test_a_value_of_the_wrong_form_is_shown_as_written_and_cut() -> None:
    """A secret as `!secret NAME`, not Python's repr of it; a long value cut, with its
    length: a 10 MB host name made a 10 MB message."""
    long_host = "a." * 3_000_000 + "-"
    overlay = {
        D1: DEVICE + f"params:\n  sip.server: !secret sip_2001\n  sip.outbound: {long_host}\n"
    }
    found = {
        p.message.split(":")[0]: p.message
        for p in lint_problems(overlay)
        if p.file == f"inventory/{D1}" and p.code == "GP010"
    }
    assert found["params.sip.server"] == "params.sip.server: !secret sip_2001 has the wrong form"
    outbound = found["params.sip.outbound"]
    assert len(outbound) < 200
    assert outbound.endswith(f"… ({len(long_host):,} characters) has the wrong form")


def device(extra_top: str = "", line_1: str = "") -> dict[str, str | None]:
    text = DEVICE.replace('mac: "00:21:f2:01:1b:19"\n', extra_top or 'mac: "00:21:f2:01:1b:19"\n')
    return {D1: text + line_1}


@pytest.mark.parametrize(
    ("overlay", "line", "col", "code", "message", "hint"),
    [
        # MACs: base 60 (YAML 1.1), a 12-digit number, a string only by luck
        (device("mac: 10:21:52:01:13:19\n"), 1, 6, "GP013", "read as the number 8059396399",
         'quote it: mac: "10:21:52:01:13:19"'),
        (device("mac: 102152011319\n"), 1, 6, "GP013", "read as the number 102152011319",
         'quote it: mac: "102152011319"'),
        (device("mac: 00:21:52:01:13:19\n"), 1, 6, "GP013", "base-60 number",
         'quote it: mac: "00:21:52:01:13:19"'),
        # Not base 60 in YAML 1.1 either (78 and 90 are no base-60 digits): the hint must
        # not claim it is; it says how close it is to being one.
        (device("mac: 12:34:56:78:90:12\n"), 1, 6, "GP013", "stays a string only by luck",
         'quote it: mac: "12:34:56:78:90:12"'),
        (device("mac: 002152011319\n"), 1, 6, "GP013", "only by luck",
         'quote it: mac: "002152011319"'),
        # PINs, accounts and numbers with a leading zero
        (device(line_1="    phone_number: 0123\n"), 8, 19, "GP013", "read as the number 83",
         'quote it: phone_number: "0123"'),
        (device(line_1="    phone_number: 0129\n"), 8, 19, "GP013", "only by luck",
         'quote it: phone_number: "0129"'),
        (device(line_1="    DBID_VOICEMAIL_PIN: 0123\n"), 8, 25, "GP121",
         "unquoted 0123 is read as the number 83", '("0123")'),
        # yes / no / on / off and dates where a string is expected
        (device(line_1="    display_name: yes\n"), 8, 19, "GP013", "read as the boolean true",
         'quote it: display_name: "yes"'),
        (device(line_1="    display_name: No\n"), 8, 19, "GP013", "read as the boolean false",
         'quote it: display_name: "No"'),
        (device("mac: \"00:21:f2:01:1b:19\"\ndescription: off\n"), 2, 14, "GP013",
         "the boolean false", 'quote it: description: "off"'),
        (device("mac: \"00:21:f2:01:1b:19\"\nserial: on\n"), 2, 9, "GP013",
         "the boolean true", 'quote it: serial: "on"'),
        (device("mac: \"00:21:f2:01:1b:19\"\nserial: 2024-01-31\n"), 2, 9, "GP013",
         "the date 2024-01-31", 'quote it: serial: "2024-01-31"'),
        (device("mac: \"00:21:f2:01:1b:19\"\nserial: y\n"), 2, 9, "GP013",
         "a boolean (YAML 1.1 readers such as PyYAML", 'quote it: serial: "y"'),
    ],
)  # fmt: skip
def test_quoting_hints(
    overlay: dict[str, str | None], line: int, col: int, code: str, message: str, hint: str
) -> None:
    found = [p for p in lint_problems(overlay) if p.file == f"inventory/{D1}" and p.is_error]
    assert [(p.line, p.col, p.code) for p in found] == [(line, col, code)], found
    assert message in found[0].message
    assert hint in found[0].hint


def test_quoted_values_are_fine() -> None:
    quoted = device(
        'mac: "10:21:52:01:13:19"\nserial: "2024-01-31"\ndescription: "off"\n',
        '    phone_number: "0123"\n    display_name: "yes"\n',
    )
    assert [p for p in lint_problems(quoted) if p.file == f"inventory/{D1}"] == [
        warning(
            f"inventory/{D1}",
            1,
            6,
            "GP112",
            f"inventory/{D1} holds MAC 102152011319, but its name says otherwise",
            "rename it to 102152011319.yaml (in the same directory)",
        )
    ]


def test_a_secret_is_never_quoted_back() -> None:
    pin = device(line_1="").copy()
    pin[D1] = DEVICE.replace("!secret sip_2001", "0123")
    found = [p for p in lint_problems(pin) if p.file == f"inventory/{D1}"]
    assert {(p.line, p.col, p.code) for p in found} == {(7, 15, "GP010"), (7, 15, "GP124")}
    for p in found:
        assert "0123" not in p.message + p.hint and "83" not in p.message + p.hint


PRIVATE_KEY = "gitprov-sk-ILA6IiwSudyDWcfYNiv4mP2ziE-IYWc7pB3aHUVKH1g"  # a throwaway key


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [("public_key", PRIVATE_KEY, 1), ("sip_2001", "hunter2-pasted", 4), ("sip_2001", "01234", 4)],
)
def test_a_value_of_secrets_yaml_is_never_quoted_back(key: str, value: str, line: int) -> None:
    """What does not belong in secrets.yaml may be a private key pasted as public_key or
    a password pasted where its sealed text goes: located, never repeated."""
    text = re.sub(rf"^(\s*{key}): .*$", rf"\1: {value}", SECRETS, count=1, flags=re.M)
    found = lint_problems({"secrets.yaml": text})
    at = [p for p in found if p.file == "inventory/secrets.yaml"]
    # Both values start at column 13: `public_key: ` and `  sip_2001: `.
    assert [(p.line, p.col, p.code) for p in at] == [(line, 13, "GP010")]
    shown = "".join(p.message + p.hint for p in found)
    assert value not in shown and value.removeprefix("gitprov-sk-") not in shown


@pytest.mark.parametrize(
    ("snippet", "col", "hint"),
    [
        ("  sip.sever: x.example\n", 3, "did you mean 'sip.server'?"),
        ('  line.account: "2001"\n', 3, "account is a per-line parameter: write it under"),
        ('  account: "2001"\n', 3, "account is a per-line parameter: write it under"),
        ("  dbid_web_port: 80\n", 3, "raw keys are written in capitals"),
        ("  frobnicate: 1\n", 3, "not a parameter name: see `gitprov params`"),
    ],
)
def test_unknown_param_names_get_a_useful_hint(snippet: str, col: int, hint: str) -> None:
    found = lint_problems({"profiles/base.yaml": "params:\n" + snippet})
    assert [(p.line, p.col, p.code) for p in found] == [(2, col, "GP011")]
    assert hint in found[0].hint


def test_a_list_where_a_raw_key_takes_one_value_gets_a_hint_that_fits() -> None:
    # A raw DBID_* key takes any scalar: the hint was "write true or false".
    found = lint_problems({"profiles/base.yaml": "params:\n  DBID_VENDOR_J: [1, 2]\n"})
    errors = [p for p in found if p.is_error]
    assert [(p.line, p.col, p.code) for p in errors] == [(2, 18, "GP010")], found
    assert "got a list" in errors[0].message
    assert errors[0].hint.startswith("write one value (") and "not a list" in errors[0].hint


def test_close_names_are_sought_for_a_hundred_unknown_keys_of_a_file_then_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each search compares with every catalog name (~0.3 ms): a file of 200,000
    misspelt keys took a minute. Past CLOSE_NAMES_SOUGHT per file, every key is still
    reported, with the hint that needs no search."""
    import difflib

    from gitprov.rules import CLOSE_NAMES_SOUGHT

    searches: list[str] = []
    real = difflib.get_close_matches

    def counted(word: str, *args: Any, **kwargs: Any) -> list[str]:
        searches.append(word)
        return real(word, *args, **kwargs)

    monkeypatch.setattr(difflib, "get_close_matches", counted)
    count = CLOSE_NAMES_SOUGHT + 50
    # In params (GP011) and as raw keys the catalog lacks (GP114); sip.sever is close.
    params = "".join(f"  sip.sever{i:03d}: x\n  DBID_SIP_SEVRER_{i:03d}: x\n" for i in range(count))
    found = lint_problems({"profiles/base.yaml": "params:\n" + params})
    unknown = sorted((p for p in found if p.code == "GP011"), key=lambda p: p.line)
    raw = sorted((p for p in found if p.code == "GP114"), key=lambda p: p.line)
    assert len(unknown) == len(raw) == count
    assert all("did you mean 'sip.server'?" in p.hint for p in unknown[:CLOSE_NAMES_SOUGHT])
    assert all("not a parameter name: see `gitprov params`" in p.hint for p in unknown[-50:])
    assert all("did you mean" not in p.hint for p in unknown[-50:] + raw[-50:])
    assert len(searches) <= 3 * CLOSE_NAMES_SOUGHT, len(searches)


def test_a_secret_where_no_secret_is_read_is_an_error_at_its_place() -> None:
    """`!secret NAME` anywhere but a parameter, a line setting or a key would be read as
    the text NAME (a serial, a description, a file name): GP010 at the value. Where a
    secret is read, it stays fine."""
    found = lint_problems(
        {
            D1: DEVICE + "serial: !secret sip_2002\ndescription: !secret sip_2002\n",
            "gitprov.yaml": FLEET.replace('"fv$(MA).conf"', "!secret sip_2002"),
            "profiles/base.yaml": "description: !secret sip_2002\nparams:\n"
            "  sip.server: sip.example.net\n  DBID_WEB_PASSWORD_X: !secret sip_2002\n",
        }
    )
    misplaced = sorted((p.file, p.line, p.col) for p in found if "cannot go here" in p.message)
    assert misplaced == [
        ("inventory/devices/0021f2011b19.yaml", 8, 9),
        ("inventory/devices/0021f2011b19.yaml", 9, 14),
        ("inventory/gitprov.yaml", 2, 12),
        ("inventory/profiles/base.yaml", 1, 14),
    ], found
    # (and not the line's password, the raw key in params or the fleet's master key)
    assert all(p.code == "GP010" for p in found if "cannot go here" in p.message)


def test_a_global_name_in_a_line_item_says_where_it_goes() -> None:
    found = lint_problems({D1: DEVICE + "    sip.server: x.example\n"})
    assert [(p.line, p.col, p.code) for p in found] == [(8, 5, "GP011")]
    assert "sip.server is not per-line: write it under `params:`" in found[0].hint


def test_schema_results_are_cached_by_blob(monkeypatch: pytest.MonkeyPatch) -> None:
    import gitprov.validate as v

    calls: list[str] = []
    real = v._document_problems

    def counting(kind: str, doc: Any, catalog: Any) -> list[Problem]:
        calls.append(doc.path)
        return real(kind, doc, catalog)

    monkeypatch.setattr(v, "_document_problems", counting)
    pipeline = Pipeline(None)
    pipeline.schema_cache = SchemaCache()
    first = pipeline.load(MemorySource(inventory({D1: DEVICE.replace("IP542N", "7")})))
    assert [(p.line, p.col, p.code) for p in first.problems] == [(2, 8, "GP013")]
    assert len(calls) == len(inventory())
    second = pipeline.load(MemorySource(inventory({D1: DEVICE})))
    assert second.problems == ()
    assert calls[len(inventory()) :] == [f"inventory/{D1}"]


# -- strict scalar types: what the catalog says, rendered canonically -----------------
@pytest.mark.parametrize(
    ("overlay", "line", "col", "message"),
    [
        ({"profiles/base.yaml": "params:\n  sip.server_port: 5060.0\n"}, 2, 20,
         "expected integer, got the number 5060.0"),
        ({"profiles/base.yaml": "lines:\n  - enabled: 1.0\n"}, 2, 14,
         "expected boolean or integer, got the number 1.0"),
        ({"profiles/base.yaml": "lines:\n  - enabled: 2\n"}, 2, 14, "2 is not allowed"),
        ({"profiles/base.yaml": "params:\n  sip.server_port: true\n"}, 2, 20,
         "expected integer, got the boolean true"),
        ({"profiles/base.yaml": "params:\n  DBID_VENDOR_THING: 1.0\n"}, 2, 22,
         "read as the number 1.0"),
        ({"models/IP542N.yaml": IP542N.replace("line_count: 4", "line_count: 4.0")}, 4, 13,
         "expected integer, got the number 4.0"),
        ({"gitprov.yaml": FLEET.replace("version_floor: 1000", "version_floor: 1000.0")}, 1, 16,
         "expected integer, got the number 1000.0"),
        ({"gitprov.yaml": FLEET + "limits:\n  extends_depth: 40.0\n"}, 9, 18,
         "expected integer, got the number 40.0"),
    ],
)  # fmt: skip
def test_a_float_is_never_an_integer_or_a_boolean(
    overlay: dict[str, str | None], line: int, col: int, message: str
) -> None:
    # jsonschema (draft 2020-12) counts 5060.0 as an integer; gitprov would write `5060.0`.
    path = f"inventory/{next(iter(overlay))}"
    found = [p for p in lint_problems(overlay) if p.file == path and p.is_error]
    assert [(p.line, p.col) for p in found] == [(line, col)], found
    assert message in found[0].message


@pytest.mark.parametrize(
    ("written", "rendered"),
    [
        ("sip.server_port: 5060", "DBID_WEB_SIP_SERVER_PORT=5060"),
        ("provision.option66: true", "DBID_PRV_OPTION66_ENABLED=1"),
        ("provision.option66: 0", "DBID_PRV_OPTION66_ENABLED=0"),
        ("provision.option66: off", "DBID_PRV_OPTION66_ENABLED=0"),
        ("DBID_VENDOR_COUNT: +7", "DBID_VENDOR_COUNT=7"),
    ],
)
def test_numbers_and_booleans_render_canonically(written: str, rendered: str) -> None:
    # (without provisioning.url: option 66 on would override the rule written, GP133)
    fleet = PLAIN_FLEET.replace(URL, "") + f"params:\n  {written}\n"
    loaded = Pipeline(None).load(MemorySource(inventory({"gitprov.yaml": fleet})))
    inv = loaded.inventory
    assert inv is not None, loaded.errors
    cfg = compile_device(inv.devices[0], inv, load_catalog(), placeholder_resolver(inv.sealed))
    assert rendered.encode() + b"\n" in flyingvoice.render(cfg, 1000)


# -- acceptance 5: nothing with a line break reaches a rendered file -------------------
def test_an_injected_line_is_rejected() -> None:
    overlay = {D1: DEVICE + '    display_name: "x\\nDBID_SIP_PASSWORD=x"\n'}
    loaded = Pipeline(None).load(MemorySource(inventory(overlay)))
    assert loaded.inventory is None
    assert [(p.file, p.line, p.col, p.code) for p in loaded.errors] == [
        (f"inventory/{D1}", 8, 19, "GP108")
    ]


PLAIN_FLEET = FLEET.replace("mode: openssl-md5", "mode: none")
URL = 'provisioning:\n  url: "http://prov.example.com"\n'
HOSTILE = st.lists(
    st.one_of(
        st.sampled_from(["\n", "\r", "\0", "\t", "=", "DBID_SIP_PASSWORD=x", "\r\n", "\\", '"']),
        st.text(max_size=4),
    ),
    max_size=6,
).map("".join)


RENDERED: list[str] = []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(display=HOSTILE, raw=HOSTILE)
@example(display="Alice", raw="1\t0\t0\t0")
@example(display="x\nDBID_SIP_PASSWORD=x", raw="")
@example(display="", raw="x\rDBID_SIP_PASSWORD=x")
def test_random_values_are_rejected_or_render_exactly_the_expected_lines(
    display: str, raw: str
) -> None:
    text = (
        DEVICE
        + f"    display_name: {json.dumps(display)}\n"
        + f"params:\n  DBID_VENDOR_VALUE: {json.dumps(raw)}\n"
    )
    loaded = Pipeline(None).load(MemorySource(inventory({"gitprov.yaml": PLAIN_FLEET, D1: text})))
    if loaded.inventory is None:
        assert loaded.errors
        return
    inv = loaded.inventory
    dev = inv.device("0021f2011b19")
    assert dev is not None
    cfg = compile_device(dev, inv, load_catalog(), placeholder_resolver(inv.sealed))
    rendered = flyingvoice.render(cfg, 1000)
    lines = rendered.split(b"\n")
    assert lines[-1] == b""
    keys = [ln.split(b"=", 1)[0] for ln in lines[:-1]]
    assert len(keys) == len(cfg.entries) + 1
    assert keys.count(b"DBID_SIP_PASSWORD") == 1
    assert keys.count(b"DBID_VENDOR_VALUE") == 1
    assert all(re.fullmatch(rb"DBID_[A-Z0-9_]+", k) for k in keys)
    assert b"\r" not in rendered and b"\0" not in rendered
    # Per-line rows keep one value per line of the model: no TAB slipped into a value.
    assert flyingvoice.parse(rendered)["DBID_SIP_DIS_NAME"].count("\t") == 3
    RENDERED.append(display)


def test_the_property_above_did_render_files() -> None:
    # Guards against a vacuous property (every example rejected); runs after it.
    test_random_values_are_rejected_or_render_exactly_the_expected_lines()
    assert len(RENDERED) >= 20


def test_problems_sort_by_position_then_code() -> None:
    a = error("f", 2, 1, "GP102", "m")
    b = warning("f", 1, 9, "GP112", "m")
    c = error("f", 2, 1, "GP101", "m")
    assert sorted([a, b, c]) == [b, c, a]
    assert isinstance(b.level, Level) and not isinstance(a, int)


def test_problem_equality_dedupes() -> None:
    p: list[Problem] = [error("f", 1, 1, "GP101", "m")] * 2
    assert len(set(p)) == 1


def test_lowering_version_floor_is_caught_against_the_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = GitRepo(tmp_path / "repo")
    files = {f"inventory/{k}": v for k, v in inventory().items()}
    repo.commit({**files, "inventory/gitprov.yaml": FLEET.replace("1000", "2000")}, worktree=True)
    repo.commit({"inventory/gitprov.yaml": FLEET}, "lower the floor")
    code, out = run(capsys, repo)
    assert code == 1
    assert (
        "inventory/gitprov.yaml:1:16: error[GP113]: version_floor lowered to 1000: the "
        "history already has 2000" in out
    )
    # Before committing: the work tree is compared with HEAD's history, where the invalid
    # commit changed nothing: 1500 is still below 2000, although above HEAD's own 1000.
    (repo.path / "inventory" / "gitprov.yaml").write_text(FLEET.replace("1000", "1500"))
    code = main(["--repo", str(repo.path), "validate", "--worktree"])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "inventory/gitprov.yaml:1:16: error[GP113]: version_floor lowered to 1500: the "
        "history already has 2000" in out
    )
    (repo.path / "inventory" / "gitprov.yaml").write_text(FLEET.replace("1000", "2000"))
    code = main(["--repo", str(repo.path), "validate", "--worktree"])
    out = capsys.readouterr().out
    assert code == 0, out


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(SecretRef, lambda dumper, ref: dumper.represent_scalar("!secret", str(ref)))
FILES = sorted(inventory())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_broken_shape_gives_problems_never_a_crash(data: st.DataObject) -> None:
    rel = data.draw(st.sampled_from(FILES))
    parsed, _ = yaml_parse(rel, "", inventory()[rel].encode())
    assert parsed is not None
    doc = parsed.data
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths(doc)))
        how = data.draw(st.sampled_from(["set", "delete", "add"]))
        doc = mutate(doc, path, how, data.draw(VALUES), data.draw(st.sampled_from(KEYS)))
    text = yaml.dump(doc, Dumper=_Dumper, allow_unicode=True)
    found = lint_problems({rel: text}, parent={})
    assert all(isinstance(p, Problem) for p in found)


def test_a_value_of_the_wrong_type_is_one_problem_and_choices_read_as_yaml() -> None:
    # The string 'true' for a line's enabled flag fails the type and the enum of that
    # place; a second message about the same value says nothing more.
    overlay = {D1: DEVICE.replace("  - enabled: true", "  - enabled: 'true'", 1)}
    found = [p for p in lint_problems(overlay) if p.file == f"inventory/{D1}"]
    assert [(p.code, p.message) for p in found] == [
        ("GP010", "lines.0.enabled: expected boolean or integer, got the string 'true'")
    ]
    # An enum's choices are written as in the file: a YAML reader knows true, not True.
    model = IP542N.replace("family: flyingvoice", "family: grandstream")
    (bad,) = [p for p in lint_problems({"models/IP542N.yaml": model}) if p.code == "GP010"]
    assert bad.message == "family: the string 'grandstream' is not allowed"
    assert bad.hint == 'use one of: "flyingvoice"'


@pytest.mark.parametrize(
    ("mac", "what"),
    [
        ("01:21:f2:01:1b:19", "a group (multicast) address"),
        ("0321F2011B19", "a group (multicast) address"),
        ("ff-ff-ff-ff-ff-ff", "the broadcast address"),
        ("0000.0000.0000", "all zeros"),
    ],
)
def test_a_mac_no_device_has_is_refused(mac: str, what: str) -> None:
    overlay = {D1: DEVICE.replace('mac: "00:21:f2:01:1b:19"', f'mac: "{mac}"')}
    (found,) = [p for p in lint_problems(overlay) if p.code == "GP010"]
    assert (found.file, found.line, found.col) == (f"inventory/{D1}", 1, 6)
    assert f"'{mac}' is {what}" in found.message


@pytest.mark.parametrize("mac", ["02:21:f2:01:1b:19", "fe:ff:ff:ff:ff:ff", "00:00:00:00:00:01"])
def test_a_locally_administered_or_low_mac_is_a_device_s(mac: str) -> None:
    overlay = {D1: DEVICE.replace('mac: "00:21:f2:01:1b:19"', f'mac: "{mac}"')}
    assert not [p for p in lint_problems(overlay) if p.code == "GP010"]


def test_a_secret_name_of_the_wrong_form_is_named_at_its_key() -> None:
    # A name is no secret (device files write it in `!secret NAME`): shown, and located
    # at the key rather than at the first entry of `secrets:`.
    overlay = {"secrets.yaml": SECRETS + f"  'sip 2003': {SEALED}\n"}
    (found,) = [p for p in lint_problems(overlay) if p.file == "inventory/secrets.yaml"]
    assert (found.code, found.line, found.col) == ("GP010", 6, 3)
    assert found.message == "secrets: 'sip 2003' cannot be a secret's name"


def test_a_number_that_is_no_number_is_refused_where_the_schema_lets_it_pass() -> None:
    # NaN passes every minimum and maximum: a rollout of .nan percent reached the build
    # and ended in an internal error.
    model = IP542N + (
        "bindings:\n  provision.upgrade_rule: {key: DBID_UPGRADE_RULE, source: test}\n"
        "firmware:\n  file: IP542N_F107.bin\n  version: v1.0.7\n"
        "  rollout: {percent: .NaN}\n"
    )
    found = [p for p in lint_problems({"models/IP542N.yaml": model}) if p.code == "GP010"]
    assert [(p.line, p.col, p.message) for p in found] == [
        (10, 22, "firmware.rollout.percent: .NaN is not a number gitprov can use")
    ]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("http_root: ''", "publish.http_root: empty"),
        ("http_root: 5", "publish.http_root: expected string or array, got the number 5"),
        ("state_dir: ''", "publish.state_dir: empty"),
    ],
)
def test_an_alternative_of_the_schema_is_explained_by_the_one_that_came_closest(
    setting: str, message: str
) -> None:
    # "is not valid under any of the given schemas" said nothing of what to write.
    fleet = FLEET + f"publish:\n  {setting}\n"
    found = [p for p in lint_problems({"gitprov.yaml": fleet}) if p.code == "GP010"]
    assert [p.message for p in found] == [message]
    assert found[0].hint


def test_a_key_with_nothing_after_it_is_said_to_have_no_value() -> None:
    # "expected a string, but unquoted  is read as nothing (null)", hint 'quote it:
    # model: ""': there was nothing to quote.
    overlay = {D1: DEVICE.replace("model: IP542N", "model:")}
    (found,) = [p for p in lint_problems(overlay) if p.file == f"inventory/{D1}"]
    assert (found.code, found.line) == ("GP013", 2)
    assert found.message == "model: no value (YAML reads a key with nothing after it as null)"
    assert found.hint == "write the value after `model:`"
    # A null written as such keeps its words.
    overlay = {D1: DEVICE.replace("model: IP542N", "model: null")}
    (found,) = [p for p in lint_problems(overlay) if p.file == f"inventory/{D1}"]
    assert "unquoted null is read as nothing (null)" in found.message


def test_one_parameter_under_its_two_names_in_one_mapping_is_a_duplicate_key() -> None:
    # Both keys were read and one value was written: which one, nothing said.
    overlay = {
        D1: DEVICE
        + '    DBID_SIP_ACCOUNT: "2009"\n'
        + "params:\n  sip.outbound: a.example.net\n  DBID_WEB_SIP_OUTBOUND: b.example.net\n"
    }
    found = [p for p in lint_problems(overlay) if p.code == "GP004"]
    text = DEVICE.splitlines()
    account = next(i for i, ln in enumerate(text, 1) if ln.strip().startswith("account:"))
    assert [(p.line, p.message) for p in found] == [
        (
            len(text) + 1,
            f"lines.0: 'DBID_SIP_ACCOUNT' and 'account' (line {account}) are one parameter, "
            "DBID_SIP_ACCOUNT: one of the two values would be dropped",
        ),
        (
            len(text) + 4,
            "params: 'DBID_WEB_SIP_OUTBOUND' and 'sip.outbound' (line "
            f"{len(text) + 3}) are one parameter, DBID_WEB_SIP_OUTBOUND: one of the two "
            "values would be dropped",
        ),
    ]
    # Across layers (the base profile sets sip.server, the device its raw key): layering.
    assert not [
        p
        for p in lint_problems({D1: DEVICE + "params:\n  DBID_WEB_SIP_SERVER: b.example.net\n"})
        if p.code == "GP004"
    ]


def test_a_sealed_value_too_short_to_be_one_is_found_where_it_is_written() -> None:
    """`v1:AAAA` passed validation, and only a build said it was no sealed value: a
    sealed value holds at least an ephemeral key, a nonce and a tag (80 characters)."""
    short = SECRETS.replace(f"sip_2001: {SEALED}", "sip_2001: v1:AAAA")
    assert short != SECRETS
    found = [p for p in lint_problems({"secrets.yaml": short}) if p.is_error]
    assert [(p.code, p.line, p.col) for p in found] == [("GP010", 4, 13)], found
    assert "AAAA" not in found[0].message


def test_a_sealed_value_longer_than_a_build_takes_is_found_where_it_is_written() -> None:
    """A value over 1 MiB passed validation, and only a build with the private key
    refused it. Its sealed text says its length: the schema's bound is that of the
    longest value `secrets.seal` makes of a value a build takes."""
    from gitprov.secrets import VALUE_MAX, generate_keypair, seal

    _, public = generate_keypair()
    longest = seal(public, "sip_2001", "x" * VALUE_MAX)
    over = seal(public, "sip_2001", "x" * (VALUE_MAX + 1))
    for sealed, refused in ((longest, False), (over, True)):
        text = SECRETS.replace(f"sip_2001: {SEALED}", f"sip_2001: {sealed}")
        assert text != SECRETS
        found = [p for p in lint_problems({"secrets.yaml": text}) if p.is_error]
        if not refused:
            assert not found, found
            continue
        assert [(p.code, p.line, p.col) for p in found] == [("GP010", 4, 13)], found
        assert "more than 1 MiB" in found[0].message and sealed[3:40] not in found[0].message


@pytest.mark.parametrize(
    ("publish", "message", "hint"),
    [
        ("  http_root: []\n", "publish.http_root: an empty list", "give at least 1"),
        (
            "  http_root: [var/http, var/http2, var/http]\n",
            "publish.http_root: 'var/http' is listed twice",
            "list each once",
        ),
        (
            "  option66: [IP542N, G502N, IP542N]\n",
            "publish.option66: 'IP542N' is listed twice",
            "list each once",
        ),
    ],
)
def test_an_empty_list_or_an_item_listed_twice_is_said_so_with_a_hint(
    publish: str, message: str, hint: str
) -> None:
    """Not jsonschema's "[] should be non-empty" or "['IP542N', …] has non-unique
    elements", without a hint."""
    found = lint_problems({"gitprov.yaml": FLEET + "publish:\n" + publish})
    mine = [p for p in found if p.file == "inventory/gitprov.yaml" and p.is_error]
    assert [(p.line, p.message) for p in mine] == [(9, message)], [p.message for p in found]
    assert hint in (mine[0].hint or "")


def test_a_list_past_its_max_items_is_said_by_its_length_and_never_walked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """jsonschema checks every item of `lines` before maxItems says "too many": a
    990,000-item list (7 MB, within every reading limit; 16 KB packed) took it ~30 s
    and ~600 MB. The schema now sees the first maxItems items, and no more."""
    from gitprov import schemas

    seen: list[int] = []
    real = schemas.validator_for

    class Counted:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def iter_errors(self, data: Any) -> Any:
            lines = data.get("lines") if isinstance(data, dict) else None
            seen.append(len(lines) if isinstance(lines, list) else 0)
            return self.inner.iter_errors(data)

    monkeypatch.setattr("gitprov.validate.validator_for", lambda *a: Counted(real(*a)))
    count = 50_000
    found = lint_problems(device(line_1="  - null\n" * (count - 1)))
    errors = [p for p in found if p.is_error and p.file.endswith(D1)]
    limit = json.loads((Path(__file__).parent.parent / "schemas/device.schema.json").read_text())[
        "properties"
    ]["lines"]["maxItems"]
    assert [(p.code, p.message) for p in errors] == [
        ("GP010", f"lines: too many items ({count:,})")
    ], found
    cut = f"the items after the first {limit} were not checked"
    assert errors[0].hint == f"use at most {limit} ({cut})"
    # (the first `limit` items are valid: the fast check passes them, jsonschema never runs)
    assert all(n <= limit for n in seen), seen


def test_a_file_s_schema_check_stops_after_so_many_errors_and_says_so() -> None:
    """Each schema error is a located problem (~50 µs, a few lines of log): a file of
    hundreds of thousands of wrong values is reported up to SCHEMA_ERRORS_SHOWN."""
    from gitprov.validate import SCHEMA_ERRORS_SHOWN

    count = SCHEMA_ERRORS_SHOWN + 200
    params = "".join(f"  nosuch{i:05d}: x\n" for i in range(count))
    found = lint_problems({"profiles/base.yaml": "params:\n" + params})
    schema = [
        p for p in found if p.file.endswith("profiles/base.yaml") and p.code in ("GP010", "GP011")
    ]
    stopped = [p for p in schema if "stopped after" in p.message]
    assert len(schema) == SCHEMA_ERRORS_SHOWN + 1, len(schema)
    assert [(p.line, p.message, p.hint) for p in stopped] == [
        (
            SCHEMA_ERRORS_SHOWN + 2,
            f"more schema errors from here on: this file's check stopped after "
            f"{SCHEMA_ERRORS_SHOWN}",
            "fix the errors shown and validate again",
        )
    ]
