"""SyncManager: the durable update queue (SIGKILL of a real child process), conflicts resolved by
strategy and logged across restarts, write-through with a failing replica, digests that find
exactly the differing ids on the seven real adapters."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from memsys import MemoryItem, MemoryManager, MemoryType
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.application.digests import DigestIndex, compare
from memsys.application.sync import SyncManager
from memsys.domain.errors import CorruptStoreError, InvalidInputError, StoreLockedError
from memsys.testing import sample_item
from memsys.testing.chaos import SEVEN, open_store
from memsys.testing.port_faults import FaultPlan, wrap_store

IDS = 30
VERSIONS = 4


def update(i: int, v: int) -> MemoryItem:
    """Version ``v`` of id ``i``: what the child queues; its content names its version."""
    return MemoryItem(id=f"q-{i:03d}", content=f"q-{i:03d} v{v}", memory_type=MemoryType.EPISODIC,
                      metadata={"v": v}, version=v * 10)


def queued_order() -> list[tuple[str, MemoryItem]]:
    """Every version of every id, versions in order per id, ids interleaved (seeded)."""
    rng = random.Random(12)
    order = []
    for v in range(1, VERSIONS + 1):
        ids = list(range(IDS))
        rng.shuffle(ids)
        order += [("lmdb" if i % 2 else "duckdb", update(i, v)) for i in ids]
    return order


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from tests.application.test_sync_durable import open_pair, queued_order
    from memsys.application.sync import SyncManager
    from memsys.testing.port_faults import FaultPlan
    plan = FaultPlan(seed=3).add("apply_prepared", kind="latency", seconds=0.01)
    manager = open_pair(sys.argv[1], plan)
    sync = SyncManager(manager, queue_path=sys.argv[1] + "/sync.queue")
    sync.start()
    updates = queued_order()
    for n in range(0, len(updates), 4):
        sync.queue_updates(updates[n:n + 4])
        print("acked", n + len(updates[n:n + 4]), sync.queue_depth(), flush=True)
        time.sleep(0.004)
    while True:
        print("depth", sync.queue_depth(), flush=True)
        time.sleep(0.005)
""")


def open_pair(root: str, plan: FaultPlan | None = None) -> MemoryManager:
    stores = {"lmdb": LMDBMemoryAdapter(path=os.path.join(root, "lmdb"), sync=False),
              "duckdb": DuckDBMemoryAdapter(path=os.path.join(root, "items.duckdb"), sync=False)}
    if plan is not None:
        stores = {name: wrap_store(store, plan) for name, store in stores.items()}
    return MemoryManager(stores, transaction_log=os.path.join(root, "txlog"),
                         operation_log=os.path.join(root, "oplog"))


