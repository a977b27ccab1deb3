"""Compiling through model bindings: a bound name is written under its model's key."""

from __future__ import annotations

from gitprov.catalog import load_catalog
from gitprov.compile import compile_device, placeholder_resolver
from gitprov.inventory import build_inventory, load_documents
from gitprov.macros import device_variables, expand
from gitprov.pipeline import Pipeline
from gitprov.rule_url import parse_rule
from tests.rules.lint import DEVICE, DEVICE_2, FLEET, IP542N, MemorySource, inventory, problems

BOUND = IP542N + (
    "bindings:\n"
    '  provision.resync_periodic: {key: DBID_RESYNC_PERIODIC, source: "test: not a vendor key"}\n'
    '  provision.upgrade_enable: {key: DBID_UPGRADE_ENABLE, source: "test: not a vendor key"}\n'
)
D1 = "devices/0021f2011b19.yaml"
D2 = "devices/0021f2011b20.yaml"


def compiled(overlay: dict[str, str | None]) -> dict[str, dict[str, str]]:
    """MAC -> its compiled parameters, from a valid inventory."""
    assert [p for p in problems(overlay) if p.is_error] == []
    loaded = Pipeline(None).load(MemorySource(inventory(overlay)))
    inv = loaded.inventory
    assert inv is not None
    resolve = placeholder_resolver(inv.sealed)
    out = {}
    for d in inv.devices:
        cfg = compile_device(d, inv, load_catalog(), resolve)
        out[d.mac] = {e.key: e.value for e in cfg.entries}
    return out


def test_a_bound_name_compiles_to_its_models_key() -> None:
    base = "params:\n  sip.server: sip.example.net\n  provision.resync_periodic: 3600\n"
    device = DEVICE + "params:\n  provision.upgrade_enable: false\n"
    got = compiled(
        {
            "models/IP542N.yaml": BOUND,
            "models/G502N.yaml": BOUND.replace("line_count: 4", "line_count: 2"),
            "profiles/base.yaml": base,
            D1: device,
        }
    )
    assert got["0021f2011b19"]["DBID_RESYNC_PERIODIC"] == "3600"
    assert got["0021f2011b19"]["DBID_UPGRADE_ENABLE"] == "0"
    assert "DBID_UPGRADE_ENABLE" not in got["0021f2011b20"]
    # Never the readable name as a key.
    assert not any(k.startswith("provision.") for params in got.values() for k in params)


def test_the_raw_key_and_the_name_are_one_parameter() -> None:
    base = "params:\n  provision.resync_periodic: 3600\n"
    got = compiled(
        {
            "models/IP542N.yaml": BOUND,
            "models/G502N.yaml": BOUND.replace("line_count: 4", "line_count: 2"),
            "profiles/base.yaml": base,
            D2: DEVICE_2 + "params:\n  DBID_RESYNC_PERIODIC: 86400\n",
        }
    )
    assert got["0021f2011b19"]["DBID_RESYNC_PERIODIC"] == "3600"
    assert got["0021f2011b20"]["DBID_RESYNC_PERIODIC"] == "86400"


def test_a_bound_name_keeps_the_catalogs_type_checks() -> None:
    bad = {"models/IP542N.yaml": BOUND, D1: DEVICE + "params:\n  provision.resync_periodic: -5\n"}
    assert [(p.code, p.line, p.col) for p in problems(bad) if p.is_error] == [("GP010", 9, 30)]


def test_the_profile_rule_asks_for_the_published_file_after_the_device_expands_it() -> None:
    # The overview, section 3: the device expands macros in the rule, `$$` to one `$`. A
    # file name holding a `$` (from `$$` in file_name) must be written escaped, or the
    # device expands what follows it and asks for a file that was never published.
    # Validation refuses such a name (GP107: the overview also reads `$$` otherwise); the
    # compiler escapes it all the same.
    fleet = FLEET.replace('file_name: "fv$(MA).conf"', 'file_name: "fv$(MA)$$SN.conf"')
    overlay = {"gitprov.yaml": fleet, D1: DEVICE + "serial: E3C08109000051\n"}
    assert [p.code for p in problems(overlay) if p.is_error] == ["GP107"]
    inv = build_inventory(load_documents(MemorySource(inventory(overlay)))[0])
    device = next(d for d in inv.devices if d.mac == "0021f2011b19")
    cfg = compile_device(device, inv, load_catalog(), placeholder_resolver(inv.sealed))
    assert cfg.file_name == "fv0021f2011b19$SN.conf"
    rule = parse_rule(cfg.get("DBID_PROFILE_RULE") or "")
    # What the device, which knows its own serial, asks for.
    asked = expand(rule.path, device_variables(device.mac, serial="E3C08109000051"))
    assert asked == "/" + cfg.file_name


def test_a_base_url_without_a_server_keeps_its_scheme_whole() -> None:
    """`[scheme://][server[:port]]/file path` (the overview, 2.2): `tftp://` names no
    server, the one DHCP option 66 gave. Every trailing slash was stripped, the scheme's
    own included: the rule was `tftp:/fv….conf`, and validation told the user to write
    the two slashes they had written."""
    from gitprov.firmware import default_rule
    from gitprov.stage import bootstrap_rule

    for written in ("tftp://", "tftp:///"):
        fleet = FLEET.replace('url: "http://prov.example.com"', f'url: "{written}"')
        assert fleet != FLEET
        overlay = {"gitprov.yaml": fleet}
        assert not [p for p in problems(overlay) if p.is_error]
        inv = build_inventory(load_documents(MemorySource(inventory(overlay)))[0])
        device = next(d for d in inv.devices if d.mac == "0021f2011b19")
        cfg = compile_device(device, inv, load_catalog(), placeholder_resolver(inv.sealed))
        rule = cfg.get("DBID_PROFILE_RULE") or ""
        assert rule.endswith("]tftp:///fv0021f2011b19.conf"), rule
        url = parse_rule(rule)
        assert (url.scheme, url.host, url.path) == ("tftp", "", "/fv0021f2011b19.conf")
        assert bootstrap_rule(inv.fleet) == "tftp:///fv$(MA).conf"
        assert default_rule(written, "IP542N.bin") == "tftp:///IP542N.bin"
