"""Cross-store transactions: all or nothing, isolated, conflict-checked, recoverable."""

from __future__ import annotations

import threading

import pytest

from memsys import (
    CommitIncompleteError,
    ConflictError,
    InvalidMemoryItemError,
    MemoryManager,
    StoreUnavailableError,
    TransactionAbortedError,
    TransactionStateError,
)
from memsys.testing import dump, sample_item
from tests.application.conftest import open_stores


def everywhere(manager, item_id):
    return {name: adapter.retrieve(item_id) is not None for name, adapter in manager.adapters.items()}


def test_leaving_the_block_commits_on_every_store(manager) -> None:
    a, b, c = sample_item(1), sample_item(2), sample_item(3)
    with manager.with_transaction(["lmdb", "duckdb", "tinydb"]) as tx:
        manager.adapters["lmdb"].store(a)
        manager.adapters["duckdb"].store(b)
        manager.adapters["tinydb"].store(c)
    assert tx.state == "committed" and tx.lsn
    got = [manager.adapters["lmdb"].retrieve(a.id), manager.adapters["duckdb"].retrieve(b.id),
           manager.adapters["tinydb"].retrieve(c.id)]
    assert all(g is not None and g.version == tx.lsn for g in got), "every committed item carries the commit LSN"
    assert [g.content for g in got] == [a.content, b.content, c.content]


def test_an_exception_rolls_every_store_back_and_is_reraised(manager) -> None:
    manager.store(sample_item(1))
    before = {n: dump(a) for n, a in manager.adapters.items()}

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with manager.with_transaction(["lmdb", "duckdb", "tinydb"]):
            manager.adapters["lmdb"].store(sample_item(2))
            manager.adapters["duckdb"].delete(sample_item(1).id)
            manager.adapters["tinydb"].store(sample_item(1, content="changed"))
            raise Boom()
    assert {n: dump(a) for n, a in manager.adapters.items()} == before


def test_uncommitted_writes_are_invisible_to_others_and_visible_inside(manager) -> None:
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def reader() -> None:
        inside.wait(10)
        seen["lmdb"] = manager.adapters["lmdb"].retrieve("item-00001")
        seen["search"] = manager.adapters["duckdb"].search({})
        release.set()

    t = threading.Thread(target=reader)
    t.start()
    with manager.with_transaction(["lmdb", "duckdb"]):
        manager.adapters["lmdb"].store(sample_item(1))
        manager.adapters["duckdb"].store(sample_item(1))
        assert manager.adapters["lmdb"].retrieve("item-00001") == sample_item(1)
        assert [i.id for i in manager.adapters["duckdb"].search({})] == ["item-00001"]
        inside.set()
        assert release.wait(10)
    t.join(10)
    assert seen == {"lmdb": None, "search": []}
    assert all(everywhere(manager, "item-00001")[s] for s in ("lmdb", "duckdb"))


def test_two_transactions_writing_one_id_one_commits_one_conflicts(manager) -> None:
    manager.store(sample_item(1, content="v0"), ["lmdb"])
    first_read = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def worker(name: str, content: str, delay_commit: threading.Event | None, signal: threading.Event | None):
        try:
            with manager.with_transaction(["lmdb"]):
                current = manager.adapters["lmdb"].retrieve("item-00001")
                first_read.wait(10)
                manager.adapters["lmdb"].store(current.replace(content=current.content + content))
                if delay_commit is not None:
                    delay_commit.wait(10)
            outcomes[name] = "committed"
        except ConflictError as exc:
            outcomes[name] = exc
        finally:
            if signal is not None:
                signal.set()

    first_done = threading.Event()
    t1 = threading.Thread(target=worker, args=("t1", "+a", None, first_done))
    t2 = threading.Thread(target=worker, args=("t2", "+b", first_done, None))
    t1.start(), t2.start()
    t1.join(20), t2.join(20)
    assert outcomes["t1"] == "committed"
    assert isinstance(outcomes["t2"], ConflictError) and outcomes["t2"].item_id == "item-00001"
    assert outcomes["t2"].store == "lmdb"
    assert manager.adapters["lmdb"].retrieve("item-00001").content == "v0+a", "no update was lost"


def test_opposite_store_orders_never_deadlock(manager) -> None:
    errors = []

    def worker(order, base):
        try:
            for i in range(15):
                with manager.with_transaction(order):
                    for name in order:
                        manager.adapters[name].store(sample_item(base + i))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(order, n * 100)) for n, order in
               enumerate([["lmdb", "duckdb", "tinydb"], ["tinydb", "duckdb", "lmdb"], ["duckdb", "lmdb", "tinydb"]])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "transactions deadlocked"
    assert not errors
    assert all(len(dump(a)) == 45 for a in manager.adapters.values())


