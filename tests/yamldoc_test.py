"""The YAML reader: positions of every node, YAML 1.1 readings kept for quoting hints."""

from __future__ import annotations

import datetime
import pickle
import time

import pytest

from gitprov.limits import Limits
from gitprov.yamldoc import Document, SecretRef, leaves, parse

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


def test_documents_shaped_alike_share_their_paths_and_keep_their_own_numbers() -> None:
    """A fleet's documents keep positions as numbers behind one shared shape, also when
    they come back from a forked worker (pickled), and give the positions they were read
    with; the dictionaries of them are made on demand."""
    one = doc_of(TEXT)
    other = doc_of("\n" + TEXT.replace("A\n", "Another name\n"))
    assert one._shape is other._shape
    assert other.pos(("mac",)) == (3, 6) and one.pos(("mac",)) == (2, 6)
    assert other.positions[("lines", 1, "display_name")] == (7, 21)
    assert one.key_positions[("lines", 0, "account")] == (5, 5)
    assert list(one.positions)[:3] == [(), ("mac",), ("lines",)]
    back = pickle.loads(pickle.dumps([one, other]))
    assert back == [one, other] and back[0]._shape is one._shape
    assert back[1].raw == other.raw and back[1].ambiguous == other.ambiguous
    plain = doc_of("a: b\n")
    assert (plain.raw, plain.ambiguous) == ({}, {})
    assert pickle.loads(pickle.dumps(plain)) == plain
    assert one != other and one != "not a document"
    with pytest.raises(AttributeError):
        one.data = {}
    with pytest.raises(TypeError):
        hash(one)


def test_documents_shaped_alike_share_their_keys() -> None:
    """Every document's mapping keys are one str per path, not one per document read:
    a fleet's devices held about a kilobyte of key text each."""
    one = doc_of(TEXT)
    other = doc_of("\n" + TEXT.replace("A\n", "Another name\n"))
    assert one.data == doc_of(TEXT).data
    keys = [(a, b) for a, b in zip(one.data["lines"][1], other.data["lines"][1], strict=True)]
    assert keys and all(a is b for a, b in keys)
    assert all(a is b for a, b in zip(one.data, other.data, strict=True))


def test_positions_past_32_bits_are_kept() -> None:
    doc = Document("f.yaml", "oid", {"a": 1}, {(): (1, 1), ("a",): (2**33, 7)}, {("a",): (1, 1)})
    assert doc.pos(("a", "b")) == (2**33, 7) and doc.pos(("a",), key=True) == (1, 1)
    assert Document("f.yaml", "oid", {}).pos(("x",)) == (1, 1)


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
        (b"a: \xff\n", 1, 4),  # not UTF-8: at the byte
        (b"a: 1\nb: caf\xe9\n", 2, 7),  # Latin-1: line 2, after "b: caf"
        (b"a: \xc3\xa9\xff\n", 1, 5),  # columns count characters: \xc3\xa9 is one
    ],
)
def test_unreadable_files_give_one_located_problem(text: bytes, line: int, col: int) -> None:
    doc, problems = parse("f.yaml", "oid", text)
    assert doc is None
    assert [(p.line, p.col, p.code) for p in problems] == [(line, col, "GP001")]


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("a: 1  # ok\u2028b: 2\n", 1, 11),  # LINE SEPARATOR: a new line to YAML only
        ("a: 1\n# ok\u2029b: 2\n", 2, 5),  # PARAGRAPH SEPARATOR
        ("a: 1  # ok\x85b: 2\n", 1, 11),  # NEL
        ("a: 1\r\nb: 2  # ok\rc: 3\r\n", 2, 11),  # a CR alone, in a CRLF file
        ("a: 1\rb: 2\r", 1, 5),  # CR line endings (classic Mac OS)
    ],
)
def test_a_line_break_git_does_not_count_is_refused_where_it_is(
    text: str, line: int, col: int
) -> None:
    """libyaml starts a line at each of these, git and every diff do not: what follows
    one in a comment would be read as YAML but reviewed as the comment, and the lines
    after it would not be git's (blame, annotations)."""
    doc, problems = parse("f.yaml", "oid", text.encode())
    assert doc is None
    assert [(p.line, p.col, p.code) for p in problems] == [(line, col, "GP001")]
    assert "YAML starts a new line there" in problems[0].message


def test_crlf_line_endings_are_read_with_git_s_line_numbers() -> None:
    doc = doc_of("a: 1\r\nb: [x,\r\n  y]\r\n")
    assert doc.data == {"a": 1, "b": ["x", "y"]}
    assert doc.pos(("b", 1)) == (3, 3)


def test_an_empty_file_is_an_empty_mapping() -> None:
    assert doc_of("").data == {}
    assert doc_of("# only a comment\n").data == {}


