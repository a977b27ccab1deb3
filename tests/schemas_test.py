"""The JSON Schemas: valid, usable by editors, and the fast path never disagrees."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gitprov.catalog import load_catalog
from gitprov.cli import main
from gitprov.inventory import DEVICE, FLEET, MODEL, PROFILE, SECRETS
from gitprov.macros import normalise_mac
from gitprov.schemas import all_schemas, checker_for, output_schemas, validator_for
from gitprov.yamldoc import SecretRef, parse
from tests.fixtures.gitrepo import example_files
from tests.rules.lint import inventory

KINDS = {
    "gitprov.yaml": FLEET,
    "secrets.yaml": SECRETS,
    "models/": MODEL,
    "profiles/": PROFILE,
    "devices/": DEVICE,
}


def kind_of(rel: str) -> str:
    return next(k for prefix, k in KINDS.items() if rel.startswith(prefix))


def documents() -> list[tuple[str, Any]]:
    """(kind, data) of the example inventory and of the rule tests' minimal one."""
    out = []
    for path, data in example_files().items():
        doc, _ = parse(path, "", data)
        assert doc is not None
        out.append((kind_of(path.removeprefix("inventory/")), doc.data))
    for rel, text in inventory().items():
        doc, _ = parse(rel, "", text.encode())
        assert doc is not None
        out.append((kind_of(rel), doc.data))
    return out


@pytest.mark.parametrize("name", sorted({**all_schemas(), **output_schemas()}))
def test_every_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = {**all_schemas(), **output_schemas()}[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_example_inventory_is_valid_on_both_paths() -> None:
    docs = documents()
    assert {k for k, _ in docs} == set(KINDS.values())
    for kind, data in docs:
        assert list(validator_for(kind).iter_errors(data)) == [], (kind, data)
        check = checker_for(kind)
        assert check is not None and check(data), (kind, data)


KEYS = [
    "mac", "model", "profile", "serial", "lines", "params", "enabled", "account", "password",
    "sip.server", "sip.server_port", "DBID_X", "family", "line_count", "version_floor",
    "encryption", "mode", "master_key", "extends", "public_key", "secrets", "publish",
    "http_root", "firmware", "file", "provisioning", "url", "call.dnd", "x",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70000),
    st.sampled_from([1.0, 2.5, -0.0, 1e300]),
    st.text(max_size=6),
    st.sampled_from(
        [
            "sip.example.net",
            "00:21:f2:01:1b:19",
            "IP542N",
            "flyingvoice",
            "none",
            "openssl-md5",
            "http://x/y.conf",
            "base",
            "v1:abc",
            "gitprov-pk-" + "A" * 43,
            "",
            "x y",
            "0021.f201.1b19",
        ]
    ),
    st.dates(min_value=datetime.date(2000, 1, 1), max_value=datetime.date(2030, 1, 1)),
    st.builds(SecretRef, st.sampled_from(["k", "sip_2001"])),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths(v, (*prefix, i))
    return out


def mutate(data: Any, path: tuple[Any, ...], how: str, value: Any, key: str) -> Any:
    if not path:
        if how == "add" and isinstance(data, dict):
            return {**data, key: value}
        return value if how == "set" else data
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        copy = dict(data)
        if not rest and how == "delete":
            del copy[head]
        else:
            copy[head] = mutate(data[head], rest, how, value, key)
        return copy
    copy_list = list(data)
    if not rest and how == "delete":
        del copy_list[head]
    else:
        copy_list[head] = mutate(data[head], rest, how, value, key)
    return copy_list


DOCS = documents()
ACCEPTED: list[str] = []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_only_accepts_what_jsonschema_accepts(data: st.DataObject) -> None:
    kind, doc = data.draw(st.sampled_from(DOCS))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths(doc)))
        how = data.draw(st.sampled_from(["set", "delete", "add"]))
        doc = mutate(doc, path, how, data.draw(VALUES), data.draw(st.sampled_from(KEYS)))
    check = checker_for(kind)
    assert check is not None
    if check(doc):
        assert list(validator_for(kind).iter_errors(doc)) == [], (kind, doc)
        ACCEPTED.append(kind)


def test_the_fast_path_property_is_not_vacuous() -> None:
    test_the_fast_path_only_accepts_what_jsonschema_accepts()
    assert len(ACCEPTED) >= 40


