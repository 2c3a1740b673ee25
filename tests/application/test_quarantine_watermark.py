"""The conflict watermark while a store is quarantined (waiting for recovery).

A quarantined store must not hold back conflicts on the healthy stores (a single writer rewriting
an id there commits), but a transaction that began while a store lagged may have read its stale
values, so a write to that store still conflicts with what recovery later brought it.
"""

from __future__ import annotations

import pytest

from memsys import MemoryItem, MemoryManager, MemoryType
from memsys.adapters import LMDBMemoryAdapter, TinyDBMemoryAdapter
from memsys.domain.errors import CommitIncompleteError, ConflictError
from memsys.testing.port_faults import FaultPlan, wrap_store


def _item(item_id: str, content: str) -> MemoryItem:
    return MemoryItem(id=item_id, content=content, memory_type=MemoryType.KNOWLEDGE)


@pytest.fixture()
def lagging(tmp_path):
    """A manager whose LMDB store missed a committed write of x (v2) and is quarantined."""
    plan = FaultPlan(seed=0, crash_mode="raise")
    manager = MemoryManager({"lmdb": wrap_store(LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False), plan, "lmdb"),
                             "tinydb": TinyDBMemoryAdapter(path=tmp_path / "items.json", sync=False)},
                            transaction_log=tmp_path / "txlog", failure_threshold=100)
    manager.store(_item("x", "v1"))
    plan.add(method="apply_prepared", kind="transient", store="lmdb")
    with pytest.raises(CommitIncompleteError):
        manager.store(_item("x", "v2"))
    assert "lmdb" in manager.coordinator.quarantined
    try:
        yield manager, plan
    finally:
        plan.heal()
        manager.close()


def test_a_healthy_store_commits_rewrites_while_another_is_quarantined(lagging) -> None:
    manager, _ = lagging
    for n in range(3):  # one writer: every rewrite of x commits
        manager.store(_item("x", f"tinydb-{n}"), stores=["tinydb"])
    assert manager.adapters["tinydb"].retrieve("x").content == "tinydb-2"
    assert "lmdb" in manager.coordinator.quarantined


def test_a_transaction_that_began_while_its_store_lagged_conflicts_after_recovery(lagging) -> None:
    manager, plan = lagging
    with pytest.raises(ConflictError):
        with manager.with_transaction(["lmdb"]) as tx:
            seen = tx.adapters["lmdb"].retrieve("x")  # the lagging store: v1, not the committed v2
            plan.heal()
            # Writing lmdb recovers it first (v2 lands); this write was based on v1: it must not
            # silently replace v2.
            tx.adapters["lmdb"].store(_item("x", f"{seen.content}+edit"))
    assert not manager.coordinator.quarantined
    assert manager.adapters["lmdb"].retrieve("x").content == "v2"
    # Re-run after the conflict: it now starts from a caught-up store and commits.
    with manager.with_transaction(["lmdb"]) as tx:
        seen = tx.adapters["lmdb"].retrieve("x")
        tx.adapters["lmdb"].store(_item("x", f"{seen.content}+edit"))
    assert manager.adapters["lmdb"].retrieve("x").content == "v2+edit"


def test_after_recovery_rewrites_of_what_recovery_applied_commit(lagging) -> None:
    manager, plan = lagging
    plan.heal()
    report = manager.recover()
    assert report.ok, report
    manager.store(_item("x", "v3"))  # on both stores, no concurrent writer: no conflict
    assert {n: manager.adapters[n].retrieve("x").content for n in ("lmdb", "tinydb")} == {"lmdb": "v3",
                                                                                         "tinydb": "v3"}
