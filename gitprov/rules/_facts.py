"""What validation derives from documents, kept from one validation to the next.

Validating commit N+1 right after commit N must cost what changed, not the fleet size
(docs/design.md, invariant 7 and "What things cost"). `Facts` notes which documents changed since
the documents it saw last (by path and blob id). An `Index` holds the entries that one
check derives from each document, grouped by key, and re-derives only the entries of
documents that changed; a check then looks at the groups it cares about (duplicates,
unknown names), not at every document.

Everything here is a cache: a fresh `Facts` gives the same answers, only slower. It is
owned by whoever owns the other per-file caches (a Pipeline's SchemaCache), not kept
process-wide: its state follows one sequence of validations with one catalog, and it is
freed with them. Not thread-safe: one Pipeline per thread.
"""

from __future__ import annotations

from collections.abc import (
    Callable,
    Hashable,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    Set,
)
from typing import Any, Generic, TypeVar, cast

from gitprov.buckets import PER_BUCKET, Packed
from gitprov.inventory import Documents
from gitprov.yamldoc import Document

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

# An entry's place: its document's path, then its number among that document's entries.
# Documents come sorted by path, so sorting members gives the order of a full scan.
Member = tuple[str, int]

Contribute = Callable[[str, Document], Iterable[tuple[K, V]]]


class Index(Generic[K, V]):
    """Entries `(key, item)` derived from documents, grouped by key.

    `env` names everything besides the document that an entry depends on (other files'
    blob ids, settings, the catalog); when it differs, the index is built again."""

    def __init__(self, env: Hashable) -> None:
        self.env = env
        self.generation = -1
        # Most keys (a MAC, a file name) have one entry: no dict for those, and no tuple
        # holding the item (tuples of strings and ints cost the garbage collector nothing).
        self._single: MutableMapping[K, V] = {}
        self._single_at: MutableMapping[K, Member] = {}
        self._shared: dict[K, MutableMapping[Member, V]] = {}
        # path -> the key of its one entry, or the keys of its entries in order (a list:
        # never a key, keys are hashable). Most documents have one entry: no list for those.
        self._keys: MutableMapping[str, K | list[K]] = {}
        # With `depends` (see Facts.index): each document's kind and what else its entries
        # were derived from, and that dependency's version then.
        self._deps: MutableMapping[str, tuple[str, Hashable]] = {}
        self._dep_versions: dict[Hashable, Hashable] = {}
        # Each dependency's number of documents: its keys are the dependencies to bring
        # up to date at each validation (a few profiles and models, not a fleet's paths).
        self._dep_count: dict[Hashable, int] = {}

    # Pickled (kept with a snapshot, see gitprov.checkcache), the maps of a fleet's size
    # and the large groups go in buckets (gitprov.buckets): a fresh process that
    # validates a child unpickles the few buckets its changes touch, not the fleet (a
    # second at 100,000 devices). Unpickled, they are `Buckets`: mappings like the dicts.
    _SPLIT = ("_single", "_single_at", "_keys", "_deps")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._SPLIT:
            state[name] = Packed(state[name])
        state["_shared"] = {
            key: Packed(group) if len(group) > PER_BUCKET else group
            for key, group in self._shared.items()
        }
        return state

    def _depend(
        self, path: str, kind: str, dep: Hashable, interned: dict[Any, Any] | None = None
    ) -> None:
        self._undepend(path)
        entry = (kind, dep)
        # A fleet's documents name a few (kind, dependency) pairs: one object for each.
        self._deps[path] = interned.setdefault(entry, entry) if interned is not None else entry
        self._dep_count[dep] = self._dep_count.get(dep, 0) + 1

    def _undepend(self, path: str) -> None:
        old = self._deps.pop(path, None)
        if old is not None:
            left = self._dep_count[old[1]] - 1
            if left:
                self._dep_count[old[1]] = left
            else:
                del self._dep_count[old[1]]

    @property
    def shared(self) -> KeysView[K]:
        """The keys of two entries or more."""
        return self._shared.keys()

    def keys(self) -> Iterator[K]:
        yield from self._single
        yield from self._shared

    def keys_not_in(self, known: Set[Any]) -> list[K]:
        return [*(self._single.keys() - known), *(self._shared.keys() - known)]

    def count(self, key: K) -> int:
        group = self._shared.get(key)
        return len(group) if group is not None else int(key in self._single)

    def members(self, key: K) -> list[tuple[Member, V]]:
        """The entries of one key, in document order."""
        group = self._shared.get(key)
        if group is not None:
            return sorted(group.items(), key=_member)
        if key in self._single:
            return [(self._single_at[key], self._single[key])]
        return []

    def first(self, key: K) -> tuple[Member, V]:
        group = self._shared.get(key)
        if group is not None:
            return min(group.items(), key=_member)
        return self._single_at[key], self._single[key]

    def values(self, key: K) -> list[V]:
        """The items of one key, in no particular order."""
        group = self._shared.get(key)
        if group is not None:
            return list(group.values())
        return [self._single[key]] if key in self._single else []

    def all_items(self) -> Iterator[V]:
        yield from self._single.values()
        for group in self._shared.values():
            yield from group.values()

    def _add(
        self, path: str, entries: Iterable[tuple[K, V]], interned: dict[Any, Any] | None = None
    ) -> None:
        """Add the entries of document `path`. With `interned` (a table owned by the caller),
        equal members, keys and items are made one object: the indexes of a fleet then hold
        one `(path, n)` per entry, not one per index, and equal keys (a model's name, read
        from each document) and items ((line, col) pairs) once: half the objects of a
        fleet's indexes (and, unpickled from a kept snapshot, of each bucket: see
        gitprov.buckets)."""
        keys: list[K] = []
        single, shared = self._single, self._shared
        intern = interned.setdefault if interned is not None else None
        for n, (key, item) in enumerate(entries):
            member = (path, n)
            if intern is not None:
                member = intern(member, member)
                key = intern(key, key)  # a model or profile name: each document's own str
                # A bare try: contextlib.suppress costs more than the rest of the loop.
                try:  # noqa: SIM105
                    item = intern(item, item)
                except TypeError:  # an unhashable item stays as it is
                    pass
            group = shared.get(key)
            if group is not None:
                group[member] = item
            elif key in single:
                shared[key] = {self._single_at.pop(key): single.pop(key), member: item}
            else:
                single[key] = item
                self._single_at[key] = member
            keys.append(key)
        if len(keys) == 1:
            self._keys[path] = keys[0]
        elif keys:
            self._keys[path] = keys

    def _remove(self, path: str) -> None:
        keys = self._keys.pop(path, _MISSING)
        if keys is _MISSING:
            return
        for n, key in enumerate(keys if isinstance(keys, list) else [keys]):
            group = self._shared.get(key)
            if group is None:
                del self._single[key], self._single_at[key]
                continue
            del group[(path, n)]
            if len(group) == 1:
                del self._shared[key]
                member, item = next(iter(group.items()))
                self._single[key], self._single_at[key] = item, member