def test_the_queue_survives_sigkill_with_nothing_lost_and_nothing_applied_twice(tmp_path) -> None:
    root = str(tmp_path)
    repo = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen([sys.executable, "-c", CHILD, root, repo], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    acked, killed_at = 0, None
    guard = threading.Timer(60, child.kill)  # a bound on the test, whatever the child does
    guard.start()
    try:
        for line in child.stdout:
            word, *numbers = line.split()
            if word == "acked":
                acked = int(numbers[0])
            depth = int(numbers[-1])
            # Kill mid-way: after some updates are applied and while more are queued and coming.
            if acked >= len(queued_order()) * 5 // 8 and depth > 0:
                child.send_signal(signal.SIGKILL)
                killed_at = depth
                break
            assert not (word == "depth" and depth == 0), "the child applied everything before it could be killed"
        child.wait(timeout=30)
    finally:
        guard.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert killed_at is not None and child.returncode == -signal.SIGKILL, child.stderr.read()[-2000:]

    manager = open_pair(root)
    sync = SyncManager(manager, queue_path=os.path.join(root, "sync.queue"))
    try:
        assert sync.redelivered > 0, "the kill should leave updates queued"
        assert sync.stop(drain=True) and sync.queue_depth() == 0
        acked_updates = queued_order()[:acked]
        newest_acked: dict[tuple[str, str], int] = {}
        for store, item in acked_updates:
            newest_acked[(store, item.id)] = item.version
        for (store, item_id), version in newest_acked.items():
            held = manager.adapters[store].retrieve(item_id)
            assert held is not None, f"{item_id} was acknowledged and lost"
            assert held.version >= version and held.content == f"{item_id} v{held.version // 10}"
        for store, item in queued_order():  # the queue never wrote the other store
            other = "duckdb" if store == "lmdb" else "lmdb"
            assert manager.adapters[other].retrieve(item.id) is None
        # Every committed write, from the operation log: no update applied twice, none out of order.
        applied: dict[tuple[str, str], list[int]] = {}
        with open(os.path.join(root, "oplog"), encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # torn by the kill
                for store, ops in json.loads(line)["ops"].items():
                    for op in ops:
                        applied.setdefault((store, op["item"]["id"]), []).append(op["item"]["version"])
        assert applied, "nothing was applied"
        for key, versions in applied.items():
            assert versions == sorted(set(versions)), f"{key} applied {versions}: twice or out of order"
    finally:
        sync.close()
        manager.close()


def test_a_second_sync_manager_on_the_queue_is_refused_and_a_damaged_queue_is_typed(tmp_path, memory_manager) -> None:
    path = tmp_path / "q"
    sync = SyncManager(memory_manager, queue_path=path)
    try:
        sync.queue_update("a", sample_item(1))
        sync.queue_update("a", sample_item(2))  # a second record: damage to the first is not a torn tail
        with pytest.raises(StoreLockedError):
            SyncManager(memory_manager, queue_path=path)
    finally:
        sync.close()
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first record
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError):
        SyncManager(memory_manager, queue_path=path)


def test_updates_of_one_id_apply_in_order_and_wait_out_a_transient_failure(tmp_path) -> None:
    plan = FaultPlan(seed=5).add("prepare_ops", kind="transient", times=2, store="lmdb")
    manager = MemoryManager({"lmdb": wrap_store(LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False), plan),
                             "duckdb": DuckDBMemoryAdapter(path=tmp_path / "d.duckdb", sync=False)},
                            transaction_log=tmp_path / "txlog")
    sync = SyncManager(manager, queue_path=tmp_path / "q", retry_delay=0.001, max_retry_delay=0.01)
    try:
        sync.queue_updates([("lmdb", update(1, 1)), ("duckdb", update(2, 1))])
        assert sync.process_queue() == 1  # duckdb's; lmdb failed transiently and stays queued
        assert sync.pending() == [(1, "lmdb", "q-001", 10)] and not sync.failed_updates
        sync.queue_updates([("lmdb", update(1, 2)), ("lmdb", update(1, 3))])
        sync.start()
        worker = sync._worker
        assert sync.stop(drain=True, timeout=20) and not worker.is_alive()
        assert manager.adapters["lmdb"].retrieve("q-001").version == 30
        assert len(plan.fired) == 2  # the two failures, then one write of the newest version
        # A store that keeps failing: stop() gives up draining at its timeout, the update stays queued.
        plan.add("prepare_ops", kind="transient", store="lmdb")
        sync.start()
        worker = sync._worker
        sync.queue_update("lmdb", update(2, 2))
        assert sync.stop(drain=True, timeout=0.3) is False and not worker.is_alive()
        assert sync.pending() == [(5, "lmdb", "q-002", 20)]
    finally:
        sync.close()
        manager.close()


def test_an_update_refused_for_good_is_kept_as_failed_across_a_restart(tmp_path) -> None:
    plan = FaultPlan(seed=6).add("prepare_ops", kind="permanent", store="duckdb")
    def open_manager(faulty: bool) -> MemoryManager:
        duck = DuckDBMemoryAdapter(path=tmp_path / "d.duckdb", sync=False)
        return MemoryManager({"duckdb": wrap_store(duck, plan) if faulty else duck}, transaction_log=tmp_path / "txlog")
    manager = open_manager(True)
    sync = SyncManager(manager, queue_path=tmp_path / "q")
    try:
        sync.queue_update("duckdb", update(1, 1))
        assert sync.process_queue() == 0 and sync.queue_depth() == 0
        assert [(s, i) for s, i, _ in sync.failed_updates] == [("duckdb", "q-001")]
    finally:
        sync.close()
        manager.close()
    manager = open_manager(False)
    with SyncManager(manager, queue_path=tmp_path / "q") as again:
        assert [(s, i) for s, i, _ in again.failed_updates] == [("duckdb", "q-001")]
        assert "failed to prepare" in again.failed_updates[0][2] and again.queue_depth() == 0
    manager.close()


