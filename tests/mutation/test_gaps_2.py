"""Outcomes the second round of mutation testing found unpinned: what an operator sees in the log,
the spans and stats() when something goes wrong, and the defaults and races of retry and breaker.

Each test provokes the situation for real (a full disk, a damaged log file, a store that stays
down, an interleaving forced at the breaker's lock) and checks what comes out of it.
"""

from __future__ import annotations

import logging
import os
import threading

import pytest

from memsys import CircuitBreaker, InvalidInputError, MemoryManager, StoreUnavailableError, retry_with_backoff
from memsys.adapters.memory_store import InMemoryStore
from memsys.domain.errors import CommitIncompleteError, CorruptStoreError, DiskFullError, MemsysError, StoreError
from memsys.domain.operations import Put
from memsys.resilience.circuit_breaker import CircuitState
from memsys.testing import sample_item


def records(caplog, start: str, level: int | None = None) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(start) and (level is None or r.levelno == level)]


# --- spans and stats ------------------------------------------------------------------------

_EXPORTER = None


@pytest.fixture
def spans():
    """Finished spans of the global OpenTelemetry SDK provider (installed if none is yet)."""
    global _EXPORTER
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first to set one wins; add to it then
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    if _EXPORTER is None:  # once: a provider cannot drop a processor
        _EXPORTER = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_a_read_from_a_named_store_gets_its_store_span(tmp_path, spans) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1))
        spans.clear()
        assert manager.retrieve("item-00001", store="b").id == "item-00001"
    finally:
        manager.close()
    reads = [s for s in spans.get_finished_spans() if s.name == "memsys.store.retrieve"]
    assert [(s.attributes["memsys.store"], s.attributes["memsys.operation"]) for s in reads] == [("b", "retrieve")]


class Uncountable(InMemoryStore):
    """A third-party store without count()."""

    count = None


def test_stats_say_plainly_that_a_store_cannot_count_its_items(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "odd": Uncountable(dimension=8)},
                            transaction_log=tmp_path / "txlog")
    try:
        manager.store(sample_item(1))
        stores = manager.stats()["stores"]
        assert stores["odd"]["items"] is None
        assert stores["odd"]["items_error"] == "the store cannot count its items"
        assert stores["a"]["items"] == 1 and "items_error" not in stores["a"]
        assert "items_error" not in manager.stats(count_items=False)["stores"]["odd"]
    finally:
        manager.close()


# --- the sync queue's compaction on a full disk ---------------------------------------------


def test_a_sync_queue_compaction_the_disk_cannot_hold_is_logged_and_loses_nothing(small_disk, caplog,
                                                                                   monkeypatch) -> None:
    from memsys.application.sync import SyncQueue
    from memsys.testing.disk import fill

    monkeypatch.setattr(SyncQueue, "COMPACT_BYTES", 64 << 10)  # a small floor keeps the test small
    path = os.path.join(small_disk, "sync.queue")
    queue = SyncQueue(path)
    seqs = queue.put([("b", sample_item(i, content="x" * 3000)) for i in range(1, 41)])  # ~130 KiB
    ballast = fill(small_disk, leave=32 << 10)  # room for a done mark, not for a rewrite
    caplog.set_level(logging.WARNING, logger="memsys")
    queue.done(seqs[:1])
    warned = records(caplog, "compacting the sync queue", logging.WARNING)
    assert len(warned) == 1, caplog.text
    assert path in warned[0].getMessage() and "it keeps every record" in warned[0].getMessage()
    assert warned[0].exc_info is not None and issubclass(warned[0].exc_info[0], DiskFullError)
    queue.close()
    os.remove(ballast)
    reopened = SyncQueue(path)
    try:
        assert sorted(reopened.pending) == seqs[1:]
    finally:
        reopened.close()


# --- the coordinator's failure paths --------------------------------------------------------


