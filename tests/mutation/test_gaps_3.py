"""Outcomes the wider mutation sample (20 per file) found unpinned: the query router's calls and
errors, synchronisation's merges, deletions and warnings, dead letters resolved by a newer write,
reconciliation's reads, the registry of queues, the operation log under an ASCII locale, and the
reconciliation queue on a nearly full disk."""

from __future__ import annotations

import locale
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from memsys import MemoryManager, StoreUnavailableError
from memsys.adapters.memory_store import InMemoryStore
from memsys.application.query_router import QueryRouter
from memsys.application.sync import SyncManager
from memsys.domain.errors import CommitIncompleteError, MemoryRetrievalError, StoreError
from memsys.domain.operations import Put
from memsys.testing import sample_item


def messages(caplog, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


class ReadsDown(InMemoryStore):
    """Reads fail (the store is unreachable) while ``down`` is set."""

    down = False

    def retrieve_many(self, ids):
        if self.down:
            raise StoreUnavailableError("read refused (injected)", store=self.name)
        return super().retrieve_many(ids)


class Refuses(InMemoryStore):
    """Refuses for good any write of content "poison" (at apply: after the commit decision)."""

    def _apply(self, ops, durable):
        if any(isinstance(op, Put) and op.item.content == "poison" for op in ops):
            raise StoreError("the engine cannot take this item (injected)", store=self.name)
        super()._apply(ops, durable)


# --- query router ---------------------------------------------------------------------------


def test_router_calls_show_in_stats_as_query(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1))
        result = QueryRouter(manager).execute({"memory_type": sample_item(1).memory_type.name})
        assert [h.item.id for h in result.hits] == ["item-00001"]
        operations = manager.stats(count_items=False)["stores"]["a"]["operations"]
        assert operations["query"]["calls"] == 1 and operations["query"]["ok"] == 1
    finally:
        manager.close()


class NoBulkReads(InMemoryStore):
    """A store without retrieve_many (only retrieve), as a minimal third-party store has."""

    def __getattribute__(self, name):
        if name == "retrieve_many":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_an_id_lookup_reaches_a_store_without_bulk_reads(tmp_path) -> None:
    manager = MemoryManager({"a": NoBulkReads(dimension=8)}, transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1))
        manager.store(sample_item(2))
        result = QueryRouter(manager).execute({"ids": ["item-00002", "item-00009", "item-00001"]})
        assert sorted(h.item.id for h in result.hits) == ["item-00001", "item-00002"]
        assert result.failures == {}
    finally:
        manager.close()


def test_a_cross_store_join_that_fails_all_or_error_names_the_store(tmp_path) -> None:
    lagging = ReadsDown(dimension=8)
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "c": lagging}, transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1))
        lagging.down = True
        with pytest.raises(MemoryRetrievalError) as failed:
            QueryRouter(manager).execute({"memory_type": sample_item(1).memory_type.name}, mode="cross_store",
                                         stores=["a"], all_or_error=True)
        assert list(failed.value.errors) == ["c"] and failed.value.transient
        assert "c: read refused (injected)" in str(failed.value)
    finally:
        manager.close()


class Hangs(InMemoryStore):
    """A search that does not answer until ``release`` is set (a hung server)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def search(self, query):
        self.release.wait(60)
        return super().search(query)


HUNG_QUERY = """
import time
from memsys import MemoryManager
from memsys.adapters.memory_store import InMemoryStore
from memsys.application.query_router import QueryRouter
from memsys.domain.errors import MemoryRetrievalError

class Hangs(InMemoryStore):
    def search(self, query):
        time.sleep(60)

manager = MemoryManager({"a": Hangs(dimension=8)})
try:
    QueryRouter(manager, deadline=0.2).execute({})
except MemoryRetrievalError:
    print("gave up at the deadline", flush=True)
