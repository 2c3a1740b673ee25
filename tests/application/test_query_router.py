"""QueryRouter on the seven real adapters: routing by what the query asks, sources on every hit,
cascading / direct / cross-store modes, the per-store deadline (a hung store through the port
fault wrappers) and failing stores reported beside the results or, on request, an error."""

from __future__ import annotations

import pytest

from memsys import MemoryManager
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.application.query_router import QueryRouter
from memsys.domain.errors import (
    DeadlineExceededError,
    InvalidInputError,
    InvalidQueryError,
    MemoryRetrievalError,
    StoreError,
)
from memsys.testing import sample_item
from memsys.testing.chaos import SEVEN, open_store
from memsys.testing.port_faults import FaultPlan, wrap_store


@pytest.fixture(scope="module")
def seven(tmp_path_factory):
    root = tmp_path_factory.mktemp("router")
    manager = MemoryManager({b: open_store(b, str(root / b)) for b in SEVEN}, transaction_log=root / "txlog")
    for i in range(8):
        manager.store(sample_item(i), list(SEVEN))
    manager.store(sample_item(20), ["duckdb"])
    manager.store(sample_item(21), ["faiss", "networkx"])
    manager.store(sample_item(22), ["lmdb", "kuzu"])
    for graph in ("networkx", "kuzu"):
        manager.adapters[graph].add_relationship("item-00000", "item-00001", "next")
    manager.adapters["kuzu"].add_relationship("item-00000", "item-00022", "next")
    yield manager
    manager.close()


def test_each_query_kind_goes_to_the_stores_that_can_answer_it(seven) -> None:
    router = QueryRouter(seven)
    assert router.classify({"id": "item-00001"}) == router.classify({"ids": ["item-00001"]}) == "id"
    assert router.classify({"metadata": {"parity": "odd"}}) == "structured"
    assert router.classify("#3") == router.classify({"content": "#3", "memory_type": "CODE"}) == "text"
    assert router.classify({"similar_to": "x"}) == "vector"
    assert router.classify({"related_to": "item-00000"}) == "graph"
    assert router.route({"metadata": {"n": 1}})[0] == "duckdb"  # it pushes filters down
    assert router.route({"similar_to": "x"}) == ["faiss", "chroma"]
    assert router.route({"related_to": "x"}) == ["networkx", "kuzu"]
    assert router.route({"id": "x"}) == list(SEVEN)


def test_merged_hits_carry_the_stores_they_came_from(seven) -> None:
    router = QueryRouter(seven, deadline=30)
    found = router.execute({"id": "item-00022"})
    assert found.kind == "id" and [(h.id, h.sources) for h in found] == [("item-00022", ("kuzu", "lmdb"))]
    assert found.complete and found.asked == list(SEVEN) == found.answered

    everything = router.execute({})
    assert [h.id for h in everything] == [f"item-{i:05d}" for i in (*range(8), 20, 21, 22)]  # by created_at
    sources = {h.id: h.sources for h in everything}
    assert sources["item-00003"] == tuple(SEVEN) and sources["item-00020"] == ("duckdb",)
    assert sources["item-00021"] == ("networkx", "faiss")

    text = router.execute("#5")
    assert [h.id for h in text] == ["item-00005"] and text.hits[0].sources == tuple(SEVEN)

    similar = router.execute({"similar_to": sample_item(4).content, "top_k": 3})
    assert similar.kind == "vector" and similar.hits[0].id == "item-00004"
    assert [h.score for h in similar] == sorted((h.score for h in similar), reverse=True)
    assert set(similar.hits[0].sources) == {"faiss", "chroma"}

    joined = router.execute({"similar_to": sample_item(4).content, "top_k": 3}, mode="cross_store")
    assert joined.hits[0].sources == tuple(SEVEN)  # the vector hit joined with every store that holds it

    graph = router.execute({"related_to": "item-00000"})
    assert [(h.id, h.sources) for h in graph] == [("item-00001", ("networkx", "kuzu")), ("item-00022", ("kuzu",))]


