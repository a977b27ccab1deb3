"""gitprov.overlay: each map behaves as the dict it stands for, and an Overlay knows
exactly what differs from the map it was made from."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gitprov.overlay import Overlay, Sorted, whole

_keys = st.text(alphabet="ab\0é]", max_size=4)
_values = st.tuples(st.integers(0, 3), st.sampled_from(["x", "y"]))
# A change: set a key to a value, or delete it (None).
_changes = st.lists(st.tuples(_keys, st.none() | _values), max_size=12)


def _sorted(model: dict[str, tuple[int, str]]) -> Sorted:
    keys = sorted(model)
    return Sorted(keys, ([model[k][0] for k in keys], [model[k][1] for k in keys]))


def _same(got: Any, model: dict[str, Any], probes: list[str]) -> None:
    assert dict(whole(got)) == model and len(got) == len(model) and set(got) == set(model)
    assert dict(got.items()) == model and got.keys() == model.keys()
    assert sorted(got.values()) == sorted(model.values())
    for key in [*model, *probes]:
        assert (key in got) == (key in model)
        assert got.get(key) == model.get(key)
    assert 1 not in got  # (not a key of text)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=10), _changes, _changes, st.booleans())
def test_an_overlay_is_its_base_with_its_changes(
    base: dict[str, tuple[int, str]],
    first: list[tuple[str, tuple[int, str] | None]],
    then: list[tuple[str, tuple[int, str] | None]],
    as_columns: bool,
) -> None:
    under: Any = _sorted(base) if as_columns else base
    _same(under, base, [k for k, _ in first])
    model = dict(base)
    over: Overlay[tuple[int, str]] = Overlay(under)
    for changes in (first, then):
        for key, value in changes:
            if value is None:
                assert over.pop(key, None) == model.pop(key, None)
            else:
                over[key] = model[key] = value
        _same(over, model, [k for k, _ in first + then])
    expected: dict[str, tuple[int, str] | None] = {
        k: v for k, v in model.items() if base.get(k) != v
    }
    expected.update(dict.fromkeys(base.keys() - model.keys()))
    assert over.changes_from(under) == expected
    assert over.changes_from(dict(base)) is None  # (another map: not known)
    assert under == base  # the base is never changed


def test_keys_out_of_order_or_twice_are_not_a_sorted_map() -> None:
    assert Sorted.ordered(["a", "b", "c"]) and Sorted.ordered([])
    assert not Sorted.ordered(["a", "a"]) and not Sorted.ordered(["b", "a"])
