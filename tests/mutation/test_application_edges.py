"""Application-layer outcomes mutation testing found unpinned: what the routing table tells an
operator, that the coordinator log is compacted by record count, and the sync manager's
refusal of a bad conflict resolver."""

from __future__ import annotations

import os

import pytest

from memsys import MemoryManager
from memsys.adapters.memory_store import InMemoryStore
from memsys.application.routing import RoutingTable
from memsys.testing import sample_item


def test_the_routing_table_describes_every_route_in_order() -> None:
    table = RoutingTable({"CODE": ["a"],
                          "CONVERSATION": [{"metadata": {"channel": ["support", "sales"]}, "stores": ["a", "b"]},
                                           {"stores": ["b"]}]}, ["a", "b"])
    assert table.describe() == ["CODE -> ['a']",
                                "CONVERSATION where channel in ['support', 'sales'] -> ['a', 'b']",
                                "CONVERSATION -> ['b']",
                                "default -> ['a', 'b']"]


@pytest.mark.parametrize("table, message", [
    ({"CODE": [{"metadata": {1: "x"}, "stores": ["a"]}]}, "rule 0 of CODE: 'metadata' must be a dict of str keys"),
    ({"CODE": "a"}, "the route of CODE must be a list of store names, got 'a'"),
    ({"CODE": ["zz"]}, r"the route of CODE names unknown stores \['zz'\]"),
], ids=["bad-metadata", "not-a-list", "unknown-store"])
def test_a_bad_routing_table_is_refused_saying_which_route_is_wrong(table, message) -> None:
    from memsys.domain.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=message):
        RoutingTable(table, ["a", "b"])


def size_of(path) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def test_the_coordinator_log_is_compacted_once_it_holds_more_than_compact_records(tmp_path) -> None:
    sizes = {}
    for limit in (4, 20_000):
        log = tmp_path / f"txlog-{limit}"
        manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=log, compact_records=limit)
        for i in range(40):
            manager.store(sample_item(i))
        sizes[limit] = size_of(log)
        manager.close()
        reopened = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=log)
        reopened.close()
    # 40 commits: compacted every few records the log holds a handful, uncompacted all 40
    assert sizes[4] * 3 < sizes[20_000], sizes


# --- sync manager ---------------------------------------------------------------------------

from memsys.application.sync import SyncManager  # noqa: E402
from memsys.domain.errors import InvalidInputError, StoreUnavailableError  # noqa: E402
from memsys.domain.operations import Put  # noqa: E402


class Picky(InMemoryStore):
    """Refuses for good any write of content "poison"; fails transiently the first time a lone
    write of "flaky" is prepared (a batch holding "poison" is refused for that first)."""

    def __init__(self) -> None:
        super().__init__(dimension=8)
        self.flaky_failures = 0

    def prepare_ops(self, ops):
        contents = [op.item.content for op in ops if isinstance(op, Put)]
        if "poison" in contents:
            raise InvalidInputError("poison refused")
        if contents == ["flaky"] and self.flaky_failures == 0:
            self.flaky_failures += 1
            raise StoreUnavailableError("flaky store busy")
        return super().prepare_ops(ops)


def test_a_refused_update_in_a_queued_batch_does_not_hold_back_the_others(tmp_path, caplog) -> None:
    manager = MemoryManager({"src": InMemoryStore(dimension=8), "picky": Picky()},
                            transaction_log=tmp_path / "txlog")
    sync = SyncManager(manager)
    caplog.set_level("INFO", logger="memsys")
    try:
        sync.queue_updates([("picky", sample_item(1, content="good")),
                            ("picky", sample_item(2, content="poison")),
                            ("picky", sample_item(3, content="flaky"))])
        assert sync.process_queue() == 0  # the batch is refused; entries delivered one by one
        picky = manager.adapters["picky"]
        assert picky.retrieve("item-00001").content == "good"
        assert [(s, i) for s, i, _ in sync.failed_updates] == [("picky", "item-00002")]
        assert "poison refused" in sync.failed_updates[0][2]
        assert [(s, i) for _, s, i, _ in sync.pending()] == [("picky", "item-00003")]  # deferred, not lost
        assert picky.retrieve("item-00003") is None
        deferred = [r.getMessage() for r in caplog.records if "updates for picky deferred" in r.getMessage()]
        assert len(deferred) == 1 and deferred[0].startswith("sync queue: 1 updates for picky deferred: ")
        assert deferred[0].endswith("flaky store busy"), deferred  # the error that deferred them
    finally:
        sync.close()
        manager.close()


