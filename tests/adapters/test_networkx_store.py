from __future__ import annotations

import os

from memsys.adapters.networkx_store import GraphMemoryAdapter
from memsys.testing import GraphStoreContract, sample_item


class TestNetworkXContract(GraphStoreContract):
    def create_store(self, path):
        return GraphMemoryAdapter(path=path)


class TestNetworkXCompactingContract(GraphStoreContract):
    """A tiny compaction threshold: every few writes rewrite the snapshot."""

    def create_store(self, path):
        return GraphMemoryAdapter(path=path, compact_bytes=2048)


def test_journal_compacts_into_the_snapshot_and_replays(tmp_path) -> None:
    path = tmp_path / "graph"
    store = GraphMemoryAdapter(path=path, compact_bytes=4096)
    for i in range(50):
        store.store(sample_item(i))
        if i:
            store.add_relationship(sample_item(i - 1).id, sample_item(i).id, "next", {"i": i})
    log_size = os.path.getsize(path / "journal.log")
    assert log_size < 4096 + 8192, "the journal was never compacted"
    assert os.path.exists(path / "graph.snapshot")
    store.close()
    reopened = GraphMemoryAdapter(path=path)
    assert reopened.count() == 50
    assert reopened.shortest_path("item-00000", "item-00049") == [f"item-{i:05d}" for i in range(50)]


def test_a_torn_last_record_is_ignored_and_cut_off(tmp_path) -> None:
    path = tmp_path / "graph"
    store = GraphMemoryAdapter(path=path)
    store.store(sample_item(1))
    store.store(sample_item(2))
    store.store(sample_item(3))
    store.close()
    size = os.path.getsize(path / "journal.log")
    os.truncate(path / "journal.log", size - 20)  # a crash mid-append: the last record's payload cut short
    reopened = GraphMemoryAdapter(path=path)
    assert reopened.count() == 2
    reopened.store(sample_item(3))
    reopened.close()
    assert GraphMemoryAdapter(path=path).count() == 3
