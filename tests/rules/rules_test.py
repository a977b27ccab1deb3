"""One-line tests for every rule: snippet → the exact (line, col) of its problems.

Positions are written by hand from the snippets (1-based line and column).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gitprov.catalog import load_catalog
from gitprov.errors import Level
from gitprov.inventory import load_documents
from gitprov.rules import RULES, RuleContext, modules
from gitprov.unsafe import UNSAFE
from tests.rules.lint import (
    BASE_PROFILE,
    DEVICE,
    DEVICE_2,
    FLEET,
    G502N,
    IP542N,
    SECRETS,
    MemorySource,
    check,
    inventory,
    problems,
)

D1 = "devices/0021f2011b19.yaml"
D2 = "devices/0021f2011b20.yaml"
D3 = "devices/0021f2011b21.yaml"
BASE = "profiles/base.yaml"


def profile(extra: str) -> dict[str, str | None]:
    """The base profile with `extra` appended to its params (line 4 onwards)."""
    return {BASE: BASE_PROFILE + extra}


def test_the_minimal_inventory_is_clean() -> None:
    assert problems() == []


def test_every_rule_is_registered_once_with_code_name_and_examples() -> None:
    codes = [m.CODE for m in modules()]
    assert len(codes) == len(set(codes)) == len(RULES)
    assert codes == sorted(codes)
    for m in modules():
        assert m.NAME and m.__doc__, m.__name__
        assert m.__doc__.startswith(f"{m.CODE} {m.NAME}"), m.__name__
        assert "Fails:" in m.__doc__ and "Passes:" in m.__doc__, m.__name__


def test_gp100_missing_fleet() -> None:
    check("GP100", {"gitprov.yaml": None}, (0, 0))
    check("GP100", {})
    # There, but unreadable: its own problem says why, at its place; it is not missing.
    check("GP100", {"gitprov.yaml": "version_floor: [1000\n"})
    check("GP100", {"gitprov.yaml": "version_floor: " + "9" * 5000 + "\n"})


def test_gp100_with_no_inventory_at_all_points_at_init() -> None:
    """A repository without one file of an inventory (a new one, or the wrong
    --inventory-dir) is told how to start one, not to write gitprov.yaml by hand."""
    (found,) = check("GP100", dict.fromkeys(inventory()), (0, 0))
    assert "gitprov init ." in found.hint and "--inventory-dir" in found.hint, found.hint
    (found,) = check("GP100", {"gitprov.yaml": None}, (0, 0))
    assert "version_floor: 1000" in found.hint and "init" not in found.hint, found.hint


def test_gp101_duplicate_mac_in_any_spelling() -> None:
    check("GP101", {D3: 'mac: "0021F2011B19"\nmodel: IP542N\n'}, (1, 6))
    check("GP101", {D3: 'mac: "00-21-F2-01-1B-19"\nmodel: IP542N\n'}, (1, 6))
    check("GP101", {D3: 'model: IP542N\nmac: "0021.f201.1b19"\n'}, (2, 6))
    check("GP101", {D3: 'mac: "00:21:f2:01:1b:21"\nmodel: IP542N\n'})


def test_gp102_unknown_model() -> None:
    check("GP102", {D1: DEVICE.replace("model: IP542N", "model: IP524N")}, (2, 8))
    check("GP102", {D1: DEVICE.replace("model: IP542N", "model: G502N")})


def test_gp103_unknown_profile() -> None:
    check("GP103", {D1: DEVICE.replace("profile: base", "profile: bsae")}, (3, 10))
    check("GP103", {"profiles/office.yaml": "extends: basse\n"}, (1, 10))
    check("GP103", {"profiles/office.yaml": "extends: base\n"})


def test_gp102_gp103_many_unknown_names_cost_no_comparison_per_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of profiles (and models) and as many devices naming none of them: a
    close name is looked for a bounded number of times (each look compares with every
    known name: one per pair took minutes), and a hint lists a few names, not all."""
    import difflib

    n = 400
    looks = []
    real = difflib.get_close_matches

    def counted(word: str, possibilities: list[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
        looks.append(word)
        return real(word, possibilities, n, cutoff)

    monkeypatch.setattr(difflib, "get_close_matches", counted)
    overlay: dict[str, str | None] = {}
    for i in range(n):
        overlay[f"profiles/p{i:04d}.yaml"] = "params: {}\n"
        overlay[f"models/m{i:04d}.yaml"] = IP542N
        mac = f"0021f2{i:06x}"
        overlay[f"devices/{mac}.yaml"] = (
            f'mac: "{mac}"\nmodel: "no-such-model-{i}"\nprofile: "no-such-profile-{i}"\n'
        )
    found = [p for p in problems(overlay) if p.code in ("GP102", "GP103")]
    assert len(found) == 2 * n
    assert len(looks) <= 200
    for p in found:
        name = p.message.split("'")[1]
        kind = "profiles" if p.code == "GP103" else "models"
        first = "base, p0000, p0001" if kind == "profiles" else "G502N, IP542N, m0000"
        assert p.hint.startswith(f"known {kind}: {first}, "), p
        assert p.hint.endswith(f" more; add {kind}/{name}.yaml"), p
        assert len(p.hint) < 200, p


def test_gp103_a_close_name_that_prints_alike_is_shown_escaped() -> None:
    """A device's `profile: office` when the only file is profiles/оffice.yaml (a Cyrillic
    о): "did you mean 'оffice'?" reads as "did you mean 'office'?", the name written."""
    homoglyph = "\u043effice"
    overlay: dict[str, str | None] = {
        D1: DEVICE.replace("profile: base", "profile: office"),
        f"profiles/{homoglyph}.yaml": "extends: base\n",
    }
    (found,) = [p for p in problems(overlay) if p.code == "GP103"]
    assert "It is written '\\u043effice'" in found.hint, found.hint
    # (a close name of the same script is shown as it is)
    (found,) = [
        p
        for p in problems({D1: DEVICE.replace("profile: base", "profile: bsae")})
        if p.code == "GP103"
    ]
    assert found.hint == "did you mean 'base'?", found.hint


def test_gp104_extends_cycle() -> None:
    cycle = {"profiles/a.yaml": "extends: b\n", "profiles/b.yaml": "extends: a\n"}
    check("GP104", cycle, ("profiles/a.yaml", 1, 10), ("profiles/b.yaml", 1, 10))
    check("GP104", {"profiles/a.yaml": "description: x\nextends: a\n"}, (2, 10))
    check("GP104", {"profiles/a.yaml": "extends: base\n"})


def chain(n: int, prefix: str = "c") -> dict[str, str | None]:
    """Profiles c00 → c01 → … (each extends the next), n in all."""
    return {
        f"profiles/{prefix}{i:02d}.yaml": f"extends: {prefix}{i + 1:02d}\n" if i + 1 < n else "{}\n"
        for i in range(n)
    }


def test_gp125_extends_depth() -> None:
    # 33 profiles: one more than the default limit; reported once, where it is crossed.
    (found,) = check("GP125", chain(33), (1, 10))
    assert "c00 → c01 → … → c32" in found.message and "limits.extends_depth" in found.message
    check("GP125", chain(34), ("profiles/c01.yaml", 1, 10))
    check("GP125", chain(32))
    raised = FLEET + "limits:\n  extends_depth: 40\n"
    check("GP125", {"gitprov.yaml": raised, **chain(40)})
    check("GP125", {"gitprov.yaml": raised, **chain(41)}, ("profiles/c00.yaml", 1, 10))
    # Two branches onto one long trunk: each is reported.
    branches = {**chain(32), **{f"profiles/{b}.yaml": "extends: c00\n" for b in "xy"}}
    check("GP125", branches, ("profiles/x.yaml", 1, 10), ("profiles/y.yaml", 1, 10))
    # A chain that ends in a loop is GP104's.
    looped = {**chain(40), "profiles/c39.yaml": "extends: c00\n"}
    check("GP125", looped)


def test_gp105_duplicate_account_after_layering() -> None:
    check("GP105", {D2: DEVICE_2.replace('"2002"', '"2001"')}, (6, 14))
    # Another port, another server, or a disabled line: no clash.
    other_port = DEVICE_2.replace('"2002"', '"2001"') + "params:\n  sip.server_port: 5070\n"
    check("GP105", {D2: other_port})
    other_server = DEVICE_2.replace('"2002"', '"2001"') + "params:\n  sip.server: sip2.example\n"
    check("GP105", {D2: other_server})
    disabled = DEVICE_2.replace('"2002"', '"2001"').replace("enabled: true", "enabled: false")
    check("GP105", {D2: disabled})
    # The same account on two lines of one device.
    two_lines = DEVICE + '  - enabled: true\n    account: "2001"\n'
    check("GP105", {D1: two_lines}, (9, 14))
    # Named by the first one's SIP line (its slot), which is not a line of the file.
    (clash,) = [p for p in problems({D1: two_lines}) if p.code == "GP105"]
    assert clash.message.endswith("already registered by this device, on its SIP line 1")
    # Set once in a profile that two devices use: reported where it is written, once.
    shared = 'extends: base\nlines:\n  - enabled: true\n    account: "3000"\n'
    check(
        "GP105",
        {
            "profiles/shared.yaml": shared,
            D1: 'mac: "00:21:f2:01:1b:19"\nmodel: IP542N\nprofile: shared\n',
            D2: 'mac: "00:21:f2:01:1b:20"\nmodel: G502N\nprofile: shared\n',
        },
        (4, 14),
    )
    # A device that unsets the inherited account does not register it.
    unset = 'mac: "00:21:f2:01:1b:20"\nmodel: G502N\nprofile: shared\nlines:\n  - account: null\n'
    check(
        "GP105",
        {
            "profiles/shared.yaml": shared,
            D1: 'mac: "00:21:f2:01:1b:19"\nmodel: IP542N\nprofile: shared\n',
            D2: unset,
        },
    )


def test_gp106_duplicate_path() -> None:
    narrow = FLEET.replace('"fv$(MA).conf"', '"fv$(MA:0:6).conf"')
    check("GP106", {"gitprov.yaml": narrow}, (D2, 1, 6))
    check("GP106", {"gitprov.yaml": FLEET.replace('"fv$(MA).conf"', '"$(MAU).cfg"')})


def test_gp106_the_old_names_of_a_key_rotation_too() -> None:
    """Publish refused these ('two different files would be published as …') after
    validate passed them."""
    rotating = FLEET + "  previous:\n    master_key: !secret sip_2001\n    file_name: {}\n"
    line = rotating.count("\n")
    (same,) = check("GP106", {"gitprov.yaml": rotating.format('"fv$(MA).conf"')}, (line, 16))
    assert "is file_name itself" in same.message, same.message
    # One constant old name for every device: the second device's clashes.
    check("GP106", {"gitprov.yaml": rotating.format('"old.conf"')}, (D2, 1, 6))
    # An old name that is a model's bootstrap file.
    check("GP106", {"gitprov.yaml": rotating.format('"IP542N.conf"')}, (D1, 1, 6), (D2, 1, 6))
    check("GP106", {"gitprov.yaml": rotating.format('"old$(MA).conf"')})


def test_gp106_a_firmware_image_named_as_a_bootstrap() -> None:
    """Publish refused it ('two different files would be published as IP542N.conf'),
    without a place, after validate passed it. Only where option 66 publishes that
    bootstrap; a model's own counts too."""
    g502n = "models/G502N.yaml"
    fw = "firmware:\n  file: IP542N.conf\n  version: v1.0.8\n"
    on = {"gitprov.yaml": FLEET + "publish:\n  option66: true\n", g502n: G502N + fw}
    (found,) = check("GP106", on, (g502n, 6, 9))
    assert "option-66 bootstrap of inventory/models/IP542N.yaml" in found.message
    check("GP106", {**on, "gitprov.yaml": FLEET + "publish:\n  option66: [G502N]\n"})
    check(
        "GP106", {**on, "gitprov.yaml": FLEET + "publish:\n  option66: [IP542N]\n"}, (g502n, 6, 9)
    )
    check("GP106", {**on, "gitprov.yaml": FLEET})
    own = {**on, g502n: G502N + fw.replace("IP542N.conf", "G502N.conf")}
    check("GP106", own, (g502n, 6, 9))


def test_gp107_bad_file_name() -> None:
    check("GP107", {"gitprov.yaml": FLEET.replace('"fv$(MA).conf"', '"../fv$(MA).conf"')}, (2, 12))
    check("GP107", {"gitprov.yaml": FLEET.replace('"fv$(MA).conf"', '"cfg/$MA.conf"')}, (2, 12))
    check("GP107", {"gitprov.yaml": FLEET.replace('"fv$(MA).conf"', '"x" ')})


def test_gp107_whitespace_and_a_dollar_would_have_the_device_ask_for_another_name() -> None:
    """The vendor's $(PN) may hold a space ("VOIP ATA"), and `$$` gives a literal `$`:
    the Profile Rule's URL ends at the space, and the device expands the `$` again."""
    spaced = {
        "gitprov.yaml": FLEET.replace('"fv$(MA).conf"', '"fv$(PN)-$(MA).conf"'),
        "models/IP542N.yaml": IP542N.replace("product_name: IP542N", "product_name: VOIP ATA"),
    }
    (found,) = check("GP107", spaced, (2, 12))
    assert "'fvVOIP ATA-" in found.message and "whitespace" in found.message, found.message
    dollar = FLEET.replace('"fv$(MA).conf"', '"fv$$MA.conf"')
    (found,) = check("GP107", {"gitprov.yaml": dollar}, (2, 12))
    assert "'fv$MA.conf'" in found.message and "'$'" in found.message, found.message
    check("GP107", {"gitprov.yaml": FLEET.replace('"fv$(MA).conf"', '"fv$(PN)-$(MA).conf"')})
    # `|` through $(PN): every Profile Rule became two alternative URLs (SPA syntax).
    piped = {**spaced, "models/IP542N.yaml": IP542N.replace("IP542N\n", "IP542N|FXS\n", 1)}
    (found,) = check("GP107", piped, (2, 12))
    assert "'fvIP542N|FXS-" in found.message and "'|'" in found.message, found.message


def test_gp107_the_old_names_of_a_key_rotation_too() -> None:
    """encryption.previous.file_name names files a publish writes too: validate passed
    what every publish then refused, without a place."""
    rotating = FLEET + "  previous:\n    master_key: !secret sip_2001\n    file_name: {}\n"
    line = rotating.count("\n")  # (the last line)
    for bad in ('"../old$(MA).conf"', '".fv$(MA).conf"', '"fv%$(MA).conf"', '"fv?$(MA).conf"'):
        (found,) = check("GP107", {"gitprov.yaml": rotating.format(bad)}, (line, 16))
        assert found.message.startswith("encryption.previous.file_name expands to"), found
    check("GP107", {"gitprov.yaml": rotating.format('"old$(MA).conf"')})


def test_gp108_a_nul_is_not_told_to_go_on_one_line() -> None:
    (found,) = check("GP108", {D1: DEVICE + '    display_name: "Desk\\0"\n'}, (8, 19))
    assert "NUL" in found.hint and "one line" not in found.hint, found.hint


def test_gp108_a_path_is_not_told_about_param_conf() -> None:
    # publish.http_root is no line of param.conf: the hint said a line break "would
    # inject lines into param.conf".
    fleet = FLEET + 'publish:\n  http_root: "var/\\nhttp"\n'
    (found,) = check("GP108", {"gitprov.yaml": fleet}, (9, 14))
    assert "param.conf" not in found.hint and "output and logs" in found.hint, found.hint
    (found,) = check("GP108", {D1: DEVICE + '    display_name: "A\\nB"\n'}, (8, 19))
    assert "param.conf" in found.hint


def test_gp108_value_injection() -> None:
    injected = DEVICE + '    display_name: "Alice\\nDBID_SIP_PASSWORD=x"\n'
    check("GP108", {D1: injected}, (8, 19))
    check("GP108", {D1: DEVICE + "    display_name: |\n      two\n      lines\n"}, (8, 19))
    check("GP108", {D1: DEVICE + '    display_name: "Alice\\r"\n'}, (8, 19))
    check("GP108", {D1: DEVICE + '    display_name: "Alice"\n'})
    check("GP108", {D1: DEVICE + '    display_name: "Zoë 李 – ok"\n'})
    # The joiners that scripts and emoji need are text, not tricks.
    check(
        "GP108",
        {D1: DEVICE + '    display_name: "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"\n'},
    )
    check("GP108", {D1: DEVICE + '    display_name: "\U0001f469\u200d\U0001f4bb"\n'})


@pytest.mark.parametrize(
    "escape",
    [
        "\\x0b",  # VT
        "\\x0c",  # FF
        "\\e",  # ESC
        "\\x7f",  # DEL
        "\\N",  # NEL U+0085
        "\\x9b",  # CSI, a C1 control
        "\\L",  # LINE SEPARATOR U+2028
        "\\P",  # PARAGRAPH SEPARATOR U+2029
        "\\u202e",  # RIGHT-TO-LEFT OVERRIDE
        "\\u200f",  # RIGHT-TO-LEFT MARK
        "\\u2066",  # LEFT-TO-RIGHT ISOLATE
        "\\u061c",  # ARABIC LETTER MARK
        "\\x01",
        "\\u200b",  # ZERO WIDTH SPACE
        "\\u2060",  # WORD JOINER
        "\\u2063",  # INVISIBLE SEPARATOR
        "\\xad",  # SOFT HYPHEN
        "\\u180e",  # MONGOLIAN VOWEL SEPARATOR
        "\\ufeff",  # a byte order mark inside a value
        "\\ufffb",  # INTERLINEAR ANNOTATION TERMINATOR
    ],
)
def test_gp108_refuses_every_control_character(escape: str) -> None:
    (found,) = check("GP108", {D1: DEVICE + f'    display_name: "Desk{escape}"\n'}, (8, 19))
    assert "U+" in found.message or "newline" in found.message
    # In a key, in a profile's params, in a fleet setting that never reaches param.conf:
    # located at the key, or the value.
    check("GP108", {D1: DEVICE + f'    "DBID_X{escape}": "1"\n'}, (8, 5))
    check("GP108", profile(f'  sip.outbound: "sbc{escape}.example.net"\n'), (4, 17))
    check("GP108", {"gitprov.yaml": FLEET + f'fleet: "ex{escape}"\n'}, (8, 8))


@pytest.mark.parametrize(
    ("name", "shown", "what"),
    [
        (
            "0021f2011b21.yaml\n::error file=x::y.yaml",
            "0021f2011b21.yaml\\n::error file=x::y.yaml",
            "a newline",
        ),
        ("0021f2011b21\x1b[8m.yaml", "0021f2011b21\\x1b[8m.yaml", "U+001B"),
        ("0021f2011b21\u202elmay.yaml", "0021f2011b21\\u202elmay.yaml", "U+202E"),
        ("a\tb.yaml", "a\\tb.yaml", "U+0009"),
    ],
)
def test_gp108_refuses_a_file_name_with_a_control_character(
    name: str, shown: str, what: str
) -> None:
    """Printed raw, a newline in a file name would start an output line that looks like
    another file's problem or a CI annotation: the file is not read, its name is shown
    escaped, at the start of the file."""
    (found,) = check("GP108", {f"devices/{name}": DEVICE}, (f"devices/{shown}", 1, 1))
    assert what in found.message
    assert not any(UNSAFE.search(p.file + p.message) for p in problems({f"devices/{name}": DEVICE}))


def test_gp109_tab_in_value() -> None:
    check("GP109", profile('  sip.outbound: "sbc.example.net\\t"\n'), (4, 17))
    check("GP109", {D1: DEVICE + '    display_name: "A\\tB"\n'}, (8, 19))
    # An unknown raw key may hold a whole TAB-separated row.
    check("GP109", profile('  DBID_VENDOR_ROW: "1\\t0\\t0\\t0"\n'))


def test_gp110_bad_rule_url() -> None:
    bad_port = FLEET.replace("prov.example.com", "prov.example.com:99999")
    check("GP110", {"gitprov.yaml": bad_port}, (4, 8))
    with_key = FLEET.replace("http://prov.example.com", "http://user@prov.example.com")
    check("GP110", {"gitprov.yaml": with_key}, (4, 8))
    check("GP110", profile('  provision.upgrade_rule: "http://fw.example.com"\n'), (4, 27))
    check("GP110", profile('  provision.upgrade_rule: "tftp://fw.example.com/G502.bin"\n'))
    check("GP110", profile('  provision.upgrade_rule: "HTTP://fw.example.com/G502.bin"\n'), (4, 27))
    # What no URL carries unencoded, in the base URL (GP107 refuses it in a file name).
    for odd in ("]", "{", "^"):
        bad = FLEET.replace("http://prov.example.com", f"http://prov.example.com/a{odd}b")
        check("GP110", {"gitprov.yaml": bad}, (4, 8))
    # A URL the schema already rejects is reported once, by the schema.
    check("GP110", {"gitprov.yaml": FLEET.replace("http://", "ftp://")})
    check("GP010", {"gitprov.yaml": FLEET.replace("http://", "ftp://")}, (4, 8))
    # The file name is appended to provisioning.url: after a query or a fragment, the
    # device would ask for another path (http://h/?x=1/fv….conf asks for /).
    for tail in ("/?site=1", "/#x", "/prov?"):
        found = check(
            "GP110", {"gitprov.yaml": FLEET.replace(".example.com", ".example.com" + tail)}, (4, 8)
        )
        assert "gitprov appends each file's name to this URL" in found[0].message
    staged = FLEET.replace(
        "provisioning:\n", 'provisioning:\n  stage_url: "https://s.example.net/?a"\n'
    )
    check("GP110", {"gitprov.yaml": staged}, (4, 14))
    # The vendor's own example URL, http://h:8080/prov/$PN/$MAU.conf: a directory per
    # product, which the flat roots never have (every device would get a 404).
    for tail in ("/prov/$PN", "/$(MAU:4)/x", "/a$$b"):
        found = check(
            "GP110", {"gitprov.yaml": FLEET.replace(".example.com", ".example.com" + tail)}, (4, 8)
        )
        assert "has a macro in its path" in found[0].message
    # A fixed directory is served (serve --url-path, nginx alias); a macro in file_name too.
    check("GP110", {"gitprov.yaml": FLEET.replace(".example.com", ".example.com/prov/")})
    check("GP110", {"gitprov.yaml": FLEET.replace("fv$(MA)", "fv$(PN)-$(MA)")})


def test_gp111_unknown_macro_warns() -> None:
    fleet = "gitprov.yaml"
    found = check("GP111", {fleet: FLEET.replace("$(MA)", "$(MACADDR)")}, (2, 12))
    assert found[0].level is Level.WARNING
    check("GP111", {fleet: FLEET.replace("$(MA)", "$(MA:x)")}, (2, 12))
    check("GP111", {fleet: FLEET.replace("$(MA)", "$(MA)-$IP")}, (2, 12))
    check("GP111", {fleet: FLEET.replace("example.com", "example.com/$STRANGE")}, (4, 8))
    serials = {
        D1: DEVICE.replace("profile:", 'serial: "E3C0810900"\nprofile:'),
        "devices/0021f2011b20.yaml": DEVICE_2.replace("profile:", 'serial: "E3C0810901"\nprofile:'),
    }
    check("GP111", {fleet: FLEET.replace("$(MA)", "$(MAU:4)-$SN$$"), **serials})
    # A name ends at the first character that is not a letter or a digit (the overview,
    # section 3): `$MA_x` is $MA and `_x`; `$MAx` is the unknown name MAx.
    check("GP111", {fleet: FLEET.replace("$(MA)", "$MA_x")})
    check("GP111", {fleet: FLEET.replace("$(MA)", "$MAx")}, (2, 12))
    check("GP111", {fleet: FLEET.replace("$(MA)", "$(MA_X)")}, (2, 12))


def test_gp111_a_macro_of_the_spa_family_in_a_url_warns() -> None:
    """The overview lists eight macros (section 3), and wins where the SPA guides it
    copies say more: a URL that counts on $EXTIP or $A may reach the server as written."""
    fleet = "gitprov.yaml"
    for name in ("$(EXTIP)", "$A", "$(SERV)"):
        url = FLEET.replace("example.com", f"example.com/{name}")
        (found,) = check("GP111", {fleet: url}, (4, 8))
        assert "SPA family" in found.message and found.level is Level.WARNING, found.message
    overview = "example.com/$(PN)/$(SWVER)-$(HWVER)/$IP/$(SN)/$(MAU)"
    check("GP111", {fleet: FLEET.replace("example.com", overview)})


def test_gp111_a_doubled_dollar_in_a_url_warns() -> None:
    """The overview reads `$$MAU` as `$` and the MAC (section 3's list) and as `$MAU`
    (its next paragraph): which file the device asks for is not certain."""
    url = FLEET.replace("example.com", "example.com/a$$MAU")
    (found,) = check("GP111", {"gitprov.yaml": url}, (4, 8))
    assert "'$$' (character" in found.message and found.level is Level.WARNING, found.message


def test_gp111_in_the_old_names_of_a_key_rotation() -> None:
    rotating = FLEET + "  previous:\n    master_key: !secret sip_2001\n    file_name: {}\n"
    line = rotating.count("\n")
    (found,) = check("GP111", {"gitprov.yaml": rotating.format('"fv$(NOPE).conf"')}, (line, 16))
    assert found.message.startswith("encryption.previous.file_name: $NOPE"), found.message
    check("GP111", {"gitprov.yaml": rotating.format('"old$(MA).conf"')})


def test_gp111_sn_in_file_name_for_a_device_without_a_serial() -> None:
    # gitprov would publish `fv…-$SN.conf`; the device expands $SN to its serial and asks
    # for another name: it would never find its file.
    fleet = "gitprov.yaml"
    with_sn = FLEET.replace("$(MA)", "$(MA)-$SN")
    d2 = "devices/0021f2011b20.yaml"
    serial = DEVICE_2.replace("profile:", 'serial: "E3C0810901"\nprofile:')
    (both,) = check("GP111", {fleet: with_sn}, (2, 12))
    assert "2 device(s) without a serial" in both.message
    (one,) = check("GP111", {fleet: with_sn, d2: serial}, (2, 12))
    assert f"1 device(s) without a serial (first: inventory/{D1})" in one.message
    assert "'fv0021f2011b19-$SN.conf'" in one.message
    check(
        "GP111", {fleet: with_sn, d2: serial, D1: DEVICE.replace("profile:", "serial: x\nprofile:")}
    )
    check("GP111", {fleet: FLEET.replace("$(MA)", "$(MA)-$$SN")})  # a literal $SN
    # Validated from a parent whose devices all had serials: the index follows the change.
    parent = {fleet: with_sn, d2: serial, D1: DEVICE.replace("profile:", "serial: x\nprofile:")}
    check("GP111", {fleet: with_sn, d2: serial, D1: DEVICE}, (2, 12), parent=parent)


def test_gp112_device_file_name_warns() -> None:
    moved = DEVICE.replace("1b:19", "1b:21")
    found = check("GP112", {"devices/reception.yaml": moved}, (1, 6))
    assert found[0].level is Level.WARNING
    check("GP112", {D1: DEVICE.replace("1b:19", "1b:21")}, (1, 6))
    check("GP112", {"devices/0021F2011B21.yaml": moved})


def test_gp113_version_floor_lowered() -> None:
    higher = {"gitprov.yaml": FLEET.replace("1000", "2000")}
    check("GP113", {"gitprov.yaml": FLEET}, (1, 16), parent=higher)
    check("GP113", higher, parent={"gitprov.yaml": FLEET})
    check("GP113", {"gitprov.yaml": FLEET}, parent={"gitprov.yaml": FLEET})
    check("GP113", {"gitprov.yaml": FLEET})


def test_gp114_unknown_dbid_key_warns_and_is_an_error_when_strict() -> None:
    typo = profile("  DBID_WEB_SIP_SEVRER: sip.example.net\n")
    (found,) = check("GP114", typo, (4, 3))
    assert found.level is Level.WARNING
    assert "did you mean DBID_WEB_SIP_SERVER?" in found.hint
    (found,) = check("GP114", typo, (4, 3), strict=True)
    assert found.level is Level.ERROR
    check("GP114", {D1: DEVICE + "    DBID_LINE_THING: 1\n"}, (8, 5))
    check("GP114", profile("  DBID_WEB_SIP_SERVER: sip.example.net\n"))


def test_gp115_unknown_secret() -> None:
    check("GP115", {D1: DEVICE.replace("sip_2001", "sip_9999")}, (7, 15))
    check("GP115", {D1: DEVICE.replace("sip_2001", "sip_2002")})
    # No name, or one `gitprov secrets set` refuses: no hint to run it, nothing unescaped.
    (empty,) = check("GP115", {D1: DEVICE.replace("!secret sip_2001", "!secret")}, (7, 15))
    assert empty.message == "!secret without a name"
    assert empty.hint.startswith("write `!secret NAME`: a secret's name is 1-64 letters")
    odd = DEVICE.replace("!secret sip_2001", '!secret "../x y\\u202e"')
    (bad,) = check("GP115", {D1: odd}, (7, 15))
    assert bad.message == "'../x y\\u202e' cannot be a secret's name"
    assert "gitprov secrets set" not in bad.hint and "\u202e" not in bad.hint


def test_gp116_unpublished_param() -> None:
    check("GP116", profile("  provision.resync_periodic: 86400\n"), (4, 3))
    check("GP116", profile("  provision.config_file_name: IP542N.conf\n"), (4, 3))
    check("GP116", profile("  DBID_PRV_OPTION66_ENABLED: 0\n"))


def test_gp117_managed_param() -> None:
    check("GP117", profile("  DBID_DBASE_VERSION: 2208\n"), (4, 3))
    check("GP117", profile('  DBID_PROFILE_RULE: "http://x/y.conf"\n'), (4, 3))


def test_gp118_no_key_source() -> None:
    no_master = {"gitprov.yaml": FLEET.replace("  master_key: !secret fleet_master_key\n", "")}
    check("GP118", no_master, (6, 9))
    check("GP118", {"gitprov.yaml": FLEET.replace("mode: openssl-md5", "mode: none")})
    # One device with its own key, the other without: the other is reported.
    keyed = DEVICE.replace("model: IP542N", "model: IP542N\nkey: !secret sip_2002")
    check("GP118", {**no_master, D1: keyed}, (D2, 1, 1))
    # A model may turn encryption off for its devices.
    plain_model = "family: flyingvoice\nline_count: 2\nencryption:\n  mode: none\n"
    check("GP118", {**no_master, D1: keyed, "models/G502N.yaml": plain_model})


def test_gp119_demo_key_warns() -> None:
    demo = "gitprov-pk-OynYgOcSSeo7rOiuhBmyMxjw9FlMrAkzhDixRkPcPDQ"
    secrets = SECRETS.replace(SECRETS.split()[1], demo)
    (found,) = check("GP119", {"secrets.yaml": secrets}, (1, 13))
    assert found.level is Level.WARNING


def test_gp120_upgrade_over_https() -> None:
    https = '  provision.upgrade_rule: "https://fw.example.com/G502_F107_S334.bin"\n'
    check("GP120", profile(https), (4, 27))
    check("GP120", profile(https.replace("https", "http")))
    check("GP120", profile(https.replace("https", "tftp")))


def test_gp121_number_spelling() -> None:
    check("GP121", profile("  sip.outbound_port: 05060\n"), (4, 22))
    check("GP121", profile("  DBID_VOICEMAIL_PIN: 0123\n"), (4, 23))
    check("GP121", profile("  DBID_SOME_COUNT: 1_000\n"), (4, 20))
    check("GP121", profile("  DBID_SOME_TIME: 1:30\n"), (4, 19))
    check("GP121", profile("  sip.outbound_port: 5060\n  DBID_SOME_COUNT: 07\n"))


@pytest.mark.parametrize(
    ("percent", "read_as"),
    [
        # more digits than a float keeps: 100 % where the text says less
        ("99.99999999999999999", "100.0"),
        ("0.30000000000000001", "0.3"),
        ("1.0e-400", "0.0"),  # past a float's range: no device where the text says some
        ("1:30.5", "90.5"),  # base 60
        ("1_2.5", "12.5"),  # YAML 1.1 only
        ("12.5", None),
        ("12.50", None),
        (".5", None),
        ("1.5e+1", None),
        ("1.0e-320", None),  # (a subnormal float, still exactly what is written)
        ("0.1", None),
    ],
)
def test_gp121_a_float_read_as_another_number(percent: str, read_as: str | None) -> None:
    """A rollout's percent (the one number of the schemas that is no integer) went
    through YAML's float: 99.99999999999999999 chose every device, silently."""
    fw = "firmware:\n  file: IP542N_F108.bin\n  version: v1.0.8\n"
    model = IP542N_BOUND + fw + f"  rollout: {{percent: {percent}}}\n"
    if read_as is None:
        check("GP121", {M1: model})
        return
    (found,) = check("GP121", {M1: model}, (13, 22))
    assert f"unquoted {percent} is read as the number {read_as}" in found.message


def test_gp122_too_many_lines() -> None:
    three = DEVICE_2 + "  - enabled: false\n  - enabled: true\n"
    check("GP122", {D2: three}, (9, 5))
    check("GP122", {D2: DEVICE_2 + "  - enabled: false\n"})
    check("GP122", {D2: DEVICE_2 + "  - enabled: false\n  - null\n"})


def test_gp123_wrong_scope() -> None:
    check("GP123", profile('  DBID_SIP_ACCOUNT: "2001"\n'), (4, 3))
    check("GP123", {D1: DEVICE + "    DBID_WEB_SIP_SERVER: sip.example.net\n"}, (8, 5))
    check("GP123", {D1: DEVICE + '    DBID_SIP_DIS_NAME: "Desk"\n'})


def test_gp124_plaintext_secret() -> None:
    (found,) = check("GP124", {D1: DEVICE.replace("!secret sip_2001", '"s3cret"')}, (7, 15))
    assert "s3cret" not in found.message + found.hint
    master = FLEET.replace("!secret fleet_master_key", "hunter2")
    check("GP124", {"gitprov.yaml": master}, (7, 15))
    check("GP124", {D1: DEVICE + 'key: "k3y"\n'}, (8, 6))
    check("GP124", profile("  tr069.acs_password: pa55\n"), (4, 23))
    check("GP124", {D1: DEVICE.replace("!secret sip_2001", '""')})  # (no password)
    # A key is never empty: the build would have none to derive from.
    empty = FLEET.replace("!secret fleet_master_key", '""')
    (found,) = check("GP124", {"gitprov.yaml": empty}, (7, 15))
    assert "empty" in found.message
    check("GP124", {D1: DEVICE + 'key: ""\n'}, (8, 6))
    check("GP124", {D1: DEVICE + 'previous_key: "0ld"\n'}, (8, 15))
    check("GP124", {D1: DEVICE + 'previous_key: ""\n'}, (8, 15))


def test_gp124_a_raw_key_named_as_a_secret_with_a_plain_value_is_warned_of() -> None:
    """A raw key the catalog does not know, named as `gitprov import` would seal it."""
    (found,) = check("GP124", profile('  DBID_WEB_ADMIN_PWD: "hunter4hunter4"\n'), (4, 23))
    assert not found.is_error and "hunter4" not in found.message + found.hint
    check("GP124", profile("  DBID_MY_ADMIN_PASSWORD: 123456\n"), (4, 27))
    check("GP124", profile("  DBID_WEB_ADMIN_PWD: !secret sip_2001\n"))  # (sealed)
    check("GP124", profile("  DBID_PIN_ENABLE: 1\n"))  # (a switch)
    check("GP124", profile("  DBID_PASSTHROUGH_MODE: 2\n"))  # (no word of it says so)


@pytest.mark.parametrize("code", [m.CODE for m in modules()])
def test_every_rule_has_a_test_here(code: str) -> None:
    assert f"def test_{code.lower()}_" in Path(__file__).read_text()


def test_managed_and_unpublished_names_get_one_problem_each() -> None:
    found = problems(profile("  provision.version: 7\n  provision.upgrade_enable: true\n"))
    assert [(p.line, p.col, p.code) for p in found] == [(4, 3, "GP117"), (5, 3, "GP116")]


def test_the_inventory_docs_list_every_rule() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "inventory.md").read_text()
    for m in modules():
        assert f"| {m.CODE} | {m.NAME} |" in docs, m.CODE


def test_the_pre_commit_hook_validates_the_work_tree() -> None:
    import yaml

    hooks = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml").read_text()
    )
    (hook,) = [h for h in hooks if h["id"] == "gitprov-validate"]
    assert hook["entry"] == "gitprov validate --worktree"
    assert hook["pass_filenames"] is False
    assert hook["files"] == "^inventory/"
    assert hook["language"] == "python"


