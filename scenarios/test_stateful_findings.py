"""Bugs the stateful machines found in memsys, each pinned by its shortest deterministic replay.

A bug not fixed yet is marked xfail(strict=True), so it starts failing (XPASS) once it is fixed:
then the marker goes, with any workaround in the machines; the test stays as a regression test.
"""

from __future__ import annotations

import pytest

from memsys import MemoryItem, MemoryManager, MemoryType
from memsys.adapters import LMDBMemoryAdapter, TinyDBMemoryAdapter
from memsys.domain.errors import CommitIncompleteError
from memsys.testing.port_faults import FaultPlan, wrap_store


# Found by the fault machine (fixed: per-store watermark in Coordinator._decide).
def test_a_quarantined_store_does_not_make_sequential_writes_to_another_store_conflict(tmp_path) -> None:
    plan = FaultPlan(seed=0, crash_mode="raise")
    manager = MemoryManager({"lmdb": wrap_store(LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False), plan, "lmdb"),
                             "tinydb": TinyDBMemoryAdapter(path=tmp_path / "items.json", sync=False)},
                            transaction_log=tmp_path / "txlog", failure_threshold=100)
    try:
        plan.add(method="apply_prepared", kind="transient", store="lmdb")  # lmdb fails every apply
        with pytest.raises(CommitIncompleteError):  # committed; lmdb is quarantined
            manager.store(MemoryItem(id="a", content="both", memory_type=MemoryType.KNOWLEDGE))
        item = MemoryItem(id="b", content="one", memory_type=MemoryType.KNOWLEDGE)
        manager.store(item, stores=["tinydb"])
        # One writer, one thread, nothing concurrent: a rewrite must commit.
        manager.store(item.replace(content="two"), stores=["tinydb"])
        assert manager.adapters["tinydb"].retrieve("b").content == "two"
    finally:
        plan.heal()
        manager.close()
