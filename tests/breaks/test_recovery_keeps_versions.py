"""Recovery redoes logged commits as they were committed: after a crash, a store that lost its
files gets back every item with the version (the commit's LSN) and updated_at it was committed
with, updates in order, deletes kept; the stores that kept their files are left as they were."""

from __future__ import annotations

import os
import shutil

from memsys import MemoryManager
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing import dump, sample_item
from memsys.testing.crash import abandon


def open_stores(root) -> dict:
    return {"lmdb": LMDBMemoryAdapter(path=root / "lmdb", sync=False),
            "duckdb": DuckDBMemoryAdapter(path=root / "items.duckdb", sync=False),
            "tinydb": TinyDBMemoryAdapter(path=root / "items.json", sync=False)}


def test_a_store_rebuilt_by_recovery_holds_the_committed_versions(tmp_path) -> None:
    manager = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    lsns = {}
    for i in range(6):
        with manager.with_transaction(["lmdb", "duckdb", "tinydb"]) as tx:
            for name in tx.stores:
                manager.adapters[name].store(sample_item(i, content=f"first {i}"))
        lsns[i] = tx.lsn
    with manager.with_transaction(["lmdb", "tinydb"]) as tx:  # an update and a delete, later in the log
        manager.adapters["lmdb"].store(sample_item(2, content="second 2"))
        manager.adapters["tinydb"].store(sample_item(2, content="second 2"))
        manager.adapters["lmdb"].delete("item-00004")
        manager.adapters["tinydb"].delete("item-00004")
    update = tx.lsn
    before = {name: dump(adapter) for name, adapter in manager.adapters.items()}
    assert before["lmdb"]["item-00002"]["version"] == update and before["lmdb"]["item-00001"]["version"] == lsns[1]
    abandon(manager)  # a crash: no checkpoint, the log holds every commit
    shutil.rmtree(tmp_path / "lmdb")  # and two stores lost their files
    for name in os.listdir(tmp_path):
        if name.startswith("items.json"):
            os.unlink(tmp_path / name)
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    try:
        assert reopened.last_recovery.ok
        after = {name: dump(adapter) for name, adapter in reopened.adapters.items()}
        assert after == before  # every field, versions and updated_at included
        versions = {i: reopened.adapters["tinydb"].retrieve(f"item-{i:05d}") for i in lsns}
        assert {i: item and item.version for i, item in versions.items()} == {
            **lsns, 2: update, 4: None}
        reopened.store(sample_item(9))  # new commits get LSNs after every recovered one
        assert reopened.adapters["lmdb"].retrieve("item-00009").version > update
    finally:
        reopened.close()
