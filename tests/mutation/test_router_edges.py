"""QueryRouter outcomes mutation testing found unpinned: direct mode asks one store, a vector
query returns five hits unless top_k says otherwise, and failures are named in the errors."""

from __future__ import annotations

import pytest

from memsys import MemoryManager
from memsys.adapters.memory_store import InMemoryStore
from memsys.application.query_router import QueryRouter
from memsys.domain.errors import MemoryRetrievalError, StoreError
from memsys.testing import sample_item
from memsys.testing.faults import FaultInjector


@pytest.fixture
def manager(tmp_path):
    m = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                      transaction_log=tmp_path / "txlog")
    for i in range(8):
        m.store(sample_item(i))
    yield m
    m.close()


def test_direct_mode_asks_only_the_first_store(manager) -> None:
    result = QueryRouter(manager).execute({"metadata": {"parity": "even"}}, mode="direct")
    assert result.asked == ["a"] and result.answered == ["a"]
    assert [h.item.id for h in result.hits] == ["item-00000", "item-00002", "item-00004", "item-00006"]


def test_a_vector_query_returns_five_hits_by_default_and_top_k_when_given(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        for i in range(16):  # different items in each store: the merge sees up to 2 x top_k hits
            manager.store(sample_item(i), ["a" if i % 2 else "b"])
        router = QueryRouter(manager)
        query = sample_item(3).content
        assert len(router.execute({"similar_to": query}).hits) == 5
        assert len(router.execute({"similar_to": query, "top_k": 7}).hits) == 7
    finally:
        manager.close()


def test_an_empty_id_query_is_refused_naming_the_field(manager) -> None:
    from memsys.domain.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="query 'id' must not be empty"):
        QueryRouter(manager).execute({"id": ""})


def test_when_every_store_fails_the_error_says_so_and_names_each_cause(manager) -> None:
    for name in ("a", "b"):
        FaultInjector(manager.adapters[name], seed=1).fail("search", error=StoreError)
    with pytest.raises(MemoryRetrievalError, match="^every store failed the query: a: .*; b: ") as failed:
        QueryRouter(manager).execute({"metadata": {"parity": "even"}})
    assert set(failed.value.errors) == {"a", "b"}

