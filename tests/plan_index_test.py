"""The manifest read from its index's columns is the manifest its JSON holds, and an
EntryTable behaves as the dict of entries it stands for."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import json
import os
from array import array
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gitprov import overlay, statejson
from gitprov import plan as plan_module
from gitprov.overlay import apply_changes
from gitprov.plan import (
    INDEX,
    MANIFEST,
    EntryTable,
    Kind,
    Manifest,
    ManifestEntry,
    RootState,
    load_index,
    load_manifest,
    values_of,
    write_index,
)

# Any text the columns can hold: quotes, controls, any plane (a NUL or a lone surrogate
# leaves the columns out: see test_what_the_columns_cannot_say_is_read_from_the_json).
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8)
_hex = st.text("0123456789abcdef", min_size=1, max_size=6)
_names = st.text('abcdefg._-é0123"\\},:[]', min_size=1, max_size=6).filter(lambda n: n not in ".")
_entries = st.builds(
    ManifestEntry,
    mac=_hex | st.just(""),
    model=_text,
    version=st.integers(min_value=0, max_value=2**40),
    set_by=_hex,
    sha256_plain=_hex,
    sha256_data=_hex,
    kind=st.sampled_from(list(Kind)),
    sha256_body=_hex | st.just(""),
)
_stat = st.tuples(st.integers(0, 2**40), st.integers(-(2**62), 2**62), st.integers(0, 2**40))


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    files = draw(st.dictionaries(_names, _entries, max_size=12))
    roots: dict[str, RootState] = {}
    for root in draw(st.lists(st.sampled_from(["/srv/a", "/srv/b", "/srv/c"]), unique=True)):
        # A stat for some of the names (a name without one is read at the next publish).
        stat = {n: draw(_stat) for n in files if draw(st.booleans())}
        stale = tuple(draw(st.lists(_names, max_size=2)))
        roots[root] = RootState(draw(st.sampled_from(["c1", "c0", None])), "", stale, stat)
    served = draw(st.dictionaries(_text, st.tuples(st.integers(0, 2**40), _hex), max_size=6))
    return Manifest(
        commit="c" * 40,
        published_at="2026-12-03T00:00:00+00:00",
        roots=roots,
        files=files,
        served=served,
        inputs={"gitprov": "1"},
        notes=tuple(draw(st.lists(_text, max_size=2))),
    )


def _store(state: Path, m: Manifest) -> Manifest:
    """`m` written as a publish writes it: the JSON, then the index naming it."""
    state.mkdir(exist_ok=True)
    data = m.to_bytes()
    (state / MANIFEST).write_bytes(data)
    record = vars(m).get("served_record")
    m = dataclasses.replace(m, sha256=hashlib.sha256(data).hexdigest())
    if record is not None:
        vars(m)["served_record"] = record  # (a publish's, kept)
    write_index(state, m)
    plan_module._LOADED.clear()
    return m


def _same(a: Manifest, b: Manifest, *, record: bool = True) -> None:
    assert a == b
    assert a.sha256 == b.sha256
    assert dict(a.files) == dict(b.files)
    assert {n: vars(e) for n, e in a.files.items()} == {n: vars(e) for n, e in b.files.items()}
    if record:
        assert a.served_record == b.served_record
    for key in a.roots:
        assert dict(a.roots[key].stat) == dict(b.roots[key].stat)
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=150, deadline=None)
@given(manifests())
def test_the_manifest_read_from_its_index_is_the_one_its_json_holds(
    tmp_path_factory: pytest.TempPathFactory, m: Manifest
) -> None:
    state = tmp_path_factory.mktemp("state")
    m = _store(state, m)
    index = load_index(state)
    assert index is not None and index.rest is not None  # the columns were written
    by_index = load_manifest(state)
    assert by_index is not None and isinstance(by_index.files, EntryTable)
    (state / INDEX).unlink()
    plan_module._LOADED.clear()
    by_json = load_manifest(state)
    assert by_json is not None and not isinstance(by_json.files, EntryTable)
    _same(by_index, by_json)
    # (Made in another order: of two files of one MAC and one version, the record names
    # the body of the one that comes last.)
    _same(by_json, m, record=False)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.text(st.sampled_from("aé\x01"), max_size=3), max_size=6),
    width=st.integers(0, 3),
)
def test_a_column_of_one_width_is_read_in_place_as_its_split(values: list[str], width: int) -> None:
    # Half the time every value of one width in bytes (hashes, MACs): the column read
    # in place; else widths that may still add up as if they were one (["ab", "", "c"]).
    if values and width % 2:
        values = [
            (v.encode() * 4)[:width].decode(errors="ignore").ljust(width, "a") for v in values
        ]
        values = [v for v in values if len(v.encode()) == width] or values
    raw = b"head" + "\0".join(values).encode() + b"tail"
    lo, hi = 4, len(raw) - 4
    column = overlay.Fixed.of(raw, lo, hi, len(values))
    widths = {len(v.encode()) for v in values}
    assert (column is not None) == (len(widths) == 1)
    if column is None:
        return
    for i in [*range(len(values)), *range(-len(values), 0)]:
        assert column[i] == values[i]
    for past in (len(values), -len(values) - 1):
        with pytest.raises(IndexError):
            column[past]
    # The rows holding some values, found in the bytes: those a pass over them finds.
    asked = {*values[::2], "", "zz", "a\0", "\ud800", 7}
    assert column.rows_of(asked) == [i for i, v in enumerate(values) if v in asked]
    assert column[1:] == values[1:] and list(column) == values and len(column) == len(values)
    assert column[0] == values[0]  # (and from the split, once made)


def test_a_column_of_empty_values_holds_no_value_of_another_type() -> None:
    """A column whose values are all "" (width 0): a number asked for is in no row (it
    was searched as b"", found in each)."""
    raw = b"head" + b"\0\0" + b"tail"
    column = overlay.Fixed.of(raw, 4, len(raw) - 4, 3)
    assert column is not None and list(column) == ["", "", ""]
    assert column.rows_of({0, None, b""}) == []
    assert column.rows_of({""}) == [0, 1, 2]


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.sampled_from(["device", "", "stage", "devicedevice", "xdevice", "deviced", "é"]),
        min_size=1,
        max_size=8,
    ),
    value=st.sampled_from(["device", "dev", "é", "\ud800"]),
)
def test_the_rows_of_other_values_are_found_in_the_bytes_as_a_split_finds_them(
    values: list[str], value: str
) -> None:
    raw = b"head" + "\0".join(values).encode() + b"tail"
    columns = plan_module._Columns(memoryview(raw), {"kind": (4, len(raw) - 4)}, len(values))
    rows = columns.rows_other_than("kind", value)
    event("found in the bytes" if rows is not None else "left to a split")
    if rows is not None:
        assert rows == [i for i, v in enumerate(values) if v != value]
    else:  # (only where a value holds it, twice or inside, or a value is empty)
        assert "" in values or any(v != value and value in v for v in values)


def test_one_entry_field_is_read_from_its_column_without_splitting_it(tmp_path: Path) -> None:
    entries = {
        f"{i}.conf": ManifestEntry(
            f"0021f2{i:06x}",
            "IP542N" if i % 2 else "G502N",
            1001 + i,
            f"{i:040x}",
            f"{i:064x}",
            f"{i + 1:064x}",
            Kind.DEVICE,
            f"{i + 2:064x}",
        )
        for i in range(5)
    }
    m = _store(tmp_path / "state", Manifest("c" * 40, "t", {}, entries, {}))
    read = load_manifest(tmp_path / "state")
    assert read is not None and isinstance(read.files, EntryTable)
    for name, entry in m.files.items():
        for f in plan_module._ENTRY_ROW:
            assert read.files.value_of(name, f) == getattr(entry, f)
    columns = read.files._columns
    assert isinstance(columns, plan_module._Columns)
    # The columns of one width were sliced; the models' (two widths) was split.
    assert set(columns._made) == {"model", "version"}


def _one() -> Manifest:
    e = ManifestEntry("0021f2011b19", "IP542N", 1001, "c1", "aa", "bb", Kind.DEVICE, "cc")
    return Manifest(
        "c" * 40,
        "2026-12-03T00:00:00+00:00",
        {"/srv/a": RootState("c" * 40, stat={"a.conf": (1, 2, 3)})},
        {"a.conf": e, "b.conf": dataclasses.replace(e, mac="0021f2011b1a")},
        {"0021f2011b19": (1001, "cc")},
    )


def _entry_field(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw["files"]["a.conf"][name] = value

    return edit


def _stat_of(name: str, value: list[int]) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw["roots"]["/srv/a"]["stat"][name] = value

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_entry_field("version", 2**70), id="a version past 64 bits"),
        pytest.param(_entry_field("model", "a\x00b"), id="a NUL in a value"),
        pytest.param(_entry_field("mac", "\ud800"), id="a lone surrogate"),
        pytest.param(_stat_of("gone.conf", [1, 2, 3]), id="a stat of no file"),
        pytest.param(_stat_of("a.conf", [-1, 2, 3]), id="a stat of size -1"),
        pytest.param(_stat_of("a.conf", [-2, 2, 3]), id="a stat of size -2"),
    ],
)
def test_what_the_columns_cannot_say_is_read_from_the_json(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    """A manifest edited by hand (or by an older gitprov) that holds what the columns
    cannot say exactly: the index is written without them and the JSON is read, the
    same manifest either way."""
    raw = json.loads(_one().to_bytes())
    edit(raw)
    state = tmp_path / "state"
    state.mkdir()
    (state / MANIFEST).write_text(json.dumps(raw))
    by_json = load_manifest(state)
    assert by_json is not None and by_json.sha256
    write_index(state, by_json)
    assert sorted(p.name for p in state.iterdir()) == [INDEX, MANIFEST]  # (no temp left)
    plan_module._LOADED.clear()
    index = load_index(state)
    assert index is not None and index.rest is None
    again = load_manifest(state)
    assert again is not None and not isinstance(again.files, EntryTable)
    assert again == by_json and again.sha256 == by_json.sha256


@pytest.mark.parametrize("copy", ["within the kernel", "through the process"])
def test_the_index_is_the_same_whether_its_columns_are_copied_in_the_kernel_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: str
) -> None:
    """The columns are written as they are made and copied after the head (which names
    their sha256): copy_file_range where the filesystem takes it, else read and written;
    the same index either way, read as the manifest, and no temp left."""
    m = _store(tmp_path / "before", _one())
    expected = (tmp_path / "before" / INDEX).read_bytes()
    if copy == "through the process":

        def refused(*args: Any) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", refused)
    state = tmp_path / "state"
    state.mkdir()
    (state / MANIFEST).write_bytes(m.to_bytes())
    os.utime(state / MANIFEST, ns=((tmp_path / "before" / MANIFEST).stat().st_mtime_ns,) * 2)
    write_index(state, m)
    assert sorted(p.name for p in state.iterdir()) == [INDEX, MANIFEST]
    got = (state / INDEX).read_bytes()
    # (the head names the manifest file by its inode: the rest is the same bytes)
    assert got.split(b"\n", 1)[1] == expected.split(b"\n", 1)[1]
    head, before = json.loads(got.split(b"\n", 1)[0]), json.loads(expected.split(b"\n", 1)[0])
    assert head["entries"] == before["entries"] and head["sha256"] == before["sha256"]
    plan_module._LOADED.clear()
    by_index = load_manifest(state)
    assert by_index is not None and isinstance(by_index.files, EntryTable)
    _same(by_index, m)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("version", 1.5),
        ("version", True),
        ("version", "1001"),
        ("version", None),
        ("model", None),
        ("mac", 5),
        ("sha256_data", ["aa"]),
        ("kind", {}),
    ],
)
def test_an_entry_value_of_another_type_makes_no_manifest(
    tmp_path: Path, name: str, value: Any
) -> None:
    """Not what a publish writes (a hand's edit, another program's file): read as no
    manifest (a publish then compares every file), never carried into a comparison or a
    sort that fails on it."""
    raw = json.loads(_one().to_bytes())
    state = tmp_path / "state"
    state.mkdir()
    (state / MANIFEST).write_text(json.dumps(raw))
    assert load_manifest(state) is not None
    plan_module._LOADED.clear()
    _entry_field(name, value)(raw)
    (state / MANIFEST).write_text(json.dumps(raw))
    assert load_manifest(state) is None


def _read_from_its_json(state: Path, m: Manifest) -> None:
    """The index's columns are not taken: the manifest is read from its JSON, whole."""
    plan_module._LOADED.clear()
    index = load_index(state)
    assert index is not None and index.manifest() is None
    found = load_manifest(state)
    assert found is not None and not isinstance(found.files, EntryTable)
    _same(found, m)


