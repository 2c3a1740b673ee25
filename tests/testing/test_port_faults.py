"""Port-level fault wrappers: same ports as the store, every kind typed, one seed one run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from memsys import MemoryItem, MemoryManager, MemoryType
from memsys.adapters import BaseMemoryStore, InMemoryStore, adapter_class
from memsys.domain.errors import (
    CommitIncompleteError,
    DeadlineExceededError,
    PermanentError,
    StoreError,
    StoreUnavailableError,
    TransactionAbortedError,
    UnsupportedCapabilityError,
)
from memsys.ports import (
    BatchStore,
    Capability,
    GraphStore,
    MemoryStore,
    Participant,
    SnapshotStore,
    StructuredQueryStore,
    TransactionalStore,
    VectorStore,
)
from memsys.testing.faults import FaultInjector
from memsys.testing.history import TransactionRecord, check_all_or_nothing, check_transactions
from memsys.testing.port_faults import FaultPlan, InjectedCrash, live_plans, unwrap, wrap_store
from memsys.testing.samples import sample_item

PORTS = (MemoryStore, BatchStore, TransactionalStore, Participant, VectorStore, GraphStore, StructuredQueryStore,
         SnapshotStore)
SETTINGS = {"faiss": {"dimension": 16}, "chroma": {"dimension": 16}, "kuzu": {"buffer_pool_size": 64 << 20},
            "lmdb": {}, "duckdb": {}, "tinydb": {}, "networkx": {}}
PATHS = {"tinydb": "items.json", "networkx": "graph", "faiss": "faiss", "chroma": "chroma", "kuzu": "graph.kuzu",
         "lmdb": "lmdb", "duckdb": "items.duckdb"}
TAG = "[fault seed="


def open_backend(backend: str, folder) -> object:
    return adapter_class(backend)(path=os.path.join(folder, PATHS[backend]), **SETTINGS[backend])


class DictStore:
    """A third party's store: the MemoryStore protocol only, not built on memsys' adapter base."""

    capabilities = frozenset({Capability.PERSISTENCE})

    def __init__(self) -> None:
        self.items: dict[str, MemoryItem] = {}
        self.name = "dict"

    def store(self, item: MemoryItem) -> str:
        self.items[item.id] = item
        return item.id

    def retrieve(self, item_id: str) -> MemoryItem | None:
        return self.items.get(item_id)

    def search(self, query: object) -> list[MemoryItem]:
        return list(self.items.values())

    def delete(self, item_id: str) -> bool:
        return self.items.pop(item_id, None) is not None

    def close(self) -> None:
        pass


def item(item_id: str, tx: str = "t") -> MemoryItem:
    return MemoryItem(id=item_id, content=f"written by {tx}", memory_type=MemoryType.EPISODIC, metadata={"tx": tx})


def test_the_wrapper_implements_exactly_the_ports_of_all_seven_stores_and_a_third_party_one(tmp_path) -> None:
    plan = FaultPlan(seed=1)
    stores = {backend: open_backend(backend, tmp_path) for backend in PATHS}
    stores["third party"] = DictStore()
    try:
        for name, inner in stores.items():
            wrapped = wrap_store(inner, plan)
            assert [isinstance(wrapped, p) for p in PORTS] == [isinstance(inner, p) for p in PORTS], name
            assert isinstance(wrapped, BaseMemoryStore) == isinstance(inner, BaseMemoryStore), name
            assert wrapped.capabilities == inner.capabilities and wrapped.name == inner.name, name
            assert getattr(wrapped, "dimension", None) == getattr(inner, "dimension", None), name
            assert unwrap(wrapped) is inner
            wrapped.store(sample_item(1))
            assert wrapped.retrieve(sample_item(1).id) == inner.retrieve(sample_item(1).id) is not None, name
        assert isinstance(wrap_store(stores["faiss"], plan), VectorStore)
        assert isinstance(wrap_store(stores["kuzu"], plan), GraphStore)
        assert plan.fired == []
        # Vector and graph ports are fault points too.
        for name in ("faiss", "chroma"):
            wrapped = wrap_store(stores[name], plan)
            query = stores[name].embed_texts(["hello"])[0].tolist()
            honest = stores[name].similarity_search(query, top_k=1)
            plan.add(method="similarity_search", kind="corrupt", times=1, store=name)
            faulty = wrapped.similarity_search(query, top_k=1)
            assert faulty != honest and faulty[0].content == {"memsys:corrupted": True}, name
        for name in ("kuzu", "networkx"):
            wrapped = wrap_store(stores[name], plan)
            wrapped.store(sample_item(2))
            plan.add(method="add_relationship", kind="transient", times=1, store=name)
            with pytest.raises(StoreUnavailableError):
                wrapped.add_relationship(sample_item(1).id, sample_item(2).id, "KNOWS")
            assert wrapped.get_relationships(sample_item(1).id) == []
        assert [(e.store, e.method) for e in plan.fired] == [
            ("faiss", "similarity_search"), ("chroma", "similarity_search"), ("kuzu", "add_relationship"),
            ("networkx", "add_relationship")]
        assert not isinstance(wrap_store(stores["third party"], plan), Participant)
    finally:
        for inner in stores.values():
            inner.close()


def test_every_kind_surfaces_as_its_typed_error_tagged_with_the_seed(tmp_path) -> None:
    plan = FaultPlan(seed=11, deadline=0.2)
    plan.crash_mode = "raise"
    store = wrap_store(adapter_class("lmdb")(path=tmp_path / "lmdb"), plan, name="l")
    try:
        plan.add(method="store", kind="transient", times=1)
        with pytest.raises(StoreUnavailableError, match=r"\[fault seed=11, event #1\]$") as transient:
            store.store(item("a"))
        assert type(transient.value) is StoreUnavailableError and store.retrieve("a") is None

        plan.add(method="store", kind="transient", when="after", times=1)
        with pytest.raises(StoreUnavailableError):
            store.store(item("b"))
        assert store.retrieve("b") is not None, "an 'after' fault lets the real call happen first"

        plan.add(method="delete", kind="permanent", times=1)
        with pytest.raises(StoreError) as permanent:
            store.delete("b")
        assert isinstance(permanent.value, PermanentError) and not permanent.value.transient

        plan.add(method="retrieve", kind="latency", seconds=0.001, times=1)
        assert store.retrieve("b") is not None

        plan.add(method="retrieve", kind="hang", times=1)
        with pytest.raises(DeadlineExceededError, match=r"within 0.2 s \[fault seed=11, event #5\]$"):
            store.retrieve("b")

        plan.add(method="store", kind="crash", times=1)
        with pytest.raises(InjectedCrash, match=r"event #6\]$"):
            store.store(item("c"))
        assert store.retrieve("c") is None

        plan.add(method="store_many", kind="torn", times=1)
        batch = [item(f"batch-{n}") for n in range(5)]
        with pytest.raises(StoreUnavailableError, match="torn write") as torn:
            store.store_many(batch)
        applied = [i.id for i in batch if store.retrieve(i.id) is not None]
        assert 1 <= len(applied) < 5 and applied == [i.id for i in batch[:len(applied)]]
        assert f"applied {len(applied)} of 5" in str(torn.value) and plan.fired[-1].detail.startswith("applied")

        plan.add(method="retrieve", kind="corrupt", times=1)
        assert store.retrieve("b") != item("b") and store.retrieve("b").content == "written by t"

        assert [e.kind for e in plan.fired] == ["transient", "transient", "permanent", "latency", "hang", "crash",
                                                "torn", "corrupt"]
        assert plan.summary()["by_kind"]["transient"] == 2 and plan.summary()["by_store"] == {"l": 8}
        assert "MEMSYS_FAULT_SEED=11" in plan.replay_hint() and ".add(method='retrieve', kind='corrupt'" \
            in plan.replay_hint()
    finally:
        store.close()


def test_a_crash_fault_kills_the_process_with_sigkill(tmp_path) -> None:
    script = textwrap.dedent(f"""
        from memsys.adapters import adapter_class
        from memsys.testing.port_faults import FaultPlan, wrap_store
        from memsys.testing.samples import sample_item
        plan = FaultPlan(seed=3).add(method="apply_prepared", kind="crash", point="mid")
        store = wrap_store(adapter_class("lmdb")(path={str(tmp_path / "lmdb")!r}), plan)
        store.store(sample_item(0))
        print("before", flush=True)
        store.apply_prepared(store.prepare_ops([]))
        print("survived", flush=True)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == -9, child.stderr
    assert child.stdout == "before\n" and "injected fault (crash)" in child.stderr and TAG + "3, event #1]" \
        in child.stderr