@pytest.mark.parametrize("strategy", ["newest", "source", "resolver"])
def test_a_conflict_is_detected_resolved_by_the_strategy_and_logged(tmp_path, strategy) -> None:
    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False),
                             "duckdb": DuckDBMemoryAdapter(path=tmp_path / "d.duckdb", sync=False)},
                            transaction_log=tmp_path / "txlog")

    def merge(incoming: MemoryItem, current: MemoryItem) -> MemoryItem:  # idempotent, as a resolver must be
        if incoming.content in current.content.split(" + "):
            return current
        return current.replace(content=f"{current.content} + {incoming.content}")

    options = {"resolver": merge} if strategy == "resolver" else {"policy": strategy}
    theirs = update(1, 5).replace(content="theirs")           # the replica took a concurrent write
    manager.write_versions("duckdb", [theirs])
    sync = SyncManager(manager, queue_path=tmp_path / "q", **options)
    try:
        late = update(1, 3).replace(content="ours")
        sync.queue_update("duckdb", late)  # an older write arrives late
        sync.process_queue()
        held = manager.adapters["duckdb"].retrieve("q-001")
        expected = {"newest": ("theirs", 50, "target"), "source": ("ours", 51, "source"),
                    "resolver": ("theirs + ours", 51, "merged")}[strategy]
        assert (held.content, held.version) == expected[:2]
        sync.queue_update("duckdb", late)  # delivered again: nothing changes
        sync.process_queue()
        assert manager.adapters["duckdb"].retrieve("q-001").version == held.version
    finally:
        sync.close()
    with SyncManager(manager, queue_path=tmp_path / "q", **options) as again:
        logged = again.conflicts()  # read back from the file after a restart
    manager.close()
    first = logged[0]
    assert (first.id, first.kind, first.winner, first.strategy) == \
        ("q-001", "newer_in_target", expected[2], "resolver" if strategy == "resolver" else strategy)
    assert (first.source_version, first.target_version, first.result_version) == (30, 50, expected[1])
    assert first.source_item["content"] == "ours" and first.target_item["content"] == "theirs"
    # Newest: the redelivery is a conflict again (and again kept); the others recognise their write.
    assert len(logged) == (2 if strategy in ("newest", "resolver") else 1)


def test_same_version_conflicts_in_sync_follow_newest_then_timestamp_and_are_logged(tmp_path) -> None:
    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False),
                             "duckdb": DuckDBMemoryAdapter(path=tmp_path / "d.duckdb", sync=False)},
                            transaction_log=tmp_path / "txlog")
    a = sample_item(1, content="a", version=5)
    b = sample_item(1, content="b", version=5).replace(updated_at=a.updated_at.replace(year=2030))
    manager.write_versions("lmdb", [a, sample_item(2, content="a2", version=5).replace(
        updated_at=a.updated_at.replace(year=2031))])
    manager.write_versions("duckdb", [b, sample_item(2, content="b2", version=5)])
    with SyncManager(manager, conflict_log=tmp_path / "conflicts") as sync:
        report = sync.sync("lmdb", "duckdb")
        assert report.conflicts == ["item-00001", "item-00002"] and report.copied == ["item-00002"]
        assert manager.adapters["duckdb"].retrieve("item-00001").content == "b"   # later updated_at kept
        assert manager.adapters["duckdb"].retrieve("item-00002").content == "a2"  # later updated_at copied
        winners = {c.id: c.winner for c in sync.conflicts()}
        assert winners == {"item-00001": "target", "item-00002": "source"}
    manager.close()


def test_write_through_reaches_every_replica_or_queues_the_failing_one(tmp_path) -> None:
    plan = FaultPlan(seed=9).add("prepare_ops", kind="transient", times=1, store="duckdb")
    manager = MemoryManager({"lmdb": LMDBMemoryAdapter(path=tmp_path / "lmdb", sync=False),
                             "duckdb": wrap_store(DuckDBMemoryAdapter(path=tmp_path / "d.duckdb", sync=False), plan),
                             "tinydb": open_store("tinydb", str(tmp_path))}, transaction_log=tmp_path / "txlog")
    sync = SyncManager(manager, queue_path=tmp_path / "q")
    try:
        committed = sync.write_through(sample_item(1), "lmdb", ["duckdb", "tinydb"])
        assert manager.adapters["tinydb"].retrieve("item-00001") == committed
        assert manager.adapters["duckdb"].retrieve("item-00001") is None and sync.queue_depth() == 1
        assert sync.process_queue() == 1 and sync.queue_depth() == 0
        assert [manager.adapters[s].retrieve("item-00001") for s in ("lmdb", "duckdb", "tinydb")] == [committed] * 3
        with pytest.raises(InvalidInputError):
            sync.write_through(sample_item(2), "lmdb", ["nope"])
        assert manager.adapters["lmdb"].retrieve("item-00002") is None  # refused before any write
    finally:
        sync.close()
        manager.close()


