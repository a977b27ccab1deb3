"""The YAML reader against hostile text: every input gives a document, located problems,
or both; never another exception, and never a Python object. fuzz/fuzz_yaml.py runs the
same property under atheris, for longer."""

from __future__ import annotations

import datetime
import json
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gitprov.yamldoc import Document, SecretRef, leaves, parse
from tests.rules.lint import problems as lint_problems

READING_CODES = {"GP001", "GP002", "GP003", "GP004", "GP006", "GP007", "GP008", "GP009", "GP013"}
PLAIN_TYPES = (str, SecretRef, int, float, bool, type(None), datetime.date, datetime.datetime)


def check(data: bytes) -> Document | None:
    doc, problems = parse("f.yaml", "oid", data)
    for p in problems:
        assert p.code in READING_CODES, p
        assert p.line >= 1 and p.col >= 1, p
        assert p.message and p.hint, p
    if doc is None:
        assert problems, "a refused file says why"
        return None
    for path, value in leaves(doc.data):
        assert isinstance(value, PLAIN_TYPES), (path, type(value))
        assert min(doc.pos(path)) >= 1
    for key_path in doc.key_positions:
        assert isinstance(key_path[-1], str)
    return doc


# -- random YAML-ish text --------------------------------------------------------------
TOKENS = st.sampled_from(
    [
        "a", "b: ", ": ", "- ", "? ", "\n", "\n  ", "  ", "[", "]", "{", "}", ", ", "&a ", "&b ",
        "*a", "*b", "!secret ", "!x ", "!!str ", "!!python/name:os.system ", "!!int ", "!!map ",
        "!!timestamp ", "!!binary ", "! ", "%TAG !e! tag:yaml.org,2002:python/\n", "%YAML 1.1\n",
        "---\n", "...\n", "<<: ", "'", '"', "|\n", ">-\n", "#", "0x_", "0b", "._", "2024-13-45",
        "0000-01-01", "9" * 50, "1:2:3", "yes", "~", "=", "\\e", "\\u202e", "\t", "\x85",
        "\u2028", "\ufeff", "é",
    ]
)  # fmt: skip
TEXT = st.one_of(
    st.lists(TOKENS, max_size=30).map("".join),
    st.text(alphabet=st.sampled_from(list("ab:-[]{},&*!|>'\"#%@` \n\t09.+_~<=?\\")), max_size=80),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
@example("a: &a [*a]")
@example("a: !!python/object/apply:os.system [ls]")
@example("%TAG !e! tag:yaml.org,2002:python/\n---\na: !e!name:os.system x")
@example("a: 0x_\nb: 2024-13-45\nc: ._\nd: <<\ne: =")
@example("? [a]\n: 1\n<<: {x: 1}\na: 1\na: 2")
@example("x: &x {a: 1}\n*x : 2")
def test_any_text_reads_or_gives_located_problems(text: str) -> None:
    check(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_read_or_give_located_problems(data: bytes) -> None:
    check(data)


# -- random structures, written with tags, anchors and aliases ------------------------
ODD_PLAIN = st.sampled_from(
    [
        "yes", "No", "on", "0123", "0129", "0x1F", "0x_", "0b_", "0o17", "1_000", "1:30",
        "10:21:52:01:13:19", "2024-01-31", "2024-13-45", "2001-12-14t21:59:43.10-05:00", "._",
        ".inf", "-.Inf", ".NaN", "1e3", "1.0e+3", "~", "null", "<<", "=", "9" * 40,
        "0x" + "f" * 40, "-" + "1" * 33, "0" + "7" * 40,
    ]
)  # fmt: skip
KEYS = st.text(alphabet="abcdefghijk_", min_size=1, max_size=6).map(lambda k: "k" + k)
TAGS = st.sampled_from(
    ["!secret", "!x", "!!str", "!!int", "!!python/object/new:os.system", "!include", "!"]
)


class Writer:
    """Writes a random structure as YAML (flow style), deciding on the way, from the
    drawn data, where to put tags, anchors and aliases (to anchors seen so far, or to one
    still open: a recursive alias)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.anchors: list[str] = []

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def node(self, depth: int) -> str:
        if self.anchors and self.draw(st.integers(0, 9)) == 0:
            return "*" + str(self.draw(st.sampled_from(self.anchors)))
        prefix = ""
        if self.draw(st.integers(0, 9)) == 0:
            prefix += self.draw(TAGS) + " "
        if self.draw(st.integers(0, 5)) == 0:
            name = f"a{len(self.anchors)}"
            self.anchors.append(name)
            prefix += f"&{name} "
        kind = self.draw(st.integers(0, 4 if depth < 4 else 1))
        if kind == 0:
            return prefix + str(self.draw(ODD_PLAIN))
        if kind == 1:
            scalar = self.draw(
                st.one_of(
                    st.integers(-(10**45), 10**45),
                    st.floats(allow_nan=False),
                    st.booleans(),
                    st.none(),
                    st.text(max_size=6),
                )
            )
            return prefix + json.dumps(scalar)
        if kind == 2:
            items = [self.node(depth + 1) for _ in range(self.draw(st.integers(0, 4)))]
            return prefix + "[" + ", ".join(items) + "]"
        pairs = []
        for _ in range(self.draw(st.integers(0, 4))):
            key = self.draw(st.one_of(KEYS, st.just("<<"), st.just("? [x]")))
            pairs.append(f"{key}: {self.node(depth + 1)}")
        return prefix + "{" + ", ".join(pairs) + "}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_structures_with_tags_anchors_and_aliases(data: st.DataObject) -> None:
    text = "top: " + Writer(data).node(0) + "\n"
    check(text.encode("utf-8", "surrogatepass"))


SAFE_SCALARS = st.one_of(
    st.integers(-(10**30), 10**30),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=8),
)
STRUCTURES = st.recursive(
    SAFE_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, STRUCTURES, max_size=4), st.booleans())
def test_plain_data_reads_exactly_as_pyyaml_writes_it(value: dict[str, Any], flow: bool) -> None:
    # What the reader accepts without a word is what YAML means: PyYAML's own reading.
    text = yaml.safe_dump(value, default_flow_style=flow, allow_unicode=True)
    doc = check(text.encode())
    assert doc is not None
    assert doc.data == yaml.safe_load(text) == value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_hostile_device_file_never_crashes_validation(data: st.DataObject) -> None:
    device = 'mac: "00:21:f2:01:1b:19"\nmodel: IP542N\nlines: [' + Writer(data).node(2) + "]\n"
    found = lint_problems({"devices/0021f2011b19.yaml": device})
    mine = [p for p in found if p.file == "inventory/devices/0021f2011b19.yaml"]
    assert all(p.line >= 1 and p.col >= 1 for p in mine), mine
