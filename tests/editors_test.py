"""The editor support `gitprov init` writes, tried with the real tools: yaml-language-server
(the server of VS Code's YAML extension, and of any LSP editor) with the settings of the
new repository's .vscode/settings.json, and check-jsonschema with its schemas/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitprov.cli import main
from tests.fixtures.gitrepo import ROOT
from tests.fixtures.lsp import LspClient

SERVER = ROOT / ".venv" / "node" / "node_modules" / ".bin" / "yaml-language-server"
CHECK_JSONSCHEMA = ROOT / ".venv" / "bin" / "check-jsonschema"
DOCS = ROOT / "docs" / "editors.md"

GOOD_DEVICE = """\
mac: "00:21:f2:aa:bb:01"
model: IP542N
profile: base
key: !secret reception_key
lines:
  - enabled: true
    account: "4001"
    phone_number: "4001"
    password: !secret sip_4001
"""

BAD_DEVICE = """\
mac: "00:21:f2:aa:bb"
model: IP542N
profil: base
lines:
  - enabled: maybe
    account: 4001
    password: !secret sip_4001
"""

GOOD_PROFILE = """\
description: the reception desk
extends: base
params:
  sip.server_port: 5062
"""

BAD_PROFILE = """\
description: the reception desk
extends: 5
params:
  sip.server_port: many
colour: blue
"""

BAD_MODEL = """\
description: Flying Voice IP542N IP phone
family: flyingvoice
product_name: IP542N
line_count: two
encryption:
  mode: rot13
"""

# What an LSP editor announces: it answers workspace/configuration.
CAPABILITIES: dict[str, Any] = {
    "workspace": {"configuration": True, "workspaceFolders": True},
    "textDocument": {"publishDiagnostics": {}, "completion": {"completionItem": {}}},
}


@pytest.fixture(scope="module")
def top(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new inventory repository, as `gitprov init` writes it (one for the module: the
    tests only read it)."""
    base = tmp_path_factory.mktemp("editors")
    top = base / "fleet"
    # No GitHub workflows: they take the action's commit from GitHub, and editors do not
    # need them.
    argv = ["init", str(top), "--private-key-out", str(base / "fleet.key"), "--no-workflows"]
    assert main(argv) == 0
    return top


def vscode_settings(top: Path) -> dict[str, Any]:
    settings: dict[str, Any] = json.loads((top / ".vscode" / "settings.json").read_text())
    return settings


def section(flat: dict[str, Any], name: str) -> dict[str, Any]:
    """One section of VS Code's flat settings (`yaml.customTags`) as the nested object
    an editor sends for workspace/configuration (`{"customTags": ...}`)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if not key.startswith(name + "."):
            continue
        *parents, leaf = key[len(name) + 1 :].split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def yaml_section(top: Path, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    flat = {k: v for k, v in vscode_settings(top).items() if k not in drop}
    settings = section(flat, "yaml")
    # The only setting the tests add: by default the server downloads the catalog of
    # schemastore.org, and tests use no network. The catalog cannot shadow the schemas
    # of yaml.schemas, which take precedence over it.
    settings["schemaStore"] = {"enable": False}
    return settings


@contextmanager
def yaml_server(top: Path, settings: dict[str, Any]) -> Iterator[LspClient]:
    if not SERVER.exists():
        pytest.skip(
            "yaml-language-server not installed: run make setup (needs npm, Debian package npm)"
        )
    if shutil.which("node") is None:
        pytest.skip("yaml-language-server needs node: Debian package nodejs")
    client = LspClient(
        [str(SERVER), "--stdio"], top, lambda name: settings if name == "yaml" else None
    )
    try:
        client.start(CAPABILITIES)
        client.wait_for(
            "workspace/configuration request", lambda: client.configuration_requests > 0, 10
        )
        # A barrier: the server answers codeLens only once the settings it asked for are
        # applied, so every document opened after this is validated with them.
        client.request("textDocument/codeLens", {"textDocument": {"uri": top.as_uri()}})
        yield client
    finally:
        client.close()


def located(diagnostics: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(1-based line, message) of each diagnostic, as an editor shows them."""
    return sorted((d["range"]["start"]["line"] + 1, d["message"]) for d in diagnostics)


def schema_files(diagnostics: list[dict[str, Any]]) -> set[str]:
    return {uri for d in diagnostics for uri in d.get("data", {}).get("schemaUri", [])}


def test_a_good_device_file_with_secrets_has_no_diagnostics(top: Path) -> None:
    with yaml_server(top, yaml_section(top)) as server:
        uri = server.open(top / "inventory" / "devices" / "0021f2aabb01.yaml", GOOD_DEVICE)
        assert server.diagnostics(uri) == []


