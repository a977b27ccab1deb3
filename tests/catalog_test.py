"""The parameter catalog against the vendor overview and protocol-notes, written by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from gitprov.catalog import (
    SCHEMAS_DIR,
    Catalog,
    Param,
    Unpublished,
    _param,
    _unpublished,
    load_catalog,
)
from gitprov.errors import GitprovError

# Acceptance 3: the overview's param.conf example (section 5), key → (type, scope).
SEED = {
    "DBID_DBASE_VERSION": ("int", "global"),
    "DBID_IPMODE": ("int", "global"),
    "DBID_FIXED_IP_ADDR": ("ipv4", "global"),
    "DBID_SUBNET_MASK": ("ipv4", "global"),
    "DBID_DFLT_GW_IP_ADDR": ("ipv4", "global"),
    "DBID_SIP_ENABLE": ("bool", "line"),
    "DBID_WEB_SIP_SERVER": ("host", "global"),
    "DBID_WEB_SIP_SERVER_PORT": ("port", "global"),
    "DBID_WEB_SIP_OUTBOUND": ("host", "global"),
    "DBID_WEB_SIP_OUTBOUND_PORT": ("port", "global"),
    "DBID_WEB_SIP_OUTBOUND_BACKUP": ("host", "global"),
    "DBID_WEB_SIP_OUTBOUND_BACKUP_PORT": ("port", "global"),
    "DBID_SIP_DIS_NAME": ("string", "line"),
    "DBID_SIP_PHONE_NUM": ("string", "line"),
    "DBID_SIP_ACCOUNT": ("string", "line"),
    "DBID_SIP_PASSWORD": ("string", "line"),
    "DBID_PRV_OPTION66_ENABLED": ("bool", "global"),
}
# protocol-notes.md, "Names seen on Flying Voice devices besides the overview's".
NOTES = {
    "DBID_PROFILE_RULE": ("url", "global"),
    "DBID_ALTER_SIP_SERVER_HOSTNAME": ("host", "global"),
    "DBID_ALTER_SIP_SERVER_PORT": ("port", "global"),
    "DBID_DNSSRV_DOMAIN": ("hostname", "global"),
    "DBID_WEB_PORT": ("port", "global"),
    "DBID_WEB_SSL_PORT": ("port", "global"),
    "DBID_WEB_HTTP_DISABLE": ("bool", "global"),
    "DBID_DND_ENABLE": ("bool", "global"),
    "DBID_TR_ACS_PWD": ("string", "global"),
}
# The overview's section 2.1 table: label → (type, default). Keys of None: not published.
SECTION_2_1: dict[str, tuple[str | None, str, Any]] = {
    "Provision Enable": (None, "bool", True),
    "Resync On Reset": (None, "bool", True),
    "Resync Random Delay": (None, "seconds", 40),
    "Resync Periodic": (None, "seconds", 3600),
    "Resync Error Retry Delay": (None, "seconds", 3600),
    "Forced Resync Delay": (None, "seconds", 14400),
    "Resync After Upgrade": (None, "bool", True),
    "Option 66": ("DBID_PRV_OPTION66_ENABLED", "bool", True),
    "Config File Name": (None, "string", None),
    "Profile Rule": ("DBID_PROFILE_RULE", "url", None),
    "Upgrade Enable": (None, "bool", True),
    "Upgrade Error Retry Delay": (None, "seconds", 3600),
    "Upgrade Rule": (None, "url", ""),
}
# shared/ lies beside the repository, on the developers' machines and in CI.
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.mark.parametrize(("key", "expected"), [*SEED.items(), *NOTES.items()])
def test_named_keys_are_catalogued_with_their_type(
    catalog: Catalog, key: str, expected: tuple[str, str]
) -> None:
    p = catalog.by_key(key)
    assert p is not None, key
    assert (p.type, p.scope) == expected


def test_the_seed_keys_come_first_in_the_overview_order(catalog: Catalog) -> None:
    assert [p.key for p in catalog.params[: len(SEED)]] == list(SEED)


@pytest.mark.parametrize(("label", "expected"), SECTION_2_1.items())
def test_section_2_1_parameters(
    catalog: Catalog, label: str, expected: tuple[str | None, str, Any]
) -> None:
    key, type_, default = expected
    entries: list[Param | Unpublished] = [*catalog.params, *catalog.unpublished]
    (entry,) = [e for e in entries if e.label == label]
    assert entry.type == type_
    if default is not None:
        assert entry.default == default and type(entry.default) is type(default)
    if key is None:
        # Never an invented key: unpublished entries have no key at all.
        assert isinstance(entry, Unpublished) and not hasattr(entry, "key")
        assert catalog.lookup(entry.name) is None
        assert catalog.unpublished_named(entry.name) is entry
    else:
        assert isinstance(entry, Param) and entry.key == key


def test_secrets_and_managed_parameters(catalog: Catalog) -> None:
    assert {p.key for p in catalog.params if p.secret} == {
        "DBID_SIP_PASSWORD",
        "DBID_TR_ACS_PWD",
        "DBID_PROFILE_RULE",
    }
    assert {p.key for p in catalog.params if p.managed} == {
        "DBID_DBASE_VERSION",
        "DBID_PROFILE_RULE",
    }


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the shared reference is not here")
def test_every_dbid_key_of_the_references_is_catalogued(catalog: Catalog) -> None:
    import re

    for name in ("flyingvoice-auto-provision.txt", "protocol-notes.md"):
        text = (REFERENCE / name).read_text()
        for key in set(re.findall(r"DBID_[A-Z0-9_]*[A-Z0-9]", text)) - {"DBID_NAME"}:
            assert catalog.by_key(key) is not None, (name, key)


def test_lookups(catalog: Catalog) -> None:
    assert catalog.lookup("sip.server") is catalog.lookup("DBID_WEB_SIP_SERVER")
    assert catalog.lookup_line("account") is catalog.by_key("DBID_SIP_ACCOUNT")
    assert catalog.lookup_line("DBID_SIP_ACCOUNT") is catalog.by_key("DBID_SIP_ACCOUNT")
    assert catalog.lookup_line("DBID_WEB_SIP_SERVER") is None
    assert catalog.sort_key("DBID_DBASE_VERSION") == (0, "DBID_DBASE_VERSION")
    assert catalog.sort_key("DBID_ZZZ")[0] == len(catalog.params)


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("sip.server_port", [1, 5060, 65535, None], [0, 65536, "5060", True, 50.5]),
        ("sip.server", ["sip.example.net", "192.168.10.200"], ["sip example", "-x.example", 5]),
        ("network.ip_address", ["192.168.10.207"], ["256.1.1.1", "1.2.3", "a.b.c.d"]),
        ("call.dnd", [True, False, 0, 1, None], [2, "yes", "true"]),
        # No source states a range for the IP mode (the overview's example writes 0).
        ("network.ip_mode", [0, 2, 3, 17], ["0", True, 1.5]),
        # The overview: 0 disables; no upper bound is published.
        ("provision.resync_periodic", [0, 86400, 2**31], [-1, "3600", True]),
        ("provision.upgrade_rule", ["http://x/y.bin", "", "x" * 512], [7]),
    ],
)
def test_value_schemas(catalog: Catalog, name: str, good: list[object], bad: list[object]) -> None:
    typed = catalog.lookup(name) or catalog.unpublished_named(name)
    assert typed is not None
    validator = Draft202012Validator(typed.value_schema())
    for v in good:
        assert not list(validator.iter_errors(v)), v
    for v in bad:
        assert list(validator.iter_errors(v)), v


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("params: [{key: DBID_X, name: x, type: float, source: s}]", "unknown type 'float'"),
        ("params: [{key: DBID_X, name: x, type: int, scope: fleet, source: s}]",
         "unknown scope"),
        ("params: [{key: DBID_X, name: x, type: enum, source: s}]", "an enum needs"),
        ("params: [{key: DBID_X, name: x, type: int, scope: line, source: s}]",
         "per-line names"),
        ("params: [{key: null, name: x, type: int, source: s}]", "not a DBID key"),
        ("params: [{key: DBID_X, name: x, type: int, source: s}, "
         "{key: DBID_X, name: y, type: int, source: s}]",
         "duplicate parameter key"),
        ("params: []\nunpublished: [{key: DBID_X, name: x, type: int, source: s}]",
         "has no key"),
        ("params: [{key: DBID_X, name: x, type: int, source: s}]\n"
         "unpublished: [{name: x, type: int, source: s}]",
         "duplicate parameter name"),
        ("params: [{key: DBID_X, name: x, type: int}]", "no `source:`"),
        ("params: []\nunpublished: [{name: x, type: int, source: ' '}]", "no `source:`"),
    ],
)  # fmt: skip
def test_a_broken_catalog_is_refused(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(entry + "\n")
    with pytest.raises(GitprovError, match=message):
        load_catalog(path)


def test_every_entry_says_where_it_comes_from(catalog: Catalog) -> None:
    entries: list[Param | Unpublished] = [*catalog.params, *catalog.unpublished]
    for e in entries:
        assert e.source == "overview" or e.source.startswith("protocol-notes: "), e.name
    # The nine names the overview does not have are marked as such, not as the overview's.
    assert {p.key for p in catalog.params if p.source != "overview"} == set(NOTES)


def test_no_range_or_enum_that_no_source_states(catalog: Catalog) -> None:
    # Neither reference states a range, a length or a set of values for any parameter
    # (the overview's IP mode example writes 0; nothing says 0-2). A limit added here must
    # come with the sentence that states it.
    entries: list[Param | Unpublished] = [*catalog.params, *catalog.unpublished]
    limited = {
        e.name: (e.min, e.max, e.max_length, e.values)
        for e in entries
        if (e.min, e.max, e.max_length, e.values) != (None, None, None, ())
    }
    assert limited == {}


def test_libyaml_reads_the_catalog_as_the_pure_python_loader_does(catalog: Catalog) -> None:
    # load_catalog reads params.yaml with libyaml's loader, for speed; the catalog it
    # makes must be the one the reference loader's data makes.
    raw = (SCHEMAS_DIR / "params.yaml").read_bytes()
    fast = yaml.load(raw, Loader=yaml.CSafeLoader)
    slow = yaml.load(raw, Loader=yaml.SafeLoader)
    assert fast == slow
    assert catalog.params == tuple(_param(e) for e in slow["params"])
    assert catalog.unpublished == tuple(_unpublished(e) for e in slow.get("unpublished") or ())