def test_columns_that_fail_their_check_are_not_read(tmp_path: Path) -> None:
    m = _store(tmp_path / "state", _one())
    path = tmp_path / "state" / INDEX
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[-2] ^= 1  # in the second section: the first still names the manifest
    path.write_bytes(bytes(damaged))
    plan_module._BASES.clear()
    _read_from_its_json(tmp_path / "state", m)
    # (its columns, read while they were checked, are not a base for a change log)
    assert str(tmp_path / "state") not in plan_module._BASES


def test_a_column_of_another_length_is_not_read_even_under_its_sha256(tmp_path: Path) -> None:
    # The columns are split only when asked for (plan._Columns): their lengths are checked
    # when the manifest is made, not left to fail later in a publish.
    m = _store(tmp_path / "state", _one())
    path = tmp_path / "state" / INDEX
    line, _, body = path.read_bytes().partition(b"\n")
    head = json.loads(line)
    rest = len(body) - sum(head["entries"]["sizes"])
    damaged = bytearray(body)
    damaged[rest] = 0  # the first text column's first value cut in two
    head["entries"]["sha256"] = hashlib.sha256(damaged[rest:]).hexdigest()
    path.write_bytes(json.dumps(head, sort_keys=True).encode() + b"\n" + bytes(damaged))
    _read_from_its_json(tmp_path / "state", m)