def test_a_bad_device_file_is_flagged_at_its_lines(top: Path) -> None:
    with yaml_server(top, yaml_section(top)) as server:
        uri = server.open(top / "inventory" / "devices" / "0021f2aabb01.yaml", BAD_DEVICE)
        diagnostics = server.diagnostics(uri)
    found = located(diagnostics)
    assert any(n == 1 and m.startswith("String does not match the pattern") for n, m in found)
    assert (3, "Property profil is not allowed.") in found
    assert (5, "Incorrect type. Expected one of boolean, integer, null.") in found
    assert (6, "Incorrect type. Expected one of string, null.") in found
    assert {n for n, _ in found} == {1, 3, 5, 6}  # the !secret on line 7 is fine
    assert all(d["severity"] == 1 for d in diagnostics)
    # The per-line parameters come from line.schema.json through a relative $ref: it
    # resolved to the file beside device.schema.json, not to an address on the network.
    schemas = top / "schemas"
    assert schema_files(diagnostics) == {
        (schemas / "device.schema.json").as_uri(),
        (schemas / "line.schema.json").as_uri(),
    }


def test_without_the_custom_tag_every_secret_is_an_error(top: Path) -> None:
    """yaml.customTags is what makes `!secret` valid: without it the server reports each
    one as an error of the YAML parser (and still validates the rest against the schema)."""
    with yaml_server(top, yaml_section(top, drop=("yaml.customTags",))) as server:
        uri = server.open(top / "inventory" / "devices" / "0021f2aabb01.yaml", GOOD_DEVICE)
        diagnostics = server.diagnostics(uri)
        bad = server.open(top / "inventory" / "devices" / "0021f2aabb02.yaml", BAD_DEVICE)
        bad_diagnostics = server.diagnostics(bad)
        fleet = top / "inventory" / "gitprov.yaml"
        fleet_diagnostics = server.diagnostics(server.open(fleet, fleet.read_text()))
    assert located(diagnostics) == [
        (4, "Unresolved tag: !secret"),
        (9, "Unresolved tag: !secret"),
    ]
    assert {(d["severity"], d["source"]) for d in diagnostics} == {(1, "YAML")}
    assert located(fleet_diagnostics) == [(22, "Unresolved tag: !secret")]
    found = located(bad_diagnostics)
    assert (7, "Unresolved tag: !secret") in found
    assert {n for n, _ in found} == {1, 3, 5, 6, 7}


def test_the_files_init_writes_have_no_diagnostics(top: Path) -> None:
    inventory = top / "inventory"
    files = [
        inventory / "gitprov.yaml",
        inventory / "secrets.yaml",
        inventory / "profiles" / "base.yaml",
        *sorted((inventory / "models").glob("*.yaml")),
    ]
    with yaml_server(top, yaml_section(top)) as server:
        uris = [server.open(path, path.read_text()) for path in files]
        assert {uri: server.diagnostics(uri) for uri in uris} == {uri: [] for uri in uris}


def test_profiles_models_and_yml_files_get_their_schemas(top: Path) -> None:
    inventory = top / "inventory"
    with yaml_server(top, yaml_section(top)) as server:
        good = server.diagnostics(server.open(inventory / "profiles" / "desk.yaml", GOOD_PROFILE))
        profile = server.diagnostics(server.open(inventory / "profiles" / "desk.yml", BAD_PROFILE))
        model = server.diagnostics(server.open(inventory / "models" / "IP542N.yaml", BAD_MODEL))
        device = server.diagnostics(
            server.open(inventory / "devices" / "0021f2aabb02.yml", BAD_DEVICE)
        )
        # Devices may sit in directories at any depth: their files get the schema too.
        nested = server.diagnostics(
            server.open(inventory / "devices" / "eu" / "paris" / "0021f2aabb03.yml", BAD_DEVICE)
        )
        # gitprov ignores a profile in a subdirectory (GP005) and any file in a
        # dot-directory: no schema either.
        ignored = [
            server.diagnostics(server.open(path, BAD_DEVICE))
            for path in (
                inventory / "profiles" / "old" / "desk.yaml",
                inventory / "devices" / ".old" / "0021f2aabb04.yaml",
            )
        ]
    assert good == []
    assert located(profile) == [
        (2, 'Incorrect type. Expected "string".'),
        (4, "Incorrect type. Expected one of integer, null."),
        (5, "Property colour is not allowed."),
    ]
    # encryption comes from fleet.schema.json#/$defs/encryption, another file's $defs.
    assert located(model) == [
        (4, 'Incorrect type. Expected "integer".'),
        (
            6,
            'Value is not accepted. Valid values: "openssl-md5", "openssl-sha256", '
            '"openssl-pbkdf2", "none".',
        ),
    ]
    assert {n for n, _ in located(device)} == {1, 3, 5, 6}
    assert located(nested) == located(device)
    assert ignored == [[], []]


def test_completion_offers_the_keys_of_a_device_file(top: Path) -> None:
    with yaml_server(top, yaml_section(top)) as server:
        uri = server.open(
            top / "inventory" / "devices" / "0021f2aabb01.yaml", 'mac: "00:21:f2:aa:bb:01"\n\n'
        )
        result = server.request(
            "textDocument/completion",
            {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 0}},
        )
    items = result["items"] if isinstance(result, dict) else result
    labels = {item["label"] for item in items}
    assert {"model", "profile", "lines", "params", "key"} <= labels
    assert "mac" not in labels  # already there


