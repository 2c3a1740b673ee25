"""Routing by memory type and metadata: one logical item to its routed stores, all or none,
checked on real adapters seen through seeded fault wrappers (memsys.testing.port_faults)."""

from __future__ import annotations

import pytest

from memsys import MemoryManager
from memsys.adapters import DuckDBMemoryAdapter, FAISSVectorStore, GraphMemoryAdapter, LMDBMemoryAdapter
from memsys.domain.errors import (
    CommitIncompleteError,
    InvalidInputError,
    MemoryRetrievalError,
    TransactionAbortedError,
)
from memsys.domain.model import MemoryType
from memsys.testing import sample_item
from memsys.testing.port_faults import FaultPlan, wrap_store

ROUTING = {
    "CODE": ["duckdb", "faiss", "graph"],                          # document, vector and graph together
    "CONVERSATION": [{"metadata": {"channel": ["support", "sales"]}, "stores": ["lmdb", "faiss"]},
                     {"stores": ["lmdb"]}],
    "default": ["lmdb"],
}


def stores(root, plan=None):
    built = {"lmdb": LMDBMemoryAdapter(path=root / "lmdb"), "duckdb": DuckDBMemoryAdapter(path=root / "items.duckdb"),
             "faiss": FAISSVectorStore(path=root / "faiss", dimension=16),
             "graph": GraphMemoryAdapter(path=root / "graph")}
    if plan is not None:
        built = {name: wrap_store(store, plan, name=name) for name, store in built.items()}
    return built


@pytest.fixture
def plan():
    return FaultPlan(seed=12)


@pytest.fixture
def manager(tmp_path, plan):
    m = MemoryManager(stores(tmp_path, plan), routing=ROUTING, transaction_log=tmp_path / "txlog",
                      breakers={name: {"failure_threshold": 1000} for name in ("lmdb", "duckdb", "faiss", "graph")})
    yield m
    plan.heal()
    m.close()


def item(i, memory_type, **metadata):
    base = sample_item(i, memory_type=memory_type)
    return base.replace(metadata={**(base.metadata or {}), **metadata})


def holders(manager, item_id):
    return sorted(name for name, store in manager.adapters.items() if store.retrieve(item_id) is not None)


def test_an_item_goes_to_the_stores_its_type_and_metadata_route_it_to(manager) -> None:
    code = item(1, MemoryType.CODE)
    manager.store(code)
    assert holders(manager, code.id) == ["duckdb", "faiss", "graph"]
    vector = manager.adapters["faiss"].retrieve_vector(code.id)  # embedded while the transaction prepared
    assert vector is not None and len(vector.embedding) == 16
    manager.store(item(2, MemoryType.CONVERSATION, channel="sales"))
    manager.store(item(3, MemoryType.CONVERSATION, channel="chat"))
    manager.store(item(4, MemoryType.KNOWLEDGE))
    assert holders(manager, "item-00002") == ["faiss", "lmdb"]
    assert holders(manager, "item-00003") == ["lmdb"] and holders(manager, "item-00004") == ["lmdb"]
    assert manager.route(item(5, MemoryType.CONVERSATION, channel="support")) == ["lmdb", "faiss"]
    stored = manager.retrieve(code.id)
    assert stored.content == code.content and stored.version > 1  # committed: stamped with its LSN
    assert [i.id for i in manager.search({"memory_type": "CODE"})] == [code.id]
    assert [i.id for i in manager.search({})] == ["item-00001", "item-00002", "item-00003", "item-00004"]


def test_a_bad_routing_table_is_refused_before_anything_is_opened(tmp_path) -> None:
    lmdb = LMDBMemoryAdapter(path=tmp_path / "lmdb")
    for bad, why in [({"CODE": ["nowhere"]}, "unknown stores"), ({"NOT_A_TYPE": ["lmdb"]}, "neither a memory type"),
                     ({"CODE": []}, "has no stores"), ({"default": "lmdb"}, "list of store names"),
                     ({"CODE": [{"stores": ["lmdb"], "metdata": {}}]}, "may have 'metadata'")]:
        with pytest.raises(InvalidInputError, match=why):
            MemoryManager({"lmdb": lmdb}, routing=bad, transaction_log=tmp_path / "txlog")
    assert lmdb._coordinator is None and not (tmp_path / "txlog").exists()
    lmdb.close()


def test_routed_writes_reach_all_their_stores_or_none_under_seeded_faults(manager, plan) -> None:
    # Every kind of failure a store can have at either phase, before or after the real call, on
    # the three stores of the CODE route; the seed picks where they fire.
    plan.randomize(rate=0.25, kinds=("transient", "permanent"), methods={"prepare_ops", "apply_prepared"},
                   enable=1.0)
    outcome = {}
    for i in range(40):
        code = item(i, MemoryType.CODE)
        try:
            manager.store(code)
            outcome[code.id] = "committed"
        except CommitIncompleteError:
            outcome[code.id] = "committed"  # decided: recovery completes the stores that lack it
        except TransactionAbortedError:
            outcome[code.id] = "aborted"
    assert len(plan.fired) >= 10 and set(outcome.values()) == {"committed", "aborted"}, plan.summary()
    plan.heal()
    assert manager.recover().ok
    for item_id, fate in outcome.items():
        expected = ["duckdb", "faiss", "graph"] if fate == "committed" else []
        assert holders(manager, item_id) == expected, (item_id, fate, plan.replay_hint())