"""


def test_a_store_call_that_hangs_past_its_deadline_holds_neither_the_query_nor_the_process(tmp_path) -> None:
    hung = Hangs(dimension=8)
    manager = MemoryManager({"a": hung, "b": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1))
        result = QueryRouter(manager, deadline=0.2).execute({})
        assert [h.item.id for h in result.hits] == ["item-00001"] and list(result.failures) == ["a"]
    finally:
        hung.release.set()
        manager.close()
    # the abandoned call must not keep a process from exiting either
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(HUNG_QUERY)], capture_output=True, text=True,
                           timeout=45, cwd=os.getcwd())
    assert child.returncode == 0 and "gave up at the deadline" in child.stdout, child.stderr[-2000:]


# --- synchronisation ------------------------------------------------------------------------


def test_a_merged_conflict_is_written_to_both_stores(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        manager.write_versions("a", [sample_item(1, content="in a", version=5)])
        manager.write_versions("b", [sample_item(1, content="in b", version=5)])
        sync = SyncManager(manager, resolver=lambda incoming, current: incoming.replace(content="merged"))
        sync.sync("a", "b")
        held = {name: manager.adapters[name].retrieve("item-00001") for name in ("a", "b")}
        assert {name: (item.content, item.version) for name, item in held.items()} == \
            {"a": ("merged", 6), "b": ("merged", 6)}
    finally:
        manager.close()


class NoSession(InMemoryStore):
    """Cannot begin a transaction while ``down`` (a server store that opens a session first)."""

    down = False

    def begin_transaction(self, transaction_id=None):
        if self.down:
            raise StoreUnavailableError("no session (injected)", store=self.name)
        return super().begin_transaction(transaction_id)


def test_deleting_extras_in_one_store_does_not_need_the_other_stores(tmp_path) -> None:
    other = NoSession(dimension=8)
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8), "c": other},
                            transaction_log=tmp_path / "txlog")
    try:
        manager.write_versions("a", [sample_item(1)])
        manager.write_versions("b", [sample_item(1), sample_item(2)])
        other.down = True
        report = SyncManager(manager).sync("a", "b", delete_extra=True)
        assert report.deleted == ["item-00002"]
        assert manager.adapters["b"].retrieve("item-00002") is None
    finally:
        other.down = False
        manager.close()


def test_a_sync_delivery_committed_but_not_applied_is_logged_as_such(tmp_path, caplog) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": Refuses(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    caplog.set_level(logging.WARNING, logger="memsys")
    try:
        SyncManager(manager).write_through(sample_item(1, content="poison"), "a", ["b"])
        warned = messages(caplog, "sync to b committed, not yet applied (recovery completes it): ")
        assert len(warned) == 1 and "refuses" in warned[0], caplog.text
    finally:
        manager.close()


# --- dead letters, reconciliation, queues ---------------------------------------------------


def test_a_dead_letter_a_newer_write_superseded_is_resolved_by_name(tmp_path, caplog) -> None:
    manager = MemoryManager({"a": Refuses(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        with pytest.raises(CommitIncompleteError):
            manager.store(sample_item(2, content="poison"))
        [letter] = manager.dead_letters()
        manager.store(sample_item(2, content="fine"))  # newer, and the store takes it
        caplog.set_level(logging.WARNING, logger="memsys")
        result = manager.retry_dead_letters()
        assert result.superseded == [letter.id] and manager.dead_letters() == []
        assert messages(caplog, "dead letter ") == [
            f"dead letter {letter.id} resolved: store a already has this write or a newer one"]
    finally:
        manager.close()


def test_reconciliation_reads_show_in_stats_as_retrieve(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog")
    try:
        manager.reconciliation.add("a", sample_item(1, version=3))
        before = manager.stats(count_items=False)["stores"]["a"]["operations"].get("retrieve", {}).get("calls", 0)
        assert manager.reconcile()["applied"] == 1
        after = manager.stats(count_items=False)["stores"]["a"]["operations"]["retrieve"]["calls"]
        assert after == before + 1
    finally:
        manager.close()


def test_a_queue_that_reports_it_is_gone_is_not_asked_again(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog")
    asked = []

    def gone() -> int:
        asked.append(1)
        raise LookupError("the queue was closed")

    try:
        manager.register_queue("retired", gone)
        for _ in range(3):
            assert "retired" not in manager.queue_depths()
        assert len(asked) == 1
    finally:
        manager.close()


@pytest.fixture
def ascii_locale():
    """The process's locale encoding is ASCII (a server with LANG unset), as long as the test runs."""
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        if sys.flags.utf8_mode or locale.getpreferredencoding(False).lower() not in ("ansi_x3.4-1968", "ascii"):
            pytest.skip("this interpreter ignores the locale's encoding (UTF-8 mode)")
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


def test_the_operation_log_reads_back_non_ascii_text_under_an_ascii_locale(tmp_path, ascii_locale) -> None:
    from memsys.application.oplog import read_operations

    path = tmp_path / "ops.jsonl"
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog",
                            operation_log=path)
    try:
        manager.store(sample_item(1, content="naïve ☃ 日本"))
    finally:
        manager.close()
    [record] = list(read_operations(path))
    assert record["ops"]["a"][0]["item"]["content"] == "naïve ☃ 日本"


def test_a_write_queued_after_a_drain_needs_room_only_for_itself(small_disk) -> None:
    from memsys.resilience.degraded import ReconciliationQueue
    from memsys.testing.disk import fill

    path = os.path.join(small_disk, "reconcile.queue")
    queue = ReconciliationQueue(path)
    for i in range(1, 31):
        queue.add("b", sample_item(i, content="x" * 4000))  # ~130 KiB queued
    queue.done(queue.latest()[:1])
    ballast = fill(small_disk, leave=32 << 10)  # room for one more write, not for the whole queue
    queue.add("b", sample_item(99))  # acknowledged: durable
    queue.close()
    os.remove(ballast)
    reopened = ReconciliationQueue(path)
    try:
        ids = [e.item.id for e in reopened.latest()]
        assert ids[0] == "item-00002" and ids[-1] == "item-00099" and len(ids) == 30
    finally:
        reopened.close()
