from __future__ import annotations

import pytest

from memsys import (
    CircuitBreakerOpenError,
    InvalidQueryError,
    MemoryManager,
    MemoryRetrievalError,
    MemoryStorageError,
    QueryRouter,
    StoreError,
    SyncManager,
)
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.faiss_store import FAISSVectorStore
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.networkx_store import GraphMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing import sample_item
from memsys.testing.faults import FaultInjector


def open_manager(root, **options):
    return MemoryManager({"lmdb": LMDBMemoryAdapter(path=root / "lmdb"),
                          "duckdb": DuckDBMemoryAdapter(path=root / "items.duckdb"),
                          "tinydb": TinyDBMemoryAdapter(path=root / "items.json")},
                         transaction_log=root / "txlog", **options)


@pytest.fixture
def manager(tmp_path):
    m = open_manager(tmp_path, fallback_store="tinydb", secondary_stores=["duckdb"],
                     reconciliation_queue=tmp_path / "queue.jsonl", failure_threshold=2, reset_timeout=60)
    yield m
    m.close()


def test_get_with_fallback_passes_over_failing_stores(manager) -> None:
    manager.store(sample_item(1), ["duckdb", "tinydb"])
    faults = FaultInjector(manager.adapters["duckdb"], seed=1).fail("retrieve", error=StoreError)
    assert manager.get_with_fallback("item-00001") == manager.adapters["tinydb"].retrieve("item-00001")
    with pytest.raises(MemoryRetrievalError) as missing:
        manager.get_with_fallback("nowhere")
    assert set(missing.value.errors) == {"duckdb"}
    manager.get_with_fallback("item-00001")  # the second duckdb failure opens its circuit
    with pytest.raises(MemoryRetrievalError) as again:
        manager.get_with_fallback("nowhere", stores=["duckdb"])
    assert isinstance(again.value.errors["duckdb"], CircuitBreakerOpenError)
    faults.remove()
    with pytest.raises(MemoryRetrievalError, match="no store holds it"):
        manager.get_with_fallback("nowhere", stores=["lmdb"])


def test_get_with_cache_reads_through_and_is_invalidated_by_commits(manager) -> None:
    manager.store(sample_item(1))
    assert manager.get_with_cache("item-00001").content == sample_item(1).content
    assert manager.get_with_cache("item-00001") is manager.get_with_cache("item-00001")
    assert manager.cache.hits >= 2
    manager.store(sample_item(1, content="changed"))
    assert manager.get_with_cache("item-00001").content == "changed", "a commit left a stale cache entry"
    faults = FaultInjector(manager.adapters["lmdb"], seed=2).fail("retrieve")
    manager.cache.clear()
    assert manager.get_with_cache("item-00001").content == "changed"  # served by a fallback store
    faults.remove()
    assert manager.get_with_cache("never") is None


def test_degraded_writes_go_to_the_fallback_and_reconcile_without_going_back_in_time(tmp_path, manager) -> None:
    faults = FaultInjector(manager.adapters["lmdb"], seed=3).fail("apply")
    # The first write is decided before lmdb fails to apply it: committed, completed by recovery later.
    manager.store_with_degraded_mode(sample_item(1, content="v1"))
    assert manager.adapters["duckdb"].retrieve("item-00001").content == "v1"
    # lmdb is now quarantined: these go to the fallback and the queue.
    manager.store_with_degraded_mode(sample_item(2, content="only degraded"))
    manager.store_with_degraded_mode(sample_item(1, content="v2"))
    assert manager.degraded_mode and manager.adapters["tinydb"].retrieve("item-00001").content == "v2"
    assert manager.adapters["lmdb"].retrieve("item-00001") is None
    faults.remove()
    manager.recover()  # lmdb is back: recovery completes it and closes its circuit
    manager.adapters["lmdb"].store(sample_item(2, content="newer, written directly"))  # recovers lmdb first
    assert manager.adapters["lmdb"].retrieve("item-00001").content == "v1"
    report = manager.reconcile()
    assert report == {"applied": 3, "skipped_newer": 1, "failed": 0, "pending": 0}
    assert manager.adapters["lmdb"].retrieve("item-00001").content == "v2", "the queued v2 is the newest"
    assert manager.adapters["lmdb"].retrieve("item-00002").content == "newer, written directly"
    assert manager.adapters["duckdb"].retrieve("item-00002").content == "only degraded"
    assert not manager.degraded_mode


def test_the_reconciliation_queue_survives_a_restart(tmp_path) -> None:
    m = open_manager(tmp_path, fallback_store="tinydb", reconciliation_queue=tmp_path / "queue.jsonl")
    faults = FaultInjector(m.adapters["lmdb"], seed=4).fail("prepare")  # lmdb refuses before any decision
    m.store_with_degraded_mode(sample_item(7))
    assert m.adapters["lmdb"].retrieve("item-00007") is None
    faults.remove()
    m.close()
    again = open_manager(tmp_path, fallback_store="tinydb", reconciliation_queue=tmp_path / "queue.jsonl")
    try:
        assert again.degraded_mode and again.reconcile()["applied"] == 1
        assert again.adapters["lmdb"].retrieve("item-00007") is not None
    finally:
        again.close()


def test_degraded_mode_fails_only_when_primary_and_fallback_fail(manager) -> None:
    FaultInjector(manager.adapters["lmdb"], seed=5).fail("prepare", error=StoreError)
    FaultInjector(manager.adapters["tinydb"], seed=6).fail("prepare", error=StoreError)
    with pytest.raises(MemoryStorageError) as failure:
        manager.store_with_degraded_mode(sample_item(1))
    assert set(failure.value.errors) == {"lmdb", "tinydb"} and not failure.value.transient