def test_the_demo_public_key_belongs_to_the_demo_private_key() -> None:
    from gitprov.rules.demo_key import DEMO_PUBLIC_KEY
    from gitprov.secrets import public_key_of
    from tests.fixtures.gitrepo import EXAMPLE, demo_private_key

    assert public_key_of(demo_private_key()) == DEMO_PUBLIC_KEY
    assert f"public_key: {DEMO_PUBLIC_KEY}\n" in (EXAMPLE / "secrets.yaml").read_text()


def context(files: dict[str, str | None]) -> RuleContext:
    docs, _ = load_documents(MemorySource(inventory(files)))
    return RuleContext(docs, load_catalog())


def test_profile_chains_resolve_once_each_and_stop_where_the_rules_say() -> None:
    ctx = context(
        {
            "profiles/a.yaml": "extends: b\n",
            "profiles/b.yaml": "extends: base\n",
            "profiles/x.yaml": "extends: y\n",
            "profiles/y.yaml": "extends: z\n",
            "profiles/z.yaml": "extends: y\n",
            "profiles/u.yaml": "extends: nowhere\n",
        }
    )

    def names(profile: str) -> list[str]:
        return [Path(d.path).stem for d in ctx.profile_chain(profile)]

    assert names("a") == ["a", "b", "base"]
    assert names("b") == ["b", "base"]
    # A loop goes round once from wherever it is entered; an unknown name ends the chain.
    assert names("x") == ["x", "y", "z"]
    assert names("z") == ["z", "y"]
    assert names("u") == ["u"]
    assert names("nowhere") == []
    device = next(d for d in ctx.devices if d.path.endswith("0021f2011b19.yaml"))
    assert [Path(d.path).stem for d in ctx.layers(device)] == [
        "gitprov",
        "base",
        "IP542N",
        "0021f2011b19",
    ]


