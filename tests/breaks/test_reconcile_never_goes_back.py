"""Reconciliation applies the newest queued write per id, and only where the store does not
already hold a newer version: a stale queued write never overwrites newer data."""

from __future__ import annotations

from memsys import MemoryManager
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.domain.model import MemoryItem, MemoryType


def item(item_id: str, content: str, version: int) -> MemoryItem:
    return MemoryItem(id=item_id, content=content, memory_type=MemoryType.KNOWLEDGE, version=version)


def test_queued_writes_older_than_the_store_are_skipped_and_newer_ones_applied(tmp_path) -> None:
    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False),
                             "tinydb": TinyDBMemoryAdapter(path=tmp_path / "items.json", sync=False)},
                            transaction_log=tmp_path / "txlog", primary_store="lmdb", fallback_store="tinydb",
                            reconciliation_queue=tmp_path / "queue")
    try:
        lmdb = manager.adapters["lmdb"]
        manager.store(item("kept", "newer, committed", 1), ["lmdb"])
        manager.store(item("behind", "older, committed", 1), ["lmdb"])
        current = {i: lmdb.retrieve(i).version for i in ("kept", "behind")}
        manager.reconciliation.add("lmdb", item("kept", "stale queued write", current["kept"] - 1))
        manager.reconciliation.add("lmdb", item("kept", "same version, queued", current["kept"]))
        manager.reconciliation.add("lmdb", item("behind", "old queued write", current["behind"] - 1))
        manager.reconciliation.add("lmdb", item("behind", "newest queued write", current["behind"] + 10))
        manager.reconciliation.add("lmdb", item("missing", "only queued", 5))
        result = manager.reconcile()
        assert (result["applied"], result["skipped_newer"], result["pending"]) == (2, 1, 0), result
        assert lmdb.retrieve("kept").content == "newer, committed"
        assert lmdb.retrieve("kept").version == current["kept"]
        assert (lmdb.retrieve("behind").content, lmdb.retrieve("behind").version) == (
            "newest queued write", current["behind"] + 10)
        assert (lmdb.retrieve("missing").content, lmdb.retrieve("missing").version) == ("only queued", 5)
        again = manager.reconcile()  # the queue is drained
        assert (again["applied"], again["skipped_newer"], again["pending"]) == (0, 0, 0), again
    finally:
        manager.close()
