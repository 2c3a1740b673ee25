"""The gate's micro-benchmarks: memsys' hot paths on small stores.

This file is loaded BY PATH inside a worker process whose ``memsys`` comes from
the checkout being measured (HEAD or the base commit), so it must not import
``memsys.bench`` (the base may not have it) and should use only the long-lived
public API. A benchmark the base cannot run is reported, not fatal.

Every benchmark is ``prepare(n) -> args`` (untimed: builds the items, picks the
ids) and ``op(arg)`` (timed, once per arg), so item construction never leaks
into a store's timing, and both sides do exactly the same work in the same order.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

#: Items preloaded into every store: small stores, so the gate measures memsys' code, not the engine's growth.
PRELOAD = 200
BATCH = 50
DIMENSION = 64
BACKENDS = ("lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma")
#: Durability off where the adapter allows it: the gate compares code paths, and an fsync's time is the disk's.
OPTIONS: dict[str, dict[str, Any]] = {
    "lmdb": {"sync": False, "map_size": 1 << 30}, "duckdb": {"sync": False}, "tinydb": {"sync": False},
    "networkx": {"sync": False}, "kuzu": {"buffer_pool_size": 64 << 20},
    "faiss": {"dimension": DIMENSION}, "chroma": {"dimension": DIMENSION}}
FILES = {"tinydb": "items.json", "networkx": "graph", "faiss": "faiss", "chroma": "chroma",
         "kuzu": "graph.kuzu", "lmdb": "lmdb", "duckdb": "items.duckdb"}
WORDS = ["memory", "agent", "vector", "graph", "commit", "store", "crash", "query", "token", "cache"]


@dataclasses.dataclass
class Benchmark:
    name: str
    fixture: str
    make: Callable[[Any], tuple[Callable[[int], list[Any]], Callable[[Any], Any]]]
    doc: str = ""


def item_kwargs(i: int, prefix: str) -> dict[str, Any]:
    from memsys.domain.model import MemoryType

    rng = random.Random(i)
    return {"id": f"{prefix}-{i:07d}", "content": " ".join(rng.choice(WORDS) for _ in range(18)),
            "memory_type": MemoryType.KNOWLEDGE if i % 2 else MemoryType.EPISODIC,
            "metadata": {"n": i, "tag": rng.choice(WORDS)}}


def make_item(i: int, prefix: str) -> Any:
    from memsys.domain.model import MemoryItem

    return MemoryItem(**item_kwargs(i, prefix))


def open_backend(backend: str, folder: str) -> Any:
    import memsys.adapters as adapters

    names = {"tinydb": "TinyDBMemoryAdapter", "networkx": "GraphMemoryAdapter", "faiss": "FAISSVectorStore",
             "chroma": "ChromaDBVectorStore", "kuzu": "KuzuMemoryAdapter", "lmdb": "LMDBMemoryAdapter",
             "duckdb": "DuckDBMemoryAdapter"}
    return getattr(adapters, names[backend])(path=os.path.join(folder, FILES[backend]), **OPTIONS[backend])


class Fixtures:
    """Stores opened on first use, in one temporary folder, closed together."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="memsys-gate-")
        self.opened: dict[str, Any] = {}
        self.folders: dict[str, str] = {}
        self.counter = itertools.count()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"

    def get(self, name: str) -> Any:
        if name not in self.opened:
            self.opened[name] = self._open(name)
        return self.opened[name]

    def _open(self, name: str) -> Any:
        # A new folder every time: Chroma caches its clients by path for the life of the process.
        folder = self.folders[name] = os.path.join(self.root, self.fresh(f"{name}-"))
        os.makedirs(folder)
        if name == "manager":
            from memsys.application.manager import MemoryManager

            return MemoryManager({b: open_backend(b, os.path.join(folder, b)) for b in ("lmdb", "duckdb", "kuzu")},
                                 transaction_log=os.path.join(folder, "txlog"))
        if name == "none":
            return None
        store = open_backend(name, folder)
        store.store_many([make_item(i, "pre") for i in range(PRELOAD)])
        if name in ("networkx", "kuzu"):  # a sparse graph: every item links to the next three
            tx = store.begin_transaction()  # one batch apply instead of 600 single writes
            for i in range(PRELOAD):
                for step in (1, 2, 3):
                    store.add_relationship(f"pre-{i:07d}", f"pre-{(i + step) % PRELOAD:07d}", "NEXT")
            store.prepare_commit(tx)
            store.commit(tx)
        return store

    def drop(self, name: str) -> None:
        """Close a fixture and delete its files; the next ``get`` builds it again from nothing."""
        value = self.opened.pop(name, None)
        if value is not None:
            value.close()
        shutil.rmtree(self.folders.pop(name, ""), ignore_errors=True)

    def close(self) -> None:
        for name in list(self.opened):
            self.drop(name)
        shutil.rmtree(self.root, ignore_errors=True)


