"""asv benchmarks: memsys operations tracked across commits.

    asv continuous main HEAD --factor 1.5     # fails on a significant regression
    asv run --python=same --set-commit-hash $(git rev-parse HEAD) && asv publish

Each class builds its stores in ``setup`` in a temporary folder; asv times the
``time_`` methods. Shared CI machines swing; compare commits in one run
(``asv continuous``), not against stored absolutes.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile

from memsys.application.manager import MemoryManager
from memsys.domain.model import MemoryItem, MemoryType

BACKENDS = ["lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma"]


def _items(n: int, prefix: str) -> list[MemoryItem]:
    return [MemoryItem(id=f"{prefix}-{i}", content=f"memory number {i} about vectors and graphs",
                       memory_type=MemoryType.KNOWLEDGE, metadata={"n": i}) for i in range(n)]


def _open(backend: str, folder: str):
    from memsys.testing.chaos import open_store

    return open_store(backend, folder)


class AdapterOperations:
    params = BACKENDS
    param_names = ["backend"]
    timeout = 120

    def setup(self, backend: str) -> None:
        self.folder = tempfile.mkdtemp(prefix="memsys-asv-")
        self.store = _open(backend, self.folder)
        self.store.store_many(_items(500, "pre"))
        self.fresh = iter(_items(100_000, "new"))
        self.ids = itertools.cycle([f"pre-{i}" for i in range(500)])

    def teardown(self, backend: str) -> None:
        self.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def time_store(self, backend: str) -> None:
        self.store.store(next(self.fresh))

    def time_retrieve(self, backend: str) -> None:
        self.store.retrieve(next(self.ids))

    def time_search_by_type(self, backend: str) -> None:
        self.store.search({"memory_type": "KNOWLEDGE", "limit": 10})


class CrossStoreCommit:
    timeout = 120

    def setup(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="memsys-asv-")
        self.manager = MemoryManager({b: _open(b, f"{self.folder}/{b}") for b in ("lmdb", "duckdb", "kuzu")},
                                     transaction_log=f"{self.folder}/txlog")
        self.fresh = iter(_items(100_000, "tx"))

    def teardown(self) -> None:
        self.manager.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def time_three_store_transaction(self) -> None:
        with self.manager.with_transaction(["lmdb", "duckdb", "kuzu"]):
            for store in ("lmdb", "duckdb", "kuzu"):
                self.manager.adapters[store].store(next(self.fresh))

    def peakmem_three_store_transactions(self) -> None:
        for _ in range(50):
            self.time_three_store_transaction()