MAC_PATTERN = re.compile(all_schemas()["device.schema.json"]["properties"]["mac"]["pattern"])


@given(
    st.text(alphabet="0123456789abcdefABCDEFg:-. ", max_size=18)
    | st.sampled_from(["0021f2011b19", "00:21:F2:01:1b:19", "0021.f201.1b19", "00-21-f2-01-1b-19"])
)
def test_the_schema_accepts_exactly_the_mac_spellings_that_normalise(text: str) -> None:
    if text != text.strip():
        return  # normalise_mac forgives surrounding blanks; YAML would have dropped them
    assert (MAC_PATTERN.search(text) is not None) == (normalise_mac(text) is not None)


def test_the_schemas_directory_is_what_schema_write_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """schemas/ (the wheel's gitprov/_schemas) is usable as it is by an editor or a
    validator given the directory: it held a `$id` that sent its `$ref`s to an address
    nobody serves (a DNS lookup for gitprov.invalid), and not the params and line
    schemas they name. They are the catalog's as it is now: a change to params.yaml
    without `gitprov schema --write schemas` fails here."""
    from gitprov.catalog import SCHEMAS_DIR
    from gitprov.schemas import KIND_FILES

    assert main(["schema", "--write", str(tmp_path)]) == 0
    capsys.readouterr()
    for name in (*KIND_FILES.values(), "params.schema.json", "line.schema.json"):
        assert (SCHEMAS_DIR / name).read_text() == (tmp_path / name).read_text(), name


def test_written_schemas_resolve_next_to_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", "--write", str(tmp_path)]) == 0
    assert "wrote 21 schema(s)" in capsys.readouterr().out

    def retrieve(uri: str) -> Resource[Any]:
        return Resource.from_contents(
            json.loads((tmp_path / uri).read_text()), default_specification=DRAFT202012
        )

    registry: Registry[Any] = Registry(retrieve=retrieve)  # type: ignore[call-arg]
    for kind, data in DOCS:
        schema = json.loads((tmp_path / f"{kind}.schema.json").read_text())
        assert "$id" not in schema
        validator = Draft202012Validator(schema, registry=registry)
        assert list(validator.iter_errors(data)) == []
    device = json.loads((tmp_path / "device.schema.json").read_text())
    bad = {"mac": "nope", "model": "IP542N", "params": {"sip.server_port": 0}}
    errors = list(Draft202012Validator(device, registry=registry).iter_errors(bad))
    assert {e.validator for e in errors} == {"pattern", "minimum"}


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "fleet"]) == 0
    assert json.loads(capsys.readouterr().out)["title"].startswith("gitprov fleet")
    assert main(["schema", "validate-output"]) == 0
    assert json.loads(capsys.readouterr().out)["properties"]["version"] == {
        "const": 1,
        "description": "Version of this output format.",
    }
    assert main(["schema", "--list"]) == 0
    assert capsys.readouterr().out.split() == [
        "fleet", "profile", "model", "device", "secrets", "params", "line",
        "blame-output", "build-output", "fleet-output", "history-output", "key-output",
        "log-output", "params-output", "plan-output", "probe-output", "publish-output",
        "show-output", "validate-output", "verify-output", "versions-output",
    ]  # fmt: skip
    assert main(["schema", "nope"]) == 2
    assert "kinds: fleet, profile" in capsys.readouterr().err


def test_params_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1
    rows = {r["name"]: r for r in doc["params"]}
    assert len(rows) == len(load_catalog().params) + len(load_catalog().unpublished)
    assert rows["sip.server"]["key"] == "DBID_WEB_SIP_SERVER"
    assert rows["sip.server"]["settable_by_name"] is True
    assert rows["provision.resync_periodic"] == {
        "key": None,
        "name": "provision.resync_periodic",
        "label": "Resync Periodic",
        "type": "seconds",
        "scope": "global",
        "unit": "seconds",
        "default": 3600,
        "min": None,
        "max": None,
        "max_length": None,
        "values": [],
        "managed": False,
        "secret": False,
        "settable_by_name": False,
        "source": "overview",
        "description": "Interval between periodic resyncs; 0 disables periodic resync.",
    }
    assert rows["provision.version"]["settable_by_name"] is False
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^DBID_WEB_SIP_SERVER +sip\.server +host +global", out, re.M)
    assert re.search(r"^\(not published\) +provision\.upgrade_rule +url", out, re.M)