def _store(store: Any, fx: Fixtures) -> tuple[Callable[[int], list[Any]], Callable[[Any], Any]]:
    def prepare(n: int) -> list[Any]:
        prefix = fx.fresh("s")
        return [make_item(i, prefix) for i in range(n)]
    return prepare, store.store


def _retrieve(store: Any, fx: Fixtures) -> tuple[Callable[[int], list[Any]], Callable[[Any], Any]]:
    rng = random.Random(1)
    return (lambda n: [f"pre-{rng.randrange(PRELOAD):07d}" for _ in range(n)]), store.retrieve


def _search(store: Any, fx: Fixtures) -> tuple[Callable[[int], list[Any]], Callable[[Any], Any]]:
    query = {"memory_type": "KNOWLEDGE", "limit": 10}
    return (lambda n: [query] * n), store.search


def _batch(store: Any, fx: Fixtures) -> tuple[Callable[[int], list[Any]], Callable[[Any], Any]]:
    def prepare(n: int) -> list[Any]:
        out = []
        for _ in range(n):
            prefix = fx.fresh("b")
            out.append([make_item(i, prefix) for i in range(BATCH)])
        return out
    return prepare, store.store_many


def _vector_search(store: Any, fx: Fixtures) -> tuple[Callable[[int], list[Any]], Callable[[Any], Any]]:
    import numpy as np

    rng = np.random.default_rng(2)
    return (lambda n: [rng.normal(size=DIMENSION).astype("float32").tolist() for _ in range(n)]), \
        (lambda q: store.similarity_search(q, 10))


def _traverse(store: Any, fx: Fixtures) -> tuple[Callable[[int], list[Any]], Callable[[Any], Any]]:
    rng = random.Random(3)
    return (lambda n: [f"pre-{rng.randrange(PRELOAD):07d}" for _ in range(n)]), \
        (lambda i: store.neighbors(i, depth=2))


def _commit(manager: Any, fx: Fixtures) -> tuple[Callable[[int], list[Any]], Callable[[Any], Any]]:
    stores = ("lmdb", "duckdb", "kuzu")

    def prepare(n: int) -> list[Any]:
        prefix = fx.fresh("t")
        return [[make_item(3 * i + k, prefix) for k in range(3)] for i in range(n)]

    def commit(items: list[Any]) -> None:
        with manager.with_transaction(list(stores)):
            for store, item in zip(stores, items):
                manager.adapters[store].store(item)
    return prepare, commit


def _construct(_: Any, fx: Fixtures) -> tuple[Callable[[int], list[Any]], Callable[[Any], Any]]:
    from memsys.domain.model import MemoryItem

    def prepare(n: int) -> list[Any]:
        prefix = fx.fresh("c")
        return [item_kwargs(i, prefix) for i in range(n)]
    return prepare, (lambda kwargs: MemoryItem(**kwargs))


def _all() -> dict[str, Benchmark]:
    # Per backend the reads come first, so they see exactly the preloaded store on both sides;
    # the writes that follow grow both sides' stores by the same items in the same order.
    reads = {"faiss": [("vector_search", _vector_search, "similarity_search top 10")],
             "chroma": [("vector_search", _vector_search, "similarity_search top 10")],
             "networkx": [("traverse", _traverse, "neighbors to depth 2")],
             "kuzu": [("traverse", _traverse, "neighbors to depth 2")]}
    out: list[Benchmark] = []
    for backend in BACKENDS:
        out += [Benchmark(f"{backend}.retrieve", backend, _retrieve, "retrieve a stored item by id"),
                Benchmark(f"{backend}.search", backend, _search, "structured search by memory type, limit 10")]
        out += [Benchmark(f"{backend}.{name}", backend, make, doc) for name, make, doc in reads.get(backend, [])]
        out += [Benchmark(f"{backend}.store", backend, _store, "store one new item"),
                Benchmark(f"{backend}.batch", backend, _batch, f"store_many of {BATCH} new items")]
    out += [Benchmark("manager.commit", "manager", _commit, "one transaction writing one item to LMDB, DuckDB, Kuzu"),
            Benchmark("item.construct", "none", _construct, "MemoryItem(...) construction and validation")]
    return {b.name: b for b in out}


BENCHMARKS = _all()