# -- only plain data: tags and directives ------------------------------------------------
@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        (b"a: !!python/name:os.system x\n", 1, 4, "unknown tag !!python/name:os.system"),
        (b"a: !!python/object/apply:os.system [ls]\n", 1, 4, "!!python/object/apply:os.system"),
        (b"params: !!python/object/new:dict {}\n", 1, 9, "unknown tag !!python/object/new:dict"),
        (b"params: !include x.yaml\n", 1, 9, "unknown tag !include"),
        (b"lines: !seq [a]\n", 1, 8, "unknown tag !seq"),
        (b"a: !!str 0123\n", 1, 4, "unknown tag !!str"),
        (b"a: !!int x\n", 1, 4, "unknown tag !!int"),
        (b"a: !!binary aGk=\n", 1, 4, "unknown tag !!binary"),
        (b"a: !!set {x}\n", 1, 4, "unknown tag !!set"),
        (b"a: ! 0123\n", 1, 4, "unknown tag !"),
        (b"!x a: 1\n", 1, 1, "unknown tag !x"),
        (b"a: !secret {b: c}\n", 1, 4, "!secret on a mapping or a list"),
        (b"!secret a: 1\n", 1, 1, "!secret on a key"),
        (b"%TAG !e! tag:yaml.org,2002:python/\n---\na: 1\n", 1, 1, "a %TAG directive (!e!)"),
    ],
)
def test_every_tag_but_secret_is_refused_on_every_kind_of_node(
    text: bytes, line: int, col: int, message: str
) -> None:
    doc, problems = parse("f.yaml", "oid", text)
    assert doc is not None
    assert [(p.line, p.col, p.code) for p in problems] == [(line, col, "GP002")], problems
    assert message in problems[0].message
    # Whatever a tag asks for, only str, int, float, bool, None, dict, list and dates exist.
    for _, value in leaves(doc.data):
        assert type(value) in (str, int, float, bool, type(None), SecretRef, datetime.date)


def test_a_tag_through_a_tag_directive_is_refused_too() -> None:
    text = b"%TAG !e! tag:yaml.org,2002:python/\n---\na: !e!name:os.system x\n"
    _, problems = parse("f.yaml", "oid", text)
    assert [(p.line, p.code) for p in problems] == [(1, "GP002"), (3, "GP002")]
    assert "!!python/name:os.system" in problems[1].message


def test_a_yaml_directive_is_refused_because_gitprov_reads_yaml_1_1() -> None:
    doc, problems = parse("f.yaml", "oid", b"%YAML 1.2\n---\na: yes\n")
    assert doc is not None
    assert [(p.line, p.col, p.code) for p in problems] == [(1, 1, "GP001")]
    assert "%YAML 1.2" in problems[0].message and "1.1" in problems[0].hint


@pytest.mark.parametrize(
    ("written", "what"),
    [
        ("2024-13-45", "a date"),
        ("0000-01-01", "a date"),
        ("0x_", "an integer"),
        ("0b_", "an integer"),
        ("._", "a number"),
    ],
)
def test_a_scalar_yaml_cannot_convert_is_a_quoting_problem(written: str, what: str) -> None:
    doc, problems = parse("f.yaml", "oid", f"serial: {written}\n".encode())
    assert doc is not None and doc.data == {"serial": written}
    if written == "._":  # PyYAML reads it as a string: nothing to say
        assert problems == []
        return
    assert [(p.line, p.col, p.code) for p in problems] == [(1, 9, "GP013")]
    assert what in problems[0].message and f'"{written}"' in problems[0].hint


@pytest.mark.parametrize("value", ["<<", "=", "~x", "1:_"])
def test_odd_plain_scalars_are_strings(value: str) -> None:
    assert doc_of(f"a: {value}\n").data == {"a": value}


# -- aliases ---------------------------------------------------------------------------
def test_an_alias_is_the_node_it_names_located_where_it_is_used() -> None:
    doc = doc_of("base: &b\n  x: 1\nother: *b\nk: &k key\n*k : 2\n")
    assert doc.data == {"base": {"x": 1}, "other": {"x": 1}, "k": "key", "key": 2}
    assert doc.pos(("other",)) == (3, 8)
    assert doc.pos(("other", "x")) == (2, 6)
    assert doc.pos(("key",), key=True) == (5, 1)