def test_a_prepare_failure_rolls_back_every_store_and_names_it(manager, monkeypatch) -> None:
    manager.store(sample_item(1))
    before = {n: dump(a) for n, a in manager.adapters.items()}
    bad = sample_item(2)
    tinydb = manager.adapters["tinydb"]
    prepare_op = tinydb._prepare_op

    def refuse_bad(op):  # the engine-specific check a store makes at prepare (size, range...)
        if op.item_id == bad.id:
            raise InvalidMemoryItemError(f"{bad.id!r} cannot be stored here")
        return prepare_op(op)

    monkeypatch.setattr(tinydb, "_prepare_op", refuse_bad)
    with pytest.raises(TransactionAbortedError) as failure:
        with manager.with_transaction(["lmdb", "duckdb", "tinydb"]):
            manager.adapters["lmdb"].store(sample_item(3))
            tinydb.store(bad)
    assert failure.value.store == "tinydb"
    assert isinstance(failure.value.__cause__, InvalidMemoryItemError)
    assert {n: dump(a) for n, a in manager.adapters.items()} == before


def test_a_failed_log_write_aborts_and_applies_nothing(manager, monkeypatch) -> None:
    before = {n: dump(a) for n, a in manager.adapters.items()}
    append = manager.coordinator.log.append

    def disk_full(records, *, sync):
        if sync:
            raise OSError(28, "No space left on device")
        return append(records, sync=sync)

    monkeypatch.setattr(manager.coordinator.log, "append", disk_full)
    with pytest.raises(TransactionAbortedError, match="coordinator log"):
        with manager.with_transaction(["lmdb", "duckdb"]):
            manager.adapters["lmdb"].store(sample_item(1))
            manager.adapters["duckdb"].store(sample_item(1))
    monkeypatch.undo()
    assert {n: dump(a) for n, a in manager.adapters.items()} == before


def test_transient_apply_failures_are_retried(manager, monkeypatch) -> None:
    adapter = manager.adapters["duckdb"]
    apply = adapter.apply_prepared
    failures = {"left": 2}

    def flaky(ops, *, durable=True):
        if failures["left"]:
            failures["left"] -= 1
            raise StoreUnavailableError("injected: busy", store="duckdb")
        return apply(ops, durable=durable)

    monkeypatch.setattr(adapter, "apply_prepared", flaky)
    manager.store(sample_item(1), ["lmdb", "duckdb"])
    assert everywhere(manager, "item-00001") == {"lmdb": True, "duckdb": True, "tinydb": False}


def test_an_apply_failure_after_the_decision_is_completed_by_recovery(manager, monkeypatch) -> None:
    adapter = manager.adapters["tinydb"]

    def broken(ops, *, durable=True):
        raise StoreUnavailableError("injected: disk went away", store="tinydb")

    monkeypatch.setattr(adapter, "apply_prepared", broken)
    with pytest.raises(CommitIncompleteError) as failure:
        manager.store(sample_item(1))
    assert failure.value.committed and failure.value.store == "tinydb"
    assert everywhere(manager, "item-00001") == {"lmdb": True, "duckdb": True, "tinydb": False}
    assert "tinydb" in manager.coordinator.quarantined
    with pytest.raises(TransactionAbortedError, match="waiting for recovery"):
        manager.store(sample_item(2))
    monkeypatch.undo()
    report = manager.recover()
    assert report.ok and not manager.coordinator.quarantined
    assert everywhere(manager, "item-00001") == {"lmdb": True, "duckdb": True, "tinydb": True}


def test_a_quarantined_store_is_recovered_by_the_next_transaction_that_needs_it(manager, monkeypatch) -> None:
    adapter = manager.adapters["lmdb"]
    manager.store(sample_item(1, content="v0"), ["lmdb"])
    monkeypatch.setattr(adapter, "apply_prepared", lambda ops, durable=True: (_ for _ in ()).throw(
        StoreUnavailableError("injected", store="lmdb")))
    with pytest.raises(CommitIncompleteError):
        manager.store(sample_item(1, content="v1"), ["lmdb"])
    monkeypatch.undo()
    stale = manager.with_transaction(["lmdb"])
    stale.begin()  # begins while lmdb still lacks the committed v1
    current = adapter.retrieve("item-00001")
    assert current.content == "v0"
    adapter.store(current.replace(content=current.content + "+stale"))
    with pytest.raises(ConflictError):
        stale.commit()  # recovery brings v1 in first; building on v0 would lose it
    assert adapter.retrieve("item-00001").content == "v1"
    manager.store(sample_item(2), ["lmdb"])
    assert adapter.retrieve("item-00002") is not None and not manager.coordinator.quarantined


