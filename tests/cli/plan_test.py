"""`gitprov plan --format markdown`: a pull-request comment that groups devices by the
lines that change, collapses device lists, and fits a cap; `--from-json` renders a saved
plan the same way as a computed one."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import pytest

from gitprov.cli import main
from gitprov.cli import plan as cli_plan
from gitprov.cli.plan import markdown
from gitprov.review import Change, DeviceChange, Review
from tests.fixtures.fifo import writerless_fifo
from tests.fixtures.gitrepo import GitRepo, example_files

BASE, HEAD = "b" * 40, "c" * 40


def device_file(mac: str, server: str, lines: int = 3) -> list[str]:
    # The first line differs per device, like a real file's per-line settings: context
    # lines of a diff are not the same across devices, the changed lines are.
    body = [f"DBID_SIP_ENABLE={mac}", f"DBID_WEB_SIP_SERVER={server}"]
    return body + [f"DBID_OTHER_{i}=x" for i in range(lines)]


def changed(mac: str, old: list[str] | None, new: list[str] | None, v: int = 1001) -> DeviceChange:
    name = f"fv{mac}.conf"
    diff = tuple(
        difflib.unified_diff(
            old or [],
            new or [],
            f"a/{name}" if old else "/dev/null",
            f"b/{name}" if new else "/dev/null",
            lineterm="",
        )
    )
    kind = Change.ADD if old is None else Change.REMOVE if new is None else Change.CHANGE
    return DeviceChange(
        mac, kind, name, None if old is None else v, None if new is None else v + 1, diff
    )


def mac(i: int) -> str:
    return f"0021f3{i:06x}"


def fleet_change(n: int, *, start: int = 0, new: str = "sip2.example.net") -> list[DeviceChange]:
    return [
        changed(mac(i), device_file(mac(i), "sip.example.net"), device_file(mac(i), new))
        for i in range(start, start + n)
    ]


def headings(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("#### ")]


def test_devices_with_the_same_changed_lines_share_one_diff() -> None:
    changes = [
        *fleet_change(3),
        *fleet_change(1, start=10, new="sip9.example.net"),
        changed(mac(20), None, device_file(mac(20), "sip.example.net")),
    ]
    text = markdown(Review(BASE, HEAD, tuple(changes), unchanged=7))
    assert text.startswith(f"### gitprov plan `{BASE[:12]}`..`{HEAD[:12]}`\n")
    assert "**5 device(s) change** (1 added, 4 changed) in 3 group(s)" in text
    assert "7 unchanged" in text
    # The biggest group first; a single device is named in its heading.
    assert headings(text) == [
        "#### 3 devices changed: `DBID_WEB_SIP_SERVER`",
        f"#### `{mac(10)}` changed: `DBID_WEB_SIP_SERVER`",
        f"#### `{mac(20)}` added",
    ]
    assert text.count("```diff") == 3
    assert text.count("+DBID_WEB_SIP_SERVER=sip2.example.net") == 1
    assert "+DBID_WEB_SIP_SERVER=sip9.example.net" in text
    # The group of three lists each device with its file and version.
    for i in range(3):
        assert f"| `{mac(i)}` | `fv{mac(i)}.conf` | 1001 → 1002 |" in text
    assert "<details><summary>3 devices</summary>" in text


def test_no_changes() -> None:
    text = markdown(Review(BASE, HEAD, (), unchanged=4), 5_000)
    assert "No device changes (4 unchanged)." in text and "####" not in text


def test_versions_of_a_group_are_shown_as_a_range_when_they_differ() -> None:
    a, b = fleet_change(2)
    b = DeviceChange(b.mac, b.change, b.file_name, 1005, 1006, b.diff)
    text = markdown(Review(BASE, HEAD, (a, b), 0))
    assert "Version 1001–1005 → 1002–1006." in text


def rows(text: str) -> int:
    return len(re.findall(r"^\| `[0-9a-f]{12}` \|", text, re.M))


def test_a_big_group_fits_the_cap_and_leaves_room_for_the_others() -> None:
    changes = [
        *fleet_change(5_000),
        *fleet_change(40, start=6_000, new="sip3.example.net"),
        changed(mac(9_000), device_file(mac(9_000), "sip.example.net"), None),
    ]
    review = Review(BASE, HEAD, tuple(changes), 0)
    full = markdown(review)
    assert rows(full) == 5_040 and len(full) > 65_536
    for cap in (60_000, 20_000, 5_000):
        text = markdown(review, cap)
        assert len(text) <= cap
        # Every group's diff is there; rows are cut, the same number per group.
        assert len(headings(text)) == 3 and text.count("```diff") == 3
        listed = [int(n.replace(",", "")) for n in re.findall(r"… and ([\d,]+) more", text)]
        assert rows(text) + sum(listed) == 5_040
        assert "not shown" not in text
    capped = markdown(review, 60_000)
    assert rows(capped) > 500  # the room is used, not wasted
    assert re.search(r"… and 4,[0-9]{3} more, not listed here", capped)


def test_when_even_the_diffs_do_not_fit_whole_groups_are_left_out_and_counted() -> None:
    adds = [changed(mac(i), None, device_file(mac(i), "s", lines=60)) for i in range(300)]
    review = Review(BASE, HEAD, tuple(adds), 0)
    text = markdown(review, 20_000)
    assert len(text) <= 20_000
    shown = len(headings(text))
    assert 0 < shown < 300
    tail = re.search(r"… ([\d,]+) more device\(s\) in ([\d,]+) group\(s\) not shown", text)
    assert tail, text[-500:]
    assert int(tail[1]) == int(tail[2]) == 300 - shown
    assert "`gitprov plan --format json` lists every device" in text


@pytest.mark.parametrize("cap", [1_000, 1_001, 2_345, 7_777, 65_000])
def test_the_cap_holds_exactly(cap: int) -> None:
    changes = [
        *fleet_change(700),
        *(changed(mac(i), None, device_file(mac(i), "s")) for i in range(1_000, 1_050)),
    ]
    assert len(markdown(Review(BASE, HEAD, tuple(changes), 3), cap)) <= cap


def test_a_value_with_backticks_cannot_close_the_diff_block() -> None:
    old = ["DBID_A=plain"]
    new = ["DBID_A=```not code```", "DBID_B=````"]
    text = markdown(Review(BASE, HEAD, (changed(mac(1), old, new),), 0))
    fence = "`````"  # longer than any run of backticks in the diff
    assert f"\n{fence}diff\n" in text and f"\n{fence}\n" in text


# -- the command ---------------------------------------------------------------------
OFFICE = "inventory/profiles/office.yaml"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _backup_proxy_plan(
    example_repo: GitRepo, capsys: pytest.CaptureFixture[str]
) -> tuple[list[str], str]:
    """A branch changing the office profile's backup proxy (three devices): the `plan`
    arguments that compare it with its base, and that plan as JSON."""
    base = str(example_repo.repo.head.target)
    office = example_repo.files[OFFICE].replace(b"sbc2.example.net", b"sbc9.example.net")
    example_repo.commit({OFFICE: office}, "new backup proxy", branch="feature", parents=[base])
    repo = ["--repo", str(example_repo.path), "plan", "--base", base, "--rev", "feature"]
    code, saved, _ = cli(capsys, *repo, "--format", "json")
    assert code == 0
    return repo, saved


def test_a_saved_plan_renders_as_the_computed_one(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, saved = _backup_proxy_plan(example_repo, capsys)
    (tmp_path / "plan.json").write_text(saved)
    for fmt in ("markdown", "text", "json"):
        code, computed, _ = cli(capsys, *repo, "--format", fmt)
        assert code == 0
        code, rendered, _ = cli(
            capsys, "plan", "--from-json", str(tmp_path / "plan.json"), "--format", fmt
        )
        assert code == 0 and rendered == computed, fmt
    heading = "#### 3 devices changed: `DBID_WEB_SIP_OUTBOUND_BACKUP`"
    for cap, listed in ((1_000, 0), (1_500, 3)):
        code, capped, _ = cli(
            capsys,
            "plan",
            "--from-json",
            str(tmp_path / "plan.json"),
            "--format",
            "markdown",
            "--max-chars",
            str(cap),
        )
        assert code == 0 and len(capped) <= cap
        assert heading in capped and rows(capped) == listed


@pytest.mark.parametrize(
    ("where", "char", "said"),
    [
        ("file", "\x1b", "the control character U+001B"),
        ("diff", "\u202e", "the invisible character U+202E"),
        ("diff", "\n", "a newline"),
        # JSON's escapes reach what no output can encode: the render ended in exit 3
        ("diff", "\ud800", "the lone surrogate U+D800"),
        ("file", "\udcff", "the byte 0xFF, which is not UTF-8"),
    ],
)
def test_a_saved_plan_holding_what_gitprov_never_writes_is_refused_not_rendered(
    example_repo: GitRepo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
    char: str,
    said: str,
) -> None:
    # A plan saved by one CI job and rendered by another: an ESC sequence in it would
    # rewrite the terminal of whoever reads it, a bidi override reorder what they read.
    _, saved = _backup_proxy_plan(example_repo, capsys)
    doc = json.loads(saved)
    device = doc["devices"][0]
    assert any("\t" in line for d in doc["devices"] for line in d["diff"])  # (TABs stay)
    if where == "file":
        device["file"] += char + "[2J"
    else:
        device["diff"][-1] += char + "x"
    (tmp_path / "plan.json").write_text(json.dumps(doc), encoding="utf-8")
    for fmt in ("text", "markdown"):
        code, out, err = cli(
            capsys, "plan", "--from-json", str(tmp_path / "plan.json"), "--format", fmt
        )
        assert code == 2 and not out
        assert f"devices/0/{where}" in err and f"holds {said}" in err, err
        assert char == "\n" or char not in err


def test_a_saved_plan_with_a_share_past_100_percent_is_a_usage_error(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 401-digit max_percent passed the schema and ended in an internal error
    (OverflowError) when rendered."""
    _, saved = _backup_proxy_plan(example_repo, capsys)
    doc = json.loads(saved)
    assert doc["removal"] is not None
    doc["removal"]["max_percent"] = 10**400
    (tmp_path / "plan.json").write_text(json.dumps(doc), encoding="utf-8")
    code, _, err = cli(capsys, "plan", "--from-json", str(tmp_path / "plan.json"))
    assert code == 2 and "removal/max_percent" in err and "internal error" not in err, err