def test_delete_removes_the_item_from_every_store_that_holds_it_graph_edges_included(manager, plan) -> None:
    a, b = item(1, MemoryType.CODE), item(2, MemoryType.CODE)
    manager.store(a)
    manager.store(b)
    manager.store(item(3, MemoryType.KNOWLEDGE))
    graph = manager.adapters["graph"]
    graph.add_relationship(a.id, b.id, "calls")
    graph.add_relationship(b.id, a.id, "called_by")
    plan.add(method="prepare_ops", kind="transient", store="faiss", times=1)
    with pytest.raises(TransactionAbortedError):
        manager.delete(a.id)  # faiss cannot take part: nobody deletes it
    assert holders(manager, a.id) == ["duckdb", "faiss", "graph"] and graph.get_relationships(b.id, "both")
    assert manager.delete(a.id) is True
    assert holders(manager, a.id) == [] and graph.get_relationships(b.id, "both") == []
    assert manager.delete(a.id) is False
    assert holders(manager, b.id) == ["duckdb", "faiss", "graph"] and holders(manager, "item-00003") == ["lmdb"]


def test_reads_use_the_routed_stores_and_pass_over_failing_ones(tmp_path) -> None:
    plan = FaultPlan(seed=3)
    m = MemoryManager(stores(tmp_path, plan), routing={"CODE": ["duckdb", "lmdb"], "default": ["graph"]},
                      store_priorities=["duckdb", "lmdb", "faiss", "graph"], transaction_log=tmp_path / "txlog")
    try:
        m.store(item(1, MemoryType.CODE))
        m.store(item(2, MemoryType.KNOWLEDGE))
        plan.add(method="retrieve", kind="permanent", store="duckdb")
        plan.add(method="search", kind="transient", store="duckdb")
        assert m.retrieve("item-00001").id == "item-00001"  # from lmdb, duckdb passed over
        assert [i.id for i in m.search({"memory_type": "CODE"})] == ["item-00001"]
        assert [i.id for i in m.search({})] == ["item-00001", "item-00002"]
        assert m.stats(count_items=False)["stores"]["duckdb"]["errors"] >= 3
        plan.add(method="search", kind="transient", store="lmdb")
        with pytest.raises(MemoryRetrievalError) as failed:
            m.search({"memory_type": "CODE"})
        assert set(failed.value.errors) == {"duckdb", "lmdb"}
        plan.add(method="retrieve", kind="transient", store="lmdb")
        with pytest.raises(MemoryRetrievalError):  # nobody could say: not "absent"
            m.retrieve("item-00009")
        plan.heal()
        assert m.breakers["duckdb"].state.value == "OPEN"  # three failed reads: passed over, uncalled, for now
        with pytest.raises(MemoryRetrievalError, match="circuit for duckdb is open"):
            m.retrieve("item-00009")
        m.breakers["duckdb"].reset()
        assert m.retrieve("item-00009") is None
    finally:
        plan.heal()
        m.close()


def test_routing_over_the_seven_real_stores_is_all_or_none(tmp_path) -> None:
    from memsys.adapters import ChromaDBVectorStore, KuzuMemoryAdapter, TinyDBMemoryAdapter

    plan = FaultPlan(seed=77)
    built = {**stores(tmp_path), "tinydb": TinyDBMemoryAdapter(path=tmp_path / "items.json"),
             "chroma": ChromaDBVectorStore(path=tmp_path / "chroma", dimension=16),
             "kuzu": KuzuMemoryAdapter(path=tmp_path / "graph.kuzu", buffer_pool_size=64 << 20)}
    routes = {"CODE": ["tinydb", "chroma", "kuzu"], "default": ["lmdb", "duckdb", "faiss", "graph"]}
    m = MemoryManager({n: wrap_store(s, plan, name=n) for n, s in built.items()}, routing=routes,
                      transaction_log=tmp_path / "txlog")
    try:
        a, b, k = item(1, MemoryType.CODE), item(2, MemoryType.CODE), item(3, MemoryType.KNOWLEDGE)
        for one in (a, b, k):
            m.store(one)
        assert holders(m, a.id) == ["chroma", "kuzu", "tinydb"]
        assert holders(m, k.id) == ["duckdb", "faiss", "graph", "lmdb"]
        m.adapters["kuzu"].add_relationship(a.id, b.id, "imports")
        plan.add(method="prepare_ops", kind="transient", store="kuzu", times=1)
        with pytest.raises(TransactionAbortedError):
            m.store(item(4, MemoryType.CODE))
        assert holders(m, "item-00004") == []
        plan.add(method="apply_prepared", kind="transient", store="chroma", times=3)  # every retry of one apply
        with pytest.raises(CommitIncompleteError):
            m.store(item(5, MemoryType.CODE))
        assert holders(m, "item-00005") == ["kuzu", "tinydb"]
        assert m.recover().ok and holders(m, "item-00005") == ["chroma", "kuzu", "tinydb"]
        assert m.delete(a.id) and holders(m, a.id) == [] and m.adapters["kuzu"].get_relationships(b.id, "both") == []
    finally:
        plan.heal()
        m.close()