def test_cascading_stops_at_the_first_store_that_answers_enough_and_direct_asks_one(seven) -> None:
    router = QueryRouter(seven)
    first = router.execute({"metadata": {"parity": "odd"}}, mode="cascading", enough=2)
    assert first.asked == ["duckdb"] and len(first) == 4 and all(h.sources == ("duckdb",) for h in first)
    # duckdb holds no item-00021: the cascade goes on until a store has it.
    rare = router.execute({"ids": ["item-00021"]}, mode="cascading")
    assert rare.asked == ["tinydb", "networkx"] and rare.hits[0].sources == ("networkx",)
    direct = router.execute({"ids": ["item-00021"]}, mode="direct", stores=["lmdb"])
    assert direct.asked == ["lmdb"] and len(direct) == 0


def _three(tmp_path, plan: FaultPlan, faulty: str = "duckdb") -> MemoryManager:
    stores = {"duckdb": DuckDBMemoryAdapter(path=tmp_path / "d.duckdb", sync=False),
              "lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False),
              "tinydb": open_store("tinydb", str(tmp_path))}
    stores[faulty] = wrap_store(stores[faulty], plan)
    manager = MemoryManager(stores, transaction_log=tmp_path / "txlog")
    for i in range(5):
        manager.store(sample_item(i))
    return manager


def test_a_hung_store_is_cut_at_its_deadline_and_reported_beside_the_results(tmp_path) -> None:
    plan = FaultPlan(seed=21, deadline=60).add("search", kind="hang")
    manager = _three(tmp_path, plan)
    try:
        router = QueryRouter(manager, deadline=0.25)
        result = router.execute({"metadata": {"parity": "even"}})
        failure = result.failures["duckdb"]
        assert isinstance(failure, DeadlineExceededError) and failure.store == "duckdb"
        assert not result.complete and result.answered == ["lmdb", "tinydb"]
        assert [(h.id, h.sources) for h in result] == [(f"item-{i:05d}", ("lmdb", "tinydb")) for i in (0, 2, 4)]
        assert set(router.last_errors) == {"duckdb"}
        with pytest.raises(MemoryRetrievalError) as strict:
            router.execute({"metadata": {"parity": "even"}}, all_or_error=True)
        assert isinstance(strict.value.errors["duckdb"], DeadlineExceededError)
        # Cascading: the hung first store costs one deadline, then the next store answers.
        cascade = router.execute({"metadata": {"parity": "even"}}, mode="cascading")
        assert cascade.asked == ["duckdb", "lmdb"] and isinstance(cascade.failures["duckdb"], DeadlineExceededError)
        assert [h.sources for h in cascade] == [("lmdb",)] * 3
        assert sum(1 for e in plan.fired if e.kind == "hang") == 3  # each query reached the store once
    finally:
        plan.heal()  # release the abandoned calls
        manager.close()


def test_a_failing_store_is_reported_and_every_store_failing_is_an_error(tmp_path) -> None:
    plan = FaultPlan(seed=22).add("retrieve_many", kind="permanent")
    manager = _three(tmp_path, plan, faulty="lmdb")
    try:
        router = QueryRouter(manager, deadline=30)
        result = router.execute({"id": "item-00001"})
        assert isinstance(result.failures["lmdb"], StoreError) and result.hits[0].sources == ("duckdb", "tinydb")
        with pytest.raises(MemoryRetrievalError) as strict:
            router.execute({"id": "item-00001"}, all_or_error=True)
        assert set(strict.value.errors) == {"lmdb"}
        with pytest.raises(MemoryRetrievalError):
            router.execute({"id": "item-00001"}, stores=["lmdb"])
        assert router.query({"metadata": {"parity": "odd"}})[0].id == "item-00001"  # the list form
        for bad in ({"mode": "sideways"}, {"deadline": -1}, {"enough": 0}):
            with pytest.raises(InvalidInputError):
                router.execute({}, **bad)
        with pytest.raises(InvalidQueryError):
            router.execute({"similar_to": "x", "related_to": "y"})
        with pytest.raises(InvalidQueryError):
            router.execute({"nonsense": 1})
    finally:
        manager.close()