@pytest.mark.parametrize(
    ("text", "line", "col", "code", "message"),
    [
        (b"a: &a [*a]\n", 1, 8, "GP007", "inside the node &a names"),
        (b"a: &a {b: *a}\n", 1, 11, "GP007", "inside the node &a names"),
        (b"a: *nowhere\n", 1, 4, "GP001", "alias *nowhere names no anchor"),
        (b"a: &x 1\nb: &x 2\n", 2, 4, "GP001", "anchor &x is defined twice"),
    ],
)
def test_broken_aliases_are_refused_and_located(
    text: bytes, line: int, col: int, code: str, message: str
) -> None:
    doc, problems = parse("f.yaml", "oid", text)
    assert doc is None
    assert [(p.line, p.col, p.code) for p in problems] == [(line, col, code)]
    assert message in problems[0].message


def laughs(levels: int, width: int = 9) -> bytes:
    """The "billion laughs": each level a list of `width` aliases of the level before."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return ("\n".join(lines) + "\n").encode()


def test_an_alias_bomb_is_refused_before_it_is_built() -> None:
    started = time.monotonic()
    doc, problems = parse("f.yaml", "oid", laughs(9))
    assert time.monotonic() - started < 1
    assert doc is None
    ((line, col, code),) = [(p.line, p.col, p.code) for p in problems]
    # Each *a0 is 10 nodes, each *a1 91, *a2 820, *a3 7,381: the uses of a1 to a3 expand to
    # 8,289 nodes, and the first *a3 would take them past 10,000.
    assert (line, col, code) == (5, 1 + len("a4: &a4 ["), "GP007")
    assert "limits.alias_nodes" in problems[0].message
    assert "limits: {alias_nodes: N}" in problems[0].hint


def test_aliases_within_the_limits_are_built_and_the_limits_can_be_raised() -> None:
    doc, problems = parse("f.yaml", "oid", laughs(3))
    assert problems == [] and doc is not None
    assert len(doc.data["a3"]) == 9 and doc.data["a3"][8][8][8] == ["lol"] * 9
    many = b"a: &a 1\nb: [" + b", ".join([b"*a"] * 1001) + b"]\n"
    doc, problems = parse("f.yaml", "oid", many)
    assert doc is None and [p.code for p in problems] == ["GP007"]
    assert "limits.aliases" in problems[0].message
    doc, problems = parse("f.yaml", "oid", many, Limits(aliases=1001))
    assert problems == [] and doc is not None and len(doc.data["b"]) == 1001
    assert [p.code for p in parse("f.yaml", "oid", laughs(4))[1]] == ["GP007"]
    doc, problems = parse("f.yaml", "oid", laughs(4), Limits(alias_nodes=74_718))
    assert problems == [] and doc is not None
    assert [p.code for p in parse("f.yaml", "oid", laughs(4), Limits(alias_nodes=74_717))[1]] == [
        "GP007"
    ]


# -- the other limits ------------------------------------------------------------------
def test_a_file_too_large_is_refused_before_it_is_parsed() -> None:
    text = b"a: " + b"x" * 100 + b"\n"
    doc, problems = parse("f.yaml", "oid", text, Limits(document_bytes=100))
    assert doc is None
    assert [(p.line, p.col, p.code) for p in problems] == [(1, 1, "GP006")]
    assert "104 bytes" in problems[0].message and "limits.document_bytes" in problems[0].message
    assert parse("f.yaml", "oid", text, Limits(document_bytes=104))[1] == []


def test_a_file_of_too_many_values_is_refused_where_it_crosses_the_limit() -> None:
    text = ("a: [" + ", ".join(["x"] * 9) + "]\n").encode()  # mapping, key, list, 9: 12
    assert parse("f.yaml", "oid", text, Limits(nodes=12))[1] == []
    doc, problems = parse("f.yaml", "oid", text, Limits(nodes=11))
    assert doc is None
    assert [(p.line, p.col, p.code) for p in problems] == [(1, 5 + 3 * 8, "GP006")]
    assert "limits.nodes" in problems[0].message
    # What aliases expand to counts too.
    aliased = b"a: &a [x, x, x]\nb: *a\n"
    assert [p.code for p in parse("f.yaml", "oid", aliased, Limits(nodes=10))[1]] == ["GP006"]
    assert parse("f.yaml", "oid", aliased, Limits(nodes=11))[1] == []


def test_a_large_dense_file_is_refused_by_its_values_not_its_bytes() -> None:
    # 2 MiB of `x,` is 1,000,000 values: within the default bytes, refused by the count
    # before the reader builds (and keeps positions for) all of them.
    text = ("a: [" + "x," * 1_000_000 + "x]\n").encode()
    doc, problems = parse("f.yaml", "oid", text)
    assert doc is None and [p.code for p in problems] == ["GP006"]
    assert "limits.nodes" in problems[0].message


def test_nesting_deeper_than_the_limit_is_refused_at_the_deepest_opening() -> None:
    nested = doc_of("a: " + "[" * 19 + "]" * 19 + "\n").data["a"]
    for _ in range(18):
        (nested,) = nested
    assert nested == []
    doc, problems = parse("f.yaml", "oid", ("a: " + "[" * 20 + "]" * 20).encode())
    assert doc is None
    assert [(p.line, p.col, p.code) for p in problems] == [(1, 4 + 19, "GP008")]
    # An alias counts where it is used: a shallow anchor can nest deep.
    deep = "x: &x " + "[" * 10 + "]" * 10 + "\ny: " + "[" * 10 + "*x" + "]" * 10 + "\n"
    doc, problems = parse("f.yaml", "oid", deep.encode())
    assert doc is None and [p.code for p in problems] == ["GP008"]
    assert parse("f.yaml", "oid", deep.encode(), Limits(depth=21))[1] == []


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_a_nesting_bomb_is_refused_where_the_limit_is_crossed(opening: str) -> None:
    """libyaml's scanner reads a flow collection ahead and stops at its own depth (1000)
    before the reader sees an event: still GP008, at the 20th opening, not a syntax error
    a thousand openings further."""
    closing = "]" if opening == "[" else "}"
    for n in (25, 5000):
        text = "a: " + opening * n + ("" if opening == "[" else "1") + closing * n + "\n"
        _, problems = parse("f.yaml", "oid", text.encode())
        col = 4 + 19 * len(opening)
        assert [(p.line, p.col, p.code) for p in problems] == [(1, col, "GP008")], n


@pytest.mark.parametrize(
    "written",
    ["9" * 33, "-" + "9" * 33, "1" + "_" * 50 + "0" * 32, "0x" + "f" * 27, "0" + "7" * 40],
)
def test_an_integer_with_too_many_digits_is_refused(written: str) -> None:
    doc, problems = parse("f.yaml", "oid", f"port: {written}\n".encode())
    assert doc is None
    assert [(p.line, p.col, p.code) for p in problems] == [(1, 7, "GP009")]
    assert "limits.integer_digits" in problems[0].message


def test_integers_up_to_the_limit_are_read_and_5000_digits_never_reach_int() -> None:
    assert doc_of("a: " + "9" * 32 + "\n").data == {"a": int("9" * 32)}
    assert doc_of("a: 0x" + "f" * 26 + "\n").data == {"a": 16**26 - 1}
    started = time.monotonic()
    doc, problems = parse("f.yaml", "oid", ("a: " + "9" * 5000 + "\n").encode())
    assert time.monotonic() - started < 1
    assert doc is None and [p.code for p in problems] == ["GP009"]
    big = Limits(integer_digits=4000)
    assert parse("f.yaml", "oid", ("a: " + "9" * 4000).encode(), big)[1] == []


def test_the_fleet_file_hint_says_the_defaults_hold_for_it() -> None:
    _, problems = parse("gitprov.yaml", "oid", ("a: " + "9" * 40).encode(), fleet_file=True)
    assert "gitprov.yaml itself is always read within the default limits" in problems[0].hint


def test_a_byte_order_mark_is_skipped_at_the_start_and_refused_inside() -> None:
    doc, problems = parse("f.yaml", "oid", "\ufeffmac: x\nmodel: y\n".encode())
    assert not problems and doc is not None and doc.data == {"mac": "x", "model": "y"}
    for text, where in (
        ("mac: x\n\ufeffmodel: y\n", (2, 1)),  # two files joined
        ('mac: x\nmodel: "y\ufeff"\n', (2, 10)),  # in a quoted value
        ("\ufeffmac: x\n\ufeffmodel: y\n", (2, 1)),
    ):
        doc, problems = parse("f.yaml", "oid", text.encode())
        assert doc is None
        assert [(p.code, p.line, p.col) for p in problems] == [("GP001", *where)]
        assert "U+FEFF" in problems[0].message


def test_a_key_longer_than_yaml_reads_is_named_as_such_at_the_key() -> None:
    # libyaml stops at the colon with "mapping values are not allowed in this context",
    # which sends the reader looking for a stray colon.
    for key, where in (("k" * 1025, (2, 3)), ("DBID_" + "K" * 5000, (2, 3))):
        _, problems = parse("f.yaml", "oid", f"params:\n  {key}: 1\n".encode())
        assert [(p.code, p.line, p.col) for p in problems] == [("GP001", *where)]
        assert f"a key of {len(key):,} characters" in problems[0].message
    doc, problems = parse("f.yaml", "oid", f"params:\n  {'k' * 1024}: 1\n".encode())
    assert not problems and doc is not None
    # Other stray colons keep libyaml's words.
    _, problems = parse("f.yaml", "oid", b"a: b: c\n")
    assert "mapping values are not allowed" in problems[0].message