def test_a_long_chain_is_cut_after_the_limit_and_costs_its_length() -> None:
    ctx = context(chain(5_000))
    started = time.monotonic()
    for i in range(0, 5_000, 7):
        assert len(ctx.profile_chain(f"c{i:02d}")) == min(5_000 - i, 33)
    assert time.monotonic() - started < 1


# -- bindings (GP126-GP129) and firmware upgrades (GP130) ------------------------------
IP542N_BOUND = """\
family: flyingvoice
product_name: IP542N
config_file_name: IP542N.conf
line_count: 4
bindings:
  provision.resync_periodic:
    key: DBID_RESYNC_PERIODIC
    source: "exported configuration of an IP542N"
  provision.upgrade_rule: {key: DBID_UPGRADE_RULE, source: "the same export"}
"""
M1 = "models/IP542N.yaml"
M2 = "models/G502N.yaml"
G502N_BOUND = """\
family: flyingvoice
line_count: 2
bindings:
  provision.resync_periodic: {key: DBID_RESYNC_PERIODIC, source: "a G502N's web page"}
"""


def binding(entry: str) -> dict[str, str]:
    """The IP542N model with one binding (line 6) of `entry`."""
    return {M1: IP542N_BOUND.split("bindings:")[0] + "bindings:\n" + entry}


