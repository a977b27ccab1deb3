"""gitprov.overlay: each map behaves as the dict it stands for, and an Overlay knows
exactly what differs from the map it was made from."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitprov import overlay
from gitprov.overlay import Overlay, Sorted, TextMap, editable, updated, whole

_keys = st.text(alphabet="ab\0é]", max_size=4)
_values = st.tuples(st.integers(0, 3), st.sampled_from(["x", "y"]))
# A change: set a key to a value, or delete it (None).
_changes = st.lists(st.tuples(_keys, st.none() | _values), max_size=12)


def _sorted(model: dict[str, tuple[int, str]]) -> Sorted:
    keys = sorted(model)
    return Sorted(keys, ([model[k][0] for k in keys], [model[k][1] for k in keys]))


def _same(got: Any, model: dict[str, Any], probes: list[str]) -> None:
    # Looked up and counted first: before a map makes its dict (once iterated), each key
    # is found its own way (a bisection, an Overlay's changes over its base).
    assert len(got) == len(model)
    for key in [*model, *probes]:
        assert (key in got) == (key in model)
        assert got.get(key) == model.get(key)
    assert 1 not in got  # (not a key of text)
    assert dict(whole(got)) == model and len(got) == len(model) and set(got) == set(model)
    assert dict(got.items()) == model and got.keys() == model.keys()
    assert sorted(got.values()) == sorted(model.values())
    for key in [*model, *probes]:
        assert (key in got) == (key in model)
        assert got.get(key) == model.get(key)


def _apply(over: Overlay[Any], model: dict[str, Any], changes: list[tuple[str, Any]]) -> None:
    for key, value in changes:
        if value is None:
            assert over.pop(key, None) == model.pop(key, None)
        else:
            over[key] = model[key] = value


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    out.update(dict.fromkeys(old.keys() - new.keys()))
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_keys, _values, max_size=10),
    _changes,
    _changes,
    _changes,
    st.booleans(),
    st.sampled_from([2048, 3, 0]),  # (a Sorted's dict made after that many lookups)
)
def test_an_overlay_is_its_base_with_its_changes(
    base: dict[str, tuple[int, str]],
    first: list[tuple[str, tuple[int, str] | None]],
    then: list[tuple[str, tuple[int, str] | None]],
    more: list[tuple[str, tuple[int, str] | None]],
    as_columns: bool,
    lookups: int,
) -> None:
    with _lookups_max(lookups):
        _check(base, first, then, more, as_columns)


@contextlib.contextmanager
def _lookups_max(lookups: int) -> Iterator[None]:
    """overlay.LOOKUPS_MAX set for a hypothesis example (a fixture's monkeypatch spans
    every example of the test)."""
    kept, overlay.LOOKUPS_MAX = overlay.LOOKUPS_MAX, lookups
    try:
        yield
    finally:
        overlay.LOOKUPS_MAX = kept


def _check(
    base: dict[str, tuple[int, str]],
    first: list[tuple[str, tuple[int, str] | None]],
    then: list[tuple[str, tuple[int, str] | None]],
    more: list[tuple[str, tuple[int, str] | None]],
    as_columns: bool,
) -> None:
    probes = [k for k, _ in first + then + more]
    under: Any = _sorted(base) if as_columns else base
    _same(under, base, probes)
    model = dict(base)
    over: Overlay[tuple[int, str]] = Overlay(under)
    _apply(over, model, first)
    _same(over, model, probes)
    _apply(over, model, then)
    _same(over, model, probes)
    assert over.changes_from(under) == _diff(base, model)
    assert over.changes_from(dict(base)) is None  # (another map: not known)
    # One made over it (the next publish's): its own changes only, over the same base.
    after = dict(model)
    next_one: Overlay[tuple[int, str]] = Overlay(over)
    _apply(next_one, after, more)
    _same(next_one, after, probes)
    assert next_one.changes_from(over) == _diff(model, after)
    assert next_one.changes_from(under) is None
    _same(over, model, probes)  # left as it was
    assert under == base  # the base is never changed
    # `updated`: the items of another map set, over the same base when an Overlay, over
    # a Sorted itself.
    extra = {k: v for k, v in more if v is not None}
    for made in (over, model):
        got = updated(made, extra)
        _same(got, {**model, **extra}, probes)
        assert isinstance(got, Overlay) is (made is over)
        if isinstance(got, Overlay):
            assert got.changes_from(under) == _diff(base, {**model, **extra})
    _same(over, model, probes)
    got = updated(under, extra)
    _same(got, {**base, **extra}, probes)
    assert isinstance(got, Overlay) is as_columns
    if isinstance(got, Overlay):
        assert got.changes_from(under) == _diff(base, {**base, **extra})
    assert under == base


def test_keys_out_of_order_or_twice_are_not_a_sorted_map() -> None:
    assert Sorted.ordered(["a", "b", "c"]) and Sorted.ordered([])
    assert not Sorted.ordered(["a", "a"]) and not Sorted.ordered(["b", "a"])


_text = st.text(alphabet="ab/é\n", max_size=5)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_text, _text, max_size=10),
    st.lists(st.tuples(_text, st.none() | _text), max_size=12),
    st.sampled_from([2048, 3, 0]),
)
def test_a_text_map_is_the_dict_it_was_made_from(
    model: dict[str, str], changes: list[tuple[str, str | None]], lookups: int
) -> None:
    with _lookups_max(lookups):
        probes = [k for k, _ in changes]
        made = TextMap.of(model)
        assert made is not None and TextMap.of(made) is made
        _same(made, model, probes)
        again = pickle.loads(pickle.dumps(made))
        assert isinstance(again, TextMap)
        _same(again, model, probes)
        # Changed through `editable`: an Overlay over it, the map itself left as it was.
        changed, after = editable(again), dict(model)
        assert isinstance(changed, Overlay)
        _apply(changed, after, changes)
        _same(changed, after, probes)
        _same(again, model, probes)
        _same(updated(again, {"x": "y"}), {**model, "x": "y"}, probes)


def test_a_text_map_refuses_what_its_blocks_cannot_hold() -> None:
    assert TextMap.of({"a\0b": "c"}) is None and TextMap.of({"a": "b\0"}) is None
    assert TextMap.of({"a": 1}) is None  # type: ignore[dict-item]
    assert dict(TextMap("", "", 0)) == {} and dict(TextMap("", "", 1)) == {"": ""}
    for keys, values, count in [("a\0b", "c", 2), ("a", "b\0c", 1), ("a", "b", 0), ("", "", -1)]:
        with pytest.raises(ValueError):
            TextMap(keys, values, count)
    made = TextMap.of({"a": "x", "bc": "yz"})
    assert made is not None
    keys, values, count, starts = made.__reduce__()[1]
    assert TextMap(keys, values, count, starts) == {"a": "x", "bc": "yz"}
    for forged in (starts[:-8], starts + starts[:8], bytes(8) * 4):
        with pytest.raises(ValueError):
            TextMap(keys, values, count, forged)
    assert editable({"a": "b"}) == {"a": "b"} and not isinstance(editable({}), Overlay)
