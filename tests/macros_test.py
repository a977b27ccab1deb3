from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitprov.macros import (
    KNOWN,
    device_variables,
    escape,
    expand,
    malformed_references,
    normalise_mac,
    unknown_names,
)

# The overview's example device: MAC 0021F2011B19, values from its macro table.
DEVICE = {
    "MA": "0021f2011b19",
    "MAU": "0021F2011B19",
    "MAC": "00:21:f2:01:1b:19",
    "PN": "G502",
    "SN": "E3C08109000051",
    "IP": "201.45.12.89",
    "SWVER": "v3.3.8",
    "HWVER": "v1.0.1",
}
_NAMES = st.sampled_from(sorted(DEVICE))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Section 3, one case per sentence of the overview.
        ("$(MAU)config.cfg", "0021F2011B19config.cfg"),
        ("$STRANGE$MAU.cfg", "$STRANGE0021F2011B19.cfg"),
        ("$$", "$"),
        ("$$MAU", "$MAU"),
        ("$MAU", "0021F2011B19"),
        ("$MA", "0021f2011b19"),
        ("$MAC", "00:21:f2:01:1b:19"),
        ("$(MAC).conf", "00:21:f2:01:1b:19.conf"),
        ("$PN", "G502"),
        ("$SN", "E3C08109000051"),
        ("$IP", "201.45.12.89"),
        ("$SWVER", "v3.3.8"),
        ("$HWVER", "v1.0.1"),
        ("$(MAU:4)", "F2011B19"),
        ("$(MAU:8:2)", "1B"),
        # Section 2.2 and 4: the example URLs.
        ("tftp://prov.call.com/cpe/CW$MA.conf", "tftp://prov.call.com/cpe/CW0021f2011b19.conf"),
        (
            "http://neptune.speak.net:8080/prov/$PN/$MAU.conf",
            "http://neptune.speak.net:8080/prov/G502/0021F2011B19.conf",
        ),
        ("fv$(MAU).conf", "fv0021F2011B19.conf"),
        (
            "http://www.flyingvoice.com/fv$(MAU).conf",
            "http://www.flyingvoice.com/fv0021F2011B19.conf",
        ),
        ("https://192.168.20.17/param_$MAU.conf", "https://192.168.20.17/param_0021F2011B19.conf"),
    ],
)
def test_reference_examples(text: str, expected: str) -> None:
    assert expand(text, DEVICE) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("no macros here", "no macros here"),
        # The longest run of letters and digits is the name.
        ("$MAUconfig.cfg", "$MAUconfig.cfg"),
        ("$MA1", "$MA1"),
        ("$MA-1", "0021f2011b19-1"),
        ("$MA.$MAU", "0021f2011b19.0021F2011B19"),
        ("$MA$MA", "0021f2011b190021f2011b19"),
        # Names are case-sensitive.
        ("$mau", "$mau"),
        ("$(mau)", "$(mau)"),
        # `_` is not alphanumeric: a name never holds one, in either form.
        ("$(MA_X)", "$(MA_X)"),
        ("$(MA_X:1)", "$(MA_X:1)"),
        # Unknown names keep their written form, parentheses and substring included.
        ("$(STRANGE)", "$(STRANGE)"),
        ("$(STRANGE:1:2)x", "$(STRANGE:1:2)x"),
        # Substrings.
        ("$(MAU:0)", "0021F2011B19"),
        ("$(MAU:0:0)", ""),
        ("$(MAU:11)", "9"),
        ("$(MAU:12)", ""),
        ("$(MAU:99)", ""),
        ("$(MAU:99:3)", ""),
        ("$(MAU:10:99)", "19"),
        ("$(MAU:007:2)", "11"),
        ("$(MAC:0:8)", "00:21:f2"),
        # Malformed forms stay as written.
        ("$(MAU:x)", "$(MAU:x)"),
        ("$(MAU:)", "$(MAU:)"),
        ("$(MAU:1:)", "$(MAU:1:)"),
        ("$(MAU:-1)", "$(MAU:-1)"),
        ("$(MAU:1:2:3)", "$(MAU:1:2:3)"),
        ("$( MAU )", "$( MAU )"),
        ("$()", "$()"),
        ("$(", "$("),
        ("$(MAU", "$(MAU"),
        ("$(MAU:x)$MA", "$(MAU:x)0021f2011b19"),
        ("$($MA)", "$(0021f2011b19)"),
        # A `$` before anything but a name, `(` or `$` is just a character.
        ("$", "$"),
        ("cost $5", "cost $5"),
        ("a$", "a$"),
        ("$.conf", "$.conf"),
        ("$/x", "$/x"),
        ("$ MA", "$ MA"),
        # `$$` pairs from the left; the result is not expanded again.
        ("$$$MA", "$0021f2011b19"),
        ("$$$$MA", "$$MA"),
        ("$$(MAU)", "$(MAU)"),
        ("$$$", "$$"),
        # The overview: substitution also works inside quotes.
        ("'$MA'", "'0021f2011b19'"),
        ('"$(MA)"', '"0021f2011b19"'),
    ],
)
def test_edge_cases(text: str, expected: str) -> None:
    assert expand(text, DEVICE) == expected