def _member(entry: tuple[Member, Any]) -> Member:
    return entry[0]


_MISSING: Any = object()


class Facts:
    MEMO_MAX = 500_000

    def __init__(self) -> None:
        self.generation = 0
        self._docs: Documents | None = None
        self._seen: Mapping[str, str] = {}  # path -> blob id, as of `_docs`
        self._changed: list[tuple[str, Document]] = []  # (kind, document) since the last
        self._removed: list[str] = []
        self._indexes: dict[str, Index[Any, Any]] = {}
        self._memo: dict[Hashable, Any] = {}
        # Equal members and items made one object (see Index._add), for one validation:
        # kept longer, it would hold every entry ever derived.
        self._interned: dict[Any, Any] = {}

    def settle(self) -> None:
        """The validation of the documents seen last is over (see `_interned`)."""
        self._interned = {}

    def has(self, name: str) -> bool:
        """Whether the index `name` was built (it may still be out of date)."""
        return name in self._indexes

    def index(
        self,
        docs: Documents,
        name: str,
        kinds: tuple[str, ...] | None,
        env: Hashable,
        contribute: Contribute[K, V],
        depends: Callable[[Document], Hashable] | None = None,
        version: Callable[[Hashable], Hashable] | None = None,
    ) -> Index[K, V]:
        """The index `name` over the documents of `kinds` (None: all) in `docs`, brought
        up to date: from the previous documents by the changed ones when it was up to
        date with them under the same `env`, else from scratch.

        `depends(doc)` names what else a document's entries are derived from (say, its
        profile and model), `version(dependency)` what that is now (their blob ids): when
        a dependency's version changes, the entries of the documents that depend on it
        are derived again, not every document's (only those are read)."""
        self._sync(docs)
        interned = self._interned
        ix = self._indexes.get(name)
        if ix is None or ix.env != env or ix.generation < self.generation - 1:
            ix = Index(env)
            self._indexes[name] = ix
            for kind in docs.kinds():
                if kinds is None or kind in kinds:
                    for doc in docs.of(kind):
                        ix._add(doc.path, contribute(kind, doc), interned)
                        if depends is not None:
                            ix._depend(doc.path, kind, depends(doc), interned)
            if depends is not None and version is not None:
                ix._dep_versions = _versions(ix, version)
        elif ix.generation == self.generation - 1:
            ix.generation = -1  # if a rule fails half-way, build it again next time
            for path in self._removed:
                ix._remove(path)
                ix._undepend(path)
            done: set[str] = set()
            for kind, doc in self._changed:
                if kinds is None or kind in kinds:
                    ix._remove(doc.path)
                    ix._add(doc.path, contribute(kind, doc), interned)
                    if depends is not None:
                        ix._depend(doc.path, kind, depends(doc), interned)
                    done.add(doc.path)
            if depends is not None and version is not None:
                now = _versions(ix, version)
                self._rederive(docs, ix, contribute, now, done, interned)
                ix._dep_versions = now
        ix.generation = self.generation
        return cast(Index[K, V], ix)

    @staticmethod
    def _rederive(
        docs: Documents,
        ix: Index[K, V],
        contribute: Contribute[K, V],
        now: Mapping[Hashable, Hashable],
        done: set[str],
        interned: dict[Any, Any],
    ) -> None:
        """Derive again the entries of the documents whose dependency changed version
        (`now`: each dependency's version at `docs`)."""
        stale = {d for d, v in ix._dep_versions.items() if now.get(d, v) != v}
        if not stale:
            return
        for path, (kind, dep) in list(ix._deps.items()):
            if dep not in stale or path in done:
                continue
            doc = docs.document(path)
            ix._remove(path)
            if doc is None:
                ix._undepend(path)
                continue
            ix._add(path, contribute(kind, doc), interned)

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()`, once per `key`: a key names everything the value depends on."""
        value = self._memo.get(key, _MISSING)
        if value is not _MISSING:
            return cast(T, value)
        value = compute()
        if len(self._memo) >= self.MEMO_MAX:
            self._memo.clear()
        self._memo[key] = value
        return value

    def export(self, docs: Documents) -> dict[str, Index[Any, Any]] | None:
        """The indexes up to date with `docs`, to be kept (on disk) with them; None when
        the facts are about other documents."""
        if docs is not self._docs:
            return None
        return {n: ix for n, ix in self._indexes.items() if ix.generation == self.generation}

    def restore(self, docs: Documents, indexes: Mapping[str, Index[Any, Any]]) -> None:
        """Start over from indexes `export` gave for documents like `docs` (the same
        files): the next validation updates them by what changed since."""
        self.generation += 1
        self._docs, self._seen = docs, docs.oids
        self._changed, self._removed = [], []
        self._interned = {}
        self._indexes = dict(indexes)
        for ix in self._indexes.values():
            ix.generation = self.generation

    def _sync(self, docs: Documents) -> None:
        """Note what changed between the documents seen last and `docs`: from what `docs`
        says changed since its base when the base is what was seen last, else by
        comparing the blob ids of every path (in C: sets of dictionary items)."""
        if docs is self._docs:
            return
        if self._docs is not None and docs.base == self._docs.serial:
            changed = list(docs.changed)
            removed = list(docs.removed)
        else:
            seen, now = self._seen, docs.oids
            paths = sorted(p for p, _ in now.items() - seen.items())
            changed = [found for path in paths if (found := docs.located(path)) is not None]
            removed = sorted(seen.keys() - now.keys())
        self._docs, self._seen = docs, docs.oids
        self._changed, self._removed = changed, removed
        self._interned = {}
        self.generation += 1


def _versions(
    ix: Index[Any, Any], version: Callable[[Hashable], Hashable]
) -> dict[Hashable, Hashable]:
    """The version now of every dependency the index's documents name."""
    return {d: version(d) for d in ix._dep_count}