def test_gp116_applies_only_where_the_devices_model_binds_no_key() -> None:
    periodic = "  provision.resync_periodic: 86400\n"
    # base reaches D1 (IP542N, bound) and D2 (G502N, not bound): an error for D2's sake.
    (found,) = check("GP116", {**profile(periodic), M1: IP542N_BOUND}, (4, 3))
    assert "G502N" in found.message and "0021f2011b20" in found.message
    check("GP116", {**profile(periodic), M1: IP542N_BOUND, M2: G502N_BOUND})
    own = "params:\n  provision.resync_periodic: 60\n"
    check("GP116", {D1: DEVICE + own, M1: IP542N_BOUND})
    check("GP116", {D2: DEVICE_2 + own, M1: IP542N_BOUND}, (9, 3))
    check("GP116", {D2: DEVICE_2 + own.replace("60", "null"), M1: IP542N_BOUND})
    check("GP116", {M2: G502N_BOUND.split("bindings:")[0] + own}, (4, 3))
    check("GP116", {M2: G502N_BOUND + own})
    # The fleet reaches every device; a profile no device uses, only its own binding.
    fleet = FLEET + "params:\n" + periodic
    check("GP116", {"gitprov.yaml": fleet, M1: IP542N_BOUND}, (9, 3))
    check("GP116", {"gitprov.yaml": fleet, M1: IP542N_BOUND, M2: G502N_BOUND})
    check("GP116", {"profiles/spare.yaml": "params:\n" + periodic}, (2, 3))
    check("GP116", {"profiles/spare.yaml": "params:\n" + periodic, M2: G502N_BOUND})