def test_a_failed_recovery_after_a_refused_apply_is_logged_with_its_cause(tmp_path, caplog) -> None:
    log_path = tmp_path / "txlog"

    class DamagesTheLog(InMemoryStore):
        """Refuses item 2 for good; as it does, the coordinator log is damaged on disk (a bit flip
        in its first record), so the recovery that follows cannot read it."""

        def _apply(self, ops, durable):
            if any(isinstance(op, Put) and op.item.id == "item-00002" for op in ops):
                with open(log_path, "r+b") as f:
                    data = f.read()
                    at = data.index(b'"checkpoint"') + 3
                    f.seek(at)
                    f.write(bytes([data[at] ^ 0x20]))
                raise StoreError("the engine cannot take this item (injected)", store=self.name)
            super()._apply(ops, durable)

    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": DamagesTheLog(dimension=8)},
                            transaction_log=log_path)
    caplog.set_level(logging.WARNING, logger="memsys")
    try:
        manager.store(sample_item(1))
        with pytest.raises(CommitIncompleteError) as failed:
            manager.store(sample_item(2))
        assert failed.value.store == "b"
        warned = records(caplog, "transaction ", logging.WARNING)
        warned = [r for r in warned if "recovery after a failed apply failed" in r.getMessage()]
        assert len(warned) == 1, caplog.text
        assert failed.value.transaction_id in warned[0].getMessage()
        kind, error, _ = warned[0].exc_info
        assert issubclass(kind, CorruptStoreError) and str(log_path) in str(error)
    finally:
        manager.close()


class GoesDown(InMemoryStore):
    """Takes writes until ``down`` is set; then every apply fails (the store is unreachable)."""

    down = False

    def _apply(self, ops, durable):
        if self.down and ops:
            raise StoreUnavailableError("connection refused (injected)", store=self.name)
        super()._apply(ops, durable)


def test_closing_without_a_log_names_the_committed_writes_a_store_never_got(caplog) -> None:
    flaky = GoesDown(dimension=8)
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": flaky})  # no transaction log
    manager.store(sample_item(1))
    flaky.down = True
    caplog.set_level(logging.ERROR, logger="memsys")
    with pytest.raises(MemsysError):
        manager.store(sample_item(2))
    lsn = manager.adapters["a"].retrieve("item-00002").version
    manager.close()  # must not raise: the loss is reported, not turned into a crash
    quarantined = records(caplog, "store b failed to apply committed transactions and is quarantined until "
                                  "recovery: StoreUnavailableError: ", logging.ERROR)
    assert quarantined and "connection refused (injected)" in quarantined[0].getMessage(), caplog.text
    lost = records(caplog, "closing without a transaction log", logging.ERROR)
    assert len(lost) == 1, caplog.text
    message = lost[0].getMessage()
    assert "store(s) ['b']" in message and f"{{'b': [{lsn}]}}" in message


def test_a_finished_write_outside_a_transaction_does_not_hold_back_later_commits(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog")
    manager.adapters["a"].store(sample_item(1))  # a transaction of its own, finished
    # A commit waits up to commit_delay for other *open* transactions to join its group; with
    # none open it must not wait at all. A long delay makes a forgotten one show as a hang.
    manager.coordinator.commit_delay = 120.0
    writer = threading.Thread(target=manager.adapters["a"].store, args=(sample_item(2),), daemon=True)
    writer.start()
    writer.join(timeout=30)
    assert not writer.is_alive(), "the commit waited for a transaction that had finished"
    try:
        assert [manager.adapters["a"].retrieve(f"item-0000{i}") is not None for i in (1, 2)] == [True, True]
    finally:
        manager.close()  # only once the writer is done: close waits for commits in flight


def test_a_manager_without_a_log_still_checkpoints_its_stores_every_compact_records() -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, compact_records=4)
    try:
        for i in range(12):
            manager.store(sample_item(i))
        stats = manager.stats(count_items=False)
        checkpoints = stats["transactions"].get("checkpoints", 0)
        assert checkpoints >= 3, stats["transactions"]
        # a checkpoint flushes every store first
        assert stats["stores"]["a"]["operations"]["flush"]["calls"] >= checkpoints
    finally:
        manager.close()


# --- retry and breaker ----------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"max_retries": 0}, {"initial_backoff": -1}, {"backoff_multiplier": 0.5},
                                      {"jitter": 1.5}], ids=["retries", "backoff", "multiplier", "jitter"])
def test_bad_retry_settings_are_refused_saying_what_is_allowed(settings) -> None:
    with pytest.raises(InvalidInputError) as refused:
        retry_with_backoff(**settings)
    assert str(refused.value) == ("retry_with_backoff: max_retries >= 1, initial_backoff >= 0, "
                                  "backoff_multiplier >= 1 and 0 <= jitter <= 1")


def test_retry_waits_are_capped_at_thirty_seconds_by_default() -> None:
    waits: list[float] = []

    @retry_with_backoff(max_retries=8, jitter=0.0, sleep=waits.append)
    def unreachable() -> None:
        raise StoreUnavailableError("down")

    with pytest.raises(StoreUnavailableError):
        unreachable()
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