def test_a_manifest_without_its_sha256_is_indexed_without_columns(tmp_path: Path) -> None:
    """Its records beside it name it by sha256: the JSON is read (and hashed) then."""
    state = tmp_path / "state"
    state.mkdir()
    m = _one()
    (state / MANIFEST).write_bytes(m.to_bytes())
    write_index(state, m)
    index = load_index(state)
    assert index is not None and index.rest is None


def test_served_is_the_record_only_when_a_publish_made_it_so(tmp_path: Path) -> None:
    m = _one()  # b.conf's number is not in `served`: the record adds it
    assert m.served_record == {**m.served, "0021f2011b1a": (1001, "cc")}
    stored = _store(tmp_path / "state", m)
    found = load_manifest(tmp_path / "state")
    assert found is not None and isinstance(found.files, EntryTable)
    assert found.served_record == stored.served_record

    record = dict(m.served_record)
    made = dataclasses.replace(m, served=record)
    vars(made)["served_record"] = record  # as a publish leaves it
    stored = _store(tmp_path / "other", made)
    found = load_manifest(tmp_path / "other")
    assert found is not None and isinstance(found.files, EntryTable)
    assert vars(found)["served_record"] is found.served  # no pass over the entries
    assert found.served_record == record


def test_a_manifest_read_from_its_json_is_asked_whether_served_is_the_record(
    tmp_path: Path,
) -> None:
    # A state dir copied (or its index lost): the manifest is read from its JSON, which
    # cannot say that `served` is the record. Asked once when its index is written, the
    # next reader gets the record without a pass over the entries.
    m = _one()
    record = dict(m.served_record)
    for name, served, expected in (("short", dict(m.served), False), ("full", record, True)):
        state = tmp_path / name
        stored = _store(state, dataclasses.replace(m, served=served))  # no record kept
        (state / INDEX).unlink()
        plan_module._LOADED.clear()
        from_json = load_manifest(state)
        assert from_json is not None and "served_record" not in vars(from_json)
        write_index(state, from_json)
        plan_module._LOADED.clear()
        found = load_manifest(state)
        assert found is not None and isinstance(found.files, EntryTable)
        assert (vars(found).get("served_record") is found.served) is expected
        assert found.served_record == stored.served_record == record


