"""Concurrent transactions from several threads, checked for lost updates and dirty reads.

Hypothesis chooses the workload (threads, keys, increments, how many
transactions abort); the threads interleave however the machine schedules
them, and the invariants must hold for every interleaving.
"""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from memsys import ConflictError, MemoryItem, MemoryManager, MemoryType
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.testing.history import Op, check_counters, check_dirty_reads

STORES = ("lmdb", "duckdb")


def open_manager(root) -> MemoryManager:
    return MemoryManager({"lmdb": LMDBMemoryAdapter(path=root / "lmdb", sync=False),
                          "duckdb": DuckDBMemoryAdapter(path=root / "db.duckdb", sync=False)},
                         transaction_log=root / "txlog")


def counter(key: str, value: int) -> MemoryItem:
    return MemoryItem(id=key, content=value, memory_type=MemoryType.TEAM_STATE)


def run_threads(workers) -> None:
    threads = [threading.Thread(target=w) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a worker hung"


@settings(max_examples=6, deadline=None)
@given(threads=st.integers(2, 4), keys=st.integers(1, 3), increments=st.integers(5, 20), seed=st.integers(0, 9))
def test_read_modify_write_increments_lose_no_update(tmp_path_factory, threads, keys, increments, seed) -> None:
    manager = open_manager(tmp_path_factory.mktemp("counters"))
    names = [f"counter-{k}" for k in range(keys)]
    with manager.with_transaction(list(STORES)):
        for name in names:
            for store in STORES:
                manager.adapters[store].store(counter(name, 0))
    history: list[Op] = []
    lock = threading.Lock()

    def worker(process: int) -> None:
        for n in range(increments):
            key = names[(process * 7 + n * 3 + seed) % keys]
            while True:  # a conflict means nothing happened: retry on fresh state
                try:
                    with manager.with_transaction(list(STORES)):
                        for store in STORES:  # the same counter on both stores, in one transaction
                            adapter = manager.adapters[store]
                            current = adapter.retrieve(key)
                            adapter.store(current.replace(content=current.content + 1))
                    with lock:
                        history.append(Op(process, "ok", "increment", key=key))
                    break
                except ConflictError:
                    continue

    try:
        run_threads([lambda p=p: worker(p) for p in range(threads)])
        finals = {store: {n: manager.adapters[store].retrieve(n).content for n in names} for store in STORES}
        assert finals["lmdb"] == finals["duckdb"], "the stores disagree"
        verdict = check_counters(history, finals["lmdb"])
        assert verdict["valid"], verdict
        assert verdict["acknowledged"] == threads * increments
    finally:
        manager.close()


@settings(max_examples=5, deadline=None)
@given(writers=st.integers(1, 3), readers=st.integers(1, 3), writes=st.integers(5, 25),
       abort_every=st.integers(2, 4))
def test_readers_never_see_writes_of_transactions_that_did_not_commit(
        tmp_path_factory, writers, readers, writes, abort_every) -> None:
    manager = open_manager(tmp_path_factory.mktemp("dirty"))
    keys = ["shared-a", "shared-b"]
    for key in keys:
        manager.store(counter(key, -1))
    history: list[Op] = []
    lock = threading.Lock()
    done = threading.Event()

    class Abort(Exception):
        pass

    def writer(process: int) -> None:
        for n in range(writes):
            value = process * 100_000 + n
            abort = n % abort_every == 0
            try:
                with manager.with_transaction(list(STORES)):
                    for key in keys:
                        for store in STORES:
                            manager.adapters[store].store(counter(key, value))
                    if abort:
                        raise Abort()
                outcome = "ok"
            except Abort:
                outcome = "fail"
            except ConflictError:
                outcome = "fail"
            with lock:
                history.append(Op(process, outcome, "write", value=value))

    def reader(process: int) -> None:
        while not done.is_set():
            for store in STORES:
                for key in keys:
                    value = manager.adapters[store].retrieve(key).content
                    with lock:
                        history.append(Op(f"r{process}", "ok", "read", value=value, key=key))

    reader_threads = [threading.Thread(target=reader, args=(r,)) for r in range(readers)]
    for t in reader_threads:
        t.start()
    try:
        run_threads([lambda p=p: writer(p) for p in range(writers)])
    finally:
        done.set()
        for t in reader_threads:
            t.join(60)
    try:
        verdict = check_dirty_reads(history)
        assert verdict["valid"], verdict["dirty_reads"][:3]
        assert verdict["reads"] > 0
        last = {store: [manager.adapters[store].retrieve(k).content for k in keys] for store in STORES}
        assert last["lmdb"] == last["duckdb"] and last["lmdb"][0] == last["lmdb"][1], "a commit was applied in part"
    finally:
        manager.close()
