from __future__ import annotations

import pytest

from memsys import MemoryManager
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.memory_store import InMemoryStore
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter


def open_stores(root) -> dict:
    """LMDB and DuckDB (native transactions) and TinyDB (none), as the crash test uses them."""
    return {"lmdb": LMDBMemoryAdapter(path=root / "lmdb", sync=False),
            "duckdb": DuckDBMemoryAdapter(path=root / "items.duckdb", sync=False),
            "tinydb": TinyDBMemoryAdapter(path=root / "items.json", sync=False)}


@pytest.fixture
def manager(tmp_path):
    m = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    yield m
    m.close()


@pytest.fixture
def memory_manager(tmp_path):
    m = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                      transaction_log=tmp_path / "txlog")
    yield m
    m.close()
