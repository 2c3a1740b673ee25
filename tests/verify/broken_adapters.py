"""Third-party-style adapters that pass the conformance kit yet break a promise under failure.

Each is the guide's example adapter (examples/jsonfile_store.py, built only on the public
``memsys.adapters.base``) with one realistic bug that only a fault, a crash or a retry reveals.
``memsys verify-adapter`` must fail each one in the section and check named in ``CAUGHT_BY``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from examples.jsonfile_store import JsonFileStore
from memsys.adapters.base import Delete, MemoryItem, Operation, Put, TransientError


class AcksBeforeDurableStore(JsonFileStore):
    """A write-back cache for updates: an update of an item already stored changes memory and is
    acknowledged at once, and a background thread appends the queued updates to the journal every
    second (new items are written at once, deletes after the queue; close() drains it). Every
    update acknowledged since the last write-back is gone after a SIGKILL."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        self._queue: list[Sequence[Operation]] = []
        self._stop = threading.Event()
        super().__init__(path, **kwargs)
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True)
        self._flusher.start()

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        if ops and all(isinstance(op, Put) and op.item.id in self._items for op in ops):
            self._queue.append(list(ops))  # the bug: acknowledged before it reaches the file
            self._apply_in_memory(ops)
            return
        if any(isinstance(op, Delete) for op in ops):
            self._drain()  # a queued update must not outlive the delete that follows it
        super()._apply(ops, durable)

    def _drain(self) -> None:
        while self._queue:
            JsonFileStore._apply(self, self._queue[0], True)
            self._queue.pop(0)

    def _flush_loop(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if not self._closed:
                    self._drain()

    def _close(self) -> None:
        self._stop.set()
        self._drain()
        super()._close()


class RollbackDoesNotRestoreStore(JsonFileStore):
    """Commits a transaction one write at a time (one journal record each) and, when a write part
    way fails, its rollback only drops the buffer: the writes already applied stay."""

    def commit(self, transaction_id: str) -> None:
        tx = self._transaction(transaction_id)
        ops = tx.prepared if tx.prepared is not None else self.prepare_ops(tx.writes.ops)
        for op in ops:
            self.apply_prepared([op])
        self._end(tx)


class RetriedWriteAppliesTwiceStore(JsonFileStore):
    """Keeps its items in arrival order; storing an item identical to the stored one (a retry of a
    write that was applied but reported as failed) appends it again instead of replacing it."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        self._order: list[str] = []
        super().__init__(path, **kwargs)

    def _apply_in_memory(self, ops: Sequence[Operation]) -> None:
        for op in ops:
            if isinstance(op, Put):
                same = self._items.get(op.item.id) == op.item
                if not same and op.item.id in self._order:
                    self._order.remove(op.item.id)
                self._order.append(op.item.id)  # the bug: an identical re-put is appended again
                self._items[op.item.id] = op.item
            elif isinstance(op, Delete) and op.item_id in self._items:
                del self._items[op.item_id]
                self._order = [i for i in self._order if i != op.item_id]

    def _scan(self) -> Iterable[MemoryItem]:
        return [self._items[i] for i in self._order]

    def _count(self) -> int:
        return len(self._order)


class StaleReadAfterFailedWriteStore(JsonFileStore):
    """Serves retrieve() from a read cache that a write refreshes only when it returns normally:
    when a write fails after the engine applied it, the cache keeps the old value."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        self._cache: dict[str, MemoryItem | None] = {}
        super().__init__(path, **kwargs)

    def retrieve(self, item_id: str) -> MemoryItem | None:
        if item_id not in self._cache or self._bound_transaction() is not None or self.closed:
            found = super().retrieve(item_id)
            if self._bound_transaction() is not None:
                return found
            self._cache[item_id] = found
        return self._cache[item_id]

    def store(self, item: MemoryItem) -> str:
        result = super().store(item)
        if self._bound_transaction() is None:
            self._cache[item.id] = item  # the bug: skipped when store() raised after applying
        return result

    def store_many(self, items: Sequence[MemoryItem]) -> list[str]:
        result = super().store_many(items)
        if self._bound_transaction() is None:
            self._cache.update((i.id, i) for i in items)
        return result

    def delete(self, item_id: str) -> bool:
        result = super().delete(item_id)
        self._cache.pop(item_id, None)
        return result

    def delete_many(self, item_ids: Sequence[str]) -> int:
        result = super().delete_many(item_ids)
        for item_id in item_ids:
            self._cache.pop(item_id, None)
        return result

    def commit(self, transaction_id: str) -> None:
        super().commit(transaction_id)
        self._cache.clear()

    def restore(self, snapshot: Any) -> None:
        super().restore(snapshot)
        self._cache.clear()


class HangsUnderLatencyStore(JsonFileStore):
    """Retries a write that failed transiently with exponential backoff, up to eight times, and
    never looks at the clock: when the engine is slow or hangs, one store() takes many deadlines."""

    def _write(self, ops: list[Operation]) -> None:
        delay = 0.1
        for attempt in range(8):
            try:
                return super()._write(ops)
            except TransientError:
                if attempt == 7:
                    raise
                time.sleep(delay)
                delay *= 2


#: adapter -> (section, check) that must fail it
class IgnoresDurableRequestsStore(JsonFileStore):
    """Opened with ``sync=False`` it never fsyncs a write, even one its caller asks to be durable
    (flush() still does): acknowledged writes of the store alone are lost at a power failure."""

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        super()._apply(ops, durable=False)


CAUGHT_BY = {
    AcksBeforeDurableStore: ("crash", "alone_acknowledged_writes_survive_sigkill"),
    RollbackDoesNotRestoreStore: ("faults", "rollback_restores_after_failed_commit"),
    RetriedWriteAppliesTwiceStore: ("faults", "retried_write_applies_once"),
    StaleReadAfterFailedWriteStore: ("faults", "no_stale_read_after_failed_write"),
    HangsUnderLatencyStore: ("faults", "calls_end_within_deadline"),
}