_ROW = plan_module._ENTRY_ROW


def _table(entries: dict[str, ManifestEntry], in_order: bool = True) -> EntryTable:
    names = sorted(entries, reverse=not in_order)  # (an index lists them in order)
    columns = [[getattr(entries[n], f) for n in names] for f in plan_module._ENTRY_ROW]
    return EntryTable.of(names, columns)


# A publish's new entries: any int for a version (past 64 bits, orjson refuses it).
_made = st.builds(
    ManifestEntry,
    mac=_hex,
    model=_text,
    version=st.integers(min_value=0, max_value=2**70),
    set_by=_hex,
    sha256_plain=_hex,
    sha256_data=_hex,
    kind=st.sampled_from(list(Kind)),
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(_names, _entries, max_size=10),
    st.lists(_names, max_size=4),
    st.dictionaries(_names, _made, max_size=12),  # (more than 8: see columns_for)
    st.dictionaries(_names, _made, max_size=3),
    st.booleans(),
)
def test_a_table_is_the_dict_of_its_entries(
    entries: dict[str, ManifestEntry],
    dropped: list[str],
    made: dict[str, ManifestEntry],
    again: dict[str, ManifestEntry],
    in_order: bool,
) -> None:
    table = _table(entries, in_order)
    model = dict(entries)
    assert dict(table) == model and len(table) == len(model)
    for name in dropped:
        model.pop(name, None)
    table = table.without(dropped)
    assert dict(table) == model and set(table.keys()) == set(model)
    model.update(made)
    table = table.with_entries(made)
    if again:
        # A second publish by change over the first's table: its sorted columns are
        # made from runs of the first columns too (see EntryTable._runs).
        for name in dropped[::-1]:
            model.pop(name, None)
        table = table.without(dropped[::-1])
        model.update(again)
        table = table.with_entries(again)
    assert dict(table) == model and table.keys() == model.keys()
    assert dict(table.items()) == model and list(table.values()) == [table[n] for n in table]
    for name in model:
        assert name in table and table[name] == model[name]
    assert "no such name" not in table
    with pytest.raises(KeyError):
        table["no such name"]
    for f in plan_module._ENTRY_ROW:
        assert values_of(table, f) == {n: getattr(e, f) for n, e in model.items()}
    names, columns = table.sorted_columns()
    assert names == sorted(model)
    some_fields = ["version", "mac"]
    assert table.without(()).sorted_of(some_fields) == (
        names,
        [columns[_ROW.index(f)] for f in some_fields],
    )
    try:  # the other way of EntryTable._runs: the runs between the rows gone
        EntryTable._RUNS_DELETED = 0
        assert table.without(()).sorted_columns() == (names, columns)
    finally:
        EntryTable._RUNS_DELETED = 64
    assert [list(col) for col in zip(*columns, strict=True)] == [
        [getattr(model[n], f) for f in plan_module._ENTRY_ROW] for n in names
    ]
    assert table.rows() == {n: vars(model[n]) for n in names}
    some = names[::2]
    assert table.columns_for(some) == [[getattr(model[n], f) for n in some] for f in _ROW]
    entry0 = next(iter(_one().files.values()))
    for f, value in (("kind", Kind.DEVICE), ("mac", next(iter(made.values()), entry0).mac)):
        found = table.names_where(f, value.__eq__)
        assert sorted(found) == sorted(n for n, e in model.items() if getattr(e, f) == value)
    # The manifest's JSON made from the rows is the one made from the entries.
    as_table = Manifest("c" * 40, "t", {}, table, {"k": (1, "b")})
    assert as_table.to_bytes() == dataclasses.replace(as_table, files=model).to_bytes()
    with pytest.raises(KeyError):
        table.columns_for([*names, "no such name"])


