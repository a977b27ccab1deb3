"""The state files' JSON is the standard library's JSON, whichever encoder wrote it."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gitprov import overlay, statejson

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.text(max_size=12)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_values, st.booleans(), st.booleans())
def test_the_text_is_what_the_standard_library_writes(
    value: Any, sort_keys: bool, newline: bool
) -> None:
    expected = json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)
    out = statejson.dumps(value, sort_keys=sort_keys, newline=newline)
    assert out == (expected + "\n" * newline).encode("utf-8")


@given(_values)
@example("\x7f")  # DEL: ASCII, and escaped by the standard library
@example({"k\x7f": ["a\x7fb"]})
def test_ascii_only_escapes_like_the_standard_library(value: Any) -> None:
    out = statejson.dumps(value, ascii_only=True)
    assert out == json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()
    assert out.isascii() and b"\n" not in out


def test_what_the_fast_encoder_refuses_is_still_written() -> None:
    # Past 64 bits, and a key that is not a string: the standard library's output.
    assert statejson.dumps({"v": 2**70}) == b'{"v":1180591620717411303424}'
    assert statejson.dumps({1: "x"}) == b'{"1":"x"}'
    assert statejson.dumps({"v": 2**70}, newline=True) == b'{"v":1180591620717411303424}\n'
    assert statejson.dumps({"n": "é\u2028"}, ascii_only=True) == b'{"n":"\\u00e9\\u2028"}'


def test_what_neither_encoder_can_write_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        statejson.dumps({"x": object()})


@given(
    st.dictionaries(
        st.text(max_size=6),
        _values | st.dictionaries(st.text(max_size=4), _values, min_size=3, max_size=9),
        max_size=5,
    ),
    st.integers(min_value=1, max_value=4),
    st.booleans(),
)
def test_chunks_join_to_the_standard_librarys_sorted_text(
    value: dict[str, Any], size: int, newline: bool
) -> None:
    # Slices of 1 to 4 entries: most mappings here are dumped in several.
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    out = b"".join(statejson.chunks(value, newline=newline, size=size))
    assert out == (expected + "\n" * newline).encode("utf-8")


def test_chunks_of_a_large_mapping_are_slices_not_one_text() -> None:
    files = {f"{i:012x}.conf": {"version": i, "mac": f"{i:012x}"} for i in range(10_000)}
    pieces = list(statejson.chunks({"commit": "c", "files": files}, size=1000))
    assert max(len(p) for p in pieces) < len(b"".join(pieces)) / 5
    assert json.loads(b"".join(pieces)) == {"commit": "c", "files": files}


@given(
    st.dictionaries(st.text(max_size=6), st.integers(-(2**70), 2**70), max_size=9),
    st.integers(min_value=1, max_value=4),
)
def test_a_converted_mapping_is_written_as_its_converted_copy(
    value: dict[str, int], size: int
) -> None:
    """A manifest's entries are converted a slice at a time: the same text as a copy."""

    def convert(n: int) -> dict[str, Any]:
        return {"n": n, "half": n // 2}

    whole = {"a": 1, "files": {k: convert(v) for k, v in value.items()}}
    expected = json.dumps(whole, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    lazy = {"a": 1, "files": statejson.Converted(value, convert)}
    assert b"".join(statejson.chunks(lazy, size=size)) == expected.encode("utf-8")


def test_a_value_nested_past_the_parsers_limit_is_a_valueerror() -> None:
    """What every state file's reader treats as torn, as any text gitprov did not write."""
    with pytest.raises(ValueError, match="nested too deeply"):
        statejson.loads("[" * 100_000 + "]" * 100_000)
    assert statejson.loads(b'{"a":[1,{"b":null}]}') == {"a": [1, {"b": None}]}


# -- a map's text, read and changed in place ----------------------------------------------
# Keys with every character that could pass for structure: quotes, backslashes, the
# brackets and commas an entry's end is looked for by.
_keys = st.text(st.characters(exclude_categories=["Cs"]) | st.sampled_from('"\\]},[{:'), max_size=6)
# Values as the build record's devices are: a string, then arrays of strings or numbers.
_arrays = st.tuples(
    st.text(max_size=6),
    st.lists(st.lists(st.text(max_size=4), max_size=2), max_size=2),
    st.lists(st.integers(-(2**70), 2**70), max_size=2),
).map(lambda parts: [*parts])


def _map_text(mapping: dict[str, Any]) -> tuple[bytes, int, int]:
    """A record like the build record's: its map's entries between two other keys."""
    text = b"".join(statejson.chunks({"a": 1, "m": mapping, "z": "}]"}, size=2))
    lo = text.index(b'"m":{') + len(b'"m":{')
    return text, lo, statejson.map_end(text, lo, b"]", b',"')


@given(st.dictionaries(_keys, _arrays, max_size=8), st.lists(_keys, max_size=4))
def test_a_map_read_from_its_text_holds_what_its_json_does(
    mapping: dict[str, list[Any]], others: list[str]
) -> None:
    text, lo, hi = _map_text(mapping)
    lazy = statejson.MapText(text, lo, hi, b"]")
    for key in [*mapping, *others]:
        assert (key in lazy) == (key in mapping)
        assert lazy.get(key) == mapping.get(key)
    assert lazy._whole is None  # (nothing decoded whole)
    # Past its bound of lookups, the map is decoded whole: the same answers.
    many = statejson.MapText(text, lo, hi, b"]")
    kept, overlay.LOOKUPS_MAX = overlay.LOOKUPS_MAX, 1
    try:
        for key in [*mapping, *others, *mapping]:
            assert (key in many) == (key in mapping)
            assert many.get(key) == mapping.get(key)
    finally:
        overlay.LOOKUPS_MAX = kept
    assert many._whole is not None or len(mapping) + len(others) < 1
    assert dict(lazy) == mapping


@given(
    st.dictionaries(_keys, _arrays, max_size=8),
    st.dictionaries(_keys, st.none() | _arrays, max_size=4),
)
def test_a_map_changed_in_its_text_is_the_text_of_the_changed_map(
    mapping: dict[str, list[Any]], changes: dict[str, list[Any] | None]
) -> None:
    text, lo, hi = _map_text(mapping)
    runs = statejson.splice_map(text, memoryview(text), lo, hi, changes, b"]")
    changed = {k: v for k, v in {**mapping, **changes}.items() if v is not None}
    made = text[:lo] + b",".join(bytes(r) for r in runs) + text[hi:]
    assert made == b"".join(statejson.chunks({"a": 1, "m": changed, "z": "}]"}))


@pytest.mark.parametrize("close", [b"}", b"]"])
def test_a_string_ending_in_an_entrys_close_and_a_comma_is_no_entrys_start(close: bytes) -> None:
    """`x},` then its closing quote reads as `},"`, where an entry ends and the next
    starts: a key or a value (a file name, a model) ending so must not be taken for one."""
    odd = close.decode() + ","

    def value(text: str) -> Any:
        return {"model": text, "v": 1} if close == b"}" else [text, [[text, "r"]], [1]]

    mapping = {f"a{odd}": value(f"m{odd}"), "b": value(odd), odd: value("c"), "d": value("")}
    text = b"".join(statejson.chunks({"a": 1, "m": mapping, "z": 2}))
    lo = text.index(b'"m":{') + len(b'"m":{')
    hi = statejson.map_end(text, lo, close, b',"')
    lazy = statejson.MapText(text, lo, hi, close)
    for key in [*mapping, "a", odd[:-1], "c"]:
        assert lazy.get(key) == mapping.get(key), key
    for changes in (
        {odd: None},
        {f"a{odd}": None, "b": value("x")},
        {"b": None, "c": value(odd)},
        {"d": None, f"a{odd}": value(odd)},
    ):
        runs = statejson.splice_map(text, memoryview(text), lo, hi, changes, close)
        changed = {k: v for k, v in {**mapping, **changes}.items() if v is not None}
        made = text[:lo] + b",".join(bytes(r) for r in runs) + text[hi:]
        assert made == b"".join(statejson.chunks({"a": 1, "m": changed, "z": 2})), changes


def test_a_map_edited_by_hand_never_reads_as_other_values() -> None:
    """Text not as `chunks` writes it (spaced, unsorted): a lookup finds the value or
    misses it (the build record then builds that device again); a pass reads it whole;
    text that is no JSON reads as an empty map."""
    for text in (b'{"m":{"a": [2], "b":[1]},"z":1}', b'{"m":{"b":[1],"a":[2]},"z":1}'):
        lo = text.index(b"{", 1) + 1
        hi = text.index(b"]}") + 1
        for key, value in (("a", [2]), ("b", [1])):
            assert statejson.MapText(text, lo, hi, b"]").get(key) in (None, value)
        assert dict(statejson.MapText(text, lo, hi, b"]")) == {"a": [2], "b": [1]}
        torn = statejson.MapText(text[:-12], lo, hi - 4, b"]")
        assert "a" not in torn and len(torn) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200),
    st.binary(min_size=1, max_size=6),
    st.integers(0, 220),
    st.integers(0, 220) | st.none(),
    st.integers(1, 9),
)
def test_a_file_read_a_window_at_a_time_finds_what_its_bytes_find(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    sub: bytes,
    start: int,
    end: int | None,
    window: int,
) -> None:
    """Windows of a few bytes: a match across two of them, at the ends, or none."""
    path = tmp_path_factory.mktemp("text") / "f"
    path.write_bytes(data + sub + data)
    whole = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        text = statejson.FileText(fd, len(whole))
        text.WINDOW = window
        assert text.find(sub, start, end) == whole.find(sub, start, end)
        assert text.find(sub) == whole.find(sub)
        assert text[start : end if end is not None else len(whole)] == whole[start:end]
        assert len(text) == len(whole)
    finally:
        os.close(fd)
