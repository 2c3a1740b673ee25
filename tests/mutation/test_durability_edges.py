"""Durability outcomes that only a power loss shows (a killed process keeps its page cache):
what the reconciliation queue acknowledged is still there after the power fails."""

from __future__ import annotations

import json
import os

import pytest

from memsys.resilience.degraded import ReconciliationQueue
from memsys.testing import sample_item


def queued(path) -> list[tuple[int, str, str]]:
    queue = ReconciliationQueue(path)
    try:
        return [(e.seq, e.store, e.item.id) for e in queue.latest()]
    finally:
        queue.close()


def test_an_entry_added_to_an_old_format_queue_survives_a_power_loss(plfs) -> None:
    path = os.path.join(plfs.mount_point, "queue.jsonl")
    # an earlier version's JSON-lines file, made durable
    line = '{"seq": 1, "store": "lmdb", "item": %s}\n'
    with open(path, "w", encoding="utf-8") as f:
        f.write(line % json.dumps(sample_item(1).to_dict()))
        f.flush()
        os.fsync(f.fileno())
    queue = ReconciliationQueue(path)
    queue.add("duckdb", sample_item(2))  # acknowledged: the file is rewritten framed
    queue.close()
    plfs.power_failure()
    assert queued(path) == [(1, "lmdb", "item-00001"), (2, "duckdb", "item-00002")]


def test_applied_entries_stay_dropped_and_the_rest_stay_queued_after_a_power_loss(plfs) -> None:
    path = os.path.join(plfs.mount_point, "queue")
    queue = ReconciliationQueue(path)
    for i in range(1, 4):
        queue.add("lmdb", sample_item(i))
    queue.done([e for e in queue.latest() if e.item.id == "item-00002"])
    queue.close()
    plfs.power_failure()
    assert queued(path) == [(1, "lmdb", "item-00001"), (3, "lmdb", "item-00003")]


def test_a_queued_sync_update_survives_a_power_loss(plfs, tmp_path) -> None:
    from memsys import MemoryManager
    from memsys.adapters.memory_store import InMemoryStore
    from memsys.application.sync import SyncManager

    queue_path = os.path.join(plfs.mount_point, "sync.queue")
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        sync = SyncManager(manager, queue_path=queue_path)
        sync.queue_update("b", sample_item(4))  # durable when it returns
        sync.close()
        plfs.power_failure()
        reopened = SyncManager(manager, queue_path=queue_path)
        assert [(s, i) for _, s, i, _ in reopened.pending()] == [("b", "item-00004")]
        reopened.close()
    finally:
        manager.close()


def test_dead_letters_and_their_discarding_survive_a_power_loss(plfs) -> None:
    from memsys import MemoryManager
    from memsys.adapters.memory_store import InMemoryStore
    from memsys.application.txlog import read_dead_letters
    from memsys.domain.errors import CommitIncompleteError, StoreError
    from memsys.domain.operations import Put
    from memsys.testing.powerloss import _abandon

    class Poisoned(InMemoryStore):
        def _apply(self, ops, durable):
            if any(isinstance(op, Put) and op.item.id in ("item-00002", "item-00003") for op in ops):
                raise StoreError("the engine cannot take this item (injected)", store=self.name)
            super()._apply(ops, durable)

    log_path = os.path.join(plfs.mount_point, "txlog")
    manager = MemoryManager({"a": Poisoned(dimension=8), "b": InMemoryStore(dimension=8)}, transaction_log=log_path)
    manager.store(sample_item(1))
    for i in (2, 3):
        with pytest.raises(CommitIncompleteError):
            manager.store(sample_item(i))
    letter, kept = manager.dead_letters()
    plfs.power_failure()
    _abandon(manager)
    assert [d.id for d in read_dead_letters(log_path)] == [letter.id, kept.id]

    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=log_path)
    manager.discard_dead_letters([letter.id])
    plfs.power_failure()
    _abandon(manager)
    assert [d.id for d in read_dead_letters(log_path)] == [kept.id]