def test_a_failing_secondary_is_queued_for_reconciliation(manager) -> None:
    faults = FaultInjector(manager.adapters["duckdb"], seed=7).fail("prepare")
    manager.store_with_degraded_mode(sample_item(1))
    assert manager.adapters["lmdb"].retrieve("item-00001") is not None
    assert manager.reconciliation.stores() == {"duckdb"}
    faults.remove()
    assert manager.reconcile()["applied"] == 1 and manager.adapters["duckdb"].retrieve("item-00001")


def test_sync_copies_newer_versions_and_repair_converges_every_store(tmp_path) -> None:
    m = open_manager(tmp_path)
    try:
        sync = SyncManager(m)
        for i in range(5):
            m.store(sample_item(i), ["lmdb"])
        m.store(sample_item(0, content="newer"), ["lmdb"])
        m.write_versions("duckdb", [m.adapters["lmdb"].retrieve("item-00001").replace(version=1)])
        m.store(sample_item(9), ["duckdb"])
        diff = sync.diff("lmdb", "duckdb")
        assert diff.missing == ["item-00000", "item-00002", "item-00003", "item-00004"]
        assert diff.stale == ["item-00001"] and diff.extra == ["item-00009"] and not diff.in_sync
        report = sync.sync("lmdb", "duckdb", delete_extra=True)
        assert report.copied == ["item-00000", "item-00001", "item-00002", "item-00003", "item-00004"]
        assert report.deleted == ["item-00009"]
        assert sync.diff("lmdb", "duckdb").in_sync
        assert m.adapters["duckdb"].retrieve("item-00000").version == m.adapters["lmdb"].retrieve("item-00000").version
        m.store(sample_item(3, content="newest in tinydb"), ["tinydb"])
        copied = sync.repair()
        assert "item-00003" in copied["lmdb"] and "item-00000" in copied["tinydb"]
        assert {m.adapters[s].retrieve("item-00003").content for s in m.adapters} == {"newest in tinydb"}
        assert all(not ids for ids in sync.repair().values()), "a second repair found drift again"
    finally:
        m.close()


def test_sync_conflicts_follow_the_policy(tmp_path) -> None:
    m = open_manager(tmp_path)
    try:
        a = sample_item(1, content="a", version=5)
        b = sample_item(1, content="b", version=5).replace(updated_at=a.updated_at.replace(year=2030))
        m.write_versions("lmdb", [a])
        m.write_versions("duckdb", [b])
        assert SyncManager(m).diff("lmdb", "duckdb").conflicts == ["item-00001"]
        assert SyncManager(m, policy="skip").sync("lmdb", "duckdb").copied == []
        assert SyncManager(m, policy="newest").sync("lmdb", "duckdb").copied == []  # duckdb's is newer
        assert SyncManager(m, policy="source").sync("lmdb", "duckdb").copied == ["item-00001"]
        assert m.adapters["duckdb"].retrieve("item-00001").content == "a"
    finally:
        m.close()


def test_queued_updates_are_processed_now_or_in_the_background(tmp_path) -> None:
    m = open_manager(tmp_path)
    try:
        sync = SyncManager(m)
        sync.queue_update("lmdb", sample_item(1))
        sync.queue_update("duckdb", sample_item(2))
        assert sync.process_queue() == 2 and m.adapters["duckdb"].retrieve("item-00002")
        sync.start()
        sync.queue_update("tinydb", sample_item(3))
        sync.stop()
        assert m.adapters["tinydb"].retrieve("item-00003") is not None
    finally:
        m.close()


def test_the_router_routes_by_query_kind_and_merges(tmp_path) -> None:
    m = MemoryManager({"duckdb": DuckDBMemoryAdapter(path=tmp_path / "d.duckdb"),
                       "faiss": FAISSVectorStore(path=tmp_path / "faiss", dimension=64),
                       "graph": GraphMemoryAdapter(path=tmp_path / "graph")}, transaction_log=tmp_path / "txlog")
    try:
        router = QueryRouter(m)
        items = [sample_item(i) for i in range(6)]
        for item in items:
            m.store(item, ["duckdb", "faiss", "graph"])
        m.adapters["graph"].add_relationship("item-00000", "item-00001", "next")
        assert router.route({"memory_type": "CODE"})[0] == "duckdb"
        assert router.route({"similar_to": "x"}) == ["faiss"]
        assert router.route({"related_to": "item-00000"}) == ["graph"]
        merged = router.query({"metadata": {"parity": "even"}})
        assert [i.id for i in merged] == ["item-00000", "item-00002", "item-00004"]
        hits = router.query({"similar_to": items[3].content, "top_k": 2})
        assert hits[0].item.id == "item-00003" and len(hits) == 2
        assert [i.id for i in router.query({"related_to": "item-00000"})] == ["item-00001"]
        assert all(isinstance(i.id, str) and i.id.startswith("item-") for i in router.query("café"))
        FaultInjector(m.adapters["duckdb"], seed=8).fail("search", error=StoreError)
        assert len(router.query({})) == 6 and "duckdb" in router.last_errors
        with pytest.raises(MemoryRetrievalError):
            router.query({}, stores=["duckdb"])
        with pytest.raises(InvalidQueryError):
            router.query({"similar_to": "x", "related_to": "y"})
        with pytest.raises(InvalidQueryError):
            QueryRouter(MemoryManager({"d": DuckDBMemoryAdapter(path=tmp_path / "e.duckdb")})).route({"similar_to": 1})
    finally:
        m.close()