# The overview, section 3: "If the variable name is immediately followed by an
# alphanumeric character, enclose the variable name in parentheses". So a name ends at the
# first character that is not a letter or a digit, and `_` is not one.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$MA_x.conf", "0021f2011b19_x.conf"),
        ("$MA_1.cfg", "0021f2011b19_1.cfg"),
        ("fv$MAU_cfg", "fv0021F2011B19_cfg"),
        ("$PN_$SN", "G502_E3C08109000051"),
        ("$MA__", "0021f2011b19__"),
        ("$(MA)_x.conf", "0021f2011b19_x.conf"),
        # Followed by a letter or a digit, the name runs on: parentheses are needed.
        ("$MAx.conf", "$MAx.conf"),
        ("$MA1_x.conf", "$MA1_x.conf"),
        ("$(MA)x.conf", "0021f2011b19x.conf"),
        # Every other ASCII punctuation ends a name too.
        *((f"$MA{c}", f"0021f2011b19{c}") for c in string.punctuation.replace("$", "")),
    ],
)
def test_a_name_ends_at_the_first_character_that_is_not_alphanumeric(
    text: str, expected: str
) -> None:
    assert expand(text, DEVICE) == expected


@given(_NAMES, st.text(min_size=1).filter(lambda t: "$" not in t))
def test_a_name_followed_by_a_non_alphanumeric_expands(name: str, rest: str) -> None:
    if rest[0].isascii() and rest[0].isalnum():
        rest = "_" + rest
    assert expand(f"${name}{rest}", DEVICE) == DEVICE[name] + rest


def test_underscores_are_not_unknown_names() -> None:
    # GP111 reads these: `$MA_x` is a known name and a literal `_x`, nothing to report.
    assert unknown_names("fv$MA_x.conf", DEVICE) == []
    assert unknown_names("fv$MAx_1.conf", DEVICE) == [(2, "MAx")]
    assert malformed_references("fv$(MA_X).conf") == [(2, "$(MA_X)")]


def test_a_value_is_never_expanded_again() -> None:
    variables = {"A": "$MA", "B": "$$", "C": "$(A)"}
    assert expand("$A/$B/$(C)/$MA", variables) == "$MA/$$/$(A)/$MA"


def test_known_names() -> None:
    overview = {"MA", "MAU", "MAC", "PN", "SN", "IP", "SWVER", "HWVER"}
    general_purpose = set("ABCDEFGHIJKLMNOP")
    spa = {"SA", "SB", "SC", "SD", "PSN", "EXTIP", "CCERT", "PRVST", "UPGST", "UPGERR"}
    spa |= {"SCHEME", "SERV", "SERVIP", "PORT", "PATH", "ERR"}
    assert overview | general_purpose | spa == KNOWN
    assert "Q" not in KNOWN
    assert "STRANGE" not in KNOWN


def test_unknown_names() -> None:
    text = "$STRANGE$MAU/$(FOO:1)$$BAR$(MAU:x)$mau$"
    assert unknown_names(text, DEVICE) == [(0, "STRANGE"), (13, "FOO"), (34, "mau")]
    assert unknown_names("$$MAU", DEVICE) == []
    assert unknown_names("$MA$(MAU:4)", DEVICE.keys()) == []
    assert unknown_names("$SN-$PN", ["SN"]) == [(4, "PN")]


