"""The YAML reader: positions of every node, YAML 1.1 readings kept for quoting hints."""

from __future__ import annotations

import datetime

import pytest

from gitprov.yamldoc import Document, SecretRef, parse

TEXT = """\
# a comment
mac: "00:21:f2:01:1b:19"
lines:
  - enabled: yes
    account: 0123
  -   display_name: A
params:
  sip.server: sip.example.net
  password: !secret sip_2001
"""


def doc_of(text: str) -> Document:
    doc, problems = parse("f.yaml", "oid", text.encode())
    assert problems == []
    assert doc is not None
    return doc


def test_positions_of_values_keys_and_list_items() -> None:
    doc = doc_of(TEXT)
    assert doc.pos(("mac",)) == (2, 6)
    assert doc.pos(("mac",), key=True) == (2, 1)
    assert doc.pos(("lines", 0)) == (4, 5)
    assert doc.pos(("lines", 0, "account")) == (5, 14)
    assert doc.pos(("lines", 0, "account"), key=True) == (5, 5)
    assert doc.pos(("lines", 1, "display_name")) == (6, 21)
    assert doc.pos(("params", "password")) == (9, 13)
    # A path that does not exist falls back to its nearest ancestor.
    assert doc.pos(("params", "nothing", 3)) == (8, 3)


def test_yaml_1_1_readings_and_their_source_text() -> None:
    doc = doc_of(TEXT)
    assert doc.data["lines"][0] == {"enabled": True, "account": 83}
    assert doc.raw == {("lines", 0, "enabled"): "yes", ("lines", 0, "account"): "0123"}
    assert doc.data["params"]["password"] == SecretRef("sip_2001")
    assert isinstance(doc.data["params"]["password"], SecretRef)


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("10:21:52:01:13:19", 8059396399),  # base 60
        ("1:30", 90),
        ("0123", 83),  # octal
        ("0x1F", 31),
        ("1_000", 1000),
        ("yes", True),
        ("Off", False),
        ("2024-01-31", datetime.date(2024, 1, 31)),
        ("~", None),
    ],
)
def test_values_that_are_not_strings_keep_their_text(written: str, value: object) -> None:
    doc = doc_of(f"a: {written}\n")
    assert doc.data["a"] == value and type(doc.data["a"]) is type(value)
    assert doc.raw == {("a",): written}
    assert doc.ambiguous == {}


@pytest.mark.parametrize(
    "written", ["00:21:52:01:13:19", "002152011319", "0129", "1e3", "0o17", "y", "N", "-0129"]
)
def test_strings_only_by_luck_are_recorded(written: str) -> None:
    doc = doc_of(f"a: {written}\n")
    assert doc.data["a"] == written
    assert doc.ambiguous == {("a",): written}


@pytest.mark.parametrize(
    "written",
    ['"0123"', "'yes'", "sip.example.net", "192.168.10.207", "E3C08109000051", "23103_name", "no_"],
)
def test_plain_strings_and_quoted_values_are_not_recorded(written: str) -> None:
    doc = doc_of(f"a: {written}\n")
    assert isinstance(doc.data["a"], str)
    assert doc.raw == {} and doc.ambiguous == {}


@pytest.mark.parametrize(
    ("text", "line", "col", "code"),
    [
        (b"a: 1\na: 2\n", 2, 1, "GP004"),
        (b"a: !include x\n", 1, 4, "GP002"),
        (b"base: &b {x: 1}\nother:\n  <<: *b\n", 3, 3, "GP003"),
        (b"? [a, b]\n: 1\n", 1, 3, "GP003"),
    ],
)
def test_constructs_that_are_refused_are_located(
    text: bytes, line: int, col: int, code: str
) -> None:
    _, problems = parse("f.yaml", "oid", text)
    assert [(p.line, p.col, p.code) for p in problems] == [(line, col, code)]


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        (b"a: [1, 2\nb: 3\n", 2, 2),  # unclosed flow sequence
        (b"a:\n  b: 1\n c: 2\n", 3, 2),  # bad indentation
        (b"a: 1\n---\nb: 2\n", 2, 1),  # two documents: at the second
        (b"a: \xff\n", 1, 1),  # not UTF-8
    ],
)
def test_unreadable_files_give_one_located_problem(text: bytes, line: int, col: int) -> None:
    doc, problems = parse("f.yaml", "oid", text)
    assert doc is None
    assert [(p.line, p.col, p.code) for p in problems] == [(line, col, "GP001")]


def test_an_empty_file_is_an_empty_mapping() -> None:
    assert doc_of("").data == {}
    assert doc_of("# only a comment\n").data == {}