def test_misuse_is_a_typed_error(manager) -> None:
    with manager.with_transaction(["lmdb"]) as tx:
        with pytest.raises(TransactionStateError, match="nested"):
            manager.with_transaction(["duckdb"]).__enter__()
        with pytest.raises(TransactionStateError, match="not part of transaction"):
            manager.adapters["duckdb"].store(sample_item(1))
        with pytest.raises(TransactionStateError):
            tx.store("duckdb", sample_item(1))
    with pytest.raises(TransactionStateError, match="already used"):
        tx.begin()
    with pytest.raises(TransactionStateError, match="unknown stores"):
        manager.with_transaction(["nope"])
    assert dump(manager.adapters["duckdb"]) == {}


def test_the_explicit_handle_commits_and_rolls_back_inside_the_block(manager) -> None:
    with manager.with_transaction(["lmdb", "duckdb"]) as tx:
        tx.store("lmdb", sample_item(1))
        assert tx.retrieve("lmdb", "item-00001") == sample_item(1)
        tx.commit()
    assert tx.state == "committed" and manager.adapters["lmdb"].retrieve("item-00001") is not None
    with manager.with_transaction(["lmdb"]) as tx2:
        tx2.store("lmdb", sample_item(2))
        assert tx2.delete("lmdb", "item-00001") is True
        tx2.rollback()
    assert tx2.state == "rolled_back"
    assert manager.adapters["lmdb"].retrieve("item-00001") is not None
    assert manager.adapters["lmdb"].retrieve("item-00002") is None


def test_writes_outside_a_transaction_are_transactions_of_their_own(manager) -> None:
    lmdb = manager.adapters["lmdb"]
    lmdb.store(sample_item(1))
    first = lmdb.retrieve("item-00001").version
    lmdb.store(sample_item(1, content="again"))
    assert lmdb.retrieve("item-00001").version > first > 1
    assert lmdb.delete("item-00001") is True and lmdb.delete("item-00001") is False
    assert manager.delete("nothing") is False
    assert manager.coordinator.metrics.counter("committed") >= 3


def test_manager_wide_store_delete_and_retrieve(manager) -> None:
    item = sample_item(5)
    manager.store(item)
    assert all(everywhere(manager, item.id).values())
    assert manager.retrieve(item.id).content == item.content
    assert manager.retrieve(item.id, store="tinydb").content == item.content
    assert manager.delete(item.id) is True
    assert not any(everywhere(manager, item.id).values())
    assert manager.retrieve(item.id) is None


def test_reopening_after_a_clean_close_has_nothing_to_redo(tmp_path) -> None:
    m = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    for i in range(5):
        m.store(sample_item(i))
    m.close()
    again = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog")
    try:
        assert again.last_recovery.redone == [] and again.last_recovery.ok
        assert all(len(dump(a)) == 5 for a in again.adapters.values())
    finally:
        again.close()


def test_the_log_is_compacted_and_does_not_grow_without_bound(tmp_path) -> None:
    m = MemoryManager(open_stores(tmp_path), transaction_log=tmp_path / "txlog", compact_records=40)
    try:
        sizes = []
        for i in range(200):
            m.store(sample_item(i), ["lmdb", "duckdb"])
            sizes.append((tmp_path / "txlog").stat().st_size)
        assert m.coordinator.metrics.counter("checkpoints") >= 4
        assert max(sizes[100:]) < 3 * max(sizes[:60]), "the log kept growing"
    finally:
        m.close()


def test_group_commit_shares_log_syncs_between_concurrent_transactions(manager) -> None:
    barrier = threading.Barrier(4)

    def worker(n):
        barrier.wait(10)
        for i in range(25):
            manager.store(sample_item(n * 1000 + i), ["lmdb", "duckdb"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counters = manager.coordinator.metrics.snapshot()["counters"]
    assert counters["committed"] == 100
    assert counters["groups"] < 100, "every transaction synced the log alone"
    assert len(dump(manager.adapters["duckdb"])) == 100
