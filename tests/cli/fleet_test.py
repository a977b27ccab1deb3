"""`gitprov fleet`: the text table, JSON against its schema, usage errors, and the HTML
report as a real headless browser (Debian's chromium) renders it: the table's rows and
the chart's SVG are in the DOM, and a log line holding `<script>` runs nothing."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from gitprov.cli import main
from gitprov.schemas import output_schemas
from tests.fixtures.peers import need
from tests.fleet_test import A, B, C, gp, write, write_manifest

HOSTILE_PATH = "/fv0021f2bad001.conf<script>document.title='pwned'</script>"
HOSTILE_CLIENT = "<img src=x onerror=\"document.title='pwned'\">"
TITLE = "gitprov fleet status: cccccccccccc"


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, list[str]]:
    state = write_manifest(tmp_path / "state", {A: 1002, B: 1002, C: 1001})
    fetch = write(
        state / "fetch.log",
        gp("2024-05-01T11:00:00.000Z", f"/fv{A}.conf", version=1001),
        gp("2024-05-01T12:05:00.000Z", f"/fv{A}.conf", version=1002),
        gp("2024-05-01T12:06:00.000Z", f"/fv{B}.conf", version=1001),
        gp("2024-05-01T12:07:00.000Z", HOSTILE_PATH, status=404, client=HOSTILE_CLIENT),
        gp("2024-05-01T12:08:00.000Z", "/fv0021f2bad002.conf", status=404, client="\x1b[31mred"),
    )
    access = write(
        tmp_path / "access.log",
        '192.0.2.8 - - [01/May/2024:13:00:00 +0000] "GET /fv0021f2a0c001.conf HTTP/1.1" 200 '
        '400 "-" "-"',
        "<script>document.title='pwned'</script>",
    )
    return state, [fetch, f"nginx:{access}"]


def fleet(state: Path, logs: list[str], *extra: str) -> list[str]:
    argv = ["fleet", "--state-dir", str(state)]
    for log in logs:
        argv += ["--log", log]
    return [*argv, *extra]


def test_text_table(logs: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    state, paths = logs
    assert main(fleet(state, paths)) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()]
    assert rows[1] == ["MAC", "MODEL", "PUBLISHED", "FETCHED", "STATE", "LAST", "SEEN"]
    assert rows[2][:5] == [A, "IP542N", "1002", "1002", "current"]
    assert rows[3][:5] == [B, "IP542N", "1002", "1001", "stale"]
    assert rows[4][:5] == [C, "IP542N", "1001", "1001", "current"]
    assert "3 device(s): 2 current, 1 stale, 0 never" in out
    assert "\x1b" not in out and "\\x1b[31mred" in out  # a log cannot drive the terminal
    assert f"{paths[1].partition(':')[2]}:2: malformed line skipped" in err
    assert "1 malformed line(s) skipped" in err


@pytest.mark.parametrize("given", ["--config", "$GITPROV_PUBLISHER_CONFIG"])
def test_the_state_dir_comes_from_the_publishers_config_as_for_history(
    logs: tuple[Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    given: str,
) -> None:
    """docs/github.md sets $GITPROV_PUBLISHER_CONFIG on the server: `history` and
    `verify` read the state dir from it, and `fleet` took none (no --config either)."""
    state, paths = logs
    config = tmp_path / "publisher.yaml"
    config.write_text(f"state_dir: {state}\n")
    argv = ["fleet", *(a for p in paths for a in ("--log", p))]
    if given == "--config":
        argv += ["--config", str(config)]
    else:
        monkeypatch.setenv("GITPROV_PUBLISHER_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)  # (no repository here: the fleet settings cannot say)
    assert main(argv) == 0, capsys.readouterr().err
    assert "3 device(s): 2 current, 1 stale, 0 never" in capsys.readouterr().out


def test_json_matches_its_schema(
    logs: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    state, paths = logs
    assert main(fleet(state, paths, "--format", "json")) == 0
    doc = json.loads(capsys.readouterr().out)
    Draft202012Validator(output_schemas()["fleet-output.schema.json"]).validate(doc)
    assert doc["summary"] == {"devices": 3, "current": 2, "stale": 1, "never": 0}
    # One request each: by client.
    assert [c["client"] for c in doc["unknown_macs"]["clients"]] == ["\x1b[31mred", HOSTILE_CLIENT]
    assert doc["malformed"]["total"] == 1


def test_the_default_log_and_usage_errors(
    logs: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, _ = logs
    assert main(fleet(state, [], "--format", "json")) == 0  # STATE_DIR/fetch.log
    assert json.loads(capsys.readouterr().out)["summary"]["current"] == 1
    (state / "fetch.log").unlink()
    assert main(fleet(state, [])) == 2
    assert "no log given" in capsys.readouterr().err
    assert main(fleet(tmp_path / "none", [])) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(fleet(tmp_path, [str(tmp_path / "x.log")])) == 2
    assert "no manifest" in capsys.readouterr().err
    assert main(fleet(state, [str(tmp_path / "missing.log")])) == 2
    err = capsys.readouterr().err
    assert "missing.log: cannot read it" in err and "Traceback" not in err


def test_a_fifo_nothing_writes_to_in_place_of_the_fetch_log_is_an_empty_log(
    logs: tuple[Path, list[str]],
) -> None:
    """`fleet` at a fifo in place of STATE_DIR/fetch.log waited in its open for ever."""
    state, _ = logs
    (state / "fetch.log").unlink()
    os.mkfifo(state / "fetch.log")
    done = subprocess.run(
        [sys.executable, "-m", "gitprov", *fleet(state, [], "--format", "json")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["summary"]["never"] == 3


def test_a_pipe_a_command_writes_into_is_read_as_a_log(
    logs: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    state, _ = logs
    data = (state / "fetch.log").read_bytes()
    read, written = os.pipe()

    def write() -> None:
        os.write(written, data)
        os.close(written)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        code = main(fleet(state, [f"/proc/self/fd/{read}"], "--format", "json"))
    finally:
        writer.join()
        os.close(read)
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["summary"]["current"] == 1


def test_html_into_a_directory_that_does_not_exist_is_refused_and_makes_none(
    logs: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the report was written after every log was read, making the directories of a typo)
    state, paths = logs
    report = tmp_path / "no" / "such" / "report.html"
    assert main(fleet(state, paths, "--html", str(report))) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_html_escapes_what_logs_hold(
    logs: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, paths = logs
    report = tmp_path / "report.html"
    assert main(fleet(state, paths, "--html", str(report))) == 0
    text = report.read_text()
    assert "<script" not in text and "<img" not in text
    assert html.escape(HOSTILE_CLIENT, quote=True) in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text  # nothing to fetch: the report stands alone


def test_html_report_in_a_headless_browser(
    logs: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chromium = need("chromium", "chromium")
    state, paths = logs
    report = tmp_path / "report.html"
    assert main(fleet(state, paths, "--html", str(report))) == 0
    home = tmp_path / "home"
    home.mkdir()
    argv = [chromium, "--headless", "--disable-gpu", "--no-first-run"]
    argv += [f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # The title is what gitprov wrote: no script from a log changed it.
    assert re.search(r"<title>(.*?)</title>", dom) is not None
    assert re.search(r"<title>(.*?)</title>", dom).group(1) == TITLE  # type: ignore[union-attr]
    assert "pwned" not in dom.split("<body")[0]
    assert "<script" not in dom.lower() and "<img" not in dom.lower()
    # ... and the hostile text is there, as text.
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    rows = re.findall(r'<tr class="(current|stale|never)" data-mac="([0-9a-f]{12})">', dom)
    assert rows == [("current", A), ("stale", B), ("current", C)]
    assert '<svg id="adoption"' in dom
    bars = re.findall(r'<rect class="bar"[^>]*><title>([^<]*)</title>', dom)
    assert "2024-05-01T13:00:00.000Z: 1 device(s) on 1002" in bars
    assert "2024-05-01T13:00:00.000Z: 2 device(s) on 1001" in bars


def test_html_shows_bytes_that_are_not_utf8_as_escapes(
    logs: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, _ = logs
    log = tmp_path / "fetch.log"
    line = (
        b'{"time":"2024-05-01T12:05:00.000Z","protocol":"http","client":"\xff\xfe",'
        b'"path":"/fv0021f2aaaaaa.conf","status":404,"size":0}\n'
    )
    log.write_bytes(line)
    report = tmp_path / "report.html"
    assert main(fleet(state, [f"gitprov:{log}"], "--html", str(report))) == 0
    text = report.read_text(encoding="utf-8")
    assert "\\xff\\xfe" in text


def test_html_holds_lone_surrogates_of_json_escapes(
    logs: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, _ = logs
    log = write(
        tmp_path / "fetch.log",
        gp("2024-05-01T12:05:00.000Z", "/\ud800fv0021f2aaaaaa.conf", status=404, client="\udfff"),
    )
    assert "\\ud800" in Path(log).read_text()  # (as JSON escapes it: the line is ASCII)
    report = tmp_path / "report.html"
    assert main(fleet(state, [log], "--html", str(report))) == 0
    text = report.read_text(encoding="utf-8")
    assert "/\\ud800fv0021f2aaaaaa.conf" in text and "\\udfff" in text


def test_html_replaces_only_a_regular_file(
    logs: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report is renamed over FILE: a link (/dev/stdout), a pipe or a device would
    be replaced by a file; refused before the logs are read."""
    state, paths = logs
    target = tmp_path / "target.html"
    target.write_text("kept")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    for name, why in ((link, "a symbolic link"), (fifo, "not a regular file")):
        assert main(fleet(state, paths, "--html", str(name))) == 2
        assert f"--html {name}: {why}" in capsys.readouterr().err
    assert main(fleet(state, paths, "--html", str(tmp_path))) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert link.is_symlink() and target.read_text() == "kept" and fifo.is_fifo()
    assert main(fleet(state, paths, "--html", str(target))) == 0
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_html_never_replaces_a_log_it_reads_or_the_manifest(
    logs: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--log fetch.log --html fetch.log` read the log, then renamed the report over it:
    the log was gone. Refused before anything is read, the log kept."""
    state, paths = logs
    log = Path(paths[0].split(":", 1)[-1])
    before = log.read_bytes()
    for target in (log, state / "manifest.json"):
        kept = target.read_bytes()
        assert main(fleet(state, paths, "--html", str(target))) == 2
        err = capsys.readouterr().err
        assert "which the report is made from" in err, err
        assert target.read_bytes() == kept
    assert log.read_bytes() == before