def test_gp114_a_bound_key_is_known() -> None:
    raw = profile("  DBID_RESYNC_PERIODIC: 60\n")
    check("GP114", raw, (4, 3))
    check("GP114", {**raw, M1: IP542N_BOUND}, strict=True)


def test_gp110_and_gp120_check_a_bound_upgrade_rule_key() -> None:
    raw = '  DBID_UPGRADE_RULE: "https://fw.example.com/G502_F107_S334.bin"\n'
    check("GP120", {**profile(raw), M1: IP542N_BOUND}, (4, 22))
    check("GP120", profile(raw))  # not bound: an unknown key (GP114), nothing to check
    check("GP120", {**profile(raw.replace("https", "http")), M1: IP542N_BOUND})
    no_path = '  DBID_UPGRADE_RULE: "http://fw.example.com"\n'
    check("GP110", {**profile(no_path), M1: IP542N_BOUND}, (4, 22))
    check("GP110", profile(no_path))


def test_gp110_and_gp120_check_the_firmware_rule() -> None:
    fw = "firmware:\n  file: IP542N_F108.bin\n  version: v1.0.8\n"
    # The default rule: provisioning.url/FILE, which is https:// when the fleet is.
    https_fleet = {"gitprov.yaml": FLEET.replace("http://", "https://")}
    check("GP120", {M1: IP542N_BOUND + fw, **https_fleet}, (11, 3))
    check("GP120", {M1: IP542N_BOUND + fw})
    check("GP120", {M1: IP542N + fw, **https_fleet})  # no Upgrade Rule key: nothing written
    rule = '  rule: "https://fw.example.com/IP542N_F108.bin"\n'
    check("GP120", {M1: IP542N_BOUND + fw + rule}, (13, 9))
    check("GP120", {M1: IP542N_BOUND + fw + rule.replace("https", "tftp"), **https_fleet})
    check("GP110", {M1: IP542N_BOUND + fw + rule.replace("/IP542N_F108.bin", "")}, (13, 9))