@settings(max_examples=100, deadline=None)
@given(
    entries=st.dictionaries(_names, _entries, min_size=1, max_size=10),
    one_width=st.booleans(),
    dropped=st.lists(_names, max_size=4),
    made=st.dictionaries(_names, _made, max_size=3),
    asked=st.lists(_hex | st.just("") | st.integers(), max_size=5),
    taken=st.lists(st.integers(0, 9), max_size=3),
)
def test_the_names_with_a_few_macs_are_those_a_pass_finds(
    tmp_path_factory: pytest.TempPathFactory,
    entries: dict[str, ManifestEntry],
    one_width: bool,
    dropped: list[str],
    made: dict[str, ManifestEntry],
    asked: list[Any],
    taken: list[int],
) -> None:
    """EntryTable.names_with (a search of a column's bytes for each value, when the column
    is of one width: the MACs), names_other_than (the kinds), the index's names a change
    dropped (from the rows it
    knows are gone) and the names one table holds and the next does not are what a pass
    over the whole finds, on the tables publishes by change make of an index."""
    if one_width:  # (a MAC a device: every value of one width)
        entries = {n: dataclasses.replace(e, mac=e.mac.ljust(6, "0")) for n, e in entries.items()}
    state = tmp_path_factory.mktemp("state")
    _store(state, Manifest("c" * 40, "t", {}, entries, {}))
    read = load_manifest(state)
    assert read is not None and isinstance(read.files, EntryTable)
    macs = [e.mac for e in entries.values()]
    values = {*asked, *(macs[i % len(macs)] for i in taken)}
    tables = [read.files, read.files.without(dropped)]
    tables.append(tables[-1].with_entries(made))
    columns = read.files._columns
    assert isinstance(columns, plan_module._Columns)
    base = plan_module._BASES[str(state)]
    # (each asked before any pass over the entries, which splits every column)
    found = [
        (
            t.names_with("mac", values),
            plan_module._gone(base.names, t),
            t.names_other_than("kind", Kind.DEVICE),
        )
        for t in tables
    ]
    event("read in place" if columns._fixed.get("mac") is not None else "split")
    event("kinds split" if "kind" in columns._made else "kinds found in the bytes")
    for table, (with_macs, gone, others) in zip(tables, found, strict=True):
        model = dict(table)
        assert with_macs == [n for n in table if model[n].mac in values]
        assert set(gone) == set(entries) - set(model)
        assert others == [n for n in table if model[n].kind != Kind.DEVICE]
    # What a next change removes of what one made (the names it gives are entries too).
    tables.append(tables[-1].without([*dropped[::-1], *made][:3]).with_entries(made))
    tables.append(tables[-1].without(list(made)[:1]))  # (an entry given, then taken out)
    for before, after in itertools.pairwise(tables):
        assert plan_module._removed(base, before, after) == set(before) - set(after)


@pytest.mark.parametrize("lookups", [2048, 1])
@settings(max_examples=100, deadline=None)
@given(
    carried=st.dictionaries(_names, _entries, max_size=8),
    made=st.dictionaries(_names, _hex, max_size=4),
    as_table=st.booleans(),
    asked=st.lists(_names, max_size=6),
)
def test_the_wanted_digests_are_the_made_ones_over_the_carried_ones(
    lookups: int,
    carried: dict[str, ManifestEntry],
    made: dict[str, str],
    as_table: bool,
    asked: list[str],
) -> None:
    # What a publish wants of each name, looked up one by one (and past LOOKUPS_MAX
    # from the dict made once): the same as the dict of both.
    made = {n: d for n, d in made.items() if n not in carried}  # (a build makes no carried name)
    files: Mapping[str, ManifestEntry] = _table(carried) if as_table else carried
    model = {**{n: e.sha256_data for n, e in carried.items()}, **made}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(overlay, "LOOKUPS_MAX", lookups)
        digests = plan_module.WantedDigests(made, files)
        for name in [*asked, *model]:
            assert digests.get(name) == model.get(name)
        assert set(digests) == model.keys() and len(digests) == len(model)
        assert dict(digests) == model


def test_an_index_replaced_between_its_two_reads_is_not_taken(tmp_path: Path) -> None:
    state = tmp_path / "state"
    m = _store(state, _one())
    index = load_index(state)
    assert index is not None
    other = dataclasses.replace(
        m, files={n: dataclasses.replace(e, model="FIP16") for n, e in m.files.items()}
    )
    _store(state, other)  # same names and sizes, other bytes
    assert index.manifest() is None
    fresh = load_index(state)
    assert fresh is not None and fresh.manifest() == other


# -- the change log ----------------------------------------------------------------------
_file_changes = st.dictionaries(_names, st.none() | _entries, max_size=4)
_served_changes = st.dictionaries(
    _text, st.none() | st.tuples(st.integers(0, 2**40), _hex), max_size=3
)
_stat_changes = st.dictionaries(_names, st.none() | _stat, max_size=4)
_steps = st.lists(
    st.tuples(_file_changes, _served_changes, _stat_changes, st.sampled_from(["c1", "c2"])),
    min_size=1,
    max_size=4,
)