# -- check-jsonschema ---------------------------------------------------------------------


def documented_hooks() -> list[dict[str, Any]]:
    """The check-jsonschema hooks docs/editors.md shows for .pre-commit-config.yaml."""
    text = DOCS.read_text()
    found = re.search(r"```yaml\n(# check-jsonschema.*?)```", text, re.S)
    assert found, f"{DOCS} shows no check-jsonschema pre-commit configuration"
    config = yaml.safe_load(found[1])
    (repo,) = config["repos"]
    assert repo["repo"].endswith("/check-jsonschema")
    hooks: list[dict[str, Any]] = repo["hooks"]
    return hooks


def check_jsonschema(
    top: Path, args: list[str], files: list[str], cache: Path
) -> subprocess.CompletedProcess[str]:
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip("check-jsonschema is not installed: run make setup (a dev dependency)")
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), *args, *files],
        cwd=top,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_CACHE_HOME": str(cache), "NO_COLOR": "1"},
    )


def test_the_documented_check_jsonschema_hooks_check_models_and_profiles(
    top: Path, tmp_path: Path
) -> None:
    hooks = documented_hooks()
    assert {hook["id"] for hook in hooks} == {"check-jsonschema"}
    by_schema = {hook["args"][hook["args"].index("--schemafile") + 1]: hook for hook in hooks}
    assert set(by_schema) == {
        "schemas/model.schema.json",
        "schemas/profile.schema.json",
        "schemas/secrets.schema.json",
    }
    every_file = sorted(
        str(p.relative_to(top)) for p in (top / "inventory").rglob("*") if p.is_file()
    )
    for schema, hook in by_schema.items():
        # pre-commit passes the files `files` matches, relative to the repository top.
        files = [f for f in every_file if re.search(hook["files"], f)]
        assert files, f"{schema}: the hook's files pattern matches nothing init writes"
        done = check_jsonschema(top, hook["args"], files, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "desk.yaml").write_text(BAD_PROFILE)
    (bad / "IP542N.yaml").write_text(BAD_MODEL)
    done = check_jsonschema(
        top, by_schema["schemas/profile.schema.json"]["args"], [str(bad / "desk.yaml")], tmp_path
    )
    assert done.returncode == 1
    # Paths into the document, not lines: and the $ref into params.schema.json resolved.
    assert "$.extends: 5 is not of type 'string'" in done.stdout
    assert "$.params['sip.server_port']: 'many' is not of type 'integer', 'null'" in done.stdout
    assert "'colour' was unexpected" in done.stdout
    done = check_jsonschema(
        top, by_schema["schemas/model.schema.json"]["args"], [str(bad / "IP542N.yaml")], tmp_path
    )
    assert done.returncode == 1
    assert "$.encryption.mode: 'rot13' is not one of" in done.stdout


def test_check_jsonschema_cannot_read_a_file_with_a_secret(top: Path, tmp_path: Path) -> None:
    """Why the documented hooks leave out devices and gitprov.yaml: its YAML loader knows
    no custom tags, so every file with `!secret` fails to parse."""
    device = tmp_path / "0021f2aabb01.yaml"
    device.write_text(GOOD_DEVICE)
    for schema, path in (
        ("schemas/device.schema.json", device),
        ("schemas/fleet.schema.json", top / "inventory" / "gitprov.yaml"),
    ):
        done = check_jsonschema(top, ["--schemafile", schema], [str(path)], tmp_path)
        assert done.returncode == 1
        assert "could not determine a constructor for the tag '!secret'" in done.stdout


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), re.S)


def test_every_editor_setting_shown_is_the_one_init_writes(top: Path) -> None:
    settings = vscode_settings(top)
    (vscode,) = code_blocks("json")
    assert json.loads(vscode) == settings
    (helix,) = code_blocks("toml")
    config = tomllib.loads(helix)["language-server"]["yaml-language-server"]["config"]
    assert config == {"yaml": section(settings, "yaml")}
    # Lua and Emacs Lisp are not parsed here: they must name the same schemas, globs, tag.
    words = re.compile(r"schemas/\w+\.schema\.json|inventory/[\w*./]+|!secret scalar")
    expected = set(words.findall(json.dumps(settings)))
    for language in ("lua", "elisp"):
        (block,) = code_blocks(language)
        assert set(words.findall(block)) == expected, language


def test_the_documented_check_jsonschema_is_the_one_tested(tmp_path: Path) -> None:
    text = DOCS.read_text()
    rev = re.search(r"check-jsonschema\n\s+rev: (\S+)", text)
    assert rev, "docs/editors.md pins no check-jsonschema rev"
    done = check_jsonschema(tmp_path, ["--version"], [], tmp_path)
    assert done.stdout.split()[-1] == rev[1]