def test_malformed_references() -> None:
    text = "fv$(MAU:x).conf/$(MAU/$( MAU )$(MAU)$$("
    assert malformed_references(text) == [(2, "$(MAU:x)"), (16, "$(MAU"), (22, "$(")]
    assert malformed_references("$(") == [(0, "$(")]
    assert malformed_references("$(MAU:1:2)$(X)") == []


def test_device_variables() -> None:
    assert device_variables("0021f2011b19") == {
        "MA": "0021f2011b19",
        "MAU": "0021F2011B19",
        "MAC": "00:21:f2:01:1b:19",
    }
    full = device_variables(
        "0021f2011b19",
        product_name="G502",
        serial="E3C08109000051",
        ip="201.45.12.89",
        swver="v3.3.8",
        hwver="v1.0.1",
    )
    assert full == DEVICE


def test_device_variables_leave_missing_values_visible() -> None:
    variables = device_variables("0021f2011b19", product_name="IP542N")
    assert expand("$PN/cfg-$SN.conf", variables) == "IP542N/cfg-$SN.conf"
    assert unknown_names("$PN/cfg-$SN.conf", variables) == [(8, "SN")]


@pytest.mark.parametrize("mac", ["0021F2011B19", "00:21:f2:01:1b:19", "", "0021f2011b1"])
def test_device_variables_want_a_normalised_mac(mac: str) -> None:
    with pytest.raises(ValueError, match="12 lower-case hex"):
        device_variables(mac)


@pytest.mark.parametrize(
    "text",
    [
        "0021f2011b19",
        "0021F2011B19",
        "00:21:f2:01:1b:19",
        "00:21:F2:01:1B:19",
        "00-21-F2-01-1B-19",
        "00-21-f2-01-1b-19",
        "0021.f201.1b19",
        "0021.F201.1B19",
        " 00:21:f2:01:1b:19\n",
    ],
)
def test_normalise_mac(text: str) -> None:
    assert normalise_mac(text) == "0021f2011b19"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0021f2011b1",
        "0021f2011b190",
        "0021f2011b1g",
        "00:21:f2:01:1b",
        "00:21-f2:01:1b:19",
        "0:21:f2:1:1b:19",
        "0021:f201:1b19",
        "0021.f2011b19",
        "00 21 f2 01 1b 19",
        "００21f2011b19",  # full-width digits are not hex
    ],
)
def test_normalise_mac_refuses(text: str) -> None:
    assert normalise_mac(text) is None


_VALUES = st.text()


@given(st.text().filter(lambda t: "$" not in t), st.dictionaries(_NAMES, _VALUES))
def test_text_without_dollar_is_unchanged(text: str, variables: dict[str, str]) -> None:
    assert expand(text, variables) == text


@given(st.text(), st.dictionaries(_NAMES, _VALUES))
def test_escaped_text_expands_back_to_itself(text: str, variables: dict[str, str]) -> None:
    assert expand(text.replace("$", "$$"), variables) == text


@given(st.text().filter(lambda t: "$$" not in t))
def test_without_variables_only_escapes_change(text: str) -> None:
    assert expand(text, {}) == text


@given(st.dictionaries(_NAMES, st.text(alphabet="$()MAU:0123456789")))
def test_values_are_inserted_literally(variables: dict[str, str]) -> None:
    text = "/".join(f"$({name})" for name in sorted(variables))
    assert expand(text, variables) == "/".join(variables[name] for name in sorted(variables))


@given(st.text(alphabet="$()MAU:0123456789x"))
def test_unknown_names_point_at_their_reference(text: str) -> None:
    for offset, name in unknown_names(text, {}):
        assert text[offset] == "$"
        assert text.startswith((name, f"({name}"), offset + 1)


@given(st.text(), st.dictionaries(_NAMES, _VALUES))
def test_escape_expands_back_to_the_literal_text(text: str, variables: dict[str, str]) -> None:
    assert expand(escape(text), variables) == text