def _changed(previous: Manifest, step: tuple[Any, ...]) -> Manifest:
    """The manifest a publish by change makes from `previous` (read from the index): its
    table less and plus a few entries, its records with a few values changed."""
    files_change, served_change, stat_change, commit = step
    gone = [n for n, e in files_change.items() if e is None]
    made = {n: e for n, e in files_change.items() if e is not None}
    files: Mapping[str, ManifestEntry]
    if isinstance(previous.files, EntryTable):
        files = previous.files.without(gone).with_entries(made)
    else:  # (a manifest the index could not say: read from its JSON)
        files = {n: e for n, e in previous.files.items() if n not in gone} | made
    served = dict(previous.served)
    apply_changes(served, served_change)
    roots = {}
    for key, s in previous.roots.items():
        stat = dict(s.stat)
        apply_changes(stat, stat_change)
        roots[key] = RootState(commit, "", s.stale, stat)
    return Manifest(
        commit=commit * 20,
        published_at="2026-12-04T00:00:00+00:00",
        roots=roots,
        files=files,
        served=served,
        inputs=previous.inputs,
        notes=(*previous.notes, commit),
    )


def _read_as_json(state: Path, scratch: Path) -> Manifest:
    (scratch / MANIFEST).write_bytes((state / MANIFEST).read_bytes())
    plan_module._LOADED.clear()
    m = load_manifest(scratch)
    assert m is not None
    return m


@settings(max_examples=120, deadline=None)
@given(manifests(), _steps)
def test_an_index_and_its_change_log_read_as_the_manifest_its_json_holds(
    tmp_path_factory: pytest.TempPathFactory, m: Manifest, steps: list[tuple[Any, ...]]
) -> None:
    """Publishes by change, each written as the index's change log (when small and exact)
    or the index whole: read back, each is the manifest its JSON holds."""
    _publishes_by_change(tmp_path_factory, m, steps, note=event)


def _entry(mac: str, body: str, kind: Kind = Kind.DEVICE) -> ManifestEntry:
    return ManifestEntry(mac, "m", 0, "0", "0", "0", kind, body)


@pytest.mark.parametrize(
    ("files", "step"),
    [
        # Two files of one MAC at one version with other bodies: the versions record
        # takes the same one whatever order the entries come in.
        (
            {"0": _entry("0", "0"), "00": _entry("", ""), "1": _entry("0", "")},
            ({"0": _entry("0", "0")}, {}, {}, "c1"),
        ),
        # A file name ending as an entry does (`},` then its closing quote).
        (
            {"0": _entry("", ""), "00": _entry("1", "", Kind.FIRMWARE), "},": _entry("", "")},
            ({"},": None}, {}, {}, "c1"),
        ),
        ({"a},": _entry("1", "},"), "b": _entry("2", "")}, ({"b": _entry("2", "b")}, {}, {}, "c2")),
    ],
)
def test_what_a_search_once_found_reads_back_as_its_json(
    tmp_path_factory: pytest.TempPathFactory,
    files: dict[str, ManifestEntry],
    step: tuple[Any, ...],
) -> None:
    m = Manifest(
        commit="c" * 40,
        published_at="2026-12-03T00:00:00+00:00",
        roots={},
        files=files,
        inputs={"gitprov": "1"},
    )
    _publishes_by_change(tmp_path_factory, m, [step], note=lambda _: None)


def _publishes_by_change(
    tmp_path_factory: pytest.TempPathFactory,
    m: Manifest,
    steps: list[tuple[Any, ...]],
    note: Callable[[str], object],
) -> None:
    state = tmp_path_factory.mktemp("state")
    _store(state, m)
    previous = load_manifest(state)
    assert previous is not None
    for i, step in enumerate(steps):
        made = _changed(previous, step)
        # The text made from the file read, where it can be: the same bytes.
        spliced = plan_module._spliced(state, made)
        if spliced is not None:
            note("spliced")
            assert b"".join(spliced) == made.to_bytes()
        new = _store(state, made)
        note("change log" if (state / plan_module.INDEX_DELTA).exists() else "whole")
        plan_module._LOADED.clear()
        got = load_manifest(state)
        assert got is not None
        _same(got, _read_as_json(state, tmp_path_factory.mktemp(f"json{i}")))
        _same(got, new, record=False)
        previous = got


