"""A committed write a quarantined store has not applied survives log compaction and a crash:
the log keeps carrying it until the store has it, recover() says "not ok" while it is missing,
and the store gets it when it is back."""

from __future__ import annotations

import pytest

from memsys import MemoryManager
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.domain.errors import CommitIncompleteError
from memsys.testing import sample_item
from memsys.testing.crash import abandon
from memsys.testing.faults import FaultInjector


def open_stores(root) -> dict:
    return {"lmdb": LMDBMemoryAdapter(path=root / "lmdb", sync=False),
            "tinydb": TinyDBMemoryAdapter(path=root / "items.json", sync=False)}


def where(manager, item_id: str) -> dict[str, bool]:
    return {name: adapter.retrieve(item_id) is not None for name, adapter in manager.adapters.items()}


@pytest.mark.parametrize("crash", [True, False], ids=["crash", "clean-close"])
def test_a_write_a_quarantined_store_missed_survives_compactions_and_a_restart(tmp_path, crash) -> None:
    log_path = tmp_path / "txlog"
    manager = MemoryManager(open_stores(tmp_path), transaction_log=log_path, compact_records=10)
    FaultInjector(manager.adapters["tinydb"], seed=1).fail("apply")  # tinydb is down from here on
    with pytest.raises(CommitIncompleteError):
        manager.store(sample_item(1))  # committed: lmdb has it, tinydb owes it
    for i in range(2, 40):
        manager.store(sample_item(i), ["lmdb"])  # enough commits for several compactions
    assert manager.coordinator.metrics.counter("checkpoints") >= 2, "the log was never compacted"
    report = manager.recover()  # tinydb is still down: the write is missing, and recover() says so
    assert not report.ok and "tinydb" in report.failed_stores
    assert where(manager, "item-00001") == {"lmdb": True, "tinydb": False}
    if crash:
        abandon(manager)
    else:
        manager.close()
    reopened = MemoryManager(open_stores(tmp_path), transaction_log=log_path)  # tinydb is back
    try:
        assert reopened.last_recovery.ok, reopened.last_recovery
        assert where(reopened, "item-00001") == {"lmdb": True, "tinydb": True}
        assert where(reopened, "item-00039") == {"lmdb": True, "tinydb": False}
    finally:
        reopened.close()
