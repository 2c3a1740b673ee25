"""Prepare asks every store of a transaction, wherever it sorts among them: a store that refuses
its share (here a graph store asked to relate an item it does not hold) rolls the whole
transaction back, names the store, and leaves every store exactly as it was."""

from __future__ import annotations

import pytest

from memsys import MemoryManager
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.networkx_store import GraphMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.domain.errors import TransactionAbortedError
from memsys.testing import dump, sample_item


def edges(graph) -> list:
    return graph.get_relationships("item-00001", direction="both")


# The graph store's name puts it first, in the middle and last of the sorted participants.
@pytest.mark.parametrize("graph", ["a-graph", "m-graph", "z-graph"])
def test_a_refusal_at_prepare_by_any_store_rolls_back_every_store(tmp_path, graph) -> None:
    stores = {"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False),
              "tinydb": TinyDBMemoryAdapter(path=tmp_path / "items.json", sync=False),
              graph: GraphMemoryAdapter(path=tmp_path / "graph")}
    manager = MemoryManager(stores, transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1))
        before = {name: dump(adapter) for name, adapter in manager.adapters.items()}
        with pytest.raises(TransactionAbortedError) as refused:
            with manager.with_transaction(sorted(stores)):
                manager.adapters["lmdb"].store(sample_item(2))
                manager.adapters["tinydb"].store(sample_item(2))
                manager.adapters[graph].store(sample_item(2))
                manager.adapters[graph].add_relationship("item-00001", "no-such-item", "cites")
        assert refused.value.store == graph
        assert {name: dump(adapter) for name, adapter in manager.adapters.items()} == before
        assert edges(manager.adapters[graph]) == []
        assert not manager.coordinator.quarantined and manager.recover().ok
        manager.store(sample_item(3))  # nothing of the refused transaction is left to get in the way
        assert all(adapter.retrieve("item-00003") is not None for adapter in manager.adapters.values())
        assert all(adapter.retrieve("item-00002") is None for adapter in manager.adapters.values())
    finally:
        manager.close()