def test_gp126_binding_key() -> None:
    check("GP126", binding("  provision.resync_periodic: {key: dbid_x, source: s}\n"), (6, 36))
    check("GP126", binding("  provision.resync_periodic: {source: s}\n"), (6, 30))
    taken = binding("  provision.upgrade_enable: {key: DBID_SIP_ENABLE, source: s}\n")
    (found,) = check("GP126", taken, (6, 35))
    assert "line.enabled" in found.message
    twice = (
        "  provision.upgrade_enable: {key: DBID_X, source: s}\n"
        "  provision.resync_periodic: {key: DBID_X, source: s}\n"
    )
    check("GP126", binding(twice), (7, 36))
    check("GP126", {M1: IP542N_BOUND})


def test_gp127_binding_name() -> None:
    typo_name = binding("  provision.resync_period: {key: DBID_X, source: s}\n")
    (typo,) = check("GP127", typo_name, (6, 3))
    assert "did you mean provision.resync_periodic?" in typo.hint
    check("GP127", binding("  sip.server: {key: DBID_X, source: s}\n"), (6, 3))
    check("GP127", binding("  provision.config_file_name: {key: DBID_X, source: s}\n"), (6, 3))
    check("GP127", {M1: IP542N_BOUND})


def test_gp128_binding_source() -> None:
    check("GP128", binding("  provision.resync_periodic: {key: DBID_X}\n"), (6, 30))
    check("GP128", binding('  provision.resync_periodic: {key: DBID_X, source: " "}\n'), (6, 52))
    check("GP128", {M1: IP542N_BOUND})