def test_the_same_seed_fires_the_same_sequence_and_another_seed_another() -> None:
    def run(seed: int) -> list[tuple]:
        plan = FaultPlan(seed=seed, deadline=0.05)
        plan.randomize(rate=0.3, kinds=("transient", "permanent", "latency", "corrupt", "torn"), seconds=0.0005,
                       enable=1.0)
        store = wrap_store(InMemoryStore(dimension=8), plan, name="s")
        try:
            for n in range(40):
                for call in (lambda: store.store(sample_item(n)), lambda: store.retrieve(sample_item(n).id),
                             lambda: store.store_many([sample_item(100 + n), sample_item(200 + n)]),
                             lambda: store.search({"limit": 2})):
                    try:
                        call()
                    except (StoreUnavailableError, StoreError):
                        pass
        finally:
            store.close()
        return [(e.seq, e.store, e.method, e.call_index, e.kind, e.when, e.detail) for e in plan.fired]

    first, again, other = run(5), run(5), run(6)
    assert first == again and len(first) > 10
    assert other != first
    assert {kind for *_, kind, _, _ in first} >= {"transient", "permanent", "latency"}


def test_decisions_do_not_depend_on_how_threads_interleave() -> None:
    def run() -> set[tuple]:
        plan = FaultPlan(seed=9).randomize(rate=0.2, kinds=("transient",), enable=1.0)
        stores = [wrap_store(DictStore(), plan, name=f"s{k}") for k in range(4)]

        def work(store) -> None:
            for n in range(100):
                try:
                    store.store(item(f"i{n}"))
                except StoreUnavailableError:
                    pass

        threads = [threading.Thread(target=work, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {(e.store, e.method, e.call_index) for e in plan.fired}

    assert run() == run()


def test_a_hang_ends_at_the_deadline_or_goes_through_when_healed() -> None:
    plan = FaultPlan(seed=2, deadline=0.1).add(method="retrieve", kind="hang")
    store = wrap_store(DictStore(), plan)
    with pytest.raises(DeadlineExceededError, match="did not answer"):
        store.retrieve("x")
    plan = FaultPlan(seed=2, deadline=30).add(method="retrieve", kind="hang")
    store = wrap_store(DictStore(), plan)
    store.store(item("x"))
    answer: list = []
    caller = threading.Thread(target=lambda: answer.append(store.retrieve("x")))
    caller.start()
    while not plan.fired:
        threading.Event().wait(0.005)
    plan.heal()
    caller.join(timeout=10)
    assert answer and answer[0].id == "x"


def test_a_cross_store_transaction_aborts_on_a_prepare_fault_and_recovery_completes_an_apply_fault(tmp_path) -> None:
    plan = FaultPlan(seed=4)

    def open_manager() -> MemoryManager:
        return MemoryManager({"lmdb": wrap_store(adapter_class("lmdb")(path=tmp_path / "lmdb"), plan),
                              "duckdb": wrap_store(adapter_class("duckdb")(path=tmp_path / "d.duckdb"), plan)},
                             transaction_log=tmp_path / "txlog")

    def transact(manager: MemoryManager, tx: str) -> str:
        writes = records[tx] = TransactionRecord(tx, {"lmdb": [f"{tx}-l"], "duckdb": [f"{tx}-d1", f"{tx}-d2"]})
        try:
            with manager.with_transaction(["lmdb", "duckdb"]):
                for store, ids in writes.writes.items():
                    for item_id in ids:
                        manager.adapters[store].store(item(item_id, tx))
        except CommitIncompleteError:
            writes.outcome = "ok"  # decided: recovery must complete it
            return "incomplete"
        except TransactionAbortedError:
            writes.outcome = "fail"
            return "aborted"
        writes.outcome = "ok"
        return "committed"

    def present(manager: MemoryManager) -> dict[str, set[str]]:
        return {name: {i.id for i in store.iter_items()} for name, store in manager.adapters.items()}

    records: dict[str, TransactionRecord] = {}
    manager = open_manager()
    plan.add(method="prepare_ops", kind="permanent", store="duckdb", times=1)
    assert transact(manager, "t1") == "aborted"
    assert present(manager) == {"lmdb": set(), "duckdb": set()}
    # More transient apply failures than the coordinator retries: committed, duckdb behind.
    plan.add(method="apply_prepared", kind="transient", store="duckdb", times=3)
    assert transact(manager, "t2") == "incomplete"
    assert not check_all_or_nothing(records, present(manager)).valid
    # A torn apply is retried at once; applies are idempotent, so it converges.
    plan.heal()
    manager.recover()
    plan.add(method="apply_prepared", kind="torn", store="duckdb", times=1)
    assert transact(manager, "t3") == "committed"
    plan.heal()
    manager.close()
    manager = open_manager()  # a restart: recovery runs before anything else
    try:
        final = present(manager)
        assert check_all_or_nothing(records, final).valid
        check = check_transactions(records, final)
        assert check.valid and check.counts()["acknowledged"] == 2 and check.counts()["failed"] == 1, check
        assert [(e.store, e.method, e.kind) for e in plan.fired] == [
            ("duckdb", "prepare_ops", "permanent"), *[("duckdb", "apply_prepared", "transient")] * 3,
            ("duckdb", "apply_prepared", "torn")]
    finally:
        manager.close()


def test_a_wrapped_third_party_store_joins_transactions_as_the_store_would(tmp_path) -> None:
    plan = FaultPlan(seed=8)
    outside = DictStore()
    # The manager puts a store not built on memsys' base inside a ForeignStore, which keeps its own
    # name; so the wrapper is told the name the plan should use.
    manager = MemoryManager({"outside": wrap_store(outside, plan, name="outside"), "lmdb": wrap_store(
        adapter_class("lmdb")(path=tmp_path / "lmdb"), plan)}, transaction_log=tmp_path / "txlog")
    try:
        plan.add(method="store", kind="transient", store="outside", times=3)
        with pytest.raises(CommitIncompleteError):
            with manager.with_transaction(["outside", "lmdb"]):
                manager.adapters["outside"].store(item("o"))
                manager.adapters["lmdb"].store(item("l"))
        assert "o" not in outside.items and manager.adapters["lmdb"].retrieve("l") is not None
        plan.heal()
        manager.recover()
        assert "o" in outside.items
    finally:
        manager.close()


def test_the_patching_injector_works_on_a_protocol_only_store() -> None:
    store = DictStore()
    faults = FaultInjector(store, seed=1).fail("retrieve", times=1)
    with pytest.raises(StoreUnavailableError, match=r"injected fault.*\[fault seed=1, event #1\]"):
        store.retrieve("x")
    assert store.retrieve("x") is None and faults.injected["retrieve:StoreUnavailableError"] == 1
    with pytest.raises(UnsupportedCapabilityError, match="apply_prepared"):
        faults.fail("apply")
    faults.remove()
    assert "retrieve" not in vars(store)


def test_an_unset_seed_comes_from_the_environment_for_replay(monkeypatch) -> None:
    monkeypatch.setenv("MEMSYS_FAULT_SEED", "424242")
    plan = FaultPlan()
    assert plan.seed == 424242 and plan.seed_source == "MEMSYS_FAULT_SEED"
    assert plan.replay_hint().startswith("MEMSYS_FAULT_SEED=424242 python -m pytest ")
    assert plan in live_plans()