class Interleave:
    """A lock that runs ``first`` (another thread's action) the next time someone takes it: a
    deterministic stand-in for that thread winning the race to the lock."""

    def __init__(self, lock, first) -> None:
        self.lock, self.first = lock, first

    def __enter__(self):
        first, self.first = self.first, None
        if first is not None:
            first()
        return self.lock.__enter__()

    def __exit__(self, *exc_info):
        return self.lock.__exit__(*exc_info)


def test_a_call_admitted_just_after_a_racing_probe_closed_the_circuit_is_not_a_probe() -> None:
    now = [100.0]
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10, name="kuzu", clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(StoreUnavailableError):
            breaker.execute(lambda: (_ for _ in ()).throw(StoreUnavailableError("down")))
    assert breaker.state is CircuitState.OPEN
    now[0] += 10

    def other_probe_succeeds() -> None:  # another caller probes and the store answers
        assert breaker.admit() is True
        breaker.record_success(probe=True)

    breaker._lock = Interleave(breaker._lock, other_probe_succeeds)
    # this call saw the circuit open, then found it closed once it had the lock: an ordinary call,
    # so one failure counts toward the threshold instead of reopening the circuit
    with pytest.raises(StoreUnavailableError):
        breaker.execute(lambda: (_ for _ in ()).throw(StoreUnavailableError("down")))
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 1 and breaker.opened == 1


# --- recovery's report ----------------------------------------------------------------------


def test_recovery_reports_a_damaged_dead_letter_file_and_its_own_duration(tmp_path) -> None:
    import time

    from memsys.application.txlog import dead_letter_path

    class Poisoned(InMemoryStore):
        def _apply(self, ops, durable):
            if any(isinstance(op, Put) and op.item.id in ("item-00002", "item-00003") for op in ops):
                raise StoreError("the engine cannot take this item (injected)", store=self.name)
            super()._apply(ops, durable)

    log_path = tmp_path / "txlog"
    manager = MemoryManager({"a": Poisoned(dimension=8), "b": InMemoryStore(dimension=8)}, transaction_log=log_path)
    manager.store(sample_item(1))
    for i in (2, 3):
        with pytest.raises(CommitIncompleteError):
            manager.store(sample_item(i))
    assert len(manager.dead_letters()) == 2
    manager.close()
    letters = dead_letter_path(str(log_path))
    with open(letters, "r+b") as f:  # a bit flip in the first of the two letters
        data = f.read()
        at = data.index(b'"store"') + 2
        f.seek(at)
        f.write(bytes([data[at] ^ 0x20]))

    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=log_path)
    try:
        started = time.perf_counter()
        report = manager.recover()
        took = time.perf_counter() - started
    finally:
        manager.close()
    why = report.failed_stores["(dead letters)"]
    assert why.startswith("CorruptStoreError: ") and letters in why, report.failed_stores
    assert 0 <= report.seconds <= took  # the report's duration is the recovery's own


# --- what operators read: the audit log's text, inspect's digest, the routing table -----------


def test_the_operation_log_keeps_non_ascii_text_readable_for_an_auditor(tmp_path) -> None:
    path = tmp_path / "ops.jsonl"
    manager = MemoryManager({"a": InMemoryStore(dimension=8)}, transaction_log=tmp_path / "txlog",
                            operation_log=path)
    try:
        manager.store(sample_item(1, content="café ☕ 記憶"))
    finally:
        manager.close()
    text = path.read_text(encoding="utf-8")
    assert "café ☕ 記憶" in text and "\\u" not in text  # grep finds it as written


def test_inspect_reports_the_same_digest_and_sizes_for_the_same_items(tmp_path) -> None:
    """Two inspects compare by their digests, also when taken at different times and by different
    memsys versions: the digest (and each item's canonical size) of given items is fixed."""
    from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
    from memsys.tools import inspect_store

    path = tmp_path / "items.json"
    store = TinyDBMemoryAdapter(path=path, sync=False)
    for i in range(3):
        store.store(sample_item(i, version=i + 1))
    store.close()
    report = inspect_store(f"tinydb:{path}")
    assert report["healthy"], report
    assert report["digest"] == "9f6a12dae13ced2a285b068506e41840"
    assert [s["bytes"] for s in report["sample"]] == [408, 437, 435]


def test_the_routing_table_lists_the_stores_it_routes_over(tmp_path) -> None:
    manager = MemoryManager({"a": InMemoryStore(dimension=8), "b": InMemoryStore(dimension=8)},
                            transaction_log=tmp_path / "txlog", routing={"CODE": ["b"]})
    try:
        assert manager.routing.stores == ["a", "b"]
    finally:
        manager.close()