def test_digest_indexes_find_exactly_the_differing_ids() -> None:
    rng = random.Random(4)
    items = [sample_item(i) for i in range(1000)]
    a, b = DigestIndex(256), DigestIndex(256)
    a.put_many(items)
    b.put_many(items)
    assert a.root() == b.root() and compare(a, b).equal
    changed = rng.sample(range(1000), 12)
    for i in changed[:4]:
        b.put(items[i].replace(version=9))
    for i in changed[4:8]:
        b.discard(items[i].id)
    for i in changed[8:]:
        b.put(items[i].replace(content="same version, other content"))
    b.put(sample_item(5000))
    found = compare(a, b)
    assert set(found.newer_b) == {items[i].id for i in changed[:4]}
    assert set(found.only_a) == {items[i].id for i in changed[4:8]}
    assert set(found.conflicting) == {items[i].id for i in changed[8:]}
    assert found.only_b == ["item-05000"] and found.differing_buckets <= 13
    assert found.compared_entries < 13 * 1000 // 256 * 4  # only the differing ranges were compared
    for i in changed[:4] + changed[8:]:  # undo the drift: digests agree again
        b.put(items[i])
    for i in changed[4:8]:
        b.put(items[i])
    b.discard("item-05000")
    assert a.root() == b.root()


@pytest.fixture(scope="module")
def seven(tmp_path_factory):
    root = tmp_path_factory.mktemp("seven")
    manager = MemoryManager({b: open_store(b, str(root / b)) for b in SEVEN}, transaction_log=root / "txlog")
    with manager.with_transaction(list(SEVEN)):
        for name in SEVEN:
            manager.adapters[name].store_many([sample_item(i) for i in range(24)])
    yield manager
    manager.close()


@pytest.mark.parametrize("backend", [b for b in SEVEN if b != "lmdb"])
def test_digests_find_exactly_the_drift_on_every_real_adapter_and_sync_repairs_it(seven, backend) -> None:
    sync = SyncManager(seven, buckets=64)
    try:
        assert sync.diff("lmdb", backend).in_sync
        seven.store(sample_item(1, content="newer in lmdb"), ["lmdb"])
        seven.store(sample_item(2, content="newer in target"), [backend])
        seven.delete("item-00003", [backend])
        seven.store(sample_item(900), [backend])
        report = sync.diff("lmdb", backend)  # the indexes followed the commits: no rescan
        assert (report.stale, report.newer_in_target, report.missing, report.extra, report.conflicts) == \
            (["item-00001"], ["item-00002"], ["item-00003"], ["item-00900"], [])
        assert report.items_read == 6  # two ids held by both, one by each side: read from where held
        assert report.differing_buckets <= 4 and report.buckets == 64
        done = sync.sync("lmdb", backend, delete_extra=True)
        assert done.copied == ["item-00001", "item-00003"] and done.deleted == ["item-00900"]
        assert sync.diff("lmdb", backend, rescan=True).newer_in_target == ["item-00002"]
        sync.repair(["lmdb", backend])
        assert sync.diff("lmdb", backend, rescan=True).in_sync
        assert seven.adapters["lmdb"].retrieve("item-00002").content == "newer in target"
    finally:
        sync.close()
    for i in (1, 2):  # leave the shared stores equal for the next backend
        seven.store(sample_item(i), list(SEVEN))


def test_the_queue_file_is_compacted_and_keeps_what_is_pending(tmp_path, monkeypatch) -> None:
    from memsys.adapters.memory_store import InMemoryStore
    from memsys.application.sync import SyncQueue

    monkeypatch.setattr(SyncQueue, "COMPACT_BYTES", 8192)
    plan = FaultPlan(seed=31).add("prepare_ops", kind="transient", store="b")
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": wrap_store(InMemoryStore(dimension=8), plan)},
                            transaction_log=tmp_path / "txlog")
    path = tmp_path / "q"
    try:
        sync = SyncManager(manager, queue_path=path)
        sync.queue_updates([("b", update(i, 1)) for i in range(3)])  # b refuses for now: they stay queued
        for v in range(1, 40):
            sync.queue_updates([("a", update(i, v)) for i in range(4)])
            sync.process_queue()
        assert path.stat().st_size < 8192 * 2 and sync.queue_depth() == 3
        sync.close()
        again = SyncManager(manager, queue_path=path)
        assert [(s, i) for _, s, i, _ in again.pending()] == [("b", "q-000"), ("b", "q-001"), ("b", "q-002")]
        plan.heal()
        manager.breakers["b"].reset()  # b's failures opened its circuit breaker
        assert again.process_queue() == 3 and again.queue_depth() == 0
        again.close()
        assert manager.adapters["a"].retrieve("q-003").version == 390
    finally:
        manager.close()