def test_a_file_that_is_not_a_saved_plan_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"version": 1, "base": "x", "head": "c" * 40}))
    code, _, err = cli(capsys, "plan", "--from-json", str(bad), "--format", "markdown")
    assert code == 2
    assert str(bad) in err and "hint: give the output of `gitprov plan --format json`" in err
    bad.write_text("{not json")
    code, _, err = cli(capsys, "plan", "--from-json", str(bad))
    assert code == 2 and "not a saved plan" in err


def test_a_saved_plan_naming_a_key_twice_is_refused_at_the_second(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key written twice was taken silently, the last one winning: a hand edit that
    hid a device's diff behind a second "diff" passed as the plan."""
    _, saved = _backup_proxy_plan(example_repo, capsys)
    doc = json.loads(saved)
    device = json.dumps(doc["devices"][0], indent=1)
    assert device.endswith("\n}")
    twice = device[:-2] + ',\n "diff": []\n}'  # the device's diff emptied by a second key
    text = json.dumps({**doc, "devices": []}, indent=1)
    text = text.replace('"devices": []', f'"devices": [{twice}]')
    assert json.loads(text)["devices"][0]["diff"] == []
    lines = text.splitlines()
    line = next(i for i, ln in enumerate(lines, 1) if ln == ' "diff": []')
    first = next(i for i, ln in enumerate(lines, 1) if ln.startswith(' "diff": ['))
    (tmp_path / "plan.json").write_text(text, encoding="utf-8")
    code, out, err = cli(capsys, "plan", "--from-json", str(tmp_path / "plan.json"))
    assert code == 2 and not out
    assert f"plan.json:{line}:2: duplicate key 'diff' (first at {first}:2)" in err, err
    assert "hint: render the plan gitprov wrote" in err
    # the same key in two objects is no duplicate: the saved plan itself renders
    (tmp_path / "plan.json").write_text(saved, encoding="utf-8")
    assert cli(capsys, "plan", "--from-json", str(tmp_path / "plan.json"))[0] == 0


def test_a_saved_plan_starting_with_a_byte_order_mark_renders(
    example_repo: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plan saved by an editor that adds a BOM was refused with Python's own words
    ("Unexpected UTF-8 BOM (decode using utf-8-sig)"); the inventory's YAML skips one."""
    _, saved = _backup_proxy_plan(example_repo, capsys)
    (tmp_path / "plan.json").write_bytes(saved.encode())
    code, plain, _ = cli(capsys, "plan", "--from-json", str(tmp_path / "plan.json"))
    assert code == 0
    (tmp_path / "plan.json").write_bytes(b"\xef\xbb\xbf" + saved.encode())
    code, out, err = cli(capsys, "plan", "--from-json", str(tmp_path / "plan.json"))
    assert (code, out, err) == (0, plain, ""), err


@pytest.mark.parametrize(
    "argv",
    [
        ["--format", "text", "--max-chars", "5000"],
        ["--format", "json", "--max-chars", "5000"],
        ["--format", "markdown", "--max-chars", "999"],
        ["--format", "markdown", "--max-chars", "lots"],
    ],
)
def test_max_chars_is_for_markdown_and_not_below_1000(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "plan.json"
    saved.write_text(
        json.dumps({"version": 1, "base": BASE, "head": HEAD, "unchanged": 0, "devices": []})
    )
    code, _, err = cli(capsys, "plan", "--from-json", str(saved), *argv)
    assert code == 2 and "max-chars" in err


def test_a_missing_base_names_the_option_and_the_branches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plan` defaults to --base main: in a repository whose branch is master, the error
    says which option names the base and which branches there are."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"inventory/gitprov.yaml": "version_floor: 1000\n"}, branch="master")
    code = main(["--repo", str(repo.path), "plan", "--rev", "master"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "unknown revision 'main'" in err and "--base" in err, err
    assert "branches: master" in err and "Traceback" not in err, err


def test_a_base_the_repository_cannot_read_keeps_the_hint_that_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base missing from a damaged repository: the hint was `pass --base BRANCH`, as
    for a typo, and not the repository's repair."""
    repo = GitRepo(tmp_path / "r")
    repo.commit(example_files(), "first")
    repo.commit({"inventory/devices/0021f2011b19.yaml": b"mac: 0021f2011b19\nmodel: IP542N\n"})
    lost = str(repo.repo.revparse_single("main~1").id)
    (repo.path / ".git" / "objects" / lost[:2] / lost[2:]).unlink()
    assert main(["--repo", str(repo.path), "plan", "--base", "main~1"]) == 2
    err = capsys.readouterr().err
    assert f"cannot read object {lost}" in err and "the base" in err, err
    assert "git fsck" in err and "pass --base BRANCH" not in err, err
    assert main(["--repo", str(repo.path), "plan", "--base", "mian"]) == 2
    assert "pass --base BRANCH; this repository's branches: main" in capsys.readouterr().err


def test_a_saved_plan_from_a_fifo_nothing_writes_to_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--from-json FIFO` with no writer waited for ever (and /dev/zero was read until
    memory ran out: an internal error)."""
    with writerless_fifo(tmp_path / "plan.json") as fifo:
        code, _, err = cli(capsys, "plan", "--from-json", str(fifo))
    assert code == 2 and "a fifo or pipe nothing writes to" in err, err


def test_a_saved_plan_past_its_bound_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_plan, "PLAN_JSON_MAX", 1000)
    (tmp_path / "plan.json").write_text(" " * 1001 + "{}")
    code, _, err = cli(capsys, "plan", "--from-json", str(tmp_path / "plan.json"))
    assert code == 2 and "not a saved plan (larger than 0 MiB)" in err, err
