from __future__ import annotations

from memsys.adapters.kuzu_store import KuzuMemoryAdapter
from memsys.testing import GraphStoreContract, sample_item


class TestKuzuContract(GraphStoreContract):
    def create_store(self, path):
        return KuzuMemoryAdapter(path=path, buffer_pool_size=64 << 20)


def test_batches_mix_items_and_edges_in_order_in_one_transaction(tmp_path) -> None:
    store = KuzuMemoryAdapter(path=tmp_path / "graph.kuzu")
    a, b, c = sample_item(1), sample_item(2), sample_item(3)
    tx = store.begin_transaction()
    store.store_many([a, b])
    store.add_relationship(a.id, b.id, "next", {"w": 1})
    store.store(c)
    store.add_relationship(b.id, c.id, "next")
    store.delete(a.id)
    store.commit(tx)
    assert store.get_relationships(b.id, "both") == store.get_relationships(b.id, "both")
    assert [(r.source_id, r.target_id) for r in store.get_relationships(b.id, "both")] == [(b.id, c.id)]
    assert store.count() == 2