def test_a_resolver_that_returns_no_item_for_the_id_is_refused_by_name(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        first = sample_item(1, content="in a", version=5)
        manager.write_versions("a", [first])
        manager.write_versions("b", [sample_item(1, content="in b", version=5)])
        sync = SyncManager(manager, resolver=lambda incoming, current: sample_item(7))
        with pytest.raises(InvalidInputError, match="must return a MemoryItem with id 'item-00001'"):
            sync.sync("a", "b")
        assert manager.adapters["b"].retrieve("item-00001").content == "in b"
    finally:
        manager.close()


def test_a_sync_report_names_its_source_and_target(tmp_path, caplog) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1), ["a"])
        report = SyncManager(manager).diff("a", "b")
        assert (report.source, report.target, report.missing) == ("a", "b", ["item-00001"])
        manager.write_versions("b", [sample_item(1, content="other", version=report_version(manager))])
        caplog.set_level("INFO", logger="memsys")
        SyncManager(manager, policy="source").sync("a", "b")
        assert "sync conflict on item-00001 (same_version, a -> b): source wins" in caplog.text
    finally:
        manager.close()


def report_version(manager) -> int:
    return manager.adapters["a"].retrieve("item-00001").version


def test_a_damaged_queue_entry_is_corruption_naming_the_file(tmp_path) -> None:
    from memsys.domain.errors import CorruptStoreError
    from memsys.resilience.degraded import ReconciliationQueue

    path = tmp_path / "queue.jsonl"
    good = ReconciliationQueue(path)
    good.add("a", sample_item(1))
    good.close()
    path.write_text('{"seq": 0, "store": "a", "item": {}}\n')  # an old-format line that is no entry
    with pytest.raises(CorruptStoreError, match="line 1 is not a queued write") as damaged:
        ReconciliationQueue(path)
    assert damaged.value.path == str(path)


def test_a_store_that_failed_one_route_does_not_stop_the_next_route_falling_back(tmp_path) -> None:
    from memsys.domain.errors import StoreError
    from memsys.testing.faults import FaultInjector

    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8),
                             "c": InMemoryStore(dimension=8)},
                            routing={"CODE": ["a", "b"], "default": ["a", "c"]},
                            transaction_log=tmp_path / "txlog")
    try:
        code = sample_item(1).replace(memory_type="CODE")
        other = sample_item(2).replace(memory_type="CONVERSATION")
        manager.store(code)
        manager.store(other)
        FaultInjector(manager.adapters["a"], seed=1).fail("search", error=StoreError)
        assert sorted(i.id for i in manager.search({})) == ["item-00001", "item-00002"]
    finally:
        manager.close()


def test_conflicts_are_logged_next_to_the_sync_queue(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        manager.write_versions("a", [sample_item(1, content="in a", version=5)])
        manager.write_versions("b", [sample_item(1, content="in b", version=5)])
        sync = SyncManager(manager, policy="source", queue_path=tmp_path / "sync.queue")
        sync.sync("a", "b")
        sync.close()
        assert os.path.getsize(tmp_path / "sync.queue.conflicts") > 0
        reopened = SyncManager(manager, queue_path=tmp_path / "sync.queue")
        assert [c.id for c in reopened.conflicts()] == ["item-00001"]
        reopened.close()
    finally:
        manager.close()


def test_a_queue_path_that_is_a_folder_is_a_store_error_naming_it(tmp_path) -> None:
    from memsys.domain.errors import StoreError
    from memsys.resilience.degraded import ReconciliationQueue

    folder = tmp_path / "queue"
    folder.mkdir()
    with pytest.raises(StoreError, match="reading the reconciliation queue"):
        ReconciliationQueue(folder)


def test_a_recovery_report_carries_the_error_of_each_store_it_could_not_recover(tmp_path) -> None:
    from memsys.domain.errors import StoreError
    from memsys.testing.faults import FaultInjector

    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1))
        FaultInjector(manager.adapters["a"], seed=1).fail("apply", error=StoreError)
        report = manager.recover()
        assert set(report.errors) == {"a"} and isinstance(report.errors["a"], StoreError)
        assert report.failed_stores["a"].startswith("StoreError: injected fault")
    finally:
        manager.close()


def test_a_digest_index_scanned_from_a_store_finds_each_item_by_id() -> None:
    from memsys.application.digests import DigestIndex, entry_of

    store = InMemoryStore(dimension=8)
    items = [sample_item(i) for i in range(20)]
    for item in items:
        store.store(item)
    index = DigestIndex.scan(store, buckets=7)
    assert len(index) == 20 and sorted(index.ids()) == sorted(i.id for i in items)
    assert all(index.get(i.id) == entry_of(i) for i in items)
    assert index.get("no-such-id") is None
    assert index.root() == DigestIndex.scan(store, buckets=7).root()



def test_a_manager_without_a_transaction_log_warns_that_a_crash_cannot_be_recovered(caplog) -> None:
    caplog.set_level("WARNING", logger="memsys")
    MemoryManager({"a": InMemoryStore(dimension=8)}).close()
    assert "MemoryManager without transaction_log: transactions are atomic while the process" in caplog.text
