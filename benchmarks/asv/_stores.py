"""Stores for the asv suite: built once per asv run (``setup_cache``), copied per benchmark process.

``build_stores`` is the one ``setup_cache`` every class shares (asv keys a cache by the
function's module and line, so a shared function builds once). It runs in asv's cache folder,
the working folder of every benchmark that uses it, and asv deletes that folder afterwards.
A benchmark process opens its own copy of a store (``opened``), so a benchmark that writes never
changes what the next one measures.

Sizes: 1k, 10k and 100k items where building them fits an asv run. TinyDB rewrites its whole
file per write and Chroma adds about 2-3k items a second; Kuzu took 36 s for 10k items with
their 20k relationships, and 100k overflowed a 256 MiB buffer pool: those three stop at 10k.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
from typing import Any



def _sizes_from_environment(default: list[int]) -> list[int]:
    """MEMSYS_ASV_SIZES="1000,10000" measures those store sizes only: a run over a long commit range
    rebuilds every store once per commit, and 100k items of each adapter take minutes to build."""
    text = os.environ.get("MEMSYS_ASV_SIZES", "").strip()
    if not text:
        return default
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"MEMSYS_ASV_SIZES={text!r}: want comma-separated item counts, e.g. 1000,10000") from None
    if not chosen or chosen[0] < 10:
        raise ValueError(f"MEMSYS_ASV_SIZES={text!r}: want item counts of at least 10")
    return chosen


SIZES = _sizes_from_environment([1_000, 10_000, 100_000])
BACKENDS = ["lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma"]
LARGEST = {"tinydb": 10_000, "chroma": 10_000, "kuzu": 10_000}
DIMENSION = 64
FILES = {"tinydb": "items.json", "networkx": "graph", "faiss": "faiss", "chroma": "chroma",
         "kuzu": "graph.kuzu", "lmdb": "lmdb", "duckdb": "items.duckdb"}
CLASSES = {"tinydb": "TinyDBMemoryAdapter", "networkx": "GraphMemoryAdapter", "faiss": "FAISSVectorStore",
           "chroma": "ChromaDBVectorStore", "kuzu": "KuzuMemoryAdapter", "lmdb": "LMDBMemoryAdapter",
           "duckdb": "DuckDBMemoryAdapter"}
#: Engine durability off where the adapter allows it (as under a MemoryManager, whose log is durable).
OPTIONS: dict[str, dict[str, Any]] = {
    "lmdb": {"sync": False, "map_size": 4 << 30}, "duckdb": {"sync": False}, "tinydb": {"sync": False},
    "networkx": {"sync": False}, "kuzu": {"buffer_pool_size": 256 << 20},
    "faiss": {"dimension": DIMENSION}, "chroma": {"dimension": DIMENSION}}
WORDS = ["memory", "agent", "vector", "graph", "commit", "store", "crash", "query", "token", "cache"]
GRAPHS = ("networkx", "kuzu")
VECTORS = ("faiss", "chroma")
#: Commit records left in the coordinator log by the simulated crash, per recovery benchmark.
RECOVERY_RECORDS = [100, 1_000]


def sizes(backend: str) -> list[int]:
    return [s for s in SIZES if s <= LARGEST.get(backend, SIZES[-1])] or SIZES[:1]


def item(i: int, prefix: str = "pre", content: str | None = None) -> Any:
    """Item ``i``: about 370 bytes serialised, half KNOWLEDGE and half EPISODIC."""
    from memsys.domain.model import MemoryItem, MemoryType

    rng = random.Random(i)
    text = " ".join(rng.choice(WORDS) for _ in range(18))
    return MemoryItem(id=f"{prefix}-{i:07d}", content=text if content is None else content,
                      memory_type=MemoryType.KNOWLEDGE if i % 2 else MemoryType.EPISODIC,
                      metadata={"n": i, "tag": rng.choice(WORDS)})


def open_store(backend: str, folder: str) -> Any:
    import memsys.adapters

    os.makedirs(folder, exist_ok=True)
    return getattr(memsys.adapters, CLASSES[backend])(path=os.path.join(folder, FILES[backend]), **OPTIONS[backend])


def fill(store: Any, backend: str, count: int, chunk: int = 5_000, edges: bool = True) -> None:
    for start in range(0, count, chunk):
        store.store_many([item(i) for i in range(start, min(count, start + chunk))])
    if edges and backend in GRAPHS:  # a sparse graph: every item points at the next two, 1,000 items a transaction
        for start in range(0, count, 1_000):
            tx = store.begin_transaction()
            for i in range(start, min(count, start + 1_000)):
                for step in (1, 2):
                    store.add_relationship(f"pre-{i:07d}", f"pre-{(i + step) % count:07d}", "NEXT")
            store.prepare_commit(tx)
            store.commit(tx)


def manager_over(folder: str, backends: tuple[str, ...] = ("lmdb", "duckdb", "kuzu")) -> Any:
    from memsys.application.manager import MemoryManager

    return MemoryManager({b: open_store(b, os.path.join(folder, b)) for b in backends},
                         transaction_log=os.path.join(folder, "txlog"))


def crashed_folder(folder: str, records: int) -> None:
    """Three stores and a coordinator log holding ``records`` commits that recovery must redo."""
    from memsys.testing.crash import abandon

    manager = manager_over(folder)
    for n in range(records):
        with manager.with_transaction(["lmdb", "duckdb", "kuzu"]):
            for k, store in enumerate(("lmdb", "duckdb", "kuzu")):
                manager.adapters[store].store(item(3 * n + k, "tx"))
    abandon(manager)  # a dead process: no checkpoint, no flush


def build_stores() -> str:
    """Every store of the suite, in the current (asv cache) folder; returns that folder."""
    root = os.path.abspath("memsys-stores")
    for backend in BACKENDS:
        for count in sizes(backend):
            store = open_store(backend, os.path.join(root, f"{backend}-{count}"))
            fill(store, backend, count)
            store.close()
    for count in SIZES:
        manager = manager_over(os.path.join(root, f"commit-{count}"))
        for backend in ("lmdb", "duckdb", "kuzu"):
            # Items only (the commit writes items), loaded outside transactions: a bulk load.
            fill(manager.adapters[backend], backend, count, edges=False)
        manager.close()
    for records in RECOVERY_RECORDS:
        crashed_folder(os.path.join(root, f"crashed-{records}"), records)
    return root


build_stores.timeout = 1800  # type: ignore[attr-defined]  # asv's limit for setup_cache

#: What this process opened, in order; closed last-opened first (a manager before its stores).
_opened: dict[tuple[str, ...], Any] = {}
_copies: list[str] = []


def _close_all() -> None:
    for value in reversed(list(_opened.values())):
        try:
            value.close()
        except Exception:  # the process is ending; asv deletes the folder anyway
            pass
    _opened.clear()
    for folder in _copies:
        shutil.rmtree(folder, ignore_errors=True)
    _copies.clear()


def remember(key: tuple[str, ...], value: Any) -> Any:
    _opened[key] = value
    return value


def recall(key: tuple[str, ...]) -> Any:
    return _opened.get(key)


atexit.register(_close_all)


def copy_of(root: str, name: str, tag: str = "") -> str:
    """This process's own copy of a built folder (opened stores write; the original stays as built)."""
    target = os.path.join(os.getcwd(), f"copy-{os.getpid()}-{name}{'-' + tag if tag else ''}")
    if not os.path.isdir(target):
        shutil.copytree(os.path.join(root, name), target, ignore=shutil.ignore_patterns("*.memsys-lock"))
        _copies.append(target)
    return target


def opened(root: str, backend: str, count: int, writes: bool = True) -> Any:
    """The store of ``count`` items, opened once per process (on its first timed call, which asv's
    warm-up absorbs). Benchmarks that write get this process's own copy; readers open the built
    store itself (asv runs one benchmark process at a time), which saves copying 100k items."""
    key = (backend, str(count), "copy" if writes else "built")
    folder = copy_of(root, f"{backend}-{count}") if writes else os.path.join(root, f"{backend}-{count}")
    return recall(key) or remember(key, open_store(backend, folder))


def opened_manager(root: str, count: int) -> Any:
    key = ("commit", str(count), "copy")
    return recall(key) or remember(key, manager_over(copy_of(root, f"commit-{count}")))
