"""asv: each adapter's operations at 1k, 10k and 100k items (so cost growth shows per commit).

Classes per backend, named ``<Backend>Reads`` and ``<Backend>Writes``:

* Reads (retrieve by id, structured search, vector search for FAISS/Chroma, a depth-2
  traversal for NetworkX/Kuzu) open their store in ``setup`` and asv batches many calls per sample;
* Writes (store a new item, update one, delete one, store_many of 100) prepare their item in
  ``setup`` and time exactly one call per sample, so a sample never includes building its input
  and the store stays at its size (a sample adds at most one item or batch).

All share the stores built once by ``_stores.build_stores`` (asv ``setup_cache``); each
benchmark process works on its own copy.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from . import _stores

_TITLES = {"lmdb": "LMDB", "duckdb": "DuckDB", "kuzu": "Kuzu", "tinydb": "TinyDB", "networkx": "NetworkX",
           "faiss": "FAISS", "chroma": "Chroma"}


class _Reads:
    backend = ""
    param_names = ["items"]
    timeout = 600
    warmup_time = 2.0
    setup_cache = staticmethod(_stores.build_stores)

    def setup(self, root: str, items: int) -> None:
        # Open the store before timing (once per process): `asv run --quick` times a single call
        # with no warm-up, and that call must not be the open.
        self._store(root, items)

    def _store(self, root: str, items: int) -> Any:
        return _stores.opened(root, self.backend, items, writes=False)

    def time_retrieve(self, root: str, items: int) -> None:
        store = self._store(root, items)
        ids = getattr(self, "_ids", None)
        if ids is None:
            rng = random.Random(1)
            ids = self._ids = itertools.cycle([f"pre-{rng.randrange(items):07d}" for _ in range(1024)])
        store.retrieve(next(ids))

    def time_search(self, root: str, items: int) -> None:
        self._store(root, items).search({"memory_type": "KNOWLEDGE", "limit": 10})


class _VectorReads(_Reads):
    def time_vector_search(self, root: str, items: int) -> None:
        store = self._store(root, items)
        queries = getattr(self, "_queries", None)
        if queries is None:
            import numpy as np

            rng = np.random.default_rng(2)
            queries = self._queries = itertools.cycle(
                [rng.normal(size=_stores.DIMENSION).astype("float32").tolist() for _ in range(64)])
        store.similarity_search(next(queries), 10)


class _GraphReads(_Reads):
    def time_traverse(self, root: str, items: int) -> None:
        store = self._store(root, items)
        starts = getattr(self, "_starts", None)
        if starts is None:
            rng = random.Random(3)
            starts = self._starts = itertools.cycle([f"pre-{rng.randrange(items):07d}" for _ in range(256)])
        store.neighbors(next(starts), depth=2)


class _Writes:
    backend = ""
    param_names = ["items"]
    timeout = 600
    number = 1  # one call per sample, after its own setup
    repeat = (10, 40, 10.0)
    setup_cache = staticmethod(_stores.build_stores)
    _serial = itertools.count()

    def setup(self, root: str, items: int) -> None:
        self.store = _stores.opened(root, self.backend, items)
        n = next(self._serial)
        self.new = _stores.item(n, f"new{id(self)}")
        rng = random.Random(n)
        self.existing = _stores.item(rng.randrange(items), content=f"updated {n}")
        self.batch = [_stores.item(i, f"batch{n}-{id(self)}") for i in range(100)]
        self.victim = _stores.item(n, f"victim{id(self)}")
        self.store.store(self.victim)  # exists before the timed delete, so every delete is a real one

    def time_store(self, root: str, items: int) -> None:
        self.store.store(self.new)

    def time_update(self, root: str, items: int) -> None:
        self.store.store(self.existing)

    def time_delete(self, root: str, items: int) -> None:
        self.store.delete(self.victim.id)

    def time_store_many_100(self, root: str, items: int) -> None:
        self.store.store_many(self.batch)


def _classes() -> dict[str, type]:
    made: dict[str, type] = {}
    for backend in _stores.BACKENDS:
        reads = _VectorReads if backend in _stores.VECTORS else _GraphReads if backend in _stores.GRAPHS else _Reads
        for suffix, base in (("Reads", reads), ("Writes", _Writes)):
            name = f"{_TITLES[backend]}{suffix}"
            made[name] = type(name, (base,), {"backend": backend, "params": [_stores.sizes(backend)],
                                              "__module__": __name__, "__qualname__": name})
    return made


globals().update(_classes())