def test_gp129_bound_value() -> None:
    check("GP129", {**profile('  DBID_RESYNC_PERIODIC: "hourly"\n'), M1: IP542N_BOUND}, (4, 25))
    check("GP129", {**profile("  DBID_RESYNC_PERIODIC: -1\n"), M1: IP542N_BOUND}, (4, 25))
    check("GP129", {**profile("  DBID_RESYNC_PERIODIC: 3600\n"), M1: IP542N_BOUND})
    check("GP129", profile('  DBID_RESYNC_PERIODIC: "hourly"\n'))
    check("GP129", {D1: DEVICE + "params:\n  DBID_UPGRADE_RULE: 7\n", M1: IP542N_BOUND}, (9, 22))


def test_gp130_firmware_upgrade() -> None:
    fw = "firmware:\n  file: IP542N_F108.bin\n  version: v1.0.8\n"
    rollout = "  rollout: {percent: 5}\n"
    check("GP130", {M1: IP542N + fw + rollout}, (8, 3))
    (warned,) = check("GP130", {M1: IP542N + fw}, (6, 9))
    assert warned.level is Level.WARNING
    check("GP130", {M1: IP542N_BOUND + fw + rollout})
    check("GP130", {M1: IP542N_BOUND + fw.replace("  version: v1.0.8\n", "")}, (11, 3))
    no_url = FLEET.replace('provisioning:\n  url: "http://prov.example.com"\n', "")
    check("GP130", {M1: IP542N_BOUND + fw, "gitprov.yaml": no_url}, (11, 3))
    macs = '  rollout: {macs: ["00:21:f2:01:1b:19", "0021f2011b20"]}\n'
    check("GP130", {M1: IP542N_BOUND + fw + macs}, (13, 41))