def test_a_publish_by_change_writes_the_change_log_and_leaves_the_index(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    m = _store(state, _one())
    previous = load_manifest(state)
    assert previous is not None
    before = plan_module.file_identity((state / INDEX).stat())
    e = dataclasses.replace(previous.files["a.conf"], version=1002, sha256_body="dd")
    step = ({"a.conf": e}, {"0021f2011b19": (1002, "dd")}, {"a.conf": (4, 5, 6)}, "c1")
    new = _store(state, _changed(previous, step))
    assert plan_module.file_identity((state / INDEX).stat()) == before
    log = json.loads((state / plan_module.INDEX_DELTA).read_bytes())
    assert log["files"] == {"a.conf": [*(getattr(e, f) for f in plan_module._ENTRY_ROW)]}
    assert log["served"] == {"0021f2011b19": [1002, "dd"]}
    assert log["stats"] == {"/srv/a": {"a.conf": [4, 5, 6]}}
    plan_module._LOADED.clear()
    got = load_manifest(state)
    assert got is not None and got.files["a.conf"] == e and got.sha256 == new.sha256
    assert dict(got.roots["/srv/a"].stat) == {"a.conf": (4, 5, 6)}
    assert got.commit == "c1" * 20 and got.commit != m.commit
    # The same commit again, from the index and its log alone (no entries read).
    index = load_index(state)
    assert index is not None and index.commit == got.commit
    assert dict(index.roots["/srv/a"].stat) == {"a.conf": (4, 5, 6)}


def test_an_index_is_read_again_only_when_a_file_it_was_read_from_changed(
    tmp_path: Path,
) -> None:
    """A publish reads the index twice under its lock (the survey ahead, the manifest):
    the second read is the first one's, unless the index, the manifest or the change
    log is another file since."""
    state = tmp_path / "state"
    _store(state, _one())
    first = load_index(state)
    assert first is not None and load_index(state) is first
    previous = load_manifest(state)
    assert previous is not None
    step: tuple[Any, ...] = (
        {"a.conf": dataclasses.replace(previous.files["a.conf"], version=1002)},
        {},
        {},
        "c1",
    )
    _store(state, _changed(previous, step))  # a change log beside the same index
    assert (state / plan_module.INDEX_DELTA).exists()
    logged = load_index(state)
    assert logged is not None and logged is not first and logged.commit == "c1" * 20
    # The log gone, the index and the manifest the same files: the index no longer
    # names the manifest.
    (state / plan_module.INDEX_DELTA).unlink()
    assert load_index(state) is None


def test_a_change_log_past_its_bound_makes_the_index_whole_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_module, "DELTA_MAX", 2)
    state = tmp_path / "state"
    _store(state, _one())
    previous = load_manifest(state)
    assert previous is not None
    e = previous.files["a.conf"]
    small: tuple[Any, ...] = ({"a.conf": dataclasses.replace(e, version=1002)}, {}, {}, "c1")
    _store(state, _changed(previous, small))
    assert (state / plan_module.INDEX_DELTA).exists()
    plan_module._LOADED.clear()
    previous = load_manifest(state)
    assert previous is not None
    big: tuple[Any, ...] = ({"a.conf": None, "c.conf": e}, {"x": (1, "a")}, {}, "c2")
    new = _store(state, _changed(previous, big))
    assert not (state / plan_module.INDEX_DELTA).exists()
    plan_module._LOADED.clear()
    got = load_manifest(state)
    assert got is not None
    _same(got, new, record=False)


@pytest.mark.parametrize("damage", ["torn", "other manifest", "other index"])
def test_a_change_log_that_does_not_name_both_files_is_not_used(
    tmp_path: Path, damage: str
) -> None:
    state = tmp_path / "state"
    _store(state, _one())
    previous = load_manifest(state)
    assert previous is not None
    e = dataclasses.replace(previous.files["a.conf"], version=1002)
    new = _store(state, _changed(previous, ({"a.conf": e}, {}, {}, "c1")))
    log = state / plan_module.INDEX_DELTA
    raw = json.loads(log.read_bytes())
    if damage == "torn":
        log.write_bytes(log.read_bytes()[:-20])
    elif damage == "other manifest":
        raw["manifest"][0] += 1
        log.write_text(json.dumps(raw))
    else:
        raw["base"][1] = "0" * 64
        log.write_text(json.dumps(raw))
    plan_module._LOADED.clear()
    assert load_index(state) is None
    got = load_manifest(state)  # from the JSON
    assert got is not None and not isinstance(got.files, EntryTable)
    _same(got, new, record=False)


