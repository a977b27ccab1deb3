"""Maps pickled in buckets (gitprov.buckets): after any round trip they answer as the dict
they were made from, a key's bucket is the same in every process, and a lookup unpickles
only the bucket of its key."""

from __future__ import annotations

import enum
import os
import pickle
import subprocess
import sys
from collections.abc import Hashable
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from gitprov import buckets
from gitprov.buckets import Buckets, Packed, code

SCALARS = st.one_of(
    st.text(max_size=6),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.floats(allow_nan=False),
    st.binary(max_size=4),
    st.none(),
)
KEYS = st.recursive(
    SCALARS,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=2),
    max_leaves=4,
)
OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "del", "pop", "get", "in", "trip", "copy", "iter"]),
        KEYS,
        st.integers(),
    ),
    max_size=60,
)


def _trip(made: Any) -> Buckets[Any, Any]:
    """A pickle round trip of a map, as a Buckets."""
    back = pickle.loads(pickle.dumps(Packed(made), protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(back, Buckets)
    return back


@settings(max_examples=300, deadline=None)
@given(start=st.dictionaries(KEYS, st.integers(), max_size=40), ops=OPS)
def test_buckets_answer_as_the_dict_through_any_round_trip(
    start: dict[Hashable, int], ops: list[tuple[str, Hashable, int]]
) -> None:
    # Two entries a bucket: every map of more than a few keys has many buckets.
    with mock.patch.object(buckets, "PER_BUCKET", 2):
        want = dict(start)
        got = _trip(start)
        keys = list(start)
        for op, key, value in ops:
            if keys and value % 2:
                key = keys[value % len(keys)]  # a key that is there, half the time
            if op == "set":
                want[key] = got[key] = value
                keys.append(key)
            elif op == "del":
                if key in want:
                    del want[key], got[key]
                assert key not in got
            elif op == "pop":
                assert got.pop(key, None) == want.pop(key, None)
            elif op == "get":
                assert got.get(key, "none") == want.get(key, "none")
            elif op == "in":
                assert (key in got) == (key in want)
            elif op == "trip":
                got = _trip(got)
            elif op == "copy":
                copied = got.copy()
                copied[("only in the copy",)] = 1
                assert ("only in the copy",) not in got
                got = copied
                got.pop(("only in the copy",))
            else:
                items = list(got.items())
                assert len(items) == len(want) and dict(items) == want
                assert sorted(got.values()) == sorted(want.values())
            assert len(got) == len(want)
        assert dict(got) == want
        assert dict(_trip(got)) == want


class Level(enum.IntEnum):
    ONE = 1


def test_equal_keys_fall_in_one_bucket() -> None:
    """A dict finds 1, 1.0, True and an IntEnum of 1 equal: so must the buckets."""
    assert code(1) == code(1.0) == code(True) == code(Level.ONE)
    assert code(("a", 1)) == code(("a", True)) == code(("a", 1.0))

    class Name(str):
        pass

    assert code(Name("mac")) == code("mac")
    assert code(memoryview(b"mac")) == code(b"mac")
    made = _trip({1: "one", ("a", 1): "pair", "mac": "str"})
    assert made[True] == made[1.0] == "one" and made[("a", 1.0)] == "pair"
    assert made[Name("mac")] == "str"


def test_a_keys_bucket_is_the_same_in_every_process() -> None:
    """Not `hash()`: a string's hash changes with each process's seed."""
    keys = ["inventory/devices/0021f2011b20.yaml", ("model", True), b"\x00\xff", 2**40, "é"]
    here = [code(k) for k in keys]
    script = f"from gitprov.buckets import code; print([code(k) for k in {keys!r}])"
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == repr(here)


def test_a_lookup_unpickles_only_its_bucket() -> None:
    entries = {f"inventory/devices/{n:012x}.yaml": n for n in range(10_000)}
    made = _trip(entries)
    assert len(made) == 10_000 and made.loaded == 0  # its length needs no bucket
    assert made["inventory/devices/00000000002a.yaml"] == 42
    assert "inventory/devices/ffffffffffff.yaml" not in made
    assert made.loaded <= 2
    assert len(made._parts) == 10_000 // buckets.PER_BUCKET
    # A bucket never unpickled is pickled again as it was read.
    again = _trip(made)
    assert again._parts[5] == made._parts[5] or made.loaded
    assert dict(made) == entries and made.loaded == len(made._parts)