def test_gp131_key_delivery() -> None:
    def fleet(publish: str, *, stage_url: str = "", mode: str = "openssl-md5") -> dict[str, str]:
        text = FLEET.replace("mode: openssl-md5", f"mode: {mode}")
        if stage_url:
            text = text.replace(
                '  url: "http://prov.example.com"\n',
                f'  url: "http://prov.example.com"\n  stage_url: "{stage_url}"\n',
            )
        return {"gitprov.yaml": text + "publish:\n" + publish}

    staged = "  option66: true\n  key_delivery: "
    # Line 10 (11 with a stage_url line), column 17: the value of key_delivery.
    (plain,) = check("GP131", fleet(staged + "plaintext-bootstrap\n"), (10, 17))
    assert plain.level is Level.WARNING and "anyone who knows" in plain.message
    (https,) = check("GP131", fleet(staged + "https-stage\n"), (10, 17))
    assert https.level is Level.ERROR and "needs an HTTPS URL" in https.message
    check("GP131", fleet(staged + "https-stage\n", stage_url="https://prov.example.com:8443"))
    check("GP131", fleet(staged + "manual\n"))
    check("GP131", fleet("  option66: true\n"))
    (idle,) = check(
        "GP131", fleet("  key_delivery: https-stage\n", stage_url="https://s.example.com"), (10, 17)
    )
    assert idle.level is Level.WARNING and "without publish.option66" in idle.message
    (none,) = check(
        "GP131",
        fleet(staged + "https-stage\n", stage_url="https://s.example.com", mode="none"),
        (11, 17),
    )
    assert none.level is Level.WARNING and "delivers no key" in none.message
    # The schema refuses a stage_url that is not https:// (and GP131 stays quiet about it).
    found = problems(fleet(staged + "https-stage\n", stage_url="http://s.example.com"))
    assert any(p.line == 5 and p.level is Level.ERROR for p in found), found


def test_gp132_duplicate_name_of_a_profile_or_a_model() -> None:
    evil = "params:\n  sip.server: evil.example.net\n"
    (found,) = check(
        "GP132", {"profiles/base.yml": evil}, ("profiles/base.yml", 1, 1)
    )  # (base.yaml comes first: the one a reviewer reads is named)
    assert "profile 'base' is also defined by inventory/profiles/base.yaml" in found.message
    (found,) = check("GP132", {"models/IP542N.yml": IP542N}, ("models/IP542N.yml", 1, 1))
    assert found.message.startswith("model 'IP542N'"), found.message
    check("GP132", {"profiles/other.yml": evil})
    check("GP132", {"profiles/IP542N.yaml": evil})  # (a profile named as a model)


def test_gp301_option66_names_a_model_the_inventory_lacks() -> None:
    """Found at publish only, after the merge: now in review, at their place."""
    fleet = FLEET + "publish:\n  option66: [IP542N, G502X]\n"
    line = fleet.count("\n")  # (the list's line, the last)
    col = fleet.splitlines()[-1].index("G502X") + 1
    (found,) = check("GP301", {"gitprov.yaml": fleet}, (line, col))
    assert "model 'G502X', which has no models/G502X.yaml" in found.message
    check("GP301", {"gitprov.yaml": FLEET + "publish:\n  option66: true\n"})
    check("GP301", {"gitprov.yaml": FLEET + "publish:\n  option66: [IP542N]\n"})


def test_gp302_option66_without_a_provisioning_url() -> None:
    no_url = FLEET.replace('provisioning:\n  url: "http://prov.example.com"\n', "")
    assert no_url != FLEET
    on = no_url + "publish:\n  option66: true\n"
    check("GP302", {"gitprov.yaml": on}, (on.count("\n"), 13))
    check("GP302", {"gitprov.yaml": no_url + "publish:\n  option66: false\n"})
    check("GP302", {"gitprov.yaml": FLEET + "publish:\n  option66: true\n"})


def test_gp133_option66_turned_on_where_a_profile_rule_is_written() -> None:
    """With provisioning.url, each device's file carries its Profile Rule: a layer that
    turns option 66 on makes the device ignore it (vendor overview 2.1, 4.4)."""
    (found,) = check("GP133", profile("  provision.option66: true\n"), (BASE, 4, 23))
    assert "provision.option66 turns option 66 on" in found.message, found.message
    check("GP133", {D1: DEVICE + "params:\n  DBID_PRV_OPTION66_ENABLED: 1\n"}, (D1, 9, 30))
    check("GP133", profile("  provision.option66: false\n"))
    check("GP133", {D1: DEVICE + "params:\n  DBID_PRV_OPTION66_ENABLED: 0\n"})
    # Without provisioning.url gitprov writes no Profile Rule: option 66 is the operator's.
    no_url = FLEET.replace('provisioning:\n  url: "http://prov.example.com"\n', "")
    assert no_url != FLEET
    check("GP133", {"gitprov.yaml": no_url, **profile("  provision.option66: true\n")})


def test_gp134_a_profile_or_model_no_device_can_name() -> None:
    """profiles/оffice.yaml (a Cyrillic о) validated silently: it reads as the office
    profile in a review, and no device can name it (the schema's name pattern)."""
    evil = "params:\n  sip.server: evil.example.net\n"
    homoglyph = "profiles/\u043effice.yaml"
    (found,) = check("GP134", {homoglyph: evil}, (homoglyph, 1, 1))
    assert found.level is Level.WARNING
    assert "the profile '\u043effice'" in found.message, found.message
    assert "U+043E CYRILLIC SMALL LETTER O" in found.message, found.message
    (found,) = check("GP134", {"models/G502N ATA.yml": G502N}, ("models/G502N ATA.yml", 1, 1))
    assert "the model 'G502N ATA': it holds ' ' (U+0020 SPACE)" in found.message
    check("GP134", {"profiles/site-2.east_1.yaml": evil, "models/G502N.yml": None})