@pytest.mark.parametrize("ends", ["scanned", "recorded", "wrong"])
def test_a_manifest_changed_in_a_few_entries_is_made_from_its_file(
    tmp_path: Path, ends: str
) -> None:
    """A publish by change writes the manifest from the one it read: the entries, stats
    and versions it changed, added or removed put in place in the old text, the same
    bytes as made. Where each map ends in the old text is read from MAP_ENDS when it is
    there and right, else found by a scan; the splice says where they end in the new."""
    state = tmp_path / "state"

    def record_ends(m: Manifest, text: list[Any]) -> None:
        path = state / plan_module.MAP_ENDS
        if ends == "scanned":
            path.unlink(missing_ok=True)
            return
        plan_module.write_map_ends(state, m, text)
        if ends == "wrong":
            raw = json.loads(path.read_text())
            raw["ends"] = [e - 1 for e in raw["ends"]]
            path.write_text(json.dumps(raw))

    def scanned_ends(m: Manifest) -> list[int]:
        plan_module.write_map_ends(state, m, [])  # (not a splice's text: the file scanned)
        found: list[int] = json.loads((state / plan_module.MAP_ENDS).read_text())["ends"]
        return found

    e = _one().files["a.conf"]
    many = {f"{i:03}.conf": dataclasses.replace(e, mac=f"{i:012x}") for i in range(300)}
    stat = {n: (1, 2, i) for i, n in enumerate(many)}
    _store(
        state, dataclasses.replace(_one(), files=many, roots={"/srv/a": RootState("c", stat=stat)})
    )
    assert isinstance(load_index(state), plan_module.Index)
    previous = load_manifest(state)
    assert previous is not None
    record_ends(previous, [])
    served: list[dict[str, Any]] = [
        {"000000000000": (7, "ab")},
        {'a]},"b': (1, "c"), "000000000000": None},
        {"0": (1, "d"), "zzz": (2, "e"), 'a]},"b': None},
    ]
    entries: list[dict[str, ManifestEntry | None]] = [
        {"000.conf": dataclasses.replace(e, version=7)},  # the first
        {"299.conf": None, "150.conf": dataclasses.replace(e, model='a},"b')},
        {"0.conf": e, "1500.conf": e, "zz.conf": e, "077.conf": None},  # added, each end
    ]
    for changes, versions in zip(entries, served, strict=True):
        stats = {n: None if v is None else (1, 2, 3) for n, v in changes.items()}
        made = _changed(previous, (changes, versions, stats, "c1"))
        spliced = plan_module._spliced(state, made)
        assert spliced is not None
        assert b"".join(spliced) == made.to_bytes()
        _store(state, made)
        assert isinstance(spliced, plan_module._Spliced)
        assert spliced.ends == scanned_ends(made) and len(spliced.ends) == 3
        record_ends(made, spliced)
        identity = plan_module.file_identity(os.stat(state / MANIFEST))
        assert (plan_module._ends_of(state, identity) is not None) is (ends != "scanned")
        previous = load_manifest(state)
        assert previous is not None and isinstance(previous.files, EntryTable)
    # A manifest file replaced since it was read is not taken.
    (state / MANIFEST).write_bytes((state / MANIFEST).read_bytes())
    assert plan_module._spliced(state, _changed(previous, ({}, {}, {}, "c2"))) is None


def test_a_manifest_changed_in_a_large_share_of_its_entries_is_made_whole(
    tmp_path: Path,
) -> None:
    """Splicing finds each change by a bisection in Python: past one change in
    SPLICE_SHARE of the maps' entries the text is made whole (the same bytes)."""
    state = tmp_path / "state"
    e = _one().files["a.conf"]
    many = {f"{i:03}.conf": dataclasses.replace(e, mac=f"{i:012x}") for i in range(300)}
    stat = {n: (1, 2, i) for i, n in enumerate(many)}
    _store(
        state, dataclasses.replace(_one(), files=many, roots={"/srv/a": RootState("c", stat=stat)})
    )
    previous = load_manifest(state)
    assert previous is not None

    def change(count: int) -> Manifest:
        names = [f"{i:03}.conf" for i in range(0, 300, 300 // count)][:count]
        return _changed(
            previous,
            (
                {n: dataclasses.replace(e, version=9) for n in names},
                {},
                {n: (4, 5, 6) for n in names},
                "c1",
            ),
        )

    # 3 maps of 300 entries or fewer: 10 changes each spliced, 60 made whole.
    few, many_changed = change(10), change(60)
    assert statejson.splice_pays(20, 3 * 300) and not statejson.splice_pays(120, 3 * 300)
    spliced = plan_module._spliced(state, few)
    assert spliced is not None and b"".join(spliced) == few.to_bytes()
    assert plan_module._spliced(state, many_changed) is None


@pytest.mark.parametrize("lookups", [2048, 1, 0])
def test_a_stat_table_is_the_dict_of_its_recorded_stats(
    lookups: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past LOOKUPS_MAX lookups the table answers from its dict: the same answers.
    monkeypatch.setattr(overlay, "LOOKUPS_MAX", lookups)
    names = ["a", "b", "c"]
    table = plan_module.StatTable(names, array("q", [1, 2, 3, -1, 0, 0, 7, 8, 9]))
    model = {"a": (1, 2, 3), "c": (7, 8, 9)}  # (size -1: no stat recorded for b)
    for _ in range(2):
        for name in [*names, "d"]:
            assert (name in table) == (name in model)
            assert table.get(name) == model.get(name)
    assert dict(table.items()) == model and len(table) == 2


@settings(max_examples=200, deadline=None)
@given(
    stats=st.dictionaries(
        st.text(alphabet="ab0.", max_size=4),
        st.one_of(st.none(), st.tuples(*[st.integers(0, 9)] * 3)),
        max_size=12,
    ),
    asked=st.lists(st.one_of(st.text(alphabet="ab0.", max_size=5), st.integers()), max_size=8),
)
def test_a_stat_table_looked_up_by_bisection_answers_as_its_dict(
    stats: dict[str, tuple[int, int, int] | None], asked: list[object]
) -> None:
    # A few lookups bisect the sorted names (no dict of them made); a name without a
    # stat (size -1), one between two names, before the first or past the last, and a
    # key that is no text are each not in it.
    names = sorted(stats)
    values = array("q", [v for n in names for v in (stats[n] or (-1, 0, 0))])
    table = plan_module.StatTable(names, values)
    model = {n: s for n, s in stats.items() if s is not None}
    for name in [*names, *asked]:
        assert (name in table) == (name in model)
        if isinstance(name, str):
            assert table.get(name) == model.get(name)
    assert table._at is None  # (the lookups were few)
    assert dict(table.items()) == model and len(table) == len(model)
