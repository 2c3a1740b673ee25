"""Adapter behaviour the adapters' mutation sample found unpinned: which argument a refused id
is named as, and vector reads inside a transaction, which must see its own buffered writes."""

from __future__ import annotations

import pytest

from memsys.adapters.faiss_store import FAISSVectorStore
from memsys.adapters.networkx_store import GraphMemoryAdapter
from memsys.domain.errors import InvalidInputError, InvalidMemoryItemError
from memsys.testing import sample_item


@pytest.fixture
def graph(tmp_path):
    store = GraphMemoryAdapter(tmp_path / "graph")
    store.store(sample_item(1))
    store.store(sample_item(2))
    store.add_relationship("item-00001", "item-00002", "CITES")
    yield store
    store.close()


@pytest.mark.parametrize("call, named", [
    (lambda g: g.get_relationship("", "item-00002", "CITES"), "source_id must not be empty"),
    (lambda g: g.get_relationship("item-00001", "", "CITES"), "target_id must not be empty"),
    (lambda g: g.get_relationship("item-00001", "item-00002", ""), "rel_type must not be empty"),
    (lambda g: g.shortest_path("item-00001", ""), "target_id must not be empty"),
    (lambda g: g.get_relationships("item-00001", rel_type=""), "rel_type must not be empty"),
], ids=["source", "target", "rel_type", "path-target", "relationships-rel_type"])
def test_a_bad_id_in_a_graph_read_is_refused_by_its_argument_name(graph, call, named) -> None:
    with pytest.raises(InvalidMemoryItemError) as refused:
        call(graph)
    assert str(refused.value) == named
    assert graph.get_relationship("item-00001", "item-00002", "CITES") is not None  # the store is unharmed


def test_a_graph_store_without_a_path_is_refused_saying_what_it_needs() -> None:
    with pytest.raises(InvalidInputError, match=r"GraphMemoryAdapter needs path= \(a folder it keeps its files in\)"):
        GraphMemoryAdapter(None)


def test_vector_reads_inside_a_transaction_see_its_buffered_writes(tmp_path) -> None:
    store = FAISSVectorStore(tmp_path / "faiss", dimension=8)
    try:
        store.store(sample_item(1))
        fresh = sample_item(2)
        tx = store.begin_transaction()
        store.store(fresh)
        vector = store.retrieve_vector("item-00002")
        assert vector is not None and vector.id == "item-00002" and vector.content == fresh.content
        hits = store.similar_items(list(vector.embedding), top_k=2)
        assert hits[0].item.id == "item-00002" and hits[0].score == pytest.approx(1.0, abs=1e-5)
        store.rollback(tx)
        assert store.retrieve_vector("item-00002") is None
    finally:
        store.close()
